"""Jobs with middleware, for the end-to-end middleware tests (worker processes
import this module). Each marks when it ran in ``test_marks`` with the
wall-clock time, which every process on the host shares."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from tests.support.jobs import mark, record
from tourno.queue import Job
from tourno.queue.middleware import RateLimited, WithoutOverlapping


@dataclass
class OverlapProbe(Job):
    """Holds ``key`` for ``seconds``; marks its start and end."""

    n: int
    key: str = "shared"
    seconds: float = 0.3
    tries = 1

    def middleware(self):
        return [WithoutOverlapping(self.key, release_after=0.05)]

    def handle(self) -> None:
        mark(f"ov:{self.n}:start", repr(time.time()))
        time.sleep(self.seconds)
        mark(f"ov:{self.n}:end", repr(time.time()))
        record(f"ov:{self.n}")


@dataclass
class RateProbe(Job):
    """At most ``rate`` a second across every worker (burst 1); marks its start."""

    n: int
    rate: float = 10.0
    tries = 1

    def middleware(self):
        return [RateLimited("probe", rate=self.rate, burst=1)]

    def handle(self) -> None:
        mark(f"rate:{self.n}", f"{time.time()!r} {os.getpid()}")
        record(f"rate:{self.n}")

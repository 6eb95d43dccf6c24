"""Jobs for the chain and batch tests (tests/queue/test_workflows.py). They
record into the test-only tables of ``tests.support.jobs``; names carry a
``Flow`` prefix (job names are global)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from tests.support.jobs import mark, record, runs
from tourno.queue import Job


@dataclass
class FlowStep(Job):
    """Records ``key``; sleeps ``sleep`` seconds on its first run only."""

    key: str
    sleep: float = 0.0

    def handle(self) -> None:
        record(self.key)
        if self.sleep and runs(self.key) == 1:
            time.sleep(self.sleep)


@dataclass
class FlowFail(Job):
    """Records ``key`` and fails, ``fail_times`` times (then succeeds)."""

    tries = 1

    key: str
    fail_times: int = 1000

    def handle(self) -> None:
        record(self.key)
        if runs(self.key) <= self.fail_times:
            raise RuntimeError(f"{self.key} failing on purpose")


@dataclass
class FlowCancel(Job):
    """Cancels the batch it runs in."""

    key: str

    def handle(self) -> None:
        record(self.key)
        assert self.batch is not None
        self.batch.cancel()


@dataclass
class FlowAdd(Job):
    """Adds ``n`` FlowStep jobs to the batch it runs in."""

    key: str
    n: int = 2

    def handle(self) -> None:
        record(self.key)
        assert self.batch is not None
        self.batch.add(FlowStep(key=f"{self.key}-added{i}") for i in range(self.n))


@dataclass
class FlowCallback(Job):
    """A batch callback: records ``key`` and marks what its batch said then."""

    key: str

    def handle(self) -> None:
        record(self.key)
        b = self.batch
        mark(
            f"seen:{self.key}",
            "none" if b is None else f"{b.id} {b.pending} {b.processed} {b.failed} {os.getpid()}",
        )


@dataclass
class FlowFlaky(Job):
    """Fails on its first run, succeeds on its retry (two tries, no backoff)."""

    tries = 2
    backoff = 0

    key: str

    def handle(self) -> None:
        record(self.key)
        if runs(self.key) == 1:
            raise RuntimeError(f"{self.key} failing once on purpose")

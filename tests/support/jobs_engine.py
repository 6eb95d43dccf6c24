"""Extra jobs for ``tests/queue/test_queue_engine.py``. Names start with ``Eng`` so
they never collide with other test modules' job names in the registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tests.support.jobs import mark, record
from tourno.queue import Job


@dataclass
class EngDefaults(Job):
    """Every class-level setting set, to check what lands in the payload."""

    queue = "eng-q"
    priority = 7
    tries = 4
    timeout = 12.5
    backoff = [1, 2]

    key: str

    def handle(self) -> None:
        record(self.key)


@dataclass
class EngBoomCounted(Job):
    """Always raises; its failed() hook is counted in test_runs."""

    key: str

    def handle(self) -> None:
        record(self.key)
        raise ValueError(f"engine boom {self.key}")

    def failed(self, exc: BaseException) -> None:
        record(f"hook:{self.key}")
        mark(f"hook:{self.key}", type(exc).__name__)


@dataclass
class EngBackoffList(Job):
    """Job-level backoff list: 3 s after the 1st attempt, 8 s after every later one."""

    tries = 5
    backoff = [3, 8]

    key: str

    def handle(self) -> None:
        record(self.key)
        raise RuntimeError(f"backoff list {self.key}")


@dataclass
class EngRetryUntil(Job):
    """retry_until wins over tries: keeps retrying for an hour."""

    tries = 1
    retry_until = 3600
    backoff = 30

    key: str

    def handle(self) -> None:
        record(self.key)
        raise RuntimeError(f"retry until {self.key}")

    def failed(self, exc: BaseException) -> None:
        mark(f"failed:{self.key}", type(exc).__name__)


@dataclass
class EngValidated(Job):
    """A job whose constructor validates its arguments (as many real jobs do)."""

    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"n must be a non-negative int, got {self.n!r}")

    def handle(self) -> None:
        record(f"validated:{self.n}")


@dataclass
class EngDispatchHigh(Job):
    """Runs on ``default`` and dispatches a follow-up onto ``high``."""

    key: str

    def handle(self) -> None:
        from tests.support.jobs import RecordRun

        record(self.key)
        RecordRun(key=f"{self.key}:high").dispatch(queue="high")


@dataclass
class EngArgs(Job):
    """Arguments of every JSON shape, to check they survive the round trip."""

    text: str
    data: dict
    n: int = 0

    def handle(self) -> None:
        record(f"args:{self.n}")


# Class settings that dispatch accepts today although the worker can never
# honour them (see the xfail tests in test_queue_engine.py).


@dataclass
class EngHugeTimeout(Job):
    timeout = 1e300

    key: str

    def handle(self) -> None:
        record(self.key)


@dataclass
class EngHugeBackoff(Job):
    tries = 3
    backoff = [1e300]

    key: str

    def handle(self) -> None:
        record(self.key)
        raise RuntimeError(f"huge backoff {self.key}")


@dataclass
class EngFractionalTries(Job):
    tries = 2.5

    def handle(self) -> None:
        record("fractional")


@dataclass
class EngEmptyBackoff(Job):
    backoff: ClassVar[list] = []

    def handle(self) -> None:
        record("empty-backoff")

"""Jobs used by the tests. They record what they do in test-only tables
(``test_runs``, ``test_marks``) so a test can check what really ran."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from tourno.db import database, is_postgres
from tourno.queue import Job, JobTimeout, Snooze


def _sql(sql: str) -> str:
    return sql if is_postgres() else sql.replace("%s", "?")


def record(key: str) -> None:
    database.execute_sql(_sql("INSERT INTO test_runs (key, pid) VALUES (%s, %s)"), (key, os.getpid()))


def mark(key: str, value: str = "") -> None:
    database.execute_sql(
        _sql(
            "INSERT INTO test_marks (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ),
        (key, value),
    )


def is_marked(key: str) -> bool:
    return (
        database.execute_sql(_sql("SELECT 1 FROM test_marks WHERE key = %s"), (key,)).fetchone() is not None
    )


def runs(key: str) -> int:
    return database.execute_sql(_sql("SELECT count(*) FROM test_runs WHERE key = %s"), (key,)).fetchone()[0]


@dataclass
class Noop(Job):
    n: int = 0

    def handle(self) -> None:
        pass


@dataclass
class RecordRun(Job):
    key: str
    sleep: float = 0.0

    def handle(self) -> None:
        record(self.key)
        if self.sleep:
            time.sleep(self.sleep)
            mark(f"finished:{self.key}", str(os.getpid()))


@dataclass
class Flaky(Job):
    """Fails until it has run more than ``fail_times`` times."""

    key: str
    fail_times: int = 1

    def handle(self) -> None:
        record(self.key)
        if runs(self.key) <= self.fail_times:
            raise RuntimeError(f"flaky {self.key} failing on purpose")


@dataclass
class Boom(Job):
    key: str

    def handle(self) -> None:
        record(self.key)
        raise ValueError(f"boom {self.key}")

    def failed(self, exc: BaseException) -> None:
        mark(f"failed:{self.key}", type(exc).__name__)


@dataclass
class BoomThrice(Job):
    """Job-level tries and backoff override the worker's options."""

    tries = 3
    backoff = [0, 0]

    key: str

    def handle(self) -> None:
        record(self.key)
        raise ValueError(f"boom {self.key}")


@dataclass
class Sleepy(Job):
    key: str
    seconds: float = 5.0

    def handle(self) -> None:
        record(self.key)
        time.sleep(self.seconds)
        mark(f"finished:{self.key}", str(os.getpid()))


@dataclass
class Stubborn(Job):
    """Swallows its timeout and keeps running."""

    key: str
    seconds: float = 30.0

    def handle(self) -> None:
        record(self.key)
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            try:
                time.sleep(0.05)
            except JobTimeout:
                mark(f"swallowed:{self.key}")


@dataclass
class ShortTimeout(Job):
    timeout = 0.5
    tries = 2

    key: str

    def handle(self) -> None:
        record(self.key)
        time.sleep(3)


@dataclass
class TimeoutIsFatal(Job):
    """Times out on its first attempt, which is then its last."""

    timeout = 0.5
    tries = 5
    fail_on_timeout = True

    key: str

    def handle(self) -> None:
        record(self.key)
        time.sleep(3)


@dataclass
class UniqueJob(Job):
    unique_for = 3600

    key: str

    def unique_key(self) -> str:
        return self.key

    def handle(self) -> None:
        record(self.key)


@dataclass
class Stamped(Job):
    """Marks when each of its runs started (``stamp:KEY:N`` = epoch seconds
    by the worker's clock), and fails its first ``fail_times`` runs."""

    key: str
    fail_times: int = 0
    #: Snooze this long after each of the first ``snooze_times`` runs.
    snooze_times: int = 0
    snooze_for: float = 2.0

    def handle(self) -> None:
        record(self.key)
        n = runs(self.key)
        mark(f"stamp:{self.key}:{n}", repr(time.time()))
        if n <= self.snooze_times:
            raise Snooze(self.snooze_for)
        if n <= self.fail_times:
            raise RuntimeError(f"stamped {self.key} failing on purpose")

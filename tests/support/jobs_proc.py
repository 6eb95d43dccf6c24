"""Jobs for the worker-process tests (tests/queue/test_worker_processes.py).

Each one behaves differently on its first run and on later runs, so a test can
make a job hang (to signal or kill its worker) and still see it finish quickly
once another worker picks it up. They record into the same test-only tables as
``tests.support.jobs``. Names carry a ``Proc`` prefix: job names are global.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from tests.support.jobs import is_marked, mark, record, runs
from tourno.db import database, is_postgres
from tourno.queue import Job, JobTimeout, Snooze, control


@dataclass
class ProcSleepFirst(Job):
    """Sleeps ``first`` seconds on its first run and ``then`` seconds on later
    runs, then marks ``finished:<key>`` with the pid that finished it."""

    key: str
    first: float = 30.0
    then: float = 0.0

    def handle(self) -> None:
        record(self.key)
        time.sleep(self.first if runs(self.key) == 1 else self.then)
        mark(f"finished:{self.key}", str(os.getpid()))


@dataclass
class ProcStubbornOnce(Job):
    """On its first run, swallows its timeout and keeps running for
    ``seconds``; on later runs, finishes at once."""

    key: str
    seconds: float = 30.0

    def handle(self) -> None:
        record(self.key)
        if runs(self.key) == 1:
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                try:
                    time.sleep(0.05)
                except JobTimeout:
                    mark(f"swallowed:{self.key}")
        mark(f"finished:{self.key}", str(os.getpid()))


@dataclass
class ProcDeaf(Job):
    """Blocks SIGALRM in the main thread and sleeps in one C call: the
    timeout cannot interrupt it (like a job stuck in a driver call), so only
    the monitor's watchdog can end it."""

    key: str
    seconds: float = 60.0

    def handle(self) -> None:
        record(self.key)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            time.sleep(self.seconds)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
        mark(f"finished:{self.key}", str(os.getpid()))


@dataclass
class ProcCrashFirst(Job):
    """On its first run, kills its own worker with SIGKILL (as the kernel's
    OOM killer would); on later runs, finishes at once."""

    key: str

    def handle(self) -> None:
        record(self.key)
        if runs(self.key) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(30)  # not reached: SIGKILL cannot be caught
        mark(f"finished:{self.key}", str(os.getpid()))


@dataclass
class ProcUntilMarked(Job):
    """Runs until the test marks ``go:<key>``, then ``linger`` seconds more,
    then marks ``finished:<key>`` with its pid: a job that is certainly still
    running when the test has done something (it gives up after a minute)."""

    key: str
    linger: float = 1.5

    def handle(self) -> None:
        record(self.key)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not is_marked(f"go:{self.key}"):
            time.sleep(0.05)
        time.sleep(self.linger)
        mark(f"finished:{self.key}", str(os.getpid()))


# -- snooze and cancel (tests/queue/test_control.py) --------------------------------------


def marked_value(key: str) -> str | None:
    sql = "SELECT value FROM test_marks WHERE key = %s"
    row = database.execute_sql(sql if is_postgres() else sql.replace("%s", "?"), (key,)).fetchone()
    return None if row is None else row[0]


@dataclass
class ProcSnoozer(Job):
    """One try only, yet snoozes ``times`` times before it succeeds: each
    snooze must give its attempt back."""

    tries = 1

    key: str
    times: int = 3
    seconds: float = 0.0

    def handle(self) -> None:
        record(self.key)
        if runs(self.key) <= self.times:
            raise Snooze(self.seconds)
        mark(f"finished:{self.key}", str(os.getpid()))


@dataclass
class ProcSnoozeOnce(Job):
    """Snoozes ``seconds`` on its first run, marking when (epoch seconds);
    its second run marks when it started."""

    tries = 1

    key: str
    seconds: float = 1.0

    def handle(self) -> None:
        record(self.key)
        if runs(self.key) == 1:
            mark(f"snoozed:{self.key}", repr(time.time()))
            raise Snooze(self.seconds)
        mark(f"ran:{self.key}", repr(time.time()))


@dataclass
class ProcUntilCancelled(Job):
    """Loops until ``cancel_requested()`` (at most a minute), marks
    ``noticed:<key>``, then returns or, with ``then="raise"``, raises: with
    tries left, a raise would be retried, were it not cancelled."""

    tries = 3

    key: str
    then: str = "return"
    #: Cancel itself first, by the id the test marked as ``target:<key>``.
    cancel_self: bool = False

    def handle(self) -> None:
        record(self.key)
        if self.cancel_self:
            control.cancel([marked_value(f"target:{self.key}") or ""])
        deadline = time.monotonic() + 60
        while not self.cancel_requested():
            if time.monotonic() > deadline:
                mark(f"gave-up:{self.key}")
                return
            time.sleep(0.02)
        mark(f"noticed:{self.key}", str(os.getpid()))
        if self.then == "raise":
            raise RuntimeError(f"{self.key} stopping on its cancel")


@dataclass
class ProcCancels(Job):
    """Cancels the job whose id the test marked as ``target:<key>`` (itself,
    or a job prefetched behind it), through the same function the CLI calls."""

    key: str

    def handle(self) -> None:
        record(self.key)
        target = marked_value(f"target:{self.key}")
        assert target is not None
        result = control.cancel([target])
        mark(f"cancelled:{self.key}", str(result.count))

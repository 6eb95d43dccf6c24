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
from tourno.queue import Job, JobTimeout


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

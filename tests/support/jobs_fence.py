"""Jobs for the self-fencing tests (tests/queue/test_fencing.py): they write
when each run started and ended on the database server's clock, so a test
can check that two runs of one job never overlapped."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

from tests.support.jobs import record, runs
from tourno.db import database
from tourno.queue import Job, JobLeaseLost


def _ended(key: str) -> None:
    database.execute_sql(
        "INSERT INTO test_marks (key, value) VALUES (%s, clock_timestamp()::text)",
        (f"ended:{key}:{os.getpid()}",),
    )


@dataclass
class FenceSleeper(Job):
    """Sleeps ``first`` seconds on its first run, none on later runs; marks
    ``ended:<key>:<pid>`` with the server's clock however it ends."""

    key: str
    first: float = 30.0

    def handle(self) -> None:
        record(self.key)
        try:
            time.sleep(self.first if runs(self.key) == 1 else 0)
        finally:
            _ended(self.key)


@dataclass
class FenceDeaf(Job):
    """On its first run, swallows JobLeaseLost and keeps sleeping (a job
    that will not stop); later runs end at once."""

    key: str
    seconds: float = 30.0

    def handle(self) -> None:
        record(self.key)
        if runs(self.key) == 1:
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                try:
                    time.sleep(0.05)
                except JobLeaseLost:
                    pass
        _ended(self.key)


@dataclass
class NetJob(Job):
    """Records its start, sleeps ``seconds``, then inserts one mark per
    finished run, ``net:<key>:<pid>:<n>`` with the server's clock (the
    network-namespace test counts finishes with it)."""

    key: str
    seconds: float = 0.25

    def handle(self) -> None:
        record(self.key)
        time.sleep(self.seconds)
        database.execute_sql(
            "INSERT INTO test_marks (key, value) VALUES (%s, clock_timestamp()::text)",
            (f"net:{self.key}:{os.getpid()}:{uuid.uuid4().hex}",),
        )

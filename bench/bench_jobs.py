"""Jobs for ``bench/queue.py``. Worker subprocesses import this module with
``--import bench.bench_jobs`` (PYTHONPATH = the repository root)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tourno.db import database, is_postgres
from tourno.queue import Job


@dataclass
class BenchNoop(Job):
    """Does nothing: what is measured is the queue around it."""

    n: int = 0

    def handle(self) -> None:
        pass


@dataclass
class BenchLatency(Job):
    """Records how long after ``sent`` (the producer's ``time.time()`` just
    before dispatch) it started, in the ``bench_latency`` table."""

    sent: float

    def handle(self) -> None:
        waited = time.time() - self.sent
        sql = "INSERT INTO bench_latency (kind, seconds) VALUES (%s, %s)"
        if not is_postgres():
            sql = sql.replace("%s", "?")
        database.execute_sql(sql, ("tourno", waited))

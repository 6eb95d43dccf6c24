"""Self-fencing, with real ``tourno work`` processes on PostgreSQL.

A worker whose heartbeat cannot be written is cut off as far as the other
workers know: after the stale window (3 s here, a beat every 0.5 s) they
rescue its jobs. The honest way to stop one worker's heartbeats, and only
its heartbeats, is to lock its ``workers`` row from the test in an open
transaction: its monitor's upsert waits on the lock while everything else
(its job's own statements, the other workers) carries on. The fenced worker
must stop its job before the stale window ends, counted from the heartbeat
the database holds, on the database's clock.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.queue.test_worker_processes import (
    IMPORTS,
    Procs,
    count,
    procs,  # noqa: F401 - a fixture
    run_pids,
    stop,
    wait_for,
    wait_registered,
)
from tests.support.jobs import RecordRun
from tests.support.jobs_fence import FenceDeaf, FenceSleeper
from tourno import db as tdb
from tourno.db import liveness_parameters, parse_timestamp
from tourno.queue.worker import EXIT_LEASE_LOST

pytestmark = pytest.mark.slow

FENCE_IMPORTS = IMPORTS + ",tests.support.jobs_fence"
#: QueueDB.env()'s stale window.
STALE_AFTER = 3.0


class RowLock:
    """A worker's ``workers`` row locked FOR UPDATE in a transaction of the
    test's own, on a connection of its own."""

    def __init__(self, pg, pid: int) -> None:
        self.db = tdb.connect(pg.url)
        self.db.connect()
        self.db.execute_sql("BEGIN")
        row = self.db.execute_sql(
            "SELECT heartbeat_at FROM workers WHERE pid = %s FOR UPDATE", (pid,)
        ).fetchone()
        assert row is not None
        #: The last heartbeat written: the rescuers count the stale window from it.
        self.heartbeat_at = parse_timestamp(row[0])

    def release(self) -> None:
        self.db.execute_sql("ROLLBACK")
        self.db.close()


def _worker(procs: Procs, pg, *options: str) -> subprocess.Popen:  # noqa: F811
    return procs.start(pg.env(TOURNO_IMPORTS=FENCE_IMPORTS), "work", "--tries", "3", *options)


def _ended(pg, key: str) -> dict[int, object]:
    """pid -> when (server clock) that pid's run of ``key`` ended."""
    rows = pg.rows("SELECT key, value FROM test_marks WHERE key LIKE %s", (f"ended:{key}:%",))
    return {int(k.rsplit(":", 1)[1]): parse_timestamp(v) for k, v in rows}


def _started(pg, key: str) -> dict[int, object]:
    rows = pg.rows("SELECT pid, min(at) FROM test_runs WHERE key = %s GROUP BY pid", (key,))
    return {pid: parse_timestamp(at) for pid, at in rows}


def test_liveness_parameters_give_up_within_the_setting():
    for dead_after in (2.0, 5.0, 10.0, 30.0, 120.0):
        p = liveness_parameters(dead_after)
        assert p["keepalives"] == 1
        assert p["keepalives_idle"] + p["keepalives_interval"] * p["keepalives_count"] <= dead_after
        assert p["tcp_user_timeout"] == int(dead_after * 1000)


def test_worker_without_heartbeat_stops_its_job_before_it_can_be_rescued(pg, procs):  # noqa: F811
    a = _worker(procs, pg, "--sleep", "1")
    wait_registered(pg, procs, a)
    FenceSleeper(key="long", first=30).dispatch()
    wait_for(lambda: run_pids(pg, "long") == [a.pid], "the job to start on worker A", procs, alive=(a,))
    b = _worker(procs, pg, "--sleep", "1")
    wait_registered(pg, procs, b)

    lock = RowLock(pg, a.pid)
    try:
        # A stops the job (JobLeaseLost) and hands it back; B runs it.
        wait_for(lambda: a.pid in _ended(pg, "long"), "A to stop the job", procs, timeout=15, alive=(a, b))
        wait_for(lambda: b.pid in _ended(pg, "long"), "B to run the job", procs, timeout=15, alive=(a, b))
        ended_a = _ended(pg, "long")[a.pid]
        # Before any worker could presume A dead...
        assert (ended_a - lock.heartbeat_at).total_seconds() < STALE_AFTER, (ended_a, lock.heartbeat_at)
        # ...and never on two workers at once.
        assert _started(pg, "long")[b.pid] >= ended_a
        out_a = procs.output(a)
        assert "heartbeat not written" in out_a and "LEASE LOST" in out_a, out_a[-3000:]
        # Fenced: A claims nothing while its heartbeat is blocked.
        RecordRun(key="while-fenced").dispatch()
        wait_for(lambda: run_pids(pg, "while-fenced"), "the next job to run", procs, alive=(a, b))
        assert run_pids(pg, "while-fenced") == [b.pid]
    finally:
        lock.release()

    # The heartbeat gets through again: A is back, nothing was lost or doubled.
    wait_for(lambda: "claiming jobs again" in procs.output(a), "A to lift its fence", procs, alive=(a,))
    assert run_pids(pg, "long") == [a.pid, b.pid]
    assert count(pg, "jobs") == 0 and count(pg, "failed_jobs") == 0
    assert stop(procs, a) == 0
    assert stop(procs, b) == 0


def test_job_that_ignores_the_fence_ends_its_worker_before_the_rescue(pg, procs):  # noqa: F811
    a = _worker(procs, pg, "--sleep", "1")
    wait_registered(pg, procs, a)
    FenceDeaf(key="deaf", seconds=30).dispatch()
    wait_for(lambda: run_pids(pg, "deaf") == [a.pid], "the job to start", procs, alive=(a,))
    b = _worker(procs, pg, "--sleep", "1")
    wait_registered(pg, procs, b)
    lock = RowLock(pg, a.pid)
    try:
        assert procs.wait_exit(a, 15) == EXIT_LEASE_LOST
        # Seen on the server's clock, at the latest just after the exit.
        gone_by = parse_timestamp(pg.scalar("SELECT now()"))
        assert (gone_by - lock.heartbeat_at).total_seconds() < STALE_AFTER + 0.5
    finally:
        lock.release()
    # B rescues it once A's heartbeat is stale, and runs it (its second run).
    wait_for(lambda: b.pid in _ended(pg, "deaf"), "B to rescue and run the job", procs, alive=(b,))
    assert _started(pg, "deaf")[b.pid] > lock.heartbeat_at
    assert "did not stop after its lease was lost" in procs.output(a)
    # B's completion rides with its next claim: written within a poll.
    wait_for(lambda: count(pg, "jobs") == 0, "B's completion to be written", procs, alive=(b,))
    assert stop(procs, b) == 0


def test_completion_of_a_job_taken_meanwhile_is_logged_as_a_warning(pg, procs):  # noqa: F811
    # A misconfigured pair: B presumes workers dead after 1.5 s, A fences
    # itself only at 0.8 of 6 s. While A's heartbeat waits on the lock, B
    # rescues A's job and runs it; A's run finishes afterwards and finds
    # the job gone.
    a = procs.start(
        pg.env(TOURNO_IMPORTS=FENCE_IMPORTS, TOURNO_WORKER_STALE_AFTER="6"), "work", "--tries", "3"
    )
    wait_registered(pg, procs, a)
    FenceSleeper(key="slow", first=4).dispatch()
    wait_for(lambda: run_pids(pg, "slow") == [a.pid], "the job to start on A", procs, alive=(a,))
    b = procs.start(
        pg.env(TOURNO_IMPORTS=FENCE_IMPORTS, TOURNO_WORKER_STALE_AFTER="1.5"), "work", "--tries", "3"
    )
    wait_registered(pg, procs, b)
    lock = RowLock(pg, a.pid)
    try:
        wait_for(lambda: b.pid in _ended(pg, "slow"), "B to rescue and run the job", procs, alive=(a, b))
    finally:
        lock.release()
    wait_for(lambda: a.pid in _ended(pg, "slow"), "A's run to end", procs, alive=(a, b))
    wait_for(
        lambda: "it may have run on another worker too" in procs.output(a),
        "A's warning",
        procs,
        timeout=10,
        alive=(a, b),
    )
    assert "heartbeat not written" not in procs.output(a)  # never fenced: a pure late beat
    assert count(pg, "jobs") == 0 and count(pg, "failed_jobs") == 0
    assert stop(procs, a) == 0
    assert stop(procs, b) == 0

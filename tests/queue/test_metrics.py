"""Persisted queue metrics on every driver: what the workers count, where it
is written, how pruning keeps the totals, and ``tourno queue stats``.

The counts are read through ``tourno.queue.metrics`` (the functions behind
``/metrics`` and ``queue stats``) from the real tables and Redis hashes the
workers wrote; the workers are real, in this process (``run_worker``) or as
``tourno work`` processes.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.conftest import run_worker
from tests.queue import test_queue_contract as contract
from tests.queue.test_worker_processes import wait_for
from tests.support.drivers import Driver
from tests.support.jobs import Boom, Flaky, Noop, RecordRun
from tourno.queue import dispatch_many, metrics
from tourno.queue.metrics import TOTALS_MINUTE, Counts, MetricRow, MetricsBuffer

# The contract suite's fixtures: every test below runs on PostgreSQL, SQLite and Redis.
driver = contract.driver
procs = contract.procs
start_workers, stop = contract.start_workers, contract.stop


def by_job(rows: list[MetricRow]) -> dict[tuple[str, str], Counts]:
    return {(r.queue, r.job): r.counts for r in rows}


def outcomes(counts: Counts) -> dict[str, int]:
    """The non-zero outcome counters and runs."""
    return {k: getattr(counts, k) for k in (*metrics.OUTCOMES, "runs") if getattr(counts, k)}


# -- the buffer (pure) ---------------------------------------------------------------------


def test_the_buffer_adds_up_per_minute_queue_and_job_and_puts_back_what_was_not_written():
    buf = MetricsBuffer()
    buf.count("default", "A", "succeeded", 0.5, 2.0, at=120.0)
    buf.count("default", "A", "succeeded", 1.5, 1.0, at=179.9)
    buf.count("default", "A", "failed", None, None, at=150.0)  # never ran: no runtime, no wait
    buf.count("default", "A", "released", 0.1, 0.0, at=180.0)  # the next minute
    buf.count("low", "A", "succeeded", 0.1, 0.1, at=120.0)
    rows = buf.take()
    assert len(buf) == 0
    assert [(r.minute, r.queue, r.job) for r in rows] == [
        (120, "default", "A"),
        (120, "low", "A"),
        (180, "default", "A"),
    ]
    first = rows[0].counts
    assert (first.succeeded, first.failed, first.runs) == (2, 1, 2)
    assert (first.runtime_sum, first.runtime_max, first.wait_sum, first.wait_max) == (2.0, 1.5, 3.0, 2.0)
    # A write that failed: the counts go back and merge with new ones.
    buf.count("default", "A", "succeeded", 3.0, 0.5, at=130.0)
    buf.put_back(rows)
    again = {(r.minute, r.queue): r.counts for r in buf.take()}
    merged = again[(120, "default")]
    assert (merged.succeeded, merged.runs, merged.runtime_max, merged.wait_sum) == (3, 3, 3.0, 3.5)
    assert again[(180, "default")].released == 1


# -- counting what the worker did --------------------------------------------------------------


def test_counters_equal_the_jobs_run_after_a_drain(driver: Driver):
    dispatch_many(Noop(n=i) for i in range(5))
    Flaky(key="flaky", fail_times=1).dispatch()  # raises once (released), then succeeds
    Boom(key="boom").dispatch()  # raises twice: released, then failed
    code, _ = run_worker(tries=2, backoff=[0])
    assert code == 0
    assert driver.size() == 0

    totals = by_job(metrics.totals(driver.backend))
    assert {k: outcomes(c) for k, c in totals.items()} == {
        ("default", "Noop"): {"succeeded": 5, "runs": 5},
        ("default", "Flaky"): {"succeeded": 1, "released": 1, "runs": 2},
        ("default", "Boom"): {"released": 1, "failed": 1, "runs": 2},
    }
    for counts in totals.values():
        assert 0 <= counts.runtime_max <= counts.runtime_sum
        assert 0 <= counts.wait_max <= counts.wait_sum
    # The window holds the same counts (they are all from the last minutes).
    recent = by_job(metrics.since(driver.backend, 60))
    assert {k: outcomes(c) for k, c in recent.items()} == {k: outcomes(c) for k, c in totals.items()}
    queues = metrics.by_queue(list(metrics.totals(driver.backend)))
    assert list(queues) == ["default"]
    assert (queues["default"].succeeded, queues["default"].failed, queues["default"].runs) == (6, 1, 9)


def test_wait_is_measured_from_when_the_job_became_available(driver: Driver):
    RecordRun(key="late").dispatch()
    time.sleep(1.2)  # the job waits at least this long before a worker exists
    code, _ = run_worker()
    assert code == 0
    (counts,) = by_job(metrics.totals(driver.backend)).values()
    assert counts.succeeded == 1
    # Generous: the store's clock and this process's agree on one machine.
    assert 1.0 <= counts.wait_max < 60
    assert counts.wait_sum == pytest.approx(counts.wait_max)


def test_metrics_off_writes_nothing(driver: Driver):
    dispatch_many(Noop(n=i) for i in range(3))
    Boom(key="boom").dispatch()
    code, _ = run_worker(metrics=False)
    assert code == 0
    assert driver.size() == 0
    assert metrics.totals(driver.backend) == []


def test_cancelled_waiting_jobs_are_counted_where_they_were_deleted(driver: Driver):
    from tourno.queue import control

    ids = dispatch_many([Noop(n=1), Noop(n=2), Boom(key="never")])
    assert control.cancel([str(ids[0]), str(ids[2])]).count == 2
    assert control.cancel([str(ids[1])], count_metrics=False).count == 1  # TOURNO_QUEUE_METRICS=0
    totals = by_job(metrics.totals(driver.backend))
    assert {k: outcomes(c) for k, c in totals.items()} == {
        ("default", "Noop"): {"cancelled": 1},
        ("default", "Boom"): {"cancelled": 1},
    }
    assert driver.size() == 0


# -- at-least-once across a crash ------------------------------------------------------------------


def drain_with_a_worker_killed(driver: Driver, procs, n: int) -> int:
    """Two real workers drain ``n`` short jobs; one is SIGKILLed mid-drain
    and the other drains the rest. Returns how many runs there were."""
    # --tries 3: the job A was running when it died runs again on B.
    a, b = start_workers(driver, procs, "--tries", "3", n=2)
    # A few milliseconds a job, so that both workers are mid-batch when A dies.
    dispatch_many(RecordRun(key=f"k{i}", sleep=0.003) for i in range(n))
    wait_for(
        lambda: driver.qdb.scalar("SELECT count(*) FROM test_runs WHERE pid = %s", (a.pid,)) >= 20,
        "worker A to be mid-drain",
        procs,
        alive=(a, b),
    )
    a.send_signal(signal.SIGKILL)
    assert procs.wait_exit(a, 10) == -signal.SIGKILL
    # B takes A's jobs back once A's heartbeat is stale, and drains the rest.
    wait_for(
        lambda: driver.qdb.scalar("SELECT count(DISTINCT key) FROM test_runs") == n and driver.size() == 0,
        f"{n} jobs to be drained",
        procs,
        timeout=90,
        alive=(b,),
    )
    assert stop(procs, b) == 0
    return driver.qdb.scalar("SELECT count(*) FROM test_runs")


def test_a_worker_killed_mid_drain_never_leaves_fewer_counts_than_jobs(driver: Driver, procs):
    n = 300
    runs = drain_with_a_worker_killed(driver, procs, n)
    (counts,) = by_job(metrics.totals(driver.backend)).values()
    # Every job that ran to completion and was deleted was counted; a job A
    # finished but never deleted ran again on B and was counted again.
    assert n <= counts.succeeded <= runs, (n, counts.succeeded, runs)
    assert counts.failed == counts.released == 0


# -- retention ---------------------------------------------------------------------------------


def _old_rows(days_ago: float, succeeded: int, queue: str = "default") -> list[MetricRow]:
    minute = int((time.time() - days_ago * 86400) // 60) * 60
    return [
        MetricRow(
            minute,
            queue,
            "Noop",
            Counts(succeeded=succeeded, runs=succeeded, runtime_sum=1.0, runtime_max=0.5, wait_max=9.0),
        )
    ]


def test_pruning_folds_old_minutes_into_the_totals_so_counters_never_go_down(driver: Driver):
    backend = driver.backend
    # Counts written the way workers write them (with a completion), some of
    # them older than the retention.
    backend.complete(1, [], _old_rows(30, 4))
    backend.complete(1, [], _old_rows(20, 3) + _old_rows(20, 2, queue="low"))
    backend.complete(1, [], _old_rows(0, 1))
    before = by_job(metrics.totals(backend))
    assert before[("default", "Noop")].succeeded == 8

    if driver.kind == "redis":
        # Redis prunes by expiry: each minute hash lives for the retention,
        # the totals hash for ever.
        client = backend.client()
        minute_keys = list(client.scan_iter(match=backend.key("metrics", "m", "*")))
        assert len(minute_keys) == 3
        for key in minute_keys:
            assert 13 * 86400 < client.ttl(key) <= 14 * 86400
        assert client.ttl(backend.key("metrics", "total")) == -1
        cutoff = time.time() - 14 * 86400
        old = [k for k in minute_keys if int(k.decode().rsplit(":", 1)[1]) < cutoff]
        assert len(old) == 2
        client.delete(*old)  # what expiry does, here and now
        assert backend.prune_metrics(14) == 0
    else:
        assert backend.prune_metrics(14) == 3
        assert backend.prune_metrics(14) == 0  # nothing left to fold
        stored = driver.qdb.rows("SELECT count(*) FROM queue_metrics")[0][0]
        assert stored == 3  # two totals rows (default, low) and the recent minute

    after = by_job(metrics.totals(backend))
    assert {k: c.values() for k, c in after.items()} == {k: c.values() for k, c in before.items()}
    assert after[("default", "Noop")].wait_max == 9.0
    # The window sees only what is recent.
    recent = by_job(metrics.since(backend, 60))
    assert {k: c.succeeded for k, c in recent.items()} == {("default", "Noop"): 1}

    # More minutes age out later: the totals keep growing.
    if driver.kind != "redis":
        backend.complete(1, [], _old_rows(15, 10))
        assert backend.prune_metrics(14) == 1
        assert by_job(metrics.totals(backend))[("default", "Noop")].succeeded == 18
        totals_rows = driver.qdb.rows(
            "SELECT count(*) FROM queue_metrics WHERE minute = %s",
            (backend._minute(TOTALS_MINUTE),),
        )
        assert totals_rows[0][0] == 2


def test_a_worker_monitor_prunes_the_metrics_it_keeps(driver: Driver):
    from tourno.queue import backends
    from tourno.queue.monitor import Monitor
    from tourno.queue.worker import Worker, WorkerOptions

    class EagerPruner(Monitor):
        PRUNE_EVERY = 0.0  # at once, then every round

    driver.backend.complete(1, [], _old_rows(30, 4))
    # Long enough for the monitor's first rounds (every 0.25 s) to happen while it runs.
    RecordRun(key="slow", sleep=1.5).dispatch()
    worker = Worker(
        backends.current(),
        WorkerOptions(stop_when_empty=True, sleep=0.1, heartbeat_interval=0.5, stale_after=3.0, memory=0),
    )
    worker.monitor_class = EagerPruner
    assert worker.run() == 0
    totals = by_job(metrics.totals(driver.backend))
    assert totals[("default", "Noop")].succeeded == 4
    assert totals[("default", "RecordRun")].succeeded == 1
    if driver.kind != "redis":
        # The old minute went into the totals row; the new one stays.
        minutes = sorted(r[0] for r in driver.qdb.rows("SELECT DISTINCT minute FROM queue_metrics"))
        assert len(minutes) == 2
        assert minutes[0] == driver.backend._minute(TOTALS_MINUTE)


# -- tourno queue stats -------------------------------------------------------------------------


def test_queue_stats_shows_throughput_failures_and_wait_per_queue(driver: Driver):
    dispatch_many(Noop(n=i) for i in range(4))
    Boom(key="boom").dispatch()
    Noop(n=9).dispatch(queue="low")
    code, _ = run_worker(backoff=[0], queues=["default", "low"])
    assert code == 0

    result = driver.cli("queue", "stats", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["minutes"] == 60
    (row,) = [q for q in data["queues"] if q["queue"] == "default"]
    assert (row["succeeded"], row["failed"], row["released"]) == (4, 1, 0)
    assert row["runs"] == 5
    assert row["per_minute"] == pytest.approx(4 / 60, rel=0.05)
    assert row["avg_wait_seconds"] >= 0 and row["max_wait_seconds"] >= row["avg_wait_seconds"]

    text = driver.cli("queue", "stats", "--minutes", "5")
    assert text.returncode == 0, text.stderr
    assert "default" in text.stdout
    assert "last 5 minutes" in text.stdout

    empty = driver.cli("queue", "stats", "--minutes", "1", "--json")
    assert empty.returncode == 0
    bad = driver.cli("queue", "stats", "--minutes", "0")
    assert bad.returncode == 2


# -- the per-minute series (the dashboard's charts) ------------------------------------------------


def test_the_series_puts_a_drain_in_the_current_minute_and_zeros_elsewhere(driver: Driver):
    before = int(time.time() // 60) * 60
    dispatch_many(Noop(n=i) for i in range(4))
    Boom(key="boom").dispatch()  # released once, then failed
    code, _ = run_worker(tries=2, backoff=[0])
    assert code == 0 and driver.size() == 0
    after = int(time.time() // 60) * 60

    hour = metrics.series(driver.backend, 60)
    assert len(hour) == 60
    assert [b.start for b in hour] == list(range(after - 59 * 60, after + 1, 60))
    # Every count is in the minutes the drain ran in (one, unless it crossed a
    # minute's end); every other bucket is there, as zeros.
    busy = [b for b in hour if b.start >= before]
    assert all(
        (b.succeeded, b.failed, b.released, b.runs, b.wait_sum) == (0, 0, 0, 0, 0.0)
        for b in hour[: -len(busy)]
    )
    assert sum(b.succeeded for b in busy) == 4
    assert sum(b.failed for b in busy) == 1
    assert sum(b.released for b in busy) == 1
    assert sum(b.runs for b in busy) == 6
    if before == after:
        assert (hour[-1].succeeded, hour[-1].failed, hour[-1].runs) == (4, 1, 6)
        assert 0 <= hour[-1].mean_wait <= hour[-1].wait_max
    # A queue nothing ran on has an empty series of the same shape.
    other = metrics.series(driver.backend, 60, queue="low", now=after)
    assert len(other) == 60 and sum(b.runs for b in other) == 0


def test_the_series_sums_minutes_into_steps_per_queue_inside_its_window(driver: Driver):
    backend = driver.backend
    now = 1_800_000_000.0  # an hour boundary: 2027-01-15 08:00 UTC
    assert now % 3600 == 0

    def row(minutes_ago: int, queue: str, succeeded: int, failed: int, wait: float) -> MetricRow:
        counts = Counts(
            succeeded=succeeded, failed=failed, runs=succeeded, wait_sum=wait * succeeded, wait_max=wait
        )
        return MetricRow(int(now) - minutes_ago * 60, queue, "Noop", counts)

    backend.complete(
        1,
        [],
        [
            row(0, "default", 2, 0, 1.0),  # the current minute
            row(5, "default", 3, 1, 2.0),
            row(5, "low", 1, 0, 4.0),  # the same minute, another queue
            row(90, "default", 7, 2, 3.0),  # 1.5 hours ago
            row(24 * 60, "default", 100, 0, 9.0),  # one minute before the day's window
        ],
    )
    hour = metrics.series(backend, 60, 1, now=now)
    assert len(hour) == 60 and hour[-1].start == now
    assert (hour[-1].succeeded, hour[-1].runs, hour[-1].wait_max) == (2, 2, 1.0)
    five = hour[-6]
    assert (five.start, five.succeeded, five.failed, five.runs) == (now - 300, 4, 1, 4)
    assert five.wait_sum == pytest.approx(10.0) and five.wait_max == 4.0
    assert five.mean_wait == pytest.approx(2.5)
    assert sum(b.succeeded for b in hour) == 6  # 90 minutes ago is outside

    low = metrics.series(backend, 60, 1, queue="low", now=now)
    assert [(b.start, b.succeeded) for b in low if b.runs] == [(now - 300, 1)]

    # The day in hour steps, the last one ending with the current minute; the
    # minute 24 hours ago is one before the window.
    day = metrics.series(backend, 24 * 60, 60, now=now)
    assert len(day) == 24 and day[-1].start == now - 59 * 60 and day[0].start == now - (24 * 60 - 1) * 60
    assert sum(b.succeeded for b in day) == 2 + 4 + 7
    assert (day[-1].succeeded, day[-1].failed, day[-2].succeeded, day[-2].failed) == (6, 1, 7, 2)
    assert len(metrics.series(backend, 24 * 60, 30, now=now)) == 48
    # A queue whose name starts with another's is not counted in that one's series.
    backend.complete(1, [], [row(5, "lowest", 9, 0, 1.0)])
    low = metrics.series(backend, 60, 1, queue="low", now=now)
    assert [(b.start, b.succeeded) for b in low if b.runs] == [(now - 300, 1)]
    assert sum(b.succeeded for b in metrics.series(backend, 60, 1, queue="lowest", now=now)) == 9
    with pytest.raises(ValueError):
        metrics.series(backend, 0)

"""The queue engine in-process, on a real PostgreSQL and a real SQLite file.

Claims, dispatch, attempts/backoff, bad payloads, unique and transactional
dispatch, crash recovery, prefetch hand-back, timeouts, and the worker's parts
(run_once, the claim batch and its operations, the monitor). Everything runs
against the database through the real backend and the real worker
(``run_worker`` runs it in the main thread until the queue is empty).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import select
import signal
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import ClassVar

import psycopg2
import pytest

from tests.conftest import run_worker
from tests.support.jobs import (
    Boom,
    BoomThrice,
    Flaky,
    Noop,
    RecordRun,
    ShortTimeout,
    Sleepy,
    TimeoutIsFatal,
    UniqueJob,
)
from tests.support.jobs_engine import (
    EngArgs,
    EngBackoffList,
    EngBoomCounted,
    EngDefaults,
    EngDispatchHigh,
    EngEmptyBackoff,
    EngFractionalTries,
    EngHugeBackoff,
    EngHugeTimeout,
    EngRetryUntil,
)
from tourno import db as tdb
from tourno.db import SQLITE_TIME_FORMAT, parse_timestamp
from tourno.queue import Job, PendingJob, backends, dispatch_many
from tourno.queue.backends.database import CHANNEL
from tourno.queue.batch import ClaimBatch, Complete, Fail, PendingOps, Release
from tourno.queue.job import build_job, parse_payload
from tourno.queue.monitor import Monitor
from tourno.queue.worker import Worker, WorkerOptions

PAYLOAD_KEYS = {
    "uuid",
    "job",
    "display_name",
    "args",
    "max_tries",
    "timeout",
    "backoff",
    "retry_until",
    "dispatched_at",
}


# -- helpers -------------------------------------------------------------------


def backend():
    return backends.current()


def at(qdb, offset: float = 0.0):
    """A timestamp parameter ``offset`` seconds from now, in the backend's format."""
    value = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    return value if qdb.kind == "postgres" else value.strftime(SQLITE_TIME_FORMAT)


def seconds_from_now(value) -> float:
    return (parse_timestamp(value) - dt.datetime.now(dt.UTC)).total_seconds()


def as_json(value):
    """jsonb comes back decoded from psycopg2, text from SQLite."""
    return value if isinstance(value, (dict, list)) else json.loads(value)


def job_row(qdb, job_id) -> dict | None:
    rows = qdb.rows(
        "SELECT id, queue, payload, priority, attempts, available_at, reserved_at, reserved_by, "
        "lease_expires_at, unique_key, created_at FROM jobs WHERE id = %s",
        (job_id,),
    )
    if not rows:
        return None
    keys = (
        "id queue payload priority attempts available_at reserved_at reserved_by "
        "lease_expires_at unique_key created_at"
    ).split()
    return dict(zip(keys, rows[0], strict=True))


def runs(qdb, key: str) -> int:
    return qdb.scalar("SELECT count(*) FROM test_runs WHERE key = %s", (key,))


def run_order(qdb) -> list[str]:
    return [r[0] for r in qdb.rows("SELECT key FROM test_runs ORDER BY id")]


def failed(qdb) -> list[tuple]:
    """(uuid, connection, queue, payload text, exception) of every failed job, oldest first."""
    return qdb.rows("SELECT uuid, connection, queue, payload, exception FROM failed_jobs ORDER BY id")


def mark_value(qdb, key: str):
    return qdb.scalar("SELECT value FROM test_marks WHERE key = %s", (key,))


def insert_raw(qdb, payload: str, *, queue: str = "default", attempts: int = 0, priority: int = 0) -> int:
    """A job row written by hand, bypassing dispatch and its checks."""
    now = at(qdb)
    return qdb.scalar(
        "INSERT INTO jobs (queue, payload, priority, attempts, available_at, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (queue, payload, priority, attempts, now, now),
    )


def raw_payload(job: str, args: dict, **extra) -> str:
    body = {
        "uuid": str(uuidlib.uuid4()),
        "job": job,
        "display_name": job,
        "args": args,
        "max_tries": None,
        "timeout": None,
        "backoff": None,
        "retry_until": None,
        "dispatched_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    body.update(extra)
    return json.dumps(body)


def in_thread(fn, *args):
    """Run ``fn`` in a thread with its own connection; return (thread, box).
    ``box`` gets "result" or "error" when it ends."""
    box: dict = {}

    def main():
        try:
            tdb.open_connection()
            box["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            box["error"] = exc
        finally:
            backend().close_thread_connection()

    t = threading.Thread(target=main, daemon=True)
    t.start()
    return t, box


def join(thread, box, timeout: float = 30.0):
    thread.join(timeout)
    assert not thread.is_alive(), "helper thread did not finish"
    if "error" in box:
        raise box["error"]
    return box.get("result")


def register(name: str = "eng") -> int:
    worker_id, _ = backend().register_worker(name, "test-host", 4242, ["default"])
    return worker_id


# -- 1. claim race ---------------------------------------------------------------


def test_claim_race_never_gives_a_job_to_two_workers(qdb):
    """Four connections claim concurrently (batched, deleting their previous
    batch in the same round trip, as the worker does). Over three rounds of
    300 jobs no job id is ever handed out twice, every job is handed out, each
    claim charges exactly one attempt, to its first job (the worker counts
    the others' when it starts them), and the combined delete empties the table."""
    n_threads, n_jobs = 4, 300
    conn_ids: set = set()

    for round_no in range(3):
        ids = dispatch_many([Noop(n=i) for i in range(n_jobs)])
        assert len(set(ids)) == n_jobs
        barrier = threading.Barrier(n_threads)
        rnd = random.Random(round_no)

        def claimer(worker_id, seed, barrier=barrier):
            r = random.Random(seed)
            if qdb.kind == "postgres":
                conn_ids.add(qdb.scalar("SELECT pg_backend_pid()"))
            got, done = [], []
            barrier.wait(timeout=10)
            while True:
                jobs = backend().claim(worker_id, "default", r.randint(1, 7), done, 60)
                if jobs:
                    assert [j.attempts for j in jobs] == [1] + [0] * (len(jobs) - 1), jobs
                got += [j.id for j in jobs]
                done = [j.id for j in jobs]
                if not jobs:
                    return got

        started = [in_thread(claimer, 1000 + k, rnd.random()) for k in range(n_threads)]
        per_worker = [join(t, box) for t, box in started]
        everything = [i for got in per_worker for i in got]
        assert len(everything) == len(set(everything)), "a job was claimed twice"
        assert sorted(everything) == sorted(ids)
        assert qdb.scalar("SELECT count(*) FROM jobs") == 0

    if qdb.kind == "postgres":
        # The claims really came from separate server sessions.
        assert len(conn_ids) >= n_threads


def test_claim_race_raw_statement_on_two_psycopg2_connections(pg):
    """The backend's claim statement itself, on two plain psycopg2
    connections, racing: disjoint claims that together cover all jobs."""
    from tourno.queue.backends.base import LEASE_MARGIN
    from tourno.queue.backends.database import PostgresBackend

    ids = dispatch_many([Noop(n=i) for i in range(400)])
    conns = [psycopg2.connect(pg.url) for _ in range(2)]
    for c in conns:
        c.autocommit = True
    barrier = threading.Barrier(2)
    results: list[list[int]] = [[], []]
    errors: list[BaseException] = []

    def race(k):
        try:
            cur = conns[k].cursor()
            barrier.wait(timeout=10)
            while True:
                cur.execute(
                    PostgresBackend._CLAIM,
                    {
                        "done": [],
                        "worker": 500 + k,
                        "queue": "default",
                        "limit": 3,
                        "timeout": 60.0,
                        "margin": LEASE_MARGIN,
                    },
                )
                rows = cur.fetchall()
                if not rows:
                    return
                results[k] += [r[0] for r in rows]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(k,), daemon=True) for k in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        for c in conns:
            c.close()
    assert not errors
    assert not set(results[0]) & set(results[1])
    assert sorted(results[0] + results[1]) == sorted(ids)
    # Each row is owned by the connection that claimed it, with one attempt.
    owners = dict(pg.rows("SELECT id, reserved_by FROM jobs"))
    assert all(owners[i] == 500 for i in results[0]) and all(owners[i] == 501 for i in results[1])
    assert pg.scalar("SELECT max(attempts) FROM jobs") == 1


# -- 2. payload and dispatch ---------------------------------------------------------


def test_dispatch_returns_id_and_writes_the_documented_payload(qdb):
    before = dt.datetime.now(dt.UTC)
    job_id = EngDefaults(key="p").dispatch()
    assert isinstance(job_id, int)
    row = job_row(qdb, job_id)
    assert row is not None and row["attempts"] == 0 and row["reserved_at"] is None
    # Class-level queue and priority.
    assert (row["queue"], row["priority"]) == ("eng-q", 7)
    payload = as_json(row["payload"])
    assert PAYLOAD_KEYS <= set(payload)
    assert str(uuidlib.UUID(payload["uuid"])) == payload["uuid"]
    assert payload["job"] == "EngDefaults"
    assert payload["display_name"] == "tests.support.jobs_engine.EngDefaults"
    assert payload["args"] == {"key": "p"}
    assert payload["max_tries"] == 4
    assert payload["timeout"] == 12.5
    assert payload["backoff"] == [1.0, 2.0]
    assert payload["retry_until"] is None
    dispatched = dt.datetime.fromisoformat(payload["dispatched_at"])
    assert dispatched.tzinfo is not None
    assert before - dt.timedelta(seconds=1) <= dispatched <= dt.datetime.now(dt.UTC)
    # The claim's lease uses the job's own timeout (12.5 s + margin), not the worker's.
    claimed = backend().claim(77, "eng-q", 1, [], 60)
    assert [j.id for j in claimed] == [job_id]
    lease = seconds_from_now(job_row(qdb, job_id)["lease_expires_at"])
    from tourno.queue.backends.base import LEASE_MARGIN

    assert 12.5 + LEASE_MARGIN - 10 < lease <= 12.5 + LEASE_MARGIN + 1

    # retry_until is stored as an absolute deadline.
    rid = EngRetryUntil(key="r").dispatch()
    rp = as_json(job_row(qdb, rid)["payload"])
    deadline = dt.datetime.fromisoformat(rp["retry_until"])
    delta = (deadline - dt.datetime.fromisoformat(rp["dispatched_at"])).total_seconds()
    assert 3599 <= delta <= 3601
    # A job without class settings leaves them to the worker.
    plain = as_json(job_row(qdb, Noop(n=3).dispatch())["payload"])
    assert (plain["max_tries"], plain["timeout"], plain["backoff"]) == (None, None, None)
    assert plain["args"] == {"n": 3}


def test_delay_keeps_a_job_out_of_reach_until_its_time(qdb):
    ready = RecordRun(key="now").dispatch()
    later = RecordRun(key="later").dispatch(delay=30)
    much_later = RecordRun(key="much-later").dispatch(delay=dt.timedelta(minutes=2))
    assert 28 <= seconds_from_now(job_row(qdb, later)["available_at"]) <= 30.5
    assert 118 <= seconds_from_now(job_row(qdb, much_later)["available_at"]) <= 120.5

    (stats,) = [s for s in backend().stats() if s.queue == "default"]
    assert (stats.ready, stats.delayed, stats.reserved) == (1, 2, 0)

    with pytest.raises(ValueError, match="delay must be seconds between 0 and"):
        RecordRun(key="past").dispatch(delay=-1)
    assert qdb.scalar("SELECT count(*) FROM jobs") == 3

    # A worker takes only the ready job; the delayed ones stay, unclaimed.
    code, worker = run_worker()
    assert code == 0 and worker.jobs_processed == 1
    assert run_order(qdb) == ["now"]
    assert job_row(qdb, ready) is None
    for job_id in (later, much_later):
        row = job_row(qdb, job_id)
        assert row["attempts"] == 0 and row["reserved_at"] is None
    assert backend().claim(78, "default", 10, [], 60) == []


def test_queue_and_priority_overrides(qdb):
    a = RecordRun(key="a").dispatch(queue="mail", priority=-5)
    b = EngDefaults(key="b").dispatch(queue="other")  # class priority kept
    c = EngDefaults(key="c").dispatch(priority=0)  # class queue kept
    assert (job_row(qdb, a)["queue"], job_row(qdb, a)["priority"]) == ("mail", -5)
    assert (job_row(qdb, b)["queue"], job_row(qdb, b)["priority"]) == ("other", 7)
    assert (job_row(qdb, c)["queue"], job_row(qdb, c)["priority"]) == ("eng-q", 0)

    # A worker on "default" does not touch other queues.
    code, worker = run_worker()
    assert worker.jobs_processed == 0
    code, worker = run_worker(queues=["mail"])
    assert run_order(qdb) == ["a"]


def clear_runs(qdb) -> None:
    qdb.database.execute_sql("DELETE FROM test_runs")


def test_lower_priority_runs_first_then_dispatch_order(qdb):
    for prefetch in (1, 10):
        for key, prio in [("p5", 5), ("p0a", 0), ("m3", -3), ("p0b", 0), ("p10", 10), ("m3b", -3)]:
            RecordRun(key=key).dispatch(priority=prio)
        code, worker = run_worker(prefetch=prefetch, batch_seconds=60)
        assert code == 0 and worker.jobs_processed == 6
        assert run_order(qdb) == ["m3", "m3b", "p0a", "p0b", "p5", "p10"], prefetch
        clear_runs(qdb)


def test_queue_list_is_a_strict_priority_order(qdb):
    RecordRun(key="low").dispatch(queue="low")
    for prefetch in (1, 3, 10):
        for i in range(5):
            RecordRun(key=f"d{i}").dispatch()
        for i in range(5):
            RecordRun(key=f"h{i}").dispatch(queue="high")
        code, worker = run_worker(queues=["high", "default"], prefetch=prefetch, batch_seconds=60)
        assert code == 0 and worker.jobs_processed == 10
        assert run_order(qdb) == [f"h{i}" for i in range(5)] + [f"d{i}" for i in range(5)], prefetch
        clear_runs(qdb)
    # A queue not in the list is never served.
    assert qdb.scalar("SELECT count(*) FROM jobs") == 1
    assert qdb.scalar("SELECT queue FROM jobs") == "low"


def test_high_job_dispatched_mid_run_goes_before_remaining_default_jobs_without_prefetch(qdb):
    """With prefetch=1 the queue list is re-checked before every job."""
    for i in range(3):
        EngDispatchHigh(key=f"d{i}").dispatch()
    run_worker(queues=["high", "default"], prefetch=1)
    assert run_order(qdb) == ["d0", "d0:high", "d1", "d1:high", "d2", "d2:high"]


def test_high_job_dispatched_mid_run_goes_before_remaining_default_jobs_with_prefetch(sqlite):
    """DESIGN §3: '--queue high,default is a strict priority list' (Laravel:
    a lower queue is served only when every higher queue is empty at that
    moment). Once the worker claims batches, it runs a whole batch of default
    jobs before it looks at high again. (Worker logic, the same on both
    backends; run on SQLite only.)"""
    for i in range(3):
        EngDispatchHigh(key=f"d{i}").dispatch()
    # batch_seconds large: claim sizes are prefetch (the default), not timing-dependent.
    run_worker(queues=["high", "default"], batch_seconds=60)
    assert run_order(sqlite) == ["d0", "d0:high", "d1", "d1:high", "d2", "d2:high"]


@dataclass
class Tagged(Job):
    """A dataclass job with a class variable (as ``cron`` is declared)."""

    n: int
    tag: ClassVar[str] = "not an argument"

    def handle(self) -> None:
        pass


def test_class_variables_are_no_arguments(qdb):
    job_id = Tagged(n=1).dispatch()
    ((payload,),) = qdb.rows("SELECT payload FROM jobs WHERE id = %s", (job_id,))
    assert as_json(payload)["args"] == {"n": 1}


def test_dispatch_many_inserts_all_in_order(qdb):
    """1,000 jobs in one call (COPY on PostgreSQL), then 300 (one INSERT)
    and on SQLite 4,500 (several INSERT chunks): every row, in order."""
    expected: list[int] = []
    all_ids: list[int] = []
    for count in (1000, 300, 4500) if qdb.kind == "sqlite" else (1000, 300):
        start = len(expected)
        ids = dispatch_many([Noop(n=start + i) for i in range(count)])
        assert len(ids) == count and all(isinstance(i, int) for i in ids)
        assert ids == sorted(ids) and len(set(ids)) == count
        expected += range(start, start + count)
        all_ids += ids
    assert all_ids == sorted(all_ids)
    rows = qdb.rows("SELECT id, payload FROM jobs ORDER BY id")
    assert [r[0] for r in rows] == all_ids
    assert [as_json(r[1])["args"]["n"] for r in rows] == expected
    assert dispatch_many([]) == []


AWKWARD = 'tab\there\nnew line \\ back \\N "quote" %s %% \u00e9\u4e2d\U0001f600 \r end'


def test_large_batch_keeps_every_field_of_every_job(qdb):
    """600 jobs (PostgreSQL sends 500+ with COPY) across three queues, with
    priorities, delays and arguments full of characters that need escaping:
    each row is exactly what was dispatched, and the jobs run."""
    queues = ["default", "mail", "later"]
    pending = [
        EngArgs(
            text=f"{AWKWARD}{i}", data={"i": i, "nested": [1, None, True, "x\ty", {"k": "\\"}]}, n=i
        ).pending(queue=queues[i % 3], priority=(i % 4) - 2, delay=60 if i % 3 == 2 else None)
        for i in range(600)
    ]
    ids = dispatch_many(pending)
    assert len(ids) == 600 and ids == sorted(ids) and len(set(ids)) == 600
    rows = {
        r[0]: r[1:] for r in qdb.rows("SELECT id, queue, priority, payload, attempts, available_at FROM jobs")
    }
    assert sorted(rows) == ids
    for job_id, p in zip(ids, pending, strict=True):
        queue, priority, payload, attempts, available_at = rows[job_id]
        assert (queue, priority, attempts) == (p.queue, p.priority, 0)
        assert as_json(payload) == json.loads(p.payload_json)
        wait = seconds_from_now(available_at)
        assert (55 <= wait <= 60.5) if p.delay else (wait <= 0.5)
    stats = {st.queue: (st.ready, st.delayed) for st in backend().stats()}
    assert stats == {"default": (200, 0), "mail": (200, 0), "later": (0, 200)}
    # The dashboard's bounded counts: the same queues and figures under the cap...
    capped = {st.queue: (st.ready, st.delayed, st.reserved) for st in backend().stats(cap=200)}
    assert capped == {"default": (200, 0, 0), "mail": (200, 0, 0), "later": (0, 200, 0)}
    # ...and past it an estimate on PostgreSQL (never under cap + 1), exact on SQLite.
    over = {st.queue: st for st in backend().stats(cap=50)}
    assert set(over) == {"default", "mail", "later"}
    ready, delayed = over["default"].ready, over["later"].delayed
    if qdb.kind == "postgres":
        assert ready.estimated and ready >= 51 and delayed.estimated and delayed >= 51
        assert not over["later"].ready.estimated and over["later"].ready == 0
    else:
        assert (ready, delayed) == (200, 200)
    assert over["default"].oldest_ready_at is not None and over["later"].oldest_ready_at is None

    code, worker = run_worker(queues=["mail"])
    assert worker.jobs_processed == 200
    ran = {int(r[0].split(":")[1]) for r in qdb.rows("SELECT key FROM test_runs")}
    assert ran == set(range(1, 600, 3))  # exactly the mail jobs, each once
    # The worker rebuilt the same objects from the rows it did not run.
    for job_id, p in list(zip(ids, pending, strict=True))[2::3][:20]:
        stored = rows[job_id][2]
        rebuilt = build_job(parse_payload(stored if isinstance(stored, str) else json.dumps(stored)))
        assert rebuilt == EngArgs(**json.loads(p.payload_json)["args"])
        assert rebuilt.text.startswith(AWKWARD)


def test_dispatch_many_with_duplicate_unique_jobs_inserts_one(qdb):
    ids = dispatch_many([UniqueJob(key="dup"), Noop(n=1), UniqueJob(key="dup")])
    assert isinstance(ids[0], int) and isinstance(ids[1], int) and ids[2] is None
    assert qdb.scalar("SELECT count(*) FROM jobs") == 2


def test_dispatch_many_same_pending_job_twice_gets_two_ids(qdb):
    """Sending one prepared job N times is a natural use of dispatch_many.
    Both rows are inserted, but both returned ids are the second row's, and
    the two rows share a uuid, so when both fail one failed_jobs record
    overwrites the other (failed_jobs.uuid is unique)."""
    p = Noop(n=1).pending()
    ids = dispatch_many([p, p])
    assert qdb.scalar("SELECT count(*) FROM jobs") == 2
    assert len(set(ids)) == 2


def test_pushing_stored_payloads_without_uuid_returns_their_ids(qdb):
    """None means 'a unique job was already pending'; here both rows were inserted."""
    ids = dispatch_many(
        [PendingJob.from_payload("default", {"job": "Noop", "args": {"n": i}}) for i in range(2)]
    )
    assert qdb.scalar("SELECT count(*) FROM jobs") == 2
    assert all(isinstance(i, int) for i in ids), ids


# -- 3. attempts, retries, backoff ------------------------------------------------------


def test_job_failing_every_time_fails_after_worker_tries_with_real_exception(qdb):
    boom_id = Boom(key="b").dispatch()
    uuid_b = as_json(job_row(qdb, boom_id)["payload"])["uuid"]
    EngBoomCounted(key="c").dispatch()
    RecordRun(key="after").dispatch()

    code, worker = run_worker(tries=3)
    assert code == 0
    assert runs(qdb, "b") == 3 and runs(qdb, "c") == 3
    assert runs(qdb, "after") == 1
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0

    records = failed(qdb)
    assert len(records) == 2
    by_uuid = {r[0]: r for r in records}
    uuid, connection, queue, payload, exception = by_uuid[uuid_b]
    assert (connection, queue) == ("database", "default")
    assert as_json(payload)["job"] == "Boom"
    assert "Traceback" in exception and "ValueError: boom b" in exception
    assert any("ValueError: engine boom c" in r[4] for r in records)
    # The failed() hook ran once, with the real exception.
    assert mark_value(qdb, "failed:b") == "ValueError"
    assert runs(qdb, "hook:c") == 1
    assert mark_value(qdb, "hook:c") == "ValueError"


def test_job_level_tries_and_backoff_override_the_worker(qdb):
    """BoomThrice says tries=3, backoff=[0, 0]; the worker says tries=1,
    backoff=60. The job's settings win: three immediate runs, then failed.
    A job without settings follows the worker: one run, failed."""
    BoomThrice(key="t").dispatch()
    EngBoomCounted(key="w").dispatch()
    code, worker = run_worker(tries=1, backoff=[60])
    assert runs(qdb, "t") == 3
    assert runs(qdb, "w") == 1
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0
    exceptions = [r[4] for r in failed(qdb)]
    assert len(exceptions) == 2
    assert any("ValueError: boom t" in e for e in exceptions)


def test_tries_zero_means_unlimited_until_success(qdb):
    Flaky(key="f", fail_times=5).dispatch()
    code, worker = run_worker(tries=0)
    assert code == 0
    assert runs(qdb, "f") == 6
    assert failed(qdb) == []
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0


def test_flaky_job_succeeding_on_second_attempt_leaves_nothing_behind(qdb):
    Flaky(key="f2", fail_times=1).dispatch()
    code, worker = run_worker(tries=3)
    assert runs(qdb, "f2") == 2
    assert worker.jobs_processed == 2
    assert failed(qdb) == []
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0


def test_worker_backoff_delays_the_retry(qdb):
    job_id = EngBoomCounted(key="bo").dispatch()
    code, worker = run_worker(tries=3, backoff=[4])
    assert runs(qdb, "bo") == 1  # the retry is not due yet, so the run ended
    row = job_row(qdb, job_id)
    assert row["attempts"] == 1
    assert row["reserved_at"] is None and row["reserved_by"] is None and row["lease_expires_at"] is None
    assert 2.5 <= seconds_from_now(row["available_at"]) <= 4.5
    (stats,) = [s for s in backend().stats() if s.queue == "default"]
    assert (stats.ready, stats.delayed) == (0, 1)
    assert failed(qdb) == []
    assert runs(qdb, "hook:bo") == 0


def test_backoff_list_is_indexed_by_attempt_and_last_value_repeats(qdb):
    job_id = EngBackoffList(key="bl").dispatch()
    expected = [3, 8, 8]
    for attempt, delay in enumerate(expected, start=1):
        code, worker = run_worker(tries=1, backoff=[100])
        row = job_row(qdb, job_id)
        assert row["attempts"] == attempt
        assert delay - 1.5 <= seconds_from_now(row["available_at"]) <= delay + 0.5, attempt
        # Make the retry due now instead of waiting for it.
        qdb.database.execute_sql(
            qdb.sql("UPDATE jobs SET available_at = %s WHERE id = %s"), (at(qdb, -1), job_id)
        )
    assert runs(qdb, "bl") == 3
    assert failed(qdb) == []


def test_retry_until_overrides_tries(qdb):
    job_id = EngRetryUntil(key="ru").dispatch()
    run_worker(tries=1)
    row = job_row(qdb, job_id)
    assert runs(qdb, "ru") == 1
    assert row is not None and row["attempts"] == 1, "tries=1 must not fail a job with retry_until ahead"
    assert 28 <= seconds_from_now(row["available_at"]) <= 30.5
    assert failed(qdb) == []


# -- 4. max attempts and deadlines -------------------------------------------------------


def set_attempts(qdb, job_id, attempts):
    qdb.database.execute_sql(qdb.sql("UPDATE jobs SET attempts = %s WHERE id = %s"), (attempts, job_id))


def test_job_already_at_its_tries_fails_without_running(qdb):
    """A worker died while running the job's last allowed attempt: the row is
    free again (rescued) with attempts == tries. The next claim fails it with
    MaxAttemptsExceeded, without running it, and its failed() hook runs."""
    boom = Boom(key="dead1").dispatch()  # worker tries (1)
    thrice = BoomThrice(key="dead3").dispatch()  # job tries (3)
    RecordRun(key="next").dispatch()
    set_attempts(qdb, boom, 1)
    set_attempts(qdb, thrice, 3)

    code, worker = run_worker()
    assert code == 0
    assert runs(qdb, "dead1") == 0 and runs(qdb, "dead3") == 0
    assert runs(qdb, "next") == 1
    records = failed(qdb)
    assert len(records) == 2
    for r in records:
        assert "MaxAttemptsExceeded" in r[4] and "has been attempted too many times" in r[4]
    assert mark_value(qdb, "failed:dead1") == "MaxAttemptsExceeded"
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0


def test_job_one_below_its_tries_gets_its_last_attempt(qdb):
    job_id = BoomThrice(key="last").dispatch()
    set_attempts(qdb, job_id, 2)
    run_worker()
    assert runs(qdb, "last") == 1
    (record,) = failed(qdb)
    assert "ValueError: boom last" in record[4] and "MaxAttemptsExceeded" not in record[4]


def test_retry_until_in_the_past_fails_with_retry_deadline_passed(qdb):
    payload = EngRetryUntil(key="late").pending().payload
    payload["retry_until"] = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat()
    p = PendingJob.from_payload("default", payload)
    backend().push([p])
    RecordRun(key="next").dispatch()
    run_worker()
    assert runs(qdb, "late") == 0
    assert runs(qdb, "next") == 1
    (record,) = failed(qdb)
    assert record[0] == payload["uuid"]
    assert "RetryDeadlinePassed" in record[4] and "retry_until" in record[4]
    assert mark_value(qdb, "failed:late") == "RetryDeadlinePassed"


# -- 5. bad input ---------------------------------------------------------------------------


def test_bad_rows_go_to_failed_jobs_and_the_worker_carries_on(qdb):
    bad: list[tuple[str, str]] = [
        ("[1, 2, 3]", "payload must be a JSON object, got list"),
        ('"just a string"', "payload must be a JSON object, got str"),
        ("42", "payload must be a JSON object, got int"),
        (raw_payload("EngNoSuchJob", {}), "unknown job 'EngNoSuchJob'"),
        (raw_payload("RecordRun", {"key": "k", "colour": "red"}), "no longer fit"),
        (raw_payload("RecordRun", {"key": "t"}, timeout="soon"), "payload 'timeout' has an invalid value"),
        (raw_payload("RecordRun", {"key": "m"}, max_tries="3"), "payload 'max_tries' has an invalid value"),
        (raw_payload("RecordRun", {"key": "b"}, backoff=[-1]), "payload 'backoff' has an invalid value"),
        (raw_payload("RecordRun", {"key": "r"}, retry_until="someday"), "not an ISO time"),
        (json.dumps({"uuid": str(uuidlib.uuid4()), "args": {}}), "payload has no job name"),
        (raw_payload("RecordRun", ["key", "x"]), "payload 'args' must be a JSON object"),
    ]
    if qdb.kind == "sqlite":
        bad.append(("this is {not json", "payload is not valid JSON"))
    good = []
    for i, (payload, _) in enumerate(bad):
        insert_raw(qdb, payload)
        good.append(f"good{i}")
        RecordRun(key=f"good{i}").dispatch()

    code, worker = run_worker()
    assert code == 0
    assert worker.jobs_processed == 2 * len(bad)
    assert run_order(qdb) == good  # every good job ran once, in order
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0

    records = failed(qdb)
    assert len(records) == len(bad)
    assert len({r[0] for r in records}) == len(bad)  # no record overwrote another
    for (payload, message), (_uuid, _conn, queue, stored, exception) in zip(bad, records, strict=True):
        assert queue == "default"
        assert "InvalidPayload" in exception and message in exception, exception
        if qdb.kind == "sqlite":
            assert stored == payload  # kept exactly as it was, even when it is not JSON
        else:
            assert json.loads(stored) == json.loads(payload)
    # The unexpected argument is named.
    assert any("colour" in r[4] for r in records)
    # Nothing named in a bad payload ran.
    assert qdb.scalar("SELECT count(*) FROM test_runs WHERE key NOT LIKE %s", ("good%",)) == 0


def test_args_rejected_by_the_job_constructor_are_an_invalid_payload(sqlite):
    """(Worker logic; run on SQLite only.) The args fit the signature but the job's own validation
    (``__post_init__``) rejects them, e.g. after a change to the class. That is
    bad input like (c): it must be failed, and the worker must go on."""
    insert_raw(sqlite, raw_payload("EngValidated", {"n": -1}))
    RecordRun(key="after").dispatch()
    run_worker()
    records, after = failed(sqlite), runs(sqlite, "after")
    assert len(records) == 1 and "InvalidPayload" in records[0][4]
    assert after == 1


def test_huge_numbers_in_a_payload_do_not_kill_the_worker(qdb):
    """A timeout of 1e300 (setitimer: OverflowError) and a backoff of 1e300
    (release: OverflowError on SQLite, DataError 'interval out of range' on
    PostgreSQL) are valid JSON numbers; they must fail the job, not the worker."""
    insert_raw(qdb, raw_payload("RecordRun", {"key": "huge-timeout"}, timeout=1e300))
    RecordRun(key="after1").dispatch()
    insert_raw(qdb, raw_payload("EngHugeBackoff", {"key": "huge-backoff"}, max_tries=3, backoff=[1e300]))
    RecordRun(key="after2").dispatch()
    code, worker = run_worker()
    assert code == 0
    assert runs(qdb, "after1") == 1 and runs(qdb, "after2") == 1
    assert runs(qdb, "huge-timeout") == 0
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0
    assert len(failed(qdb)) == 2


def test_dispatch_refuses_class_settings_the_worker_rejects(sqlite):
    # (Payload encoding, the same on both backends; run on SQLite only.)
    for job in (EngFractionalTries(), EngEmptyBackoff(), EngHugeTimeout(key="t"), EngHugeBackoff(key="b")):
        with pytest.raises((TypeError, ValueError)):
            job.dispatch()
    assert sqlite.scalar("SELECT count(*) FROM jobs") == 0


def test_class_settings_the_worker_rejects_never_run_and_never_stall(qdb):
    """Whether dispatch refuses them (better) or not (today), such jobs never
    run and never stop the worker: they end in failed_jobs as InvalidPayload."""
    dispatched = 0
    for cls in (EngFractionalTries, EngEmptyBackoff):
        try:
            cls().dispatch()
            dispatched += 1
        except (TypeError, ValueError):
            pass
    RecordRun(key="after").dispatch()
    code, worker = run_worker()
    assert code == 0
    assert run_order(qdb) == ["after"]
    records = failed(qdb)
    assert len(records) == dispatched
    assert all("InvalidPayload" in r[4] for r in records)
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0


def test_builders_reject_what_the_worker_would_choke_on():
    """parse_payload/build_job are the worker's first line of defence; they
    raise InvalidPayload, never a raw error."""
    from tourno.queue import InvalidPayload

    for text in ("nope", b"\xff", "[]", "null", '{"job": 1}', '{"job": "X", "backoff": []}'):
        with pytest.raises(InvalidPayload):
            parse_payload(text)
    with pytest.raises(InvalidPayload, match="unknown job"):
        build_job({"job": "EngNoSuchJob", "args": {}})
    assert build_job({"job": "RecordRun", "args": {"key": "k"}}) == RecordRun(key="k")


# -- 6. unique jobs -------------------------------------------------------------------------


def test_unique_job_dispatch_is_a_no_op_while_pending_or_running(qdb):
    first = UniqueJob(key="x").dispatch()
    assert isinstance(first, int)
    assert UniqueJob(key="x").dispatch() is None
    other = UniqueJob(key="y").dispatch()
    assert isinstance(other, int)
    assert qdb.scalar("SELECT count(*) FROM jobs") == 2
    assert job_row(qdb, first)["unique_key"] == "UniqueJob:x"

    # While it runs (reserved) it still holds its key.
    (claimed,) = backend().claim(91, "default", 1, [], 60)
    assert claimed.id == first
    assert UniqueJob(key="x").dispatch() is None
    assert backend().hand_back(91, [first]) == 1

    # Once it is done, a new dispatch is accepted. (The claim above used an
    # attempt that the hand-back does not refund: allow a second.)
    run_worker(tries=2)
    assert runs(qdb, "x") == 1 and runs(qdb, "y") == 1
    again = UniqueJob(key="x").dispatch()
    assert isinstance(again, int) and again != first  # ids are never reused, SQLite included
    assert qdb.scalar("SELECT count(*) FROM jobs WHERE unique_key = %s", ("UniqueJob:x",)) == 1
    assert UniqueJob(key="x").dispatch() is None


def test_unique_job_that_failed_frees_its_key(qdb):
    """A failed unique job leaves the queue, so it no longer blocks."""
    p = UniqueJob(key="z").pending()
    backend().push([p])
    (claimed,) = backend().claim(92, "default", 1, [], 60)
    assert backend().fail(92, claimed, p.uuid, "gave up")
    assert isinstance(UniqueJob(key="z").dispatch(), int)


def test_unique_job_concurrent_dispatch_inserts_exactly_one(pg):
    for round_no in range(3):
        key = f"race{round_no}"
        barrier = threading.Barrier(8)

        def dispatcher(key=key, barrier=barrier):
            barrier.wait(timeout=10)
            return UniqueJob(key=key).dispatch()

        started = [in_thread(dispatcher) for _ in range(8)]
        results = [join(t, box) for t, box in started]
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert pg.scalar("SELECT count(*) FROM jobs WHERE unique_key = %s", (f"UniqueJob:{key}",)) == 1
        assert pg.scalar("SELECT count(*) FROM jobs WHERE payload->'args'->>'key' = %s", (key,)) == 1


def test_unique_for_expiry_lets_a_new_job_in(qdb):
    first = UniqueJob(key="exp").dispatch()
    assert UniqueJob(key="exp").dispatch() is None
    # Not yet expired: 10 minutes into a one-hour window.
    qdb.database.execute_sql(qdb.sql("UPDATE jobs SET created_at = %s WHERE id = %s"), (at(qdb, -600), first))
    assert UniqueJob(key="exp").dispatch() is None
    # Past the window.
    qdb.database.execute_sql(
        qdb.sql("UPDATE jobs SET created_at = %s WHERE id = %s"), (at(qdb, -3700), first)
    )
    second = UniqueJob(key="exp").dispatch()
    assert isinstance(second, int) and second != first
    assert job_row(qdb, first)["unique_key"] is None  # the old job stays queued, keyless
    assert job_row(qdb, second)["unique_key"] == "UniqueJob:exp"
    assert UniqueJob(key="exp").dispatch() is None
    run_worker()
    assert runs(qdb, "exp") == 2


# -- 7. transactional dispatch ---------------------------------------------------------------


def _notifications(conn, wait: float, settle: float = 0.2) -> set[str]:
    """Queue names notified within ``wait`` seconds (collecting for
    ``settle`` more seconds after the first one)."""
    got: set[str] = set()
    end = time.monotonic() + wait
    while True:
        conn.poll()
        got |= {n.payload for n in conn.notifies if n.channel == CHANNEL}
        conn.notifies.clear()
        if got:
            end = min(end, time.monotonic() + settle)
        left = end - time.monotonic()
        if left <= 0:
            return got
        select.select([conn], [], [], left)


def test_notify_is_sent_at_commit_only(pg):
    """For each push path (one row, a batch, a COPY batch of 500+)."""
    listener = psycopg2.connect(pg.url)
    listener.autocommit = True
    try:
        listener.cursor().execute(f"LISTEN {CHANNEL}")
        for batch in (1, 3, 600):
            _check_notify(pg, listener, batch)
            pg.database.execute_sql("DELETE FROM jobs")
    finally:
        listener.close()


def _check_notify(pg, listener, batch) -> None:
    def send(queue, delay=None):
        return dispatch_many(
            [RecordRun(key=f"{queue}{i}").pending(queue=queue, delay=delay) for i in range(batch)]
        )

    with tdb.database.atomic():
        send("mail")
        send("mail-later", delay=60)
        assert _notifications(listener, 0.3) == set(), batch
        # Not visible to another session yet either.
        t, box = in_thread(lambda: pg.scalar("SELECT count(*) FROM jobs"))
        assert join(t, box) == 0
    assert _notifications(listener, 5.0) == {"mail"}, batch  # the delayed queue is not ready

    with pytest.raises(RuntimeError):
        with tdb.database.atomic():
            send("never")
            raise RuntimeError("abort")
    assert _notifications(listener, 0.3) == set(), batch
    assert pg.scalar("SELECT count(*) FROM jobs WHERE queue = 'never'") == 0

    # Outside a transaction: at once.
    send("now")
    assert _notifications(listener, 5.0) == {"now"}
    assert pg.scalar("SELECT count(*) FROM jobs") == 3 * batch, batch


# -- 8. crash recovery -----------------------------------------------------------------------


def test_rescue_releases_jobs_of_dead_workers_only(qdb):
    b = backend()
    dead_ids = [RecordRun(key=f"r{i}").dispatch() for i in range(5)]
    a, s, long_running, expired, no_lease = dead_ids

    stale = register("stale")
    alive = register("alive")
    ghost = 987_654  # never registered (or already pruned)
    assert [j.id for j in b.claim(ghost, "default", 1, [], 60)] == [a]
    assert [j.id for j in b.claim(stale, "default", 1, [], 60)] == [s]
    assert [j.id for j in b.claim(alive, "default", 1, [], 60)] == [long_running]
    assert [j.id for j in b.claim(alive, "default", 1, [], 60)] == [expired]
    assert [j.id for j in b.claim(alive, "default", 1, [], 0)] == [no_lease]  # timeout 0: no lease
    assert job_row(qdb, no_lease)["lease_expires_at"] is None

    sql = qdb.sql
    qdb.database.execute_sql(
        sql("UPDATE workers SET heartbeat_at = %s WHERE id = %s"), (at(qdb, -3600), stale)
    )
    # The live worker's job has run for a day: its heartbeat keeps it.
    qdb.database.execute_sql(
        sql("UPDATE jobs SET reserved_at = %s WHERE id IN (%s, %s)"),
        (at(qdb, -86400), long_running, no_lease),
    )
    # ...unless its lease ran out (the backstop).
    qdb.database.execute_sql(
        sql("UPDATE jobs SET lease_expires_at = %s WHERE id = %s"), (at(qdb, -1), expired)
    )

    released = b.rescue(30)
    assert sorted(job_id for job_id, _ in released) == sorted([a, s, expired])
    for job_id in (a, s, expired):
        row = job_row(qdb, job_id)
        assert row["reserved_at"] is None and row["reserved_by"] is None and row["lease_expires_at"] is None
        assert row["attempts"] == 1  # the attempt it used is kept
        assert seconds_from_now(row["available_at"]) <= 0.5
    for job_id in (long_running, no_lease):
        row = job_row(qdb, job_id)
        assert row["reserved_by"] == alive and row["attempts"] == 1

    # Idempotent, and the released jobs are claimable again, as a 2nd attempt.
    assert b.rescue(30) == []
    again = b.claim(register("new"), "default", 10, [], 60)
    assert sorted(j.id for j in again) == sorted([a, s, expired])
    # The claim charges its first job; the worker charges the others as it starts them.
    assert [j.attempts for j in again] == [2, 1, 1]


def test_rescue_reports_the_former_owner(qdb):
    """QueueBackend.rescue: 'returns (job id, former worker id) pairs'; the
    worker logs them ('its worker #None stopped heartbeating' today)."""
    job_id = RecordRun(key="who").dispatch()
    backend().claim(424_242, "default", 1, [], 60)
    assert backend().rescue(30) == [(job_id, 424_242)]


def test_former_owner_cannot_touch_a_rescued_job(qdb):
    b = backend()
    job_id = RecordRun(key="owned").dispatch()
    old = register("old")
    (claimed,) = b.claim(old, "default", 1, [], 60)
    qdb.database.execute_sql(
        qdb.sql("UPDATE workers SET heartbeat_at = %s WHERE id = %s"), (at(qdb, -600), old)
    )
    assert [job_id for job_id, _ in b.rescue(30)] == [job_id]
    new = register("new")
    (reclaimed,) = b.claim(new, "default", 1, [], 60)
    assert reclaimed.id == job_id and reclaimed.attempts == 2

    # The old worker wakes up and tries to finish the job it thought it had.
    assert b.complete(old, [job_id]) == 0
    assert b.release(old, job_id, 0) is False
    assert b.fail(old, claimed, "00000000-0000-0000-0000-000000000001", "late") is False
    assert b.hand_back(old, [job_id]) == 0
    assert b.claim(old, "default", 1, [job_id], 60) == []  # the batched delete is guarded too
    row = job_row(qdb, job_id)
    assert row["reserved_by"] == new and row["attempts"] == 2
    assert failed(qdb) == []
    assert b.complete(new, [job_id]) == 1
    assert job_row(qdb, job_id) is None


def test_worker_rescues_a_dead_workers_job_and_runs_it(qdb):
    """End to end: the job of a worker that vanished is run by the next worker."""
    job_id = RecordRun(key="orphan").dispatch()
    backend().claim(555_555, "default", 1, [], 60)  # held by a worker with no row
    # The queue looks empty at first (the job is reserved), so run until one
    # job is done rather than until empty; max_time bounds a failure.
    code, worker = run_worker(stop_when_empty=False, max_jobs=1, max_time=20, tries=2)
    assert worker.stop_reason == "max_jobs"
    assert runs(qdb, "orphan") == 1
    assert job_row(qdb, job_id) is None
    assert failed(qdb) == []


def test_rescued_job_on_its_last_attempt_fails_as_max_attempts(qdb):
    """The dead worker's attempt counts: with tries=1 the rescued job is not
    run again (it may be what killed the worker) but failed."""
    RecordRun(key="poison").dispatch()
    backend().claim(555_556, "default", 1, [], 60)
    code, worker = run_worker(stop_when_empty=False, max_jobs=1, max_time=20, tries=1)
    assert worker.stop_reason == "max_jobs"
    assert runs(qdb, "poison") == 0
    (record,) = failed(qdb)
    assert "MaxAttemptsExceeded" in record[4]


# -- 9. prefetch and hand-back ----------------------------------------------------------------


def test_hand_back_frees_unstarted_jobs_without_charging_them(qdb):
    """A claim charges only its first job (which starts at once); the others
    are charged when the worker starts them, so handing them back leaves
    their attempts untouched, and only their owner can hand them back."""
    b = backend()
    ids = dispatch_many([RecordRun(key=f"h{i}") for i in range(10)])
    w1, w2 = register("w1"), register("w2")
    batch = b.claim(w1, "default", 10, [], 60)
    assert [j.id for j in batch] == ids
    assert [j.attempts for j in batch] == [1] + [0] * 9
    assert b.claim(w2, "default", 10, [], 60) == []

    assert b.hand_back(w2, ids[1:]) == 0  # not its jobs
    assert b.hand_back(w1, []) == 0
    assert b.hand_back(w1, ids[1:]) == 9
    rows = {r[0]: r[1:] for r in qdb.rows("SELECT id, attempts, reserved_by FROM jobs")}
    assert rows[ids[0]] == (1, w1)
    assert all(rows[i] == (0, None) for i in ids[1:])

    taken = b.claim(w2, "default", 10, [], 60)
    assert [j.id for j in taken] == ids[1:]
    assert [j.attempts for j in taken] == [1] + [0] * 8
    # Handing back twice does nothing the second time.
    assert b.hand_back(w2, ids[2:4]) == 2
    assert b.hand_back(w2, ids[2:4]) == 0
    # A started prefetched job's attempt is written by count_attempt or its release.
    assert b.count_attempt(w2, ids[5], 1) is True
    assert job_row(qdb, ids[5])["attempts"] == 1
    assert b.count_attempt(w1, ids[5], 2) is False  # not its job
    assert b.release(w2, ids[6], 0, 1) is True
    assert job_row(qdb, ids[6])["attempts"] == 1 and job_row(qdb, ids[6])["reserved_by"] is None


def test_worker_hands_back_its_batch_while_a_long_job_runs(qdb):
    """A worker that has measured its jobs as fast claims a batch (here:
    prefetch=10, batch_seconds large so the batch is exactly 10). The batch's
    first job sleeps 1.5 s, so once the batch has been held for ``hold``
    (0.5 s) the nine other claimed jobs go back with attempts 0. A second
    worker (a thread with its own connection) takes and runs one meanwhile."""
    RecordRun(key="warm-up").dispatch(priority=-1)  # claimed alone; measures a fast job
    Sleepy(key="slow", seconds=1.5).dispatch()
    others = dispatch_many([RecordRun(key=f"o{i}") for i in range(9)])
    seen: dict = {}

    marks = ",".join("%s" for _ in others)
    watch_sql = f"SELECT id, attempts, reserved_by FROM jobs WHERE id IN ({marks})"

    def watcher():
        b = backend()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            rows = {r[0]: (r[1], r[2]) for r in qdb.rows(watch_sql, others)}
            if not seen.get("claimed") and len(rows) == 9 and all(v[1] is not None for v in rows.values()):
                seen["claimed"] = True  # the batch is held by the worker
            if seen.get("claimed") and len(rows) == 9 and all(v == (0, None) for v in rows.values()):
                seen["handed_back"] = True
                seen["slow_running"] = runs(qdb, "slow") == 1 and not qdb.scalar(
                    "SELECT count(*) FROM test_marks WHERE key = 'finished:slow'"
                )
                other = register("helper")
                (job,) = b.claim(other, "default", 1, [], 60)
                seen["helper_attempts"] = job.attempts
                build_job(parse_payload(job.payload)).handle()
                assert b.complete(other, [job.id]) == 1
                b.unregister_worker(other)
                seen["helper_ran"] = job.id
                return
            time.sleep(0.03)

    t, box = in_thread(watcher)
    code, worker = run_worker(prefetch=10, batch_seconds=60, hold=0.5)
    join(t, box)
    assert code == 0
    assert seen.get("claimed") and seen.get("handed_back"), seen
    assert seen["slow_running"] is True
    assert seen["helper_attempts"] == 1  # refunded, then counted once by the helper
    assert seen["helper_ran"] in others
    # Every job ran exactly once, between the two workers.
    assert sorted(run_order(qdb)) == sorted(["warm-up", "slow"] + [f"o{i}" for i in range(9)])
    assert worker.jobs_processed == 10
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0
    assert failed(qdb) == []


# -- 10. timeouts ---------------------------------------------------------------------------


def test_job_timeout_releases_then_fails_and_the_worker_continues(qdb):
    ShortTimeout(key="st").dispatch()
    RecordRun(key="after").dispatch()
    started = time.monotonic()
    code, worker = run_worker(tries=5)  # the job's tries=2 wins
    elapsed = time.monotonic() - started
    assert code == 0
    assert runs(qdb, "st") == 2  # released once, then failed
    assert runs(qdb, "after") == 1
    (record,) = failed(qdb)
    assert "JobTimeout" in record[4] and "has timed out after 0.5 s" in record[4]
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0
    # Two 3-second sleeps were cut short (generous bound: 6 s if not).
    assert elapsed < 5.5


def test_fail_on_timeout_fails_the_job_at_its_first_timeout(qdb):
    TimeoutIsFatal(key="fatal").dispatch()
    code, _ = run_worker(tries=5)
    assert code == 0
    assert runs(qdb, "fatal") == 1  # tries = 5, but the timeout was fatal
    (record,) = failed(qdb)
    assert "JobTimeout" in record[4] and "has timed out after 0.5 s" in record[4]
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0


# -- 11. the worker's parts: run_once, the claim batch, its operations, the monitor -------------


WORKER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGALRM)


@contextlib.contextmanager
def signals_kept():
    """Put the test process's signal handlers back whatever the block does."""
    saved = {s: signal.getsignal(s) for s in WORKER_SIGNALS}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def new_worker(**options) -> Worker:
    """A worker driven by hand (``run_once``), no monitor, no signal handlers."""
    options.setdefault("memory", 0)
    return Worker(backend(), WorkerOptions(**options))


def test_run_once_runs_one_job_at_a_time_and_says_whether_it_did_work(qdb):
    ids = dispatch_many([RecordRun(key=f"r{i}") for i in range(3)])
    worker = new_worker()
    try:
        assert worker.run_once() is True
        assert run_order(qdb) == ["r0"]
        registered = qdb.rows("SELECT id, current_job_id FROM workers")
        assert [r[0] for r in registered] == [worker.worker_id]
        assert worker.run_once() is True and worker.run_once() is True
        assert run_order(qdb) == ["r0", "r1", "r2"] and worker.jobs_processed == 3
        # Nothing is ready: no work, and the empty claim deleted the finished jobs.
        assert worker.run_once() is False
        assert qdb.scalar("SELECT count(*) FROM jobs") == 0
    finally:
        worker.close()
    assert qdb.scalar("SELECT count(*) FROM workers") == 0
    assert failed(qdb) == [] and len(ids) == 3


def test_run_once_judges_retry_until_at_the_now_it_is_given(qdb):
    EngRetryUntil(key="ru-now").dispatch()  # may retry for an hour after dispatch
    worker = new_worker()
    try:
        assert worker.run_once(now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)) is True
    finally:
        worker.close()
    assert runs(qdb, "ru-now") == 0
    (record,) = failed(qdb)
    assert "RetryDeadlinePassed" in record[4]
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0


def test_run_puts_back_the_signal_handlers_it_found(qdb):
    def sentinel(signum, frame):  # pragma: no cover - never called
        pass

    with signals_kept():
        for s in WORKER_SIGNALS:
            signal.signal(s, sentinel)
        RecordRun(key="sig").dispatch()
        worker = Worker(backend(), WorkerOptions(stop_when_empty=True, sleep=0.1, memory=0))
        assert worker.run() == 0 and worker.jobs_processed == 1
        assert {s: signal.getsignal(s) for s in WORKER_SIGNALS} == dict.fromkeys(WORKER_SIGNALS, sentinel)


def test_restart_requested_event_stops_the_worker_after_its_current_job(qdb):
    dispatch_many([RecordRun(key="first"), RecordRun(key="second")])
    worker = Worker(backend(), WorkerOptions(sleep=0.1, memory=0, heartbeat_interval=0.5))
    worker.restart_requested.set()
    with signals_kept():
        code = worker.run()
    assert code == 0 and worker.stop_reason == "restart"
    assert run_order(qdb) == ["first"]
    # The job left behind is free for the next worker.
    assert qdb.rows("SELECT attempts, reserved_by FROM jobs") == [(0, None)]


def test_monitor_class_is_the_extension_point_and_each_rescue_round_calls_maintain(qdb):
    rounds: list[str] = []
    maintained: list[str] = []

    class RecordingMonitor(Monitor):
        def round(self, now: float) -> None:
            rounds.append(threading.current_thread().name)
            super().round(now)

    class MaintainedBackend(type(backend())):
        def maintain(self) -> None:
            maintained.append(threading.current_thread().name)

    class RecordingWorker(Worker):
        monitor_class = RecordingMonitor

    worker = RecordingWorker(
        MaintainedBackend(), WorkerOptions(sleep=0.1, memory=0, max_time=1.0, heartbeat_interval=0.2)
    )
    with signals_kept():
        assert worker.run() == 0 and worker.stop_reason == "max_time"
    assert rounds and set(rounds) == {f"tourno-monitor-{worker.worker_id}"}
    assert len(maintained) >= 2 and set(maintained) == set(rounds)


def test_claim_batch_release_held_hands_back_unstarted_jobs_and_writes_completions(qdb):
    ids = dispatch_many([RecordRun(key=f"b{i}") for i in range(4)])
    worker_id = register()
    b = backend()
    batch = ClaimBatch(hold=0.5)
    first = batch.start(b.claim(worker_id, "default", 3, [], 60))
    assert first.claimed.id == ids[0] and first.attempt_saved
    assert batch.release_held(first.started + 0.1, b, worker_id) == 0  # not held long enough
    assert batch.finish(first.claimed.id, write_now=False) == []
    second = batch.take_next()
    assert second is not None and second.claimed.id == ids[1] and not second.attempt_saved
    # Held past ``hold``: the completion is written, the unstarted job goes
    # back uncharged, and the started one has its attempt written.
    assert batch.release_held(second.started + 1.0, b, worker_id) == 1
    assert job_row(qdb, ids[0]) is None
    assert job_row(qdb, ids[1])["attempts"] == 1 and second.attempt_saved
    row = job_row(qdb, ids[2])
    assert (row["attempts"], row["reserved_by"]) == (0, None)
    assert batch.drain() == ([], [])
    b.unregister_worker(worker_id)


def test_pending_ops_report_what_the_backend_refused(qdb):
    job_id = RecordRun(key="taken").dispatch()
    owner, other = register("owner"), register("other")
    (claimed,) = backend().claim(owner, "default", 1, [], 60)
    ops = PendingOps()
    ops.add(Release(job_id, 0, 1))  # as another worker: refused
    ops.add(Fail(claimed, "11111111-1111-1111-1111-111111111111", "ValueError: x"))
    refused: list = []
    ops.flush(backend(), other, refused.append)
    assert [type(op) for op in refused] == [Release, Fail] and len(ops) == 0
    assert job_row(qdb, job_id)["reserved_by"] == owner and failed(qdb) == []
    ops.add(Complete([job_id]))
    ops.flush(backend(), owner, refused.append)
    assert job_row(qdb, job_id) is None and len(refused) == 2


def test_pending_ops_keep_their_operation_through_a_lost_connection(pg):
    job_id = RecordRun(key="outage").dispatch()
    worker_id = register()
    (claimed,) = backend().claim(worker_id, "default", 1, [], 60)
    ops = PendingOps()
    ops.add(Release(job_id, 0, claimed.attempts))
    ops.add(Complete([]))
    own_pid = pg.scalar("SELECT pg_backend_pid()")
    admin = psycopg2.connect(pg.url)
    try:
        admin.autocommit = True
        admin.cursor().execute("SELECT pg_terminate_backend(%s)", (own_pid,))
    finally:
        admin.close()
    with pytest.raises(tdb.OUTAGE_ERRORS):
        ops.flush(backend(), worker_id, lambda op: None)
    assert len(ops) == 2  # the release that failed is still first in line
    backend().close_thread_connection()
    tdb.open_connection()
    ops.flush(backend(), worker_id, lambda op: None)
    assert len(ops) == 0
    row = job_row(pg, job_id)
    assert (row["attempts"], row["reserved_by"]) == (1, None)


def test_run_off_the_main_thread_refuses_rather_than_run_without_its_signal_handlers(qdb):
    worker = Worker(backends.current(), WorkerOptions(stop_when_empty=True, sleep=0.1))
    raised: list[BaseException] = []

    def body() -> None:
        try:
            worker.run()
        except RuntimeError as exc:
            raised.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(10)
    assert len(raised) == 1 and "main thread" in str(raised[0])
    assert qdb.scalar("SELECT count(*) FROM workers") == 0  # it never registered

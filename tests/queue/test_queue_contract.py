"""The queue contract: what every driver promises, one test per guarantee.

Each test runs unchanged on three drivers (the ``driver`` fixture): the
database driver on PostgreSQL and on SQLite, and the Redis driver (its domain
data and ``failed_jobs`` on PostgreSQL). They use the public API only:
``Job.dispatch`` / ``dispatch_many``, the worker (in this process through
``run_worker``, or as real ``tourno work`` processes getting real signals),
``backend.stats()`` / ``backend.workers()`` and the ``tourno queue`` CLI.

The last section is the Redis driver's own: the after-commit hand-off
through ``queue_outbox`` when Redis is down, and its relay.

Worker processes use the fast liveness settings of ``QueueDB.env()`` (a
heartbeat every 0.5 s, presumed dead after 3 s). Waits are polls with
generous deadlines; no test asserts how long something took.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import run_worker
from tests.queue.test_worker_processes import Procs, wait_for
from tests.support.drivers import (
    REDIS_URL,
    Driver,
    PrivateRedis,
    delete_prefix,
    redis_problem,
    with_prefix,
)
from tests.support.jobs import Boom, BoomThrice, Flaky, Noop, RecordRun, Sleepy, UniqueJob, mark
from tests.support.jobs_proc import ProcSleepFirst
from tourno import db as tdb
from tourno.queue import PendingJob, backends, dispatch_many, handoff
from tourno.queue.backends.redis import RedisBackend

_prefixes = itertools.count()


def _redis_or_skip() -> None:
    problem = redis_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI but unreachable at {REDIS_URL}: {problem}")
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {problem}")


def _redis_prefix() -> str:
    return f"tourno-contract-{os.getpid()}-{next(_prefixes)}"


@contextlib.contextmanager
def redis_driver(qdb) -> Iterator[Driver]:
    """The Redis driver on a key prefix of its own, as the current backend."""
    _redis_or_skip()
    prefix = _redis_prefix()
    url = with_prefix(REDIS_URL, prefix)
    previous = backends.current()
    backend = backends.configure(RedisBackend(url))
    try:
        yield Driver("redis", qdb, backend, redis_url=url)
    finally:
        backend.close_thread_connection()
        backends.configure(previous)
        delete_prefix(REDIS_URL, prefix)


@pytest.fixture(params=["postgres", "sqlite", "redis"])
def driver(request):
    """The same test on the database driver (PostgreSQL, SQLite) and on Redis."""
    if request.param != "redis":
        qdb = request.getfixturevalue("pg" if request.param == "postgres" else "sqlite")
        yield Driver(request.param, qdb, backends.current())
        return
    with redis_driver(request.getfixturevalue("pg")) as driver:
        yield driver


@pytest.fixture
def procs(tmp_path):
    manager = Procs(tmp_path)
    try:
        yield manager
    finally:
        manager.kill_all()


def start_workers(driver: Driver, procs: Procs, *options: str, n: int = 1) -> list[subprocess.Popen]:
    """``n`` worker processes, once each has registered and heartbeaten."""
    workers = [driver.worker(procs, "--sleep", "0.1", *options) for _ in range(n)]
    for w in workers:
        wait_for(lambda w=w: driver.heartbeaten(w.pid), f"worker pid {w.pid} to register", procs, alive=(w,))
    return workers


def stop(procs: Procs, proc: subprocess.Popen, timeout: float = 20.0) -> int:
    proc.send_signal(signal.SIGTERM)
    return procs.wait_exit(proc, timeout)


def in_thread(fn, *args):
    """Run ``fn`` on a thread of its own (its own database and Redis
    connections) and return its result."""
    box: dict = {}

    def target():
        try:
            tdb.open_connection()
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc
        finally:
            backends.current().close_thread_connection()
            if not tdb.database.is_closed():
                tdb.database.close()

    t = threading.Thread(target=target)
    t.start()
    t.join(60)
    assert not t.is_alive(), "thread did not finish"
    if "error" in box:
        raise box["error"]
    return box["value"]


def wait_until(condition, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- a rescue announces before it lets go ------------------------------------------------------


def test_a_rescue_announces_its_jobs_before_any_claim_can_take_them(driver):
    """``announce`` runs while the rescued jobs are still out of every
    claim's reach, so ``job.rescued`` always comes before the next start."""
    job_id = RecordRun(key="orphan").dispatch()
    backend = driver.backend
    dead, _ = backend.register_worker("dead", "host", os.getpid(), ["default"])
    backend.claim(dead, "default", 1, [], 60)
    time.sleep(0.05)
    claimer, _ = backend.register_worker("claimer", "host", os.getpid(), ["default"])
    stale_after = 0.025  # the dead worker's one heartbeat is older, the claimer's newer
    during: dict = {}

    def announce(pairs):
        during["pairs"] = list(pairs)
        # A claim on another connection, while the announcement runs: on
        # PostgreSQL and Redis it finds nothing; on SQLite it waits for the
        # rescue's write lock. Either way it must not have the job yet.
        box: dict = {}
        thread = threading.Thread(
            target=lambda: box.setdefault("got", in_thread(backend.claim, claimer, "default", 1, [], 60))
        )
        thread.start()
        thread.join(1.0)
        during["claimed"] = [j.id for j in box.get("got", [])]
        during["thread"] = thread

    assert backend.rescue(stale_after, announce=announce) == [(job_id, dead)]
    assert during["pairs"] == [(job_id, dead)] and during["claimed"] == []
    during["thread"].join(60)
    # Once the rescue is over, the job is claimable (the waiting claim may have it already).
    late = backend.claim(claimer, "default", 1, [], 60)
    assert driver.counts() == {"default": (0, 0, 1)}
    assert [j.id for j in late] in ([job_id], [])
    assert backend.rescue(30, announce=announce) == []  # nothing left to announce
    assert during["pairs"] == [(job_id, dead)]


# -- claims never duplicate -----------------------------------------------------------------------


def test_racing_claims_never_give_a_job_to_two_workers(driver):
    total = 200
    dispatch_many(Noop(n=i) for i in range(total))
    backend = driver.backend
    barrier = threading.Barrier(4)

    def claimer(name: str) -> list:
        worker_id, _ = backend.register_worker(name, "host", os.getpid(), ["default"])
        barrier.wait()
        got = []
        while jobs := backend.claim(worker_id, "default", 3, [], 60):
            got += [j.id for j in jobs]
        return got

    results: list = [None] * 4
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, in_thread(claimer, f"c{i}")))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    got = [job_id for r in results for job_id in r]
    assert len(got) == total
    assert len(set(got)) == total
    assert driver.counts() == {"default": (0, 0, total)}


def test_worker_processes_drain_every_job_exactly_once(driver, procs):
    n = 300
    workers = start_workers(driver, procs, n=3)
    # A few milliseconds a job, so that all three workers take a share.
    dispatch_many(RecordRun(key=f"d{i}", sleep=0.005) for i in range(n))
    wait_for(
        lambda: driver.qdb.scalar("SELECT count(*) FROM test_runs") >= n and driver.size() == 0,
        f"{n} jobs to be drained",
        procs,
        timeout=60,
        alive=tuple(workers),
    )
    # An idle worker stops on SIGTERM with 0.
    for w in workers:
        assert stop(procs, w) == 0
    assert driver.qdb.rows("SELECT key FROM test_runs GROUP BY key HAVING count(*) <> 1") == []
    assert driver.qdb.scalar("SELECT count(DISTINCT key) FROM test_runs") == n
    pids = {r[0] for r in driver.qdb.rows("SELECT DISTINCT pid FROM test_runs")}
    assert pids <= {w.pid for w in workers}
    assert len(pids) >= 2, pids
    assert driver.failed() == []
    assert driver.live_workers() == {}


# -- crash recovery and signals ---------------------------------------------------------------------


def test_kill_9_mid_job_runs_it_again_on_a_live_worker(driver, procs):
    (a,) = start_workers(driver, procs, "--tries", "3")
    ProcSleepFirst(key="crash", first=60, then=0).dispatch()
    wait_for(lambda: driver.run_pids("crash") == [a.pid], "the job to start on A", procs, alive=(a,))
    (b,) = start_workers(driver, procs, "--tries", "3")
    a.kill()
    assert procs.wait_exit(a, 10) == -signal.SIGKILL

    # B's monitor takes the job back once A's heartbeat is stale, then B runs it.
    wait_for(lambda: driver.marked("finished:crash"), "the job to finish on B", procs, alive=(b,))
    assert driver.run_pids("crash") == [a.pid, b.pid]
    assert driver.marked("finished:crash") == str(b.pid)
    wait_for(lambda: driver.size() == 0, "the finished job to be deleted", procs, alive=(b,))
    assert driver.failed() == []
    assert stop(procs, b) == 0


def test_sigterm_finishes_the_current_job_then_exits_0(driver, procs):
    (a,) = start_workers(driver, procs)
    # "next" waits behind the long job; it must not start after the signal.
    dispatch_many([Sleepy(key="long", seconds=1.0), RecordRun(key="next")])
    wait_for(lambda: driver.run_pids("long") == [a.pid], "the long job to start", procs, alive=(a,))
    a.send_signal(signal.SIGTERM)
    assert procs.wait_exit(a, 30) == 0
    assert driver.marked("finished:long") == str(a.pid)
    assert driver.run_pids("long") == [a.pid]
    assert driver.run_pids("next") == []
    assert driver.counts() == {"default": (1, 0, 0)}
    assert driver.failed() == []
    assert driver.live_workers() == {}


def test_second_sigterm_aborts_the_job_and_releases_it(driver, procs):
    (a,) = start_workers(driver, procs, "--tries", "3")
    ProcSleepFirst(key="abort", first=60, then=0).dispatch()
    wait_for(lambda: driver.run_pids("abort") == [a.pid], "the job to start on A", procs, alive=(a,))
    # Two signals sent at once may arrive as one: repeat until A says it
    # aborted (not until it is gone: once it has put the default handlers
    # back on its way out, one more SIGTERM would kill it with -15).
    for _ in range(20):
        a.send_signal(signal.SIGTERM)
        try:
            a.wait(1.0)
            break
        except subprocess.TimeoutExpired:
            if "aborted by a second signal" in procs.output(a):
                break
    assert procs.wait_exit(a, 5) == 128 + signal.SIGTERM, procs.output(a)
    assert "aborted by a second signal" in procs.output(a)
    assert driver.marked("finished:abort") is None
    # Released at once (no other worker could have rescued it), free for the next worker.
    assert driver.counts() == {"default": (1, 0, 0)}
    assert driver.live_workers() == {}

    b = driver.worker(procs, "--tries", "3", "--stop-when-empty", "--sleep", "0.1")
    assert procs.wait_exit(b, 30) == 0, procs.output(b)
    assert driver.run_pids("abort") == [a.pid, b.pid]
    assert driver.marked("finished:abort") == str(b.pid)
    assert driver.size() == 0
    assert driver.failed() == []


def test_timeout_interrupts_the_job_and_it_retries_then_fails_per_tries(driver, procs):
    (w,) = start_workers(driver, procs, "--timeout", "0.5", "--tries", "2")
    dispatch_many([Sleepy(key="slow", seconds=30), RecordRun(key="after")])
    wait_for(
        lambda: len(driver.failed()) == 1 and driver.run_pids("after"),
        "the slow job to fail and the next one to run",
        procs,
        alive=(w,),
    )
    # Interrupted, released, run again, interrupted again, failed: never finished.
    assert driver.run_pids("slow") == [w.pid, w.pid]
    assert driver.marked("finished:slow") is None
    ((_, queue, exception),) = driver.failed()
    assert queue == "default"
    assert "JobTimeout" in exception and "timed out after 0.5 s" in exception
    assert driver.run_pids("after") == [w.pid]
    wait_for(lambda: driver.size() == 0, "the queue to be empty", procs, alive=(w,))
    assert stop(procs, w) == 0


# -- retries, failures and the failed-job tooling -----------------------------------------------------


def test_retries_with_backoff_then_failed_jobs_and_retry_brings_them_back(driver):
    Flaky(key="flaky", fail_times=1).dispatch()
    BoomThrice(key="thrice").dispatch()  # tries 3 and backoff 0 of its own
    Boom(key="boom").dispatch()
    # The worker's backoff keeps the retries of flaky and boom out of reach for a while.
    code, _ = run_worker(tries=2, backoff=[0.5])
    assert code == 0
    assert len(driver.run_pids("flaky")) == 1
    assert len(driver.run_pids("boom")) == 1
    assert len(driver.run_pids("thrice")) == 3
    assert driver.counts() == {"default": (0, 2, 0)}
    wait_until(lambda: driver.counts() == {"default": (2, 0, 0)}, "the backoff to pass")
    code, _ = run_worker(tries=2, backoff=[0.5])
    assert code == 0
    assert len(driver.run_pids("flaky")) == 2
    assert len(driver.run_pids("boom")) == 2
    assert driver.size() == 0

    # Both failed for good: filed under this driver's connection, failed() hook run.
    failed = driver.failed()
    assert [(c, q) for c, q, _ in failed] == [(driver.backend.connection_name, "default")] * 2
    assert sorted(e.strip().splitlines()[-1] for _, _, e in failed) == [
        "ValueError: boom boom",
        "ValueError: boom thrice",
    ]
    assert driver.marked("failed:boom") == "ValueError"

    listed = driver.cli("queue", "failed", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["job"] for r in rows) == ["Boom", "BoomThrice"]
    # Each filed with the attempts it had used: tries 2 for boom, its own 3 for thrice.
    assert sorted((r["job"], r["attempts"]) for r in rows) == [("Boom", 2), ("BoomThrice", 3)]
    assert {r["connection"] for r in rows} == {driver.backend.connection_name}

    retried = driver.cli("queue", "retry", "all")
    assert retried.returncode == 0, retried.stderr
    assert "Pushed 2 failed job(s) back onto the queue" in retried.stdout
    assert driver.failed() == []
    assert driver.counts() == {"default": (2, 0, 0)}
    # Back with fresh attempts: each runs its tries again, then fails again.
    code, _ = run_worker(tries=2)
    assert code == 0
    assert len(driver.run_pids("thrice")) == 6
    assert len(driver.run_pids("boom")) == 4
    assert len(driver.failed()) == 2
    assert driver.size() == 0


def test_bad_payloads_go_to_failed_jobs_and_the_worker_keeps_running(driver):
    def raw(payload: dict) -> PendingJob:
        return PendingJob.from_payload("default", payload)

    dispatch_many(
        [
            raw({"job": "NoSuchJob", "args": {}}),
            raw({"job": "RecordRun", "args": "not an object"}),
            raw({"job": "RecordRun", "args": {"no_such_field": 1}}),
            raw({"args": {"key": "nameless"}}),
            PendingJob("default", str(uuidlib.uuid4()), "[1, 2, 3]"),
            RecordRun(key="good").pending(),
        ]
    )
    code, worker = run_worker(tries=3)
    assert code == 0
    assert worker.jobs_processed == 6
    assert len(driver.run_pids("good")) == 1
    assert driver.size() == 0
    exceptions = [e for _, _, e in driver.failed()]
    assert len(exceptions) == 5
    for words in (
        "unknown job 'NoSuchJob'",
        "payload 'args' must be a JSON object",
        "no longer fit",
        "payload has no job name",
        "payload must be a JSON object",
    ):
        assert sum(words in e for e in exceptions) == 1, (words, exceptions)
    assert all("InvalidPayload" in e for e in exceptions)


# -- dispatch: unique, after commit, delayed ----------------------------------------------------------


def test_unique_job_dispatched_while_pending_is_a_no_op(driver):
    first = UniqueJob(key="u").dispatch()
    assert first is not None
    assert UniqueJob(key="u").dispatch() is None
    assert dispatch_many([UniqueJob(key="u"), UniqueJob(key="v")])[0] is None
    assert driver.counts() == {"default": (2, 0, 0)}
    code, _ = run_worker()
    assert code == 0
    assert len(driver.run_pids("u")) == 1
    assert len(driver.run_pids("v")) == 1
    # Done: the key is free again.
    assert UniqueJob(key="u").dispatch() is not None
    assert driver.counts() == {"default": (1, 0, 0)}


def test_dispatch_inside_a_transaction_runs_only_after_commit_and_never_after_rollback(driver):
    with pytest.raises(RuntimeError), tdb.database.atomic():
        mark("domain:rolled-back")
        RecordRun(key="rolled-back").dispatch()
        raise RuntimeError("roll back")
    assert driver.size() == 0

    # The next transaction is not affected by the rolled-back one.
    with tdb.database.atomic():
        mark("domain:committed")
        assert RecordRun(key="committed").dispatch() is not None
        with pytest.raises(RuntimeError), tdb.database.atomic():
            RecordRun(key="savepoint").dispatch()
            raise RuntimeError("roll back the inner block only")
        # Nobody else can see or claim it yet.
        assert in_thread(driver.size) == 0
    assert driver.counts() == {"default": (1, 0, 0)}

    code, _ = run_worker()
    assert code == 0
    assert len(driver.run_pids("committed")) == 1
    assert driver.run_pids("savepoint") == []
    assert driver.run_pids("rolled-back") == []
    # The job went with the domain rows of its transaction.
    assert driver.marked("domain:committed") == ""
    assert driver.marked("domain:rolled-back") is None
    assert driver.size() == 0


def test_delayed_job_waits_for_its_time(driver):
    RecordRun(key="later").dispatch(delay=1.0)
    RecordRun(key="now").dispatch()
    code, _ = run_worker()
    assert code == 0
    assert len(driver.run_pids("now")) == 1
    assert driver.run_pids("later") == []
    assert driver.counts() == {"default": (0, 1, 0)}
    wait_until(lambda: driver.counts() == {"default": (1, 0, 0)}, "the delayed job to be due")
    code, _ = run_worker()
    assert code == 0
    assert len(driver.run_pids("later")) == 1
    assert driver.size() == 0


# -- Redis: the after-commit hand-off survives an outage ------------------------------------------------


def outbox_keys(qdb) -> list[str]:
    rows = qdb.rows("SELECT payload FROM queue_outbox ORDER BY id")
    return [json.loads(p)["args"]["key"] for (p,) in rows]


@pytest.mark.parametrize("domain", ["pg", "sqlite"])
def test_handoff_after_commit_leaves_nothing_behind(domain, request):
    qdb = request.getfixturevalue(domain)
    with redis_driver(qdb) as driver:
        with tdb.database.atomic():
            ids = dispatch_many(RecordRun(key=f"c{i}") for i in range(3))
            assert outbox_keys(qdb) == ["c0", "c1", "c2"]
        # Pushed under the ids dispatch returned, its rows and idempotency keys gone.
        assert driver.counts() == {"default": (3, 0, 0)}
        assert outbox_keys(qdb) == []
        assert driver.backend.client().zcard(driver.backend.key("handed")) == 0
        worker_id, _ = driver.backend.register_worker("w", "host", os.getpid(), ["default"])
        assert [j.id for j in driver.backend.claim(worker_id, "default", 5, [], 60)] == ids

        # A commit() inside the block runs the hook before the next transaction
        # begins: the rows wait for the relay, which sends them.
        with tdb.database.atomic() as txn:
            RecordRun(key="mid-block").dispatch()
            txn.commit()
        assert outbox_keys(qdb) == ["mid-block"]
        assert driver.backend.relay() == 1
        assert outbox_keys(qdb) == []
        assert driver.counts() == {"default": (1, 0, 3)}


@pytest.fixture
def private_redis(pg, tmp_path):
    """A Redis of the test's own (that it may stop) as the current backend."""
    server = PrivateRedis(tmp_path / "redis")
    if server.binary is None:
        pytest.skip("redis-server is not installed")
    server.start()
    previous = backends.current()
    backend = backends.configure(RedisBackend(server.url))
    try:
        yield server, backend
    finally:
        backend.close_thread_connection()
        backends.configure(previous)
        server.kill()


def test_dispatch_in_a_committed_transaction_survives_a_redis_outage(pg, private_redis, procs, caplog):
    server, backend = private_redis
    driver = Driver("redis", pg, backend, redis_url=server.url)
    caplog.set_level(logging.WARNING, logger="tourno.queue.handoff")
    # A worker that lives through the outage.
    (w,) = start_workers(driver, procs)

    # Redis goes away between the dispatch and the commit: the id was taken,
    # the commit stands, the job waits in queue_outbox.
    with tdb.database.atomic():
        taken = RecordRun(key="mid").dispatch()
        server.stop()
    assert isinstance(taken, int)
    # Redis is already down at dispatch: no Redis id yet (the uuid stands in), same outcome.
    with tdb.database.atomic():
        mark("domain:kept")
        kept = RecordRun(key="kept").dispatch()
    assert isinstance(kept, str) and len(kept) == 36
    with pytest.raises(RuntimeError), tdb.database.atomic():
        RecordRun(key="dropped").dispatch()
        raise RuntimeError("roll back")
    # Outside a transaction there is nowhere to keep it: the caller hears at once.
    with pytest.raises(redis.ConnectionError):
        RecordRun(key="direct").dispatch()
    assert outbox_keys(pg) == ["mid", "kept"]
    assert "Redis is unreachable" in caplog.text and "queue_outbox" in caplog.text

    server.start()
    backend.close_thread_connection()
    # The worker's relay hands them over once it reconnects, and runs them.
    wait_for(
        lambda: driver.run_pids("mid") and driver.run_pids("kept"),
        "the kept jobs to run",
        procs,
        timeout=40,
        alive=(w,),
    )
    assert stop(procs, w) == 0
    assert driver.run_pids("mid") == [w.pid]
    assert driver.run_pids("kept") == [w.pid]
    assert driver.run_pids("dropped") == []
    assert driver.run_pids("direct") == []
    assert outbox_keys(pg) == []
    assert driver.size() == 0
    assert "relayed 2 job(s) from queue_outbox" in procs.output(w)


@pytest.mark.parametrize("domain", ["pg", "sqlite"])
def test_racing_relays_never_push_a_job_twice(domain, request, monkeypatch):
    _redis_or_skip()
    qdb = request.getfixturevalue(domain)
    prefix = _redis_prefix()
    previous = backends.current()
    backend = RedisBackend(with_prefix(REDIS_URL, prefix))
    driver = Driver("redis", qdb, backend)
    # Small hand-off batches, so that the relays below interleave.
    monkeypatch.setattr(handoff, "HANDOFF_BATCH", 16)
    try:
        # Committed while Redis was unreachable (nothing listens on port 1).
        backends.configure(RedisBackend("redis://127.0.0.1:1/0"))
        n = 300
        with tdb.database.atomic():
            ids = dispatch_many(RecordRun(key=f"o{i}") for i in range(n))
        # Queued, not "already pending": each id is the job's uuid until handed over.
        assert len(set(ids)) == n and all(isinstance(i, str) for i in ids)
        assert len(outbox_keys(qdb)) == n
        backends.configure(backend)

        # A hand-off that pushed its rows and died before their deletion
        # committed: the rows are still there, the jobs already in Redis.
        rows = qdb.rows("SELECT uuid, queue, payload FROM queue_outbox ORDER BY id LIMIT 40")
        backend._push_now([PendingJob(q, u, p) for u, q, p in rows], handed=True)
        assert driver.counts() == {"default": (40, 0, 0)}

        results: list = [0] * 4
        barrier = threading.Barrier(4)

        def relay(i: int) -> None:
            def body():
                barrier.wait()
                return backend.relay()

            results[i] = in_thread(body)

        threads = [threading.Thread(target=relay, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # Whatever a relay left for its next pass.
        handed = sum(results) + backend.relay()
        assert handed == n
        assert outbox_keys(qdb) == []
        assert driver.counts() == {"default": (n, 0, 0)}

        code, _ = run_worker()
        assert code == 0
        assert qdb.rows("SELECT key FROM test_runs GROUP BY key HAVING count(*) <> 1") == []
        assert qdb.scalar("SELECT count(DISTINCT key) FROM test_runs") == n
        # Once their deletions committed, the uuids were forgotten.
        assert backend.client().zcard(backend.key("handed")) == 0
    finally:
        backend.close_thread_connection()
        backends.configure(previous)
        delete_prefix(REDIS_URL, prefix)

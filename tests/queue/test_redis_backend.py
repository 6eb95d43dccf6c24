"""The Redis backend on a real Redis (db 15 by default) with failed jobs in
a real PostgreSQL (the ``pg`` fixture). Each test uses a key prefix of its
own (the URL's ``prefix`` parameter) and deletes its keys afterwards, so
test runs never see each other's jobs, and nothing else in the db is touched.

Without a Redis server these tests are skipped, except under ``CI=true``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import redis

import tourno
from tests.conftest import tourno_cmd
from tests.support.jobs import Noop, RecordRun, UniqueJob
from tourno import db as tdb
from tourno.config import Settings
from tourno.queue import backends, failed
from tourno.queue.backends.redis import RedisBackend

REDIS_URL = os.environ.get("TOURNO_TEST_REDIS", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_server():
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI but unreachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    return client


_prefixes = itertools.count()


def with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def _delete_prefix(client, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


@pytest.fixture
def rb(pg, redis_server):
    """A RedisBackend with a fresh key prefix, configured as the current backend."""
    prefix = f"tourno-test-{os.getpid()}-{next(_prefixes)}"
    previous = backends.current()
    backend = backends.configure(RedisBackend(with_prefix(REDIS_URL, prefix)))
    assert backend.prefix == prefix
    yield backend
    backend.close_thread_connection()
    backends.configure(previous)
    _delete_prefix(redis_server, prefix)


def job(queue="default", priority=0, delay=0.0):
    return Noop().pending(queue=queue, priority=priority, delay=delay)


def job_hash(rb, job_id) -> dict:
    raw = rb.client().hgetall(rb.key("job", f"{job_id:016d}"))
    return {k.decode(): v.decode() for k, v in raw.items()}


def counts(rb) -> dict:
    return {s.queue: (s.ready, s.delayed, s.reserved) for s in rb.stats()}


def worker(rb, name="w") -> int:
    return rb.register_worker(name, "host", os.getpid(), ["default"])[0]


# -- dispatch, claim, finish ----------------------------------------------------------


def test_dispatch_claim_complete(rb):
    job_id = Noop(n=1).dispatch()
    assert isinstance(job_id, int)
    assert counts(rb) == {"default": (1, 0, 0)}
    w = worker(rb)
    (claimed,) = rb.claim(w, "default", 10, [], 60)
    assert claimed.id == job_id and claimed.attempts == 1 and '"n":1' in claimed.payload
    assert counts(rb) == {"default": (0, 0, 1)}
    assert rb.claim(w, "default", 10, [], 60) == []
    assert rb.complete(w, [job_id]) == 1
    assert rb.complete(w, [job_id]) == 0
    assert counts(rb) == {}
    assert job_hash(rb, job_id) == {}


def test_claim_deletes_done_jobs_in_the_same_call(rb):
    a, b = rb.push([job(), job()])
    w = worker(rb)
    rb.claim(w, "default", 1, [], 60)
    (claimed,) = rb.claim(w, "default", 1, [a], 60)
    assert claimed.id == b
    assert job_hash(rb, a) == {}


def test_priority_then_fifo(rb):
    ids = rb.push([job(priority=5), job(priority=0), job(priority=5), job(priority=0), job(priority=-1)])
    w = worker(rb)
    claimed = rb.claim(w, "default", 10, [], 60)
    assert [c.id for c in claimed] == [ids[4], ids[1], ids[3], ids[0], ids[2]]
    assert [c.priority for c in claimed] == [-1, 0, 0, 5, 5]


# -- attempts, release, fail ------------------------------------------------------------


def test_only_the_first_of_a_batch_is_charged(rb):
    a, b, c = rb.push([job(), job(), job()])
    w = worker(rb)
    claimed = rb.claim(w, "default", 3, [], 60)
    assert [j.attempts for j in claimed] == [1, 0, 0]
    assert rb.count_attempt(w, b, 1)
    assert job_hash(rb, b)["attempts"] == "1"
    assert rb.count_attempt(w, b, 0)  # never lowers
    assert job_hash(rb, b)["attempts"] == "1"
    assert rb.release(w, c, 0, attempts=1)
    (again,) = rb.claim(w, "default", 1, [], 60)
    assert again.id == c and again.attempts == 2


def test_release_with_backoff(rb):
    (job_id,) = rb.push([job()])
    w = worker(rb)
    rb.claim(w, "default", 1, [], 60)
    assert rb.release(w, job_id, 0.4)
    assert not rb.release(w, job_id, 0)  # no longer held
    assert counts(rb) == {"default": (0, 1, 0)}
    assert rb.claim(w, "default", 1, [], 60) == []
    time.sleep(0.45)
    (claimed,) = rb.claim(w, "default", 1, [], 60)
    assert claimed.id == job_id and claimed.attempts == 2


def test_fail_moves_the_job_to_failed_jobs(rb, pg):
    p = job(queue="mail")
    (job_id,) = rb.push([p])
    w = worker(rb)
    (claimed,) = rb.claim(w, "mail", 1, [], 60)
    assert rb.fail(w, claimed, p.uuid, "ValueError: boom")
    assert not rb.fail(w, claimed, p.uuid, "ValueError: boom")
    rows = pg.rows("SELECT uuid, connection, queue, payload::text, exception FROM failed_jobs")
    assert len(rows) == 1
    assert rows[0][:3] == (p.uuid, "redis", "mail")
    assert rows[0][4] == "ValueError: boom"
    assert job_hash(rb, job_id) == {}
    assert counts(rb) == {}

    # Retry pushes it back onto Redis and deletes the record.
    result = failed.retry([p.uuid])
    assert len(result.retried) == 1 and not result.unretryable
    assert pg.scalar("SELECT count(*) FROM failed_jobs") == 0
    assert counts(rb) == {"mail": (1, 0, 0)}
    (again,) = rb.claim(w, "mail", 1, [], 60)
    assert again.attempts == 1


def test_fail_is_safe_to_repeat_after_a_database_error(rb, pg):
    """Step one (mark failing) done, the database write failed: the worker
    retries the whole call, and the job is recorded once and then deleted."""
    p = job()
    (job_id,) = rb.push([p])
    w = worker(rb)
    (claimed,) = rb.claim(w, "default", 1, [], 60)
    assert rb._run("fail_begin", w, f"{job_id:016d}")
    assert job_hash(rb, job_id)["state"] == "failing"
    assert rb.rescue(30) == []  # a live worker's failing job stays put
    assert rb.fail(w, claimed, p.uuid, "boom")
    assert pg.scalar("SELECT count(*) FROM failed_jobs") == 1
    assert job_hash(rb, job_id) == {}


def test_retry_refuses_a_job_of_another_connection(rb, pg):
    pg.database.execute_sql(
        "INSERT INTO failed_jobs (uuid, connection, queue, payload, exception, failed_at) "
        "VALUES ('u-db', 'database', 'default', '{\"job\": \"Noop\", \"args\": {}}', 'x', now())"
    )
    result = failed.retry(["u-db"])
    assert result.retried == []
    (rec_id, why) = result.unretryable[0]
    assert "'database'" in why and "TOURNO_QUEUE_CONNECTION" in why
    assert pg.scalar("SELECT count(*) FROM failed_jobs") == 1
    assert counts(rb) == {}


def test_another_worker_cannot_touch_a_held_job(rb, pg):
    p = job()
    (job_id,) = rb.push([p])
    a, b = worker(rb, "a"), worker(rb, "b")
    (claimed,) = rb.claim(a, "default", 1, [], 60)
    assert rb.complete(b, [job_id]) == 0
    assert not rb.release(b, job_id, 0)
    assert not rb.count_attempt(b, job_id, 5)
    assert rb.hand_back(b, [job_id]) == 0
    assert not rb.fail(b, claimed, p.uuid, "x")
    assert pg.scalar("SELECT count(*) FROM failed_jobs") == 0
    assert job_hash(rb, job_id)["owner"] == str(a)
    assert rb.complete(a, [job_id]) == 1


# -- crash recovery, hand-back ----------------------------------------------------------


def test_rescue_returns_a_dead_workers_jobs_with_their_attempts(rb):
    ids = rb.push([job(), job()])
    dead, live = worker(rb, "dead"), worker(rb, "live")
    rb.claim(dead, "default", 2, [], 60)
    assert rb.rescue(30) == []
    # The dead worker's last heartbeat was long ago.
    rb.client().zadd(rb.key("workers"), {str(dead): 1})
    rescued = rb.rescue(30)
    assert sorted(rescued) == [(ids[0], dead), (ids[1], dead)]
    claimed = rb.claim(live, "default", 2, [], 60)
    assert [c.attempts for c in claimed] == [2, 0]
    assert [w.id for w in rb.workers(30)] == [live]


def test_a_rescuer_that_dies_before_handing_back_leaves_the_jobs_to_the_lease(rb):
    """The first half of an announced rescue takes the jobs over under the
    caller's token; if the caller never runs the second half, the jobs are
    out of reach only for the lease, then the next rescue frees them."""
    (job_id,) = rb.push([job()])
    dead = worker(rb, "dead")
    rb.claim(dead, "default", 1, [], 60)
    rb.client().zadd(rb.key("workers"), {str(dead): 1})  # its last heartbeat was long ago
    taken = rb._run("rescue", 300, 60_000, "rescue:dead-caller")
    assert [int(i) for i, _ in taken] == [job_id]
    assert job_hash(rb, job_id)["owner"] == "rescue:dead-caller"
    live = worker(rb, "live")
    assert rb.claim(live, "default", 1, [], 60) == []  # still taken over
    time.sleep(0.4)  # the lease of 300 ms runs out
    assert rb.rescue(0.3) == [(job_id, None)]  # the token is no worker id
    (claimed,) = rb.claim(live, "default", 1, [], 60)
    assert claimed.id == job_id and claimed.attempts == 2
    assert not rb.client().exists(rb.key("held", "rescue:dead-caller"))


def test_rescue_takes_back_an_expired_lease(rb):
    (job_id,) = rb.push([job()])
    w = worker(rb)
    rb.claim(w, "default", 1, [], 60)
    rb.client().zadd(rb.key("reserved"), {f"{job_id:016d}": 1})  # the lease ran out
    assert rb.rescue(30) == [(job_id, w)]
    assert rb.complete(w, [job_id]) == 0  # no longer ours
    assert counts(rb) == {"default": (1, 0, 0)}


def test_unregistered_worker_with_held_jobs_is_rescued(rb):
    (job_id,) = rb.push([job()])
    w = worker(rb)
    rb.claim(w, "default", 1, [], 60)
    rb.unregister_worker(w)
    assert rb.rescue(30) == [(job_id, w)]


def test_hand_back_returns_unstarted_jobs_uncharged(rb):
    a, b, c = rb.push([job(), job(), job()])
    w = worker(rb)
    rb.claim(w, "default", 3, [], 60)
    assert rb.hand_back(w, [b, c]) == 2
    assert rb.hand_back(w, [b]) == 0
    other = worker(rb, "other")
    claimed = rb.claim(other, "default", 5, [], 60)
    assert [(j.id, j.attempts) for j in claimed] == [(b, 1), (c, 0)]


# -- unique jobs ----------------------------------------------------------------------------


def test_unique_job_dispatched_from_eight_threads_is_one_job(rb):
    barrier = threading.Barrier(8)
    ids: list = []
    lock = threading.Lock()

    def dispatch():
        barrier.wait()
        got = UniqueJob(key="only-one").dispatch()
        with lock:
            ids.append(got)
        rb.close_thread_connection()

    threads = [threading.Thread(target=dispatch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([i for i in ids if i is not None]) == 1
    assert counts(rb) == {"default": (1, 0, 0)}
    (job_id,) = [i for i in ids if i is not None]
    ttl = rb.client().pttl(rb.key("unique", "UniqueJob:only-one"))
    assert 3_500_000 < ttl <= 3_600_000

    # Held while it runs; free once it completes.
    w = worker(rb)
    rb.claim(w, "default", 1, [], 60)
    assert UniqueJob(key="only-one").dispatch() is None
    rb.complete(w, [job_id])
    assert UniqueJob(key="only-one").dispatch() is not None


def test_clear_frees_unique_keys(rb):
    UniqueJob(key="k").dispatch()
    assert rb.clear(None) == 1
    assert UniqueJob(key="k").dispatch() is not None


# -- dispatch inside a database transaction ----------------------------------------------


def test_dispatch_in_a_transaction_waits_for_commit(rb):
    with tdb.database.atomic():
        first = Noop().dispatch()
        second = Noop().dispatch()
        assert isinstance(first, int) and second == first + 1
        assert counts(rb) == {}
    assert counts(rb) == {"default": (2, 0, 0)}
    w = worker(rb)
    assert [j.id for j in rb.claim(w, "default", 5, [], 60)] == [first, second]


def test_dispatch_in_a_nested_block_goes_with_the_outer_commit(rb):
    with tdb.database.atomic():
        with tdb.database.atomic():
            Noop().dispatch()
        assert counts(rb) == {}
    assert counts(rb) == {"default": (1, 0, 0)}


def test_maintain_relays_queue_outbox_and_rescue_does_not(rb, pg):
    # A commit() inside the block runs the hand-off before the next
    # transaction begins: the job waits in queue_outbox for the relay.
    with tdb.database.atomic() as txn:
        Noop().dispatch()
        txn.commit()
    assert pg.scalar("SELECT count(*) FROM queue_outbox") == 1
    assert rb.rescue(30) == []
    assert pg.scalar("SELECT count(*) FROM queue_outbox") == 1
    rb.maintain()
    assert pg.scalar("SELECT count(*) FROM queue_outbox") == 0
    assert counts(rb) == {"default": (1, 0, 0)}


def test_every_lua_script_is_a_file_of_the_package():
    from importlib import resources

    from tourno.queue.backends.redis import backend

    shipped = {
        f.name.removesuffix(".lua")
        for f in resources.files(backend.__package__).joinpath("scripts").iterdir()
        if f.name.endswith(".lua")
    }
    assert shipped == {"lib", *backend.SCRIPTS}
    assert all(backend.script_source(name).strip() for name in shipped)


# -- operations --------------------------------------------------------------------------


def test_stats_clear_and_restart(rb):
    rb.push([job("a"), job("a"), job("b", delay=60), job("b")])
    w = worker(rb)
    rb.claim(w, "b", 1, [], 60)
    assert counts(rb) == {"a": (2, 0, 0), "b": (0, 1, 1)}
    stats = {s.queue: s for s in rb.stats()}
    assert stats["a"].oldest_ready_at is not None
    assert rb.clear("a") == 2
    assert counts(rb) == {"b": (0, 1, 1)}
    assert rb.clear(None) == 1  # the reserved job stays
    assert counts(rb) == {"b": (0, 0, 1)}

    info = {
        "name": "w",
        "hostname": "host",
        "pid": 1,
        "queues": "b",
        "started_at": None,
        "current_job_id": 5,
        "jobs_done": 3,
    }
    assert rb.heartbeat(w, info) is None
    when = rb.signal_restart()
    assert rb.heartbeat(w, info) == when
    (listed,) = rb.workers(30)
    assert (listed.id, listed.current_job_id, listed.jobs_done) == (w, 5, 3)


def test_notifications_name_the_queue(rb):
    rb.listen()
    assert rb.wait_for_notifications(0.05) == set()
    rb.push([job("mail")])
    assert rb.wait_for_notifications(2) == {"mail"}
    rb.push([job("later", delay=10)])
    assert rb.wait_for_notifications(0.1) == set()


def test_setup_chooses_redis(pg, redis_server):
    previous = backends.current()
    try:
        tourno.setup(
            Settings(database_url=pg.url, queue_connection="redis", redis_url=with_prefix(REDIS_URL, "shop")),
            import_jobs=False,
        )
        chosen = backends.current()
        assert isinstance(chosen, RedisBackend)
        assert (chosen.url, chosen.prefix) == (REDIS_URL, "shop")
    finally:
        backends.configure(previous)


# -- the real worker -------------------------------------------------------------------------


# -- real `tourno work redis` processes ------------------------------------------------------


@pytest.fixture
def procs(tmp_path):
    from tests.queue.test_worker_processes import Procs

    manager = Procs(tmp_path)
    try:
        yield manager
    finally:
        manager.kill_all()


def _runs(pg, key: str) -> list[int]:
    return [r[0] for r in pg.rows("SELECT pid FROM test_runs WHERE key = %s ORDER BY id", (key,))]


def _redis_worker(procs, pg, backend: RedisBackend, *options: str):
    from tests.queue.test_worker_processes import IMPORTS

    url = with_prefix(backend.url, backend.prefix)
    return procs.start(
        pg.env(TOURNO_IMPORTS=IMPORTS, TOURNO_REDIS_URL=url), "work", "redis", "--sleep", "30", *options
    )


def test_worker_process_wakes_on_dispatch_and_stops_on_sigterm(rb, pg, procs):
    from tests.queue.test_worker_processes import wait_for

    proc = _redis_worker(procs, pg, rb)
    wait_for(lambda: rb.workers(30), "the worker to register", procs, alive=(proc,))
    time.sleep(0.3)  # idle, waiting on its --sleep 30
    started = time.monotonic()
    for i in range(20):
        RecordRun(key=f"p{i}").dispatch()
    wait_for(
        lambda: all(_runs(pg, f"p{i}") for i in range(20)),
        "the jobs to run",
        procs,
        timeout=10,
        alive=(proc,),
    )
    # Woken by the notification, not by its 30 s poll.
    assert time.monotonic() - started < 5
    proc.send_signal(signal.SIGTERM)
    assert procs.wait_exit(proc, 15) == 0
    assert all(_runs(pg, f"p{i}") == [proc.pid] for i in range(20))
    assert counts(rb) == {}
    assert rb.workers(30) == []


def test_worker_survives_a_redis_restart(rb, pg, procs, tmp_path):
    """A private Redis (append-only file on) stops and comes back: the worker
    retries with backoff, and the jobs dispatched before and after run."""
    from tests.queue.test_worker_processes import wait_for

    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    data = tmp_path / "redis"
    data.mkdir()

    def start_redis():
        proc = subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return proc
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise
                time.sleep(0.05)

    private = RedisBackend(url)
    redis_proc = start_redis()
    try:
        backends.configure(private)
        # Polling every 0.2 s, its main loop meets the outage too.
        worker_proc = _redis_worker(procs, pg, private, "--sleep", "0.2")
        wait_for(lambda: private.workers(30), "the worker to register", procs, alive=(worker_proc,))
        RecordRun(key="before").dispatch()
        wait_for(lambda: _runs(pg, "before"), "the first job", procs, alive=(worker_proc,))

        redis_proc.terminate()
        redis_proc.wait(10)
        private.close_thread_connection()
        time.sleep(1.5)  # the worker sees the outage
        redis_proc = start_redis()
        RecordRun(key="after").dispatch()
        wait_for(
            lambda: _runs(pg, "after"), "the job after the restart", procs, timeout=30, alive=(worker_proc,)
        )
        worker_proc.send_signal(signal.SIGTERM)
        assert procs.wait_exit(worker_proc, 15) == 0
        assert _runs(pg, "before") == [worker_proc.pid]
        assert _runs(pg, "after") == [worker_proc.pid]
        output = procs.output(worker_proc)
        assert "monitor: ConnectionError" in output
        assert "reconnecting" in output and "connection restored" in output
    finally:
        private.close_thread_connection()
        backends.configure(rb)
        redis_proc.kill()
        redis_proc.wait(10)


def test_fail_writes_failed_jobs_on_sqlite_too(sqlite, redis_server):
    prefix = f"tourno-test-{os.getpid()}-{next(_prefixes)}"
    previous = backends.current()
    rb = backends.configure(RedisBackend(with_prefix(REDIS_URL, prefix)))
    try:
        p = job()
        (job_id,) = rb.push([p])
        w = worker(rb)
        (claimed,) = rb.claim(w, "default", 1, [], 60)
        assert rb.fail(w, claimed, p.uuid, "first")
        # The same uuid failing again (a retried job) updates its record.
        assert len(failed.retry([p.uuid]).retried) == 1
        (claimed,) = rb.claim(w, "default", 1, [], 60)
        assert rb.fail(w, claimed, p.uuid, "second")
        assert sqlite.rows("SELECT uuid, connection, exception FROM failed_jobs") == [
            (p.uuid, "redis", "second")
        ]
        assert counts(rb) == {}
    finally:
        rb.close_thread_connection()
        backends.configure(previous)
        _delete_prefix(redis_server, prefix)


def test_queue_cli_on_redis(rb, pg):
    env = pg.env(TOURNO_QUEUE_CONNECTION="redis", TOURNO_REDIS_URL=with_prefix(REDIS_URL, rb.prefix))
    rb.push([job("a"), job("a"), job("b", delay=60)])

    def cli(*args):
        result = subprocess.run(tourno_cmd(*args), env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    data = json.loads(cli("queue", "status", "--json"))
    assert data["connection"] == "redis"
    assert [(q["queue"], q["ready"], q["delayed"]) for q in data["queues"]] == [("a", 2, 0), ("b", 0, 1)]
    assert data["waiting_for_redis"] == 0
    # A job committed while Redis was unreachable waits in queue_outbox; status says so.
    from tourno.queue.models import OutboxRecord

    now = tdb.utcnow()
    OutboxRecord.create(uuid="u-x", queue="a", payload="{}", priority=0, available_at=now, created_at=now)
    assert json.loads(cli("queue", "status", "--json"))["waiting_for_redis"] == 1
    assert "Waiting for Redis: 1 job(s)" in cli("queue", "status")
    assert "Cleared 2" in cli("queue", "clear", "--queue", "a", "--force")
    assert counts(rb) == {"b": (0, 1, 0)}
    cli("queue", "restart")
    assert rb.client().get(rb.key("restart")) is not None


def test_dispatch_in_a_rolled_back_savepoint_is_dropped(rb):
    with tdb.database.atomic():
        kept = Noop(n=1).dispatch()
        with pytest.raises(RuntimeError), tdb.database.atomic():
            Noop(n=2).dispatch()
            raise RuntimeError("roll back the savepoint only")
        also = Noop(n=3).dispatch()
    w = worker(rb)
    claimed = rb.claim(w, "default", 10, [], 60)
    assert [(j.id, j.payload.count('"n":2')) for j in claimed] == [(kept, 0), (also, 0)]
    # Nothing is left over for the next transaction.
    with tdb.database.atomic():
        Noop().dispatch()
    assert counts(rb) == {"default": (1, 0, 2)}


def test_dispatch_in_a_rolled_back_savepoint_is_dropped_on_sqlite(sqlite, redis_server):
    prefix = f"tourno-test-{os.getpid()}-{next(_prefixes)}"
    previous = backends.current()
    rb = backends.configure(RedisBackend(with_prefix(REDIS_URL, prefix)))
    try:
        with tdb.database.atomic():
            with pytest.raises(RuntimeError), tdb.database.atomic():
                Noop(n=2).dispatch()
                raise RuntimeError("roll back the savepoint only")
            kept = Noop(n=1).dispatch()
        w = worker(rb)
        assert [j.id for j in rb.claim(w, "default", 10, [], 60)] == [kept]
    finally:
        rb.close_thread_connection()
        backends.configure(previous)
        _delete_prefix(redis_server, prefix)

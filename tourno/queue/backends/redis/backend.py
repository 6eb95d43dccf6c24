"""The Redis backend: the job queue in Redis, failed jobs in the database.

``TOURNO_REDIS_URL`` names the server and database; its optional ``prefix``
query parameter (``redis://host:6379/0?prefix=shop``) sets the key prefix,
``tourno`` by default, so that several installs can share one Redis database.

Key layout (``P`` is the key prefix; ids are the decimal job id zero-padded
to 16 digits, written ``ID`` below, so that the members of a sorted set with
equal scores sort by id):

``P:seq:job``, ``P:seq:worker``
    INCR counters: job ids and worker ids.
``P:job:ID``
    hash of one job: ``queue``, ``payload``, ``priority``, ``attempts``,
    ``state`` (ready | delayed | reserved | failing), ``owner`` (worker id
    while reserved), ``unique`` (its unique key, if any), ``at`` (when it
    became available, epoch ms).
``P:q:QUEUE:ready``
    sorted set of ready jobs, score = priority, member = ID: ``ZRANGE 0 n``
    gives priority order, then FIFO by id (the database's ``ORDER BY
    priority, id``), whatever the priority's size.
``P:q:QUEUE:delayed``
    sorted set of delayed jobs, score = available time (epoch ms). The claim
    moves the due ones into the ready set in the same script.
``P:queues``
    set of queue names ever pushed to (for ``stats``).
``P:reserved``
    sorted set of reserved jobs, score = lease expiry (epoch ms; +inf when
    the job has no timeout): the backstop of crash recovery.
``P:held:WID``
    set of the jobs worker ``WID`` holds (reserved or failing).
``P:workers``
    sorted set of worker ids, score = last heartbeat (epoch ms);
    ``P:worker:WID`` is the worker's hash (name, hostname, pid, ...).
``P:unique:KEY``
    the id of the pending job holding a unique key (``SET NX``, with
    ``unique_for`` as its TTL); cleared when that job completes, fails or is
    cleared.
``P:restart``
    the last restart signal (epoch ms).
``P:cancel``
    set of the reserved jobs ``cancel`` flagged (their hash has ``cancel``
    = 1 too, which the claim reads to skip one that went back to a queue);
    ``sweep_cancelled`` deletes those no longer reserved.
``P:paused``
    hash of the paused queues: field = queue, value = when it was paused
    (epoch ms). The claim script does not read it: workers keep the set in
    memory and skip those queues (``queue/pauses.py``).
``P:handed``
    sorted set of the uuids of jobs handed over from ``queue_outbox``,
    score = when (epoch ms): the hand-off's idempotency keys.
``P:metrics:m:MINUTE``, ``P:metrics:total``
    the persisted metrics (``tourno/queue/metrics.py``): one hash per minute
    (epoch seconds), expiring after the retention, and the all-time totals;
    fields are ``["queue","job"]|column``.
``P:notify``
    the pub/sub channel; messages name the queue that got ready jobs (push,
    release without delay, hand-back, rescue), or are ``PAUSES_CHANGED``
    (pause, resume).
``P:control``
    the pub/sub channel of cancel notices; messages are the id of the
    worker holding a cancelled job.
``P:due``
    the pub/sub channel of delayed jobs (push or release with a delay):
    ``"QUEUE EPOCH_SECONDS"``, the queue and when its job is due, so that an
    idle worker wakes then (``base.HeardDue``).

Every change that touches more than one key is one Lua script (``scripts/``,
each prefixed with ``scripts/lib.lua``), so no job is lost or runs twice
between two commands; all times come from Redis ``TIME``, never the client's
clock. Scripts build key names from the prefix, so the backend needs a single
Redis server (not Redis Cluster).

Persistence: a Redis that loses its data loses the queue. Run it with
``appendonly yes`` and ``appendfsync everysec`` (at most a second of
dispatches lost on a power cut) or ``always``; never with persistence off.

Dispatch inside a database transaction (``db.atomic()``) goes through
``queue_outbox`` (:mod:`tourno.queue.handoff` explains how), so that it
survives a Redis outage; :meth:`RedisBackend.maintain` relays what is left.
Outside a transaction, and in ``manual_commit()`` mode, jobs are pushed at
once, and an unreachable Redis raises to the caller.

Failing a job is two steps so it is never lost: the job is marked
``failing`` in Redis (guarded by its owner; rescue leaves it alone while the
worker lives), its ``failed_jobs`` row is upserted by uuid in the database,
and only then is the job deleted from Redis. Every step can be repeated, so
the worker's retry after a database outage is safe. If the worker dies in
between, the rescue puts the job back in its queue (it runs again).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import redis as redislib
from redis.backoff import NoBackoff
from redis.retry import Retry

from tourno import db as tdb
from tourno.db import DEFAULT_DEAD_AFTER, UTC, database, liveness_parameters, open_connection
from tourno.queue import failed
from tourno.queue.backends.base import (
    LEASE_MARGIN,
    PAUSES_CHANGED,
    WORKER_ROW_TTL,
    BucketState,
    CancelledJob,
    ClaimedJob,
    HeardDue,
    QueueBackend,
    QueueStats,
    RescueAnnounce,
    WorkerInfo,
    cancel_notice,
)
from tourno.queue.handoff import Handoff
from tourno.queue.job import PendingJob, payload_uuid
from tourno.queue.metrics import COLUMNS, COUNTERS, TOTALS_MINUTE, Counts, MetricRow, parse_field

#: The columns ``read_metric_minutes`` sums (what ``metrics.Bucket`` holds).
_SERIES_COLUMNS = frozenset(("succeeded", "failed", "released", "runs", "wait_sum", "wait_max"))
#: Delayed jobs moved into the ready set per claim, at most.
MIGRATE_BATCH = 1000
#: Jobs per push script call.
PUSH_CHUNK = 5000
#: Seconds a handed-over uuid is remembered when its row's deletion was never
#: confirmed (normally it is forgotten at once).
HANDED_TTL = 86400

#: The scripts in ``scripts/``, each run with ``scripts/lib.lua`` before it.
SCRIPTS = (
    "push",
    "claim",
    "complete",
    "release",
    "snooze",
    "count_attempt",
    "hand_back",
    "release_unheld",
    "fail_begin",
    "fail_end",
    "rescue",
    "rescue_finish",
    "heartbeat",
    "unregister",
    "clear",
    "stats",
    "signal_restart",
    "bucket",
    "lock",
    "unlock",
    "cancel",
    "sweep_cancelled",
    "pause",
    "resume",
)


def script_source(name: str) -> str:
    """The Lua text of script ``name``, shipped in the package (``scripts/NAME.lua``)."""
    return resources.files(__package__).joinpath("scripts", f"{name}.lua").read_text(encoding="utf-8")


def _split_prefix(url: str) -> tuple[str, str | None]:
    """The URL without its ``prefix`` query parameter, and that parameter."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), None)
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "prefix"])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), prefix or None


def _keepalive_options(dead_after: float) -> dict[int, int]:
    """The TCP options that match libpq's liveness parameters (db.py), as
    redis-py's ``socket_keepalive_options`` (where the platform has them)."""
    params = liveness_parameters(dead_after)
    wanted = {
        "TCP_KEEPIDLE": params["keepalives_idle"],
        "TCP_KEEPINTVL": params["keepalives_interval"],
        "TCP_KEEPCNT": params["keepalives_count"],
        "TCP_USER_TIMEOUT": params["tcp_user_timeout"],
    }
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


def _pad(job_id: Any) -> str:
    return f"{int(job_id):016d}"


def _ms_to_dt(value: Any) -> dt.datetime | None:
    if value is None or value is False or value == b"" or value == "":
        return None
    return dt.datetime.fromtimestamp(int(float(value)) / 1000, UTC)


def _instant(value: Any) -> dt.datetime:
    """A time the heartbeat script always writes (in the same HSET as the rest)."""
    at = _ms_to_dt(value)
    if at is None:
        raise ValueError("a Redis worker entry without its times")
    return at


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBackend(QueueBackend):
    connection_name = "redis"
    connection_errors = (redislib.ConnectionError, redislib.TimeoutError)
    requeues_in_database = False
    #: For the hand-off (:class:`tourno.queue.handoff.Store`).
    store_name = "Redis"
    store_errors: tuple[type[BaseException], ...] = (redislib.RedisError,)

    def __init__(
        self,
        url: str,
        prefix: str | None = None,
        metrics_retention_days: float = 14.0,
        dead_after: float = DEFAULT_DEAD_AFTER,
    ) -> None:
        self.url, url_prefix = _split_prefix(url)
        self.keepalive = _keepalive_options(dead_after)
        self.prefix = prefix or url_prefix or "tourno"
        self._local = threading.local()
        #: How long the per-minute metrics hashes live (the totals hash stays).
        self.metrics_ttl = max(int(metrics_retention_days * 86400), 60)
        self._heard = HeardDue()
        self.handoff = Handoff(self)
        scratch = redislib.Redis()  # only to build Script objects; never connects
        lib = script_source("lib")
        self._scripts: dict[str, Any] = {
            name: scratch.register_script(lib + script_source(name)) for name in SCRIPTS
        }

    # -- connections -------------------------------------------------------------

    def client(self) -> redislib.Redis:
        """This thread's client."""
        client: redislib.Redis | None = getattr(self._local, "client", None)
        if client is None:
            # No retries inside the client: redis-py sends a command again
            # after a lost reply by default, and a script that ran (a claim,
            # a push) would run twice, its first result lost. A connection
            # error reaches the worker instead, which reconnects and hands
            # back what a lost claim reserved (release_unheld).
            client = redislib.Redis.from_url(
                self.url,
                socket_connect_timeout=5,
                socket_timeout=30,
                # A silent server (host cut off) fails the connection within
                # TOURNO_DB_DEAD_AFTER, also the idle pub/sub one.
                socket_keepalive=True,
                socket_keepalive_options=self.keepalive,  # type: ignore[arg-type]  # the stubs say str keys; redis-py passes them to setsockopt
                health_check_interval=30,
                retry=Retry(NoBackoff(), 0),
            )
            self._local.client = client
        return client

    def ping(self) -> None:
        self.client().ping()

    def _run(self, name: str, *args: Any) -> Any:
        return self._scripts[name](keys=[], args=[self.prefix, *args], client=self.client())

    def close_thread_connection(self) -> None:
        for attr in ("pubsub", "client"):
            obj = getattr(self._local, attr, None)
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001, S110 - closing a broken connection
                    pass
                setattr(self._local, attr, None)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- producer ----------------------------------------------------------------------

    def push(self, jobs: list[PendingJob]) -> list[Any]:
        if not jobs:
            return []
        db = database.obj
        if db is not None and db.in_transaction() and not tdb.in_manual_commit(db):
            return self.handoff.write(db, jobs)
        return self._push_now(jobs)

    def _push_now(
        self, jobs: list[PendingJob], ids: list[Any] | None = None, *, handed: bool = False
    ) -> list[Any]:
        """Push ``jobs`` with these ids (None: allocate); with ``handed``,
        each job's uuid is pushed at most once."""
        out: list[Any] = []
        for start in range(0, len(jobs), PUSH_CHUNK):
            chunk = jobs[start : start + PUSH_CHUNK]
            args: list[Any] = [len(chunk), HANDED_TTL * 1000 if handed else ""]
            for i, p in enumerate(chunk, start):
                given = None if ids is None else ids[i]
                args += [
                    "" if given is None else int(given),
                    p.uuid,
                    p.queue,
                    p.payload_json,
                    int(p.priority),
                    int(round(p.delay * 1000)),
                    p.unique_key or "",
                    int(round(float(p.unique_for) * 1000)) if p.unique_key and p.unique_for else 0,
                ]
            out += [int(r) if int(r) > 0 else None for r in self._run("push", *args)]
        return out

    # -- the hand-off's store (tourno.queue.handoff.Store) ---------------------------------

    def take_ids(self, n: int) -> int:
        return int(self.client().incrby(self.key("seq", "job"), n)) - n + 1

    def push_handed(self, jobs: list[PendingJob], ids: list[Any]) -> None:
        self._push_now(jobs, ids, handed=True)

    def forget_handed(self, uuids: list[str]) -> None:
        try:
            self.client().zrem(self.key("handed"), *uuids)
        except self.connection_errors:
            pass  # they expire on their own

    def relay(self) -> int:
        """Push what is left in queue_outbox now; returns how many jobs."""
        return self.handoff.relay()

    def maintain(self) -> None:
        # The relay of leftover hand-offs; a database outage must not stop
        # the monitor's Redis work.
        self.handoff.relay_or_wait()

    # -- worker: claim and finish --------------------------------------------------------

    def _metric_args(self, rows: Sequence[MetricRow]) -> list[Any]:
        """The trailing arguments of a script that records metrics (lib.lua's
        record_metrics)."""
        if not rows:
            return []
        args: list[Any] = [self.metrics_ttl]
        for r in rows:
            args += [r.minute, r.field]
            args += [getattr(r.counts, c) for c in COUNTERS]
            args += [f"{getattr(r.counts, c):.9f}" for c in COLUMNS[len(COUNTERS) :]]
        return args

    def claim(
        self,
        worker_id: int,
        queue: str,
        limit: int,
        done: list[Any],
        default_timeout: float,
        metrics: Sequence[MetricRow] = (),
    ) -> list[ClaimedJob]:
        rows = self._run(
            "claim",
            worker_id,
            queue,
            int(limit),
            int(float(default_timeout) * 1000),
            int(LEASE_MARGIN * 1000),
            MIGRATE_BATCH,
            len(done),
            *[_pad(i) for i in done],
            *self._metric_args(metrics),
        )
        return [
            ClaimedJob(
                int(r[0]),
                queue,
                _text(r[1]),
                int(r[2]),
                int(float(r[3])),
                int(r[4]) / 1000 if len(r) > 4 and r[4] else None,
            )
            for r in rows
        ]

    def complete(self, worker_id: int, ids: list[Any], metrics: Sequence[MetricRow] = ()) -> int:
        if not ids and not metrics:
            return 0
        return int(
            self._run("complete", worker_id, len(ids), *[_pad(i) for i in ids], *self._metric_args(metrics))
        )

    def release(
        self,
        worker_id: int,
        job_id: Any,
        delay: float,
        attempts: int | None = None,
        metrics: Sequence[MetricRow] = (),
        exception: bool = False,
    ) -> bool:
        ms = int(round(float(delay) * 1000))
        return bool(
            self._run(
                "release",
                worker_id,
                _pad(job_id),
                ms,
                "" if attempts is None else attempts,
                int(exception),
                *self._metric_args(metrics),
            )
        )

    def exceptions(self, job_id: Any) -> int:
        return int(self.client().hget(self.key("job", _pad(job_id)), "exceptions") or 0)

    def count_attempt(self, worker_id: int, job_id: Any, attempts: int) -> bool:
        return bool(self._run("count_attempt", worker_id, _pad(job_id), int(attempts)))

    def snooze(
        self, worker_id: int, job_id: Any, delay: float, attempts: int, metrics: Sequence[MetricRow] = ()
    ) -> bool:
        ms = int(round(float(delay) * 1000))
        return bool(
            self._run("snooze", worker_id, _pad(job_id), ms, int(attempts), *self._metric_args(metrics))
        )

    def hand_back(self, worker_id: int, ids: list[Any]) -> int:
        if not ids:
            return 0
        return int(self._run("hand_back", worker_id, *[_pad(i) for i in ids]))

    def release_unheld(self, worker_id: int, held: list[Any]) -> int:
        return int(self._run("release_unheld", worker_id, *[_pad(i) for i in held]))

    def fail(
        self, worker_id: int, job: ClaimedJob, uuid: str, exception: str, metrics: Sequence[MetricRow] = ()
    ) -> bool:
        queue = self._run("fail_begin", worker_id, _pad(job.id))
        if not queue:
            # Taken back while it ran; the attempt still happened.
            self.complete(worker_id, [], metrics)
            return False
        if database.is_closed():
            open_connection()
        failed.record(uuid, self.connection_name, _text(queue), job.payload, exception, attempts=job.attempts)
        # The counts go with the step that deletes the job.
        self._run("fail_end", worker_id, _pad(job.id), *self._metric_args(metrics))
        return True

    # Chains and batches: Redis cannot join the database transaction, so the
    # step commits first (marked per job: workflows._mark), the job goes after.
    # A crash between the two runs the job again; its step is not taken twice.

    def complete_step(
        self, worker_id: int, job_id: Any, step: Callable[[], None], metrics: Sequence[MetricRow] = ()
    ) -> bool:
        if database.is_closed():
            open_connection()
        with tdb.write_transaction():
            step()
        return self.complete(worker_id, [job_id], metrics) > 0

    def fail_step(
        self,
        worker_id: int,
        job: ClaimedJob,
        uuid: str,
        exception: str,
        step: Callable[[], None],
        metrics: Sequence[MetricRow] = (),
    ) -> bool:
        queue = self._run("fail_begin", worker_id, _pad(job.id))
        if not queue:
            self.complete(worker_id, [], metrics)
            return False
        if database.is_closed():
            open_connection()
        with tdb.write_transaction():
            failed.record(
                uuid, self.connection_name, _text(queue), job.payload, exception, attempts=job.attempts
            )
            step()
        self._run("fail_end", worker_id, _pad(job.id), *self._metric_args(metrics))
        return True

    def read_metrics(self, since: int | None) -> list[MetricRow]:
        client = self.client()
        if since is None:
            hashes = [client.hgetall(self.key("metrics", "total"))]
        else:
            now = int(client.time()[0])
            pipe = client.pipeline(transaction=False)
            for minute in range(since, now + 1, 60):
                pipe.hgetall(self.key("metrics", "m", str(minute)))
            hashes = pipe.execute()
        values: dict[str, dict[str, float]] = {}
        maxima = set(COLUMNS[len(COUNTERS) :]) - {"runtime_sum", "wait_sum"}
        for raw in hashes:
            for k, v in raw.items():
                field, _, column = _text(k).rpartition("|")
                held = values.setdefault(field, {})
                number = float(v)
                if column in maxima:
                    held[column] = max(held.get(column, 0.0), number)
                else:
                    held[column] = held.get(column, 0.0) + number
        start = TOTALS_MINUTE if since is None else since
        rows = [MetricRow(start, *parse_field(f), Counts.of(dict(v))) for f, v in values.items()]
        return sorted(rows, key=lambda r: (r.queue, r.job))

    def read_metric_minutes(self, first: int, last: int, queue: str | None = None) -> dict[int, Counts]:
        # One pipeline of HGETALLs, one per minute (a day is 1440 small
        # hashes), summed here. Not a script: summing a day in Lua held Redis
        # for ~130 ms (measured, loaded two-core machine), while between a
        # pipeline's commands other clients' claims go on. The fields are
        # "JSON [queue, job]|column" (lib.lua): a queue's fields start with
        # the JSON of [queue up to its comma.
        want = "" if queue is None else json.dumps([queue, ""], separators=(",", ":"))[:-3]
        pipe = self.client().pipeline(transaction=False)
        minutes = range(first // 60 * 60, last + 1, 60)
        for minute in minutes:
            pipe.hgetall(self.key("metrics", "m", str(minute)))
        out: dict[int, Counts] = {}
        for minute, raw in zip(minutes, pipe.execute(), strict=True):
            if not raw:
                continue
            values: dict[str, float] = {}
            for k, v in raw.items():
                field, _, column = _text(k).rpartition("|")
                if column not in _SERIES_COLUMNS or not field.startswith(want):
                    continue
                number = float(v)
                if column == "wait_max":
                    values[column] = max(values.get(column, 0.0), number)
                else:
                    values[column] = values.get(column, 0.0) + number
            if values:
                out[minute] = Counts.of(dict(values))
        return out

    # -- worker: liveness --------------------------------------------------------------

    def register_worker(
        self, name: str, hostname: str, pid: int, queues: list[str]
    ) -> tuple[int, dt.datetime]:
        wid, now, _ = self._run("heartbeat", "", name, hostname, pid, ",".join(queues), "", "", 0, "1")
        return int(wid), _instant(now)

    def heartbeat(self, worker_id: int, info: dict[str, Any]) -> dt.datetime | None:
        started = info.get("started_at")
        started_ms = int(started.timestamp() * 1000) if isinstance(started, dt.datetime) else ""
        current = info.get("current_job_id")
        _, _, restart = self._run(
            "heartbeat",
            worker_id,
            info["name"],
            info["hostname"],
            info["pid"],
            info["queues"],
            started_ms,
            "" if current is None else current,
            info.get("jobs_done") or 0,
            "0",
        )
        return _ms_to_dt(restart) if restart else None

    def unregister_worker(self, worker_id: int) -> None:
        self._run("unregister", worker_id)

    # -- middleware stores ------------------------------------------------------

    def bucket(self, name: str, rate: float, burst: float, op: str) -> BucketState:
        if op not in ("take", "peek", "fill"):
            raise ValueError(f"unknown bucket operation {op!r}")
        granted, tokens, wait = self._run("bucket", name, repr(float(rate)), repr(float(burst)), op)
        return BucketState(granted == b"1", float(tokens), float(wait))

    def acquire_lock(
        self, key: str, worker_id: int, job_id: Any, stale_after: float, expire_after: float | None
    ) -> bool:
        expire_ms = 0 if expire_after is None else max(1, int(expire_after * 1000))
        return bool(self._run("lock", key, worker_id, str(job_id), int(stale_after * 1000), expire_ms))

    def release_locks(self, worker_id: int, key: str | None = None) -> int:
        return int(self._run("unlock", worker_id, "" if key is None else key))

    def rescue(self, stale_after: float, announce: RescueAnnounce | None = None) -> list[tuple[Any, Any]]:
        # With an announcement to make, in two steps: take the jobs over under
        # a token of this call's (out of every claim's reach), announce, hand
        # them back. A process that dies in between leaves them to the lease.
        taker = () if announce is None else (f"rescue:{uuid.uuid4().hex}",)
        rows = self._run("rescue", int(float(stale_after) * 1000), WORKER_ROW_TTL * 1000, *taker)
        out: list[tuple[Any, Any]] = []
        for job_id, owner in rows:
            owner = _text(owner)
            out.append((int(job_id), int(owner) if owner.isdigit() else None))
        if out and announce is not None:
            try:
                announce(out)
            finally:
                self._run("rescue_finish", *taker, *[_text(job_id) for job_id, _ in rows])
        return out

    # -- notifications -----------------------------------------------------------------

    def listen(self) -> None:
        pubsub = getattr(self._local, "pubsub", None)
        if pubsub is None:
            pubsub = self.client().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self.key("notify"), self.key("control"), self.key("due"))
            self._local.pubsub = pubsub

    def wait_for_notifications(self, timeout: float) -> set[str]:
        pubsub = getattr(self._local, "pubsub", None)
        if pubsub is None:
            time.sleep(max(timeout, 0))
            return set()
        queues: set[str] = set()
        control = self.key("control")
        due_channel = self.key("due")
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            left = deadline - time.monotonic()
            msg = pubsub.get_message(timeout=max(left, 0) if not queues else 0)
            if msg is not None and msg.get("type") == "message":
                data = _text(msg["data"])
                channel = _text(msg["channel"])
                if channel == due_channel:
                    self._heard.hear(data)
                else:
                    queues.add(cancel_notice(data) if channel == control else data)
                continue
            if queues or left <= 0:
                return queues

    def heard_due(self) -> dict[str, float]:
        return self._heard.take()

    def next_due(self, queues: list[str]) -> float | None:
        # The delayed set's first score per queue (a job ready already is
        # due now), read with the server's clock in one pipelined round trip.
        if not queues:
            return None
        pipe = self.client().pipeline(transaction=False)
        pipe.time()
        for queue in queues:
            pipe.exists(self.key("q", queue, "ready"))
            pipe.zrange(self.key("q", queue, "delayed"), 0, 0, withscores=True)
        (secs, micros), *rest = pipe.execute()
        now_ms = secs * 1000 + micros / 1000
        firsts = []
        for ready, delayed in zip(rest[::2], rest[1::2], strict=True):
            if ready:
                return 0.0
            if delayed:
                firsts.append(float(delayed[0][1]))
        if not firsts:
            return None
        return max((min(firsts) - now_ms) / 1000, 0.0)

    # -- operations ----------------------------------------------------------------------

    def stats(self, cap: int | None = None) -> list[QueueStats]:  # counts are O(1) here: exact
        return [
            QueueStats(_text(q), int(r), int(d), int(res), _ms_to_dt(oldest))
            for q, r, d, res, oldest in self._run("stats")
        ]

    def workers(self, stale_after: float) -> list[WorkerInfo]:
        client = self.client()
        secs, micros = client.time()
        cutoff = secs * 1000 + micros // 1000 - int(float(stale_after) * 1000)
        ids = [_text(w) for w in client.zrangebyscore(self.key("workers"), f"({cutoff}", "+inf")]
        pipe = client.pipeline(transaction=False)
        for wid in ids:
            pipe.hgetall(self.key("worker", wid))
        out = []
        for wid, raw in zip(ids, pipe.execute(), strict=True):
            if not raw:
                continue
            h = {_text(k): _text(v) for k, v in raw.items()}
            current = h.get("current_job_id") or None
            out.append(
                WorkerInfo(
                    id=int(wid),
                    name=h.get("name", ""),
                    hostname=h.get("hostname", ""),
                    pid=int(h.get("pid") or 0),
                    queues=h.get("queues", ""),
                    started_at=_instant(h.get("started_at")),
                    heartbeat_at=_instant(h.get("heartbeat_at")),
                    current_job_id=int(current) if current and current.isdigit() else current,
                    jobs_done=int(h.get("jobs_done") or 0),
                )
            )
        out.sort(key=lambda w: (w.hostname, w.name, w.id))
        return out

    def clear(self, queue: str | None) -> int:
        if queue is None:
            queues = sorted(_text(q) for q in self.client().smembers(self.key("queues")))
        else:
            queues = [queue]
        if not queues:
            return 0
        return int(self._run("clear", *queues))

    def signal_restart(self) -> dt.datetime:
        return _instant(self._run("signal_restart"))

    # -- cancel ----------------------------------------------------------------------

    def cancel(self, ids: list[int], uuids: list[str]) -> list[CancelledJob]:
        wanted = {_pad(i) for i in ids} | set(self._ids_by_uuid(uuids))
        if not wanted:
            return []
        rows = self._run("cancel", *sorted(wanted))
        return [CancelledJob(int(r[0]), _text(r[1]), _text(r[2]), running=bool(int(r[3]))) for r in rows]

    def _ids_by_uuid(self, uuids: list[str]) -> list[str]:
        """The ids (padded) of the jobs whose payload has one of these uuids.
        Nothing indexes a payload's uuid (that would cost every job two more
        writes), so this reads every job's payload, a page at a time: an
        operator's command may, the worker never does."""
        if not uuids:
            return []
        wanted = set(uuids)
        client = self.client()
        found: list[str] = []
        keys: list[Any] = []

        def check() -> None:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hget(key, "payload")
            for key, raw in zip(keys, pipe.execute(), strict=True):
                text = _text(raw) if raw is not None else ""
                if any(u in text for u in wanted):
                    uuid = payload_uuid(text)
                    if uuid in wanted:
                        found.append(_text(key).rsplit(":", 1)[1])
            keys.clear()

        for key in client.scan_iter(match=self.key("job", "*"), count=1000):
            keys.append(key)
            if len(keys) >= 1000:
                check()
        check()
        return found

    def cancel_requests(self, worker_id: int) -> list[Any]:
        held = self.client().sinter(self.key("cancel"), self.key("held", str(worker_id)))
        return sorted(int(_text(i)) for i in held)

    def sweep_cancelled(self) -> list[CancelledJob]:
        return [CancelledJob(int(r[0]), _text(r[1]), _text(r[2])) for r in self._run("sweep_cancelled")]

    # -- pauses ----------------------------------------------------------------------------

    def pause(self, queues: list[str]) -> list[str]:
        asked = list(dict.fromkeys(queues))
        return [_text(q) for q in self._run("pause", PAUSES_CHANGED, *asked)] if asked else []

    def resume(self, queues: list[str]) -> list[str]:
        asked = list(dict.fromkeys(queues))
        return [_text(q) for q in self._run("resume", PAUSES_CHANGED, *asked)] if asked else []

    def paused(self) -> dict[str, dt.datetime]:
        raw = self.client().hgetall(self.key("paused"))
        return {_text(q): _instant(at) for q, at in sorted(raw.items())}

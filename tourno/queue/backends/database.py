"""The database backend: PostgreSQL in production, SQLite embedded.

Every statement that matters is written out here, once, with the reason for
its shape. They all go through ``database.execute_sql`` so that they run on
the calling thread's connection, inside the caller's transaction if one is
open (that is what makes dispatch transactional), and so that driver errors
arrive as peewee's ``OperationalError``/``InterfaceError``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import select
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import peewee

from tourno.buckets import TokenBucket
from tourno.db import (
    SQLITE_TIME_FORMAT,
    UTC,
    bounded_count,
    database,
    discard_connection,
    listen_url,
    open_connection,
    parse_timestamp,
    peewee_errors,
    sql,
    tuples,
    write_transaction,
)
from tourno.db import connect as connect_database
from tourno.queue import failed, leases, wakeup
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
from tourno.queue.job import PendingJob
from tourno.queue.metrics import COLUMNS, COUNTERS, MAXIMA, SUMS, TOTALS_MINUTE, Counts, MetricRow

log = logging.getLogger(__name__)

#: One channel for every queue; the payload names the queue.
CHANNEL = "tourno_jobs"
#: Cancel notices; the payload is the id of the worker holding the job.
CONTROL_CHANNEL = "tourno_control"
#: Delayed jobs (dispatched or released with a delay): the payload is the
#: queue, a space and the due time in epoch seconds (base.HeardDue), so that
#: an idle worker wakes when the job is due, not at its next --sleep poll.
DUE_CHANNEL = "tourno_due"
#: Rows per INSERT statement in a batched dispatch (SQLite binds six
#: parameters a row and allows 32,766 per statement).
PUSH_CHUNK = 20_000
SQLITE_PUSH_CHUNK = 4_000
#: Batches at least this large (and with no unique job) are sent with COPY.
COPY_THRESHOLD = 500


def _rows(sql: str, params: Any = ()) -> list[tuple]:
    return database.execute_sql(sql, params).fetchall()


def _claimed(rows: list[tuple]) -> list[ClaimedJob]:
    """Claimed rows (id, queue, payload, attempts, priority, available_at as
    epoch seconds) in the order the worker runs them; RETURNING does not
    promise the claim's ORDER BY."""
    return sorted((ClaimedJob(*r) for r in rows), key=lambda j: (j.priority, j.id))


def _rowcount(sql: str, params: Any = ()) -> int:
    return database.execute_sql(sql, params).rowcount


def _in_order(queues: list[str], rows: list[tuple]) -> list[str]:
    """The queues a pause or resume statement returned, in the order asked."""
    changed = {r[0] for r in rows}
    return [q for q in queues if q in changed]


#: The ON CONFLICT ... DO UPDATE of a metrics upsert: counters and sums add
#: up, maxima keep the larger ({max} is GREATEST or SQLite's max, {t} the
#: existing row's name).
_METRICS_SET = ", ".join(
    [f"{c} = {{t}}.{c} + excluded.{c}" for c in (*COUNTERS, *SUMS)]
    + [f"{c} = {{max}}({{t}}.{c}, excluded.{c})" for c in MAXIMA]
)
_METRICS_COLUMNS = ", ".join(("minute", "queue", "job", "shard", *COLUMNS))
#: Workers on PostgreSQL write their counts into this many rows per (minute,
#: queue, job), chosen by worker id: one row that every worker updated with
#: every claim would hold each claim on its row lock until the previous
#: claim's commit had reached the disk, serializing the workers.
METRIC_SHARDS = 16


def _requeue_sql(counts: str) -> str:
    """PostgreSQL: a held job made available again after %(delay)s seconds,
    with ``counts`` (SET clauses for attempts and exceptions), announced in
    the same statement: a ready one on the dispatch channel, a delayed one
    with its due time. Release and snooze differ only in their counts."""
    return f"""
        WITH r AS (
            UPDATE jobs
            SET reserved_at = NULL, reserved_by = NULL, lease_expires_at = NULL,
                available_at = now() + %(delay)s * interval '1 second', {counts}
            WHERE id = %(id)s AND reserved_by = %(worker)s
            RETURNING queue, available_at
        )
        SELECT CASE WHEN %(delay)s <= 0 THEN pg_notify('{CHANNEL}', queue)
                    ELSE pg_notify('{DUE_CHANNEL}', queue || ' ' || extract(epoch FROM available_at)) END
        FROM r
    """


class DatabaseBackend(QueueBackend):
    connection_name = "database"
    requeues_in_database = True

    def close_thread_connection(self) -> None:
        discard_connection()

    # -- metrics ---------------------------------------------------------------------

    def _upsert_metrics(self, rows: Sequence[MetricRow], shard: int = 0) -> None:
        """Add ``rows`` to queue_metrics, in the caller's transaction."""
        raise NotImplementedError

    @staticmethod
    def _minute(epoch: int) -> Any:
        """A minute (epoch seconds) as this database stores ``minute``."""
        from tourno.queue.models import QueueMetric

        return QueueMetric.minute.db_value(dt.datetime.fromtimestamp(epoch, UTC))

    def read_metrics(self, since: int | None) -> list[MetricRow]:
        from peewee import fn

        from tourno.queue.models import QueueMetric as M

        columns = [fn.SUM(getattr(M, c)).alias(c) for c in (*COUNTERS, *SUMS)]
        columns += [fn.MAX(getattr(M, c)).alias(c) for c in MAXIMA]
        query = M.select(M.queue, M.job, *columns).group_by(M.queue, M.job).order_by(M.queue, M.job)
        if since is not None:
            query = query.where(M.minute >= self._minute(since))
        start = TOTALS_MINUTE if since is None else since
        names = (*COUNTERS, *SUMS, *MAXIMA)
        return [
            MetricRow(start, queue, job, Counts.of(dict(zip(names, values, strict=True))))
            for queue, job, *values in tuples(query)
        ]

    def read_metric_minutes(self, first: int, last: int, queue: str | None = None) -> dict[int, Counts]:
        # One GROUP BY over a range of the (minute, queue, job, shard) key
        # index; the epoch totals row is kept out even of a window reaching 1970.
        from peewee import fn

        from tourno.queue.models import QueueMetric as M

        names = ("succeeded", "failed", "released", "runs", "wait_sum", "wait_max")
        columns = [fn.SUM(getattr(M, c)).alias(c) for c in names[:-1]]
        columns.append(fn.MAX(M.wait_max).alias("wait_max"))
        query = (
            M.select(M.minute, *columns)
            .where(
                M.minute.between(self._minute(first), self._minute(last)),
                M.minute > self._minute(TOTALS_MINUTE),
            )
            .group_by(M.minute)
        )
        if queue is not None:
            query = query.where(M.queue == queue)
        return {
            int(minute.timestamp()): Counts.of(dict(zip(names, values, strict=True)))
            for minute, *values in tuples(query)
        }

    def prune_metrics(self, retention_days: float) -> int:
        """Delete the minutes older than the retention and add them to the
        totals rows, in one transaction: the sums over all rows do not move.
        The DELETE ... RETURNING decides which rows this call folds, so two
        workers pruning at once never fold a minute twice (the second one's
        DELETE waits for the first and finds the rows gone)."""
        cutoff = int((time.time() - retention_days * 86400) // 60) * 60
        with write_transaction():
            if not self._may_prune():
                return 0
            gone = _rows(
                sql(
                    "DELETE FROM queue_metrics WHERE minute < %s AND minute > %s "
                    f"RETURNING queue, job, {', '.join(COLUMNS)}"
                ),
                (self._minute(cutoff), self._minute(TOTALS_MINUTE)),
            )
            folded: dict[tuple[str, str], Counts] = {}
            for queue, job, *values in gone:
                counts = Counts.of(dict(zip(COLUMNS, values, strict=True)))
                held = folded.setdefault((queue, job), Counts())
                held.merge(counts)
            if folded:
                self._upsert_metrics(
                    [MetricRow(TOTALS_MINUTE, q, j, c) for (q, j), c in sorted(folded.items())]
                )
        return len(gone)

    def _may_prune(self) -> bool:
        return True

    def workers(self, stale_after: float) -> list[WorkerInfo]:
        from tourno.queue.models import WorkerRecord

        cutoff = dt.datetime.now(UTC) - dt.timedelta(seconds=stale_after)
        query = (
            WorkerRecord.select()
            .where(WorkerRecord.heartbeat_at > cutoff)
            .order_by(WorkerRecord.hostname, WorkerRecord.name, WorkerRecord.id)
        )
        return [
            WorkerInfo(
                id=w.id,
                name=w.name,
                hostname=w.hostname,
                pid=w.pid,
                queues=w.queues,
                started_at=w.started_at,
                heartbeat_at=w.heartbeat_at,
                current_job_id=w.current_job_id,
                jobs_done=w.jobs_done,
            )
            for w in query
        ]

    def unregister_worker(self, worker_id: int) -> None:
        from tourno.queue.models import WorkerRecord

        WorkerRecord.delete().where(WorkerRecord.id == worker_id).execute()

    # -- middleware stores: rows of rate_buckets and queue_locks ---------------------

    def bucket(self, name: str, rate: float, burst: float, op: str) -> BucketState:
        if database.is_closed():
            open_connection()
        tb = TokenBucket(name, rate, burst)
        now = dt.datetime.now(UTC)
        if op == "take":
            # One transaction: the tokens left come with the take.
            granted, left, wait = tb.take_counted(1, now)
            return BucketState(bool(granted), left, wait)
        if op == "fill":
            tb.fill(now)
            return BucketState(False, burst, 0.0)
        if op != "peek":
            raise ValueError(f"unknown bucket operation {op!r}")
        tokens = tb.peek(now)
        tokens = burst if tokens is None else tokens
        return BucketState(False, tokens, 0.0 if tokens + 1e-9 >= 1 else (1 - tokens) / rate)

    def acquire_lock(
        self, key: str, worker_id: int, job_id: Any, stale_after: float, expire_after: float | None
    ) -> bool:
        from tourno.queue.models import LockRecord, WorkerRecord

        if database.is_closed():
            open_connection()
        now = dt.datetime.now(UTC)
        expires = None if expire_after is None else now + dt.timedelta(seconds=expire_after)
        holder_alive = peewee.fn.EXISTS(
            WorkerRecord.select(peewee.SQL("1")).where(
                (WorkerRecord.id == LockRecord.worker_id)
                & (WorkerRecord.heartbeat_at > now - dt.timedelta(seconds=stale_after))
            )
        )
        # One statement: insert the key, or take it over from a holder that
        # is this worker, expired or dead; RETURNING says whether we hold it.
        query = (
            LockRecord.insert(
                key=key, worker_id=worker_id, job_id=str(job_id), acquired_at=now, expires_at=expires
            )
            .on_conflict(
                conflict_target=[LockRecord.key],
                update={
                    LockRecord.worker_id: worker_id,
                    LockRecord.job_id: str(job_id),
                    LockRecord.acquired_at: now,
                    LockRecord.expires_at: expires,
                },
                where=(
                    (LockRecord.worker_id == worker_id)
                    | (LockRecord.expires_at.is_null(False) & (LockRecord.expires_at < now))
                    | ~holder_alive
                ),
            )
            .returning(LockRecord.key)
        )
        return bool(list(query.execute()))

    def release_locks(self, worker_id: int, key: str | None = None) -> int:
        from tourno.queue.models import LockRecord

        if database.is_closed():
            open_connection()
        query = LockRecord.delete().where(LockRecord.worker_id == worker_id)
        if key is not None:
            query = query.where(LockRecord.key == key)
        return int(query.execute())

    # -- cancel: the parts PostgreSQL and SQLite share ----------------------------------

    def cancel_requests(self, worker_id: int) -> list[Any]:
        # jobs_reserved_idx: only this worker's reserved rows are read.
        return [
            r[0]
            for r in _rows(
                sql(
                    "SELECT id FROM jobs WHERE reserved_by = %s AND reserved_at IS NOT NULL "
                    "AND cancel_requested_at IS NOT NULL"
                ),
                (worker_id,),
            )
        ]

    #: The payload column as text (PostgreSQL stores jsonb).
    _PAYLOAD_TEXT = "payload"

    def sweep_cancelled(self) -> list[CancelledJob]:
        # jobs_cancel_requested_idx holds only flagged rows, normally none.
        # Looked at first without a write: on SQLite a DELETE takes the
        # database's write lock even when it deletes nothing.
        if not _rows(
            "SELECT 1 FROM jobs WHERE cancel_requested_at IS NOT NULL AND reserved_at IS NULL LIMIT 1"
        ):
            return []
        with write_transaction():
            rows = _rows(
                "DELETE FROM jobs WHERE cancel_requested_at IS NOT NULL AND reserved_at IS NULL "
                f"RETURNING id, queue, {self._PAYLOAD_TEXT}"
            )
        return [CancelledJob(r[0], r[1], r[2]) for r in rows]

    def _cancel_found(self, found: list[tuple[Any, bool]]) -> list[CancelledJob]:
        """Inside the caller's write transaction, with the ``found`` rows
        (id, reserved) locked: delete the waiting ones, flag the reserved
        ones and tell their workers. Returns them all, in id order."""
        waiting = [r[0] for r in found if not r[1]]
        running = [r[0] for r in found if r[1]]
        out: list[CancelledJob] = []
        if waiting:
            marks = ", ".join(["%s"] * len(waiting))
            rows = _rows(
                sql(f"DELETE FROM jobs WHERE id IN ({marks}) RETURNING id, queue, {self._PAYLOAD_TEXT}"),
                waiting,
            )
            out += [CancelledJob(r[0], r[1], r[2]) for r in rows]
        if running:
            marks = ", ".join(["%s"] * len(running))
            rows = _rows(
                sql(
                    "UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, %s) "
                    f"WHERE id IN ({marks}) RETURNING id, queue, {self._PAYLOAD_TEXT}, reserved_by"
                ),
                [self._cancel_stamp(), *running],
            )
            out += [CancelledJob(r[0], r[1], r[2], running=True) for r in rows]
            self._notify_cancel(sorted({r[3] for r in rows}))
        return sorted(out, key=lambda j: j.id)

    def _cancel_stamp(self) -> Any:
        return dt.datetime.now(UTC)

    def _notify_cancel(self, workers: list[Any]) -> None:
        """Tell these workers' monitors at once (where the database can)."""

    def paused(self) -> dict[str, dt.datetime]:
        from tourno.queue.models import QueuePause

        query = QueuePause.select(QueuePause.queue, QueuePause.paused_at).order_by(QueuePause.queue)
        return {queue: parse_timestamp(at) for queue, at in tuples(query)}

    # -- chains and batches (workflows.py): the step in the job's transaction ----------

    def complete_step(
        self, worker_id: int, job_id: Any, step: Callable[[], None], metrics: Sequence[MetricRow] = ()
    ) -> bool:
        with write_transaction():
            if not self.complete(worker_id, [job_id], metrics):
                return False
            step()
        return True

    def fail_step(
        self,
        worker_id: int,
        job: ClaimedJob,
        uuid: str,
        exception: str,
        step: Callable[[], None],
        metrics: Sequence[MetricRow] = (),
    ) -> bool:
        with write_transaction():
            if not self.fail(worker_id, job, uuid, exception, metrics):
                return False
            step()
        return True


class PostgresBackend(DatabaseBackend):
    """PostgreSQL: one-statement claims with SKIP LOCKED, LISTEN/NOTIFY wake-ups."""

    # -- producer --------------------------------------------------------------

    # The INSERT and the NOTIFY travel in one statement. The notification is
    # transactional: inside db.atomic() it is sent at COMMIT, or never.
    # A delayed job announces its due time on DUE_CHANNEL instead.
    # A single job is one VALUES row (the cheapest statement for the common
    # case); a batch passes one array per column through unnest(), which costs
    # a few microseconds a row instead of a parameter list of five per row;
    # a large batch without unique jobs goes in with COPY (_push_copy).
    # A fast path, kept on purpose: prepared once per connection, because
    # parsing and planning this CTE costs about as much as the round trip
    # itself, and dispatching one job is the path the API takes for every
    # request that queues work. bench/queue.py's "Dispatch, one
    # Job.dispatch() per job" (disp_1) and the latency figures measure it.
    _PUSH_ONE_NAME = "tourno_push_one"
    _PUSH_ONE = f"""
        PREPARE {_PUSH_ONE_NAME} (text, jsonb, int, float8, text) AS
        WITH ins AS (
            INSERT INTO jobs (queue, payload, priority, attempts, available_at, unique_key, created_at)
            VALUES ($1, $2, $3, 0, now() + $4 * interval '1 second', $5, now())
            ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING id, queue, available_at, available_at <= now() AS ready
        )
        SELECT id, CASE WHEN ready THEN pg_notify('{CHANNEL}', queue)
                        ELSE pg_notify('{DUE_CHANNEL}', queue || ' ' || extract(epoch FROM available_at))
                   END
        FROM ins
    """
    #: The same statement unprepared, for a connection through a pooler.
    _PUSH_ONE_PLAIN = (
        _PUSH_ONE.split(" AS\n", 1)[1]
        .replace("$1", "%s::text")
        .replace("$2", "%s::jsonb")
        .replace("$3", "%s::int")
        .replace("$4", "%s::float8")
        .replace("$5", "%s::text")
    )
    #: Per connection: True once the statement above is prepared on it
    #: (PREPARE is not undone by a rollback, so this stays true for the
    #: connection's life), False when the connection goes through a pooler
    #: (_direct), where a prepared statement lives on whichever server
    #: connection ran the PREPARE and the next transaction may get another.
    _prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @staticmethod
    def _direct(conn: Any) -> bool:
        """Whether ``conn`` reaches a PostgreSQL backend of its own. A pooler
        (PgBouncer) answers the startup with a cancel key of its own making,
        so the backend pid the driver was told is not the server's."""
        told = getattr(getattr(conn, "info", None), "backend_pid", None)
        return told is not None and told == _rows("SELECT pg_backend_pid()")[0][0]

    _PUSH_MANY = f"""
        WITH ins AS (
            INSERT INTO jobs (queue, payload, priority, attempts, available_at, unique_key, created_at)
            SELECT t.q, t.p::jsonb, t.pr, 0, now() + t.d * interval '1 second', t.u, now()
            FROM unnest(%s::text[], %s::text[], %s::int[], %s::float8[], %s::text[]) AS t(q, p, pr, d, u)
            ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING id, payload ->> 'uuid' AS uuid, queue, available_at,
                      available_at <= now() AS ready
        )
        SELECT ins.id, ins.uuid,
               (SELECT count(pg_notify('{CHANNEL}', s.q))
                FROM (SELECT DISTINCT queue AS q FROM ins WHERE ready) s),
               (SELECT count(pg_notify('{DUE_CHANNEL}', d.q || ' ' || extract(epoch FROM d.at)))
                FROM (SELECT queue AS q, min(available_at) AS at FROM ins WHERE NOT ready GROUP BY queue) d)
        FROM ins
    """

    # unique_for: a key older than its window stops blocking new dispatches.
    _EXPIRE_UNIQUE = """
        UPDATE jobs SET unique_key = NULL
        FROM unnest(%s::text[], %s::float8[]) AS u(k, secs)
        WHERE jobs.unique_key = u.k AND jobs.created_at <= now() - u.secs * interval '1 second'
    """

    def push(self, jobs: list[PendingJob]) -> list[Any]:
        if database.is_closed():
            open_connection()
        if len(jobs) >= COPY_THRESHOLD and not any(p.unique_key for p in jobs):
            return self._push_copy(jobs)
        expiring = [(p.unique_key, p.unique_for) for p in jobs if p.unique_key and p.unique_for]
        # Several statements must commit together: wrap them (a no-op savepoint
        # when the caller already holds a transaction).
        with database.atomic() if expiring or len(jobs) > PUSH_CHUNK else contextlib.nullcontext():
            if expiring:
                keys, secs = zip(*expiring, strict=True)
                database.execute_sql(self._EXPIRE_UNIQUE, (list(keys), [float(s) for s in secs]))
            if len(jobs) == 1:
                p = jobs[0]
                conn = database.connection()
                prepared = self._prepared.get(conn)
                if prepared is None:
                    prepared = self._direct(conn)
                    if prepared:
                        database.execute_sql(self._PUSH_ONE)
                    self._prepared[conn] = prepared
                args = (p.queue, p.payload_json, p.priority, p.delay, p.unique_key)
                if prepared:
                    rows = _rows(f"EXECUTE {self._PUSH_ONE_NAME} (%s, %s, %s, %s, %s)", args)
                else:
                    rows = _rows(self._PUSH_ONE_PLAIN, args)
                return [rows[0][0] if rows else None]
            ids: dict[str, Any] = {}
            for start in range(0, len(jobs), PUSH_CHUNK):
                chunk = jobs[start : start + PUSH_CHUNK]
                params = (
                    [p.queue for p in chunk],
                    [p.payload_json for p in chunk],
                    [p.priority for p in chunk],
                    [p.delay for p in chunk],
                    [p.unique_key for p in chunk],
                )
                ids.update((uuid, job_id) for job_id, uuid, *_ in _rows(self._PUSH_MANY, params))
        return [ids.get(p.uuid) for p in jobs]

    def _push_copy(self, jobs: list[PendingJob]) -> list[Any]:
        """A large batch without unique jobs: take the ids from the sequence,
        COPY the rows in, then notify each queue that got ready jobs. COPY
        costs about half of an INSERT per row; with no unique key there is no
        conflict to handle, which is the one thing COPY cannot do."""
        with database.atomic():
            row = _rows(
                "SELECT now(), array(SELECT nextval(pg_get_serial_sequence('jobs', 'id')) "
                "FROM generate_series(1, %s))",
                (len(jobs),),
            )[0]
            now, ids = row[0], row[1]
            lines = []
            ready: set[str] = set()
            due: dict[str, float] = {}
            stamp = now.isoformat()
            for job_id, p in zip(ids, jobs, strict=True):
                if p.delay:
                    at = now + dt.timedelta(seconds=p.delay)
                    available = at.isoformat()
                    due[p.queue] = min(due.get(p.queue, at.timestamp()), at.timestamp())
                else:
                    available = stamp
                    ready.add(p.queue)
                # Our JSON never holds a raw tab, newline or CR (the encoder
                # escapes control characters), so only backslashes need doubling.
                lines.append(
                    f"{job_id}\t{_copy_text(p.queue)}\t{p.payload_json.replace(chr(92), chr(92) * 2)}\t"
                    f"{p.priority}\t0\t{available}\t{stamp}\n"
                )
            with peewee_errors():
                database.cursor().copy_expert(
                    "COPY jobs (id, queue, payload, priority, attempts, available_at, created_at) FROM STDIN",
                    io.StringIO("".join(lines)),
                )
            for queue in sorted(ready):
                database.execute_sql("SELECT pg_notify(%s, %s)", (CHANNEL, queue))
            for queue, at in sorted(due.items()):
                database.execute_sql("SELECT pg_notify(%s, %s)", (DUE_CHANNEL, f"{queue} {at!r}"))
        return list(ids)

    # -- worker: claim and finish ------------------------------------------------

    # One round trip does two things: it deletes the jobs this worker finished
    # since its last claim (batched completion), and reserves the next ready
    # jobs. The CTE with LIMIT ... FOR UPDATE SKIP LOCKED keeps concurrent
    # workers off each other's rows and stops the planner from updating more
    # rows than the LIMIT. The attempt of the first job, which starts at once,
    # is counted here; the worker counts the others' when they start, so a
    # crash never charges the jobs that had not started. A cancelled job
    # that went back to the queue is skipped (sweep_cancelled deletes it),
    # so a cancel is final even if its worker never heard of it. The lease is the
    # job's own timeout when its payload has a numeric one (read defensively, a
    # malformed payload must not break the claim), else the worker's.
    _CLAIM = """
        WITH done AS (
            DELETE FROM jobs WHERE id = ANY(%(done)s::bigint[]) AND reserved_by = %(worker)s
        ), c AS (
            SELECT id, priority FROM jobs
            WHERE queue = %(queue)s AND reserved_at IS NULL AND available_at <= now()
              AND cancel_requested_at IS NULL
            ORDER BY priority, id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ), head AS (
            SELECT id FROM c ORDER BY priority, id LIMIT 1
        )
        UPDATE jobs AS j
        SET reserved_at = now(), reserved_by = %(worker)s,
            attempts = j.attempts + CASE WHEN j.id = (SELECT id FROM head) THEN 1 ELSE 0 END,
            lease_expires_at = CASE
                WHEN jsonb_typeof(j.payload -> 'timeout') = 'number'
                    THEN CASE WHEN (j.payload ->> 'timeout')::float8 > 0
                        THEN now() + LEAST((j.payload ->> 'timeout')::float8 + %(margin)s, 1e8)
                                     * interval '1 second' END
                WHEN %(timeout)s > 0 THEN now() + (%(timeout)s + %(margin)s) * interval '1 second'
            END
        FROM c WHERE j.id = c.id
        RETURNING j.id, j.queue, j.payload::text, j.attempts, j.priority,
                  extract(epoch FROM j.available_at)::float8
    """

    # The metrics a write carries travel as one more CTE of that write's
    # statement, added only when there is something to write (so the claim
    # of a worker with metrics off, or with nothing finished, is unchanged).
    # One array per column through unnest(); the rows come sorted by key, so
    # two workers' upserts lock shared rows in the same order.
    _METRICS_UPSERT = f"""
        INSERT INTO queue_metrics AS qm ({_METRICS_COLUMNS})
        SELECT to_timestamp(t.minute), t.queue, t.job, %(m_shard)s, {", ".join("t." + c for c in COLUMNS)}
        FROM unnest(%(m_minute)s::bigint[], %(m_queue)s::text[], %(m_job)s::text[],
                    {", ".join(f"%(m_{c})s::bigint[]" for c in COUNTERS)},
                    {", ".join(f"%(m_{c})s::float8[]" for c in COLUMNS[len(COUNTERS) :])})
             AS t(minute, queue, job, {", ".join(COLUMNS)})
        ON CONFLICT (minute, queue, job, shard) DO UPDATE SET {_METRICS_SET.format(t="qm", max="GREATEST")}
    """

    @classmethod
    def _with_metrics(cls, statement: str) -> str:
        """``statement`` with the metrics upsert as a leading CTE."""
        body = statement.strip()
        cte = f"metrics AS ({cls._METRICS_UPSERT})"
        if body.startswith("WITH "):
            return f"WITH {cte}, {body[len('WITH ') :]}"
        return f"WITH {cte} {body}"

    @staticmethod
    def _metric_params(rows: Sequence[MetricRow], shard: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "m_shard": shard,
            "m_minute": [r.minute for r in rows],
            "m_queue": [r.queue for r in rows],
            "m_job": [r.job for r in rows],
        }
        for c in COLUMNS:
            params[f"m_{c}"] = [getattr(r.counts, c) for r in rows]
        return params

    def _run(self, statement: str, params: dict[str, Any], metrics: Sequence[MetricRow]) -> Any:
        """Execute one of the write statements, with the metrics CTE if any."""
        if metrics:
            statement = self._with_metrics(statement)
            shard = int(params["worker"]) % METRIC_SHARDS
            params = {**params, **self._metric_params(metrics, shard)}
        return database.execute_sql(statement, params)

    def _upsert_metrics(self, rows: Sequence[MetricRow], shard: int = 0) -> None:
        database.execute_sql(self._METRICS_UPSERT, self._metric_params(rows, shard))

    # One pruner at a time; a worker that does not get the lock skips its turn.
    _PRUNE_LOCK = 0x70717274

    def _may_prune(self) -> bool:
        return bool(_rows("SELECT pg_try_advisory_xact_lock(%s)", (self._PRUNE_LOCK,))[0][0])

    def claim(
        self,
        worker_id: int,
        queue: str,
        limit: int,
        done: list[Any],
        default_timeout: float,
        metrics: Sequence[MetricRow] = (),
    ) -> list[ClaimedJob]:
        params = {
            "done": list(done),
            "worker": worker_id,
            "queue": queue,
            "limit": limit,
            "timeout": float(default_timeout),
            "margin": LEASE_MARGIN,
        }
        return _claimed(self._run(self._CLAIM, params, metrics).fetchall())

    _COMPLETE = "DELETE FROM jobs WHERE id = ANY(%(ids)s::bigint[]) AND reserved_by = %(worker)s"

    def complete(self, worker_id: int, ids: list[Any], metrics: Sequence[MetricRow] = ()) -> int:
        if not ids and not metrics:
            return 0
        return self._run(self._COMPLETE, {"ids": list(ids), "worker": worker_id}, metrics).rowcount

    # Every change to a reserved row names its owner: a job that was rescued
    # from this worker (it looked dead) is someone else's now, and stays so.
    # A release raises the attempts (never lowers them) and counts an exception; a
    # snooze sets them, giving back the snoozed attempt that was charged (at
    # claim, or by the monitor for a prefetched job), so a job with tries = 1
    # can snooze forever.
    _RELEASE = _requeue_sql(
        "attempts = GREATEST(attempts, %(attempts)s::int), exceptions = exceptions + %(exception)s"
    )
    _SNOOZE = _requeue_sql("attempts = GREATEST(%(attempts)s::int, 0)")

    def release(
        self,
        worker_id: int,
        job_id: Any,
        delay: float,
        attempts: int | None = None,
        metrics: Sequence[MetricRow] = (),
        exception: bool = False,
    ) -> bool:
        params = {
            "delay": float(delay),
            "id": job_id,
            "worker": worker_id,
            "attempts": attempts,
            "exception": int(exception),
        }
        return bool(self._run(self._RELEASE, params, metrics).fetchall())

    def exceptions(self, job_id: Any) -> int:
        rows = _rows("SELECT exceptions FROM jobs WHERE id = %s", (job_id,))
        return int(rows[0][0]) if rows else 0

    def count_attempt(self, worker_id: int, job_id: Any, attempts: int) -> bool:
        return bool(
            _rowcount(
                "UPDATE jobs SET attempts = GREATEST(attempts, %s) WHERE id = %s AND reserved_by = %s",
                (attempts, job_id, worker_id),
            )
        )

    def snooze(
        self, worker_id: int, job_id: Any, delay: float, attempts: int, metrics: Sequence[MetricRow] = ()
    ) -> bool:
        params = {"delay": float(delay), "id": job_id, "worker": worker_id, "attempts": int(attempts)}
        return bool(self._run(self._SNOOZE, params, metrics).fetchall())

    _HAND_BACK = """
        WITH h AS (
            UPDATE jobs
            SET reserved_at = NULL, reserved_by = NULL, lease_expires_at = NULL
            WHERE id = ANY(%s::bigint[]) AND reserved_by = %s
            RETURNING queue
        ), notified AS (
            SELECT pg_notify('{channel}', q) FROM (SELECT DISTINCT queue AS q FROM h) s
        )
        SELECT (SELECT count(*) FROM h), (SELECT count(*) FROM notified)
    """.replace("{channel}", CHANNEL)

    def hand_back(self, worker_id: int, ids: list[Any]) -> int:
        if not ids:
            return 0
        return _rows(self._HAND_BACK, (list(ids), worker_id))[0][0]

    # Jobs reserved under this worker that it does not hold: a claim whose
    # reply was lost with the connection (QueueBackend.release_unheld). The
    # rows of one claim share its reserved_at (now() is the statement's
    # transaction time), and the claim charged an attempt to the first of
    # them in (priority, id) order: each group's head gets it back.
    _RELEASE_UNHELD = """
        WITH stray AS (
            SELECT id, priority, reserved_at FROM jobs
            WHERE reserved_by = %(worker)s AND reserved_at IS NOT NULL
              AND NOT (id = ANY(%(held)s::bigint[]))
            FOR UPDATE
        ), heads AS (
            SELECT DISTINCT ON (reserved_at) id FROM stray ORDER BY reserved_at, priority, id
        ), r AS (
            UPDATE jobs
            SET reserved_at = NULL, reserved_by = NULL, lease_expires_at = NULL,
                attempts = GREATEST(jobs.attempts
                    - CASE WHEN jobs.id IN (SELECT id FROM heads) THEN 1 ELSE 0 END, 0)
            FROM stray
            WHERE jobs.id = stray.id AND jobs.reserved_by = %(worker)s
            RETURNING jobs.queue
        ), notified AS (
            SELECT pg_notify('{channel}', q) FROM (SELECT DISTINCT queue AS q FROM r) s
        )
        SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM notified)
    """.replace("{channel}", CHANNEL)

    def release_unheld(self, worker_id: int, held: list[Any]) -> int:
        return _rows(self._RELEASE_UNHELD, {"worker": worker_id, "held": list(held)})[0][0]

    # The fast path of failed.record(): the delete and the failed_jobs upsert
    # are one statement (one round trip), so the job is either still queued
    # or recorded as failed, never neither. Failing the same uuid twice (a
    # retried job failing again) updates the record, as record() does.
    _FAIL = """
        WITH d AS (
            DELETE FROM jobs WHERE id = %(id)s AND reserved_by = %(worker)s RETURNING queue
        )
        INSERT INTO failed_jobs (uuid, connection, queue, payload, exception, failed_at, attempts)
        SELECT %(uuid)s, %(connection)s, d.queue, %(payload)s, %(exception)s, now(), %(attempts)s FROM d
        ON CONFLICT (uuid) DO UPDATE SET
            connection = EXCLUDED.connection, queue = EXCLUDED.queue, payload = EXCLUDED.payload,
            exception = EXCLUDED.exception, failed_at = EXCLUDED.failed_at, attempts = EXCLUDED.attempts
        RETURNING id
    """

    def fail(
        self, worker_id: int, job: ClaimedJob, uuid: str, exception: str, metrics: Sequence[MetricRow] = ()
    ) -> bool:
        params = {
            "id": job.id,
            "worker": worker_id,
            "uuid": uuid,
            "connection": self.connection_name,
            "payload": job.payload,
            "exception": exception,
            "attempts": job.attempts,
        }
        return bool(self._run(self._FAIL, params, metrics).fetchall())

    # -- worker: liveness ---------------------------------------------------------

    def register_worker(
        self, name: str, hostname: str, pid: int, queues: list[str]
    ) -> tuple[int, dt.datetime]:
        row = _rows(
            "INSERT INTO workers (name, hostname, pid, queues, started_at, heartbeat_at, jobs_done) "
            "VALUES (%s, %s, %s, %s, now(), now(), 0) RETURNING id, started_at",
            (name, hostname, pid, ",".join(queues)),
        )[0]
        return row[0], parse_timestamp(row[1])

    # An upsert, not an update: if this worker's row was pruned while it was
    # unresponsive, the next beat brings it back. The restart signal rides along.
    _HEARTBEAT = """
        WITH hb AS (
            INSERT INTO workers (id, name, hostname, pid, queues, started_at, heartbeat_at,
                                 current_job_id, jobs_done)
            VALUES (%(id)s, %(name)s, %(hostname)s, %(pid)s, %(queues)s, %(started_at)s, now(),
                    %(current_job_id)s, %(jobs_done)s)
            ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(),
                current_job_id = EXCLUDED.current_job_id, jobs_done = EXCLUDED.jobs_done
        )
        SELECT value FROM queue_signals WHERE name = 'restart'
    """

    def heartbeat(self, worker_id: int, info: dict[str, Any]) -> dt.datetime | None:
        rows = _rows(self._HEARTBEAT, {"id": worker_id, **info})
        return parse_timestamp(rows[0][0]) if rows else None

    # Jobs held by a worker whose heartbeat is stale (killed, host lost) go
    # back to the queue at once, with the attempt they used. A live worker's
    # jobs are never touched however long they run, unless the lease backstop
    # (timeout + margin) has passed, which the worker's own watchdog prevents.
    # RETURNING sees the row after the update (reserved_by already NULL), so
    # the former owner is read in a first step that also locks the rows.
    _RESCUE = """
        WITH stale AS (
            SELECT id, reserved_by FROM jobs
            WHERE reserved_at IS NOT NULL AND (
                lease_expires_at < now()
                OR NOT EXISTS (
                    SELECT 1 FROM workers w
                    WHERE w.id = jobs.reserved_by
                      AND w.heartbeat_at > now() - %(stale)s * interval '1 second'))
            FOR UPDATE SKIP LOCKED
        ), r AS (
            UPDATE jobs
            SET reserved_at = NULL, reserved_by = NULL, lease_expires_at = NULL, available_at = now()
            FROM stale
            WHERE jobs.id = stale.id AND jobs.reserved_by = stale.reserved_by
            RETURNING jobs.id, jobs.queue, stale.reserved_by
        ), notified AS (
            SELECT pg_notify('{channel}', q) FROM (SELECT DISTINCT queue AS q FROM r) s
        ), pruned AS (
            DELETE FROM workers WHERE heartbeat_at < now() - %(ttl)s * interval '1 second'
        )
        SELECT r.id, r.reserved_by FROM r, (SELECT count(*) FROM notified) n
    """.replace("{channel}", CHANNEL)

    def rescue(self, stale_after: float, announce: RescueAnnounce | None = None) -> list[tuple[Any, Any]]:
        # One transaction, so that the announcement comes while the rescued
        # rows are still locked and out of every claim's reach (the NOTIFY
        # goes out at the commit too).
        with database.atomic():
            pairs = [
                (r[0], r[1])
                for r in _rows(self._RESCUE, {"stale": float(stale_after), "ttl": WORKER_ROW_TTL})
            ]
            if pairs and announce is not None:
                announce(pairs)
        return pairs

    # Every claim leaves a dead entry at the head of jobs_ready_idx, and a
    # burst of jobs outruns autovacuum (which visits a database at most once a
    # minute): the claim's index scan then grows with the burst. Workers vacuum
    # the table themselves every few thousand jobs, one at a time. VACUUM
    # cannot run inside a transaction, so no transaction-scoped lock can cover
    # it, and a session advisory lock leaks behind a transaction-mode pooler
    # (the unlock may reach another server connection than the lock): the
    # turn is a lease row instead (queue/leases.py).
    #: Seconds a vacuum's turn lasts at most (far above what VACUUM jobs takes).
    VACUUM_LEASE = 600.0

    def vacuum(self) -> bool:
        with leases.lease("vacuum", self.VACUUM_LEASE) as taken:
            if taken:
                database.execute_sql("VACUUM jobs")
        return taken

    # LISTEN goes to TOURNO_LISTEN_URL when that is set (db.listen_url()): a
    # direct connection, since a transaction-mode pooler may run the LISTEN
    # on one server connection and hand that connection to another client
    # (whose commit then discards it), and delivers nothing to us. That
    # connection is this thread's own, beside its pooled one; the wait
    # selects on it. Without the setting, the thread's connection listens.
    _listening = threading.local()

    def _listener(self) -> Any:
        """This thread's listening driver connection."""
        own = getattr(self._listening, "db", None)
        return own.connection() if own is not None else database.connection()

    def listen(self) -> None:
        statement = f"LISTEN {CHANNEL}; LISTEN {CONTROL_CHANNEL}; LISTEN {DUE_CHANNEL}"
        url = listen_url()
        if url is None:
            database.execute_sql(statement)
            return
        own = getattr(self._listening, "db", None)
        if own is None:
            own = connect_database(url)
            self._listening.db = own
        open_connection(own)
        own.execute_sql(statement)

    def close_thread_connection(self) -> None:
        own = getattr(self._listening, "db", None)
        if own is not None:
            self._listening.db = None
            with contextlib.suppress(Exception):
                own.close()
        super().close_thread_connection()

    def wait_for_notifications(self, timeout: float) -> set[str]:
        conn = self._listener()
        queues: set[str] = set()
        if not conn.notifies:
            ready, _, _ = select.select([conn], [], [], max(timeout, 0))
            if ready:
                conn.poll()
        for note in conn.notifies:
            if note.channel == DUE_CHANNEL:
                self._heard.hear(note.payload)
            elif note.channel == CONTROL_CHANNEL:
                queues.add(cancel_notice(note.payload))
            else:
                queues.add(note.payload)
        conn.notifies.clear()
        return queues

    _heard = HeardDue()

    def heard_due(self) -> dict[str, float]:
        return self._heard.take()

    # The first waiting job of each queue by available_at, through
    # jobs_due_idx (queue, available_at, unreserved rows only): one index
    # probe per queue however many jobs wait, and the server's clock.
    _NEXT_DUE = """
        SELECT extract(epoch FROM min(t.at) - now())
        FROM unnest(%s::text[]) AS q(name)
        CROSS JOIN LATERAL (
            SELECT available_at AS at FROM jobs
            WHERE queue = q.name AND reserved_at IS NULL
            ORDER BY available_at LIMIT 1
        ) t
    """

    def next_due(self, queues: list[str]) -> float | None:
        if not queues:
            return None
        value = _rows(self._NEXT_DUE, (list(queues),))[0][0]
        return None if value is None else max(float(value), 0.0)

    # -- operations -----------------------------------------------------------------

    _STATS = """
        SELECT queue,
               count(*) FILTER (WHERE reserved_at IS NULL AND available_at <= now()),
               count(*) FILTER (WHERE reserved_at IS NULL AND available_at > now()),
               count(*) FILTER (WHERE reserved_at IS NOT NULL),
               min(available_at) FILTER (WHERE reserved_at IS NULL AND available_at <= now())
        FROM jobs GROUP BY queue ORDER BY queue
    """

    # The queues that hold jobs, without reading every row: a skip scan of
    # jobs_ready_idx (one probe per queue) and the few reserved rows.
    _QUEUES = """
        WITH RECURSIVE q AS (
            (SELECT queue FROM jobs WHERE reserved_at IS NULL ORDER BY queue LIMIT 1)
            UNION ALL
            SELECT (SELECT queue FROM jobs WHERE reserved_at IS NULL AND queue > q.queue
                    ORDER BY queue LIMIT 1)
            FROM q WHERE q.queue IS NOT NULL
        )
        SELECT queue FROM q WHERE queue IS NOT NULL
        UNION
        SELECT queue FROM jobs WHERE reserved_at IS NOT NULL
        ORDER BY 1
    """
    _READY = "SELECT 1 FROM jobs WHERE queue = %s AND reserved_at IS NULL AND available_at <= now()"
    _DELAYED = "SELECT 1 FROM jobs WHERE queue = %s AND reserved_at IS NULL AND available_at > now()"
    _RESERVED = "SELECT 1 FROM jobs WHERE queue = %s AND reserved_at IS NOT NULL"
    _OLDEST = "SELECT min(available_at) FROM jobs WHERE queue = %s AND reserved_at IS NULL AND available_at <= now()"

    def stats(self, cap: int | None = None) -> list[QueueStats]:
        if cap is None:
            return [QueueStats(r[0], r[1], r[2], r[3], parse_timestamp(r[4])) for r in _rows(self._STATS)]
        out = []
        for (queue,) in _rows(self._QUEUES):
            out.append(
                QueueStats(
                    queue,
                    bounded_count(self._READY, (queue,), cap),
                    bounded_count(self._DELAYED, (queue,), cap),
                    bounded_count(self._RESERVED, (queue,), cap),
                    parse_timestamp(_rows(self._OLDEST, (queue,))[0][0]),
                )
            )
        return out

    def clear(self, queue: str | None) -> int:
        if queue is None:
            return _rowcount("DELETE FROM jobs WHERE reserved_at IS NULL")
        return _rowcount("DELETE FROM jobs WHERE reserved_at IS NULL AND queue = %s", (queue,))

    def signal_restart(self) -> dt.datetime:
        row = _rows(
            "INSERT INTO queue_signals (name, value) VALUES ('restart', now()) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value RETURNING value"
        )[0]
        return parse_timestamp(row[0])

    # -- cancel ----------------------------------------------------------------------

    _PAYLOAD_TEXT = "payload::text"

    def cancel(self, ids: list[int], uuids: list[str]) -> list[CancelledJob]:
        # The rows are locked first, so none changes state (claimed, released,
        # finished) between the look and the delete or flag. There is no
        # index on the payload's uuid: finding by uuid reads the table, which
        # an operator's command may do; by id it is the primary key.
        where = []
        if ids:
            where.append("id = ANY(%(ids)s::bigint[])")
        if uuids:
            where.append("payload ->> 'uuid' = ANY(%(uuids)s::text[])")
        if not where:
            return []
        with write_transaction():
            found = _rows(
                f"SELECT id, reserved_at IS NOT NULL FROM jobs WHERE {' OR '.join(where)} FOR UPDATE",
                {"ids": list(ids), "uuids": list(uuids)},
            )
            return self._cancel_found([(r[0], bool(r[1])) for r in found])

    def _notify_cancel(self, workers: list[Any]) -> None:
        # Sent at commit, with the flag.
        for worker in workers:
            database.execute_sql("SELECT pg_notify(%s, %s)", (CONTROL_CHANNEL, str(worker)))

    # A pause is a row. ON CONFLICT makes pausing a paused queue (or two
    # operators at once) a no-op that RETURNING reports; the NOTIFY goes out
    # at commit, once the row is visible to the workers that reload on it.
    _PAUSE = """
        WITH p AS (
            INSERT INTO queue_pauses (queue, paused_at)
            SELECT q, now() FROM unnest(%s::text[]) AS q
            ON CONFLICT (queue) DO NOTHING
            RETURNING queue
        )
        SELECT queue, pg_notify('{channel}', '{changed}') FROM p
    """.replace("{channel}", CHANNEL).replace("{changed}", PAUSES_CHANGED)
    _RESUME = """
        WITH r AS (DELETE FROM queue_pauses WHERE queue = ANY(%s::text[]) RETURNING queue)
        SELECT queue, pg_notify('{channel}', '{changed}') FROM r
    """.replace("{channel}", CHANNEL).replace("{changed}", PAUSES_CHANGED)

    def pause(self, queues: list[str]) -> list[str]:
        asked = list(dict.fromkeys(queues))
        return _in_order(asked, _rows(self._PAUSE, (asked,))) if asked else []

    def resume(self, queues: list[str]) -> list[str]:
        asked = list(dict.fromkeys(queues))
        return _in_order(asked, _rows(self._RESUME, (asked,))) if asked else []


class SqliteBackend(DatabaseBackend):
    """SQLite, for one machine: the same semantics with a database-wide write
    lock (BEGIN IMMEDIATE) in place of row locks, and datagrams on Unix
    sockets beside the database file in place of NOTIFY (``queue/wakeup.py``;
    the poll is the fallback). Times are UTC text in one sortable format,
    computed here."""

    _local = threading.local()  # the monitor thread's wake-up socket
    _heard = HeardDue()
    _listen_failed = False

    @staticmethod
    def _announce(
        ready: set[str] | frozenset[str] = frozenset(), due: dict[str, float] | None = None
    ) -> None:
        """After the commit of the write in progress (at once outside a
        transaction), wake the idle workers on this database: ``ready``
        queues got jobs, ``due`` queues got delayed ones (epoch seconds)."""
        folder = wakeup.wake_dir(getattr(database.obj, "database", "") or "")
        if folder is None or not (ready or due):
            return
        lines = [f"ready {q}" for q in sorted(ready)]
        lines += [f"due {q} {at!r}" for q, at in sorted((due or {}).items())]

        def send() -> None:
            wakeup.send(folder, lines)

        try:
            database.after_commit(send)
        except ValueError:  # manual_commit(): no commit to wait for
            send()

    def close_thread_connection(self) -> None:
        listener = getattr(self._local, "listener", None)
        if listener is not None:
            self._local.listener = None
            listener.close()
        super().close_thread_connection()

    @staticmethod
    def _now(offset: float = 0.0) -> str:
        return (dt.datetime.now(UTC) + dt.timedelta(seconds=offset)).strftime(SQLITE_TIME_FORMAT)

    def push(self, jobs: list[PendingJob]) -> list[Any]:
        if database.is_closed():
            open_connection()
        ids: dict[str, Any] = {}
        now = dt.datetime.now(UTC)
        with database.atomic("IMMEDIATE"):
            for p in jobs:
                if p.unique_key and p.unique_for:
                    cutoff = (now - dt.timedelta(seconds=float(p.unique_for))).strftime(SQLITE_TIME_FORMAT)
                    database.execute_sql(
                        "UPDATE jobs SET unique_key = NULL WHERE unique_key = ? AND created_at <= ?",
                        (p.unique_key, cutoff),
                    )
            created = now.strftime(SQLITE_TIME_FORMAT)
            for start in range(0, len(jobs), SQLITE_PUSH_CHUNK):
                chunk = jobs[start : start + SQLITE_PUSH_CHUNK]
                params: list[Any] = []
                for p in chunk:
                    available = (now + dt.timedelta(seconds=p.delay)).strftime(SQLITE_TIME_FORMAT)
                    params += [p.queue, p.payload_json, p.priority, available, p.unique_key, created]
                sql = (
                    "INSERT INTO jobs (queue, payload, priority, attempts, available_at, unique_key, created_at) "
                    "VALUES " + ",".join(["(?, ?, ?, 0, ?, ?, ?)"] * len(chunk)) + " "
                    "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING "
                    "RETURNING id, json_extract(payload, '$.uuid')"
                )
                ids.update((uuid, job_id) for job_id, uuid in _rows(sql, params))
        due: dict[str, float] = {}
        for p in jobs:
            if p.delay > 0:
                at = now.timestamp() + p.delay
                due[p.queue] = min(due.get(p.queue, at), at)
        self._announce({p.queue for p in jobs if p.delay <= 0}, due)
        return [ids.get(p.uuid) for p in jobs]

    _CLAIM = """
        UPDATE jobs
        SET reserved_at = :now, reserved_by = :worker,
            attempts = attempts + CASE WHEN id = :head THEN 1 ELSE 0 END,
            lease_expires_at = CASE
                WHEN json_valid(payload) AND json_type(payload, '$.timeout') IN ('integer', 'real')
                    THEN CASE WHEN json_extract(payload, '$.timeout') > 0
                        THEN strftime('%Y-%m-%d %H:%M:%f', :epoch
                             + min(json_extract(payload, '$.timeout') + :margin, 1e8), 'unixepoch') END
                WHEN :timeout > 0
                    THEN strftime('%Y-%m-%d %H:%M:%f', :epoch + :timeout + :margin, 'unixepoch')
            END
        WHERE id IN (
            SELECT id FROM jobs
            WHERE queue = :queue AND reserved_at IS NULL AND available_at <= :now
              AND cancel_requested_at IS NULL
            ORDER BY priority, id LIMIT :limit)
        RETURNING id, queue, payload, attempts, priority, (julianday(available_at) - 2440587.5) * 86400.0
    """
    # The batch's first job: the only one charged an attempt at claim.
    _HEAD = """
        SELECT id FROM jobs
        WHERE queue = :queue AND reserved_at IS NULL AND available_at <= :now
          AND cancel_requested_at IS NULL
        ORDER BY priority, id LIMIT 1
    """

    #: Rows per metrics INSERT (14 parameters a row).
    _METRICS_CHUNK = 1000

    def _upsert_metrics(self, rows: Sequence[MetricRow], shard: int = 0) -> None:
        """Inside the caller's write transaction (the claim's, a fail's...).
        Always shard 0: SQLite's writers take turns on the database anyway."""
        marks = "(" + ", ".join("?" * (4 + len(COLUMNS))) + ")"
        for start in range(0, len(rows), self._METRICS_CHUNK):
            chunk = rows[start : start + self._METRICS_CHUNK]
            params: list[Any] = []
            for r in chunk:
                params += [self._minute(r.minute), r.queue, r.job, 0, *r.counts.values()]
            database.execute_sql(
                f"INSERT INTO queue_metrics ({_METRICS_COLUMNS}) VALUES {', '.join([marks] * len(chunk))} "
                "ON CONFLICT (minute, queue, job, shard) DO UPDATE SET "
                + _METRICS_SET.format(t="queue_metrics", max="max"),
                params,
            )

    def claim(
        self,
        worker_id: int,
        queue: str,
        limit: int,
        done: list[Any],
        default_timeout: float,
        metrics: Sequence[MetricRow] = (),
    ) -> list[ClaimedJob]:
        epoch = time.time()
        now = dt.datetime.fromtimestamp(epoch, UTC).strftime(SQLITE_TIME_FORMAT)
        with database.atomic("IMMEDIATE"):
            if done:
                self._delete(worker_id, done)
            if metrics:
                self._upsert_metrics(metrics)
            head = _rows(self._HEAD, {"queue": queue, "now": now})
            if not head:
                return []
            rows = _rows(
                self._CLAIM,
                {
                    "head": head[0][0],
                    "now": now,
                    "epoch": epoch,
                    "worker": worker_id,
                    "queue": queue,
                    "limit": limit,
                    "timeout": float(default_timeout),
                    "margin": LEASE_MARGIN,
                },
            )
        return _claimed(rows)

    @staticmethod
    def _delete(worker_id: int, ids: list[Any]) -> int:
        marks = ",".join("?" * len(ids))
        return _rowcount(f"DELETE FROM jobs WHERE id IN ({marks}) AND reserved_by = ?", [*ids, worker_id])

    def complete(self, worker_id: int, ids: list[Any], metrics: Sequence[MetricRow] = ()) -> int:
        if not ids and not metrics:
            return 0
        with database.atomic("IMMEDIATE"):
            if metrics:
                self._upsert_metrics(metrics)
            return self._delete(worker_id, ids) if ids else 0

    def release(
        self,
        worker_id: int,
        job_id: Any,
        delay: float,
        attempts: int | None = None,
        metrics: Sequence[MetricRow] = (),
        exception: bool = False,
    ) -> bool:
        return self._requeue(
            "attempts = max(attempts, coalesce(?, attempts)), exceptions = exceptions + ?",
            (attempts, int(exception)),
            job_id,
            worker_id,
            delay,
            metrics,
        )

    def _requeue(
        self,
        counts: str,
        count_params: tuple[Any, ...],
        job_id: Any,
        worker_id: int,
        delay: float,
        metrics: Sequence[MetricRow],
    ) -> bool:
        """A held job made available again after ``delay`` seconds, with
        ``counts`` (SET clauses for attempts and exceptions, taking
        ``count_params``), then announced to idle workers: ready, or due at
        its time. Release and snooze differ only in their counts."""
        with database.atomic("IMMEDIATE") if metrics else contextlib.nullcontext():
            if metrics:
                self._upsert_metrics(metrics)
            rows = _rows(
                "UPDATE jobs SET reserved_at = NULL, reserved_by = NULL, lease_expires_at = NULL, "
                f"available_at = ?, {counts} WHERE id = ? AND reserved_by = ? RETURNING queue",
                (self._now(delay), *count_params, job_id, worker_id),
            )
        if rows and delay > 0:
            self._announce(due={rows[0][0]: time.time() + delay})
        elif rows:
            self._announce({rows[0][0]})
        return bool(rows)

    def exceptions(self, job_id: Any) -> int:
        rows = _rows("SELECT exceptions FROM jobs WHERE id = ?", (job_id,))
        return int(rows[0][0]) if rows else 0

    def count_attempt(self, worker_id: int, job_id: Any, attempts: int) -> bool:
        return bool(
            _rowcount(
                "UPDATE jobs SET attempts = max(attempts, ?) WHERE id = ? AND reserved_by = ?",
                (attempts, job_id, worker_id),
            )
        )

    def snooze(
        self, worker_id: int, job_id: Any, delay: float, attempts: int, metrics: Sequence[MetricRow] = ()
    ) -> bool:
        # PostgresBackend._SNOOZE says why the attempts are set, not raised.
        return self._requeue("attempts = max(?, 0)", (int(attempts),), job_id, worker_id, delay, metrics)

    def hand_back(self, worker_id: int, ids: list[Any]) -> int:
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        rows = _rows(
            "UPDATE jobs SET reserved_at = NULL, reserved_by = NULL, lease_expires_at = NULL "
            f"WHERE id IN ({marks}) AND reserved_by = ? RETURNING queue",
            [*ids, worker_id],
        )
        self._announce({r[0] for r in rows})
        return len(rows)

    def release_unheld(self, worker_id: int, held: list[Any]) -> int:
        # PostgresBackend._RELEASE_UNHELD explains the heads; the held ids are
        # left out here rather than in SQL (no array type to bind them as).
        keep = set(held)
        with database.atomic("IMMEDIATE"):
            rows = _rows(
                "SELECT id, priority, reserved_at FROM jobs WHERE reserved_by = ? AND reserved_at IS NOT NULL",
                (worker_id,),
            )
            stray = [r for r in rows if r[0] not in keep]
            if not stray:
                return 0
            heads: dict[Any, tuple[int, Any]] = {}
            for job_id, priority, reserved_at in stray:
                if reserved_at not in heads or (priority, job_id) < heads[reserved_at]:
                    heads[reserved_at] = (priority, job_id)
            head_ids = [h[1] for h in heads.values()]
            ids = [r[0] for r in stray]
            marks, head_marks = ",".join("?" * len(ids)), ",".join("?" * len(head_ids))
            rows = _rows(
                "UPDATE jobs SET reserved_at = NULL, reserved_by = NULL, lease_expires_at = NULL, "
                f"attempts = max(attempts - CASE WHEN id IN ({head_marks}) THEN 1 ELSE 0 END, 0) "
                f"WHERE id IN ({marks}) AND reserved_by = ? RETURNING queue",
                [*head_ids, *ids, worker_id],
            )
            self._announce({r[0] for r in rows})
        return len(rows)

    def fail(
        self, worker_id: int, job: ClaimedJob, uuid: str, exception: str, metrics: Sequence[MetricRow] = ()
    ) -> bool:
        with database.atomic("IMMEDIATE"):
            if metrics:
                self._upsert_metrics(metrics)
            rows = _rows(
                "DELETE FROM jobs WHERE id = ? AND reserved_by = ? RETURNING queue",
                (job.id, worker_id),
            )
            if not rows:
                return False
            failed.record(
                uuid, self.connection_name, rows[0][0], job.payload, exception, attempts=job.attempts
            )
        return True

    def register_worker(
        self, name: str, hostname: str, pid: int, queues: list[str]
    ) -> tuple[int, dt.datetime]:
        now = self._now()
        rows = _rows(
            "INSERT INTO workers (name, hostname, pid, queues, started_at, heartbeat_at, jobs_done) "
            "VALUES (?, ?, ?, ?, ?, ?, 0) RETURNING id",
            (name, hostname, pid, ",".join(queues), now, now),
        )
        return rows[0][0], parse_timestamp(now)

    def heartbeat(self, worker_id: int, info: dict[str, Any]) -> dt.datetime | None:
        started = info["started_at"]
        if isinstance(started, dt.datetime):
            started = started.astimezone(UTC).strftime(SQLITE_TIME_FORMAT)
        now = self._now()
        database.execute_sql(
            "INSERT INTO workers (id, name, hostname, pid, queues, started_at, heartbeat_at, "
            "current_job_id, jobs_done) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, "
            "current_job_id = excluded.current_job_id, jobs_done = excluded.jobs_done",
            (
                worker_id,
                info["name"],
                info["hostname"],
                info["pid"],
                info["queues"],
                started,
                now,
                info["current_job_id"],
                info["jobs_done"],
            ),
        )
        rows = _rows("SELECT value FROM queue_signals WHERE name = 'restart'")
        return parse_timestamp(rows[0][0]) if rows else None

    def rescue(self, stale_after: float, announce: RescueAnnounce | None = None) -> list[tuple[Any, Any]]:
        now = self._now()
        cond = (
            "reserved_at IS NOT NULL AND (lease_expires_at < ? OR NOT EXISTS ("
            "SELECT 1 FROM workers w WHERE w.id = jobs.reserved_by AND w.heartbeat_at > ?))"
        )
        params = (now, self._now(-stale_after))
        with database.atomic("IMMEDIATE"):
            # RETURNING would give reserved_by after the update (NULL): read
            # the owners first; the write lock keeps the set unchanged.
            rows = _rows(f"SELECT id, reserved_by, queue FROM jobs WHERE {cond}", params)
            if rows:
                database.execute_sql(
                    "UPDATE jobs SET reserved_at = NULL, reserved_by = NULL, lease_expires_at = NULL, "
                    f"available_at = ? WHERE {cond}",
                    (now, *params),
                )
            database.execute_sql("DELETE FROM workers WHERE heartbeat_at < ?", (self._now(-WORKER_ROW_TTL),))
            pairs = [(r[0], r[1]) for r in rows]
            if pairs and announce is not None:
                announce(pairs)  # the write lock keeps every claim out until the commit
            self._announce({r[2] for r in rows})
        return pairs

    def next_due(self, queues: list[str]) -> float | None:
        # As PostgresBackend's, through jobs_due_idx; the times are ours (the
        # claim compares available_at with this process's clock too).
        firsts = []
        for queue in queues:
            rows = _rows(
                "SELECT available_at FROM jobs WHERE queue = ? AND reserved_at IS NULL "
                "ORDER BY available_at LIMIT 1",
                (queue,),
            )
            if rows:
                firsts.append(parse_timestamp(rows[0][0]))
        if not firsts:
            return None
        return max((min(firsts) - dt.datetime.now(UTC)).total_seconds(), 0.0)

    def listen(self) -> None:
        if getattr(self._local, "listener", None) is not None:
            return
        folder = wakeup.wake_dir(getattr(database.obj, "database", "") or "")
        if folder is None:
            return
        try:
            self._local.listener = wakeup.Listener(folder)
        except OSError as exc:
            # A folder we may not write to: poll, as before (logged once per process).
            if not SqliteBackend._listen_failed:
                SqliteBackend._listen_failed = True
                log.warning("no wake-up socket in %s (%s): idle workers poll every --sleep", folder, exc)

    def wait_for_notifications(self, timeout: float) -> set[str]:
        listener = getattr(self._local, "listener", None)
        if listener is None:
            time.sleep(max(timeout, 0))
            return set()
        queues: set[str] = set()
        for line in listener.wait(timeout):
            kind, _, rest = line.partition(" ")
            if kind == "ready":
                queues.add(rest)
            elif kind == "due":
                self._heard.hear(rest)
        return queues

    def heard_due(self) -> dict[str, float]:
        return self._heard.take()

    def stats(self, cap: int | None = None) -> list[QueueStats]:  # SQLite counts exactly
        now = self._now()
        rows = _rows(
            "SELECT queue, "
            "count(*) FILTER (WHERE reserved_at IS NULL AND available_at <= ?), "
            "count(*) FILTER (WHERE reserved_at IS NULL AND available_at > ?), "
            "count(*) FILTER (WHERE reserved_at IS NOT NULL), "
            "min(available_at) FILTER (WHERE reserved_at IS NULL AND available_at <= ?) "
            "FROM jobs GROUP BY queue ORDER BY queue",
            (now, now, now),
        )
        return [QueueStats(r[0], r[1], r[2], r[3], parse_timestamp(r[4])) for r in rows]

    def clear(self, queue: str | None) -> int:
        with database.atomic("IMMEDIATE"):
            if queue is None:
                return _rowcount("DELETE FROM jobs WHERE reserved_at IS NULL")
            return _rowcount("DELETE FROM jobs WHERE reserved_at IS NULL AND queue = ?", (queue,))

    def signal_restart(self) -> dt.datetime:
        now = self._now()
        database.execute_sql(
            "INSERT INTO queue_signals (name, value) VALUES ('restart', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (now,),
        )
        return parse_timestamp(now)

    def cancel(self, ids: list[int], uuids: list[str]) -> list[CancelledJob]:
        # The write lock (BEGIN IMMEDIATE) keeps every row as found until the
        # delete or flag. A payload that is not JSON has no uuid (and must
        # not make json_extract raise).
        where: list[str] = []
        params: list[Any] = []
        if ids:
            where.append(f"id IN ({', '.join('?' * len(ids))})")
            params += ids
        if uuids:
            where.append(
                f"(json_valid(payload) AND json_extract(payload, '$.uuid') IN ({', '.join('?' * len(uuids))}))"
            )
            params += uuids
        if not where:
            return []
        with write_transaction():
            found = _rows(f"SELECT id, reserved_at IS NOT NULL FROM jobs WHERE {' OR '.join(where)}", params)
            return self._cancel_found([(r[0], bool(r[1])) for r in found])

    def _cancel_stamp(self) -> Any:
        return self._now()

    # No NOTIFY on SQLite: workers see a pause or resume on their next reload
    # of the paused set (the monitor's poll, every half second).
    def pause(self, queues: list[str]) -> list[str]:
        asked = list(dict.fromkeys(queues))
        if not asked:
            return []
        now = self._now()
        with database.atomic("IMMEDIATE"):
            rows = _rows(
                "INSERT INTO queue_pauses (queue, paused_at) VALUES "
                + ",".join(["(?, ?)"] * len(asked))
                + " ON CONFLICT (queue) DO NOTHING RETURNING queue",
                [v for q in asked for v in (q, now)],
            )
        return _in_order(asked, rows)

    def resume(self, queues: list[str]) -> list[str]:
        asked = list(dict.fromkeys(queues))
        if not asked:
            return []
        marks = ",".join("?" * len(asked))
        with database.atomic("IMMEDIATE"):
            rows = _rows(f"DELETE FROM queue_pauses WHERE queue IN ({marks}) RETURNING queue", asked)
        return _in_order(asked, rows)


def _copy_text(value: str) -> str:
    """Escape a value for COPY's text format."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def for_database(db: peewee.Database) -> DatabaseBackend:
    return PostgresBackend() if isinstance(db, peewee.PostgresqlDatabase) else SqliteBackend()

"""The ``queue_outbox`` hand-off: jobs dispatched inside a database transaction
to a queue store outside the database (Redis), delivered exactly once.

The jobs are written to ``queue_outbox`` inside the caller's transaction
(they commit or roll back with its rows, savepoints included) and, after the
outermost transaction commits (peewee's ``after_commit``), they are pushed to
the store and their rows deleted. If the store is unreachable then, the
commit has happened and stands: a warning is logged and the rows stay. Every
worker's monitor relays leftover rows (:meth:`Handoff.relay`, through the
backend's ``maintain()``, each heartbeat interval), oldest first, so the jobs
run once the store is back.

A hand-off is exactly-once: the rows are claimed (``DELETE ... RETURNING``,
``SKIP LOCKED`` on PostgreSQL, the write lock on SQLite) in a transaction that
stays open while the jobs are pushed and commits only after; the store's push
records each job's uuid and skips a uuid already there, so a claim whose
commit failed after its push is never pushed twice. A uuid is forgotten once
its row's deletion has committed (or after a while, by the store).

The job ids are taken from the store at dispatch, so ``dispatch`` returns them
as usual; if the store is unreachable at dispatch, the job is queued all the
same, a warning is logged and its uuid stands in for the id (the id is taken
when the job reaches the store). For ``OUTAGE_HOLD`` seconds after the store
was found unreachable, dispatches in transactions do not wait on it: they
leave their jobs to the relay. A unique job handed off gets an id even if its
key turns out to be taken at push time; that id then names no job.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Protocol

import peewee

from tourno import db as tdb
from tourno.db import OUTAGE_ERRORS, database, discard_connection, open_connection, parse_timestamp
from tourno.errors import first_line
from tourno.queue.job import PendingJob
from tourno.queue.models import OutboxRecord

log = logging.getLogger(__name__)

#: Rows per INSERT into queue_outbox (SQLite binds nine parameters a row).
OUTBOX_CHUNK = 1000
#: Outbox rows claimed per hand-off transaction, and how many such batches
#: one relay pass sends at most (the rest waits for the next pass).
HANDOFF_BATCH = 1000
RELAY_BATCHES = 20
#: After the store was found unreachable inside a transaction, dispatches leave
#: their jobs to the relay for this many seconds instead of waiting on it.
OUTAGE_HOLD = 5.0

#: The columns a hand-off reads back from ``queue_outbox``.
_OUTBOX_COLUMNS = "id, uuid, job_id, queue, payload, priority, available_at, unique_key, unique_for"

# Claiming deletes the rows inside a transaction that stays open while they
# are pushed: a concurrent hand-off skips them (SKIP LOCKED), and a failed
# push rolls the deletion back. The after-commit hand-off claims the rows its
# transaction wrote; the relay claims the oldest. SQLite has no SKIP LOCKED:
# the write lock of BEGIN IMMEDIATE serializes the hand-offs instead.
_CLAIM_IDS_PG = (
    "DELETE FROM queue_outbox WHERE id IN (SELECT id FROM queue_outbox WHERE id = ANY(%s) "
    f"FOR UPDATE SKIP LOCKED) RETURNING {_OUTBOX_COLUMNS}"
)
_CLAIM_OLDEST_PG = (
    "DELETE FROM queue_outbox WHERE id IN (SELECT id FROM queue_outbox ORDER BY id LIMIT %s "
    f"FOR UPDATE SKIP LOCKED) RETURNING {_OUTBOX_COLUMNS}"
)
_CLAIM_OLDEST_SQLITE = (
    "DELETE FROM queue_outbox WHERE id IN (SELECT id FROM queue_outbox ORDER BY id LIMIT ?) "
    f"RETURNING {_OUTBOX_COLUMNS}"
)


class Store(Protocol):
    """What the hand-off needs from the queue store outside the database."""

    # Read-only properties, so that a class attribute of a narrower tuple type fits.
    @property
    def store_name(self) -> str:
        """The store's name in messages ("Redis")."""
        ...

    @property
    def connection_errors(self) -> tuple[type[BaseException], ...]:
        """Errors meaning the store went away."""
        ...

    @property
    def store_errors(self) -> tuple[type[BaseException], ...]:
        """Every error the store raises (a refused push as well as an outage)."""
        ...

    def take_ids(self, n: int) -> int:
        """The first of ``n`` new job ids; raises one of ``connection_errors``."""
        ...

    def push_handed(self, jobs: list[PendingJob], ids: list[Any]) -> None:
        """Push handed-over jobs under these ids (None: allocate), each uuid at most once."""
        ...

    def forget_handed(self, uuids: list[str]) -> None:
        """Forget these uuids (their rows' deletion committed); never raises."""
        ...

    def close_thread_connection(self) -> None: ...


class Handoff:
    """The ``queue_outbox`` hand-off of one store: writing in a transaction,
    handing over after commit, and the relay of what is left."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._outage_until = 0.0
        self._relay_failing = False

    # -- the store's outages ---------------------------------------------------------------

    def in_outage(self) -> bool:
        return time.monotonic() < self._outage_until

    def outage_seen(self) -> None:
        self._outage_until = time.monotonic() + OUTAGE_HOLD
        self.store.close_thread_connection()

    # -- inside the caller's transaction -----------------------------------------------

    def write(self, db: peewee.Database, jobs: list[PendingJob]) -> list[Any]:
        """Write ``jobs`` to queue_outbox inside the open transaction; they
        reach the store after it commits (:class:`AfterCommit`) or from the
        relay. Returns their ids (their uuids when the store is unreachable)."""
        first = self._take_ids(len(jobs))
        now = dt.datetime.now(dt.UTC)
        after_commit = self._after_commit(db)
        stamp = OutboxRecord.created_at.db_value
        for start in range(0, len(jobs), OUTBOX_CHUNK):
            chunk = jobs[start : start + OUTBOX_CHUNK]
            params: list[Any] = []
            for i, p in enumerate(chunk, start):
                params += [
                    p.uuid,
                    None if first is None else first + i,
                    p.queue,
                    p.payload_json,
                    int(p.priority),
                    stamp(now + dt.timedelta(seconds=p.delay)),
                    p.unique_key,
                    float(p.unique_for) if p.unique_key and p.unique_for else None,
                    stamp(now),
                ]
            values = ",".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            rows = db.execute_sql(
                tdb.sql(
                    "INSERT INTO queue_outbox (uuid, job_id, queue, payload, priority, available_at, "
                    f"unique_key, unique_for, created_at) VALUES {values} RETURNING id",
                    db,
                ),
                params,
            ).fetchall()
            after_commit.outbox_ids += [r[0] for r in rows]
        if first is None:
            # Queued all the same (None would read as "a unique job was already
            # pending"): the uuid stands in until the relay hands it over.
            return [p.uuid for p in jobs]
        return list(range(first, first + len(jobs)))

    def _take_ids(self, n: int) -> int | None:
        """The first of ``n`` job ids from the store, or None if it is unreachable."""
        if self.in_outage():
            return None
        try:
            return self.store.take_ids(n)
        except self.store.connection_errors as exc:
            self.outage_seen()
            log.warning(
                "%s is unreachable (%s): %d job(s) dispatched in this transaction are kept in "
                "queue_outbox and pushed once %s is back",
                self.store.store_name,
                first_line(exc, with_type=False),
                n,
                self.store.store_name,
            )
            return None

    def _after_commit(self, db: peewee.Database) -> AfterCommit:
        """This transaction's commit callback for this hand-off, registered on first use."""
        for fn in tdb.commit_callbacks(db):
            if isinstance(fn, AfterCommit) and fn.handoff is self:
                return fn
        callback = AfterCommit(self, db)
        db.after_commit(callback)
        return callback

    # -- handing over ----------------------------------------------------------------------

    def hand_off(self, outbox_ids: list[int] | None) -> int:
        """Claim outbox rows (these ids, or the oldest batch), push them, and
        commit their deletion; returns how many rows were claimed."""
        if database.is_closed():
            open_connection()
        with tdb.write_transaction():
            params: tuple[Any, ...]
            if outbox_ids is None:
                sql = _CLAIM_OLDEST_PG if tdb.is_postgres() else _CLAIM_OLDEST_SQLITE
                params = (HANDOFF_BATCH,)
            elif tdb.is_postgres():
                sql, params = _CLAIM_IDS_PG, (list(outbox_ids),)
            else:
                marks = ",".join("?" * len(outbox_ids))
                sql = f"DELETE FROM queue_outbox WHERE id IN ({marks}) RETURNING {_OUTBOX_COLUMNS}"
                params = tuple(outbox_ids)
            rows = sorted(database.execute_sql(sql, params).fetchall())
            if not rows:
                return 0
            now = dt.datetime.now(dt.UTC)
            jobs = []
            for _, uuid, _, queue, payload, priority, available_at, unique_key, unique_for in rows:
                due = parse_timestamp(available_at) or now
                delay = (due - now).total_seconds()
                jobs.append(
                    PendingJob(queue, uuid, payload, priority, max(delay, 0.0), unique_key, unique_for)
                )
            self.store.push_handed(jobs, [r[2] for r in rows])
        # The deletions are committed: those uuids can never be pushed again.
        self.store.forget_handed([r[1] for r in rows])
        return len(rows)

    def relay(self) -> int:
        """Push what is left in queue_outbox (jobs whose transaction committed
        while the store was unreachable, or whose process died before handing
        them over), oldest first; returns how many rows were handed over."""
        if database.is_closed():
            open_connection()
        # A read first, so that an empty outbox costs no write lock (SQLite).
        if not database.execute_sql("SELECT 1 FROM queue_outbox LIMIT 1").fetchall():
            return 0
        total = 0
        for _ in range(RELAY_BATCHES):
            n = self.hand_off(None)
            total += n
            if n < HANDOFF_BATCH:
                break
        if total:
            log.info("relayed %d job(s) from queue_outbox to %s", total, self.store.store_name)
        return total

    def relay_or_wait(self) -> int:
        """:meth:`relay`, for the monitor: a database outage is logged once and
        waited out (the store's own errors propagate)."""
        try:
            n = self.relay()
        except OUTAGE_ERRORS as exc:
            if not self._relay_failing:
                log.warning(
                    "could not relay queue_outbox to %s: %s",
                    self.store.store_name,
                    first_line(exc, with_type=False),
                )
            self._relay_failing = True
            discard_connection()
            return 0
        self._relay_failing = False
        return n


class AfterCommit:
    """The outbox rows written in one database transaction, handed over
    after it commits (a peewee commit callback, dropped on rollback)."""

    def __init__(self, handoff: Handoff, db: peewee.Database) -> None:
        self.handoff = handoff
        self.db = db
        self.outbox_ids: list[int] = []

    def __call__(self) -> None:
        ids, self.outbox_ids = self.outbox_ids, []
        if not ids:
            return
        handoff, store = self.handoff, self.handoff.store
        if self.db.transaction_depth() > 0 or handoff.in_outage():
            # A commit() inside an atomic block (the next transaction has not
            # begun, so there is none to claim in), or the store was just
            # found down: the relay sends them.
            return
        try:
            for start in range(0, len(ids), HANDOFF_BATCH):
                handoff.hand_off(ids[start : start + HANDOFF_BATCH])
        except store.store_errors as exc:
            outage = isinstance(exc, store.connection_errors)
            if outage:
                handoff.outage_seen()
            log.warning(
                "%s %s (%s): %d job(s) of the committed transaction wait in queue_outbox; "
                "a worker pushes them once %s takes them",
                store.store_name,
                "is unreachable" if outage else "refused the push",
                first_line(exc, with_type=False),
                len(ids),
                store.store_name,
            )
        except OUTAGE_ERRORS as exc:
            log.warning(
                "could not hand %d job(s) from queue_outbox to %s (%s); a worker will",
                len(ids),
                store.store_name,
                first_line(exc, with_type=False),
            )

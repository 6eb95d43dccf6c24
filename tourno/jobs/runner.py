"""The runner every periodic scan shares (``reference/domain.md`` §8).

1. Write a ``job_runs`` row, finished with the counts at the end.
2. On PostgreSQL, take the scan's lease (a ``queue_signals`` row, see
   :func:`scan_lease`): only one instance of each scan runs; another one
   records a skipped run.
3. Loop over batches: scan ids with no locks (keyset pages over the job's
   partial index), then give each item its own short transaction that takes
   the row again with the same guard (``FOR UPDATE SKIP LOCKED``: a row that
   an API call or another worker holds is skipped, never waited for) and
   applies the domain service.
4. An item whose service raises is logged with its id and counted as failed;
   its transaction rolls back and the row stays for a human or the next tick.
5. Stop at a short page or when the time budget is spent.

A crash loses nothing: uncommitted items are simply due again at the next
tick, and committed ones no longer match the guard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import peewee

from tourno import db as tdb
from tourno.db import CONNECTION_LOST_ERRORS, database, utcnow, write_transaction
from tourno.errors import first_line
from tourno.queue import JobTimeout, leases
from tourno.scheduler.models import RETENTION_DAYS, JobRun

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunCounts:
    """What one run did; written to its ``job_runs`` row."""

    seen: int = 0
    changed: int = 0
    failed: int = 0
    skipped: bool = False
    error: str | None = None
    run_id: int | None = None


@contextlib.contextmanager
def recorded_run(job_name: str) -> Iterator[RunCounts]:
    """A ``job_runs`` row around the body: created at the start (so a run that
    dies shows as unfinished), completed with the counts, the duration and the
    error that ended the run, if any."""
    tdb.open_connection()
    started = time.monotonic()
    counts = RunCounts()
    row = JobRun.create(
        job=job_name, started_at=utcnow(), host=socket.gethostname(), pid=os.getpid(), skipped=False
    )
    counts.run_id = row.id
    try:
        yield counts
    except BaseException as exc:
        counts.error = first_line(exc)[:2000]
        raise
    finally:
        try:
            if database.in_transaction():
                # Left by an interrupted item (e.g. a timeout): do not record inside it.
                database.rollback()
            JobRun.update(
                finished_at=utcnow(),
                seen=counts.seen,
                changed=counts.changed,
                failed=counts.failed,
                skipped=counts.skipped,
                error=counts.error,
                duration_ms=int((time.monotonic() - started) * 1000),
            ).where(JobRun.id == row.id).execute()
            # Retention: a range on the (job, started_at) index.
            cutoff = row.started_at - dt.timedelta(days=RETENTION_DAYS)
            JobRun.delete().where(JobRun.job == job_name, JobRun.started_at < cutoff).execute()
        except peewee.PeeweeException as exc:
            log.warning("%s: could not record run #%s: %s", job_name, row.id, first_line(exc))


#: Seconds a scan's lease outlives its time budget: a holder that died
#: (killed, or cut off) stands in the next instance's way no longer than that.
LEASE_MARGIN = 60.0


def lease_name(job_name: str) -> str:
    return f"scan:{job_name}"


@contextlib.contextmanager
def scan_lease(job_name: str, seconds: float) -> Iterator[bool]:
    """Whether this process may run ``job_name`` now. PostgreSQL: the scan's
    lease (:mod:`tourno.queue.leases`) of ``seconds``, ended with the run. SQLite has no second
    writer; its IMMEDIATE write transactions serialize the items anyway."""
    if not tdb.is_postgres():
        yield True
        return
    with leases.lease(lease_name(job_name), seconds) as taken:
        yield taken


def skip_locked() -> str:
    """The row-lock clause of a claim: PostgreSQL locks without waiting;
    SQLite's IMMEDIATE transaction already excludes every other writer."""
    return "FOR UPDATE SKIP LOCKED" if tdb.is_postgres() else ""


def _connection_lost() -> bool:
    try:
        conn = database.connection()
    except peewee.PeeweeException:
        return True
    if tdb.is_postgres():
        return bool(getattr(conn, "closed", False))
    return False


class ScanRunner:
    """Mixed into a periodic :class:`~tourno.queue.Job`: ``handle()`` runs the
    scan. A subclass defines :meth:`scan`, :meth:`claim` and :meth:`apply`."""

    #: Items per scan page.
    batch_size: ClassVar[int] = 200
    #: Stop taking new items after this many seconds (below the job's timeout).
    budget_seconds: ClassVar[float] = 240.0

    def scan(self, after: tuple | None, limit: int, now: dt.datetime) -> list[tuple]:
        """Up to ``limit`` due items after the keyset position ``after``, in
        order, as (sort key..., id) tuples; no locks taken."""
        raise NotImplementedError

    def claim(self, item_id: Any, now: dt.datetime) -> bool:
        """Inside the item's transaction: take the row again with the scan's
        guard (skipping it if another transaction holds it); False to skip."""
        raise NotImplementedError

    def apply(self, item_id: Any, now: dt.datetime) -> bool:
        """Inside the item's transaction, after a successful claim: call the
        domain service. Returns whether anything changed."""
        raise NotImplementedError

    def handle(self) -> None:
        self.run()

    def run(self, *, now: dt.datetime | None = None, budget_seconds: float | None = None) -> RunCounts:
        """One run. ``now`` pins the clock (tests); otherwise each page reads it afresh."""
        name = type(self).job_name  # type: ignore[attr-defined]
        budget = self.budget_seconds if budget_seconds is None else budget_seconds
        with recorded_run(name) as counts, scan_lease(name, budget + LEASE_MARGIN) as acquired:
            if not acquired:
                counts.skipped = True
                log.info("%s: another instance is running; skipped", name)
                return counts
            self._loop(name, counts, now, time.monotonic() + budget)
        log.info(
            "%s: run #%s saw %d, changed %d, failed %d",
            name,
            counts.run_id,
            counts.seen,
            counts.changed,
            counts.failed,
        )
        return counts

    def _loop(self, name: str, counts: RunCounts, now: dt.datetime | None, deadline: float) -> None:
        after: tuple | None = None
        while True:
            at = now or utcnow()
            rows = self.scan(after, self.batch_size, at)
            for row in rows:
                item_id = row[-1]
                counts.seen += 1
                try:
                    with write_transaction():
                        changed = self.claim(item_id, at) and self.apply(item_id, at)
                    # Counted once committed: a failed COMMIT is a failed item.
                    counts.changed += bool(changed)
                except JobTimeout:
                    raise  # the whole run is out of time, not this item
                except Exception as exc:  # noqa: BLE001 - one bad row never stops the scan
                    if isinstance(exc, CONNECTION_LOST_ERRORS) or _connection_lost():
                        raise
                    counts.failed += 1
                    log.exception("%s: item %s failed: %s", name, item_id, first_line(exc))
                if time.monotonic() >= deadline:
                    log.warning("%s: time budget spent after %d items; the rest waits", name, counts.seen)
                    return
            if len(rows) < self.batch_size:
                return
            after = tuple(rows[-1])

"""The dispatch loop of ``tourno schedule``.

Each task's slots are the times its cron expression fires (:mod:`.cron`).
Dispatching a slot inserts ``schedule_runs(task, slot)`` and, only if that row
went in, dispatches the job in the same transaction; the unique (task, slot)
index lets exactly one of any number of schedulers in. After downtime only
the latest missed slot is dispatched, never a backlog (each tick looks at the
latest slot alone), and none for a task with ``cron_catch_up = False``.

The loop is ticked by the ``schedule`` library (every second by default); a
tick costs nothing until the next slot of some task has come, or a slot is
still owed after a database error.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import peewee
import schedule

from tourno.db import (
    OUTAGE_ERRORS,
    database,
    discard_connection,
    open_connection,
    sql,
    utcnow,
    write_transaction,
)
from tourno.errors import first_line
from tourno.scheduler.models import RETENTION_DAYS, ScheduleRun
from tourno.scheduler.tasks import Task
from tourno.signals import Handler, Waker, installed

log = logging.getLogger(__name__)

#: Longest wait between two reconnection attempts.
MAX_BACKOFF = 30.0
#: A task with ``cron_catch_up = False`` dispatches a slot only when a
#: scheduler sees it this soon after it came due; later, it was missed.
ON_TIME = dt.timedelta(seconds=60)


def on_time(task: Task, slot: dt.datetime, now: dt.datetime) -> bool:
    """Whether ``slot`` may still be dispatched at ``now``: always for a task
    that catches up, within :data:`ON_TIME` of the slot for one that does not."""
    return task.catch_up or now - slot <= ON_TIME


def _hm(slot: dt.datetime) -> str:
    return slot.strftime("%Y-%m-%d %H:%M")


# -- dispatch --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Dispatched:
    task: str
    slot: dt.datetime | None
    #: The queue's id for the job; None when an identical unique job was still pending.
    job_id: Any
    job_uuid: str | None


def _push(task: Task) -> tuple[Any, str]:
    from tourno.queue import backends

    pending = task.make_job().pending()
    return backends.current().push([pending])[0], pending.uuid


# Only one scheduler's row goes in; the others' statement does nothing (on
# PostgreSQL the second waits for the first to commit, then sees the conflict).
_INSERT_RUN = (
    "INSERT INTO schedule_runs (task, slot, dispatched_at, host) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (task, slot) DO NOTHING"
)


def dispatch_slot(
    task: Task, slot: dt.datetime, *, host: str | None = None, now: dt.datetime | None = None
) -> Dispatched | None:
    """Dispatch ``task`` for ``slot`` unless some scheduler already has.
    Returns what was dispatched, or None when the slot was taken. The
    ``schedule_runs`` row and the job commit together or not at all."""
    now = now or utcnow()
    params = [task.name, ScheduleRun.slot.db_value(slot), ScheduleRun.dispatched_at.db_value(now)]
    params.append(host or socket.gethostname())
    # SQLite: write_transaction() takes the write lock at BEGIN, so two
    # schedulers queue up instead of one failing at COMMIT.
    with write_transaction():
        if database.execute_sql(sql(_INSERT_RUN), params).rowcount != 1:
            return None
        job_id, pushed_uuid = _push(task)
        uuid: str | None = pushed_uuid
        if job_id is None:
            uuid = None  # an identical unique job was still pending: nothing new was queued
        elif not isinstance(job_id, int):
            job_id = None  # queued for Redis while it was unreachable: the uuid identifies it
        ScheduleRun.update(job_id=job_id, job_uuid=uuid).where(
            ScheduleRun.task == task.name, ScheduleRun.slot == slot
        ).execute()
        # Retention, by the winner of the slot only: a range on the (task, slot) index.
        ScheduleRun.delete().where(
            ScheduleRun.task == task.name, ScheduleRun.slot < slot - dt.timedelta(days=RETENTION_DAYS)
        ).execute()
    return Dispatched(task.name, slot, job_id, uuid)


def dispatch_now(task: Task) -> Dispatched:
    """Dispatch ``task`` at once, outside the slots (``tourno schedule run``)."""
    job_id, uuid = _push(task)
    return Dispatched(task.name, None, job_id, uuid if job_id is not None else None)


# -- the loop ----------------------------------------------------------------------------------


class Scheduler:
    """Ticks every ``tick_seconds``; each tick dispatches the tasks whose
    latest slot this scheduler has not handled yet. A database error keeps
    the slot owed: one line in the log, and the next tick tries it again (an
    outage is waited out with backoff first); the unique (task, slot) row
    keeps that once per slot. Any other error in one task is logged and
    counted, the slot let go, and never stops the others or the loop.
    SIGTERM / SIGINT stop the loop between ticks (exit code 0)."""

    def __init__(
        self,
        tasks: list[Task],
        *,
        tick_seconds: float = 1.0,
        clock: Callable[[], dt.datetime] = utcnow,
        host: str | None = None,
        on_ready: Callable[[], object] | None = None,
        on_stopping: Callable[[], object] | None = None,
    ) -> None:
        if not tasks:
            raise ValueError("no tasks to schedule")
        self.tasks = list(tasks)
        self.tick_seconds = tick_seconds
        self.clock = clock
        self.host = host or socket.gethostname()
        self.on_ready = on_ready
        self.on_stopping = on_stopping
        #: Task name -> the last slot this scheduler handled (dispatched, found
        #: taken, let go after a non-database error, or missed without catch-up).
        self.handled: dict[str, dt.datetime] = {}
        #: Task name -> the slot it still owes after a database error.
        self.owed: dict[str, dt.datetime] = {}
        #: Task name -> its first slot after the last look: nothing to do before it.
        self._next_look: dict[str, dt.datetime | None] = {}
        self.dispatched = 0
        self.errors = 0
        self.ticks = 0
        self._stopping = False
        self.stop_reason: str | None = None
        # A signal handler only sets a flag and wakes the loop's wait.
        self._waker = Waker()

    # -- one tick ----------------------------------------------------------------------

    def _due(self, task: Task, now: dt.datetime) -> dt.datetime | None:
        """The slot ``task`` should dispatch now, if any; cron maths only when
        the next slot has come (or at the first look)."""
        name = task.name
        if name in self._next_look:
            upcoming = self._next_look[name]
            if upcoming is None or now < upcoming:
                return self.owed.get(name)
        self._next_look[name] = task.cron.next_after(now)
        latest = task.cron.latest(now)
        known = [s for s in (self.handled.get(name), self.owed.get(name)) if s is not None]
        if latest is None or any(latest <= s for s in known):
            return self.owed.get(name)
        if on_time(task, latest, now):
            self.owed[name] = latest  # supersedes an older slot still owed: no backlog
        else:
            log.info("%s: slot %s was missed; not caught up (cron_catch_up = False)", name, _hm(latest))
            self.handled[name] = latest
            self.owed.pop(name, None)
        return self.owed.get(name)

    def _handled(self, task: Task, slot: dt.datetime) -> None:
        self.handled[task.name] = slot
        if self.owed.get(task.name) == slot:
            del self.owed[task.name]

    def tick(self, now: dt.datetime | None = None) -> list[Dispatched]:
        """Dispatch every task whose latest slot this scheduler has not
        handled. Outage errors propagate (the loop reconnects and the slot is
        tried again); another database error keeps the slot owed for the next
        tick; any other error is logged, counted, and the slot is let go, so a
        broken task cannot stall the rest."""
        now = now or self.clock()
        self.ticks += 1
        done: list[Dispatched] = []
        for task in self.tasks:
            slot = self._due(task, now)
            if slot is None:
                continue
            try:
                result = dispatch_slot(task, slot, host=self.host, now=now)
            except OUTAGE_ERRORS:
                raise
            except peewee.DatabaseError as exc:
                self.errors += 1
                log.warning(
                    "could not dispatch %s for slot %s (%s); trying again next tick",
                    task.name,
                    _hm(slot),
                    first_line(exc),
                )
                continue
            except Exception:  # noqa: BLE001 - one task's failure never stops the loop
                self.errors += 1
                log.exception("could not dispatch %s for slot %s", task.name, _hm(slot))
                self._handled(task, slot)
                continue
            self._handled(task, slot)
            if result is None:
                log.debug("%s for slot %s: already dispatched", task.name, _hm(slot))
                continue
            self.dispatched += 1
            done.append(result)
            if result.job_id is None and result.job_uuid is not None:
                log.info(
                    "dispatched %s for slot %s as %s (Redis unreachable: waiting in queue_outbox)",
                    task.name,
                    _hm(slot),
                    result.job_uuid,
                )
            elif result.job_id is None:
                log.info("%s for slot %s: the previous run is still pending", task.name, _hm(slot))
            else:
                log.info("dispatched %s for slot %s as job #%s", task.name, _hm(slot), result.job_id)
        return done

    # -- the loop ----------------------------------------------------------------------

    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to exit after the current tick (safe from signal handlers and threads)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping = True
        self._waker.wake()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _wait(self, seconds: float) -> None:
        if not self._stopping:
            self._waker.wait(seconds)

    def close(self) -> None:
        self._waker.close()

    def run(self, *, once: bool = False, install_signals: bool = True) -> int:
        """Tick until stopped (or once); returns the exit code: 0, or 1 when
        ``once`` and a task failed."""
        handlers: dict[signal.Signals, Handler] = {}
        if install_signals:
            handlers = {signal.SIGTERM: self._on_signal, signal.SIGINT: self._on_signal}
        try:
            with installed(handlers):
                return self._run(once)
        finally:
            self.close()

    def _run(self, once: bool) -> int:
        ticker = schedule.Scheduler()
        # schedule's hints say int, but it takes fractional seconds (the tests tick fast).
        ticker.every(self.tick_seconds).seconds.do(self._safe_tick)  # type: ignore[arg-type]
        names = ", ".join(f"{t.name} at {t.cron.describe()}" for t in self.tasks)
        log.info("scheduling %s", names)
        if once:
            self._safe_tick()
            return 1 if self.errors else 0
        # Ready before the first tick: a database outage then is waited out
        # by a running service, not by one stuck starting.
        if self.on_ready is not None:
            self.on_ready()
        self._safe_tick()  # at once: a scheduler started mid-slot dispatches that slot now
        while not self.stopping:
            ticker.run_pending()
            idle = ticker.idle_seconds
            self._wait(self.tick_seconds if idle is None else min(max(idle, 0.0), self.tick_seconds))
        if self.on_stopping is not None:
            self.on_stopping()
        log.info(
            "stopped (%s); %d dispatched, %d task errors", self.stop_reason, self.dispatched, self.errors
        )
        return 0

    def _safe_tick(self) -> None:
        """A tick that survives a database outage: reconnect with backoff and
        tick again, until the database is back or we are told to stop."""
        delay = 0.5
        while not self.stopping:
            try:
                open_connection()
                self.tick()
                return
            except OUTAGE_ERRORS as exc:
                log.warning(
                    "database unavailable (%s); retrying in %.1f s", first_line(exc, with_type=False), delay
                )
                discard_connection()
                self._wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop(signal.Signals(signum).name)

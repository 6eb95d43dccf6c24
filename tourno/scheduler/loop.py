"""Slot maths and the dispatch loop of ``tourno schedule``.

A task with frequency *f* minutes is due at every minute *m* (counted from the
Unix epoch, UTC) with ``m % f == 0``: ``*/5`` means :00, :05, :10 ... of every
hour. The slot is that minute. Dispatching a slot inserts
``schedule_runs(task, slot)`` and, only if that row went in, dispatches the
job in the same transaction; the unique (task, slot) index lets exactly one
of any number of schedulers in. After downtime only the latest due slot is
dispatched, never a backlog: each tick looks at the current slot alone.

The loop is ticked by the ``schedule`` library (every second by default);
a tick costs nothing unless a task's slot changed since the last one.
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

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: Longest wait between two reconnection attempts.
MAX_BACKOFF = 30.0


# -- slot maths (pure) ----------------------------------------------------------------------


def _minutes(now: dt.datetime) -> int:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return int((now - EPOCH).total_seconds() // 60)


def current_slot(frequency: int, now: dt.datetime) -> dt.datetime:
    """The latest slot at or before ``now`` of a task due every ``frequency`` minutes."""
    if frequency < 1:
        raise ValueError(f"frequency must be at least 1 minute, got {frequency}")
    minute = _minutes(now)
    return EPOCH + dt.timedelta(minutes=minute - minute % frequency)


def next_slot(frequency: int, now: dt.datetime) -> dt.datetime:
    """The first slot strictly after ``now``."""
    return current_slot(frequency, now) + dt.timedelta(minutes=frequency)


def next_due(frequency: int, now: dt.datetime, last_dispatched: dt.datetime | None) -> dt.datetime:
    """When the task is next dispatched: its current slot if that has not been
    dispatched yet (a scheduler will do it at its next tick), else the next slot."""
    slot = current_slot(frequency, now)
    if last_dispatched is None or last_dispatched < slot:
        return slot
    return slot + dt.timedelta(minutes=frequency)


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
    """Ticks every ``tick_seconds``; each tick dispatches the tasks whose slot
    changed since the last tick. One task's error is logged and counted and
    never stops the others or the loop; a database outage is waited out with
    backoff. SIGTERM / SIGINT stop the loop between ticks (exit code 0)."""

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
        #: taken, or gave up on after an error).
        self.handled: dict[str, dt.datetime] = {}
        self.dispatched = 0
        self.errors = 0
        self.ticks = 0
        self._stopping = False
        self.stop_reason: str | None = None
        # A signal handler only sets a flag and wakes the loop's wait.
        self._waker = Waker()

    # -- one tick ----------------------------------------------------------------------

    def tick(self, now: dt.datetime | None = None) -> list[Dispatched]:
        """Dispatch every task whose current slot this scheduler has not
        handled. Outage errors propagate (the loop reconnects and the slot is
        tried again); any other error is logged, counted, and the slot is let
        go, so a broken task cannot stall the rest."""
        now = now or self.clock()
        self.ticks += 1
        done: list[Dispatched] = []
        for task in self.tasks:
            slot = current_slot(task.frequency, now)
            if self.handled.get(task.name) == slot:
                continue
            try:
                result = dispatch_slot(task, slot, host=self.host, now=now)
            except OUTAGE_ERRORS:
                raise
            except Exception:  # noqa: BLE001 - one task's failure never stops the loop
                self.errors += 1
                log.exception("could not dispatch %s for slot %s", task.name, slot.strftime("%H:%M"))
                self.handled[task.name] = slot
                continue
            self.handled[task.name] = slot
            if result is None:
                log.debug("%s for slot %s: already dispatched", task.name, slot.strftime("%H:%M"))
                continue
            self.dispatched += 1
            done.append(result)
            if result.job_id is None and result.job_uuid is not None:
                log.info(
                    "dispatched %s for slot %s as %s (Redis unreachable: waiting in queue_outbox)",
                    task.name,
                    slot.strftime("%H:%M"),
                    result.job_uuid,
                )
            elif result.job_id is None:
                log.info(
                    "%s for slot %s: the previous run is still pending", task.name, slot.strftime("%H:%M")
                )
            else:
                log.info(
                    "dispatched %s for slot %s as job #%s", task.name, slot.strftime("%H:%M"), result.job_id
                )
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
        names = ", ".join(f"{t.name} every {t.frequency} min" for t in self.tasks)
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

"""What ``tourno schedule list`` (and the admin pages) show about each task:
data only, rendered by the caller (like :mod:`tourno.queue.status`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from tourno.db import utcnow
from tourno.scheduler.loop import on_time
from tourno.scheduler.models import JobRun, ScheduleRun
from tourno.scheduler.tasks import Task


@dataclasses.dataclass(frozen=True)
class LastRun:
    """The newest ``job_runs`` row of a task's job."""

    started_at: dt.datetime
    finished_at: dt.datetime | None
    duration_ms: int | None
    seen: int
    changed: int
    failed: int
    skipped: bool
    error: str | None


@dataclasses.dataclass(frozen=True)
class TaskStatus:
    task: str
    cron: str
    timezone: str
    catch_up: bool
    #: N for a plain every-N-minutes expression, else None (for displays in minutes).
    frequency_minutes: int | None
    #: The first slot after now: never in the past.
    next_slot: dt.datetime | None
    #: What a scheduler dispatches next: a slot already due but not yet
    #: dispatched (one starting now would dispatch it at once), else next_slot.
    next_due: dt.datetime | None
    last_dispatched_slot: dt.datetime | None
    last_run: LastRun | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def last_dispatches() -> dict[str, dt.datetime]:
    """When each task was last dispatched, by any scheduler (for ``/metrics``:
    a scheduler that stopped shows as a time that no longer moves)."""
    from peewee import fn

    from tourno.db import parse_timestamp, tuples

    query = ScheduleRun.select(ScheduleRun.task, fn.MAX(ScheduleRun.dispatched_at)).group_by(ScheduleRun.task)
    return {task: parse_timestamp(at) for task, at in tuples(query)}


def snapshot(tasks: list[Task], now: dt.datetime | None = None) -> list[TaskStatus]:
    """Each task's expression, next slot, last dispatched slot and last run:
    two lookups per task, on the (task, slot) and (job, started_at) indexes."""
    now = now or utcnow()
    out = []
    for task in tasks:
        last = (
            ScheduleRun.select(ScheduleRun.slot)
            .where(ScheduleRun.task == task.name)
            .order_by(ScheduleRun.slot.desc())
            .first()
        )
        slot = last.slot if last else None
        run = (
            JobRun.select()
            .where(JobRun.job == task.name)
            .order_by(JobRun.started_at.desc(), JobRun.id.desc())
            .first()
        )
        next_slot = task.cron.next_after(now)
        latest = task.cron.latest(now)
        owed = latest is not None and (slot is None or slot < latest) and on_time(task, latest, now)
        out.append(
            TaskStatus(
                task=task.name,
                cron=task.cron.expression,
                timezone=task.cron.timezone,
                catch_up=task.catch_up,
                frequency_minutes=task.frequency,
                next_slot=next_slot,
                next_due=latest if owed else next_slot,
                last_dispatched_slot=slot,
                last_run=None
                if run is None
                else LastRun(
                    started_at=run.started_at,
                    finished_at=run.finished_at,
                    duration_ms=run.duration_ms,
                    seen=run.seen,
                    changed=run.changed,
                    failed=run.failed,
                    skipped=run.skipped,
                    error=run.error,
                ),
            )
        )
    return out

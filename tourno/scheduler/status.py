"""What ``tourno schedule list`` (and the admin pages) show about each task:
data only, rendered by the caller (like :mod:`tourno.queue.status`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from tourno.db import utcnow
from tourno.scheduler.loop import next_due
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
    frequency_minutes: int
    next_due: dt.datetime
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
    """Each task's frequency, next due slot, last dispatched slot and last run:
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
        out.append(
            TaskStatus(
                task=task.name,
                frequency_minutes=task.frequency,
                next_due=next_due(task.frequency, now, slot),
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

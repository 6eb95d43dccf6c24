"""``tourno schedule``: run the scheduler, list its tasks, dispatch one now."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from tourno.cli import AppContext, fail

if TYPE_CHECKING:
    from tourno.scheduler.tasks import Task


def _tasks(app: AppContext) -> list[Task]:
    import tourno.jobs  # noqa: F401 - registers the periodic jobs the task table names
    from tourno.config import ConfigError
    from tourno.scheduler.tasks import task_table

    try:
        return task_table(app.settings)
    except ConfigError as exc:
        fail(str(exc), code=2)


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") if value else "-"


@click.group("schedule", invoke_without_command=True)
@click.option("--once", is_flag=True, help="Dispatch the tasks due in the current slot, then exit.")
@click.option(
    "--tick",
    type=click.FloatRange(min=0.1, max=60),
    default=1.0,
    show_default=True,
    help="Seconds between two looks at the clock.",
)
@click.pass_context
def schedule_group(ctx: click.Context, once: bool, tick: float) -> None:
    """Dispatch the periodic jobs on wall-clock slots (run one per server).

    AutoStartTournamentsJob and CheckFullTournamentsJob every 5 minutes,
    CheckMatchDeadlinesJob and SendMatchDeadlineWarningsJob every 15,
    SendBulkEmailsJob every minute (TOURNO_SCHEDULE_FREQUENCIES overrides).
    Each (task, slot) is dispatched exactly once however many schedulers run;
    workers run the jobs. SIGTERM or SIGINT stops it (exit 0).
    """
    if ctx.invoked_subcommand is not None:
        return
    from tourno import systemd
    from tourno.scheduler.loop import Scheduler

    app: AppContext = ctx.obj
    tasks = _tasks(app)
    app.setup()
    scheduler = Scheduler(
        tasks,
        tick_seconds=tick,
        on_ready=lambda: systemd.ready(f"scheduling {len(tasks)} tasks"),
        on_stopping=lambda: systemd.stopping(f"stopping ({scheduler.stop_reason or 'shutting down'})"),
    )
    raise SystemExit(scheduler.run(once=once))


@schedule_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per task, for scripts.")
@click.pass_obj
def list_command(app: AppContext, as_json: bool) -> None:
    """Each task: frequency, next due slot, last dispatched slot, last run's outcome."""
    from tourno.scheduler.status import snapshot

    tasks = _tasks(app)
    app.setup()
    rows = [status.as_dict() for status in snapshot(tasks)]
    if as_json:

        def encode(value: Any) -> str:
            return value.isoformat() if isinstance(value, dt.datetime) else str(value)

        for row in rows:
            click.echo(json.dumps(row, default=encode))
        return
    table = Table(
        "Task",
        "Every",
        "Next due (UTC)",
        "Last slot (UTC)",
        "Last run (UTC)",
        "Took",
        "Seen/changed/failed",
        "Error",
        title="Scheduled tasks",
    )
    for row in rows:
        run = row["last_run"]
        if run is None:
            last, took, counts, error = "-", "-", "-", ""
        else:
            last = _when(run["started_at"])
            if run["finished_at"] is None:
                took = "running"
            else:
                took = f"{run['duration_ms'] / 1000:.1f}s" if run["duration_ms"] is not None else "-"
            counts = "skipped" if run["skipped"] else f"{run['seen']}/{run['changed']}/{run['failed']}"
            error = (run["error"] or "").splitlines()[0] if run["error"] else ""
        table.add_row(
            row["task"],
            f"{row['frequency_minutes']} min",
            _when(row["next_due"]),
            _when(row["last_dispatched_slot"]),
            last,
            took,
            counts,
            error,
        )
    app.console.print(table)


@schedule_group.command("run")
@click.argument("task_name", metavar="TASK")
@click.pass_obj
def run_command(app: AppContext, task_name: str) -> None:
    """Dispatch TASK now, outside its slots (a worker runs it).

    TASK is one of AutoStartTournamentsJob, CheckFullTournamentsJob,
    CheckMatchDeadlinesJob, SendMatchDeadlineWarningsJob, SendBulkEmailsJob.
    """
    from tourno.scheduler.loop import dispatch_now
    from tourno.scheduler.tasks import find_task

    tasks = _tasks(app)
    try:
        task = find_task(task_name, tasks)
    except KeyError as exc:
        fail(exc.args[0], code=2)
    app.setup()
    result = dispatch_now(task)
    if result.job_id is None:
        click.echo(f"{task.name} is already pending; not dispatched again")
    else:
        click.echo(f"dispatched {task.name} as job #{result.job_id}")

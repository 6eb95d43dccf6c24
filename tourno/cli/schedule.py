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
    """The task table, after importing every module that may declare a task
    (tourno.jobs and TOURNO_IMPORTS); a bad expression stops here, exit 2."""
    import tourno.jobs  # noqa: F401 - registers the built-in periodic jobs
    from tourno.config import ConfigError
    from tourno.scheduler.tasks import task_table

    settings = app.settings
    try:
        tourno.import_modules(settings.imports, source="TOURNO_IMPORTS")
        return task_table(settings)
    except ConfigError as exc:
        fail(str(exc), code=2)


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") if value else "-"


@click.group("schedule", invoke_without_command=True)
@click.option(
    "--once", is_flag=True, help="Dispatch the tasks whose latest slot is not dispatched yet, then exit."
)
@click.option(
    "--tick",
    type=click.FloatRange(min=0.1, max=60),
    default=1.0,
    show_default=True,
    help="Seconds between two looks at the clock.",
)
@click.pass_context
def schedule_group(ctx: click.Context, once: bool, tick: float) -> None:
    """Dispatch the jobs that declare a cron expression (run one per server).

    Every imported job class with a `cron` is a task: AutoStartTournamentsJob
    and CheckFullTournamentsJob every 5 minutes, CheckMatchDeadlinesJob and
    SendMatchDeadlineWarningsJob every 15, SendBulkEmailsJob every minute,
    and any class of yours (TOURNO_IMPORTS). TOURNO_SCHEDULE overrides an
    expression: "Task=*/2 * * * *;Task=...". Each (task, slot) is dispatched
    exactly once however many schedulers run; after downtime only the latest
    missed slot. Workers run the jobs. SIGTERM or SIGINT stops it (exit 0).
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
    """Each task: cron expression, timezone, next slot, last dispatched slot, last run's outcome."""
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
        "Cron",
        "Timezone",
        "Next slot (UTC)",
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
            row["cron"] if row["catch_up"] else f"{row['cron']} (no catch-up)",
            row["timezone"],
            _when(row["next_slot"]),
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

    TASK is a name from `tourno schedule list`: AutoStartTournamentsJob,
    CheckFullTournamentsJob, CheckMatchDeadlinesJob,
    SendMatchDeadlineWarningsJob, SendBulkEmailsJob, or a job of yours with a cron.
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

"""``tourno work``: run a queue worker."""

from __future__ import annotations

import math
from typing import Any

import click

from tourno.cli import AppContext, fail
from tourno.queue.job import MAX_SECONDS


def _seconds_ok(value: float) -> bool:
    # float() takes "nan" and "inf": NaN compares false with everything, so
    # range checks alone let it through to crash the worker later.
    return math.isfinite(value) and 0 <= value <= MAX_SECONDS


class Seconds(click.ParamType):
    """A finite number of seconds from 0 to MAX_SECONDS (about three years)."""

    name = "number"

    def __init__(self, unit: str = "seconds", limit: float = MAX_SECONDS) -> None:
        self.unit = unit
        self.limit = limit

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of {self.unit}", param, ctx)
        if not (math.isfinite(number) and 0 <= number <= self.limit):
            self.fail(f"{value!r}: give {self.unit} from 0 to {self.limit:g}", param, ctx)
        return number


class SecondsList(click.ParamType):
    """``10`` or ``10,60,300``: seconds, one per attempt."""

    name = "seconds[,seconds...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[float]:
        if isinstance(value, list):
            return value
        try:
            parts = [float(p) for p in str(value).split(",") if p.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a number of seconds or a comma list of them", param, ctx)
        if not parts or not all(_seconds_ok(p) for p in parts):
            self.fail(f"{value!r}: give seconds from 0 to {MAX_SECONDS:g} like 10 or 10,60,300", param, ctx)
        return parts


class NameList(click.ParamType):
    name = "name[,name...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[str]:
        if isinstance(value, list):
            return value
        names = [p.strip() for p in str(value).split(",")]
        if not names or any(not n for n in names):
            self.fail(f"{value!r}: give queue names separated by commas, like high,default", param, ctx)
        return names


#: --memory in MB: a terabyte is plenty, and keeps the number finite.
MAX_MEGABYTES = 1e6
SECONDS = Seconds()


@click.command("work")
@click.argument("connection", required=False, type=click.Choice(["database", "redis"]))
@click.option(
    "--queue",
    "queues",
    type=NameList(),
    default="default",
    show_default=True,
    help="Queues to work, in strict priority order: high,default.",
)
@click.option(
    "--sleep",
    type=SECONDS,
    default=3.0,
    show_default=True,
    help="Seconds to wait for a job when none is ready (PostgreSQL wakes sooner on NOTIFY).",
)
@click.option(
    "--tries",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Attempts before a job fails, unless the job sets its own (0: unlimited).",
)
@click.option(
    "--backoff",
    type=SecondsList(),
    default="0",
    show_default=True,
    help="Seconds before retrying a job that raised; a list gives one per attempt.",
)
@click.option(
    "--timeout",
    type=SECONDS,
    default=60.0,
    show_default=True,
    help="Seconds a job may run, unless it sets its own (0: no limit).",
)
@click.option(
    "--max-time",
    type=SECONDS,
    default=0.0,
    show_default=True,
    help="Exit after this many seconds, between jobs (0: never).",
)
@click.option(
    "--max-jobs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Exit after processing this many jobs (0: never).",
)
@click.option(
    "--memory",
    type=Seconds("megabytes", MAX_MEGABYTES),
    default=128.0,
    show_default=True,
    help="Exit with code 12 once resident memory reaches this many MB (0: no limit).",
)
@click.option("--rest", type=SECONDS, default=0.0, show_default=True, help="Seconds to rest after each job.")
@click.option("--stop-when-empty", is_flag=True, help="Exit once no job is ready.")
@click.option("--once", is_flag=True, help="Process at most one job, then exit.")
@click.option("--name", default="default", show_default=True, help="Worker name shown in status and logs.")
@click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE to register its jobs (repeatable; also TOURNO_IMPORTS).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1, max=1000),
    default=50,
    show_default=True,
    help="At most this many jobs claimed per round trip (fewer when jobs are slow).",
)
@click.option("-v", "--verbose", count=True, help="Log every job (debug level).")
@click.pass_obj
def work_command(
    app: AppContext, connection: str | None, imports: tuple[str, ...], verbose: int, **options: Any
) -> None:
    """Process jobs from the queue until a stop condition.

    SIGTERM, SIGINT or SIGQUIT finish the current job and exit 0; a second
    signal abandons it and exits at once. `tourno queue restart` makes every
    worker exit after its current job. --memory exits with code 12.
    """
    from tourno import systemd
    from tourno.queue import backends
    from tourno.queue.options import WorkerOptions
    from tourno.queue.worker import Worker

    app.verbose += verbose
    if connection and connection != app.settings.queue_connection:
        app.override_settings(queue_connection=connection)
    settings = app.setup(imports=tuple(imports))
    # The click options carry WorkerOptions' field names.
    worker_options = WorkerOptions(
        **options,
        heartbeat_interval=settings.heartbeat_interval,
        stale_after=settings.worker_stale_after,
        metrics=settings.queue_metrics,
        metrics_retention_days=settings.metrics_retention_days,
    )
    # Under systemd (Type=notify) the unit becomes active once the worker is
    # registered; elsewhere NOTIFY_SOCKET is unset and these do nothing.
    queues = ",".join(worker_options.queues)
    try:
        worker = Worker(
            backends.current(),
            worker_options,
            on_ready=lambda: systemd.ready(f"processing queues {queues}"),
            on_stopping=lambda: systemd.stopping(f"stopping ({worker.stop_reason or 'shutting down'})"),
        )
    except ValueError as exc:
        fail(str(exc), code=2)
    raise SystemExit(worker.run())

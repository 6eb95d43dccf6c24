"""``tourno queue ...``: inspect and operate the queue and its failed jobs."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from tourno.cli import AppContext, age_of, confirm_or_fail, fail, format_when, new_table
from tourno.cli.work import SECONDS


@click.group("queue")
def queue_group() -> None:
    """Inspect the queue and manage failed jobs."""


# -- failed jobs ---------------------------------------------------------------------


@queue_group.command("failed")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most N (newest first).")
@click.option("--queue", default=None, help="Only this queue.")
@click.pass_obj
def failed_command(app: AppContext, as_json: bool, limit: int | None, queue: str | None) -> None:
    """List failed jobs, newest first."""
    from tourno.queue import failed

    app.setup()
    rows = failed.newest(limit=limit, queue=queue)
    if as_json:
        for rec in rows:
            click.echo(json.dumps(_failed_json(rec)))
        return
    table = new_table(
        "ID", "Connection", "Queue", "Job", "Attempts", "Failed at (UTC)", "Exception", title="Failed jobs"
    )
    n = 0
    for rec in rows:
        n += 1
        table.add_row(
            str(rec.id),
            rec.connection,
            rec.queue,
            failed.job_name(rec),
            "-" if rec.attempts is None else str(rec.attempts),
            format_when(rec.failed_at),
            failed.exception_summary(rec.exception),
        )
    if n == 0:
        app.console.print("No failed jobs.")
        return
    app.console.print(table)
    app.console.print("The whole traceback and payload of one: `tourno queue show ID`.")


def _failed_json(rec: Any, **extra: Any) -> dict[str, Any]:
    """One failed job as `queue failed --json` and `queue show --json` print
    it (``extra``, the payload, goes before the exception)."""
    from tourno.queue import failed

    return {
        "id": rec.id,
        "uuid": rec.uuid,
        "connection": rec.connection,
        "queue": rec.queue,
        "job": failed.job_name(rec),
        "attempts": rec.attempts,
        "failed_at": rec.failed_at.isoformat(),
        **extra,
        "exception": rec.exception,
    }


@queue_group.command("show", short_help="Show one failed job: payload and the whole traceback.")
@click.argument("ident", metavar="ID|UUID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_obj
def show_command(app: AppContext, ident: str, as_json: bool) -> None:
    """Show one failed job (by the ID `tourno queue failed` lists, or its
    uuid): its job, queue, connection, when it failed, its payload, and the
    whole traceback that `queue failed` cuts to one line. Exit 1 if no
    failed job matches."""
    from tourno.queue import failed

    app.setup()
    rec = failed.find(ident)
    if rec is None:
        fail(f"no failed job matches {ident} (see `tourno queue failed`)")
    try:
        payload: Any = json.loads(rec.payload)
    except (TypeError, ValueError):
        payload = None  # kept as text: it may be why the job failed
    if as_json:
        click.echo(json.dumps(_failed_json(rec, payload=payload if payload is not None else rec.payload)))
        return
    # click.echo, not rich: a traceback or payload may hold [brackets] that
    # rich would read as markup, and must not be wrapped or cut.
    for label, value in (
        ("ID", str(rec.id)),
        ("UUID", rec.uuid),
        ("Job", failed.job_name(rec)),
        ("Queue", rec.queue),
        ("Connection", rec.connection),
        (
            "Attempts",
            "unknown (filed before attempts were kept)" if rec.attempts is None else str(rec.attempts),
        ),
        ("Failed at", f"{format_when(rec.failed_at)} UTC ({age_of(rec.failed_at)} ago)"),
    ):
        click.echo(f"{label + ':':<12}{value}")
    click.echo("\nPayload:")
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False) if payload is not None else rec.payload)
    click.echo("\nException:")
    click.echo(rec.exception.rstrip())
    click.echo(f"\nRetry it with: tourno queue retry {rec.id}")


@queue_group.command("retry", short_help="Push failed jobs back onto the queue.")
@click.argument("ids", nargs=-1, required=True)
@click.option("--queue", default=None, help="With `all`: only failed jobs of this queue.")
@click.pass_obj
def retry_command(app: AppContext, ids: tuple[str, ...], queue: str | None) -> None:
    """Push failed jobs back onto the queue: `retry 12 15`, `retry all`.

    IDs are the numbers `tourno queue failed` shows, or uuids. Attempts start
    again from zero; the uuid is kept.
    """
    from rich.progress import Progress

    from tourno.queue import failed

    app.setup()
    if ids == ("all",):
        total = failed.count(queue)
        if total == 0:
            app.console.print("No failed jobs to retry.")
            return
        with Progress(console=app.console, transient=True) as progress:
            task = progress.add_task("Retrying", total=total)
            result = failed.retry_all(queue, progress=lambda n: progress.advance(task, n))
    elif "all" in ids:
        fail("`all` cannot be combined with IDs", code=2)
    else:
        if queue:
            fail("--queue only applies to `retry all`", code=2)
        result = failed.retry(ids)
    for ident in result.missing:
        app.console.print(f"[red]No failed job matches {ident}.[/red]")
    for rec_id, why in result.unretryable:
        app.console.print(f"[red]Cannot retry failed job {rec_id}: {why}[/red]")
    app.console.print(f"Pushed {len(result.retried)} failed job(s) back onto the queue.")
    if result.missing or result.unretryable:
        raise SystemExit(1)


@queue_group.command("forget")
@click.argument("ident")
@click.pass_obj
def forget_command(app: AppContext, ident: str) -> None:
    """Delete one failed job (by ID or uuid)."""
    from tourno.queue import failed

    app.setup()
    if not failed.forget(ident):
        fail(f"no failed job matches {ident}")
    app.console.print(f"Failed job {ident} deleted.")


@queue_group.command("flush")
@click.option(
    "--hours",
    type=click.FloatRange(min=0),
    default=None,
    help="Only failed jobs that failed at least this many hours ago.",
)
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def flush_command(app: AppContext, hours: float | None, force: bool) -> None:
    """Delete all failed jobs (or the older ones)."""
    from tourno.queue import failed

    app.setup()
    what = "all failed jobs" if hours is None else f"failed jobs older than {hours:g} hours"
    confirm_or_fail(f"Delete {what}?", force)
    n = failed.flush(hours)
    app.console.print(f"Deleted {n} failed job(s).")


@queue_group.command("prune-failed")
@click.option(
    "--hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="Delete failed jobs older than this.",
)
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def prune_failed_command(app: AppContext, hours: float, force: bool) -> None:
    """Delete failed jobs older than --hours (for a daily cron)."""
    from tourno.queue import failed

    app.setup()
    confirm_or_fail(f"Delete failed jobs older than {hours:g} hours?", force)
    n = failed.prune(hours)
    app.console.print(f"Pruned {n} failed job(s).")


# -- the queue itself ---------------------------------------------------------------


@queue_group.command("clear")
@click.option("--queue", default=None, help="Only this queue (default: every queue).")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def clear_command(app: AppContext, queue: str | None, force: bool) -> None:
    """Delete waiting and delayed jobs. Running jobs finish."""
    from tourno.queue import backends

    app.setup()
    confirm_or_fail(f"Delete every waiting job {'on ' + queue if queue else 'on every queue'}?", force)
    n = backends.current().clear(queue)
    app.console.print(f"Cleared {n} job(s){' from ' + queue if queue else ''}.")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


@queue_group.command("status", short_help="Queue sizes, live workers and failed jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_obj
def status_command(app: AppContext, as_json: bool) -> None:
    """Queue sizes, paused queues, live workers and the failed-job count."""
    app.setup()
    from tourno.queue.status import snapshot

    data = snapshot(app.settings)
    if as_json:
        click.echo(json.dumps(data, default=_jsonable))
        return
    queues = new_table("Queue", "Ready", "Delayed", "Reserved", "Oldest ready", "Paused", title="Queues")
    for q in data["queues"]:
        queues.add_row(
            q["queue"],
            str(q["ready"]),
            str(q["delayed"]),
            str(q["reserved"]),
            age_of(q["oldest_ready_at"]),
            "-" if q["paused_at"] is None else f"[yellow]since {format_when(q['paused_at'])}[/yellow]",
        )
    if not data["queues"]:
        queues.add_row("(empty)", "0", "0", "0", "-", "-")
    app.console.print(queues)
    if data["paused"]:
        names = ", ".join(p["queue"] for p in data["paused"])
        app.console.print(f"Paused: {names} (no worker claims from them; `tourno queue resume QUEUE`)")
    workers = new_table(
        "Worker", "Host", "PID", "Queues", "Current job", "Jobs done", "Heartbeat", title="Workers"
    )
    for w in data["workers"]:
        workers.add_row(
            f"{w['name']}#{w['id']}",
            w["hostname"],
            str(w["pid"]),
            w["queues"],
            "-" if w["current_job_id"] is None else f"#{w['current_job_id']}",
            str(w["jobs_done"]),
            age_of(w["heartbeat_at"]) + " ago",
        )
    if data["workers"]:
        app.console.print(workers)
    else:
        app.console.print("No live workers.")
    app.console.print(f"Failed jobs: {data['failed']}")
    if data.get("waiting_for_redis"):
        app.console.print(
            f"Waiting for Redis: {data['waiting_for_redis']} job(s) committed while it was unreachable "
            "(a Redis worker relays them)"
        )


queue_group.add_command(status_command, "size")


#: The longest window `queue stats` reads (the default retention is 14 days).
MAX_STATS_MINUTES = 30 * 24 * 60


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


@queue_group.command("stats", short_help="Throughput, failures and wait time per queue.")
@click.option(
    "--minutes",
    type=click.IntRange(min=1, max=MAX_STATS_MINUTES),
    default=60,
    show_default=True,
    help="The window: the last N minutes (and the current one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_obj
def stats_command(app: AppContext, minutes: int, as_json: bool) -> None:
    """Throughput, failures and wait time per queue over the last minutes.

    Read from the metrics the workers persist (queue_metrics, or Redis
    hashes on the Redis driver), so it covers every worker on every host,
    including workers that have exited. Wait is the time from when a job
    became available to when a worker started it.
    """
    from tourno.queue import backends, metrics

    app.setup()
    queues = metrics.by_queue(metrics.since(backends.current(), minutes))
    rows: list[dict[str, Any]] = []
    for name, c in queues.items():
        rows.append(
            {
                "queue": name,
                "succeeded": c.succeeded,
                "failed": c.failed,
                "released": c.released,
                "snoozed": c.snoozed,
                "cancelled": c.cancelled,
                "runs": c.runs,
                "per_minute": c.succeeded / minutes,
                "avg_runtime_seconds": c.runtime_sum / c.runs if c.runs else None,
                "max_runtime_seconds": c.runtime_max if c.runs else None,
                "avg_wait_seconds": c.wait_sum / c.runs if c.runs else None,
                "max_wait_seconds": c.wait_max if c.runs else None,
            }
        )
    if as_json:
        click.echo(json.dumps({"minutes": minutes, "queues": rows}))
        return
    if not rows:
        app.console.print(f"No jobs finished in the last {minutes} minutes.")
        return
    table = new_table(
        "Queue",
        "Succeeded",
        "Per minute",
        "Failed",
        "Released",
        "Snoozed",
        "Cancelled",
        "Avg wait",
        "Max wait",
        "Avg runtime",
        title=f"Jobs in the last {minutes} minutes",
    )
    for r in rows:
        table.add_row(
            r["queue"],
            str(r["succeeded"]),
            f"{r['per_minute']:.1f}",
            str(r["failed"]),
            str(r["released"]),
            str(r["snoozed"]),
            str(r["cancelled"]),
            _seconds(r["avg_wait_seconds"]),
            _seconds(r["max_wait_seconds"]),
            _seconds(r["avg_runtime_seconds"]),
        )
    app.console.print(table)


@queue_group.command("monitor", short_help="Exit 1 when a queue holds over --max waiting jobs.")
@click.option("--queue", "queues", default=None, help="Comma list of queues to check (default: all).")
@click.option(
    "--max",
    "maximum",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Alert when a queue holds more than this many waiting jobs.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_obj
def monitor_command(app: AppContext, queues: str | None, maximum: int, as_json: bool) -> None:
    """Exit 1 when a queue holds more than --max waiting jobs (for cron alerts)."""
    from tourno.queue import backends

    app.setup()
    stats = {s.queue: s for s in backends.current().stats()}
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else sorted(stats)
    rows: list[dict[str, Any]] = []
    for name in names:
        s = stats.get(name)
        size = (s.ready + s.delayed) if s else 0
        rows.append({"queue": name, "size": size, "max": maximum, "alert": size > maximum})
    if as_json:
        click.echo(json.dumps(rows))
    else:
        table = new_table("Queue", "Waiting", "Status", title=f"Queue sizes (max {maximum})")
        for r in rows:
            table.add_row(r["queue"], str(r["size"]), "[red]ALERT[/red]" if r["alert"] else "OK")
        app.console.print(table)
    if any(r["alert"] for r in rows):
        raise SystemExit(1)


@queue_group.command("restart", short_help="Make every worker exit after its current job.")
@click.pass_obj
def restart_command(app: AppContext) -> None:
    """Make every worker exit after its current job (supervisord/systemd start
    fresh ones on the new code)."""
    from tourno.queue import backends

    app.setup()
    when = backends.current().signal_restart()
    app.console.print(
        f"Restart signal sent at {format_when(when)} UTC; workers exit after their current job."
    )


@queue_group.command("cancel", short_help="Cancel waiting or running jobs by id or uuid.")
@click.argument("idents", nargs=-1, required=True, metavar="ID|UUID...")
@click.pass_obj
def cancel_command(app: AppContext, idents: tuple[str, ...]) -> None:
    """Cancel jobs by the id `dispatch()` returned (the worker's log shows
    it) or by uuid.

    A waiting or delayed job is deleted now. A running job is asked to stop:
    its `cancel_requested()` turns true, and when it returns or raises it is
    deleted instead of retried. Exit 1 if any ID matched no job.
    """
    from tourno.queue import control

    app.setup()
    result = control.cancel(idents, count_metrics=app.settings.queue_metrics)
    for ident in result.unknown:
        app.console.print(f"[red]No waiting or running job matches {ident}.[/red]")
    app.console.print(f"Cancelled {result.count} job(s).")
    if result.flagged:
        shown = ", ".join(f"#{job.id}" for job in result.flagged)
        app.console.print(f"Running, deleted when their attempt ends: {shown}.")
    if result.unknown:
        raise SystemExit(1)


def _queue_names(queues: tuple[str, ...]) -> list[str]:
    """QUEUE arguments, each a name or a comma list as ``--queue`` takes."""
    names = [q.strip() for arg in queues for q in arg.split(",")]
    if any(not q for q in names):
        fail("empty queue name; give names like `default` or `high,default`", code=2)
    return list(dict.fromkeys(names))


@queue_group.command("pause", short_help="Stop every worker claiming from QUEUE.")
@click.argument("queues", nargs=-1, required=True, metavar="QUEUE...")
@click.pass_obj
def pause_command(app: AppContext, queues: tuple[str, ...]) -> None:
    """Stop every worker claiming from QUEUE (e.g. `pause mail` or `pause mail,low`).

    The queue still takes dispatches; its jobs wait. Workers on every host
    stop claiming from it within about a second; running jobs finish.
    `tourno queue resume QUEUE` lets them run again.
    """
    from tourno.queue import pauses

    app.setup()
    names = _queue_names(queues)
    changed = set(pauses.pause(names))
    since = pauses.paused() if len(changed) < len(names) else {}
    for name in names:
        if name in changed:
            app.console.print(f"Paused {name}: no worker claims from it until `tourno queue resume {name}`.")
        else:
            app.console.print(
                f"{name} is already paused (since {format_when(since.get(name))} UTC); nothing to do."
            )


@queue_group.command("resume", short_help="Let workers claim from a paused QUEUE again.")
@click.argument("queues", nargs=-1, required=True, metavar="QUEUE...")
@click.pass_obj
def resume_command(app: AppContext, queues: tuple[str, ...]) -> None:
    """Let workers claim from paused QUEUE again; idle workers wake at once."""
    from tourno.queue import pauses

    app.setup()
    names = _queue_names(queues)
    changed = set(pauses.resume(names))
    for name in names:
        if name in changed:
            app.console.print(f"Resumed {name}: workers claim from it again.")
        else:
            app.console.print(f"{name} is not paused; nothing to do.")


def _not_json(constant: str) -> Any:
    # Python's json reads NaN and Infinity; no other JSON reader does.
    raise ValueError(f"{constant} is not a JSON value")


@queue_group.command("dispatch", short_help="Dispatch a registered job by name.")
@click.argument("job")
@click.option("--args", "args_json", default="{}", show_default=True, help="Job arguments as a JSON object.")
@click.option("--queue", default=None, help="Queue (default: the job's own).")
@click.option("--delay", type=SECONDS, default=0.0, help="Seconds before it may run.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True, help="Dispatch N copies.")
@click.option(
    "--import", "imports", multiple=True, metavar="MODULE", help="Import MODULE to register its jobs."
)
@click.pass_obj
def dispatch_command(
    app: AppContext,
    job: str,
    args_json: str,
    queue: str | None,
    delay: float,
    count: int,
    imports: tuple[str, ...],
) -> None:
    """Dispatch a registered job by name, e.g. `dispatch DemoJob --args '{"message": "hi"}'`."""
    from tourno.queue import InvalidPayload, dispatch_many
    from tourno.queue.job import job_class, registered

    app.setup(imports=tuple(imports))
    try:
        cls = job_class(job)
    except InvalidPayload:
        fail(f"unknown job {job!r}; registered jobs: {', '.join(sorted(registered())) or 'none'}", code=2)
    try:
        args = json.loads(args_json, parse_constant=_not_json)
        if not isinstance(args, dict):
            raise ValueError("not a JSON object")
        instance = cls(**args)
        pending = [instance.pending(delay=delay, queue=queue) for _ in range(count)]
    except (ValueError, TypeError) as exc:
        fail(f"--args do not fit {job}: {exc}", code=2)
    ids = dispatch_many(pending)
    shown = ", ".join(str(i) for i in ids[:10]) + (" ..." if len(ids) > 10 else "")
    app.console.print(f"Dispatched {count} {job} job(s): {shown}")


from tourno.cli import batches as _batches  # noqa: E402, F401 - adds the batch commands to queue_group

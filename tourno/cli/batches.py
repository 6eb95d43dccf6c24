"""``tourno queue batches | batch ID | prune-batches``: the batches of jobs
(``tourno.queue.workflows``). The commands join the ``queue`` group."""

from __future__ import annotations

import datetime as dt
import json
import sys

import click
from rich.table import Table

from tourno.cli import AppContext, fail, format_age
from tourno.cli.queue import queue_group


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _age(value: dt.datetime) -> str:
    return format_age(max((dt.datetime.now(dt.UTC) - value).total_seconds(), 0))


def _confirm(question: str, force: bool) -> None:
    if force:
        return
    if not sys.stdin.isatty():
        fail("refusing to delete without confirmation; pass --force", code=1)
    if not click.confirm(question, default=False):
        fail("cancelled", code=1)


def _state(b: object) -> str:
    from tourno.queue.workflows import Batch

    assert isinstance(b, Batch)
    if b.cancelled and b.finished:
        return "cancelled"
    if b.cancelled:
        return "cancelling"
    return "finished" if b.finished else "running"


@queue_group.command("batches")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most N (newest first).",
)
@click.pass_obj
def batches_command(app: AppContext, as_json: bool, limit: int) -> None:
    """List batches of jobs, newest first, with their progress."""
    from tourno.queue import workflows

    app.setup()
    rows = workflows.newest(limit)
    if as_json:
        for b in rows:
            click.echo(json.dumps(b.as_dict()))
        return
    if not rows:
        app.console.print("No batches.")
        return
    table = Table(
        "ID",
        "Name",
        "State",
        "Total",
        "Pending",
        "Processed",
        "Failed",
        "Progress",
        "Created",
        title="Batches",
    )
    for b in rows:
        table.add_row(
            b.id,
            b.name or "-",
            _state(b),
            str(b.total),
            str(b.pending),
            str(b.processed),
            str(b.failed),
            f"{b.progress}%",
            _age(b.created_at),
        )
    app.console.print(table)


@queue_group.command("batch")
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_obj
def batch_command(app: AppContext, batch_id: str, as_json: bool) -> None:
    """Show one batch: its counts, times, callbacks and options."""
    from tourno.queue.workflows import Batch

    app.setup()
    b = Batch.find(batch_id.strip())
    if b is None:
        fail(f"no batch {batch_id!r} (see tourno queue batches)", code=2)
    if as_json:
        click.echo(json.dumps(b.as_dict()))
        return
    info = b.as_dict()
    table = Table(show_header=False, title=f"Batch {b.id}")
    for label, value in (
        ("Name", b.name or "-"),
        ("State", _state(b)),
        ("Progress", f"{b.progress}%"),
        ("Total", str(b.total)),
        ("Pending", str(b.pending)),
        ("Processed", str(b.processed)),
        ("Failed", str(b.failed)),
        ("Allow failures", "yes" if b.allow_failures else "no"),
        ("Callbacks", ", ".join(info["callbacks"]) or "-"),
        ("Created", _when(b.created_at)),
        ("Finished", _when(b.finished_at)),
        ("Cancelled", _when(b.cancelled_at)),
    ):
        table.add_row(label, value)
    app.console.print(table)


@queue_group.command("prune-batches", short_help="Delete finished batches older than --hours (for cron).")
@click.option(
    "--hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="Delete batches that finished longer ago than this.",
)
@click.option("--force", is_flag=True, allow_from_autoenv=False, help="Do not ask for confirmation.")
@click.pass_obj
def prune_batches_command(app: AppContext, hours: float, force: bool) -> None:
    """Delete finished batches older than --hours (for a daily cron)."""
    from tourno.queue import workflows

    app.setup()
    _confirm(f"Delete batches that finished more than {hours:g} hours ago?", force)
    n = workflows.prune(hours)
    app.console.print(f"Pruned {n} batch(es).")

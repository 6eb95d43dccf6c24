"""``tourno mail ...``: the email outbox: status, a foreground drain, a test message."""

from __future__ import annotations

import json

import click

from tourno.cli import AppContext, fail, format_age, new_table


@click.group("mail")
def mail_group() -> None:
    """Inspect and send the email outbox."""


@mail_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.pass_obj
def status_command(app: AppContext, as_json: bool) -> None:
    """Show outbox rows per status, what is due and the last 24 hours."""
    from tourno.mail import store

    settings = app.setup()
    info = store.summary(settings=settings)
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
        return
    table = new_table("Status", "Emails", title="Email outbox")
    for status, n in info["counts"].items():
        table.add_row(status, str(n))
    app.console.print(table)
    app.console.print(
        f"Due now: {info['due']} (oldest waiting {format_age(info['oldest_due_seconds'])}); "
        f"sent in the last 24 h: {info['sent_last_24h']}"
        + (f" of {settings.mail_daily_cap}" if settings.mail_daily_cap else "")
        + f"; suppressed addresses: {info['suppressed_addresses']}"
    )
    app.console.print(
        f"Transport: {settings.mail_transport}; rate: {settings.mail_rate:g}/s"
        + (f" (bucket: {info['bucket_tokens']:.1f} tokens)" if info["bucket_tokens"] is not None else "")
    )


@mail_group.command("drain")
@click.option(
    "--budget",
    type=click.FloatRange(min=0, min_open=True),
    default=50.0,
    show_default=True,
    help="Stop after this many seconds.",
)
@click.option(
    "--batch", type=click.IntRange(min=1), default=50, show_default=True, help="Rows claimed at a time."
)
@click.pass_obj
def drain_command(app: AppContext, budget: float, batch: int) -> None:
    """Send due emails now, in the foreground, and print what happened.

    Paced by TOURNO_MAIL_RATE together with every other drain; stops when the
    outbox is empty or the budget is spent.
    """
    from tourno.mail.drain import DrainResult, drain

    settings = app.setup()

    with app.console.status("Sending...") as status:

        def progress(r: DrainResult) -> None:
            status.update(f"Sending... sent {r.sent}, retried {r.retried}, failed {r.failed}")

        result = drain(settings=settings, budget_seconds=budget, batch=batch, progress=progress)
    app.console.print(
        f"seen {result.seen}, sent {result.sent}, retried {result.retried}, failed {result.failed}, "
        f"dead {result.dead}, suppressed {result.suppressed}, released {result.released}, "
        f"reaped {result.reaped} (stopped: {result.stopped})"
    )


@mail_group.command("test")
@click.argument("address")
@click.pass_obj
def test_command(app: AppContext, address: str) -> None:
    """Send one test message to ADDRESS through the configured transport.

    Bypasses the outbox and the rate limit; needs no database.
    """
    from tourno import db as tdb
    from tourno.mail.message import build_message
    from tourno.mail.templates import render
    from tourno.mail.transports import MailError, from_settings

    settings = app.setup(connect=False)
    rendered = render("test", {}, app_url=settings.app_url, to_email=address)
    try:
        message = build_message(rendered=rendered, to_email=address, settings=settings, now=tdb.utcnow())
    except ValueError as exc:
        fail(str(exc), code=2)
    transport = from_settings(settings)
    try:
        message_id = transport.send(message)
    except MailError as exc:
        fail(f"the {transport.name} transport could not send: {exc}")
    finally:
        transport.close()
    click.echo(f"Sent a test message to {address} via {transport.name} (Message-ID <{message_id}>).")

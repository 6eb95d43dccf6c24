"""``tourno doctor``: check the installation and say what to fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from tourno.cli import AppContext, configure_logging, new_table

_STYLE = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}


@click.command("doctor", short_help="Check the installation and say what to fix.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts and monitoring.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on failures.")
@click.option(
    "--dir",
    "search_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to look for supervisord.conf and systemd/ (default: the working directory).",
)
@click.pass_obj
def doctor_command(app: AppContext, as_json: bool, strict: bool, search_dir: Path | None) -> None:
    """Check configuration, database, migrations, workers, scheduler, failed
    and waiting jobs, the mail outbox and the stop timeouts; exit 1 on a problem."""
    from tourno import doctor

    configure_logging("warning", app.verbose)
    env = dict(os.environ)
    if app.env_file:
        env["TOURNO_ENV_FILE"] = app.env_file
    checks = doctor.run_checks(env, search_dir=search_dir)
    status = doctor.worst(checks)
    if as_json:
        click.echo(json.dumps({"status": status, "checks": [c.as_dict() for c in checks]}))
    else:
        table = new_table("Check", "Status", "Detail", "What to do", title="Tourno doctor")
        for c in checks:
            table.add_row(c.name, _STYLE[c.status], c.detail, c.hint)
        app.console.print(table)
    if status == "fail" or (strict and status == "warn"):
        raise SystemExit(1)

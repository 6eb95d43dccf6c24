"""The ``tourno`` command. Only this package imports click and rich.

Each command or group lives in its own module and is added to :data:`main`.
Nothing touches the database until a command needs it, so ``--help`` works
anywhere.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

import tourno
from tourno.config import ConfigError, Settings, mask_password, sqlite_file
from tourno.db import DatabaseUnavailable, open_connection


class AppContext:
    """Lazily read settings and connect, once per command."""

    def __init__(self, env_file: str | None, verbose: int) -> None:
        self.env_file = env_file
        self.verbose = verbose
        self._settings: Settings | None = None
        self.console = make_console()

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = Settings.from_env(self.environ())
            except ConfigError as exc:
                fail(str(exc), code=2)
        return self._settings

    def environ(self) -> dict[str, str]:
        """The environment the settings are read from (with --env-file)."""
        env = dict(os.environ)
        if self.env_file:
            env["TOURNO_ENV_FILE"] = self.env_file
        return env

    def reload_settings(self) -> Settings:
        """Read the settings again (after the command changed the environment)."""
        self._settings = None
        return self.settings

    def override_settings(self, **changes: Any) -> Settings:
        """Replace some settings for this command only (a command-line argument
        that wins over the environment); returns the settings now in force."""
        self._settings = dataclasses.replace(self.settings, **changes)
        return self._settings

    def setup(
        self,
        *,
        connect: bool = True,
        imports: tuple[str, ...] = (),
        check_schema: bool = True,
        create_database: bool = False,
    ) -> Settings:
        """Bind the database and the queue, and (``connect``) open and check
        them. Only commands that build the schema pass ``create_database``:
        SQLite creates a missing file on connect, and a read-only command
        must not leave an empty database behind."""
        settings = self.settings
        configure_logging(settings.log_level, self.verbose, settings.log_format)
        try:
            tourno.setup(settings)
            tourno.import_modules(imports, source="--import")
        except ConfigError as exc:
            fail(str(exc), code=2)
        if connect:
            path = sqlite_file(settings.database_url)
            if path is not None and not create_database and not path.exists():
                fail(missing_database_message(path, settings.database_url))
            try:
                open_connection()
            except DatabaseUnavailable as exc:
                fail(f"cannot connect to the database {mask_password(settings.database_url)}: {exc}")
            if check_schema:
                require_schema()
            from tourno.queue import backends

            backend = backends.current()
            if backend.connection_errors:
                try:
                    backend.ping()
                except backend.connection_errors as exc:
                    fail(f"cannot connect to the queue at {mask_password(settings.redis_url)}: {exc}")
        return settings


def missing_database_message(path: Path, url: str) -> str:
    # Worded like require_schema's message: for the operator it is the same
    # situation (the schema is not there yet) with the same remedy.
    return (
        f"the database schema is not up to date: there is no SQLite database at {path.absolute()} "
        f"(TOURNO_DATABASE_URL={url}); create it with `tourno db migrate`"
    )


#: The width of output that goes to no terminal (a pipe, cron mail, `ssh -T`):
#: rich would assume 80 columns and cut table cells to fit.
UNBOUNDED_WIDTH = 10_000


def make_console() -> Console:
    """The console commands print to. On a terminal rich uses its width;
    elsewhere nothing is cut: ``COLUMNS`` when set, else no practical limit."""
    width = None
    if not sys.stdout.isatty():
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else UNBOUNDED_WIDTH
    return Console(highlight=False, width=width)


def new_table(*headers: str, title: str | None = None) -> Table:
    """A table whose cells wrap (``fold``) instead of ending in an ellipsis
    when the terminal is narrow: an id or a worker name cut to
    ``tourno-worke…`` is no use to anyone."""
    table = Table(title=title)
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def require_schema() -> None:
    from tourno import migrations
    from tourno.db import database

    waiting = migrations.pending(database.obj)
    if waiting:
        fail(
            f"the database schema is not up to date ({len(waiting)} migration(s) pending: "
            f"{', '.join(waiting)}); run `tourno db migrate`"
        )


def configure_logging(level: str, verbose: int = 0, fmt: str = "text") -> None:
    """Log to stderr, where supervisord and journald collect it: lines for
    people, or with ``fmt="json"`` one JSON object a line for log shippers
    (python-json-logger; the fields a caller passes in ``extra``, like a
    worker's job fields, become keys of their own)."""
    if verbose:
        level = "debug"
    # No format of ours (nor gunicorn's, which shows the pid) says where a
    # call was made from or by which thread: skip gathering that for every
    # record (the logging HOWTO's "Optimization" section). A worker writes a
    # line per job, so it counts.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_tourno", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler._tourno = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # peewee logs every statement at debug level: only with -vv.
    logging.getLogger("peewee").setLevel("DEBUG" if verbose >= 2 else "INFO")
    # playhouse.migrations logs "up: NAME" for each migration, which `tourno
    # db migrate` and `tourno up` already print: once is enough, except with -v.
    logging.getLogger("peewee.migrations").setLevel("DEBUG" if verbose else "WARNING")


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    # time is ISO 8601 in UTC; the record's other attributes stay out.
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def format_age(seconds: float | None) -> str:
    """``42s``, ``17m``, ``3.5h``: how long ago, for tables."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


class TournoGroup(click.Group):
    """The ``tourno`` group: click's usage errors (a bad option value, a
    missing argument) print in the same one-line ``error: ...`` style as
    :func:`fail`, with exit code 2, instead of usage text plus ``Error:``."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            # Not standalone: click raises its exceptions to us instead of
            # printing them; Exit comes back as its exit code.
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # `tourno queue` alone: the group's help, as before
            raise SystemExit(exc.exit_code) from None
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            fail(_one_line(exc.format_message()) + hint, code=exc.exit_code)
        except click.ClickException as exc:
            fail(_one_line(exc.format_message()), code=exc.exit_code)
        except click.Abort:
            fail("aborted", code=1)
        except OSError as exc:
            # A closed pipe (`tourno queue failed | head`) is no error of ours.
            if exc.errno != errno.EPIPE:
                raise
            raise SystemExit(1) from None
        raise SystemExit(rv if isinstance(rv, int) else 0)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


# No auto_envvar_prefix: it made every option settable from an undocumented
# TOURNO_<COMMAND>_<OPTION> variable that `tourno config` never showed.
@click.group(cls=TournoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    envvar="TOURNO_ENV_FILE",
    help="Read TOURNO_* settings from this file (the environment wins).",
)
@click.option("-v", "--verbose", count=True, help="Log at debug level.")
@click.version_option(tourno.__version__, prog_name="tourno")
@click.pass_context
def main(ctx: click.Context, env_file: str | None, verbose: int) -> None:
    """Tourno: tournament backend and PostgreSQL job queue.

    Settings come from TOURNO_* environment variables; see `tourno config`.
    """
    ctx.obj = AppContext(env_file, verbose)


@main.command("config", short_help="Show the settings in effect and where each comes from.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_obj
def config_command(app: AppContext, as_json: bool) -> None:
    """Show the settings in effect (passwords masked) and where each comes from.

    The source is `environment`, `env file` (TOURNO_ENV_FILE or --env-file)
    or `default`. Only these variables are read: command options are not
    settable from the environment.
    """
    from tourno.config import ENV_FILE, sources

    settings = app.settings
    env = app.environ()
    origin = sources(env)
    env_file = env.get("TOURNO_ENV_FILE")
    rows = [(name, value, origin.get(name, "default")) for name, value in settings.describe()]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "env_file": env_file or None,
                    "settings": {
                        name: {"value": value if value != "" else None, "source": source}
                        for name, value, source in rows
                    },
                }
            )
        )
        return
    table = new_table("Variable", "Value", "Source")
    for name, value, source in rows:
        table.add_row(
            name,
            value if value != "" else "[dim](not set)[/dim]",
            f"{source} ({env_file})" if source == ENV_FILE else source,
        )
    app.console.print(table)


def _register() -> None:
    from tourno.cli.db import db_group
    from tourno.cli.doctor import doctor_command
    from tourno.cli.mail import mail_group
    from tourno.cli.queue import queue_group
    from tourno.cli.schedule import schedule_group
    from tourno.cli.serve import serve_command
    from tourno.cli.up import up_command
    from tourno.cli.users import users_group
    from tourno.cli.work import work_command

    main.add_command(work_command)
    main.add_command(serve_command)
    main.add_command(users_group)
    main.add_command(queue_group)
    main.add_command(db_group)
    main.add_command(schedule_group)
    main.add_command(mail_group)
    main.add_command(doctor_command)
    main.add_command(up_command)
    # tourno/cli/schedule.py is another helper's: its first sentences run past
    # a command list's width, so give them short helps here unless it has its own.
    schedule_group.short_help = (
        schedule_group.short_help or "Dispatch the jobs that declare a cron expression."
    )
    schedule_list = schedule_group.commands.get("list")
    if schedule_list is not None and not schedule_list.short_help:
        schedule_list.short_help = "Each task's cron expression, next slot and last run."


_register()

"""``tourno up``: the whole system on this machine, in the foreground, under a
real supervisord: the HTTP API, K queue workers and the scheduler.

It is the README's "run it" command: with no settings it uses an SQLite file
in the working directory, migrates it, writes a supervisord configuration
under ``.tourno/`` and hands the terminal to supervisord, which prints every
process's output and stops them all cleanly on Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tourno.cli import AppContext, fail

CONFIG = """\
; Written by `tourno up`; rewritten on every run. For a server, use the
; repository's supervisord.conf (see the README, "Deployment").
[unix_http_server]
file={home}/supervisor.sock
chmod=0700

[supervisord]
nodaemon=true
logfile={home}/supervisord.log
pidfile={home}/supervisord.pid
directory={cwd}
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{home}/supervisor.sock

[program:tourno-serve]
command={python} -m tourno serve --bind {bind} --workers {web_workers}
{common}
stopwaitsecs=40

[program:tourno-worker]
command={python} -m tourno work --name up_%(process_num)02d --sleep 1 --tries 3 --timeout {timeout}
process_name=%(program_name)s_%(process_num)02d
numprocs={workers}
{common}
stopwaitsecs={stopwait}

[program:tourno-scheduler]
command={python} -m tourno schedule
{common}
stopwaitsecs=20

[group:tourno]
programs=tourno-serve,tourno-worker,tourno-scheduler
"""

COMMON = """\
directory={cwd}
autostart=true
autorestart=true
startsecs=1
startretries=10
stopsignal=TERM
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0"""


@click.command("up", short_help="Run API, workers and scheduler here, in the foreground.")
@click.option(
    "--workers", type=click.IntRange(1, 32), default=2, show_default=True, help="Queue workers to run."
)
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="HOST:PORT of the HTTP API.")
@click.option(
    "--demo", is_flag=True, help="Seed demo players and tournaments that fill, start, play and expire."
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".tourno"),
    show_default=True,
    help="Where the supervisord configuration, socket and log go.",
)
@click.option(
    "--demo-pace",
    type=click.FloatRange(min=0.5),
    default=20.0,
    show_default=True,
    help="Seconds between two looks of the demo players at their matches.",
)
@click.option("--print-config", is_flag=True, help="Print the supervisord configuration and exit.")
@click.pass_obj
def up_command(
    app: AppContext, workers: int, bind: str, demo: bool, demo_pace: float, home: Path, print_config: bool
) -> None:
    """Run everything here in the foreground: API, workers, scheduler (Ctrl-C stops all).

    Without TOURNO_DATABASE_URL the data lives in ./tourno.db (SQLite), and
    mail goes to the console unless TOURNO_MAIL_TRANSPORT says otherwise.
    """
    cwd = Path.cwd()
    home = home if home.is_absolute() else cwd / home
    env = child_environment(dict(os.environ), cwd, demo=demo)
    if app.env_file:
        env["TOURNO_ENV_FILE"] = str(Path(app.env_file).resolve())
    text = render_config(home=home, cwd=cwd, workers=workers, bind=bind)
    if print_config:
        click.echo(text, nl=False)
        return
    for key in (
        "TOURNO_DATABASE_URL",
        "TOURNO_MAIL_TRANSPORT",
        "TOURNO_MAIL_FILE_DIR",
        "TOURNO_SCHEDULE_FREQUENCIES",
    ):
        if key in env:
            os.environ[key] = env[key]
    app.reload_settings()  # with the values above
    settings = app.setup(connect=True, check_schema=False, create_database=True)
    from tourno import migrations
    from tourno.db import database

    applied = migrations.migrate(database.obj)
    if applied:
        app.console.print(f"Migrated: {', '.join(applied)}")
    if demo:
        from tourno.demo import seed_demo

        made = seed_demo(pace=demo_pace)
        if made is None:
            app.console.print("Demo data exists already; carrying on with it.")
        else:
            app.console.print(f"Demo: {len(made)} tournaments seeded; watch them start within two minutes.")
    database.close()

    home.mkdir(parents=True, exist_ok=True)
    conf = home / "supervisord.conf"
    conf.write_text(text, encoding="utf-8")
    lines = [
        f"Tourno: API on http://{bind} (dashboard at /admin), {workers} worker(s), scheduler; "
        f"database {settings.database_url}.",
    ]
    if env["TOURNO_MAIL_TRANSPORT"] == "summary":
        lines.append(f"Mail: one line each below, the messages in {env['TOURNO_MAIL_FILE_DIR']}.")
    if demo:
        from tourno.demo import TIMELINE

        lines += ["Demo timeline:", *(f"  {line}" for line in TIMELINE)]
    lines.append(f"Processes: {supervisorctl_command()} -c {conf} status    Stop: Ctrl-C")
    app.console.print("\n".join(lines))
    sys.stdout.flush()
    argv = [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        fail(f"cannot start supervisord: {exc}")


def supervisorctl_command() -> str:
    """How to reach supervisorctl from this install: the script next to this
    Python (a virtualenv's bin/, rarely on PATH), else through Python."""
    script = Path(sys.executable).parent / "supervisorctl"
    return str(script) if script.is_file() else f"{sys.executable} -m supervisor.supervisorctl"


def child_environment(env: dict[str, str], cwd: Path, *, demo: bool) -> dict[str, str]:
    """The environment every process gets: an absolute SQLite path (children
    must all open the same file), mail to the console by default, and in demo
    mode every periodic task every minute."""
    env = dict(env)
    url = env.get("TOURNO_DATABASE_URL", "").strip() or "sqlite:///tourno.db"
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix) :].startswith("/") and url[len(prefix) :] != ":memory:":
        url = prefix + str(cwd / url[len(prefix) :])
    env["TOURNO_DATABASE_URL"] = url
    # One line per mail in the output, each message kept whole as a file.
    env.setdefault("TOURNO_MAIL_TRANSPORT", "summary")
    mail_dir = Path(env.get("TOURNO_MAIL_FILE_DIR", "").strip() or "tourno-mail")
    env["TOURNO_MAIL_FILE_DIR"] = str(mail_dir if mail_dir.is_absolute() else cwd / mail_dir)
    if demo:
        from tourno.demo import FREQUENCIES

        env.setdefault("TOURNO_SCHEDULE_FREQUENCIES", FREQUENCIES)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def render_config(*, home: Path, cwd: Path, workers: int, bind: str, timeout: int = 60) -> str:
    common = COMMON.format(cwd=cwd)
    return CONFIG.format(
        home=home,
        cwd=cwd,
        python=sys.executable,
        bind=bind,
        web_workers=1,
        workers=workers,
        timeout=timeout,
        stopwait=timeout + 10,
        common=common,
    )

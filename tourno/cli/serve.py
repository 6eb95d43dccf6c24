"""``tourno serve``: the HTTP API under gunicorn, embedded.

gunicorn runs through its custom-application API, so supervisord and systemd
start one command with Tourno's own settings. The master process creates the
app once (so a bad setting fails once, at start) but opens no database
connection: each worker opens its own per request, and no socket crosses
``fork()``. SIGTERM is gunicorn's graceful stop: workers finish the requests
in flight (up to ``--graceful-timeout``) and the command exits 0.

Worker model: threads (gthread) with requests read in full by each worker's
event loop before a thread takes them (:mod:`tourno.cli.serve_worker`), so
slow clients cost no thread and one that never finishes its request gets
408. Sync workers were stalled by two slow clients; gevent would need
psycopg2 patched (psycogreen) and gives no bound on concurrent database
connections. Each thread has its own peewee connection (peewee's state is
per thread), opened and closed per request, so at most workers x threads
connections per host.

SIGHUP (``bin/deploy``) reloads without dropping a request: gunicorn starts
new workers, then stops the old ones once their requests are done. Each new
worker builds the app from the code on disk (:func:`fresh_app`), so a HUP is
how new code goes into service.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from tourno.cli import AppContext, fail


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{bind!r}: expected HOST:PORT, like 127.0.0.1:8000", param_hint="--bind")
    return host.strip("[]") or "127.0.0.1", int(port)


def gunicorn_application(factory: Callable[[], Any], options: dict[str, Any]) -> Any:
    from gunicorn.app.base import BaseApplication

    class TournoServer(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return factory()

    return TournoServer()


def fresh_app(env_file: str | None) -> Any:
    """The app built from Tourno's code as it is on disk now; runs in each
    new gunicorn worker. Workers fork from the master, which imported Tourno
    when it started: its modules are dropped first, so a worker started by a
    HUP after a deploy imports the new code, and reads the settings afresh
    (the env file may have changed too). Other packages are not re-imported:
    upgrading them needs a restart."""
    for name in [n for n in sys.modules if n == "tourno" or n.startswith("tourno.")]:
        del sys.modules[name]
    from tourno.api import create_app
    from tourno.config import Settings

    env = dict(os.environ)
    if env_file:
        env["TOURNO_ENV_FILE"] = env_file
    return create_app(Settings.from_env(env))


@click.command("serve")
@click.option(
    "--bind",
    default=None,
    help="HOST:PORT to listen on; default TOURNO_BIND or 127.0.0.1:8000 (0.0.0.0:8000: every interface).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=None,
    help="Worker processes, about 2 x cores; default TOURNO_WEB_WORKERS or 2.",
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Seconds a worker's event loop may stay silent before the master restarts it.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=256),
    default=4,
    show_default=True,
    help="Threads per worker: requests each worker runs at once (each with its own database connection).",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0.1, max=3600),
    default=10,
    show_default=True,
    help="Seconds from a request's first byte to its last; a slower request gets 408.",
)
@click.option(
    "--graceful-timeout",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Seconds SIGTERM waits for requests in flight before stopping workers.",
)
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
@click.option("--dev", is_flag=True, help="Flask's development server with the reloader (one process).")
@click.pass_obj
def serve_command(
    app: AppContext,
    bind: str | None,
    workers: int | None,
    timeout: int,
    threads: int,
    read_timeout: float,
    graceful_timeout: int,
    access_log: bool,
    dev: bool,
) -> None:
    """Serve the HTTP API (JSON under /api/v1, /healthz, /readyz).

    SIGTERM stops gracefully: requests in flight finish, then exit 0.
    """
    from tourno.api import MAX_BODY_BYTES, create_app
    from tourno.cli.serve_worker import BufferingThreadWorker

    # Settings and logging only: the database is opened by the workers, per request.
    settings = app.setup(connect=False)
    host, port = parse_bind(bind or settings.bind)
    workers = workers or settings.web_workers
    if dev:
        flask_app = create_app(settings)
        # The reloader, never the interactive debugger: it runs code for whoever reaches the port.
        flask_app.run(host=host, port=port, debug=True, use_reloader=True, use_debugger=False)
        return
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        # A class of its own per command: the worker reads its limits there.
        "worker_class": type(
            "TournoWorker",
            (BufferingThreadWorker,),
            {"read_timeout": read_timeout, "max_body_bytes": MAX_BODY_BYTES},
        ),
        "threads": threads,
        "timeout": timeout,
        "graceful_timeout": graceful_timeout,
        # Built in each worker (fresh_app), so a HUP loads new code.
        "preload_app": False,
        "proc_name": "tourno-serve",
        "errorlog": "-",
        "accesslog": "-" if access_log else None,
        "loglevel": settings.log_level,
        # One command per host: no control socket shared between instances.
        "control_socket_disable": True,
    }
    try:
        create_app(settings)  # a bad setting fails here, once, not in every worker
        server = gunicorn_application(lambda: fresh_app(app.env_file), options)
    except Exception as exc:  # noqa: BLE001 - gunicorn raises plain exceptions for bad config
        fail(f"cannot start the server: {exc}", code=2)
    server.run()

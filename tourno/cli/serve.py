"""``tourno serve``: the HTTP API under gunicorn, embedded.

gunicorn runs through its custom-application API, so supervisord and systemd
start one command with Tourno's own settings. The master process creates the
app (preloaded, so a bad setting fails once, at start) but opens no database
connection: each worker opens its own per request, and no socket crosses
``fork()``. SIGTERM is gunicorn's graceful stop: workers finish the requests
in flight (up to ``--graceful-timeout``) and the command exits 0.
"""

from __future__ import annotations

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
    help="Seconds a request may take before its worker is restarted.",
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
    graceful_timeout: int,
    access_log: bool,
    dev: bool,
) -> None:
    """Serve the HTTP API (JSON under /api/v1, /healthz, /readyz).

    SIGTERM stops gracefully: requests in flight finish, then exit 0.
    """
    from tourno.api import create_app

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
        # gunicorn's sync worker, answering the requests it refuses itself in JSON.
        "worker_class": "tourno.api.worker.JsonErrorWorker",
        "timeout": timeout,
        "graceful_timeout": graceful_timeout,
        "preload_app": True,
        "proc_name": "tourno-serve",
        "errorlog": "-",
        "accesslog": "-" if access_log else None,
        "loglevel": settings.log_level,
        # One command per host: no control socket shared between instances.
        "control_socket_disable": True,
    }
    try:
        server = gunicorn_application(lambda: create_app(settings), options)
    except Exception as exc:  # noqa: BLE001 - gunicorn raises plain exceptions for bad config
        fail(f"cannot start the server: {exc}", code=2)
    server.run()

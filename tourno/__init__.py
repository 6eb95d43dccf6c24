"""Tourno: the backend of a tournament platform, around a PostgreSQL job queue.

A script or another program configures Tourno from the environment and then
dispatches jobs the way the application does::

    import tourno
    tourno.setup()
    MyJob(x=1).dispatch()
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tourno.config import Settings


def setup(settings: Settings | None = None, *, import_jobs: bool = True, pool: bool = False) -> Settings:
    """Read the settings, bind the database and choose the queue backend.

    Opens no connection: the first dispatch (or the worker) does that.
    """
    from tourno import db
    from tourno.config import ConfigError, Settings
    from tourno.queue import backends
    from tourno.queue.backends.database import for_database

    settings = settings or Settings.from_env()
    concrete = db.init(
        settings.database_url, listen_url=settings.listen_url, dead_after=settings.db_dead_after, pool=pool
    )
    if settings.queue_connection == "redis":
        try:
            from tourno.queue.backends.redis import RedisBackend
        except ImportError as exc:
            raise ConfigError(
                f"TOURNO_QUEUE_CONNECTION=redis needs the redis package ({exc}): pip install tourno[redis]"
            ) from None
        backends.configure(
            RedisBackend(
                settings.redis_url,
                metrics_retention_days=settings.metrics_retention_days,
                dead_after=settings.db_dead_after,
            )
        )
    else:
        backends.configure(for_database(concrete))
    if import_jobs:
        import_modules(("tourno.jobs",))
        import_modules(settings.imports, source="TOURNO_IMPORTS")
    return settings


def import_modules(names: Iterable[str], source: str | None = None) -> None:
    """Import the modules that define jobs, so their names are registered.

    ``source`` (the variable or option that named them) leads the error, so
    the operator knows what to fix."""
    from tourno.config import ConfigError

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            where = f"{source}: " if source else ""
            raise ConfigError(f"{where}cannot import job module {name!r}: {exc}") from None

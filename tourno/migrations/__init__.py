"""Ordered schema migrations (``NNNN_name.py`` beside this file), applied with
``playhouse.migrations`` and recorded in ``schema_migrations``.

Each migration declares frozen copies of the models it creates, so later
changes to the application models never change what an old migration does.
``tests/ops/test_migrations.py`` proves the migrated schema equals the models'.
"""

from __future__ import annotations

from pathlib import Path

import peewee
from playhouse.migrations import Migration, Runner

DIRECTORY = str(Path(__file__).parent)
HISTORY_TABLE = "schema_migrations"


def runner(db: peewee.Database) -> Runner:
    return Runner(db, directory=DIRECTORY, table_name=HISTORY_TABLE)


def status(db: peewee.Database) -> list[Migration]:
    return runner(db).status()


def pending(db: peewee.Database) -> list[str]:
    return [m.name for m in status(db) if m.applied is None and m.path is not None]


def migrate(db: peewee.Database) -> list[str]:
    """Apply every pending migration, in order; returns their names."""
    return runner(db).up()

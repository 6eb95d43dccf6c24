"""Counting the SQL statements peewee sends inside a block.

This counts, it does not mock: every statement still runs on the real
database. It hooks peewee's query hooks (called once per ``execute_sql``),
so transaction control (BEGIN, COMMIT, savepoints), which peewee sends on
the cursor directly, is not counted; only the work statements are.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tourno import db as tdb


class Statements(list[str]):
    """The statements run in the block, in order (their SQL text)."""

    def report(self) -> str:
        return "\n".join(f"{i + 1:2}. {sql[:160]}" for i, sql in enumerate(self))


@contextmanager
def count_statements() -> Iterator[Statements]:
    """The statements this thread runs on :data:`tourno.db.database` inside the block."""
    seen = Statements()
    me = threading.get_ident()
    target: Any = tdb.database.obj

    def hook(event: Any) -> None:
        if threading.get_ident() == me:
            seen.append(event.sql)

    target.query_hooks.append(hook)
    try:
        yield seen
    finally:
        target.query_hooks.remove(hook)

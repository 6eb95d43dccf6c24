"""Turns that processes on any host take, one at a time, as lease rows of
``queue_signals`` (PostgreSQL): a worker's ``VACUUM jobs``, each periodic
scan. Not session advisory locks: behind a transaction-mode pooler
(PgBouncer) the session is the pooler's, and such a lock stays with
whichever server connection took it (the unlock may reach another one). A
lease is taken in one statement that commits at once; its holder ends it
when done, and one that died leaves it to run out."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import peewee

from tourno.db import database
from tourno.errors import first_line

log = logging.getLogger(__name__)

# The row's value is the instant the lease ends: taken when absent or run out.
_TAKE = (
    "INSERT INTO queue_signals (name, value) VALUES (%s, now() + %s * interval '1 second') "
    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value WHERE queue_signals.value < now() "
    "RETURNING value"
)
# Only our own lease: its value is the instant we wrote.
_END = "UPDATE queue_signals SET value = now() WHERE name = %s AND value = %s"


@contextlib.contextmanager
def lease(name: str, seconds: float) -> Iterator[bool]:
    """Whether this process has the turn ``name`` now (for at most
    ``seconds``); the lease ends with the block. An end that fails (the
    connection is gone) is logged: the lease runs out by itself."""
    taken = database.execute_sql(_TAKE, (name, float(seconds))).fetchall()
    try:
        yield bool(taken)
    finally:
        if taken:
            try:
                database.execute_sql(_END, (name, taken[0][0]))
            except peewee.PeeweeException as exc:
                log.warning("could not end the lease %s (it runs out by itself): %s", name, first_line(exc))

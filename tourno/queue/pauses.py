"""Pausing a queue: it keeps taking dispatches, but no worker claims from it.

The CLI (``tourno queue pause/resume``) and the web dashboard call these, so
that a pause means the same thing from either. They are thin on purpose: the
store and the wake-up are the backend's (``QueueBackend.pause``), and how a
worker honours a pause is the worker's.

A worker never pays a round trip per claim for this. Its monitor thread
reloads the paused set every :data:`RELOAD_EVERY` seconds, and at once when
the backend's notification (:data:`PAUSES_CHANGED`) says it changed; the
claim loop skips the queues in it (``Worker.active_queues()``). So a pause
takes effect on every host within about half a second (on SQLite, which has
no notifications, within the poll), and a resume wakes idle workers at once.
"""

from __future__ import annotations

import datetime as dt

from tourno.queue import backends
from tourno.queue.backends.base import PAUSES_CHANGED

__all__ = ["PAUSES_CHANGED", "RELOAD_EVERY", "pause", "paused", "resume"]

#: Seconds between two reloads of the paused set by a worker's monitor.
RELOAD_EVERY = 0.5


def pause(queues: list[str]) -> list[str]:
    """Pause ``queues``; returns those that were not paused already."""
    return backends.current().pause(_names(queues))


def resume(queues: list[str]) -> list[str]:
    """Resume ``queues``; returns those that were paused."""
    return backends.current().resume(_names(queues))


def paused() -> dict[str, dt.datetime]:
    """Every paused queue, by name, and when it was paused (UTC)."""
    return backends.current().paused()


def _names(queues: list[str]) -> list[str]:
    """Bad input is refused before anything is written."""
    if isinstance(queues, str):
        raise TypeError("give a list of queue names, not one string")
    for q in queues:
        if not isinstance(q, str) or not q:
            raise ValueError(f"queue must be a non-empty string, got {q!r}")
    return list(queues)

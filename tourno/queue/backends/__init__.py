"""Queue backends behind one interface, and the one the process uses.

``configure()`` is called once by ``tourno.setup()``; job dispatch and the
worker then ask ``current()``.
"""

from __future__ import annotations

from tourno.queue.backends.base import ClaimedJob, QueueBackend, QueueStats, WorkerInfo

_current: QueueBackend | None = None


def configure(backend: QueueBackend) -> QueueBackend:
    global _current
    _current = backend
    return backend


def current() -> QueueBackend:
    if _current is None:
        raise RuntimeError("Tourno is not set up: call tourno.setup() before dispatching jobs")
    return _current


__all__ = ["ClaimedJob", "QueueBackend", "QueueStats", "WorkerInfo", "configure", "current"]

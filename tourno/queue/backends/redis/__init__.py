"""The Redis backend (``TOURNO_QUEUE_CONNECTION=redis``): :mod:`.backend` holds
the class and its design notes, ``scripts/`` its Lua scripts."""

from __future__ import annotations

from tourno.queue.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]

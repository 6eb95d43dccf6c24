"""The bracket's hot read, cached per process: serialized response bodies
keyed by the tournament's data version, with ``ETag`` / ``If-None-Match``.

Every viewer of a running tournament polls ``GET /tournaments/{id}`` (with
its matches) and the match list, and between two results the answer does not
change. So a request reads the tournament row (it needs it anyway, for the
visibility check) together with its data version
(:func:`tourno.tournaments.reads.tournament_row`), and when a body for that
version is in the cache, answers with it: one indexed query, no serializing.

The data version is the row's ``xmin`` on PostgreSQL: every change to a
tournament's rows (the tournament, its participants, matches and reports)
runs under :func:`~tourno.tournaments.services.common.locked_tournament`,
which always leaves the tournament row rewritten, so a committed change means
a new ``xmin`` (a transaction id, never reused for another committed version
of the row). ``version`` is part of the key too. SQLite has no such column:
there nothing is cached and the ETag is a digest of the body.

What the output derives from the clock (``checking_in``, ``registration_open``)
is part of the key, so a check-in window that opens is a miss, not a stale hit.
Nothing in these bodies depends on who asks (drafts are refused before the
cache is consulted), so viewers share entries.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, cast

from flask import Response, current_app, request

#: Bodies kept per worker process: a few hundred brackets of ~35 KB each (64
#: players with their matches), and never more than MAX_BYTES in all, so a few
#: huge tournaments cannot grow a worker without bound.
MAX_ENTRIES = 256
MAX_BYTES = 32 * 1024 * 1024

_EXTENSION = "tourno.response_cache"


class ResponseCache:
    """A bounded LRU map of key -> response body (by count and by total size);
    safe to share between threads. A body above an eighth of the byte budget
    is not kept: it would evict too much for one tournament."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: Hashable, body: bytes) -> None:
        if len(body) > self.max_bytes // 8:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self.size += len(body) - (len(old) if old is not None else 0)
            self._entries[key] = body
            while len(self._entries) > self.max_entries or self.size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.size -= len(evicted)

    def __len__(self) -> int:
        return len(self._entries)


def response_cache() -> ResponseCache:
    """This application's cache (one per app, so tests on fresh databases
    never share entries; gunicorn workers each get their own after the fork)."""
    cache = current_app.extensions.get(_EXTENSION)
    if cache is None:
        cache = current_app.extensions.setdefault(_EXTENSION, ResponseCache())
    return cache


# -- responses ---------------------------------------------------------------------------------


def etag_of(key: Hashable) -> str:
    """A strong validator from the cache key: equal keys give equal bodies
    in every worker process (the key holds no per-process value)."""
    return hashlib.blake2b(repr(key).encode(), digest_size=12).hexdigest()


def _respond(body: bytes | None, etag: str, *, private: bool) -> Response:
    if body is None:
        response = current_app.response_class(status=304)
    else:
        response = current_app.response_class(body, mimetype="application/json")
    response.set_etag(etag)
    # Clients and proxies may keep it, but must ask again (cheaply, with the ETag).
    response.headers["Cache-Control"] = "private, no-cache" if private else "no-cache"
    return response


def _fresh(etag: str) -> bool:
    """The client holds this version already (If-None-Match compares weakly)."""
    return request.if_none_match.contains_weak(etag)


def _json_bytes(data: Any) -> bytes:
    """``data`` as the app's JSON response would carry it (same provider, same bytes)."""
    # Typed as the sans-io response, which is a flask Response in a Flask app.
    response = cast(Response, current_app.json.response(data))
    return response.get_data()


def cached_json(key: tuple | None, build: Callable[[], Any], *, private: bool = False) -> Response:
    """The JSON of ``build()``, from the cache under ``key`` when it is there;
    a 304 when the client's ``If-None-Match`` names it. ``key`` is None when
    the data version is unknown (SQLite): then it is built every time."""
    if key is None:
        body = _json_bytes(build())
        etag = hashlib.blake2b(body, digest_size=12).hexdigest()
        return _respond(None if _fresh(etag) else body, etag, private=private)
    etag = etag_of(key)
    if _fresh(etag):
        return _respond(None, etag, private=private)
    cache = response_cache()
    cached = cache.get(key)
    if cached is None:
        cached = _json_bytes(build())
        cache.put(key, cached)
    return _respond(cached, etag, private=private)

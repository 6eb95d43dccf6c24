"""A token bucket kept in one database row, shared by every process on every server.

A bucket has a name, a rate (tokens per second) and a burst (the most tokens
it holds). Its row stores what was left at ``updated_at``; taking refills it
for the time since and writes both back under the row's lock (``FOR UPDATE``
on PostgreSQL, the write lock of ``BEGIN IMMEDIATE`` on SQLite), so processes
that share the database share the rate. The mail drain paces with the bucket
named ``mail``; the queue's ``RateLimited`` and ``ThrottlesExceptions``
middleware use buckets named after their keys (with the database driver;
the Redis driver keeps its buckets in Redis, in a Lua script of the same
arithmetic). Any other name is another, independent bucket.

The rows live in the ``rate_buckets`` table (``mail_rate`` until migration
0010 gave it a neutral name, when the queue became its second user).
"""

from __future__ import annotations

import datetime as dt

import peewee

from tourno import db as tdb
from tourno.db import BaseModel, TimestampField


class RateBucket(BaseModel):
    """One token bucket per row, shared by every process on every server.

    ``tokens`` is what was left at ``updated_at``; a taker refills it for the
    time since, takes what it needs and writes both back under the row lock.
    """

    name = peewee.CharField(max_length=64, primary_key=True)
    tokens = peewee.DoubleField()
    updated_at = TimestampField()

    class Meta:
        table_name = "rate_buckets"


MODELS = [RateBucket]

# CHECK constraints of the PostgreSQL schema; the migrations keep frozen copies.
CHECKS: dict[str, tuple[str, str]] = {"rate_buckets_tokens_check": ("rate_buckets", "tokens >= 0")}

# Floating-point slack when turning a refilled bucket into whole tokens.
_EPS = 1e-9


def bucket_capacity(rate: float) -> float:
    """The default burst: half a second's worth of tokens, and at least one.

    A taker that takes a chunk at a time and spends it a moment later can put
    a full burst, a second's refill and its chunks in flight into one second;
    with a half-second burst that stays under "one second's rate plus one
    burst" (the limit mail providers apply; bench/scale.py measures it)."""
    return max(1.0, rate / 2)


def refill(
    tokens: float, updated_at: dt.datetime, now: dt.datetime, rate: float, burst: float | None = None
) -> tuple[float, dt.datetime]:
    """The bucket at ``now``, capped at ``burst`` (default :func:`bucket_capacity`).
    A clock behind the last writer's adds nothing (time never runs backwards
    for the bucket), so servers with skewed clocks can only under-take."""
    cap = bucket_capacity(rate) if burst is None else burst
    elapsed = max(0.0, (now - updated_at).total_seconds())
    return min(cap, tokens + elapsed * rate), max(updated_at, now)


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` at once, in the row ``name``.

    Each method is one transaction of its own (a savepoint when the caller
    has one open), except :meth:`lock`, which joins the caller's."""

    def __init__(self, name: str, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"a token bucket needs a positive rate, not {rate!r}")
        self.name = name
        self.rate = rate
        self.burst = bucket_capacity(rate) if burst is None else burst

    def lock(self, now: dt.datetime) -> RateBucket:
        """The bucket's row, locked until the caller's transaction ends; created
        full on first use. Other takers of this bucket wait meanwhile, which
        also makes the lock a mutex for work paced by the bucket."""
        RateBucket.insert(name=self.name, tokens=self.burst, updated_at=now).on_conflict_ignore().execute()
        query = RateBucket.select().where(RateBucket.name == self.name)
        if tdb.is_postgres():
            query = query.for_update()
        row: RateBucket = query.get()
        return row

    def take(self, want: int, now: dt.datetime) -> tuple[int, float]:
        """Take up to ``want`` tokens; returns (granted, seconds until the next
        whole token when none is left)."""
        granted, _, wait = self.take_counted(want, now)
        return granted, wait

    def take_counted(self, want: int, now: dt.datetime) -> tuple[int, float, float]:
        """:meth:`take`, also saying how many tokens are left: (granted, left, wait)."""
        with tdb.write_transaction():
            row = self.lock(now)
            tokens, stamp = refill(row.tokens, row.updated_at, now, self.rate, self.burst)
            granted = max(0, min(want, int(tokens + _EPS)))
            left = max(0.0, tokens - granted)
            self._store(left, stamp)
        wait = 0.0 if left + _EPS >= 1 else (1 - left) / self.rate
        return granted, left, wait

    def give_back(self, n: int, now: dt.datetime) -> None:
        """Return tokens taken but not used (the taker stopped early)."""
        if n <= 0:
            return
        with tdb.write_transaction():
            row = self.lock(now)
            tokens, stamp = refill(row.tokens, row.updated_at, now, self.rate, self.burst)
            self._store(min(self.burst, tokens + n), stamp)

    def fill(self, now: dt.datetime) -> None:
        """Refill the bucket to its burst at once (a throttle that is reset)."""
        with tdb.write_transaction():
            self.lock(now)
            self._store(self.burst, now)

    def peek(self, now: dt.datetime | None) -> float | None:
        """The tokens the bucket would hold at ``now`` (as last stored when
        ``now`` is None), without taking any or locking; None before its first use."""
        row = RateBucket.get_or_none(RateBucket.name == self.name)
        if row is None:
            return None
        if now is None:
            return float(row.tokens)
        return refill(row.tokens, row.updated_at, now, self.rate, self.burst)[0]

    def _store(self, tokens: float, updated_at: dt.datetime) -> None:
        RateBucket.update(tokens=tokens, updated_at=updated_at).where(RateBucket.name == self.name).execute()

"""Job middleware: layers around a job's ``handle``, Laravel-style.

A job lists its layers, outermost first::

    @dataclass
    class CallPartnerApi(Job):
        partner: str

        def middleware(self) -> list[Middleware]:
            return [RateLimited("partner-api", rate=10), WithoutOverlapping(self.partner)]

Each layer's ``handle(job, call_next)`` runs ``call_next()`` to go on to the
next layer (the last one calls ``job.handle()``), or raises
:class:`~tourno.queue.exceptions.Snooze` to put the job off without spending
an attempt. The built-in layers keep their state in the queue's backend (the
database, or Redis with the Redis driver), so they hold across every worker
on every host:

* :class:`RateLimited`: at most ``rate`` runs per ``per`` seconds, a token
  bucket shared with the mail drain's code (``tourno.buckets``);
* :class:`WithoutOverlapping`: one running job per key; the key of a worker
  that dies frees itself once its heartbeat is stale;
* :class:`ThrottlesExceptions`: at most ``max_exceptions`` exceptions per
  ``decay`` seconds, after which the job is put off until the budget refills.

``current()`` gives a layer the running job's :class:`JobContext`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tourno.db import OUTAGE_ERRORS
from tourno.errors import first_line
from tourno.queue.backends.base import QueueBackend
from tourno.queue.exceptions import Snooze

if TYPE_CHECKING:
    from tourno.queue.job import Job

__all__ = [
    "JobContext",
    "Middleware",
    "RateLimited",
    "ThrottlesExceptions",
    "WithoutOverlapping",
    "current",
    "run",
]

log = logging.getLogger(__name__)

#: Bucket and lock names are stored in 64- and unbounded-character columns;
#: a name is kept readable and bounded.
MAX_NAME = 64


@dataclasses.dataclass
class JobContext:
    """What a layer may know of the attempt it wraps."""

    backend: QueueBackend
    worker_id: int
    job_id: Any
    queue: str
    attempt: int
    #: The worker's --stale-after: a lock holder silent this long is dead.
    stale_after: float
    #: Set by a layer that could not let go of a key (the connection was
    #: lost): the worker lets go of all its keys once it is back.
    keys_left_held: bool = False


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("tourno_job_context")


def current() -> JobContext:
    """The attempt the calling layer wraps (only inside a worker's job)."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("job middleware runs only inside a worker's job") from None


class Middleware:
    """A layer around ``handle``. The base class just goes on."""

    def handle(self, job: Job, call_next: Callable[[], None]) -> None:
        call_next()


def run(job: Job, layers: Sequence[Middleware], context: JobContext) -> None:
    """Run ``job.handle`` inside ``layers`` (outermost first)."""
    call: Callable[[], None] = job.handle
    for layer in reversed(layers):
        if not isinstance(layer, Middleware):
            raise TypeError(f"{type(job).__name__}.middleware() returned {layer!r}, not a Middleware")
        call = functools.partial(layer.handle, job, call)
    token = _current.set(context)
    try:
        call()
    finally:
        _current.reset(token)


def _name(kind: str, name: str) -> str:
    text = f"{kind}:{name}"
    if len(text) > MAX_NAME:
        raise ValueError(f"{kind} name {name!r} is too long ({len(text)} > {MAX_NAME} characters)")
    return text


class RateLimited(Middleware):
    """At most ``rate`` runs of jobs naming this limit every ``per`` seconds,
    across every worker on every host. A job over the limit is put off until
    a token is due, without spending an attempt. ``burst`` is how many may
    start at once after a quiet spell (default: half a second's worth, at
    least one, as for the mail drain)."""

    def __init__(self, name: str, rate: float, per: float = 1.0, burst: float | None = None) -> None:
        if not rate > 0 or not per > 0:
            raise ValueError(f"RateLimited needs a positive rate and period, not {rate!r} per {per!r}")
        self.bucket = _name("rate", name)
        self.rate = rate / per
        self.burst = max(1.0, self.rate / 2) if burst is None else float(burst)
        if self.burst < 1:
            raise ValueError(f"RateLimited burst must be at least 1, not {burst!r}")

    def handle(self, job: Job, call_next: Callable[[], None]) -> None:
        state = current().backend.bucket(self.bucket, self.rate, self.burst, "take")
        if not state.granted:
            raise Snooze(max(state.wait, 0.001))
        call_next()


class WithoutOverlapping(Middleware):
    """At most one job holding ``key`` runs at a time, across every worker.
    Another one is put off for ``release_after`` seconds without spending an
    attempt. A key is let go of when its job ends (success or not), when its
    worker's heartbeat goes stale (the worker died), or ``expire_after``
    seconds after it was taken, if given. Keys are per job class unless
    ``shared=True``."""

    def __init__(
        self,
        key: str = "",
        release_after: float = 1.0,
        expire_after: float | None = None,
        shared: bool = False,
    ) -> None:
        if release_after < 0 or (expire_after is not None and expire_after <= 0):
            raise ValueError("WithoutOverlapping: release_after must be >= 0 and expire_after > 0")
        self.key = key
        self.release_after = release_after
        self.expire_after = expire_after
        self.shared = shared

    def handle(self, job: Job, call_next: Callable[[], None]) -> None:
        ctx = current()
        key = self.key if self.shared else f"{job.job_name}:{self.key}"
        if not ctx.backend.acquire_lock(key, ctx.worker_id, ctx.job_id, ctx.stale_after, self.expire_after):
            raise Snooze(self.release_after)
        try:
            call_next()
        finally:
            try:
                ctx.backend.release_locks(ctx.worker_id, key)
            except OUTAGE_ERRORS + tuple(ctx.backend.connection_errors) as exc:
                log.warning(
                    "could not let go of key %r: %s; retrying after reconnecting", key, first_line(exc)
                )
                ctx.keys_left_held = True


class ThrottlesExceptions(Middleware):
    """At most ``max_exceptions`` exceptions every ``decay`` seconds from jobs
    of this key (default: the job class), across every worker: a job that
    raises is retried as usual (its tries and backoff), but once the budget is
    spent the jobs are put off, without spending attempts, until it refills
    (one exception's worth every ``decay / max_exceptions`` seconds). A
    success refills it at once: the service behind the jobs is back."""

    def __init__(self, max_exceptions: int = 10, decay: float = 600.0, key: str | None = None) -> None:
        if max_exceptions < 1 or not decay > 0:
            raise ValueError("ThrottlesExceptions needs max_exceptions >= 1 and decay > 0")
        self.max_exceptions = max_exceptions
        self.decay = decay
        self.key = key

    def handle(self, job: Job, call_next: Callable[[], None]) -> None:
        backend = current().backend
        name = _name("throttle", self.key or job.job_name)
        rate, burst = self.max_exceptions / self.decay, float(self.max_exceptions)
        state = backend.bucket(name, rate, burst, "peek")
        if state.wait > 0:
            raise Snooze(state.wait)
        try:
            call_next()
        except Snooze:
            raise
        except Exception:
            backend.bucket(name, rate, burst, "take")
            raise
        if state.tokens + 1e-9 < burst:
            backend.bucket(name, rate, burst, "fill")

"""Lifecycle events of the queue: what happened to a job or a worker, in process.

One subscription API over blinker signals::

    from tourno.queue import events

    @events.subscriber("job.failed")
    def alert(event: events.Event) -> None:
        log.error("%s #%s failed: %s", event.job, event.id, event.exception)

A subscriber is called with one :class:`Event`, synchronously, in the thread
that caused it (the worker's main thread; ``job.rescued`` in its monitor
thread; ``job.dispatched`` in the dispatching thread). It should be quick. One
that raises is logged and skipped: it never breaks a dispatch or a worker.
With nobody subscribed, emitting is one dictionary look-up, so the worker's
hot path does not pay for events nobody reads.

The events, one per transition:

* ``job.dispatched``: the backend accepted the job (not for a unique job that
  was already pending). Inside a transaction it fires at dispatch, before the
  commit.
* ``job.started``: the worker is about to call ``handle``.
* ``job.succeeded`` / ``job.failed`` / ``job.released``: the outcome of an
  attempt, with ``duration``; ``failed`` means for good (no retry left, a bad
  payload, a passed ``retry_until``) and carries ``exception``; ``released``
  means it will be retried after ``delay`` seconds and carries ``exception``.
* ``job.timed_out``: the attempt ran past its timeout; the outcome
  (``job.failed`` or ``job.released``) follows it.
* ``job.rescued``: a worker's monitor handed back a job whose worker stopped
  heartbeating; ``worker_id`` is that dead worker's id.
* ``job.snoozed``: the job raised ``Snooze``; it runs again after ``delay``
  seconds, and the attempt was not spent (``attempt`` is the one that snoozed).
* ``job.cancelled``: ``tourno queue cancel`` took the job away: fired by the
  cancelling code for a waiting or delayed job (in the process that
  cancelled; no ``attempt``), by the worker when a running job's attempt ends
  (with ``duration``, and ``exception`` if it raised) or a prefetched one
  is dropped unstarted, and by a monitor's sweep for a cancelled job that
  had gone back to the queue.
* ``worker.started``: the worker registered and is about to take jobs.
* ``worker.stopping``: its loop ended and it is about to leave.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from blinker import Signal

__all__ = [
    "EVENT_NAMES",
    "Event",
    "Subscriber",
    "emit",
    "subscribe",
    "subscriber",
    "unsubscribe",
    "wanted",
]

log = logging.getLogger(__name__)

EVENT_NAMES = (
    "job.dispatched",
    "job.started",
    "job.succeeded",
    "job.failed",
    "job.released",
    "job.snoozed",
    "job.cancelled",
    "job.timed_out",
    "job.rescued",
    "worker.started",
    "worker.stopping",
)


class Event(NamedTuple):
    """What one event says. Fields that do not apply to it are None.
    Immutable (every subscriber sees the same one), and a named tuple rather
    than a frozen dataclass: one is built per job per subscribed event, and
    this builds three times faster."""

    name: str
    #: The job's registered name (``Job.job_name``).
    job: str | None = None
    uuid: str | None = None
    #: The id ``dispatch()`` returned.
    id: Any = None
    queue: str | None = None
    #: The attempt this is (1 for the first run; 0 at dispatch).
    attempt: int | None = None
    #: Seconds the attempt ran (succeeded, failed, released, timed_out).
    duration: float | None = None
    exception: BaseException | None = None
    #: Seconds until a released or snoozed job runs again.
    delay: float | None = None
    #: The worker the event happened in (for ``job.rescued``: the dead one).
    worker: str | None = None
    worker_id: Any = None
    pid: int | None = None


Subscriber = Callable[[Event], object]

# Our own signals, not blinker's global namespace: nothing else can emit on them.
_signals: dict[str, Signal] = {name: Signal(name) for name in EVENT_NAMES}


def _signal(name: str) -> Signal:
    try:
        return _signals[name]
    except KeyError:
        raise ValueError(f"unknown queue event {name!r}; known: {', '.join(EVENT_NAMES)}") from None


#: Each event's subscribers as a tuple, rebuilt on every (un)subscribe: the
#: emit on the hot path iterates it instead of asking blinker each time, and
#: a subscriber may (un)subscribe while the tuple it was called from runs on.
_receivers: dict[str, tuple[Subscriber, ...]] = {name: () for name in EVENT_NAMES}


def _refresh(name: str) -> None:
    _receivers[name] = tuple(_signals[name].receivers_for(None))


def subscribe(name: str, fn: Subscriber) -> Subscriber:
    """Call ``fn(event)`` each time ``name`` fires; returns ``fn``. The
    reference is strong: ``fn`` stays subscribed until :func:`unsubscribe`."""
    _signal(name).connect(fn, weak=False)
    _refresh(name)
    return fn


def unsubscribe(name: str, fn: Subscriber) -> None:
    """Stop calling ``fn`` for ``name`` (nothing happens if it was not subscribed)."""
    _signal(name).disconnect(fn)
    _refresh(name)


def subscriber(*names: str) -> Callable[[Subscriber], Subscriber]:
    """Decorator form of :func:`subscribe`, for one or more event names."""

    def register(fn: Subscriber) -> Subscriber:
        for name in names:
            subscribe(name, fn)
        return fn

    return register


def wanted(name: str) -> bool:
    """Whether anyone subscribes to ``name``: the engine checks it before it
    gathers an event's fields, so an unread event costs nothing."""
    return bool(_receivers[name])


def emit(name: str, **fields: Any) -> None:
    """Tell ``name``'s subscribers; ``fields`` are :class:`Event`'s. A
    subscriber that raises is logged, and the others are still called."""
    receivers = _receivers.get(name)
    if receivers is None:
        _signal(name)  # raises: an unknown event name
        return
    if not receivers:
        return
    event = Event(name, **fields)
    for receiver in receivers:
        try:
            receiver(event)
        except Exception:  # noqa: BLE001 - a subscriber must not break the queue
            log.exception("queue event %s: subscriber %r raised", name, receiver)

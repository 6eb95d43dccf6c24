"""Persisted queue metrics: what the workers did, per minute, queue and job.

A worker counts each finished attempt in memory (:class:`MetricsBuffer`,
keyed by minute, queue and job name) and writes the counts it holds with
its next write to the queue, in the same round trip: the batched claim, or
the ``Complete`` / ``Release`` / ``Fail`` operation written on its own. So
metrics cost no round trip of their own, and one rule makes them
at-least-once: counts are taken from the buffer *after* the finished jobs'
ids, and written in the same statement (transaction, Lua script) that
deletes those jobs. A job whose deletion was written has its count written
too; a worker killed before that runs the job again elsewhere, where it is
counted again (more, never fewer). Failures and releases go out with their
own ``Fail`` / ``Release`` operation rather than waiting for the next claim:
a worker that dies right after failing a job would otherwise lose the count.
Nothing waits long in the buffer: an idle worker's poll is a claim, which
carries what is left, and ``close()`` writes the rest (so the monitor has no
flush of its own to do).

Where they are kept:

* PostgreSQL and SQLite: ``queue_metrics`` (``models.QueueMetric``), one row
  per (minute, queue, job, shard), upserted by adding; on PostgreSQL the
  shard is picked by worker id, so concurrent workers do not queue up on
  one row's lock (which every claim would hold until its commit). Rows older than
  ``TOURNO_METRICS_RETENTION_DAYS`` are pruned by a worker's monitor every
  :data:`PRUNE_EVERY` seconds, folded into the totals row of the same
  (queue, job) (minute = the epoch) in the statement that deletes them:
  sums over all rows, which ``/metrics`` reports, never go down.
* Redis: a hash per minute (``P:metrics:m:EPOCH``) that expires after the
  retention, and a totals hash (``P:metrics:total``) that never does,
  incremented by the same script. Redis runs scripts one at a time, so the
  totals hash costs no contention there, while on PostgreSQL a row that
  every worker updated with every claim would serialize the claims: hence
  the fold at prune time instead.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tourno.queue.backends.base import QueueBackend

#: What can happen to one attempt (the ``outcome`` label of
#: ``tourno_jobs_processed_total``). ``succeeded`` is "processed".
OUTCOMES = ("succeeded", "failed", "released", "snoozed", "cancelled")
#: Integer counters, then the float sums and maxima, in storage order.
COUNTERS = (*OUTCOMES, "runs")
SUMS = ("runtime_sum", "wait_sum")
MAXIMA = ("runtime_max", "wait_max")
COLUMNS = (*COUNTERS, "runtime_sum", "runtime_max", "wait_sum", "wait_max")
#: The minute (epoch seconds) of the totals that pruned minutes fold into.
TOTALS_MINUTE = 0
#: Seconds between two prunes by one worker's monitor (``Monitor.PRUNE_EVERY``;
#: the first at a random point of the first interval, so that workers started
#: together spread out).
PRUNE_EVERY = 600.0
#: Job name counted for a payload that could not be decoded.
UNKNOWN_JOB = "(unknown)"


@dataclasses.dataclass(slots=True)
class Counts:
    """The counters of one (minute, queue, job)."""

    succeeded: int = 0
    failed: int = 0
    released: int = 0
    snoozed: int = 0
    cancelled: int = 0
    #: Attempts that the runtime and wait sums cover.
    runs: int = 0
    runtime_sum: float = 0.0
    runtime_max: float = 0.0
    wait_sum: float = 0.0
    wait_max: float = 0.0

    def merge(self, other: Counts) -> None:
        for name in (*COUNTERS, *SUMS):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in MAXIMA:
            setattr(self, name, max(getattr(self, name), getattr(other, name)))

    def values(self) -> tuple[float, ...]:
        """The columns in :data:`COLUMNS` order."""
        return tuple(getattr(self, c) for c in COLUMNS)

    @classmethod
    def of(cls, values: dict[str, float | None]) -> Counts:
        """From stored values (None, e.g. a SUM over nothing, reads as 0)."""
        out = cls()
        for name in COUNTERS:
            setattr(out, name, int(values.get(name) or 0))
        for name in (*SUMS, *MAXIMA):
            setattr(out, name, float(values.get(name) or 0.0))
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class MetricRow:
    """The counts of one job class on one queue in one minute."""

    minute: int  # epoch seconds, a multiple of 60; TOTALS_MINUTE for the totals
    queue: str
    job: str
    counts: Counts

    @property
    def field(self) -> str:
        """The (queue, job) pair as one string, for Redis hash fields (JSON,
        so any queue or job name round-trips)."""
        return json.dumps([self.queue, self.job], separators=(",", ":"))


def parse_field(text: str) -> tuple[str, str]:
    queue, job = json.loads(text)
    return str(queue), str(job)


#: Where each outcome's counter sits in a buffered row (``COLUMNS`` order).
_INDEX = {name: i for i, name in enumerate(COLUMNS)}
_RUNS, _RUNTIME_SUM, _RUNTIME_MAX, _WAIT_SUM, _WAIT_MAX = (
    _INDEX[c] for c in ("runs", "runtime_sum", "runtime_max", "wait_sum", "wait_max")
)


class MetricsBuffer:
    """The counts a worker has not written yet. The worker's main thread adds
    to it and takes from it; the monitor thread takes from it when it writes
    completions itself (``ClaimBatch.release_held``), hence the lock.

    Counting is on the hot path of every job, so a row is a plain list in
    ``COLUMNS`` order until it is taken."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[int, str, str], list[float]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def count(
        self,
        queue: str,
        job: str,
        outcome: str,
        runtime: float | None,
        wait: float | None,
        at: float | None = None,
    ) -> None:
        """One attempt ended with ``outcome``; ``runtime`` None means it never
        ran (a bad payload, a retry deadline passed), ``at`` is when (epoch)."""
        key = (int((time.time() if at is None else at) // 60) * 60, queue, job)
        index = _INDEX[outcome]
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = [0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0]
            row[index] += 1
            if runtime is None:
                return
            row[_RUNS] += 1
            if runtime > 0:
                row[_RUNTIME_SUM] += runtime
                if runtime > row[_RUNTIME_MAX]:
                    row[_RUNTIME_MAX] = runtime
            if wait is not None and wait > 0:
                row[_WAIT_SUM] += wait
                if wait > row[_WAIT_MAX]:
                    row[_WAIT_MAX] = wait

    def take(self) -> list[MetricRow]:
        """Everything held, sorted by key: two statements that upsert the same
        rows then lock them in the same order (no deadlock between workers)."""
        if not self._rows:  # read without the lock: a miss is caught next time
            return []
        with self._lock:
            rows, self._rows = self._rows, {}
        return [
            MetricRow(m, q, j, Counts(*(int(v) for v in row[: len(COUNTERS)]), *row[len(COUNTERS) :]))
            for (m, q, j), row in sorted(rows.items())
        ]

    def put_back(self, rows: list[MetricRow]) -> None:
        """A write that would have carried ``rows`` did not happen."""
        if not rows:
            return
        with self._lock:
            for row in rows:
                key = (row.minute, row.queue, row.job)
                held = self._rows.get(key)
                if held is None:
                    self._rows[key] = list(row.counts.values())
                else:
                    counts = Counts(*(int(v) for v in held[: len(COUNTERS)]), *held[len(COUNTERS) :])
                    counts.merge(row.counts)
                    self._rows[key] = list(counts.values())


# -- reading ---------------------------------------------------------------------------


def totals(backend: QueueBackend) -> list[MetricRow]:
    """All-time counts per (queue, job): what ``/metrics`` exposes. They only
    grow (pruning folds minutes into the totals)."""
    return backend.read_metrics(None)


def since(backend: QueueBackend, minutes: float) -> list[MetricRow]:
    """Counts per (queue, job) over the last ``minutes`` whole minutes and the
    current one; ``minute`` is the window's first minute."""
    start = int((time.time() - minutes * 60) // 60) * 60
    return backend.read_metrics(start)


def by_queue(rows: list[MetricRow]) -> dict[str, Counts]:
    """Rows summed per queue, sorted by queue name."""
    out: dict[str, Counts] = {}
    for row in sorted(rows, key=lambda r: r.queue):
        held = out.get(row.queue)
        if held is None:
            out[row.queue] = held = Counts()
        held.merge(row.counts)
    return out


# -- per-minute series (the dashboard's charts) ----------------------------------------


@dataclasses.dataclass(slots=True)
class Bucket:
    """The counts of one step of a series, all jobs (of one queue, or all)."""

    start: int  # epoch seconds of the step's first minute
    succeeded: int = 0
    failed: int = 0
    released: int = 0
    runs: int = 0
    wait_sum: float = 0.0
    wait_max: float = 0.0

    @property
    def mean_wait(self) -> float:
        """Seconds an attempt waited on average (0 with no attempts)."""
        return self.wait_sum / self.runs if self.runs else 0.0

    def add(self, counts: Counts) -> None:
        self.succeeded += counts.succeeded
        self.failed += counts.failed
        self.released += counts.released
        self.runs += counts.runs
        self.wait_sum += counts.wait_sum
        self.wait_max = max(self.wait_max, counts.wait_max)


def series(
    backend: QueueBackend,
    minutes: int,
    step_minutes: int = 1,
    queue: str | None = None,
    now: float | None = None,
) -> list[Bucket]:
    """The last ``minutes`` (the current minute included) in steps of
    ``step_minutes`` (rounded up to whole steps), oldest first, empty steps
    included as zeros: a chart draws a gap as a zero, not as a missing
    point. The last step ends with the current minute, so every step is
    whole (the current minute is partial, as it always is). One read of the
    store: the backend returns only the minutes that hold counts.

    ``now`` defaults to this process's clock, the clock the workers key
    their minutes by (``MetricsBuffer.count``)."""
    if minutes < 1 or step_minutes < 1:
        raise ValueError("minutes and step_minutes must be at least 1")
    steps = -(-minutes // step_minutes)
    step = step_minutes * 60
    current = int((time.time() if now is None else now) // 60) * 60
    first = current - (steps * step_minutes - 1) * 60
    buckets = [Bucket(first + i * step) for i in range(steps)]
    for minute, counts in backend.read_metric_minutes(first, current, queue).items():
        if first <= minute <= current:
            buckets[(minute - first) // step].add(counts)
    return buckets

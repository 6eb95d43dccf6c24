"""Steering jobs from outside the worker: cancel.

``tourno queue cancel`` and the web dashboard call :func:`cancel`, so both
mean the same thing by it:

* a waiting or delayed job is deleted at once, and ``job.cancelled`` fires
  here, in the caller's process;
* a running job is flagged. Its worker hears of it from its monitor thread
  (a NOTIFY or Redis pub/sub message, else the check each heartbeat
  interval), the job can see it with ``self.cancel_requested()``, and when
  its attempt ends (returned or raised) the worker deletes it instead of
  retrying it, and fires ``job.cancelled`` there. A prefetched job that was
  not started yet is not run at all. A flagged job that went back to the
  queue first (its attempt had just failed, its batch was handed back, its
  worker died) is never claimed again: the monitors' sweep deletes it.

A job is named by the id ``dispatch()`` returned (the worker's log shows
it) or by its payload's uuid.
"""

from __future__ import annotations

import dataclasses
import json
import uuid as uuidlib
from collections.abc import Iterable
from typing import Any

from tourno.queue import backends, events, metrics, workflows
from tourno.queue.backends.base import CancelledJob, QueueBackend
from tourno.queue.job import payload_uuid

__all__ = ["CancelResult", "cancel", "emit_cancelled"]

#: Job ids are PostgreSQL bigints (and Redis counters): a larger number names no job.
MAX_ID = 2**63 - 1


@dataclasses.dataclass
class CancelResult:
    """What :func:`cancel` did, for the caller to report."""

    #: Waiting or delayed jobs, deleted.
    removed: list[CancelledJob]
    #: Running jobs, flagged: their workers stop them when their attempt ends.
    flagged: list[CancelledJob]
    #: The given ids or uuids that matched no job, in the order given.
    unknown: list[str]

    @property
    def count(self) -> int:
        return len(self.removed) + len(self.flagged)


def _uuid_forms(ident: str) -> set[str]:
    """The spellings a payload may store ``ident`` under: as given, and the
    canonical lower-case form when it is a uuid."""
    forms = {ident}
    try:
        forms.add(str(uuidlib.UUID(ident)))
    except ValueError:
        pass
    return forms


def cancel(
    idents: Iterable[str | int], backend: QueueBackend | None = None, count_metrics: bool = True
) -> CancelResult:
    """Cancel the jobs named by ``idents`` (ids or uuids); see the module's
    docstring for what happens to a waiting and to a running job. With
    ``count_metrics`` (``TOURNO_QUEUE_METRICS``), each job deleted here is
    counted as cancelled in the persisted metrics (a running one is counted by
    its worker, when its attempt ends)."""
    backend = backend or backends.current()
    wanted: list[tuple[str, int | None, set[str]]] = []
    for raw in idents:
        ident = str(raw).strip()
        if ident.isdigit():
            number = int(ident)
            wanted.append((ident, number if number <= MAX_ID else None, set()))
        elif ident:
            wanted.append((ident, None, _uuid_forms(ident)))
    ids = sorted({n for _, n, _ in wanted if n is not None})
    uuids = sorted({u for _, _, forms in wanted for u in forms})
    found = backend.cancel(ids, uuids) if ids or uuids else []

    by_id = {job.id for job in found}
    by_uuid = {payload_uuid(job.payload) for job in found}
    unknown = [
        ident
        for ident, number, forms in wanted
        if not (number in by_id if number is not None else forms & by_uuid)
    ]
    removed = [job for job in found if not job.running]
    if removed and count_metrics:
        counts = metrics.MetricsBuffer()
        for job in removed:
            count_cancelled(counts, job)
        backend.write_metrics(counts.take())
    for job in removed:
        workflows.after_cancel(job.payload)
        emit_cancelled(job)
    return CancelResult(removed, [job for job in found if job.running], unknown)


def _name_and_uuid(job: CancelledJob) -> tuple[str | None, str | None]:
    """The job's name and uuid from its stored payload (None for either that
    it does not hold: a cancelled job may have a malformed payload)."""
    try:
        payload = json.loads(job.payload)
    except (TypeError, ValueError):
        payload = None
    if not isinstance(payload, dict):
        return None, None
    name, uuid = payload.get("job"), payload.get("uuid")
    return (name if isinstance(name, str) else None), (uuid if isinstance(uuid, str) else None)


def count_cancelled(counts: metrics.MetricsBuffer, job: CancelledJob) -> None:
    """Count ``job``, deleted before it ran again, as cancelled (an attempt
    that never ran: no runtime, no wait)."""
    name, _ = _name_and_uuid(job)
    counts.count(job.queue, name or metrics.UNKNOWN_JOB, "cancelled", None, None)


def emit_cancelled(job: CancelledJob, **fields: Any) -> None:
    """``job.cancelled`` for a job known by its row only (deleted here or by
    the monitors' sweep): its name and uuid come from the payload."""
    if not events.wanted("job.cancelled"):
        return
    name, uuid = _name_and_uuid(job)
    events.emit("job.cancelled", job=name, uuid=uuid, id=job.id, queue=job.queue, **fields)

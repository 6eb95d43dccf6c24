"""Tourno's job-queue engine. It knows nothing about tournaments."""

# The claim-batch module (``tourno.queue.batch``) is imported before the
# workflows, so that the name ``batch`` here is the workflow function: a
# submodule sets its attribute on the package only when it is first loaded.
import tourno.queue.batch  # noqa: F401
from tourno.queue import events
from tourno.queue.events import Event
from tourno.queue.exceptions import (
    InvalidPayload,
    JobLeaseLost,
    JobTimeout,
    MaxAttemptsExceeded,
    QueueError,
    RetryDeadlinePassed,
    Snooze,
)
from tourno.queue.job import Job, PendingJob, dispatch_many, registered
from tourno.queue.workflows import Batch, batch, chain

__all__ = [
    "Batch",
    "Event",
    "InvalidPayload",
    "Job",
    "JobLeaseLost",
    "JobTimeout",
    "MaxAttemptsExceeded",
    "PendingJob",
    "QueueError",
    "RetryDeadlinePassed",
    "Snooze",
    "batch",
    "chain",
    "dispatch_many",
    "events",
    "registered",
]

"""Tourno's job-queue engine. It knows nothing about tournaments."""

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

__all__ = [
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
    "dispatch_many",
    "events",
    "registered",
]

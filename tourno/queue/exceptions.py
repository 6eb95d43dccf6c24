"""Every exception the queue engine raises, in one place."""

from __future__ import annotations


class QueueError(Exception):
    """Base class for queue errors."""


class InvalidPayload(QueueError):
    """A job row cannot be turned back into a job: not JSON, an unknown job
    name, or arguments that no longer fit the job class. Never retried."""


class JobTimeout(QueueError):
    """Raised inside a job that ran past its timeout."""


class MaxAttemptsExceeded(QueueError):
    """A job was claimed more times than it may be tried (for example after
    its worker died while running it)."""


class RetryDeadlinePassed(QueueError):
    """A job's ``retry_until`` has passed."""


class WorkerAborted(BaseException):
    """Raised in the main thread by a second stop signal: abandon the job now.

    A BaseException so that a job's ``except Exception`` cannot swallow it.
    """


class DuplicateJobName(QueueError):
    """Two different job classes registered under the same name."""

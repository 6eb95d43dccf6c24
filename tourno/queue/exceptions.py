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


class Snooze(Exception):  # noqa: N818 - named for what the job says, like River's JobSnooze
    """Raised in ``handle`` to run the job again after ``seconds``, without
    spending an attempt (a job with ``tries = 1`` may snooze any number of
    times). The middleware raises it to put a job off (a rate limit, a held key)."""

    def __init__(self, seconds: float = 0.0) -> None:
        seconds = float(seconds)
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"Snooze needs a finite number of seconds >= 0, not {seconds!r}")
        super().__init__(f"snoozed for {seconds:g} s")
        self.seconds = seconds


class WorkerAborted(BaseException):
    """Raised in the main thread by a second stop signal: abandon the job now.

    A BaseException so that a job's ``except Exception`` cannot swallow it.
    """


class DuplicateJobName(QueueError):
    """Two different job classes registered under the same name."""

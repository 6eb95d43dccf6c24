"""Every exception the queue engine raises, in one place."""

from __future__ import annotations

import math


class QueueError(Exception):
    """Base class for queue errors."""


class InvalidPayload(QueueError):
    """A job row cannot be turned back into a job: not JSON, an unknown job
    name, or arguments that no longer fit the job class. Never retried."""


class JobTimeout(QueueError):
    """Raised inside a job that ran past its timeout."""


class JobLeaseLost(QueueError):
    """Raised inside a job whose worker could not write its heartbeat for
    most of the stale window: other workers may soon rescue the job, so this
    one stops it first (self-fencing), and a job never runs on two hosts at
    once. The worker does not retry it: it hands it back to the queue (or
    finds it rescued already)."""


class MaxAttemptsExceeded(QueueError):
    """A job was claimed more times than it may be tried (for example after
    its worker died while running it)."""


class RetryDeadlinePassed(QueueError):
    """A job's ``retry_until`` has passed."""


class Snooze(Exception):
    """Raise it in ``handle()`` to run the job again ``seconds`` from now
    without spending an attempt: ``raise Snooze(30)``. A job with ``tries =
    1`` may snooze any number of times and keeps its one try.

    An ``Exception`` (not a ``QueueError``): it is not a failure, but a job's
    broad ``except Exception`` catches it like any other, so re-raise it."""

    def __init__(self, seconds: float) -> None:
        # Checked here, in the job, so that a bad delay fails the attempt
        # with this message instead of reaching the backend. (Imported here:
        # job.py imports this module.)
        from tourno.queue.job import MAX_SECONDS

        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"Snooze(seconds) takes a number of seconds, got {seconds!r}")
        if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
            raise ValueError(
                f"Snooze(seconds) must be finite, at least 0 and at most {MAX_SECONDS:g}, got {seconds!r}"
            )
        super().__init__(seconds)
        self.seconds = float(seconds)

    def __str__(self) -> str:
        return f"snoozed for {self.seconds:g} s"


class WorkerAborted(BaseException):
    """Raised in the main thread by a second stop signal: abandon the job now.

    A BaseException so that a job's ``except Exception`` cannot swallow it.
    """


class DuplicateJobName(QueueError):
    """Two different job classes registered under the same name."""

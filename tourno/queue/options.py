"""``tourno work``'s options, checked once before the worker starts."""

from __future__ import annotations

import dataclasses

from tourno.queue.job import MAX_SECONDS


@dataclasses.dataclass
class WorkerOptions:
    """``tourno work``'s options, with Laravel's defaults where it has one."""

    queues: list[str] = dataclasses.field(default_factory=lambda: ["default"])
    name: str = "default"
    sleep: float = 3.0
    tries: int = 1
    backoff: list[float] = dataclasses.field(default_factory=lambda: [0.0])
    timeout: float = 60.0
    max_time: float = 0.0
    max_jobs: int = 0
    memory: float = 128.0
    rest: float = 0.0
    stop_when_empty: bool = False
    once: bool = False
    # At most this many jobs are claimed per round trip...
    prefetch: int = 50
    # ...and no more than the worker expects to finish in this many seconds,
    # judged from how long its recent jobs took.
    batch_seconds: float = 0.05
    # A batch held longer than this gives its unstarted jobs back.
    hold: float = 0.5
    # Seconds a timed-out job gets to unwind before the worker exits.
    grace: float = 5.0
    heartbeat_interval: float = 5.0
    stale_after: float = 30.0
    # Count finished jobs in the persisted metrics (TOURNO_QUEUE_METRICS), and
    # fold minutes older than this into the totals (TOURNO_METRICS_RETENTION_DAYS).
    metrics: bool = True
    metrics_retention_days: float = 14.0

    def validate(self) -> None:
        def bad(option: str, why: str) -> ValueError:
            return ValueError(f"--{option}: {why}")

        if not self.queues or any(not q for q in self.queues):
            raise bad("queue", "give one or more queue names separated by commas")
        for option in ("sleep", "timeout", "max_time", "memory", "rest"):
            if getattr(self, option) < 0:
                raise bad(option.replace("_", "-"), "must not be negative")
        if self.tries < 0:
            raise bad("tries", "must not be negative (0 means unlimited)")
        if self.max_jobs < 0:
            raise bad("max-jobs", "must not be negative")
        if not self.backoff or any(b < 0 for b in self.backoff):
            raise bad("backoff", "give seconds like 10 or 10,60,300 (none negative)")
        if self.timeout > MAX_SECONDS or any(b > MAX_SECONDS for b in self.backoff):
            raise bad("timeout/--backoff", f"at most {MAX_SECONDS:g} seconds")
        if self.prefetch < 1:
            raise bad("prefetch", "must be at least 1")

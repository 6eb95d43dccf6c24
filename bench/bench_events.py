"""One trivial lifecycle-event subscriber, for the metrics and events "on"
drains of ``bench/queue.py`` (workers import it with ``--import
bench.bench_events``): the least an application that listens to its jobs
pays, one subscriber to one event (``job.succeeded``, once per job)."""

from __future__ import annotations

from typing import Any

from tourno.queue import events

seen = 0


@events.subscriber("job.succeeded")
def count(event: Any) -> None:
    global seen
    seen += 1

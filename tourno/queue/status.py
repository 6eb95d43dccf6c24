"""The queue's state at a glance, as ``tourno queue status`` and the admin
API show it: sizes per queue, paused queues, live workers, the failed count
and, on the Redis driver, jobs still waiting in ``queue_outbox`` to be handed
over."""

from __future__ import annotations

from typing import Any

from tourno.config import Settings
from tourno.queue.backends.base import QueueStats


def snapshot(settings: Settings, cap: int | None = None) -> dict[str, Any]:
    """Plain values (times as datetimes): the callers format them. With
    ``cap``, the job counts are exact up to it and estimated above (the
    dashboard's refresh; ``db.bounded_count``)."""
    from tourno.queue import backends, failed

    backend = backends.current()
    paused = backend.paused()
    stats = {s.queue: s for s in backend.stats(cap)}
    # A paused queue is listed even when it holds no job: the pause is news.
    for queue in paused.keys() - stats.keys():
        stats[queue] = QueueStats(queue, 0, 0, 0, None)
    data: dict[str, Any] = {
        "connection": backend.connection_name,
        "queues": [
            {
                "queue": s.queue,
                "ready": s.ready,
                "delayed": s.delayed,
                "reserved": s.reserved,
                "oldest_ready_at": s.oldest_ready_at,
                "paused_at": paused.get(s.queue),
            }
            for _, s in sorted(stats.items())
        ],
        "paused": [{"queue": q, "paused_at": at} for q, at in sorted(paused.items())],
        "workers": [
            {
                "id": w.id,
                "name": w.name,
                "hostname": w.hostname,
                "pid": w.pid,
                "queues": w.queues,
                "started_at": w.started_at,
                "heartbeat_at": w.heartbeat_at,
                "current_job_id": w.current_job_id,
                "jobs_done": w.jobs_done,
            }
            for w in backend.workers(settings.worker_stale_after)
        ],
        "failed": failed.count(cap=cap),
    }
    if settings.queue_connection == "redis":
        from tourno.queue.models import OutboxRecord

        # Jobs committed while Redis was unreachable, not yet relayed to it.
        data["waiting_for_redis"] = OutboxRecord.select().count()
    return data

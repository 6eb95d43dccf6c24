"""``GET /metrics``: the queue, mail and scheduler for Prometheus.

The text is produced by ``prometheus-client`` from a custom collector that
reads the shared state on each scrape: the persisted job counters
(``tourno.queue.metrics``, written by every worker on every host, so any
``tourno serve`` process reports the same cluster-wide figures), the queue
snapshot behind ``tourno queue status``, the mail outbox and the scheduler's
last dispatches. Nothing is kept in this process, so gunicorn's several
workers need no shared registry. Counters only grow: pruning folds old
minutes into totals. No label carries a job id (Prometheus keeps one series
per label set).

With ``TOURNO_METRICS_TOKEN`` set, a scrape must send it as a bearer token.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections import Counter
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from tourno.api.errors import ApiError, unauthorized
from tourno.api.openapi import documented
from tourno.config import Settings

bp = Blueprint("metrics", __name__)


class TournoCollector(Collector):
    """Every Tourno metric, read fresh at each scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        yield from self._queues()
        yield from self._mail()
        yield from self._scheduler()

    def _jobs(self) -> Iterator[Metric]:
        from tourno.queue import backends, metrics

        rows = metrics.totals(backends.current())
        processed = CounterMetricFamily(
            "tourno_jobs_processed",
            "Job attempts finished, by outcome (succeeded is a job done)",
            labels=["queue", "job", "outcome"],
        )
        for row in rows:
            for outcome in metrics.OUTCOMES:
                processed.add_metric([row.queue, row.job, outcome], getattr(row.counts, outcome))
        yield processed
        duration = SummaryMetricFamily(
            "tourno_job_duration_seconds", "Seconds job attempts ran", labels=["queue"]
        )
        wait = SummaryMetricFamily(
            "tourno_job_wait_seconds",
            "Seconds from a job becoming available to an attempt starting",
            labels=["queue"],
        )
        for queue, counts in metrics.by_queue(rows).items():
            duration.add_metric([queue], count_value=counts.runs, sum_value=counts.runtime_sum)
            wait.add_metric([queue], count_value=counts.runs, sum_value=counts.wait_sum)
        yield duration
        yield wait

    def _queues(self) -> Iterator[Metric]:
        from tourno.queue.status import snapshot

        data = snapshot(self.settings)
        now = dt.datetime.now(dt.UTC)
        jobs = GaugeMetricFamily(
            "tourno_queue_jobs", "Jobs in the queue now, by state", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "tourno_queue_oldest_ready_age_seconds",
            "Age of the oldest job ready to run (0 when none is waiting)",
            labels=["queue"],
        )
        # The snapshot lists a paused queue even when it holds no job.
        paused = GaugeMetricFamily("tourno_queue_paused", "1 while the queue is paused", labels=["queue"])
        for q in data["queues"]:
            for state in ("ready", "delayed", "reserved"):
                jobs.add_metric([q["queue"], state], q[state])
            at = q["oldest_ready_at"]
            oldest.add_metric([q["queue"]], max((now - at).total_seconds(), 0.0) if at else 0.0)
            paused.add_metric([q["queue"]], 1 if q["paused_at"] is not None else 0)
        yield jobs
        yield oldest
        yield paused
        yield GaugeMetricFamily("tourno_failed_jobs", "Jobs in failed_jobs", value=data["failed"])
        workers = GaugeMetricFamily(
            "tourno_workers", "Workers with a fresh heartbeat, per host", labels=["hostname"]
        )
        for host, n in sorted(Counter(w["hostname"] for w in data["workers"]).items()):
            workers.add_metric([host], n)
        yield workers

    def _mail(self) -> Iterator[Metric]:
        from tourno.mail.store import outbox_status

        outbox = GaugeMetricFamily("tourno_mail_outbox", "Emails in the outbox, by status", labels=["status"])
        for status, n in outbox_status().items():
            outbox.add_metric([status], n)
        yield outbox

    def _scheduler(self) -> Iterator[Metric]:
        from tourno.scheduler.status import last_dispatches

        last = GaugeMetricFamily(
            "tourno_scheduler_last_dispatch_timestamp_seconds",
            "When the scheduler last dispatched each periodic task (Unix time)",
            labels=["task"],
        )
        for task, at in sorted(last_dispatches().items()):
            last.add_metric([task], at.timestamp())
        yield last


def _check_token(settings: Settings) -> None:
    expected = settings.metrics_token
    if not expected:
        return
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    # Constant time: the comparison must not tell how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise unauthorized("send the metrics token: Authorization: Bearer <TOURNO_METRICS_TOKEN>")


@bp.get("/metrics")
@documented(
    "Prometheus metrics of the queue, mail and scheduler (a bearer token when TOURNO_METRICS_TOKEN is set)",
    text="text/plain",
)
def metrics_view() -> Response:
    from tourno.queue import backends

    settings: Settings = current_app.config["TOURNO_SETTINGS"]
    _check_token(settings)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TournoCollector(settings))
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    backend = backends.current()
    try:
        body = encoder(registry)
    except backend.connection_errors as exc:
        raise ApiError(503, "unavailable", f"the queue is unreachable: {exc}") from None
    return Response(body, status=200, content_type=content_type)

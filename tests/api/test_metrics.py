"""``GET /metrics`` through Flask's test client, on every queue driver: the
text parses as Prometheus's format, carries the documented names and labels,
equals what the workers did, and asks for the token when one is set."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_worker
from tests.queue import test_queue_contract as contract
from tests.queue.test_metrics import drain_with_a_worker_killed
from tests.support.drivers import Driver
from tests.support.jobs import Boom, Flaky, Noop, RecordRun
from tourno.api import create_app
from tourno.mail.models import EmailStatus
from tourno.queue import dispatch_many, pauses
from tourno.scheduler.models import ScheduleRun

driver = contract.driver
procs = contract.procs

TOKEN = "metrics-token-0123456789"


def scrape(driver: Driver, token: str | None = None, **settings) -> tuple[int, str, str]:
    app = create_app(dataclasses.replace(driver.qdb.settings, **settings), init_database=False)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = app.test_client().get("/metrics", headers=headers)
    return r.status_code, r.headers.get("Content-Type", ""), r.get_data(as_text=True)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the parsed exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def processed(values: dict, queue: str, job: str, outcome: str) -> float | None:
    key = ("tourno_jobs_processed_total", (("job", job), ("outcome", outcome), ("queue", queue)))
    return values.get(key)


def test_metrics_equal_the_jobs_run_and_carry_every_family(driver: Driver):
    dispatch_many(Noop(n=i) for i in range(3))
    Flaky(key="flaky", fail_times=1).dispatch()
    Boom(key="boom").dispatch()
    RecordRun(key="later").dispatch(delay=3600)
    code, _ = run_worker(tries=2, backoff=[0])
    assert code == 0
    # A live worker on a host, a scheduler's dispatch.
    driver.backend.register_worker("w", "host-a", 4242, ["default"])
    at = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    ScheduleRun.create(task="CheckMatchDeadlinesJob", slot=at, dispatched_at=at, host="host-a")

    status, content_type, text = scrape(driver)
    assert status == 200, text
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {
        "tourno_jobs_processed",
        "tourno_job_duration_seconds",
        "tourno_job_wait_seconds",
        "tourno_queue_jobs",
        "tourno_queue_oldest_ready_age_seconds",
        "tourno_queue_paused",
        "tourno_failed_jobs",
        "tourno_workers",
        "tourno_mail_outbox",
        "tourno_scheduler_last_dispatch_timestamp_seconds",
    } <= set(families)
    assert families["tourno_jobs_processed"].type == "counter"
    assert families["tourno_job_duration_seconds"].type == "summary"
    # No job ids in any label.
    for family in families.values():
        for s in family.samples:
            assert not {"id", "job_id", "uuid"} & set(s.labels), s

    values = samples(text)
    assert processed(values, "default", "Noop", "succeeded") == 3
    assert processed(values, "default", "Flaky", "succeeded") == 1
    assert processed(values, "default", "Flaky", "released") == 1
    assert processed(values, "default", "Boom", "released") == 1
    assert processed(values, "default", "Boom", "failed") == 1
    assert processed(values, "default", "Noop", "cancelled") == 0
    q = (("queue", "default"),)
    assert values[("tourno_job_duration_seconds_count", q)] == 7  # attempts that ran
    assert values[("tourno_job_wait_seconds_count", q)] == 7
    assert values[("tourno_job_duration_seconds_sum", q)] >= 0
    assert values[("tourno_queue_jobs", (("queue", "default"), ("state", "delayed")))] == 1
    assert values[("tourno_queue_jobs", (("queue", "default"), ("state", "ready")))] == 0
    assert values[("tourno_queue_oldest_ready_age_seconds", q)] == 0
    assert values[("tourno_queue_paused", q)] == 0
    assert values[("tourno_failed_jobs", ())] == 1
    # A paused queue reads 1, even one that holds no job.
    pauses.pause(["mail"])
    again = samples(scrape(driver)[2])
    assert again[("tourno_queue_paused", (("queue", "mail"),))] == 1
    assert again[("tourno_queue_paused", q)] == 0
    assert values[("tourno_workers", (("hostname", "host-a"),))] == 1, [
        k for k in values if k[0] == "tourno_workers"
    ]
    for s in EmailStatus:
        assert values[("tourno_mail_outbox", (("status", s.value),))] == 0
    assert values[
        ("tourno_scheduler_last_dispatch_timestamp_seconds", (("task", "CheckMatchDeadlinesJob"),))
    ] == (at.timestamp())


def test_metrics_after_a_drain_with_a_worker_killed_mid_way(driver: Driver, procs):
    n = 200
    runs = drain_with_a_worker_killed(driver, procs, n)
    status, _, text = scrape(driver)
    assert status == 200
    done = processed(samples(text), "default", "RecordRun", "succeeded")
    # At least once: never fewer than the jobs, never more than the runs.
    assert n <= done <= runs


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, 401), ("Bearer wrong-token-0123456789", 401), (f"Basic {TOKEN}", 401), (f"Bearer {TOKEN}", 200)],
)
def test_the_metrics_token_is_required_when_set(qdb, header, expected):
    app = create_app(dataclasses.replace(qdb.settings, metrics_token=TOKEN), init_database=False)
    headers = {"Authorization": header} if header else {}
    r = app.test_client().get("/metrics", headers=headers)
    assert r.status_code == expected
    if expected == 401:
        assert r.get_json()["error"]["code"] == "unauthorized"
        assert "tourno_jobs_processed" not in r.get_data(as_text=True)
    else:
        assert any(
            f.name == "tourno_failed_jobs" for f in text_string_to_metric_families(r.get_data(as_text=True))
        )


def test_without_a_token_setting_metrics_are_open(qdb):
    app = create_app(qdb.settings, init_database=False)
    r = app.test_client().get("/metrics")
    assert r.status_code == 200
    assert "# TYPE tourno_jobs_processed_total counter" in r.get_data(as_text=True)

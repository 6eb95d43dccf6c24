"""The worker's log: one line per finished job, JSON on request.

A real ``tourno work`` process drains a few jobs (one succeeds, one is
retried then succeeds, one fails for good) and its stderr is read back: in
the text format each finished attempt is one line, the failure names the
uuid ``tourno queue retry`` takes, and the stop line counts jobs, not
attempts; with ``TOURNO_LOG_FORMAT=json`` every line parses as one JSON
object with the documented keys.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import tourno_cmd
from tests.support.jobs import Boom, Flaky, RecordRun
from tourno.queue.models import FailedJobRecord, JobRecord

pytestmark = pytest.mark.slow

JOB_KEYS = {"job", "uuid", "id", "queue", "attempt", "duration_ms", "outcome"}


def _drain(qdb, **env: str) -> subprocess.CompletedProcess:
    ok = RecordRun(key="ok").dispatch()
    flaky = Flaky(key="flaky", fail_times=1).dispatch()
    boom = Boom(key="boom").dispatch()
    run = subprocess.run(
        tourno_cmd("work", "--stop-when-empty", "--sleep", "0.1", "--tries", "2", "--backoff", "0"),
        env=qdb.env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert JobRecord.select().count() == 0
    run.ids = (ok, flaky, boom)  # type: ignore[attr-defined]
    return run


def test_text_log_has_a_line_per_finished_attempt(qdb):
    run = _drain(qdb)
    ok, flaky, boom = run.ids  # type: ignore[attr-defined]
    lines = run.stderr.splitlines()
    done = [line for line in lines if " DONE " in line]
    assert any(f"RecordRun #{ok} DONE" in line for line in done), run.stderr
    assert any(f"Flaky #{flaky} DONE" in line for line in done), run.stderr
    assert len(done) == 2, run.stderr
    # The retried attempt: one warning line, then the DONE above.
    assert sum(f"Flaky #{flaky} RETRY in 0 s (attempt 1)" in line for line in lines) == 1, run.stderr
    # Boom fails on both of its tries: one retry line, one failure line naming its uuid.
    record = FailedJobRecord.get()
    failed_lines = [line for line in lines if f"Boom #{boom} FAILED after 2 attempt(s)" in line]
    assert len(failed_lines) == 1, run.stderr
    assert f"retry with: tourno queue retry {record.uuid}" in failed_lines[0]
    # The stop line counts 3 jobs (2 succeeded, 1 failed), not 5 attempts.
    stop = [line for line in lines if "stopped (empty)" in line]
    assert stop and "3 job(s) finished (1 failed, 2 succeeded), 2 retried later" in stop[0], run.stderr

    # The uuid in the line is what `tourno queue retry` takes.
    retried = subprocess.run(
        tourno_cmd("queue", "retry", record.uuid), env=qdb.env(), capture_output=True, text=True, timeout=60
    )
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert FailedJobRecord.select().count() == 0 and JobRecord.select().count() == 1


def test_json_log_lines_parse_and_carry_the_job_fields(qdb):
    run = _drain(qdb, TOURNO_LOG_FORMAT="json")
    ok, flaky, boom = run.ids  # type: ignore[attr-defined]
    records = []
    for line in run.stderr.splitlines():
        record = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        records.append(record)
    assert all(r["time"].endswith("+00:00") for r in records)
    jobs = [r for r in records if "outcome" in r]
    assert {(r["id"], r["outcome"]) for r in jobs} == {
        (ok, "succeeded"),
        (flaky, "released"),
        (flaky, "succeeded"),
        (boom, "released"),
        (boom, "failed"),
    }
    for r in jobs:
        assert JOB_KEYS <= r.keys(), r
        assert r["queue"] == "default" and r["logger"] == "tourno.queue.worker"
        assert isinstance(r["duration_ms"], float) and r["duration_ms"] >= 0
        assert len(r["uuid"]) == 36 and r["worker_id"] is not None
    failed = next(r for r in jobs if r["outcome"] == "failed")
    assert failed["job"] == "tests.support.jobs.Boom" or failed["job"].endswith("Boom")
    assert failed["attempt"] == 2 and failed["level"] == "ERROR"
    assert failed["uuid"] == FailedJobRecord.get().uuid


def test_a_bad_log_format_is_refused_with_one_line(qdb):
    run = subprocess.run(
        tourno_cmd("queue", "status"),
        env=qdb.env(TOURNO_LOG_FORMAT="yaml"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "TOURNO_LOG_FORMAT" in run.stderr and "json" in run.stderr

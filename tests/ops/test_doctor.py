"""``tourno doctor`` run as an operator runs it, against real databases: it
finds each problem it claims to find, says what to do, and exits 1."""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest

from tests.conftest import ROOT, tourno_cmd
from tourno.db import utcnow
from tourno.mail.models import EmailOutbox
from tourno.queue import backends


def doctor(env: dict[str, str], *args: str, cwd=ROOT) -> tuple[int, dict]:
    proc = subprocess.run(
        tourno_cmd("doctor", "--json", *args), env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    return proc.returncode, json.loads(proc.stdout)


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_bad_configuration_is_one_failed_check(qdb):
    code, report = doctor(qdb.env(TOURNO_QUEUE_CONNECTION="carrier-pigeon"))
    assert code == 1
    assert report["checks"] == [
        {
            "name": "configuration",
            "status": "fail",
            "detail": report["checks"][0]["detail"],
            "hint": report["checks"][0]["hint"],
        }
    ]
    assert "TOURNO_QUEUE_CONNECTION" in report["checks"][0]["detail"]


def test_unreachable_database_and_pending_migrations(tmp_path, pg):
    env = pg.env(TOURNO_DATABASE_URL="postgresql://postgres@127.0.0.1:1/nothing")
    code, report = doctor(env)
    assert code == 1 and by_name(report)["database"]["status"] == "fail"
    # A missing SQLite file is reported, not created (connecting would create it).
    env = pg.env(TOURNO_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    code, report = doctor(env)
    assert code == 1 and by_name(report)["database"]["status"] == "fail"
    assert by_name(report)["database"]["hint"] == "create it with `tourno db migrate`"
    assert not (tmp_path / "empty.db").exists()
    (tmp_path / "empty.db").touch()
    code, report = doctor(env)
    checks = by_name(report)
    assert code == 1
    assert checks["migrations"]["status"] == "fail" and "tourno db migrate" in checks["migrations"]["hint"]
    assert "workers" not in checks  # not checked against tables that do not exist


def test_a_healthy_installation_passes_and_each_problem_is_reported(qdb):
    backend = backends.current()
    backend.register_worker("w1", "host-a", 4242, ["default"])
    from tourno.scheduler.models import ScheduleRun

    ScheduleRun.create(task="SendBulkEmailsJob", slot=utcnow(), dispatched_at=utcnow(), host="host-a")
    code, report = doctor(qdb.env(TOURNO_WORKER_STALE_AFTER="120"))
    checks = by_name(report)
    assert code == 0, report
    assert checks["workers"]["detail"].startswith("1 alive (host-a: 1)")
    assert {c["status"] for c in report["checks"]} == {"ok"}

    # Problems: an old ready job, a failed job, late mail, a silent scheduler.
    from tests.support.jobs import Noop

    Noop().dispatch()
    old = utcnow() - dt.timedelta(minutes=30)
    qdb.database.execute_sql(qdb.sql("UPDATE jobs SET available_at = %s, created_at = %s"), (old, old))
    qdb.database.execute_sql(
        qdb.sql(
            "INSERT INTO failed_jobs (uuid, connection, queue, payload, exception, failed_at) "
            "VALUES ('u-1', 'database', 'default', '{}', 'RuntimeError: boom', %s)"
        ),
        (utcnow(),),
    )
    EmailOutbox.create(dedupe_key="x", to_email="a@example.com", template="match_ready", available_at=old)
    ScheduleRun.update(dispatched_at=old).execute()
    code, report = doctor(qdb.env(TOURNO_WORKER_STALE_AFTER="120"))
    checks = by_name(report)
    assert code == 1
    assert checks["waiting jobs"]["status"] == "warn"
    assert checks["failed jobs"]["status"] == "warn" and "1 failed" in checks["failed jobs"]["detail"]
    assert checks["mail outbox"]["status"] == "warn"
    assert checks["scheduler"]["status"] == "fail"


def test_no_live_worker_fails(qdb):
    code, report = doctor(qdb.env())
    assert code == 1
    assert by_name(report)["workers"]["status"] == "fail"


@pytest.mark.parametrize(
    ("stop", "status"),
    [("60", "fail"), ("3660", "ok")],
)
def test_stop_timeout_must_exceed_the_job_timeout(qdb, tmp_path, stop, status):
    (tmp_path / "supervisord.conf").write_text(
        "[program:tourno-worker]\n"
        "command=tourno work --timeout 3600\n"
        f"stopwaitsecs={stop}\n"
        "[group:tourno]\nprograms=tourno-worker\n"
    )
    _, report = doctor(qdb.env(), "--dir", str(tmp_path))
    check = by_name(report)["supervisord stopwaitsecs"]
    assert check["status"] == status
    assert "systemd TimeoutStopSec" not in by_name(report)


def test_jobs_stuck_before_redis_are_reported(pg, tmp_path):
    """On the Redis driver, jobs committed but never handed to Redis (no
    worker relaying them) show as a warning on the queue check."""
    from tourno.queue.models import OutboxRecord

    old = utcnow() - dt.timedelta(minutes=5)
    OutboxRecord.create(
        uuid="u-1", queue="default", payload="{}", priority=0, available_at=old, created_at=old
    )
    _, report = doctor(pg.env(TOURNO_QUEUE_CONNECTION="redis", TOURNO_REDIS_URL="redis://127.0.0.1:6379/0"))
    check = by_name(report)["queue"]
    assert check["status"] == "warn" and "1 job(s)" in check["detail"]

"""``tourno doctor`` run as an operator runs it, against real databases: it
finds each problem it claims to find, says what to do, and exits 1."""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess

import pytest

from tests.conftest import ROOT, tourno_cmd
from tourno import doctor as tdoctor
from tourno.cli.up import render_config
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


#: What a production install sets instead of the local defaults.
PRODUCTION = {
    "TOURNO_MAIL_TRANSPORT": "smtp",
    "TOURNO_APP_URL": "https://play.example.com",
    "TOURNO_SECRET_KEY": "0123456789abcdef0123456789abcdef",
}


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
    code, report = doctor(qdb.env(TOURNO_WORKER_STALE_AFTER="120", **PRODUCTION))
    checks = by_name(report)
    assert code == 0, report
    assert checks["workers"]["detail"].startswith("1 alive (host-a: 1)")
    assert {c["status"] for c in report["checks"]} == {"ok"}, report

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


YEARLY = ";".join(
    f"{task}=0 0 1 1 *"
    for task in (
        "AutoStartTournamentsJob",
        "CheckFullTournamentsJob",
        "CheckMatchDeadlinesJob",
        "SendMatchDeadlineWarningsJob",
        "SendBulkEmailsJob",
    )
)


def test_a_rare_schedule_is_not_a_silent_scheduler(qdb):
    """Silence is measured against the schedule: with every task once a year,
    a dispatch months ago is on time; one before the last slot is not."""
    from tourno.scheduler.models import ScheduleRun

    backends.current().register_worker("w1", "host-a", 4242, ["default"])
    new_year = utcnow().replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    run = ScheduleRun.create(
        task="SendBulkEmailsJob", slot=new_year, dispatched_at=new_year + dt.timedelta(seconds=30), host="a"
    )
    env = qdb.env(TOURNO_WORKER_STALE_AFTER="120", TOURNO_SCHEDULE=YEARLY)
    _, report = doctor(env)
    assert by_name(report)["scheduler"]["status"] == "ok", report
    ScheduleRun.update(dispatched_at=new_year - dt.timedelta(days=3)).where(
        ScheduleRun.id == run.id
    ).execute()
    _, report = doctor(env)
    check = by_name(report)["scheduler"]
    assert (
        check["status"] == "fail"
        and f"slot of {new_year:%Y-%m-%d} 00:00 UTC was not dispatched" in check["detail"]
    )


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


# -- settings that only suit the local demo ---------------------------------------------


def test_local_defaults_are_warned_about_outside_tourno_up(qdb, tmp_path):
    env = qdb.env(TOURNO_MAIL_TRANSPORT="console", TOURNO_APP_URL="http://localhost:8000")
    env.pop("TOURNO_SECRET_KEY", None)
    code, report = doctor(env, "--dir", str(tmp_path))
    checks = by_name(report)
    for name, words in [
        ("mail transport", "nobody receives them"),
        ("app URL", "http://localhost:8000"),
        ("secret key", "TOURNO_SECRET_KEY is not set"),
    ]:
        assert checks[name]["status"] == "warn", checks[name]
        assert words in checks[name]["detail"]
        assert checks[name]["hint"]
    strict, _ = doctor(env, "--dir", str(tmp_path), "--strict")
    assert strict == 1

    for url in ("http://127.0.0.1:8000", "http://[::1]:8000", "http://app.localhost"):
        _, report = doctor({**env, "TOURNO_APP_URL": url}, "--dir", str(tmp_path))
        assert by_name(report)["app URL"]["status"] == "warn", url

    _, report = doctor({**env, **PRODUCTION}, "--dir", str(tmp_path))
    checks = by_name(report)
    assert [checks[n]["status"] for n in ("mail transport", "app URL", "secret key")] == ["ok"] * 3
    assert "0123456789abcdef" not in json.dumps(report)


def test_the_local_demo_is_not_warned_about(qdb, tmp_path):
    # Where `tourno up` runs, it has written its supervisord configuration.
    home = tmp_path / ".tourno"
    home.mkdir()
    (home / "supervisord.conf").write_text(
        render_config(home=home, cwd=tmp_path, workers=2, bind="127.0.0.1:8000")
    )
    assert tdoctor.is_local_demo(tmp_path)
    env = qdb.env(TOURNO_MAIL_TRANSPORT="console")
    env.pop("TOURNO_SECRET_KEY", None)
    _, report = doctor(env, "--dir", str(tmp_path))
    checks = by_name(report)
    for name in ("mail transport", "app URL", "secret key"):
        assert checks[name]["status"] == "ok", checks[name]
        assert "tourno up" in checks[name]["detail"]
    # Any other file of that name is not the demo's.
    (home / "supervisord.conf").write_text("[supervisord]\n")
    assert not tdoctor.is_local_demo(tmp_path)


# -- stop timeouts: systemd's syntax, read with configparser ------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("3660", 3660),
        ("1h", 3600),
        ("1h 1min", 3660),
        ("1h1min", 3660),
        ("61 min", 3660),
        ("2.5s", 2.5),
        ("500ms", 0.5),
        ("1d", 86400),
        ("2w", 14 * 86400),
        ("1M", 30.44 * 86400),  # M is months, m minutes
        ("1m", 60),
        ("infinity", math.inf),
        ("0", math.inf),  # TimeoutStopSec=0 disables the timeout too
    ],
)
def test_systemd_time_spans(text, seconds):
    assert tdoctor.parse_timespan(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "1x", "1h x", "-5", "1 hours ago", "Infinity"])
def test_bad_systemd_time_spans(text):
    with pytest.raises(ValueError, match="not a systemd time span"):
        tdoctor.parse_timespan(text)


UNIT = """\
[Unit]
Description=Tourno queue worker %i
# TimeoutStopSec=1 in a comment counts for nothing

[Service]
ExecStart=/opt/tourno/venv/bin/tourno work --name worker-%i \\
    --timeout=3600 --sleep 3
{stop}
"""


@pytest.mark.parametrize(
    ("stop", "status", "shown"),
    [
        ("TimeoutStopSec=1h", "fail", "3600 s, but a job may run 3600 s"),
        ("TimeoutStopSec=1h 1min", "ok", "3660 s > longest job 3600 s"),
        ("TimeoutStopSec=infinity", "ok", "infinity > longest job 3600 s"),
        ("TimeoutSec=2h", "ok", "7200 s > longest job"),
        ("TimeoutSec=2h\nTimeoutStopSec=30", "fail", "30 s, but"),
        ("TimeoutStopSec = 90min", "ok", "5400 s >"),
        ("", "fail", "90 s (not set: the default), but a job may run 3600 s"),
        ("TimeoutStopSec=soon", "warn", "cannot read it"),
    ],
)
def test_systemd_stop_timeout(qdb, tmp_path, stop, status, shown):
    (tmp_path / "systemd").mkdir()
    (tmp_path / "systemd" / "tourno-worker@.service").write_text(UNIT.format(stop=stop))
    _, report = doctor(qdb.env(), "--dir", str(tmp_path))
    check = by_name(report)["systemd TimeoutStopSec"]
    assert check["status"] == status, check
    assert shown in check["detail"], check


def test_systemd_drop_ins_override_the_unit(tmp_path):
    unit = tmp_path / "tourno-worker@.service"
    unit.write_text(UNIT.format(stop="TimeoutStopSec=60"))
    drop_ins = tmp_path / "tourno-worker@.service.d"
    drop_ins.mkdir()
    (drop_ins / "10-longer.conf").write_text("[Service]\nTimeoutStopSec=2h\n")
    check = tdoctor._systemd_check(unit, 0.0, None)
    assert check.status == "ok", check
    assert "7200 s" in check.detail and "1 drop-in" in check.detail
    # An empty assignment resets to the default.
    (drop_ins / "20-reset.conf").write_text("[Service]\nTimeoutStopSec=\n")
    check = tdoctor._systemd_check(unit, 0.0, None)
    assert check.status == "fail" and "not set: the default" in check.detail, check


def test_what_systemd_has_loaded_wins_over_the_file(tmp_path):
    unit = tmp_path / "tourno-worker@.service"
    unit.write_text(UNIT.format(stop="TimeoutStopSec=2h"))
    shown = "LoadState=loaded\nTimeoutStopUSec=1h\nFragmentPath=" + str(unit) + "\n"
    loaded = tdoctor.parse_systemctl_show(shown)
    assert loaded == tdoctor.LoadedUnit(3600.0, unit)
    # The file was raised to 2 h, but systemd still runs with 1 h: not reloaded.
    check = tdoctor._systemd_check(unit, 0.0, loaded)
    assert check.status == "fail", check
    assert "loaded by systemd" in check.detail and "the file says 7200 s" in check.detail
    assert "systemctl daemon-reload" in check.hint
    # Loaded and long enough, but not what the file says: a warning.
    check = tdoctor._systemd_check(unit, 0.0, tdoctor.LoadedUnit(5000.0, unit))
    assert check.status == "warn" and "daemon-reload" in check.hint
    # In step: the file's verdict.
    assert tdoctor._systemd_check(unit, 0.0, tdoctor.LoadedUnit(7200.0, unit)).status == "ok"
    assert tdoctor.parse_systemctl_show("LoadState=loaded\nTimeoutStopUSec=infinity\n").stop == math.inf
    assert tdoctor.parse_systemctl_show("LoadState=not-found\nTimeoutStopUSec=1min 30s\n") is None


def test_no_systemd_to_ask_is_no_error():
    assert tdoctor.loaded_systemd_unit(systemctl="/nonexistent/systemctl") is None


def test_supervisord_stopwaitsecs_read_with_configparser(qdb, tmp_path):
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        "[program:tourno-worker]\n"
        "command=tourno work --name %(program_name)s_%(process_num)02d --timeout 600 ; inline comment\n"
        "numprocs=%(ENV_TOURNO_WORKERS)s\n"
    )
    check = tdoctor._supervisord_check(conf, 0.0)
    assert check.status == "fail" and "10 s (not set: the default), but a job may run 600 s" in check.detail
    conf.write_text(conf.read_text() + "stopwaitsecs=660 ; above the timeout\n")
    check = tdoctor._supervisord_check(conf, 0.0)
    assert check.status == "ok" and "660 s > longest job 600 s" in check.detail, check

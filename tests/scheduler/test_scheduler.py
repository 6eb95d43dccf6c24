"""``tourno schedule``: slot maths, exactly-once dispatch per (task, slot)
with several schedulers, resilience (a failing task, a lost connection,
signals), and the ``schedule list`` / ``schedule run`` commands.

The dispatch tests run on PostgreSQL and SQLite; schedulers race in real
threads with their own connections and as real ``tourno schedule`` processes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest
from click.testing import CliRunner, Result

from tests.conftest import _admin, tourno_cmd
from tourno import db as tdb
from tourno.cli import main
from tourno.config import ConfigError, Settings
from tourno.jobs.periodic import (
    AutoStartTournamentsJob,
    CheckMatchDeadlinesJob,
    SendBulkEmailsJob,
)
from tourno.queue import Job
from tourno.queue.models import JobRecord
from tourno.scheduler.cron import parse_cron
from tourno.scheduler.loop import Scheduler, dispatch_slot
from tourno.scheduler.models import JobRun, ScheduleRun
from tourno.scheduler.tasks import TASK_NAMES, Task, task_table

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 28, 12, 7, 30, tzinfo=UTC)


def at(hour: int, minute: int, second: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, 28, hour, minute, second, tzinfo=UTC)


def runs_by_task() -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in ScheduleRun.select():
        counts[run.task] = counts.get(run.task, 0) + 1
    return counts


def jobs_by_name() -> dict[str, int]:
    counts: dict[str, int] = {}
    for rec in JobRecord.select():
        counts[rec.payload["job"]] = counts.get(rec.payload["job"], 0) + 1
    return counts


# -- the task table --------------------------------------------------------------------


def test_task_table_defaults_and_overrides():
    table = {t.name: t.cron.expression for t in task_table(Settings())}
    assert table == {
        "AutoStartTournamentsJob": "*/5 * * * *",
        "CheckFullTournamentsJob": "*/5 * * * *",
        "CheckMatchDeadlinesJob": "*/15 * * * *",
        "SendMatchDeadlineWarningsJob": "*/15 * * * *",
        "SendBulkEmailsJob": "* * * * *",
    }
    assert all(
        t.cron.timezone == "UTC" and t.catch_up and t.source == "class" for t in task_table(Settings())
    )
    # The older minute counts still work, as the cron steps they mean.
    settings = Settings.from_mapping(
        {"TOURNO_SCHEDULE_FREQUENCIES": "SendBulkEmailsJob=2, CheckMatchDeadlinesJob=120"}
    )
    tasks = {t.name: t for t in task_table(settings)}
    assert tasks["SendBulkEmailsJob"].cron.expression == "*/2 * * * *"
    assert tasks["SendBulkEmailsJob"].source == "TOURNO_SCHEDULE_FREQUENCIES"
    assert tasks["CheckMatchDeadlinesJob"].cron.expression == "0 */2 * * *"
    assert tasks["AutoStartTournamentsJob"].cron.expression == "*/5 * * * *"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("SendBulkEmailsJob", "expected Task=minutes pairs"),
        ("SendBulkEmailsJob=0", "expected Task=minutes pairs"),
        ("SendBulkEmailsJob=x", "expected Task=minutes pairs"),
        ("SendBulkEmailsJob=1441", "expected Task=minutes pairs"),
    ],
)
def test_bad_frequencies_name_the_variable(value, message):
    with pytest.raises(ConfigError, match=f"^TOURNO_SCHEDULE_FREQUENCIES: {message}"):
        Settings.from_mapping({"TOURNO_SCHEDULE_FREQUENCIES": value})


def test_an_unknown_task_in_the_frequencies_is_refused_with_the_names():
    settings = Settings.from_mapping({"TOURNO_SCHEDULE_FREQUENCIES": "SendMailJob=3"})
    with pytest.raises(ConfigError, match="TOURNO_SCHEDULE_FREQUENCIES: unknown task 'SendMailJob'") as info:
        task_table(settings)
    for name in TASK_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("variable", ["TOURNO_FULL_REMINDER_MINUTES", "TOURNO_FULL_CANCEL_HOURS"])
@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan"])
def test_bad_full_tournament_limits_name_the_variable(variable, value):
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        Settings.from_mapping({variable: value})


# -- dispatch: exactly once per (task, slot) ---------------------------------------------


def test_a_slot_is_dispatched_once_with_its_job(qdb):
    task = Task("SendBulkEmailsJob", SendBulkEmailsJob, parse_cron("* * * * *"))
    first = dispatch_slot(task, at(12, 7), host="a", now=T0)
    assert first is not None and first.job_id is not None
    assert dispatch_slot(task, at(12, 7), host="b", now=T0) is None
    (run,) = ScheduleRun.select()
    assert (run.task, run.slot, run.host, run.job_id, run.job_uuid) == (
        "SendBulkEmailsJob",
        at(12, 7),
        "a",
        first.job_id,
        first.job_uuid,
    )
    (job,) = JobRecord.select()
    assert job.id == first.job_id and job.payload["uuid"] == first.job_uuid
    assert job.payload["job"] == "SendBulkEmailsJob"


REDIS_URL = os.environ.get("TOURNO_TEST_REDIS", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_queue(pg):
    """The Redis driver as the current backend, under a key prefix of its own."""
    redis = pytest.importorskip("redis")
    from tourno.queue import backends
    from tourno.queue.backends.redis import RedisBackend

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI but unreachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    prefix = f"tourno-sched-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    previous = backends.current()
    backend = backends.configure(RedisBackend(f"{REDIS_URL}?prefix={prefix}"))
    yield backend
    backend.close_thread_connection()
    backends.configure(previous)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def test_old_schedule_runs_are_pruned_by_the_next_dispatch(qdb):
    for task in ("SendBulkEmailsJob", "CheckMatchDeadlinesJob"):
        ScheduleRun.create(task=task, slot=at(12, 0) - dt.timedelta(days=31), host="old")
    dispatch_slot(Task("SendBulkEmailsJob", SendBulkEmailsJob, parse_cron("* * * * *")), at(12, 7), now=T0)
    assert sorted((r.task, r.host) for r in ScheduleRun.select()) == [
        ("CheckMatchDeadlinesJob", "old"),
        ("SendBulkEmailsJob", socket.gethostname()),
    ]


def test_with_the_redis_driver_the_job_goes_out_after_commit_once(redis_queue):
    task = Task("SendBulkEmailsJob", SendBulkEmailsJob, parse_cron("* * * * *"))
    first = dispatch_slot(task, at(12, 7), now=T0)
    assert first is not None and first.job_id is not None
    assert dispatch_slot(task, at(12, 7), now=T0) is None
    assert sum(s.ready for s in redis_queue.stats()) == 1
    assert ScheduleRun.get().job_id == first.job_id
    # A surrounding transaction that rolls back takes the slot and the job with it.
    with pytest.raises(RuntimeError):
        with tdb.database.atomic():
            assert dispatch_slot(task, at(12, 8), now=T0) is not None
            raise RuntimeError("rolled back")
    assert sum(s.ready for s in redis_queue.stats()) == 1
    assert ScheduleRun.select().count() == 1


def test_a_tick_dispatches_every_due_task_once_and_only_the_latest_slot(qdb):
    scheduler = Scheduler(task_table(Settings()), host="h1")
    assert {d.task for d in scheduler.tick(T0)} == set(TASK_NAMES)
    assert scheduler.tick(T0) == []  # the same slots: nothing, not even a query
    assert scheduler.tick(at(12, 7, 59)) == []
    # One minute later only the every-minute task has a new slot.
    assert [d.task for d in scheduler.tick(at(12, 8, 1))] == ["SendBulkEmailsJob"]
    # After downtime (12:08 -> 13:02): one dispatch per task, for the latest slot, no backlog.
    later = scheduler.tick(at(13, 2, 10))
    assert {d.task: d.slot for d in later} == {
        "AutoStartTournamentsJob": at(13, 0),
        "CheckFullTournamentsJob": at(13, 0),
        "CheckMatchDeadlinesJob": at(13, 0),
        "SendMatchDeadlineWarningsJob": at(13, 0),
        "SendBulkEmailsJob": at(13, 2),
    }
    assert runs_by_task() == {**dict.fromkeys(TASK_NAMES, 2), "SendBulkEmailsJob": 3}
    # The scans are unique jobs: their earlier run is still pending, so no second
    # job queues up behind it; the mail drain is not unique.
    assert jobs_by_name() == {**dict.fromkeys(TASK_NAMES, 1), "SendBulkEmailsJob": 3}
    assert all(d.job_id is None and d.job_uuid is None for d in later if d.task != "SendBulkEmailsJob")
    absorbed = ScheduleRun.select().where(ScheduleRun.slot == at(13, 0))
    assert [(r.job_id, r.job_uuid) for r in absorbed] == [(None, None)] * 4


def test_a_scheduler_started_later_does_not_redispatch_a_slot(qdb):
    Scheduler(task_table(Settings()), host="h1").tick(T0)
    assert Scheduler(task_table(Settings()), host="h2").tick(at(12, 7, 50)) == []
    assert set(r.host for r in ScheduleRun.select()) == {"h1"}


def test_two_schedulers_racing_in_threads_dispatch_each_slot_once(qdb):
    # Two schedulers, each in its own thread with its own connection, tick
    # through the same 20 simulated minutes in lockstep, so every slot is raced.
    minutes = [at(12, 0, 1) + dt.timedelta(minutes=i) for i in range(20)]
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []
    dispatched: dict[str, list] = {}

    def run(host: str) -> None:
        try:
            tdb.open_connection()
            scheduler = Scheduler(task_table(Settings()), host=host)
            mine = dispatched.setdefault(host, [])
            for now in minutes:
                barrier.wait()
                mine += scheduler.tick(now)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()
        finally:
            tdb.database.close()

    threads = [threading.Thread(target=run, args=(h,)) for h in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    slots = {
        "AutoStartTournamentsJob": 4,
        "CheckFullTournamentsJob": 4,
        "CheckMatchDeadlinesJob": 2,
        "SendMatchDeadlineWarningsJob": 2,
        "SendBulkEmailsJob": 20,
    }
    assert runs_by_task() == slots
    both = dispatched["a"] + dispatched["b"]
    assert len(both) == sum(slots.values())
    assert len({(d.task, d.slot) for d in both}) == len(both)
    # Every dispatched mail drain is one job (not unique, so none was absorbed).
    drains = {d.job_id for d in both if d.task == "SendBulkEmailsJob"}
    assert len(drains) == 20 and None not in drains
    assert jobs_by_name()["SendBulkEmailsJob"] == 20


def test_two_scheduler_processes_dispatch_each_slot_once(pg):
    env = pg.env(TOURNO_IMPORTS="")
    procs = [
        subprocess.Popen(tourno_cmd("schedule", "--once"), env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    runs = list(ScheduleRun.select())
    # Each task at least once (a minute may tick over between the two processes).
    assert {r.task for r in runs} == set(TASK_NAMES)
    assert len({(r.task, r.slot) for r in runs}) == len(runs)
    drains = [r for r in runs if r.task == "SendBulkEmailsJob"]
    assert jobs_by_name()["SendBulkEmailsJob"] == len(drains)
    assert sum(jobs_by_name().values()) == len(runs)
    assert sum(o.count("dispatched ") for o in outputs) == len(runs)


# -- resilience ---------------------------------------------------------------------------


@dataclasses.dataclass
class SchedBrokenJob(Job):
    """A job that cannot be dispatched: its argument is not JSON."""

    thing: object = dataclasses.field(default_factory=object)

    def handle(self) -> None:
        raise AssertionError("never runs")


def test_a_task_that_raises_does_not_stop_the_others(qdb, caplog):
    tasks = [
        Task("AutoStartTournamentsJob", AutoStartTournamentsJob, parse_cron("*/5 * * * *")),
        Task("SchedBrokenJob", SchedBrokenJob, parse_cron("* * * * *")),
        Task("CheckMatchDeadlinesJob", CheckMatchDeadlinesJob, parse_cron("*/15 * * * *")),
    ]
    scheduler = Scheduler(tasks, host="h")
    with caplog.at_level(logging.ERROR, logger="tourno.scheduler.loop"):
        done = scheduler.tick(T0)
    assert [d.task for d in done] == ["AutoStartTournamentsJob", "CheckMatchDeadlinesJob"]
    assert scheduler.errors == 1
    assert "could not dispatch SchedBrokenJob for slot 2026-11-28 12:07" in caplog.text
    # Its transaction rolled back: no slot row without a job.
    assert runs_by_task() == {"AutoStartTournamentsJob": 1, "CheckMatchDeadlinesJob": 1}
    # The broken slot is let go (not retried every second); the next slot is tried again.
    assert scheduler.tick(T0) == []
    assert scheduler.errors == 1
    scheduler.tick(at(12, 8))
    assert scheduler.errors == 2
    # --once reports a failed task in its exit code.
    assert Scheduler(tasks, host="h2").run(once=True, install_signals=False) == 1


def test_a_lost_connection_is_waited_out_and_the_slot_dispatched(pg, caplog):
    clock = [T0]
    scheduler = Scheduler(task_table(Settings()), host="h", clock=lambda: clock[0])
    scheduler._safe_tick()
    assert len(ScheduleRun.select()) == 5
    # The server drops our connection (as a restart or a failover would).
    pid = tdb.database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    admin = _admin()
    admin.connect()
    try:
        admin.execute_sql("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        admin.close()
    clock[0] = at(12, 10, 5)
    with caplog.at_level(logging.WARNING, logger="tourno.scheduler.loop"):
        scheduler._safe_tick()
    assert "database unavailable" in caplog.text
    assert scheduler.errors == 0
    assert (
        ScheduleRun.select().where(ScheduleRun.slot == at(12, 10)).count() == 3
    )  # the 5- and 1-minute tasks


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_scheduler_process_exits_0_on_a_signal(pg, sig):
    proc = subprocess.Popen(
        tourno_cmd("schedule", "--tick", "0.2"),
        env=pg.env(TOURNO_IMPORTS=""),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while ScheduleRun.select().count() < 5:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the scheduler dispatched nothing"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"stopped ({sig.name})" in err


def test_the_scheduler_tells_systemd_it_is_ready_and_stopping(pg):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"tourno-sched-{uuid.uuid4().hex}"
    sock.bind("\0" + name)  # an abstract socket: no path length limit to worry about
    sock.settimeout(30)
    proc = subprocess.Popen(
        tourno_cmd("schedule", "--tick", "0.2"),
        env=pg.env(TOURNO_IMPORTS="", NOTIFY_SOCKET="@" + name),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=scheduling 5 tasks"]
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096).decode().split("\n") == ["STOPPING=1", "STATUS=stopping (SIGTERM)"]
        _, err = proc.communicate(timeout=30)
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err


# -- the commands ---------------------------------------------------------------------------


@pytest.fixture
def cli(qdb):
    """``cli("schedule", "list")`` on the test database, in process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(*args: str) -> Result:
        tdb.database.close()
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TOURNO_")}
        env.update(TOURNO_DATABASE_URL=qdb.url, COLUMNS="200", FORCE_COLOR=None)
        result = CliRunner().invoke(main, list(args), env=env, prog_name="tourno")
        tdb.open_connection()
        return result

    yield run
    root.handlers[:] = handlers
    root.setLevel(level)


def rows(output: str) -> dict[str, list[str]]:
    table = [
        [c.strip() for c in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]
    return {row[0]: row[1:] for row in table}


def test_schedule_list_shows_cron_next_slot_and_last_outcome(qdb, cli):
    result = cli("schedule", "list")
    assert result.exit_code == 0, result.output
    table = rows(result.stdout)
    assert list(table) == list(TASK_NAMES)
    assert table["CheckMatchDeadlinesJob"][:2] == ["*/15 * * * *", "UTC"]
    assert table["SendBulkEmailsJob"][:2] == ["* * * * *", "UTC"]
    assert table["CheckMatchDeadlinesJob"][3:] == ["-", "-", "-", "-", ""]

    now = tdb.utcnow()
    Scheduler(task_table(Settings()), host="h").tick(now)
    JobRun.create(
        job="CheckMatchDeadlinesJob",
        started_at=now,
        finished_at=now,
        seen=7,
        changed=5,
        failed=2,
        skipped=False,
        duration_ms=1500,
        error="RuntimeError: boom\nmore",
        host="h",
        pid=1,
    )
    table = rows(cli("schedule", "list").stdout)
    slot = parse_cron("*/15 * * * *").latest(now)
    cells = table["CheckMatchDeadlinesJob"]
    assert cells[2] == (slot + dt.timedelta(minutes=15)).strftime("%Y-%m-%d %H:%M")  # next slot
    assert cells[3] == slot.strftime("%Y-%m-%d %H:%M")  # last dispatched
    assert cells[5:] == ["1.5s", "7/5/2", "RuntimeError: boom"]

    result = cli("schedule", "list", "--json")
    assert result.exit_code == 0
    data = {d["task"]: d for d in map(json.loads, result.stdout.splitlines())}
    assert set(data) == set(TASK_NAMES)
    row = data["CheckMatchDeadlinesJob"]
    assert row["frequency_minutes"] == 15
    assert (row["cron"], row["timezone"], row["catch_up"]) == ("*/15 * * * *", "UTC", True)
    assert row["next_slot"] == (slot + dt.timedelta(minutes=15)).isoformat()
    assert row["last_dispatched_slot"] == slot.isoformat()
    assert row["last_run"]["seen"] == 7 and row["last_run"]["error"].startswith("RuntimeError: boom")
    assert data["SendBulkEmailsJob"]["last_run"] is None


def test_schedule_run_dispatches_the_task_now(qdb, cli):
    result = cli("schedule", "run", "CheckFullTournamentsJob")
    assert result.exit_code == 0, result.output
    (job,) = JobRecord.select()
    assert job.payload["job"] == "CheckFullTournamentsJob"
    assert result.stdout.strip() == f"dispatched CheckFullTournamentsJob as job #{job.id}"
    # Names are matched without regard to case; a unique scan already pending is not doubled.
    result = cli("schedule", "run", "checkfulltournamentsjob")
    assert result.exit_code == 0
    assert "already pending" in result.stdout
    assert JobRecord.select().count() == 1
    assert ScheduleRun.select().count() == 0  # outside the slots


def test_schedule_run_refuses_an_unknown_task_listing_the_names(qdb, cli):
    result = cli("schedule", "run", "SendMail")
    assert result.exit_code == 2
    assert "error: unknown task 'SendMail'; the tasks are " in result.stderr
    for name in TASK_NAMES:
        assert name in result.stderr
    assert JobRecord.select().count() == 0


@pytest.mark.parametrize("args", [["schedule"], ["schedule", "list"], ["schedule", "run"]])
def test_schedule_help(args):
    result = CliRunner().invoke(main, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: tourno {' '.join(args)}") or result.stdout.startswith(
        f"Usage: main {' '.join(args)}"
    )
    assert "Options:" in result.stdout

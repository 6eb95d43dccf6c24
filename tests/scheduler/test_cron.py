"""Cron expressions for any job: the slot maths (cronsim, injected clock),
timezones across daylight-saving changes, TOURNO_SCHEDULE, refusing bad
expressions at start, catch-up after downtime, a slot owed after a database
error, and a user's job class picked up by ``tourno schedule``.

Dispatch runs on PostgreSQL, SQLite and Redis (the contract's ``driver``);
the commands run as real ``tourno`` processes where the import of a user's
module matters (the test process never imports one, so its own task table
stays the five built-ins).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import subprocess
import threading
from typing import ClassVar

import pytest

from tests.conftest import _admin, tourno_cmd
from tests.queue import test_queue_contract as contract
from tests.support.drivers import IMPORTS
from tourno import db as tdb
from tourno.config import ConfigError, Settings
from tourno.queue import Job
from tourno.scheduler.cron import InvalidCron, parse_cron, step_minutes
from tourno.scheduler.loop import Scheduler
from tourno.scheduler.models import ScheduleRun
from tourno.scheduler.status import snapshot
from tourno.scheduler.tasks import TASK_NAMES, InvalidSchedule, Task, task_table

driver = contract.driver
procs = contract.procs

UTC = dt.UTC
PARIS = "Europe/Paris"
NOW = dt.datetime(2026, 11, 28, 12, 7, 30, tzinfo=UTC)  # a Saturday


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# -- the slot maths (pure) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "latest", "following"),
    [
        # steps
        ("*/5 * * * *", utc(2026, 11, 28, 12, 5), utc(2026, 11, 28, 12, 10)),
        ("0 */6 * * *", utc(2026, 11, 28, 12, 0), utc(2026, 11, 28, 18, 0)),
        # ranges, with and without a step
        ("0-10/5 9-17 * * *", utc(2026, 11, 28, 12, 5), utc(2026, 11, 28, 12, 10)),
        ("0-4 13 * * *", utc(2026, 11, 27, 13, 4), utc(2026, 11, 28, 13, 0)),
        # lists
        ("0,30 * * * *", utc(2026, 11, 28, 12, 0), utc(2026, 11, 28, 12, 30)),
        ("15 14 1,15 * *", utc(2026, 11, 15, 14, 15), utc(2026, 12, 1, 14, 15)),
        # day of week: numbers, names, 0 and 7 both Sunday, a stepped range
        ("0 9 * * 1-5", utc(2026, 11, 27, 9, 0), utc(2026, 11, 30, 9, 0)),
        ("0 12 * * SUN", utc(2026, 11, 22, 12, 0), utc(2026, 11, 29, 12, 0)),
        ("0 0 * * 7", utc(2026, 11, 22, 0, 0), utc(2026, 11, 29, 0, 0)),
        ("5 4 * * 0", utc(2026, 11, 22, 4, 5), utc(2026, 11, 29, 4, 5)),
        ("*/20 8-10 * * MON,WED", utc(2026, 11, 25, 10, 40), utc(2026, 11, 30, 8, 0)),
        ("0 22 * * 1-5/2", utc(2026, 11, 27, 22, 0), utc(2026, 11, 30, 22, 0)),
        # the last day of the month
        ("0 0 L * *", utc(2026, 10, 31, 0, 0), utc(2026, 11, 30, 0, 0)),
    ],
)
def test_latest_and_next_slot_of_an_expression(expression, latest, following):
    cron = parse_cron(expression)
    assert cron.latest(NOW) == latest
    assert cron.next_after(NOW) == following
    assert cron.latest(NOW).tzinfo == UTC and cron.next_after(NOW).tzinfo == UTC


def test_a_slot_exactly_now_is_the_latest_and_the_next_is_after_it():
    cron = parse_cron("*/5 * * * *")
    assert cron.latest(utc(2026, 11, 28, 12, 5)) == utc(2026, 11, 28, 12, 5)
    assert cron.next_after(utc(2026, 11, 28, 12, 5)) == utc(2026, 11, 28, 12, 10)
    assert cron.latest(utc(2026, 11, 28, 12, 4, 59, 999999)) == utc(2026, 11, 28, 12, 0)
    assert cron.slots(utc(2026, 11, 28, 12, 0), utc(2026, 11, 28, 12, 20)) == [
        utc(2026, 11, 28, 12, m) for m in (5, 10, 15, 20)
    ]
    with pytest.raises(ValueError, match="timezone-aware"):
        cron.latest(dt.datetime(2026, 11, 28, 12, 0))


def test_spaces_are_normalised_and_minute_steps_read_as_minutes():
    assert parse_cron("  */5  *\t* * * ").expression == "*/5 * * * *"
    assert [
        step_minutes(parse_cron(e)) for e in ("* * * * *", "*/15 * * * *", "*/7 * * * *", "0 * * * *")
    ] == [
        1,
        15,
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "bad cron expression '61 * * * *': Bad minute"),
        ("*/0 * * * *", "Bad minute"),
        ("* 24 * * *", "Bad hour"),
        ("0 0 32 * *", "Bad day-of-month"),
        ("0 0 30 2 *", "Bad day-of-month"),
        ("0 0 * 13 *", "Bad month"),
        ("* * * * 8", "Bad day-of-week"),
        ("* * * * FUNDAY", "Bad day-of-week"),
        ("5-1 * * * *", "Bad minute"),
        ("* * * *", "expected 5 fields"),
        ("0 * * * * *", "expected 5 fields"),  # cronsim's seconds field: slots are minutes
        ("", "expected 5 fields"),
    ],
)
def test_bad_expressions_are_refused_saying_why(expression, message):
    with pytest.raises(InvalidCron, match=message.replace("*", r"\*")) as info:
        parse_cron(expression)
    assert "\n" not in str(info.value)


def test_a_bad_timezone_is_refused():
    with pytest.raises(InvalidCron, match="unknown timezone 'Europe/Atlantis'"):
        parse_cron("* * * * *", "Europe/Atlantis")
    assert parse_cron("0 3 * * *", "utc").latest(NOW) == utc(2026, 11, 28, 3, 0)


# -- timezones and daylight saving --------------------------------------------------------


def test_a_fixed_local_time_across_both_daylight_saving_changes():
    nightly = parse_cron("30 2 * * *", PARIS)
    # Spring forward (29 March 2026, 02:00 -> 03:00 local): 02:30 does not
    # exist that night; it runs once, at 03:00 local (01:00 UTC).
    assert nightly.slots(utc(2026, 3, 27), utc(2026, 3, 31)) == [
        utc(2026, 3, 27, 1, 30),  # 02:30 CET
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    # Fall back (25 October 2026, 03:00 -> 02:00 local): 02:30 happens twice;
    # it runs once, the first time.
    assert nightly.slots(utc(2026, 10, 23), utc(2026, 10, 27)) == [
        utc(2026, 10, 23, 0, 30),
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]
    # Looking back from inside the changes finds the same slots.
    assert nightly.latest(utc(2026, 3, 29, 1, 0, 30)) == utc(2026, 3, 29, 1, 0)
    assert nightly.latest(utc(2026, 10, 25, 1, 45)) == utc(2026, 10, 25, 0, 30)


def test_an_hourly_expression_keeps_real_hours_through_the_changes():
    hourly = parse_cron("0 * * * *", PARIS)
    # The local day of 25 October has 25 hours, and 25 distinct slots.
    day = hourly.slots(utc(2026, 10, 24, 21, 59), utc(2026, 10, 25, 22, 59))
    assert len(day) == len(set(day)) == 25
    assert all(b - a == dt.timedelta(hours=1) for a, b in zip(day, day[1:], strict=False))
    # 29 March has 23.
    assert len(hourly.slots(utc(2026, 3, 28, 22, 59), utc(2026, 3, 29, 21, 59))) == 23


@dataclasses.dataclass
class CronProbeJob(Job):
    """A plain job to dispatch (no ``cron`` of its own: the test process's
    task table must stay the built-ins); not unique, so each dispatch queues one."""

    def handle(self) -> None:
        pass


def probe(
    expression: str, timezone: str = "UTC", *, catch_up: bool = True, name: str = "CronProbeJob"
) -> Task:
    return Task(name, CronProbeJob, parse_cron(expression, timezone), catch_up)


def slots_of(task: str) -> list[dt.datetime]:
    return [r.slot for r in ScheduleRun.select().where(ScheduleRun.task == task).order_by(ScheduleRun.slot)]


def test_the_scheduler_follows_local_time_through_the_autumn_change(qdb):
    # A Paris-time task ticked every minute, by an injected clock, through the
    # night the clocks go back: each slot once, 02:30 local once.
    tasks = [probe("30 2 * * *", PARIS, name="Nightly"), probe("0 * * * *", PARIS, name="Hourly")]
    scheduler = Scheduler(tasks, host="h")
    start = utc(2026, 10, 24, 22, 0, 5)
    for minute in range(5 * 60):
        scheduler.tick(start + dt.timedelta(minutes=minute))
    # Yesterday's slot is caught up by the first tick; then 02:30 local once.
    assert slots_of("Nightly") == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30)]
    assert slots_of("Hourly") == [utc(2026, 10, 24, 22 + h, 0) for h in range(2)] + [
        utc(2026, 10, 25, h, 0) for h in range(3)
    ]
    assert scheduler.dispatched == 7 and scheduler.errors == 0


# -- the task table and TOURNO_SCHEDULE ---------------------------------------------------


def test_the_built_ins_declare_their_cron_on_the_class():
    from tourno.jobs import periodic

    assert periodic.AutoStartTournamentsJob.cron == "*/5 * * * *"
    assert periodic.CheckFullTournamentsJob.cron == "*/5 * * * *"
    assert periodic.CheckMatchDeadlinesJob.cron == "*/15 * * * *"
    assert periodic.SendMatchDeadlineWarningsJob.cron == "*/15 * * * *"
    assert periodic.SendBulkEmailsJob.cron == "* * * * *"
    # The declarations are class attributes, not job arguments.
    assert periodic.AutoStartTournamentsJob().args() == {}
    assert periodic.SendBulkEmailsJob().args() == {"budget_seconds": 50.0}
    assert [t.name for t in task_table(Settings())] == list(TASK_NAMES)


def test_a_subclass_is_scheduled_only_if_it_declares_its_own_cron():
    from tourno.jobs.periodic import CheckMatchDeadlinesJob

    class QuieterDeadlinesJob(CheckMatchDeadlinesJob):
        pass

    assert QuieterDeadlinesJob.cron == "*/15 * * * *"  # inherited, but not a task
    assert "QuieterDeadlinesJob" not in {t.name for t in task_table(Settings())}


def test_tourno_schedule_overrides_an_expression():
    settings = Settings.from_mapping(
        {"TOURNO_SCHEDULE": "AutoStartTournamentsJob=*/2 * * * *; SendBulkEmailsJob = 0,30  *  * * * ;"}
    )
    assert settings.schedule == ("AutoStartTournamentsJob=*/2 * * * *", "SendBulkEmailsJob=0,30 * * * *")
    assert dict(settings.describe())["TOURNO_SCHEDULE"] == (
        "AutoStartTournamentsJob=*/2 * * * *;SendBulkEmailsJob=0,30 * * * *"
    )
    tasks = {t.name: t for t in task_table(settings)}
    assert tasks["AutoStartTournamentsJob"].cron.expression == "*/2 * * * *"
    assert tasks["AutoStartTournamentsJob"].source == "TOURNO_SCHEDULE"
    assert tasks["SendBulkEmailsJob"].cron.latest(NOW) == utc(2026, 11, 28, 12, 0)
    assert tasks["CheckFullTournamentsJob"].cron.expression == "*/5 * * * *"
    assert tasks["CheckFullTournamentsJob"].source == "class"
    # With the older minute counts too (as `tourno up --demo` sets them), TOURNO_SCHEDULE wins.
    both = Settings.from_mapping(
        {
            "TOURNO_SCHEDULE": "SendBulkEmailsJob=*/3 * * * *",
            "TOURNO_SCHEDULE_FREQUENCIES": "SendBulkEmailsJob=1,CheckFullTournamentsJob=1",
        }
    )
    tasks = {t.name: t for t in task_table(both)}
    assert (tasks["SendBulkEmailsJob"].cron.expression, tasks["SendBulkEmailsJob"].source) == (
        "*/3 * * * *",
        "TOURNO_SCHEDULE",
    )
    assert tasks["CheckFullTournamentsJob"].cron.expression == "* * * * *"


@pytest.mark.parametrize(
    "value",
    ["AutoStartTournamentsJob", "AutoStartTournamentsJob=", "=*/2 * * * *", "Auto Start=* * * * *"],
)
def test_a_malformed_tourno_schedule_names_the_variable(value):
    with pytest.raises(
        ConfigError, match=r"^TOURNO_SCHEDULE: expected Task=cron expression pairs separated by ';'"
    ):
        Settings.from_mapping({"TOURNO_SCHEDULE": value})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TOURNO_SCHEDULE": "AutoStartTournamentsJob=60 * * * *"},
            r"^TOURNO_SCHEDULE: AutoStartTournamentsJob: bad cron expression '60 \* \* \* \*': Bad minute$",
        ),
        (
            {"TOURNO_SCHEDULE": "SendBulkEmailsJob=* * * *"},
            r"^TOURNO_SCHEDULE: SendBulkEmailsJob: expected 5 fields",
        ),
        (
            {"TOURNO_SCHEDULE": "SendMailJob=* * * * *"},
            r"^TOURNO_SCHEDULE: unknown task 'SendMailJob'; the tasks are ",
        ),
        (
            {"TOURNO_SCHEDULE_FREQUENCIES": "SendBulkEmailsJob=7"},
            r"^TOURNO_SCHEDULE_FREQUENCIES: SendBulkEmailsJob=7 is not a cron step .* SendBulkEmailsJob=\*/10",
        ),
    ],
)
def test_a_bad_override_is_refused_naming_the_variable(env, message):
    settings = Settings.from_mapping(env)
    with pytest.raises(InvalidSchedule, match=message) as info:
        task_table(settings)
    assert isinstance(info.value, ConfigError) and "\n" not in str(info.value)


def test_tourno_schedule_twice_for_one_task_is_refused():
    with pytest.raises(ConfigError, match="^TOURNO_SCHEDULE: SendBulkEmailsJob is set twice$"):
        Settings.from_mapping(
            {"TOURNO_SCHEDULE": "SendBulkEmailsJob=* * * * *;SendBulkEmailsJob=*/2 * * * *"}
        )


# -- the commands refuse a bad expression at start ------------------------------------------


def with_users_jobs(driver) -> dict[str, str]:
    """A ``tourno`` subprocess's environment on ``driver``, importing the user's cron jobs too."""
    env = driver.env()
    env["TOURNO_IMPORTS"] = f"{IMPORTS},tests.support.jobs_cron"
    return env


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        tourno_cmd(*args),
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            "expression",
            "error: tests.support.jobs_cron_bad.BadCronJob.cron: bad cron expression '61 * * * *': Bad minute",
        ),
        (
            "timezone",
            "error: tests.support.jobs_cron_bad.BadCronJob.cron_timezone: unknown timezone 'Mars/Olympus_Mons'",
        ),
        (
            "arguments",
            "error: tests.support.jobs_cron_bad.BadCronJob: a job with a cron is dispatched without",
        ),
    ],
)
@pytest.mark.parametrize("command", [("schedule",), ("schedule", "list"), ("schedule", "--once")])
def test_a_bad_class_declaration_stops_the_scheduler_at_start(pg, kind, message, command):
    env = pg.env(TOURNO_IMPORTS="tests.support.jobs_cron_bad", CRON_TEST_BAD=kind)
    result = run_cli(env, *command)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ScheduleRun.select().count() == 0


def test_a_bad_tourno_schedule_stops_the_scheduler_at_start(pg):
    for value in ("CheckMatchDeadlinesJob=0 0 31 2 *", "CheckMatchDeadlinesJob"):
        for command in (("schedule",), ("schedule", "list")):
            result = run_cli(pg.env(TOURNO_IMPORTS="", TOURNO_SCHEDULE=value), *command)
            assert result.returncode == 2, result.stderr
            assert result.stderr.startswith("error: TOURNO_SCHEDULE: "), result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
    assert ScheduleRun.select().count() == 0


# -- dispatch: exactly once, catch-up ----------------------------------------------------------


def test_two_schedulers_on_their_own_connections_dispatch_each_cron_slot_once(driver):
    # Two loop instances, each in its own thread with its own connection, tick
    # through the same simulated hour in lockstep (twice per minute), so every
    # slot of every expression is raced.
    tasks = [
        probe("*/7 * * * *", name="Steps"),
        probe("3-5,40 12 * * *", name="RangeList"),
        probe("*/10 13 * * 6", PARIS, name="SaturdayParis"),  # 13:00 Paris = 12:00 UTC
        probe("0 12 * * 1-5", name="Weekdays"),  # a Saturday: never
    ]
    ticks = [utc(2026, 11, 28, 12, 0, 1) + dt.timedelta(seconds=30 * i) for i in range(120)]
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []
    dispatched: dict[str, list] = {}

    def run(host: str) -> None:
        try:
            tdb.open_connection()
            scheduler = Scheduler(tasks, host=host)
            mine = dispatched.setdefault(host, [])
            for now in ticks:
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
        t.join(90)
    assert not errors, errors
    tdb.open_connection()
    # The first tick catches up each task's latest slot, however old.
    expected = {
        "Steps": [utc(2026, 11, 28, 12, m) for m in range(0, 60, 7)],
        "RangeList": [utc(2026, 11, 27, 12, 40)] + [utc(2026, 11, 28, 12, m) for m in (3, 4, 5, 40)],
        "SaturdayParis": [utc(2026, 11, 28, 12, m) for m in range(0, 60, 10)],
        "Weekdays": [utc(2026, 11, 27, 12, 0)],  # Friday's; none on the Saturday
    }
    assert {name: slots_of(name) for name in expected} == expected
    both = dispatched["a"] + dispatched["b"]
    assert sorted((d.task, d.slot) for d in both) == sorted((n, s) for n, ss in expected.items() for s in ss)
    # Every dispatch is one job on the queue, none twice.
    assert driver.size() == sum(len(s) for s in expected.values()) == len({d.job_uuid for d in both})


def test_two_scheduler_processes_dispatch_each_slot_once(driver):
    env = with_users_jobs(driver)
    procs_ = [
        subprocess.Popen(tourno_cmd("schedule", "--once"), env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[1] for p in procs_]
    assert [p.returncode for p in procs_] == [0, 0], outputs
    runs = list(ScheduleRun.select())
    # Each catching-up task at least once (a minute may tick over between the
    # two processes), each (task, slot) once; the nightly task does not catch up.
    catching_up = {*TASK_NAMES, "MinutelyProbeJob"}
    # (NightlyDigestJob too only when this runs within a minute of 01:30 UTC.)
    assert catching_up <= {r.task for r in runs} <= {*catching_up, "NightlyDigestJob"}
    assert len({(r.task, r.slot) for r in runs}) == len(runs)
    assert sum(o.count("dispatched ") for o in outputs) == len(runs)


def test_after_downtime_only_the_latest_missed_slot_runs(driver):
    tasks = [
        probe("*/5 * * * *", name="CatchUp"),
        probe("*/5 * * * *", catch_up=False, name="NoCatchUp"),
        probe("0 3 * * *", name="Daily"),
    ]
    first = Scheduler(tasks, host="h1")
    first.tick(utc(2026, 11, 28, 12, 0, 10))
    # The scheduler is down from 12:00 to 13:02; a new one starts.
    second = Scheduler(tasks, host="h2")
    second.tick(utc(2026, 11, 28, 13, 2, 10))
    assert slots_of("CatchUp") == [utc(2026, 11, 28, 12, 0), utc(2026, 11, 28, 13, 0)]
    assert slots_of("NoCatchUp") == [utc(2026, 11, 28, 12, 0)]  # 13:00 was missed: none
    assert slots_of("Daily") == [utc(2026, 11, 28, 3, 0)]  # the latest, once
    # The same for one scheduler whose clock jumped (suspended VM, long outage).
    first.tick(utc(2026, 11, 28, 13, 3))
    assert len(slots_of("CatchUp")) == 2 and len(slots_of("NoCatchUp")) == 1
    # The next slots on time run for both.
    for scheduler in (first, second):
        scheduler.tick(utc(2026, 11, 28, 13, 5, 20))
    assert slots_of("CatchUp")[-1] == slots_of("NoCatchUp")[-1] == utc(2026, 11, 28, 13, 5)
    assert driver.size() == len(ScheduleRun.select()) == 6


def test_a_task_without_catch_up_dispatches_a_slot_seen_on_time(qdb):
    task = probe("*/5 * * * *", catch_up=False, name="NoCatchUp")
    assert Scheduler([task]).tick(utc(2026, 11, 28, 12, 5, 59)) != []
    assert Scheduler([task]).tick(utc(2026, 11, 28, 12, 11, 1)) == []
    assert slots_of("NoCatchUp") == [utc(2026, 11, 28, 12, 5)]


# -- a database error never drops a slot -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FailingFirst(Task):
    """A task whose first dispatches hit a real database error (``hurt``
    runs inside the dispatch's transaction); then it dispatches normally."""

    hurt: ClassVar[list] = []

    def make_job(self) -> Job:
        if self.hurt:
            self.hurt.pop(0)()
        return super().make_job()


def test_a_killed_connection_mid_dispatch_leaves_the_slot_owed_and_it_runs_once(pg, caplog):
    def terminate_own_backend() -> None:
        pid = tdb.database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        admin = _admin()
        admin.connect()
        try:
            admin.execute_sql("SELECT pg_terminate_backend(%s)", (pid,))
        finally:
            admin.close()

    FailingFirst.hurt[:] = [terminate_own_backend]
    task = FailingFirst("Killed", CronProbeJob, parse_cron("*/5 * * * *"))
    clock = [utc(2026, 11, 28, 12, 5, 1)]
    scheduler = Scheduler([task], host="h", clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="tourno.scheduler.loop"):
        scheduler._safe_tick()  # killed after its schedule_runs insert; reconnects, tries again
    warnings = [
        r for r in caplog.records if r.name == "tourno.scheduler.loop" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "database unavailable" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    assert slots_of("Killed") == [utc(2026, 11, 28, 12, 5)]
    assert pg.scalar("SELECT count(*) FROM jobs") == 1
    # Later ticks in the same slot, and another scheduler, do not dispatch it again.
    clock[0] = utc(2026, 11, 28, 12, 9, 59)
    scheduler._safe_tick()
    Scheduler([task], host="h2").tick(clock[0])
    assert pg.scalar("SELECT count(*) FROM jobs") == 1
    assert scheduler.errors == 0


def test_a_database_error_keeps_the_slot_for_the_next_tick(qdb, caplog):
    slot = utc(2026, 11, 28, 12, 5)

    def collide() -> None:
        # A real constraint violation inside the dispatch's transaction.
        ScheduleRun.create(task="Collides", slot=slot, host="x")

    FailingFirst.hurt[:] = [collide, collide]
    task = FailingFirst("Collides", CronProbeJob, parse_cron("*/5 * * * *"))
    scheduler = Scheduler([task], host="h")
    with caplog.at_level(logging.WARNING, logger="tourno.scheduler.loop"):
        assert scheduler.tick(utc(2026, 11, 28, 12, 5, 1)) == []
        assert scheduler.tick(utc(2026, 11, 28, 12, 5, 2)) == []
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "tourno.scheduler.loop" and r.levelno >= logging.WARNING
    ]
    assert len(lines) == 2
    assert lines[0].startswith("could not dispatch Collides for slot 2026-11-28 12:05 (IntegrityError")
    assert lines[0].endswith("trying again next tick")
    assert scheduler.errors == 2 and slots_of("Collides") == []  # rolled back
    (done,) = scheduler.tick(utc(2026, 11, 28, 12, 5, 3))
    assert done.slot == slot and done.job_id is not None
    assert scheduler.tick(utc(2026, 11, 28, 12, 5, 4)) == []
    assert slots_of("Collides") == [slot]
    assert qdb.scalar("SELECT count(*) FROM jobs") == 1


# -- schedule list / run, and a user's job class ---------------------------------------------------


def test_the_next_slot_is_never_in_the_past(qdb):
    tasks = task_table(Settings()) + [probe("30 2 * * *", PARIS, catch_up=False, name="Nightly")]
    for status in snapshot(tasks, NOW):  # no scheduler has run yet
        assert status.next_slot is not None and status.next_slot > NOW
        assert status.last_dispatched_slot is None
    Scheduler(tasks, host="h").tick(NOW - dt.timedelta(hours=3))
    by_task = {s.task: s for s in snapshot(tasks, NOW)}
    assert all(s.next_slot is not None and s.next_slot > NOW for s in by_task.values())
    assert by_task["CheckMatchDeadlinesJob"].next_slot == utc(2026, 11, 28, 12, 15)
    # Due but not dispatched: what a scheduler starting now would do at once.
    assert by_task["CheckMatchDeadlinesJob"].next_due == utc(2026, 11, 28, 12, 0)
    assert by_task["Nightly"].next_slot == utc(2026, 11, 29, 1, 30)
    assert by_task["Nightly"].next_due == by_task["Nightly"].next_slot  # missed, not caught up


def test_schedule_list_shows_a_users_cron_job_and_run_dispatches_it(driver, procs):
    env = with_users_jobs(driver)
    listed = run_cli(env, "schedule", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["task"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert list(rows) == [*TASK_NAMES, "MinutelyProbeJob", "NightlyDigestJob"]
    nightly = rows["NightlyDigestJob"]
    assert (nightly["cron"], nightly["timezone"], nightly["catch_up"]) == ("30 2 * * *", PARIS, False)
    assert nightly["frequency_minutes"] is None and nightly["last_dispatched_slot"] is None
    now = tdb.utcnow()
    assert all(dt.datetime.fromisoformat(r["next_slot"]) > now for r in rows.values())
    # The table, for people.
    table = run_cli(env, "schedule", "list")
    assert table.returncode == 0, table.stderr
    line = next(x for x in table.stdout.splitlines() if "NightlyDigestJob" in x)
    cells = [c.strip() for c in line.strip().strip("│").split("│")]
    assert cells[:3] == ["NightlyDigestJob", "30 2 * * * (no catch-up)", PARIS]
    assert dt.datetime.strptime(cells[3], "%Y-%m-%d %H:%M").replace(tzinfo=UTC) > now - dt.timedelta(
        minutes=1
    )
    assert cells[4:7] == ["-", "-", "-"]
    # run NAME dispatches it now, outside its slots; a worker runs it.
    ran = run_cli(env, "schedule", "run", "nightlydigestjob")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("dispatched NightlyDigestJob as job ")
    assert ScheduleRun.select().count() == 0
    worker = procs.start(env, "work", "--stop-when-empty", "--sleep", "0.1")
    assert worker.wait(timeout=60) == 0
    assert driver.marked("NightlyDigestJob") == "ran", procs.output(worker)


def test_the_scheduler_dispatches_a_users_cron_job_for_a_worker(driver, procs):
    env = with_users_jobs(driver)
    once = run_cli(env, "schedule", "--once")
    assert once.returncode == 0, once.stderr
    assert "dispatched MinutelyProbeJob for slot " in once.stderr
    assert (
        "MinutelyProbeJob at * * * * *" in once.stderr
        and "NightlyDigestJob at 30 2 * * * (Europe/Paris)" in (once.stderr)
    )
    assert [r.task for r in ScheduleRun.select().where(ScheduleRun.task == "MinutelyProbeJob")] == [
        "MinutelyProbeJob"
    ]
    worker = procs.start(env, "work", "--stop-when-empty", "--sleep", "0.1")
    assert worker.wait(timeout=90) == 0
    assert driver.marked("MinutelyProbeJob") == "ran"

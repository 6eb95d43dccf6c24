"""Pausing and resuming queues (``tourno queue pause/resume``) on every driver.

Each test runs on PostgreSQL, SQLite and Redis (the ``driver`` fixture, as in
the contract suite) with real ``tourno work`` processes. What the jobs did is
read from ``test_runs``; what the worker decided, from its log. The only
times asserted are the bounds the feature promises, taken generously: a pause
stops claims within 3 s (promised: about a second), and a resume starts the
waiting jobs within 5 s on a worker whose ``--sleep`` is 30 s.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time

import pytest

from tests.ops.test_doctor import by_name, doctor
from tests.queue import test_queue_contract as contract
from tests.queue.test_queue_contract import start_workers, stop
from tests.queue.test_worker_processes import Procs, wait_for
from tests.support.drivers import Driver
from tests.support.jobs import RecordRun
from tourno.db import SQLITE_TIME_FORMAT, utcnow
from tourno.queue import dispatch_many, pauses

pytestmark = pytest.mark.slow

#: The promised "within a second", with room for a loaded two-core machine.
PAUSE_BOUND = 3.0
#: A resume must start waiting jobs this fast on a worker sleeping 30 s.
RESUME_BOUND = 5.0


# The contract suite's fixtures: every test here runs on PostgreSQL, SQLite and Redis.
driver = contract.driver
procs = contract.procs


def runs(driver: Driver) -> int:
    return driver.qdb.scalar("SELECT count(*) FROM test_runs")


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def in_log(procs: Procs, proc: subprocess.Popen, text: str) -> bool:
    return text in procs.output(proc)


# -- the backend operations ----------------------------------------------------------------


def test_pause_and_resume_report_what_changed_and_dispatches_still_go_in(driver):
    assert pauses.paused() == {}
    before = utcnow()
    assert pauses.pause(["mail", "default", "mail"]) == ["mail", "default"]
    assert pauses.pause(["default", "low"]) == ["low"]  # default was paused already
    paused = pauses.paused()
    assert sorted(paused) == ["default", "low", "mail"]
    for at in paused.values():
        assert at.tzinfo is not None
        assert before - dt.timedelta(seconds=5) <= at <= utcnow() + dt.timedelta(seconds=5)

    # A paused queue keeps accepting jobs.
    ids = dispatch_many([RecordRun(key="a"), RecordRun(key="b")])
    assert all(i is not None for i in ids)
    assert driver.counts()["default"] == (2, 0, 0)

    assert pauses.resume(["default", "nothing"]) == ["default"]
    assert pauses.resume(["default"]) == []
    assert sorted(pauses.paused()) == ["low", "mail"]
    assert pauses.pause([]) == [] and pauses.resume([]) == []


@pytest.mark.parametrize("bad", [[""], ["ok", None], "default"])
def test_bad_queue_names_are_refused_before_anything_is_written(driver, bad):
    with pytest.raises((TypeError, ValueError)):
        pauses.pause(bad)
    assert pauses.paused() == {}


# -- workers -------------------------------------------------------------------------------


def test_pause_stops_a_busy_worker_within_a_second_and_hands_back_its_batch(driver, procs):
    n = 1500
    # Jobs of ~10 ms: the worker claims a few at a time, so some are
    # prefetched (claimed, not started) when the pause comes. Dispatched
    # first: on SQLite an idle worker only polls, and --sleep 30 makes sure
    # nothing below rides on that poll.
    dispatch_many(RecordRun(key=f"r{i}", sleep=0.01) for i in range(n))
    (w,) = start_workers(driver, procs, "--sleep", "30")
    wait_for(lambda: runs(driver) >= 20, "the worker to be busy", procs, alive=(w,))

    assert pauses.pause(["default"]) == ["default"]
    time.sleep(PAUSE_BOUND)
    done = runs(driver)
    assert done < n, "the queue drained before the pause: make the jobs slower"
    time.sleep(2.0)
    # No claim after the bound; the prefetched jobs are back in the queue,
    # the finished ones deleted.
    assert runs(driver) == done
    assert driver.counts() == {"default": (n - done, 0, 0)}
    assert in_log(procs, w, "queue default is paused")

    ok(driver.cli("queue", "resume", "default"))
    wait_for(lambda: runs(driver) > done, "the resumed queue to run", procs, timeout=RESUME_BOUND, alive=(w,))
    assert stop(procs, w) == 0
    assert driver.qdb.rows("SELECT key FROM test_runs GROUP BY key HAVING count(*) <> 1") == []
    assert driver.failed() == []


def test_paused_queue_waits_and_resume_wakes_an_idle_worker_at_once(driver, procs):
    out = ok(driver.cli("queue", "pause", "high"))
    assert "Paused high" in out
    # Started while "high" is paused: its very first claim must skip it.
    dispatch_many([RecordRun(key="h").pending(queue="high"), RecordRun(key="d")])
    (w,) = start_workers(driver, procs, "--queue", "high,default", "--sleep", "30")
    wait_for(lambda: driver.run_pids("d"), "the default job to run", procs, timeout=10, alive=(w,))
    time.sleep(PAUSE_BOUND)
    assert driver.run_pids("h") == []
    assert driver.counts()["high"] == (1, 0, 0)
    assert in_log(procs, w, "queue high is paused")

    assert "Resumed high" in ok(driver.cli("queue", "resume", "high"))
    wait_for(lambda: driver.run_pids("h"), "the resumed job to run", procs, timeout=RESUME_BOUND, alive=(w,))
    wait_for(lambda: in_log(procs, w, "queue high resumed"), "the resume log line", procs, alive=(w,))

    # Paused while the worker idles: a job dispatched afterwards waits, even
    # though its dispatch notification reaches the worker.
    ok(driver.cli("queue", "pause", "default"))
    wait_for(
        lambda: in_log(procs, w, "queue default is paused"),
        "the worker to see the pause",
        procs,
        timeout=PAUSE_BOUND,
        alive=(w,),
    )
    RecordRun(key="d2").dispatch()
    time.sleep(PAUSE_BOUND)
    assert driver.run_pids("d2") == []
    assert driver.counts()["default"] == (1, 0, 0)

    ok(driver.cli("queue", "resume", "default"))
    wait_for(lambda: driver.run_pids("d2"), "the resumed job to run", procs, timeout=RESUME_BOUND, alive=(w,))
    assert stop(procs, w) == 0
    assert driver.run_pids("h") == driver.run_pids("d2") == [w.pid]
    assert driver.failed() == []


# -- what operators see --------------------------------------------------------------------


def test_cli_pause_and_resume_say_what_they_did_and_repeat_as_no_ops(driver):
    out = ok(driver.cli("queue", "pause", "mail", "low,mail"))
    assert "Paused mail" in out and "Paused low" in out
    again = ok(driver.cli("queue", "pause", "mail"))
    assert "mail is already paused (since" in again and "Paused" not in again

    status = ok(driver.cli("queue", "status"))
    assert "Paused: low, mail" in status
    assert "since " in status
    data = json.loads(ok(driver.cli("queue", "status", "--json")))
    assert [p["queue"] for p in data["paused"]] == ["low", "mail"]
    for p in data["paused"]:
        assert abs(utcnow() - dt.datetime.fromisoformat(p["paused_at"])) < dt.timedelta(minutes=1)
    # Listed with the queues even without a job in them.
    rows = {q["queue"]: q for q in data["queues"]}
    assert rows["mail"]["paused_at"] == data["paused"][1]["paused_at"]
    assert rows["mail"]["ready"] == 0

    assert "Resumed mail" in ok(driver.cli("queue", "resume", "mail"))
    assert "mail is not paused; nothing to do." in ok(driver.cli("queue", "resume", "mail"))
    data = json.loads(ok(driver.cli("queue", "status", "--json")))
    assert [p["queue"] for p in data["paused"]] == ["low"]


@pytest.mark.parametrize("args", [(), ("",), ("a,,b",), (" , ",)])
def test_cli_refuses_missing_or_empty_queue_names_with_exit_2(driver, args):
    for command in ("pause", "resume"):
        result = driver.cli("queue", command, *args)
        assert result.returncode == 2, result.stdout + result.stderr
    assert pauses.paused() == {}


def test_doctor_warns_about_a_queue_paused_for_over_an_hour(driver):
    pauses.pause(["mail"])
    _, report = doctor(driver.env())
    assert by_name(report)["paused queues"]["status"] == "ok"

    # Set the pause back in the store itself.
    old = utcnow() - dt.timedelta(hours=2)
    if driver.kind == "redis":
        backend = driver.backend
        backend.client().hset(backend.key("paused"), "mail", int(old.timestamp() * 1000))
    else:
        driver.qdb.database.execute_sql(
            driver.qdb.sql("UPDATE queue_pauses SET paused_at = %s WHERE queue = 'mail'"),
            (old if driver.kind == "postgres" else old.strftime(SQLITE_TIME_FORMAT),),
        )
    _, report = doctor(driver.env())
    check = by_name(report)["paused queues"]
    assert check["status"] == "warn"
    assert "mail (2.0 h)" in check["detail"]
    assert "tourno queue resume" in check["hint"]

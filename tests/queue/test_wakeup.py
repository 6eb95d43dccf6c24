"""Idle workers wake when there is something to do, not at their next poll.

* On SQLite, a dispatch from any process wakes an idle worker through a
  Unix datagram socket beside the database file (``tourno.queue.wakeup``);
  sockets left by dead processes are removed and never break a dispatch.
* A delayed job (dispatched with a delay, or released with a backoff) starts
  when it is due: an idle worker sleeps until the first waiting job of its
  queues is due, and a delayed dispatch made while it sleeps announces its
  due time (NOTIFY on PostgreSQL, pub/sub on Redis, a datagram on SQLite).

Real ``tourno work`` processes with ``--sleep 30``; the jobs stamp the time
they start (``Stamped``). The bounds asserted are behaviour, not latency: a
job never starts before it is due, and it starts within a few seconds of it,
where the poll alone would take up to 30 s. Latency figures are in
``bench/queue.py``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.queue import test_queue_contract as contract
from tests.queue.test_worker_processes import Procs, wait_for
from tests.support.drivers import Driver
from tests.support.jobs import Stamped
from tourno.queue import wakeup

pytestmark = pytest.mark.slow

#: The contract suite's driver fixture: PostgreSQL, SQLite and Redis.
any_driver = contract.driver
#: Far below the worker's --sleep of 30 s, generous for a loaded 2-core machine.
LATE = 6.0


@pytest.fixture
def procs(tmp_path):
    manager = Procs(tmp_path)
    try:
        yield manager
    finally:
        manager.kill_all()


def idle_worker(driver: Driver, procs: Procs, *options: str):
    worker = driver.worker(procs, "--sleep", "30", *options)
    wait_for(lambda: driver.heartbeaten(worker.pid), "the worker to register", procs, alive=(worker,))
    return worker


def stamp(driver: Driver, key: str, n: int, procs: Procs, worker) -> float:
    value = wait_for(
        lambda: driver.marked(f"stamp:{key}:{n}"), f"run {n} of {key}", procs, timeout=40, alive=(worker,)
    )
    return float(value)


def test_a_delayed_job_starts_when_due_not_at_the_next_poll(any_driver, procs):
    driver = any_driver
    worker = idle_worker(driver, procs)
    # Let the worker settle into its 30 s wait: the job is announced while it sleeps.
    time.sleep(0.5)
    dispatched = time.time()
    Stamped(key="later").dispatch(delay=2)
    started = stamp(driver, "later", 1, procs, worker)
    assert started - dispatched >= 2.0
    assert started - dispatched < 2.0 + LATE, procs.logs()


def test_a_backed_off_job_is_retried_when_its_backoff_ends(any_driver, procs):
    driver = any_driver
    worker = idle_worker(driver, procs, "--tries", "2", "--backoff", "2")
    Stamped(key="retry", fail_times=1).dispatch()
    first = stamp(driver, "retry", 1, procs, worker)
    second = stamp(driver, "retry", 2, procs, worker)
    assert second - first >= 2.0
    assert second - first < 2.0 + LATE, procs.logs()
    assert driver.failed() == []


def test_a_snoozed_job_runs_again_when_its_snooze_ends(any_driver, procs):
    driver = any_driver
    worker = idle_worker(driver, procs, "--tries", "1")
    Stamped(key="nap", snooze_times=1, snooze_for=2.0).dispatch()
    first = stamp(driver, "nap", 1, procs, worker)
    second = stamp(driver, "nap", 2, procs, worker)
    assert second - first >= 2.0
    assert second - first < 2.0 + LATE, procs.logs()
    assert driver.failed() == [] and driver.size() == 0


# -- SQLite: datagrams beside the database file -----------------------------------------


def _wake_dir(driver: Driver) -> Path:
    folder = wakeup.wake_dir(driver.qdb.url[len("sqlite:///") :])
    assert folder is not None
    return folder


def _dispatch_from_another_process(driver: Driver, key: str) -> float:
    """``tourno queue dispatch`` in a process of its own; returns when that
    process had exited (its start-up on a loaded machine is not the wake-up's
    time: the job was committed, and the datagram sent, before this)."""
    result = driver.cli("queue", "dispatch", "Stamped", "--args", json.dumps({"key": key}))
    assert result.returncode == 0, result.stdout + result.stderr
    return time.time()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sqlite_a_dispatch_from_another_process_wakes_an_idle_worker(sqlite, procs):
    driver = Driver("sqlite", sqlite, contract.backends.current())
    worker = idle_worker(driver, procs)
    folder = _wake_dir(driver)
    assert [n for n in os.listdir(folder) if n.startswith(f"{worker.pid}")] == [f"{worker.pid}.sock"]
    time.sleep(0.5)  # into its 30 s wait
    dispatched = _dispatch_from_another_process(driver, "woken")
    started = stamp(driver, "woken", 1, procs, worker)
    assert started - dispatched < LATE, procs.logs()


def test_sqlite_stale_sockets_are_removed_and_do_not_break_a_dispatch(sqlite, procs):
    driver = Driver("sqlite", sqlite, contract.backends.current())
    worker = idle_worker(driver, procs)
    folder = _wake_dir(driver)
    # A socket file whose process died without removing it: it refuses datagrams.
    dead = _dead_pid()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    os.chdir(folder)  # a short relative path, whatever the length of the test's folder
    try:
        stale.bind(f"{dead}.sock")
    finally:
        os.chdir(Path(__file__).resolve().parents[2])
    stale.close()
    # And a file that is no socket at all, with a name like one.
    (folder / "junk.sock").write_text("not a socket")
    assert (folder / f"{dead}.sock").exists()

    dispatched = _dispatch_from_another_process(driver, "despite-stale")
    started = stamp(driver, "despite-stale", 1, procs, worker)
    assert started - dispatched < LATE, procs.logs()
    assert not (folder / f"{dead}.sock").exists()
    assert (folder / f"{worker.pid}.sock").exists()
    # In this process too: the dispatch returns its ids, the worker runs the job.
    sent = time.time()
    assert Stamped(key="in-process").dispatch() is not None
    assert stamp(driver, "in-process", 1, procs, worker) - sent < LATE
    # A worker that stops removes its socket.
    worker.terminate()
    assert procs.wait_exit(worker, 20) == 0
    assert not (folder / f"{worker.pid}.sock").exists()

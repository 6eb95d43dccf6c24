"""Idle workers wake when there is something to do, not at their next poll.

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

import time

import pytest

from tests.queue import test_queue_contract as contract
from tests.queue.test_worker_processes import Procs, wait_for
from tests.support.drivers import Driver
from tests.support.jobs import Stamped

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
    if driver.kind == "sqlite":
        pytest.skip("SQLite wake-ups come with tourno.queue.wakeup")
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

"""Job middleware and the stores behind it, on every driver.

The stores (``backend.bucket``, ``acquire_lock``, ``release_locks``) are
checked directly against the real database or Redis; the layers are checked
through ``middleware.run`` with a real backend, and end to end with real
``tourno work`` processes in the last section.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest

from tests.queue import test_queue_contract as contract
from tests.support.jobs_mw import OverlapProbe, RateProbe
from tourno.queue import Job, Snooze, dispatch_many
from tourno.queue.middleware import (
    JobContext,
    Middleware,
    RateLimited,
    ThrottlesExceptions,
    WithoutOverlapping,
    current,
    run,
)

# The contract suite's fixtures: every test here runs on PostgreSQL, SQLite and Redis.
driver = contract.driver
procs = contract.procs


def _worker(driver, name: str) -> int:
    worker_id, _ = driver.backend.register_worker(name, "test-host", os.getpid(), ["default"])
    return worker_id


def _context(driver, worker_id: int, job_id: int = 1, stale_after: float = 30.0) -> JobContext:
    return JobContext(driver.backend, worker_id, job_id, "default", 1, stale_after)


# -- the token bucket -------------------------------------------------------------------


def test_bucket_takes_up_to_its_burst_then_says_how_long_to_wait(driver):
    backend = driver.backend
    taken = [backend.bucket("test:b", 1.0, 3.0, "take") for _ in range(4)]
    assert [s.granted for s in taken] == [True, True, True, False]
    empty = taken[-1]
    assert empty.tokens < 1 and 0 < empty.wait <= 1.0
    # peek takes nothing; fill gives the burst back.
    before = backend.bucket("test:b", 1.0, 3.0, "peek")
    assert not before.granted and before.tokens < 1 and before.wait > 0
    backend.bucket("test:b", 1.0, 3.0, "fill")
    full = backend.bucket("test:b", 1.0, 3.0, "peek")
    assert full.tokens == pytest.approx(3.0) and full.wait == 0
    # Another name is another bucket.
    assert backend.bucket("test:other", 1.0, 1.0, "take").granted


def test_bucket_refills_at_its_rate(driver):
    backend = driver.backend
    assert backend.bucket("test:refill", 1.0, 1.0, "take").granted
    assert not backend.bucket("test:refill", 1.0, 1.0, "take").granted
    time.sleep(1.1)  # a token a second
    assert backend.bucket("test:refill", 1.0, 1.0, "take").granted


def test_bucket_refuses_an_unknown_operation(driver):
    with pytest.raises(ValueError, match="unknown bucket operation"):
        driver.backend.bucket("test:x", 1.0, 1.0, "steal")


# -- locks ---------------------------------------------------------------------------------


def test_a_key_has_one_holder_until_it_lets_go(driver):
    backend = driver.backend
    a, b = _worker(driver, "a"), _worker(driver, "b")
    assert backend.acquire_lock("k", a, 1, 30.0, None)
    assert not backend.acquire_lock("k", b, 2, 30.0, None)
    assert backend.acquire_lock("k", a, 3, 30.0, None)  # its own key again
    assert backend.release_locks(b, "k") == 0  # not b's to let go of
    assert not backend.acquire_lock("k", b, 2, 30.0, None)
    assert backend.release_locks(a, "k") == 1
    assert backend.acquire_lock("k", b, 2, 30.0, None)
    assert backend.acquire_lock("other", b, 2, 30.0, None)
    assert backend.release_locks(b) == 2  # every key of b's
    assert backend.acquire_lock("k", a, 4, 30.0, None)


def test_a_dead_holders_key_frees_itself(driver):
    backend = driver.backend
    a = _worker(driver, "a")
    assert backend.acquire_lock("k", a, 1, 30.0, None)
    b = _worker(driver, "b")
    time.sleep(0.6)  # a's last heartbeat is now older than b's stale_after
    assert backend.acquire_lock("k", b, 2, 0.5, None)
    assert not backend.acquire_lock("k", a, 1, 30.0, None)  # b holds it now, and b is live


def test_an_expired_hold_is_taken_over(driver):
    backend = driver.backend
    a, b = _worker(driver, "a"), _worker(driver, "b")
    assert backend.acquire_lock("k", a, 1, 30.0, 0.3)
    assert not backend.acquire_lock("k", b, 2, 30.0, None)
    time.sleep(0.4)
    assert backend.acquire_lock("k", b, 2, 30.0, None)


# -- the layers, with a real backend ----------------------------------------------------------


@dataclass
class Layered(Job):
    """Records the order its layers and handle run in (in this process)."""

    log: list
    layers: tuple = ()
    raises: bool = False

    def middleware(self):
        return self.layers

    def handle(self) -> None:
        self.log.append("handle")
        if self.raises:
            raise RuntimeError("the partner API is down")


class Tag(Middleware):
    def __init__(self, name: str) -> None:
        self.name = name

    def handle(self, job, call_next) -> None:
        job.log.append(f"{self.name}:in")
        assert current().job_id == 7
        call_next()
        job.log.append(f"{self.name}:out")


def test_layers_wrap_handle_outermost_first(driver):
    log: list = []
    job = Layered(log=log, layers=(Tag("outer"), Tag("inner")))
    run(job, job.middleware(), _context(driver, _worker(driver, "w"), job_id=7))
    assert log == ["outer:in", "inner:in", "handle", "inner:out", "outer:out"]
    with pytest.raises(RuntimeError, match="only inside a worker"):
        current()


def test_a_layer_that_is_not_middleware_is_a_clear_error(driver):
    job = Layered(log=[], layers=("RateLimited",))
    with pytest.raises(TypeError, match="not a Middleware"):
        run(job, job.middleware(), _context(driver, _worker(driver, "w")))


def test_rate_limited_snoozes_a_job_over_the_limit(driver):
    ctx = _context(driver, _worker(driver, "w"))
    log: list = []
    job = Layered(log=log, layers=(RateLimited("partner", rate=2, per=1.0, burst=2),))
    run(job, job.middleware(), ctx)
    run(job, job.middleware(), ctx)
    with pytest.raises(Snooze) as snoozed:
        run(job, job.middleware(), ctx)
    assert 0 < snoozed.value.seconds <= 0.5
    assert log == ["handle", "handle"]


def test_without_overlapping_snoozes_while_another_worker_holds_the_key(driver):
    backend = driver.backend
    other = _worker(driver, "other")
    me = _worker(driver, "me")
    assert backend.acquire_lock("Layered:match-9", other, 1, 30.0, None)
    log: list = []
    job = Layered(log=log, layers=(WithoutOverlapping("match-9", release_after=2.5),))
    with pytest.raises(Snooze) as snoozed:
        run(job, job.middleware(), _context(driver, me))
    assert snoozed.value.seconds == 2.5 and log == []
    backend.release_locks(other)
    run(job, job.middleware(), _context(driver, me))
    assert log == ["handle"]
    # The key was let go of when the job ended, even though it raised.
    failing = Layered(log=log, layers=(WithoutOverlapping("match-9"),), raises=True)
    with pytest.raises(RuntimeError):
        run(failing, failing.middleware(), _context(driver, me))
    assert backend.acquire_lock("Layered:match-9", other, 1, 30.0, None)


def test_throttles_exceptions_puts_jobs_off_once_the_budget_is_spent(driver):
    ctx = _context(driver, _worker(driver, "w"))
    log: list = []
    layer = ThrottlesExceptions(max_exceptions=2, decay=60.0)
    failing = Layered(log=log, layers=(layer,), raises=True)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            run(failing, failing.middleware(), ctx)
    with pytest.raises(Snooze) as snoozed:
        run(failing, failing.middleware(), ctx)
    assert 0 < snoozed.value.seconds <= 30.0  # one exception's worth: decay / max_exceptions
    assert log == ["handle", "handle"]
    # A success (once the budget has refilled) fills it at once.
    driver.backend.bucket("throttle:Layered", 2 / 60.0, 2.0, "fill")
    with pytest.raises(RuntimeError):
        run(failing, failing.middleware(), ctx)
    ok = Layered(log=log, layers=(layer,))
    run(ok, ok.middleware(), ctx)
    assert driver.backend.bucket("throttle:Layered", 2 / 60.0, 2.0, "peek").tokens == pytest.approx(2.0)


def test_middleware_arguments_are_checked():
    with pytest.raises(ValueError):
        RateLimited("x", rate=0)
    with pytest.raises(ValueError):
        WithoutOverlapping("k", release_after=-1)
    with pytest.raises(ValueError):
        ThrottlesExceptions(max_exceptions=0)
    with pytest.raises(ValueError):
        Snooze(float("inf"))
    with pytest.raises(ValueError, match="too long"):
        RateLimited("x" * 80, rate=1)


# -- max_exceptions: a job's own exceptions, next to tries ---------------------------------------


@dataclass
class RaisesUntilSnoozed(Job):
    """Snoozes its first ``snoozes`` runs, then always raises; counts its runs."""

    key: str
    snoozes: int = 0
    tries = 0  # unlimited: only max_exceptions ends it
    max_exceptions = 2
    backoff = 0

    def handle(self) -> None:
        from tests.support.jobs import record, runs

        record(self.key)
        if runs(self.key) <= self.snoozes:
            raise Snooze(0)
        raise RuntimeError(f"{self.key} broke")


def _drain_and_note_failures() -> list[tuple[str, int]]:
    """Run a worker until the queue is empty; the (uuid, attempt) of each job.failed."""
    from tests.conftest import run_worker
    from tourno.queue import events

    failures: list[tuple[str, int]] = []

    def note(event) -> None:
        failures.append((event.uuid, event.attempt))

    events.subscribe("job.failed", note)
    try:
        code, _ = run_worker(max_jobs=50, max_time=20)  # bounded, should max_exceptions be ignored
    finally:
        events.unsubscribe("job.failed", note)
    assert code == 0
    return failures


def _failed_exceptions(key: str) -> list[str]:
    from tourno.queue import failed

    return [r.uuid for r in failed.newest() if f"RuntimeError: {key} broke" in r.exception]


def test_max_exceptions_fails_the_job_whatever_tries_allows(driver):
    from tests.support.jobs import runs

    RaisesUntilSnoozed(key="mx-plain").dispatch()
    failures = _drain_and_note_failures()
    assert runs("mx-plain") == 2
    assert [uuid for uuid, _ in failures] == _failed_exceptions("mx-plain")
    assert [attempt for _, attempt in failures] == [2]
    assert driver.counts() == {}


def test_snoozes_and_a_dead_workers_attempt_do_not_count_as_exceptions(driver):
    from tests.support.jobs import runs

    job_id = RaisesUntilSnoozed(key="mx-mixed", snoozes=2).dispatch()
    # A first attempt on a worker that died: charged to tries, not an exception.
    backend = driver.backend
    dead, _ = backend.register_worker("dead", "host", os.getpid(), ["default"])
    backend.claim(dead, "default", 1, [], 60)
    time.sleep(0.05)
    assert backend.rescue(0.025) == [(job_id, dead)]
    assert backend.exceptions(job_id) == 0

    failures = _drain_and_note_failures()
    # Two snoozes, then two exceptions: the second one ends it.
    assert runs("mx-mixed") == 4
    assert [uuid for uuid, _ in failures] == _failed_exceptions("mx-mixed")
    assert [attempt for _, attempt in failures] == [3]  # the dead worker's attempt, then two that raised
    assert backend.exceptions(job_id) == 0  # the job left the queue


def test_max_exceptions_must_be_a_whole_number_of_at_least_one(driver):
    @dataclass
    class Never(Job):
        max_exceptions = 0

        def handle(self) -> None:
            raise AssertionError("never runs")

    with pytest.raises(TypeError, match="Never.max_exceptions must be a whole number >= 1, got 0"):
        Never().dispatch()
    assert driver.counts() == {}


# -- end to end: three worker processes ---------------------------------------------------------


def _marks(driver, prefix: str) -> dict[str, str]:
    rows = driver.qdb.rows("SELECT key, value FROM test_marks WHERE key LIKE %s", (f"{prefix}%",))
    return {k: v for k, v in rows}


@pytest.mark.slow
def test_without_overlapping_holds_across_three_workers(driver, procs):
    n = 8
    contract.start_workers(driver, procs, "--tries", "1", n=3)
    dispatch_many([OverlapProbe(n=i) for i in range(n)])
    contract.wait_for(
        lambda: len(_marks(driver, "ov:")) == 2 * n and driver.size() == 0, "every probe to run", procs, 90
    )
    marks = _marks(driver, "ov:")
    spans = sorted((float(marks[f"ov:{i}:start"]), float(marks[f"ov:{i}:end"])) for i in range(n))
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, f"two runs held the key at once: {spans}"
    # Each ran once: putting a job off spent no attempt, and none failed (tries = 1).
    assert all(driver.run_pids(f"ov:{i}") for i in range(n))
    assert driver.failed() == []


@pytest.mark.slow
def test_rate_limited_spreads_jobs_across_three_workers(driver, procs):
    n = 40
    contract.start_workers(driver, procs, "--tries", "1", n=3)
    dispatch_many([RateProbe(n=i) for i in range(n)])
    contract.wait_for(
        lambda: len(_marks(driver, "rate:")) == n and driver.size() == 0, "every probe to run", procs, 120
    )
    starts = sorted(float(v.split()[0]) for v in _marks(driver, "rate:").values())
    # 10 a second with a burst of one: 39 gaps of 0.1 s at least.
    assert starts[-1] - starts[0] >= 3.5, starts
    # (Three workers with a limit each would have spread them over about 1.3 s.)
    assert driver.failed() == []

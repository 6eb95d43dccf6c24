"""Snooze and cancel, on every driver (PostgreSQL, SQLite, Redis).

The contract tests run real ``tourno work`` processes and the real ``tourno
queue cancel`` command; the event tests run the worker in this process
(``run_worker`` or ``Worker.run_once``) with a subscriber recording what it
was told. Waits are polls with generous deadlines. One test checks a lower
bound that the feature itself promises: a snoozed job does not run before
its delay.
"""

from __future__ import annotations

import uuid as uuidlib

import pytest

from tests.conftest import run_worker
from tests.queue import test_events
from tests.queue import test_queue_contract as contract
from tests.queue.test_queue_contract import start_workers, stop
from tests.queue.test_worker_processes import wait_for
from tests.support.jobs import Noop, RecordRun, mark
from tests.support.jobs_proc import ProcCancels, ProcSnoozeOnce, ProcSnoozer, ProcUntilCancelled
from tourno.queue import Snooze, control
from tourno.queue.monitor import Monitor
from tourno.queue.worker import Worker, WorkerOptions

# The contract suite's fixtures: the three drivers, and the worker processes.
driver = contract.driver
procs = contract.procs


# The events suite's recorder: subscribed to every event, in order.
recorder = test_events.recorder


# -- Snooze ------------------------------------------------------------------------------


def test_snooze_rejects_a_bad_delay_with_a_clear_error():
    assert Snooze(0).seconds == 0.0
    assert Snooze(2.5).seconds == 2.5
    for bad in (-1, float("inf"), float("nan"), 1e12):
        with pytest.raises(ValueError, match="Snooze"):
            Snooze(bad)
    for bad in ("5", None, True):
        with pytest.raises(TypeError, match="Snooze"):
            Snooze(bad)  # type: ignore[arg-type]


def test_snooze_keeps_attempts_a_one_try_job_snoozes_three_times_then_succeeds(driver, procs):
    (w,) = start_workers(driver, procs, "--tries", "1")
    ProcSnoozer(key="sn", times=3).dispatch()
    wait_for(lambda: driver.marked("finished:sn"), "the snoozer to succeed", procs, alive=(w,))
    # Three snoozes and the one real try, all on its single attempt.
    assert driver.run_pids("sn") == [w.pid] * 4
    wait_for(lambda: driver.size() == 0, "the finished job to be deleted", procs, alive=(w,))
    assert driver.failed() == []
    assert stop(procs, w) == 0
    assert procs.output(w).count("SNOOZED for 0 s (attempt 1 not counted)") == 3
    assert "1 job(s) finished (1 succeeded), 3 snoozed" in procs.output(w)


def test_a_snoozed_job_does_not_run_before_its_delay(driver, procs):
    (w,) = start_workers(driver, procs)
    ProcSnoozeOnce(key="later", seconds=1.5).dispatch()
    wait_for(lambda: driver.marked("snoozed:later"), "the first run to snooze", procs, alive=(w,))
    wait_for(lambda: driver.counts() == {"default": (0, 1, 0)}, "the job to wait, delayed", procs, alive=(w,))
    wait_for(lambda: driver.marked("ran:later"), "the second run", procs, alive=(w,))
    snoozed, ran = float(driver.marked("snoozed:later")), float(driver.marked("ran:later"))
    assert ran - snoozed >= 1.5
    assert driver.run_pids("later") == [w.pid, w.pid]
    assert driver.failed() == []
    assert stop(procs, w) == 0


def test_snooze_fires_snoozed_with_its_delay_once_per_snooze(driver, recorder):
    job_id = ProcSnoozer(key="ev", times=2).dispatch()
    code, _ = run_worker(tries=1)
    assert code == 0
    assert recorder.transitions(job_id) == ("dispatched started snoozed started snoozed started succeeded")
    snoozed = recorder.of("job.snoozed")
    assert [(e.job, e.queue, e.delay, e.attempt) for e in snoozed] == [("ProcSnoozer", "default", 0.0, 1)] * 2
    assert all(e.uuid == recorder.of("job.dispatched")[0].uuid for e in snoozed)
    assert driver.size() == 0 and driver.failed() == []


def test_a_prefetched_job_snoozes_without_spending_the_attempt_it_was_never_charged(driver, recorder):
    """The claim charges only a batch's first job; a prefetched job's attempt
    is counted when it starts. Its snooze must record the attempts the job
    had before it started (not one less, not one more), or its one try is
    gone: the next run would fail with MaxAttemptsExceeded."""
    worker = Worker(driver.backend, WorkerOptions(sleep=0.1, memory=0, prefetch=10, tries=1))
    try:
        Noop().dispatch()
        assert worker.run_once() is True  # now the worker claims batches
        head = Noop().dispatch()
        snoozer = ProcSnoozer(key="pre", times=1).dispatch()
        assert worker.run_once() is True  # one claim: head (charged) and the snoozer (not yet)
        assert worker.run_once() is True  # the snoozer, prefetched: snoozes
        assert worker.run_once() is True  # claimed again, as a batch's head: runs its one try
        assert worker.run_once() is False
    finally:
        worker.close()
    assert recorder.transitions(head) == "dispatched started succeeded"
    assert recorder.transitions(snoozer) == "dispatched started snoozed started succeeded"
    assert [e.attempt for e in recorder.of("job.started") if e.id == snoozer] == [1, 1]
    assert driver.size() == 0 and driver.failed() == []


def test_a_bad_snooze_delay_fails_the_attempt_with_its_message(driver):
    job_id = ProcSnoozer(key="bad", times=1, seconds=-5).dispatch()
    assert job_id is not None
    code, _ = run_worker(tries=1)
    assert code == 0
    ((_, _, exception),) = driver.failed()
    assert "ValueError: Snooze(seconds) must be finite, at least 0" in exception
    assert driver.size() == 0


# -- Cancel: waiting, delayed, unknown ------------------------------------------------------


def test_cancel_removes_a_waiting_and_a_delayed_job_by_id_and_uuid(driver, recorder):
    waiting = RecordRun(key="waiting").dispatch()
    RecordRun(key="delayed").dispatch(delay=60)
    kept = RecordRun(key="kept").dispatch()
    delayed_uuid = [e.uuid for e in recorder.of("job.dispatched") if e.job == "RecordRun"][1]
    assert driver.counts() == {"default": (2, 1, 0)}

    done = driver.cli("queue", "cancel", str(waiting), delayed_uuid)
    assert done.returncode == 0, done.stderr
    assert "Cancelled 2 job(s)." in done.stdout
    assert driver.counts() == {"default": (1, 0, 0)}

    code, _ = run_worker()
    assert code == 0
    assert driver.run_pids("waiting") == [] and driver.run_pids("delayed") == []
    assert len(driver.run_pids("kept")) == 1
    assert driver.size() == 0 and driver.failed() == []
    assert kept is not None


def test_cancel_of_a_waiting_job_fires_cancelled_once_with_its_fields(driver, recorder):
    job_id = RecordRun(key="c").dispatch()
    (dispatched,) = recorder.of("job.dispatched")
    result = control.cancel([str(job_id)])
    assert (len(result.removed), result.flagged, result.unknown) == (1, [], [])
    # Named twice (id and uuid): still one job, cancelled once.
    again = control.cancel([str(job_id), dispatched.uuid])
    assert (again.count, again.unknown) == (0, [str(job_id), dispatched.uuid])
    (cancelled,) = recorder.of("job.cancelled")
    assert (cancelled.job, cancelled.uuid, cancelled.id, cancelled.queue) == (
        "RecordRun",
        dispatched.uuid,
        job_id,
        "default",
    )
    assert driver.size() == 0


def test_cancel_of_unknown_ids_prints_one_line_each_and_exits_1(driver):
    known = RecordRun(key="known").dispatch(delay=60)
    missing_uuid = str(uuidlib.uuid4())
    done = driver.cli("queue", "cancel", "987654321", str(known), missing_uuid, "99999999999999999999999")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    for ident in ("987654321", missing_uuid, "99999999999999999999999"):
        assert sum(ident in line for line in lines) == 1, done.stdout
        assert f"No waiting or running job matches {ident}." in done.stdout
    assert "Cancelled 1 job(s)." in done.stdout
    assert driver.size() == 0

    helped = driver.cli("queue", "cancel", "--help")
    assert helped.returncode == 0 and "cancel_requested()" in helped.stdout
    bare = driver.cli("queue", "cancel")
    assert bare.returncode == 2


# -- Cancel: a running job ---------------------------------------------------------------


@pytest.mark.parametrize("then", ["return", "raise"])
def test_cancel_of_a_running_job_stops_it_and_it_is_not_retried(driver, procs, then):
    (w,) = start_workers(driver, procs, "--tries", "3")
    job_id = ProcUntilCancelled(key="run", then=then).dispatch()
    wait_for(lambda: driver.run_pids("run") == [w.pid], "the job to start", procs, alive=(w,))

    done = driver.cli("queue", "cancel", str(job_id))
    assert done.returncode == 0, done.stderr
    assert "Cancelled 1 job(s)." in done.stdout and f"#{job_id}" in done.stdout
    wait_for(lambda: driver.marked("noticed:run"), "the job to see its cancel", procs, alive=(w,))
    wait_for(lambda: driver.size() == 0, "the cancelled job to be deleted", procs, alive=(w,))
    # Deleted, not retried (it had tries left) and not filed as failed.
    assert driver.run_pids("run") == [w.pid]
    assert driver.failed() == []
    assert driver.marked("gave-up:run") is None
    assert stop(procs, w) == 0
    assert f"ProcUntilCancelled #{job_id} CANCELLED (" in procs.output(w)
    assert "1 job(s) finished (1 cancelled)" in procs.output(w)
    assert driver.run_pids("run") == [w.pid]


def test_a_running_job_hears_of_its_cancel_by_notice_between_heartbeats(driver, procs):
    """PostgreSQL NOTIFY and Redis pub/sub tell the worker at once: with a
    30 s heartbeat (its fallback check), the job still sees the cancel
    within 10 s, a generous bound that only the notice can meet. SQLite has
    no notices and relies on the heartbeat check the other tests use."""
    if driver.kind == "sqlite":
        pytest.skip("SQLite has no notifications: its workers check each heartbeat")
    env = driver.env(TOURNO_HEARTBEAT_INTERVAL="30", TOURNO_WORKER_STALE_AFTER="90")
    w = procs.start(env, "work", "--sleep", "0.1", "--tries", "3")
    wait_for(lambda: driver.heartbeaten(w.pid), "the worker to register", procs, alive=(w,))
    job_id = ProcUntilCancelled(key="quick").dispatch()
    wait_for(lambda: driver.run_pids("quick") == [w.pid], "the job to start", procs, alive=(w,))
    assert control.cancel([str(job_id)]).flagged[0].id == job_id
    wait_for(lambda: driver.marked("noticed:quick"), "the notice", procs, timeout=10, alive=(w,))
    wait_for(lambda: driver.size() == 0, "the cancelled job to be deleted", procs, alive=(w,))
    assert driver.failed() == []
    assert stop(procs, w) == 0


def test_a_running_job_cancelled_fires_cancelled_once_and_never_succeeded(driver, recorder):
    # The job cancels itself through control.cancel (what the CLI calls),
    # then waits until its worker's monitor tells it (a notice, or the check
    # each heartbeat interval).
    job_id = ProcUntilCancelled(key="self", then="raise", cancel_self=True).dispatch()
    mark("target:self", str(job_id))
    code, _ = run_worker(tries=3)
    assert code == 0
    assert driver.marked("noticed:self") is not None
    assert recorder.transitions(job_id) == "dispatched started cancelled"
    (event,) = recorder.of("job.cancelled")
    assert (event.job, event.queue, event.attempt) == ("ProcUntilCancelled", "default", 1)
    assert event.duration is not None and isinstance(event.exception, RuntimeError)
    assert driver.run_pids("self") and len(driver.run_pids("self")) == 1
    assert driver.size() == 0 and driver.failed() == []


def test_a_prefetched_job_cancelled_before_it_starts_is_not_run(driver, recorder):
    worker = Worker(driver.backend, WorkerOptions(sleep=0.1, memory=0, prefetch=10))
    try:
        # One job first, so that the worker knows jobs are fast and claims a batch next.
        Noop().dispatch()
        assert worker.run_once() is True
        canceller = ProcCancels(key="a").dispatch()
        victim = RecordRun(key="victim").dispatch()
        after = RecordRun(key="after").dispatch()
        mark("target:a", str(victim))
        # One claim takes all three; the first cancels the second, which is reserved: flagged.
        assert worker.run_once() is True
        assert driver.marked("cancelled:a") == "1"
        # What the monitor thread does on the notice or at its next heartbeat.
        Monitor(worker).check_cancels()
        assert worker.run_once() is True  # the victim: cancelled, not run
        assert worker.run_once() is True  # the next one runs
    finally:
        worker.close()
    assert driver.run_pids("victim") == []
    assert len(driver.run_pids("after")) == 1
    assert recorder.transitions(victim) == "dispatched cancelled"
    assert recorder.transitions(canceller) == "dispatched started succeeded"
    assert recorder.transitions(after) == "dispatched started succeeded"
    assert driver.size() == 0 and driver.failed() == []


def test_a_cancelled_job_that_went_back_to_the_queue_is_never_claimed_and_is_swept(driver, recorder):
    backend = driver.backend
    job_id = RecordRun(key="back").dispatch()
    worker = Worker(backend, WorkerOptions(sleep=0.1, memory=0))
    try:
        worker.register()
        assert worker.worker_id is not None
        (claimed,) = backend.claim(worker.worker_id, "default", 1, [], 60)
        assert claimed.id == job_id
        assert control.cancel([str(job_id)]).flagged[0].id == job_id
        assert backend.cancel_requests(worker.worker_id) == [job_id]
        # Its attempt failed before the worker heard of the cancel: released.
        assert backend.release(worker.worker_id, job_id, 0, 1)
        assert backend.claim(worker.worker_id, "default", 5, [], 60) == []
        # What every monitor does each heartbeat interval.
        Monitor(worker).sweep_cancelled()
        Monitor(worker).sweep_cancelled()
        # Counted once, in the worker's buffer: written with its next write.
        assert worker.metrics is not None
        assert [(r.queue, r.job, r.counts.cancelled, r.counts.runs) for r in worker.metrics.take()] == [
            ("default", "RecordRun", 1, 0)
        ]
    finally:
        worker.close()
    (event,) = recorder.of("job.cancelled")
    assert (event.job, event.id, event.queue) == ("RecordRun", job_id, "default")
    assert event.uuid == recorder.of("job.dispatched")[0].uuid
    assert driver.size() == 0 and driver.run_pids("back") == []

"""Queue lifecycle events (``tourno.queue.events``) on PostgreSQL and SQLite.

Each event fires exactly once per transition: the real worker runs real jobs
in this process (``run_worker``), and a subscriber records what it was told.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.conftest import run_worker
from tests.support.jobs import Boom, BoomThrice, Flaky, Noop, RecordRun, ShortTimeout, UniqueJob, runs
from tourno.queue import Event, backends, dispatch_many, events


class Recorder:
    """Subscribed to every event; keeps what it heard, in order."""

    def __init__(self) -> None:
        self.heard: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.heard.append(event)

    def names(self, job_id: object = None) -> list[str]:
        """The event names, or only those about job ``job_id``."""
        return [e.name for e in self.heard if job_id is None or e.id == job_id]

    def transitions(self, job_id: object) -> str:
        """What happened to job ``job_id``, e.g. "dispatched started succeeded"."""
        return " ".join(name.removeprefix("job.") for name in self.names(job_id))

    def of(self, name: str) -> list[Event]:
        return [e for e in self.heard if e.name == name]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    for name in events.EVENT_NAMES:
        events.subscribe(name, rec)
    try:
        yield rec
    finally:
        for name in events.EVENT_NAMES:
            events.unsubscribe(name, rec)


def test_dispatch_fires_once_per_job_the_backend_accepted(qdb, recorder):
    one = Noop(n=1).dispatch()
    many = dispatch_many([Noop(n=2), Noop(n=3).pending(queue="other")])
    first = UniqueJob(key="u").dispatch()
    assert UniqueJob(key="u").dispatch() is None  # already pending: not dispatched again

    heard = recorder.of("job.dispatched")
    assert [e.id for e in heard] == [one, *many, first]
    assert [e.job for e in heard] == ["Noop", "Noop", "Noop", "UniqueJob"]
    assert [e.queue for e in heard] == ["default", "default", "other", "default"]
    assert all(e.attempt == 0 and e.uuid for e in heard)
    assert len({e.uuid for e in heard}) == 4
    assert recorder.names() == ["job.dispatched"] * 4


def test_a_job_that_succeeds_fires_started_then_succeeded(qdb, recorder):
    job_id = RecordRun(key="ok").dispatch()
    code, worker = run_worker()
    assert code == 0 and runs("ok") == 1

    assert recorder.names() == [
        "job.dispatched",
        "worker.started",
        "job.started",
        "job.succeeded",
        "worker.stopping",
    ]
    started, succeeded = recorder.of("job.started")[0], recorder.of("job.succeeded")[0]
    for event in (started, succeeded):
        assert (event.job, event.id, event.queue, event.attempt) == ("RecordRun", job_id, "default", 1)
        assert event.uuid == recorder.of("job.dispatched")[0].uuid
        assert (event.worker, event.worker_id, event.pid) == ("default", worker.worker_id, worker.pid)
    assert started.duration is None
    assert succeeded.duration is not None and succeeded.duration >= 0
    assert succeeded.exception is None
    (ready,) = recorder.of("worker.started")
    assert (ready.worker_id, ready.pid, ready.id) == (worker.worker_id, worker.pid, None)


def test_a_retried_job_fires_released_then_succeeds(qdb, recorder):
    job_id = Flaky(key="flaky", fail_times=1).dispatch()
    code, _ = run_worker(tries=3)
    assert code == 0 and runs("flaky") == 2

    assert recorder.transitions(job_id) == "dispatched started released started succeeded"
    (released,) = recorder.of("job.released")
    assert released.attempt == 1 and released.delay == 0
    assert isinstance(released.exception, RuntimeError)
    assert recorder.of("job.succeeded")[0].attempt == 2


def test_a_job_that_fails_for_good_fires_failed_once_and_not_released(qdb, recorder):
    once = Boom(key="once").dispatch()
    thrice = BoomThrice(key="thrice").dispatch()
    code, _ = run_worker(tries=1)
    assert code == 0

    assert recorder.transitions(once) == "dispatched started failed"
    (failed,) = [e for e in recorder.of("job.failed") if e.id == once]
    assert isinstance(failed.exception, ValueError) and failed.attempt == 1
    assert failed.duration is not None
    # Its own tries = 3: two retries, then failed once.
    assert recorder.transitions(thrice) == "dispatched started released started released started failed"


def test_a_timed_out_job_fires_timed_out_before_its_outcome(qdb, recorder):
    job_id = ShortTimeout(key="slow").dispatch()  # timeout 0.5 s, tries 2
    code, _ = run_worker(tries=5)
    assert code == 0 and runs("slow") == 2

    assert recorder.transitions(job_id) == "dispatched started timed_out released started timed_out failed"
    assert all(e.duration is not None and e.duration < 3 for e in recorder.of("job.timed_out"))


def test_the_rescue_fires_rescued_for_the_job_it_released(qdb, recorder):
    job_id = RecordRun(key="orphan").dispatch()
    backends.current().claim(555_555, "default", 1, [], 60)  # held by a worker with no row
    code, worker = run_worker(stop_when_empty=False, max_jobs=1, max_time=20, tries=2)
    assert worker.stop_reason == "max_jobs" and runs("orphan") == 1

    (rescued,) = recorder.of("job.rescued")
    assert (rescued.id, rescued.worker_id) == (job_id, 555_555)
    assert recorder.transitions(job_id) == "dispatched rescued started succeeded"


def test_a_subscriber_that_raises_is_logged_and_breaks_nothing(qdb, recorder, caplog):
    def broken(event: Event) -> None:
        raise RuntimeError(f"subscriber broke on {event.name}")

    for name in ("job.dispatched", "job.started", "job.succeeded", "worker.started"):
        events.subscribe(name, broken)
    try:
        with caplog.at_level(logging.ERROR, logger="tourno.queue.events"):
            first = RecordRun(key="a").dispatch()
            RecordRun(key="b").dispatch()
            code, _ = run_worker()
    finally:
        for name in ("job.dispatched", "job.started", "job.succeeded", "worker.started"):
            events.unsubscribe(name, broken)

    assert first is not None
    assert code == 0 and runs("a") == 1 and runs("b") == 1
    # The other subscriber still heard every event.
    assert recorder.names().count("job.succeeded") == 2
    lines = [r for r in caplog.records if r.name == "tourno.queue.events"]
    assert len(lines) == 7  # worker.started, and dispatched + started + succeeded for each job
    assert all("broken" in r.getMessage() and r.exc_info for r in lines)
    assert {r.getMessage().split(":")[0] for r in lines} == {
        "queue event job.dispatched",
        "queue event worker.started",
        "queue event job.started",
        "queue event job.succeeded",
    }


def test_unsubscribe_stops_the_calls(qdb):
    heard: list[str] = []

    @events.subscriber("job.started", "job.succeeded")
    def note(event: Event) -> None:
        heard.append(event.name)

    RecordRun(key="one").dispatch()
    run_worker()
    assert heard == ["job.started", "job.succeeded"]

    events.unsubscribe("job.started", note)
    events.unsubscribe("job.succeeded", note)
    assert not events.wanted("job.started")
    RecordRun(key="two").dispatch()
    run_worker()
    assert runs("two") == 1
    assert heard == ["job.started", "job.succeeded"]


def test_unknown_event_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown queue event 'job.finished'"):
        events.subscribe("job.finished", print)
    with pytest.raises(ValueError, match="unknown queue event"):
        events.emit("job.finished")


def test_emitting_to_nobody_builds_no_event() -> None:
    """The cheap path: without subscribers the fields are not even checked."""
    assert not events.wanted("job.snoozed")
    events.emit("job.snoozed", not_a_field=1)
    events.subscribe("job.snoozed", print)
    try:
        with pytest.raises(TypeError):
            events.emit("job.snoozed", not_a_field=1)
    finally:
        events.unsubscribe("job.snoozed", print)

"""Real ``tourno work`` processes getting real signals.

Every test here starts worker subprocesses on a fresh test database and
watches what they do through the database: ``test_runs`` (one row per job run,
with the pid that ran it), ``test_marks``, ``jobs``, ``failed_jobs`` and
``workers``. Nothing is mocked. Waits are polls with generous deadlines, never
bare sleeps, because the machine is small and noisy; the only times asserted
are upper bounds far below what the wrong behaviour would take (for example a
pickup within 10 s when the worker's --sleep is 30 s).

Subprocesses use the fast liveness settings of ``QueueDB.env()``: a heartbeat
every 0.5 s, a worker presumed dead after 3 s without one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import tourno_cmd
from tests.support.jobs import Noop, RecordRun, Sleepy, Stubborn, mark
from tests.support.jobs_proc import (
    ProcCrashFirst,
    ProcDeaf,
    ProcSleepFirst,
    ProcStubbornOnce,
    ProcUntilMarked,
)
from tourno.db import parse_timestamp
from tourno.queue import dispatch_many

pytestmark = pytest.mark.slow

IMPORTS = "tests.support.jobs,tests.support.jobs_proc"
#: A database URL nothing listens on.
DOWN_URL = "postgresql://postgres:s3cret@127.0.0.1:1/tourno"
#: QueueDB.env()'s liveness settings, mirrored for the assertions that depend on them.
STALE_AFTER = 3.0


# -- helpers ------------------------------------------------------------------------


class Procs:
    """The subprocesses a test started; whatever is left is killed at teardown.

    Output goes to one log file per process (never a pipe: a chatty worker must
    not block on a full pipe), and every failed wait shows all the logs.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, env: dict[str, str], *args: str) -> subprocess.Popen:
        log = self.directory / f"proc-{len(self.started)}-{args[0]}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                tourno_cmd(*args),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the terminal running pytest
                # must not reach the workers, only the signals a test sends.
                start_new_session=True,
            )
        self.started.append((proc, log))
        return proc

    def worker(self, qdb: Any, *options: str, **env: str) -> subprocess.Popen:
        return self.start(qdb.env(TOURNO_IMPORTS=IMPORTS, **env), "work", *options)

    def output(self, proc: subprocess.Popen) -> str:
        for p, log in self.started:
            if p is proc:
                return log.read_text(errors="replace")
        raise KeyError(proc.pid)

    def logs(self) -> str:
        parts = []
        for proc, log in self.started:
            parts.append(f"--- pid {proc.pid} ({' '.join(proc.args[3:])}) rc={proc.poll()}\n")
            parts.append(log.read_text(errors="replace")[-4000:])
        return "".join(parts)

    def wait_exit(self, proc: subprocess.Popen, timeout: float) -> int:
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pid {proc.pid} still running after {timeout} s\n{self.logs()}") from None

    def kill_all(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.kill()
        for proc, _ in self.started:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
                pass


@pytest.fixture
def procs(tmp_path):
    manager = Procs(tmp_path)
    try:
        yield manager
    finally:
        manager.kill_all()


def wait_for(
    condition: Callable[[], Any],
    what: str,
    procs: Procs,
    timeout: float = 30.0,
    alive: tuple[subprocess.Popen, ...] = (),
) -> Any:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds,
    or at once if one of the ``alive`` processes has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for proc in alive:
            if proc.poll() is not None:
                raise AssertionError(
                    f"pid {proc.pid} exited ({proc.returncode}) while waiting for {what}\n{procs.logs()}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{procs.logs()}")
        time.sleep(0.05)


def wait_registered(qdb: Any, procs: Procs, *workers: subprocess.Popen) -> None:
    """Wait until each worker has registered and its monitor has written a
    heartbeat. The monitor LISTENs before its first beat, so after this a
    NOTIFY reaches the worker."""
    for w in workers:
        wait_for(
            lambda w=w: _beaten(qdb, w.pid),
            f"worker pid {w.pid} to register and heartbeat",
            procs,
            alive=(w,),
        )


def _beaten(qdb: Any, pid: int) -> bool:
    row = qdb.rows("SELECT started_at, heartbeat_at FROM workers WHERE pid = %s", (pid,))
    return bool(row) and parse_timestamp(row[0][1]) > parse_timestamp(row[0][0])


def run_pids(qdb: Any, key: str) -> list[int]:
    """The pids that ran ``key``, in the order of the runs."""
    return [r[0] for r in qdb.rows("SELECT pid FROM test_runs WHERE key = %s ORDER BY id", (key,))]


def marked(qdb: Any, key: str) -> str | None:
    return qdb.scalar("SELECT value FROM test_marks WHERE key = %s", (key,))


def count(qdb: Any, table: str) -> int:
    return qdb.scalar(f"SELECT count(*) FROM {table}")


def worker_pids(qdb: Any) -> set[int]:
    return {r[0] for r in qdb.rows("SELECT pid FROM workers")}


def queued(qdb: Any) -> list[tuple[str, Any, int]]:
    """(job name, reserved_at, attempts) of every row in ``jobs``, by id."""
    rows = qdb.rows("SELECT payload, reserved_at, attempts FROM jobs ORDER BY id")
    return [(json.loads(p)["job"] if isinstance(p, str) else p["job"], r, a) for p, r, a in rows]


def queued_keys(qdb: Any, queue: str = "default") -> list[str]:
    """The ``key`` argument of every job left in ``queue``, by id."""
    rows = qdb.rows("SELECT payload FROM jobs WHERE queue = %s ORDER BY id", (queue,))
    return [(json.loads(p) if isinstance(p, str) else p)["args"]["key"] for (p,) in rows]


def assert_unreserved(qdb: Any) -> None:
    """Every job left in the table is free for any worker, its attempt unspent."""
    rows = qdb.rows("SELECT id, reserved_at, reserved_by, attempts FROM jobs")
    assert all(r[1] is None and r[2] is None and r[3] == 0 for r in rows), rows


def stop(procs: Procs, proc: subprocess.Popen, timeout: float = 20.0) -> int:
    proc.send_signal(signal.SIGTERM)
    return procs.wait_exit(proc, timeout)


@contextlib.contextmanager
def setup_phase() -> Iterator[None]:
    """Marks the set-up part of a test: a failure there says the test is
    broken, not that the behaviour under test is wrong."""
    try:
        yield
    except AssertionError as exc:
        raise RuntimeError(f"test setup failed: {exc}") from exc


def cli(env: dict[str, str], *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        tourno_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


# -- 1. many workers, many jobs ------------------------------------------------------------


def test_three_workers_run_every_job_exactly_once(qdb, procs):
    # SQLite has no NOTIFY and drains an instant job very fast: give its
    # jobs a few milliseconds each so that all three workers get a share.
    n, seconds = (3000, 0.0) if qdb.kind == "postgres" else (1000, 0.003)
    workers = [procs.worker(qdb, "--sleep", "0.2", "--name", f"drain{i}") for i in range(3)]
    wait_registered(qdb, procs, *workers)

    dispatch_many(RecordRun(key=f"d{i}", sleep=seconds) for i in range(n))
    # Done once every job has run and every completion is written.
    wait_for(
        lambda: count(qdb, "test_runs") >= n and count(qdb, "jobs") == 0,
        f"{n} jobs to be drained",
        procs,
        timeout=90,
        alive=tuple(workers),
    )
    for w in workers:
        assert stop(procs, w) == 0

    assert qdb.rows("SELECT key, count(*) FROM test_runs GROUP BY key HAVING count(*) <> 1") == []
    assert count(qdb, "test_runs") == n
    assert qdb.scalar("SELECT count(DISTINCT key) FROM test_runs") == n
    assert count(qdb, "jobs") == 0
    assert count(qdb, "failed_jobs") == 0
    # The work was shared between processes, and only the workers ran jobs.
    pids = {r[0] for r in qdb.rows("SELECT DISTINCT pid FROM test_runs")}
    assert pids <= {w.pid for w in workers}
    assert len(pids) >= 2, pids
    # Clean exits remove the workers' rows.
    assert worker_pids(qdb) == set()


# -- 2. kill -9 --------------------------------------------------------------------------


def test_kill_9_with_tries_1_fails_the_job_instead_of_losing_it(pg, procs):
    """Laravel's rule: a job whose worker died used its attempt. With
    --tries 1 it goes to failed_jobs (MaxAttemptsExceeded), not back to work
    and not into thin air."""
    a = procs.worker(pg, "--sleep", "0.2")
    wait_registered(pg, procs, a)
    ProcSleepFirst(key="once", first=60, then=0).dispatch()
    wait_for(lambda: run_pids(pg, "once") == [a.pid], "the job to start on worker A", procs, alive=(a,))
    b = procs.worker(pg, "--sleep", "0.2")
    wait_registered(pg, procs, b)
    a.kill()
    procs.wait_exit(a, 10)

    wait_for(lambda: count(pg, "failed_jobs") == 1, "the job to be failed", procs, alive=(b,))
    assert count(pg, "jobs") == 0
    assert run_pids(pg, "once") == [a.pid]  # not run a second time
    assert "MaxAttemptsExceeded" in pg.scalar("SELECT exception FROM failed_jobs")
    assert stop(procs, b) == 0


def test_crash_does_not_fail_the_prefetched_jobs_that_never_ran(pg, procs):
    with setup_phase():
        a = procs.worker(pg, "--sleep", "0.2")  # the default --tries 1
        wait_registered(pg, procs, a)
        # Instant jobs teach A to claim in batches (it sizes its claims by
        # how long its jobs take); then one statement inserts six jobs, and
        # A's next claim takes several of them (all six, unless it is slowed).
        dispatch_many(Noop(n=i) for i in range(20))
        wait_for(lambda: count(pg, "jobs") == 0, "the warm-up jobs", procs, alive=(a,))
        dispatch_many([ProcCrashFirst(key="poison"), *(RecordRun(key=f"p{i}") for i in range(5))])
        assert procs.wait_exit(a, 30) == -signal.SIGKILL
        assert run_pids(pg, "poison") == [a.pid]
        # A held the crashing job and at least one prefetched job behind it.
        assert pg.scalar("SELECT count(*) FROM jobs WHERE reserved_by IS NOT NULL") >= 2
        b = procs.worker(pg, "--sleep", "0.2")
        wait_for(lambda: count(pg, "jobs") == 0, "B to settle every job", procs, alive=(b,))
        assert stop(procs, b) == 0

    # The job that was running when its worker died used its only attempt
    # (Laravel's rule); the five behind it never started and must run now.
    failed = [k for (k,) in pg.rows("SELECT payload::jsonb -> 'args' ->> 'key' FROM failed_jobs ORDER BY id")]
    assert failed == ["poison"]
    assert [run_pids(pg, f"p{i}") for i in range(5)] == [[b.pid]] * 5


# -- 3. SIGTERM ------------------------------------------------------------------------------


def test_sigint_and_sigquit_stop_gracefully_like_sigterm(pg, procs):
    signals = {"int": signal.SIGINT, "quit": signal.SIGQUIT}  # queue: signal
    workers = {q: procs.worker(pg, "--queue", q, "--sleep", "0.2") for q in signals}
    wait_registered(pg, procs, *workers.values())
    dispatch_many(Sleepy(key=q, seconds=1.5).pending(queue=q) for q in signals)
    for q, w in workers.items():
        wait_for(lambda q=q, w=w: run_pids(pg, q) == [w.pid], f"the {q} job to start", procs, alive=(w,))
    for q, w in workers.items():
        w.send_signal(signals[q])
    for q, w in workers.items():
        assert procs.wait_exit(w, 30) == 0, procs.output(w)
        assert marked(pg, f"finished:{q}") == str(w.pid)
    assert count(pg, "jobs") == 0
    assert worker_pids(pg) == set()


# -- 4. a second SIGTERM -----------------------------------------------------------------


# -- 5. timeouts -------------------------------------------------------------------------------


def test_job_that_outlives_its_timeout_makes_the_worker_exit_13(pg, procs):
    """Three workers side by side, each with a job that will not stop:
    q1: the job swallows JobTimeout, --tries 1: it is failed;
    q2: the job swallows JobTimeout, --tries 2: it is released for another try;
    q3: the job is deaf to SIGALRM (blocked in a C call): the monitor's
        watchdog ends it at timeout + grace + 5 s, --tries 1: it is failed.
    Each worker records the outcome, exits 13, and a fresh worker carries on."""
    w1 = procs.worker(pg, "--queue", "q1", "--timeout", "0.5", "--tries", "1", "--sleep", "0.2")
    w2 = procs.worker(pg, "--queue", "q2", "--timeout", "0.5", "--tries", "2", "--sleep", "0.2")
    w3 = procs.worker(pg, "--queue", "q3", "--timeout", "0.5", "--tries", "1", "--sleep", "0.2")
    wait_registered(pg, procs, w1, w2, w3)
    dispatch_many(
        [
            Stubborn(key="s1", seconds=60).pending(queue="q1"),
            RecordRun(key="after").pending(queue="q1"),
            ProcStubbornOnce(key="s2", seconds=60).pending(queue="q2"),
            ProcDeaf(key="deaf", seconds=60).pending(queue="q3"),
        ]
    )
    # All long before their jobs' 60 s.
    for w in (w1, w2, w3):
        assert procs.wait_exit(w, 40) == 13, procs.output(w)
    assert marked(pg, "swallowed:s1") is not None
    assert marked(pg, "swallowed:s2") is not None
    for key in ("s1", "s2", "deaf"):
        assert marked(pg, f"finished:{key}") is None

    failed = dict(pg.rows("SELECT queue, exception FROM failed_jobs"))
    assert sorted(failed) == ["q1", "q3"], failed
    assert "Stubborn" in failed["q1"] and "did not stop" in failed["q1"]
    assert "ProcDeaf" in failed["q3"] and "did not stop" in failed["q3"]
    # The hard stop unregisters the worker itself.
    assert worker_pids(pg) == set()
    # s2 is released with its attempt spent; "after" (behind s1) waits, unspent.
    left = {row[0]: row[1:] for row in queued(pg)}
    assert left == {"ProcStubbornOnce": (None, 1), "RecordRun": (None, 0)}, left

    fresh = procs.worker(pg, "--queue", "q1,q2,q3", "--timeout", "1", "--tries", "2", "--stop-when-empty")
    assert procs.wait_exit(fresh, 30) == 0, procs.output(fresh)
    assert run_pids(pg, "after") == [fresh.pid]
    assert run_pids(pg, "s2") == [w2.pid, fresh.pid]
    assert marked(pg, "finished:s2") == str(fresh.pid)
    assert run_pids(pg, "s1") == [w1.pid]
    assert run_pids(pg, "deaf") == [w3.pid]
    assert count(pg, "jobs") == 0
    assert count(pg, "failed_jobs") == 2


def test_hard_timeout_failure_names_job_timeout(pg, procs):
    with setup_phase():
        w = procs.worker(pg, "--timeout", "0.2", "--tries", "1", "--sleep", "0.2")
        wait_registered(pg, procs, w)
        Stubborn(key="named", seconds=60).dispatch()
        assert procs.wait_exit(w, 30) == 13, procs.output(w)
    exception = pg.scalar("SELECT exception FROM failed_jobs")
    # Like every other failure: `tourno queue failed` shows the last line,
    # which must say what kind of failure it was.
    assert exception.strip().splitlines()[-1].startswith("tourno.queue.exceptions.JobTimeout: "), exception


# -- 6. queue restart ----------------------------------------------------------------------------


def test_queue_restart_stops_running_workers_after_their_current_job(qdb, procs):
    idle = procs.worker(qdb, "--queue", "default", "--sleep", "30")
    busy = procs.worker(qdb, "--queue", "busy", "--sleep", "0.2")
    wait_registered(qdb, procs, idle, busy)
    # The busy worker's job runs until the restart signal is in the database
    # and then 1.5 s more (three heartbeats), however slow the CLI starts.
    dispatch_many(
        [ProcUntilMarked(key="r").pending(queue="busy"), RecordRun(key="next").pending(queue="busy")]
    )
    wait_for(lambda: run_pids(qdb, "r"), "the busy worker's job to start", procs, alive=(busy,))

    result = cli(qdb.env(TOURNO_IMPORTS=IMPORTS), "queue", "restart")
    assert result.returncode == 0, result.stderr
    assert "Restart signal sent" in result.stdout
    mark("go:r")

    # The idle one wakes for it (its --sleep is 30 s); the busy one finishes first.
    assert procs.wait_exit(idle, 15) == 0, procs.output(idle)
    assert procs.wait_exit(busy, 20) == 0, procs.output(busy)
    assert marked(qdb, "finished:r") == str(busy.pid)
    assert run_pids(qdb, "next") == []
    assert queued_keys(qdb, "busy") == ["next"]
    assert_unreserved(qdb)
    assert worker_pids(qdb) == set()

    # A worker started after the signal is not affected by it.
    late = procs.worker(qdb, "--queue", "busy", "--sleep", "0.2")
    wait_for(lambda: run_pids(qdb, "next") == [late.pid], "the new worker to run a job", procs, alive=(late,))

    def beaten_for(seconds: float) -> bool:
        row = qdb.rows("SELECT started_at, heartbeat_at FROM workers WHERE pid = %s", (late.pid,))
        return (
            bool(row) and (parse_timestamp(row[0][1]) - parse_timestamp(row[0][0])).total_seconds() > seconds
        )

    # Several heartbeats, each of which reads the restart signal, and it runs on.
    wait_for(lambda: beaten_for(1.2), "the new worker to heartbeat for 1.2 s", procs, alive=(late,))
    assert late.poll() is None
    assert stop(procs, late) == 0


# -- 7. stop conditions ---------------------------------------------------------------------------


def test_stop_conditions(qdb, procs):
    """Each stop condition on its own worker and queue, side by side."""
    cases = {  # queue: (options, jobs dispatched, exit code, jobs run)
        "max-jobs": (["--max-jobs", "3"], 5, 0, 3),
        "once": (["--once"], 3, 0, 1),
        "memory": (["--memory", "1"], 3, 12, 1),
        "empty": (["--stop-when-empty"], 4, 0, 4),
        "max-time": (["--max-time", "1"], 0, 0, 0),
    }
    dispatch_many(
        RecordRun(key=f"{q}{i}").pending(queue=q) for q, case in cases.items() for i in range(case[1])
    )
    workers = {q: procs.worker(qdb, "--queue", q, *case[0], "--sleep", "0.2") for q, case in cases.items()}
    for q, (_, dispatched, code, ran) in cases.items():
        w = workers[q]
        assert procs.wait_exit(w, 30) == code, f"{q}: {procs.output(w)}"
        # The first jobs in queue order ran, each once; the rest wait.
        keys = [f"{q}{i}" for i in range(dispatched)]
        assert sorted(k for k in keys if run_pids(qdb, k) == [w.pid]) == keys[:ran], q
        assert sorted(k for k in keys if run_pids(qdb, k)) == keys[:ran], q
        assert queued_keys(qdb, q) == keys[ran:], q
    assert "--memory limit" in procs.output(workers["memory"])
    # What was claimed but not run went back unreserved, its attempt refunded.
    assert_unreserved(qdb)
    assert count(qdb, "failed_jobs") == 0
    assert worker_pids(qdb) == set()


def test_short_lived_workers_leave_no_worker_row(pg, procs):
    """A worker that exits at once does so while its monitor's first
    heartbeat (an upsert) may be in flight; the row must stay deleted.
    (Before the monitor was joined first, most such runs left a ghost row.)"""
    ghosts = []
    for _ in range(5):
        w = procs.worker(pg, "--once", "--stop-when-empty", "--sleep", "0.1")
        assert procs.wait_exit(w, 30) == 0, procs.output(w)
        ghosts += pg.rows("SELECT id, pid, started_at, heartbeat_at FROM workers")
    assert ghosts == []


# -- 8. LISTEN/NOTIFY ------------------------------------------------------------------------------


def test_notify_wakes_an_idle_worker_long_before_its_sleep(pg, procs):
    w = procs.worker(pg, "--sleep", "30")
    wait_registered(pg, procs, w)
    for i in range(3):
        # Idle for sure: the last job ran and its completion was written by
        # the claim that found the queue empty.
        wait_for(lambda: count(pg, "jobs") == 0, "the worker to be idle", procs, alive=(w,))
        RecordRun(key=f"ping{i}").dispatch()
        wait_for(
            lambda i=i: run_pids(pg, f"ping{i}"), f"ping{i} to be picked up", procs, timeout=10, alive=(w,)
        )
    assert stop(procs, w) == 0


# -- 9. the database connection dropped ------------------------------------------------------------


def other_backends(pg) -> int:
    """Connections to the test database other than the test's own."""
    return pg.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )


def terminate_other_backends(pg) -> int:
    rows = pg.rows(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return sum(1 for (ok,) in rows if ok)


def test_worker_reconnects_after_its_connections_are_terminated(pg, procs):
    w = procs.worker(pg, "--tries", "5", "--sleep", "1")
    wait_registered(pg, procs, w)
    dispatch_many(RecordRun(key=f"a{i}") for i in range(20))
    wait_for(lambda: count(pg, "test_runs") == 20, "the first batch", procs, alive=(w,))

    # Mid-job: the job's next statement fails, so it is released (on the
    # reconnected connection) and its second run finishes.
    ProcSleepFirst(key="long", first=3, then=0).dispatch()
    wait_for(lambda: run_pids(pg, "long"), "the long job to start", procs, alive=(w,))
    assert terminate_other_backends(pg) >= 2  # the worker's and its monitor's
    wait_for(lambda: marked(pg, "finished:long"), "the long job to finish", procs, alive=(w,))
    assert run_pids(pg, "long") == [w.pid, w.pid]

    # While idle.
    wait_for(lambda: count(pg, "jobs") == 0, "the queue to be empty", procs, alive=(w,))
    wait_for(lambda: other_backends(pg) >= 2, "both connections to be back", procs, alive=(w,))
    assert terminate_other_backends(pg) >= 2
    dispatch_many(RecordRun(key=f"b{i}") for i in range(20))
    wait_for(
        lambda: pg.scalar("SELECT count(DISTINCT key) FROM test_runs") == 41 and count(pg, "jobs") == 0,
        "every job to run after the reconnects",
        procs,
        alive=(w,),
    )
    assert count(pg, "failed_jobs") == 0
    assert pg.rows("SELECT pid FROM workers") == [(w.pid,)]
    assert stop(procs, w) == 0


# -- 10. refusing to start ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, option",
    [
        (["--sleep", "-1"], "--sleep"),
        (["--backoff", "x"], "--backoff"),
        (["--backoff", "10,-5"], "--backoff"),
        (["--queue", ""], "--queue"),
        (["--queue", "high,,default"], "--queue"),
        (["--tries", "-1"], "--tries"),
        (["--timeout", "soon"], "--timeout"),
        (["--max-jobs", "-2"], "--max-jobs"),
        (["--memory", "-1"], "--memory"),
        (["--prefetch", "0"], "--prefetch"),
    ],
)
def test_invalid_options_are_refused_with_exit_2(options, option):
    # The database URL points nowhere: options are checked before connecting.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_")}
    env["TOURNO_DATABASE_URL"] = DOWN_URL
    result = cli(env, "work", *options)
    assert result.returncode == 2, result
    assert f"Invalid value for '{option}'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_database_down_at_start_gives_one_error_line_and_exit_1():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_")}
    env["TOURNO_DATABASE_URL"] = DOWN_URL
    result = cli(env, "work")
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot connect to the database postgresql://postgres:***@127.0.0.1:1/")
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize(
    "env, words",
    [
        ({"TOURNO_HEARTBEAT_INTERVAL": "often"}, ["TOURNO_HEARTBEAT_INTERVAL", "'often'"]),
        ({"TOURNO_IMPORTS": "tests.no_such_module"}, ["cannot import", "'tests.no_such_module'"]),
    ],
    ids=["bad-setting", "bad-import"],
)
def test_bad_settings_are_refused_with_exit_2(env, words):
    # Checked before connecting: the database URL points nowhere.
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_")}
    base["TOURNO_DATABASE_URL"] = DOWN_URL
    result = cli({**base, **env}, "work")
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(word in lines[0] for word in words), result.stderr


def test_unmigrated_database_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_")}
    env["TOURNO_DATABASE_URL"] = f"sqlite:///{tmp_path / 'empty.db'}"
    result = cli(env, "work")
    assert result.returncode == 1, result
    assert result.stderr.startswith("error: the database schema is not up to date"), result.stderr
    assert "tourno db migrate" in result.stderr

"""The worker: claim a job, run it, finish it; repeat until told to stop.

One job at a time per process, in the main thread, so that SIGALRM can enforce
timeouts. A second thread, the monitor, owns a second connection: it writes the
heartbeat, releases the jobs of dead workers, listens for dispatch
notifications, and watches the running job.

Round trips are the cost that matters. When jobs are fast and the
queue is deep, the worker claims a batch in one statement (as many as it
expects to finish in ``batch_seconds``, at most ``prefetch``) and deletes the
jobs it finished in the same statement as its next claim. Two rules keep that
from bending the semantics:

* a batch held longer than ``hold`` seconds (a slow job in it) makes the
  monitor hand its unstarted jobs back and write the pending completions, so
  a slow job never holds others hostage, and a crash loses at most the
  completions of the last fraction of a second (those jobs run again:
  delivery is at-least-once);
* a job longer than ``hold`` has its own completion written at once;
* the claim charges an attempt to the batch's first job only; a prefetched
  job's attempt is counted when it starts and written with its release, or
  by the monitor once it has run ``hold`` seconds. So a crash never charges
  the jobs that had not started (a prefetched job that kills its worker
  within ``hold`` is not charged either: it runs again, at least once).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import errno
import logging
import os
import select
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import peewee

from tourno.db import DatabaseUnavailable, open_connection
from tourno.queue.backends.base import ClaimedJob, QueueBackend
from tourno.queue.backends.database import payload_uuid
from tourno.queue.exceptions import (
    InvalidPayload,
    JobTimeout,
    MaxAttemptsExceeded,
    RetryDeadlinePassed,
    WorkerAborted,
)
from tourno.queue.job import MAX_SECONDS, Job, build_job, parse_payload, retry_deadline

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_MEMORY = 12
#: A job ignored its timeout and did not unwind within the grace period.
EXIT_TIMEOUT = 13

#: Jobs this worker processes between two attempts to vacuum the jobs table.
VACUUM_EVERY = 10_000

#: Errors that mean "the database went away": reconnect and carry on.
DB_ERRORS = (peewee.OperationalError, peewee.InterfaceError, DatabaseUnavailable)


@dataclasses.dataclass
class WorkerOptions:
    """``tourno work``'s options, with Laravel's defaults where it has one."""

    queues: list[str] = dataclasses.field(default_factory=lambda: ["default"])
    name: str = "default"
    sleep: float = 3.0
    tries: int = 1
    backoff: list[float] = dataclasses.field(default_factory=lambda: [0.0])
    timeout: float = 60.0
    max_time: float = 0.0
    max_jobs: int = 0
    memory: float = 128.0
    rest: float = 0.0
    stop_when_empty: bool = False
    once: bool = False
    # At most this many jobs are claimed per round trip...
    prefetch: int = 50
    # ...and no more than the worker expects to finish in this many seconds,
    # judged from how long its recent jobs took.
    batch_seconds: float = 0.05
    # A batch held longer than this gives its unstarted jobs back.
    hold: float = 0.5
    # Seconds a timed-out job gets to unwind before the worker exits.
    grace: float = 5.0
    heartbeat_interval: float = 5.0
    stale_after: float = 30.0

    def validate(self) -> None:
        def bad(option: str, why: str) -> ValueError:
            return ValueError(f"--{option}: {why}")

        if not self.queues or any(not q for q in self.queues):
            raise bad("queue", "give one or more queue names separated by commas")
        for option in ("sleep", "timeout", "max_time", "memory", "rest"):
            if getattr(self, option) < 0:
                raise bad(option.replace("_", "-"), "must not be negative")
        if self.tries < 0:
            raise bad("tries", "must not be negative (0 means unlimited)")
        if self.max_jobs < 0:
            raise bad("max-jobs", "must not be negative")
        if not self.backoff or any(b < 0 for b in self.backoff):
            raise bad("backoff", "give seconds like 10 or 10,60,300 (none negative)")
        if self.timeout > MAX_SECONDS or any(b > MAX_SECONDS for b in self.backoff):
            raise bad("timeout/--backoff", f"at most {MAX_SECONDS:g} seconds")
        if self.prefetch < 1:
            raise bad("prefetch", "must be at least 1")


def backoff_delay(backoff: list[float], attempts: int) -> float:
    """The delay before retry number ``attempts`` (the last value repeats)."""
    if not backoff:
        return 0.0
    return float(backoff[min(max(attempts, 1), len(backoff)) - 1])


def rss_mb() -> float:
    """This process's resident memory in MiB (current, not peak)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1048576
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclasses.dataclass
class _Running:
    """What the worker knows about the job it is running."""

    claimed: ClaimedJob
    started: float
    payload: dict[str, Any] | None = None
    job: Job | None = None
    timeout: float = 0.0
    max_tries: int = 1
    deadline: dt.datetime | None = None
    backoff: list[float] = dataclasses.field(default_factory=list)
    #: Whether the database counts this attempt yet (the claim counts only
    #: the batch's first job).
    attempt_saved: bool = True

    @property
    def label(self) -> str:
        name = self.payload.get("job") if self.payload else None
        return f"{name or '?'} #{self.claimed.id}"


class Worker:
    def __init__(
        self,
        backend: QueueBackend,
        options: WorkerOptions,
        *,
        on_ready: Callable[[], None] | None = None,
        on_stopping: Callable[[], None] | None = None,
    ) -> None:
        options.validate()
        self.backend = backend
        self.options = options
        # The backend's own outage errors (e.g. Redis) are handled like the database's.
        self._outage_errors = DB_ERRORS + tuple(backend.connection_errors)
        # Lifecycle hooks, e.g. for systemd's sd_notify: called once the worker
        # is registered and about to take jobs, and once it starts to stop.
        self.on_ready = on_ready
        self.on_stopping = on_stopping
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.worker_id: int | None = None
        self.started_at: dt.datetime | None = None
        self.jobs_processed = 0
        self.stop_reason: str | None = None

        self._lock = threading.Lock()
        self._pending: collections.deque[ClaimedJob] = collections.deque()
        self._done: list[Any] = []
        self._running: _Running | None = None
        self._batch_claimed = 0.0  # when the jobs in _pending were claimed
        self._avg_run: float | None = None  # moving average of job run time
        self._next_memory_check = 0.0
        self._ops: list[tuple[str, tuple]] = []  # finalisations waiting for the database

        self._stop_signal: int | None = None
        self._restart_requested = False
        self._in_job = False
        self._timed_out = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._monitor: _Monitor | None = None
        self._owns_connection = False
        self._log: logging.LoggerAdapter = _Prefixed(log, {"prefix": "[worker]"})

    # -- public ----------------------------------------------------------------

    def run(self, install_signals: bool = True) -> int:
        """Work until a stop condition; return the process exit code."""
        if install_signals:
            self._install_signals()
        from tourno.db import database

        self._owns_connection = database.is_closed()
        open_connection()
        self.worker_id, self.started_at = self.backend.register_worker(
            self.options.name, self.hostname, self.pid, self.options.queues
        )
        self._log = _Prefixed(log, {"prefix": f"[{self.options.name}#{self.worker_id} pid {self.pid}]"})
        self._log.info("processing queues %s", ",".join(self.options.queues))
        self._monitor = _Monitor(self)
        self._monitor.start()
        if self.on_ready is not None:
            self.on_ready()
        code = EXIT_OK
        try:
            code = self._loop()
        except WorkerAborted:
            self.stop_reason = "aborted"
            code = 128 + (self._stop_signal or signal.SIGTERM)
            self._log.warning("aborted by a second signal")
            running = self._running
            if running is not None:
                self._safe(
                    "release aborted job",
                    self.backend.release,
                    self.worker_id,
                    running.claimed.id,
                    0,
                    running.claimed.attempts,
                )
        finally:
            self._shutdown()
        self._log.info("stopped (%s), %d jobs processed", self.stop_reason, self.jobs_processed)
        return code

    # -- the loop --------------------------------------------------------------

    def _loop(self) -> int:
        start = time.monotonic()
        opts = self.options
        while True:
            try:
                self._flush_ops()
                claimed = self._next_job()
            except self._outage_errors as exc:
                self._recover(exc)
                claimed = None
                if self._stop_signal is None:
                    continue
            if claimed is not None:
                self._process(claimed)
                self.jobs_processed += 1
                if opts.rest > 0:
                    self._wait(opts.rest)
            code = self._stop_check(claimed is None, start)
            if code is not None:
                return code
            if claimed is None:
                self._wait(opts.sleep)

    def _stop_check(self, idle: bool, start: float) -> int | None:
        """Laravel's order: signal, memory, restart, empty, max time, max jobs."""
        opts = self.options
        if self._stop_signal is not None:
            self.stop_reason = "interrupted"
            return EXIT_OK
        if opts.memory > 0 and self._memory_exceeded():
            self.stop_reason = "memory"
            self._log.warning("memory %.1f MB reached the --memory limit of %g MB", rss_mb(), opts.memory)
            return EXIT_MEMORY
        if self._restart_requested:
            self.stop_reason = "restart"
            return EXIT_OK
        if idle and opts.stop_when_empty:
            self.stop_reason = "empty"
            return EXIT_OK
        if opts.max_time > 0 and time.monotonic() - start >= opts.max_time:
            self.stop_reason = "max_time"
            return EXIT_OK
        if opts.max_jobs > 0 and self.jobs_processed >= opts.max_jobs:
            self.stop_reason = "max_jobs"
            return EXIT_OK
        if opts.once:
            self.stop_reason = "once"
            return EXIT_OK
        return None

    def _memory_exceeded(self) -> bool:
        # Reading /proc costs more than a fast job: look at most once a second.
        now = time.monotonic()
        if now < self._next_memory_check:
            return False
        self._next_memory_check = now + 1.0
        return rss_mb() >= self.options.memory

    def _next_job(self) -> ClaimedJob | None:
        with self._lock:
            if self._pending:
                claimed = self._pending.popleft()
                claimed.attempts += 1  # this attempt is written later, if it matters
                return self._start(claimed, attempt_saved=False)
            done, self._done = self._done, []
        if self._stop_signal is not None:
            self._put_done(done)
            return None
        opts = self.options
        limit = self._claim_size()
        if opts.max_jobs:
            limit = max(1, min(limit, opts.max_jobs - self.jobs_processed))
        jobs: list[ClaimedJob] = []
        try:
            for rank, queue in enumerate(opts.queues):
                # Batches come from the first queue only: a lower queue's jobs
                # are claimed one at a time, so the higher queues are looked
                # at again before each of them (--queue is a strict order).
                size = limit if rank == 0 else 1
                jobs = self.backend.claim(self.worker_id, queue, size, done, opts.timeout)
                done = []
                if jobs:
                    break
        except BaseException:
            self._put_done(done)
            raise
        if not jobs:
            return None
        with self._lock:
            self._batch_claimed = time.monotonic()
            self._pending.extend(jobs[1:])
            return self._start(jobs[0])

    def _claim_size(self) -> int:
        """How many jobs to claim: one until we know how long jobs take, then
        as many as should finish within ``batch_seconds`` (at most ``prefetch``),
        so fast jobs share round trips and slow ones are left to other workers."""
        opts = self.options
        if opts.once or self._avg_run is None:
            return 1
        if self._avg_run <= 0:
            return opts.prefetch
        return max(1, min(opts.prefetch, int(opts.batch_seconds / self._avg_run)))

    def _start(self, claimed: ClaimedJob, attempt_saved: bool = True) -> ClaimedJob:
        # Called with the lock held.
        self._running = _Running(claimed, time.monotonic(), attempt_saved=attempt_saved)
        return claimed

    def _put_done(self, done: list[Any]) -> None:
        if done:
            with self._lock:
                self._done[:0] = done

    # -- one job ---------------------------------------------------------------

    def _process(self, claimed: ClaimedJob) -> None:
        running = self._running
        assert running is not None and running.claimed is claimed
        opts = self.options
        try:
            running.payload = parse_payload(claimed.payload)
            running.job = build_job(running.payload)
            running.deadline = retry_deadline(running.payload)
        except InvalidPayload as exc:
            self._log.error("job #%s has a bad payload: %s", claimed.id, exc)
            self._finish_failed(running, exc)
            return
        payload = running.payload
        running.max_tries = opts.tries if payload.get("max_tries") is None else payload["max_tries"]
        running.timeout = opts.timeout if payload.get("timeout") is None else float(payload["timeout"])
        running.backoff = payload.get("backoff") or opts.backoff

        # Claimed more often than allowed: the worker running it must have died.
        if running.deadline is not None:
            if dt.datetime.now(dt.UTC) > running.deadline:
                self._finish_failed(running, RetryDeadlinePassed(f"{running.label} passed its retry_until"))
                return
        elif running.max_tries > 0 and claimed.attempts > running.max_tries:
            self._finish_failed(
                running, MaxAttemptsExceeded(f"{running.label} has been attempted too many times")
            )
            return

        self._log.debug("%s running (attempt %d)", running.label, claimed.attempts)
        error: BaseException | None = None
        self._timed_out = False
        self._arm(running.timeout)
        try:
            self._in_job = True
            running.job.handle()
            self._in_job = False
        except Exception as exc:  # noqa: BLE001 - any job error is recorded, never fatal
            self._in_job = False
            error = exc
        finally:
            self._in_job = False
            self._disarm()
            self._end_job_transaction(running)
        ran = time.monotonic() - running.started
        self._avg_run = ran if self._avg_run is None else 0.8 * self._avg_run + 0.2 * ran
        if error is None and self._timed_out:
            # The job caught JobTimeout and returned: it still timed out.
            error = JobTimeout(f"{running.label} has timed out after {running.timeout:g} s")
        duration = time.monotonic() - running.started
        if error is None:
            self._finish_ok(running, duration)
        else:
            self._finish_error(running, error, duration)

    def _finish_ok(self, running: _Running, duration: float) -> None:
        self._log.debug("%s done in %.1f ms", running.label, duration * 1000)
        with self._lock:
            self._done.append(running.claimed.id)
            self._running = None
            flush = duration >= self.options.hold
            done = self._done if flush else []
            if flush:
                self._done = []
        if flush:
            # A long job's completion is written at once, not batched.
            self._queue_op("complete", (done,))
            if duration >= 1.0:
                self._log.info("%s done in %.2f s", running.label, duration)

    def _finish_error(self, running: _Running, exc: BaseException, duration: float) -> None:
        attempts = running.claimed.attempts
        if running.deadline is not None:
            give_up = dt.datetime.now(dt.UTC) >= running.deadline
        else:
            give_up = running.max_tries > 0 and attempts >= running.max_tries
        if give_up:
            self._log.error("%s failed after %d attempt(s): %s", running.label, attempts, _first_line(exc))
            self._finish_failed(running, exc)
            return
        delay = backoff_delay(running.backoff, attempts)
        self._log.warning(
            "%s raised %s (attempt %d); retrying in %g s",
            running.label,
            _first_line(exc),
            attempts,
            delay,
        )
        with self._lock:
            self._running = None
        self._queue_op("release", (running.claimed.id, delay, attempts))

    def _finish_failed(self, running: _Running, exc: BaseException) -> None:
        claimed = running.claimed
        text = "".join(traceback.format_exception(exc)).strip()
        with self._lock:
            self._running = None
        self._queue_op("fail", (claimed, payload_uuid(claimed.payload), text))
        if running.job is not None:
            try:
                running.job.failed(exc)
            except Exception:  # noqa: BLE001
                self._log.exception("%s: its failed() hook raised", running.label)

    def _end_job_transaction(self, running: _Running) -> None:
        """Roll back a transaction the job left open, so the worker's own
        statements do not run inside it."""
        from tourno.db import database

        try:
            if database.in_transaction() or _connection_in_transaction(database):
                self._log.warning("%s left a transaction open; rolling it back", running.label)
                # The connection is in autocommit mode with explicit BEGINs
                # (peewee's way), so the driver's rollback() would be a no-op.
                database.execute_sql("ROLLBACK")
                database._state.transactions.clear()  # peewee's per-thread stack
                # Work deferred to that commit (jobs dispatched to Redis) is dropped with it.
                database._clear_commit_callbacks()
        except DB_ERRORS:
            pass

    # -- finalisation that must survive a database outage ------------------------

    def _queue_op(self, kind: str, args: tuple) -> None:
        self._ops.append((kind, args))
        try:
            self._flush_ops()
        except self._outage_errors as exc:
            self._recover(exc)

    def _flush_ops(self) -> None:
        while self._ops:
            kind, args = self._ops[0]
            if kind == "complete":
                self.backend.complete(self.worker_id, *args)
            elif kind == "release":
                if not self.backend.release(self.worker_id, *args):
                    self._log.warning("job #%s was taken back while it ran; not releasing it", args[0])
            elif kind == "fail":
                if not self.backend.fail(self.worker_id, *args):
                    self._log.warning("job #%s was taken back while it ran; not failing it", args[0].id)
            self._ops.pop(0)

    def _recover(self, exc: BaseException) -> None:
        """The database went away: reconnect with backoff until it is back or
        we are told to stop. Nothing queued in ``_ops`` is lost."""
        self._log.warning("lost the database or queue connection: %s; reconnecting", _first_line(exc))
        delay = 0.5
        while self._stop_signal is None:
            self.backend.close_thread_connection()
            self._wait(delay)
            try:
                open_connection()
                self.backend.ping()
                self._log.info("connection restored")
                return
            except (DatabaseUnavailable, *self.backend.connection_errors) as again:
                self._log.debug("still unavailable: %s", again)
                delay = min(delay * 2, 10.0)

    # -- waiting, signals, timeouts ---------------------------------------------------

    def wake(self) -> None:
        """Interrupt an idle wait (safe from signal handlers and other threads)."""
        try:
            os.write(self._wake_w, b"\0")
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise

    def _wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        ready, _, _ = select.select([self._wake_r], [], [], seconds)
        if ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGALRM, self._on_alarm)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None:
            raise WorkerAborted(f"second {signal.Signals(signum).name}")
        self._stop_signal = signum
        self.wake()

    def _arm(self, timeout: float) -> None:
        if timeout > 0:
            signal.setitimer(signal.ITIMER_REAL, timeout)

    def _disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        running = self._running
        if running is None or not self._in_job:
            return
        if not self._timed_out:
            self._timed_out = True
            # Give the job a grace period to unwind, then act.
            signal.setitimer(signal.ITIMER_REAL, max(self.options.grace, 0.1))
            raise JobTimeout(f"{running.label} has timed out after {running.timeout:g} s")
        self._hard_timeout(running)

    def _hard_timeout(self, running: _Running) -> None:
        """The job ignored JobTimeout. Record its failure on the monitor's
        connection (ours may be mid-transaction) and exit; supervisord or
        systemd starts a fresh worker."""
        self._log.error("%s did not stop after its timeout; exiting", running.label)
        monitor = self._monitor
        if monitor is not None and threading.current_thread() is not monitor:
            monitor.request_hard_stop(running)
            time.sleep(10)
        else:
            self._record_timeout(running)
        os._exit(EXIT_TIMEOUT)

    def _record_timeout(self, running: _Running) -> None:
        exc = JobTimeout(f"{running.label} has timed out and did not stop; its worker exited")
        # Stored like every other failure: the text names the exception type.
        text = "".join(traceback.format_exception_only(exc)).strip()
        attempts = running.claimed.attempts
        try:
            if running.max_tries > 0 and attempts >= running.max_tries:
                self.backend.fail(
                    self.worker_id, running.claimed, payload_uuid(running.claimed.payload), text
                )
            else:
                self.backend.release(
                    self.worker_id, running.claimed.id, backoff_delay(running.backoff, attempts), attempts
                )
            done, pending = self._take_batch()
            self.backend.complete(self.worker_id, done)
            self.backend.hand_back(self.worker_id, pending)
            self.backend.unregister_worker(self.worker_id)
        except Exception:  # noqa: BLE001 - we are exiting; rescue covers the rest
            log.exception("could not record the timed-out job")

    # -- shutdown ---------------------------------------------------------------

    def _take_batch(self) -> tuple[list[Any], list[Any]]:
        """Take what the worker still holds of its batch, for leaving: the ids
        of finished jobs not yet deleted, and of claimed jobs never started."""
        with self._lock:
            done, self._done = self._done, []
            pending = [j.id for j in self._pending]
            self._pending.clear()
        return done, pending

    def _shutdown(self) -> None:
        self._disarm()
        if self.on_stopping is not None:
            self._safe("run the on_stopping hook", self.on_stopping)
        if self._monitor is not None:
            self._monitor.stop()
            # Join before deleting our row: a heartbeat still in flight is an
            # upsert and would re-create it, showing this worker as live.
            self._monitor.join(timeout=5)
        done, pending = self._take_batch()
        self._safe("flush finished jobs", self._flush_ops)
        self._safe("delete finished jobs", self.backend.complete, self.worker_id, done)
        self._safe("hand back claimed jobs", self.backend.hand_back, self.worker_id, pending)
        self._safe("remove worker row", self.backend.unregister_worker, self.worker_id)
        if self._owns_connection:
            self.backend.close_thread_connection()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _safe(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - shutdown must go on
            self._log.warning("could not %s: %s", what, _first_line(exc))
            return None

    # -- used by the monitor thread ---------------------------------------------------

    def heartbeat_info(self) -> dict[str, Any]:
        running = self._running
        return {
            "name": self.options.name,
            "hostname": self.hostname,
            "pid": self.pid,
            "queues": ",".join(self.options.queues),
            "started_at": self.started_at,
            "current_job_id": running.claimed.id if running else None,
            "jobs_done": self.jobs_processed,
        }

    def release_held(self, now: float) -> None:
        """Called by the monitor: once the current batch has been held past
        ``hold`` (a slow job in it), write pending completions and hand back
        the unstarted jobs so that other workers can take them; once a
        prefetched job has run ``hold`` seconds, write its attempt."""
        with self._lock:
            running = self._running
            if running is None:
                return
            charge = None
            if not running.attempt_saved and now - running.started >= self.options.hold:
                charge = running.claimed
            held = now - self._batch_claimed >= self.options.hold and bool(self._done or self._pending)
            if charge is None and not held:
                return
            done: list[Any] = []
            pending: list[ClaimedJob] = []
            if held:
                done, self._done = self._done, []
                pending = list(self._pending)
                self._pending.clear()
            label = running.label
        try:
            if charge is not None:
                self.backend.count_attempt(self.worker_id, charge.id, charge.attempts)
                running.attempt_saved = True
            if done:
                self.backend.complete(self.worker_id, done)
            if pending:
                self.backend.hand_back(self.worker_id, [j.id for j in pending])
                self._log.debug("handed back %d claimed jobs while %s runs", len(pending), label)
        except BaseException:
            with self._lock:
                self._done[:0] = done
                self._pending.extendleft(reversed(pending))
            raise

    def watchdog(self, now: float) -> None:
        """Called by the monitor: a job far past timeout + grace means the
        main thread is stuck where SIGALRM cannot reach it."""
        running = self._running
        if running is None or running.timeout <= 0:
            return
        if now - running.started > running.timeout + self.options.grace + 5.0:
            self._log.error("%s is stuck past its timeout; exiting", running.label)
            self._record_timeout(running)
            os._exit(EXIT_TIMEOUT)


class _Monitor(threading.Thread):
    """Heartbeat, rescue of dead workers' jobs, notifications, and the watch
    over the running job, on a connection of its own."""

    TICK = 0.25

    def __init__(self, worker: Worker) -> None:
        super().__init__(name=f"tourno-monitor-{worker.worker_id}", daemon=True)
        self.worker = worker
        self._stopping = threading.Event()
        self._hard_stop: _Running | None = None

    def stop(self) -> None:
        self._stopping.set()

    def request_hard_stop(self, running: _Running) -> None:
        self._hard_stop = running

    def run(self) -> None:
        w = self.worker
        backend = w.backend
        opts = w.options
        queues = set(opts.queues)
        connected = False
        next_beat = next_rescue = 0.0
        failures = 0
        vacuumed_at = 0
        while not self._stopping.is_set():
            try:
                if not connected:
                    open_connection()
                    backend.listen()
                    connected = True
                    # Jobs dispatched before LISTEN took effect sent their NOTIFY
                    # to nobody: at start (the main loop's first claim runs
                    # before this) as after an outage. Make the loop look again.
                    w.wake()
                    failures = 0
                if self._hard_stop is not None:
                    w._record_timeout(self._hard_stop)
                    os._exit(EXIT_TIMEOUT)
                now = time.monotonic()
                if now >= next_beat:
                    restart = backend.heartbeat(w.worker_id, w.heartbeat_info())
                    if restart is not None and w.started_at is not None and restart > w.started_at:
                        if not w._restart_requested:
                            w._log.info("restart signal received; stopping after the current job")
                        w._restart_requested = True
                        w.wake()
                    next_beat = now + opts.heartbeat_interval
                if now >= next_rescue:
                    for job_id, owner in backend.rescue(opts.stale_after):
                        w._log.warning("released job #%s: its worker #%s stopped heartbeating", job_id, owner)
                    backend.maintain()
                    next_rescue = now + opts.heartbeat_interval
                w.release_held(now)
                w.watchdog(now)
                if w.jobs_processed - vacuumed_at >= VACUUM_EVERY:
                    vacuumed_at = w.jobs_processed
                    started = time.monotonic()
                    if backend.vacuum():
                        w._log.debug("vacuumed jobs in %.0f ms", (time.monotonic() - started) * 1000)
                if backend.wait_for_notifications(self.TICK) & queues:
                    w.wake()
            except Exception as exc:  # noqa: BLE001 - the monitor must outlive outages
                failures += 1
                if failures == 1:
                    w._log.warning("monitor: %s", _first_line(exc))
                backend.close_thread_connection()
                connected = False
                self._stopping.wait(min(0.5 * 2**failures, 10.0))
        backend.close_thread_connection()


class _Prefixed(logging.LoggerAdapter):
    """Prefixes every message with the worker's name, id and pid."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"{self.extra['prefix']} {msg}", kwargs


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _connection_in_transaction(db: Any) -> bool:
    conn = getattr(db._state, "conn", None)
    if conn is None:
        return False
    status = getattr(conn, "get_transaction_status", None)
    if status is not None:  # psycopg2: 0 is idle
        return status() != 0
    return bool(getattr(conn, "in_transaction", False))

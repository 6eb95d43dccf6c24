"""The worker: claim a job, run it, finish it; repeat until told to stop.

One job at a time per process, in the main thread, so that SIGALRM can enforce
timeouts. A second thread, the monitor (``monitor.py``), owns a second
connection: it writes the heartbeat, releases the jobs of dead workers,
listens for dispatch notifications, and watches the running job.

Round trips are the cost that matters. When jobs are fast and the
queue is deep, the worker claims a batch in one statement (as many as it
expects to finish in ``batch_seconds``, at most ``prefetch``) and deletes the
jobs it finished in the same statement as its next claim (``batch.py`` holds
that state). Three rules keep that from bending the semantics:

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

Each finished attempt is counted in memory (``_count``) and the counts ride
along with the next write to the queue (``metrics.py`` explains why that is
at-least-once).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import signal
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Collection, MutableMapping
from types import FrameType
from typing import Any, NoReturn

from tourno.db import (
    OUTAGE_ERRORS,
    connection_in_transaction,
    database,
    open_connection,
    reset_transaction_state,
)
from tourno.errors import first_line
from tourno.queue import events, middleware, workflows
from tourno.queue.backends.base import QueueBackend
from tourno.queue.batch import (
    Cancel,
    ClaimBatch,
    Complete,
    CompleteStep,
    Fail,
    FinishOp,
    JobOp,
    PendingOps,
    Release,
    RunningJob,
    put_back_metrics,
    take_metrics,
)
from tourno.queue.batch import Snooze as SnoozeOp
from tourno.queue.exceptions import InvalidPayload, JobLeaseLost, JobTimeout, Snooze, WorkerAborted
from tourno.queue.job import Job, payload_uuid
from tourno.queue.metrics import UNKNOWN_JOB, MetricsBuffer
from tourno.queue.monitor import Monitor
from tourno.queue.options import WorkerOptions
from tourno.signals import Waker, installed

__all__ = ["EXIT_LEASE_LOST", "EXIT_MEMORY", "EXIT_OK", "EXIT_TIMEOUT", "Worker", "WorkerOptions"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_MEMORY = 12
#: A job ignored its timeout and did not unwind within the grace period.
EXIT_TIMEOUT = 13
#: The worker's heartbeat went unwritten, and its job did not stop in time (fencing).
EXIT_LEASE_LOST = 14
#: The shortest idle wait (seconds) when a waiting job is due already.
MIN_IDLE_WAIT = 0.005


def rss_mb() -> float:
    """This process's resident memory in MiB (current, not peak)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1048576
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Worker:
    """Runs jobs from ``backend`` one at a time until a stop condition."""

    #: The monitor thread's class: an extension point (tests subclass it).
    monitor_class: type[Monitor] = Monitor

    def __init__(
        self,
        backend: QueueBackend,
        options: WorkerOptions,
        *,
        on_ready: Callable[[], object] | None = None,
        on_stopping: Callable[[], object] | None = None,
    ) -> None:
        options.validate()
        self.backend = backend
        self.options = options
        # The backend's own outage errors (e.g. Redis) are handled like the database's.
        self._outage_errors = OUTAGE_ERRORS + tuple(backend.connection_errors)
        # Lifecycle hooks, e.g. for systemd's sd_notify: called once the worker
        # is registered and about to take jobs, and once it starts to stop.
        self.on_ready = on_ready
        self.on_stopping = on_stopping
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.worker_id: int | None = None
        self.started_at: dt.datetime | None = None
        self.jobs_processed = 0
        #: Finished jobs by outcome (succeeded, failed) and retries (released):
        #: jobs, not attempts, for the stop line.
        self.outcomes: Counter[str] = Counter()
        self.stop_reason: str | None = None
        self.log: logging.LoggerAdapter[logging.Logger] = _Prefixed(log, {"prefix": "[worker]"})
        #: Set by the monitor when ``tourno queue restart`` was signalled after we started.
        self.restart_requested = threading.Event()
        self.batch = ClaimBatch(options.hold)
        #: Counts of finished attempts not written yet (None: metrics are off).
        self.metrics: MetricsBuffer | None = MetricsBuffer() if options.metrics else None

        self._ops = PendingOps()  # finishing operations waiting for the backend
        self._avg_run: float | None = None  # moving average of job run time
        self._next_memory_check = 0.0
        self._stop_signal: int | None = None
        self._in_job = False
        self._timed_out = False
        self._waker = Waker()
        self._monitor: Monitor | None = None
        self._owns_connection = False
        self._stopping_emitted = False
        # A middleware key the worker could not let go of (connection lost).
        self._keys_left_held = False
        #: The queues of ours that are paused (set by the monitor; replaced, never mutated).
        self._paused: frozenset[str] = frozenset()
        # Held by the main thread through each run_once (re-entrant: its
        # _recover may run inside): while it is free, the batch and the
        # pending operations are at rest and no claim is in flight.
        self._busy = threading.RLock()
        # A reconnect asked for release_unheld; it is done when it succeeds.
        self._unheld_check = False
        # While idle: when the wait ends (time.monotonic()); read by the monitor.
        self._wake_at: float | None = None
        # Self-fencing (monitor.Fence): when the last heartbeat that was
        # written was sent, and when one last failed (time.monotonic()).
        self.lease_renewed_at = time.monotonic()
        self._lease_doubt_at = -math.inf
        #: Set while the heartbeat has gone unwritten for the fence window.
        self.fenced = threading.Event()
        # The job the fence interrupted (its id), and whether it was told.
        self._fenced_job: Any = None
        self._lease_raised = False
        self._alarm_installed = False

    # -- public ----------------------------------------------------------------

    def run(self, install_signals: bool = True) -> int:
        """Work until a stop condition; return the process exit code. The
        signal handlers the worker installs are put back as they were."""
        # SIGTERM, SIGINT and SIGQUIT stop the worker after its current job
        # (a second one aborts it); SIGALRM is the job's timeout. (A literal
        # here, so that its key type follows installed()'s signature.)
        stop, alarm = self._on_stop_signal, self._on_alarm
        with installed(
            {signal.SIGTERM: stop, signal.SIGINT: stop, signal.SIGQUIT: stop, signal.SIGALRM: alarm}
            if install_signals
            else {}
        ) as active:
            if install_signals and not active:
                # Without its handlers a timeout's SIGALRM would kill the process.
                raise RuntimeError(
                    "Worker.run() installs signal handlers (stop signals, job timeouts) and must "
                    "run in the main thread; pass install_signals=False to run it elsewhere"
                )
            self._alarm_installed = bool(install_signals)
            try:
                return self._run()
            finally:
                self._alarm_installed = False

    def _run(self) -> int:
        self.register()
        self._monitor = self.monitor_class(self)
        self._monitor.start()
        if self.on_ready is not None:
            self.on_ready()
        code = EXIT_OK
        try:
            code = self._loop()
        except WorkerAborted:
            self.stop_reason = "aborted"
            code = 128 + (self._stop_signal or signal.SIGTERM)
            self.log.warning("aborted by a second signal")
            running = self.batch.running
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
            self.close()
        self.log.info("stopped (%s): %s", self.stop_reason, self.summary())
        return code

    def register(self) -> None:
        """Connect and create this worker's row (``run`` does it; ``run_once``
        does it on first use)."""
        if self.worker_id is not None:
            return
        self._owns_connection = database.is_closed()
        open_connection()
        # The row's first heartbeat is written after this instant.
        sent = time.monotonic()
        self.worker_id, self.started_at = self.backend.register_worker(
            self.options.name, self.hostname, self.pid, self.options.queues
        )
        self.log = _Prefixed(
            log,
            {
                "prefix": f"[{self.options.name}#{self.worker_id} pid {self.pid}]",
                "worker": self.options.name,
                "worker_id": self.worker_id,
            },
        )
        self.lease_renewed_at = sent
        self.log.info("processing queues %s", ",".join(self.options.queues))
        # Before the first claim: the monitor's first reload comes later.
        self.update_paused(self.backend.paused())
        self._emit_worker("worker.started")

    def run_once(self, now: dt.datetime | None = None) -> bool:
        """One iteration: write what is waiting to be written, claim if the
        batch is empty, run at most one job and finish it. Returns whether a
        job ran. ``now`` is the wall-clock time its retry deadline is judged
        at (default: the current time). A lost database connection raises one
        of the outage errors; the loop reconnects and carries on."""
        self.register()
        with self._busy:
            if self._unheld_check:
                self.release_unheld()
            self._flush_ops()
            running = self._next_job()
            if running is None:
                return False
            self._process(running, now)
            self.jobs_processed += 1
            return True

    def summary(self) -> str:
        """What the stop line says: jobs finished, not attempts."""
        done = self.outcomes
        # Released and snoozed jobs come back: they are not finished.
        later = ("released", "snoozed")
        finished = sum(n for outcome, n in done.items() if outcome not in later)
        parts = [f"{done[o]} {o}" for o in sorted(done) if o not in later and done[o]]
        text = f"{finished} job(s) finished"
        if parts:
            text += f" ({', '.join(parts)})"
        if done["released"]:
            text += f", {done['released']} retried later"
        if done["snoozed"]:
            text += f", {done['snoozed']} snoozed"
        return text

    def wake(self) -> None:
        """Interrupt an idle wait (safe from signal handlers and other threads)."""
        self._waker.wake()

    # -- the loop --------------------------------------------------------------

    def _loop(self) -> int:
        start = time.monotonic()
        opts = self.options
        while True:
            try:
                worked = self.run_once()
            except self._outage_errors as exc:
                self._recover(exc)
                worked = False
                if self._stop_signal is None:
                    continue
            if worked and opts.rest > 0:
                self._wait(opts.rest)
            code = self._stop_check(not worked, start)
            if code is not None:
                return code
            if not worked:
                self._idle_wait(opts.sleep)

    def _stop_check(self, idle: bool, start: float) -> int | None:
        """Laravel's order: signal, memory, restart, empty, max time, max jobs."""
        opts = self.options
        if self._stop_signal is not None:
            self.stop_reason = "interrupted"
            return EXIT_OK
        if opts.memory > 0 and self._memory_exceeded():
            self.stop_reason = "memory"
            self.log.warning("memory %.1f MB reached the --memory limit of %g MB", rss_mb(), opts.memory)
            return EXIT_MEMORY
        if self.restart_requested.is_set():
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

    def _next_job(self) -> RunningJob | None:
        if self.fenced.is_set():
            self._leave_batch_while_fenced()
            return None
        running = self.batch.take_next(skip=self._paused)
        if running is not None:
            return running
        done = self.batch.take_done()
        if self._stop_signal is not None:
            self.batch.put_back_done(done)
            return None
        assert self.worker_id is not None
        opts = self.options
        queues = self.active_queues()
        if not queues:
            # Every queue we serve is paused: no claim to carry the deletions.
            if done:
                self._queue_op(Complete(done))
            return None
        limit = self._claim_size()
        if opts.max_jobs:
            limit = max(1, min(limit, opts.max_jobs - self.jobs_processed))
        jobs = []
        # After the done ids: a count is never written without its job's deletion.
        rows = take_metrics(self.metrics)
        try:
            for rank, queue in enumerate(queues):
                # Batches come from the first queue only: a lower queue's jobs
                # are claimed one at a time, so the higher queues are looked
                # at again before each of them (--queue is a strict order).
                size = limit if rank == 0 else 1
                jobs = self.backend.claim(self.worker_id, queue, size, done, opts.timeout, rows)
                done, rows = [], []
                if jobs:
                    break
        except BaseException:
            self.batch.put_back_done(done)
            put_back_metrics(self.metrics, rows)
            raise
        return self.batch.start(jobs) if jobs else None

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

    # -- one job ---------------------------------------------------------------

    def _process(self, running: RunningJob, now: dt.datetime | None) -> None:
        claimed = running.claimed
        opts = self.options
        try:
            job = running.load(opts.tries, opts.timeout, opts.backoff)
        except InvalidPayload as exc:
            self._finish_failed(running, exc)
            return
        if running.cancel_requested:
            # Cancelled while it waited in the batch: not run at all.
            self._finish_cancelled(running)
            return
        refusal = running.refusal(now or dt.datetime.now(dt.UTC))
        if refusal is not None:
            self._finish_failed(running, refusal)
            return

        if self._fenced_job is not None and self._fenced_job != claimed.id:
            self._fenced_job = None  # an earlier job's, seen as it finished
        if self.fenced.is_set():
            # Fenced as it was taken: not run at all.
            self._fenced_job = None
            self._finish_lease_lost(running, 0.0)
            return
        # A batch's job (or callback) gets its batch; a cancelled batch's are skipped.
        payload = running.payload or {}
        skip = (workflows.BATCH in payload or workflows.BATCH_OF in payload) and self._attach(job, running)
        self.log.debug("%s running (attempt %d)", running.label, claimed.attempts)
        self._emit_job("job.started", running)
        error: BaseException | None = None
        self._timed_out = False
        self._lease_raised = False
        self._arm(running.timeout)
        try:
            self._in_job = True
            if not skip:
                self._handle(job, running)
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
        duration = time.monotonic() - running.started
        if self._lease_raised or (self._fenced_job is not None and self._fenced_job == claimed.id):
            # Whatever it returned or raised: its lease is lost.
            self._fenced_job = None
            self._finish_lease_lost(running, duration)
            return
        if self._timed_out and (error is None or isinstance(error, Snooze)):
            # The job caught JobTimeout and returned (or snoozed): it still timed out.
            error = JobTimeout(f"{running.label} has timed out after {running.timeout:g} s")
        if self._timed_out:
            self._emit_job("job.timed_out", running, duration=duration, exception=error)
        if running.cancel_requested:
            self._finish_cancelled(running, duration, error)
        elif error is None:
            self._finish_ok(running, duration)
        elif isinstance(error, Snooze):
            self._finish_snoozed(running, error, duration)
        else:
            self._finish_error(running, error, duration, now)

    def _attach(self, job: Job, running: RunningJob) -> bool:
        """``workflows.attach``: True when the job's batch was cancelled. If
        the database cannot say, the job runs."""
        assert running.payload is not None
        try:
            skip = workflows.attach(job, running.payload)
        except self._outage_errors as exc:
            self.log.warning("%s: could not read its batch: %s", running.label, first_line(exc))
            return False
        if skip:
            self.log.info("%s skipped: its batch was cancelled", running.label)
        return skip

    def _handle(self, job: Job, running: RunningJob) -> None:
        layers = job.middleware()
        if not layers:
            job.handle()
            return
        assert self.worker_id is not None
        claimed = running.claimed
        context = middleware.JobContext(
            self.backend,
            self.worker_id,
            claimed.id,
            claimed.queue,
            claimed.attempts,
            self.options.stale_after,
        )
        try:
            middleware.run(job, layers, context)
        finally:
            if context.keys_left_held:
                self._keys_left_held = True

    def _finish_ok(self, running: RunningJob, duration: float) -> None:
        # The line counts the attempt before its id joins the done list
        # (metrics.py says why).
        self._job_line(logging.INFO, running, "succeeded", duration, "DONE")
        job_id = running.claimed.id
        if running.payload is not None and workflows.is_step(running.payload):
            # A chain or batch job: deleted with its next step, at once.
            self.batch.stop_running()
            self._queue_op(CompleteStep(job_id, running.payload))
            self._emit_job("job.succeeded", running, duration=duration)
            return
        if self._lease_in_doubt(running):
            # Its heartbeat failed while it ran: other workers may have
            # rescued it. The deletion is written now, and checked.
            others = [i for i in self.batch.finish(job_id, write_now=True) if i != job_id]
            if others:
                self._queue_op(Complete(others))
            self._queue_op(_CheckedComplete(job_id))
        else:
            # A long job's completion is written at once, not batched.
            done = self.batch.finish(job_id, write_now=duration >= self.options.hold)
            if done:
                self._queue_op(Complete(done))
        self._emit_job("job.succeeded", running, duration=duration)

    def _finish_error(
        self, running: RunningJob, exc: BaseException, duration: float, now: dt.datetime | None
    ) -> None:
        attempts = running.claimed.attempts
        timed_out_for_good = self._timed_out and running.fails_on_timeout
        if timed_out_for_good or running.out_of_attempts(now or dt.datetime.now(dt.UTC)):
            self._finish_failed(running, exc, duration)
            return
        # A timed-out attempt is no exception of the job's: tries (or
        # fail_on_timeout) decide. The count is read only for jobs that declare
        # max_exceptions, so plain retries cost no extra statement.
        raised = not self._timed_out
        limit = running.max_exceptions
        if raised and limit and self.backend.exceptions(running.claimed.id) + 1 >= limit:
            self._finish_failed(running, exc, duration)
            return
        delay = running.retry_delay()
        self._job_line(
            logging.WARNING,
            running,
            "released",
            duration,
            f"RETRY in {delay:g} s (attempt {attempts}): {first_line(exc)}",
        )
        self.batch.stop_running()
        self._queue_op(Release(running.claimed.id, delay, attempts, raised))
        self._emit_job("job.released", running, duration=duration, exception=exc, delay=delay)

    def _finish_snoozed(self, running: RunningJob, snooze: Snooze, duration: float) -> None:
        """The job raised Snooze: run it again after the delay, giving back
        the attempt it was charged (at claim, or at start for a prefetched
        job; ``attempts - 1`` is right whether or not the database counted it
        yet). Not a failure: neither tries nor retry_until are consulted."""
        delay = snooze.seconds
        self._job_line(
            logging.INFO,
            running,
            "snoozed",
            duration,
            f"SNOOZED for {delay:g} s (attempt {running.claimed.attempts} not counted)",
        )
        self.batch.stop_running()
        self._queue_op(SnoozeOp(running.claimed.id, delay, running.claimed.attempts - 1))
        self._emit_job("job.snoozed", running, duration=duration, delay=delay)

    def _finish_cancelled(
        self, running: RunningJob, duration: float | None = None, error: BaseException | None = None
    ) -> None:
        """``tourno queue cancel`` flagged the job: whatever the attempt's
        outcome, delete it (it is neither retried nor filed as failed)."""
        text = "CANCELLED before it started" if duration is None else "CANCELLED"
        self._job_line(logging.INFO, running, "cancelled", duration, text)
        self.batch.stop_running()
        self._queue_op(Cancel(running.claimed.id))
        self._emit_job("job.cancelled", running, duration=duration, exception=error)

    def _finish_failed(self, running: RunningJob, exc: BaseException, duration: float | None = None) -> None:
        claimed = running.claimed
        text = "".join(traceback.format_exception(exc)).strip()
        uuid = payload_uuid(claimed.payload)
        # The failed job is stored under the payload's uuid, which `retry` takes.
        self._job_line(
            logging.ERROR,
            running,
            "failed",
            duration,
            f"FAILED after {claimed.attempts} attempt(s): {first_line(exc)}; "
            f"retry with: tourno queue retry {uuid}",
            uuid,
        )
        self.batch.stop_running()
        self._queue_op(Fail(claimed, uuid, text, _step_payload(running)))
        if running.job is not None:
            try:
                running.job.failed(exc)
            except Exception:  # noqa: BLE001
                self.log.exception("%s: its failed() hook raised", running.label)
        self._emit_job("job.failed", running, duration=duration, exception=exc)

    def _end_job_transaction(self, running: RunningJob) -> None:
        """Roll back a transaction the job left open, so the worker's own
        statements do not run inside it."""
        try:
            if database.in_transaction() or connection_in_transaction():
                self.log.warning("%s left a transaction open; rolling it back", running.label)
                # The connection is in autocommit mode with explicit BEGINs
                # (peewee's way), so the driver's rollback() would be a no-op.
                database.execute_sql("ROLLBACK")
                # Work deferred to that commit (jobs dispatched to Redis) is dropped with it.
                reset_transaction_state()
        except OUTAGE_ERRORS:
            pass

    # -- finishing that must survive a database outage ---------------------------

    def _queue_op(self, op: FinishOp) -> None:
        self._ops.add(op)
        try:
            self._flush_ops()
        except self._outage_errors as exc:
            self._recover(exc)

    def _flush_ops(self) -> None:
        if self._ops:
            assert self.worker_id is not None
            self._ops.flush(self.backend, self.worker_id, self._taken_back, self.metrics)
        if self._keys_left_held:
            # Between jobs this worker holds no key: let go of what a lost
            # connection kept it from letting go of.
            assert self.worker_id is not None
            self.backend.release_locks(self.worker_id)
            self._keys_left_held = False

    def _taken_back(self, op: JobOp) -> None:
        if isinstance(op, _CheckedComplete):
            self.log.warning(
                "job #%s finished here, but it had been taken back (rescued) while it ran: "
                "it may have run on another worker too",
                op.job_id,
            )
            return
        verbs = {
            Release: "releasing",
            SnoozeOp: "snoozing",
            Cancel: "deleting",
            Fail: "failing",
            CompleteStep: "completing",
        }
        self.log.warning("job #%s was taken back while it ran; not %s it", op.job_id, verbs[type(op)])

    def _recover(self, exc: BaseException) -> None:
        """The database went away: reconnect with backoff until it is back or
        we are told to stop. Nothing waiting in ``_ops`` is lost."""
        self.log.warning("lost the database or queue connection: %s; reconnecting", first_line(exc))
        delay = 0.5
        while self._stop_signal is None:
            self.backend.close_thread_connection()
            self._wait(delay)
            try:
                open_connection()
                self.backend.ping()
                self.log.info("connection restored")
                self.release_unheld()
                return
            except self._outage_errors as again:
                self.log.debug("still unavailable: %s", first_line(again))
                delay = min(delay * 2, 10.0)

    def release_unheld(self, *, wait: bool = True) -> bool:
        """After a reconnect (ours, or the monitor's): hand back the jobs
        reserved under this worker that it does not hold. A claim that
        committed on the server while its reply was lost leaves such jobs,
        and our heartbeat would keep the rescue off them until their lease
        ends (an hour and more at a long --timeout). The claim's unused
        attempt is given back with them (``QueueBackend.release_unheld``).

        It runs only while the main thread is outside ``run_once`` or is the
        caller, so that nothing is claimed meanwhile and the held set is
        complete. With ``wait=False`` (the monitor) a busy main thread is not
        waited for: the check is left to the start of its next ``run_once``.
        Returns whether the check ran; an outage error propagates, and the
        check stays due."""
        self._unheld_check = True
        if not self._busy.acquire(blocking=wait):
            return False
        try:
            assert self.worker_id is not None
            held = self.batch.held_ids() + self._ops.job_ids()
            released = self.backend.release_unheld(self.worker_id, held)
            self._unheld_check = False
        finally:
            self._busy.release()
        if released:
            self.log.warning(
                "handed back %d job(s) reserved under this worker that it never received "
                "(a claim's reply was lost with the connection)",
                released,
            )
        return True

    # -- waiting, signals, timeouts ---------------------------------------------------

    def _wait(self, seconds: float) -> None:
        self._waker.wait(seconds)

    def _idle_wait(self, sleep: float) -> None:
        """Nothing to claim: sleep until the poll (``--sleep``), a wake-up, or
        the moment the first waiting job of our queues is due, whichever
        comes first, so that a delayed or backed-off job starts on time. One
        indexed look-up per idle spell, never on the claim path; a delayed
        job announced while we sleep (``due_heard``) shortens the wait."""
        # Set before the look-up: a job announced meanwhile still wakes us.
        self._wake_at = time.monotonic() + sleep
        try:
            due = self.backend.next_due(self.active_queues())
        except self._outage_errors:
            due = None  # the next claim meets the outage and recovers
        # At least a few milliseconds: a job due now that the claim did not
        # get (another worker took it) must not make us spin.
        seconds = sleep if due is None else min(sleep, max(due, MIN_IDLE_WAIT))
        try:
            self._wait(seconds)
        finally:
            self._wake_at = None

    def due_heard(self, due: float) -> None:
        """From the monitor: a job of one of our active queues is due at
        ``due`` (epoch seconds). Wake an idle wait that would end later, so
        that it looks again."""
        wake_at = self._wake_at
        if wake_at is not None and time.monotonic() + (due - time.time()) < wake_at - MIN_IDLE_WAIT:
            self.wake()

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_signal is not None:
            raise WorkerAborted(f"second {signal.Signals(signum).name}")
        self._stop_signal = signum
        self.wake()

    def _arm(self, timeout: float) -> None:
        if timeout > 0:
            signal.setitimer(signal.ITIMER_REAL, timeout)

    def _disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        running = self.batch.running
        if running is None or not self._in_job:
            return
        if self._fenced_job is not None and self._fenced_job == running.claimed.id:
            if not self._lease_raised:
                self._lease_raised = True
                # The fence (monitor.Fence) ends the process if it does not unwind.
                self._disarm()
                raise JobLeaseLost(
                    f"{running.label}: this worker's heartbeat was not written for "
                    f"{time.monotonic() - self.lease_renewed_at:.1f} s; stopping the job "
                    "before another worker may rescue it"
                )
            return
        if not self._timed_out:
            self._timed_out = True
            # Give the job a grace period to unwind, then act.
            signal.setitimer(signal.ITIMER_REAL, max(self.options.grace, 0.1))
            raise JobTimeout(f"{running.label} has timed out after {running.timeout:g} s")
        self.log.error("%s did not stop after its timeout; exiting", running.label)
        monitor = self._monitor
        if monitor is not None and monitor.is_alive():
            # Our connection may be mid-transaction: the monitor records it on its own.
            monitor.request_hard_stop(running)
            time.sleep(10)
            os._exit(EXIT_TIMEOUT)
        self.hard_stop(running)

    def hard_stop(self, running: RunningJob) -> NoReturn:
        """The job ignored its timeout: record it (failed on its last try,
        else released), leave the batch, and end the process at once on the
        calling thread's connection; supervisord or systemd starts a fresh
        worker. The monitor calls this (``Monitor.watchdog``, or for the
        main thread's SIGALRM)."""
        self._record_timeout(running)
        os._exit(EXIT_TIMEOUT)

    def _record_timeout(self, running: RunningJob) -> None:
        assert self.worker_id is not None
        exc = JobTimeout(f"{running.label} has timed out and did not stop; its worker exited")
        # Stored like every other failure: the text names the exception type.
        text = "".join(traceback.format_exception_only(exc)).strip()
        attempts = running.claimed.attempts
        duration = time.monotonic() - running.started
        self._emit_job("job.timed_out", running, duration=duration, exception=exc)
        try:
            if running.fails_on_timeout or (running.max_tries > 0 and attempts >= running.max_tries):
                uuid = payload_uuid(running.claimed.payload)
                # The line counts the attempt: its count travels with the fail.
                self._job_line(
                    logging.ERROR,
                    running,
                    "failed",
                    duration,
                    f"TIMED OUT and FAILED after {attempts} attempt(s); "
                    f"retry with: tourno queue retry {uuid}",
                    uuid,
                )
                Fail(running.claimed, uuid, text, _step_payload(running)).apply(
                    self.backend, self.worker_id, take_metrics(self.metrics)
                )
                self._emit_job("job.failed", running, duration=duration, exception=exc)
            else:
                delay = running.retry_delay()
                self._job_line(
                    logging.ERROR, running, "released", duration, f"TIMED OUT; RETRY in {delay:g} s"
                )
                self.backend.release(
                    self.worker_id, running.claimed.id, delay, attempts, take_metrics(self.metrics)
                )
                self._emit_job("job.released", running, duration=duration, exception=exc, delay=delay)
            done, pending = self.batch.drain()
            self.backend.complete(self.worker_id, done, take_metrics(self.metrics))
            self.backend.hand_back(self.worker_id, pending)
            self.backend.unregister_worker(self.worker_id)
        except Exception:  # noqa: BLE001 - we are exiting; rescue covers the rest
            self.log.exception("could not record the timed-out job")

    # -- self-fencing (monitor.Fence decides; these act) ------------------------------

    def lease_renewed(self, sent: float) -> None:
        """From the monitor: a heartbeat sent at ``sent`` (time.monotonic())
        was written. The database stamped it later than that, so the stale
        window counted from ``sent`` ends no later than the rescuers' one."""
        if sent > self.lease_renewed_at:
            self.lease_renewed_at = sent

    def lease_doubted(self) -> None:
        """From the monitor: a heartbeat failed (the lease may run out)."""
        self._lease_doubt_at = time.monotonic()

    def _lease_in_doubt(self, running: RunningJob) -> bool:
        interval = self.options.heartbeat_interval
        return (
            self.fenced.is_set()
            or self._lease_doubt_at >= running.started
            or time.monotonic() - self.lease_renewed_at > 2 * interval
        )

    def fence(self, silent_for: float) -> None:
        """From the fence thread: the heartbeat went unwritten for most of
        the stale window. Stop claiming, and interrupt the running job (with
        JobLeaseLost, through SIGALRM as a timeout does) before anyone may
        rescue it."""
        if self.fenced.is_set():
            return
        # Set before the look at the running job: a job the main thread
        # starts meanwhile either sees the flag or is seen here.
        self.fenced.set()
        running = self.batch.running
        self.log.error(
            "heartbeat not written for %.1f s (workers are presumed dead after %g s): "
            "claiming no jobs%s until it is written again",
            silent_for,
            self.options.stale_after,
            f" and stopping {running.label}" if running is not None else "",
        )
        if running is not None:
            self._fenced_job = running.claimed.id
            if self._alarm_installed:
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGALRM)
        self.wake()

    def unfence(self, silent_for: float) -> None:
        """From the fence thread: a heartbeat was written again."""
        if self.fenced.is_set():
            self.fenced.clear()
            self.log.warning("heartbeat written again after %.1f s; claiming jobs again", silent_for)
            self.wake()

    def fenced_job_running(self) -> bool:
        """Whether the job the fence interrupted is still running."""
        running = self.batch.running
        return running is not None and self._fenced_job is not None and running.claimed.id == self._fenced_job

    def _leave_batch_while_fenced(self) -> None:
        """While fenced: start none of the prefetched jobs (once the lease
        has run out they may be someone else's). Their deletions and the
        unstarted jobs go back through the owner-guarded writes."""
        done, pending = self.batch.drain()
        if done:
            self._queue_op(Complete(done))
        if pending:
            self.log.warning("not starting %d prefetched job(s) while fenced", len(pending))
            # release_unheld hands them back (if still ours) once the store answers.
            self._unheld_check = True

    def _finish_lease_lost(self, running: RunningJob, duration: float) -> None:
        """The fence interrupted the job: hand it back with the attempt it
        used (guarded by the owner: a job already rescued is left alone)."""
        self._job_line(
            logging.WARNING,
            running,
            "released",
            duration,
            "LEASE LOST: stopped, heartbeat not written; handed back to the queue",
        )
        self.batch.stop_running()
        self._queue_op(Release(running.claimed.id, 0, running.claimed.attempts))
        self._emit_job("job.released", running, duration=duration, exception=None, delay=0)

    # -- shutdown ---------------------------------------------------------------

    def close(self) -> None:
        """Leave: stop the monitor, write what is waiting, hand back the jobs
        never started and remove the worker row (``run`` ends with it)."""
        self._disarm()
        if self.worker_id is not None and not self._stopping_emitted:
            self._stopping_emitted = True
            self._emit_worker("worker.stopping")
        if self.on_stopping is not None:
            self._safe("run the on_stopping hook", self.on_stopping)
        if self._monitor is not None:
            self._monitor.stop()
            # Join before deleting our row: a heartbeat still in flight is an
            # upsert and would re-create it, showing this worker as live.
            self._monitor.join(timeout=5)
        if self.worker_id is not None:
            done, pending = self.batch.drain()
            self._safe("flush finished jobs", self._flush_ops)
            self._safe(
                "delete finished jobs",
                self.backend.complete,
                self.worker_id,
                done,
                take_metrics(self.metrics),
            )
            self._safe("hand back claimed jobs", self.backend.hand_back, self.worker_id, pending)
            if self._keys_left_held:
                self._safe("let go of middleware keys", self.backend.release_locks, self.worker_id)
            self._safe("remove worker row", self.backend.unregister_worker, self.worker_id)
        if self._owns_connection:
            self.backend.close_thread_connection()
        self._waker.close()

    def _safe(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - shutdown must go on
            self.log.warning("could not %s: %s", what, first_line(exc))
            return None

    # -- logs and lifecycle events ---------------------------------------------------

    def _job_line(
        self,
        level: int,
        running: RunningJob,
        outcome: str,
        duration: float | None,
        text: str,
        uuid: str | None = None,
    ) -> None:
        """One line per finished attempt (Laravel's ``RUNNING … DONE``), whose
        job fields are keys of their own in JSON logs."""
        self.outcomes[outcome] += 1
        self._count(running, outcome, duration)
        if not self.log.isEnabledFor(level):
            return
        payload = running.payload or {}
        ms = None if duration is None else round(duration * 1000, 3)
        self.log.log(
            level,
            "%s %s%s",
            running.label,
            text,
            "" if ms is None else f" ({_duration(ms)})",
            extra={
                "job": payload.get("job"),
                "uuid": uuid or payload.get("uuid"),
                "id": running.claimed.id,
                "queue": running.claimed.queue,
                "attempt": running.claimed.attempts,
                "outcome": outcome,
                "duration_ms": ms,
            },
        )

    # -- metrics -----------------------------------------------------------------------

    def _count(self, running: RunningJob, outcome: str, duration: float | None) -> None:
        """Count one finished attempt of ``running`` (``outcome`` is one of
        ``metrics.OUTCOMES``; ``duration`` None: it never ran). The count is
        written with the worker's next write to the queue."""
        if self.metrics is None:
            return
        payload = running.payload
        job = payload.get("job") if payload else None
        available = running.claimed.available_at
        now = time.time()
        wait = None
        if duration is not None and available is not None:
            wait = now - duration - available
        self.metrics.count(running.claimed.queue, str(job or UNKNOWN_JOB), outcome, duration, wait, now)

    # -- lifecycle events ------------------------------------------------------------

    def _emit_job(self, name: str, running: RunningJob, **fields: Any) -> None:
        # Checked first: with nobody subscribed the hot path builds nothing.
        if not events.wanted(name):
            return
        payload = running.payload or {}
        events.emit(
            name,
            job=payload.get("job"),
            uuid=payload.get("uuid"),
            id=running.claimed.id,
            queue=running.claimed.queue,
            attempt=running.claimed.attempts,
            worker=self.options.name,
            worker_id=self.worker_id,
            pid=self.pid,
            **fields,
        )

    def _emit_worker(self, name: str) -> None:
        if events.wanted(name):
            events.emit(name, worker=self.options.name, worker_id=self.worker_id, pid=self.pid)

    # -- paused queues (queue/pauses.py) -------------------------------------------------

    def active_queues(self) -> list[str]:
        """The queues to claim from now, in ``--queue`` order: ours without
        the paused ones. The claim loop asks this, and so should anything
        that decides what wakes an idle worker: a paused queue's jobs must not."""
        paused = self._paused
        return [q for q in self.options.queues if q not in paused]

    def update_paused(self, paused: Collection[str]) -> frozenset[str]:
        """Take the paused set as the store has it now (the monitor reloads
        it). Logs each queue of ours that got paused or resumed, wakes an idle
        wait when one resumed, and returns our paused queues."""
        ours = frozenset(paused) & frozenset(self.options.queues)
        before, self._paused = self._paused, ours
        # The queue is a key of its own in JSON logs.
        for queue in sorted(ours - before):
            self.log.info("queue %s is paused: claiming no jobs from it", queue, extra={"queue": queue})
        resumed = before - ours
        for queue in sorted(resumed):
            self.log.info("queue %s resumed", queue, extra={"queue": queue})
        if resumed:
            self.wake()
        return ours

    # -- read by the monitor thread ---------------------------------------------------

    def request_cancel(self, ids: list[Any]) -> None:
        """From the monitor: these jobs we hold were cancelled. The running
        one's ``cancel_requested()`` turns true; a prefetched one is not run."""
        for job_id in self.batch.request_cancel(ids):
            self.log.debug("job #%s: cancel requested", job_id)

    def heartbeat_info(self) -> dict[str, Any]:
        running = self.batch.running
        return {
            "name": self.options.name,
            "hostname": self.hostname,
            "pid": self.pid,
            "queues": ",".join(self.options.queues),
            "started_at": self.started_at,
            "current_job_id": running.claimed.id if running else None,
            "jobs_done": self.jobs_processed,
        }


def _step_payload(running: RunningJob) -> dict[str, Any] | None:
    """The payload of a chain or batch job, whose failure has a next step."""
    payload = running.payload
    return payload if payload is not None and workflows.is_step(payload) else None


@dataclasses.dataclass(frozen=True)
class _CheckedComplete(Cancel):
    """A success whose heartbeat failed while it ran: deleted at once (not
    with the next claim), and a refusal (the job had been rescued, and may
    have run elsewhere too) is logged as a warning."""


def _duration(ms: float) -> str:
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


class _Prefixed(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with the worker's name, id and pid, and adds
    the worker's name and id to the record (keys of their own in JSON logs)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        assert self.extra is not None
        fields = {k: v for k, v in self.extra.items() if k != "prefix"}
        if fields:
            kwargs["extra"] = {**fields, **kwargs.get("extra", {})}
        return f"{self.extra['prefix']} {msg}", kwargs

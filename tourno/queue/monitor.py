"""The worker's monitor thread: heartbeat, rescue, notifications, watchdog.

It runs beside the worker's main thread on a connection of its own, so it
keeps going while a job runs. It talks to the worker through the worker's
public surface only:

* ``worker.restart_requested``, a :class:`threading.Event` it sets when
  ``tourno queue restart`` was signalled after the worker started;
* ``worker.hard_stop(running)``, the callback for a job that ignored its
  timeout: it records the failure on the calling (monitor) thread's
  connection and ends the process;
* ``worker.request_cancel(ids)``, when jobs it holds were cancelled (a
  notice, or the check each heartbeat interval);
* ``worker.update_paused(queues)``, the paused set it reloads (at most every
  ``pauses.RELOAD_EVERY`` seconds, and at once on a ``PAUSES_CHANGED``
  notification), and ``worker.active_queues()``, whose notifications wake
  the worker;
* ``worker.release_unheld(wait=False)`` after each reconnect but the first;
* ``worker.due_heard(due)`` with the earliest delayed job heard of on one of
  ``worker.active_queues()``;
* ``worker.lease_renewed(sent)`` after each heartbeat written and
  ``worker.lease_doubted()`` after each one that failed; its :class:`Fence`
  thread reads ``worker.lease_renewed_at`` and calls ``worker.fence()``,
  ``worker.unfence()`` and ``worker.fenced_job_running()``;
* ``worker.wake()``, ``worker.heartbeat_info()``, ``worker.batch`` (whose
  ``release_held`` and ``hand_back_queues`` it calls, with ``worker.metrics``:
  the completions it writes carry the counts) and the read-only ``worker_id``,
  ``started_at``, ``jobs_processed``, ``options``, ``backend`` and ``log``.

``Worker.monitor_class`` names the class, so a test can subclass it.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from tourno.db import open_connection
from tourno.errors import first_line
from tourno.queue import control, events, metrics
from tourno.queue.backends.base import cancel_notice
from tourno.queue.batch import RunningJob
from tourno.queue.pauses import PAUSES_CHANGED, RELOAD_EVERY

if TYPE_CHECKING:
    from tourno.queue.worker import Worker

#: Worker.EXIT_LEASE_LOST (not imported: worker.py imports this module).
EXIT_LEASE_LOST = 14

#: Jobs a worker processes between two attempts to vacuum the jobs table.
VACUUM_EVERY = 10_000
#: A job this long past timeout + grace is stuck where SIGALRM cannot reach it.
WATCHDOG_SLACK = 5.0
#: Self-fencing: the worker fences itself when its last written heartbeat
#: was sent this fraction of the stale window ago; the job it interrupts
#: then has half of the rest to unwind before the process exits. A worker
#: presumed dead is gone before the first rescuer may take its jobs.
FENCE_AT = 0.8


class Fence(threading.Thread):
    """Self-fencing, on a thread that never touches the network (the
    monitor's heartbeat may hang on a dead connection or a lock): when the
    heartbeat has gone unwritten for ``FENCE_AT`` of the stale window, the
    worker stops claiming and its job is interrupted; a job that does not
    unwind in time ends the process (exit 14). The rescuers compare the
    heartbeat with the store's own clock, and the worker counts from the
    moment it sent the last heartbeat that was written, on its monotonic
    clock: no two clocks are compared."""

    TICK = 0.05

    def __init__(self, worker: Worker) -> None:
        super().__init__(name=f"tourno-fence-{worker.worker_id}", daemon=True)
        self.worker = worker
        self.stopping = threading.Event()
        stale = worker.options.stale_after
        #: Seconds without a written heartbeat before the worker fences itself.
        self.fence_after = stale * FENCE_AT
        #: Seconds the interrupted job has to unwind, after which the process exits.
        self.unwind = stale * (1 - FENCE_AT) / 2

    def run(self) -> None:
        w = self.worker
        fenced_at: float | None = None
        renewed_before = 0.0  # the renewal the fence found
        while not self.stopping.wait(self.TICK):
            now = time.monotonic()
            renewed = w.lease_renewed_at
            silent = now - renewed
            if fenced_at is None:
                if silent >= self.fence_after:
                    fenced_at, renewed_before = now, renewed
                    w.fence(silent)
                continue
            # A beat that hung and was written late renews from when it was
            # sent: it lifts the fence only if that is recent.
            if renewed > renewed_before and silent < self.fence_after:
                fenced_at = None
                w.unfence(now - renewed_before)
                continue
            if now - fenced_at >= self.unwind and w.fenced_job_running():
                w.log.error("the job did not stop after its lease was lost; exiting")
                os._exit(EXIT_LEASE_LOST)


class Monitor(threading.Thread):
    """Heartbeat, rescue of dead workers' jobs (and the backend's upkeep),
    notifications, cancel requests, and the watch over the running job."""

    #: Seconds between two rounds (the longest a notification waits).
    TICK = 0.25
    #: Seconds between two prunes of the persisted metrics by this worker.
    PRUNE_EVERY = metrics.PRUNE_EVERY

    def __init__(self, worker: Worker) -> None:
        super().__init__(name=f"tourno-monitor-{worker.worker_id}", daemon=True)
        self.worker = worker
        self._stopping = threading.Event()
        self._hard_stop: RunningJob | None = None
        self._next_beat = 0.0
        self._next_rescue = 0.0
        self._next_pauses = 0.0
        # Workers started together prune at different moments.
        self._next_prune = time.monotonic() + random.uniform(0, self.PRUNE_EVERY)  # noqa: S311
        self._vacuumed_at = 0
        self._connects = 0
        self.fence = Fence(worker)

    def stop(self) -> None:
        self._stopping.set()
        self.fence.stopping.set()

    def request_hard_stop(self, running: RunningJob) -> None:
        """From the main thread: its connection may be mid-transaction, so
        the monitor records the timed-out job and ends the process."""
        self._hard_stop = running

    def run(self) -> None:
        w = self.worker
        backend = w.backend
        connected = False
        failures = 0
        self.fence.start()
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
                    if self._connects:
                        self.after_reconnect()
                    self._connects += 1
                    failures = 0
                if self._hard_stop is not None:
                    w.hard_stop(self._hard_stop)
                self.round(time.monotonic())
                noticed = backend.wait_for_notifications(self.TICK)
                if PAUSES_CHANGED in noticed:
                    self.reload_paused(time.monotonic())
                if noticed & set(w.active_queues()):
                    w.wake()
                if cancel_notice(w.worker_id) in noticed:
                    self.check_cancels()
                self.pass_due_heard()
            except Exception as exc:  # noqa: BLE001 - the monitor must outlive outages
                failures += 1
                if failures == 1:
                    w.log.warning("monitor: %s", first_line(exc))
                backend.close_thread_connection()
                connected = False
                self._stopping.wait(min(0.5 * 2**failures, 10.0))
        backend.close_thread_connection()

    def rescued(self, pairs: list[tuple[Any, Any]]) -> None:
        """Log and announce the jobs a rescue takes back; the backend calls
        this before any of them can be claimed again."""
        for job_id, owner in pairs:
            self.worker.log.warning("released job #%s: its worker #%s stopped heartbeating", job_id, owner)
            # The rescue returns ids only: the job's name, uuid and queue are not known here.
            events.emit("job.rescued", id=job_id, worker_id=owner)

    def round(self, now: float) -> None:
        """One pass over everything the monitor does, at ``now`` (monotonic)."""
        w = self.worker
        opts = w.options
        if now >= self._next_beat:
            self.heartbeat()
            # The fallback for a missed notice (SQLite has none).
            self.check_cancels()
            self._next_beat = now + opts.heartbeat_interval
        if now >= self._next_rescue:
            w.backend.rescue(opts.stale_after, announce=self.rescued)
            w.backend.maintain()
            self.sweep_cancelled()
            self._next_rescue = now + opts.heartbeat_interval
        if now >= self._next_pauses:
            self.reload_paused(now)
        if opts.metrics and now >= self._next_prune:
            self._next_prune = now + self.PRUNE_EVERY
            pruned = w.backend.prune_metrics(opts.metrics_retention_days)
            if pruned:
                w.log.debug("folded %d metric rows older than %g days", pruned, opts.metrics_retention_days)
        assert w.worker_id is not None
        running = w.batch.running
        handed_back = w.batch.release_held(now, w.backend, w.worker_id, w.metrics)
        if handed_back and running is not None:
            w.log.debug("handed back %d claimed jobs while %s runs", handed_back, running.label)
        self.watchdog(now)
        if w.jobs_processed - self._vacuumed_at >= VACUUM_EVERY:
            self._vacuumed_at = w.jobs_processed
            started = time.monotonic()
            if w.backend.vacuum():
                w.log.debug("vacuumed jobs in %.0f ms", (time.monotonic() - started) * 1000)

    def reload_paused(self, now: float) -> None:
        """Read the paused queues, tell the worker, and hand back the jobs it
        prefetched from one of them: a pause stops them too."""
        w = self.worker
        assert w.worker_id is not None
        self._next_pauses = now + RELOAD_EVERY
        paused = w.update_paused(w.backend.paused())
        handed_back = w.batch.hand_back_queues(paused, w.backend, w.worker_id)
        if handed_back:
            w.log.info("handed back %d prefetched job(s) of paused queues", handed_back)

    def pass_due_heard(self) -> None:
        """Tell the worker of the earliest delayed job heard of on its active
        queues, so that an idle worker wakes when it is due."""
        w = self.worker
        heard = w.backend.heard_due()
        if heard:
            active = set(w.active_queues())
            due = [at for queue, at in heard.items() if queue in active]
            if due:
                w.due_heard(min(due))

    def after_reconnect(self) -> None:
        """The connections broke and ours is back: whatever broke them may
        have lost a claim's reply too. The worker's main thread checks after
        its own reconnect; this covers a break it has not run into yet. If
        the main thread is busy, the check waits for its next step
        (``Worker.release_unheld``)."""
        self.worker.release_unheld(wait=False)

    def heartbeat(self) -> None:
        w = self.worker
        assert w.worker_id is not None
        sent = time.monotonic()
        try:
            restart = w.backend.heartbeat(w.worker_id, w.heartbeat_info())
        except BaseException:
            w.lease_doubted()
            raise
        w.lease_renewed(sent)
        if time.monotonic() - sent > w.options.heartbeat_interval:
            # Written, but late (a lock, a slow server): meanwhile a rescuer
            # with a shorter stale window may have taken our job.
            w.lease_doubted()
        if restart is not None and w.started_at is not None and restart > w.started_at:
            if not w.restart_requested.is_set():
                w.log.info("restart signal received; stopping after the current job")
            w.restart_requested.set()
            w.wake()

    def check_cancels(self) -> None:
        """Ask the backend which jobs we hold were cancelled and tell the
        worker (one statement, on a notice or each heartbeat interval; never
        per job)."""
        w = self.worker
        assert w.worker_id is not None
        ids = w.backend.cancel_requests(w.worker_id)
        if ids:
            w.request_cancel(ids)

    def sweep_cancelled(self) -> None:
        """Delete the cancelled jobs that went back to the queue before their
        worker heard of it (released, handed back, rescued)."""
        w = self.worker
        for job in w.backend.sweep_cancelled():
            w.log.info("job #%s cancelled (it was no longer running)", job.id)
            if w.metrics is not None:
                control.count_cancelled(w.metrics, job)  # written with the worker's next write
            control.emit_cancelled(job, worker_id=w.worker_id)

    def watchdog(self, now: float) -> None:
        """A job far past timeout + grace means the main thread is stuck
        where SIGALRM cannot reach it (a C call that does not return)."""
        w = self.worker
        running = w.batch.running
        if running is None or running.timeout <= 0:
            return
        if now - running.started > running.timeout + w.options.grace + WATCHDOG_SLACK:
            w.log.error("%s is stuck past its timeout; exiting", running.label)
            w.hard_stop(running)

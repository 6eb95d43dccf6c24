"""Health checks for ``tourno doctor``: is everything Tourno needs on this
installation configured, reachable and alive, and if not, what to do.

Each check returns a :class:`Check` (ok, warn or fail, a one-line detail and
a hint). They read the database the same way the commands do; none of them
writes anything, so the doctor is safe to run from cron or a monitoring agent.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tourno.config import ConfigError, Settings, mask_password, sqlite_file
from tourno.db import utcnow
from tourno.errors import first_line

OK, WARN, FAIL = "ok", "warn", "fail"

#: Jobs ready this long without a worker taking them suggest too few workers.
WAITING_TOO_LONG = dt.timedelta(minutes=5)
#: The scheduler dispatches SendBulkEmails every minute; silence this long means it is down.
SCHEDULER_SILENT = dt.timedelta(minutes=10)
#: Jobs committed this long ago and not yet handed to Redis mean no worker relays them.
HANDOFF_LATE = dt.timedelta(minutes=1)
#: A queue paused this long was probably forgotten: its jobs pile up unrun.
PAUSED_TOO_LONG = dt.timedelta(hours=1)
#: Outbox rows due this long and still pending mean mail is not going out.
MAIL_LATE = dt.timedelta(minutes=15)
#: Where the doctor looks for the process managers' settings (the repo's
#: files, and where bin/install puts them).
SUPERVISORD_CONF = ("supervisord.conf", "/etc/tourno/supervisord.conf")
WORKER_UNITS = ("systemd/tourno-worker@.service", "/etc/systemd/system/tourno-worker@.service")


@dataclass
class Check:
    name: str
    status: str
    detail: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def run_checks(environ: dict[str, str], *, search_dir: Path | None = None) -> list[Check]:
    """Every check, in order; later ones are skipped (not failed) when the
    configuration or the database they need is broken."""
    checks: list[Check] = []
    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        return [Check("configuration", FAIL, str(exc), "fix the variable in the env file or environment")]
    checks.append(
        Check(
            "configuration",
            OK,
            f"database {mask_password(settings.database_url)}, queue {settings.queue_connection}",
        )
    )
    database = _database(settings)
    checks.append(database)
    if database.status == FAIL:
        return checks
    import peewee

    for check in (_migrations, _queue, _workers, _paused, _waiting, _failed, _scheduler, _outbox):
        try:
            result = check(settings)
        except peewee.DatabaseError as exc:  # reported; the doctor goes on with the next check
            result = Check(check.__name__.strip("_"), FAIL, f"{type(exc).__name__}: {exc}")
        checks.append(result)
        if check is _migrations and result.status == FAIL:
            break  # the tables the other checks read may not exist yet
    checks.extend(_stop_timeouts(search_dir or Path.cwd()))
    return checks


def _database(settings: Settings) -> Check:
    import tourno
    from tourno.db import DatabaseUnavailable, open_connection

    path = sqlite_file(settings.database_url)
    if path is not None and not path.exists():
        # Connecting would create it: the doctor writes nothing.
        return Check(
            "database", FAIL, f"no SQLite database at {path.absolute()}", "create it with `tourno db migrate`"
        )
    try:
        tourno.setup(settings)
        open_connection()
    except (DatabaseUnavailable, ConfigError) as exc:
        return Check("database", FAIL, str(exc), "is the database running, and is TOURNO_DATABASE_URL right?")
    return Check("database", OK, "reachable")


def _migrations(settings: Settings) -> Check:
    from tourno import migrations
    from tourno.db import database

    waiting = migrations.pending(database.obj)
    if waiting:
        return Check(
            "migrations", FAIL, f"{len(waiting)} pending: {', '.join(waiting)}", "run `tourno db migrate`"
        )
    return Check("migrations", OK, "schema up to date")


def _queue(settings: Settings) -> Check:
    from tourno.queue import backends

    backend = backends.current()
    if backend.connection_errors:
        try:
            backend.ping()
        except backend.connection_errors as exc:
            return Check("queue", FAIL, f"{mask_password(settings.redis_url)}: {exc}", "is Redis running?")
    if settings.queue_connection == "redis":
        from tourno.queue.models import OutboxRecord

        stuck = OutboxRecord.select().where(OutboxRecord.created_at < utcnow() - HANDOFF_LATE).count()
        if stuck:
            return Check(
                "queue",
                WARN,
                f"{stuck} job(s) committed over a minute ago still wait in queue_outbox for Redis",
                "a running Redis worker relays them; are the workers up, and is Redis reachable from them?",
            )
    return Check("queue", OK, f"{backend.connection_name} driver reachable")


def _workers(settings: Settings) -> Check:
    from tourno.queue import backends

    workers = backends.current().workers(settings.worker_stale_after)
    if not workers:
        return Check(
            "workers",
            FAIL,
            f"no worker has sent a heartbeat in the last {settings.worker_stale_after:g} s",
            "start them: `supervisorctl start tourno:*` or `systemctl start tourno.target`",
        )
    hosts: dict[str, int] = {}
    for w in workers:
        hosts[w.hostname] = hosts.get(w.hostname, 0) + 1
    per_host = ", ".join(f"{host}: {n}" for host, n in sorted(hosts.items()))
    return Check("workers", OK, f"{len(workers)} alive ({per_host})")


def _paused(settings: Settings) -> Check:
    from tourno.queue import backends, pauses

    try:
        paused = pauses.paused()
    except backends.current().connection_errors as exc:
        return Check("paused queues", FAIL, first_line(exc), "is Redis running?")
    now = utcnow()
    if not paused:
        return Check("paused queues", OK, "none")
    old = [(q, now - at) for q, at in paused.items() if now - at > PAUSED_TOO_LONG]
    if old:
        listed = ", ".join(f"{q} ({age.total_seconds() / 3600:.1f} h)" for q, age in old)
        return Check(
            "paused queues",
            WARN,
            f"paused for over an hour: {listed}",
            "no worker runs their jobs; `tourno queue resume QUEUE` when that was not meant to last",
        )
    return Check("paused queues", OK, f"{', '.join(sorted(paused))} paused (under an hour)")


def _waiting(settings: Settings) -> Check:
    from tourno.queue import backends

    backend = backends.current()
    now = utcnow()
    # A paused queue's jobs wait on purpose: the paused-queues check covers them.
    paused = backend.paused()
    late = [
        (s.queue, now - s.oldest_ready_at)
        for s in backend.stats()
        if s.oldest_ready_at is not None
        and now - s.oldest_ready_at > WAITING_TOO_LONG
        and s.queue not in paused
    ]
    if late:
        worst = ", ".join(f"{q} ({age.total_seconds() / 60:.0f} min)" for q, age in late)
        return Check(
            "waiting jobs",
            WARN,
            f"ready jobs waiting: {worst}",
            "add workers, or check they serve these queues",
        )
    return Check("waiting jobs", OK, "no ready job older than 5 min")


def _failed(settings: Settings) -> Check:
    from tourno.queue import failed

    n = failed.count()
    if n:
        return Check(
            "failed jobs",
            WARN,
            f"{n} failed job(s)",
            "inspect with `tourno queue failed`, then retry or forget",
        )
    return Check("failed jobs", OK, "none")


def _scheduler(settings: Settings) -> Check:
    from tourno.db import database

    if "schedule_runs" not in database.get_tables():
        return Check("scheduler", WARN, "no schedule_runs table", "run `tourno db migrate`")
    from tourno.scheduler.models import ScheduleRun

    last = ScheduleRun.select().order_by(ScheduleRun.dispatched_at.desc()).first()
    if last is None:
        return Check(
            "scheduler",
            WARN,
            "has never dispatched a job",
            "start `tourno schedule` (one per server is fine)",
        )
    age = utcnow() - last.dispatched_at
    detail = f"last dispatch {age.total_seconds() / 60:.1f} min ago ({last.task}, from {last.host})"
    if age > SCHEDULER_SILENT:
        return Check("scheduler", FAIL, detail, "is `tourno schedule` running?")
    return Check("scheduler", OK, detail)


def _outbox(settings: Settings) -> Check:
    from tourno.mail.models import EmailOutbox, EmailStatus
    from tourno.mail.store import outbox_status

    now = utcnow()
    counts = outbox_status()
    pending = counts.get(EmailStatus.PENDING, 0)
    late = (
        EmailOutbox.select()
        .where(EmailOutbox.status == EmailStatus.PENDING, EmailOutbox.available_at < now - MAIL_LATE)
        .count()
    )
    broken = counts.get(EmailStatus.FAILED, 0) + counts.get(EmailStatus.DEAD, 0)
    detail = f"{pending} pending ({late} due over 15 min ago), {broken} failed or dead"
    if late:
        return Check(
            "mail outbox",
            WARN,
            detail,
            "is SendBulkEmailsJob running (scheduler and workers), and the SMTP server?",
        )
    if broken:
        return Check("mail outbox", WARN, detail, "see `tourno mail status`")
    return Check("mail outbox", OK, detail)


def _stop_timeouts(search_dir: Path) -> list[Check]:
    """A worker stopped with SIGTERM finishes its job first: the process
    manager must wait longer than the longest job may run, or it kills jobs
    mid-run on every deploy."""
    longest = _longest_job_timeout()
    checks = []
    for label, candidates, parse in (
        ("supervisord stopwaitsecs", SUPERVISORD_CONF, _supervisord_timeouts),
        ("systemd TimeoutStopSec", WORKER_UNITS, _systemd_timeouts),
    ):
        path = next(
            (
                p
                for p in (search_dir / c if not c.startswith("/") else Path(c) for c in candidates)
                if p.is_file()
            ),
            None,
        )
        if path is None:
            continue
        timeout, stop = parse(path.read_text(encoding="utf-8", errors="replace"))
        if stop is None:
            checks.append(Check(label, WARN, f"{path}: no stop timeout found for the worker"))
            continue
        need = max(timeout or 0, longest)
        if stop <= need:
            checks.append(
                Check(
                    label,
                    FAIL,
                    f"{path}: {stop:g} s, but a job may run {need:g} s",
                    f"raise it above {need:g} s",
                )
            )
        else:
            checks.append(Check(label, OK, f"{path}: {stop:g} s > longest job {need:g} s"))
    return checks


def _longest_job_timeout() -> float:
    from tourno.queue.job import registered

    return max((float(cls.timeout) for cls in registered().values() if cls.timeout), default=0.0)


def _worker_timeout(command: str) -> float | None:
    found = re.search(r"--timeout[ =](\d+(?:\.\d+)?)", command)
    return float(found.group(1)) if found else None


def _supervisord_timeouts(text: str) -> tuple[float | None, float | None]:
    section = _ini_section(text, "program:tourno-worker")
    command = re.search(r"^command\s*=\s*(.+)$", section, re.M)
    stop = re.search(r"^stopwaitsecs\s*=\s*(\d+)", section, re.M)
    return (
        _worker_timeout(command.group(1)) if command else None,
        float(stop.group(1)) if stop else None,
    )


def _systemd_timeouts(text: str) -> tuple[float | None, float | None]:
    command = re.search(r"^ExecStart\s*=\s*(.+)$", text, re.M)
    stop = re.search(r"^TimeoutStopSec\s*=\s*(\d+)\s*$", text, re.M)
    return (
        _worker_timeout(command.group(1)) if command else None,
        float(stop.group(1)) if stop else None,
    )


def _ini_section(text: str, name: str) -> str:
    match = re.search(rf"^\[{re.escape(name)}\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    return match.group(1) if match else ""


def worst(checks: list[Check]) -> str:
    order: dict[str, int] = {OK: 0, WARN: 1, FAIL: 2}
    key: Callable[[Check], int] = lambda c: order[c.status]  # noqa: E731
    return max(checks, key=key).status if checks else OK

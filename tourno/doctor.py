"""Health checks for ``tourno doctor``: is everything Tourno needs on this
installation configured, reachable and alive, and if not, what to do.

Each check returns a :class:`Check` (ok, warn or fail, a one-line detail and
a hint). They read the database the same way the commands do; none of them
writes anything, so the doctor is safe to run from cron or a monitoring agent.
"""

from __future__ import annotations

import configparser
import datetime as dt
import math
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tourno.config import ConfigError, Settings, mask_password, sqlite_file
from tourno.db import utcnow
from tourno.errors import first_line

OK, WARN, FAIL = "ok", "warn", "fail"

#: Jobs ready this long without a worker taking them suggest too few workers.
WAITING_TOO_LONG = dt.timedelta(minutes=5)
#: Without any schedule to go by, silence this long means the scheduler is down.
SCHEDULER_SILENT = dt.timedelta(minutes=10)
#: How long after a slot its dispatch may take (the scheduler ticks every few
#: seconds; a busy database adds some).
SLOT_GRACE = dt.timedelta(minutes=2)
#: Jobs committed this long ago and not yet handed to Redis mean no worker relays them.
HANDOFF_LATE = dt.timedelta(minutes=1)
#: A queue paused this long was probably forgotten: its jobs pile up unrun.
PAUSED_TOO_LONG = dt.timedelta(hours=1)
#: Outbox rows due this long and still pending mean mail is not going out.
MAIL_LATE = dt.timedelta(minutes=15)
#: Where the doctor looks for the process managers' settings (the repo's
#: files, and where bin/install puts them).
SUPERVISORD_CONF = (
    "supervisord.conf",
    "/etc/supervisor/conf.d/tourno.conf",  # bin/install --supervisor, for Debian's supervisor
    "/etc/tourno/supervisord.conf",  # Tourno's own supervisord (older installs)
)
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
    checks.extend(_production_settings(settings, search_dir or Path.cwd()))
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


#: `tourno up` writes its supervisord configuration here (its --home) with
#: this first line: a directory holding it runs the local demo.
UP_CONFIG = Path(".tourno") / "supervisord.conf"
UP_CONFIG_MARK = "; Written by `tourno up`"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def is_local_demo(search_dir: Path) -> bool:
    """Whether ``search_dir`` is where `tourno up` runs (the local demo,
    where console mail and localhost links are what the operator wants)."""
    try:
        with (search_dir / UP_CONFIG).open(encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(UP_CONFIG_MARK)
    except OSError:
        return False


def _production_settings(settings: Settings, search_dir: Path) -> list[Check]:
    """Defaults that suit `tourno up` on a laptop and nothing else: mail
    printed to the console, links to localhost, no secret key."""
    demo = is_local_demo(search_dir)
    checks = []
    if settings.mail_transport in ("console", "summary"):
        kind = settings.mail_transport
        checks.append(
            Check("mail transport", OK, f"{kind} (tourno up: the local demo)")
            if demo
            else Check(
                "mail transport",
                WARN,
                f"{kind}: emails are printed to the worker's log, nobody receives them",
                "set TOURNO_MAIL_TRANSPORT=smtp and TOURNO_MAIL_HOST/_PORT/_SECURITY/_USERNAME/_PASSWORD",
            )
        )
    else:
        checks.append(Check("mail transport", OK, settings.mail_transport))
    host = (urlsplit(settings.app_url).hostname or "").lower()
    if host in LOCAL_HOSTS or host.endswith(".localhost"):
        checks.append(
            Check("app URL", OK, f"{settings.app_url} (tourno up: the local demo)")
            if demo
            else Check(
                "app URL",
                WARN,
                f"TOURNO_APP_URL is {settings.app_url}: links in emails point to the reader's own machine",
                "set TOURNO_APP_URL to the public URL, like https://play.example.com",
            )
        )
    else:
        checks.append(Check("app URL", OK, settings.app_url))
    if settings.secret_key is None:
        checks.append(
            Check("secret key", OK, "not set (tourno up: the local demo)")
            if demo
            else Check(
                "secret key",
                WARN,
                "TOURNO_SECRET_KEY is not set: bulk mail has no unsubscribe link and /admin is disabled",
                "set TOURNO_SECRET_KEY (openssl rand -hex 32) in the env file",
            )
        )
    else:
        checks.append(Check("secret key", OK, "set"))
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
    now = utcnow()
    age = now - last.dispatched_at
    detail = f"last dispatch {age.total_seconds() / 60:.1f} min ago ({last.task}, from {last.host})"
    owed = _latest_owed_slot(settings, now)
    if owed is not None:
        # The schedule says when a dispatch was due: silence is only news past it.
        task, slot = owed
        if last.dispatched_at < slot:
            return Check(
                "scheduler",
                FAIL,
                f"{detail}; {task}'s slot of {slot:%Y-%m-%d %H:%M} UTC was not dispatched",
                "is `tourno schedule` running?",
            )
        return Check("scheduler", OK, detail)
    if age > SCHEDULER_SILENT:
        return Check("scheduler", FAIL, detail, "is `tourno schedule` running?")
    return Check("scheduler", OK, detail)


def _latest_owed_slot(settings: Settings, now: dt.datetime) -> tuple[str, dt.datetime] | None:
    """The most recent slot of any task (cron expressions, with
    ``TOURNO_SCHEDULE`` applied) that should have been dispatched by now,
    and its task; None when the tasks cannot be read (the schedule check
    reports that itself) or none is due yet."""
    from tourno.scheduler.tasks import task_table

    try:
        tasks = task_table(settings)
    except Exception:  # noqa: BLE001 - a bad schedule is another check's finding
        return None
    owed = [(t.name, t.cron.latest(now - SLOT_GRACE)) for t in tasks]
    due = [(name, slot) for name, slot in owed if slot is not None]
    return max(due, key=lambda pair: pair[1]) if due else None


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
    supervisord = _first_file(search_dir, SUPERVISORD_CONF)
    if supervisord is not None:
        checks.append(_supervisord_check(supervisord, longest))
    loaded = loaded_systemd_unit()
    unit = _first_file(search_dir, WORKER_UNITS)
    if loaded is not None and loaded.path is not None and loaded.path.is_file():
        unit = loaded.path  # the file systemd read is the one that counts
    if unit is not None:
        checks.append(_systemd_check(unit, longest, loaded))
    return checks


def _first_file(search_dir: Path, candidates: tuple[str, ...]) -> Path | None:
    paths = (Path(c) if c.startswith("/") else search_dir / c for c in candidates)
    return next((p for p in paths if p.is_file()), None)


def _verdict(label: str, where: str, stop: float, need: float, *, extra: str = "") -> Check:
    if stop <= need:
        return Check(
            label,
            FAIL,
            f"{where}: {_span(stop)}{extra}, but a job may run {_span(need)}",
            f"raise it above {need:g} s",
        )
    return Check(label, OK, f"{where}: {_span(stop)}{extra} > longest job {_span(need)}")


def _span(seconds: float) -> str:
    return "infinity" if math.isinf(seconds) else f"{seconds:g} s"


# -- supervisord ------------------------------------------------------------------------

#: supervisord's stopwaitsecs when the program section sets none.
SUPERVISORD_DEFAULT_STOP = 10.0


def _supervisord_check(path: Path, longest: float) -> Check:
    label = "supervisord stopwaitsecs"
    try:
        command, stop = supervisord_timeouts(path.read_text(encoding="utf-8", errors="replace"))
    except (configparser.Error, ValueError) as exc:
        return Check(label, WARN, f"{path}: cannot read it: {first_line(exc)}", "check the file's syntax")
    if command is None:
        return Check(label, WARN, f"{path}: no [program:tourno-worker] command found")
    need = max(_worker_timeout(command) or 0, longest)
    if stop is None:
        return _verdict(label, str(path), SUPERVISORD_DEFAULT_STOP, need, extra=" (not set: the default)")
    return _verdict(label, str(path), stop, need)


def supervisord_timeouts(text: str) -> tuple[str | None, float | None]:
    """The worker's command and its stopwaitsecs (None when unset) from a
    supervisord configuration."""
    parser = configparser.ConfigParser(
        # %(program_name)s and %(ENV_X)s are supervisord's, not configparser's.
        interpolation=None,
        strict=False,
        inline_comment_prefixes=(";",),
    )
    parser.read_string(text)
    section = "program:tourno-worker"
    if not parser.has_section(section):
        return None, None
    command = parser.get(section, "command", fallback=None)
    stop = parser.get(section, "stopwaitsecs", fallback=None)
    return command, (float(int(stop)) if stop not in (None, "") else None)


# -- systemd ----------------------------------------------------------------------------

#: systemd's DefaultTimeoutStopSec when a unit sets neither TimeoutStopSec= nor TimeoutSec=.
SYSTEMD_DEFAULT_STOP = 90.0
#: One instance of the worker template: `systemctl show` loads the template for it.
WORKER_INSTANCE = "tourno-worker@1.service"

#: systemd.time(7): each unit and its length in seconds. "m" is minutes and
#: "M" months: the names are case-sensitive.
TIME_UNITS = {
    **dict.fromkeys(("usec", "us", "µs", "μs"), 1e-6),
    **dict.fromkeys(("msec", "ms"), 1e-3),
    **dict.fromkeys(("seconds", "second", "sec", "s", ""), 1.0),
    **dict.fromkeys(("minutes", "minute", "min", "m"), 60.0),
    **dict.fromkeys(("hours", "hour", "hr", "h"), 3600.0),
    **dict.fromkeys(("days", "day", "d"), 86400.0),
    **dict.fromkeys(("weeks", "week", "w"), 7 * 86400.0),
    **dict.fromkeys(("months", "month", "M"), 30.44 * 86400.0),
    **dict.fromkeys(("years", "year", "y"), 365.25 * 86400.0),
}
_SPAN_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([^\d\s.]*)")


def parse_timespan(text: str) -> float:
    """Seconds in systemd's time span syntax: ``90``, ``1h``, ``5min 30s``,
    ``1h30min``, ``2.5s``; ``infinity`` (and 0, which TimeoutStopSec= takes
    to mean the same) is :data:`math.inf`. ValueError for anything else."""
    value = text.strip()
    if value == "infinity":
        return math.inf
    total, pos = 0.0, 0
    for part in _SPAN_PART.finditer(value):
        if part.start() != pos or part.group(2) not in TIME_UNITS:
            break
        total += float(part.group(1)) * TIME_UNITS[part.group(2)]
        pos = part.end()
    if not value or pos != len(value):
        raise ValueError(f"not a systemd time span: {text!r}")
    return math.inf if total == 0 else total


def read_unit(text: str) -> configparser.ConfigParser:
    """A systemd unit file as configparser reads it: keys keep their case, a
    repeated key keeps its last value (as systemd does for single-valued
    settings), and a backslash at a line's end continues it."""
    parser = configparser.ConfigParser(
        interpolation=None, strict=False, delimiters=("=",), comment_prefixes=("#", ";")
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # case matters in units
    parser.read_string(re.sub(r"\\\n", " ", text))
    return parser


def systemd_timeouts(texts: list[str]) -> tuple[str | None, float | None]:
    """The worker's ExecStart and its stop timeout (None when unset) from a
    unit file and its drop-ins, in order: later files override earlier ones;
    TimeoutStopSec= wins over TimeoutSec=; an empty value resets."""
    command: str | None = None
    stop_sec: str | None = None
    any_sec: str | None = None
    for text in texts:
        unit = read_unit(text)
        if not unit.has_section("Service"):
            continue
        service = unit["Service"]
        if "ExecStart" in service:
            command = service["ExecStart"] or None
        if "TimeoutStopSec" in service:
            stop_sec = service["TimeoutStopSec"] or None
        if "TimeoutSec" in service:
            any_sec = service["TimeoutSec"] or None
    raw = stop_sec if stop_sec is not None else any_sec
    return command, (parse_timespan(raw) if raw is not None else None)


@dataclass
class LoadedUnit:
    """What ``systemctl show`` says systemd has loaded for the worker."""

    stop: float
    path: Path | None


def parse_systemctl_show(text: str) -> LoadedUnit | None:
    """``systemctl show -p LoadState,TimeoutStopUSec,FragmentPath`` output
    (``KEY=value`` lines) for a loaded unit, else None."""
    props = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    if props.get("LoadState") != "loaded" or not props.get("TimeoutStopUSec"):
        return None
    try:
        stop = parse_timespan(props["TimeoutStopUSec"])
    except ValueError:
        return None
    fragment = props.get("FragmentPath") or None
    return LoadedUnit(stop, Path(fragment) if fragment else None)


def loaded_systemd_unit(systemctl: str = "systemctl") -> LoadedUnit | None:
    """The worker unit systemd has loaded on this machine, or None where
    there is no systemd to ask (a container, another OS) or no such unit."""
    try:
        proc = subprocess.run(
            [systemctl, "show", "-p", "LoadState,TimeoutStopUSec,FragmentPath", WORKER_INSTANCE],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_systemctl_show(proc.stdout) if proc.returncode == 0 else None


def _systemd_check(path: Path, longest: float, loaded: LoadedUnit | None) -> Check:
    label = "systemd TimeoutStopSec"
    drop_ins = sorted(path.with_name(path.name + ".d").glob("*.conf"))
    try:
        command, stop = systemd_timeouts(
            [p.read_text(encoding="utf-8", errors="replace") for p in (path, *drop_ins)]
        )
    except (configparser.Error, ValueError) as exc:
        return Check(label, WARN, f"{path}: cannot read it: {first_line(exc)}", "check the unit's syntax")
    need = max(_worker_timeout(command or "") or 0, longest)
    where = str(path) + (f" (+ {len(drop_ins)} drop-in(s))" if drop_ins else "")
    written = SYSTEMD_DEFAULT_STOP if stop is None else stop
    extra = " (not set: the default)" if stop is None else ""
    if loaded is not None and loaded.stop != written:
        # The file changed since systemd read it: what is loaded is what runs.
        check = _verdict(label, f"{where}, loaded by systemd", loaded.stop, need)
        return Check(
            label,
            WARN if check.status == OK else FAIL,
            f"{check.detail}; the file says {_span(written)}",
            "run `systemctl daemon-reload` (and restart the workers)"
            + (f"; {check.hint}" if check.hint else ""),
        )
    return _verdict(label, where, written, need, extra=extra)


def _longest_job_timeout() -> float:
    from tourno.queue.job import registered

    return max((float(cls.timeout) for cls in registered().values() if cls.timeout), default=0.0)


def _worker_timeout(command: str) -> float | None:
    """The --timeout a `tourno work` command line gives (None: none given)."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    for i, word in enumerate(words):
        value = None
        if word == "--timeout" and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith("--timeout="):
            value = word.split("=", 1)[1]
        if value is not None:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def worst(checks: list[Check]) -> str:
    order: dict[str, int] = {OK: 0, WARN: 1, FAIL: 2}
    key: Callable[[Check], int] = lambda c: order[c.status]  # noqa: E731
    return max(checks, key=key).status if checks else OK

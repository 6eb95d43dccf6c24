"""Settings from ``TOURNO_*`` environment variables (and an optional env file).

This is the only module that reads ``os.environ``. Every value is parsed and
checked once, at start; a bad value raises :class:`ConfigError` whose message
is one line naming the variable, which the CLI prints before exiting.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PREFIX = "TOURNO_"
DEFAULT_DATABASE_URL = "sqlite:///tourno.db"


class ConfigError(Exception):
    """A setting has a value Tourno cannot use."""


def _positive_number(name: str, raw: str, unit: str = "seconds") -> float:
    """A finite number greater than 0; ``unit`` names it in the message."""
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number of {unit}, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: must be a finite number of {unit} greater than 0, got {raw!r}")
    return value


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
    return value


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    value = raw.strip()
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme not in schemes:
        raise ConfigError(
            f"{name}: expected a URL starting with one of "
            f"{', '.join(s + '://' for s in schemes)}, got {raw!r}"
        )
    return value


def _port_checked(name: str, value: str) -> str:
    """``value`` if its port (if any) is a number from 1 to 65535: urllib and
    the drivers raise a bare ValueError at connect time otherwise."""
    try:
        port = urlsplit(value).port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{name}: the port must be a number from 1 to 65535, in {mask_password(value)!r}")
    return value


def _database_url(name: str, raw: str) -> str:
    return _port_checked(name, _url(name, raw, DATABASE_SCHEMES))


def _redis_url(name: str, raw: str) -> str:
    value = _url(name, raw, ("redis", "rediss", "unix"))
    parts = urlsplit(value)
    if parts.scheme != "unix":
        _port_checked(name, value)
    # redis-py reads the database number from the path (redis://host/2) or
    # ?db=2 and silently uses db 0 when it is not a number.
    dbs = [parts.path.strip("/")] if parts.scheme != "unix" and parts.path.strip("/") else []
    dbs += parse_qs(parts.query).get("db", [])
    for db in dbs:
        if not db.isdigit():
            raise ConfigError(
                f"{name}: the database number must be a whole number (redis://host:6379/0), "
                f"got {db!r} in {mask_password(value)!r}"
            )
    return value


def _modules(name: str, raw: str) -> tuple[str, ...]:
    mods = tuple(m.strip() for m in raw.split(",") if m.strip())
    for mod in mods:
        if not all(part.isidentifier() for part in mod.split(".")):
            raise ConfigError(f"{name}: {mod!r} is not a Python module name")
    return mods


def _int_between(name: str, raw: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}: must be at most {maximum}, got {raw!r}")
    return value


def _address(name: str, raw: str) -> str:
    value = raw.strip()
    addr = parseaddr(value)[1]
    if "@" not in addr or any(c.isspace() for c in addr):
        raise ConfigError(f"{name}: expected an address like 'Tourno <noreply@example.com>', got {raw!r}")
    return value


def _frequencies(name: str, raw: str) -> tuple[str, ...]:
    """``Task=minutes,Task=minutes`` -> ("Task=minutes", ...); the task names
    are checked against the scheduler's table when it starts."""
    out = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        task, sep, minutes = (s.strip() for s in item.partition("="))
        if not sep or not task.isidentifier() or not minutes.isdigit() or not 1 <= int(minutes) <= 1440:
            raise ConfigError(
                f"{name}: expected Task=minutes pairs (1 to 1440 minutes), "
                f"like SendBulkEmailsJob=2, got {item!r}"
            )
        out.append(f"{task}={int(minutes)}")
    return tuple(out)


def _schedule(name: str, raw: str) -> tuple[str, ...]:
    """``Task=cron expr;Task=cron expr`` -> ("Task=expr", ...). Semicolons
    separate the pairs, since expressions hold spaces and commas. The
    expressions and task names are checked by the scheduler when it builds
    its table (cronsim parses them; this module stays free of it)."""
    out: list[str] = []
    seen: set[str] = set()
    for item in (p.strip() for p in raw.split(";")):
        if not item:
            continue
        task, sep, expression = (s.strip() for s in item.partition("="))
        if not sep or not task.isidentifier() or not expression:
            raise ConfigError(
                f"{name}: expected Task=cron expression pairs separated by ';', "
                f"like AutoStartTournamentsJob=*/2 * * * *, got {item!r}"
            )
        if task in seen:
            raise ConfigError(f"{name}: {task} is set twice")
        seen.add(task)
        out.append(f"{task}={' '.join(expression.split())}")
    return tuple(out)


def _secret(name: str, raw: str) -> str:
    value = raw.strip()
    # Short keys can be guessed offline from one signed link.
    if len(value) < 16:
        raise ConfigError(f"{name}: must be at least 16 characters (try: openssl rand -hex 32)")
    return value


def _bind(name: str, raw: str) -> str:
    value = raw.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}: expected HOST:PORT, like 127.0.0.1:8000, got {raw!r}")
    return value


DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "postgres+pool", "postgresql+pool")
POSTGRES_SCHEMES = DATABASE_SCHEMES[1:]


def _dead_after(name: str, raw: str) -> float:
    # Below 2 s a busy server's slow reply could pass for a dead one.
    value = _positive_number(name, raw)
    if value < 2:
        raise ConfigError(f"{name}: must be at least 2 seconds, got {raw!r}")
    return value


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
MAIL_TRANSPORTS = ("smtp", "console", "summary", "file")
# "tls" is implicit TLS (usually port 465); "ssl" is accepted as another name for it.
MAIL_SECURITY_MODES = ("none", "starttls", "tls", "ssl")


def _mail_security(name: str, raw: str) -> str:
    security = _choice(name, raw, MAIL_SECURITY_MODES)
    return "tls" if security == "ssl" else security


def _stripped(name: str, raw: str) -> str:
    return raw.strip()


SWITCH_VALUES = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _switch(name: str, raw: str) -> bool:
    value = SWITCH_VALUES.get(raw.strip().lower())
    if value is None:
        raise ConfigError(f"{name}: expected 1 or 0 (or on/off, true/false), got {raw!r}")
    return value


#: Each variable (without the prefix) and its parser; the field of
#: :class:`Settings` is the lower-cased name. A parser takes the variable's
#: full name (for the message) and its raw, non-empty value.
PARSERS: dict[str, Callable[[str, str], Any]] = {
    "DATABASE_URL": _database_url,
    "QUEUE_CONNECTION": lambda n, r: _choice(n, r, ("database", "redis")),
    "REDIS_URL": _redis_url,
    "IMPORTS": _modules,
    "LOG_LEVEL": lambda n, r: _choice(n, r, LOG_LEVELS),
    "LOG_FORMAT": lambda n, r: _choice(n, r, LOG_FORMATS),
    "HEARTBEAT_INTERVAL": _positive_number,
    "WORKER_STALE_AFTER": _positive_number,
    "LISTEN_URL": lambda n, r: _url(n, r, POSTGRES_SCHEMES),
    "DB_DEAD_AFTER": _dead_after,
    "MAIL_TRANSPORT": lambda n, r: _choice(n, r, MAIL_TRANSPORTS),
    "MAIL_HOST": _stripped,
    "MAIL_PORT": lambda n, r: _int_between(n, r, 1, 65535),
    "MAIL_USERNAME": _stripped,
    "MAIL_PASSWORD": lambda n, r: r,
    "MAIL_SECURITY": _mail_security,
    "MAIL_FROM": _address,
    "MAIL_RATE": lambda n, r: _positive_number(n, r, "messages per second"),
    "MAIL_DAILY_CAP": lambda n, r: _int_between(n, r, 0),
    "MAIL_MAX_PER_CONNECTION": lambda n, r: _int_between(n, r, 1),
    "MAIL_MAX_ATTEMPTS": lambda n, r: _int_between(n, r, 1),
    "MAIL_FILE_DIR": _stripped,
    "APP_URL": lambda n, r: _url(n, r, ("http", "https")).rstrip("/"),
    "SECRET_KEY": _secret,
    "SCHEDULE": _schedule,
    "SCHEDULE_FREQUENCIES": _frequencies,
    "FULL_REMINDER_MINUTES": lambda n, r: _positive_number(n, r, "minutes"),
    "FULL_CANCEL_HOURS": lambda n, r: _positive_number(n, r, "hours"),
    "BIND": _bind,
    "WEB_WORKERS": lambda n, r: _int_between(n, r, 1),
    "QUEUE_METRICS": _switch,
    "METRICS_RETENTION_DAYS": lambda n, r: _positive_number(n, r, "days"),
    "METRICS_TOKEN": _secret,
}


@dataclass(frozen=True)
class Settings:
    """Every setting Tourno reads, with its default.

    ``systemd/tourno.env.example`` documents each one; keep the two in step.
    """

    database_url: str = DEFAULT_DATABASE_URL
    queue_connection: str = "database"
    redis_url: str = "redis://127.0.0.1:6379/0"
    imports: tuple[str, ...] = ()
    log_level: str = "info"
    # "text" for people, "json" (one object a line) for log shippers.
    log_format: str = "text"
    # A worker writes its heartbeat this often...
    heartbeat_interval: float = 5.0
    # ...and is presumed dead, its jobs released, when the last beat is older.
    worker_stale_after: float = 30.0
    # Several servers: where LISTEN goes when the database URL is a pooler
    # in transaction mode (None: the database URL), and the seconds after
    # which a silent connection (PostgreSQL, Redis) counts as lost.
    listen_url: str | None = None
    db_dead_after: float = 10.0
    # Mail (tourno.mail): transport, SMTP server, pacing.
    mail_transport: str = "console"
    mail_host: str = "127.0.0.1"
    mail_port: int = 25
    mail_username: str | None = None
    mail_password: str | None = None
    mail_security: str = "none"
    mail_from: str = "Tourno <noreply@localhost>"
    # Messages per second for all drains together (a token bucket in the database).
    mail_rate: float = 10.0
    # Most messages sent in any 24 h; 0 = no cap.
    mail_daily_cap: int = 0
    mail_max_per_connection: int = 100
    mail_max_attempts: int = 8
    mail_file_dir: str = "tourno-mail"
    # Base of the links in emails.
    app_url: str = "http://localhost:8000"
    # Signs unsubscribe links (HMAC-SHA256) and the dashboard's session cookie;
    # without it bulk mail has no unsubscribe link and /admin is disabled.
    secret_key: str | None = None
    # The scheduler (tourno.scheduler): per-task cron overrides, "Task=expr"
    # (TOURNO_SCHEDULE, ';' between pairs), and the older minute counts,
    # "Task=minutes" (TOURNO_SCHEDULE_FREQUENCIES).
    schedule: tuple[str, ...] = ()
    schedule_frequencies: tuple[str, ...] = ()
    # CheckFullTournamentsJob: remind the organizer of a full, unstarted
    # tournament after this long, cancel it after that long.
    full_reminder_minutes: float = 60.0
    full_cancel_hours: float = 48.0
    # `tourno serve`: listen address and gunicorn worker processes.
    bind: str = "127.0.0.1:8000"
    web_workers: int = 2
    # Workers count finished jobs per minute in queue_metrics (0 turns it off,
    # e.g. to measure what it costs); minutes older than the retention are
    # folded into all-time totals, so /metrics counters never go down.
    queue_metrics: bool = True
    metrics_retention_days: float = 14.0
    # When set, GET /metrics asks for it as a bearer token.
    metrics_token: str | None = None
    source: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        env_file = env.get(PREFIX + "ENV_FILE")
        if env_file:
            # The process environment wins over the file, as with systemd's
            # EnvironmentFile= followed by Environment=.
            env = {**read_env_file(env_file), **env}
        return cls.from_mapping(env)

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        def get(key: str) -> str | None:
            raw = env.get(PREFIX + key)
            return None if raw is None or raw.strip() == "" else raw

        values: dict[str, Any] = {}
        for key, parse in PARSERS.items():
            raw = get(key)
            if raw is not None:
                values[key.lower()] = parse(PREFIX + key, raw)
        settings = cls(**values, source={k: v for k, v in env.items() if k.startswith(PREFIX)})
        if settings.listen_url and not settings.database_url.startswith(POSTGRES_SCHEMES):
            raise ConfigError(
                f"{PREFIX}LISTEN_URL: only for a PostgreSQL {PREFIX}DATABASE_URL "
                "(SQLite wakes its workers without it)"
            )
        if settings.worker_stale_after < 2 * settings.heartbeat_interval:
            raise ConfigError(
                f"{PREFIX}WORKER_STALE_AFTER: must be at least twice "
                f"{PREFIX}HEARTBEAT_INTERVAL ({settings.heartbeat_interval:g} s), "
                f"got {settings.worker_stale_after:g}"
            )
        return settings

    def describe(self) -> list[tuple[str, str]]:
        """(variable, value) pairs for display, with passwords masked."""
        rows = []
        for f in fields(self):
            if f.name == "source":
                continue
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                # Cron expressions hold commas: TOURNO_SCHEDULE separates with ';'.
                value = (";" if f.name == "schedule" else ",").join(value)
            # An unset optional setting shows as empty, not as Python's "None".
            text = "" if value is None else str(value)
            if isinstance(value, bool):
                text = "1" if value else "0"  # as the variable takes it
            if f.name.endswith("_url"):
                text = mask_password(text)
            if f.name in ("mail_password", "secret_key", "metrics_token") and value:
                text = "***"
            rows.append((PREFIX + f.name.upper(), text))
        return rows


ENVIRONMENT, ENV_FILE, DEFAULT = "environment", "env file", "default"


def sources(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Where each setting comes from: ``environment``, ``env file`` or
    ``default``, read the way :meth:`Settings.from_env` reads them (the
    environment wins over the file; a blank value counts as unset)."""
    env = dict(os.environ if environ is None else environ)
    env_file = env.get(PREFIX + "ENV_FILE")
    from_file = read_env_file(env_file) if env_file else {}
    out = {}
    for key in PARSERS:
        name = PREFIX + key
        if name in env:
            out[name] = ENVIRONMENT if env[name].strip() else DEFAULT
        elif from_file.get(name, "").strip():
            out[name] = ENV_FILE
        else:
            out[name] = DEFAULT
    return out


def mask_password(url: str) -> str:
    """``postgresql://u:secret@h/db?password=x`` -> ``postgresql://u:***@h/db?password=***``."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    rest, sep, query = rest.partition("?")
    if "@" in rest:
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        rest = f"{creds}@{host}"
    if query:
        # playhouse.db_url passes query parameters to the driver, password included.
        query = "&".join(
            f"{k}=***" if k.lower() in ("password", "passwd") and v else f"{k}{eq}{v}"
            for k, eq, v in (part.partition("=") for part in query.split("&"))
        )
    return f"{scheme}://{rest}{sep}{query}"


def sqlite_file(url: str) -> Path | None:
    """The file an ``sqlite://`` database URL names (relative to the working
    directory, as SQLite opens it), or None for other URLs and ``:memory:``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        return None
    name = parts.path[1:]
    if not name or name == ":memory:":
        return None
    return Path(name)


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines (``#`` comments, optional ``export``, quotes)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{PREFIX}ENV_FILE: cannot read {str(p)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{PREFIX}ENV_FILE: {str(p)!r} is not UTF-8 text (byte {exc.start})") from None
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"{PREFIX}ENV_FILE: {str(p)!r} line {lineno} is not KEY=VALUE: {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values

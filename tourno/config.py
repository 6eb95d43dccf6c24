"""Settings from ``TOURNO_*`` environment variables (and an optional env file).

This is the only module that reads ``os.environ``. Every value is parsed and
checked once, at start; a bad value raises :class:`ConfigError` whose message
is one line naming the variable, which the CLI prints before exiting.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

PREFIX = "TOURNO_"
DEFAULT_DATABASE_URL = "sqlite:///tourno.db"


class ConfigError(Exception):
    """A setting has a value Tourno cannot use."""


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: must be a finite number greater than 0, got {raw!r}")
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


def _modules(name: str, raw: str) -> tuple[str, ...]:
    mods = tuple(m.strip() for m in raw.split(",") if m.strip())
    for mod in mods:
        if not all(part.isidentifier() for part in mod.split(".")):
            raise ConfigError(f"{name}: {mod!r} is not a Python module name")
    return mods


def _int_at_least(name: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {raw!r}")
    return value


def _rate(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number of messages per second, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: must be a finite number greater than 0, got {raw!r}")
    return value


def _address(name: str, raw: str) -> str:
    from email.utils import parseaddr

    value = raw.strip()
    addr = parseaddr(value)[1]
    if "@" not in addr or any(c.isspace() for c in addr):
        raise ConfigError(f"{name}: expected an address like 'Tourno <noreply@example.com>', got {raw!r}")
    return value


def _positive_number(name: str, raw: str, unit: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number of {unit}, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: must be a finite number of {unit} greater than 0, got {raw!r}")
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
LOG_LEVELS = ("debug", "info", "warning", "error")
MAIL_TRANSPORTS = ("smtp", "console", "file")
# "tls" is implicit TLS (usually port 465); "ssl" is accepted as another name for it.
MAIL_SECURITY_MODES = ("none", "starttls", "tls", "ssl")


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
    # A worker writes its heartbeat this often...
    heartbeat_interval: float = 5.0
    # ...and is presumed dead, its jobs released, when the last beat is older.
    worker_stale_after: float = 30.0
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
    # Signs unsubscribe links (HMAC-SHA256); without it bulk mail has no unsubscribe link.
    secret_key: str | None = None
    # The scheduler (tourno.scheduler): per-task frequency overrides, "Task=minutes".
    schedule_frequencies: tuple[str, ...] = ()
    # CheckFullTournamentsJob: remind the organizer of a full, unstarted
    # tournament after this long, cancel it after that long.
    full_reminder_minutes: float = 60.0
    full_cancel_hours: float = 48.0
    # `tourno serve`: listen address and gunicorn worker processes.
    bind: str = "127.0.0.1:8000"
    web_workers: int = 2
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

        values: dict[str, object] = {}
        name = PREFIX + "DATABASE_URL"
        if (raw := get("DATABASE_URL")) is not None:
            values["database_url"] = _url(name, raw, DATABASE_SCHEMES)
        if (raw := get("QUEUE_CONNECTION")) is not None:
            values["queue_connection"] = _choice(PREFIX + "QUEUE_CONNECTION", raw, ("database", "redis"))
        if (raw := get("REDIS_URL")) is not None:
            values["redis_url"] = _url(PREFIX + "REDIS_URL", raw, ("redis", "rediss", "unix"))
        if (raw := get("IMPORTS")) is not None:
            values["imports"] = _modules(PREFIX + "IMPORTS", raw)
        if (raw := get("LOG_LEVEL")) is not None:
            values["log_level"] = _choice(PREFIX + "LOG_LEVEL", raw, LOG_LEVELS)
        if (raw := get("HEARTBEAT_INTERVAL")) is not None:
            values["heartbeat_interval"] = _positive_float(PREFIX + "HEARTBEAT_INTERVAL", raw)
        if (raw := get("WORKER_STALE_AFTER")) is not None:
            values["worker_stale_after"] = _positive_float(PREFIX + "WORKER_STALE_AFTER", raw)
        if (raw := get("MAIL_TRANSPORT")) is not None:
            values["mail_transport"] = _choice(PREFIX + "MAIL_TRANSPORT", raw, MAIL_TRANSPORTS)
        if (raw := get("MAIL_HOST")) is not None:
            values["mail_host"] = raw.strip()
        if (raw := get("MAIL_PORT")) is not None:
            values["mail_port"] = _int_at_least(PREFIX + "MAIL_PORT", raw, 1)
            if values["mail_port"] > 65535:
                raise ConfigError(f"{PREFIX}MAIL_PORT: must be at most 65535, got {raw!r}")
        if (raw := get("MAIL_USERNAME")) is not None:
            values["mail_username"] = raw.strip()
        if (raw := get("MAIL_PASSWORD")) is not None:
            values["mail_password"] = raw
        if (raw := get("MAIL_SECURITY")) is not None:
            security = _choice(PREFIX + "MAIL_SECURITY", raw, MAIL_SECURITY_MODES)
            values["mail_security"] = "tls" if security == "ssl" else security
        if (raw := get("MAIL_FROM")) is not None:
            values["mail_from"] = _address(PREFIX + "MAIL_FROM", raw)
        if (raw := get("MAIL_RATE")) is not None:
            values["mail_rate"] = _rate(PREFIX + "MAIL_RATE", raw)
        if (raw := get("MAIL_DAILY_CAP")) is not None:
            values["mail_daily_cap"] = _int_at_least(PREFIX + "MAIL_DAILY_CAP", raw, 0)
        if (raw := get("MAIL_MAX_PER_CONNECTION")) is not None:
            values["mail_max_per_connection"] = _int_at_least(PREFIX + "MAIL_MAX_PER_CONNECTION", raw, 1)
        if (raw := get("MAIL_MAX_ATTEMPTS")) is not None:
            values["mail_max_attempts"] = _int_at_least(PREFIX + "MAIL_MAX_ATTEMPTS", raw, 1)
        if (raw := get("MAIL_FILE_DIR")) is not None:
            values["mail_file_dir"] = raw.strip()
        if (raw := get("APP_URL")) is not None:
            values["app_url"] = _url(PREFIX + "APP_URL", raw, ("http", "https")).rstrip("/")
        if (raw := get("SECRET_KEY")) is not None:
            values["secret_key"] = _secret(PREFIX + "SECRET_KEY", raw)
        if (raw := get("SCHEDULE_FREQUENCIES")) is not None:
            values["schedule_frequencies"] = _frequencies(PREFIX + "SCHEDULE_FREQUENCIES", raw)
        if (raw := get("FULL_REMINDER_MINUTES")) is not None:
            values["full_reminder_minutes"] = _positive_number(
                PREFIX + "FULL_REMINDER_MINUTES", raw, "minutes"
            )
        if (raw := get("FULL_CANCEL_HOURS")) is not None:
            values["full_cancel_hours"] = _positive_number(PREFIX + "FULL_CANCEL_HOURS", raw, "hours")
        if (raw := get("BIND")) is not None:
            values["bind"] = _bind(PREFIX + "BIND", raw)
        if (raw := get("WEB_WORKERS")) is not None:
            values["web_workers"] = _int_at_least(PREFIX + "WEB_WORKERS", raw, 1)
        settings = cls(**values, source={k: v for k, v in env.items() if k.startswith(PREFIX)})
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
                value = ",".join(value)
            text = str(value)
            if f.name.endswith("_url"):
                text = mask_password(text)
            if f.name in ("mail_password", "secret_key") and value:
                text = "***"
            rows.append((PREFIX + f.name.upper(), text))
        return rows


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

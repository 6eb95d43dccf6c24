"""The one database object, and the column types every model shares.

``database`` is a proxy bound at start by :func:`init` to the database named by
``TOURNO_DATABASE_URL``: PostgreSQL in production, an SQLite file as the
embedded default. Connections are never opened implicitly (``autoconnect`` is
off), so a database that is down fails loudly where we open it, not halfway
through a query.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from typing import Any, overload
from urllib.parse import parse_qs, urlparse

import peewee
from playhouse import db_url

from tourno.errors import first_line

database = peewee.DatabaseProxy()
UTC = dt.UTC

# SQLite stores timestamps as text in one fixed, sortable format (UTC), so the
# queue's "available_at <= ?" comparisons are plain string comparisons.
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

SQLITE_PRAGMAS = {
    # WAL lets readers (the CLI, the API) run while a worker writes.
    "journal_mode": "wal",
    "synchronous": "normal",
    "foreign_keys": 1,
    # Writers wait for each other instead of failing with "database is locked".
    "busy_timeout": 10_000,
}


class DatabaseUnavailable(Exception):
    """The database cannot be reached (down, wrong URL, bad credentials)."""


# "The database went away": what a long-running process (worker, monitor,
# scheduler, periodic job) waits out by reconnecting, instead of failing. An
# OperationalError is also what a lost server connection raises mid-query.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    peewee.OperationalError,
    peewee.InterfaceError,
    DatabaseUnavailable,
)
# The narrower set that says the connection itself is gone whatever the
# statement: an OperationalError can also be one statement's own failure
# (a deadlock, a lock timeout), which a scan counts against that item.
CONNECTION_LOST_ERRORS: tuple[type[BaseException], ...] = (peewee.InterfaceError, DatabaseUnavailable)


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


#: Seconds of silence after which a PostgreSQL connection counts as dead
#: (``TOURNO_DB_DEAD_AFTER``; :func:`init` sets it for the process).
DEFAULT_DEAD_AFTER = 10.0
_dead_after = DEFAULT_DEAD_AFTER
#: Where the connections that LISTEN go (``TOURNO_LISTEN_URL``), when that is
#: not the database URL: None means the database URL. Set by :func:`init`.
_listen_url: str | None = None


def liveness_parameters(dead_after: float) -> dict[str, int]:
    """libpq's TCP keepalive and user-timeout parameters that make a
    connection whose peer went silent (a cut cable, a host that vanished, a
    firewall that dropped the flow) fail within about ``dead_after`` seconds
    instead of hanging until the kernel gives up, minutes or hours later.

    Keepalives probe an idle connection, which is also one waiting for a
    reply; ``tcp_user_timeout`` bounds how long sent data may stay
    unacknowledged. A live server answers the probes from its kernel, so a
    long query on a healthy connection is never cut. Unix sockets ignore them."""
    seconds = max(float(dead_after), 2.0)
    idle = max(1, int(seconds // 2))
    # Up to three probes in what is left (libpq counts whole seconds).
    count = max(1, min(3, int(seconds - idle)))
    interval = max(1, int((seconds - idle) // count))
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": int(seconds * 1000),
    }


def connect(url: str, *, dead_after: float | None = None, pool: bool = False) -> peewee.Database:
    """A (not yet connected) peewee database for ``url``.

    PostgreSQL connections send no startup ``options`` (PgBouncer refuses
    them) and set no session state: Tourno's SQL never depends on the
    session's time zone (timestamps are ``timestamptz``, compared with
    ``now()``; Python receives aware datetimes and normalises them to UTC),
    so a pooler may hand each transaction a different server connection.
    Parameters given in the URL's query win over the liveness defaults."""
    scheme = url.split("://", 1)[0]
    if pool and scheme in ("postgres", "postgresql"):
        # A server's threads open a connection per request: a pool keeps
        # them open across requests (peewee's, checked in at each request's end).
        url = "postgresql+pool" + url[len(scheme) :]
        scheme = "postgresql+pool"
    if scheme == "sqlite":
        return db_url.connect(
            url,
            pragmas=SQLITE_PRAGMAS,
            timeout=10,
            autoconnect=False,
            field_types={"TIMESTAMPTZ": "DATETIME", "JSONB": "TEXT"},
        )
    if scheme in ("postgres", "postgresql", "postgres+pool", "postgresql+pool"):
        extra: dict[str, Any] = {"connect_timeout": 10}
        extra.update(liveness_parameters(_dead_after if dead_after is None else dead_after))
        if "+pool" in scheme:
            extra.update(max_connections=32, stale_timeout=300)
        for key in parse_qs(urlparse(url).query):
            extra.pop(key, None)
        return db_url.connect(url, autoconnect=False, **extra)
    raise ValueError(f"unsupported database URL scheme {scheme!r}")


def init(
    url: str, *, listen_url: str | None = None, dead_after: float = DEFAULT_DEAD_AFTER, pool: bool = False
) -> peewee.Database:
    """Bind :data:`database` to ``url`` and return the concrete database.
    ``listen_url`` is where LISTEN goes (default: ``url``); ``dead_after`` the
    seconds after which a silent connection counts as lost; ``pool`` pools a
    PostgreSQL URL's connections whatever its scheme (``tourno serve``)."""
    global _dead_after, _listen_url
    _dead_after = dead_after
    _listen_url = listen_url if listen_url and listen_url != url else None
    db = connect(url, pool=pool)
    database.initialize(db)
    return db


def listen_url() -> str | None:
    """The URL of the connections that LISTEN, when it is not the database's
    (a transaction-mode pooler such as PgBouncer delivers no notifications:
    each transaction may run on another server connection)."""
    return _listen_url


def is_postgres(db: peewee.Database | None = None) -> bool:
    target = db if db is not None else database.obj
    return isinstance(target, peewee.PostgresqlDatabase)


def open_connection(db: peewee.Database | None = None) -> None:
    """Open this thread's connection, turning driver errors into one clear error."""
    target = db if db is not None else database
    try:
        target.connect(reuse_if_open=True)
    except peewee.OperationalError as exc:
        raise DatabaseUnavailable(first_line(exc, with_type=False)) from exc


def write_transaction() -> Any:
    """One write transaction on :data:`database`. SQLite takes its write lock
    at BEGIN (``IMMEDIATE``), so two writers serialize instead of one failing
    at commit with "database is locked"; PostgreSQL takes row locks as it goes."""
    if is_postgres():
        return database.atomic()
    return database.atomic("IMMEDIATE")


def sql(text: str, db: peewee.Database | None = None) -> str:
    """``text`` written with ``%s`` placeholders, in the paramstyle of ``db``
    (SQLite's driver takes ``?``)."""
    return text if is_postgres(db) else text.replace("%s", "?")


# -- the one place that reaches into peewee's per-thread state --------------------------
# peewee keeps each thread's connection, transaction stack and commit callbacks
# in ``Database._state``, with no public API for the three things below.
# tests/ops/test_db.py pins them, so a peewee upgrade that moves them fails there.


def _state(db: peewee.Database | None = None) -> Any:
    target: Any = db if db is not None else database.obj
    return target._state


def tuples(query: Any) -> list[tuple[Any, ...]]:
    """The rows of a peewee query as plain tuples (typed as such, which
    peewee's own ``.tuples()`` is not)."""
    return list(query.tuples())


def peewee_errors() -> Any:
    """A context in which the driver's own exceptions (a raw cursor's, as
    for COPY) are raised as peewee's, the way ``execute_sql`` raises them."""
    return peewee.__exception_wrapper__  # type: ignore[attr-defined]  # not in peewee's hints


def commit_callbacks(db: peewee.Database | None = None) -> list[Any]:
    """The callbacks registered with ``after_commit`` in this thread's open
    transaction (peewee drops them on rollback)."""
    return list(_state(db).commit_callbacks)


def reset_transaction_state(db: peewee.Database | None = None) -> None:
    """Forget this thread's transaction stack and its commit callbacks, after
    a raw ``ROLLBACK`` ended a transaction that peewee still thinks is open."""
    target: Any = db if db is not None else database.obj
    target._state.transactions.clear()
    target._clear_commit_callbacks()


def connection_in_transaction(db: peewee.Database | None = None) -> bool:
    """Whether this thread's driver connection is inside a transaction, as the
    driver sees it (peewee's own stack can miss one opened with raw SQL)."""
    conn = getattr(_state(db), "conn", None)
    if conn is None:
        return False
    status = getattr(conn, "get_transaction_status", None)
    if status is not None:
        # psycopg2: 1 active, 2 in a transaction, 3 in a failed one; 0 is
        # idle and 4 a broken connection, which has nothing to roll back.
        return bool(status() in (1, 2, 3))
    return bool(getattr(conn, "in_transaction", False))


def in_manual_commit(db: peewee.Database | None = None) -> bool:
    """Whether this thread's innermost transaction is a ``manual_commit()``
    block: the caller commits when it likes, so nothing can wait for "the"
    commit (peewee runs no commit callbacks for it)."""
    target = db if db is not None else database.obj
    return isinstance(target.top_transaction(), peewee._manual)


def discard_connection() -> None:
    """Close this thread's connection after an error, so that the next use
    opens a fresh one. A broken connection inside a transaction refuses
    close(): its state is dropped instead."""
    try:
        if not database.is_closed():
            database.close()
    except Exception:  # noqa: BLE001
        state = _state()
        try:
            state.conn.close()
        except Exception:  # noqa: BLE001, S110 - it is already broken
            pass
        state.reset()


class SerialField(peewee.BigAutoField):
    """A surrogate key that is never reused: ``bigserial`` on PostgreSQL,
    ``INTEGER PRIMARY KEY AUTOINCREMENT`` on SQLite (whose plain rowid would
    hand a deleted job's or worker's id to the next row)."""

    def ddl(self, ctx: Any) -> Any:
        node = super().ddl(ctx)
        db = self.model._meta.database
        if isinstance(db, peewee.DatabaseProxy):
            db = db.obj
        if isinstance(db, peewee.SqliteDatabase):
            return peewee.NodeList((node, peewee.SQL("AUTOINCREMENT")))
        return node


class TimestampField(peewee.Field):
    """A UTC instant: ``timestamptz`` on PostgreSQL, sortable text on SQLite.

    Python values are always timezone-aware UTC datetimes.
    """

    field_type = "TIMESTAMPTZ"

    def db_value(self, value: Any) -> Any:
        if not isinstance(value, dt.datetime):
            return value
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        db = self.model._meta.database
        if is_postgres(db.obj if isinstance(db, peewee.DatabaseProxy) else db):
            return value
        return value.astimezone(UTC).strftime(SQLITE_TIME_FORMAT)

    def python_value(self, value: Any) -> Any:
        return parse_timestamp(value)


@overload
def parse_timestamp(value: None) -> None: ...
@overload
def parse_timestamp(value: str | dt.datetime) -> dt.datetime: ...
@overload
def parse_timestamp(value: Any) -> dt.datetime | None: ...


def parse_timestamp(value: Any) -> dt.datetime | None:
    """A stored timestamp (text on SQLite, aware on PostgreSQL) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        for fmt in (SQLITE_TIME_FORMAT, "%Y-%m-%d %H:%M:%S"):
            try:
                return dt.datetime.strptime(value, fmt).replace(tzinfo=UTC)
            except ValueError:
                continue
        return dt.datetime.fromisoformat(value).astimezone(UTC)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return value


class JSONField(peewee.Field):
    """JSON: ``jsonb`` on PostgreSQL, text on SQLite."""

    field_type = "JSONB"

    def db_value(self, value: Any) -> Any:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: Any) -> Any:
        if value is None or not isinstance(value, (str, bytes)):
            return value
        return json.loads(value)


class EnumField(peewee.CharField):
    """A ``str`` enum stored as its value; reads give the enum member back.

    Writing a value outside the enum raises ``ValueError`` before any SQL runs
    (SQLite has no CHECK constraints here; PostgreSQL has them as well).
    """

    def __init__(self, enum_class: type[enum.Enum], *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 32)
        self.enum_class = enum_class
        super().__init__(*args, **kwargs)

    def db_value(self, value: Any) -> Any:
        if value is None or isinstance(value, (peewee.Node)):
            return value
        return self.enum_class(value).value

    def python_value(self, value: Any) -> Any:
        return None if value is None else self.enum_class(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


# -- counts that do not scan a large table ------------------------------------------

#: Exact up to this many rows; above it, PostgreSQL's planner estimate.
COUNT_CAP = 10_000


class Count(int):
    """A row count that may be an estimate (``estimated``): an int, so sums
    and comparisons work as before, shown with "≈" when it is one."""

    estimated: bool

    def __new__(cls, value: int, estimated: bool = False) -> Count:
        count = super().__new__(cls, value)
        count.estimated = estimated
        return count

    def __str__(self) -> str:
        return f"≈{int(self):,}" if self.estimated else str(int(self))

    __repr__ = __str__


def bounded_count(query: Any, params: Any = (), cap: int | None = COUNT_CAP) -> Count:
    """The rows of ``query`` (SQL text with ``params``, or a peewee query),
    counted without reading more than ``cap + 1`` of them on PostgreSQL: a
    page an operator keeps open must not scan a million-row table at every
    refresh. Above the cap, the planner's estimate (from the table's
    statistics: ANALYZE keeps it within the right order of magnitude), never
    less than cap + 1. ``cap`` None, and SQLite (small, embedded
    installations, and no estimates to ask for), count exactly."""
    if not isinstance(query, str):
        query, params = query.sql()
    if cap is None or not is_postgres():
        return Count(database.execute_sql(f"SELECT count(*) FROM ({query}) AS counted", params).fetchone()[0])
    n = database.execute_sql(
        f"SELECT count(*) FROM ({query} LIMIT {int(cap) + 1}) AS counted", params
    ).fetchone()[0]
    if n <= cap:
        return Count(n)
    plan = database.execute_sql(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return Count(max(int(plan[0]["Plan"]["Plan Rows"]), cap + 1), estimated=True)

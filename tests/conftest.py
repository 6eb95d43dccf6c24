"""Test databases: a real PostgreSQL and a real SQLite file, never mocks.

PostgreSQL: the schema is migrated once into a template database, and every
test gets a fresh copy (``CREATE DATABASE ... TEMPLATE``), so tests are
isolated and cheap. The server comes from ``TOURNO_TEST_PG`` (default: the
local one). Without a server the PostgreSQL tests are skipped, except under
``CI=true``, where that is an error.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import queue
import shutil
import sys
import threading
import uuid
from pathlib import Path

import peewee
import pytest

import tourno
from tourno import db as tdb
from tourno import migrations
from tourno.config import Settings

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = os.environ.get("TOURNO_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
TEMPLATE = f"tourno_test_tpl_{os.getpid()}"
_counter = itertools.count()

# Test-only tables the test jobs write to; no model covers them, so the
# schema check ignores them.
TEST_TABLES_SQL = {
    "postgres": [
        "CREATE TABLE test_runs (id bigserial PRIMARY KEY, key text NOT NULL, pid int NOT NULL, "
        "attempt int, at timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE test_marks (key text PRIMARY KEY, value text)",
    ],
    "sqlite": [
        "CREATE TABLE test_runs (id integer PRIMARY KEY, key text NOT NULL, pid int NOT NULL, "
        "attempt int, at text NOT NULL DEFAULT CURRENT_TIMESTAMP)",
        "CREATE TABLE test_marks (key text PRIMARY KEY, value text)",
    ],
}


def _admin() -> peewee.PostgresqlDatabase:
    return tdb.connect(f"{PG_SERVER}/postgres")


def _pg_available() -> str | None:
    try:
        admin = _admin()
        admin.connect()
        admin.close()
        return None
    except peewee.OperationalError as exc:
        return str(exc).strip().splitlines()[0]


class ClonePool:
    """Fresh copies of the template, made ahead by a background thread, and
    used ones dropped in the background: a test waits for neither (creating
    a database from a template takes about 0.4 s here, most of a short test)."""

    READY = 2

    def __init__(self, template: str) -> None:
        self.template = template
        self.ready: queue.Queue[str] = queue.Queue()
        self.used: queue.Queue[str] = queue.Queue()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="pg-clones", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        admin = _admin()
        admin.connect()
        try:
            while not self.stop.is_set():
                if self.ready.qsize() < self.READY:
                    self.ready.put(self._create(admin))
                elif not self.used.empty():
                    self._drop(admin, self.used.get())
                else:
                    self.stop.wait(0.01)
        except peewee.DatabaseError as exc:  # reported to the next test that takes a clone
            self.error = exc
        finally:
            admin.close()

    def _create(self, admin: peewee.Database) -> str:
        name = f"tourno_t_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
        admin.execute_sql(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return f"{PG_SERVER}/{name}"

    @staticmethod
    def _drop(admin: peewee.Database, url: str) -> None:
        admin.execute_sql(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

    def take(self) -> str:
        while True:
            if self.error is not None:
                raise RuntimeError(f"the clone thread failed: {self.error!r}")
            try:
                return self.ready.get(timeout=0.5)
            except queue.Empty:
                if not self.thread.is_alive():
                    return fresh_pg_url(self.template)

    def give_back(self, url: str) -> None:
        self.used.put(url)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        admin = _admin()
        admin.connect()
        try:
            for q in (self.ready, self.used):
                while not q.empty():
                    self._drop(admin, q.get())
        finally:
            admin.close()


@pytest.fixture(scope="session")
def pg_clones(pg_template):
    pool = ClonePool(pg_template)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def pg_template():
    problem = _pg_available()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {PG_SERVER}: {problem}")
        pytest.skip(f"PostgreSQL unreachable at {PG_SERVER}: {problem}")
    admin = _admin()
    admin.connect()
    admin.execute_sql(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
    admin.execute_sql(f'CREATE DATABASE "{TEMPLATE}"')
    tpl = tdb.connect(f"{PG_SERVER}/{TEMPLATE}")
    tpl.connect()
    migrations.migrate(tpl)
    for sql in TEST_TABLES_SQL["postgres"]:
        tpl.execute_sql(sql)
    tpl.close()
    yield TEMPLATE
    admin.execute_sql(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
    admin.close()


def fresh_pg_url(template: str) -> str:
    name = f"tourno_t_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    admin = _admin()
    admin.connect()
    try:
        admin.execute_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        admin.close()
    return f"{PG_SERVER}/{name}"


def drop_pg(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = _admin()
    admin.connect()
    try:
        admin.execute_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def fresh_sqlite_url(directory: Path) -> str:
    path = directory / f"tourno-{next(_counter)}.db"
    url = f"sqlite:///{path}"
    db = tdb.connect(url)
    db.connect()
    migrations.migrate(db)
    for sql in TEST_TABLES_SQL["sqlite"]:
        db.execute_sql(sql)
    db.close()
    return url


class QueueDB:
    """A migrated database bound as tourno's database, connection open."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.settings = Settings(database_url=url, heartbeat_interval=0.5, worker_stale_after=3.0)
        tourno.setup(self.settings, import_jobs=False)
        tourno.import_modules(["tests.support.jobs"])
        tdb.open_connection()

    @property
    def database(self) -> peewee.Database:
        return tdb.database.obj

    def scalar(self, sql: str, params=()):
        row = self.database.execute_sql(self.sql(sql), params).fetchone()
        return None if row is None else row[0]

    def rows(self, sql: str, params=()) -> list[tuple]:
        return self.database.execute_sql(self.sql(sql), params).fetchall()

    def sql(self, sql: str) -> str:
        return sql.replace("%s", "?") if self.kind == "sqlite" else sql

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a ``tourno`` subprocess on this database."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_")}
        env.update(
            TOURNO_DATABASE_URL=self.url,
            TOURNO_IMPORTS="tests.support.jobs",
            TOURNO_HEARTBEAT_INTERVAL=str(self.settings.heartbeat_interval),
            TOURNO_WORKER_STALE_AFTER=str(self.settings.worker_stale_after),
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def close(self) -> None:
        if not tdb.database.is_closed():
            tdb.database.close()


class SharedDatabase:
    """One clone of the template shared by the tests of a module, emptied
    before each test instead of cloned anew.

    Cloning costs the server about half a second of work per test (more than
    most tests take), which on two cores competes with the tests themselves;
    emptying the tables and restarting the sequences takes about 15 ms. Each
    test still starts from the template's state: connections left from the
    previous test (its subprocesses' included) are terminated first, and a
    test that changed the schema makes the next one get a fresh clone (a
    fingerprint of the catalog is compared).
    """

    def __init__(self, pool: ClonePool) -> None:
        self.pool = pool
        self.url: str | None = None
        self.fingerprint: tuple | None = None
        self.admin: peewee.Database | None = None

    # Tables, indexes and columns; functions; triggers; constraints; types:
    # whatever a test may create or drop with DDL.
    _FINGERPRINT = (
        "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace), "
        "(SELECT coalesce(sum(relnatts), 0) FROM pg_class WHERE relnamespace = 'public'::regnamespace), "
        "(SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        " WHERE c.relnamespace = 'public'::regnamespace AND NOT a.attisdropped), "
        "(SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace), "
        "(SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal), "
        "(SELECT count(*) FROM pg_constraint WHERE connamespace = 'public'::regnamespace), "
        "(SELECT count(*) FROM pg_type WHERE typnamespace = 'public'::regnamespace)"
    )

    def take(self) -> str:
        if self.url is not None:
            if self._reset():
                return self.url
            self.release()
        self.url = self.pool.take()
        # Opened only while preparing or resetting: a test may count the
        # connections to its database.
        self.admin = tdb.connect(self.url)
        self.admin.connect()
        try:
            self.fingerprint = tuple(self.admin.execute_sql(self._FINGERPRINT).fetchone())
            self._statements = self._reset_statements()
        finally:
            self.admin.close()
        return self.url

    def _reset_statements(self) -> list[str]:
        assert self.admin is not None
        (tables,) = self.admin.execute_sql(
            "SELECT array_agg(quote_ident(tablename)) FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename <> %s",
            (migrations.HISTORY_TABLE,),
        ).fetchone()
        (sequences,) = self.admin.execute_sql(
            "SELECT array_agg(quote_ident(sequencename)) FROM pg_sequences "
            "WHERE schemaname = 'public' AND sequencename NOT LIKE %s",
            (migrations.HISTORY_TABLE + "%",),
        ).fetchone()
        # replica: foreign keys are not checked, so the order of the DELETEs
        # does not matter (the tables end empty either way).
        return [
            "SET session_replication_role = replica",
            *(f"DELETE FROM {t}" for t in tables),
            *(f"ALTER SEQUENCE {q} RESTART" for q in sequences or ()),
            "SET session_replication_role = DEFAULT",
        ]

    def _reset(self) -> bool:
        assert self.admin is not None
        try:
            self.admin.connect()
        except peewee.DatabaseError:
            return False
        try:
            self.admin.execute_sql(
                # With a timeout, each call waits until that backend has gone
                # (PostgreSQL 14+), so the next test sees no stray connection.
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if tuple(self.admin.execute_sql(self._FINGERPRINT).fetchone()) != self.fingerprint:
                return False
            with self.admin.atomic():
                for statement in self._statements:
                    self.admin.execute_sql(statement)
            return True
        except peewee.DatabaseError:
            return False
        finally:
            try:
                self.admin.close()
            except peewee.DatabaseError:
                pass

    def release(self) -> None:
        self.admin = None
        if self.url is not None:
            self.pool.give_back(self.url)
            self.url = None


@pytest.fixture(scope="module")
def pg_shared(pg_clones):
    shared = SharedDatabase(pg_clones)
    yield shared
    shared.release()


@pytest.fixture
def pg(pg_shared):
    q = QueueDB("postgres", pg_shared.take())
    yield q
    q.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """One migrated SQLite file; each test gets a copy (migrating takes longer)."""
    url = fresh_sqlite_url(tmp_path_factory.mktemp("sqlite-template"))
    return Path(url[len("sqlite:///") :])


@pytest.fixture
def sqlite(tmp_path, sqlite_template):
    path = tmp_path / f"tourno-{next(_counter)}.db"
    shutil.copyfile(sqlite_template, path)
    q = QueueDB("sqlite", f"sqlite:///{path}")
    yield q
    q.close()


@pytest.fixture(params=["postgres", "sqlite"])
def qdb(request):
    """The same test on PostgreSQL and on SQLite."""
    return request.getfixturevalue("pg" if request.param == "postgres" else "sqlite")


def tourno_cmd(*args: str) -> list[str]:
    """Run the CLI as a subprocess the way an operator does."""
    return [sys.executable, "-m", "tourno", *args]


def run_worker(**options) -> tuple[int, object]:
    """Run a worker in this process (main thread) until it stops; returns
    (exit code, worker). Defaults to --stop-when-empty with fast heartbeats.
    The worker puts back the signal handlers it found (tested on its own)."""
    from tourno.queue import backends
    from tourno.queue.worker import Worker, WorkerOptions

    options.setdefault("stop_when_empty", True)
    options.setdefault("sleep", 0.1)
    options.setdefault("heartbeat_interval", 0.5)
    options.setdefault("stale_after", 3.0)
    # The test process grows past the worker's default 128 MB over a full run;
    # the --memory stop is tested on its own.
    options.setdefault("memory", 0)
    worker = Worker(backends.current(), WorkerOptions(**options))
    return worker.run(), worker


# -- the tournament domain's tests ---------------------------------------------------

#: The fixed "now" the domain tests run at.
DOMAIN_NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def organizer(qdb):
    from tourno.accounts.models import Role
    from tourno.tournaments import services

    return services.create_user("org@example.com", "Org", role=Role.ORGANIZER)


def make_players(n: int, prefix: str = "p") -> list:
    """``n`` player users, inserted in one statement, in id order."""
    from tourno.accounts.models import User

    rows = [
        {
            "email": f"{prefix}{i}@example.com",
            "display_name": f"P{i}",
            "role": "player",
            "created_at": DOMAIN_NOW,
        }
        for i in range(n)
    ]
    User.insert_many(rows).execute()
    return list(User.select().where(User.email.startswith(prefix)).order_by(User.id))

"""Migrations produce exactly the models' schema, on PostgreSQL and SQLite.

``playhouse.schema_diff`` compares tables, columns and index signatures; it
compares partial indexes by name only and ignores column types and
nullability, so this file also checks those against the models.
"""

from __future__ import annotations

import logging
import os
import re
import uuid

import peewee
import pytest
from click.testing import CliRunner
from playhouse.schema_diff import diff_models

from tests.conftest import PG_SERVER, _admin, drop_pg
from tourno import db as tdb
from tourno import migrations
from tourno.buckets import MODELS as BUCKET_MODELS
from tourno.cli import main
from tourno.config import sqlite_file
from tourno.mail.models import MODELS as MAIL_MODELS
from tourno.queue.models import MODELS as QUEUE_MODELS
from tourno.scheduler.models import MODELS as SCHEDULER_MODELS
from tourno.tournaments import models as tmodels

FIRST = "0001_queue"
ALL = [
    FIRST,
    "0002_tournaments",
    "0003_mail",
    "0004_scheduler",
    "0005_redis_outbox",
    "0006_scan_indexes",
    "0007_queue_control",
    "0008_queue_pauses",
    "0009_queue_metrics",
    "0010_buckets_and_locks",
    "0011_jobs_due_idx",
    "0013_job_batches",
    "0014_job_exceptions",
    "0015_outbox_trouble_idx",
    "0016_failed_attempts",
]
MODELS = QUEUE_MODELS + tmodels.MODELS + MAIL_MODELS + BUCKET_MODELS + SCHEDULER_MODELS


# -- fresh, empty databases ----------------------------------------------------------


@pytest.fixture
def empty_pg(pg_template):
    # pg_template is only asked for its skip/CI logic: this database is
    # created empty, not cloned from the (already migrated) template.
    name = f"tourno_mig_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = _admin()
    admin.connect()
    try:
        admin.execute_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    url = f"{PG_SERVER}/{name}"
    yield url
    drop_pg(url)


@pytest.fixture
def empty_sqlite(tmp_path):
    return f"sqlite:///{tmp_path / 'fresh.db'}"


@pytest.fixture(params=["postgres", "sqlite"])
def empty_url(request):
    return request.getfixturevalue("empty_pg" if request.param == "postgres" else "empty_sqlite")


@pytest.fixture
def empty_db(empty_url):
    db = tdb.connect(empty_url)
    db.connect()
    yield db
    db.close()


@pytest.fixture
def isolated_cli():
    """The CLI binds tourno's database proxy and installs a stderr log
    handler; undo both so later tests start clean."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    peewee_level = logging.getLogger("peewee").level
    yield
    if tdb.database.obj is not None and not tdb.database.is_closed():
        tdb.database.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("peewee").setLevel(peewee_level)


def cli(url: str, *args: str):
    env = {k: None for k in os.environ if k.startswith("TOURNO_")}
    env.update(TOURNO_DATABASE_URL=url, COLUMNS="200")
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


# -- the schema check ------------------------------------------------------------------


def _normal_where(sql: str | None) -> str | None:
    """The WHERE clause of an index definition, without quotes, parentheses,
    spaces or case, so PostgreSQL's and SQLite's spellings compare equal."""
    if not sql or not re.search(r"\sWHERE\s", sql, re.I):
        return None
    where = re.split(r"\sWHERE\s", sql, maxsplit=1, flags=re.I)[1].lower()
    # PostgreSQL spells the predicate back with casts, "<>" and "= ANY (ARRAY[...])".
    where = re.sub(r"::(character varying|timestamp with time zone|[a-z_]+)(\[\])?", "", where)
    where = re.sub(r'[\s"()]', "", where).replace("<>", "!=")
    return re.sub(r"=anyarray\[([^\]]*)\]", r"in\1", where)


def _inline(db: peewee.Database, node) -> str:
    """The SQL of ``node`` with its parameters written in, as CREATE INDEX stores it."""
    sql, params = db.get_sql_context().sql(node).query()
    for value in params:
        literal = (
            str(int(value)) if isinstance(value, (bool, int)) else "'" + str(value).replace("'", "''") + "'"
        )
        sql = sql.replace(db.param, literal, 1)
    return sql


def _never_reused(db: peewee.Database, table: str, col) -> bool:
    """A key that is never handed out twice: a sequence on PostgreSQL,
    AUTOINCREMENT on SQLite (a plain rowid reuses the largest deleted id)."""
    if tdb.is_postgres(db):
        return (col.default or "").startswith("nextval(")
    (sql,) = db.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return (
        re.search(rf'"?{col.name}"?\s+INTEGER\s+NOT NULL\s+PRIMARY KEY\s+AUTOINCREMENT', sql, re.I)
        is not None
    )


def rebuild_sqlite_table(db: peewee.Database, table: str, old: str, new: str) -> None:
    """SQLite cannot alter a column: recreate ``table`` from its own SQL with
    ``old`` replaced by ``new``, and its indexes."""
    (sql,) = db.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    assert old in sql, sql
    indexes = [
        r[0]
        for r in db.execute_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
            (table,),
        )
    ]
    db.execute_sql(f'DROP TABLE "{table}"')
    db.execute_sql(sql.replace(old, new))
    for index_sql in indexes:
        db.execute_sql(index_sql)


PG_TYPES = {
    "BIGAUTO": "bigint",
    "BIGINT": "bigint",
    "INT": "integer",
    "SMALLINT": "smallint",
    "BOOL": "boolean",
    "VARCHAR": "character varying",
    "TEXT": "text",
    "JSONB": "jsonb",
    "TIMESTAMPTZ": "timestamp with time zone",
    "DOUBLE": "double precision",
}


def schema_problems(db: peewee.Database) -> list[str]:
    """Everything in which the database differs from the models."""
    diff = diff_models(db, MODELS)
    problems = [line for line in str(diff).splitlines() if line]
    for model in MODELS:
        table = model._meta.table_name
        if table not in db.get_tables():
            continue  # already reported by diff_models
        columns = {c.name: c for c in db.get_columns(table)}
        for field in model._meta.sorted_fields:
            col = columns.get(field.column_name)
            if col is None:
                continue
            if not field.primary_key and col.null != field.null:
                problems.append(f"{table}.{col.name}: null={col.null}, model says {field.null}")
            if tdb.is_postgres(db) and col.data_type != PG_TYPES[field.field_type]:
                problems.append(f"{table}.{col.name}: type {col.data_type}, model says {field.field_type}")
            if isinstance(field, tdb.SerialField) and not _never_reused(db, table, col):
                problems.append(f"{table}.{col.name}: ids can be reused, model says SerialField")
        db_indexes = {i.name: i for i in db.get_indexes(table)}
        for index in model._meta.fields_to_index():
            found = db_indexes.get(index._name)
            if found is None:
                continue  # already reported by diff_models
            expected_cols = [e.column_name for e in index._expressions]
            if list(found.columns) != expected_cols or bool(found.unique) != bool(index._unique):
                problems.append(
                    f"index {index._name}: {found.columns} unique={found.unique}, "
                    f"model says {expected_cols} unique={index._unique}"
                )
            model_sql = _inline(db, index)
            if _normal_where(found.sql) != _normal_where(model_sql):
                problems.append(f"index {index._name}: {found.sql!r}, model says {model_sql!r}")
    return problems


def test_migrating_an_empty_database_gives_the_models_schema(empty_db):
    assert empty_db.get_tables() == []
    assert migrations.pending(empty_db) == ALL
    assert migrations.migrate(empty_db) == ALL
    assert migrations.pending(empty_db) == []
    assert not diff_models(empty_db, MODELS)
    assert schema_problems(empty_db) == []
    tables = set(empty_db.get_tables()) - {"sqlite_sequence"}  # SQLite's AUTOINCREMENT bookkeeping
    assert tables == {m._meta.table_name for m in MODELS} | {migrations.HISTORY_TABLE}


def test_the_test_databases_have_the_models_schema(qdb):
    # What every other test runs on: a clone of the migrated PostgreSQL
    # template, or a migrated SQLite file (plus test-only tables).
    assert schema_problems(qdb.database) == []


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("DROP INDEX jobs_ready_idx", "add index jobs.jobs_ready_idx"),
        ("DROP INDEX failed_jobs_failed_at", "add index failed_jobs (failed_at)"),
        ("DROP INDEX failed_jobs_uuid", "add index failed_jobs (uuid) unique"),
        ("ALTER TABLE jobs DROP COLUMN lease_expires_at", "add column jobs.lease_expires_at"),
        ("ALTER TABLE workers ADD COLUMN stray text", "drop column workers.stray"),
        ("DROP TABLE queue_signals", "create table queue_signals"),
        ("CREATE INDEX jobs_extra_idx ON jobs (created_at)", "drop index jobs.jobs_extra_idx (created_at)"),
    ],
)
def test_schema_diff_detects_a_damaged_schema(empty_db, damage, expected):
    migrations.migrate(empty_db)
    empty_db.execute_sql(damage)
    diff = diff_models(empty_db, MODELS)
    assert diff
    assert expected in str(diff).splitlines()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        # diff_models compares partial indexes by name only: a wrong predicate...
        (
            ["DROP INDEX jobs_ready_idx", "CREATE INDEX jobs_ready_idx ON jobs (queue, priority, id)"],
            "index jobs_ready_idx: ",
        ),
        # ...or wrong columns under the right name pass it.
        (
            [
                "DROP INDEX jobs_reserved_idx",
                "CREATE INDEX jobs_reserved_idx ON jobs (reserved_at) WHERE reserved_at IS NOT NULL",
            ],
            "index jobs_reserved_idx: ['reserved_at']",
        ),
        # The same for the domain's scan indexes, whose predicates PostgreSQL
        # spells back with casts and "= ANY (ARRAY[...])".
        (
            [
                "DROP INDEX matches_deadline_due_idx",
                "CREATE INDEX matches_deadline_due_idx ON matches (deadline_at) WHERE state IN ('open', 'underway')",
            ],
            "index matches_deadline_due_idx: ",
        ),
        (
            [
                "DROP INDEX tournaments_autostart_idx",
                "CREATE INDEX tournaments_autostart_idx ON tournaments (starts_at) WHERE state = 'pending'",
            ],
            "index tournaments_autostart_idx: ",
        ),
    ],
)
def test_schema_check_detects_what_schema_diff_misses(empty_db, damage, expected):
    migrations.migrate(empty_db)
    for sql in damage:
        empty_db.execute_sql(sql)
    assert not diff_models(empty_db, MODELS)  # the gap this check fills
    problems = schema_problems(empty_db)
    assert any(p.startswith(expected) for p in problems), problems


def test_schema_check_detects_wrong_nullability(empty_db):
    migrations.migrate(empty_db)
    if tdb.is_postgres(empty_db):
        empty_db.execute_sql("ALTER TABLE jobs ALTER COLUMN unique_key SET NOT NULL")
    else:
        rebuild_sqlite_table(empty_db, "jobs", '"unique_key" TEXT', '"unique_key" TEXT NOT NULL')
    assert not diff_models(empty_db, MODELS)
    assert "jobs.unique_key: null=False, model says True" in schema_problems(empty_db)


def test_schema_check_detects_reusable_ids(empty_db):
    migrations.migrate(empty_db)
    if tdb.is_postgres(empty_db):
        empty_db.execute_sql("ALTER TABLE workers ALTER COLUMN id DROP DEFAULT")
    else:
        rebuild_sqlite_table(empty_db, "workers", "PRIMARY KEY AUTOINCREMENT", "PRIMARY KEY")
    assert not diff_models(empty_db, MODELS)
    assert schema_problems(empty_db) == ["workers.id: ids can be reused, model says SerialField"]


def test_sqlite_never_reuses_a_deleted_id(empty_sqlite):
    db = tdb.connect(empty_sqlite)
    db.connect()
    try:
        migrations.migrate(db)
        insert = (
            "INSERT INTO failed_jobs (uuid, connection, queue, payload, exception, failed_at) "
            "VALUES (?, 'database', 'default', '{}', 'x', '2026-01-01 00:00:00.000000') RETURNING id"
        )
        first = db.execute_sql(insert, ("u1",)).fetchone()[0]
        db.execute_sql("DELETE FROM failed_jobs WHERE id = ?", (first,))
        second = db.execute_sql(insert, ("u2",)).fetchone()[0]
        assert second > first
    finally:
        db.close()


def test_postgres_schema_has_the_attempts_check(empty_pg):
    db = tdb.connect(empty_pg)
    db.connect()
    try:
        migrations.migrate(db)
        (definition,) = db.execute_sql(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'jobs_attempts_check'"
        ).fetchone()
        assert definition == "CHECK ((attempts >= 0))"
        (options,) = db.execute_sql("SELECT reloptions FROM pg_class WHERE relname = 'jobs'").fetchone()
        assert "autovacuum_vacuum_scale_factor=0.01" in options
    finally:
        db.close()


# -- migrate and status -----------------------------------------------------------------


def test_migrate_is_idempotent(empty_db):
    assert migrations.migrate(empty_db) == ALL
    assert migrations.migrate(empty_db) == []
    assert empty_db.execute_sql(f"SELECT count(*) FROM {migrations.HISTORY_TABLE}").fetchone()[0] == len(ALL)
    assert schema_problems(empty_db) == []


def test_db_status_and_migrate_commands(empty_url, isolated_cli):
    sqlite_path = sqlite_file(empty_url)
    if sqlite_path is not None:
        # db status only reads: it refuses a missing file instead of creating one.
        missing = cli(empty_url, "db", "status")
        assert missing.exit_code == 1, missing.output
        assert "tourno db migrate" in missing.stderr
        assert not sqlite_path.exists()
        sqlite_path.touch()
    before = cli(empty_url, "db", "status")
    assert before.exit_code == 1, before.output
    for name in ALL:
        assert re.search(rf"{name}\W+pending", before.stdout), before.stdout
    assert f"{len(ALL)} migration(s) pending: run `tourno db migrate`." in before.stdout

    first = cli(empty_url, "db", "migrate")
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [f"applied {name}" for name in ALL]

    after = cli(empty_url, "db", "status")
    assert after.exit_code == 0, after.output
    for name in ALL:
        assert re.search(rf"{name}\W+\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d", after.stdout), after.stdout
    assert "pending" not in after.stdout

    again = cli(empty_url, "db", "migrate")
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == "Nothing to migrate: the schema is up to date."

    db = tdb.connect(empty_url)
    db.connect()
    try:
        rows = db.execute_sql(f"SELECT name FROM {migrations.HISTORY_TABLE}").fetchall()
        assert sorted(rows) == [(name,) for name in ALL]
        assert schema_problems(db) == []
    finally:
        db.close()

"""Tourno behind a real PgBouncer (Debian's package), in transaction and in
session pooling mode, with PgBouncer's default settings.

Each test starts its own ``pgbouncer`` process on a free loopback port with a
generated ini and userlist (never the system service), in front of the test
database's server. The workers are real ``tourno work`` processes whose
``TOURNO_DATABASE_URL`` is the pooled URL and whose ``TOURNO_LISTEN_URL`` is
the direct one. Without the pgbouncer binary the tests are skipped, except
under ``CI=true`` (.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import tourno
from tests.queue.test_worker_processes import (
    IMPORTS,
    count,
    procs,  # noqa: F401 - a fixture
    run_pids,
    stop,
    wait_for,
    wait_registered,
)
from tests.support.jobs import RecordRun
from tourno import db as tdb
from tourno.config import ConfigError, Settings
from tourno.queue import backends, dispatch_many

pytestmark = pytest.mark.slow

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bouncer:
    """One pgbouncer process in front of the test server, restartable on
    the same port."""

    def __init__(self, directory: Path, mode: str, server_host: str, server_port: int) -> None:
        self.directory = directory
        self.mode = mode
        self.port = _free_port()
        self.log = directory / "pgbouncer.log"
        self.proc: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)
        ini = directory / "pgbouncer.ini"
        users = directory / "userlist.txt"
        users.write_text('"postgres" ""\n')
        # Defaults everywhere but what a test instance needs: its address,
        # trust (as the test server), the pool mode, and no Unix socket.
        ini.write_text(
            "[databases]\n"
            f"* = host={server_host} port={server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            f"pool_mode = {mode}\n"
        )
        # PgBouncer refuses to run as root: it drops to nobody, who must
        # read the files.
        for path in (directory, ini, users):
            path.chmod(0o755 if path.is_dir() else 0o644)
        parent = directory.parent
        while os.geteuid() == 0 and parent != parent.parent:
            parent.chmod(parent.stat().st_mode | 0o005)
            if parent == Path("/tmp") or parent.name.startswith("pytest-of"):
                break
            parent = parent.parent
        self.ini = ini

    def start(self) -> None:
        assert PGBOUNCER is not None
        args = [PGBOUNCER, *(["-u", "nobody"] if os.geteuid() == 0 else []), str(self.ini)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start:\n{self.log.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGTERM: immediate shutdown, every client connection dropped.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def url(self, direct_url: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{direct_url.rsplit('/', 1)[1]}"


@pytest.fixture(params=["transaction", "session"])
def bouncer(request, tmp_path, pg):
    if PGBOUNCER is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pgbouncer is required in CI (apt-get install pgbouncer; .ci/run does it)")
        pytest.skip("pgbouncer is not installed (apt-get install -y pgbouncer)")
    server = pg.url.split("://", 1)[1].split("@", 1)[-1].split("/", 1)[0]
    host, _, port = server.partition(":")
    b = Bouncer(tmp_path / "pgbouncer", request.param, host, int(port or 5432))
    b.start()
    yield b
    b.stop()


class Direct:
    """The test database over a direct connection of the test's own (the
    ``pg`` helpers' shape), which a pgbouncer restart does not touch."""

    def __init__(self, pg) -> None:
        self.pg = pg
        self.url = pg.url
        self.database = tdb.connect(pg.url)
        self.database.connect()

    def rows(self, statement: str, params: tuple = ()) -> list[tuple]:
        return self.database.execute_sql(statement, params).fetchall()

    def scalar(self, statement: str, params: tuple = ()) -> object:
        row = self.database.execute_sql(statement, params).fetchone()
        return None if row is None else row[0]

    def env(self, **extra: str) -> dict[str, str]:
        return self.pg.env(**extra)


@pytest.fixture
def direct(pg):
    d = Direct(pg)
    yield d
    d.database.close()


@pytest.fixture
def pooled(pg, bouncer):
    """This process bound to the pooled URL (LISTEN on the direct one)."""
    url = bouncer.url(pg.url)
    tdb.database.close()
    tourno.setup(Settings(database_url=url, listen_url=pg.url), import_jobs=False)
    tourno.import_modules(["tests.support.jobs"])
    tdb.open_connection()
    yield url
    tdb.database.close()


def _env(pg, url: str, **extra: str) -> dict[str, str]:
    return pg.env(TOURNO_IMPORTS=IMPORTS, TOURNO_DATABASE_URL=url, TOURNO_LISTEN_URL=pg.url, **extra)


def test_listen_and_liveness_settings_are_checked():
    ok = Settings.from_mapping(
        {
            "TOURNO_DATABASE_URL": "postgresql://u@127.0.0.1:6432/db",
            "TOURNO_LISTEN_URL": "postgresql://u@db:5432/db",
            "TOURNO_DB_DEAD_AFTER": "4",
        }
    )
    assert (ok.listen_url, ok.db_dead_after) == ("postgresql://u@db:5432/db", 4.0)
    for env, words in [
        ({"TOURNO_LISTEN_URL": "postgresql://u@db/db"}, "only for a PostgreSQL"),
        ({"TOURNO_DATABASE_URL": "postgresql://u@h/db", "TOURNO_LISTEN_URL": "redis://h"}, "expected a URL"),
        ({"TOURNO_DB_DEAD_AFTER": "1"}, "at least 2 seconds"),
        ({"TOURNO_DB_DEAD_AFTER": "soon"}, "expected a number"),
    ]:
        with pytest.raises(ConfigError, match=words) as caught:
            Settings.from_mapping(env)
        assert "\n" not in str(caught.value)


def test_connections_carry_the_liveness_parameters(pg):
    conn = tdb.database.connection()
    params = conn.get_dsn_parameters()
    assert params.get("keepalives") == "1" and params.get("tcp_user_timeout") == "10000", params
    # The URL's own choice wins.
    own = tdb.connect(pg.url + "?keepalives_idle=7")
    own.connect()
    try:
        assert own.connection().get_dsn_parameters()["keepalives_idle"] == "7"
    finally:
        own.close()


def test_single_and_batch_dispatch_from_concurrent_clients(direct, bouncer, pooled):
    # Two threads, two client connections: in transaction mode they share
    # server connections, so a statement prepared by one client's transaction
    # is met by the other's (or missing from its own next one).
    errors: list[BaseException] = []

    def dispatch(prefix: str) -> None:
        try:
            tdb.open_connection()
            for i in range(40):
                RecordRun(key=f"{prefix}{i}").dispatch()
                with tdb.database.atomic():
                    RecordRun(key=f"{prefix}t{i}").dispatch()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            tdb.database.close()

    threads = [threading.Thread(target=dispatch, args=(p,)) for p in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    dispatch_many(RecordRun(key=f"m{i}") for i in range(10))  # one INSERT ... unnest
    dispatch_many(RecordRun(key=f"c{i}") for i in range(600))  # COPY
    assert direct.scalar("SELECT count(*) FROM jobs") == 160 + 10 + 600
    assert direct.scalar("SELECT count(DISTINCT payload ->> 'uuid') FROM jobs") == 770


def test_workers_drain_and_reconnect_across_a_pgbouncer_restart(direct, bouncer, pooled, procs):  # noqa: F811
    pg = direct
    # A stale window far longer than the outage, even on a loaded machine: a
    # worker must ride the restart out, not fence itself or be rescued (each
    # of which may run a job once more, rightly, and is tested on its own).
    env = _env(pg, pooled, TOURNO_HEARTBEAT_INTERVAL="1", TOURNO_WORKER_STALE_AFTER="20")
    workers = [procs.start(env, "work", "--sleep", "1", "--tries", "5") for _ in range(2)]
    wait_registered(pg, procs, *workers)
    total = 300
    dispatch_many(RecordRun(key=f"k{i}", sleep=0.02) for i in range(total))
    wait_for(lambda: count(pg, "test_runs") >= 40, "the drain to get going", procs, alive=tuple(workers))
    bouncer.stop()
    time.sleep(1.0)
    bouncer.start()
    wait_for(
        lambda: pg.scalar("SELECT count(DISTINCT key) FROM test_runs") == total and count(pg, "jobs") == 0,
        "every job to run after the restart",
        procs,
        timeout=90,
        alive=tuple(workers),
    )
    assert count(pg, "failed_jobs") == 0
    # At least once: a completion lost with the connection runs its job
    # again, but nothing runs more than twice.
    assert pg.scalar("SELECT max(n) FROM (SELECT count(*) AS n FROM test_runs GROUP BY key) r") <= 2
    for w in workers:
        text = procs.output(w)
        assert "lost the database or queue connection" in text or "monitor:" in text, text[-3000:]
        assert stop(procs, w) == 0


def test_idle_worker_is_woken_through_the_listen_url(direct, bouncer, pooled, procs):  # noqa: F811
    pg = direct
    w = procs.start(_env(pg, pooled), "work", "--sleep", "30")
    wait_registered(pg, procs, w)
    for i in range(3):
        wait_for(lambda: count(pg, "jobs") == 0, "the worker to be idle", procs, alive=(w,))
        time.sleep(0.3)  # idle in its wait, not between two claims
        created = pg.scalar("SELECT clock_timestamp()")
        RecordRun(key=f"ping{i}").dispatch()
        wait_for(lambda i=i: run_pids(pg, f"ping{i}"), f"ping{i} to run", procs, timeout=10, alive=(w,))
        began = pg.scalar("SELECT min(at) FROM test_runs WHERE key = %s", (f"ping{i}",))
        # Woken by the NOTIFY, not by its 30 s poll (both times are the server's).
        assert (began - created).total_seconds() < 1.0, procs.logs()
    assert stop(procs, w) == 0


def test_vacuum_takes_turns_without_session_locks(direct, bouncer, pooled):
    pg = direct
    backend = backends.current()
    assert backend.vacuum() is True
    assert backend.vacuum() is True  # the turn was given back
    # Another worker's turn, still running: ours is skipped.
    pg.database.execute_sql(
        "INSERT INTO queue_signals (name, value) VALUES ('vacuum', now() + interval '1 minute') "
        "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
    )
    assert backend.vacuum() is False
    # A turn whose holder died expires.
    pg.database.execute_sql(
        "UPDATE queue_signals SET value = now() - interval '1 second' WHERE name = 'vacuum'"
    )
    assert backend.vacuum() is True
    # Nothing is left locked on any server connection, pooled or not.
    assert pg.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    assert pg.scalar("SELECT count(*) FROM queue_signals WHERE name = 'restart'") == 0

"""The queue drivers the contract suite runs against, behind one small helper.

``Driver`` wraps a test database (``QueueDB``) and the backend the process
queues on: the database backend (PostgreSQL or SQLite), or the Redis backend
with its domain data and ``failed_jobs`` on PostgreSQL. Everything a contract
test asks of the queue goes through the public API (``backend.stats()``,
``backend.workers()``, the ``tourno`` CLI, real ``tourno work`` processes);
what the jobs did is read from the test-only tables ``test_runs`` and
``test_marks`` and from ``failed_jobs``, which every driver keeps in the
database.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from tests.conftest import QueueDB, tourno_cmd
from tourno.queue.backends.base import QueueBackend

REDIS_URL = os.environ.get("TOURNO_TEST_REDIS", "redis://127.0.0.1:6379/15")
#: The job modules every worker process imports.
IMPORTS = "tests.support.jobs,tests.support.jobs_proc,tests.support.jobs_mw,tests.support.jobs_flow"


def with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def redis_problem(url: str = REDIS_URL) -> str | None:
    """Why Redis cannot be used (None when it answers)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return str(exc)
    finally:
        client.close()


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


class Driver:
    """One queue driver under test, as the contract suite sees it."""

    def __init__(self, kind: str, qdb: QueueDB, backend: QueueBackend, redis_url: str | None = None) -> None:
        self.kind = kind
        self.qdb = qdb
        self.backend = backend
        #: The Redis URL with its key prefix, for subprocesses (Redis only).
        self.redis_url = redis_url

    def __repr__(self) -> str:
        return f"Driver({self.kind})"

    # -- processes -----------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of a ``tourno`` subprocess queueing on this driver."""
        if self.redis_url is not None:
            extra = {"TOURNO_QUEUE_CONNECTION": "redis", "TOURNO_REDIS_URL": self.redis_url, **extra}
        return self.qdb.env(TOURNO_IMPORTS=IMPORTS, **extra)

    def worker(self, procs: Any, *options: str) -> subprocess.Popen:
        """A ``tourno work`` process on this driver."""
        return procs.start(self.env(), "work", *options)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            tourno_cmd(*args),
            env=self.env(COLUMNS="200"),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    def live_workers(self) -> dict[int, Any]:
        """pid -> WorkerInfo of the workers with a fresh heartbeat."""
        return {w.pid: w for w in self.backend.workers(30.0)}

    def heartbeaten(self, pid: int) -> bool:
        """Registered, and its monitor (which listens before its first beat)
        has written a heartbeat: a dispatch now reaches it."""
        info = self.live_workers().get(pid)
        return info is not None and info.heartbeat_at > info.started_at

    # -- the queue -------------------------------------------------------------------

    def counts(self) -> dict[str, tuple[int, int, int]]:
        """queue -> (ready, delayed, reserved)."""
        return {s.queue: (s.ready, s.delayed, s.reserved) for s in self.backend.stats()}

    def size(self) -> int:
        return sum(sum(c) for c in self.counts().values())

    # -- what the jobs did ----------------------------------------------------------------

    def run_pids(self, key: str) -> list[int]:
        """The pids that ran ``key``, in the order of the runs."""
        return [r[0] for r in self.qdb.rows("SELECT pid FROM test_runs WHERE key = %s ORDER BY id", (key,))]

    def marked(self, key: str) -> str | None:
        return self.qdb.scalar("SELECT value FROM test_marks WHERE key = %s", (key,))

    def failed(self) -> list[tuple[str, str, str]]:
        """(connection, queue, exception) of every failed job, oldest first."""
        return [
            tuple(r)
            for r in self.qdb.rows("SELECT connection, queue, exception FROM failed_jobs ORDER BY id")
        ]


class PrivateRedis:
    """A redis-server of the test's own on a spare port, with its append-only
    file on, that a test can stop and start again (its data survives)."""

    def __init__(self, directory: Path) -> None:
        self.binary = shutil.which("redis-server")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        assert self.binary is not None
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.kill()
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): the append-only file is complete."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

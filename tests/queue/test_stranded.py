"""Stranded claims: a claim that commits on the server while its reply is
lost with the connection.

A small TCP proxy on loopback sits between a real ``tourno work --timeout
3600`` process and the server (PostgreSQL, or Redis). It forwards every byte
until it sees the worker send a claim (the claim statement's opening, or the
claim script's SHA) whose reply carries jobs; it drops that reply and closes
both sides. The server has committed the claim, the worker never saw it, and
the worker's heartbeat keeps the rescue away for the lease: 62 minutes. The
worker must hand those jobs back after it reconnects, with the attempt the
claim charged (the worker runs with ``--tries 1``: a job charged twice would
be failed as attempted too often instead of running).

The bound asserted (every job ran within 10 s of the dropped reply) is the
issue's own; without the fix the stranded job waits for its lease, an hour.
"""

from __future__ import annotations

import hashlib
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from tests.queue import test_queue_contract as contract
from tests.queue.test_queue_contract import redis_driver
from tests.queue.test_worker_processes import Procs, wait_for
from tests.support.drivers import Driver
from tests.support.jobs import RecordRun
from tourno.queue import backends, dispatch_many
from tourno.queue.backends.redis.backend import script_source

pytestmark = pytest.mark.slow

#: How the worker's claim looks on the wire. PostgreSQL: the claim statement
#: of backends/database.py starts with this CTE, and nothing else sends it.
PG_CLAIM = b"WITH done AS ("
#: A reply meaning "claimed nothing": PostgreSQL's CommandComplete tag, and
#: Redis's empty array. Such replies pass; the proxy waits for one with jobs.
EMPTY_REPLIES = (b"UPDATE 0\x00", b"*0\r\n")


def redis_claim_marker() -> bytes:
    """The SHA1 that EVALSHA names the claim script by (redis-py hashes the
    text the backend registers: the library, then the script)."""
    return hashlib.sha1((script_source("lib") + script_source("claim")).encode()).hexdigest().encode()


class DropOneClaimReply:
    """A loopback TCP proxy to ``upstream`` that drops the reply to the first
    claim carrying jobs, then closes that connection on both sides. Every
    other connection and byte is forwarded. One thread accepts; one thread
    per connection pumps both directions with ``select``; all of them stop
    at :meth:`close`."""

    def __init__(self, upstream: tuple[str, int], marker: bytes) -> None:
        self.upstream = upstream
        self.marker = marker
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.dropped = threading.Event()
        self.dropped_at = 0.0
        self.dropped_reply = b""
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.upstream, timeout=5)
            self._spawn(self._pump, client, server)

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        claim_sent = False
        tail = b""  # the end of the last chunk, for a marker split across two
        try:
            while not self._stopping.is_set():
                ready, _, _ = select.select([client, server], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if not self.dropped.is_set() and self.marker in tail + data:
                            claim_sent = True
                        tail = data[-len(self.marker) :]
                        server.sendall(data)
                        continue
                    if claim_sent:
                        claim_sent = False
                        if not any(data.startswith(e) or e in data for e in EMPTY_REPLIES) and not (
                            data.startswith(b"-")  # a Redis error (NOSCRIPT): nothing ran
                        ):
                            with self._lock:
                                if not self.dropped.is_set():
                                    self.dropped_reply = data
                                    self.dropped_at = time.monotonic()
                                    self.dropped.set()
                                    return  # the finally closes both sides
                    client.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, server):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._stopping.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(5)
        assert not any(t.is_alive() for t in self._threads), "proxy threads did not stop"


def _with_port(url: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def _upstream(url: str, default_port: int) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


@pytest.fixture(params=["postgres", "redis"])
def stranded_driver(request) -> Iterator[tuple[Driver, DropOneClaimReply, dict[str, str]]]:
    """The driver, a proxy between its server and the worker, and the
    worker's environment pointing at the proxy."""
    qdb = request.getfixturevalue("pg")
    if request.param == "postgres":
        driver = Driver("postgres", qdb, backends.current())
        proxy = DropOneClaimReply(_upstream(qdb.url, 5432), PG_CLAIM)
        try:
            yield driver, proxy, driver.env(TOURNO_DATABASE_URL=_with_port(qdb.url, proxy.port))
        finally:
            proxy.close()
        return
    with redis_driver(qdb) as driver:
        assert driver.redis_url is not None
        proxy = DropOneClaimReply(_upstream(driver.redis_url, 6379), redis_claim_marker())
        try:
            yield driver, proxy, driver.env(TOURNO_REDIS_URL=_with_port(driver.redis_url, proxy.port))
        finally:
            proxy.close()


@pytest.fixture
def procs(tmp_path):
    manager = Procs(tmp_path)
    try:
        yield manager
    finally:
        manager.kill_all()


def test_a_claim_whose_reply_is_lost_is_handed_back_after_the_reconnect(stranded_driver, procs):
    driver, proxy, env = stranded_driver
    worker = procs.start(env, "work", "--sleep", "30", "--timeout", "3600", "--tries", "1")
    wait_for(lambda: driver.heartbeaten(worker.pid), "the worker to register", procs, alive=(worker,))

    keys = [f"stranded-{i}" for i in range(3)]
    dispatch_many([RecordRun(key=k) for k in keys])
    wait_for(proxy.dropped.is_set, "the proxy to drop a claim's reply", procs, timeout=20, alive=(worker,))

    # Every job runs (once), well before the stranded claim's lease would end.
    def all_ran() -> bool:
        return all(driver.run_pids(k) for k in keys)

    wait_for(all_ran, "every job to run after the reconnect", procs, timeout=10, alive=(worker,))
    assert time.monotonic() - proxy.dropped_at < 10
    assert [len(driver.run_pids(k)) for k in keys] == [1, 1, 1]
    # Given back with its attempt: with --tries 1 a doubly charged job fails instead.
    assert driver.failed() == []
    wait_for(lambda: driver.size() == 0, "the queue to empty", procs, alive=(worker,))
    log = procs.output(worker)
    assert "reserved under this worker that it never received" in log, log


# -- the backend operation, on every driver -------------------------------------------


#: The contract suite's driver fixture: PostgreSQL, SQLite and Redis.
any_driver = contract.driver


def test_release_unheld_hands_back_only_what_the_worker_does_not_hold(any_driver):
    driver = any_driver
    b = driver.backend
    ids = dispatch_many([RecordRun(key=f"u{i}") for i in range(4)])
    wid, _ = b.register_worker("w", "host", 1, ["default"])
    # The worker holds the first claim's job; the second claim's reply "was lost".
    held = b.claim(wid, "default", 1, [], 3600)
    lost = b.claim(wid, "default", 2, [], 3600)
    assert [j.id for j in held] == ids[:1] and [j.id for j in lost] == ids[1:3]
    assert [j.attempts for j in lost] == [1, 0]

    assert b.release_unheld(wid, [held[0].id]) == 2
    assert b.release_unheld(wid, [held[0].id]) == 0  # nothing left to find
    assert driver.counts()["default"] == (3, 0, 1)
    # The lost claim's charge is given back: claimed again, the head's first attempt.
    other, _ = b.register_worker("other", "host", 2, ["default"])
    again = b.claim(other, "default", 3, [], 3600)
    assert [(j.id, j.attempts) for j in again] == [(ids[1], 1), (ids[2], 0), (ids[3], 0)]
    # The held job was left alone and still belongs to its worker.
    assert b.complete(wid, [held[0].id]) == 1

"""Two worker hosts, built from network namespaces, and a cable cut.

Each host is a network namespace the test creates (and removes) with a veth
pair to this one; the test database's PostgreSQL is reached through a small
TCP relay listening on the host side of each pair (the server itself listens
on loopback only). One real ``tourno work`` runs in each namespace. Mid-drain
the test takes host A's link down for longer than the stale window: A's jobs
must be rescued by B while A is cut off, nothing may be lost, no job may run
on both hosts at once, and once the link is back A must neither finish a job
B took over nor crash. Only addresses inside the namespaces the test makes
(10.231.x.y/30) are used.

Needs root and ``ip netns``; skipped with the reason otherwise, except under
``CI=true`` as root, where it must run.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.queue.test_worker_processes import IMPORTS, Procs, count, stop, wait_for
from tests.support.jobs_fence import NetJob
from tourno.db import parse_timestamp
from tourno.queue import dispatch_many

pytestmark = pytest.mark.slow

IP = shutil.which("ip") or "/usr/sbin/ip"
#: Liveness for this test: a beat a second, presumed dead after 6 s, and a
#: connection that goes silent counts as lost after 2 s.
HEARTBEAT, STALE, DEAD_AFTER = 1.0, 6.0, 2.0
CUT_FOR = 12.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([IP, *args], capture_output=True, text=True, timeout=20, check=check)


def _netns_problem() -> str | None:
    """Why this machine cannot build the hosts, or None."""
    if not Path(IP).exists():
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"tnprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add is not permitted here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class Relay(threading.Thread):
    """Accepts on ``binds`` and relays each connection to ``target``."""

    def __init__(self, binds: list[str], target: tuple[str, int]) -> None:
        super().__init__(name="netns-relay", daemon=True)
        self.target = target
        self.listeners = []
        self.ports: dict[str, int] = {}
        for addr in binds:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, 0))
            s.listen(64)
            self.listeners.append(s)
            self.ports[addr] = s.getsockname()[1]
        self.stopping = threading.Event()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                pairs = list(self.pairs)
            peers = {}
            for a, b in pairs:
                peers[a], peers[b] = b, a
            try:
                readable, _, _ = select.select(self.listeners + list(peers), [], [], 0.05)
            except (OSError, ValueError):
                self._prune()
                continue
            for s in readable:
                if s in self.listeners:
                    self._accept(s)
                    continue
                try:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    peers[s].sendall(data)
                except OSError:
                    self._close_pair(s)

    def _accept(self, listener: socket.socket) -> None:
        client, _ = listener.accept()
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self.lock:
            self.pairs.append((client, server))

    def _close_pair(self, s: socket.socket) -> None:
        with self.lock:
            for pair in list(self.pairs):
                if s in pair:
                    self.pairs.remove(pair)
                    for x in pair:
                        with contextlib.suppress(OSError):
                            x.close()

    def _prune(self) -> None:
        with self.lock:
            self.pairs = [p for p in self.pairs if all(x.fileno() >= 0 for x in p)]

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)
        for s in self.listeners:
            s.close()
        with self.lock:
            for pair in self.pairs:
                for x in pair:
                    with contextlib.suppress(OSError):
                        x.close()


class Host:
    """A network namespace with a veth pair to this namespace."""

    def __init__(self, tag: str, gateway: str, address: str) -> None:
        n = os.getpid() % 100000
        self.ns = f"tn{n}{tag}"
        self.outside = f"tv{n}{tag}h"
        self.inside = f"tv{n}{tag}n"
        self.gateway = gateway
        self.address = address

    def create(self) -> None:
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        _ip("link", "set", self.inside, "netns", self.ns)
        _ip("addr", "add", f"{self.gateway}/30", "dev", self.outside)
        _ip("link", "set", self.outside, "up")
        _ip("-n", self.ns, "addr", "add", f"{self.address}/30", "dev", self.inside)
        _ip("-n", self.ns, "link", "set", self.inside, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")

    def cut(self) -> None:
        _ip("link", "set", self.outside, "down")

    def mend(self) -> None:
        _ip("link", "set", self.outside, "up")

    def remove(self) -> None:
        _ip("netns", "del", self.ns, check=False)
        _ip("link", "del", self.outside, check=False)


class NetProcs(Procs):
    def start_in(self, host: Host, env: dict[str, str], *args: str) -> subprocess.Popen:
        log = self.directory / f"proc-{len(self.started)}-{host.ns}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [IP, "netns", "exec", host.ns, sys.executable, "-m", "tourno", *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append((proc, log))
        return proc


@pytest.fixture
def hosts(pg, tmp_path) -> Iterator[tuple[NetProcs, Relay, Host, Host]]:
    problem = _netns_problem()
    if problem:
        if os.environ.get("CI") == "true" and os.geteuid() == 0:
            pytest.fail(f"under CI=true as root the network-namespace test must run: {problem}")
        pytest.skip(problem)
    base = f"10.231.{os.getpid() % 250}"
    a = Host("a", f"{base}.1", f"{base}.2")
    b = Host("b", f"{base}.5", f"{base}.6")
    procs = NetProcs(tmp_path)
    relay: Relay | None = None
    try:
        for h in (a, b):
            h.remove()  # a leftover of a killed run
            h.create()
        server = pg.url.split("@", 1)[1].split("/", 1)[0]
        host, _, port = server.partition(":")
        relay = Relay([a.gateway, b.gateway], (host, int(port or 5432)))
        relay.start()
        yield procs, relay, a, b
    finally:
        procs.kill_all()
        if relay is not None:
            relay.stop()
        for h in (a, b):
            h.remove()


def _env(pg, relay: Relay, host: Host) -> dict[str, str]:
    name = pg.url.rsplit("/", 1)[1]
    url = f"postgresql://postgres@{host.gateway}:{relay.ports[host.gateway]}/{name}"
    return pg.env(
        TOURNO_IMPORTS=IMPORTS + ",tests.support.jobs_fence",
        TOURNO_DATABASE_URL=url,
        TOURNO_HEARTBEAT_INTERVAL=str(HEARTBEAT),
        TOURNO_WORKER_STALE_AFTER=str(STALE),
        TOURNO_DB_DEAD_AFTER=str(DEAD_AFTER),
    )


def _runs(pg) -> dict[str, list[tuple[int, object]]]:
    """key -> [(pid, started at)] by start."""
    out: dict[str, list[tuple[int, object]]] = {}
    for key, pid, at in pg.rows("SELECT key, pid, at FROM test_runs ORDER BY at, id"):
        out.setdefault(key, []).append((pid, parse_timestamp(at)))
    return out


def _finishes(pg) -> dict[str, list[tuple[int, object]]]:
    """key -> [(pid, finished at)]: NetJob inserts one mark per finished run."""
    out: dict[str, list[tuple[int, object]]] = {}
    for mark, value in pg.rows("SELECT key, value FROM test_marks WHERE key LIKE %s", ("net:%",)):
        _, key, pid, _ = mark.split(":", 3)
        out.setdefault(key, []).append((int(pid), parse_timestamp(value)))
    return out


def _reserved_by(pg, pid: int) -> list[int]:
    return [
        r[0]
        for r in pg.rows(
            "SELECT j.id FROM jobs j JOIN workers w ON w.id = j.reserved_by WHERE w.pid = %s", (pid,)
        )
    ]


def test_cut_host_is_rescued_and_rejoins_without_double_finishing(pg, hosts):
    procs, relay, a, b = hosts
    wa = procs.start_in(a, _env(pg, relay, a), "work", "--sleep", "1", "--tries", "3")
    wb = procs.start_in(b, _env(pg, relay, b), "work", "--sleep", "1", "--tries", "3")
    both = (wa, wb)
    wait_for(lambda: count(pg, "workers") == 2, "both hosts' workers to register", procs, alive=both)
    total = 40
    dispatch_many(NetJob(key=f"n{i}", seconds=0.25) for i in range(total))
    wait_for(
        lambda: count(pg, "test_marks") >= 6 and _reserved_by(pg, wa.pid),
        "the drain to get going, with a job on A",
        procs,
        alive=both,
    )
    a.cut()
    cut_at = time.monotonic()
    try:
        held = _reserved_by(pg, wa.pid)
        # B takes A's jobs over while A is still cut off.
        wait_for(
            lambda: not set(held) & set(_reserved_by(pg, wa.pid)),
            f"A's jobs {held} to be rescued",
            procs,
            timeout=CUT_FOR - 0.5,
            alive=both,
        )
        time.sleep(max(CUT_FOR - (time.monotonic() - cut_at), 0))
        assert wa.poll() is None, procs.logs()
    finally:
        a.mend()
    wait_for(
        lambda: count(pg, "jobs") == 0 and len(_finishes(pg)) == total,
        "every job to finish",
        procs,
        timeout=40,
        alive=both,
    )
    # A is back: reconnected, heartbeating, not fenced.
    wait_for(
        lambda: "claiming jobs again" in procs.output(wa),
        "A to lift its fence",
        procs,
        timeout=20,
        alive=(wa,),
    )
    assert count(pg, "failed_jobs") == 0
    runs, finishes = _runs(pg), _finishes(pg)
    for key, done in finishes.items():
        # A job may run again after a finish whose completion was lost (at
        # least once), but never while another run of it is still going:
        # no finish comes after a later run's start.
        starts = sorted(at for _, at in runs[key])
        ends = sorted(at for _, at in done)
        for n, end in enumerate(ends[:-1]):
            assert end <= starts[n + 1], (key, runs[key], done)
        assert len(done) <= len(starts)
    out_a = procs.output(wa)
    assert "Traceback" not in out_a, out_a[-4000:]
    # The cut was noticed (keepalives), not waited out.
    assert "heartbeat not written" in out_a, out_a[-4000:]
    assert "lost the database or queue connection" in out_a or "monitor:" in out_a, out_a[-4000:]
    assert stop(procs, wa, 30) == 0
    assert stop(procs, wb, 30) == 0

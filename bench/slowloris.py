"""Slow clients against a real ``tourno serve`` (issue 14, item 9).

Starts ``tourno serve`` on a free loopback port (SQLite in a temporary
directory: ``/healthz`` needs no database) and opens

- ``--clients`` slow-header connections: each sends a request line, then one
  header byte per second, never the blank line that ends the headers;
- ``--stalled-bodies`` connections that send complete headers announcing a
  100-byte body and never send it;

then probes ``GET /healthz`` from a fresh connection every 0.2 s for
``--seconds`` and prints the probe latencies (p50, max), how many probes
failed, and what each stalled-body client got back and after how long.

Loopback only, bounded: every connection is closed at the end, the server is
stopped with SIGTERM. ``--code DIR`` runs the Tourno of another checkout (put
first on PYTHONPATH), e.g. main, to compare:

    python bench/slowloris.py --clients 100 --seconds 20
    python bench/slowloris.py --clients 100 --seconds 20 --code /work/main
    python bench/slowloris.py -- --workers 2 --threads 8   # args for tourno serve
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, HERE)

from _net import free_port, wait_for_port  # noqa: E402

MAX_CLIENTS = 1000
MAX_SECONDS = 110


def probe(port: int, timeout: float) -> float | None:
    """Seconds for one GET /healthz on a new connection; None if it failed."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                return None
    except OSError:
        return None
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="slow-header connections (at most 1000)")
    parser.add_argument("--stalled-bodies", type=int, default=2, help="connections whose body never comes")
    parser.add_argument("--seconds", type=float, default=20, help="how long to hold them (at most 110)")
    parser.add_argument("--code", help="a Tourno checkout to run instead of this one")
    parser.add_argument("serve_args", nargs="*", help="extra arguments for tourno serve (after --)")
    args = parser.parse_args()
    if not 0 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--clients 0..{MAX_CLIENTS}, --seconds up to {MAX_SECONDS}")

    tmp = tempfile.mkdtemp(prefix="tourno-slowloris-")
    env = {**os.environ, "TOURNO_DATABASE_URL": f"sqlite:///{tmp}/bench.db", "TOURNO_LOG_LEVEL": "warning"}
    if args.code:
        env["PYTHONPATH"] = os.path.abspath(args.code)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tourno", "serve", "--bind", f"127.0.0.1:{port}", *args.serve_args],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(tmp, "serve.log"), "w"),  # noqa: SIM115 - closed with the process
    )
    sel = selectors.DefaultSelector()
    slow: list[socket.socket] = []
    stalled: list[tuple[socket.socket, float]] = []
    try:
        wait_for_port(port, timeout=30)
        while probe(port, 5) is None:
            time.sleep(0.1)
        for _ in range(args.clients):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
            s.setblocking(False)
            slow.append(s)
        for _ in range(args.stalled_bodies):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(
                b"POST /api/v1/auth/token HTTP/1.1\r\nHost: bench\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            stalled.append((s, time.monotonic()))
        print(f"{len(slow)} slow-header and {len(stalled)} stalled-body connections open")

        latencies: list[float] = []
        failed = 0
        answers: dict[int, str] = {}
        start = time.monotonic()
        next_byte = start
        while time.monotonic() - start < args.seconds:
            now = time.monotonic()
            if now >= next_byte:
                for s in slow:
                    try:
                        s.send(b"a")
                    except OSError:
                        pass  # closed by the server: that is its right
                next_byte = now + 1.0
            for key, _ in sel.select(timeout=0):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                i = next(i for i, (c, _) in enumerate(stalled) if c is s)
                try:
                    data = s.recv(4096)
                except OSError as exc:
                    data = f"({exc.__class__.__name__})".encode()
                line = data.split(b"\r\n", 1)[0].decode(errors="replace") or "(closed, no answer)"
                answers[i] = f"{line} after {time.monotonic() - stalled[i][1]:.1f} s"
                sel.unregister(s)
            took = probe(port, 30)
            if took is None:
                failed += 1
            else:
                latencies.append(took)
            time.sleep(0.2)
        # What became of the slow-header connections: still waiting, or
        # answered (408) and closed by the server.
        fates: dict[str, int] = {}
        for s in slow:
            try:
                data = s.recv(4096)
                fate = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"
            except BlockingIOError:
                fate = "still open"
            except OSError as exc:
                fate = exc.__class__.__name__
            fates[fate] = fates.get(fate, 0) + 1
        print(f"probes: {len(latencies)} ok, {failed} failed")
        if latencies:
            print(
                f"/healthz latency: p50 {statistics.median(latencies) * 1000:.0f} ms, "
                f"max {max(latencies) * 1000:.0f} ms"
            )
        print(
            "slow-header connections at the end: " + ", ".join(f"{n} {f}" for f, n in sorted(fates.items()))
        )
        for i in range(len(stalled)):
            print(f"stalled body {i}: {answers.get(i, 'no answer yet')}")
    finally:
        for s in slow:
            s.close()
        for s, _ in stalled:
            s.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

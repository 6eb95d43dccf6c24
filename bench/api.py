"""Benchmark of the HTTP API (issue 4).

A real ``tourno serve`` (gunicorn, 4 sync workers, ``postgresql+pool``) on
PostgreSQL, loaded over loopback by a small client of our own: separate
processes, each running closed-loop threads with ``http.client`` (one request
per connection, as gunicorn's sync workers close after each response). It
prints requests/s and p50/p99 latency for

1. ``GET /api/v1/tournaments/{id}?include=matches`` on a started 64-player
   single-elimination tournament (63 matches);
2. ``POST /api/v1/matches/{id}/reports``: the first players of the 32 open
   matches re-reporting their result (each one a real transaction: the old
   report superseded, a new one and an audit event written).

Target (issue 4): >= 1,000 req/s on the GET with p99 < 50 ms on a 2-core machine.

Usage: ``python bench/api.py [--seconds 10] [--workers 4] [--clients 8]``
(PostgreSQL at ``TOURNO_BENCH_PG``, default ``postgresql://postgres@127.0.0.1:5432``;
the database ``tourno_bench_api`` is created, migrated and dropped again).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

from tourno import db as tdb  # noqa: E402
from tourno import migrations  # noqa: E402
from tourno.api.auth import hash_token, new_token  # noqa: E402
from tourno.tournaments import services  # noqa: E402
from tourno.tournaments.models import Match, MatchState, Participant, Role, User  # noqa: E402

PG_SERVER = os.environ.get("TOURNO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
BENCH_DB = "tourno_bench_api"
NOW = dt.datetime.now(dt.UTC)
PLAYERS = 64


def admin_sql(statement: str) -> None:
    admin = tdb.connect(f"{PG_SERVER}/postgres")
    admin.connect()
    try:
        admin.execute_sql(statement)
    finally:
        admin.close()


def prepare() -> tuple[int, list[tuple[int, str, dict]]]:
    """The tournament id, and (match id, token, body) for each report request."""
    admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{BENCH_DB}"')
    tdb.init(f"{PG_SERVER}/{BENCH_DB}")
    tdb.open_connection()
    migrations.migrate(tdb.database.obj)
    organizer = services.create_user("org@example.com", "Org", role=Role.ORGANIZER)
    t = services.create_tournament(
        organizer, name="Bench", game="Chess", format="single_elimination", capacity=PLAYERS
    )
    t = services.publish(t, organizer, now=NOW)
    tokens: dict[int, str] = {}
    for i in range(PLAYERS):
        user = services.create_user(f"p{i}@example.com", f"P{i}")
        token = new_token()
        User.update(api_token_hash=hash_token(token)).where(User.id == user.id).execute()
        tokens[user.id] = token
        services.register(t, user, now=NOW)
    services.start_tournament(t, organizer, now=NOW)
    reports = []
    for m in Match.select().where(Match.tournament == t.id, Match.state == MatchState.OPEN):
        user_id = Participant.get_by_id(m.player1_id).user_id
        reports.append((m.id, tokens[user_id], {"player1_score": 2, "player2_score": 1}))
    tdb.database.close()
    return t.id, reports


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_")}
    env.update(
        TOURNO_DATABASE_URL=f"{PG_SERVER.replace('postgresql://', 'postgresql+pool://', 1)}/{BENCH_DB}",
        TOURNO_LOG_LEVEL="warning",
        PYTHONPATH=ROOT,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tourno", "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not become ready")


def _client(port: int, requests: list, seconds: float, threads: int, out) -> None:
    """One load process: ``threads`` closed loops until ``seconds`` pass."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def loop(offset: int) -> None:
        mine: list[float] = []
        bad = 0
        i = offset
        while time.monotonic() < stop_at:
            method, path, token, body = requests[i % len(requests)]
            i += 1
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            data = None
            if body is not None:
                data = json.dumps(body)
                headers["Content-Type"] = "application/json"
            began = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                response.read()
                conn.close()
                ok = response.status < 400
            except OSError:
                ok = False
            mine.append(time.perf_counter() - began)
            bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    pool = [threading.Thread(target=loop, args=(n * 7,)) for n in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    out.put((latencies, errors[0]))


def load(port: int, requests: list, seconds: float, clients: int) -> tuple[float, float, float, int]:
    processes = max(1, min(clients, 4))
    per_process = max(1, clients // processes)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(port, requests, seconds, per_process, out))
        for _ in range(processes)
    ]
    began = time.monotonic()
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    elapsed = time.monotonic() - began
    for p in procs:
        p.join()
    latencies = sorted(x for lat, _ in results for x in lat)
    errors = sum(e for _, e in results)
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return len(latencies) / elapsed, p50, p99, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections (closed loops)")
    args = parser.parse_args()

    tid, reports = prepare()
    port = free_port()
    server = start_server(port, args.workers)
    try:
        print(
            f"tourno serve: {args.workers} sync workers, postgresql+pool; {args.clients} client loops, {os.cpu_count()} CPUs"
        )
        gets = [("GET", f"/api/v1/tournaments/{tid}?include=matches", None, None)]
        rate, p50, p99, errors = load(port, gets, args.seconds, args.clients)
        verdict = "ok" if rate >= 1000 and p99 < 50 else "UNDER TARGET"
        print(
            f"GET tournament?include=matches (64 players, 63 matches): {rate:.0f} req/s, "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, errors {errors} [{verdict}: >= 1000 req/s, p99 < 50 ms]"
        )
        posts = [("POST", f"/api/v1/matches/{mid}/reports", token, body) for mid, token, body in reports]
        rate, p50, p99, errors = load(port, posts, args.seconds, args.clients)
        print(
            f"POST match reports (re-reports, 32 matches): {rate:.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, errors {errors}"
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
        admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


if __name__ == "__main__":
    main()

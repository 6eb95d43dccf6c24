"""Benchmark of the HTTP API (issue 4).

A real ``tourno serve`` (gunicorn, 4 workers of 4 threads, ``postgresql+pool``) on
PostgreSQL, loaded over loopback from separate processes. The load generator
is ``wrk`` (C, epoll; ``apt-get install wrk``) when it is installed, else a
small client of our own: processes running closed-loop threads with
``http.client`` (``--client python``). Either opens a new connection per
request. The Python
client costs the machine about as much CPU as the server on a 2-core box, so
figures are only comparable for the same client. It prints requests/s and
p50/p99 latency for

1. ``GET /api/v1/tournaments/{id}?include=matches`` on a started 64-player
   single-elimination tournament (63 matches): the bracket every viewer
   polls, served from the per-process response cache (``tourno.api.cache``)
   while nothing changes;
2. the same GET revalidated with ``If-None-Match`` (a 304, no body);
3. ``POST /api/v1/matches/{id}/reports`` (always the Python client): the first
   players of the 32 open matches re-reporting their result (each one a real
   transaction: the old report superseded, a new one and an audit event
   written).

4. the mixed write load (issue 16): 8 clients (``--clients``) reporting and
   confirming across 100 underway 16-player tournaments (``--tournaments``):
   for each of the 800 first-round matches, player 1 reports and player 2
   confirms, which decides the match and moves the winner on (every second
   confirmation opens a quarter-final). Printed: writes/s, p50/p99, and the
   ratio of writes/s to the cached GET's requests/s of the same run.

Target (issue 4): >= 1,000 req/s on the GET with p99 < 50 ms on a 2-core machine.

Measured (issue 16, ``--seconds 5``, python client, a 2-core box shared with
other work, two runs each): the mixed write load went from 94-122 writes/s
(p99 94-307 ms; server CPU per write: gunicorn 9.7-10.1 ms + postgres
3.8-4.0 ms) to 136-145 writes/s (p99 69-73 ms; gunicorn 7.9-8.5 ms +
postgres 3.2-3.4 ms) when the services' write path went from 12 (report)
and 22-35 (confirmation) statements to 5 and 6-8; write/cached-read 1 : 8-11.
What is left of the gunicorn CPU is mostly the HTTP layer's own reads and
peewee building SQL text.

Usage: ``python bench/api.py [--seconds 10] [--workers 4] [--clients 8]
[--client auto|wrk|python] [--repeat N] [--tournaments 100]`` (``--repeat``: the GET phase N times,
each run printed, then the medians). PostgreSQL at ``TOURNO_BENCH_PG``, default
``postgresql://postgres@127.0.0.1:5432``; the database ``tourno_bench_api`` is
created, migrated and dropped again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

from tourno import db as tdb  # noqa: E402
from tourno import migrations  # noqa: E402
from tourno.accounts.models import Role, User
from tourno.api.auth import hash_token, new_token  # noqa: E402
from tourno.tournaments import services  # noqa: E402
from tourno.tournaments.models import Match, MatchState, Participant

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


MIXED_PLAYERS = 16


def prepare_mixed(tournaments: int) -> list[tuple[int, str, str]]:
    """``tournaments`` underway 16-player tournaments (the same 16 players in
    each); (match id, player 1's token, player 2's token) per open match."""
    tdb.init(f"{PG_SERVER}/{BENCH_DB}")
    tdb.open_connection()
    organizer = User.get(User.email == "org@example.com")
    players, tokens = [], {}
    for i in range(MIXED_PLAYERS):
        user = services.create_user(f"m{i}@example.com", f"M{i}")
        token = new_token()
        User.update(api_token_hash=hash_token(token)).where(User.id == user.id).execute()
        players.append(user)
        tokens[user.id] = token
    ids = []
    for n in range(tournaments):
        t = services.create_tournament(
            organizer, name=f"Mixed {n}", game="Chess", format="single_elimination", capacity=MIXED_PLAYERS
        )
        t = services.publish(t, organizer, now=NOW)
        for user in players:
            services.register(t, user, now=NOW)
        services.start_tournament(t, organizer, now=NOW)
        ids.append(t.id)
    users = {p.id: p.user_id for p in Participant.select().where(Participant.tournament.in_(ids))}
    pairs = [
        (m.id, tokens[users[m.player1_id]], tokens[users[m.player2_id]])
        for m in Match.select()
        .where(Match.tournament.in_(ids), Match.state == MatchState.OPEN)
        .order_by(Match.tournament, Match.id)
    ]
    tdb.database.close()
    return pairs


def _post(port: int, path: str, token: str, body: dict | None) -> tuple[float, bool]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    began = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", path, body=json.dumps(body or {}), headers=headers)
        response = conn.getresponse()
        response.read()
        conn.close()
        ok = response.status < 400
    except OSError:
        ok = False
    return time.perf_counter() - began, ok


def _write_client(port: int, pairs: list, seconds: float, threads: int, first: int, stride: int, out) -> None:
    """One load process of the mixed write load: thread k plays matches
    ``first + k``, ``first + k + stride``, ... (a report, then its confirmation)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def loop(k: int) -> None:
        mine: list[float] = []
        bad = 0
        for mid, reporter, confirmer in pairs[first + k :: stride]:
            if time.monotonic() >= stop_at:
                break
            for path, token, body in (
                (f"/api/v1/matches/{mid}/reports", reporter, {"player1_score": 2, "player2_score": 1}),
                (f"/api/v1/matches/{mid}/confirm", confirmer, None),
            ):
                took, ok = _post(port, path, token, body)
                mine.append(took)
                bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    pool = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    out.put((latencies, errors[0]))


def load_writes(port: int, pairs: list, seconds: float, clients: int) -> Result:
    """The mixed write load: ``clients`` closed loops over disjoint matches,
    until every match is played or ``seconds`` pass."""
    processes = max(1, min(clients, 4))
    per_process = max(1, clients // processes)
    stride = processes * per_process
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_write_client, args=(port, pairs, seconds, per_process, n * per_process, stride, out)
        )
        for n in range(processes)
    ]
    return _gather(procs, out)


@dataclass
class Result:
    rate: float
    p50: float
    p99: float
    errors: int
    requests: int
    app_cpu_ms: float = 0.0
    db_cpu_ms: float = 0.0


class ServerCpu:
    """CPU time the server side spends per request: the gunicorn workers and
    the PostgreSQL backends of the bench database, from /proc. On a shared
    2-core machine requests/s moves with everything else that runs; CPU per
    request mostly does not."""

    def __init__(self, master_pid: int) -> None:
        self.master_pid = master_pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def _seconds(self, pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields_ = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields_[11]) + int(fields_[12])) / self.tick  # utime + stime

    def _workers(self) -> list[int]:
        try:
            with open(f"/proc/{self.master_pid}/task/{self.master_pid}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []

    def _backends(self) -> list[int]:
        admin = tdb.connect(f"{PG_SERVER}/postgres")
        admin.connect()
        try:
            rows = admin.execute_sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (BENCH_DB,)
            ).fetchall()
        finally:
            admin.close()
        return [pid for (pid,) in rows]

    def snapshot(self) -> tuple[dict[int, float], dict[int, float]]:
        return (
            {pid: self._seconds(pid) for pid in self._workers()},
            {pid: self._seconds(pid) for pid in self._backends()},
        )

    def measure(self, run) -> Result:
        app_before, db_before = self.snapshot()
        result = run()
        app_after, db_after = self.snapshot()
        n = max(1, result.requests)
        app = sum(v - app_before.get(pid, 0.0) for pid, v in app_after.items())
        db = sum(v - db_before.get(pid, 0.0) for pid, v in db_after.items())
        result.app_cpu_ms, result.db_cpu_ms = app * 1000 / n, db * 1000 / n
        return result


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
            method, path, token, body, etag = requests[i % len(requests)]
            i += 1
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            if etag:
                headers["If-None-Match"] = etag
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


def _gather(procs: list, out: object) -> Result:
    """Start the client processes, collect each one's (latencies, errors)
    from ``out``, and sum them up over the wall time they took."""
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
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000
    return Result(len(latencies) / elapsed, p50, p99, errors, len(latencies))


def load(port: int, requests: list, seconds: float, clients: int) -> Result:
    processes = max(1, min(clients, 4))
    per_process = max(1, clients // processes)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(port, requests, seconds, per_process, out))
        for _ in range(processes)
    ]
    return _gather(procs, out)


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _WRK_UNITS[unit]


def load_wrk(
    port: int, path: str, seconds: float, clients: int, headers: dict[str, str] | None = None
) -> Result:
    """requests/s, p50 ms, p99 ms and errors (socket errors and statuses >= 400) from wrk."""
    command = ["wrk", "-t2", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _wrk_ms(re.search(r"\n\s+50%\s+(\S+)", out).group(1))
    p99 = _wrk_ms(re.search(r"\n\s+99%\s+(\S+)", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    count = int(re.search(r"(\d+) requests in", out).group(1))
    return Result(rate, p50, p99, errors + (int(bad.group(1)) if bad else 0), count)


def etag_of(port: int, path: str) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.getheader("ETag")


def report(label: str, r: Result, target: bool = False) -> None:
    verdict = ""
    if target:
        verdict = " [ok: >= 1000 req/s, p99 < 50 ms]" if r.rate >= 1000 and r.p99 < 50 else " [UNDER TARGET]"
    print(
        f"{label}: {r.rate:.0f} req/s, p50 {r.p50:.1f} ms, p99 {r.p99:.1f} ms, errors {r.errors}{verdict}; "
        f"server CPU per request: gunicorn {r.app_cpu_ms:.2f} ms + postgres {r.db_cpu_ms:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections (closed loops)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the GET phase (medians printed)")
    parser.add_argument(
        "--tournaments",
        type=int,
        default=100,
        help="underway tournaments of the mixed write load (0: skip it)",
    )
    args = parser.parse_args()
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    elif client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --client python")

    def get(path: str, headers: dict[str, str] | None = None) -> Result:
        if client == "wrk":
            return cpu.measure(lambda: load_wrk(port, path, args.seconds, args.clients, headers))
        header = headers.get("If-None-Match") if headers else None
        return cpu.measure(
            lambda: load(port, [("GET", path, None, None, header)], args.seconds, args.clients)
        )

    tid, reports = prepare()
    pairs = prepare_mixed(args.tournaments) if args.tournaments > 0 else []
    port = free_port()
    server = start_server(port, args.workers)
    cpu = ServerCpu(server.pid)
    try:
        print(
            f"tourno serve: {args.workers} workers (threaded, its defaults), postgresql+pool; load: {client}, "
            f"{args.clients} connections; {os.cpu_count()} CPUs; {args.seconds:g} s per run"
        )
        path = f"/api/v1/tournaments/{tid}?include=matches"
        label = "GET tournament?include=matches (64 players, 63 matches)"
        runs = []
        for _ in range(args.repeat):
            runs.append(get(path))
            report(label, runs[-1], target=True)
        if args.repeat > 1:
            medians = Result(*(statistics.median(getattr(r, f.name) for r in runs) for f in fields(Result)))
            report(f"median of {args.repeat} runs", medians, target=True)
        etag = etag_of(port, path)
        if etag is None:
            print("GET with If-None-Match: skipped (the server sends no ETag)")
        else:
            report("GET with If-None-Match (304)", get(path, {"If-None-Match": etag}))
        posts = [
            ("POST", f"/api/v1/matches/{mid}/reports", token, body, None) for mid, token, body in reports
        ]
        report(
            "POST match reports (re-reports, 32 matches; python client)",
            cpu.measure(lambda: load(port, posts, args.seconds, args.clients)),
        )
        if pairs:
            writes = cpu.measure(lambda: load_writes(port, pairs, args.seconds, args.clients))
            report(
                f"mixed writes (report + confirm, {len(pairs)} matches in {args.tournaments} tournaments; "
                "python client)",
                writes,
            )
            print(
                f"write/cached-read ratio: {writes.rate:.0f} writes/s / {runs[-1].rate:.0f} GET/s "
                f"= 1 : {runs[-1].rate / max(writes.rate, 1e-9):.1f}"
            )
    finally:
        server.terminate()
        server.wait(timeout=60)
        admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


if __name__ == "__main__":
    main()

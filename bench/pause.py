"""Pause benchmark: how soon a pause stops claims, and a resume starts jobs.

    python bench/pause.py [--rounds 10] [--driver postgres,sqlite,redis]

It is not a test: it prints figures (median and max over ``--rounds``). For
each driver it makes its own store (PostgreSQL ``tourno_bench_pause`` on
TOURNO_BENCH_PG, an SQLite file in a temporary folder, Redis keys under a
unique prefix on TOURNO_BENCH_REDIS with the database tables on PostgreSQL)
and starts one real ``tourno work --sleep 30``. Each round:

* pause: the worker is busy on a deep queue of ``BenchLatency(sent=0)`` jobs,
  each recording the instant it started; the queue is paused. The figure is
  how long after ``pauses.pause()`` returned the last job started (0 when
  none did). The issue's target is within one second.
* resume: the queue is paused with one job waiting and the worker idle; the
  queue is resumed. The figure is how long after ``pauses.resume()``
  returned the job started (the worker's --sleep is 30 s, so this is the
  wake-up, not the poll).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

PG_SERVER = os.environ.get("TOURNO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
BENCH_DB = os.environ.get("TOURNO_BENCH_PAUSE_DB", "tourno_bench_pause")
REDIS_SERVER = os.environ.get("TOURNO_BENCH_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = "default"
#: Jobs queued for the pause round: more than the worker runs in a few seconds.
DEPTH = 5000


def make_database(kind: str, folder: Path) -> str:
    from tourno import db as tdb
    from tourno import migrations

    if kind == "sqlite":
        url = f"sqlite:///{folder / 'pause.db'}"
    else:
        url = f"{PG_SERVER}/{BENCH_DB}"
        admin = tdb.connect(f"{PG_SERVER}/postgres")
        admin.connect()
        try:
            admin.execute_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            admin.execute_sql(f'CREATE DATABASE "{BENCH_DB}"')
        finally:
            admin.close()
    db = tdb.connect(url)
    db.connect()
    try:
        migrations.migrate(db)
        serial = "bigserial" if kind != "sqlite" else "integer"
        db.execute_sql(
            f"CREATE TABLE bench_latency (id {serial} PRIMARY KEY, kind text NOT NULL, seconds float8 NOT NULL)"
        )
    finally:
        db.close()
    return url


def drop_database() -> None:
    from tourno import db as tdb

    admin = tdb.connect(f"{PG_SERVER}/postgres")
    admin.connect()
    try:
        admin.execute_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    finally:
        admin.close()


def starts() -> list[float]:
    """The instants (epoch seconds) the jobs started, as they recorded them."""
    from tourno.db import database

    return [r[0] for r in database.execute_sql("SELECT seconds FROM bench_latency").fetchall()]


def wait(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


def one_driver(kind: str, rounds: int, folder: Path) -> dict[str, list[float]]:
    import tourno
    from bench.bench_jobs import BenchLatency
    from tourno.config import Settings
    from tourno.db import database, open_connection
    from tourno.queue import backends, dispatch_many, pauses

    url = make_database("sqlite" if kind == "sqlite" else "postgres", folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_")}
    env.update(TOURNO_DATABASE_URL=url, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    redis_url = None
    if kind == "redis":
        redis_url = f"{REDIS_SERVER}?prefix=benchpause{uuid.uuid4().hex[:8]}"
        env.update(TOURNO_QUEUE_CONNECTION="redis", TOURNO_REDIS_URL=redis_url)
    settings = Settings(
        database_url=url,
        queue_connection="redis" if kind == "redis" else "database",
        **({"redis_url": redis_url} if redis_url else {}),
    )
    tourno.setup(settings, import_jobs=False)
    open_connection()
    backend = backends.current()
    log = open(folder / f"worker-{kind}.log", "wb")  # noqa: SIM115 - closed below
    argv = [sys.executable, "-m", "tourno", "work", "--sleep", "30", "--import", "bench.bench_jobs"]
    worker = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out: dict[str, list[float]] = {"pause": [], "resume": []}
    try:
        wait(lambda: backend.workers(30.0), "the worker to register")
        time.sleep(1.0)  # its monitor listens before its first heartbeat
        for _ in range(rounds):
            # Pause a busy worker.
            pauses.pause([QUEUE])
            dispatch_many(BenchLatency(sent=0.0) for _ in range(DEPTH))
            pauses.resume([QUEUE])
            wait(lambda: len(starts()) >= 50, "the worker to be busy")
            pauses.pause([QUEUE])
            paused_at = time.time()
            time.sleep(2.0)
            ran = starts()
            if len(ran) >= DEPTH:
                raise SystemExit("the queue drained before the pause took effect: raise DEPTH")
            out["pause"].append(max(0.0, max(ran) - paused_at))
            backend.clear(QUEUE)
            database.execute_sql("DELETE FROM bench_latency")

            # Resume an idle worker.
            BenchLatency(sent=0.0).dispatch()
            time.sleep(0.5)
            pauses.resume([QUEUE])
            resumed_at = time.time()
            wait(lambda: starts(), "the resumed job to start")
            out["resume"].append(starts()[0] - resumed_at)
            database.execute_sql("DELETE FROM bench_latency")
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
        if kind == "redis":
            client = backend.client()  # type: ignore[attr-defined]
            keys = list(client.scan_iter(match=f"{backend.prefix}:*"))  # type: ignore[attr-defined]
            if keys:
                client.delete(*keys)
            backend.close_thread_connection()
        database.close()
        if kind != "sqlite":
            drop_database()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--driver", default="postgres,sqlite,redis", help="comma list")
    args = parser.parse_args(argv)
    print(f"{'driver':<10} {'figure':<32} {'median':>9} {'max':>9}   target")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.driver.split(","):
            figures = one_driver(kind, args.rounds, Path(tmp))
            for name, label, target in (
                ("pause", "pause -> last claim", "<= 1000 ms"),
                ("resume", "resume -> job start (--sleep 30)", ""),
            ):
                ms = [v * 1000 for v in figures[name]]
                print(
                    f"{kind:<10} {label:<32} {statistics.median(ms):>6.0f} ms {max(ms):>6.0f} ms   {target}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

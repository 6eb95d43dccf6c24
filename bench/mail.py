"""Benchmark of the mail drain (issue 5).

Prints, on PostgreSQL, into a local aiosmtpd server on loopback:

1. unpaced throughput: one drain sending N outbox rows with no effective rate
   limit (median msgs/s of 3 runs, each on fresh rows);
2. pacing: D drains in parallel threads against ``--rate`` (default 100/s):
   the achieved rate and the most messages in any one-second window, which
   the token bucket must keep within the limit plus one burst (one second's
   worth).

Usage: ``python bench/mail.py [--rows 2000] [--rate 100] [--drains 4]``
(PostgreSQL at ``TOURNO_BENCH_PG``, default
``postgresql://postgres@127.0.0.1:5432``; the database ``tourno_bench_mail``
is created, migrated and dropped again).
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

from bench._net import free_port, wait_for_port  # noqa: E402
from tourno import db as tdb  # noqa: E402
from tourno import migrations  # noqa: E402
from tourno.buckets import RateBucket  # noqa: E402
from tourno.config import Settings  # noqa: E402
from tourno.mail.drain import drain  # noqa: E402
from tourno.mail.models import EmailOutbox  # noqa: E402

PG_SERVER = os.environ.get("TOURNO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
BENCH_DB = "tourno_bench_mail"
RUNS = 3


def admin_sql(statement: str) -> None:
    admin = tdb.connect(f"{PG_SERVER}/postgres")
    admin.connect()
    try:
        admin.execute_sql(statement)
    finally:
        admin.close()


def seed(n: int, tag: str) -> None:
    now = tdb.utcnow() - dt.timedelta(seconds=1)
    rows = [
        {
            "dedupe_key": f"bench:{tag}:{i}",
            "to_email": f"player{i}@example.com",
            "template": "match_ready",
            "context": {
                "tournament_id": 1,
                "tournament_name": "Bench Cup",
                "match_id": i,
                "opponent_name": "Bob",
            },
            "priority": 1,
            "available_at": now,
            "created_at": now,
        }
        for i in range(n)
    ]
    with tdb.database.atomic():
        for start in range(0, n, 1000):
            EmailOutbox.insert_many(rows[start : start + 1000]).execute()


def reset() -> None:
    EmailOutbox.delete().execute()
    RateBucket.delete().execute()


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max((bisect.bisect_right(times, t + window - 1e-9) - i for i, t in enumerate(times)), default=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--drains", type=int, default=4)
    args = parser.parse_args()

    admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{BENCH_DB}"')
    url = f"{PG_SERVER}/{BENCH_DB}"
    tdb.init(url)
    tdb.open_connection()
    migrations.migrate(tdb.database.obj)
    # The SMTP server runs in its own process, as a real one would: in this
    # process it would compete with the drains for the GIL.
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"]
    )
    try:
        wait_for_port(port)
        base = dict(database_url=url, mail_transport="smtp", mail_host="127.0.0.1", mail_port=port)

        rates = []
        for run in range(RUNS):
            reset()
            seed(args.rows, f"u{run}")
            settings = Settings(**base, mail_rate=1e9, mail_max_per_connection=1000)
            started = time.perf_counter()
            result = drain(settings=settings, budget_seconds=600, batch=100)
            elapsed = time.perf_counter() - started
            assert result.sent == args.rows, result
            rates.append(args.rows / elapsed)
        print(f"unpaced drain, 1 drain, {args.rows} rows: median {statistics.median(rates):,.0f} msgs/s")

        reset()
        n = int(args.rate * 10)  # about ten seconds of sending
        seed(n, "paced")
        settings = Settings(**base, mail_rate=args.rate)
        results = []

        def one() -> None:
            tdb.open_connection()
            try:
                results.append(drain(settings=settings, budget_seconds=120, batch=50))
            finally:
                tdb.database.close()

        threads = [threading.Thread(target=one) for _ in range(args.drains)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent = sum(r.sent for r in results)
        times = [
            r.sent_at.timestamp()
            for r in EmailOutbox.select(EmailOutbox.sent_at).where(EmailOutbox.sent_at.is_null(False))
        ]
        # The bucket starts full: the first second's burst is allowed on top of the rate.
        span = max(times) - min(times) if times else 0.0
        achieved = (sent - args.rate) / span if span else 0.0
        print(
            f"paced, {args.drains} drains, limit {args.rate:g}/s, {sent} msgs in {span:.2f} s: "
            f"{achieved:,.1f} msgs/s after the initial burst ({achieved / args.rate:.1%} of the limit); "
            f"most in any 1 s window: {max_in_window(times)} (allowed: {2 * args.rate:g})"
        )
    finally:
        server.terminate()
        server.wait(10)
        tdb.database.close()
        admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

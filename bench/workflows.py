"""Chains and batches benchmark: what a chain or batch job costs next to a
plain one.

    python bench/workflows.py [--jobs 3000] [--links 200] [--rounds 2]

It is not a test: it prints figures. It makes its own PostgreSQL database
(a unique ``tourno_bench_wf_*`` on TOURNO_BENCH_PG, dropped at the end) and
drains, with one worker in this process (metrics off), ``--jobs`` plain
``Noop`` jobs, the same number as one batch, and a chain of ``--links``
links. A plain job's deletion rides with the next claim; a batch job's is
written at once with its counts (one commit per job), and each link of a
chain is claimed only once the previous one committed, so the figures are
bound by the server's commit time, which it prints too.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

PG_SERVER = os.environ.get("TOURNO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000, help="plain jobs, and batch jobs, per round")
    parser.add_argument("--links", type=int, default=200, help="links of the chain per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (each figure is printed per round)")
    args = parser.parse_args()

    from bench.bench_jobs import BenchNoop
    from tourno import db as tdb
    from tourno import migrations
    from tourno.queue import backends, batch, chain, dispatch_many
    from tourno.queue.backends.database import for_database
    from tourno.queue.worker import Worker, WorkerOptions

    name = f"tourno_bench_wf_{uuid.uuid4().hex[:8]}"
    admin = tdb.connect(f"{PG_SERVER}/postgres")
    admin.connect()
    admin.execute_sql(f'CREATE DATABASE "{name}"')
    try:
        db = tdb.connect(f"{PG_SERVER}/{name}")
        tdb.database.initialize(db)
        tdb.open_connection()
        migrations.migrate(db)
        backends.configure(for_database(db))

        def drain() -> float:
            start = time.perf_counter()
            options = WorkerOptions(stop_when_empty=True, sleep=0.1, memory=0, metrics=False)
            Worker(backends.current(), options).run()
            return time.perf_counter() - start

        tdb.database.execute_sql("CREATE TABLE bench_commit (x int)")
        start = time.perf_counter()
        for _ in range(100):
            tdb.database.execute_sql("INSERT INTO bench_commit VALUES (1)")
        print(f"commit: {(time.perf_counter() - start) * 10:.2f} ms (one autocommitted INSERT)")
        n, links = args.jobs, args.links
        for rnd in range(1, args.rounds + 1):
            dispatch_many(BenchNoop() for _ in range(n))
            plain = drain()
            batch([BenchNoop() for _ in range(n)]).dispatch()
            in_batch = drain()
            chain([BenchNoop() for _ in range(links)]).dispatch()
            linked = drain()
            print(
                f"round {rnd}: plain {n / plain:,.0f} jobs/s; batch {n / in_batch:,.0f} jobs/s; "
                f"chain {links / linked:,.0f} links/s"
            )
    finally:
        tdb.database.close()
        admin.execute_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()

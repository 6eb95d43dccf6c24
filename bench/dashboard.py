"""Server time of the dashboard's pages on a large installation (issue 12).

    python bench/dashboard.py [--quick] [--runs 15] [--keep]

It is not a test. It creates its own PostgreSQL database
(``tourno_bench_dashboard`` on the server named by TOURNO_BENCH_PG), migrates
it, seeds 10,000 tournaments in every state with ``bench/_seed_scale.py``,
1,000,000 waiting jobs (on four queues, a tenth of them delayed) and 100,000
failed jobs with ``INSERT ... SELECT generate_series``, runs ANALYZE, logs in
as an admin and prints each page's median time through Flask's test client
(the request handled in this process: routing, the guard, the queries, the
template; no network) next to the issue's target of 100 ms.

``--quick``: 1,000 tournaments, 100,000 jobs, 10,000 failed jobs. Exit
status 0 when every page meets the target, 1 otherwise. The database is
dropped at the end (``--keep`` leaves it).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The statements are sent with an empty parameter tuple, so SQL's modulo is %%.
# Run as a script, bench/ would come first on sys.path and shadow the standard
# library's ``queue``; the repository root goes there instead.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import tourno  # noqa: E402
from bench import _seed_scale as seeding  # noqa: E402
from tourno import db as tdb  # noqa: E402
from tourno import migrations  # noqa: E402
from tourno.config import Settings  # noqa: E402

PG_SERVER = os.environ.get("TOURNO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
BENCH_DB = "tourno_bench_dashboard"
PG_URL = f"{PG_SERVER}/{BENCH_DB}"
TARGET_MS = 100.0
SECRET = "bench-dashboard-secret-key-0123456789"

JOBS_SQL = """
INSERT INTO jobs (queue, payload, priority, attempts, available_at, created_at)
SELECT (ARRAY['default', 'high', 'mail', 'low'])[1 + i %% 4],
       jsonb_build_object('uuid', md5(i::text)::uuid::text, 'job', 'BenchJob' || (i %% 7),
                          'display_name', 'bench.BenchJob', 'args', jsonb_build_object('n', i),
                          'max_tries', NULL, 'timeout', NULL, 'backoff', NULL, 'retry_until', NULL,
                          'dispatched_at', now()),
       0, 0,
       CASE WHEN i %% 10 = 0 THEN now() + interval '1 day' ELSE now() - interval '1 hour' END,
       now() - interval '1 hour'
FROM generate_series(1, {n}) AS i
"""
FAILED_SQL = """
INSERT INTO failed_jobs (uuid, connection, queue, payload, exception, failed_at)
SELECT md5('f' || i)::uuid::text, 'database', (ARRAY['default', 'high', 'mail'])[1 + i %% 3],
       '{{"job": "BenchJob", "uuid": "' || md5('f' || i)::uuid::text || '", "args": {{}}}}',
       E'Traceback (most recent call last):\\n  File "bench.py", line 1, in handle\\nValueError: bench ' || i,
       now() - (i || ' seconds')::interval
FROM generate_series(1, {n}) AS i
"""


def admin_sql(statement: str) -> None:
    admin = tdb.connect(f"{PG_SERVER}/postgres")
    admin.connect()
    try:
        admin.execute_sql(statement)
    finally:
        admin.close()


def scalar(sql: str) -> object:
    return tdb.database.execute_sql(sql).fetchone()[0]


def seed(tournaments: int, jobs: int, failed: int) -> None:
    began = time.perf_counter()
    sizes = seeding.SeedSizes(tournaments=tournaments, autostart=0, users=tournaments * 5)
    seeding.seed(tdb.database.obj, sizes, tdb.utcnow())
    for sql in (JOBS_SQL.format(n=jobs), FAILED_SQL.format(n=failed), "ANALYZE"):
        tdb.database.execute_sql(sql)
    print(
        f"seeded {tournaments:,} tournaments, {jobs:,} jobs, {failed:,} failed jobs "
        f"in {time.perf_counter() - began:.0f} s",
        flush=True,
    )


def log_in(client: object) -> None:
    from tourno.accounts.models import Role
    from tourno.api.auth import issue_token
    from tourno.tournaments import services

    token = issue_token(services.create_user("bench-admin@example.com", "Bench", role=Role.ADMIN))
    page = client.get("/admin/login").get_data(as_text=True)  # type: ignore[attr-defined]
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf, "no CSRF field on the login page"
    response = client.post("/admin/login", data={"token": token, "csrf_token": csrf.group(1)})  # type: ignore[attr-defined]
    assert response.headers["Location"] == "/admin", "login failed"


def pages() -> list[tuple[str, str]]:
    last_job = scalar("SELECT max(id) FROM jobs")
    mid_job = scalar("SELECT id FROM jobs ORDER BY id OFFSET (SELECT count(*) / 2 FROM jobs) LIMIT 1")
    uuid = scalar(f"SELECT payload ->> 'uuid' FROM jobs WHERE id = {mid_job}")
    failed_id = scalar("SELECT max(id) FROM failed_jobs")
    double = scalar(
        "SELECT id FROM tournaments WHERE format = 'double_elimination' AND state = 'underway' LIMIT 1"
    )
    swiss = scalar("SELECT id FROM tournaments WHERE format = 'swiss' AND state = 'underway' LIMIT 1")
    return [
        ("overview", "/admin"),
        ("overview JSON (the poll)", "/admin/overview.json"),
        ("failed jobs, newest 100", "/admin/failed"),
        ("failed jobs of one queue", "/admin/failed?queue=high"),
        ("one failed job", f"/admin/failed/{failed_id}"),
        ("workers", "/admin/workers"),
        ("schedule", "/admin/schedule"),
        ("mail", "/admin/mail"),
        ("jobs: ready, first page", "/admin/jobs?state=ready"),
        ("jobs: ready, a middle page", f"/admin/jobs?queue=high&state=ready&after={mid_job}"),
        ("jobs: delayed", "/admin/jobs?state=delayed"),
        ("jobs: reserved (none)", "/admin/jobs?state=reserved"),
        ("jobs: search by uuid", f"/admin/jobs?state=ready&q={uuid}"),
        ("one job", f"/admin/jobs/{last_job}"),
        ("tournaments, newest", "/admin/tournaments"),
        ("tournaments underway, Swiss", "/admin/tournaments?state=underway&format=swiss"),
        ("a double-elimination bracket", f"/admin/tournaments/{double}"),
        ("a Swiss tournament", f"/admin/tournaments/{swiss}"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the data")
    parser.add_argument("--runs", type=int, default=15, help="requests per page (median)")
    parser.add_argument("--keep", action="store_true", help="leave the database")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{BENCH_DB}"')
    try:
        settings = tourno.setup(Settings(database_url=PG_URL, secret_key=SECRET))
        tdb.open_connection()
        migrations.migrate(tdb.database.obj)
        seed(10_000 // scale, 1_000_000 // scale, 100_000 // scale)
        from tourno.api import create_app

        client = create_app(settings, init_database=False).test_client()
        log_in(client)
        slow = 0
        print(f"\nmedian of {args.runs} requests per page (target < {TARGET_MS:.0f} ms):")
        for label, path in pages():
            for _ in range(2):
                response = client.get(path)
                assert response.status_code == 200, (path, response.status_code)
            times = []
            for _ in range(args.runs):
                began = time.perf_counter()
                client.get(path).close()
                times.append((time.perf_counter() - began) * 1000)
            median = statistics.median(times)
            ok = median < TARGET_MS
            slow += not ok
            print(
                f"  {label:34} {median:8.1f} ms  max {max(times):7.1f}  {'ok' if ok else 'SLOW'}", flush=True
            )
        return 0 if slow == 0 else 1
    finally:
        if not tdb.database.is_closed():
            tdb.database.close()
        if not args.keep:
            admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())

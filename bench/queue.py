"""Queue benchmark: prints figures, side by side, against the issue's targets.

    python bench/queue.py [--quick] [--runs 3] [--driver {database,redis,both}]

It is not a test: it makes its own databases (PostgreSQL ``tourno_bench`` on
the server named by TOURNO_BENCH_PG, an SQLite file in a temporary folder),
starts real ``tourno work`` subprocesses and reports the median of ``--runs``
runs of each figure:

* drain throughput on PostgreSQL with 1 and 4 workers, and the same drain by
  a Laravel ``database``-driver baseline written with plain psycopg2 (this
  script run with ``--baseline-worker``), in the same run;
* dispatch-to-start latency with one idle worker (and for the baseline);
* dispatch rate, one job per call and batched;
* drain throughput on SQLite;
* the cost of persisted metrics and lifecycle events: PostgreSQL drains with
  1 and 4 workers with ``TOURNO_QUEUE_METRICS=0`` and no subscriber ("off"),
  and with metrics on and one trivial subscriber (``bench/bench_events.py``,
  "on"), alternating in each run; the ratio on / off is the figure (``--only
  metrics`` runs just these);
* a worker's memory over a long drain;
* wake-ups (``--part wakeup`` runs only these): how late a job dispatched
  with ``delay=1`` starts with ``--sleep 3`` (PostgreSQL, and Redis with
  ``--driver redis/both``), dispatch-to-start on SQLite with ``--sleep 3``,
  what the SQLite wake-up adds to a dispatch, and the dispatch rates without
  the ``jobs_due_idx`` index. ``--before REV`` runs the same workers from
  another commit's code too (``git archive REV``), side by side.

With ``--driver redis`` (only the Redis driver) or ``--driver both`` (the
database figures above and the Redis ones, side by side), it also measures
the Redis driver (``tourno work redis`` against TOURNO_BENCH_REDIS, keys
under a unique ``bench<random>`` prefix, deleted at the end): drains with 1
and 4 workers, dispatch-to-start latency and dispatch rates. The Redis
figures have no target.

Drains measure the steady state, not Python start-up: the workers start
first, the script waits until they are idle, inserts every job in one
transaction and times from its commit until the table is empty.
"""

from __future__ import annotations

import os
import sys

# This file is bench/queue.py. Run as a script, its folder would come first on
# sys.path and shadow the standard library's ``queue`` (which logging and
# multiprocessing import); put the repository root there instead, so that
# ``tourno`` and ``bench.bench_jobs`` import from this checkout.
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

PG_SERVER = os.environ.get("TOURNO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
#: Override with TOURNO_BENCH_DB when several checkouts bench on one server at once.
BENCH_DB = os.environ.get("TOURNO_BENCH_DB", "tourno_bench")
PG_URL = f"{PG_SERVER}/{BENCH_DB}"
REDIS_SERVER = os.environ.get("TOURNO_BENCH_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = "default"
#: Every worker polls this often when idle (Laravel's and Tourno's default).
SLEEP = 3.0
#: SQLite has no NOTIFY: its workers poll this often, so that the measured
#: drain is not a 0-3 s poll phase plus the work (an idle poll costs nothing
#: once the queue is deep).
SQLITE_SLEEP = 0.05
#: Laravel's ``retry_after`` default.
RETRY_AFTER = 90
#: How often the script looks whether a drained table is empty.
POLL = 0.01


@dataclasses.dataclass(frozen=True)
class Sizes:
    drain_jobs: int
    latency_samples: int
    latency_gap: float
    baseline_latency_samples: int  # in all runs together: each costs ~3 s
    single_dispatch: int
    batch_dispatch: int
    sqlite_jobs: int
    memory_jobs: int
    memory_warmup: int
    late_samples: int = 40  # per lateness figure; each waits LATE_DELAY, spaced up to LATE_GAP


FULL = Sizes(
    drain_jobs=20_000,
    latency_samples=200,
    latency_gap=0.02,
    baseline_latency_samples=15,
    single_dispatch=5_000,
    batch_dispatch=20_000,
    sqlite_jobs=20_000,
    memory_jobs=100_000,
    memory_warmup=5_000,
    late_samples=60,
)
QUICK = Sizes(
    drain_jobs=8_000,
    latency_samples=60,
    latency_gap=0.02,
    baseline_latency_samples=4,
    single_dispatch=2_000,
    batch_dispatch=20_000,
    sqlite_jobs=8_000,
    memory_jobs=25_000,
    memory_warmup=5_000,
    late_samples=30,
)


@dataclasses.dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    digits: int = 0
    op: str | None = None  # ">=" or "<="
    target: float | None = None
    driver: str = "database"  # "redis": no target, "-" in the target column

    def fmt(self, value: float | None) -> str:
        return "-" if value is None else f"{value:,.{self.digits}f}"

    def verdict(self, value: float | None) -> str:
        if self.op is None or self.target is None:
            return ""
        if value is None:
            return "MISS (no value)"
        ok = value >= self.target if self.op == ">=" else value <= self.target
        return "PASS" if ok else "MISS"


FIGURES = [
    Figure("pg_t1", "PG drain, Tourno, 1 worker", "jobs/s", 0, ">=", 5300),
    Figure("pg_t4", "PG drain, Tourno, 4 workers", "jobs/s", 0, ">=", 6500),
    Figure("pg_b1", "PG drain, Laravel baseline, 1 worker", "jobs/s"),
    Figure("pg_b4", "PG drain, Laravel baseline, 4 workers", "jobs/s"),
    Figure("ratio1", "Tourno / baseline, 1 worker", "x", 2),
    Figure("ratio4", "Tourno / baseline, 4 workers", "x", 2, ">=", 3.5),
    Figure("lat_p50", "Latency dispatch->start, Tourno, p50", "ms", 2, "<=", 4),
    Figure("lat_p95", "Latency dispatch->start, Tourno, p95", "ms", 2, "<=", 10),
    Figure("lat_max", "Latency dispatch->start, Tourno, max", "ms", 2),
    Figure("lat_call", "  of which the dispatch() call itself, p50", "ms", 2),
    Figure("blat_p50", "Latency dispatch->start, baseline, p50 *", "ms", 0),
    Figure("blat_p95", "Latency dispatch->start, baseline, p95 *", "ms", 0),
    Figure("blat_max", "Latency dispatch->start, baseline, max *", "ms", 0),
    Figure("disp_1", "Dispatch, one Job.dispatch() per job", "jobs/s", 0, ">=", 3000),
    Figure("disp_n", "Dispatch, dispatch_many batch", "jobs/s", 0, ">=", 50000),
    Figure("sq_1", "SQLite drain, Tourno, 1 worker", "jobs/s", 0, ">=", 3500),
    Figure("sq_2", "SQLite drain, Tourno, 2 workers", "jobs/s"),
    Figure("mem_warm", "Worker RSS after warm-up", "MiB", 1, "<=", 60),
    Figure("mem_end", "Worker RSS at the end of the long drain", "MiB", 1, "<=", 60),
    Figure("mem_growth", "Worker RSS growth (end - warm-up)", "MiB", 1, "<=", 5),
    Figure("mem_peak", "Worker peak RSS (VmHWM)", "MiB", 1, "<=", 60),
    Figure("mem_rate", "PG drain of the memory run, 1 worker (info)", "jobs/s"),
    Figure("dl_p50", "Delayed lateness (delay=1, --sleep 3), p50", "ms", 1),
    Figure("dl_p95", "Delayed lateness (delay=1, --sleep 3), p95", "ms", 1, "<=", 100),
    Figure("dl_b_p50", "  the same, --before code, p50", "ms", 0),
    Figure("dl_b_p95", "  the same, --before code, p95", "ms", 0),
    Figure("sqw_p50", "SQLite dispatch->start (--sleep 3), p50", "ms", 2),
    Figure("sqw_p95", "SQLite dispatch->start (--sleep 3), p95", "ms", 2, "<=", 20),
    Figure("sqw_b_p50", "  the same, --before code, p50", "ms", 0),
    Figure("sqw_b_p95", "  the same, --before code, p95", "ms", 0),
    Figure("sq_disp_wake", "SQLite dispatch() with its wake-up, median", "us", 0),
    Figure("sq_disp_nowake", "SQLite dispatch() without the wake-up, median", "us", 0),
    Figure("disp_1_noidx", "Dispatch, one per call, without jobs_due_idx", "jobs/s", 0),
    Figure("disp_n_noidx", "Dispatch, batch, without jobs_due_idx", "jobs/s", 0),
    Figure("pg_rtt", "Context: PG round trip (SELECT 1), median", "us"),
    Figure("mo_off1", "PG drain, metrics+events off, 1 worker", "jobs/s"),
    Figure("mo_on1", "PG drain, metrics+events on, 1 worker", "jobs/s"),
    Figure("mo_ratio1", "Metrics+events on / off, 1 worker", "x", 2, ">=", 0.90),
    Figure("mo_off4", "PG drain, metrics+events off, 4 workers", "jobs/s"),
    Figure("mo_on4", "PG drain, metrics+events on, 4 workers", "jobs/s"),
    Figure("mo_ratio4", "Metrics+events on / off, 4 workers", "x", 2, ">=", 0.90),
    Figure("pg_commit", "Context: PG 1-row INSERT + commit, median", "us"),
]

#: The Redis driver's figures (``--driver redis`` or ``both``), each printed
#: after the database figure named by ``REDIS_AFTER``.
REDIS_FIGURES = [
    Figure("rd_t1", "Redis drain, Tourno, 1 worker", "jobs/s", driver="redis"),
    Figure("rd_t4", "Redis drain, Tourno, 4 workers", "jobs/s", driver="redis"),
    Figure("rd_lat_p50", "Redis latency dispatch->start, Tourno, p50", "ms", 2, driver="redis"),
    Figure("rd_lat_p95", "Redis latency dispatch->start, Tourno, p95", "ms", 2, driver="redis"),
    Figure("rd_lat_max", "Redis latency dispatch->start, Tourno, max", "ms", 2, driver="redis"),
    Figure("rd_lat_call", "  Redis: the dispatch() call itself, p50", "ms", 2, driver="redis"),
    Figure("rd_disp_1", "Redis dispatch, one Job.dispatch() per job", "jobs/s", driver="redis"),
    Figure("rd_disp_n", "Redis dispatch, dispatch_many batch", "jobs/s", driver="redis"),
    Figure("rd_rtt", "Context: Redis round trip (PING), median", "us", driver="redis"),
    Figure("rd_dl_p50", "Redis delayed lateness (delay=1), p50", "ms", 1, driver="redis"),
    Figure("rd_dl_p95", "Redis delayed lateness (delay=1), p95", "ms", 1, driver="redis"),
    Figure("rd_dl_b_p50", "  Redis, --before code, p50", "ms", 0, driver="redis"),
    Figure("rd_dl_b_p95", "  Redis, --before code, p95", "ms", 0, driver="redis"),
]
REDIS_AFTER = {
    "rd_t1": "pg_t1",
    "rd_t4": "pg_t4",
    "rd_lat_p50": "lat_p50",
    "rd_lat_p95": "lat_p95",
    "rd_lat_max": "lat_max",
    "rd_lat_call": "lat_call",
    "rd_disp_1": "disp_1",
    "rd_disp_n": "disp_n",
    "rd_rtt": "pg_commit",
    "rd_dl_p50": "dl_b_p95",
    "rd_dl_p95": "dl_b_p95",
    "rd_dl_b_p50": "dl_b_p95",
    "rd_dl_b_p95": "dl_b_p95",
}
#: The figures of ``--part wakeup``.
WAKEUP_FIGURES = {
    "dl_p50",
    "dl_p95",
    "dl_b_p50",
    "dl_b_p95",
    "sqw_p50",
    "sqw_p95",
    "sqw_b_p50",
    "sqw_b_p95",
    "sq_disp_wake",
    "sq_disp_nowake",
    "disp_1",
    "disp_n",
    "disp_1_noidx",
    "disp_n_noidx",
    "rd_dl_p50",
    "rd_dl_p95",
    "rd_dl_b_p50",
    "rd_dl_b_p95",
}
#: The delay of the lateness samples, and the longest random pause between two.
LATE_DELAY = 1.0
LATE_GAP = 0.35


def figures_for(driver: str) -> list[Figure]:
    """The table's rows for ``--driver``: ``database`` is ``FIGURES`` as is."""
    if driver == "database":
        return list(FIGURES)
    if driver == "redis":
        return list(REDIS_FIGURES)
    rows = []
    for fig in FIGURES:
        rows.append(fig)
        rows += [r for r in REDIS_FIGURES if REDIS_AFTER[r.key] == fig.key]
    return rows


class BenchError(Exception):
    """A measurement could not be made (timeout, a worker died...)."""


# -- processes ------------------------------------------------------------------------


@dataclasses.dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


class Processes:
    """Every subprocess this script starts, so that none outlives it."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.live: list[Proc] = []
        self.problems: list[str] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: str = ROOT) -> Proc:
        log = self.logdir / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C here is ours to pass on
            )
        proc = Proc(name, popen, log)
        self.live.append(proc)
        return proc

    def check_alive(self, procs: list[Proc]) -> None:
        for p in procs:
            code = p.popen.poll()
            if code is not None:
                tail = "\n".join(p.log_text().strip().splitlines()[-5:])
                raise BenchError(f"{p.name} (pid {p.pid}) exited early with code {code}:\n{tail}")

    def stop(self, procs: list[Proc], timeout: float = 15.0) -> dict[str, int | None]:
        """SIGTERM, wait, SIGKILL what is left; returns exit codes by name."""
        for p in procs:
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: dict[str, int | None] = {}
        for p in procs:
            try:
                codes[p.name] = p.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.problems.append(f"{p.name} (pid {p.pid}) ignored SIGTERM for {timeout:g} s; killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                codes[p.name] = p.popen.wait(10)
            if p in self.live:
                self.live.remove(p)
        return codes

    def kill_all(self) -> None:
        for p in list(self.live):
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(10)
        self.live.clear()


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values


# -- statistics -------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (p in 0..100)."""
    data = sorted(values)
    if not data:
        raise ValueError("no values")
    k = (len(data) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


# -- the Laravel database-driver baseline worker ------------------------------------------

# What Illuminate\Queue\DatabaseQueue does on PostgreSQL, one job per
# transaction, with epoch-second integers: pop = BEGIN, SELECT ... FOR UPDATE
# SKIP LOCKED, UPDATE reserved_at, COMMIT; run; delete = BEGIN, SELECT ... FOR
# UPDATE, DELETE, COMMIT. Eight round trips per job.
LARAVEL_TABLE_SQL = [
    "CREATE TABLE laravel_jobs (id bigserial PRIMARY KEY, queue varchar(255) NOT NULL, "
    "payload text NOT NULL, attempts smallint NOT NULL, reserved_at int NULL, "
    "available_at int NOT NULL, created_at int NOT NULL)",
    "CREATE INDEX laravel_jobs_queue_index ON laravel_jobs (queue)",
]
LARAVEL_POP = (
    "SELECT * FROM laravel_jobs WHERE queue = %s AND ((reserved_at IS NULL AND available_at <= %s) "
    "OR (reserved_at <= %s)) ORDER BY id ASC LIMIT 1 FOR UPDATE SKIP LOCKED"
)
LARAVEL_RESERVE = "UPDATE laravel_jobs SET reserved_at = %s, attempts = attempts + 1 WHERE id = %s"
LARAVEL_LOCK = "SELECT * FROM laravel_jobs WHERE id = %s FOR UPDATE"
LARAVEL_DELETE = "DELETE FROM laravel_jobs WHERE id = %s"


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop


def baseline_worker(dsn: str, queue: str, sleep: float) -> int:
    """Loop like ``php artisan queue:work database --sleep=3`` until SIGTERM.

    Prints ``ready`` once it has found the queue empty, and ``processed N`` at
    exit. An idle wait ends early on SIGUSR1: the script sends it right after
    committing a drain's jobs, so a drain does not count a random 0-3 s poll
    phase (the latency figure shows that cost)."""
    import psycopg2

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True  # BEGIN and COMMIT are sent as Laravel's PDO does
    cur = conn.cursor()
    processed = 0
    announced = False
    try:
        while True:
            now = int(time.time())
            cur.execute("BEGIN")
            cur.execute(LARAVEL_POP, (queue, now, now - RETRY_AFTER))
            row = cur.fetchone()
            if row is None:
                cur.execute("COMMIT")
                if not announced:
                    print("ready", flush=True)
                    announced = True
                signal.sigtimedwait([signal.SIGUSR1], sleep)
                continue
            job_id = row[0]
            cur.execute(LARAVEL_RESERVE, (int(time.time()), job_id))
            cur.execute("COMMIT")

            payload = json.loads(row[2])
            sent = payload["data"].get("sent")
            if sent is not None:
                cur.execute(
                    "INSERT INTO bench_latency (kind, seconds) VALUES ('baseline', %s)",
                    (time.time() - sent,),
                )

            cur.execute("BEGIN")
            cur.execute(LARAVEL_LOCK, (job_id,))
            if cur.fetchone() is not None:
                cur.execute(LARAVEL_DELETE, (job_id,))
            cur.execute("COMMIT")
            processed += 1
    except _Stop:
        pass
    finally:
        print(f"processed {processed}", flush=True)
        with contextlib.suppress(Exception):
            conn.close()
    return 0


def laravel_payload(n: int, sent: float | None = None) -> str:
    """A payload shaped like the one Laravel stores for a queued job."""
    data: dict[str, object] = {
        "commandName": "App\\Jobs\\BenchNoop",
        "command": f'O:18:"App\\Jobs\\BenchNoop":1:{{s:1:"n";i:{n};}}',
    }
    if sent is not None:
        data["sent"] = sent
    return json.dumps(
        {
            "uuid": str(uuid.uuid4()),
            "displayName": "App\\Jobs\\BenchNoop",
            "job": "Illuminate\\Queue\\CallQueuedHandler@call",
            "maxTries": None,
            "maxExceptions": None,
            "failOnTimeout": False,
            "backoff": None,
            "timeout": None,
            "retryUntil": None,
            "data": data,
        },
        separators=(",", ":"),
    )


# -- the benchmark -------------------------------------------------------------------------


class Bench:
    def __init__(
        self,
        sizes: Sizes,
        runs: int,
        workdir: Path,
        driver: str = "database",
        part: str = "all",
        before: str | None = None,
        only: str = "all",
    ) -> None:
        self.part = part
        #: "metrics": only the metrics and events on/off drains (PostgreSQL).
        self.only = only
        #: The --before revision, and a checkout of its code (made in create_databases).
        self.before = before
        self.before_root: str | None = None
        self.sizes = sizes
        self.runs = runs
        self.workdir = workdir
        self.driver = driver
        self.sqlite_url = f"sqlite:///{workdir / 'bench.db'}"
        self.procs = Processes(workdir)
        self.figures = figures_for(driver)
        if part == "wakeup":
            self.figures = [f for f in self.figures if f.key in WAKEUP_FIGURES]
        if only == "metrics":
            self.figures = [f for f in self.figures if f.key.startswith("mo_")]
        self.results: dict[str, list[float]] = {f.key: [] for f in self.figures}
        # Every key of this run's Redis queue starts with "<prefix>:".
        self.redis_prefix = f"bench{uuid.uuid4().hex[:12]}"
        sep = "&" if "?" in REDIS_SERVER else "?"
        self.redis_url = f"{REDIS_SERVER}{sep}prefix={self.redis_prefix}"
        self.pooled_baseline_latency: list[float] = []
        self.counter = 0
        self.metrics_rounds = 0

    @property
    def problems(self) -> list[str]:
        return self.procs.problems

    # -- databases -------------------------------------------------------------

    @contextlib.contextmanager
    def use(self, url: str, redis: bool = False) -> Iterator[None]:
        """Bind tourno's database to ``url`` with this thread's connection open
        (and, with ``redis``, the queue to this run's Redis prefix)."""
        import tourno
        from tourno import db as tdb
        from tourno.config import Settings

        if redis:
            settings = Settings(database_url=url, queue_connection="redis", redis_url=self.redis_url)
        else:
            settings = Settings(database_url=url)
        tourno.setup(settings, import_jobs=False)
        tourno.import_modules(["bench.bench_jobs"])
        tdb.open_connection()
        try:
            yield
        finally:
            if not tdb.database.is_closed():
                tdb.database.close()

    @staticmethod
    def sql(text: str) -> str:
        from tourno.db import is_postgres

        return text if is_postgres() else text.replace("%s", "?")

    def rows(self, text: str, params=()) -> list[tuple]:
        from tourno.db import database

        return database.execute_sql(self.sql(text), params).fetchall()

    def scalar(self, text: str, params=()):
        rows = self.rows(text, params)
        return rows[0][0] if rows else None

    def execute(self, text: str, params=()) -> None:
        from tourno.db import database

        database.execute_sql(self.sql(text), params)

    def create_databases(self) -> str:
        from tourno import db as tdb
        from tourno import migrations

        admin = tdb.connect(f"{PG_SERVER}/postgres")
        admin.connect()
        try:
            admin.execute_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            admin.execute_sql(f'CREATE DATABASE "{BENCH_DB}"')
        finally:
            admin.close()
        pg = tdb.connect(PG_URL)
        pg.connect()
        try:
            migrations.migrate(pg)
            for stmt in LARAVEL_TABLE_SQL:
                pg.execute_sql(stmt)
            pg.execute_sql(
                "CREATE TABLE bench_latency (id bigserial PRIMARY KEY, kind text NOT NULL, "
                "seconds float8 NOT NULL)"
            )
            full = pg.execute_sql("SELECT version()").fetchone()[0]
            settings = pg.execute_sql(
                "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) "
                "FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', "
                "'shared_buffers', 'max_connections')"
            ).fetchone()[0]
        finally:
            pg.close()
        lite = tdb.connect(self.sqlite_url)
        lite.connect()
        try:
            migrations.migrate(lite)
            lite.execute_sql(
                "CREATE TABLE bench_latency (id integer PRIMARY KEY, kind text NOT NULL, seconds real NOT NULL)"
            )
        finally:
            lite.close()
        if self.before is not None:
            self.before_root = self.checkout_of(self.before)
        return f"{full.split(',')[0]}; {settings}"

    def drop_databases(self) -> None:
        from tourno import db as tdb

        admin = tdb.connect(f"{PG_SERVER}/postgres")
        try:
            admin.connect()
            admin.execute_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the figures
            print(f"warning: could not drop {BENCH_DB}: {exc}", file=sys.stderr)
        finally:
            admin.close()

    def checkout_of(self, rev: str) -> str:
        """``tourno/`` and ``bench/`` as they are at ``rev``, in a folder of
        the work directory (``git archive``: the repository is not touched)."""
        target = self.workdir / f"before-{re.sub(r'[^A-Za-z0-9_.-]', '_', rev)}"
        target.mkdir()
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", "--format=tar", rev, "tourno", "bench"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
        return str(target)

    def redis_client(self):
        from tourno.queue import backends

        return backends.current().client()

    def redis_key(self, *parts: str) -> str:
        return ":".join((self.redis_prefix, *parts))

    def redis_server_info(self) -> str:
        import redis as redislib

        client = redislib.Redis.from_url(REDIS_SERVER, socket_connect_timeout=5)
        try:
            info = client.info("server")
            persistence = client.config_get("appendonly")
            return (
                f"Redis {info.get('redis_version', '?')} at {REDIS_SERVER}, key prefix "
                f"{self.redis_prefix}; appendonly={persistence.get('appendonly', '?')}; "
                f"redis-py {_version('redis')}"
            )
        finally:
            client.close()

    def drop_redis_keys(self) -> None:
        """Delete this run's keys (all under its unique prefix), nothing else."""
        import redis as redislib

        try:
            client = redislib.Redis.from_url(REDIS_SERVER, socket_connect_timeout=5)
            try:
                keys = list(client.scan_iter(match=f"{self.redis_prefix}:*", count=1000))
                for start in range(0, len(keys), 1000):
                    client.delete(*keys[start : start + 1000])
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the figures
            print(f"warning: could not delete Redis keys {self.redis_prefix}:*: {exc}", file=sys.stderr)

    # -- workers ---------------------------------------------------------------------

    def _name(self, tag: str) -> str:
        self.counter += 1
        return f"{self.counter:03d}-{tag}"

    def worker_env(self, url: str, redis: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_")}
        env.update(
            TOURNO_DATABASE_URL=url,
            TOURNO_LOG_LEVEL="info",
            PYTHONPATH=ROOT,
            PYTHONUNBUFFERED="1",
        )
        if redis:
            env.update(TOURNO_QUEUE_CONNECTION="redis", TOURNO_REDIS_URL=self.redis_url)
        return env

    def start_tourno(
        self,
        url: str,
        n: int,
        tag: str,
        sleep: float = SLEEP,
        redis: bool = False,
        root: str | None = None,
        env_extra: dict[str, str] | None = None,
        imports: tuple[str, ...] = (),
    ) -> list[Proc]:
        """``n`` workers; with ``root``, running the code checked out there."""
        env = {**self.worker_env(url, redis), **(env_extra or {})}
        if root is not None:
            env["PYTHONPATH"] = root
        procs = []
        for i in range(n):
            name = self._name(f"{tag}-w{i}")
            argv = [sys.executable, "-m", "tourno", "work", *(["redis"] if redis else [])]
            argv += ["--sleep", f"{sleep:g}"]
            for module in ("bench.bench_jobs", *imports):
                argv += ["--import", module]
            argv += ["--name", name]
            procs.append(self.procs.start(name, argv, env, cwd=root or ROOT))
        return procs

    def wait_tourno_idle(self, procs: list[Proc], timeout: float = 60.0) -> None:
        """Registered, listening (the monitor's first heartbeat follows its
        LISTEN) and, on PostgreSQL, each main connection idle after a claim."""
        from tourno.db import is_postgres

        pids = [p.pid for p in procs]
        marks = ",".join(["%s"] * len(pids))
        deadline = time.monotonic() + timeout
        registered_at = None
        while True:
            self.procs.check_alive(procs)
            ready = self.scalar(
                f"SELECT count(*) FROM workers WHERE pid IN ({marks}) AND heartbeat_at > started_at", pids
            )
            claimed = len(pids)
            if is_postgres():
                claimed = self.scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state = 'idle' AND query LIKE %s",
                    ("%FOR UPDATE SKIP LOCKED%",),
                )
            if ready >= len(pids):
                registered_at = registered_at or time.monotonic()
                # The claim check leans on the engine's SQL text: if that
                # changes, registered and listening must do.
                if claimed >= len(pids) or time.monotonic() - registered_at > 3.0:
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"workers not idle after {timeout:g} s ({ready}/{len(pids)} registered)")
            time.sleep(0.05)
        time.sleep(0.2)

    def wait_redis_idle(self, procs: list[Proc], timeout: float = 60.0) -> None:
        """Registered in Redis and past a first heartbeat (it follows the
        worker's SUBSCRIBE); then a moment for the first, empty, claim."""
        from tourno.queue import backends

        backend = backends.current()
        pids = {p.pid for p in procs}
        deadline = time.monotonic() + timeout
        while True:
            self.procs.check_alive(procs)
            ready = sum(
                1
                for w in backend.workers(3600)
                if w.pid in pids and w.heartbeat_at and w.started_at and w.heartbeat_at > w.started_at
            )
            if ready >= len(pids):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"Redis workers not idle after {timeout:g} s ({ready}/{len(pids)} ready)")
            time.sleep(0.05)
        time.sleep(0.5)

    def redis_pending(self) -> int:
        """Jobs of this run's queue still ready, delayed or reserved."""
        pipe = self.redis_client().pipeline(transaction=False)
        pipe.zcard(self.redis_key("q", QUEUE, "ready"))
        pipe.zcard(self.redis_key("q", QUEUE, "delayed"))
        pipe.zcard(self.redis_key("reserved"))
        return sum(int(n) for n in pipe.execute())

    def wait_redis_empty(self, procs: list[Proc], timeout: float) -> float:
        """Poll until the queue's ready, delayed and reserved sets are empty
        (three ZCARDs in one round trip); returns perf_counter() then."""
        deadline = time.perf_counter() + timeout
        next_check = 0.0
        while True:
            left = self.redis_pending()
            now = time.perf_counter()
            if left == 0:
                return now
            if now > deadline:
                raise BenchError(f"Redis queue not empty after {timeout:g} s ({left} jobs left)")
            if now > next_check:
                self.procs.check_alive(procs)
                next_check = now + 0.5
            time.sleep(POLL)

    def stop_tourno(self, procs: list[Proc], expect_jobs: int | None) -> None:
        codes = self.procs.stop(procs)
        processed = 0
        for p in procs:
            text = p.log_text()
            if codes.get(p.name) != 0:
                self.problems.append(f"{p.name}: exit code {codes.get(p.name)} (expected 0)")
            bad = [
                line
                for line in text.splitlines()
                if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|Exception", line)
            ]
            for line in bad[:5]:
                self.problems.append(f"{p.name}: {line.strip()[:300]}")
            if len(bad) > 5:
                self.problems.append(f"{p.name}: ... {len(bad) - 5} more such lines in {p.log}")
            # "stopped (empty): 8000 job(s) finished (...)"; a --before
            # checkout may print the older "stopped (empty), 8000 jobs processed".
            m = re.search(r"stopped \((\w+)\)(?:, (\d+) jobs processed|: (\d+) job\(s\) finished)", text)
            if m is None:
                self.problems.append(f"{p.name}: no 'stopped' line in its log")
            else:
                processed += int(m.group(2) or m.group(3))
        if expect_jobs is not None and processed != expect_jobs:
            self.problems.append(
                f"{', '.join(p.name for p in procs)}: processed {processed} jobs, expected {expect_jobs}"
            )
        failed = self.scalar("SELECT count(*) FROM failed_jobs")
        if failed:
            self.problems.append(f"{failed} job(s) in failed_jobs after {procs[0].name}")
            self.execute("DELETE FROM failed_jobs")

    def start_baseline(self, n: int, tag: str) -> list[Proc]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_")}
        env["PYTHONUNBUFFERED"] = "1"
        procs = []
        for i in range(n):
            name = self._name(f"{tag}-w{i}")
            argv = [sys.executable, os.path.abspath(__file__), "--baseline-worker"]
            argv += ["--dsn", PG_URL, "--sleep", f"{SLEEP:g}"]
            procs.append(self.procs.start(name, argv, env))
        return procs

    def wait_baseline_idle(self, procs: list[Proc], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not all("ready" in p.log_text() for p in procs):
            self.procs.check_alive(procs)
            if time.monotonic() > deadline:
                raise BenchError(f"baseline workers not ready after {timeout:g} s")
            time.sleep(0.05)
        time.sleep(0.2)

    def stop_baseline(self, procs: list[Proc], expect_jobs: int | None) -> None:
        codes = self.procs.stop(procs)
        processed = 0
        for p in procs:
            text = p.log_text()
            if codes.get(p.name) != 0:
                self.problems.append(f"{p.name}: exit code {codes.get(p.name)}: {text.strip()[-300:]}")
            m = re.search(r"processed (\d+)", text)
            processed += int(m.group(1)) if m else 0
        if expect_jobs is not None and processed != expect_jobs:
            self.problems.append(f"baseline processed {processed} jobs, expected {expect_jobs}")

    def wait_empty(self, table: str, first_id: int, procs: list[Proc], timeout: float) -> float:
        """Poll until ``table`` has no row; returns perf_counter() then.

        ``min(id) WHERE id >= last minimum`` walks the primary key from where
        the drain has got to, so a poll stays cheap however many dead rows
        the drain leaves behind it (rows are only ever removed meanwhile)."""
        low = first_id
        deadline = time.perf_counter() + timeout
        next_check = 0.0
        while True:
            low_now = self.scalar(f"SELECT min(id) FROM {table} WHERE id >= %s", (low,))
            now = time.perf_counter()
            if low_now is None:
                return now
            low = low_now
            if now > deadline:
                raise BenchError(f"{table} not empty after {timeout:g} s (min id {low})")
            if now > next_check:
                self.procs.check_alive(procs)
                next_check = now + 0.5
            time.sleep(POLL)

    def vacuum(self) -> None:
        from tourno.db import is_postgres

        if is_postgres():
            self.execute("VACUUM ANALYZE jobs")
            self.execute("VACUUM ANALYZE laravel_jobs")

    # -- measurements ------------------------------------------------------------------

    def tourno_drain(
        self,
        url: str,
        workers: int,
        jobs: int,
        tag: str,
        sleep: float = SLEEP,
        env_extra: dict[str, str] | None = None,
        imports: tuple[str, ...] = (),
    ) -> float:
        from bench.bench_jobs import BenchNoop
        from tourno.db import database
        from tourno.queue import dispatch_many

        self.vacuum()
        procs = self.start_tourno(url, workers, tag, sleep, env_extra=env_extra, imports=imports)
        try:
            self.wait_tourno_idle(procs)
            batch = [BenchNoop(n=i) for i in range(jobs)]
            with database.atomic():
                ids = dispatch_many(batch)
            t0 = time.perf_counter()
            t1 = self.wait_empty("jobs", min(ids), procs, timeout=max(120.0, jobs / 100))
        finally:
            self.stop_tourno(procs, jobs)
        return jobs / (t1 - t0)

    def redis_drain(self, workers: int, jobs: int, tag: str) -> tuple[float, float, int]:
        """Jobs/s from the return of one ``dispatch_many`` to an empty queue,
        counting only the jobs still pending (ready or reserved) at its
        return: the backend pushes in chunks of 5,000 scripts, so the workers
        start before it ends. Also the push's duration (s) and that count."""
        from bench.bench_jobs import BenchNoop
        from tourno.queue import dispatch_many

        procs = self.start_tourno(PG_URL, workers, tag, redis=True)
        try:
            self.wait_redis_idle(procs)
            batch = [BenchNoop(n=i) for i in range(jobs)]
            p0 = time.perf_counter()
            dispatch_many(batch)
            t0 = time.perf_counter()
            pending = self.redis_pending()
            t1 = self.wait_redis_empty(procs, timeout=max(120.0, jobs / 100))
        finally:
            self.stop_tourno(procs, jobs)
        return pending / (t1 - t0), t0 - p0, pending

    def redis_dispatch_rates(self, single: int, batch: int) -> tuple[float, float]:
        from bench.bench_jobs import BenchNoop
        from tourno.queue import backends, dispatch_many

        backend = backends.current()
        backend.clear(QUEUE)
        t0 = time.perf_counter()
        for i in range(single):
            BenchNoop(n=i).dispatch()
        one = single / (time.perf_counter() - t0)
        backend.clear(QUEUE)
        jobs = [BenchNoop(n=i) for i in range(batch)]
        t0 = time.perf_counter()
        dispatch_many(jobs)
        many = batch / (time.perf_counter() - t0)
        backend.clear(QUEUE)
        return one, many

    def redis_rtt(self, n: int = 300) -> float:
        client = self.redis_client()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.ping()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e6

    def baseline_insert(self, jobs: int, sent: float | None = None) -> int:
        from tourno.db import database

        now = int(time.time())
        first = None
        with database.atomic():
            for start in range(0, jobs, 2000):
                count = min(2000, jobs - start)
                params: list[object] = []
                for n in range(start, start + count):
                    params += [QUEUE, laravel_payload(n, sent), now, now]
                values = ",".join(["(%s, %s, 0, NULL, %s, %s)"] * count)
                rows = database.execute_sql(
                    "INSERT INTO laravel_jobs (queue, payload, attempts, reserved_at, available_at, "
                    f"created_at) VALUES {values} RETURNING id",
                    params,
                ).fetchall()
                low = min(r[0] for r in rows)
                first = low if first is None else min(first, low)
        assert first is not None
        return first

    def baseline_drain(self, workers: int, jobs: int, tag: str) -> float:
        self.vacuum()
        procs = self.start_baseline(workers, tag)
        try:
            self.wait_baseline_idle(procs)
            first = self.baseline_insert(jobs)
            # Fresh statistics, or PostgreSQL may pop with a bitmap scan of
            # the whole queue index and a sort: every pop then costs O(queue
            # length) and the drain turns quadratic. Tourno's claim walks its
            # partial index in order whatever the statistics say.
            self.execute("ANALYZE laravel_jobs")
            t0 = time.perf_counter()
            for p in procs:
                p.popen.send_signal(signal.SIGUSR1)
            t1 = self.wait_empty("laravel_jobs", first, procs, timeout=max(180.0, jobs / 50))
        finally:
            self.stop_baseline(procs, jobs)
        return jobs / (t1 - t0)

    def wait_latency_rows(self, kind: str, count: int, procs: list[Proc], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.scalar("SELECT count(*) FROM bench_latency WHERE kind = %s", (kind,)) < count:
            self.procs.check_alive(procs)
            if time.monotonic() > deadline:
                raise BenchError(f"{kind} latency samples missing after {timeout:g} s")
            time.sleep(0.02)

    def tourno_latency(
        self, samples: int, gap: float, redis: bool = False
    ) -> tuple[list[float], list[float]]:
        """Samples of dispatch->start and of the dispatch() call, in ms."""
        from bench.bench_jobs import BenchLatency

        self.execute("DELETE FROM bench_latency")
        procs = self.start_tourno(PG_URL, 1, "redis-latency" if redis else "latency", redis=redis)
        calls = []
        try:
            if redis:
                self.wait_redis_idle(procs)
            else:
                self.wait_tourno_idle(procs)
            for _ in range(samples):
                sent = time.time()
                BenchLatency(sent=sent).dispatch()
                calls.append((time.time() - sent) * 1000)
                time.sleep(gap)
            self.wait_latency_rows("tourno", samples, procs, timeout=30.0)
        finally:
            self.stop_tourno(procs, samples)
        ms = [r[0] * 1000 for r in self.rows("SELECT seconds FROM bench_latency WHERE kind = 'tourno'")]
        return ms, calls

    def wait_idle(self, procs: list[Proc], redis: bool) -> None:
        if redis:
            self.wait_redis_idle(procs)
        else:
            self.wait_tourno_idle(procs)

    def delayed_lateness(
        self, samples: int, url: str = PG_URL, redis: bool = False, root: str | None = None
    ) -> list[float]:
        """How late (ms after it was due) each of ``samples`` jobs dispatched
        with delay=1 starts, one idle worker at --sleep 3; the dispatches come
        at random moments, so they fall at every phase of the worker's poll."""
        from bench.bench_jobs import BenchLatency

        self.execute("DELETE FROM bench_latency")
        tag = ("redis-" if redis else "") + ("late-before" if root else "late")
        procs = self.start_tourno(url, 1, tag, redis=redis, root=root)
        try:
            self.wait_idle(procs, redis)
            for _ in range(samples):
                time.sleep(random.uniform(0.05, LATE_GAP))
                BenchLatency(sent=time.time() + LATE_DELAY).dispatch(delay=LATE_DELAY)
            self.wait_latency_rows("tourno", samples, procs, timeout=LATE_DELAY + SLEEP + 30)
        finally:
            self.stop_tourno(procs, samples)
        return [r[0] * 1000 for r in self.rows("SELECT seconds FROM bench_latency WHERE kind = 'tourno'")]

    def sqlite_wake_latency(self, samples: int, root: str | None = None) -> list[float]:
        """Dispatch->start (ms) on SQLite, one idle worker at --sleep 3, the
        dispatches at random moments, from this process (not the worker's)."""
        from bench.bench_jobs import BenchLatency

        self.execute("DELETE FROM bench_latency")
        tag = "sqlite-wake-before" if root else "sqlite-wake"
        procs = self.start_tourno(self.sqlite_url, 1, tag, root=root)
        try:
            self.wait_idle(procs, False)
            for _ in range(samples):
                time.sleep(random.uniform(0.05, LATE_GAP))
                BenchLatency(sent=time.time()).dispatch()
            self.wait_latency_rows("tourno", samples, procs, timeout=SLEEP + 30)
        finally:
            self.stop_tourno(procs, samples)
        return [r[0] * 1000 for r in self.rows("SELECT seconds FROM bench_latency WHERE kind = 'tourno'")]

    def sqlite_dispatch_cost(self, n: int) -> tuple[float, float]:
        """The median dispatch() on SQLite (us) with one worker listening: as
        shipped, and with the wake-up switched off in this process, in
        alternating blocks so that noise falls on both. The jobs are delayed
        an hour: the worker has no reason to wake, so only sending is measured
        (no claim competes for the write lock)."""
        from bench.bench_jobs import BenchNoop
        from tourno.queue.backends import database as dbq

        procs = self.start_tourno(self.sqlite_url, 1, "sqlite-disp")
        announce = dbq.SqliteBackend.__dict__["_announce"]
        silent = staticmethod(lambda *args, **kwargs: None)
        times: dict[bool, list[float]] = {True: [], False: []}
        try:
            self.wait_idle(procs, False)
            for block in range(10):
                wake = block % 2 == 0
                setattr(dbq.SqliteBackend, "_announce", announce if wake else silent)  # noqa: B010
                for i in range(n // 10):
                    t0 = time.perf_counter()
                    BenchNoop(n=i).dispatch(delay=3600)
                    times[wake].append((time.perf_counter() - t0) * 1e6)
        finally:
            setattr(dbq.SqliteBackend, "_announce", announce)  # noqa: B010
            self.stop_tourno(procs, 0)
            self.execute("DELETE FROM jobs")
        return statistics.median(times[True]), statistics.median(times[False])

    def dispatch_rates_without_due_index(self, single: int, batch: int) -> tuple[float, float]:
        """dispatch_rates() with jobs_due_idx dropped (it is put back after)."""
        self.execute("DROP INDEX jobs_due_idx")
        try:
            return self.dispatch_rates(single, batch)
        finally:
            self.execute(
                "CREATE INDEX IF NOT EXISTS jobs_due_idx ON jobs (queue, available_at) WHERE reserved_at IS NULL"
            )

    def baseline_latency(self, samples: int) -> list[float]:
        self.execute("DELETE FROM bench_latency")
        procs = self.start_baseline(1, "baseline-latency")
        try:
            self.wait_baseline_idle(procs)
            for i in range(samples):
                # A random phase against the worker's 3 s poll.
                time.sleep(random.uniform(0, SLEEP))
                self.baseline_insert(1, sent=time.time())
                self.wait_latency_rows("baseline", i + 1, procs, timeout=SLEEP + 10)
        finally:
            self.stop_baseline(procs, samples)
        return [r[0] * 1000 for r in self.rows("SELECT seconds FROM bench_latency WHERE kind = 'baseline'")]

    def server_costs(self, n: int = 300) -> tuple[float, float]:
        """The median cost of a round trip and of a committed write: what
        every per-job statement pays, and what the figures lean on."""
        from tourno.db import database

        def median_us(sql: str, params=()) -> float:
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                database.execute_sql(sql, params)
                times.append(time.perf_counter() - t0)
            return statistics.median(times) * 1e6

        rtt = median_us("SELECT 1")
        commit = median_us("INSERT INTO bench_latency (kind, seconds) VALUES ('probe', 0)")
        self.execute("DELETE FROM bench_latency")
        return rtt, commit

    def dispatch_rates(self, single: int, batch: int) -> tuple[float, float]:
        from bench.bench_jobs import BenchNoop
        from tourno.queue import dispatch_many

        self.execute("TRUNCATE jobs")
        t0 = time.perf_counter()
        for i in range(single):
            BenchNoop(n=i).dispatch()
        one = single / (time.perf_counter() - t0)
        self.execute("TRUNCATE jobs")
        self.vacuum()
        jobs = [BenchNoop(n=i) for i in range(batch)]
        t0 = time.perf_counter()
        dispatch_many(jobs)
        many = batch / (time.perf_counter() - t0)
        self.execute("TRUNCATE jobs")
        return one, many

    def memory(self, jobs: int, warmup: int) -> dict[str, float]:
        from bench.bench_jobs import BenchNoop
        from tourno.db import database
        from tourno.queue import dispatch_many

        self.vacuum()
        procs = self.start_tourno(PG_URL, 1, "memory")
        pid = procs[0].pid
        try:
            self.wait_tourno_idle(procs)
            idle = proc_status(pid)["VmRSS"]
            first = None
            with database.atomic():
                for start in range(0, jobs, 20_000):
                    ids = dispatch_many([BenchNoop(n=i) for i in range(start, min(jobs, start + 20_000))])
                    first = min(ids) if first is None else min(first, min(ids))
            assert first is not None
            t0 = time.perf_counter()
            deadline = t0 + max(300.0, jobs / 100)
            low = first
            warm = None
            trail: list[tuple[int, float]] = []
            next_mark = warmup
            while True:
                low_now = self.scalar("SELECT min(id) FROM jobs WHERE id >= %s", (low,))
                now = time.perf_counter()
                rss = proc_status(pid)["VmRSS"]
                if low_now is None:
                    end = proc_status(pid)
                    break
                low = low_now
                done = low - first
                if done >= next_mark:
                    if warm is None:
                        warm = rss
                    trail.append((done, rss))
                    next_mark += max(warmup, jobs // 10)
                if now > deadline:
                    raise BenchError(f"memory drain not finished after {now - t0:.0f} s")
                self.procs.check_alive(procs)
                time.sleep(0.05)
            elapsed = now - t0
        finally:
            self.stop_tourno(procs, jobs)
        if warm is None:
            raise BenchError("the drain ended before the warm-up mark")
        trail.append((jobs, end["VmRSS"]))
        return {
            "idle": idle,
            "mem_warm": warm,
            "mem_end": end["VmRSS"],
            "mem_growth": end["VmRSS"] - warm,
            "mem_peak": end["VmHWM"],
            "mem_rate": jobs / elapsed,
            "trail": trail,  # type: ignore[dict-item]
        }

    # -- one run ------------------------------------------------------------------------

    def record(self, key: str, value: float) -> None:
        self.results[key].append(value)
        fig = next(f for f in self.figures if f.key == key)
        print(f"    {fig.label:<44} {fig.fmt(value):>10} {fig.unit}", flush=True)

    def step(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BenchError as exc:
            self.problems.append(f"{what}: {exc}")
            print(f"    {what}: FAILED: {exc}", flush=True)
        except Exception as exc:  # noqa: BLE001 - report it, go on with the other figures
            self.problems.append(f"{what}: {type(exc).__name__}: {exc}")
            print(f"    {what}: FAILED: {type(exc).__name__}: {exc}", flush=True)
        finally:
            self.procs.kill_all()

    def run_once(self, index: int) -> None:
        if self.only == "metrics":
            with self.use(PG_URL):
                self.metrics_drains({})
            return
        if self.part == "all" and self.driver in ("database", "both"):
            self.run_database()
        if self.part == "all" and self.driver in ("redis", "both"):
            self.run_redis()
        self.run_wakeup()

    def run_wakeup(self) -> None:
        """The wake-up figures: delayed lateness (and with the --before code),
        SQLite dispatch->start, and what the wake-ups cost a dispatch."""
        s = self.sizes
        n = s.late_samples
        variants = [("", None)] + ([("_b", self.before_root)] if self.before_root else [])
        if self.driver in ("database", "both"):
            with self.use(PG_URL):
                for suffix, root in variants:

                    def late(suffix: str = suffix, root: str | None = root) -> None:
                        ms = self.delayed_lateness(n, root=root)
                        self.record(f"dl{suffix}_p50", percentile(ms, 50))
                        self.record(f"dl{suffix}_p95", percentile(ms, 95))

                    self.step(f"delayed lateness{' (before)' if root else ''}", late)

                def rates() -> None:
                    # With and without the index in turn (medians of three
                    # each), so that the machine's noise falls on both.
                    one: dict[bool, list[float]] = {True: [], False: []}
                    many: dict[bool, list[float]] = {True: [], False: []}
                    for i in range(6):
                        indexed = i % 2 == 0
                        measure = self.dispatch_rates if indexed else self.dispatch_rates_without_due_index
                        a, b = measure(s.single_dispatch // 2, s.batch_dispatch)
                        one[indexed].append(a)
                        many[indexed].append(b)
                    # The full run has its own disp_1 and disp_n already.
                    if self.part == "wakeup":
                        self.record("disp_1", statistics.median(one[True]))
                        self.record("disp_n", statistics.median(many[True]))
                    self.record("disp_1_noidx", statistics.median(one[False]))
                    self.record("disp_n_noidx", statistics.median(many[False]))

                self.step("dispatch rate without jobs_due_idx", rates)
            with self.use(self.sqlite_url):
                for suffix, root in variants:

                    def wake(suffix: str = suffix, root: str | None = root) -> None:
                        ms = self.sqlite_wake_latency(n, root=root)
                        self.record(f"sqw{suffix}_p50", percentile(ms, 50))
                        self.record(f"sqw{suffix}_p95", percentile(ms, 95))

                    self.step(f"SQLite dispatch->start{' (before)' if root else ''}", wake)

                def cost() -> None:
                    with_wake, without = self.sqlite_dispatch_cost(s.single_dispatch)
                    self.record("sq_disp_wake", with_wake)
                    self.record("sq_disp_nowake", without)

                self.step("SQLite dispatch cost of the wake-up", cost)
        if self.driver in ("redis", "both"):
            with self.use(PG_URL, redis=True):
                for suffix, root in variants:

                    def rlate(suffix: str = suffix, root: str | None = root) -> None:
                        ms = self.delayed_lateness(n, redis=True, root=root)
                        self.record(f"rd_dl{suffix}_p50", percentile(ms, 50))
                        self.record(f"rd_dl{suffix}_p95", percentile(ms, 95))

                    self.step(f"Redis delayed lateness{' (before)' if root else ''}", rlate)

    def run_redis(self) -> None:
        s = self.sizes
        with self.use(PG_URL, redis=True):
            self.step("Redis round trip", lambda: self.record("rd_rtt", self.redis_rtt()))

            def dispatch() -> None:
                one, many = self.redis_dispatch_rates(s.single_dispatch, s.batch_dispatch)
                self.record("rd_disp_1", one)
                self.record("rd_disp_n", many)

            self.step("Redis dispatch rate", dispatch)

            for workers in (1, 4):

                def drain(workers: int = workers) -> None:
                    rate, push, pending = self.redis_drain(workers, s.drain_jobs, f"redis-t{workers}")
                    print(
                        f"    (Redis push of {s.drain_jobs:,} jobs took {push * 1000:.0f} ms; "
                        f"{pending:,} still pending when the clock started: the rate counts those)",
                        flush=True,
                    )
                    self.record(f"rd_t{workers}", rate)

                self.step(f"Redis drain, Tourno, {workers} worker(s)", drain)

            def latency() -> None:
                ms, calls = self.tourno_latency(s.latency_samples, s.latency_gap, redis=True)
                self.record("rd_lat_p50", percentile(ms, 50))
                self.record("rd_lat_p95", percentile(ms, 95))
                self.record("rd_lat_max", max(ms))
                self.record("rd_lat_call", percentile(calls, 50))

            self.step("Redis latency, Tourno", latency)

    def metrics_drains(self, drains: dict[str, float]) -> None:
        """PostgreSQL drains with metrics and events off, then on, for 1 and 4
        workers (the difference is the whole cost: counting, the upsert CTE
        of each claim, one event subscriber). Off goes first in odd runs and
        second in even ones, so that a machine getting busier or quieter
        during a run does not favour either."""
        s = self.sizes
        self.metrics_rounds += 1
        for workers in (1, 4):
            modes = [
                ("off", {"TOURNO_QUEUE_METRICS": "0"}, ()),
                ("on", {"TOURNO_QUEUE_METRICS": "1"}, ("bench.bench_events",)),
            ]
            if self.metrics_rounds % 2 == 0:
                modes.reverse()
            for mode, env_extra, imports in modes:

                def metered(workers: int = workers, mode: str = mode, env_extra=env_extra, imports=imports):
                    drains[f"{mode}{workers}"] = self.tourno_drain(
                        PG_URL,
                        workers,
                        s.drain_jobs,
                        f"pg-m{mode}{workers}",
                        env_extra=env_extra,
                        imports=imports,
                    )
                    self.record(f"mo_{mode}{workers}", drains[f"{mode}{workers}"])

                self.step(f"PG drain, metrics+events {mode}, {workers} worker(s)", metered)
            if f"on{workers}" in drains and f"off{workers}" in drains:
                self.record(f"mo_ratio{workers}", drains[f"on{workers}"] / drains[f"off{workers}"])

    def run_database(self) -> None:
        s = self.sizes
        per_run_baseline = -(-s.baseline_latency_samples // self.runs)
        drains: dict[str, float] = {}

        with self.use(PG_URL):

            def costs() -> None:
                rtt, commit = self.server_costs()
                self.record("pg_rtt", rtt)
                self.record("pg_commit", commit)

            self.step("server costs", costs)

            def dispatch() -> None:
                one, many = self.dispatch_rates(s.single_dispatch, s.batch_dispatch)
                self.record("disp_1", one)
                self.record("disp_n", many)

            self.step("dispatch rate", dispatch)

            # Tourno and the baseline alternate, so that noise on this shared
            # machine falls on both alike.
            for workers in (1, 4):

                def tourno(workers: int = workers) -> None:
                    drains[f"t{workers}"] = self.tourno_drain(PG_URL, workers, s.drain_jobs, f"pg-t{workers}")
                    self.record(f"pg_t{workers}", drains[f"t{workers}"])

                def baseline(workers: int = workers) -> None:
                    drains[f"b{workers}"] = self.baseline_drain(workers, s.drain_jobs, f"pg-b{workers}")
                    self.record(f"pg_b{workers}", drains[f"b{workers}"])

                self.step(f"PG drain, Tourno, {workers} worker(s)", tourno)
                self.step(f"PG drain, baseline, {workers} worker(s)", baseline)
                if f"t{workers}" in drains and f"b{workers}" in drains:
                    self.record(f"ratio{workers}", drains[f"t{workers}"] / drains[f"b{workers}"])

            self.metrics_drains(drains)

            def latency() -> None:
                ms, calls = self.tourno_latency(s.latency_samples, s.latency_gap)
                self.record("lat_p50", percentile(ms, 50))
                self.record("lat_p95", percentile(ms, 95))
                self.record("lat_max", max(ms))
                self.record("lat_call", percentile(calls, 50))

            self.step("latency, Tourno", latency)

            def blatency() -> None:
                ms = self.baseline_latency(per_run_baseline)
                self.pooled_baseline_latency += ms
                print(
                    f"    baseline latency samples (ms): {', '.join(f'{v:.0f}' for v in ms)}",
                    flush=True,
                )

            self.step("latency, baseline", blatency)

        with self.use(self.sqlite_url):
            for workers in (1, 2):

                def sqlite(workers: int = workers) -> None:
                    rate = self.tourno_drain(
                        self.sqlite_url, workers, s.sqlite_jobs, f"sqlite-{workers}", SQLITE_SLEEP
                    )
                    self.record(f"sq_{workers}", rate)

                self.step(f"SQLite drain, {workers} worker(s)", sqlite)

        with self.use(PG_URL):

            def memory() -> None:
                m = self.memory(s.memory_jobs, s.memory_warmup)
                print(
                    f"    worker RSS idle {m['idle']:.1f} MiB; by jobs done: "
                    + ", ".join(f"{d // 1000}k:{r:.1f}" for d, r in m["trail"]),  # type: ignore[union-attr]
                    flush=True,
                )
                for key in ("mem_warm", "mem_end", "mem_growth", "mem_peak", "mem_rate"):
                    self.record(key, m[key])

            self.step("memory", memory)

    # -- the report --------------------------------------------------------------------

    def finish(self) -> None:
        if self.pooled_baseline_latency:
            ms = self.pooled_baseline_latency
            self.results["blat_p50"] = [percentile(ms, 50)]
            self.results["blat_p95"] = [percentile(ms, 95)]
            self.results["blat_max"] = [max(ms)]

    def report(self) -> int:
        print()
        print(f"{'figure':<44} {'median':>10} {'unit':<7} {'runs':<28} {'target':<10} verdict")
        print("-" * 112)
        misses = 0
        for fig in self.figures:
            values = self.results[fig.key]
            median = statistics.median(values) if values else None
            runs = " / ".join(fig.fmt(v) for v in values)
            target = f"{fig.op} {fig.fmt(fig.target)}" if fig.op else ("-" if fig.driver == "redis" else "")
            verdict = fig.verdict(median)
            misses += verdict.startswith("MISS")
            print(f"{fig.label:<44} {fig.fmt(median):>10} {fig.unit:<7} {runs:<28} {target:<10} {verdict}")
        n = len(self.pooled_baseline_latency)
        if self.driver != "redis":
            print(f"* baseline latency: {n} samples pooled over all runs (it polls every {SLEEP:g} s)")
        return misses


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001
        return "?"


def checkout() -> str:
    """The commit under test (``-dirty`` when tracked files are modified)."""
    result = subprocess.run(
        ["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return result.stdout.strip() or "?"


def header(
    pg_version: str, sizes: Sizes, runs: int, quick: bool, commit: str, redis_info: str | None = None
) -> None:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    print("Tourno queue benchmark")
    print(f"  command     {shlex.join([sys.executable, *sys.argv])}")
    print(f"  date        {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"  host        nproc={nproc}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  PostgreSQL  {pg_version} at {PG_SERVER}")
    if redis_info is not None:
        print(f"  Redis       {redis_info}")
    print(
        f"  Python      {platform.python_version()}, peewee {_version('peewee')}, "
        f"psycopg2 {_version('psycopg2-binary')}, SQLite {_sqlite_version()}"
    )
    print(f"  checkout    {ROOT} @ {commit}")
    print(
        f"  sizes       {'quick' if quick else 'full'}: drains {sizes.drain_jobs:,} jobs "
        f"(SQLite {sizes.sqlite_jobs:,}), latency {sizes.latency_samples} samples "
        f"{sizes.latency_gap * 1000:.0f} ms apart, dispatch {sizes.single_dispatch:,} single / "
        f"{sizes.batch_dispatch:,} batched, memory drain {sizes.memory_jobs:,} "
        f"(warm-up {sizes.memory_warmup:,}); median of {runs} run(s)"
    )
    print(
        f"  method      workers started first and idle; jobs inserted in one transaction; timed from "
        f"commit to an empty table. `tourno work --sleep {SLEEP:g}` (SQLite: --sleep {SQLITE_SLEEP:g}, "
        "no NOTIFY);"
    )
    print(
        "              baseline workers poll every 3 s; after the insert the script runs ANALYZE "
        "laravel_jobs, then wakes them with SIGUSR1 and starts the clock."
    )
    if redis_info is not None:
        print(
            f"              Redis: `tourno work redis --sleep {SLEEP:g}` workers idle first; the jobs pushed by "
            "one dispatch_many; from its return until"
        )
        print(
            "              the ready/delayed/reserved sets are empty, counting the jobs still pending at "
            "its return (no targets: '-')."
        )
    print(flush=True)


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a run of about a minute")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (median); default 3, quick 1")
    parser.add_argument(
        "--driver",
        choices=("database", "redis", "both"),
        default="database",
        help="queue driver(s) to measure (default database; redis and both need a Redis server)",
    )
    parser.add_argument(
        "--part",
        choices=("all", "wakeup"),
        default="all",
        help="all figures (default), or only the wake-up ones (delayed lateness, SQLite wake-ups)",
    )
    parser.add_argument(
        "--before",
        metavar="REV",
        default=None,
        help="also run the wake-up figures' workers on the code of git revision REV, side by side",
    )
    parser.add_argument(
        "--only",
        choices=("all", "metrics"),
        default="all",
        help="metrics: only the PostgreSQL drains with metrics and events off and on",
    )
    parser.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", default=PG_URL, help=argparse.SUPPRESS)
    parser.add_argument("--sleep", type=float, default=SLEEP, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_worker:
        return baseline_worker(args.dsn, QUEUE, args.sleep)

    sizes = QUICK if args.quick else FULL
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        parser.error("--runs must be at least 1")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tourno-bench-"))
    bench = Bench(sizes, runs, workdir, args.driver, args.part, args.before, args.only)
    keep = False
    try:
        pg_version = bench.create_databases()
        commit = checkout()
        redis_info = bench.redis_server_info() if args.driver != "database" else None
        header(pg_version, sizes, runs, args.quick, commit, redis_info)
        if args.part == "wakeup" or args.before:
            print(
                f"  wake-ups    {sizes.late_samples} samples per figure, one idle worker at --sleep {SLEEP:g}, "
                f"dispatched {0.05 * 1000:.0f}-{LATE_GAP * 1000:.0f} ms apart at random; lateness = start - due "
                f"for delay={LATE_DELAY:g}; before = {args.before or '-'}",
                flush=True,
            )
        for index in range(runs):
            print(f"run {index + 1}/{runs}", flush=True)
            bench.run_once(index)
        bench.finish()
        if checkout() != commit:
            bench.problems.append(f"the checkout changed during the run: {commit} -> {checkout()}")
        misses = bench.report()
        print()
        if bench.problems:
            keep = True
            print(f"problems noticed ({len(bench.problems)}); worker logs kept in {workdir}:")
            for line in bench.problems:
                print(f"  - {line}")
        else:
            print("problems noticed: none (worker exit codes, logs, job counts and failed_jobs checked)")
        print(f"{misses} figure(s) missed their target")
        print(
            f"finished {dt.datetime.now().astimezone().isoformat(timespec='seconds')} in "
            f"{time.monotonic() - started:.0f} s; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        bench.procs.kill_all()
        if args.driver != "database":
            bench.drop_redis_keys()
        bench.drop_databases()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

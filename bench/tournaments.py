"""Benchmark of the tournament start and of Swiss pairing (issue 3).

Prints: the time to start one 1,024-player single-elimination and one
256-player double-elimination tournament on PostgreSQL (median of 3, each on a
fresh tournament), the rows each start writes, and the time to pair a Swiss
round for 512 players (pure function, rounds 1 to 6 with random results).
Target: each under 1 s. Then the rate at which results are applied through
the services when whole tournaments are decided match by match.

Usage: ``python bench/tournaments.py [--part start|swiss|results|reports ...]
[--runs N] [--players N] [--database NAME]`` (``--help`` says more; with no
``--part``, the start, Swiss and results parts as before). ``reports`` is the
players' write path: every match decided by one player's report
(``report_result``, single-report mode), reports per second. PostgreSQL at
``TOURNO_BENCH_PG``, default ``postgresql://postgres@127.0.0.1:5432``; the
database (``tourno_bench_t`` unless ``--database``) is created, migrated and
dropped again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

from tourno import db as tdb  # noqa: E402
from tourno import migrations  # noqa: E402
from tourno.accounts.models import Role, User
from tourno.mail.models import EmailOutbox
from tourno.tournaments import services  # noqa: E402
from tourno.tournaments.formats import (  # noqa: E402
    Outcome,
    Result,
    compute_standings,
    history_from_results,
    pair_next_round,
)
from tourno.tournaments.models import (
    Match,
    MatchEvent,
    MatchState,
    Participant,
    ParticipantStatus,
    Round,
    Tournament,
)

PG_SERVER = os.environ.get("TOURNO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
BENCH_DB = "tourno_bench_t"
TARGET = 1.0
RUNS = 3
PARTS = ("start", "swiss", "results", "reports")
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def admin_sql(statement: str) -> None:
    admin = tdb.connect(f"{PG_SERVER}/postgres")
    admin.connect()
    try:
        admin.execute_sql(statement)
    finally:
        admin.close()


def setup_database() -> None:
    admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{BENCH_DB}"')
    tdb.init(f"{PG_SERVER}/{BENCH_DB}")
    tdb.open_connection()
    migrations.migrate(tdb.database.obj)


_users = 0


def ready_tournament(organizer: User, fmt: str, n: int, **options: object) -> Tournament:
    """A published tournament with ``n`` registered players (set up in bulk: not measured)."""
    global _users
    t = services.create_tournament(
        organizer, name=f"Bench {fmt} {n}", game="Chess", format=fmt, capacity=n, **options
    )
    t = services.publish(t, organizer, now=NOW - dt.timedelta(days=1))
    first = _users
    _users += n
    with tdb.database.atomic():
        User.insert_many(
            [
                {"email": f"b{i}@example.com", "display_name": f"B{i}", "role": "player", "created_at": NOW}
                for i in range(first, first + n)
            ]
        ).execute()
        emails = [f"b{i}@example.com" for i in range(first, first + n)]
        ids = [u.id for u in User.select(User.id).where(User.email.in_(emails)).order_by(User.id)]
        rows = [
            {
                "tournament": t.id,
                "user": uid,
                "display_name": f"B{uid}",
                "status": ParticipantStatus.REGISTERED,
                "version": 1,
                "created_at": NOW + dt.timedelta(microseconds=i),
            }
            for i, uid in enumerate(ids)
        ]
        for start in range(0, len(rows), 500):
            Participant.insert_many(rows[start : start + 500]).execute()
        Tournament.update(participants_count=n, full_since=NOW).where(Tournament.id == t.id).execute()
    return Tournament.get_by_id(t.id)


def rows_written(t: Tournament, n: int) -> dict[str, int]:
    return {
        "rounds": Round.select().where(Round.tournament == t.id).count(),
        "matches": Match.select().where(Match.tournament == t.id).count(),
        "match_events": MatchEvent.select().where(MatchEvent.tournament == t.id).count(),
        "emails": sum(
            1
            for row in EmailOutbox.select(EmailOutbox.context).where(
                EmailOutbox.template.in_(("match_ready", "tournament_started"))
            )
            if row.context.get("tournament_id") == t.id
        ),
        "participants (seeded)": n,
        "tournament": 1,
    }


def bench_start(organizer: User, fmt: str, n: int) -> None:
    times = []
    written: dict[str, int] = {}
    for _ in range(RUNS):
        t = ready_tournament(organizer, fmt, n)
        began = time.perf_counter()
        services.start_tournament(t, organizer, now=NOW)
        times.append(time.perf_counter() - began)
        written = rows_written(t, n)
    median = statistics.median(times)
    verdict = "ok" if median < TARGET else "OVER TARGET"
    runs = ", ".join(f"{s:.3f}" for s in times)
    print(f"start {fmt}, {n} players: median {median:.3f} s (runs {runs}) [{verdict}]")
    detail = ", ".join(f"{k} {v}" for k, v in written.items())
    print(f"  rows written per start: {sum(written.values())} ({detail})")


def bench_results(organizer: User, fmt: str, n: int) -> None:
    """Every match of a started tournament decided through the services, one
    organizer decision per match (each its own transaction: the bracket
    advances, the next match opens with its mail, the last completes the
    tournament): results applied per second."""
    rates = []
    for _ in range(RUNS):
        t = ready_tournament(organizer, fmt, n)
        services.start_tournament(t, organizer, now=NOW)
        decided = 0
        began = time.perf_counter()
        while True:
            open_ids = [
                m.id
                for m in Match.select(Match.id).where(
                    Match.tournament == t.id, Match.state == MatchState.OPEN
                )
            ]
            if not open_ids:
                break
            for mid in open_ids:
                services.resolve_match(mid, organizer, player1_score=2, player2_score=1, now=NOW)
                decided += 1
        rates.append(decided / (time.perf_counter() - began))
        assert Tournament.get_by_id(t.id).state.value == "complete"
    runs = ", ".join(f"{r:.0f}" for r in rates)
    print(
        f"results applied, {fmt} {n} players to completion: median {statistics.median(rates):.0f} results/s ",
        end="",
    )
    print(f"(runs {runs}; one transaction each, on one connection)")


def bench_reports(organizer: User, fmt: str, n: int) -> None:
    """Every match of a started single-report tournament decided by its first
    player's report (``report_result``: the players' write path, input
    checks included): reports per second."""
    rates = []
    for _ in range(RUNS):
        t = ready_tournament(organizer, fmt, n, report_mode="single_report")
        services.start_tournament(t, organizer, now=NOW)
        players = {
            p.id: p.user
            for p in Participant.select(Participant, User).join(User).where(Participant.tournament == t.id)
        }
        decided = 0
        began = time.perf_counter()
        while True:
            open_matches = list(
                Match.select(Match.id, Match.player1).where(
                    Match.tournament == t.id, Match.state == MatchState.OPEN
                )
            )
            if not open_matches:
                break
            for m in open_matches:
                reporter = players[m.player1_id]
                services.report_result(m.id, reporter, player1_score=2, player2_score=1, now=NOW)
                decided += 1
        rates.append(decided / (time.perf_counter() - began))
        assert Tournament.get_by_id(t.id).state.value == "complete"
    runs = ", ".join(f"{r:.0f}" for r in rates)
    print(
        f"reports, {fmt} {n} players to completion: median {statistics.median(rates):.0f} reports/s ", end=""
    )
    print(f"(runs {runs}; one transaction each, on one connection)")


def bench_swiss(n: int = 512, rounds: int = 6) -> None:
    rng = random.Random(3)
    seeds = list(range(1, n + 1))
    results: list[Result] = []
    times = []
    for number in range(1, rounds + 1):
        standings = compute_standings(seeds, results)
        met, had_bye = history_from_results(results)
        began = time.perf_counter()
        plan = pair_next_round(standings, met, had_bye, number)
        times.append(time.perf_counter() - began)
        for m in plan:
            if m.has_bye:
                results.append(Result(m.slot1.seed, None, Outcome.BYE))
            else:
                outcome = rng.choice([Outcome.FIRST_WINS, Outcome.SECOND_WINS, Outcome.DRAW])
                results.append(Result(m.slot1.seed, m.slot2.seed, outcome))
    worst = max(times)
    verdict = "ok" if worst < TARGET else "OVER TARGET"
    per_round = ", ".join(f"{s:.3f}" for s in times)
    print(f"swiss round for {n} players (pure pairing): median {statistics.median(times):.3f} s, ", end="")
    print(f"max {worst:.3f} s over rounds 1-{rounds} ({per_round}) [{verdict}]")


def main(argv: list[str] | None = None) -> int:
    global RUNS, BENCH_DB
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part",
        action="append",
        choices=PARTS,
        help="what to measure (repeatable; default: start, swiss and results)",
    )
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs of each measurement (default {RUNS})")
    parser.add_argument(
        "--players",
        type=int,
        default=None,
        help="players of the results and reports tournaments (default 256 single elimination and 64 Swiss)",
    )
    parser.add_argument("--database", default=BENCH_DB, help=f"scratch database (default {BENCH_DB})")
    args = parser.parse_args(argv)
    parts = args.part or ["start", "swiss", "results"]
    RUNS, BENCH_DB = args.runs, args.database
    sizes = [("single_elimination", args.players or 256), ("swiss", args.players or 64)]
    setup_database()
    try:
        organizer = services.create_user("bench-org@example.com", "Bench", role=Role.ORGANIZER)
        version = tdb.database.execute_sql("SELECT version()").fetchone()[0].split(",")[0]
        print(f"PostgreSQL: {version}; Python {sys.version.split()[0]}")
        if "start" in parts:
            bench_start(organizer, "single_elimination", 1024)
            bench_start(organizer, "double_elimination", 256)
        if "swiss" in parts:
            bench_swiss()
        if "results" in parts:
            for fmt, n in sizes:
                bench_results(organizer, fmt, n)
        if "reports" in parts:
            for fmt, n in sizes:
                bench_reports(organizer, fmt, n)
    finally:
        tdb.database.close()
        admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

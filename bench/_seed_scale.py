"""Bulk seed for ``bench/scale.py``: tournaments in every state with their
participants, rounds, matches, reports and outbox rows, written with
``INSERT ... SELECT`` over ``generate_series`` (no row goes through Python).

Ids are arithmetic, so rows can point at each other without lookups:
tournament ``i`` owns participants ``(i-1)*64 + seed``, rounds
``(i-1)*16 + ordinal`` and matches ``(i-1)*256 + ordinal``; the sequences are
moved past them at the end, so the services' own inserts follow on.

What "nothing is due" means here, job by job (``reference/domain.md`` §8):
every actionable match has its deadline at least 30 minutes ahead and, when
its warning time is past (or less than 30 minutes away), has been warned;
full pending tournaments filled at most 35 minutes ago, or were reminded and
are not 48 h old; auto-start tournaments are not full and start in the
future; no pending mail is due. The margins keep it so while the bench runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable

import peewee

# Kinds by ``i % 100`` (percent of the seeded tournaments).
KINDS_SQL = """
    CASE
        WHEN i % 100 < 5 THEN 'draft'
        WHEN i % 100 < 25 THEN 'open'
        WHEN i % 100 < 27 THEN 'full'
        WHEN i % 100 < 56 THEN 'underway'
        WHEN i % 100 = 56 THEN 'review'
        WHEN i % 100 < 92 THEN 'complete'
        WHEN i % 2 = 0 THEN 'cancelled_early'
        ELSE 'cancelled_late'
    END
"""

# Formats by block of 100 ids: 40 % single elimination (64 players), 20 %
# double elimination (32), 20 % round robin (12), 20 % Swiss (64, 6 rounds).
FORMAT_SQL = """
    CASE
        WHEN (i / 100) % 10 < 4 THEN 'single_elimination'
        WHEN (i / 100) % 10 < 6 THEN 'double_elimination'
        WHEN (i / 100) % 10 < 8 THEN 'round_robin'
        ELSE 'swiss'
    END
"""

FORMATS = [
    # format, players, stages (rounds in playing order)
    ("single_elimination", 64, 6),
    ("double_elimination", 32, 11),
    ("round_robin", 12, 11),
    ("swiss", 64, 6),
]


def _round_template() -> list[tuple]:
    """(format, bracket, number, matches, offset, stage, is_final, next_offset, ordinal)."""
    rows: list[tuple] = []

    def add(fmt: str, bracket: str, number: int, n: int, stage: int, final: bool, nxt: int | None) -> None:
        offset = sum(r[3] for r in rows if r[0] == fmt)
        ordinal = sum(1 for r in rows if r[0] == fmt) + 1
        rows.append((fmt, bracket, number, n, offset, stage, final, nxt, ordinal))

    se = [32, 16, 8, 4, 2, 1]
    offsets = [sum(se[:k]) for k in range(len(se))]
    for r, n in enumerate(se, start=1):
        add("single_elimination", "winners", r, n, r, r == len(se), offsets[r] if r < len(se) else None)
    # Double elimination, 32 players: (bracket, number, matches, stage) in playing order.
    de = [
        ("winners", 1, 16, 1),
        ("winners", 2, 8, 2),
        ("losers", 1, 8, 2),
        ("losers", 2, 8, 3),
        ("winners", 3, 4, 3),
        ("losers", 3, 4, 4),
        ("losers", 4, 4, 5),
        ("winners", 4, 2, 5),
        ("losers", 5, 2, 6),
        ("losers", 6, 2, 7),
        ("winners", 5, 1, 7),
        ("losers", 7, 1, 8),
        ("losers", 8, 1, 9),
        ("grand_final", 1, 1, 10),
        ("grand_final", 2, 1, 11),
    ]
    for bracket, number, n, stage in de:
        add("double_elimination", bracket, number, n, stage, bracket == "grand_final", None)
    for r in range(1, 12):
        add("round_robin", "round_robin", r, 6, r, False, None)
    for r in range(1, 7):
        add("swiss", "swiss", r, 32, r, False, None)
    return rows


PREFIX = {"winners": "W", "losers": "L", "grand_final": "GF", "round_robin": "R", "swiss": "S"}

# The state of a match in the current round of an underway tournament, by a
# hash of the match: 40 % complete, 35 % open, 15 % awaiting confirmation,
# 5 % underway, 5 % disputed.
CURRENT_STATES = ["complete"] * 8 + ["open"] * 7 + ["awaiting_confirmation"] * 3 + ["underway", "disputed"]


@dataclasses.dataclass
class SeedSizes:
    tournaments: int
    autostart: int
    users: int


def _steps(sizes: SeedSizes) -> list[tuple[str, str]]:
    n, a, u = sizes.tournaments, sizes.autostart, sizes.users
    states = "ARRAY[" + ", ".join(f"'{s}'" for s in CURRENT_STATES) + "]"
    template = ", ".join(
        "('{}', '{}', {}, {}, {}, {}, {}, {}, {})".format(
            fmt,
            bracket,
            number,
            m,
            off,
            stage,
            "true" if final else "false",
            "NULL" if nxt is None else nxt,
            o,
        )
        for fmt, bracket, number, m, off, stage, final, nxt, o in _round_template()
    )
    formats = ", ".join(f"('{f}', {p}, {s})" for f, p, s in FORMATS)
    prefix = "CASE r.bracket " + " ".join(f"WHEN '{b}' THEN '{p}'" for b, p in PREFIX.items()) + " END"
    return [
        (
            "helper tables",
            f"""
            CREATE TEMP TABLE seed_rounds (fmt text, bracket text, number int, n int, off int, stage int,
                is_final boolean, next_off int, rord int);
            INSERT INTO seed_rounds VALUES {template};
            CREATE TEMP TABLE seed_formats (fmt text, players int, maxstage int);
            INSERT INTO seed_formats VALUES {formats};
            CREATE TEMP TABLE seed_t AS
            SELECT s.*, f.players, f.maxstage,
                CASE s.kind
                    WHEN 'underway' THEN 1 + (s.i * 13) % f.maxstage
                    WHEN 'cancelled_late' THEN 1 + (s.i * 7) % f.maxstage
                    WHEN 'review' THEN f.maxstage
                    WHEN 'complete' THEN f.maxstage + 1
                    ELSE 0
                END AS cur,
                CASE
                    WHEN s.kind = 'complete' THEN %(now)s - make_interval(days => 10 + s.i % 300)
                    ELSE %(now)s - make_interval(days => 1 + s.i % 10)
                END AS started
            FROM (
                SELECT i, {KINDS_SQL} AS kind, {FORMAT_SQL} AS fmt FROM generate_series(1, {n}) i
                UNION ALL
                SELECT i, 'autostart',
                    CASE WHEN i % 5 < 3 THEN 'single_elimination'
                         WHEN i % 5 = 3 THEN 'double_elimination' ELSE 'swiss' END
                FROM generate_series({n + 1}, {n + a}) i
            ) s JOIN seed_formats f ON f.fmt = s.fmt;
            -- Auto-start tournaments are 64-player whatever their format.
            UPDATE seed_t SET players = 64 WHERE kind = 'autostart';
            ALTER TABLE seed_t ADD COLUMN pc int;
            UPDATE seed_t SET pc = CASE
                WHEN kind = 'draft' THEN 0
                WHEN kind IN ('open', 'cancelled_early') THEN 2 + (i * 37) % (players - 3)
                ELSE players END;
            CREATE INDEX ON seed_t (i);
            ANALYZE seed_t;
            """,
        ),
        (
            "users",
            f"""
            INSERT INTO users (id, email, display_name, role, notifications_opt_out, created_at)
            SELECT u, 'u' || u || '@example.com', 'Player ' || u,
                CASE WHEN u <= 200 THEN 'organizer' ELSE 'player' END, u % 50 = 0,
                %(now)s - make_interval(days => u % 400)
            FROM generate_series(1, {u}) u;
            """,
        ),
        (
            "tournaments",
            """
            INSERT INTO tournaments (id, organizer_id, name, game, format, state, capacity, min_participants,
                participants_count, waitlist_enabled, full_since, full_reminder_sent_at, registration_closes_at,
                starts_at, auto_start, check_in_enabled, check_in_minutes, match_deadline_minutes,
                deadline_warning_minutes, report_mode, no_show_policy_elimination, no_show_policy_league,
                final_second_expiry, settings, check_ins_processed_at, started_at, awaiting_review_since,
                completed_at, cancelled_at, cancel_reason, current_round, total_rounds, version, created_at,
                updated_at)
            SELECT i, i % 200 + 1, 'Cup #' || i, (ARRAY['Chess', 'Go', 'Tekken', 'FIFA'])[i % 4 + 1], fmt,
                CASE kind
                    WHEN 'draft' THEN 'draft' WHEN 'autostart' THEN 'draft'
                    WHEN 'open' THEN 'pending' WHEN 'full' THEN 'pending'
                    WHEN 'underway' THEN 'underway' WHEN 'review' THEN 'awaiting_review'
                    WHEN 'complete' THEN 'complete' ELSE 'cancelled' END,
                players, 2, CASE WHEN kind = 'cancelled_late' THEN players ELSE pc END, true,
                CASE WHEN kind = 'full' AND i % 2 = 0 THEN %(now)s - make_interval(mins => 5 + i % 30)
                     WHEN kind = 'full' THEN %(now)s - make_interval(hours => 2 + i % 38)
                     WHEN cur > 0 THEN started - interval '1 hour' END,
                CASE WHEN kind = 'full' AND i % 2 = 1
                     THEN %(now)s - make_interval(hours => 1 + i % 38) END,
                NULL,
                CASE WHEN kind = 'open' THEN %(now)s + make_interval(days => 1 + i % 7, hours => i % 24)
                     WHEN cur > 0 THEN started END,
                kind = 'open' AND i % 3 = 0, kind = 'open' AND i % 5 = 0, 60, 1440, 60,
                'both_agree', 'double_dq', 'double_loss', 'review', '{}'::jsonb,
                NULL,
                CASE WHEN cur > 0 THEN started END,
                CASE WHEN kind = 'review' THEN %(now)s - make_interval(mins => 10 + i % 600) END,
                CASE WHEN kind = 'complete' THEN started + make_interval(days => maxstage) END,
                CASE WHEN kind LIKE 'cancelled%%' THEN %(now)s - make_interval(hours => i % 200) END,
                CASE WHEN kind LIKE 'cancelled%%' THEN 'organizer' END,
                CASE WHEN cur > 0 THEN LEAST(cur, maxstage) END,
                CASE WHEN cur > 0 THEN maxstage END,
                1, %(now)s - make_interval(days => 20 + i % 300), %(now)s
            FROM seed_t;
            """,
        ),
        (
            "participants",
            """
            INSERT INTO participants (id, tournament_id, user_id, display_name, seed, status, waitlist_position,
                checked_in_at, no_show_count, eliminated_at, final_rank, points, wins, draws, losses, game_wins,
                game_losses, tiebreaks, version, created_at)
            SELECT (t.i - 1) * 64 + s, t.i, ((t.i - 1) * 64 + s - 1) %% %(users)s + 1, 'Player ' || s,
                CASE WHEN t.cur > 0 THEN s END, 'registered', NULL, NULL, 0, NULL,
                CASE WHEN t.kind = 'complete' THEN s END, 0, 0, 0, 0, 0, 0, NULL, 1,
                %(now)s - make_interval(days => 20) + make_interval(secs => s)
            FROM seed_t t CROSS JOIN LATERAL generate_series(1, t.pc) s;
            """,
        ),
        (
            "rounds",
            """
            INSERT INTO rounds (id, tournament_id, bracket, number, name, is_final, state, opened_at,
                completed_at)
            SELECT (t.i - 1) * 16 + r.rord, t.i, r.bracket, r.number, 'Round ' || r.number, r.is_final,
                CASE WHEN r.stage < t.cur THEN 'complete' WHEN r.stage = t.cur THEN 'open' ELSE 'pending' END,
                CASE WHEN r.stage <= t.cur THEN t.started + make_interval(days => r.stage - 1) END,
                CASE WHEN r.stage < t.cur THEN t.started + make_interval(days => r.stage - 1, hours => 3) END
            FROM seed_t t JOIN seed_rounds r ON r.fmt = t.fmt
            WHERE t.cur > 0 AND (t.fmt <> 'swiss' OR r.stage <= t.cur);
            """,
        ),
        (
            "matches",
            f"""
            INSERT INTO matches (id, tournament_id, round_id, bracket, identifier, position, state,
                player1_id, player2_id, player1_is_bye, player2_is_bye, winner_to_id, winner_to_slot,
                loser_to_id, loser_to_slot, player1_score, player2_score, game_scores, winner_id, loser_id,
                is_draw, result_type, opened_at, underway_at, deadline_at, warn_at, deadline_warning_sent_at,
                deadline_extensions, completed_at, player1_checked_in_at, player2_checked_in_at,
                admin_locked_at, version, created_at, updated_at)
            SELECT mid, i, rid, bracket, ident, k + 1, st, p1, p2, false, false,
                CASE WHEN next_off IS NOT NULL THEN (i - 1) * 256 + next_off + k / 2 + 1 END,
                CASE WHEN next_off IS NOT NULL THEN k %% 2 + 1 END,
                NULL, NULL,
                CASE WHEN st = 'complete' THEN 2 END, CASE WHEN st = 'complete' THEN 1 END, NULL,
                CASE WHEN st = 'complete' THEN p1 END, CASE WHEN st = 'complete' THEN p2 END,
                false, CASE WHEN st = 'complete' THEN 'played' END,
                deadline - interval '24 hours',
                CASE WHEN st = 'underway' THEN deadline - interval '20 hours' END,
                deadline,
                deadline - interval '1 hour',
                -- Warned when the warning time is past, or less than half an hour
                -- away (so none falls due while the bench runs).
                CASE WHEN deadline - interval '1 hour' <= %(now)s + interval '30 minutes'
                     THEN LEAST(deadline - interval '59 minutes', %(now)s) END,
                0,
                CASE WHEN st = 'complete' THEN deadline - interval '21 hours' END,
                NULL, NULL,
                CASE WHEN kind = 'review' AND st = 'open' THEN deadline + interval '10 minutes' END,
                1, started, %(now)s
            FROM (
                SELECT x.*,
                    CASE WHEN x.st = 'pending' OR (x.kind = 'cancelled_late' AND x.st <> 'complete') THEN NULL
                         WHEN x.st IN ('open', 'underway', 'awaiting_confirmation') AND x.kind = 'underway'
                         THEN %(now)s + make_interval(mins => 30 + (x.mid::bigint * 7919 %% 1410)::int)
                         WHEN x.kind = 'review' AND x.st = 'open'
                         THEN %(now)s - make_interval(hours => 1 + x.i %% 48)
                         WHEN x.st = 'disputed' THEN %(now)s - make_interval(hours => x.mid %% 48)
                         ELSE x.started + make_interval(days => x.stage) END AS deadline,
                    CASE WHEN x.has_players THEN (x.i - 1) * 64 + (x.k * 2 + x.number * 3) %% x.players + 1 END
                        AS p1,
                    CASE WHEN x.has_players THEN (x.i - 1) * 64 + (x.k * 2 + 1 + x.number * 3) %% x.players + 1
                        END AS p2
                FROM (
                    SELECT t.i, t.kind, t.fmt, t.players, t.started, r.stage, r.number, r.bracket, r.next_off,
                        k, (t.i - 1) * 256 + r.off + k + 1 AS mid, (t.i - 1) * 16 + r.rord AS rid,
                        {prefix} || r.number || '.' || (k + 1) AS ident,
                        CASE
                            WHEN r.stage < t.cur THEN 'complete'
                            WHEN r.stage > t.cur THEN 'pending'
                            WHEN t.kind = 'review' THEN CASE WHEN k = 0 THEN 'open' ELSE 'complete' END
                            ELSE ({states})[(k * 31 + t.i * 17) %% 20 + 1]
                        END AS st,
                        (r.stage <= t.cur OR r.stage = 1 OR t.fmt = 'round_robin') AS has_players
                    FROM seed_t t JOIN seed_rounds r ON r.fmt = t.fmt
                    CROSS JOIN LATERAL generate_series(0, r.n - 1) k
                    WHERE t.cur > 0 AND (t.fmt <> 'swiss' OR r.stage <= t.cur)
                ) x
            ) y;
            """,
        ),
        (
            "match reports",
            """
            INSERT INTO match_reports (match_id, participant_id, user_id, kind, player1_score, player2_score,
                game_scores, winner_participant_id, comment, status, created_at, superseded_at)
            SELECT id, player1_id, (player1_id - 1) %% %(users)s + 1, 'result', 2, 1, NULL, player1_id, NULL,
                CASE WHEN state = 'complete' THEN 'accepted' ELSE 'active' END,
                COALESCE(completed_at, deadline_at - interval '2 hours', created_at) - interval '5 minutes', NULL
            FROM matches
            WHERE state IN ('complete', 'awaiting_confirmation', 'disputed') AND player1_id IS NOT NULL;
            -- The opponent's dispute.
            INSERT INTO match_reports (match_id, participant_id, user_id, kind, player1_score, player2_score,
                game_scores, winner_participant_id, comment, status, created_at, superseded_at)
            SELECT id, player2_id, (player2_id - 1) %% %(users)s + 1, 'dispute', NULL, NULL, NULL, NULL,
                'not what happened', 'active', COALESCE(deadline_at, created_at) - interval '90 minutes', NULL
            FROM matches WHERE state = 'disputed';
            """,
        ),
        (
            "email outbox",
            """
            -- match_ready to both players of every match that was opened, and
            -- tournament_started to every player of a started tournament:
            -- nearly all sent long ago; a few failed, dead, suppressed, or
            -- pending with a retry time in the future.
            INSERT INTO email_outbox (dedupe_key, user_id, to_email, template, context, priority, status,
                attempts, available_at, locked_at, locked_by, sent_at, last_error, provider_message_id,
                created_at)
            SELECT key, uid, 'u' || uid || '@example.com', template, ctx, prio,
                CASE WHEN h < 9960 THEN 'sent' WHEN h < 9975 THEN 'failed' WHEN h < 9985 THEN 'dead'
                     WHEN h < 9995 THEN 'suppressed' ELSE 'pending' END,
                CASE WHEN h < 9960 THEN 1 ELSE 3 END,
                CASE WHEN h < 9995 THEN at ELSE %(now)s + make_interval(mins => (1 + h %% 60)::int) END,
                NULL, NULL,
                CASE WHEN h < 9960 THEN at + interval '2 seconds' END,
                CASE WHEN h >= 9960 AND h < 9995 THEN '550 mailbox unavailable' END,
                NULL, at
            FROM (
                SELECT 'match_ready:' || m.id || ':' || p AS key,
                    (CASE WHEN side = 1 THEN m.player1_id ELSE m.player2_id END - 1) %% %(users)s + 1 AS uid,
                    'match_ready' AS template,
                    jsonb_build_object('tournament_id', m.tournament_id, 'match_id', m.id,
                        'tournament_name', 'Cup', 'opponent_name', 'Player') AS ctx,
                    1 AS prio, m.opened_at AS at, ((m.id * 2 + side) * 7919) %% 10000 AS h
                FROM matches m CROSS JOIN generate_series(1, 2) side
                CROSS JOIN LATERAL (SELECT CASE WHEN side = 1 THEN m.player1_id ELSE m.player2_id END AS p) q
                WHERE m.opened_at IS NOT NULL AND m.player1_id IS NOT NULL
                UNION ALL
                SELECT 'tournament_started:' || p.tournament_id || ':' || p.id, (p.id - 1) %% %(users)s + 1,
                    'tournament_started',
                    jsonb_build_object('tournament_id', p.tournament_id, 'participant_id', p.id,
                        'tournament_name', 'Cup'),
                    5, t.started, (p.id * 104729) %% 10000
                FROM participants p JOIN seed_t t ON t.i = p.tournament_id
                WHERE t.cur > 0
            ) s;
            """,
        ),
        (
            "sequences",
            """
            SELECT setval('users_id_seq', (SELECT max(id) FROM users));
            SELECT setval('tournaments_id_seq', (SELECT max(id) FROM tournaments));
            SELECT setval('participants_id_seq', (SELECT max(id) FROM tournaments) * 64 + 1);
            SELECT setval('rounds_id_seq', (SELECT max(id) FROM tournaments) * 16 + 1);
            SELECT setval('matches_id_seq', (SELECT max(id) FROM tournaments) * 256 + 1);
            SELECT setval('match_reports_id_seq', (SELECT COALESCE(max(id), 1) FROM match_reports));
            SELECT setval('email_outbox_id_seq', (SELECT COALESCE(max(id), 1) FROM email_outbox));
            """,
        ),
        ("analyze", "ANALYZE;"),
    ]


def seed(
    db: peewee.Database,
    sizes: SeedSizes,
    now: dt.datetime,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, float]:
    """Write the whole data set; returns seconds per step."""
    # Values go in as literals and the text is sent without parameters, so a
    # % in it is SQL's modulo (written %% where the text was once a format).
    literals = {"%(now)s": f"'{now.isoformat()}'::timestamptz", "%(users)s": str(int(sizes.users))}
    timings: dict[str, float] = {}
    conn = db.connection()
    for name, statements in _steps(sizes):
        for placeholder, value in literals.items():
            statements = statements.replace(placeholder, value)
        statements = statements.replace("%%", "%")
        began = time.perf_counter()
        with conn.cursor() as cursor:
            cursor.execute(statements)
        conn.commit()
        timings[name] = time.perf_counter() - began
        if progress is not None:
            progress(name, timings[name])
    return timings


def autostart_ids(sizes: SeedSizes) -> range:
    """The tournaments seeded as drafts with 64 registered players, for the auto-start figure."""
    return range(sizes.tournaments + 1, sizes.tournaments + sizes.autostart + 1)


def make_autostart_due(db: peewee.Database, sizes: SeedSizes, now: dt.datetime) -> int:
    """The last registration came in: every auto-start draft becomes a full,
    published auto-start tournament, due now ("start when full")."""
    ids = autostart_ids(sizes)
    cursor = db.execute_sql(
        "UPDATE tournaments SET state = 'pending', auto_start = true, full_since = %s, updated_at = %s "
        "WHERE id BETWEEN %s AND %s AND state = 'draft'",
        (now, now, ids.start, ids.stop - 1),
    )
    return cursor.rowcount

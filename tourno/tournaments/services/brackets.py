"""A tournament's bracket in the database: the plan from the pure formats,
resolved in memory (seeds to participants, byes decided, their winners moved
on, the playable matches opened) and then written in bulk. The row ids are
reserved up front, so every match row is inserted already wired to its next
matches, with no per-match statement and no update pass.

Used by the start (the whole bracket, or a league's first round) and by
Swiss pairing (each later round).

Format options read from ``tournament.settings``: ``third_place`` (single
elimination, default false), ``grand_final_reset`` (double elimination, default
true), ``round_robin_cycles`` (1 or 2, default 1), ``swiss_rounds`` (default
``ceil(log2 n)``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import peewee

from tourno import db as tdb
from tourno.accounts.models import User
from tourno.db import database
from tourno.tournaments.decisions import LEAGUES
from tourno.tournaments.formats import (
    Bracket,
    ByeSlot,
    MatchKey,
    PlannedMatch,
    SeedSlot,
    Standing,
    default_rounds,
    double_elimination,
    match_levels,
    pair_next_round,
    play_order,
    round_name,
    round_robin,
    single_elimination,
)
from tourno.tournaments.models import (
    Match,
    MatchEventType,
    MatchState,
    Participant,
    ResultType,
    Round,
    RoundState,
    Tournament,
    TournamentFormat,
)
from tourno.tournaments.services.common import CHUNK, add_events, run_together
from tourno.tournaments.services.notify import mail_match_ready

NOBODY = 0  # a slot resolved to nobody (a bye, or the loser of a bye)

_PREFIX = {
    Bracket.WINNERS: "W",
    Bracket.LOSERS: "L",
    Bracket.GRAND_FINAL: "GF",
    Bracket.THIRD_PLACE: "TP",
    Bracket.ROUND_ROBIN: "R",
    Bracket.SWISS: "S",
}


def plan(t: Tournament, n: int) -> tuple[list[PlannedMatch], int]:
    """The planned matches to persist now for ``n`` seeds (a Swiss tournament:
    its first round), and the tournament's number of rounds."""
    settings = t.settings or {}
    if t.format == TournamentFormat.SINGLE_ELIMINATION:
        planned = single_elimination(n, third_place=bool(settings.get("third_place", False)))
    elif t.format == TournamentFormat.DOUBLE_ELIMINATION:
        planned = double_elimination(n, reset=bool(settings.get("grand_final_reset", True)))
    elif t.format == TournamentFormat.ROUND_ROBIN:
        planned = round_robin(n, cycles=int(settings.get("round_robin_cycles", 1)))
        return planned, max(m.key.round for m in planned)
    else:
        standings = [Standing(seed, 0.0, 0.0, 0.0, 0) for seed in range(1, n + 1)]
        rounds = int(settings.get("swiss_rounds") or default_rounds(n))
        return pair_next_round(standings, set(), set(), 1), rounds
    return planned, max(match_levels(planned).values()) + 1


# -- resolution in memory -----------------------------------------------------------------


@dataclass
class Built:
    """A resolved bracket (or round), ready to be written: round and match
    rows without ids, the rows of the matches it opens, and the participants
    by id (with their users, for the mail)."""

    rounds: dict[tuple[Bracket, int], dict[str, Any]] = field(default_factory=dict)
    matches: list[tuple[PlannedMatch, dict[str, Any]]] = field(default_factory=list)
    opened: list[dict[str, Any]] = field(default_factory=list)
    entries: dict[int, Participant] = field(default_factory=dict)


def resolve(
    t: Tournament,
    planned: list[PlannedMatch],
    by_seed: dict[int, Participant],
    now: dt.datetime,
    open_round: int = 1,
) -> Built:
    """Match rows (ids not yet known) with slots filled, byes decided and
    their winners moved on, and the playable matches opened (in a league,
    those of ``open_round``)."""
    built = Built(entries={e.id: e for e in by_seed.values()})
    deadline_at, warn_at = match_deadline(t, now)
    league = t.format in LEAGUES
    elimination_rounds = max((m.key.round for m in planned if m.key.bracket == Bracket.WINNERS), default=0)
    # (match key, slot) -> participant id or NOBODY, filled as sources are decided.
    arrived: dict[tuple[MatchKey, int], int] = {}
    order = planned if league else play_order(planned)
    for pm in order:
        slots: list[int | None] = []
        for number, slot in ((1, pm.slot1), (2, pm.slot2)):
            if isinstance(slot, SeedSlot):
                slots.append(by_seed[slot.seed].id)
            elif isinstance(slot, ByeSlot):
                slots.append(NOBODY)
            else:
                slots.append(arrived.get((pm.key, number)))
        row: dict[str, Any] = _row(t, pm, slots, now)
        playable = not league or pm.key.round == open_round
        if None in slots:
            pass  # waits for a feeder: pending
        elif NOBODY in slots:
            # Decided without a game: a bye, a walkover, or void (nobody at all).
            winner = slots[0] or slots[1] or None
            row.update(
                state=MatchState.COMPLETE,
                result_type=ResultType.BYE if pm.has_bye or winner is None else ResultType.WALKOVER,
                winner=winner,
                completed_at=now,
            )
            if pm.winner_to is not None:
                arrived[(pm.winner_to.match, pm.winner_to.slot)] = winner or NOBODY
            if pm.loser_to is not None:
                arrived[(pm.loser_to.match, pm.loser_to.slot)] = NOBODY
        elif playable:
            row.update(state=MatchState.OPEN, opened_at=now, deadline_at=deadline_at, warn_at=warn_at)
            built.opened.append(row)
        key = (pm.key.bracket, pm.key.round)
        if key not in built.rounds:
            built.rounds[key] = {
                "tournament": t.id,
                "bracket": pm.key.bracket,
                "number": pm.key.round,
                "name": _round_name(pm.key, elimination_rounds),
                "is_final": False,
                "state": RoundState.PENDING,
                "opened_at": None,
                "completed_at": None,
                "_states": [],
            }
        info = built.rounds[key]
        info["is_final"] = info["is_final"] or pm.is_final
        info["_states"].append(row["state"])
        built.matches.append((pm, row))
    for info in built.rounds.values():
        states = info.pop("_states")
        if all(s == MatchState.COMPLETE for s in states):
            info.update(state=RoundState.COMPLETE, opened_at=now, completed_at=now)
        elif MatchState.OPEN in states:
            info.update(state=RoundState.OPEN, opened_at=now)
    return built


def match_deadline(t: Tournament, now: dt.datetime) -> tuple[dt.datetime, dt.datetime | None]:
    """``deadline_at`` and ``warn_at`` of a match opened at ``now``. No
    warning when the lead is as long as the deadline: the match-ready mail
    already said it (``reference/domain.md`` §8.4)."""
    deadline_at = now + dt.timedelta(minutes=t.match_deadline_minutes)
    return deadline_at, warn_at_for(t, deadline_at, now)


def warn_at_for(t: Tournament, deadline_at: dt.datetime, opened_at: dt.datetime) -> dt.datetime | None:
    """When to warn about ``deadline_at`` (the tournament's lead before it), or None when too close."""
    lead = dt.timedelta(minutes=t.deadline_warning_minutes)
    if lead <= dt.timedelta(0) or deadline_at - opened_at <= lead:
        return None
    return deadline_at - lead


def _row(t: Tournament, pm: PlannedMatch, slots: list[int | None], now: dt.datetime) -> dict[str, Any]:
    return {
        "id": None,
        "tournament": t.id,
        "round": None,
        "bracket": pm.key.bracket,
        "identifier": f"{_PREFIX[pm.key.bracket]}{pm.key.round}.{pm.key.position}",
        "position": pm.key.position,
        "state": MatchState.PENDING,
        "player1": slots[0] or None,
        "player2": slots[1] or None,
        "player1_is_bye": slots[0] == NOBODY,
        "player2_is_bye": slots[1] == NOBODY,
        "winner_to": None,
        "winner_to_slot": pm.winner_to.slot if pm.winner_to else None,
        "loser_to": None,
        "loser_to_slot": pm.loser_to.slot if pm.loser_to else None,
        "winner": None,
        "loser": None,
        "is_draw": False,
        "result_type": None,
        "opened_at": None,
        "deadline_at": None,
        "warn_at": None,
        "deadline_extensions": 0,
        "completed_at": None,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }


def _round_name(key: MatchKey, elimination_rounds: int) -> str:
    if key.bracket == Bracket.WINNERS:
        return round_name(key.round, elimination_rounds)
    if key.bracket == Bracket.LOSERS:
        return f"Losers round {key.round}"
    if key.bracket == Bracket.GRAND_FINAL:
        return "Grand final" if key.round == 1 else "Grand final reset"
    if key.bracket == Bracket.THIRD_PLACE:
        return "Third place"
    return f"Round {key.round}"


def _reserve_ids(rounds: int, matches: int) -> tuple[list[int], list[int]]:
    """Fresh ids for ``rounds`` rounds and ``matches`` matches, so rows can
    reference each other before they are inserted, in one statement.
    PostgreSQL draws them from the sequences; SQLite is under its IMMEDIATE
    write lock, so the next ids are ours."""
    if rounds + matches == 0:
        return [], []
    if tdb.is_postgres():
        # tourno_reserve_ids: each row tagged with its table (0 rounds, 1 matches).
        cursor = database.execute_sql(
            "SELECT 0, nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s) "
            "UNION ALL "
            "SELECT 1, nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            (Round._meta.table_name, rounds, Match._meta.table_name, matches),
        )
        drawn: tuple[list[int], list[int]] = ([], [])
        for tag, value in cursor.fetchall():
            drawn[tag].append(value)
        return sorted(drawn[0]), sorted(drawn[1])
    r, m = Round._meta.table_name, Match._meta.table_name
    top = database.execute_sql(
        f'SELECT (SELECT seq FROM sqlite_sequence WHERE name = ?), (SELECT MAX(id) FROM "{r}"), '
        f'(SELECT seq FROM sqlite_sequence WHERE name = ?), (SELECT MAX(id) FROM "{m}")',
        (r, m),
    ).fetchone()
    round_base = max(top[0] or 0, top[1] or 0)
    match_base = max(top[2] or 0, top[3] or 0)
    return (
        list(range(round_base + 1, round_base + rounds + 1)),
        list(range(match_base + 1, match_base + matches + 1)),
    )


def persist(
    t: Tournament, built: Built, actor: User | None, now: dt.datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write the rounds and matches of ``built``, then :func:`write_opened`.
    Returns the round and match rows written (with their ids)."""
    reserved_rounds, reserved_matches = _reserve_ids(len(built.rounds), len(built.matches))
    round_ids = dict(zip(built.rounds, reserved_rounds, strict=True))
    rounds = [{**info, "id": round_ids[key]} for key, info in built.rounds.items()]
    match_ids = dict(zip((pm.key for pm, _ in built.matches), reserved_matches, strict=True))
    for pm, row in built.matches:
        row["id"] = match_ids[pm.key]
        row["round"] = round_ids[(pm.key.bracket, pm.key.round)]
        row["winner_to"] = match_ids[pm.winner_to.match] if pm.winner_to else None
        row["loser_to"] = match_ids[pm.loser_to.match] if pm.loser_to else None
    # The rounds, then the matches, targets before the matches that point at
    # them (the plan order is a feed order): in one statement on PostgreSQL.
    run_together(
        [Round.insert_many(batch) for batch in peewee.chunked(rounds, CHUNK)]
        + [
            Match.insert_many(batch)
            for batch in peewee.chunked([row for _, row in reversed(built.matches)], CHUNK)
        ]
    )

    round_names = {round_ids[key]: info["name"] for key, info in built.rounds.items()}
    write_opened(t, built.opened, built.entries, round_names, actor, now)
    return rounds, [row for _, row in built.matches]


def write_opened(
    t: Tournament,
    rows: list[dict[str, Any]],
    entries: dict[int, Participant],
    round_names: dict[int, str | None],
    actor: User | None,
    now: dt.datetime,
) -> None:
    """The ``opened`` events and the ``match_ready`` mail of newly opened
    matches (rows: id, identifier, round, player1, player2, deadline_at);
    ``entries`` maps participant ids to participants with their users."""
    events = [
        {
            "match": row["id"],
            "tournament": t.id,
            "actor_user": actor.id if actor is not None else None,
            "type": MatchEventType.OPENED,
            "payload": {
                "player1": row["player1"],
                "player2": row["player2"],
                "deadline_at": row["deadline_at"].isoformat(),
            },
            "created_at": now,
        }
        for row in rows
    ]
    add_events(events)

    mail_match_ready(t, rows, entries, round_names, now)

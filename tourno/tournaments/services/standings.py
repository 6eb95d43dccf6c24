"""The table as it stands, and the final ranks: read only, no writes.

Leagues rank by points and tiebreaks (``points_scheme`` from the tournament's
settings); elimination ranks by the round a participant went out in, found by
re-planning the bracket the tournament was started with.
"""

from __future__ import annotations

from typing import Any

from tourno.tournaments.decisions import LEAGUES, league_results, match_records
from tourno.tournaments.errors import NotFound
from tourno.tournaments.formats import (
    Bracket,
    MatchKey,
    PointsScheme,
    Standing,
    compute_standings,
    elimination_ranks,
    match_levels,
    ranks_from_standings,
)
from tourno.tournaments.models import (
    Match,
    MatchState,
    Participant,
    Round,
    Tournament,
    TournamentFormat,
)
from tourno.tournaments.services.brackets import plan
from tourno.tournaments.services.common import key_of


def standings(tournament: Tournament | int) -> list[dict[str, Any]]:
    """The table as it stands: leagues by points and tiebreaks; elimination by
    final rank once known, else by wins. Read-only."""
    t = tournament if isinstance(tournament, Tournament) else Tournament.get_or_none(id=tournament)
    if t is None:
        raise NotFound(f"no tournament {key_of(tournament)}")
    entries = seeded(t)
    matches = decided_matches(t)
    records = match_records(matches)
    rows = []
    if t.format in LEAGUES:
        table = league_table(t, entries, matches)
        by_seed = {e.seed: e for e in entries}
        ranks = ranks_from_standings(table)
        for st in table:
            rows.append(_standing_row(t, by_seed[st.seed], records, ranks[st.seed], st))
        return rows
    ordered = sorted(
        entries,
        key=lambda e: (e.final_rank or 10**9, -records.get(e.id, {}).get("wins", 0), e.seed),
    )
    for index, e in enumerate(ordered, start=1):
        rows.append(_standing_row(t, e, records, e.final_rank or index, None))
    return rows


def tiebreaks_of(t: Tournament, st: Standing | None) -> dict[str, float] | None:
    """A league participant's tiebreak values, by name (None outside a league)."""
    if st is None:
        return None
    values = {"buchholz": st.buchholz, "sonneborn_berger": st.sonneborn_berger}
    if t.format == TournamentFormat.ROUND_ROBIN:
        values = {"head_to_head": st.head_to_head, **values}
    return values


def _standing_row(
    t: Tournament, e: Participant, records: dict[int, dict[str, int]], rank: int, st: Standing | None
) -> dict[str, Any]:
    c = records.get(e.id, {})
    return {
        "rank": rank,
        "participant_id": e.id,
        "name": e.display_name,
        "seed": e.seed,
        "status": e.status.value,
        "points": st.points if st else None,
        "wins": c.get("wins", 0),
        "draws": c.get("draws", 0),
        "losses": c.get("losses", 0),
        "tiebreaks": tiebreaks_of(t, st),
        "final_rank": e.final_rank,
    }


def points_scheme(t: Tournament) -> PointsScheme:
    """Win 3, draw 1, loss 0, Swiss bye 3 unless the tournament's settings say otherwise."""
    s = t.settings or {}
    return PointsScheme(
        win=float(s.get("points_win", 3)),
        draw=float(s.get("points_draw", 1)),
        loss=float(s.get("points_loss", 0)),
        bye=float(s.get("points_bye", 3)),
    )


def league_table(t: Tournament, entries: list[Participant], matches: list[Match]) -> list[Standing]:
    """The league's standings from its seeded ``entries`` and ``matches`` (the undecided are skipped)."""
    seed_of = seeds_by_id(entries)
    return compute_standings(
        sorted(seed_of.values()),
        league_results(matches, seed_of),
        points_scheme(t),
        head_to_head=t.format == TournamentFormat.ROUND_ROBIN,
    )


def seeds_by_id(entries: list[Participant]) -> dict[int, int]:
    """Participant id -> seed, for seeded ``entries``."""
    return {e.id: e.seed for e in entries if e.seed is not None}


def seeded(t: Tournament) -> list[Participant]:
    """The tournament's seeded participants, by seed (everyone who started)."""
    return list(
        Participant.select()
        .where(Participant.tournament == t.id, Participant.seed.is_null(False))
        .order_by(Participant.seed)
    )


def decided_matches(t: Tournament) -> list[Match]:
    """The tournament's complete matches."""
    return list(Match.select().where(Match.tournament == t.id, Match.state == MatchState.COMPLETE))


def final_ranks(t: Tournament) -> tuple[dict[int, int], list[Standing]]:
    """Participant id -> final rank, and (leagues) the standings table."""
    entries = seeded(t)
    matches = list(
        Match.select(Match, Round).join(Round, on=(Match.round == Round.id)).where(Match.tournament == t.id)
    )
    if t.format in LEAGUES:
        table = league_table(t, entries, matches)
        by_seed = {e.seed: e.id for e in entries}
        return {by_seed[s]: r for s, r in ranks_from_standings(table).items()}, table
    planned, _ = plan(t, len(entries))
    levels = match_levels(planned)
    key_of_match = {m.id: MatchKey(m.bracket, m.round.number, m.position) for m in matches}
    finals = [m for m in matches if key_of_match[m.id] in levels and m.round.is_final]
    final = max(finals, key=lambda m: levels[key_of_match[m.id]]) if finals else None
    champion = final.winner_id if final else None
    third = next((m.winner_id for m in matches if m.bracket == Bracket.THIRD_PLACE), None)
    eliminated_in: dict[int, MatchKey] = {}
    for m in sorted(matches, key=lambda m: levels.get(key_of_match[m.id], 0)):
        for pid in (m.player1_id, m.player2_id):
            if pid and pid != m.winner_id and pid not in (champion, third):
                eliminated_in[pid] = key_of_match[m.id]
    for e in entries:  # defensive: anyone never beaten but not champion ranks with their last match
        if e.id not in eliminated_in and e.id not in (champion, third):
            last = [m for m in matches if e.id in (m.player1_id, m.player2_id)]
            if last:
                eliminated_in[e.id] = key_of_match[max(last, key=lambda m: levels[key_of_match[m.id]]).id]
    return elimination_ranks(planned, eliminated_in, champion, third), []

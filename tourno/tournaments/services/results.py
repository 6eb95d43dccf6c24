"""Results: reporting, confirming, disputing, the organizer's decisions
(resolve, override, forfeit, disqualify, reopen, extend), and what a decided
match sets off: the bracket advances, the next league round opens, and the
tournament completes with its final ranks (``reference/domain.md`` §7.2).

Every function here is one transaction holding the tournament's row lock, so
two reports, a report and the deadline job, or a report and an organizer's
decision on the same tournament never interleave. :func:`_complete` is the one
place a match is decided; the API, the organizer and the deadline job all go
through it, so propagation is never special-cased.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import peewee

from tourno.accounts.models import User
from tourno.db import utcnow
from tourno.mail.models import EmailPriority
from tourno.mail.store import enqueue_email
from tourno.tournaments.errors import (
    DeadlinePassed,
    InvalidState,
    NotFound,
    NotYourMatch,
    PermissionDenied,
    ValidationError,
)
from tourno.tournaments.formats import (
    Bracket,
    MatchKey,
    Outcome,
    PointsScheme,
    Result,
    Standing,
    compute_standings,
    elimination_ranks,
    history_from_results,
    match_levels,
    pair_next_round,
    ranks_from_standings,
)
from tourno.tournaments.models import (
    ACTIONABLE_MATCH_STATES,
    Match,
    MatchEvent,
    MatchEventType,
    MatchReport,
    MatchState,
    Participant,
    ParticipantStatus,
    ReportKind,
    ReportMode,
    ReportStatus,
    ResultType,
    Round,
    RoundState,
    Tournament,
    TournamentFormat,
    TournamentState,
)
from tourno.tournaments.services.common import can_manage, epoch, key_of, locked_tournament, require_manager

log = logging.getLogger(__name__)

LEAGUES = (TournamentFormat.ROUND_ROBIN, TournamentFormat.SWISS)
PLAYING = (TournamentState.UNDERWAY,)
# The organizer may still decide matches while the tournament waits for review.
MANAGING = (TournamentState.UNDERWAY, TournamentState.AWAITING_REVIEW)
# Out of the competition: their next matches are forfeited, Swiss does not pair them.
OUT = (ParticipantStatus.DISQUALIFIED, ParticipantStatus.DROPPED)
MAX_SCORE = 1_000_000
MAX_EXTENSION_MINUTES = 10080
NOBODY = 0  # a slot that will never hold a player (a bye, or a walkover placeholder)


@dataclass(frozen=True)
class Decision:
    """How a match was decided, oriented player 1 / player 2."""

    winner: int | None
    loser: int | None
    result_type: ResultType
    player1_score: int | None = None
    player2_score: int | None = None
    is_draw: bool = False
    game_scores: list | None = None


# -- reporting by players ---------------------------------------------------------------


def report_result(
    match: Match | int,
    actor: User,
    *,
    player1_score: int,
    player2_score: int,
    winner: int | None = None,
    game_scores: list | None = None,
    comment: str | None = None,
    now: dt.datetime | None = None,
) -> Match:
    """A player reports their match. Single-report mode decides it at once;
    in both-agree mode the first report waits for the opponent, a matching
    second report decides it and a differing one makes it ``disputed``.
    Reporting again replaces the player's own earlier report."""
    now = now or utcnow()
    comment = _comment(comment)
    with _locked_match(match) as (t, m):
        me = _player_side(t, m, actor, now)
        decision = _decision_from_scores(t, m, player1_score, player2_score, winner, game_scores)
        report = _file_report(
            t,
            m,
            me,
            actor,
            ReportKind.RESULT,
            now,
            player1_score=decision.player1_score,
            player2_score=decision.player2_score,
            game_scores=decision.game_scores,
            winner_participant=decision.winner,
            comment=comment,
        )
        return _after_report(t, m, me, report, decision, actor, now)


def claim_forfeit(
    match: Match | int, actor: User, *, comment: str | None = None, now: dt.datetime | None = None
) -> Match:
    """ "My opponent did not show": a report that the reporter won by forfeit.
    The opponent may confirm or dispute it; unanswered, it stands at the deadline."""
    now = now or utcnow()
    comment = _comment(comment)
    with _locked_match(match) as (t, m):
        me = _player_side(t, m, actor, now)
        other = _opponent(m, me)
        decision = Decision(winner=me, loser=other, result_type=ResultType.FORFEIT)
        report = _file_report(
            t, m, me, actor, ReportKind.FORFEIT_CLAIM, now, winner_participant=me, comment=comment
        )
        return _after_report(t, m, me, report, decision, actor, now)


def confirm_result(match: Match | int, actor: User, *, now: dt.datetime | None = None) -> Match:
    """The opponent agrees with the standing report: the match is decided as reported."""
    now = now or utcnow()
    with _locked_match(match) as (t, m):
        me = _player_side(t, m, actor, now)
        theirs = _active_reports(m).get(_opponent(m, me))
        if m.state != MatchState.AWAITING_CONFIRMATION or theirs is None or theirs.kind == ReportKind.DISPUTE:
            raise InvalidState("there is no report from your opponent to confirm")
        decision = _decision_of(m, theirs, ResultType.PLAYED)
        _file_report(
            t,
            m,
            me,
            actor,
            ReportKind.RESULT,
            now,
            player1_score=theirs.player1_score,
            player2_score=theirs.player2_score,
            game_scores=theirs.game_scores,
            winner_participant=theirs.winner_participant_id,
            comment="confirmed",
            event=False,
        )
        _complete(t, m, decision, actor, now, MatchEventType.CONFIRMED, {"report": theirs.id})
        return m


def dispute_result(
    match: Match | int, actor: User, *, comment: str | None = None, now: dt.datetime | None = None
) -> Match:
    """The opponent rejects the standing report: ``disputed`` until an organizer decides."""
    now = now or utcnow()
    comment = _comment(comment)
    with _locked_match(match) as (t, m):
        me = _player_side(t, m, actor, now)
        theirs = _active_reports(m).get(_opponent(m, me))
        if theirs is None or theirs.kind == ReportKind.DISPUTE:
            raise InvalidState("there is no report from your opponent to dispute")
        _file_report(t, m, me, actor, ReportKind.DISPUTE, now, comment=comment, event=False)
        mark_disputed(t, m, actor, now, reason="disputed by a player")
        return m


# -- the organizer's decisions --------------------------------------------------------------


def resolve_match(
    match: Match | int,
    actor: User,
    *,
    player1_score: int,
    player2_score: int,
    winner: int | None = None,
    game_scores: list | None = None,
    now: dt.datetime | None = None,
) -> Match:
    """An organizer decides a match: an open or disputed one, or overrides a
    complete one (which reopens it first, resetting the matches that depended
    on it)."""
    now = now or utcnow()
    with _locked_match(match) as (t, m):
        _require_organizer(actor, t, allow_complete=m.state == MatchState.COMPLETE)
        if m.state == MatchState.COMPLETE:
            _reopen(t, m, actor, now, open_again=False)
        elif m.state == MatchState.PENDING:
            raise InvalidState("the match's players are not known yet")
        decision = _decision_from_scores(t, m, player1_score, player2_score, winner, game_scores)
        decision = Decision(**{**decision.__dict__, "result_type": ResultType.ADMIN})
        _complete(t, m, decision, actor, now, MatchEventType.ADMIN_OVERRIDE, {"by": "organizer"})
        return m


def forfeit_match(match: Match | int, actor: User, *, loser: int, now: dt.datetime | None = None) -> Match:
    """An organizer records that ``loser`` (a participant id) forfeits the match."""
    now = now or utcnow()
    with _locked_match(match) as (t, m):
        _require_organizer(actor, t)
        if m.state not in (*ACTIONABLE_MATCH_STATES, MatchState.DISPUTED):
            raise InvalidState(f"match is {m.state.value}, it cannot be forfeited")
        if loser not in (m.player1_id, m.player2_id):
            raise ValidationError({"loser": "must be one of the match's two participants"})
        decision = Decision(winner=_opponent(m, loser), loser=loser, result_type=ResultType.FORFEIT)
        _complete(t, m, decision, actor, now, MatchEventType.ADMIN_OVERRIDE, {"forfeit": loser})
        return m


def disqualify_participant(
    tournament: Tournament | int,
    actor: User | None,
    participant: Participant | int,
    *,
    now: dt.datetime | None = None,
) -> Participant:
    """A participant is out of a running tournament: every match they still
    have to play is forfeited to the opponent (a match still waiting for an
    opponent is forfeited when the opponent arrives), and Swiss stops pairing them."""
    now = now or utcnow()
    with locked_tournament(tournament) as t:
        if actor is not None:
            _require_organizer(actor, t)
        if t.state not in MANAGING:
            raise InvalidState(
                f"tournament is {t.state.value}; before the start, remove the participant instead"
            )
        entry = Participant.get_or_none(Participant.id == key_of(participant), Participant.tournament == t.id)
        if entry is None:
            raise NotFound(f"no participant {key_of(participant)} in this tournament")
        if entry.status not in (ParticipantStatus.REGISTERED, ParticipantStatus.DROPPED):
            raise InvalidState(f"participant is {entry.status.value}")
        _disqualify(t, [entry.id], actor, now)
        entry.status = ParticipantStatus.DISQUALIFIED
        return entry


def _disqualify(t: Tournament, ids: list[int], actor: User | None, now: dt.datetime) -> None:
    Participant.update(status=ParticipantStatus.DISQUALIFIED, version=Participant.version + 1).where(
        Participant.id.in_(ids)
    ).execute()
    for entry in (
        Participant.select(Participant, User)
        .join(User, peewee.JOIN.LEFT_OUTER, on=(Participant.user == User.id))
        .where(Participant.id.in_(ids))
    ):
        if entry.user_id is not None:
            enqueue_email(
                dedupe_key=f"disqualified:{entry.id}:{entry.version}",
                to_email=entry.user.email,
                user=entry.user,
                template="disqualified",
                context=_tournament_context(t) | {"display_name": entry.display_name},
                priority=EmailPriority.HIGH,
                now=now,
            )
    live = Match.select().where(
        Match.tournament == t.id,
        Match.state.in_((*ACTIONABLE_MATCH_STATES, MatchState.DISPUTED)),
        (Match.player1.in_(ids)) | (Match.player2.in_(ids)),
    )
    for stale in list(live):
        m = Match.get_by_id(stale.id)  # an earlier forfeit in this loop may have moved things on
        if m.state in (*ACTIONABLE_MATCH_STATES, MatchState.DISPUTED):
            decision = _forfeit_decision(m, _statuses(t, m))
            _complete(t, m, decision, actor, now, MatchEventType.WALKOVER, {"dq": ids})


def reopen_match(match: Match | int, actor: User, *, now: dt.datetime | None = None) -> Match:
    """complete -> open with a new deadline. The matches it fed are reset to
    pending (and theirs, and so on); a completed tournament is underway again."""
    now = now or utcnow()
    with _locked_match(match) as (t, m):
        _require_organizer(actor, t, allow_complete=True)
        if m.state != MatchState.COMPLETE:
            raise InvalidState(f"match is {m.state.value}, only a complete match can be reopened")
        _reopen(t, m, actor, now, open_again=True)
        return m


def extend_deadline(
    match: Match | int, actor: User | None, *, minutes: int, now: dt.datetime | None = None
) -> Match:
    """Move the deadline ``minutes`` later (from now, if it has passed). The
    deadline warning is re-armed for the new deadline."""
    now = now or utcnow()
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_EXTENSION_MINUTES:
        raise ValidationError({"minutes": f"must be a whole number from 1 to {MAX_EXTENSION_MINUTES}"})
    with _locked_match(match) as (t, m):
        if actor is not None:
            _require_organizer(actor, t)
        if m.state not in ACTIONABLE_MATCH_STATES:
            raise InvalidState(f"match is {m.state.value}, it has no deadline to extend")
        base = max(m.deadline_at or now, now)
        _set_deadline(t, m, base + dt.timedelta(minutes=minutes), actor, now, {"minutes": minutes})
        return m


def _set_deadline(
    t: Tournament,
    m: Match,
    deadline_at: dt.datetime,
    actor: User | None,
    now: dt.datetime,
    payload: dict[str, Any],
) -> None:
    from tourno.tournaments.services.start import warn_at_for

    previous = m.deadline_at
    m.deadline_at = deadline_at
    m.warn_at = warn_at_for(t, deadline_at, now)
    m.deadline_warning_sent_at = None
    m.deadline_extensions += 1
    _touch(m, now)
    m.save()
    _event(
        t,
        m,
        actor,
        MatchEventType.DEADLINE_EXTENDED,
        {**payload, "from": previous.isoformat() if previous else None, "to": deadline_at.isoformat()},
        now,
    )
    _mail_players(
        t,
        m,
        (m.player1_id, m.player2_id),
        "deadline_extended",
        lambda pid: f"deadline_extended:{m.id}:{pid}:{epoch(deadline_at)}",
        lambda pid: {"deadline_at": deadline_at.isoformat()},
        EmailPriority.HIGH,
        now,
    )


# -- standings --------------------------------------------------------------------------------


def standings(tournament: Tournament | int) -> list[dict[str, Any]]:
    """The table as it stands: leagues by points and tiebreaks; elimination by
    final rank once known, else by wins. Read-only."""
    t = tournament if isinstance(tournament, Tournament) else Tournament.get_or_none(id=tournament)
    if t is None:
        raise NotFound(f"no tournament {key_of(tournament)}")
    entries = _seeded(t)
    matches = list(Match.select().where(Match.tournament == t.id, Match.state == MatchState.COMPLETE))
    counts = _counts(matches)
    rows = []
    if t.format in LEAGUES:
        table = _league_table(t, entries, matches)
        by_seed = {e.seed: e for e in entries}
        ranks = ranks_from_standings(table)
        for st in table:
            e = by_seed[st.seed]
            rows.append(_standing_row(t, e, counts, ranks[st.seed], st))
        return rows
    ordered = sorted(
        entries,
        key=lambda e: (e.final_rank or 10**9, -counts.get(e.id, {}).get("wins", 0), e.seed),
    )
    for index, e in enumerate(ordered, start=1):
        rows.append(_standing_row(t, e, counts, e.final_rank or index, None))
    return rows


def tiebreaks_of(t: Tournament, st: Standing | None) -> dict[str, float] | None:
    if st is None:
        return None
    values = {"buchholz": st.buchholz, "sonneborn_berger": st.sonneborn_berger}
    if t.format == TournamentFormat.ROUND_ROBIN:
        values = {"head_to_head": st.head_to_head, **values}
    return values


def _standing_row(
    t: Tournament, e: Participant, counts: dict, rank: int, st: Standing | None
) -> dict[str, Any]:
    c = counts.get(e.id, {})
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


def _counts(matches: list[Match]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {}

    def bump(pid: int | None, key: str) -> None:
        if pid:
            counts.setdefault(pid, {"wins": 0, "draws": 0, "losses": 0})[key] += 1

    for m in matches:
        if m.player1_id is None or m.player2_id is None:
            continue  # byes and walkovers are not games
        if m.is_draw:
            bump(m.player1_id, "draws")
            bump(m.player2_id, "draws")
        elif m.winner_id is None:
            bump(m.player1_id, "losses")
            bump(m.player2_id, "losses")
        else:
            bump(m.winner_id, "wins")
            bump(m.player2_id if m.winner_id == m.player1_id else m.player1_id, "losses")
    return counts


def points_scheme(t: Tournament) -> PointsScheme:
    """Win 3, draw 1, loss 0, Swiss bye 3 unless the tournament's settings say otherwise."""
    s = t.settings or {}
    return PointsScheme(
        win=float(s.get("points_win", 3)),
        draw=float(s.get("points_draw", 1)),
        loss=float(s.get("points_loss", 0)),
        bye=float(s.get("points_bye", 3)),
    )


def _league_results(matches: list[Match], seed_of: dict[int, int]) -> list[Result]:
    results = []
    for m in matches:
        if m.state != MatchState.COMPLETE:
            continue
        if m.player1_id and m.player2_id is None and m.player2_is_bye:
            results.append(Result(seed_of[m.player1_id], None, Outcome.BYE))
            continue
        if not (m.player1_id and m.player2_id):
            continue
        first, second = seed_of[m.player1_id], seed_of[m.player2_id]
        if m.is_draw:
            outcome = Outcome.DRAW
        elif m.winner_id is None:
            outcome = Outcome.BOTH_LOSE
        else:
            outcome = Outcome.FIRST_WINS if m.winner_id == m.player1_id else Outcome.SECOND_WINS
        results.append(Result(first, second, outcome))
    return results


def _league_table(t: Tournament, entries: list[Participant], matches: list[Match]) -> list[Standing]:
    seed_of = {e.id: e.seed for e in entries}
    return compute_standings(
        sorted(seed_of.values()),
        _league_results(matches, seed_of),
        points_scheme(t),
        head_to_head=t.format == TournamentFormat.ROUND_ROBIN,
    )


def _seeded(t: Tournament) -> list[Participant]:
    return list(
        Participant.select()
        .where(Participant.tournament == t.id, Participant.seed.is_null(False))
        .order_by(Participant.seed)
    )


# -- deciding a match: the one path -----------------------------------------------------------


def _complete(
    t: Tournament,
    m: Match,
    decision: Decision,
    actor: User | None,
    now: dt.datetime,
    event_type: MatchEventType,
    payload: dict[str, Any],
) -> None:
    """Decide ``m`` and set off everything that follows, in the caller's transaction."""
    _write_decision(m, decision, now)
    reports = MatchReport.select().where(
        MatchReport.match == m.id,
        MatchReport.superseded_at.is_null(True),
        MatchReport.status == ReportStatus.ACTIVE,
    )
    for report in reports:
        agrees = report.kind != ReportKind.DISPUTE and report.winner_participant_id == decision.winner
        report.status = ReportStatus.ACCEPTED if agrees else ReportStatus.REJECTED
        report.save()
    _event(t, m, actor, event_type, {**payload, **_decision_payload(decision)}, now)
    _mail_players(
        t,
        m,
        (m.player1_id, m.player2_id),
        "match_result",
        lambda pid: f"match_result:{m.id}:{m.version}:{pid}",
        lambda pid: {
            "result_type": decision.result_type.value,
            "player1_score": decision.player1_score,
            "player2_score": decision.player2_score,
            "won": decision.winner == pid,
            "draw": decision.is_draw,
        },
        EmailPriority.NORMAL,
        now,
    )
    _after_decision(t, m, actor, now)


def _write_decision(m: Match, d: Decision, now: dt.datetime) -> None:
    m.state = MatchState.COMPLETE
    m.winner = d.winner
    m.loser = d.loser
    m.player1_score = d.player1_score
    m.player2_score = d.player2_score
    m.game_scores = d.game_scores
    m.is_draw = d.is_draw
    m.result_type = d.result_type
    m.completed_at = now
    m.admin_locked_at = None
    m.warn_at = None  # only an open match is warned about
    _touch(m, now)
    m.save()


def _after_decision(t: Tournament, m: Match, actor: User | None, now: dt.datetime) -> None:
    opened: list[Match] = []
    touched_rounds = {m.round_id}
    if t.format in LEAGUES:
        finished = _advance_league(t, actor, now, opened)
    else:
        touched_rounds |= _propagate(t, m, now, opened, actor)
        finished = False
    _open(t, opened, actor, now)
    _close_rounds(touched_rounds, now)
    if t.format not in LEAGUES:
        finished = (
            not Match.select().where(Match.tournament == t.id, Match.state != MatchState.COMPLETE).exists()
        )
    if finished and t.state in MANAGING:
        complete_tournament(t, now)


def _propagate(
    t: Tournament, first: Match, now: dt.datetime, opened: list[Match], actor: User | None
) -> set[int]:
    """Move the winner (and, double elimination, the loser) of ``first`` on.
    A next match with two players opens; one with a single player (the other
    slot a placeholder, or a player already out) is decided at once and moves
    on in turn (``plan``'s walkover rule). Returns the rounds touched."""
    touched: set[int] = set()
    todo = [first]
    while todo:
        done = todo.pop()
        touched.add(done.round_id)
        statuses = _statuses(t, done)
        loser = done.loser_id
        loser_goes_on = loser is not None and statuses.get(loser) not in OUT and done.loser_to_id is not None
        # A grand-final reset is not needed when the winners' champion (slot 1) won the first final.
        if loser_goes_on and done.bracket == Bracket.GRAND_FINAL and done.winner_id == done.player1_id:
            loser_goes_on = False
        for pid in (done.player1_id, done.player2_id):
            if pid and pid != done.winner_id and not (pid == loser and loser_goes_on):
                Participant.update(eliminated_at=now).where(
                    Participant.id == pid, Participant.eliminated_at.is_null(True)
                ).execute()
        targets = [
            (done.winner_to_id, done.winner_to_slot, done.winner_id or NOBODY),
            (done.loser_to_id, done.loser_to_slot, loser if loser_goes_on else NOBODY),
        ]
        for target_id, slot, pid in targets:
            if target_id is None:
                continue
            nxt = Match.get_by_id(target_id)
            if nxt.state != MatchState.PENDING:
                log.error(
                    "match %s: next match %s is %s, not pending; left alone", done.id, nxt.id, nxt.state
                )
                continue
            setattr(nxt, f"player{slot}", pid or None)
            setattr(nxt, f"player{slot}_is_bye", pid == NOBODY)
            _touch(nxt, now)
            nxt.save()
            filled = [
                nxt.player1_id or (NOBODY if nxt.player1_is_bye else None),
                nxt.player2_id or (NOBODY if nxt.player2_is_bye else None),
            ]
            if None in filled:
                continue
            present = [p for p in filled if p]
            statuses = _statuses(t, nxt)
            if len(present) == 2 and not any(statuses.get(p) in OUT for p in present):
                opened.append(nxt)
                continue
            _write_decision(nxt, _forfeit_decision(nxt, statuses), now)
            _event(t, nxt, actor, MatchEventType.WALKOVER, {"from": done.id}, now)
            todo.append(nxt)
    return touched


def _forfeit_decision(m: Match, statuses: dict[int, ParticipantStatus]) -> Decision:
    """A match decided without a game: the player still in wins; players out
    (disqualified, dropped) lose; no one present, no winner."""
    present = [p for p in (m.player1_id, m.player2_id) if p]
    out = [p for p in present if statuses.get(p) in OUT]
    alive = [p for p in present if p not in out]
    if len(alive) == 1:
        loser = out[0] if out else None
        kind = ResultType.DQ if out else ResultType.WALKOVER
        return Decision(winner=alive[0], loser=loser, result_type=kind)
    if len(present) == 2 and len(out) == 2:
        return Decision(winner=None, loser=None, result_type=ResultType.DOUBLE_FORFEIT)
    if len(out) == 1:
        return Decision(winner=None, loser=out[0], result_type=ResultType.DQ)
    return Decision(winner=None, loser=None, result_type=ResultType.WALKOVER)


def _open(t: Tournament, matches: list[Match], actor: User | None, now: dt.datetime) -> None:
    from tourno.tournaments.services.start import match_deadline, write_opened

    if not matches:
        return
    deadline_at, warn_at = match_deadline(t, now)
    rows = []
    for m in matches:
        m.state = MatchState.OPEN
        m.opened_at = now
        m.deadline_at = deadline_at
        m.warn_at = warn_at
        m.deadline_warning_sent_at = None
        _touch(m, now)
        m.save()
        rows.append(
            {
                "id": m.id,
                "identifier": m.identifier,
                "round": m.round_id,
                "player1": m.player1_id,
                "player2": m.player2_id,
                "deadline_at": deadline_at,
            }
        )
    round_ids = {m.round_id for m in matches}
    Round.update(state=RoundState.OPEN, opened_at=now).where(
        Round.id.in_(list(round_ids)), Round.state == RoundState.PENDING
    ).execute()
    names = {r.id: r.name for r in Round.select(Round.id, Round.name).where(Round.id.in_(list(round_ids)))}
    pids = {p for row in rows for p in (row["player1"], row["player2"])}
    entries = {
        e.id: e
        for e in Participant.select(Participant, User)
        .join(User, peewee.JOIN.LEFT_OUTER, on=(Participant.user == User.id))
        .where(Participant.id.in_(list(pids)))
    }
    write_opened(t, rows, entries, names, actor, now)


def _close_rounds(round_ids: set[int], now: dt.datetime) -> None:
    for rid in round_ids:
        unfinished = Match.select().where(Match.round == rid, Match.state != MatchState.COMPLETE).exists()
        if not unfinished:
            Round.update(state=RoundState.COMPLETE, completed_at=now).where(
                Round.id == rid, Round.state != RoundState.COMPLETE
            ).execute()


def _advance_league(t: Tournament, actor: User | None, now: dt.datetime, opened: list[Match]) -> bool:
    """Open the next round once every match of the current one is decided:
    round robin opens its pre-planned round, Swiss pairs one from the
    standings. Returns whether the league is over."""
    while True:
        current = t.current_round or 1
        rounds = {r.number: r for r in Round.select().where(Round.tournament == t.id)}
        cur = rounds.get(current)
        if (
            cur is not None
            and Match.select().where(Match.round == cur.id, Match.state != MatchState.COMPLETE).exists()
        ):
            return False
        if current >= (t.total_rounds or current):
            return True
        nxt_number = current + 1
        if t.format == TournamentFormat.ROUND_ROBIN:
            pending = list(
                Match.select().where(Match.round == rounds[nxt_number].id, Match.state == MatchState.PENDING)
            )
        else:
            pending = _pair_swiss_round(t, nxt_number, now)
            if pending is None:
                return True  # fewer than two players left to pair
        _save_tournament(t, now, current_round=nxt_number)
        decided_now = []
        for m in pending:
            statuses = _statuses(t, m)
            if (
                m.player1_id
                and m.player2_id
                and not any(statuses.get(p) in OUT for p in (m.player1_id, m.player2_id))
            ):
                opened.append(m)
            else:
                _write_decision(m, _forfeit_decision(m, statuses), now)
                _event(t, m, actor, MatchEventType.WALKOVER, {"round": nxt_number}, now)
                decided_now.append(m)
        if decided_now:
            _close_rounds({m.round_id for m in decided_now}, now)
        if any(m.state != MatchState.COMPLETE for m in pending):
            return False


def _pair_swiss_round(t: Tournament, number: int, now: dt.datetime) -> list[Match] | None:
    """Pair and persist Swiss round ``number``; the bye (odd field) is
    decided at once. Returns the round's undecided matches, or None when
    fewer than two players can still be paired."""
    from tourno.tournaments.services import start

    entries = {
        e.id: e
        for e in Participant.select(Participant, User)
        .join(User, peewee.JOIN.LEFT_OUTER, on=(Participant.user == User.id))
        .where(Participant.tournament == t.id, Participant.seed.is_null(False))
    }
    matches = list(Match.select().where(Match.tournament == t.id))
    seed_of = {pid: e.seed for pid, e in entries.items()}
    results = _league_results(matches, seed_of)
    table = compute_standings(sorted(seed_of.values()), results, points_scheme(t))
    active_seeds = {e.seed for e in entries.values() if e.status not in OUT}
    active = [st for st in table if st.seed in active_seeds]
    if len(active) < 2:
        return None
    met, had_bye = history_from_results(results)
    plan = pair_next_round(active, met, had_bye, number)
    by_seed = {e.seed: e for e in entries.values()}
    built = start._resolve(t, plan, by_seed, now, open_round=-1)  # open nothing here: the caller opens
    start._persist(t, built, None, now)
    return list(
        Match.select()
        .join(Round, on=(Match.round == Round.id))
        .where(Match.tournament == t.id, Round.number == number, Match.state != MatchState.COMPLETE)
    )


# -- completing the tournament -------------------------------------------------------------


def complete_tournament(t: Tournament, now: dt.datetime, *, review: bool | None = None) -> None:
    """Every match is decided: write final ranks and the standings cache, then
    ``complete`` (or ``awaiting_review`` when the organizer reviews first)."""
    ranks, table = final_ranks(t)
    entries = _seeded(t)
    matches = list(Match.select().where(Match.tournament == t.id, Match.state == MatchState.COMPLETE))
    counts = _counts(matches)
    by_seed = {st.seed: st for st in table}
    for e in entries:
        c = counts.get(e.id, {})
        st = by_seed.get(e.seed)
        Participant.update(
            final_rank=ranks.get(e.id),
            wins=c.get("wins", 0),
            draws=c.get("draws", 0),
            losses=c.get("losses", 0),
            points=round(st.points) if st else 0,
            tiebreaks=tiebreaks_of(t, st),
        ).where(Participant.id == e.id).execute()
    if review is None:
        review = bool((t.settings or {}).get("review_before_finalizing", False))
    if review:
        if t.state != TournamentState.AWAITING_REVIEW:
            _save_tournament(t, now, state=TournamentState.AWAITING_REVIEW, awaiting_review_since=now)
            _mail_organizer(t, "awaiting_review", f"awaiting_review:{t.id}:{t.version}", {}, now)
        return
    _save_tournament(t, now, state=TournamentState.COMPLETE, completed_at=now)
    champion = next((e for e in entries if ranks.get(e.id) == 1), None)
    for e in (
        Participant.select(Participant, User)
        .join(User, on=(Participant.user == User.id))
        .where(Participant.tournament == t.id, Participant.seed.is_null(False))
    ):
        enqueue_email(
            dedupe_key=f"tournament_complete:{t.id}:{e.id}:{t.version}",
            to_email=e.user.email,
            user=e.user,
            template="tournament_complete",
            context=_tournament_context(t)
            | {
                "display_name": e.display_name,
                "final_rank": ranks.get(e.id),
                "champion": champion.display_name if champion else None,
            },
            priority=EmailPriority.NORMAL,
            now=now,
        )


def final_ranks(t: Tournament) -> tuple[dict[int, int], list[Standing]]:
    """Participant id -> final rank, and (leagues) the standings table."""
    entries = _seeded(t)
    matches = list(
        Match.select(Match, Round).join(Round, on=(Match.round == Round.id)).where(Match.tournament == t.id)
    )
    if t.format in LEAGUES:
        table = _league_table(t, entries, matches)
        by_seed = {e.seed: e.id for e in entries}
        return {by_seed[s]: r for s, r in ranks_from_standings(table).items()}, table
    from tourno.tournaments.services.start import _plan

    plan, _ = _plan(t, len(entries))
    levels = match_levels(plan)
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
    return elimination_ranks(plan, eliminated_in, champion, third), []


# -- reopening -------------------------------------------------------------------------------


def _reopen(t: Tournament, m: Match, actor: User | None, now: dt.datetime, *, open_again: bool) -> None:
    if m.result_type in (ResultType.BYE, ResultType.WALKOVER) and not (m.player1_id and m.player2_id):
        raise InvalidState("this match was decided without a game; reopen the match that fed it")
    if m.result_type == ResultType.DQ:
        raise InvalidState("a disqualification decided this match; it cannot be reopened")
    if t.format == TournamentFormat.SWISS:
        number = Round.get_by_id(m.round_id).number
        if Round.select().where(Round.tournament == t.id, Round.number > number).exists():
            raise InvalidState("later Swiss rounds were paired from this result; it can no longer change")
    if m.result_type == ResultType.DOUBLE_FORFEIT:
        # The no-show penalty (disqualified or dropped) goes with the result it came from.
        ids = [p for p in (m.player1_id, m.player2_id) if p]
        Participant.update(no_show_count=Participant.no_show_count - 1).where(
            Participant.id.in_(ids), Participant.no_show_count > 0
        ).execute()
        Participant.update(status=ParticipantStatus.REGISTERED, version=Participant.version + 1).where(
            Participant.id.in_(ids), Participant.status.in_(OUT)
        ).execute()
    reset = _reset_dependents(t, m, now)
    _clear_result(m, now)
    MatchReport.update(status=ReportStatus.SUPERSEDED, superseded_at=now).where(
        MatchReport.match == m.id, MatchReport.superseded_at.is_null(True)
    ).execute()
    Participant.update(eliminated_at=None, final_rank=None).where(
        Participant.id.in_([p for p in (m.player1_id, m.player2_id, *reset) if p])
    ).execute()
    Round.update(state=RoundState.OPEN, completed_at=None).where(Round.id == m.round_id).execute()
    _event(t, m, actor, MatchEventType.REOPENED, {"reset": sorted(reset)}, now)
    if t.state in (TournamentState.COMPLETE, TournamentState.AWAITING_REVIEW):
        Participant.update(final_rank=None).where(Participant.tournament == t.id).execute()
        _save_tournament(
            t, now, state=TournamentState.UNDERWAY, completed_at=None, awaiting_review_since=None
        )
    if open_again:
        m.state = MatchState.PENDING
        _open(t, [m], actor, now)
    else:
        m.state = MatchState.OPEN


def _reset_dependents(t: Tournament, m: Match, now: dt.datetime) -> set[int]:
    """Take ``m``'s result back out of the matches it fed, recursively; returns
    the participants whose elimination that undoes."""
    players: set[int] = set()
    todo = [(m.winner_to_id, m.winner_to_slot), (m.loser_to_id, m.loser_to_slot)]
    while todo:
        target_id, slot = todo.pop()
        if target_id is None:
            continue
        nxt = Match.get_by_id(target_id)
        was_decided = nxt.state == MatchState.COMPLETE
        players.update(p for p in (nxt.player1_id, nxt.player2_id) if p)
        setattr(nxt, f"player{slot}", None)
        setattr(nxt, f"player{slot}_is_bye", False)
        if nxt.state != MatchState.PENDING:
            MatchReport.update(status=ReportStatus.SUPERSEDED, superseded_at=now).where(
                MatchReport.match == nxt.id, MatchReport.superseded_at.is_null(True)
            ).execute()
            _clear_result(nxt, now)
            nxt.state = MatchState.PENDING
            nxt.opened_at = nxt.deadline_at = nxt.warn_at = None
            Round.update(state=RoundState.OPEN, completed_at=None).where(
                Round.id == nxt.round_id, Round.state == RoundState.COMPLETE
            ).execute()
        _touch(nxt, now)
        nxt.save()
        if was_decided:
            todo += [(nxt.winner_to_id, nxt.winner_to_slot), (nxt.loser_to_id, nxt.loser_to_slot)]
    return players


def _clear_result(m: Match, now: dt.datetime) -> None:
    m.winner = m.loser = None
    m.player1_score = m.player2_score = None
    m.game_scores = None
    m.is_draw = False
    m.result_type = None
    m.completed_at = None
    _touch(m, now)
    m.save()


# -- disputes ---------------------------------------------------------------------------------


def mark_disputed(t: Tournament, m: Match, actor: User | None, now: dt.datetime, *, reason: str) -> None:
    """-> ``disputed``: out of every deadline scan until an organizer decides."""
    m.state = MatchState.DISPUTED
    _touch(m, now)
    m.save()
    _event(t, m, actor, MatchEventType.DISPUTED, {"reason": reason}, now)
    _mail_organizer(
        t,
        "match_disputed",
        f"match_disputed:{m.id}:{m.version}",
        {"match_id": m.id, "match_identifier": m.identifier, "reason": reason},
        now,
    )


# -- helpers ------------------------------------------------------------------------------------


@contextmanager
def _locked_match(match: Match | int) -> Iterator[tuple[Tournament, Match]]:
    """The tournament locked (one writer per tournament), and the match as it is now."""
    mid = key_of(match)
    found = Match.select(Match.id, Match.tournament).where(Match.id == mid).first()
    if found is None:
        raise NotFound(f"no match {mid}")
    with locked_tournament(found.tournament_id) as t:
        yield t, Match.get_by_id(mid)


def _require_organizer(actor: User, t: Tournament, *, allow_complete: bool = False) -> None:
    require_manager(actor, t)
    allowed = (*MANAGING, TournamentState.COMPLETE) if allow_complete else MANAGING
    if t.state not in allowed:
        raise InvalidState(f"tournament is {t.state.value}")


def _player_side(t: Tournament, m: Match, actor: User, now: dt.datetime) -> int:
    """The actor's participant id in ``m``, after the checks every player action shares."""
    mine = (
        Participant.select(Participant.id)
        .where(
            Participant.id.in_([p for p in (m.player1_id, m.player2_id) if p]), Participant.user == actor.id
        )
        .first()
    )
    if mine is None:
        if can_manage(actor, t):
            raise NotYourMatch("organizers decide matches with resolve, not by reporting")
        raise NotYourMatch("you play in neither slot of this match")
    if t.state not in PLAYING:
        raise InvalidState(f"tournament is {t.state.value}")
    if t.report_mode == ReportMode.ADMIN_ONLY:
        raise PermissionDenied("in this tournament only the organizer enters results")
    if m.state not in ACTIONABLE_MATCH_STATES:
        raise InvalidState(f"match is {m.state.value}")
    if m.admin_locked_at is not None:
        raise InvalidState("an organizer is handling this match")
    if m.deadline_at is not None and now > m.deadline_at:
        raise DeadlinePassed("the match deadline has passed")
    return mine.id


def _opponent(m: Match, pid: int) -> int | None:
    return m.player2_id if pid == m.player1_id else m.player1_id


def _active_reports(m: Match) -> dict[int, MatchReport]:
    return {
        r.participant_id: r
        for r in MatchReport.select().where(
            MatchReport.match == m.id,
            MatchReport.superseded_at.is_null(True),
            MatchReport.status == ReportStatus.ACTIVE,
        )
    }


def _file_report(
    t: Tournament,
    m: Match,
    me: int,
    actor: User,
    kind: ReportKind,
    now: dt.datetime,
    *,
    event: bool = True,
    **values: Any,
) -> MatchReport:
    """The side's new live report (its earlier one superseded) and, unless
    the caller writes a more specific one, its ``report`` event."""
    _supersede_own(m, me, now)
    report = MatchReport.create(
        match=m.id,
        participant=me,
        user=actor.id,
        kind=kind,
        status=ReportStatus.ACTIVE,
        created_at=now,
        **values,
    )
    if event:
        _event(t, m, actor, MatchEventType.REPORT, _report_payload(report), now)
    return report


def _supersede_own(m: Match, pid: int, now: dt.datetime) -> None:
    MatchReport.update(status=ReportStatus.SUPERSEDED, superseded_at=now).where(
        MatchReport.match == m.id, MatchReport.participant == pid, MatchReport.superseded_at.is_null(True)
    ).execute()


def _after_report(
    t: Tournament,
    m: Match,
    me: int,
    report: MatchReport,
    decision: Decision,
    actor: User,
    now: dt.datetime,
) -> Match:
    if t.report_mode == ReportMode.SINGLE_REPORT:
        _complete(t, m, decision, actor, now, MatchEventType.CONFIRMED, {"report": report.id})
        return m
    theirs = _active_reports(m).get(_opponent(m, me))
    if theirs is None:
        m.state = MatchState.AWAITING_CONFIRMATION
        _touch(m, now)
        m.save()
        _mail_players(
            t,
            m,
            (_opponent(m, me),),
            "result_to_confirm",
            lambda pid: f"result_to_confirm:{m.id}:{report.id}",
            lambda pid: {"player1_score": report.player1_score, "player2_score": report.player2_score},
            EmailPriority.HIGH,
            now,
        )
    elif theirs.kind != ReportKind.DISPUTE and _agree(theirs, report):
        kind = (
            ResultType.FORFEIT
            if ReportKind.FORFEIT_CLAIM in (theirs.kind, report.kind)
            else ResultType.PLAYED
        )
        _complete(
            t,
            m,
            Decision(**{**decision.__dict__, "result_type": kind}),
            actor,
            now,
            MatchEventType.CONFIRMED,
            {"reports": [theirs.id, report.id]},
        )
    else:
        mark_disputed(t, m, actor, now, reason="the two reports differ")
    return m


def _agree(a: MatchReport, b: MatchReport) -> bool:
    if a.winner_participant_id != b.winner_participant_id:
        return False
    if ReportKind.FORFEIT_CLAIM in (a.kind, b.kind):
        return True
    return (a.player1_score, a.player2_score) == (b.player1_score, b.player2_score)


def _decision_of(m: Match, report: MatchReport, result_type: ResultType) -> Decision:
    """The decision a report states (a forfeit claim: the reporter wins by forfeit)."""
    if report.kind == ReportKind.FORFEIT_CLAIM:
        return Decision(
            winner=report.participant_id,
            loser=_opponent(m, report.participant_id),
            result_type=ResultType.FORFEIT,
        )
    winner = report.winner_participant_id
    return Decision(
        winner=winner,
        loser=_opponent(m, winner) if winner else None,
        result_type=result_type,
        player1_score=report.player1_score,
        player2_score=report.player2_score,
        is_draw=winner is None,
        game_scores=report.game_scores,
    )


def _decision_from_scores(
    t: Tournament,
    m: Match,
    player1_score: Any,
    player2_score: Any,
    winner: Any,
    game_scores: Any,
) -> Decision:
    errors: dict[str, str] = {}
    for name, value in (("player1_score", player1_score), ("player2_score", player2_score)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SCORE:
            errors[name] = f"must be a whole number from 0 to {MAX_SCORE}"
    if winner is not None and (isinstance(winner, bool) or winner not in (m.player1_id, m.player2_id)):
        errors["winner"] = "must be the id of one of the match's two participants"
    if game_scores is not None and not (
        isinstance(game_scores, list)
        and len(game_scores) <= 100
        and all(
            isinstance(g, list)
            and len(g) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_SCORE for x in g)
            for g in game_scores
        )
    ):
        errors["game_scores"] = "must be a list of [player1, player2] score pairs (at most 100)"
    if errors:
        raise ValidationError(errors)
    if winner is None and player1_score != player2_score:
        winner = m.player1_id if player1_score > player2_score else m.player2_id
    if winner is not None and player1_score != player2_score:
        leader = m.player1_id if player1_score > player2_score else m.player2_id
        if winner != leader:
            raise ValidationError({"winner": "contradicts the scores"})
    if winner is None and t.format not in LEAGUES:
        raise ValidationError({"winner": "an elimination match cannot be drawn; give the winner"})
    return Decision(
        winner=winner,
        loser=_opponent(m, winner) if winner is not None else None,
        result_type=ResultType.PLAYED,
        player1_score=player1_score,
        player2_score=player2_score,
        is_draw=winner is None,
        game_scores=game_scores,
    )


def _statuses(t: Tournament, m: Match) -> dict[int, ParticipantStatus]:
    ids = [p for p in (m.player1_id, m.player2_id) if p]
    if not ids:
        return {}
    return {
        p.id: p.status
        for p in Participant.select(Participant.id, Participant.status).where(Participant.id.in_(ids))
    }


def _comment(comment: Any) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str) or len(comment) > 2000:
        raise ValidationError({"comment": "must be text of at most 2000 characters"})
    return comment.strip() or None


def _touch(m: Match, now: dt.datetime) -> None:
    m.version += 1
    m.updated_at = now


def _save_tournament(t: Tournament, now: dt.datetime, **changes: Any) -> None:
    changes.update(version=t.version + 1, updated_at=now)
    for name, value in changes.items():
        setattr(t, name, value)
    Tournament.update(**changes).where(Tournament.id == t.id).execute()


def _event(
    t: Tournament,
    m: Match,
    actor: User | None,
    kind: MatchEventType,
    payload: dict[str, Any],
    now: dt.datetime,
) -> None:
    MatchEvent.create(
        match=m.id,
        tournament=t.id,
        actor_user=actor.id if actor is not None else None,
        type=kind,
        payload=payload,
        created_at=now,
    )


def _report_payload(report: MatchReport) -> dict[str, Any]:
    return {
        "report": report.id,
        "kind": report.kind.value,
        "participant": report.participant_id,
        "player1_score": report.player1_score,
        "player2_score": report.player2_score,
        "winner": report.winner_participant_id,
    }


def _decision_payload(d: Decision) -> dict[str, Any]:
    return {
        "winner": d.winner,
        "loser": d.loser,
        "result_type": d.result_type.value,
        "player1_score": d.player1_score,
        "player2_score": d.player2_score,
        "draw": d.is_draw,
    }


def _tournament_context(t: Tournament) -> dict[str, Any]:
    return {"tournament_id": t.id, "tournament_name": t.name}


def _mail_players(
    t: Tournament,
    m: Match,
    pids: tuple[int | None, ...],
    template: str,
    dedupe_key: Callable[[int], str],
    extra: Callable[[int], dict[str, Any]],
    priority: EmailPriority,
    now: dt.datetime,
) -> None:
    """One email per listed player of ``m`` who has an address (an entrant
    added by name has none), both players read in one query."""
    entries = {
        e.id: e
        for e in Participant.select(Participant, User)
        .join(User, peewee.JOIN.LEFT_OUTER, on=(Participant.user == User.id))
        .where(Participant.id.in_([p for p in (m.player1_id, m.player2_id) if p]))
    }
    for pid in pids:
        entry = entries.get(pid) if pid else None
        if entry is None or entry.user_id is None:
            continue
        opponent = entries.get(_opponent(m, pid))
        enqueue_email(
            dedupe_key=dedupe_key(pid),
            to_email=entry.user.email,
            user=entry.user,
            template=template,
            context=_tournament_context(t)
            | {
                "match_id": m.id,
                "match_identifier": m.identifier,
                "participant_id": pid,
                "display_name": entry.display_name,
                "opponent_name": opponent.display_name if opponent else None,
            }
            | extra(pid),
            priority=priority,
            now=now,
        )


def _mail_organizer(
    t: Tournament, template: str, dedupe_key: str, extra: dict[str, Any], now: dt.datetime
) -> None:
    organizer = User.get_by_id(t.organizer_id)
    enqueue_email(
        dedupe_key=dedupe_key,
        to_email=organizer.email,
        user=organizer,
        template=template,
        context=_tournament_context(t) | {"display_name": organizer.display_name} | extra,
        priority=EmailPriority.HIGH,
        now=now,
    )

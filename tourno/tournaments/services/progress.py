"""What a decided match sets off, and the other changes of a running
bracket: the winner (and loser) move on, next matches open with their
deadlines, rounds close, a league's next round opens (Swiss pairs it), the
tournament completes with its final ranks; and the way back (reopening), a
deadline moved, a match disputed (``reference/domain.md`` §7.2).

:func:`complete_match` is the one place a match is decided: player reports,
organizer decisions and the deadline job all go through it, so propagation is
never special-cased. Everything here runs in the caller's transaction, under
the tournament's row lock the caller holds.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, cast

import peewee

from tourno.accounts.models import User
from tourno.mail.models import EmailPriority
from tourno.tournaments.decisions import (
    LEAGUES,
    OUT,
    Decision,
    forfeit_decision,
    league_results,
    match_records,
)
from tourno.tournaments.errors import InvalidState
from tourno.tournaments.formats import (
    Bracket,
    Standing,
    compute_standings,
    history_from_results,
    pair_next_round,
)
from tourno.tournaments.models import (
    Match,
    MatchEventType,
    MatchReport,
    MatchState,
    Participant,
    ParticipantStatus,
    ReportKind,
    ReportStatus,
    ResultType,
    Round,
    RoundState,
    Tournament,
    TournamentFormat,
    TournamentState,
)
from tourno.tournaments.services.brackets import (
    NOBODY,
    match_deadline,
    persist,
    resolve,
    warn_at_for,
    write_opened,
)
from tourno.tournaments.services.common import (
    MANAGING,
    defer,
    entries_of,
    epoch,
    flush_deferred,
    forget_entries,
    known_reports,
    read_entries,
    read_matches,
    record_event,
    remember_entries,
    remember_reports,
    save_match,
    save_tournament,
    touch,
)
from tourno.tournaments.services.notify import (
    entries_with_users,
    mail_organizer,
    mail_players,
    mail_tournament_complete,
    seeded_with_users,
)
from tourno.tournaments.services.standings import (
    decided_matches,
    final_ranks,
    points_scheme,
    seeded,
    seeds_by_id,
    tiebreaks_of,
)

log = logging.getLogger(__name__)


# -- deciding a match: the one path -----------------------------------------------------------


def complete_match(
    t: Tournament,
    m: Match,
    decision: Decision,
    actor: User | None,
    now: dt.datetime,
    event_type: MatchEventType,
    payload: dict[str, Any],
) -> None:
    """Decide ``m`` and set off everything that follows, in the caller's transaction."""
    write_decision(m, decision, now)
    settle_reports(m, decision)
    record_event(t, m, actor, event_type, {**payload, **decision.payload()}, now)
    mail_players(
        t,
        m,
        (m.player1_id, m.player2_id),
        template="match_result",
        dedupe_key=lambda pid: f"match_result:{m.id}:{m.version}:{pid}",
        extra=lambda pid: {
            "result_type": decision.result_type.value,
            "player1_score": decision.player1_score,
            "player2_score": decision.player2_score,
            "won": decision.winner == pid,
            "draw": decision.is_draw,
        },
        priority=EmailPriority.NORMAL,
        now=now,
    )
    _after_decision(t, m, actor, now)


def settle_reports(m: Match, decision: Decision) -> None:
    """Each live report of the decided ``m`` is accepted (it states the
    decision's winner) or rejected, all in one UPDATE."""
    reports = active_reports(m)
    if not reports:
        return
    accepted = [
        r.id
        for r in reports.values()
        if r.kind != ReportKind.DISPUTE and r.winner_participant_id == decision.winner
    ]
    ids = [r.id for r in reports.values()]
    for r in reports.values():
        r.status = ReportStatus.ACCEPTED if r.id in accepted else ReportStatus.REJECTED
    if len(accepted) in (0, len(ids)):
        status: Any = (ReportStatus.ACCEPTED if accepted else ReportStatus.REJECTED).value
    else:
        status = peewee.Case(
            None, [(MatchReport.id.in_(accepted), ReportStatus.ACCEPTED.value)], ReportStatus.REJECTED.value
        )
    defer(MatchReport.update(status=status).where(MatchReport.id.in_(ids)))
    remember_reports(m, {})


def write_decision(m: Match, d: Decision, now: dt.datetime) -> None:
    """The decision onto the match row, nothing else (no event, no mail, no propagation)."""
    m.state = MatchState.COMPLETE
    m.winner_id = d.winner
    m.loser_id = d.loser
    m.player1_score = d.player1_score
    m.player2_score = d.player2_score
    m.game_scores = d.game_scores
    m.is_draw = d.is_draw
    m.result_type = d.result_type
    m.completed_at = now
    m.admin_locked_at = None
    m.warn_at = None  # only an open match is warned about
    touch(m, now)
    save_match(m)


def _after_decision(t: Tournament, m: Match, actor: User | None, now: dt.datetime) -> None:
    opened: list[Match] = []
    touched_rounds = {m.round_id}
    waiting = False  # a match is known to be still undecided
    if t.format in LEAGUES:
        finished = advance_league(t, actor, now, opened)
    else:
        rounds, waiting = propagate(t, m, now, opened, actor)
        touched_rounds |= rounds
        finished = False
    open_matches(t, opened, actor, now)
    close_rounds(touched_rounds, now, held=True)
    if t.format not in LEAGUES:
        finished = not (
            waiting
            or opened
            or Match.select().where(Match.tournament == t.id, Match.state != MatchState.COMPLETE).exists()
        )
    if finished and t.state in MANAGING:
        complete_tournament(t, now)


def propagate(
    t: Tournament, first: Match, now: dt.datetime, opened: list[Match], actor: User | None
) -> tuple[set[int], bool]:
    """Move the winner (and, double elimination, the loser) of ``first`` on.
    A next match with two players opens; one with a single player (the other
    slot a placeholder, or a player already out) is decided at once and moves
    on in turn (``plan``'s walkover rule). Returns the rounds touched and
    whether a next match was left waiting for its other player.

    Each next match is read once (with its round) and written once: waiting,
    decided (a walkover) or, by :func:`open_matches`, opened."""
    touched: set[int] = set()
    eliminated: list[int] = []
    waiting: set[int] = set()  # next matches left for their other player
    todo = [first]
    while todo:
        done = todo.pop()
        touched.add(done.round_id)
        statuses = statuses_of(done)
        loser = done.loser_id
        loser_goes_on = loser is not None and statuses.get(loser) not in OUT and done.loser_to_id is not None
        # A grand-final reset is not needed when the winners' champion (slot 1) won the first final.
        if loser_goes_on and done.bracket == Bracket.GRAND_FINAL and done.winner_id == done.player1_id:
            loser_goes_on = False
        for pid in (done.player1_id, done.player2_id):
            if pid and pid != done.winner_id and not (pid == loser and loser_goes_on):
                eliminated.append(pid)
        targets = [
            (done.winner_to_id, done.winner_to_slot, done.winner_id or NOBODY),
            (done.loser_to_id, done.loser_to_slot, loser if loser_goes_on else NOBODY),
        ]
        # Both next matches (with their rounds and players) in one query.
        nexts = read_matches([tid for tid, _, _ in targets if tid is not None], with_round=True)
        for target_id, slot, pid in targets:
            if target_id is None:
                continue
            nxt = nexts.get(target_id)
            if nxt is None:
                raise InvalidState(f"match {done.id} feeds a match {target_id} that is not there")
            if nxt.state != MatchState.PENDING:
                log.error(
                    "match %s: next match %s is %s, not pending; left alone", done.id, nxt.id, nxt.state
                )
                continue
            setattr(nxt, f"player{slot}", pid or None)
            setattr(nxt, f"player{slot}_is_bye", pid == NOBODY)
            touch(nxt, now)
            filled = [
                nxt.player1_id or (NOBODY if nxt.player1_is_bye else None),
                nxt.player2_id or (NOBODY if nxt.player2_is_bye else None),
            ]
            if None in filled:
                save_match(nxt)
                waiting.add(nxt.id)
                continue
            waiting.discard(nxt.id)  # filled later in the same chain
            present = [p for p in filled if p]
            # Its players: the one read with it and the one moving in, read with ``done``.
            known = read_entries(nxt) | read_entries(done)
            if not all(p in known for p in present):
                known = entries_with_users(present)
            remember_entries(nxt, {p: known[p] for p in present})
            statuses = statuses_of(nxt)
            if len(present) == 2 and not any(statuses.get(p) in OUT for p in present):
                opened.append(nxt)  # saved, with the slot, when opened
                continue
            write_decision(nxt, forfeit_decision(nxt, statuses), now)
            record_event(t, nxt, actor, MatchEventType.WALKOVER, {"from": done.id}, now)
            todo.append(nxt)
    if eliminated:
        defer(
            Participant.update(eliminated_at=now).where(
                Participant.id.in_(eliminated), Participant.eliminated_at.is_null(True)
            )
        )
    return touched, bool(waiting)


def open_matches(t: Tournament, matches: list[Match], actor: User | None, now: dt.datetime) -> None:
    """Open ``matches`` (their players known) with fresh deadlines, their
    rounds too; writes the ``opened`` events and the ``match_ready`` mail."""
    if not matches:
        return
    deadline_at, warn_at = match_deadline(t, now)
    rows = []
    plain: list[int] = []  # matches with no change but the opening: one UPDATE for all
    for m in matches:
        changed = set(m.dirty_fields) - {Match.version, Match.updated_at}
        m.state = MatchState.OPEN
        m.opened_at = now
        m.deadline_at = deadline_at
        m.warn_at = warn_at
        m.deadline_warning_sent_at = None
        touch(m, now)
        if changed:
            save_match(m)
        else:
            plain.append(m.id)
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
    if plain:
        Match.update(
            state=MatchState.OPEN,
            opened_at=now,
            deadline_at=deadline_at,
            warn_at=warn_at,
            deadline_warning_sent_at=None,
            version=Match.version + 1,
            updated_at=now,
        ).where(Match.id.in_(plain)).execute()
    # The rounds read with the matches (propagation joins them) need no second read.
    known = {m.round_id: m.__rel__["round"] for m in matches if "round" in m.__rel__}
    round_ids = {m.round_id for m in matches}
    if any(rid not in known or known[rid].state == RoundState.PENDING for rid in round_ids):
        defer(
            Round.update(state=RoundState.OPEN, opened_at=now).where(
                Round.id.in_(list(round_ids)), Round.state == RoundState.PENDING
            )
        )
    names = {rid: r.name for rid, r in known.items()}
    if round_ids - set(names):
        missing = list(round_ids - set(names))
        names |= {r.id: r.name for r in Round.select(Round.id, Round.name).where(Round.id.in_(missing))}
    entries: dict[int, Participant] = {}
    for m in matches:
        entries |= entries_of(m) or {}
    unknown = {p for row in rows for p in (row["player1"], row["player2"])} - set(entries)
    if unknown:
        entries |= entries_with_users(unknown)
    write_opened(t, rows, entries, names, actor, now)


def close_rounds(round_ids: set[int], now: dt.datetime, *, held: bool = False) -> None:
    """Each of the rounds whose matches are all decided becomes ``complete``,
    in one UPDATE (``held``: at the end of the locked write, see ``common.defer``)."""
    if not round_ids:
        return
    ids = list(round_ids)
    unfinished = Match.select(Match.round).where(Match.round.in_(ids), Match.state != MatchState.COMPLETE)
    query = Round.update(state=RoundState.COMPLETE, completed_at=now).where(
        Round.id.in_(ids), Round.state != RoundState.COMPLETE, Round.id.not_in(unfinished)
    )
    if held:
        defer(query)
    else:
        query.execute()


def advance_league(t: Tournament, actor: User | None, now: dt.datetime, opened: list[Match]) -> bool:
    """Open the next round once every match of the current one is decided:
    round robin opens its pre-planned round, Swiss pairs one from the
    standings. Returns whether the league is over.

    One read answers both "is the current round over?" and "what comes
    next?": round robin reads the undecided matches of the current and the
    next round, Swiss every match (its standings need them all), each with
    its round."""
    while True:
        current = t.current_round or 1
        query = Match.select(Match, Round).join(Round, on=(Match.round == Round.id))
        if t.format == TournamentFormat.ROUND_ROBIN:
            query = query.where(
                Match.tournament == t.id,
                Match.state != MatchState.COMPLETE,
                Round.number.in_([current, current + 1]),
            )
        else:
            query = query.where(Match.tournament == t.id)
        matches = list(query)
        if any(m.round.number == current and m.state != MatchState.COMPLETE for m in matches):
            return False
        if current >= (t.total_rounds or current):
            return True
        nxt_number = current + 1
        if t.format == TournamentFormat.ROUND_ROBIN:
            pending = [m for m in matches if m.round.number == nxt_number and m.state == MatchState.PENDING]
        else:
            paired = pair_swiss_round(t, nxt_number, now, matches)
            if paired is None:
                return True  # fewer than two players left to pair
            pending = paired
        save_tournament(t, now, held=True, current_round=nxt_number)
        decided_now = []
        # The round's players (with their users, for the mail) in one query, unless read already.
        unknown = {p for m in pending if entries_of(m) is None for p in (m.player1_id, m.player2_id) if p}
        players = entries_with_users(unknown) if unknown else {}
        for m in pending:
            if entries_of(m) is None:
                remember_entries(m, {p: players[p] for p in (m.player1_id, m.player2_id) if p in players})
            statuses = statuses_of(m)
            if (
                m.player1_id
                and m.player2_id
                and not any(statuses.get(p) in OUT for p in (m.player1_id, m.player2_id))
            ):
                opened.append(m)
            else:
                write_decision(m, forfeit_decision(m, statuses), now)
                record_event(t, m, actor, MatchEventType.WALKOVER, {"round": nxt_number}, now)
                decided_now.append(m)
        if decided_now:
            close_rounds({m.round_id for m in decided_now}, now)
        if any(m.state != MatchState.COMPLETE for m in pending):
            return False


def pair_swiss_round(
    t: Tournament, number: int, now: dt.datetime, matches: list[Match]
) -> list[Match] | None:
    """Pair and persist Swiss round ``number`` from ``matches`` (every match
    so far); the bye (odd field) is decided at once. Returns the round's
    undecided matches (with their round and players), or None when fewer
    than two players can still be paired."""
    entries = {e.id: e for e in seeded_with_users(t)}
    seed_of = seeds_by_id(list(entries.values()))
    results = league_results(matches, seed_of)
    table = compute_standings(sorted(seed_of.values()), results, points_scheme(t))
    active_seeds = {e.seed for e in entries.values() if e.status not in OUT}
    active = [st for st in table if st.seed in active_seeds]
    if len(active) < 2:
        return None
    met, had_bye = history_from_results(results)
    planned = pair_next_round(active, met, had_bye, number)
    by_seed = {seed: entries[pid] for pid, seed in seed_of.items()}
    built = resolve(t, planned, by_seed, now, open_round=-1)  # open nothing here: the caller opens
    round_rows, match_rows = persist(t, built, None, now)
    # The rows just written, as the caller would read them back.
    rounds = {row["id"]: Round(**row) for row in round_rows}
    undecided = []
    for row in match_rows:
        if row.get("state", MatchState.PENDING) == MatchState.COMPLETE:
            continue
        m = Match(**row)
        m.round = rounds[row["round"]]
        remember_entries(m, {p: entries[p] for p in (m.player1_id, m.player2_id) if p and p in entries})
        cast(Any, m)._dirty.clear()  # as if read back: nothing changed since (peewee's own set)
        undecided.append(m)
    return undecided


def complete_tournament(t: Tournament, now: dt.datetime, *, review: bool | None = None) -> None:
    """Every match is decided: write final ranks and the standings cache, then
    ``complete`` (or ``awaiting_review`` when the organizer reviews first)."""
    flush_deferred()  # the ranks read the eliminations and rounds written so far
    ranks, table = final_ranks(t)
    entries = seeded(t)
    counts = match_records(decided_matches(t))
    by_seed: dict[int | None, Standing] = {st.seed: st for st in table}
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
            save_tournament(t, now, state=TournamentState.AWAITING_REVIEW, awaiting_review_since=now)
            key = f"awaiting_review:{t.id}:{t.version}"
            mail_organizer(t, template="awaiting_review", dedupe_key=key, extra={}, now=now)
        return
    save_tournament(t, now, state=TournamentState.COMPLETE, completed_at=now)
    mail_tournament_complete(t, ranks, now)


# -- reopening -------------------------------------------------------------------------------


def reopen(t: Tournament, m: Match, actor: User | None, now: dt.datetime, *, open_again: bool) -> None:
    """Take a complete match's result back: the matches it fed are reset to
    pending (recursively), a finished tournament is underway again. The
    match is opened again with a new deadline (``open_again``) or left
    ``open`` for the organizer's decision that follows."""
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
    remember_reports(m, {})
    forget_entries(m)  # a double forfeit's penalty was just taken back
    Participant.update(eliminated_at=None, final_rank=None).where(
        Participant.id.in_([p for p in (m.player1_id, m.player2_id, *reset) if p])
    ).execute()
    Round.update(state=RoundState.OPEN, completed_at=None).where(Round.id == m.round_id).execute()
    record_event(t, m, actor, MatchEventType.REOPENED, {"reset": sorted(reset)}, now)
    if t.state in (TournamentState.COMPLETE, TournamentState.AWAITING_REVIEW):
        Participant.update(final_rank=None).where(Participant.tournament == t.id).execute()
        save_tournament(t, now, state=TournamentState.UNDERWAY, completed_at=None, awaiting_review_since=None)
    if open_again:
        m.state = MatchState.PENDING
        open_matches(t, [m], actor, now)
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
        touch(nxt, now)
        save_match(nxt)
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
    touch(m, now)
    save_match(m)


def mark_disputed(t: Tournament, m: Match, actor: User | None, now: dt.datetime, *, reason: str) -> None:
    """-> ``disputed``: out of every deadline scan until an organizer decides."""
    m.state = MatchState.DISPUTED
    touch(m, now)
    save_match(m)
    record_event(t, m, actor, MatchEventType.DISPUTED, {"reason": reason}, now)
    mail_organizer(
        t,
        template="match_disputed",
        dedupe_key=f"match_disputed:{m.id}:{m.version}",
        extra={"match_id": m.id, "match_identifier": m.identifier, "reason": reason},
        now=now,
    )


def set_deadline(
    t: Tournament,
    m: Match,
    deadline_at: dt.datetime,
    actor: User | None,
    now: dt.datetime,
    payload: dict[str, Any],
) -> None:
    """Move the match's deadline to ``deadline_at`` and re-arm its warning;
    the players are told."""
    previous = m.deadline_at
    m.deadline_at = deadline_at
    m.warn_at = warn_at_for(t, deadline_at, now)
    m.deadline_warning_sent_at = None
    m.deadline_extensions += 1
    touch(m, now)
    save_match(m)
    record_event(
        t,
        m,
        actor,
        MatchEventType.DEADLINE_EXTENDED,
        {**payload, "from": previous.isoformat() if previous else None, "to": deadline_at.isoformat()},
        now,
    )
    mail_players(
        t,
        m,
        (m.player1_id, m.player2_id),
        template="deadline_extended",
        dedupe_key=lambda pid: f"deadline_extended:{m.id}:{pid}:{epoch(deadline_at)}",
        extra=lambda pid: {"deadline_at": deadline_at.isoformat()},
        priority=EmailPriority.HIGH,
        now=now,
    )


def statuses_of(m: Match) -> dict[int, ParticipantStatus]:
    """Participant id -> status, for the players of ``m`` (as read with it, when they were)."""
    ids = [p for p in (m.player1_id, m.player2_id) if p]
    if not ids:
        return {}
    known = entries_of(m)
    if known is not None:
        return {p: known[p].status for p in ids}
    return {
        p.id: p.status
        for p in Participant.select(Participant.id, Participant.status).where(Participant.id.in_(ids))
    }


def active_reports(m: Match, *, until: dt.datetime | None = None) -> dict[int, MatchReport]:
    """Participant id -> their live report on ``m`` (created by ``until``, when given).
    Read once per locked write: the services that change a live report keep
    ``m``'s copy (:func:`remember_reports`) up to date."""
    live = known_reports(m)
    if live is None:
        query = MatchReport.select().where(
            MatchReport.match == m.id,
            MatchReport.superseded_at.is_null(True),
            MatchReport.status == ReportStatus.ACTIVE,
        )
        live = {r.participant_id: r for r in query}
        remember_reports(m, live)
    if until is not None:
        return {p: r for p, r in live.items() if r.created_at <= until}
    return dict(live)

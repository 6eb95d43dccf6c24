"""Tournaments: the list with filters (keyset pages, newest first) and one
tournament with its bracket, matches and standings. The matches come from
the API's own hot read (:func:`tourno.tournaments.reads.tournament_match_rows`),
the standings from the service the API calls.

The organizer actions the API has (resolve a match, extend its deadline,
cancel the tournament) call the same services as the admin acting, each
after a confirmation; a refusal of the rules is shown, and nothing changed.
"""

from __future__ import annotations

from typing import Any

import pydantic
from flask import flash, redirect, render_template, request, url_for

from tourno.dashboard.blueprint import admin, bp, confirm, confirmed, message, now
from tourno.dashboard.bracket import layout
from tourno.tournaments import reads, services
from tourno.tournaments.errors import DomainError
from tourno.tournaments.inputs import TournamentListQuery
from tourno.tournaments.models import (
    ACTIONABLE_MATCH_STATES,
    Match,
    MatchState,
    Participant,
    Tournament,
    TournamentFormat,
    TournamentState,
)

PAGE_ROWS = 50
#: Matches an organizer may decide or give more time.
RESOLVABLE = frozenset({*ACTIONABLE_MATCH_STATES, MatchState.DISPUTED})
EXTENDABLE = frozenset(ACTIONABLE_MATCH_STATES)
ENDED = frozenset({TournamentState.COMPLETE, TournamentState.CANCELLED})
_MATCH_NAMES = [name for name, _ in reads.MATCH_COLUMNS]
#: Each column's own conversion (timestamps, enums, JSON) of the raw cursor value.
_MATCH_CONVERTERS = [column.python_value for _, column in reads.MATCH_COLUMNS]


def match_dicts(tid: int) -> list[dict[str, Any]]:
    return [
        {
            name: None if value is None else convert(value)
            for name, convert, value in zip(_MATCH_NAMES, _MATCH_CONVERTERS, row, strict=True)
        }
        for row in reads.tournament_match_rows(tid)
    ]


def _before() -> int | None:
    raw = request.args.get("before", "").strip()
    return int(raw) if raw.isdigit() and 0 < int(raw) < 2**63 else None


@bp.get("/tournaments")
def tournaments() -> Any:
    filters = {k: v for k in ("state", "format", "game") if (v := request.args.get(k, "").strip())}
    try:
        asked = TournamentListQuery.model_validate(filters)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return message("Bad filter", problems, 400)
    rows = Tournament.select()
    if asked.state:
        rows = rows.where(Tournament.state == asked.state)
    if asked.format:
        rows = rows.where(Tournament.format == asked.format)
    if asked.game:
        rows = rows.where(Tournament.game == asked.game)
    before = _before()
    if before is not None:
        rows = rows.where(Tournament.id < before)
    page = list(rows.order_by(Tournament.id.desc()).limit(PAGE_ROWS + 1))
    more = len(page) > PAGE_ROWS
    page = page[:PAGE_ROWS]
    return render_template(
        "dashboard/tournaments.html",
        rows=page,
        filters=filters,
        states=[s.value for s in TournamentState],
        formats=[f.value for f in TournamentFormat],
        next_before=page[-1].id if more and page else None,
    )


@bp.get("/tournaments/<id:tid>")
def tournament(tid: int) -> Any:
    t = Tournament.get_or_none(Tournament.id == tid)
    if t is None:
        return message("Not found", f"There is no tournament {tid}.", 404)
    names = {
        p.id: p.display_name
        for p in Participant.select(Participant.id, Participant.display_name).where(
            Participant.tournament == tid
        )
    }
    matches = match_dicts(tid)
    standings = services.standings(t) if matches else []
    return render_template(
        "dashboard/tournament.html",
        t=t,
        sections=layout(matches),
        matches=matches,
        names=names,
        standings=standings,
        organizer=t.organizer,
        actionable=[m for m in matches if m["state"] in RESOLVABLE],
        extendable={m["id"] for m in matches if m["state"] in EXTENDABLE},
        ended=t.state in ENDED,
    )


def _int(name: str) -> int | None:
    raw = request.form.get(name, "").strip()
    try:
        return int(raw)
    except ValueError:
        return None


def _back(tid: int) -> Any:
    return redirect(url_for("dashboard.tournament", tid=tid))


def _match_of(mid: int) -> Match | None:
    found: Match | None = Match.get_or_none(Match.id == mid)
    return found


@bp.post("/tournaments/<id:tid>/cancel")
def tournament_cancel(tid: int) -> Any:
    t = Tournament.get_or_none(Tournament.id == tid)
    if t is None:
        return message("Not found", f"There is no tournament {tid}.", 404)
    if not confirmed():
        return confirm(
            f"Cancel {t.name}?",
            "The tournament ends now; every participant still in it is emailed, open matches lose "
            "their deadlines. This cannot be undone.",
            url_for("dashboard.tournament_cancel", tid=tid),
            "Cancel the tournament",
            {},
            url_for("dashboard.tournament", tid=tid),
        )
    try:
        services.cancel_tournament(t, admin(), reason="admin", now=now())
    except DomainError as exc:
        flash(f"Not cancelled: {exc.message}", "error")
    else:
        flash(f"Cancelled {t.name}.", "ok")
    return _back(tid)


@bp.post("/matches/<id:mid>/deadline")
def match_extend(mid: int) -> Any:
    m = _match_of(mid)
    if m is None:
        return message("Not found", f"There is no match {mid}.", 404)
    tid = m.tournament_id
    minutes = _int("minutes")
    if minutes is None:
        flash("Minutes must be a whole number.", "error")
        return _back(tid)
    if not confirmed():
        return confirm(
            f"Extend match {m.identifier or mid}'s deadline?",
            f"The deadline moves {minutes} minutes later (from now, if it has passed).",
            url_for("dashboard.match_extend", mid=mid),
            "Extend",
            {"minutes": str(minutes)},
            url_for("dashboard.tournament", tid=tid),
        )
    try:
        services.extend_deadline(mid, admin(), minutes=minutes, now=now())
    except DomainError as exc:
        flash(f"Deadline not extended: {exc.message}", "error")
    else:
        flash(f"Extended match {m.identifier or mid}'s deadline by {minutes} minutes.", "ok")
    return _back(tid)


@bp.post("/matches/<id:mid>/resolve")
def match_resolve(mid: int) -> Any:
    m = _match_of(mid)
    if m is None:
        return message("Not found", f"There is no match {mid}.", 404)
    tid = m.tournament_id
    score1, score2 = _int("player1_score"), _int("player2_score")
    if score1 is None or score2 is None:
        flash("Both scores must be whole numbers.", "error")
        return _back(tid)
    if not confirmed():
        return confirm(
            f"Decide match {m.identifier or mid} {score1}–{score2}?",
            "The result stands as the organizer's decision; the bracket moves on from it.",
            url_for("dashboard.match_resolve", mid=mid),
            "Decide",
            {"player1_score": str(score1), "player2_score": str(score2)},
            url_for("dashboard.tournament", tid=tid),
        )
    try:
        services.resolve_match(mid, admin(), player1_score=score1, player2_score=score2, now=now())
    except DomainError as exc:
        flash(f"Not decided: {exc.message}", "error")
    else:
        flash(f"Decided match {m.identifier or mid} {score1}–{score2}.", "ok")
    return _back(tid)

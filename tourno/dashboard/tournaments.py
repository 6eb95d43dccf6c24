"""Tournaments: the list with filters (keyset pages, newest first) and one
tournament with its bracket, matches and standings. The matches come from
the API's own hot read (:func:`tourno.tournaments.reads.tournament_match_rows`),
the standings from the service the API calls."""

from __future__ import annotations

from typing import Any

import pydantic
from flask import render_template, request

from tourno.dashboard.blueprint import bp, message
from tourno.dashboard.bracket import layout
from tourno.tournaments import reads, services
from tourno.tournaments.inputs import TournamentListQuery
from tourno.tournaments.models import Participant, Tournament, TournamentFormat, TournamentState

PAGE_ROWS = 50
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
    )

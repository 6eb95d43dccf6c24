"""Model rows as the JSON the API returns. Timestamps are ISO 8601 in UTC;
enums are their string values; a tournament reports its public state (with
the derived ``checking_in``)."""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Callable
from typing import Any

import peewee

from tourno.accounts.models import User
from tourno.db import JSONField, TimestampField, parse_timestamp
from tourno.tournaments import reads
from tourno.tournaments.models import Match, Participant, Round, Tournament
from tourno.tournaments.services import public_state, registration_open


def when(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return when(value)
    return value


def user(u: User, *, private: bool = False) -> dict[str, Any]:
    data = {
        "id": u.id,
        "display_name": u.display_name,
        "role": _plain(u.role),
        "created_at": when(u.created_at),
    }
    if private:
        data["email"] = u.email
        data["notifications_opt_out"] = u.notifications_opt_out
    return data


TOURNAMENT_FIELDS = (
    "name",
    "game",
    "format",
    "capacity",
    "min_participants",
    "participants_count",
    "waitlist_enabled",
    "full_since",
    "registration_closes_at",
    "starts_at",
    "auto_start",
    "check_in_enabled",
    "check_in_minutes",
    "match_deadline_minutes",
    "deadline_warning_minutes",
    "report_mode",
    "no_show_policy_elimination",
    "no_show_policy_league",
    "final_second_expiry",
    "settings",
    "check_ins_processed_at",
    "started_at",
    "completed_at",
    "cancelled_at",
    "cancel_reason",
    "current_round",
    "total_rounds",
    "version",
    "created_at",
    "updated_at",
)


def tournament(t: Tournament, now: dt.datetime) -> dict[str, Any]:
    data: dict[str, Any] = {"id": t.id, "organizer_id": t.organizer_id, "state": public_state(t, now)}
    for name in TOURNAMENT_FIELDS:
        data[name] = _plain(getattr(t, name))
    data["settings"] = data["settings"] or {}
    data["registration_open"] = registration_open(t, now)
    return data


PARTICIPANT_FIELDS = (
    "display_name",
    "seed",
    "status",
    "waitlist_position",
    "checked_in_at",
    "final_rank",
    "points",
    "wins",
    "draws",
    "losses",
    "eliminated_at",
    "created_at",
)


def participant(p: Participant) -> dict[str, Any]:
    data: dict[str, Any] = {"id": p.id, "tournament_id": p.tournament_id, "user_id": p.user_id}
    for name in PARTICIPANT_FIELDS:
        data[name] = _plain(getattr(p, name))
    return data


MATCH_FIELDS = reads.MATCH_FIELDS


def match(m: Match, rounds: dict[int, Round] | None = None) -> dict[str, Any]:
    """``rounds`` (id -> Round) saves a query per match in lists."""
    rnd = rounds.get(m.round_id) if rounds is not None else None
    if rnd is None:
        rnd = Round.get_or_none(Round.id == m.round_id)
    data: dict[str, Any] = {
        "id": m.id,
        "tournament_id": m.tournament_id,
        "round_id": m.round_id,
        "round_number": rnd.number if rnd else None,
        "round_name": rnd.name if rnd else None,
        "player1_id": m.player1_id,
        "player2_id": m.player2_id,
        "winner_id": m.winner_id,
        "loser_id": m.loser_id,
    }
    for name in MATCH_FIELDS:
        data[name] = _plain(getattr(m, name))
    return data


def _raw_time(value: Any) -> str | None:
    if value is None:
        return None
    return when(value if isinstance(value, dt.datetime) else parse_timestamp(value))


def _raw_json(value: Any) -> Any:
    # jsonb arrives decoded from psycopg2; SQLite stores the text.
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _raw_converter(field: peewee.Field) -> Callable[[Any], Any] | None:
    if isinstance(field, TimestampField):
        return _raw_time
    if isinstance(field, JSONField):
        return _raw_json
    if isinstance(field, peewee.BooleanField):
        return bool
    return None  # ids, numbers and enum values are already what the JSON needs


#: (output name, converter) for each column of :data:`reads.MATCH_COLUMNS`.
_MATCH_CONVERTERS: list[tuple[str, Callable[[Any], Any] | None]] = [
    (name, _raw_converter(column) if name in MATCH_FIELDS else None) for name, column in reads.MATCH_COLUMNS
]


def match_rows(query: Any) -> list[dict[str, Any]]:
    """Matches of ``query`` (a ``Match`` select joined to ``Round``) in the
    shape of :func:`match`. This is the hot read of a bracket (every viewer
    polls it), so the rows come straight from the cursor with one converter
    per column, instead of a model instance per match."""
    return _match_dicts(reads.match_rows(query))


def tournament_matches(tid: int) -> list[dict[str, Any]]:
    """Every match of a tournament, in bracket order (round, position)."""
    return _match_dicts(reads.tournament_match_rows(tid))


def _match_dicts(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    names = _MATCH_CONVERTERS
    out = []
    for row in rows:
        out.append(
            {
                name: (value if convert is None or value is None else convert(value))
                for (name, convert), value in zip(names, row, strict=True)
            }
        )
    return out


def report(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "participant_id": r.participant_id,
        "user_id": r.user_id,
        "kind": _plain(r.kind),
        "player1_score": r.player1_score,
        "player2_score": r.player2_score,
        "game_scores": r.game_scores,
        "winner_id": r.winner_participant_id,
        "comment": r.comment,
        "status": _plain(r.status),
        "created_at": when(r.created_at),
    }


def standing(row: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(value) for key, value in row.items()}

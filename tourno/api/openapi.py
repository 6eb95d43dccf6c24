"""The OpenAPI 3 document of the API, served at ``/api/v1/openapi.json``.

Written by hand from one operation table, next to the routes it describes;
``tests/test_api.py`` checks that every Flask rule is in it and every path
in it is a Flask rule, and ``tests/test_api_fuzz.py`` fuzzes the API from it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

import tourno
from tourno.accounts.models import Role
from tourno.tournaments.models import (
    EliminationNoShowPolicy,
    FinalSecondExpiry,
    LeagueNoShowPolicy,
    MatchState,
    ParticipantStatus,
    ReportMode,
    TournamentFormat,
    TournamentState,
)

bp = Blueprint("openapi", __name__)

V1 = "/api/v1"


def _values(kind) -> list[str]:
    return [v.value for v in kind]


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}


def _object(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _all_required(properties: dict[str, Any]) -> dict[str, Any]:
    return _object(properties, list(properties))


TOURNAMENT_STATES = [*_values(TournamentState), "checking_in"]

SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "code": STRING,
                    "message": STRING,
                    "fields": {"type": "object", "additionalProperties": STRING},
                },
                ["code", "message", "fields"],
            )
        },
        ["error"],
    ),
    "User": _object(
        {
            "id": INTEGER,
            "display_name": STRING,
            "role": {"type": "string", "enum": _values(Role)},
            "created_at": TIME,
            "email": STRING,
            "notifications_opt_out": BOOLEAN,
        },
        ["id", "display_name", "role", "created_at"],
    ),
    "Tournament": _object(
        {
            "id": INTEGER,
            "organizer_id": INTEGER,
            "state": {"type": "string", "enum": TOURNAMENT_STATES},
            "name": STRING,
            "game": STRING,
            "format": {"type": "string", "enum": _values(TournamentFormat)},
            "capacity": INTEGER,
            "min_participants": INTEGER,
            "participants_count": INTEGER,
            "waitlist_enabled": BOOLEAN,
            "full_since": _nullable(TIME),
            "registration_closes_at": _nullable(TIME),
            "starts_at": _nullable(TIME),
            "auto_start": BOOLEAN,
            "check_in_enabled": BOOLEAN,
            "check_in_minutes": INTEGER,
            "match_deadline_minutes": INTEGER,
            "deadline_warning_minutes": INTEGER,
            "report_mode": {"type": "string", "enum": _values(ReportMode)},
            "no_show_policy_elimination": {"type": "string", "enum": _values(EliminationNoShowPolicy)},
            "no_show_policy_league": {"type": "string", "enum": _values(LeagueNoShowPolicy)},
            "final_second_expiry": {"type": "string", "enum": _values(FinalSecondExpiry)},
            "settings": {"type": "object"},
            "check_ins_processed_at": _nullable(TIME),
            "started_at": _nullable(TIME),
            "completed_at": _nullable(TIME),
            "cancelled_at": _nullable(TIME),
            "cancel_reason": _nullable(STRING),
            "current_round": _nullable(INTEGER),
            "total_rounds": _nullable(INTEGER),
            "version": INTEGER,
            "created_at": TIME,
            "updated_at": TIME,
            "registration_open": BOOLEAN,
            "participants": {"type": "array", "items": _ref("Participant")},
            "matches": {"type": "array", "items": _ref("Match")},
        },
        [
            "id",
            "organizer_id",
            "state",
            "name",
            "game",
            "format",
            "capacity",
            "participants_count",
            "version",
        ],
    ),
    "Participant": _object(
        {
            "id": INTEGER,
            "tournament_id": INTEGER,
            "user_id": _nullable(INTEGER),
            "display_name": STRING,
            "seed": _nullable(INTEGER),
            "status": {"type": "string", "enum": _values(ParticipantStatus)},
            "waitlist_position": _nullable(INTEGER),
            "checked_in_at": _nullable(TIME),
            "final_rank": _nullable(INTEGER),
            "points": INTEGER,
            "wins": INTEGER,
            "draws": INTEGER,
            "losses": INTEGER,
            "eliminated_at": _nullable(TIME),
            "created_at": TIME,
        },
        ["id", "tournament_id", "user_id", "display_name", "status"],
    ),
    "Report": _object(
        {
            "id": INTEGER,
            "participant_id": INTEGER,
            "user_id": _nullable(INTEGER),
            "kind": STRING,
            "player1_score": _nullable(INTEGER),
            "player2_score": _nullable(INTEGER),
            "game_scores": _nullable({"type": "array"}),
            "winner_id": _nullable(INTEGER),
            "comment": _nullable(STRING),
            "status": STRING,
            "created_at": TIME,
        },
        ["id", "participant_id", "kind", "status"],
    ),
    "Match": _object(
        {
            "id": INTEGER,
            "tournament_id": INTEGER,
            "round_id": INTEGER,
            "round_number": _nullable(INTEGER),
            "round_name": _nullable(STRING),
            "player1_id": _nullable(INTEGER),
            "player2_id": _nullable(INTEGER),
            "winner_id": _nullable(INTEGER),
            "loser_id": _nullable(INTEGER),
            "bracket": STRING,
            "identifier": _nullable(STRING),
            "position": INTEGER,
            "state": {"type": "string", "enum": _values(MatchState)},
            "player1_is_bye": BOOLEAN,
            "player2_is_bye": BOOLEAN,
            "player1_score": _nullable(INTEGER),
            "player2_score": _nullable(INTEGER),
            "game_scores": _nullable({"type": "array"}),
            "is_draw": BOOLEAN,
            "result_type": _nullable(STRING),
            "opened_at": _nullable(TIME),
            "underway_at": _nullable(TIME),
            "deadline_at": _nullable(TIME),
            "deadline_extensions": INTEGER,
            "completed_at": _nullable(TIME),
            "version": INTEGER,
            "updated_at": TIME,
            "reports": {"type": "array", "items": _ref("Report")},
        },
        ["id", "tournament_id", "round_id", "state", "player1_id", "player2_id", "winner_id"],
    ),
}

TOURNAMENT_INPUT = _object(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "game": {"type": "string", "minLength": 1, "maxLength": 100},
        "format": {"type": "string", "enum": _values(TournamentFormat)},
        "capacity": {"type": "integer", "minimum": 2, "maximum": 4096},
        "min_participants": {"type": "integer", "minimum": 2},
        "waitlist_enabled": BOOLEAN,
        "starts_at": _nullable(TIME),
        "registration_closes_at": _nullable(TIME),
        "auto_start": BOOLEAN,
        "check_in_enabled": BOOLEAN,
        "check_in_minutes": {"type": "integer", "minimum": 1, "maximum": 10080},
        "match_deadline_minutes": {"type": "integer", "minimum": 10, "maximum": 10080},
        "deadline_warning_minutes": {"type": "integer", "minimum": 0, "maximum": 10080},
        "report_mode": {"type": "string", "enum": _values(ReportMode)},
        "no_show_policy_elimination": {"type": "string", "enum": _values(EliminationNoShowPolicy)},
        "no_show_policy_league": {"type": "string", "enum": _values(LeagueNoShowPolicy)},
        "final_second_expiry": {"type": "string", "enum": _values(FinalSecondExpiry)},
        "settings": _nullable({"type": "object"}),
    },
    additionalProperties=False,
)
RESULT_INPUT = {
    "player1_score": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
    "player2_score": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
    "winner_id": _nullable(ID),
    "game_scores": _nullable(
        {
            "type": "array",
            "maxItems": 99,
            "items": {
                "type": "array",
                "minItems": 2,
                "maxItems": 2,
                "items": {"type": "integer", "minimum": 0},
            },
        }
    ),
}
COMMENT = {"comment": _nullable({"type": "string", "maxLength": 2000})}


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema}


PAGING = [
    _param("page", "query", {"type": "integer", "minimum": 1, "maximum": 100_000}),
    _param("per_page", "query", {"type": "integer", "minimum": 1, "maximum": 100}),
]
# The examples point at the first rows, so example-based testing reaches real objects.
TID = {**_param("tid", "path", ID), "example": 1}
PID = {**_param("pid", "path", ID), "example": 1}
MID = {**_param("mid", "path", ID), "example": 1}


def _page_of(key: str, item: str) -> dict[str, Any]:
    return _all_required(
        {key: {"type": "array", "items": _ref(item)}, "page": INTEGER, "per_page": INTEGER, "total": INTEGER}
    )


ONE_TOURNAMENT = _all_required({"tournament": _ref("Tournament")})
ONE_PARTICIPANT = _all_required({"participant": _ref("Participant")})
ONE_MATCH = _all_required({"match": _ref("Match")})
PARTICIPANT_LIST = _all_required({"participants": {"type": "array", "items": _ref("Participant")}})

# (method, path, operationId, summary, authenticated, parameters, request body, status, response)
OPERATIONS: list[tuple[str, str, str, str, bool, list, dict | None, int, dict]] = [
    ("get", "/healthz", "healthz", "The process is up", False, [], None, 200, _object({"status": STRING})),
    (
        "get",
        "/readyz",
        "readyz",
        "Database reachable and migrated, queue reachable (503 otherwise)",
        False,
        [],
        None,
        200,
        _object({"status": STRING, "checks": {"type": "object", "additionalProperties": STRING}}),
    ),
    ("get", f"{V1}/openapi.json", "openapi", "This document", False, [], None, 200, {"type": "object"}),
    (
        "post",
        f"{V1}/users",
        "signUp",
        "Sign up a player; the token is returned once",
        False,
        [],
        _object(
            {
                "email": {"type": "string", "maxLength": 320},
                "display_name": {"type": "string", "minLength": 1, "maxLength": 100},
            },
            ["email", "display_name"],
            additionalProperties=False,
        ),
        201,
        _all_required({"user": _ref("User"), "token": STRING}),
    ),
    ("get", f"{V1}/me", "me", "The caller", True, [], None, 200, _all_required({"user": _ref("User")})),
    (
        "get",
        f"{V1}/me/matches",
        "myMatches",
        "The caller's matches",
        True,
        [_param("state", "query", {"type": "string", "enum": _values(MatchState)}), *PAGING],
        None,
        200,
        _page_of("matches", "Match"),
    ),
    (
        "get",
        f"{V1}/tournaments",
        "listTournaments",
        "Tournaments, newest first (drafts only to their organizer)",
        False,
        [
            _param("state", "query", {"type": "string", "enum": _values(TournamentState)}),
            _param("format", "query", {"type": "string", "enum": _values(TournamentFormat)}),
            _param("game", "query", {"type": "string", "maxLength": 100}),
            *PAGING,
        ],
        None,
        200,
        _page_of("tournaments", "Tournament"),
    ),
    (
        "post",
        f"{V1}/tournaments",
        "createTournament",
        "Create a draft (organizers and admins)",
        True,
        [],
        {**TOURNAMENT_INPUT, "required": ["name", "game", "format", "capacity"]},
        201,
        ONE_TOURNAMENT,
    ),
    (
        "get",
        f"{V1}/tournaments/{{tid}}",
        "showTournament",
        "One tournament, optionally with participants and matches",
        False,
        [
            TID,
            _param(
                "include",
                "query",
                {"type": "string", "enum": ["participants", "matches", "participants,matches"]},
            ),
        ],
        None,
        200,
        ONE_TOURNAMENT,
    ),
    (
        "patch",
        f"{V1}/tournaments/{{tid}}",
        "updateTournament",
        "Update",
        True,
        [TID],
        TOURNAMENT_INPUT,
        200,
        ONE_TOURNAMENT,
    ),
    (
        "delete",
        f"{V1}/tournaments/{{tid}}",
        "cancelTournament",
        "Cancel",
        True,
        [TID],
        None,
        200,
        ONE_TOURNAMENT,
    ),
    (
        "post",
        f"{V1}/tournaments/{{tid}}/publish",
        "publishTournament",
        "draft -> pending",
        True,
        [TID],
        None,
        200,
        ONE_TOURNAMENT,
    ),
    (
        "post",
        f"{V1}/tournaments/{{tid}}/start",
        "startTournament",
        "Seed and open round 1",
        True,
        [TID],
        None,
        200,
        ONE_TOURNAMENT,
    ),
    (
        "post",
        f"{V1}/tournaments/{{tid}}/finalize",
        "finalizeTournament",
        "-> complete",
        True,
        [TID],
        None,
        200,
        ONE_TOURNAMENT,
    ),
    (
        "post",
        f"{V1}/tournaments/{{tid}}/process_check_ins",
        "processCheckIns",
        "pending -> checked_in",
        True,
        [TID],
        None,
        200,
        ONE_TOURNAMENT,
    ),
    (
        "get",
        f"{V1}/tournaments/{{tid}}/standings",
        "standings",
        "Ranks, points, tiebreaks",
        False,
        [TID],
        None,
        200,
        _all_required(
            {"tournament_id": INTEGER, "standings": {"type": "array", "items": {"type": "object"}}}
        ),
    ),
    (
        "post",
        f"{V1}/tournaments/{{tid}}/announcements",
        "announce",
        "Email every participant (bulk, through the outbox)",
        True,
        [TID],
        _object(
            {
                "subject": {"type": "string", "minLength": 1, "maxLength": 200},
                "body": {"type": "string", "minLength": 1, "maxLength": 20000},
            },
            ["subject", "body"],
            additionalProperties=False,
        ),
        202,
        _all_required({"announcement_key": STRING, "recipients": INTEGER}),
    ),
    (
        "get",
        f"{V1}/tournaments/{{tid}}/participants",
        "listParticipants",
        "Participants",
        False,
        [TID, _param("status", "query", {"type": "string", "enum": _values(ParticipantStatus)})],
        None,
        200,
        PARTICIPANT_LIST,
    ),
    (
        "post",
        f"{V1}/tournaments/{{tid}}/participants",
        "addParticipant",
        "Organizer adds an entrant by name",
        True,
        [TID],
        _object(
            {"display_name": {"type": "string", "minLength": 1, "maxLength": 100}, "user_id": _nullable(ID)},
            ["display_name"],
            additionalProperties=False,
        ),
        201,
        ONE_PARTICIPANT,
    ),
    (
        "post",
        f"{V1}/tournaments/{{tid}}/participants/bulk_add",
        "bulkAddParticipants",
        "Organizer adds entrants by name",
        True,
        [TID],
        _object(
            {
                "names": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 4096,
                    "items": {"type": "string", "minLength": 1, "maxLength": 100},
                }
            },
            ["names"],
            additionalProperties=False,
        ),
        201,
        PARTICIPANT_LIST,
    ),
    (
        "put",
        f"{V1}/tournaments/{{tid}}/participants/{{pid}}/seed",
        "setSeed",
        "Set a participant's seed",
        True,
        [TID, PID],
        _object(
            {"seed": {"type": "integer", "minimum": 1, "maximum": 4096}}, ["seed"], additionalProperties=False
        ),
        200,
        ONE_PARTICIPANT,
    ),
    (
        "delete",
        f"{V1}/tournaments/{{tid}}/participants/{{pid}}",
        "removeParticipant",
        "Remove before the start, disqualify after",
        True,
        [TID, PID],
        None,
        200,
        ONE_PARTICIPANT,
    ),
    (
        "post",
        f"{V1}/tournaments/{{tid}}/register",
        "register",
        "Join (or the waitlist)",
        True,
        [TID],
        None,
        201,
        ONE_PARTICIPANT,
    ),
    (
        "delete",
        f"{V1}/tournaments/{{tid}}/register",
        "withdraw",
        "Withdraw before the start",
        True,
        [TID],
        None,
        200,
        ONE_PARTICIPANT,
    ),
    (
        "post",
        f"{V1}/tournaments/{{tid}}/check_in",
        "checkIn",
        "Check in during the window",
        True,
        [TID],
        None,
        200,
        ONE_PARTICIPANT,
    ),
    (
        "get",
        f"{V1}/tournaments/{{tid}}/matches",
        "listMatches",
        "Matches",
        False,
        [
            TID,
            _param("state", "query", {"type": "string", "enum": _values(MatchState)}),
            _param("round", "query", {"type": "integer", "minimum": 1, "maximum": 100_000}),
            _param("participant_id", "query", ID),
        ],
        None,
        200,
        _all_required({"matches": {"type": "array", "items": _ref("Match")}}),
    ),
    (
        "get",
        f"{V1}/matches/{{mid}}",
        "showMatch",
        "One match (reports for its players and organizer)",
        False,
        [MID],
        None,
        200,
        ONE_MATCH,
    ),
    (
        "post",
        f"{V1}/matches/{{mid}}/reports",
        "reportMatch",
        "Report own result, or claim a forfeit with {forfeit_claim: true}",
        True,
        [MID],
        {
            "oneOf": [
                _object(
                    {**RESULT_INPUT, **COMMENT},
                    ["player1_score", "player2_score"],
                    additionalProperties=False,
                ),
                _object(
                    {"forfeit_claim": {"type": "boolean", "enum": [True]}, **COMMENT},
                    ["forfeit_claim"],
                    additionalProperties=False,
                ),
            ]
        },
        201,
        ONE_MATCH,
    ),
    (
        "post",
        f"{V1}/matches/{{mid}}/confirm",
        "confirmMatch",
        "Accept the opponent's report",
        True,
        [MID],
        None,
        200,
        ONE_MATCH,
    ),
    (
        "post",
        f"{V1}/matches/{{mid}}/dispute",
        "disputeMatch",
        "Dispute the opponent's report",
        True,
        [MID],
        _object(COMMENT, additionalProperties=False),
        200,
        ONE_MATCH,
    ),
    (
        "post",
        f"{V1}/matches/{{mid}}/resolve",
        "resolveMatch",
        "Organizer decides the result",
        True,
        [MID],
        _object(RESULT_INPUT, ["player1_score", "player2_score"], additionalProperties=False),
        200,
        ONE_MATCH,
    ),
    (
        "post",
        f"{V1}/matches/{{mid}}/forfeit",
        "forfeitMatch",
        "Organizer records a forfeit",
        True,
        [MID],
        _object({"loser_id": ID}, ["loser_id"], additionalProperties=False),
        200,
        ONE_MATCH,
    ),
    (
        "post",
        f"{V1}/matches/{{mid}}/reopen",
        "reopenMatch",
        "complete -> open",
        True,
        [MID],
        None,
        200,
        ONE_MATCH,
    ),
    (
        "post",
        f"{V1}/matches/{{mid}}/deadline",
        "extendDeadline",
        "Extend the deadline by some minutes",
        True,
        [MID],
        _object(
            {"minutes": {"type": "integer", "minimum": 1, "maximum": 10080}},
            ["minutes"],
            additionalProperties=False,
        ),
        200,
        ONE_MATCH,
    ),
    (
        "get",
        f"{V1}/admin/queue",
        "adminQueue",
        "Queue sizes, live workers, failed count",
        True,
        [],
        None,
        200,
        _object(
            {
                "connection": STRING,
                "queues": {"type": "array", "items": {"type": "object"}},
                "workers": {"type": "array", "items": {"type": "object"}},
                "failed": INTEGER,
                # Redis driver only: jobs committed while Redis was unreachable.
                "waiting_for_redis": INTEGER,
            },
            ["connection", "queues", "workers", "failed"],
        ),
    ),
    (
        "get",
        f"{V1}/admin/jobs/runs",
        "adminJobRuns",
        "Recent runs of the periodic jobs",
        True,
        [
            _param("page", "query", {"type": "integer", "minimum": 1, "maximum": 100_000}),
            _param("per_page", "query", {"type": "integer", "minimum": 1, "maximum": 200}),
        ],
        None,
        200,
        _object({"runs": {"type": "array", "items": {"type": "object"}}}, ["runs"]),
    ),
]


# The unsubscribe pages answer people in a browser, in HTML: 200 or 403 (a
# missing or wrong signature). u and s are optional so a broken link gets the
# 403 page, not a JSON error.
_UNSUBSCRIBE_PARAMS = [
    _param("u", "query", {"type": "string", "maxLength": 320}),
    _param("s", "query", {"type": "string", "maxLength": 128}),
]
_HTML_PAGE = {"content": {"text/html": {"schema": STRING}}}
# (method, path, operationId, summary, parameters, form body)
HTML_OPERATIONS: list[tuple[str, str, str, str, list, dict | None]] = [
    (
        "get",
        "/unsubscribe",
        "unsubscribePage",
        "Confirm unsubscribing (signed link)",
        _UNSUBSCRIBE_PARAMS,
        None,
    ),
    (
        "post",
        "/unsubscribe",
        "unsubscribe",
        "Unsubscribe from bulk mail: the page's form or RFC 8058 one-click",
        _UNSUBSCRIBE_PARAMS,
        _object({"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}}),
    ),
]


def _html_operation(op_id: str, summary: str, params: list, form: dict | None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": {"description": "OK", **_HTML_PAGE},
            "403": {"description": "Missing or wrong signature; nothing changed", **_HTML_PAGE},
            "default": {"description": "Error", "content": {"application/json": {"schema": _ref("Error")}}},
        },
        "security": [{}, {"bearer": []}],
    }
    if form is not None:
        operation["requestBody"] = {
            "required": False,
            "content": {"application/x-www-form-urlencoded": {"schema": form}},
        }
    return operation


#: Operations answered with an ETag, and a 304 to a matching If-None-Match.
REVALIDATED = {"showTournament", "listMatches"}


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, op_id, summary, params, form in HTML_OPERATIONS:
        paths.setdefault(path, {})[method] = _html_operation(op_id, summary, params, form)
    for method, path, op_id, summary, authenticated, params, body, status, schema in OPERATIONS:
        operation: dict[str, Any] = {
            "operationId": op_id,
            "summary": summary,
            "responses": {
                str(status): {"description": "OK", "content": {"application/json": {"schema": schema}}},
                "default": {
                    "description": "Error",
                    "content": {"application/json": {"schema": _ref("Error")}},
                },
            },
        }
        if op_id == "readyz":
            # Not ready is a 503 with the same body, naming the failed check.
            operation["responses"]["503"] = operation["responses"][str(status)]
        if op_id in REVALIDATED:
            # Cached by the tournament's data version (tourno.api.cache).
            operation["responses"][str(status)]["headers"] = {
                "ETag": {"description": "The body's version", "schema": STRING}
            }
            operation["responses"]["304"] = {"description": "Not modified: If-None-Match names this version"}
            params = [*params, _param("If-None-Match", "header", STRING)]
        if params:
            operation["parameters"] = params
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        operation["security"] = [{"bearer": []}] if authenticated else [{}, {"bearer": []}]
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "Tourno API", "version": tourno.__version__},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@bp.get("/openapi.json")
def document_view():
    return jsonify(document())

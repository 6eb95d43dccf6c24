"""The shapes of the API's JSON responses, for the OpenAPI document only.

The bodies themselves are built by :mod:`tourno.api.serializers` (fast paths
that skip model validation); schemathesis checks every response it provokes
against these models (``tests/support/fuzz_api.py``), so the two cannot drift apart
unnoticed. Fields that a response may leave out have no default in the
document (``optional()``); nullable ones say so.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tourno.accounts.models import Role
from tourno.tournaments import models
from tourno.tournaments.inputs import drop_placeholder_defaults


def optional() -> Any:
    """A field the response may leave out."""
    return Field(default=None)


class Output(BaseModel):
    model_config = ConfigDict(json_schema_extra=drop_placeholder_defaults)


class ErrorDetail(Output):
    code: str
    message: str
    fields: dict[str, str]


class Error(Output):
    error: ErrorDetail


class User(Output):
    id: int
    display_name: str
    role: Role
    created_at: dt.datetime
    email: str = optional()  # the caller's own profile only
    notifications_opt_out: bool = optional()


class Participant(Output):
    id: int
    tournament_id: int
    user_id: int | None
    display_name: str
    status: models.ParticipantStatus
    seed: int | None = optional()
    waitlist_position: int | None = optional()
    checked_in_at: dt.datetime | None = optional()
    final_rank: int | None = optional()
    points: int = optional()
    wins: int = optional()
    draws: int = optional()
    losses: int = optional()
    eliminated_at: dt.datetime | None = optional()
    created_at: dt.datetime = optional()


class Report(Output):
    id: int
    participant_id: int
    kind: str
    status: str
    user_id: int | None = optional()
    player1_score: int | None = optional()
    player2_score: int | None = optional()
    game_scores: list[Any] | None = optional()
    winner_id: int | None = optional()
    comment: str | None = optional()
    created_at: dt.datetime = optional()


class Match(Output):
    id: int
    tournament_id: int
    round_id: int
    state: models.MatchState
    player1_id: int | None
    player2_id: int | None
    winner_id: int | None
    round_number: int | None = optional()
    round_name: str | None = optional()
    loser_id: int | None = optional()
    bracket: str = optional()
    identifier: str | None = optional()
    position: int = optional()
    player1_is_bye: bool = optional()
    player2_is_bye: bool = optional()
    player1_score: int | None = optional()
    player2_score: int | None = optional()
    game_scores: list[Any] | None = optional()
    is_draw: bool = optional()
    result_type: str | None = optional()
    opened_at: dt.datetime | None = optional()
    underway_at: dt.datetime | None = optional()
    deadline_at: dt.datetime | None = optional()
    deadline_extensions: int = optional()
    completed_at: dt.datetime | None = optional()
    version: int = optional()
    updated_at: dt.datetime = optional()
    reports: list[Report] = optional()  # for the players and whoever manages the tournament


class Tournament(Output):
    id: int
    organizer_id: int
    # The public state: ``checking_in`` is derived from the check-in window, never stored.
    state: models.TournamentState | Literal["checking_in"]
    name: str
    game: str
    format: models.TournamentFormat
    capacity: int
    participants_count: int
    version: int
    min_participants: int = optional()
    waitlist_enabled: bool = optional()
    full_since: dt.datetime | None = optional()
    registration_closes_at: dt.datetime | None = optional()
    starts_at: dt.datetime | None = optional()
    auto_start: bool = optional()
    check_in_enabled: bool = optional()
    check_in_minutes: int = optional()
    match_deadline_minutes: int = optional()
    deadline_warning_minutes: int = optional()
    report_mode: models.ReportMode = optional()
    no_show_policy_elimination: models.EliminationNoShowPolicy = optional()
    no_show_policy_league: models.LeagueNoShowPolicy = optional()
    final_second_expiry: models.FinalSecondExpiry = optional()
    settings: dict[str, Any] = optional()
    check_ins_processed_at: dt.datetime | None = optional()
    started_at: dt.datetime | None = optional()
    completed_at: dt.datetime | None = optional()
    cancelled_at: dt.datetime | None = optional()
    cancel_reason: str | None = optional()
    current_round: int | None = optional()
    total_rounds: int | None = optional()
    created_at: dt.datetime = optional()
    updated_at: dt.datetime = optional()
    registration_open: bool = optional()
    participants: list[Participant] = optional()  # ?include=participants
    matches: list[Match] = optional()  # ?include=matches


# -- response bodies -------------------------------------------------------------------------


class OneTournament(Output):
    tournament: Tournament


class OneParticipant(Output):
    participant: Participant


class OneMatch(Output):
    match: Match


class ParticipantList(Output):
    participants: list[Participant]


class MatchList(Output):
    matches: list[Match]


class Page(Output):
    page: int
    per_page: int
    total: int


class TournamentPage(Page):
    tournaments: list[Tournament]


class MatchPage(Page):
    matches: list[Match]


class Me(Output):
    user: User


class SignedUp(Output):
    user: User
    token: str


class Standings(Output):
    tournament_id: int
    standings: list[dict[str, Any]]


class Announced(Output):
    announcement_key: str
    recipients: int


class Health(Output):
    status: str


class Readiness(Output):
    status: str
    checks: dict[str, str]


class QueueStatus(Output):
    connection: str
    queues: list[dict[str, Any]]
    paused: list[dict[str, Any]]  # queue, paused_at: `tourno queue pause`
    workers: list[dict[str, Any]]
    failed: int
    waiting_for_redis: int = optional()  # the Redis driver only: jobs committed while Redis was away


class JobRuns(Output):
    runs: list[dict[str, Any]]
    page: int = optional()
    per_page: int = optional()
    note: str = optional()


class Document(Output):
    """This document."""

    model_config = ConfigDict(extra="allow")

"""The tournament tables and their state enums (``reference/domain.md`` §6, §7).

States are ``str`` enums stored as text; on PostgreSQL the migration mirrors
each one with a CHECK constraint (:data:`CHECKS` lists them, so a test can
compare). The partial indexes are the ones the periodic scans read; their
predicates must be repeated literally by those scans.
"""

from __future__ import annotations

import enum

import peewee

from tourno.accounts.models import Role, User  # noqa: F401 - re-exported: users belong to accounts
from tourno.db import BaseModel, EnumField, JSONField, SerialField, TimestampField, utcnow
from tourno.tournaments import limits
from tourno.tournaments.formats.plan import Bracket  # one definition, shared with the formats


class TournamentFormat(enum.StrEnum):
    SINGLE_ELIMINATION = "single_elimination"
    DOUBLE_ELIMINATION = "double_elimination"
    ROUND_ROBIN = "round_robin"
    SWISS = "swiss"


class TournamentState(enum.StrEnum):
    """Persisted states (§7.1). ``checking_in`` is derived from the check-in
    window, never stored: no job has to flip it on time."""

    DRAFT = "draft"
    PENDING = "pending"  # published, registration open until closed or started
    CHECKED_IN = "checked_in"  # check-ins processed, waiting for the start
    UNDERWAY = "underway"
    AWAITING_REVIEW = "awaiting_review"
    COMPLETE = "complete"
    CANCELLED = "cancelled"


# Before the start: registration changes are allowed, the full/auto-start scans look here.
PRE_START_STATES = (TournamentState.PENDING, TournamentState.CHECKED_IN)


class ReportMode(enum.StrEnum):
    BOTH_AGREE = "both_agree"
    SINGLE_REPORT = "single_report"
    ADMIN_ONLY = "admin_only"


class EliminationNoShowPolicy(enum.StrEnum):
    """Neither side showed up in an elimination match (§4.2)."""

    DOUBLE_DQ = "double_dq"
    HIGHER_SEED_ADVANCES = "higher_seed_advances"
    RANDOM = "random"


class LeagueNoShowPolicy(enum.StrEnum):
    """Neither side showed up in a round-robin or Swiss match (§4.2)."""

    DOUBLE_LOSS = "double_loss"
    DRAW = "draw"


class FinalSecondExpiry(enum.StrEnum):
    """What the second expiry of a final's deadline does (§4.2)."""

    REVIEW = "review"
    CANCEL = "cancel"


class ParticipantStatus(enum.StrEnum):
    REGISTERED = "registered"
    WAITLISTED = "waitlisted"
    WITHDRAWN = "withdrawn"
    NO_SHOW = "no_show"
    DROPPED = "dropped"
    DISQUALIFIED = "disqualified"


class RoundState(enum.StrEnum):
    PENDING = "pending"
    OPEN = "open"
    COMPLETE = "complete"


class MatchState(enum.StrEnum):
    PENDING = "pending"
    OPEN = "open"
    UNDERWAY = "underway"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    DISPUTED = "disputed"
    COMPLETE = "complete"


# Matches waiting for players: the deadline and warning scans look here.
ACTIONABLE_MATCH_STATES = (MatchState.OPEN, MatchState.UNDERWAY, MatchState.AWAITING_CONFIRMATION)


class ResultType(enum.StrEnum):
    PLAYED = "played"
    AUTO_CONFIRMED = "auto_confirmed"
    FORFEIT = "forfeit"
    DOUBLE_FORFEIT = "double_forfeit"
    BYE = "bye"
    WALKOVER = "walkover"
    ADMIN = "admin"
    DQ = "dq"


class ReportKind(enum.StrEnum):
    RESULT = "result"
    FORFEIT_CLAIM = "forfeit_claim"
    DISPUTE = "dispute"


class ReportStatus(enum.StrEnum):
    ACTIVE = "active"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"


class MatchEventType(enum.StrEnum):
    OPENED = "opened"
    REPORT = "report"
    CONFIRMED = "confirmed"
    DISPUTED = "disputed"
    ADMIN_OVERRIDE = "admin_override"
    DEADLINE_FORFEIT = "deadline_forfeit"
    DEADLINE_DOUBLE_FORFEIT = "deadline_double_forfeit"
    DEADLINE_EXTENDED = "deadline_extended"
    REOPENED = "reopened"
    WALKOVER = "walkover"


# -- tables -----------------------------------------------------------------------------


class Tournament(BaseModel):
    id = SerialField()
    organizer = peewee.ForeignKeyField(User, backref="organized_tournaments")
    organizer_id: int  # the column, for type checkers (peewee adds it)
    name = peewee.CharField(max_length=limits.NAME_MAX_LENGTH)
    game = peewee.CharField(max_length=limits.GAME_MAX_LENGTH)
    format = EnumField(TournamentFormat)
    state = EnumField(TournamentState, default=TournamentState.DRAFT)

    # Capacity (§6.3): participants_count counts `registered` participants and
    # changes only under the tournament's row lock, with full_since beside it.
    capacity = peewee.IntegerField()
    min_participants = peewee.IntegerField(default=2)
    participants_count = peewee.IntegerField(default=0)
    waitlist_enabled = peewee.BooleanField(default=True)
    full_since = TimestampField(null=True)
    full_reminder_sent_at = TimestampField(null=True)

    # Schedule
    registration_closes_at = TimestampField(null=True)
    starts_at = TimestampField(null=True)
    auto_start = peewee.BooleanField(default=False)
    check_in_enabled = peewee.BooleanField(default=False)
    # The check-in window is [starts_at - check_in_minutes, starts_at).
    check_in_minutes = peewee.IntegerField(default=60)

    # Match rules
    match_deadline_minutes = peewee.IntegerField(default=1440)
    deadline_warning_minutes = peewee.IntegerField(default=60)
    report_mode = EnumField(ReportMode, default=ReportMode.BOTH_AGREE)
    no_show_policy_elimination = EnumField(EliminationNoShowPolicy, default=EliminationNoShowPolicy.DOUBLE_DQ)
    no_show_policy_league = EnumField(LeagueNoShowPolicy, default=LeagueNoShowPolicy.DOUBLE_LOSS)
    final_second_expiry = EnumField(FinalSecondExpiry, default=FinalSecondExpiry.REVIEW)
    settings = JSONField(default=dict)

    # Lifecycle
    check_ins_processed_at = TimestampField(null=True)
    started_at = TimestampField(null=True)
    awaiting_review_since = TimestampField(null=True)
    completed_at = TimestampField(null=True)
    cancelled_at = TimestampField(null=True)
    cancel_reason = peewee.CharField(max_length=64, null=True)
    current_round = peewee.IntegerField(null=True)
    total_rounds = peewee.IntegerField(null=True)

    version = peewee.IntegerField(default=1)
    created_at = TimestampField(default=utcnow)
    updated_at = TimestampField(default=utcnow)

    class Meta:
        table_name = "tournaments"


# AutoStart and CheckFull: only full, not yet started tournaments (a tiny set).
Tournament.add_index(
    Tournament.full_since,
    where=Tournament.full_since.is_null(False) & Tournament.state.in_(PRE_START_STATES),
    name="tournaments_full_pending_idx",
)
Tournament.add_index(
    Tournament.starts_at,
    where=Tournament.auto_start & Tournament.state.in_(PRE_START_STATES),
    name="tournaments_autostart_idx",
)


class Participant(BaseModel):
    id = SerialField()
    # The (tournament, status) index below leads with tournament_id.
    tournament = peewee.ForeignKeyField(Tournament, backref="participants", on_delete="CASCADE", index=False)
    tournament_id: int  # the column, for type checkers (peewee adds it)
    # NULL for entrants the organizer added by name.
    user = peewee.ForeignKeyField(User, backref="participations", null=True, index=False)
    user_id: int | None  # the column, for type checkers (peewee adds it)
    display_name = peewee.CharField(max_length=limits.DISPLAY_NAME_MAX_LENGTH)
    seed = peewee.IntegerField(null=True)
    status = EnumField(ParticipantStatus)
    waitlist_position = peewee.IntegerField(null=True)
    checked_in_at = TimestampField(null=True)
    no_show_count = peewee.IntegerField(default=0)
    eliminated_at = TimestampField(null=True)
    final_rank = peewee.IntegerField(null=True)
    # Standings cache, rewritten when a result is applied.
    points = peewee.IntegerField(default=0)
    wins = peewee.IntegerField(default=0)
    draws = peewee.IntegerField(default=0)
    losses = peewee.IntegerField(default=0)
    game_wins = peewee.IntegerField(default=0)
    game_losses = peewee.IntegerField(default=0)
    tiebreaks = JSONField(null=True)
    # Bumped on every status change; part of the dedupe keys of the mail it causes.
    version = peewee.IntegerField(default=1)
    created_at = TimestampField(default=utcnow)

    class Meta:
        table_name = "participants"


Participant.add_index(Participant.tournament, Participant.status, name="participants_tournament_status_idx")
# One entry per user and tournament; withdrawing and joining again reuses it.
Participant.add_index(
    Participant.tournament,
    Participant.user,
    unique=True,
    where=Participant.user.is_null(False),
    name="participants_tournament_user_idx",
)
Participant.add_index(
    Participant.tournament,
    Participant.seed,
    unique=True,
    where=Participant.seed.is_null(False),
    name="participants_tournament_seed_idx",
)
# Promotion takes the lowest position; positions never repeat in a tournament.
Participant.add_index(
    Participant.tournament,
    Participant.waitlist_position,
    unique=True,
    where=Participant.waitlist_position.is_null(False),
    name="participants_waitlist_idx",
)
# A user's own entries ("my tournaments").
Participant.add_index(Participant.user, where=Participant.user.is_null(False), name="participants_user_idx")


class Round(BaseModel):
    id = SerialField()
    tournament = peewee.ForeignKeyField(Tournament, backref="rounds", on_delete="CASCADE", index=False)
    tournament_id: int  # the column, for type checkers (peewee adds it)
    bracket = EnumField(Bracket)
    number = peewee.IntegerField()
    name = peewee.CharField(max_length=100, null=True)
    is_final = peewee.BooleanField(default=False)
    state = EnumField(RoundState, default=RoundState.PENDING)
    opened_at = TimestampField(null=True)
    completed_at = TimestampField(null=True)

    class Meta:
        table_name = "rounds"
        indexes = ((("tournament", "bracket", "number"), True),)


class Match(BaseModel):
    id = SerialField()
    tournament = peewee.ForeignKeyField(Tournament, backref="matches", on_delete="CASCADE", index=False)
    tournament_id: int  # the column, for type checkers (peewee adds it)
    round = peewee.ForeignKeyField(Round, backref="matches", on_delete="CASCADE")
    round_id: int  # the column, for type checkers (peewee adds it)
    bracket = EnumField(Bracket)
    identifier = peewee.CharField(max_length=16, null=True)
    position = peewee.IntegerField()
    state = EnumField(MatchState, default=MatchState.PENDING)

    # Slots: NULL = not decided yet (TBD); *_is_bye marks a slot no one will fill.
    player1 = peewee.ForeignKeyField(Participant, null=True, backref="+", index=False)
    player1_id: int | None  # the column, for type checkers (peewee adds it)
    player2 = peewee.ForeignKeyField(Participant, null=True, backref="+", index=False)
    player2_id: int | None  # the column, for type checkers (peewee adds it)
    player1_is_bye = peewee.BooleanField(default=False)
    player2_is_bye = peewee.BooleanField(default=False)
    # Forward wiring: where the winner (and, double elimination, the loser) go.
    winner_to = peewee.ForeignKeyField("self", null=True, backref="+", index=False)
    winner_to_id: int | None  # the column, for type checkers (peewee adds it)
    winner_to_slot = peewee.SmallIntegerField(null=True)
    loser_to = peewee.ForeignKeyField("self", null=True, backref="+", index=False)
    loser_to_id: int | None  # the column, for type checkers (peewee adds it)
    loser_to_slot = peewee.SmallIntegerField(null=True)

    # Result, always oriented player 1 / player 2.
    player1_score = peewee.IntegerField(null=True)
    player2_score = peewee.IntegerField(null=True)
    game_scores = JSONField(null=True)
    winner = peewee.ForeignKeyField(Participant, null=True, backref="+", index=False)
    winner_id: int | None  # the column, for type checkers (peewee adds it)
    loser = peewee.ForeignKeyField(Participant, null=True, backref="+", index=False)
    loser_id: int | None  # the column, for type checkers (peewee adds it)
    is_draw = peewee.BooleanField(default=False)
    result_type = EnumField(ResultType, null=True)

    # Times
    opened_at = TimestampField(null=True)
    underway_at = TimestampField(null=True)
    deadline_at = TimestampField(null=True)
    # deadline_at - deadline_warning_minutes; NULL when the deadline is too close to warn.
    warn_at = TimestampField(null=True)
    deadline_warning_sent_at = TimestampField(null=True)
    deadline_extensions = peewee.IntegerField(default=0)
    completed_at = TimestampField(null=True)
    player1_checked_in_at = TimestampField(null=True)
    player2_checked_in_at = TimestampField(null=True)

    # An organizer is handling the match: the deadline job leaves it alone.
    admin_locked_at = TimestampField(null=True)
    version = peewee.IntegerField(default=1)
    created_at = TimestampField(default=utcnow)
    updated_at = TimestampField(default=utcnow)

    class Meta:
        table_name = "matches"


Match.add_index(Match.tournament, Match.round, Match.position, name="matches_tournament_round_idx")
# CheckMatchDeadlines: only actionable matches, by deadline.
Match.add_index(
    Match.deadline_at,
    where=Match.state.in_(ACTIONABLE_MATCH_STATES),
    name="matches_deadline_due_idx",
)
# SendMatchDeadlineWarnings: actionable and not yet warned.
Match.add_index(
    Match.warn_at,
    where=(
        Match.warn_at.is_null(False)
        & Match.deadline_warning_sent_at.is_null(True)
        & Match.state.in_(ACTIONABLE_MATCH_STATES)
    ),
    name="matches_warning_due_idx",
)
# A participant's unfinished matches (reporting, disqualification).
Match.add_index(Match.player1, where=Match.state != MatchState.COMPLETE, name="matches_p1_idx")
Match.add_index(Match.player2, where=Match.state != MatchState.COMPLETE, name="matches_p2_idx")


class MatchReport(BaseModel):
    id = SerialField()
    match = peewee.ForeignKeyField(Match, backref="reports", on_delete="CASCADE", index=False)
    match_id: int  # the column, for type checkers (peewee adds it)
    # The reporting side, and who pressed the button (a player or an organizer).
    participant = peewee.ForeignKeyField(Participant, backref="+", index=False)
    participant_id: int  # the column, for type checkers (peewee adds it)
    user = peewee.ForeignKeyField(User, null=True, backref="+", index=False)
    user_id: int | None  # the column, for type checkers (peewee adds it)
    kind = EnumField(ReportKind, default=ReportKind.RESULT)
    player1_score = peewee.IntegerField(null=True)
    player2_score = peewee.IntegerField(null=True)
    game_scores = JSONField(null=True)
    # NULL = a draw (for kind=result).
    winner_participant = peewee.ForeignKeyField(Participant, null=True, backref="+", index=False)
    winner_participant_id: int | None  # the column, for type checkers (peewee adds it)
    comment = peewee.TextField(null=True)
    status = EnumField(ReportStatus, default=ReportStatus.ACTIVE)
    created_at = TimestampField(default=utcnow)
    superseded_at = TimestampField(null=True)

    class Meta:
        table_name = "match_reports"


# One live report per side; re-reporting supersedes the old row first.
MatchReport.add_index(
    MatchReport.match,
    MatchReport.participant,
    unique=True,
    where=MatchReport.superseded_at.is_null(True),
    name="match_reports_active_idx",
)


class MatchEvent(BaseModel):
    """Append-only audit of everything that happened to a match."""

    id = SerialField()
    match = peewee.ForeignKeyField(Match, backref="events", on_delete="CASCADE")
    match_id: int  # the column, for type checkers (peewee adds it)
    tournament = peewee.ForeignKeyField(Tournament, backref="+", on_delete="CASCADE")
    tournament_id: int  # the column, for type checkers (peewee adds it)
    # NULL = the system (a job).
    actor_user = peewee.ForeignKeyField(User, null=True, backref="+", index=False)
    actor_user_id: int | None  # the column, for type checkers (peewee adds it)
    type = EnumField(MatchEventType)
    payload = JSONField(default=dict)
    created_at = TimestampField(default=utcnow)

    class Meta:
        table_name = "match_events"


MODELS = [User, Tournament, Participant, Round, Match, MatchReport, MatchEvent]


def _in(column: str, values: type[enum.Enum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


# CHECK constraints the PostgreSQL schema carries (name -> (table, expression)).
# The migration writes its own frozen copy; tests compare the two. The bounds come
# from limits.py; the text must stay byte-identical to the frozen copy (written
# "> 0" there, hence MIN - 1).
CHECKS: dict[str, tuple[str, str]] = {
    "tournaments_format_check": ("tournaments", _in("format", TournamentFormat)),
    "tournaments_state_check": ("tournaments", _in("state", TournamentState)),
    "tournaments_report_mode_check": ("tournaments", _in("report_mode", ReportMode)),
    "tournaments_no_show_policy_elimination_check": (
        "tournaments",
        _in("no_show_policy_elimination", EliminationNoShowPolicy),
    ),
    "tournaments_no_show_policy_league_check": (
        "tournaments",
        _in("no_show_policy_league", LeagueNoShowPolicy),
    ),
    "tournaments_final_second_expiry_check": ("tournaments", _in("final_second_expiry", FinalSecondExpiry)),
    "tournaments_capacity_check": (
        "tournaments",
        f"capacity >= {limits.MIN_CAPACITY} AND min_participants BETWEEN {limits.MIN_PARTICIPANTS} AND capacity",
    ),
    "tournaments_participants_count_check": (
        "tournaments",
        "participants_count >= 0 AND participants_count <= capacity",
    ),
    "tournaments_match_deadline_minutes_check": (
        "tournaments",
        f"match_deadline_minutes BETWEEN {limits.MIN_MATCH_DEADLINE_MINUTES} AND {limits.MAX_MATCH_DEADLINE_MINUTES}",
    ),
    "tournaments_deadline_warning_minutes_check": (
        "tournaments",
        f"deadline_warning_minutes >= {limits.MIN_DEADLINE_WARNING_MINUTES}",
    ),
    "tournaments_check_in_minutes_check": (
        "tournaments",
        f"check_in_minutes > {limits.MIN_CHECK_IN_MINUTES - 1}",
    ),
    "participants_status_check": ("participants", _in("status", ParticipantStatus)),
    "participants_waitlist_check": (
        "participants",
        "(status = 'waitlisted') = (waitlist_position IS NOT NULL)",
    ),
    "rounds_bracket_check": ("rounds", _in("bracket", Bracket)),
    "rounds_state_check": ("rounds", _in("state", RoundState)),
    "matches_bracket_check": ("matches", _in("bracket", Bracket)),
    "matches_state_check": ("matches", _in("state", MatchState)),
    "matches_result_type_check": ("matches", _in("result_type", ResultType)),
    "matches_slots_check": (
        "matches",
        "winner_to_slot IN (1, 2) AND loser_to_slot IN (1, 2)",
    ),
    "match_reports_kind_check": ("match_reports", _in("kind", ReportKind)),
    "match_reports_status_check": ("match_reports", _in("status", ReportStatus)),
    "match_events_type_check": ("match_events", _in("type", MatchEventType)),
}

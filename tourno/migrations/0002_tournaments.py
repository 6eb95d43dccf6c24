"""The tournament domain: users, tournaments, participants, rounds, matches,
match_reports, match_events, email_outbox; CHECK constraints on PostgreSQL."""

import peewee

from tourno.db import JSONField, SerialField, TimestampField

# Frozen copy of the state values at this migration (tourno.tournaments.models.CHECKS).
ROLE = ("player", "organizer", "admin")
FORMAT = ("single_elimination", "double_elimination", "round_robin", "swiss")
TOURNAMENT_STATE = ("draft", "pending", "checked_in", "underway", "awaiting_review", "complete", "cancelled")
REPORT_MODE = ("both_agree", "single_report", "admin_only")
ELIM_NO_SHOW = ("double_dq", "higher_seed_advances", "random")
LEAGUE_NO_SHOW = ("double_loss", "draw")
FINAL_SECOND_EXPIRY = ("review", "cancel")
PARTICIPANT_STATUS = ("registered", "waitlisted", "withdrawn", "no_show", "dropped", "disqualified")
BRACKET = ("winners", "losers", "grand_final", "third_place", "round_robin", "swiss")
ROUND_STATE = ("pending", "open", "complete")
MATCH_STATE = ("pending", "open", "underway", "awaiting_confirmation", "disputed", "complete")
RESULT_TYPE = ("played", "auto_confirmed", "forfeit", "double_forfeit", "bye", "walkover", "admin", "dq")
REPORT_KIND = ("result", "forfeit_claim", "dispute")
REPORT_STATUS = ("active", "accepted", "rejected", "superseded")
EVENT_TYPE = (
    "opened",
    "report",
    "confirmed",
    "disputed",
    "admin_override",
    "deadline_forfeit",
    "deadline_double_forfeit",
    "deadline_extended",
    "reopened",
    "walkover",
)
EMAIL_STATUS = ("pending", "sending", "sent", "failed", "dead", "suppressed")


def _in(column, values):
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


CHECKS = {
    "users_role_check": ("users", _in("role", ROLE)),
    "tournaments_format_check": ("tournaments", _in("format", FORMAT)),
    "tournaments_state_check": ("tournaments", _in("state", TOURNAMENT_STATE)),
    "tournaments_report_mode_check": ("tournaments", _in("report_mode", REPORT_MODE)),
    "tournaments_no_show_policy_elimination_check": (
        "tournaments",
        _in("no_show_policy_elimination", ELIM_NO_SHOW),
    ),
    "tournaments_no_show_policy_league_check": ("tournaments", _in("no_show_policy_league", LEAGUE_NO_SHOW)),
    "tournaments_final_second_expiry_check": ("tournaments", _in("final_second_expiry", FINAL_SECOND_EXPIRY)),
    "tournaments_capacity_check": (
        "tournaments",
        "capacity >= 2 AND min_participants BETWEEN 2 AND capacity",
    ),
    "tournaments_participants_count_check": (
        "tournaments",
        "participants_count >= 0 AND participants_count <= capacity",
    ),
    "tournaments_match_deadline_minutes_check": (
        "tournaments",
        "match_deadline_minutes BETWEEN 10 AND 10080",
    ),
    "tournaments_deadline_warning_minutes_check": ("tournaments", "deadline_warning_minutes >= 0"),
    "tournaments_check_in_minutes_check": ("tournaments", "check_in_minutes > 0"),
    "participants_status_check": ("participants", _in("status", PARTICIPANT_STATUS)),
    "participants_waitlist_check": (
        "participants",
        "(status = 'waitlisted') = (waitlist_position IS NOT NULL)",
    ),
    "rounds_bracket_check": ("rounds", _in("bracket", BRACKET)),
    "rounds_state_check": ("rounds", _in("state", ROUND_STATE)),
    "matches_bracket_check": ("matches", _in("bracket", BRACKET)),
    "matches_state_check": ("matches", _in("state", MATCH_STATE)),
    "matches_result_type_check": ("matches", _in("result_type", RESULT_TYPE)),
    "matches_slots_check": ("matches", "winner_to_slot IN (1, 2) AND loser_to_slot IN (1, 2)"),
    "match_reports_kind_check": ("match_reports", _in("kind", REPORT_KIND)),
    "match_reports_status_check": ("match_reports", _in("status", REPORT_STATUS)),
    "match_events_type_check": ("match_events", _in("type", EVENT_TYPE)),
    "email_outbox_status_check": ("email_outbox", _in("status", EMAIL_STATUS)),
    "email_outbox_priority_check": ("email_outbox", "priority BETWEEN 0 AND 9"),
}

TABLES = (
    "users",
    "tournaments",
    "participants",
    "rounds",
    "matches",
    "match_reports",
    "match_events",
    "email_outbox",
)


def up(migrator, db):
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = SerialField()
        email = peewee.CharField(max_length=320, unique=True)
        display_name = peewee.CharField(max_length=100)
        role = peewee.CharField(max_length=32)
        api_token_hash = peewee.CharField(max_length=128, null=True, unique=True)
        notifications_opt_out = peewee.BooleanField()
        created_at = TimestampField()

        class Meta:
            table_name = "users"

    class Tournament(Base):
        id = SerialField()
        organizer = peewee.ForeignKeyField(User, backref="organized_tournaments")
        name = peewee.CharField(max_length=200)
        game = peewee.CharField(max_length=100)
        format = peewee.CharField(max_length=32)
        state = peewee.CharField(max_length=32)

        capacity = peewee.IntegerField()
        min_participants = peewee.IntegerField()
        participants_count = peewee.IntegerField()
        waitlist_enabled = peewee.BooleanField()
        full_since = TimestampField(null=True)
        full_reminder_sent_at = TimestampField(null=True)

        registration_closes_at = TimestampField(null=True)
        starts_at = TimestampField(null=True)
        auto_start = peewee.BooleanField()
        check_in_enabled = peewee.BooleanField()
        check_in_minutes = peewee.IntegerField()

        match_deadline_minutes = peewee.IntegerField()
        deadline_warning_minutes = peewee.IntegerField()
        report_mode = peewee.CharField(max_length=32)
        no_show_policy_elimination = peewee.CharField(max_length=32)
        no_show_policy_league = peewee.CharField(max_length=32)
        final_second_expiry = peewee.CharField(max_length=32)
        settings = JSONField()

        check_ins_processed_at = TimestampField(null=True)
        started_at = TimestampField(null=True)
        awaiting_review_since = TimestampField(null=True)
        completed_at = TimestampField(null=True)
        cancelled_at = TimestampField(null=True)
        cancel_reason = peewee.CharField(max_length=64, null=True)
        current_round = peewee.IntegerField(null=True)
        total_rounds = peewee.IntegerField(null=True)

        version = peewee.IntegerField()
        created_at = TimestampField()
        updated_at = TimestampField()

        class Meta:
            table_name = "tournaments"

    Tournament.add_index(
        Tournament.full_since,
        where=Tournament.full_since.is_null(False) & Tournament.state.in_(["pending", "checked_in"]),
        name="tournaments_full_pending_idx",
    )
    Tournament.add_index(
        Tournament.starts_at,
        where=Tournament.auto_start & Tournament.state.in_(["pending", "checked_in"]),
        name="tournaments_autostart_idx",
    )

    class Participant(Base):
        id = SerialField()
        tournament = peewee.ForeignKeyField(
            Tournament, backref="participants", on_delete="CASCADE", index=False
        )
        user = peewee.ForeignKeyField(User, backref="participations", null=True, index=False)
        display_name = peewee.CharField(max_length=100)
        seed = peewee.IntegerField(null=True)
        status = peewee.CharField(max_length=32)
        waitlist_position = peewee.IntegerField(null=True)
        checked_in_at = TimestampField(null=True)
        no_show_count = peewee.IntegerField()
        eliminated_at = TimestampField(null=True)
        final_rank = peewee.IntegerField(null=True)
        points = peewee.IntegerField()
        wins = peewee.IntegerField()
        draws = peewee.IntegerField()
        losses = peewee.IntegerField()
        game_wins = peewee.IntegerField()
        game_losses = peewee.IntegerField()
        tiebreaks = JSONField(null=True)
        version = peewee.IntegerField()
        created_at = TimestampField()

        class Meta:
            table_name = "participants"

    Participant.add_index(
        Participant.tournament, Participant.status, name="participants_tournament_status_idx"
    )
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
    Participant.add_index(
        Participant.tournament,
        Participant.waitlist_position,
        unique=True,
        where=Participant.waitlist_position.is_null(False),
        name="participants_waitlist_idx",
    )
    Participant.add_index(
        Participant.user, where=Participant.user.is_null(False), name="participants_user_idx"
    )

    class Round(Base):
        id = SerialField()
        tournament = peewee.ForeignKeyField(Tournament, backref="rounds", on_delete="CASCADE", index=False)
        bracket = peewee.CharField(max_length=32)
        number = peewee.IntegerField()
        name = peewee.CharField(max_length=100, null=True)
        is_final = peewee.BooleanField()
        state = peewee.CharField(max_length=32)
        opened_at = TimestampField(null=True)
        completed_at = TimestampField(null=True)

        class Meta:
            table_name = "rounds"
            indexes = ((("tournament", "bracket", "number"), True),)

    class Match(Base):
        id = SerialField()
        tournament = peewee.ForeignKeyField(Tournament, backref="matches", on_delete="CASCADE", index=False)
        round = peewee.ForeignKeyField(Round, backref="matches", on_delete="CASCADE")
        bracket = peewee.CharField(max_length=32)
        identifier = peewee.CharField(max_length=16, null=True)
        position = peewee.IntegerField()
        state = peewee.CharField(max_length=32)

        player1 = peewee.ForeignKeyField(Participant, null=True, backref="+", index=False)
        player2 = peewee.ForeignKeyField(Participant, null=True, backref="+", index=False)
        player1_is_bye = peewee.BooleanField()
        player2_is_bye = peewee.BooleanField()
        winner_to = peewee.ForeignKeyField("self", null=True, backref="+", index=False)
        winner_to_slot = peewee.SmallIntegerField(null=True)
        loser_to = peewee.ForeignKeyField("self", null=True, backref="+", index=False)
        loser_to_slot = peewee.SmallIntegerField(null=True)

        player1_score = peewee.IntegerField(null=True)
        player2_score = peewee.IntegerField(null=True)
        game_scores = JSONField(null=True)
        winner = peewee.ForeignKeyField(Participant, null=True, backref="+", index=False)
        loser = peewee.ForeignKeyField(Participant, null=True, backref="+", index=False)
        is_draw = peewee.BooleanField()
        result_type = peewee.CharField(max_length=32, null=True)

        opened_at = TimestampField(null=True)
        underway_at = TimestampField(null=True)
        deadline_at = TimestampField(null=True)
        warn_at = TimestampField(null=True)
        deadline_warning_sent_at = TimestampField(null=True)
        deadline_extensions = peewee.IntegerField()
        completed_at = TimestampField(null=True)
        player1_checked_in_at = TimestampField(null=True)
        player2_checked_in_at = TimestampField(null=True)

        admin_locked_at = TimestampField(null=True)
        version = peewee.IntegerField()
        created_at = TimestampField()
        updated_at = TimestampField()

        class Meta:
            table_name = "matches"

    Match.add_index(Match.tournament, Match.round, Match.position, name="matches_tournament_round_idx")
    Match.add_index(
        Match.deadline_at,
        where=Match.state.in_(["open", "underway", "awaiting_confirmation"]),
        name="matches_deadline_due_idx",
    )
    Match.add_index(
        Match.warn_at,
        where=(
            Match.warn_at.is_null(False)
            & Match.deadline_warning_sent_at.is_null(True)
            & Match.state.in_(["open", "underway", "awaiting_confirmation"])
        ),
        name="matches_warning_due_idx",
    )
    Match.add_index(Match.player1, where=Match.state != "complete", name="matches_p1_idx")
    Match.add_index(Match.player2, where=Match.state != "complete", name="matches_p2_idx")

    class MatchReport(Base):
        id = SerialField()
        match = peewee.ForeignKeyField(Match, backref="reports", on_delete="CASCADE", index=False)
        participant = peewee.ForeignKeyField(Participant, backref="+", index=False)
        user = peewee.ForeignKeyField(User, null=True, backref="+", index=False)
        kind = peewee.CharField(max_length=32)
        player1_score = peewee.IntegerField(null=True)
        player2_score = peewee.IntegerField(null=True)
        game_scores = JSONField(null=True)
        winner_participant = peewee.ForeignKeyField(Participant, null=True, backref="+", index=False)
        comment = peewee.TextField(null=True)
        status = peewee.CharField(max_length=32)
        created_at = TimestampField()
        superseded_at = TimestampField(null=True)

        class Meta:
            table_name = "match_reports"

    MatchReport.add_index(
        MatchReport.match,
        MatchReport.participant,
        unique=True,
        where=MatchReport.superseded_at.is_null(True),
        name="match_reports_active_idx",
    )

    class MatchEvent(Base):
        id = SerialField()
        match = peewee.ForeignKeyField(Match, backref="events", on_delete="CASCADE")
        tournament = peewee.ForeignKeyField(Tournament, backref="+", on_delete="CASCADE")
        actor_user = peewee.ForeignKeyField(User, null=True, backref="+", index=False)
        type = peewee.CharField(max_length=32)
        payload = JSONField()
        created_at = TimestampField()

        class Meta:
            table_name = "match_events"

    class EmailOutbox(Base):
        id = SerialField()
        dedupe_key = peewee.CharField(max_length=255, unique=True)
        user = peewee.ForeignKeyField(User, null=True, backref="+", on_delete="SET NULL", index=False)
        to_email = peewee.CharField(max_length=320)
        template = peewee.CharField(max_length=64)
        context = JSONField()
        priority = peewee.SmallIntegerField()
        status = peewee.CharField(max_length=32)
        attempts = peewee.IntegerField()
        available_at = TimestampField()
        locked_at = TimestampField(null=True)
        locked_by = peewee.CharField(max_length=255, null=True)
        sent_at = TimestampField(null=True)
        last_error = peewee.TextField(null=True)
        provider_message_id = peewee.CharField(max_length=255, null=True)
        created_at = TimestampField()

        class Meta:
            table_name = "email_outbox"

    EmailOutbox.add_index(
        EmailOutbox.priority,
        EmailOutbox.available_at,
        where=EmailOutbox.status == "pending",
        name="email_outbox_due_idx",
    )
    EmailOutbox.add_index(
        EmailOutbox.sent_at, where=EmailOutbox.status == "sent", name="email_outbox_sent_at_idx"
    )

    db.create_tables([User, Tournament, Participant, Round, Match, MatchReport, MatchEvent, EmailOutbox])
    if isinstance(db, peewee.PostgresqlDatabase):
        for name, (table, expression) in CHECKS.items():
            db.execute_sql(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({expression})")
        # The audit log is append-only: rows go away only with their match.
        db.execute_sql(
            "CREATE FUNCTION match_events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'match_events is append-only'; END $$"
        )
        db.execute_sql(
            "CREATE TRIGGER match_events_no_update BEFORE UPDATE ON match_events "
            "FOR EACH ROW EXECUTE FUNCTION match_events_append_only()"
        )


def down(migrator, db):
    for table in reversed(TABLES):
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql("DROP FUNCTION IF EXISTS match_events_append_only()")

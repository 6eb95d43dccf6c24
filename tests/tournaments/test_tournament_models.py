"""The domain tables: defaults, enums, uniqueness, and on PostgreSQL the CHECK
constraints and the append-only audit log."""

from __future__ import annotations

import peewee
import pytest

from tourno import buckets
from tourno.accounts import models as account_models
from tourno.accounts.models import User
from tourno.mail import models as mail_models
from tourno.mail.models import EmailOutbox, EmailStatus
from tourno.mail.store import enqueue_email
from tourno.tournaments import models as m
from tourno.tournaments import services
from tourno.tournaments.errors import ValidationError


@pytest.fixture
def tournament(qdb):
    organizer = services.create_user("Org@Example.com", "Org", role=m.Role.ORGANIZER)
    return services.create_tournament(organizer, name="Cup", game="Chess", format="swiss", capacity=8)


def make_match(t: m.Tournament) -> m.Match:
    rnd = m.Round.create(tournament=t, bracket=m.Bracket.SWISS, number=1)
    return m.Match.create(tournament=t, round=rnd, bracket=m.Bracket.SWISS, position=0)


def test_defaults_and_enums_round_trip(tournament):
    t = m.Tournament.get_by_id(tournament.id)
    assert t.state is m.TournamentState.DRAFT
    assert t.format is m.TournamentFormat.SWISS
    assert (t.capacity, t.min_participants, t.participants_count) == (8, 2, 0)
    assert (t.match_deadline_minutes, t.deadline_warning_minutes) == (1440, 60)
    assert t.report_mode is m.ReportMode.BOTH_AGREE
    assert t.no_show_policy_elimination is m.EliminationNoShowPolicy.DOUBLE_DQ
    assert t.no_show_policy_league is m.LeagueNoShowPolicy.DOUBLE_LOSS
    assert t.final_second_expiry is m.FinalSecondExpiry.REVIEW
    assert t.waitlist_enabled is True and t.auto_start is False and t.full_since is None
    assert t.settings == {} and t.version == 1
    assert t.created_at.tzinfo is not None
    organizer = User.get_by_id(t.organizer_id)
    assert organizer.email == "org@example.com"
    assert organizer.role is m.Role.ORGANIZER and organizer.notifications_opt_out is False

    match = make_match(t)
    match = m.Match.get_by_id(match.id)
    assert match.state is m.MatchState.PENDING
    assert (match.version, match.deadline_extensions, match.is_draw) == (1, 0, False)
    assert match.deadline_at is None and match.result_type is None and match.winner_to_id is None


def test_an_unknown_enum_value_is_refused_before_any_sql(tournament):
    with pytest.raises(ValueError):
        m.Tournament.update(state="underway_ish").where(m.Tournament.id == tournament.id).execute()
    assert m.Tournament.get_by_id(tournament.id).state is m.TournamentState.DRAFT


def test_the_email_is_unique(tournament):
    with pytest.raises(ValidationError) as info:
        services.create_user("ORG@example.com", "Other")
    assert info.value.errors == {"email": "is already in use"}
    with pytest.raises(peewee.IntegrityError), User._meta.database.atomic():
        User.create(
            email="org@example.com", display_name="x", role="player", created_at=tournament.created_at
        )


def test_one_entry_per_user_and_tournament(tournament):
    user = services.create_user("p@example.com", "P")
    fields = dict(tournament=tournament, display_name="P", status=m.ParticipantStatus.WITHDRAWN)
    m.Participant.create(user=user, **fields)
    with pytest.raises(peewee.IntegrityError), m.Participant._meta.database.atomic():
        m.Participant.create(user=user, **fields)
    # Organizer-added entrants have no user: any number of them.
    m.Participant.create(user=None, **fields)
    m.Participant.create(user=None, **fields)
    assert m.Participant.select().count() == 3


def test_outbox_dedupe_key_is_unique_and_enqueue_is_idempotent(tournament):
    for _ in range(2):
        enqueue_email(dedupe_key="k:1", to_email="a@example.com", template="t", context={"x": 1})
    (row,) = list(EmailOutbox.select())
    assert (row.status, row.priority, row.attempts, row.context) == (EmailStatus.PENDING, 5, 0, {"x": 1})
    with pytest.raises(peewee.IntegrityError), EmailOutbox._meta.database.atomic():
        EmailOutbox.create(dedupe_key="k:1", to_email="b@example.com", template="t")


# -- PostgreSQL only -------------------------------------------------------------------


def test_every_declared_check_constraint_exists_on_postgres(pg):
    names = {
        r[0]
        for r in pg.rows(
            "SELECT conname FROM pg_constraint WHERE contype = 'c' AND connamespace = 'public'::regnamespace"
        )
    }
    assert names == set(m.CHECKS) | set(mail_models.CHECKS) | set(account_models.CHECKS) | set(
        buckets.CHECKS
    ) | {"jobs_attempts_check"}


BAD_UPDATES = [
    ("tournaments", "state = 'checking_in'"),  # derived, never stored
    ("tournaments", "format = 'ffa'"),
    ("tournaments", "report_mode = 'honour'"),
    ("tournaments", "no_show_policy_elimination = 'coin'"),
    ("tournaments", "no_show_policy_league = 'coin'"),
    ("tournaments", "final_second_expiry = 'never'"),
    ("tournaments", "participants_count = 9"),  # above capacity 8
    ("tournaments", "participants_count = -1"),
    ("tournaments", "capacity = 1"),
    ("tournaments", "min_participants = 9"),
    ("tournaments", "match_deadline_minutes = 5"),
    ("tournaments", "match_deadline_minutes = 10081"),
    ("tournaments", "deadline_warning_minutes = -1"),
    ("users", "role = 'superuser'"),
    ("participants", "status = 'eliminated'"),
    ("participants", "waitlist_position = 3"),  # registered entries hold no position
    ("rounds", "state = 'closed'"),
    ("rounds", "bracket = 'groups'"),
    ("matches", "state = 'expired'"),
    ("matches", "result_type = 'coin_toss'"),
    ("matches", "winner_to_slot = 3"),
    ("email_outbox", "status = 'queued'"),
    ("email_outbox", "priority = 10"),
]


@pytest.mark.parametrize(("table", "assignment"), BAD_UPDATES)
def test_postgres_check_constraints_refuse_bad_values(pg, table, assignment):
    organizer = services.create_user("o@example.com", "O", role=m.Role.ORGANIZER)
    t = services.create_tournament(organizer, name="Cup", game="Go", format="swiss", capacity=8)
    services.publish(t, organizer)
    services.register(t, services.create_user("p@example.com", "P"))
    make_match(t)
    enqueue_email(dedupe_key="k", to_email="a@example.com", template="t", context={})
    with pytest.raises(peewee.IntegrityError, match="violates check constraint"), pg.database.atomic():
        pg.database.execute_sql(f"UPDATE {table} SET {assignment}")


def test_postgres_match_events_are_append_only(pg):
    organizer = services.create_user("o@example.com", "O", role=m.Role.ORGANIZER)
    t = services.create_tournament(organizer, name="Cup", game="Go", format="swiss", capacity=8)
    match = make_match(t)
    event = m.MatchEvent.create(match=match, tournament=t, type=m.MatchEventType.OPENED, payload={"a": 1})
    with pytest.raises(peewee.InternalError, match="append-only"), pg.database.atomic():
        m.MatchEvent.update(payload={}).where(m.MatchEvent.id == event.id).execute()
    assert m.MatchEvent.get_by_id(event.id).payload == {"a": 1}

"""Editing, cancelling, check-in processing, organizer-added entrants,
seeding and removal, on PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import make_players
from tests.tournaments.test_results import NOW, open_matches, started
from tourno.accounts.models import User
from tourno.mail.models import EmailOutbox
from tourno.tournaments import services
from tourno.tournaments.errors import (
    AlreadyRegistered,
    InvalidState,
    NotFound,
    PermissionDenied,
    TournamentFull,
    ValidationError,
)
from tourno.tournaments.models import (
    Match,
    MatchState,
    Participant,
    ParticipantStatus,
    ResultType,
    Tournament,
    TournamentState,
)

EARLY = NOW - dt.timedelta(days=1)


def pending(organizer, capacity=4, **options) -> Tournament:
    t = services.create_tournament(
        organizer, name="Open", game="Go", format="single_elimination", capacity=capacity, **options
    )
    return services.publish(t, organizer, now=EARLY)


def statuses(t: Tournament) -> dict[str, str]:
    return {
        p.display_name: p.status.value
        for p in Participant.select().where(Participant.tournament == t.id).order_by(Participant.id)
    }


def test_update_changes_fields_and_refuses_bad_or_late_changes(organizer):
    t = pending(organizer)
    services.update_tournament(t, organizer, {"name": "  Renamed ", "match_deadline_minutes": 60}, now=EARLY)
    t = Tournament.get_by_id(t.id)
    assert (t.name, t.match_deadline_minutes) == ("Renamed", 60)
    with pytest.raises(ValidationError) as err:
        services.update_tournament(
            t, organizer, {"format": "swiss", "capacity": 1, "color": "red"}, now=EARLY
        )
    assert set(err.value.errors) == {"color"}
    with pytest.raises(ValidationError) as err:
        services.update_tournament(t, organizer, {"format": "swiss", "capacity": 1}, now=EARLY)
    assert "format" in err.value.errors
    with pytest.raises(ValidationError):
        services.update_tournament(t, organizer, {"capacity": 1}, now=EARLY)
    stranger = services.create_user("org2@example.com", "Org2", role="organizer")
    with pytest.raises(PermissionDenied):
        services.update_tournament(t, stranger, {"name": "Mine"}, now=EARLY)
    assert Tournament.get_by_id(t.id).name == "Renamed"


def test_raising_the_capacity_promotes_the_waitlist_and_lowering_below_the_field_is_refused(organizer):
    t = pending(organizer, capacity=2)
    for user in make_players(4):
        services.register(t, user, now=EARLY)
    assert list(statuses(t).values()) == ["registered", "registered", "waitlisted", "waitlisted"]
    assert Tournament.get_by_id(t.id).full_since is not None
    services.update_tournament(t, organizer, {"capacity": 3}, now=EARLY)
    t = Tournament.get_by_id(t.id)
    assert list(statuses(t).values()) == ["registered", "registered", "registered", "waitlisted"]
    assert (t.participants_count, t.full_since is not None) == (3, True)
    services.update_tournament(t, organizer, {"capacity": 8}, now=EARLY)
    t = Tournament.get_by_id(t.id)
    assert (t.participants_count, t.full_since) == (4, None)
    with pytest.raises(ValidationError):
        services.update_tournament(t, organizer, {"capacity": 3}, now=EARLY)


def test_structural_fields_are_fixed_once_underway(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    with pytest.raises(ValidationError) as err:
        services.update_tournament(t, organizer, {"capacity": 16, "settings": {"third_place": True}}, now=NOW)
    assert set(err.value.errors) == {"capacity", "settings"}
    services.update_tournament(t, organizer, {"deadline_warning_minutes": 30}, now=NOW)
    assert Tournament.get_by_id(t.id).deadline_warning_minutes == 30


def test_cancel_mails_everyone_still_in_and_takes_matches_out_of_the_scans(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    services.cancel_tournament(t, organizer, reason="venue lost", now=NOW)
    t = Tournament.get_by_id(t.id)
    assert (t.state, t.cancel_reason, t.cancelled_at) == (TournamentState.CANCELLED, "venue lost", NOW)
    assert (
        not Match.select()
        .where(Match.tournament == t.id, Match.deadline_at.is_null(False), Match.state != MatchState.COMPLETE)
        .exists()
    )
    assert EmailOutbox.select().where(EmailOutbox.template == "tournament_cancelled").count() == 4
    with pytest.raises(InvalidState):
        services.cancel_tournament(t, None, now=NOW)
    # A system cancel (a job) needs no actor; a draft cancels without mail.
    draft = services.create_tournament(organizer, name="D", game="Go", format="swiss", capacity=4)
    services.cancel_tournament(draft, None, reason="not_started_after_full", now=NOW)
    assert Tournament.get_by_id(draft.id).state == TournamentState.CANCELLED


def test_process_check_ins_turns_absent_players_into_no_shows_and_promotes_checked_in_waitlist(organizer):
    starts = NOW + dt.timedelta(hours=1)
    t = pending(organizer, capacity=3, check_in_enabled=True, starts_at=starts, check_in_minutes=60)
    users = make_players(5)
    for user in users:
        services.register(t, user, now=EARLY)
    window = starts - dt.timedelta(minutes=30)
    for user in (users[0], users[2], users[4]):  # two registered, one waitlisted (the 5th)
        services.check_in(t, user, now=window)
    with pytest.raises(InvalidState):
        services.process_check_ins(t, organizer, now=starts - dt.timedelta(hours=2))  # window not open
    services.process_check_ins(t, organizer, now=window)
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.CHECKED_IN and t.check_ins_processed_at == window
    assert list(statuses(t).values()) == ["registered", "no_show", "registered", "waitlisted", "registered"]
    assert t.participants_count == 3 and t.full_since is not None
    assert EmailOutbox.select().where(EmailOutbox.template == "check_in_missed").count() == 1
    with pytest.raises(InvalidState):
        services.process_check_ins(t, organizer, now=window)
    services.start_tournament(t, None, now=starts)
    assert (
        Participant.select().where(Participant.tournament == t.id, Participant.seed.is_null(False)).count()
        == 3
    )


def test_organizer_added_entrants_take_places_all_or_nothing(organizer):
    t = pending(organizer, capacity=4)
    services.add_entrant(t, organizer, display_name="Walk-in")
    with pytest.raises(TournamentFull):
        services.add_entrants(t, organizer, ["A", "B", "C", "D"])
    assert Tournament.get_by_id(t.id).participants_count == 1
    with pytest.raises(ValidationError):
        services.add_entrants(t, organizer, ["ok", "  "])
    (user,) = make_players(1)
    services.add_entrant(t, organizer, display_name=user.display_name, user=user)
    with pytest.raises(AlreadyRegistered):
        services.add_entrant(t, organizer, display_name="again", user=user)
    added = services.add_entrants(t, organizer, ["A", "B"])
    assert [p.user_id for p in added] == [None, None]
    t = Tournament.get_by_id(t.id)
    assert t.participants_count == 4 and t.full_since is not None
    # Named entrants play like anyone else, without mail.
    services.start_tournament(t, organizer, now=NOW)
    ready = [e.to_email for e in EmailOutbox.select().where(EmailOutbox.template == "match_ready")]
    assert ready == [user.email]


def test_set_seed_moves_one_entrant_and_keeps_the_rest_in_order(organizer):
    t = pending(organizer, capacity=4)
    for user in make_players(4):
        services.register(t, user, now=EARLY)
    last = Participant.select().where(Participant.tournament == t.id).order_by(Participant.id.desc()).first()
    services.set_seed(t, organizer, last, 1)
    order = [
        p.display_name
        for p in Participant.select().where(Participant.tournament == t.id).order_by(Participant.seed)
    ]
    assert order == ["P3", "P0", "P1", "P2"]
    with pytest.raises(ValidationError):
        services.set_seed(t, organizer, last, 5)
    with pytest.raises(NotFound):
        services.set_seed(t, organizer, 999_999, 1)
    services.start_tournament(t, organizer, now=NOW)
    assert Participant.get_by_id(last.id).seed == 1
    with pytest.raises(InvalidState):
        services.set_seed(t, organizer, last, 2)


def test_remove_participant_before_the_start_frees_the_place_and_after_disqualifies(organizer):
    t = pending(organizer, capacity=2)
    users = make_players(3)
    for user in users:
        services.register(t, user, now=EARLY)
    first = Participant.get(Participant.user == users[0].id)
    services.remove_participant(t, organizer, first, now=EARLY)
    assert list(statuses(t).values()) == ["withdrawn", "registered", "registered"]
    services.start_tournament(t, organizer, now=NOW)
    (m,) = open_matches(t)
    services.remove_participant(t, organizer, m.player1_id, now=NOW)
    m = Match.get_by_id(m.id)
    assert (m.result_type, m.winner_id) == (ResultType.DQ, m.player2_id)
    assert Participant.get_by_id(m.player1_id).status == ParticipantStatus.DISQUALIFIED
    assert Tournament.get_by_id(t.id).state == TournamentState.COMPLETE


def test_announce_mails_participants_who_did_not_opt_out(organizer):
    t = pending(organizer, capacity=2)
    users = make_players(3)
    for user in users:
        services.register(t, user, now=EARLY)  # two registered, one waitlisted
    User.update(notifications_opt_out=True).where(User.id == users[1].id).execute()
    with pytest.raises(ValidationError):
        services.announce(t, organizer, subject=" ", body="hi")
    with pytest.raises(ValidationError) as blank:
        services.announce(t, organizer, subject="Hello", body=" \n ")  # kept as written, but not blank
    assert set(blank.value.errors) == {"body"}
    stranger = services.create_user("org3@example.com", "Org3", role="organizer")
    with pytest.raises(PermissionDenied):
        services.announce(t, stranger, subject="Hello", body="hi")
    key, count = services.announce(t, organizer, subject="Schedule", body="Round 1 at 18:00", now=EARLY)
    rows = list(EmailOutbox.select().where(EmailOutbox.template == "announcement").order_by(EmailOutbox.id))
    assert count == 2 and [r.to_email for r in rows] == [users[0].email, users[2].email]
    assert {r.priority for r in rows} == {9} and all(
        r.dedupe_key.startswith(f"announce:{key}:") for r in rows
    )


def test_set_api_token_hash_replaces_the_old_one(organizer):
    services.set_api_token_hash(organizer, "a" * 64)
    assert User.get_by_id(organizer.id).api_token_hash == "a" * 64
    services.set_api_token_hash(organizer.id, "b" * 64)
    assert User.get_by_id(organizer.id).api_token_hash == "b" * 64
    with pytest.raises(ValidationError):
        services.set_api_token_hash(organizer, "short")

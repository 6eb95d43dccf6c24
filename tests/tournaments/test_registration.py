"""Creating, publishing and registration services, on PostgreSQL and SQLite:
every transition, every refusal (with nothing written), and no overbooking
under 200 concurrent joins."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from tests.conftest import make_players
from tourno import db as tdb
from tourno.accounts.models import Role, User
from tourno.mail.models import EmailOutbox
from tourno.tournaments import limits, services
from tourno.tournaments.errors import (
    AlreadyRegistered,
    DeadlinePassed,
    DomainError,
    InvalidState,
    NotRegistered,
    PermissionDenied,
    TournamentFull,
    ValidationError,
)
from tourno.tournaments.inputs import TournamentOptions
from tourno.tournaments.models import Participant, ParticipantStatus, Tournament, TournamentState
from tourno.tournaments.services.registration import DEFAULTS

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
REGISTERED, WAITLISTED, WITHDRAWN = (
    ParticipantStatus.REGISTERED,
    ParticipantStatus.WAITLISTED,
    ParticipantStatus.WITHDRAWN,
)


def open_tournament(organizer: User, capacity: int = 4, **options) -> Tournament:
    t = services.create_tournament(
        organizer, name="Cup", game="Chess", format="single_elimination", capacity=capacity, **options
    )
    return services.publish(t, organizer, now=NOW)


def fresh(t: Tournament) -> Tournament:
    return Tournament.get_by_id(t.id)


def status_of(t: Tournament, user: User) -> ParticipantStatus:
    return Participant.get(Participant.tournament == t.id, Participant.user == user.id).status


def outbox() -> list[tuple[str, str]]:
    return [(r.template, r.to_email) for r in EmailOutbox.select().order_by(EmailOutbox.id)]


def snapshot() -> tuple:
    """Everything a refused call must leave untouched."""
    return (
        [tuple(r) for r in Tournament.select().order_by(Tournament.id).tuples()],
        [tuple(r) for r in Participant.select().order_by(Participant.id).tuples()],
        EmailOutbox.select().count(),
    )


# -- create and publish ----------------------------------------------------------------


def test_create_tournament_validates_every_field_at_once(organizer):
    with pytest.raises(ValidationError) as info:
        services.create_tournament(
            organizer,
            name=" ",
            game="Go",
            format="ffa",
            capacity=1,
            match_deadline_minutes=5,
            check_in_enabled=True,
            settings=[],
        )
    assert set(info.value.errors) == {
        "name",
        "format",
        "capacity",
        "match_deadline_minutes",
        "starts_at",
        "settings",
    }
    assert info.value.code == "validation_error"
    assert info.value.to_dict()["errors"]["capacity"] == "must be a whole number from 2 to 4096"
    assert Tournament.select().count() == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"match_deadline_minutes": 10081}, "match_deadline_minutes"),
        ({"match_deadline_minutes": 9}, "match_deadline_minutes"),
        ({"deadline_warning_minutes": -1}, "deadline_warning_minutes"),
        ({"deadline_warning_minutes": 10081}, "deadline_warning_minutes"),
        ({"min_participants": 5}, "min_participants"),  # above capacity 4
        ({"check_in_minutes": 0}, "check_in_minutes"),
        ({"auto_start": "yes"}, "auto_start"),
        ({"starts_at": dt.datetime(2027, 1, 1)}, "starts_at"),  # naive
        (
            {"starts_at": NOW + dt.timedelta(days=1), "registration_closes_at": NOW + dt.timedelta(days=2)},
            "registration_closes_at",
        ),
        ({"report_mode": "coin"}, "report_mode"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_create_tournament_refuses_out_of_range_settings(organizer, options, field):
    with pytest.raises(ValidationError) as info:
        services.create_tournament(organizer, name="Cup", game="Go", format="swiss", capacity=4, **options)
    assert list(info.value.errors) == [field]


def test_the_defaults_are_the_options_of_the_input_model():
    assert set(DEFAULTS) == set(TournamentOptions.model_fields)
    assert TournamentOptions.check(DEFAULTS).values() == DEFAULTS


def test_create_user_names_every_bad_argument_at_once(organizer):
    with pytest.raises(ValidationError) as info:
        services.create_user("no-at-sign", " ", role="owner")
    assert info.value.errors == {
        "email": "must be an email address",
        "display_name": f"must be 1 to {limits.DISPLAY_NAME_MAX_LENGTH} characters",
        "role": "must be one of player, organizer, admin",
    }
    assert User.select().count() == 1  # the organizer only


def test_create_tournament_accepts_the_range_limits(organizer):
    for minutes in (10, 10080):
        t = services.create_tournament(
            organizer, name="Cup", game="Go", format="round_robin", capacity=2, match_deadline_minutes=minutes
        )
        assert fresh(t).match_deadline_minutes == minutes


def test_only_organizers_and_admins_create_tournaments(qdb):
    (player,) = make_players(1)
    with pytest.raises(PermissionDenied):
        services.create_tournament(player, name="Cup", game="Go", format="swiss", capacity=4)
    admin = services.create_user("admin@example.com", "Admin", role="admin")
    assert services.create_tournament(admin, name="Cup", game="Go", format="swiss", capacity=4).id


def test_publish_opens_registration_once(organizer):
    t = services.create_tournament(organizer, name="Cup", game="Go", format="swiss", capacity=4)
    (player,) = make_players(1)
    with pytest.raises(InvalidState):
        services.register(t, player, now=NOW)  # still a draft
    with pytest.raises(PermissionDenied):
        services.publish(t, player, now=NOW)
    published = services.publish(t, organizer, now=NOW)
    assert published.state is TournamentState.PENDING
    assert fresh(t).state is TournamentState.PENDING and fresh(t).version == 2
    before = snapshot()
    with pytest.raises(InvalidState):
        services.publish(t, organizer, now=NOW)
    assert snapshot() == before


def test_publish_refuses_a_start_in_the_past(organizer):
    t = services.create_tournament(
        organizer, name="Cup", game="Go", format="swiss", capacity=4, starts_at=NOW - dt.timedelta(minutes=1)
    )
    with pytest.raises(ValidationError) as info:
        services.publish(t, organizer, now=NOW)
    assert info.value.errors == {"starts_at": "is in the past"}
    assert fresh(t).state is TournamentState.DRAFT


def test_an_admin_may_publish_any_tournament(organizer):
    admin = services.create_user("admin@example.com", "Admin", role=Role.ADMIN)
    t = services.create_tournament(organizer, name="Cup", game="Go", format="swiss", capacity=4)
    assert services.publish(t.id, admin, now=NOW).state is TournamentState.PENDING


# -- register ----------------------------------------------------------------------------


def test_register_until_full_then_waitlist(organizer):
    t = open_tournament(organizer, capacity=2)
    a, b, c, d = make_players(4)
    assert services.register(t, a, now=NOW).status is REGISTERED
    assert fresh(t).participants_count == 1 and fresh(t).full_since is None
    assert services.register(t, b, now=NOW).status is REGISTERED
    full = fresh(t)
    assert full.participants_count == 2 and full.full_since == NOW

    waiting = services.register(t, c, now=NOW)
    assert (waiting.status, waiting.waitlist_position) == (WAITLISTED, 1)
    assert services.register(t, d, now=NOW).waitlist_position == 2
    assert fresh(t).participants_count == 2 and fresh(t).full_since == NOW

    assert outbox() == [
        ("registration_confirmed", a.email),
        ("registration_confirmed", b.email),
        ("tournament_full", organizer.email),
        ("registration_waitlisted", c.email),
        ("registration_waitlisted", d.email),
    ]
    assert EmailOutbox.get(EmailOutbox.to_email == c.email).context["waitlist_position"] == 1


def test_register_twice_is_refused(organizer):
    t = open_tournament(organizer, capacity=2)
    x, a, b = make_players(3)
    for user in (x, a, b):
        services.register(t, user, now=NOW)
    assert status_of(t, b) is WAITLISTED
    before = snapshot()
    for user in (a, b):
        with pytest.raises(AlreadyRegistered):
            services.register(t, user, now=NOW)
    assert snapshot() == before


def test_a_full_tournament_without_waitlist_refuses(organizer):
    t = open_tournament(organizer, capacity=2, waitlist_enabled=False)
    a, b, c = make_players(3)
    services.register(t, a, now=NOW)
    services.register(t, b, now=NOW)
    before = snapshot()
    with pytest.raises(TournamentFull) as info:
        services.register(t, c, now=NOW)
    assert info.value.code == "tournament_full"
    assert snapshot() == before


def test_register_is_refused_outside_registration(organizer):
    t = open_tournament(organizer, registration_closes_at=NOW + dt.timedelta(hours=1))
    (a,) = make_players(1)
    with pytest.raises(DeadlinePassed):
        services.register(t, a, now=NOW + dt.timedelta(hours=1))
    for state in (TournamentState.CHECKED_IN, TournamentState.UNDERWAY, TournamentState.CANCELLED):
        Tournament.update(state=state).where(Tournament.id == t.id).execute()
        with pytest.raises(InvalidState):
            services.register(t, a, now=NOW)
    assert Participant.select().count() == 0 and EmailOutbox.select().count() == 0


def test_a_disqualified_entrant_cannot_join_again(organizer):
    t = open_tournament(organizer)
    (a,) = make_players(1)
    entry = services.register(t, a, now=NOW)
    Participant.update(status=ParticipantStatus.DISQUALIFIED).where(Participant.id == entry.id).execute()
    with pytest.raises(PermissionDenied):
        services.register(t, a, now=NOW)


# -- withdraw and promotion ----------------------------------------------------------------


def test_withdraw_promotes_the_first_waitlisted(organizer):
    t = open_tournament(organizer, capacity=2)
    a, b, c, d = make_players(4)
    for user in (a, b, c, d):
        services.register(t, user, now=NOW)
    version = fresh(t).version

    gone = services.withdraw(t, a, now=NOW)
    assert (gone.status, gone.waitlist_position) == (WITHDRAWN, None)
    assert [status_of(t, u) for u in (a, b, c, d)] == [WITHDRAWN, REGISTERED, REGISTERED, WAITLISTED]
    assert Participant.get(Participant.user == c.id).waitlist_position is None
    after = fresh(t)
    assert after.participants_count == 2 and after.full_since == NOW and after.version == version + 1
    assert outbox()[-1] == ("waitlist_promoted", c.email)


def test_withdraw_without_waitlist_frees_the_place(organizer):
    t = open_tournament(organizer, capacity=2)
    a, b = make_players(2)
    services.register(t, a, now=NOW)
    services.register(t, b, now=NOW)
    assert fresh(t).full_since == NOW
    services.withdraw(t, b, now=NOW)
    after = fresh(t)
    assert after.participants_count == 1 and after.full_since is None


def test_withdraw_from_the_waitlist_keeps_the_count(organizer):
    t = open_tournament(organizer, capacity=2)
    x, a, b, c = make_players(4)
    for user in (x, a, b, c):
        services.register(t, user, now=NOW)
    services.withdraw(t, b, now=NOW)
    assert fresh(t).participants_count == 2
    assert [status_of(t, u) for u in (a, b, c)] == [REGISTERED, WITHDRAWN, WAITLISTED]
    # The next promotion still goes to c, and a new waitlister queues behind.
    (d,) = make_players(1, prefix="late")
    assert services.register(t, d, now=NOW).waitlist_position == 3
    services.withdraw(t, a, now=NOW)
    assert [status_of(t, u) for u in (c, d)] == [REGISTERED, WAITLISTED]


def test_withdraw_refusals_write_nothing(organizer):
    t = open_tournament(organizer)
    a, b = make_players(2)
    services.register(t, a, now=NOW)
    before = snapshot()
    with pytest.raises(NotRegistered):
        services.withdraw(t, b, now=NOW)
    services.withdraw(t, a, now=NOW)
    with pytest.raises(NotRegistered):
        services.withdraw(t, a, now=NOW)  # already withdrawn
    services.register(t, a, now=NOW)
    Tournament.update(state=TournamentState.UNDERWAY).where(Tournament.id == t.id).execute()
    before = snapshot()
    with pytest.raises(InvalidState):
        services.withdraw(t, a, now=NOW)
    assert snapshot() == before


def test_join_again_after_withdrawing_reuses_the_entry(organizer):
    t = open_tournament(organizer)
    (a,) = make_players(1)
    first = services.register(t, a, now=NOW)
    services.withdraw(t, a, now=NOW)
    again = services.register(t, a, now=NOW)
    assert again.id == first.id and again.status is REGISTERED and again.version == 3
    assert [tpl for tpl, _ in outbox()] == ["registration_confirmed", "registration_confirmed"]
    assert fresh(t).participants_count == 1


def test_after_check_ins_only_a_checked_in_waitlister_is_promoted(organizer):
    t = open_tournament(organizer, capacity=2)
    x, a, b, c = make_players(4)
    for user in (x, a, b, c):
        services.register(t, user, now=NOW)
    Participant.update(checked_in_at=NOW).where(Participant.user == c.id).execute()
    Tournament.update(state=TournamentState.CHECKED_IN).where(Tournament.id == t.id).execute()
    services.withdraw(t, a, now=NOW)
    assert [status_of(t, u) for u in (b, c)] == [WAITLISTED, REGISTERED]
    assert fresh(t).participants_count == 2


# -- close registration ------------------------------------------------------------------


def test_close_registration(organizer):
    t = open_tournament(organizer)
    a, b = make_players(2)
    services.register(t, a, now=NOW)
    with pytest.raises(PermissionDenied):
        services.close_registration(t, a, now=NOW)
    closed = services.close_registration(t, organizer, now=NOW)
    assert closed.registration_closes_at == NOW and fresh(t).registration_closes_at == NOW
    assert not services.registration_open(fresh(t), NOW)
    with pytest.raises(DeadlinePassed):
        services.register(t, b, now=NOW)
    with pytest.raises(InvalidState):
        services.close_registration(t, organizer, now=NOW)
    services.withdraw(t, a, now=NOW)  # leaving stays possible until the start
    assert fresh(t).participants_count == 0


def test_close_registration_needs_an_open_tournament(organizer):
    t = services.create_tournament(organizer, name="Cup", game="Go", format="swiss", capacity=4)
    with pytest.raises(InvalidState):
        services.close_registration(t, organizer, now=NOW)


# -- check-in ----------------------------------------------------------------------------


def test_check_in_window(organizer):
    starts = NOW + dt.timedelta(hours=2)
    t = open_tournament(organizer, capacity=2, starts_at=starts, check_in_enabled=True, check_in_minutes=30)
    x, a, b, c = make_players(4)
    services.register(t, x, now=NOW)
    services.register(t, a, now=NOW)
    services.register(t, b, now=NOW)  # waitlisted: may check in too
    opens = starts - dt.timedelta(minutes=30)
    assert services.check_in_window(fresh(t)) == (opens, starts)
    assert services.public_state(fresh(t), NOW) == "pending"
    assert services.public_state(fresh(t), opens) == "checking_in"

    with pytest.raises(InvalidState):
        services.check_in(t, a, now=opens - dt.timedelta(seconds=1))
    assert services.check_in(t, a, now=opens).checked_in_at == opens
    assert services.check_in(t, a, now=opens + dt.timedelta(minutes=5)).checked_in_at == opens  # idempotent
    assert services.check_in(t, b, now=opens).checked_in_at == opens
    with pytest.raises(NotRegistered):
        services.check_in(t, c, now=opens)
    with pytest.raises(DeadlinePassed):
        services.check_in(t, b, now=starts)
    assert Participant.select().where(Participant.checked_in_at.is_null(False)).count() == 2


def test_check_in_needs_check_in_enabled(organizer):
    t = open_tournament(organizer)
    (a,) = make_players(1)
    services.register(t, a, now=NOW)
    with pytest.raises(InvalidState):
        services.check_in(t, a, now=NOW)
    Tournament.update(state=TournamentState.UNDERWAY).where(Tournament.id == t.id).execute()
    with pytest.raises(InvalidState):
        services.check_in(t, a, now=NOW)


def test_every_refusal_is_a_domain_error_with_a_code():
    codes = {
        cls.code
        for cls in (
            TournamentFull,
            InvalidState,
            AlreadyRegistered,
            NotRegistered,
            DeadlinePassed,
            PermissionDenied,
        )
    }
    assert len(codes) == 6
    assert issubclass(ValidationError, DomainError)
    assert InvalidState("x").to_dict() == {"code": "invalid_state", "message": "x"}


# -- no overbooking under concurrency --------------------------------------------------------


def race(t: Tournament, users: list[User], connections: int) -> dict[str, int]:
    """Every user joins at once, each from its own thread with its own
    connection (at most ``connections`` open at a time)."""
    go = threading.Event()
    slots = threading.Semaphore(connections)
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def join(user: User) -> None:
        go.wait()
        with slots:
            tdb.open_connection()
            try:
                try:
                    result = services.register(t.id, user).status.value
                except DomainError as exc:
                    result = exc.code
            finally:
                tdb.database.close()
        with lock:
            outcomes[result] = outcomes.get(result, 0) + 1

    threads = [threading.Thread(target=join, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


@pytest.mark.parametrize("waitlist", [True, False])
def test_200_concurrent_joins_never_overbook_postgres(pg, waitlist):
    organizer = services.create_user("org@example.com", "Org", role=Role.ORGANIZER)
    t = services.create_tournament(
        organizer, name="Big", game="Go", format="swiss", capacity=64, waitlist_enabled=waitlist
    )
    services.publish(t, organizer)
    users = make_players(200)

    outcomes = race(t, users, connections=40)

    assert outcomes == (
        {"registered": 64, "waitlisted": 136} if waitlist else {"registered": 64, "tournament_full": 136}
    )
    after = fresh(t)
    assert after.participants_count == 64
    assert Participant.select().where(Participant.status == REGISTERED).count() == 64
    assert after.full_since is not None
    assert after.version == 2 + 64  # publish + one bump per registration, nothing else
    assert EmailOutbox.select().where(EmailOutbox.template == "tournament_full").count() == 1
    if waitlist:
        positions = sorted(
            p.waitlist_position for p in Participant.select().where(Participant.status == WAITLISTED)
        )
        assert positions == list(range(1, 137))


def test_concurrent_joins_never_overbook_sqlite(sqlite):
    organizer = services.create_user("org@example.com", "Org", role=Role.ORGANIZER)
    t = services.create_tournament(organizer, name="Small", game="Go", format="swiss", capacity=16)
    services.publish(t, organizer)
    outcomes = race(t, make_players(48), connections=48)
    assert outcomes == {"registered": 16, "waitlisted": 32}
    assert fresh(t).participants_count == 16

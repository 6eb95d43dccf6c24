"""Creating and publishing tournaments, and registration: join, waitlist,
withdraw with promotion, closing registration, check-in.

Each function is one transaction; a refusal raises a
:class:`~tourno.tournaments.errors.DomainError` before anything is written.
Registration changes run under the tournament's row lock
(:func:`~tourno.tournaments.services.common.locked_tournament`), which is what
keeps ``participants_count <= capacity`` under any concurrency
(``reference/domain.md`` §6.3).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import peewee

from tourno.accounts.models import Role, User
from tourno.db import utcnow, write_transaction
from tourno.tournaments import limits
from tourno.tournaments.errors import (
    AlreadyRegistered,
    DeadlinePassed,
    InvalidState,
    NotRegistered,
    PermissionDenied,
    TournamentFull,
    ValidationError,
)
from tourno.tournaments.inputs import TournamentInput, TournamentOptions, UserInput
from tourno.tournaments.models import (
    PRE_START_STATES,
    EliminationNoShowPolicy,
    FinalSecondExpiry,
    LeagueNoShowPolicy,
    Participant,
    ParticipantStatus,
    ReportMode,
    Tournament,
    TournamentFormat,
    TournamentState,
)
from tourno.tournaments.services.common import locked_tournament, require_manager, save_tournament
from tourno.tournaments.services.notify import mail_participant, mail_tournament_full

ACTIVE_STATUSES = (ParticipantStatus.REGISTERED, ParticipantStatus.WAITLISTED)


# -- users --------------------------------------------------------------------------------


def create_user(email: str, display_name: str, *, role: Role | str = Role.PLAYER) -> User:
    """A user; the email is stored trimmed and lower-cased, and must be new."""
    account, errors = UserInput.values_or_problems({"email": email, "display_name": display_name})
    try:
        role = Role(role)
    except ValueError:
        errors["role"] = f"must be one of {', '.join(r.value for r in Role)}"
    if errors:
        raise ValidationError(errors)
    try:
        with write_transaction():
            return User.create(**account, role=role, created_at=utcnow())
    except peewee.IntegrityError:
        raise ValidationError({"email": "is already in use"}) from None


# -- tournaments --------------------------------------------------------------------------

#: What a tournament option left out is (the options are the fields of
#: :class:`~tourno.tournaments.inputs.TournamentOptions`; a test keeps the two in step).
DEFAULTS: dict[str, Any] = {
    "min_participants": 2,
    "waitlist_enabled": True,
    "starts_at": None,
    "registration_closes_at": None,
    "auto_start": False,
    "check_in_enabled": False,
    "check_in_minutes": 60,
    "match_deadline_minutes": 1440,
    "deadline_warning_minutes": 60,
    "report_mode": ReportMode.BOTH_AGREE,
    "no_show_policy_elimination": EliminationNoShowPolicy.DOUBLE_DQ,
    "no_show_policy_league": LeagueNoShowPolicy.DOUBLE_LOSS,
    "final_second_expiry": FinalSecondExpiry.REVIEW,
    "settings": None,
}


def validate_tournament(
    values: Mapping[str, Any], refused: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A tournament's complete values, each valid on its own (the input models
    check that), under the rules that relate fields: at least
    ``min_participants`` places, check-in needs ``starts_at``, registration
    closes by the start; no settings means ``{}``. ``refused`` are fields
    already found bad (the rules skip them). Raises ValidationError naming
    every bad field at once."""
    out = dict(values)
    errors = dict(refused or {})

    def usable(*names: str) -> bool:
        return not any(name in errors for name in names)

    capacity, least = out.get("capacity"), out.get("min_participants")
    if usable("capacity", "min_participants") and isinstance(capacity, int) and isinstance(least, int):
        if least > capacity:
            errors["min_participants"] = (
                f"must be a whole number from {limits.MIN_PARTICIPANTS} to {capacity}"
            )
    starts_at, closes_at = out.get("starts_at"), out.get("registration_closes_at")
    if out.get("check_in_enabled") is True and starts_at is None and usable("check_in_enabled", "starts_at"):
        errors["starts_at"] = "is required when check-in is enabled"
    if (
        isinstance(starts_at, dt.datetime)
        and isinstance(closes_at, dt.datetime)
        and usable("starts_at", "registration_closes_at")
        and closes_at > starts_at
    ):
        errors["registration_closes_at"] = "must not be after starts_at"
    if out.get("settings") is None:
        out["settings"] = {}
    if errors:
        raise ValidationError(errors)
    return out


def create_tournament(
    organizer: User,
    *,
    name: str,
    game: str,
    format: TournamentFormat | str,
    capacity: int,
    now: dt.datetime | None = None,
    **options: Any,
) -> Tournament:
    """A new tournament in ``draft``. ``options`` are the other columns of
    :data:`DEFAULTS` (unknown names are refused)."""
    if organizer.role not in (Role.ORGANIZER, Role.ADMIN):
        raise PermissionDenied("only organizers and admins create tournaments")
    unknown = sorted(set(options) - set(TournamentOptions.model_fields))
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "is not a tournament option"))
    given, refused = TournamentInput.values_or_problems(
        {**options, "name": name, "game": game, "format": format, "capacity": capacity}
    )
    values = validate_tournament({**DEFAULTS, **given}, refused)
    now = now or utcnow()
    with write_transaction():
        return Tournament.create(
            organizer=organizer,
            state=TournamentState.DRAFT,
            participants_count=0,
            version=1,
            created_at=now,
            updated_at=now,
            **values,
        )


def publish(tournament: Tournament | int, actor: User, *, now: dt.datetime | None = None) -> Tournament:
    """draft -> pending: registration opens."""
    now = now or utcnow()
    with locked_tournament(tournament) as t:
        require_manager(actor, t)
        if t.state != TournamentState.DRAFT:
            raise InvalidState(f"tournament is {t.state.value}, only a draft can be published")
        if t.starts_at is not None and t.starts_at <= now:
            raise ValidationError({"starts_at": "is in the past"})
        save_tournament(t, now, state=TournamentState.PENDING)
        return t


def close_registration(
    tournament: Tournament | int, actor: User, *, now: dt.datetime | None = None
) -> Tournament:
    """Stop accepting joins from now on (sets ``registration_closes_at``);
    withdrawals and check-in continue until the start."""
    now = now or utcnow()
    with locked_tournament(tournament) as t:
        require_manager(actor, t)
        if t.state != TournamentState.PENDING:
            raise InvalidState(f"tournament is {t.state.value}, registration is not open")
        if not registration_open(t, now):
            raise InvalidState("registration is already closed")
        save_tournament(t, now, registration_closes_at=now)
        return t


def registration_open(tournament: Tournament, now: dt.datetime) -> bool:
    """Joining is possible at ``now``: pending, and before ``registration_closes_at``."""
    return tournament.state == TournamentState.PENDING and (
        tournament.registration_closes_at is None or now < tournament.registration_closes_at
    )


def check_in_window(tournament: Tournament) -> tuple[dt.datetime, dt.datetime] | None:
    """[opens, closes) of the check-in, or None without check-in."""
    if not tournament.check_in_enabled or tournament.starts_at is None:
        return None
    return tournament.starts_at - dt.timedelta(minutes=tournament.check_in_minutes), tournament.starts_at


def public_state(tournament: Tournament, now: dt.datetime) -> str:
    """The state the API reports: ``checking_in`` is derived from the window
    (``reference/domain.md`` §7.1), everything else is the stored state."""
    window = check_in_window(tournament)
    if tournament.state == TournamentState.PENDING and window and window[0] <= now < window[1]:
        return "checking_in"
    return tournament.state.value


# -- registration -------------------------------------------------------------------------


def register(tournament: Tournament | int, user: User, *, now: dt.datetime | None = None) -> Participant:
    """Join: ``registered`` while there is a place, else ``waitlisted`` (when the
    tournament keeps a waitlist) or TournamentFull. A user who withdrew may
    join again (their entry is reused)."""
    now = now or utcnow()
    with locked_tournament(tournament) as t:
        if t.state != TournamentState.PENDING:
            raise InvalidState(f"tournament is {t.state.value}, registration is not open")
        if not registration_open(t, now):
            raise DeadlinePassed("registration is closed")
        entry = Participant.get_or_none(Participant.tournament == t.id, Participant.user == user.id)
        if entry is not None and entry.status in ACTIVE_STATUSES:
            raise AlreadyRegistered(f"already {entry.status.value}")
        if entry is not None and entry.status != ParticipantStatus.WITHDRAWN:
            raise PermissionDenied(f"entry is {entry.status.value}, it cannot join again")

        if t.participants_count < t.capacity:
            status, position = ParticipantStatus.REGISTERED, None
        elif t.waitlist_enabled:
            status, position = ParticipantStatus.WAITLISTED, _next_waitlist_position(t)
        else:
            raise TournamentFull(f"all {t.capacity} places are taken")

        if entry is None:
            entry = Participant.create(
                tournament=t.id,
                user=user.id,
                display_name=user.display_name,
                status=status,
                waitlist_position=position,
                version=1,
                created_at=now,
            )
        else:
            entry.status, entry.waitlist_position, entry.checked_in_at = status, position, None
            entry.display_name = user.display_name
            entry.version += 1
            entry.save()

        if status == ParticipantStatus.REGISTERED:
            count = t.participants_count + 1
            became_full = count == t.capacity
            save_tournament(t, now, participants_count=count, full_since=now if became_full else t.full_since)
            mail_participant(entry, user, t, template="registration_confirmed", now=now)
            if became_full:
                mail_tournament_full(t, now)
        else:
            mail_participant(entry, user, t, template="registration_waitlisted", now=now)
        return entry


def withdraw(tournament: Tournament | int, user: User, *, now: dt.datetime | None = None) -> Participant:
    """Leave before the start. A registered place goes to the first on the
    waitlist in the same transaction (before check-ins are processed; after,
    only to a waitlisted entrant who checked in); otherwise the count drops
    and the tournament is no longer full."""
    now = now or utcnow()
    with locked_tournament(tournament) as t:
        if t.state not in PRE_START_STATES:
            raise InvalidState(f"tournament is {t.state.value}, withdrawing is no longer possible")
        entry = _active_entry(t, user)
        was_registered = entry.status == ParticipantStatus.REGISTERED
        set_status(entry, ParticipantStatus.WITHDRAWN)
        if was_registered:
            promoted = promote_first_waitlisted(t, now)
            if promoted is None:
                save_tournament(t, now, participants_count=t.participants_count - 1, full_since=None)
            else:
                save_tournament(t, now)
        return entry


def check_in(tournament: Tournament | int, user: User, *, now: dt.datetime | None = None) -> Participant:
    """Confirm attendance during the check-in window. Waitlisted entrants may
    check in too (they are promoted first when check-ins are processed).
    Checking in twice changes nothing."""
    now = now or utcnow()
    with locked_tournament(tournament) as t:
        if t.state != TournamentState.PENDING:
            raise InvalidState(f"tournament is {t.state.value}, check-in is not open")
        window = check_in_window(t)
        if window is None:
            raise InvalidState("this tournament has no check-in")
        if now < window[0]:
            raise InvalidState("check-in has not opened yet")
        if now >= window[1]:
            raise DeadlinePassed("check-in has closed")
        entry = _active_entry(t, user)
        if entry.checked_in_at is None:
            entry.checked_in_at = now
            entry.save()
        return entry


# -- helpers (all called under the tournament lock; lifecycle uses the public ones) --------


def _active_entry(t: Tournament, user: User) -> Participant:
    """The user's registered or waitlisted entry, or NotRegistered."""
    entry = Participant.get_or_none(
        Participant.tournament == t.id,
        Participant.user == user.id,
        Participant.status.in_(ACTIVE_STATUSES),
    )
    if entry is None:
        raise NotRegistered("not registered in this tournament")
    return entry


def set_status(entry: Participant, status: ParticipantStatus) -> None:
    """Move ``entry`` to ``status``, out of the waitlist, as a new version."""
    entry.status = status
    entry.waitlist_position = None
    entry.version += 1
    entry.save()


def _next_waitlist_position(t: Tournament) -> int:
    last = (
        Participant.select(peewee.fn.MAX(Participant.waitlist_position))
        .where(Participant.tournament == t.id)
        .scalar()
    )
    return (last or 0) + 1


def promote_first_waitlisted(t: Tournament, now: dt.datetime) -> Participant | None:
    """The first on the waitlist takes a place (after check-ins are processed,
    only one who checked in), and is told; None when nobody can."""
    query = Participant.select().where(
        Participant.tournament == t.id, Participant.status == ParticipantStatus.WAITLISTED
    )
    if t.state != TournamentState.PENDING:
        # Check-ins are processed: only someone who checked in can take the place.
        query = query.where(Participant.checked_in_at.is_null(False))
    first = query.order_by(Participant.waitlist_position).first()
    if first is None:
        return None
    set_status(first, ParticipantStatus.REGISTERED)
    if first.user_id is not None:
        mail_participant(first, User.get_by_id(first.user_id), t, template="waitlist_promoted", now=now)
    return first

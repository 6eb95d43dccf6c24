"""The tournament's own lifecycle around registration: editing, cancelling,
processing check-ins, entrants the organizer adds, seeding, removing a
participant, and finalizing (``reference/domain.md`` §7.1, §7.3).

Each function is one transaction under the tournament's row lock and refuses
with a :class:`~tourno.tournaments.errors.DomainError` before writing anything.
``actor=None`` is the system (a periodic job) and skips the permission check.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import peewee

from tourno.accounts.models import User
from tourno.db import utcnow
from tourno.tournaments.errors import (
    AlreadyRegistered,
    InvalidState,
    NotFound,
    TournamentFull,
    ValidationError,
)
from tourno.tournaments.inputs import EntrantInput, EntrantsInput, SeedInput, TournamentUpdate
from tourno.tournaments.models import (
    ACTIONABLE_MATCH_STATES,
    PRE_START_STATES,
    Match,
    MatchState,
    Participant,
    ParticipantStatus,
    Tournament,
    TournamentState,
)
from tourno.tournaments.services.common import (
    CHUNK,
    key_of,
    locked_tournament,
    require_manager,
    save_tournament,
)
from tourno.tournaments.services.notify import mail_cancelled, mail_participant, mail_tournament_full
from tourno.tournaments.services.organizer import disqualify_participant
from tourno.tournaments.services.progress import complete_tournament
from tourno.tournaments.services.registration import (
    ACTIVE_STATUSES,
    promote_first_waitlisted,
    set_status,
    validate_tournament,
)

TERMINAL_STATES = (TournamentState.COMPLETE, TournamentState.CANCELLED)
# Fields that shape the bracket or the field: only editable before the start.
STRUCTURAL = frozenset(
    {
        "format",
        "capacity",
        "min_participants",
        "waitlist_enabled",
        "starts_at",
        "registration_closes_at",
        "auto_start",
        "check_in_enabled",
        "check_in_minutes",
        "settings",
    }
)
EDITABLE = frozenset(TournamentUpdate.model_fields)


def update_tournament(
    tournament: Tournament | int, actor: User, values: dict[str, Any], *, now: dt.datetime | None = None
) -> Tournament:
    """Change some of a tournament's settings. The format only in ``draft``;
    the field and schedule only before the start; match rules (deadlines,
    report mode, no-show policies) until it is over, applying to matches
    opened from then on. Raising the capacity promotes the waitlist."""
    now = now or utcnow()
    unknown = sorted(set(values) - EDITABLE)
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "is not an editable tournament field"))
    # Each value on its own is checked before the lock; its problems are
    # reported with those of the state rules, so one answer names them all.
    values, refused = TournamentUpdate.values_or_problems(values)
    with locked_tournament(tournament) as t:
        require_manager(actor, t)
        if t.state in TERMINAL_STATES:
            raise InvalidState(f"tournament is {t.state.value}, it can no longer be edited")
        errors = dict(refused)
        if "format" in values and t.state != TournamentState.DRAFT and values["format"] != t.format:
            errors["format"] = "can only change while the tournament is a draft"
        if t.state not in (TournamentState.DRAFT, *PRE_START_STATES):
            for name in sorted(STRUCTURAL & set(values) - {"format"}):
                errors[name] = "can only change before the tournament starts"
        if t.check_ins_processed_at is not None:
            for name in ("check_in_enabled", "check_in_minutes", "starts_at"):
                if name in values:
                    errors[name] = "can no longer change: check-ins are processed"
        current = {name: getattr(t, name) for name in EDITABLE}
        merged = validate_tournament({**current, **values}, errors)
        if merged["capacity"] < t.participants_count:
            raise ValidationError(
                {"capacity": f"must be at least the {t.participants_count} registered participants"}
            )
        changes = {name: merged[name] for name in values if merged[name] != current[name]}
        if not changes:
            return t
        save_tournament(t, now, **changes)
        if "capacity" in changes and t.state in PRE_START_STATES:
            _fill_places(t, now)
        return t


def _fill_places(t: Tournament, now: dt.datetime) -> None:
    """Promote from the waitlist while there are places, then recompute
    ``full_since`` (kept when the tournament stays full)."""
    count = t.participants_count
    while count < t.capacity and promote_first_waitlisted(t, now) is not None:
        count += 1
    full = count >= t.capacity
    newly_full = full and t.full_since is None
    save_tournament(t, now, participants_count=count, full_since=(t.full_since or now) if full else None)
    if newly_full:
        mail_tournament_full(t, now)


def cancel_tournament(
    tournament: Tournament | int,
    actor: User | None,
    *,
    reason: str = "organizer",
    now: dt.datetime | None = None,
) -> Tournament:
    """Any state but complete / cancelled -> cancelled. Every participant
    still in it (registered, waitlisted, and after the start those still
    playing) gets a ``tournament_cancelled`` email; unfinished matches lose
    their deadlines so no job touches them again."""
    now = now or utcnow()
    reason = (reason or "organizer").strip()[:64]
    with locked_tournament(tournament) as t:
        require_manager(actor, t)
        if t.state in TERMINAL_STATES:
            raise InvalidState(f"tournament is already {t.state.value}")
        was_public = t.state != TournamentState.DRAFT
        save_tournament(t, now, state=TournamentState.CANCELLED, cancelled_at=now, cancel_reason=reason)
        Match.update(deadline_at=None, warn_at=None, updated_at=now).where(
            Match.tournament == t.id, Match.state != MatchState.COMPLETE
        ).execute()
        if was_public:
            mail_cancelled(t, reason, now)
        return t


def process_check_ins(
    tournament: Tournament | int, actor: User | None, *, now: dt.datetime | None = None
) -> Tournament:
    """pending -> checked_in, once the check-in window has opened: registered
    participants who did not check in become ``no_show`` (and lose their
    seed), waitlisted participants who checked in take the freed places in
    waitlist order, and the count and ``full_since`` are recomputed."""
    now = now or utcnow()
    with locked_tournament(tournament) as t:
        require_manager(actor, t)
        if not t.check_in_enabled or t.starts_at is None:
            raise InvalidState("this tournament has no check-in")
        if t.state != TournamentState.PENDING or t.check_ins_processed_at is not None:
            raise InvalidState(f"tournament is {t.state.value}, check-ins cannot be processed")
        if now < t.starts_at - dt.timedelta(minutes=t.check_in_minutes):
            raise InvalidState("check-in has not opened yet")
        missing = list(
            Participant.select().where(
                Participant.tournament == t.id,
                Participant.status == ParticipantStatus.REGISTERED,
                Participant.checked_in_at.is_null(True),
            )
        )
        if missing:
            Participant.update(
                status=ParticipantStatus.NO_SHOW, seed=None, version=Participant.version + 1
            ).where(Participant.id.in_([e.id for e in missing])).execute()
            for entry in missing:
                if entry.user_id is not None:
                    entry.version += 1
                    mail_participant(
                        entry, User.get_by_id(entry.user_id), t, template="check_in_missed", now=now
                    )
        save_tournament(
            t,
            now,
            state=TournamentState.CHECKED_IN,
            check_ins_processed_at=now,
            participants_count=t.participants_count - len(missing),
        )
        _fill_places(t, now)
        return t


def add_entrant(
    tournament: Tournament | int,
    actor: User,
    *,
    display_name: str,
    user: User | None = None,
    now: dt.datetime | None = None,
) -> Participant:
    """The organizer adds one entrant before the start: by name (no account,
    no email), or an existing user. Takes a place; refused when full."""
    entrant = EntrantInput.check({"display_name": display_name, "user_id": user.id if user else None})
    return _add_entrants(tournament, actor, [entrant.display_name], [user], now or utcnow())[0]


def add_entrants(
    tournament: Tournament | int,
    actor: User,
    names: list[str],
    *,
    users: list[User | None] | None = None,
    now: dt.datetime | None = None,
) -> list[Participant]:
    """Several entrants at once, all or none (a bulk add that does not fit
    adds nobody). Checked-in already when check-ins are processed."""
    cleaned = EntrantsInput.check({"names": names}).names
    users = users if users is not None else [None] * len(cleaned)
    return _add_entrants(tournament, actor, cleaned, users, now or utcnow())


def _add_entrants(
    tournament: Tournament | int,
    actor: User,
    cleaned: list[str],
    users: list[User | None],
    now: dt.datetime,
) -> list[Participant]:
    """``cleaned`` (checked names) added with their ``users``, under the lock."""
    with locked_tournament(tournament) as t:
        require_manager(actor, t)
        if t.state not in (TournamentState.DRAFT, *PRE_START_STATES):
            raise InvalidState(f"tournament is {t.state.value}, entrants can no longer be added")
        if t.participants_count + len(cleaned) > t.capacity:
            raise TournamentFull(
                f"{t.capacity - t.participants_count} places left, {len(cleaned)} entrants to add"
            )
        entries = []
        for name, user in zip(cleaned, users, strict=True):
            if user is not None:
                existing = Participant.get_or_none(
                    Participant.tournament == t.id, Participant.user == user.id
                )
                if existing is not None and existing.status in ACTIVE_STATUSES:
                    raise AlreadyRegistered(f"{user.email} is already {existing.status.value}")
                if existing is not None:
                    existing.delete_instance()  # re-added by the organizer: a fresh entry
            entries.append(
                Participant.create(
                    tournament=t.id,
                    user=user.id if user is not None else None,
                    display_name=name,
                    status=ParticipantStatus.REGISTERED,
                    checked_in_at=now if t.check_ins_processed_at is not None else None,
                    version=1,
                    created_at=now,
                )
            )
        count = t.participants_count + len(entries)
        became_full = count == t.capacity and t.full_since is None
        save_tournament(t, now, participants_count=count, full_since=now if became_full else t.full_since)
        for entry, user in zip(entries, users, strict=True):
            if user is not None:
                mail_participant(entry, user, t, template="registration_confirmed", now=now)
        if became_full:
            mail_tournament_full(t, now)
        return entries


def set_seed(
    tournament: Tournament | int,
    actor: User,
    participant: Participant | int,
    seed: int,
    *,
    now: dt.datetime | None = None,
) -> Participant:
    """Move a registered participant to ``seed`` (1 = top) before the start;
    the others keep their relative order around it, and every registered
    participant ends up with a seed 1..n."""
    now = now or utcnow()
    seed = SeedInput.check({"seed": seed}).seed
    with locked_tournament(tournament) as t:
        require_manager(actor, t)
        if t.state not in (TournamentState.DRAFT, *PRE_START_STATES):
            raise InvalidState(f"tournament is {t.state.value}, seeds are fixed")
        field = list(
            Participant.select()
            .where(Participant.tournament == t.id, Participant.status == ParticipantStatus.REGISTERED)
            .order_by(Participant.seed.asc(nulls="LAST"), Participant.created_at, Participant.id)
        )
        entry = next((e for e in field if e.id == key_of(participant)), None)
        if entry is None:
            raise NotFound(f"no registered participant {key_of(participant)} in this tournament")
        if seed > len(field):
            raise ValidationError({"seed": f"must be a whole number from 1 to {len(field)}"})
        field.remove(entry)
        field.insert(seed - 1, entry)
        # Cleared first: the (tournament, seed) index is unique.
        Participant.update(seed=None).where(Participant.id.in_([e.id for e in field])).execute()
        pairs = [(e.id, number) for number, e in enumerate(field, start=1)]
        for batch in peewee.chunked(pairs, CHUNK):
            Participant.update(seed=peewee.Case(Participant.id, batch)).where(
                Participant.id.in_([pid for pid, _ in batch])
            ).execute()
        save_tournament(t, now)
        entry.seed = seed
        return entry


def remove_participant(
    tournament: Tournament | int,
    actor: User,
    participant: Participant | int,
    *,
    now: dt.datetime | None = None,
) -> Participant:
    """The organizer removes an entrant. Before the start the entry is
    withdrawn (its place goes to the waitlist); once underway the
    participant is disqualified and forfeits every remaining match."""
    now = now or utcnow()
    with locked_tournament(tournament) as t:
        require_manager(actor, t)
        entry = Participant.get_or_none(Participant.id == key_of(participant), Participant.tournament == t.id)
        if entry is None:
            raise NotFound(f"no participant {key_of(participant)} in this tournament")
        if t.state in (TournamentState.DRAFT, *PRE_START_STATES):
            if entry.status not in ACTIVE_STATUSES:
                raise InvalidState(f"participant is {entry.status.value}")
            was_registered = entry.status == ParticipantStatus.REGISTERED
            set_status(entry, ParticipantStatus.WITHDRAWN)
            if entry.seed is not None:
                entry.seed = None
                entry.save()
            if was_registered:
                if promote_first_waitlisted(t, now) is None:
                    save_tournament(t, now, participants_count=t.participants_count - 1, full_since=None)
                else:
                    save_tournament(t, now)
            return entry
    # Underway: a disqualification, with its own transaction and rules.
    return disqualify_participant(tournament, actor, participant, now=now)


def finalize(tournament: Tournament | int, actor: User, *, now: dt.datetime | None = None) -> Tournament:
    """awaiting_review -> complete, once no match is left to decide: final
    ranks are computed and every participant is told."""
    now = now or utcnow()
    with locked_tournament(tournament) as t:
        require_manager(actor, t)
        if t.state != TournamentState.AWAITING_REVIEW:
            raise InvalidState(f"tournament is {t.state.value}, only one awaiting review can be finalized")
        undecided = (
            Match.select(Match.identifier)
            .where(
                Match.tournament == t.id,
                Match.state.in_((*ACTIONABLE_MATCH_STATES, MatchState.DISPUTED, MatchState.PENDING)),
            )
            .limit(5)
        )
        names = [str(m.identifier) for m in undecided]
        if names:
            raise InvalidState(f"matches still to decide: {', '.join(names)}")
        complete_tournament(t, now, review=False)
        return t

"""What every service shares: the write transaction with the tournament row
(or a match's tournament) locked, the one permission check, the version bumps
of a changed row, and the match event log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import peewee

from tourno import db as tdb
from tourno.accounts.models import Role, User
from tourno.db import write_transaction
from tourno.mail.models import EmailOutbox
from tourno.mail.store import enqueue_emails
from tourno.tournaments.errors import InvalidState, NotFound, PermissionDenied
from tourno.tournaments.models import (
    Match,
    MatchEvent,
    MatchEventType,
    MatchReport,
    Participant,
    ReportStatus,
    Round,
    Tournament,
    TournamentState,
)

# Rows per INSERT: well under SQLite's 32,766 and PostgreSQL's 65,535 parameters.
CHUNK = 500
PLAYING = (TournamentState.UNDERWAY,)
# The organizer may still decide matches while the tournament waits for review.
MANAGING = (TournamentState.UNDERWAY, TournamentState.AWAITING_REVIEW)


def key_of(obj: Any) -> int:
    """The id of a model instance, or the id itself."""
    return obj if isinstance(obj, int) else obj.id


@dataclass
class Pending:
    """What one locked write holds for its end: the append-only rows (match
    events, outbox mail) and the UPDATEs nothing later in it reads back
    (:func:`defer`). At the end they are written in one statement on
    PostgreSQL (a data-modifying WITH), one per kind on SQLite: a decision
    that opens the next match writes its report statuses, eliminations,
    round changes, four events and four emails in one statement, not eight."""

    writes: list[peewee.Query] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    mails: list[dict[str, Any]] = field(default_factory=list)

    def mark(self) -> tuple[int, int, int]:
        return len(self.writes), len(self.events), len(self.mails)

    def undo_to(self, mark: tuple[int, int, int]) -> None:
        del self.writes[mark[0] :], self.events[mark[1] :], self.mails[mark[2] :]

    def flush_writes(self) -> None:
        """Run the deferred UPDATEs now (a read that depends on them follows)."""
        writes, self.writes = self.writes, []
        for query in writes:
            query.execute()

    def flush(self) -> None:
        queries: list[peewee.Query] = list(self.writes)
        queries += [MatchEvent.insert_many(b) for b in peewee.chunked(self.events, CHUNK)]
        queries += [
            EmailOutbox.insert_many(b).on_conflict_ignore() for b in peewee.chunked(self.mails, CHUNK)
        ]
        self.writes, self.events, self.mails = [], [], []
        run_together(queries)


def run_together(queries: Sequence[peewee.Query]) -> None:
    """Run independent writes: on PostgreSQL in one statement, else one by one.

    tourno_write_held: each write but the last becomes a data-modifying WITH
    of the last. That needs them independent (none reads a row another
    writes): all run to completion on one snapshot, which sees the rows
    written by the statements before; foreign keys are checked at the end
    of the statement, so a row may reference one inserted beside it."""
    if not tdb.is_postgres() or len(queries) < 2:
        for query in queries:
            query.execute()
        return
    parts, params = [], []
    for query in queries:
        ctx = tdb.database.get_sql_context()
        sql, args = ctx.sql(query).query()
        parts.append(sql)
        params.extend(args)
    ctes = ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(parts[:-1]))
    tdb.database.execute_sql(f"WITH {ctes} {parts[-1]}", params)


_pending: ContextVar[Pending | None] = ContextVar("tourno_pending_writes", default=None)


def pending() -> Pending | None:
    """The open locked write's held rows, or None outside one (write at once)."""
    return _pending.get()


def defer(query: peewee.Query) -> None:
    """An UPDATE held for the end of the locked write (run now outside one):
    only for a write nothing later in the same write reads back."""
    held = pending()
    if held is not None:
        held.writes.append(query)
    else:
        query.execute()


def flush_deferred() -> None:
    """Run the held UPDATEs now: what follows reads what they write."""
    held = pending()
    if held is not None:
        held.flush_writes()


def add_events(rows: list[dict[str, Any]]) -> None:
    """Match event rows: held for the end of the locked write, or written now."""
    held = pending()
    if held is not None:
        held.events.extend(rows)
        return
    for batch in peewee.chunked(rows, CHUNK):
        MatchEvent.insert_many(batch).execute()


def add_mails(rows: list[dict[str, Any]]) -> None:
    """Outbox rows (``outbox_row``): held for the end of the locked write, or written now."""
    held = pending()
    if held is not None:
        held.mails.extend(rows)
        return
    enqueue_emails(rows, CHUNK)


@contextmanager
def locked_tournament(tournament: Tournament | int, *, of_match: int | None = None) -> Iterator[Tournament]:
    """A write transaction holding the tournament's row lock, yielding the
    tournament as it is now (not as the caller last read it); with
    ``of_match``, the tournament of that match (``tournament`` is then ignored).

    Every change to a tournament's registrations runs under this lock, so
    ``participants_count`` and ``full_since`` can never race (no overbooking).
    On SQLite the IMMEDIATE transaction already excludes every other writer.

    Every change to a tournament's rows (its participants, matches, reports)
    runs under this lock too, which makes the tournament row a reliable data
    version: on PostgreSQL the lock is taken by a no-op UPDATE, which writes a
    new row version (a new ``xmin``) in the same statement that reads the row,
    so the API's response cache (``tourno.api.cache``) misses once this commits.
    ``version`` stays the services' own count of changes to the tournament itself.

    The match events and mail the body writes are held and written at its end
    (:class:`Pending`); a nested call shares the outer one's.
    """
    target: Any = (
        Match.select(Match.tournament).where(Match.id == of_match)
        if of_match is not None
        else key_of(tournament)
    )
    with write_transaction():
        if tdb.is_postgres():
            # tourno_lock_tournament: the UPDATE waits for the row lock and then
            # returns the row's newest version (READ COMMITTED re-reads it).
            query: Any = (
                Tournament.update(version=Tournament.version)
                .where(Tournament.id == target)
                .returning(Tournament)
            )
            found = next(iter(query.execute()), None)
        else:
            found = Tournament.select().where(Tournament.id == target).first()
        if found is None:
            raise NotFound(f"no match {of_match}" if of_match is not None else f"no tournament {target}")
        outer = pending()
        if outer is not None:
            mark = outer.mark()
            try:
                yield found
            except BaseException:
                outer.undo_to(mark)
                raise
            return
        held = Pending()
        token = _pending.set(held)
        try:
            yield found
            held.flush()
        finally:
            _pending.reset(token)


@contextmanager
def locked_match(match: Match | int) -> Iterator[tuple[Tournament, Match]]:
    """:func:`locked_tournament` for the match's tournament (one writer per
    tournament), yielding it and the match as it is now, read after the lock
    in one query with its round, both players and their users (see
    :func:`entries_of`) and its live reports; NotFound for no match."""
    mid = key_of(match)
    with locked_tournament(mid, of_match=mid) as t:
        found = read_match(mid, with_round=True, with_reports=True)
        if found is None:
            raise NotFound(f"no match {mid}")
        yield t, found


def read_match(mid: int, *, with_round: bool = False, with_reports: bool = False) -> Match | None:
    """The match with its players and their users (and its round, and its
    live reports: see ``progress.active_reports``), in one query."""
    return read_matches([mid], with_round=with_round, with_reports=with_reports).get(mid)


# The players' and users' aliases of read_matches, and their columns, made
# once: peewee builds a class per aliased field on each use.
_ALIASES = (Participant.alias("p1"), User.alias("u1"), Participant.alias("p2"), User.alias("u2"))
_ALIAS_FIELDS = [f for alias in _ALIASES for f in alias.get_field_aliases()]


def read_matches(ids: list[int], *, with_round: bool = False, with_reports: bool = False) -> dict[int, Match]:
    """:func:`read_match` for several matches, in one query: id -> match."""
    if not ids:
        return {}
    p1, u1, p2, u2 = _ALIASES
    query = (
        Match.select(
            Match,
            *_ALIAS_FIELDS,
            *([Round] if with_round else []),
            *([MatchReport] if with_reports else []),
        )
        .join(p1, peewee.JOIN.LEFT_OUTER, on=(Match.player1 == p1.id), attr="_entry1")
        .join(u1, peewee.JOIN.LEFT_OUTER, on=(p1.user == u1.id), attr="user")
        .switch(Match)
        .join(p2, peewee.JOIN.LEFT_OUTER, on=(Match.player2 == p2.id), attr="_entry2")
        .join(u2, peewee.JOIN.LEFT_OUTER, on=(p2.user == u2.id), attr="user")
        .where(Match.id.in_(ids))
    )
    if with_round:
        query = query.switch(Match).join(Round, on=(Match.round == Round.id))
    if with_reports:
        is_live = (
            (MatchReport.match == Match.id)
            & MatchReport.superseded_at.is_null(True)
            & (MatchReport.status == ReportStatus.ACTIVE)
        )
        query = query.switch(Match).join(MatchReport, peewee.JOIN.LEFT_OUTER, on=is_live, attr="_report")
    found: dict[int, Match] = {}
    # One row per match, or with the reports one per live report (at most one per side).
    for row in query:
        report = row.__dict__.pop("_report", None)
        m = found.setdefault(row.id, row)
        if with_reports:
            live = known_reports(m)
            if live is None:
                live = {}
                remember_reports(m, live)
            if report is not None:
                live[report.participant_id] = report
        if m is row:
            entries = {
                e.id: e for e in (row.__dict__.pop("_entry1", None), row.__dict__.pop("_entry2", None)) if e
            }
            remember_entries(m, entries)
    return found


def remember_entries(m: Match, entries: dict[int, Participant]) -> None:
    """Keep the participants (with their users) read with ``m`` on it."""
    m.__dict__["_entries"] = entries


def entries_of(m: Match) -> dict[int, Participant] | None:
    """The participants read with ``m`` (id -> participant with its user),
    when they are those of its present slots; None when not known."""
    known: dict[int, Participant] | None = m.__dict__.get("_entries")
    if known is None:
        return None
    if not all(p in known for p in (m.player1_id, m.player2_id) if p):
        return None
    return known


def read_entries(m: Match) -> dict[int, Participant]:
    """Every participant read with ``m``, whether or not still in its slots."""
    known: dict[int, Participant] = m.__dict__.get("_entries", {})
    return known


def known_reports(m: Match) -> dict[int, MatchReport] | None:
    """``m``'s live reports (participant id -> report) as read with it and
    kept since, or None when they were not read."""
    live: dict[int, MatchReport] | None = m.__dict__.get("_reports")
    return live


def remember_reports(m: Match, live: dict[int, MatchReport]) -> None:
    """``m``'s live reports are now ``live`` (the services that change one keep this)."""
    m.__dict__["_reports"] = live


def forget_entries(m: Match) -> None:
    """The participants read with ``m`` changed (a status): read them again when needed."""
    m.__dict__.pop("_entries", None)


def can_manage(actor: User, tournament: Tournament) -> bool:
    """The actor is the tournament's organizer or an admin."""
    return actor.role == Role.ADMIN or actor.id == tournament.organizer_id


def require_manager(
    actor: User | None, tournament: Tournament, *, states: Collection[TournamentState] | None = None
) -> None:
    """The one permission check: ``actor`` is the organizer or an admin and,
    when ``states`` are given, the tournament is in one of them.
    ``actor=None`` is the system (a periodic job): no check at all."""
    if actor is None:
        return
    if not can_manage(actor, tournament):
        raise PermissionDenied("only the organizer or an admin may do this")
    if states is not None and tournament.state not in states:
        raise InvalidState(f"tournament is {tournament.state.value}")


def touch(m: Match, now: dt.datetime) -> None:
    """A new version of the match (the caller saves it with :func:`save_match`)."""
    m.version += 1
    m.updated_at = now


def save_match(m: Match) -> None:
    """Write the columns of ``m`` that changed since it was read (all of a
    match's writes run under the tournament's lock, so the rest are as read)."""
    changed = m.dirty_fields
    if changed:
        m.save(only=changed)


def save_tournament(t: Tournament, now: dt.datetime, *, held: bool = False, **changes: Any) -> None:
    """Write ``changes`` to the tournament as a new version, and onto ``t``
    (``held``: at the end of the locked write, see :func:`defer`)."""
    changes.update(version=t.version + 1, updated_at=now)
    for name, value in changes.items():
        setattr(t, name, value)
    query = Tournament.update(**changes).where(Tournament.id == t.id)
    if held:
        defer(query)
    else:
        query.execute()


def record_event(
    t: Tournament,
    m: Match,
    actor: User | None,
    kind: MatchEventType,
    payload: dict[str, Any],
    now: dt.datetime,
) -> None:
    """One row of the match's audit log (held for the end of the locked write)."""
    add_events(
        [
            {
                "match": m.id,
                "tournament": t.id,
                "actor_user": actor.id if actor is not None else None,
                "type": kind,
                "payload": payload,
                "created_at": now,
            }
        ]
    )


def epoch(moment: dt.datetime) -> int:
    """Whole seconds since 1970, for dedupe keys that name a moment."""
    return int(moment.timestamp())

"""The five periodic jobs (``reference/domain.md`` §8) and StartTournamentJob.

Thin by design: each scans with the exact predicate of its partial index in
``tourno.tournaments.models`` and calls a domain service per item through the
shared runner (:mod:`tourno.jobs.runner`). The scans and claims are written
out here, once, because they are the statements the indexes exist for.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import peewee

from tourno.config import Settings
from tourno.db import database, sql, tuples, utcnow
from tourno.jobs.runner import RunCounts, ScanRunner, recorded_run, skip_locked
from tourno.queue import Job
from tourno.tournaments import services
from tourno.tournaments.errors import InvalidState, NotFound, ValidationError
from tourno.tournaments.models import (
    ACTIONABLE_MATCH_STATES,
    PRE_START_STATES,
    Match,
    Tournament,
    TournamentState,
)

log = logging.getLogger(__name__)

_PRE_START = ", ".join(f"'{s.value}'" for s in PRE_START_STATES)
_ACTIONABLE = ", ".join(f"'{s.value}'" for s in ACTIONABLE_MATCH_STATES)


def _after(columns: tuple[peewee.Node, ...], after: tuple | None) -> list[peewee.Node]:
    """``(sort key, id) > after``: the condition for the next page of a scan
    ordered by ``columns`` (none for the first page)."""
    if after is None:
        return []
    # Times go back to the database in its own format (text on SQLite).
    values = [_ts(Match.deadline_at, v) if isinstance(v, dt.datetime) else v for v in after]
    return [peewee.Tuple(*columns) > peewee.Tuple(*values)]


def _ts(field: peewee.Field, value: dt.datetime) -> Any:
    """A time as the database compares it (text on SQLite)."""
    return field.db_value(value)


def _claimed(statement: str, params: tuple) -> bool:
    return database.execute_sql(sql(statement), params).fetchone() is not None


class Periodic(ScanRunner):
    """What the scans share (mixed in before Job): one attempt (the next tick
    is the retry), a timeout above the runner's budget, and one pending run at
    a time, so a backlog cannot pile up while the workers are down."""

    tries: ClassVar[int | None] = 1
    timeout: ClassVar[float | None] = 300
    unique_for: ClassVar[float | None] = 3600


# -- AutoStartTournamentsJob ---------------------------------------------------------------


@dataclass
class StartTournamentJob(Job):
    """Start one tournament (fanned out by AutoStartTournamentsJob, so N workers
    start N tournaments in parallel). Unique per tournament; a tournament that
    has started already is done, not an error."""

    tries = 3
    backoff = [10, 60]
    timeout = 120

    tournament_id: int

    def unique_key(self) -> str:
        return str(self.tournament_id)

    def handle(self) -> None:
        try:
            services.start_tournament(self.tournament_id, None)
        except (InvalidState, NotFound) as exc:
            log.info("StartTournamentJob: tournament %s not started: %s", self.tournament_id, exc)
        except ValidationError as exc:
            # Too few participants: the organizer and CheckFull deal with it.
            log.warning("StartTournamentJob: tournament %s cannot start: %s", self.tournament_id, exc)


@dataclass
class AutoStartTournamentsJob(Periodic, Job):
    """Auto-start tournaments that are due: full with no start time ("start
    when full"), or whose start time has come. Check-ins are processed first;
    one with fewer than ``min_participants`` left is left to its organizer.
    Each due tournament gets one StartTournamentJob."""

    job_name = "AutoStartTournamentsJob"
    cron = "*/5 * * * *"
    batch_size = 50

    def scan(self, after: tuple | None, limit: int, now: dt.datetime) -> list[tuple]:
        # tournaments_autostart_idx: auto_start AND state IN ('pending','checked_in').
        order = peewee.fn.COALESCE(Tournament.starts_at, Tournament.full_since)
        return tuples(
            Tournament.select(order, Tournament.id)
            .where(
                Tournament.auto_start & Tournament.state.in_(PRE_START_STATES),
                (Tournament.starts_at <= now)
                | (Tournament.starts_at.is_null(True) & Tournament.full_since.is_null(False)),
                *_after((order, Tournament.id), after),
            )
            .order_by(order, Tournament.id)
            .limit(limit)
        )

    def claim(self, item_id: Any, now: dt.datetime) -> bool:
        return _claimed(
            f"SELECT id FROM tournaments WHERE id = %s AND auto_start AND state IN ({_PRE_START}) "
            "AND (starts_at <= %s OR (starts_at IS NULL AND full_since IS NOT NULL)) " + skip_locked(),
            (item_id, _ts(Tournament.starts_at, now)),
        )

    def apply(self, item_id: Any, now: dt.datetime) -> bool:
        t = Tournament.get_by_id(item_id)
        changed = False
        if t.check_in_enabled and t.check_ins_processed_at is None and t.state == TournamentState.PENDING:
            t = services.process_check_ins(t, None, now=now)
            changed = True
        if t.participants_count < max(2, t.min_participants):
            log.info(
                "AutoStartTournamentsJob: tournament %s has %d of %d participants; not starting it",
                t.id,
                t.participants_count,
                t.min_participants,
            )
            return changed
        # In this transaction: the job exists exactly when the claim committed.
        if StartTournamentJob(tournament_id=t.id).dispatch() is not None:
            log.info("AutoStartTournamentsJob: starting tournament %s", t.id)
            changed = True
        return changed


# -- CheckFullTournamentsJob ---------------------------------------------------------------


def _anchor_before(moment: dt.datetime) -> peewee.Node:
    """max(full_since, starts_at or full_since) <= moment, without GREATEST (not in SQLite)."""
    return (Tournament.full_since <= moment) & (
        Tournament.starts_at.is_null(True) | (Tournament.starts_at <= moment)
    )


@dataclass
class CheckFullTournamentsJob(Periodic, Job):
    """Full tournaments that have not started: remind the organizer once after
    TOURNO_FULL_REMINDER_MINUTES, cancel after TOURNO_FULL_CANCEL_HOURS,
    counted from when it filled or from its start time, whichever is later."""

    job_name = "CheckFullTournamentsJob"
    cron = "*/5 * * * *"

    def run(
        self,
        *,
        now: dt.datetime | None = None,
        budget_seconds: float | None = None,
        settings: Settings | None = None,
    ) -> RunCounts:
        # TOURNO_FULL_REMINDER_MINUTES and TOURNO_FULL_CANCEL_HOURS, read once per run.
        self._limits = settings or Settings.from_env()
        return super().run(now=now, budget_seconds=budget_seconds)

    @property
    def _remind_after(self) -> dt.timedelta:
        return dt.timedelta(minutes=self._settings().full_reminder_minutes)

    @property
    def _cancel_after(self) -> dt.timedelta:
        return dt.timedelta(hours=self._settings().full_cancel_hours)

    def _settings(self) -> Settings:
        # Set by run(); a scan called on its own (bench/scale.py) reads the environment.
        if getattr(self, "_limits", None) is None:
            self._limits = Settings.from_env()
        return self._limits

    def scan(self, after: tuple | None, limit: int, now: dt.datetime) -> list[tuple]:
        # tournaments_full_pending_idx: full_since IS NOT NULL AND state IN ('pending','checked_in').
        return tuples(
            Tournament.select(Tournament.full_since, Tournament.id)
            .where(
                Tournament.full_since.is_null(False) & Tournament.state.in_(PRE_START_STATES),
                Tournament.started_at.is_null(True),
                # Only those with something due: the anchor (the later of
                # full_since and starts_at) is past the reminder time with no
                # reminder sent yet, or past the cancel time.
                (_anchor_before(now - self._remind_after) & Tournament.full_reminder_sent_at.is_null(True))
                | _anchor_before(now - self._cancel_after),
                *_after((Tournament.full_since, Tournament.id), after),
            )
            .order_by(Tournament.full_since, Tournament.id)
            .limit(limit)
        )

    def claim(self, item_id: Any, now: dt.datetime) -> bool:
        return _claimed(
            "SELECT id FROM tournaments WHERE id = %s AND full_since IS NOT NULL "
            f"AND state IN ({_PRE_START}) AND started_at IS NULL " + skip_locked(),
            (item_id,),
        )

    def apply(self, item_id: Any, now: dt.datetime) -> bool:
        t = Tournament.get_by_id(item_id)
        anchor = max(t.full_since, t.starts_at or t.full_since)
        cancel_at = anchor + dt.timedelta(hours=self._limits.full_cancel_hours)
        if now >= cancel_at:
            services.cancel_tournament(t, None, reason="not_started_after_full", now=now)
            log.info("CheckFullTournamentsJob: cancelled tournament %s (full since %s)", t.id, t.full_since)
            return True
        remind_at = anchor + dt.timedelta(minutes=self._limits.full_reminder_minutes)
        if now >= remind_at and t.full_reminder_sent_at is None:
            return services.remind_full_tournament(t, now=now, cancel_at=cancel_at)
        return False


# -- CheckMatchDeadlinesJob ----------------------------------------------------------------


def _due_matches(now: dt.datetime) -> peewee.Expression:
    # matches_deadline_due_idx: state IN ('open','underway','awaiting_confirmation').
    return (
        Match.state.in_(ACTIONABLE_MATCH_STATES)
        & (Match.deadline_at <= now)
        & Match.admin_locked_at.is_null(True)
    )


@dataclass
class ResolveDeadlinesJob(Job):
    """Resolve the due matches of one tournament (fanned out by
    CheckMatchDeadlinesJob when many are due at once, so the workers share
    them; resolutions lock the tournament, so tournaments go in parallel)."""

    tries = 3
    backoff = [10, 60]
    timeout = 600

    tournament_id: int
    # The clock to resolve at (ISO 8601), as CheckMatchDeadlinesJob saw it; None: now.
    at: str | None = None

    def unique_key(self) -> str:
        return str(self.tournament_id)

    def handle(self) -> None:
        resolved = 0
        seen: set[int] = set()
        while True:
            now = dt.datetime.fromisoformat(self.at) if self.at else utcnow()
            due = [
                m.id
                for m in Match.select(Match.id)
                .where(
                    Match.tournament == self.tournament_id, _due_matches(now), Match.id.not_in(seen or [0])
                )
                .order_by(Match.deadline_at, Match.id)
                .limit(200)
            ]
            if not due:
                break
            for mid in due:
                seen.add(mid)
                resolved += services.resolve_expired_match(mid, now=now) is not None
        log.info("ResolveDeadlinesJob: tournament %s: %d match(es) resolved", self.tournament_id, resolved)


@dataclass
class CheckMatchDeadlinesJob(Periodic, Job):
    """Resolve every actionable match past its deadline (the §4.2 decision
    table lives in services.resolve_expired_match). When more than
    ``fan_out_at`` are due at once (a round of many tournaments expiring
    together), it dispatches one ResolveDeadlinesJob per tournament instead,
    so every worker takes a share rather than this one run doing them all."""

    job_name = "CheckMatchDeadlinesJob"
    cron = "*/15 * * * *"
    batch_size = 500
    fan_out_at = 200

    def run(self, *, now: dt.datetime | None = None, budget_seconds: float | None = None) -> RunCounts:
        at = now or utcnow()
        # Fetched and ordered like the scan, so the planner walks
        # matches_deadline_due_idx; a bare count (peewee drops the ORDER BY)
        # made PostgreSQL read all 565k matches of bench/scale.py.
        due = len(
            Match.select(Match.id)
            .where(_due_matches(at))
            .order_by(Match.deadline_at)
            .limit(self.fan_out_at + 1)
            .tuples()
        )
        if due <= self.fan_out_at:
            return super().run(now=now, budget_seconds=budget_seconds)
        with recorded_run(self.job_name) as counts:
            tournaments = (
                Match.select(Match.tournament).where(_due_matches(at)).distinct().order_by(Match.tournament)
            )
            for row in tournaments:
                counts.seen += 1
                job = ResolveDeadlinesJob(
                    tournament_id=row.tournament_id, at=now.isoformat() if now else None
                )
                counts.changed += job.dispatch() is not None
        log.info(
            "CheckMatchDeadlinesJob: over %d matches due: %d tournament job(s) dispatched",
            self.fan_out_at,
            counts.changed,
        )
        return counts

    def scan(self, after: tuple | None, limit: int, now: dt.datetime) -> list[tuple]:
        # matches_deadline_due_idx: state IN ('open','underway','awaiting_confirmation').
        return tuples(
            Match.select(Match.deadline_at, Match.id)
            .where(
                Match.state.in_(ACTIONABLE_MATCH_STATES),
                Match.deadline_at <= now,
                Match.admin_locked_at.is_null(True),
                *_after((Match.deadline_at, Match.id), after),
            )
            .order_by(Match.deadline_at, Match.id)
            .limit(limit)
        )

    def claim(self, item_id: Any, now: dt.datetime) -> bool:
        # The tournament row too: resolving may propagate through the bracket,
        # and every writer locks the tournament first. SKIP LOCKED never waits,
        # so taking both here cannot deadlock with an API call.
        lock = "FOR UPDATE OF m, t SKIP LOCKED" if skip_locked() else ""
        return _claimed(
            "SELECT m.id FROM matches m JOIN tournaments t ON t.id = m.tournament_id "
            f"WHERE m.id = %s AND m.state IN ({_ACTIONABLE}) AND m.deadline_at <= %s "
            "AND m.admin_locked_at IS NULL " + lock,
            (item_id, _ts(Match.deadline_at, now)),
        )

    def apply(self, item_id: Any, now: dt.datetime) -> bool:
        outcome = services.resolve_expired_match(item_id, now=now)
        if outcome is not None:
            log.info("CheckMatchDeadlinesJob: match %s: %s", item_id, outcome)
        return outcome is not None


# -- SendMatchDeadlineWarningsJob ----------------------------------------------------------


@dataclass
class SendMatchDeadlineWarningsJob(Periodic, Job):
    """Warn the players of matches whose warning time has come. The window is
    open-ended (warn_at <= now < deadline_at, not warned yet), so no match is
    missed whatever the cadence; past-deadline matches are CheckMatchDeadlines'."""

    job_name = "SendMatchDeadlineWarningsJob"
    cron = "*/15 * * * *"
    batch_size = 1000

    def scan(self, after: tuple | None, limit: int, now: dt.datetime) -> list[tuple]:
        # matches_warning_due_idx: warn_at IS NOT NULL AND deadline_warning_sent_at IS NULL
        # AND state IN ('open','underway','awaiting_confirmation').
        return tuples(
            Match.select(Match.warn_at, Match.id)
            .where(
                Match.warn_at.is_null(False)
                & Match.deadline_warning_sent_at.is_null(True)
                & Match.state.in_(ACTIONABLE_MATCH_STATES),
                Match.warn_at <= now,
                # No "deadline_at > now" here: with it the planner reads the
                # deadline index over every open match (bench/scale.py); the
                # claim below checks it per item.
                *_after((Match.warn_at, Match.id), after),
            )
            .order_by(Match.warn_at, Match.id)
            .limit(limit)
        )

    def claim(self, item_id: Any, now: dt.datetime) -> bool:
        # The tournament row too, as in CheckMatchDeadlinesJob: the warning is
        # written under the tournament's lock, which every writer takes first.
        at = _ts(Match.warn_at, now)
        lock = "FOR UPDATE OF m, t SKIP LOCKED" if skip_locked() else ""
        return _claimed(
            "SELECT m.id FROM matches m JOIN tournaments t ON t.id = m.tournament_id "
            "WHERE m.id = %s AND m.warn_at IS NOT NULL "
            f"AND m.deadline_warning_sent_at IS NULL AND m.state IN ({_ACTIONABLE}) "
            "AND m.warn_at <= %s AND m.deadline_at > %s " + lock,
            (item_id, at, at),
        )

    def apply(self, item_id: Any, now: dt.datetime) -> bool:
        emails = services.warn_match_deadline(item_id, now=now)
        log.debug("SendMatchDeadlineWarningsJob: match %s: %d warning(s)", item_id, emails)
        return True


# -- SendBulkEmailsJob -----------------------------------------------------------------------


@dataclass
class SendBulkEmailsJob(Job):
    """Drain the email outbox (tourno.mail.drain.drain) for up to
    ``budget_seconds``. Not exclusive and not unique: parallel drains are safe
    (rows are claimed with SKIP LOCKED and paced by one global token bucket),
    and more drains are how mail scales out across workers."""

    cron = "* * * * *"
    tries = 1
    timeout = 120

    budget_seconds: float = 50.0

    def handle(self) -> None:
        self.run()

    def run(
        self, *, now: dt.datetime | None = None, settings: Settings | None = None, **drain_options: Any
    ) -> RunCounts:
        # Imported here: the mail package sits beside the jobs, not under them.
        from tourno.mail.drain import drain

        settings = settings or Settings.from_env()
        with recorded_run(self.job_name) as counts:
            result = drain(settings=settings, now=now, budget_seconds=self.budget_seconds, **drain_options)
            counts.seen = result.seen
            counts.changed = result.sent
            counts.failed = result.failed + result.dead
        # drain() logs its own counts; the job_runs row keeps them.
        return counts


PERIODIC_JOBS: tuple[type[Job], ...] = (
    AutoStartTournamentsJob,
    CheckFullTournamentsJob,
    CheckMatchDeadlinesJob,
    SendMatchDeadlineWarningsJob,
    SendBulkEmailsJob,
)

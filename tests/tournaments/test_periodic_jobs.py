"""The five periodic jobs and StartTournamentJob on real tournaments, built
with the domain services and run by calling ``run()`` with a pinned clock, or
by real workers (in process, or ``tourno work`` processes) on the real clock.

Each job is checked for what it changes, that a second run changes nothing,
what its ``job_runs`` row records, and that one bad row is counted and
skipped while the rest are processed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import subprocess

import pytest

from tests.conftest import DOMAIN_NOW, make_players, run_worker, tourno_cmd
from tourno import db as tdb
from tourno.config import Settings
from tourno.jobs.periodic import (
    AutoStartTournamentsJob,
    CheckFullTournamentsJob,
    CheckMatchDeadlinesJob,
    SendBulkEmailsJob,
    SendMatchDeadlineWarningsJob,
    StartTournamentJob,
)
from tourno.mail.models import EmailOutbox, EmailStatus
from tourno.queue import JobTimeout, backends
from tourno.queue.models import FailedJobRecord, JobRecord
from tourno.scheduler.models import JobRun
from tourno.tournaments import services
from tourno.tournaments.models import (
    Match,
    MatchState,
    Participant,
    ParticipantStatus,
    ResultType,
    Round,
    Tournament,
    TournamentState,
)

NOW = DOMAIN_NOW
MIN = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
PG = pytest.mark.parametrize("qdb", ["postgres"], indirect=True)


# -- building tournaments through the services -------------------------------------------


def make_tournament(organizer, players, *, now=NOW, capacity=None, prefix="Cup", **options) -> Tournament:
    t = services.create_tournament(
        organizer,
        name=f"{prefix} {organizer.id}",
        game="Chess",
        format="single_elimination",
        capacity=capacity or len(players),
        now=now,
        **options,
    )
    services.publish(t, organizer, now=now)
    for player in players:
        services.register(t, player, now=now)
    return Tournament.get_by_id(t.id)


def started(organizer, players, *, now=NOW, **options) -> tuple[Tournament, list[Match]]:
    """A started 4-player single elimination: two open semi-finals."""
    t = make_tournament(organizer, players, now=now, **options)
    services.start_tournament(t, organizer, now=now)
    opened = list(
        Match.select().where(Match.tournament == t.id, Match.state == MatchState.OPEN).order_by(Match.id)
    )
    return Tournament.get_by_id(t.id), opened


def user_of(participant_id: int):
    return Participant.get_by_id(participant_id).user


def mails(template: str) -> list[EmailOutbox]:
    return list(EmailOutbox.select().where(EmailOutbox.template == template).order_by(EmailOutbox.id))


def last_run(job: str) -> JobRun:
    return JobRun.select().where(JobRun.job == job).order_by(JobRun.id.desc()).first()


def start_jobs() -> list[int]:
    return sorted(
        r.payload["args"]["tournament_id"]
        for r in JobRecord.select()
        if r.payload["job"] == "StartTournamentJob"
    )


def boom_on_update(match_id: int) -> None:
    """Make every UPDATE of one match fail in the database (PostgreSQL), as a
    corrupt row or a broken constraint would: its service raises."""
    tdb.database.execute_sql(
        "CREATE FUNCTION test_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.id = {int(match_id)} THEN RAISE EXCEPTION 'test: match %% refuses', NEW.id; END IF; "
        "RETURN NEW; END $$"
    )
    tdb.database.execute_sql(
        "CREATE TRIGGER test_boom BEFORE UPDATE ON matches FOR EACH ROW EXECUTE FUNCTION test_boom()"
    )


def no_more_boom() -> None:
    tdb.database.execute_sql("DROP TRIGGER test_boom ON matches")


# -- AutoStartTournamentsJob / StartTournamentJob -------------------------------------------


def test_autostart_starts_a_full_tournament_exactly_once(qdb, organizer):
    t = make_tournament(organizer, make_players(4), auto_start=True)
    manual = make_tournament(organizer, make_players(4, "m"), prefix="Manual")  # auto_start off
    counts = AutoStartTournamentsJob().run(now=NOW + MIN)
    assert (counts.seen, counts.changed, counts.failed) == (1, 1, 0)
    # A second tick while the start is pending adds nothing: the job is unique per tournament.
    counts = AutoStartTournamentsJob().run(now=NOW + 2 * MIN)
    assert (counts.seen, counts.changed) == (1, 0)
    assert start_jobs() == [t.id]

    # memory=0: this worker runs inside pytest, whose memory is the whole suite's.
    code, worker = run_worker(memory=0)
    assert code == 0 and worker.jobs_processed == 1
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.UNDERWAY
    assert Match.select().where(Match.tournament == t.id).count() == 3
    assert Tournament.get_by_id(manual.id).state == TournamentState.PENDING
    # Started tournaments leave the scan.
    assert AutoStartTournamentsJob().run(now=NOW + 5 * MIN).seen == 0

    # A StartTournamentJob that comes late finds it started: done, not failed.
    StartTournamentJob(tournament_id=t.id).dispatch()
    code, _ = run_worker(memory=0)
    assert code == 0
    assert FailedJobRecord.select().count() == 0
    assert Tournament.get_by_id(t.id).started_at == t.started_at
    assert Match.select().where(Match.tournament == t.id).count() == 3
    run = last_run("AutoStartTournamentsJob")
    assert (run.seen, run.changed, run.failed, run.skipped, run.error) == (0, 0, 0, False, None)
    assert run.finished_at is not None and run.duration_ms is not None


@PG
def test_two_worker_processes_start_each_tournament_once(qdb, organizer):
    now = tdb.utcnow()
    tournaments = [
        make_tournament(organizer, make_players(4, f"w{i}_"), now=now, prefix=f"W{i}", auto_start=True)
        for i in range(4)
    ]
    assert AutoStartTournamentsJob().run().changed == 4
    # Twice each, on top: bypass the unique key, as if dispatched by two schedulers' jobs.
    backend = backends.current()
    backend.push(
        [
            dataclasses.replace(StartTournamentJob(tournament_id=t.id).pending(), unique_key=None)
            for t in tournaments
        ]
    )
    assert JobRecord.select().count() == 8
    procs = [
        subprocess.Popen(
            tourno_cmd("work", "--stop-when-empty", "--sleep", "0.1"),
            env=qdb.env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert JobRecord.select().count() == 0
    assert FailedJobRecord.select().count() == 0
    for t in tournaments:
        t = Tournament.get_by_id(t.id)
        assert t.state == TournamentState.UNDERWAY
        # One bracket: a second start would have been refused, not doubled.
        assert Match.select().where(Match.tournament == t.id).count() == 3
    assert len(mails("match_ready")) == 4 * 2 * 2  # tournaments x opened matches x players


def test_autostart_processes_check_ins_and_leaves_a_short_tournament_alone(qdb, organizer):
    players = make_players(4)
    starts = NOW + 2 * HOUR
    t = make_tournament(
        organizer, players, auto_start=True, check_in_enabled=True, starts_at=starts, min_participants=4
    )
    for player in players[:3]:
        services.check_in(t, player, now=starts - 30 * MIN)
    # Before the start time: not due, although full.
    assert AutoStartTournamentsJob().run(now=starts - MIN).seen == 0

    counts = AutoStartTournamentsJob().run(now=starts + MIN)
    assert (counts.seen, counts.changed, counts.failed) == (1, 1, 0)  # check-ins processed, no start
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.CHECKED_IN and t.participants_count == 3
    assert Participant.select().where(Participant.status == ParticipantStatus.NO_SHOW).count() == 1
    assert start_jobs() == []
    # Later ticks leave it for the organizer.
    counts = AutoStartTournamentsJob().run(now=starts + 6 * MIN)
    assert (counts.changed, counts.failed) == (0, 0)
    assert start_jobs() == [] and Tournament.get_by_id(t.id).state == TournamentState.CHECKED_IN


def test_autostart_starts_after_check_ins_with_enough_players(qdb, organizer):
    players = make_players(4)
    starts = NOW + 2 * HOUR
    t = make_tournament(organizer, players, auto_start=True, check_in_enabled=True, starts_at=starts)
    for player in players[:3]:
        services.check_in(t, player, now=starts - 30 * MIN)
    assert AutoStartTournamentsJob().run(now=starts + MIN).changed == 1
    assert start_jobs() == [t.id]
    StartTournamentJob(tournament_id=t.id).handle()
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.UNDERWAY and t.participants_count == 3


def test_autostart_starts_at_the_start_time_when_not_full_but_enough(qdb, organizer):
    starts = NOW + HOUR
    t = make_tournament(organizer, make_players(3), capacity=8, auto_start=True, starts_at=starts)
    assert AutoStartTournamentsJob().run(now=starts - MIN).seen == 0
    assert AutoStartTournamentsJob().run(now=starts).changed == 1
    assert start_jobs() == [t.id]


# -- CheckFullTournamentsJob --------------------------------------------------------------------


def test_checkfull_reminds_once_then_cancels_after_48_hours(qdb, organizer):
    players = make_players(4)
    t = make_tournament(organizer, players)
    assert t.full_since == NOW
    settings = Settings()
    job = CheckFullTournamentsJob()

    counts = job.run(now=NOW + 59 * MIN, settings=settings)
    assert (counts.seen, counts.changed) == (0, 0)  # nothing due: not even scanned
    assert mails("full_reminder") == []

    assert job.run(now=NOW + 61 * MIN, settings=settings).changed == 1
    (reminder,) = mails("full_reminder")
    assert reminder.to_email == "org@example.com"
    assert reminder.context["cancel_at"] == (NOW + 48 * HOUR).isoformat()
    assert Tournament.get_by_id(t.id).full_reminder_sent_at == NOW + 61 * MIN
    assert job.run(now=NOW + 3 * HOUR, settings=settings).seen == 0  # reminded: out of the scan
    assert len(mails("full_reminder")) == 1

    assert job.run(now=NOW + 48 * HOUR - MIN, settings=settings).changed == 0
    assert job.run(now=NOW + 48 * HOUR + MIN, settings=settings).changed == 1
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.CANCELLED and t.cancel_reason == "not_started_after_full"
    assert sorted(m.to_email for m in mails("tournament_cancelled")) == sorted(p.email for p in players)
    assert job.run(now=NOW + 49 * HOUR, settings=settings).seen == 0
    run = last_run("CheckFullTournamentsJob")
    assert (run.seen, run.changed, run.failed) == (0, 0, 0)


def test_checkfull_counts_from_the_start_time_and_reads_its_limits(qdb, organizer):
    starts = NOW + 72 * HOUR
    t = make_tournament(organizer, make_players(4), starts_at=starts)
    settings = Settings.from_mapping({"TOURNO_FULL_REMINDER_MINUTES": "30", "TOURNO_FULL_CANCEL_HOURS": "2"})
    job = CheckFullTournamentsJob()
    # Filled three days before its start: nothing happens before the start.
    assert job.run(now=starts - MIN, settings=settings).changed == 0
    assert job.run(now=starts + 31 * MIN, settings=settings).changed == 1
    assert len(mails("full_reminder")) == 1
    assert job.run(now=starts + 2 * HOUR - MIN, settings=settings).changed == 0
    assert job.run(now=starts + 2 * HOUR, settings=settings).changed == 1
    assert Tournament.get_by_id(t.id).state == TournamentState.CANCELLED


class PagedCheckFullJob(CheckFullTournamentsJob):
    batch_size = 1


class PagedAutoStartJob(AutoStartTournamentsJob):
    batch_size = 1


def test_scans_page_past_the_rows_they_leave_alone(qdb, organizer):
    # Pages of one row: a row that stays due but unchanged must not stall the scan.
    for i in range(3):
        make_tournament(organizer, make_players(2, f"f{i}_"), prefix=f"Full{i}")
        make_tournament(
            organizer,
            make_players(2, f"s{i}_"),
            prefix=f"Short{i}",
            capacity=4,
            min_participants=3,
            auto_start=True,
            starts_at=NOW + HOUR,
        )
    counts = PagedCheckFullJob().run(now=NOW + 10 * MIN, settings=Settings())
    assert (counts.seen, counts.changed) == (0, 0)  # nothing due yet: the scan skips them in SQL
    counts = PagedCheckFullJob().run(now=NOW + 61 * MIN, settings=Settings())
    assert (counts.seen, counts.changed) == (3, 3)
    assert len(mails("full_reminder")) == 3
    counts = PagedAutoStartJob().run(now=NOW + HOUR + MIN)
    assert (counts.seen, counts.changed, counts.failed) == (3, 0, 0)  # each below its minimum
    assert start_jobs() == []


# -- CheckMatchDeadlinesJob ------------------------------------------------------------------------


def test_deadlines_resolve_every_expired_match_once(qdb, organizer):
    t, (a, b) = started(organizer, make_players(4))
    deadline = a.deadline_at
    services.report_result(a, user_of(a.player1_id), player1_score=2, player2_score=1, now=deadline - HOUR)
    assert CheckMatchDeadlinesJob().run(now=deadline - MIN).seen == 0

    counts = CheckMatchDeadlinesJob().run(now=deadline + dt.timedelta(seconds=1))
    assert (counts.seen, counts.changed, counts.failed) == (2, 2, 0)
    a, b = Match.get_by_id(a.id), Match.get_by_id(b.id)
    assert (a.state, a.result_type, a.winner_id) == (
        MatchState.COMPLETE,
        ResultType.AUTO_CONFIRMED,
        a.player1_id,
    )
    assert (b.state, b.result_type) == (MatchState.COMPLETE, ResultType.DOUBLE_FORFEIT)
    # Idempotent: nothing is due any more.
    assert CheckMatchDeadlinesJob().run(now=deadline + 15 * MIN).seen == 0
    runs = list(JobRun.select().where(JobRun.job == "CheckMatchDeadlinesJob").order_by(JobRun.id))
    assert [(r.seen, r.changed, r.failed) for r in runs] == [(0, 0, 0), (2, 2, 0), (0, 0, 0)]


@PG
def test_a_match_whose_service_raises_is_counted_failed_and_the_rest_resolved(qdb, organizer):
    t, (a, b) = started(organizer, make_players(4))
    boom_on_update(a.id)
    counts = CheckMatchDeadlinesJob().run(now=a.deadline_at + MIN)
    assert (counts.seen, counts.changed, counts.failed) == (2, 1, 1)
    assert Match.get_by_id(a.id).state == MatchState.OPEN  # rolled back, left for the next tick
    assert Match.get_by_id(b.id).state == MatchState.COMPLETE
    run = last_run("CheckMatchDeadlinesJob")
    assert (run.seen, run.changed, run.failed, run.error) == (2, 1, 1, None)
    no_more_boom()
    counts = CheckMatchDeadlinesJob().run(now=a.deadline_at + 16 * MIN)
    assert (counts.seen, counts.changed, counts.failed) == (1, 1, 0)
    assert Match.get_by_id(a.id).state == MatchState.COMPLETE


class PeriodicTimeoutJob(CheckMatchDeadlinesJob):
    """Runs out of time on its first item."""

    def apply(self, item_id, now):
        raise JobTimeout("PeriodicTimeoutJob has timed out after 300 s")


def test_a_timeout_ends_the_run_and_is_recorded(qdb, organizer):
    t, (a, b) = started(organizer, make_players(4))
    with pytest.raises(JobTimeout):
        PeriodicTimeoutJob().run(now=a.deadline_at + MIN)
    run = last_run("PeriodicTimeoutJob")
    assert (run.seen, run.changed, run.failed) == (1, 0, 0)
    assert run.error == "JobTimeout: PeriodicTimeoutJob has timed out after 300 s"
    assert run.finished_at is not None
    assert {Match.get_by_id(m.id).state for m in (a, b)} == {MatchState.OPEN}


@PG
def test_a_second_instance_skips_while_the_scan_lease_is_held(qdb, organizer):
    t, (a, b) = started(organizer, make_players(4))
    lease = "scan:CheckMatchDeadlinesJob"

    def lease_ends_in() -> float:
        (seconds,) = tdb.database.execute_sql(
            "SELECT extract(epoch FROM value - now()) FROM queue_signals WHERE name = %s", (lease,)
        ).fetchone()
        return float(seconds)

    # Another scheduler's worker holds it (a row, not a session lock: a
    # transaction-mode PgBouncer would leak a session lock).
    tdb.database.execute_sql(
        "INSERT INTO queue_signals (name, value) VALUES (%s, now() + interval '5 minutes')", (lease,)
    )
    counts = CheckMatchDeadlinesJob().run(now=a.deadline_at + MIN)
    assert counts.skipped and counts.seen == 0
    assert last_run("CheckMatchDeadlinesJob").skipped
    assert Match.get_by_id(a.id).state == MatchState.OPEN
    # Its holder died: once the lease has run out, the next instance takes it.
    tdb.database.execute_sql(
        "UPDATE queue_signals SET value = now() - interval '1 second' WHERE name = %s", (lease,)
    )
    assert CheckMatchDeadlinesJob().run(now=a.deadline_at + MIN).changed == 2
    # Ours ended with the run, and no session lock was ever taken.
    assert lease_ends_in() <= 0
    (held,) = tdb.database.execute_sql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    assert held == 0


@PG
def test_a_row_another_transaction_holds_is_skipped_not_waited_for(qdb, organizer):
    t, (a, b) = started(organizer, make_players(4))
    other = tdb.connect(qdb.url)
    other.connect()
    try:
        # An organizer's request holds the tournament row (every writer locks it first).
        with other.atomic():
            other.execute_sql("SELECT id FROM tournaments WHERE id = %s FOR UPDATE", (t.id,))
            counts = CheckMatchDeadlinesJob().run(now=a.deadline_at + MIN)
            assert (counts.seen, counts.changed, counts.failed) == (2, 0, 0)
    finally:
        other.close()
    assert CheckMatchDeadlinesJob().run(now=a.deadline_at + 16 * MIN).changed == 2


def test_old_job_runs_are_pruned(qdb, organizer):
    old = tdb.utcnow() - dt.timedelta(days=31)
    for job in ("CheckMatchDeadlinesJob", "CheckFullTournamentsJob"):
        JobRun.create(job=job, started_at=old, finished_at=old, host="h", pid=1)
    CheckMatchDeadlinesJob().run(now=NOW)
    assert [r.job for r in JobRun.select().where(JobRun.started_at == old)] == ["CheckFullTournamentsJob"]
    assert JobRun.select().where(JobRun.job == "CheckMatchDeadlinesJob").count() == 1


def test_deadlines_via_a_real_worker_on_the_real_clock(qdb, organizer):
    past = tdb.utcnow() - 25 * HOUR  # the matches' 24 h deadlines passed an hour ago
    t, (a, b) = started(organizer, make_players(4), now=past)
    CheckMatchDeadlinesJob().dispatch()
    code, worker = run_worker(memory=0)
    assert code == 0 and worker.jobs_processed == 1
    assert {Match.get_by_id(m.id).state for m in (a, b)} == {MatchState.COMPLETE}
    run = last_run("CheckMatchDeadlinesJob")
    assert (run.seen, run.changed, run.failed) == (2, 2, 0)


# -- SendMatchDeadlineWarningsJob ------------------------------------------------------------------


def warnings_by_player() -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for mail in mails("deadline_warning"):
        out.setdefault(mail.context["participant_id"], []).append(mail.dedupe_key)
    return out


@pytest.mark.parametrize("late", [dt.timedelta(seconds=1), 14 * MIN, 59 * MIN])
def test_one_warning_per_player_who_has_not_acted_whatever_the_cadence(qdb, organizer, late):
    t, (a, b) = started(organizer, make_players(4))
    assert a.warn_at == a.deadline_at - HOUR
    services.report_result(a, user_of(a.player1_id), player1_score=2, player2_score=0, now=a.warn_at - MIN)
    assert SendMatchDeadlineWarningsJob().run(now=a.warn_at - dt.timedelta(seconds=1)).seen == 0

    counts = SendMatchDeadlineWarningsJob().run(now=a.warn_at + late)
    assert (counts.seen, counts.changed, counts.failed) == (2, 2, 0)
    warned = warnings_by_player()
    # The reporter of match A is not warned; everyone else once.
    assert sorted(warned) == sorted([a.player2_id, b.player1_id, b.player2_id])
    assert all(len(keys) == 1 for keys in warned.values())
    assert all(Match.get_by_id(m.id).deadline_warning_sent_at == a.warn_at + late for m in (a, b))
    # Idempotent: a later tick before the deadline finds nothing.
    assert SendMatchDeadlineWarningsJob().run(now=a.deadline_at - dt.timedelta(seconds=1)).seen == 0
    assert warnings_by_player() == warned

    mail = next(m for m in mails("deadline_warning") if m.context["participant_id"] == a.player2_id)
    assert mail.priority == 1  # HIGH
    assert mail.dedupe_key == f"deadline_warning:{a.id}:{a.player2_id}:{int(a.deadline_at.timestamp())}"
    ctx = mail.context
    assert ctx["tournament_name"] == t.name and ctx["match_identifier"] == a.identifier
    assert ctx["round_name"] == Round.get_by_id(a.round_id).name
    assert ctx["opponent_name"] == Participant.get_by_id(a.player1_id).display_name
    assert ctx["deadline_at"] == a.deadline_at.isoformat()
    assert ctx["missing"] == "confirm or dispute your opponent's report of 2-0"
    assert "both of you are disqualified" in ctx["consequence"]


def test_with_check_in_the_warning_says_what_is_missing(qdb, organizer):
    players = make_players(4)
    starts = NOW + 2 * HOUR
    t = make_tournament(organizer, players, check_in_enabled=True, starts_at=starts)
    for player in players:
        services.check_in(t, player, now=starts - 30 * MIN)
    services.start_tournament(t, organizer, now=starts)
    a = (
        Match.select()
        .where(Match.tournament == t.id, Match.state == MatchState.OPEN)
        .order_by(Match.id)
        .first()
    )
    SendMatchDeadlineWarningsJob().run(now=a.warn_at + MIN)
    missing = {m.context["missing"] for m in mails("deadline_warning")}
    assert missing == {"check in; report your result"}


def test_no_warning_once_the_deadline_has_passed(qdb, organizer):
    t, (a, b) = started(organizer, make_players(4))
    # Seen by the scan (its index has no deadline), refused by the claim.
    counts = SendMatchDeadlineWarningsJob().run(now=a.deadline_at)
    assert (counts.changed, counts.failed) == (0, 0)
    assert mails("deadline_warning") == []


def test_extending_the_deadline_rearms_the_warning(qdb, organizer):
    t, (a, b) = started(organizer, make_players(4))
    SendMatchDeadlineWarningsJob().run(now=a.warn_at + MIN)
    assert len(mails("deadline_warning")) == 4
    services.extend_deadline(a, organizer, minutes=120, now=a.warn_at + 10 * MIN)
    a2 = Match.get_by_id(a.id)
    assert a2.deadline_warning_sent_at is None and a2.warn_at == a.warn_at + 120 * MIN
    # Not yet due again...
    assert SendMatchDeadlineWarningsJob().run(now=a.warn_at + 30 * MIN).seen == 0
    # ...then exactly one fresh warning per player, under the new deadline's key.
    counts = SendMatchDeadlineWarningsJob().run(now=a2.warn_at + MIN)
    assert (counts.seen, counts.changed) == (1, 1)
    warned = warnings_by_player()
    for pid in (a.player1_id, a.player2_id):
        assert [k.rsplit(":", 1)[1] for k in warned[pid]] == [
            str(int(a.deadline_at.timestamp())),
            str(int(a2.deadline_at.timestamp())),
        ]
    for pid in (b.player1_id, b.player2_id):
        assert len(warned[pid]) == 1
    assert SendMatchDeadlineWarningsJob().run(now=a2.warn_at + 20 * MIN).seen == 0


def test_a_match_without_anyone_to_warn_is_still_marked(qdb, organizer):
    # Two players with accounts against two entrants added by name (no address).
    users = make_players(2)
    t = services.create_tournament(
        organizer, name="Named", game="Chess", format="single_elimination", capacity=4, now=NOW
    )
    services.publish(t, organizer, now=NOW)
    for user in users:
        services.register(t, user, now=NOW)
    services.add_entrants(t, organizer, ["Walk-in 1", "Walk-in 2"], now=NOW)
    services.start_tournament(t, organizer, now=NOW)
    opened = list(Match.select().where(Match.tournament == t.id, Match.state == MatchState.OPEN))
    assert len(opened) == 2
    # The players with accounts report; the other sides cannot be mailed.
    for m in opened:
        mine = m.player1_id if user_of(m.player1_id) is not None else m.player2_id
        score = (1, 0) if mine == m.player1_id else (0, 1)
        services.report_result(
            m, user_of(mine), player1_score=score[0], player2_score=score[1], now=m.warn_at - MIN
        )
    counts = SendMatchDeadlineWarningsJob().run(now=opened[0].warn_at + MIN)
    assert (counts.seen, counts.changed, counts.failed) == (2, 2, 0)
    assert mails("deadline_warning") == []
    assert all(Match.get_by_id(m.id).deadline_warning_sent_at is not None for m in opened)
    assert SendMatchDeadlineWarningsJob().run(now=opened[0].warn_at + 2 * MIN).seen == 0


@PG
def test_a_warning_that_fails_writes_no_mail_and_the_others_go_out(qdb, organizer):
    t, (a, b) = started(organizer, make_players(4))
    boom_on_update(a.id)
    counts = SendMatchDeadlineWarningsJob().run(now=a.warn_at + MIN)
    assert (counts.seen, counts.changed, counts.failed) == (2, 1, 1)
    # Match A's mails rolled back with its flag.
    assert sorted(warnings_by_player()) == sorted([b.player1_id, b.player2_id])
    assert Match.get_by_id(a.id).deadline_warning_sent_at is None
    no_more_boom()
    assert SendMatchDeadlineWarningsJob().run(now=a.warn_at + 16 * MIN).changed == 1
    assert len(mails("deadline_warning")) == 4


# -- SendBulkEmailsJob ------------------------------------------------------------------------------


def test_send_bulk_emails_drains_the_outbox_and_records_the_run(qdb, organizer):
    started(organizer, make_players(4), now=tdb.utcnow() - HOUR)  # mail due now, by the real clock
    pending = EmailOutbox.select().where(EmailOutbox.status == EmailStatus.PENDING).count()
    assert pending > 0
    from tourno.mail.transports import ConsoleTransport

    out = io.StringIO()
    counts = SendBulkEmailsJob(budget_seconds=30).run(
        transport=ConsoleTransport(stream=out), settings=Settings(mail_rate=1000.0)
    )
    assert (counts.seen, counts.changed, counts.failed) == (pending, pending, 0)
    assert EmailOutbox.select().where(EmailOutbox.status == EmailStatus.SENT).count() == pending
    assert out.getvalue().count("Subject:") == pending
    run = last_run("SendBulkEmailsJob")
    assert (run.seen, run.changed, run.failed, run.error) == (pending, pending, 0, None)


class FanningDeadlinesJob(CheckMatchDeadlinesJob):
    fan_out_at = 3


def test_many_due_matches_fan_out_one_job_per_tournament(qdb, organizer):
    """Over fan_out_at due matches: one ResolveDeadlinesJob per tournament
    (unique), and the workers resolve them exactly as the inline run would."""
    games = [started(organizer, make_players(4, f"t{i}_"), prefix=f"Cup{i}") for i in range(3)]
    late = max(m.deadline_at for _, opened in games for m in opened) + MIN
    counts = FanningDeadlinesJob().run(now=late)
    assert (counts.seen, counts.changed) == (3, 3)
    assert FanningDeadlinesJob().run(now=late).changed == 0  # still pending: unique per tournament
    jobs = sorted(r.payload["args"]["tournament_id"] for r in JobRecord.select())
    assert jobs == sorted(t.id for t, _ in games)
    code, _ = run_worker(memory=0)
    assert code == 0
    for _, opened in games:
        for m in opened:
            assert Match.get_by_id(m.id).result_type == ResultType.DOUBLE_FORFEIT
    assert JobRecord.select().count() == 0
    # Few due matches: resolved inline, as before.
    assert CheckMatchDeadlinesJob().run(now=late).seen == 0

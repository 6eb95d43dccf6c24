"""The `tourno up --demo` world: an organizer, sixteen players and three
tournaments that fill, start themselves, get played (badly) and run into
their deadlines, so a newcomer sees every periodic job at work within minutes.

Everything goes through the domain services, like the API and the jobs.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from dataclasses import dataclass

from tourno.accounts.models import Role, User
from tourno.db import utcnow
from tourno.queue import Job
from tourno.tournaments import services
from tourno.tournaments.errors import DomainError
from tourno.tournaments.models import (
    ACTIONABLE_MATCH_STATES,
    Match,
    MatchReport,
    MatchState,
    Participant,
    Tournament,
    TournamentState,
)

log = logging.getLogger(__name__)

ORGANIZER_EMAIL = "organizer@demo.tourno.test"
#: Every periodic task every minute, so the demo moves while you watch.
FREQUENCIES = ",".join(
    f"{task}=1"
    for task in (
        "AutoStartTournamentsJob",
        "CheckFullTournamentsJob",
        "CheckMatchDeadlinesJob",
        "SendMatchDeadlineWarningsJob",
        "SendBulkEmailsJob",
    )
)
# The shortest deadline Tourno allows, and a warning halfway.
RULES = {"match_deadline_minutes": 10, "deadline_warning_minutes": 5, "auto_start": True}


def seed_demo(now: dt.datetime | None = None, *, pace: float = 20.0) -> list[Tournament] | None:
    """Create the demo world; None when it exists already (a second `up --demo`).
    The demo players look at their matches every ``pace`` seconds."""
    now = now or utcnow()
    if User.get_or_none(User.email == ORGANIZER_EMAIL) is not None:
        return None
    organizer = services.create_user(ORGANIZER_EMAIL, "Demo Organizer", role=Role.ORGANIZER)
    players = [
        services.create_user(f"player{i:02d}@demo.tourno.test", f"Player {i:02d}") for i in range(1, 17)
    ]
    plans = [
        # Its players always report, and one report decides: it finishes within minutes.
        ("Demo Sprint (single elimination, plays itself)", "single_elimination", 4, None),
        ("Demo Cup (single elimination, starts when full)", "single_elimination", 8, None),
        ("Demo League (round robin, starts in 2 minutes)", "round_robin", 4, now + dt.timedelta(minutes=2)),
        ("Demo Swiss (starts when full)", "swiss", 6, None),
        # Nobody ever reports: the deadline warning mail comes halfway through
        # the match's 10 minutes, and the deadline job decides it at the end.
        ("Demo Deadline (nobody reports: a warning, then a decision)", "single_elimination", 2, None),
    ]
    made = []
    for index, (name, fmt, size, starts_at) in enumerate(plans):
        sprint = index == 0
        idle = index == len(plans) - 1
        t = services.create_tournament(
            organizer,
            name=name,
            game="Demo",
            format=fmt,
            capacity=size,
            starts_at=starts_at,
            settings={"demo": True, "demo_always_report": sprint, "demo_never_report": idle},
            report_mode="single_report" if sprint else "both_agree",
            now=now,
            **RULES,
        )
        services.publish(t, organizer, now=now)
        for user in random.Random(name).sample(players, size):
            services.register(t, user, now=now)
        made.append(t)
    DemoPlayJob(every=pace).dispatch(delay=pace)
    return made


def play_demo_round(rng: random.Random, now: dt.datetime | None = None) -> bool:
    """One look at every live demo match; returns whether any demo tournament is still live."""
    now = now or utcnow()
    live = [
        t
        for t in Tournament.select().where(
            Tournament.state.in_(
                (TournamentState.PENDING, TournamentState.CHECKED_IN, TournamentState.UNDERWAY)
            )
        )
        if (t.settings or {}).get("demo")
    ]
    for t in live:
        matches = Match.select().where(Match.tournament == t.id, Match.state.in_(ACTIONABLE_MATCH_STATES))
        for m in matches:
            try:
                _act(t, m, rng, now)
            except DomainError as exc:  # a race with the deadline job: fine in a demo
                log.info("demo: match %s: %s", m.identifier, exc)
    return bool(live)


#: What ``tourno up --demo`` prints: when each demo moment comes, in minutes
#: from the start (the periodic tasks run every minute in the demo).
TIMELINE = (
    "0-1 min: Demo Sprint, Cup, Swiss and Deadline fill up and start; the Sprint plays itself to the end",
    "2-3 min: Demo League starts at its start time",
    "~5 min: a deadline warning mail for the Demo Deadline match (nobody reports in it)",
    "~10 min: the deadline job decides the Demo Deadline match, and others left unplayed",
)


def _act(t: Tournament, m: Match, rng: random.Random, now: dt.datetime) -> None:
    if m.player1_id is None or m.player2_id is None:
        return
    if (t.settings or {}).get("demo_never_report"):
        return  # left to the deadline warning and the deadline job
    one, two = (User.get_by_id(Participant.get_by_id(p).user_id) for p in (m.player1_id, m.player2_id))
    roll = rng.random()
    if (t.settings or {}).get("demo_always_report"):
        roll = 0.0
    if m.state == MatchState.AWAITING_CONFIRMATION:
        if roll < 0.5:
            reported = MatchReport.get(MatchReport.match == m.id, MatchReport.superseded_at.is_null(True))
            confirmer = two if reported.participant_id == m.player1_id else one
            services.confirm_result(m, confirmer, now=now)
            log.info("demo: %s confirms %s in %s", confirmer.display_name, m.identifier, t.name)
        return
    if roll < 0.35:
        a, b = rng.choice(
            [(2, 0), (2, 1), (0, 2), (1, 2)] + ([(1, 1)] if t.format.value != "single_elimination" else [])
        )
        services.report_result(m, one, player1_score=a, player2_score=b, now=now)
        log.info("demo: %s reports %s-%s in %s of %s", one.display_name, a, b, m.identifier, t.name)
    elif roll < 0.45:
        services.claim_forfeit(m, two, now=now)
        log.info("demo: %s claims a forfeit in %s of %s", two.display_name, m.identifier, t.name)
    # else: nobody does anything this time; the deadline job will, eventually.


@dataclass
class DemoPlayJob(Job):
    """Plays the `tourno up --demo` tournaments like careless humans would:
    some matches are reported and confirmed, some reported and left for the
    deadline job, some forfeit claims, some nobody touches. It dispatches
    itself again every ``every`` seconds while a demo tournament is live."""

    every: float = 20.0
    seed: int = 0

    def handle(self) -> None:
        live = play_demo_round(random.Random(self.seed))
        if live:
            DemoPlayJob(every=self.every, seed=self.seed + 1).dispatch(delay=self.every)

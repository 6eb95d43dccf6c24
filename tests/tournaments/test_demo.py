"""The `tourno up --demo` world, through the domain services on PostgreSQL and
SQLite: the tournaments it seeds, and its players, who act on every match but
one (the Demo Deadline match, left for the deadline warning and job)."""

from __future__ import annotations

import datetime as dt
import logging
import random

from tests.conftest import DOMAIN_NOW
from tourno.demo import TIMELINE, play_demo_round, seed_demo
from tourno.tournaments import services
from tourno.tournaments.models import Match, MatchReport, MatchState, Tournament


def test_the_demo_seeds_once_and_leaves_its_deadline_match_alone(qdb, caplog):
    made = seed_demo(DOMAIN_NOW - dt.timedelta(minutes=1), pace=60)
    assert made is not None and len(made) == 5
    assert seed_demo(DOMAIN_NOW) is None  # a second `up --demo` carries on
    deadline = next(t for t in made if t.name.startswith("Demo Deadline"))
    sprint = made[0]
    for t in (deadline, sprint):
        services.start_tournament(t.id, None, now=DOMAIN_NOW)
    with caplog.at_level(logging.INFO, logger="tourno.demo"):
        for seed in range(20):
            play_demo_round(random.Random(seed), now=DOMAIN_NOW + dt.timedelta(seconds=seed))
    (match,) = Match.select().where(Match.tournament == deadline.id)
    assert match.state == MatchState.OPEN
    assert MatchReport.select().where(MatchReport.match == match.id).count() == 0
    # The sprint's players always report: it was played to its end, and each action was logged.
    assert Tournament.get_by_id(sprint.id).state.value == "complete"
    assert any("demo: " in r.getMessage() and "reports" in r.getMessage() for r in caplog.records)
    assert any("Demo Deadline" in line for line in TIMELINE)

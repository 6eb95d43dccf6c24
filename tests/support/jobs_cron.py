"""Job classes of "a user's" that declare cron expressions: imported only by
``tourno`` subprocesses (TOURNO_IMPORTS), never by the test process, whose
task table stays the five built-ins."""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.jobs import mark
from tourno.queue import Job


@dataclass
class NightlyDigestJob(Job):
    """A fixed local time, no catch-up: a night missed is a night skipped."""

    # Plain class attributes, not annotated: a dataclass's annotated names
    # (even ClassVar ones) would travel as job arguments.
    cron = "30 2 * * *"
    cron_timezone = "Europe/Paris"
    cron_catch_up = False

    def handle(self) -> None:
        mark("NightlyDigestJob", "ran")


@dataclass
class MinutelyProbeJob(Job):
    """Every minute, catching up: ``tourno schedule --once`` always has a slot for it."""

    cron = "* * * * *"

    def handle(self) -> None:
        mark("MinutelyProbeJob", "ran")

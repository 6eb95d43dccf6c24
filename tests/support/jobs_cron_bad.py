"""A job class with a bad cron declaration, for ``tourno schedule`` to refuse
at start. CRON_TEST_BAD picks what is wrong; imported only by subprocesses."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tourno.queue import Job

KIND = os.environ.get("CRON_TEST_BAD", "expression")


@dataclass
class BadCronJob(Job):
    cron = "61 * * * *" if KIND == "expression" else "0 3 * * *"
    cron_timezone = "Mars/Olympus_Mons" if KIND == "timezone" else "UTC"

    # A field without a default: the scheduler could not dispatch BadCronJob().
    if KIND == "arguments":
        user_id: int

    def handle(self) -> None:
        raise AssertionError("never dispatched")

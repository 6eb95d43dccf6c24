"""A job to try the queue with: ``tourno queue dispatch DemoJob``."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from tourno.queue import Job

log = logging.getLogger(__name__)


@dataclass
class DemoJob(Job):
    """Logs a message, optionally after sleeping, optionally failing."""

    message: str = "hello from the queue"
    seconds: float = 0.0
    fail: bool = False

    def handle(self) -> None:
        if self.seconds:
            time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError(f"DemoJob asked to fail: {self.message}")
        log.info("DemoJob: %s", self.message)


@dataclass
class DemoPlayJob(Job):
    """Plays the `tourno up --demo` tournaments like careless humans would:
    some matches are reported and confirmed, some reported and left for the
    deadline job, some forfeit claims, some nobody touches. It dispatches
    itself again every ``every`` seconds while a demo tournament is live."""

    every: float = 20.0
    seed: int = 0

    def handle(self) -> None:
        from tourno.demo import play_demo_round

        live = play_demo_round(random.Random(self.seed))
        if live:
            DemoPlayJob(every=self.every, seed=self.seed + 1).dispatch(delay=self.every)

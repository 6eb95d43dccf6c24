"""A job to try the queue with: ``tourno queue dispatch DemoJob``."""

from __future__ import annotations

import logging
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

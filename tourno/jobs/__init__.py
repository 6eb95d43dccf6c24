"""The application's jobs. Importing this package registers them all."""

from tourno.jobs.demo import DemoJob, DemoPlayJob
from tourno.jobs.periodic import (
    PERIODIC_JOBS,
    AutoStartTournamentsJob,
    CheckFullTournamentsJob,
    CheckMatchDeadlinesJob,
    SendBulkEmailsJob,
    SendMatchDeadlineWarningsJob,
    StartTournamentJob,
)

__all__ = [
    "PERIODIC_JOBS",
    "AutoStartTournamentsJob",
    "CheckFullTournamentsJob",
    "CheckMatchDeadlinesJob",
    "DemoJob",
    "DemoPlayJob",
    "SendBulkEmailsJob",
    "SendMatchDeadlineWarningsJob",
    "StartTournamentJob",
]

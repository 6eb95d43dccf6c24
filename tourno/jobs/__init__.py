"""The application's jobs. Importing this package registers them all."""

from tourno.demo import DemoPlayJob
from tourno.jobs.demo import DemoJob
from tourno.jobs.periodic import (
    PERIODIC_JOBS,
    AutoStartTournamentsJob,
    CheckFullTournamentsJob,
    CheckMatchDeadlinesJob,
    ResolveDeadlinesJob,
    SendBulkEmailsJob,
    SendMatchDeadlineWarningsJob,
    StartTournamentJob,
)

__all__ = [
    "PERIODIC_JOBS",
    "ResolveDeadlinesJob",
    "AutoStartTournamentsJob",
    "CheckFullTournamentsJob",
    "CheckMatchDeadlinesJob",
    "DemoJob",
    "DemoPlayJob",
    "SendBulkEmailsJob",
    "SendMatchDeadlineWarningsJob",
    "StartTournamentJob",
]

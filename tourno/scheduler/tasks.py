"""The task table: which job the scheduler dispatches, and how often.

Task names are the job names (the original system's), so ``tourno schedule
run CheckMatchDeadlinesJob`` and the ``job_runs`` rows speak the same words.
Frequencies are minutes on wall-clock slots; TOURNO_SCHEDULE_FREQUENCIES
overrides them (``SendBulkEmailsJob=2,CheckMatchDeadlinesJob=5``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tourno.config import PREFIX, ConfigError, Settings
from tourno.queue import Job
from tourno.queue.job import registered as registered_jobs

#: Task name -> default frequency in minutes.
DEFAULT_FREQUENCIES: dict[str, int] = {
    "AutoStartTournamentsJob": 5,
    "CheckFullTournamentsJob": 5,
    "CheckMatchDeadlinesJob": 15,
    "SendMatchDeadlineWarningsJob": 15,
    "SendBulkEmailsJob": 1,
}
TASK_NAMES: tuple[str, ...] = tuple(DEFAULT_FREQUENCIES)


@dataclass(frozen=True)
class Task:
    name: str
    job: type[Job]
    #: Minutes; due at every slot whose minute (counted from the Unix epoch, UTC) divides by it.
    frequency: int

    def make_job(self) -> Job:
        return self.job()


def frequency_overrides(settings: Settings) -> dict[str, int]:
    """TOURNO_SCHEDULE_FREQUENCIES as a dict, refusing unknown task names."""
    overrides: dict[str, int] = {}
    for pair in settings.schedule_frequencies:
        name, _, minutes = pair.partition("=")
        if name not in DEFAULT_FREQUENCIES:
            raise ConfigError(
                f"{PREFIX}SCHEDULE_FREQUENCIES: unknown task {name!r}; the tasks are {', '.join(TASK_NAMES)}"
            )
        overrides[name] = int(minutes)
    return overrides


def task_table(settings: Settings | None = None) -> list[Task]:
    """The five tasks with their frequencies in effect, in table order.

    The job classes come from the queue's registry by name: the application's
    jobs (``tourno.jobs``) import the scheduler's models, never the other way
    round, so whoever runs the scheduler imports ``tourno.jobs`` first (the
    CLI and ``tourno.setup()`` do)."""
    overrides = frequency_overrides(settings) if settings is not None else {}
    registered = registered_jobs()
    missing = [name for name in DEFAULT_FREQUENCIES if name not in registered]
    if missing:
        raise RuntimeError(
            f"the periodic jobs {', '.join(missing)} are not registered: "
            "import tourno.jobs (tourno.setup() does) before building the task table"
        )
    return [
        Task(name, registered[name], overrides.get(name, default))
        for name, default in DEFAULT_FREQUENCIES.items()
    ]


def find_task(name: str, tasks: list[Task]) -> Task:
    """The task called ``name`` (case-insensitive), or KeyError naming the choices."""
    for task in tasks:
        if task.name.lower() == name.strip().lower():
            return task
    raise KeyError(f"unknown task {name!r}; the tasks are {', '.join(t.name for t in tasks)}")

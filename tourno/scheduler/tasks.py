"""The task table: which jobs the scheduler dispatches, and when.

Every registered job class with a ``cron`` class attribute is a task, named
after the job (so ``tourno schedule run CheckMatchDeadlinesJob`` and the
``job_runs`` rows speak the same words)::

    class NightlyReportJob(Job):
        cron = "30 2 * * *"              # five fields, cronsim's syntax
        cron_timezone = "Europe/Paris"   # optional; default UTC
        cron_catch_up = False            # optional; default True

The five built-in periodic jobs declare theirs the same way
(:mod:`tourno.jobs.periodic`); a class in a module named by TOURNO_IMPORTS
is picked up alike. ``cron`` counts only on the class that declares it, not
on its subclasses; plain class attributes, not annotated ones (a dataclass
would take an annotated name for a job argument). TOURNO_SCHEDULE overrides an expression without code
(``Name=expr;Name=expr``); the older TOURNO_SCHEDULE_FREQUENCIES
(``Name=minutes``) still works for minute counts cron can say.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from tourno.config import PREFIX, ConfigError, Settings
from tourno.queue import Job
from tourno.queue.job import registered as registered_jobs
from tourno.scheduler.cron import Cron, InvalidCron, parse_cron, parse_timezone, step_minutes

#: The built-in periodic jobs, in table order (their expressions live on the classes).
BUILTIN_TASKS: tuple[str, ...] = (
    "AutoStartTournamentsJob",
    "CheckFullTournamentsJob",
    "CheckMatchDeadlinesJob",
    "SendMatchDeadlineWarningsJob",
    "SendBulkEmailsJob",
)
TASK_NAMES = BUILTIN_TASKS


class InvalidSchedule(ConfigError):
    """A job class's cron declaration, or a schedule setting, that cannot be
    used. A ConfigError, so every command that builds the table stops at start
    with its one line (exit 2), as for a bad setting."""


@dataclass(frozen=True)
class Task:
    name: str
    job: type[Job]
    cron: Cron
    #: After downtime, dispatch the latest missed slot (True) or none (False).
    catch_up: bool = True
    #: Where the expression came from: "class" or the setting's name.
    source: str = "class"

    def make_job(self) -> Job:
        return self.job()

    @property
    def frequency(self) -> int | None:
        """Minutes between slots for a plain ``*/N`` expression, else None (displays only)."""
        return step_minutes(self.cron)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _declares_cron(cls: type[Job]) -> bool:
    # Only a class's own ``cron`` counts: a subclass of a periodic job (to
    # change what it does, or in tests) is not scheduled a second time unless
    # it says so. ``cron_timezone`` and ``cron_catch_up`` may be inherited.
    return cls.__dict__.get("cron") is not None


def _declared(cls: type[Job]) -> tuple[Any, Any, bool]:
    """(expression, timezone, catch_up) as the class declares them, checked for type."""
    where = _qualified(cls)
    timezone = getattr(cls, "cron_timezone", "UTC")
    catch_up = getattr(cls, "cron_catch_up", True)
    if not isinstance(catch_up, bool):
        raise InvalidSchedule(f"{where}.cron_catch_up: expected True or False, got {catch_up!r}")
    return cls.__dict__["cron"], timezone, catch_up


def _check_constructible(cls: type[Job]) -> None:
    # The scheduler dispatches cls() with no arguments.
    try:
        inspect.signature(cls).bind()
    except TypeError:
        raise InvalidSchedule(
            f"{_qualified(cls)}: a job with a cron is dispatched without arguments, "
            "but its fields have no defaults"
        ) from None


def parse_schedule_setting(settings: Settings) -> dict[str, tuple[str, str]]:
    """Task name -> (expression, variable) from TOURNO_SCHEDULE, then from
    TOURNO_SCHEDULE_FREQUENCIES (minute counts cron can say: a divisor of 60,
    or whole hours dividing 24). For a task in both, TOURNO_SCHEDULE wins."""
    out: dict[str, tuple[str, str]] = {}
    schedule_var = PREFIX + "SCHEDULE"
    for pair in settings.schedule:
        name, _, expression = pair.partition("=")
        out[name] = (expression, schedule_var)
    freq_var = PREFIX + "SCHEDULE_FREQUENCIES"
    for pair in settings.schedule_frequencies:
        name, _, text = pair.partition("=")
        minutes = int(text)
        if name in out:
            continue  # the newer setting wins (``tourno up --demo`` sets the older one)
        if 60 % minutes == 0:
            expression = "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
        elif minutes % 60 == 0 and 24 % (minutes // 60) == 0:
            hours = minutes // 60
            expression = "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
        else:
            raise InvalidSchedule(
                f"{freq_var}: {name}={minutes} is not a cron step (a divisor of 60, or whole hours "
                f"dividing 24); say it with {schedule_var}, like {name}=*/10 * * * *"
            )
        out[name] = (expression, freq_var)
    return out


def task_table(settings: Settings | None = None) -> list[Task]:
    """Every registered job class with a ``cron``, with the expression in
    effect: the built-ins in their order, then the others by name.

    The job classes come from the queue's registry: the application's jobs
    (``tourno.jobs``) import the scheduler's models, never the other way
    round, so whoever runs the scheduler imports ``tourno.jobs`` first (the
    CLI and ``tourno.setup()`` do). Raises :class:`InvalidSchedule` naming
    the class (or the setting) of the first bad declaration."""
    overrides = parse_schedule_setting(settings) if settings is not None else {}
    registered = registered_jobs()
    missing = [name for name in BUILTIN_TASKS if name not in registered]
    if missing:
        raise RuntimeError(
            f"the periodic jobs {', '.join(missing)} are not registered: "
            "import tourno.jobs (tourno.setup() does) before building the task table"
        )
    scheduled = {name: cls for name, cls in registered.items() if _declares_cron(cls)}
    unknown = sorted(set(overrides) - set(scheduled))
    if unknown:
        name = unknown[0]
        raise InvalidSchedule(
            f"{overrides[name][1]}: unknown task {name!r}; the tasks are {', '.join(_ordered(scheduled))}"
        )
    tasks = []
    for name in _ordered(scheduled):
        cls = scheduled[name]
        expression, timezone, catch_up = _declared(cls)
        source = "class"
        where = f"{_qualified(cls)}.cron"
        if name in overrides:
            expression, source = overrides[name]
            where = f"{source}: {name}"
        try:
            parse_timezone(timezone)
        except InvalidCron as exc:
            raise InvalidSchedule(f"{_qualified(cls)}.cron_timezone: {exc}") from None
        try:
            cron = parse_cron(expression, timezone)
        except InvalidCron as exc:
            raise InvalidSchedule(f"{where}: {exc}") from None
        _check_constructible(cls)
        tasks.append(Task(name, cls, cron, catch_up, source))
    return tasks


def _ordered(scheduled: dict[str, type[Job]]) -> list[str]:
    builtins = [name for name in BUILTIN_TASKS if name in scheduled]
    return builtins + sorted(name for name in scheduled if name not in BUILTIN_TASKS)


def find_task(name: str, tasks: list[Task]) -> Task:
    """The task called ``name`` (case-insensitive), or KeyError naming the choices."""
    for task in tasks:
        if task.name.lower() == name.strip().lower():
            return task
    raise KeyError(f"unknown task {name!r}; the tasks are {', '.join(t.name for t in tasks)}")

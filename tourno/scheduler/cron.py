"""Cron slots: when a task with a cron expression is due (pure, ``now`` injected).

The expression is parsed and evaluated by cronsim (healthchecks.io's parser),
never by hand. Five fields only (minute hour day-of-month month day-of-week):
a slot is a minute, which is what ``schedule_runs(task, slot)`` records.

A slot is the UTC instant at which the expression fires in the task's
timezone. Daylight-saving changes follow Debian cron, as cronsim does: a job
at a fixed local time (``30 2 * * *``) that falls in the skipped hour runs
once when the clock jumps, and once (the first time) in the repeated hour;
``*/15 * * * *`` keeps firing every 15 real minutes through both.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field

from cronsim import CronSim, CronSimError

UTC = dt.UTC


class InvalidCron(ValueError):
    """An expression or timezone that cannot be scheduled; the message is one line."""


def parse_timezone(name: str) -> dt.tzinfo:
    """An IANA timezone name (``Europe/Paris``) as a tzinfo; raises :class:`InvalidCron`."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidCron(f"expected a timezone name, got {name!r}")
    if name.strip().upper() == "UTC":
        return UTC
    try:
        return zoneinfo.ZoneInfo(name.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidCron(f"unknown timezone {name!r} (an IANA name, like Europe/Paris)") from None


@dataclass(frozen=True)
class Cron:
    """A checked cron expression in a timezone. Build with :func:`parse_cron`."""

    expression: str
    timezone: str = "UTC"
    zone: dt.tzinfo = field(default=UTC, compare=False, repr=False)

    def _sim(self, start: dt.datetime, reverse: bool = False) -> CronSim:
        return CronSim(self.expression, start.astimezone(self.zone), reverse=reverse)

    def latest(self, now: dt.datetime) -> dt.datetime | None:
        """The latest slot at or before ``now`` (UTC), None if there was none
        within cronsim's horizon (50 years)."""
        _aware(now)
        # cronsim steps one second before matching; start a second after the
        # whole second of ``now`` so that a slot exactly at ``now`` counts.
        start = now.replace(microsecond=0) + dt.timedelta(seconds=1)
        try:
            return next(self._sim(start, reverse=True)).astimezone(UTC)
        except StopIteration:
            return None

    def next_after(self, now: dt.datetime) -> dt.datetime | None:
        """The first slot strictly after ``now`` (UTC), None if none within 50 years."""
        _aware(now)
        try:
            return next(self._sim(now)).astimezone(UTC)
        except StopIteration:
            return None

    def slots(self, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        """Every slot in ``(start, end]``, oldest first (for tests and tools;
        the scheduler itself only ever looks at the latest)."""
        out: list[dt.datetime] = []
        at = start
        while True:
            slot = self.next_after(at)
            if slot is None or slot > end:
                return out
            out.append(slot)
            at = slot

    def describe(self) -> str:
        return self.expression if self.timezone == "UTC" else f"{self.expression} ({self.timezone})"


def _aware(now: dt.datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")


def parse_cron(expression: str, timezone: str = "UTC") -> Cron:
    """Check ``expression`` (five fields) and ``timezone`` (an IANA name);
    raises :class:`InvalidCron` saying what is wrong."""
    if not isinstance(expression, str):
        raise InvalidCron(f"expected a cron expression as text, got {expression!r}")
    text = " ".join(expression.split())
    if len(text.split(" ")) != 5:
        raise InvalidCron(
            f"expected 5 fields (minute hour day month weekday), like '*/5 * * * *', got {expression!r}"
        )
    zone = parse_timezone(timezone)
    try:
        sim = CronSim(text, dt.datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise InvalidCron(f"bad cron expression {expression!r}: {exc}") from None
    try:
        next(sim)
    except StopIteration:
        raise InvalidCron(f"cron expression {expression!r} never fires") from None
    return Cron(text, timezone.strip(), zone)


def step_minutes(cron: Cron) -> int | None:
    """N for an expression that fires every N minutes around the clock
    (``*`` -> 1, ``*/5 * * * *`` -> 5, with N dividing 60), else None. Only
    for displays that speak in minutes."""
    minute, *rest = cron.expression.split(" ")
    if rest != ["*", "*", "*", "*"]:
        return None
    if minute == "*":
        return 1
    if minute.startswith("*/") and minute[2:].isdigit() and 60 % int(minute[2:]) == 0:
        return int(minute[2:])
    return None

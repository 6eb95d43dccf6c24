"""What the cron maths costs the scheduler (pure, no database): parsing an
expression, the latest and next slot, and a tick with nothing due.

    python bench/cron.py

A tick only does cron maths when some task's next slot has come, so the idle
tick is what runs every second; the slot look-ups run once per slot.
"""

from __future__ import annotations

import datetime as dt
import timeit

from tourno.scheduler.cron import parse_cron
from tourno.scheduler.loop import Scheduler
from tourno.scheduler.tasks import Task

EXPRESSIONS = [
    ("* * * * *", "UTC"),
    ("*/15 * * * *", "UTC"),
    ("30 2 * * *", "Europe/Paris"),
    ("0 9 * * MON-FRI", "America/New_York"),
    ("0 0 L * *", "UTC"),
]
NOW = dt.datetime(2026, 11, 28, 12, 7, 30, tzinfo=dt.UTC)


def per_call_us(fn, n: int) -> float:
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6


def _timings(expr: str, zone: str) -> list[float]:
    cron = parse_cron(expr, zone)
    return [
        per_call_us(lambda: parse_cron(expr, zone), 2000),
        per_call_us(lambda: cron.latest(NOW), 2000),
        per_call_us(lambda: cron.next_after(NOW), 2000),
    ]


def main() -> None:
    print(f"{'expression':<32} {'parse':>9} {'latest':>9} {'next':>9}  (µs per call, best of 5)")
    for expr, zone in EXPRESSIONS:
        print(f"{expr + ' ' + zone:<32} " + " ".join(f"{us:9.1f}" for us in _timings(expr, zone)))

    class _Job:  # never dispatched: nothing is due in the timed ticks
        pass

    tasks = [Task(f"T{i}", _Job, parse_cron(e, z)) for i, (e, z) in enumerate(EXPRESSIONS)]  # type: ignore[arg-type]
    scheduler = Scheduler(tasks, host="bench")
    # Mark every latest slot handled, as after a first tick, without a database.
    for task in tasks:
        latest = task.cron.latest(NOW)
        assert latest is not None
        scheduler.handled[task.name] = latest
    later = NOW + dt.timedelta(seconds=20)  # before the next minute: nothing due
    scheduler.tick(later)
    idle = per_call_us(lambda: scheduler.tick(later), 20000)
    print(f"idle tick, {len(tasks)} tasks: {idle:.1f} µs")


if __name__ == "__main__":
    main()

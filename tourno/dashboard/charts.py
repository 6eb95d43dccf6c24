"""The overview's charts: jobs processed and failed per minute, and mean
wait, over the last hour and the last day, from the persisted metrics
(``tourno.queue.metrics.series``).

The server works out the geometry (polyline points in a fixed viewBox, the
scale's top, the totals) and the template draws it as SVG: no chart library,
and nothing for the CSP to forbid (the colours are classes in
``dashboard.css``). The same plain values go into the overview's JSON, so
the page's script refreshes a chart by setting attributes and text, without
drawing anything itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
import time
from typing import Any

from tourno.dashboard import timefmt
from tourno.db import UTC
from tourno.queue import backends, metrics

#: The viewBox of every chart, and the plot area inside it (room on the
#: left for the scale, below for the time labels).
WIDTH, HEIGHT = 400, 150
LEFT, RIGHT, TOP, BOTTOM = 44, 6, 10, 22


@dataclasses.dataclass(frozen=True)
class Window:
    """One chart pair: how far back, in steps of how many minutes, and for
    how many seconds one read of it serves the overview and its polls."""

    id: str
    title: str
    minutes: int
    step_minutes: int
    reuse_seconds: float = 0.0


#: The day is re-read once a minute, not with every 5 s poll: on Redis it is
#: 1440 minute hashes (a day of 5 job classes measured 0.3 to 1.4 s of the
#: client's time on a loaded two-core machine, most of it redis-py parsing
#: the replies), and its 30-minute steps barely move in a minute. The hour
#: (60 hashes, a few ms) is read every time.
WINDOWS = (
    Window("hour", "Last 60 minutes", 60, 1),
    Window("day", "Last 24 hours", 24 * 60, 30, reuse_seconds=60.0),
)


@dataclasses.dataclass
class _Read:
    backend: backends.QueueBackend
    at: float
    expires: float  # time.monotonic()
    buckets: list[metrics.Bucket]


_reads: dict[str, _Read] = {}
_reads_lock = threading.Lock()


def series(window: Window, at: float) -> list[metrics.Bucket]:
    """The window's buckets as of ``at`` (epoch): a read of the current
    backend, or the last one while it is fresh (same backend, ``at`` not
    before it and within ``reuse_seconds`` of it)."""
    backend = backends.current()
    clock = time.monotonic()
    with _reads_lock:
        last = _reads.get(window.id)
    if (
        last is not None
        and last.backend is backend
        and clock < last.expires
        and last.at <= at < last.at + window.reuse_seconds
    ):
        return last.buckets
    buckets = metrics.series(backend, window.minutes, window.step_minutes, now=at)
    if window.reuse_seconds > 0:
        with _reads_lock:
            _reads[window.id] = _Read(backend, at, clock + window.reuse_seconds, buckets)
    return buckets


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least
    ``value`` (at least 1): a scale's top that reads well."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if factor * power >= value:
            return float(factor * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def number_text(value: float) -> str:
    """``12``, ``2.5``, ``0.03``: a scale label without trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"


def wait_text(seconds: float) -> str:
    """A wait as text: tenths of a second below a minute, else the
    dashboard's durations."""
    return f"{seconds:.1f} s" if seconds < 60 else timefmt.duration_text(seconds)


def points(values: list[float], top: float) -> str:
    """``values`` as SVG polyline points, spread over the plot's width, 0 at
    the bottom and ``top`` at the top."""
    width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    last = max(len(values) - 1, 1)
    return " ".join(
        f"{LEFT + i * width / last:.1f},{TOP + height * (1 - min(v, top) / top):.1f}"
        for i, v in enumerate(values)
    )


def chart(window: Window, buckets: list[metrics.Bucket]) -> dict[str, Any]:
    """Plain JSON values for one window's two charts and its summary."""
    per_minute = float(window.step_minutes)
    processed = [b.succeeded / per_minute for b in buckets]
    failed = [b.failed / per_minute for b in buckets]
    waits = [b.mean_wait for b in buckets]
    rate_top = nice_ceiling(max(processed + failed, default=0.0))
    wait_top = nice_ceiling(max(waits, default=0.0))
    runs = sum(b.runs for b in buckets)
    wait_sum = sum(b.wait_sum for b in buckets)
    start = buckets[0].start if buckets else 0
    processed_total = sum(b.succeeded for b in buckets)
    failed_total = sum(b.failed for b in buckets)
    mean_wait = wait_text(wait_sum / runs if runs else 0.0)
    return {
        "id": window.id,
        "title": window.title,
        "step": f"{window.step_minutes} min",
        "from": timefmt.iso(dt.datetime.fromtimestamp(start, UTC)),
        "totals": {
            "processed": processed_total,
            "failed": failed_total,
            "released": sum(b.released for b in buckets),
            "mean_wait": mean_wait,
            "max_wait": wait_text(max((b.wait_max for b in buckets), default=0.0)),
        },
        "rate": {
            "top": number_text(rate_top),
            "processed": points(processed, rate_top),
            "failed": points(failed, rate_top),
        },
        "wait": {"top": wait_text(wait_top), "mean": points(waits, wait_top)},
        "summary": (
            f"{window.title}: {processed_total} jobs processed, {failed_total} failed, mean wait {mean_wait}."
        ),
    }


def charts(at: dt.datetime) -> list[dict[str, Any]]:
    """Both windows as of ``at``, from the current backend (at most one read each)."""
    now = at.timestamp()
    return [chart(w, series(w, now)) for w in WINDOWS]

"""Times as the dashboard shows them: UTC, and relative to now ("3 min ago",
"in 5 min"). Pure functions of their inputs; the templates use them as
filters and the page's script keeps the relative text current."""

from __future__ import annotations

import datetime as dt

from tourno.db import UTC, parse_timestamp

_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def utc_text(value: dt.datetime | str | None) -> str:
    """``2026-11-28 12:00:05 UTC``; an empty string for None."""
    when = parse_timestamp(value)
    if when is None:
        return ""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: dt.datetime | str | None) -> str:
    when = parse_timestamp(value)
    return "" if when is None else when.astimezone(UTC).isoformat()


def duration_text(seconds: float) -> str:
    """The largest unit that fits, plus the next one for days and hours
    (``2 h 5 min``, ``45 s``)."""
    seconds = int(abs(seconds))
    if seconds < 1:
        return "0 s"
    parts = []
    for size, unit in _UNITS:
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
            if len(parts) == 2 or unit in ("min", "s"):
                break
    return " ".join(parts[:2])


def relative(value: dt.datetime | str | None, now: dt.datetime) -> str:
    """``3 min ago`` / ``in 5 min`` / ``just now``; empty for None."""
    when = parse_timestamp(value)
    if when is None:
        return ""
    delta = (now - when).total_seconds()
    if abs(delta) < 1:
        return "just now"
    text = duration_text(delta)
    return f"{text} ago" if delta > 0 else f"in {text}"

"""What every package says about an exception in one line."""

from __future__ import annotations


def first_line(exc: BaseException, *, with_type: bool = True) -> str:
    """The first line of ``exc``'s message, for logs and tables: ``Type: text``
    (or just ``text`` with ``with_type=False``); the type alone when the
    message is empty."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if not first:
        return type(exc).__name__
    return f"{type(exc).__name__}: {first}" if with_type else first

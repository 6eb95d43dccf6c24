"""Reading request input: the JSON body and query parameters, checked field
by field. Every problem becomes a per-field message (422) or a 400 for a body
that is not a JSON object at all, before any service runs, so a bad request
never reaches the database.

Strings that PostgreSQL cannot store (NUL characters, lone surrogates) are
refused here too: they would otherwise fail inside the driver as a 500.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
from collections.abc import Iterable
from typing import Any

from flask import request

from tourno.api.errors import bad_request
from tourno.tournaments.errors import ValidationError

MAX_ID = 2**63 - 1
MAX_INT32 = 2**31 - 1


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 would become infinity, which neither JSON nor PostgreSQL's jsonb can store.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def json_body(*, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object; ``{}`` for an empty body when not required."""
    data = request.get_data(cache=True)
    if not data.strip():
        if required:
            raise bad_request("a JSON object body is required (Content-Type: application/json)")
        return {}
    if not request.is_json:
        raise bad_request("the body must be JSON, sent with Content-Type: application/json")
    try:
        value = json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise bad_request("the body must be a JSON object")
    problems = dict(_unstorable(value, ""))
    if problems:
        raise ValidationError(problems)
    return value


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unstorable(value: Any, path: str) -> Iterable[tuple[str, str]]:
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not _storable(item):
                yield where or "body", "must not contain NUL characters or unpaired surrogates"
        elif isinstance(item, dict):
            for key, sub in item.items():
                name = f"{where}.{key}" if where else key
                if not _storable(key):
                    yield (where or "body"), "keys must not contain NUL characters or unpaired surrogates"
                    continue
                stack.append((sub, name))
        elif isinstance(item, list):
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))


class Form:
    """Checks the fields of one JSON object, collecting every error before raising."""

    def __init__(self, data: dict[str, Any], allowed: Iterable[str] | None = None) -> None:
        self.data = data
        self.errors: dict[str, str] = {}
        if allowed is not None:
            allowed = set(allowed)
            for name in data:
                if name not in allowed:
                    self.errors[name] = "is not a known field"

    def has(self, name: str) -> bool:
        return name in self.data

    def _missing(self, name: str, required: bool) -> bool:
        if name not in self.data or self.data[name] is None:
            if required:
                self.errors[name] = "is required"
            return True
        return False

    def integer(
        self, name: str, *, required: bool = False, low: int = 0, high: int = MAX_INT32
    ) -> int | None:
        if self._missing(name, required):
            return None
        value = self.data[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.errors[name] = f"must be a whole number from {low} to {high}"
            return None
        return value

    def text(
        self, name: str, *, required: bool = False, max_length: int = 200, strip: bool = True
    ) -> str | None:
        if self._missing(name, required):
            return None
        value = self.data[name]
        if not isinstance(value, str):
            self.errors[name] = "must be a string"
            return None
        if strip:
            value = value.strip()
        if (required and not value) or len(value) > max_length:
            self.errors[name] = f"must be {1 if required else 0} to {max_length} characters"
            return None
        return value

    def boolean(self, name: str, *, required: bool = False) -> bool | None:
        if self._missing(name, required):
            return None
        value = self.data[name]
        if not isinstance(value, bool):
            self.errors[name] = "must be true or false"
            return None
        return value

    def choice(self, name: str, kind: type[enum.Enum], *, required: bool = False) -> Any:
        if self._missing(name, required):
            return None
        try:
            return kind(self.data[name])
        except (ValueError, TypeError):
            self.errors[name] = f"must be one of {', '.join(str(v.value) for v in kind)}"
            return None

    def timestamp(self, name: str) -> dt.datetime | None:
        """An ISO 8601 instant with a timezone; JSON null clears it."""
        value = self.data.get(name)
        if value is None:
            return None
        parsed = parse_instant(value)
        if parsed is None:
            self.errors[name] = "must be an ISO 8601 date-time with a timezone, like 2026-12-01T18:00:00Z"
        return parsed

    def raw(self, name: str) -> Any:
        return self.data.get(name)

    def check(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)


def parse_instant(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None or not 1900 <= parsed.year <= 9000:
        return None
    return parsed.astimezone(dt.UTC)


# -- query parameters --------------------------------------------------------------------


class Query:
    """Checks query parameters the same way as :class:`Form`."""

    def __init__(self) -> None:
        self.args = request.args
        self.errors: dict[str, str] = {}

    def integer(
        self, name: str, *, default: int | None = None, low: int = 0, high: int = MAX_INT32
    ) -> int | None:
        raw = self.args.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw, 10) if raw.strip().lstrip("-").isdigit() and len(raw) <= 20 else None
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            self.errors[name] = f"must be a whole number from {low} to {high}"
            return default
        return value

    def choice(self, name: str, values: Iterable[str]) -> str | None:
        raw = self.args.get(name)
        if raw is None or raw == "":
            return None
        values = list(values)
        if raw not in values:
            self.errors[name] = f"must be one of {', '.join(values)}"
            return None
        return raw

    def text(self, name: str, *, max_length: int = 100) -> str | None:
        raw = self.args.get(name)
        if raw is None or raw == "":
            return None
        if len(raw) > max_length or not _storable(raw):
            self.errors[name] = f"must be at most {max_length} characters, without NUL characters"
            return None
        return raw

    def names(self, name: str, allowed: Iterable[str]) -> set[str]:
        """A comma list such as ``include=participants,matches``."""
        raw = self.args.get(name)
        if not raw:
            return set()
        allowed = set(allowed)
        chosen = {part.strip() for part in raw.split(",") if part.strip()}
        if not chosen <= allowed:
            self.errors[name] = f"must be a comma list of {', '.join(sorted(allowed))}"
            return set()
        return chosen

    def page(self, *, max_per_page: int = 100, default_per_page: int = 20) -> tuple[int, int]:
        page = self.integer("page", default=1, low=1, high=100_000)
        per_page = self.integer("per_page", default=default_per_page, low=1, high=max_per_page)
        return page or 1, per_page or default_per_page

    def check(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)

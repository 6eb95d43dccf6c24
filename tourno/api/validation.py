"""Reading request input: the JSON body and the query string, parsed with the
input models of :mod:`tourno.tournaments.inputs`. Every problem becomes a
per-field message (422) or a 400 for a body that is not a JSON object at all,
before any service runs, so a bad request never reaches the database.

Before a model sees a body, :func:`json_body` refuses what JSON parsers let
through but PostgreSQL cannot store (NUL characters and lone surrogates,
anywhere, keys included) and numbers too large to be finite: they would
otherwise fail inside the driver as a 500.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable
from typing import Any, TypeVar

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from tourno.api.errors import bad_request
from tourno.tournaments.errors import ValidationError
from tourno.tournaments.inputs import UNSTORABLE, Input, QueryInput, rule, storable

Body = TypeVar("Body", bound=Input)
Query = TypeVar("Query", bound=QueryInput)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 would become infinity, which neither JSON nor PostgreSQL's jsonb can store.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _body_bytes() -> bytes:
    """The request body; 413 past MAX_CONTENT_LENGTH even when it came chunked.

    Werkzeug refuses a Content-Length over the limit, but a chunked body has
    none: it reads up to the limit and stops, and the cut-off JSON looked
    malformed (400). One more byte from the server's own stream tells a body
    of exactly the limit from a longer one."""
    data = request.get_data(cache=True)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if (
        limit is not None
        and request.content_length is None
        and len(data) >= limit
        and request.environ["wsgi.input"].read(1)
    ):
        raise RequestEntityTooLarge()
    return data


def json_body(*, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object; ``{}`` for an empty body when not required."""
    data = _body_bytes()
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


def _unstorable(value: Any, path: str) -> Iterable[tuple[str, str]]:
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not storable(item):
                yield where or "body", UNSTORABLE
        elif isinstance(item, dict):
            for key, sub in item.items():
                name = f"{where}.{key}" if where else key
                if not storable(key):
                    yield (where or "body"), "keys must not contain NUL characters or unpaired surrogates"
                    continue
                stack.append((sub, name))
        elif isinstance(item, list):
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))


def body(model: type[Body], *, required: bool = True) -> Body:
    """The JSON body parsed with ``model``; an empty optional body is ``{}``."""
    return model.check(json_body(required=required))


def query(model: type[Query]) -> Query:
    """The query string parsed with ``model`` (the first value of a repeated name).

    An empty value counts as absent (``?page=``), except for a parameter the
    document gives as an enum: ``?state=`` is none of its values, so it is a
    422 with the message of ``?state=bogus``, not "no filter"."""
    args = request.args.to_dict()
    rules = _enum_rules(model)
    blank = {name: rules[name] for name, value in args.items() if value == "" and name in rules}
    if blank:
        raise ValidationError(blank)
    return model.check(args)


@functools.cache
def _enum_rules(model: type[QueryInput]) -> dict[str, str]:
    """The query parameters of ``model`` whose schema is an enum, each with
    the message a value outside it gets."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})

    def is_enum(prop: dict[str, Any]) -> bool:
        if "enum" in prop:
            return True
        if "$ref" in prop:
            return is_enum(defs.get(prop["$ref"].rsplit("/", 1)[-1], {}))
        return any(is_enum(p) for p in prop.get("anyOf", ()))

    return {name: rule(schema, prop) for name, prop in schema.get("properties", {}).items() if is_enum(prop)}

"""The OpenAPI 3.1 document of the API, served at ``/api/v1/openapi.json``.

Generated, never written by hand: the paths and methods are the Flask rules
(``app.url_map``), each view says what it does with :func:`documented` next
to its route, and every schema is a pydantic model's ``model_json_schema()``:
the input models of :mod:`tourno.tournaments.inputs` (the ones the views
parse with, so the document and the 422s cannot disagree) and the response
shapes of :mod:`tourno.api.schemas`.

OpenAPI 3.1 because its Schema Object is JSON Schema 2020-12, which is what
pydantic emits (nullable fields as ``anyOf [..., {"type": "null"}]``); 3.0.3
would need every schema rewritten, and the pinned schemathesis (4.x) reads
3.1. ``tests/api/test_api.py`` checks that every Flask rule is documented and the
document is valid; ``tests/api/test_api_fuzz.py`` fuzzes the API from it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel
from werkzeug.routing import Rule

import tourno
from tourno.api import schemas
from tourno.tournaments import limits

bp = Blueprint("openapi", __name__)

View = TypeVar("View", bound=Callable[..., Any])
_ATTRIBUTE = "_tourno_openapi"
REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Operation:
    """What the document says about one view (all its methods)."""

    summary: str
    response: type[BaseModel] | None = None  # the JSON body of ``status``
    status: int = 200
    body: tuple[type[BaseModel], ...] = ()  # one of these JSON bodies
    body_required: bool = True
    query: type[BaseModel] | None = None
    auth: bool = False  # a bearer token is required (not just accepted)
    revalidated: bool = False  # answered with an ETag, and 304 to a matching If-None-Match
    also: Mapping[int, str] = field(default_factory=dict)  # more statuses with the same body
    html: bool = False  # a page for a person in a browser: 200 or 403
    form: type[BaseModel] | None = None  # an optional urlencoded body (html pages)
    text: str | None = None  # a plain-text body of this media type (not JSON)


def documented(summary: str, **details: Any) -> Callable[[View], View]:
    """Declare a view's operation (see :class:`Operation`); put it under the route decorator."""
    operation = Operation(summary, **details)

    def declare(view: View) -> View:
        setattr(view, _ATTRIBUTE, operation)
        return view

    return declare


class _Components:
    """``components.schemas``, filled as operations refer to models."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def schema_of(self, model: type[BaseModel]) -> dict[str, Any]:
        """The model's JSON Schema with its ``$defs`` hoisted into the components."""
        schema = model.model_json_schema(ref_template=REF)
        for name, sub in schema.pop("$defs", {}).items():
            self.schemas.setdefault(name, sub)
        return schema

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        if model.__name__ not in self.schemas:
            self.schemas[model.__name__] = self.schema_of(model)
        return {"$ref": REF.format(model=model.__name__)}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent, never null: drop the null branch of a nullable."""
    options = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    if len(options) == 1:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return {**options[0], **rest}
    return schema


def _param(name: str, where: str, schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema}


_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^:<>]+)>")


def _path_of(rule: Rule) -> tuple[str, list[dict[str, Any]]]:
    """``/tournaments/<id:tid>`` -> ``/tournaments/{tid}`` and its path parameters."""
    # Every path variable is an id; the example points at the first rows, so
    # example-based testing reaches real objects.
    schema = {"type": "integer", "minimum": 1, "maximum": limits.MAX_ID}
    params = [
        {**_param(name, "path", schema, required=True), "example": 1} for name in _VARIABLE.findall(rule.rule)
    ]
    return _VARIABLE.sub(r"{\1}", rule.rule), params


def _error(components: _Components) -> dict[str, Any]:
    return {
        "description": "Error",
        "content": {"application/json": {"schema": components.ref(schemas.Error)}},
    }


def _operation(
    endpoint: str, op: Operation, path_params: list[dict[str, Any]], components: _Components
) -> dict[str, Any]:
    params = list(path_params)
    if op.query is not None:
        query = components.schema_of(op.query)
        params += [_param(name, "query", _without_null(s)) for name, s in query["properties"].items()]
    responses: dict[str, Any]
    if op.html:
        page = {"content": {"text/html": {"schema": {"type": "string"}}}}
        responses = {
            "200": {"description": "OK", **page},
            "403": {"description": "Missing or wrong signature; nothing changed", **page},
        }
    elif op.text is not None:
        responses = {"200": {"description": "OK", "content": {op.text: {"schema": {"type": "string"}}}}}
    else:
        content = {} if op.response is None else {"application/json": {"schema": components.ref(op.response)}}
        ok: dict[str, Any] = {"description": "OK", "content": content}
        responses = {str(op.status): ok, **{str(s): {**ok, "description": d} for s, d in op.also.items()}}
        if op.revalidated:
            ok["headers"] = {"ETag": {"description": "The body's version", "schema": {"type": "string"}}}
            responses["304"] = {"description": "Not modified: If-None-Match names this version"}
            params.append(_param("If-None-Match", "header", {"type": "string"}))
    responses["default"] = _error(components)
    operation: dict[str, Any] = {"operationId": endpoint, "summary": op.summary, "responses": responses}
    if params:
        operation["parameters"] = params
    if op.body:
        refs = [components.ref(model) for model in op.body]
        schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
        operation["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": schema}},
        }
    elif op.form is not None:
        operation["requestBody"] = {
            "required": False,
            "content": {"application/x-www-form-urlencoded": {"schema": components.ref(op.form)}},
        }
    operation["security"] = [{"bearer": []}] if op.auth else [{}, {"bearer": []}]
    return operation


def document(app: Flask) -> dict[str, Any]:
    """The document for ``app``'s routes; a view without :func:`documented` is left out
    (``tests/api/test_api.py`` fails on one)."""
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        op = getattr(app.view_functions[rule.endpoint], _ATTRIBUTE, None)
        if op is None:
            continue
        path, path_params = _path_of(rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(
                rule.endpoint, op, path_params, components
            )
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tourno API", "version": tourno.__version__},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@bp.get("/openapi.json")
@documented("This document", response=schemas.Document)
def document_view() -> Response:
    # Built once per app: the routes and models do not change while it runs.
    built = current_app.extensions.get("tourno_openapi")
    if built is None:
        built = current_app.extensions["tourno_openapi"] = document(current_app)
    return jsonify(built)

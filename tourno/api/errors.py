"""One JSON error shape for every refusal: ``{"error": {"code", "message", "fields"}}``.

Domain refusals map by their stable ``code``; HTTP-level problems (bad JSON,
wrong method, oversized body) and a database that went away get the same
shape, so a client parses one thing. Anything unexpected is logged and
answered with a 500 in that shape too, but the aim is that no input gets there.
"""

from __future__ import annotations

import logging
from typing import Any

import peewee
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from tourno.db import DatabaseUnavailable
from tourno.errors import first_line
from tourno.tournaments.errors import DomainError, ValidationError

log = logging.getLogger(__name__)

#: DomainError.code -> HTTP status.
DOMAIN_STATUS = {
    "not_found": 404,
    "permission_denied": 403,
    "validation_error": 422,
    "invalid_state": 409,
    "tournament_full": 409,
    "already_registered": 409,
    "not_registered": 409,
    "deadline_passed": 409,
    "not_your_match": 409,
}

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    431: "request_header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}


class ApiError(Exception):
    """A refusal decided by the API layer itself (authentication, bad input)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.headers = headers or {}


def unauthorized(message: str = "authentication required: send Authorization: Bearer <token>") -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="tourno"'})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def error_document(code: str, message: str, fields: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON of every error response (also gunicorn's own, see :mod:`tourno.api.worker`)."""
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def error_response(
    status: int, code: str, message: str, fields: dict[str, str] | None = None, headers: Any = None
) -> Response:
    response = jsonify(error_document(code, message, fields))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.fields, exc.headers)

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> Response:
        fields = exc.errors if isinstance(exc, ValidationError) else None
        return error_response(DOMAIN_STATUS.get(exc.code, 409), exc.code, exc.message, fields)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        valid_methods = getattr(exc, "valid_methods", None)  # MethodNotAllowed's
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(valid_methods)
        message = exc.description or exc.name
        if status == 404:
            message = "no such resource"
        elif status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"the request body is larger than {limit} bytes" if limit else "request body too large"
        return error_response(status, HTTP_CODES.get(status, "http_error"), message, None, headers)

    @app.errorhandler(DatabaseUnavailable)
    def _no_database(exc: DatabaseUnavailable) -> Response:
        log.warning("database unavailable: %s", exc)
        return _unavailable()

    @app.errorhandler(peewee.OperationalError)
    @app.errorhandler(peewee.InterfaceError)
    def _database_lost(exc: Exception) -> Response:
        # The server went away mid-request (restart, failover) or SQLite stayed
        # locked past its busy timeout: the client may retry.
        log.warning("database error: %s", first_line(exc, with_type=False))
        return _unavailable()

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; it has been logged")


def _unavailable() -> Response:
    return error_response(
        503, "database_unavailable", "the database is unavailable; retry later", None, {"Retry-After": "5"}
    )

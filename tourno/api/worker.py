"""gunicorn's own refusals in the API's JSON error shape, for the worker of
``tourno serve`` (:mod:`tourno.cli.serve_worker`).

gunicorn answers a request it cannot parse (a request line over
``limit_request_line``, too many or too large headers, a bad chunk) itself,
before the WSGI app sees it, with a small HTML page. A client of a JSON API
then gets the one response it cannot parse. Everything the app answers is
already JSON (:mod:`tourno.api.errors`); this covers the rest.
"""

from __future__ import annotations

import json

from gunicorn.http import errors as http_errors

from tourno.api.errors import HTTP_CODES, error_document

#: gunicorn's parse errors that are not a plain 400: (status, reason).
STATUS = {
    http_errors.LimitRequestLine: (414, "URI Too Long"),
    http_errors.LimitRequestHeaders: (431, "Request Header Fields Too Large"),
    http_errors.ExpectationFailed: (417, "Expectation Failed"),
    http_errors.ForbiddenProxyRequest: (403, "Forbidden"),
    http_errors.UnsupportedTransferCoding: (501, "Not Implemented"),
}

#: Parse errors that are the application's or the configuration's fault, not
#: the client's: gunicorn's own handling (a logged 500) stays.
NOT_THE_CLIENTS = (
    http_errors.InvalidResponseHeader,
    http_errors.InvalidResponseHeaderName,
    http_errors.ConfigurationProblem,
)


def refusal(exc: Exception) -> tuple[int, str, str] | None:
    """(status, reason, message) for a request gunicorn refused, or None
    when ``exc`` is no refusal of a client's request."""
    if not isinstance(exc, http_errors.ParseException) or isinstance(exc, NOT_THE_CLIENTS):
        return None
    status, reason = next(
        (answer for kind, answer in STATUS.items() if isinstance(exc, kind)), (400, "Bad Request")
    )
    if isinstance(exc, http_errors.LimitRequestLine):
        message = f"the request line is too long: {exc}"
    elif isinstance(exc, http_errors.LimitRequestHeaders):
        message = f"the request headers are too large: {exc}"
    else:
        message = f"malformed HTTP request: {exc}"
    return status, reason, message


def response_bytes(status: int, reason: str, message: str) -> bytes:
    document = error_document(HTTP_CODES.get(status, "bad_request"), message)
    body = json.dumps(document, separators=(",", ":")).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body

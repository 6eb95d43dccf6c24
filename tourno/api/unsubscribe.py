"""``/unsubscribe``: the target of the signed link in bulk mail.

``GET`` shows a small confirmation page whose button POSTs back; ``POST`` is
both that button and RFC 8058 one-click unsubscribe, which a mail client
sends on its own (body ``List-Unsubscribe=One-Click``) to the URL in the
``List-Unsubscribe`` header. Both need the link's signature (``s``) of the
address (``u``): a missing or wrong one gets a 403 page and writes nothing.
Answers are small HTML pages, since a person in a browser reads them.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from flask import Blueprint, Response, current_app, render_template_string, request, url_for
from pydantic import BaseModel, Field

from tourno.api.openapi import documented
from tourno.mail import unsubscribe as links
from tourno.tournaments import limits, services

log = logging.getLogger(__name__)
bp = Blueprint("unsubscribe", __name__)

MAX_ADDRESS = limits.EMAIL_MAX_LENGTH
MAX_SIGNATURE = 128


class UnsubscribeLink(BaseModel):
    """The signed link's query. Both are optional so that a broken link gets
    the 403 page, not a JSON error; checked by :func:`_signed_address`."""

    u: Annotated[str, Field(max_length=MAX_ADDRESS)] | None = None
    s: Annotated[str, Field(max_length=MAX_SIGNATURE)] | None = None


class OneClick(BaseModel):
    """RFC 8058's body (the page's form sends the same); not required."""

    list_unsubscribe: Literal["One-Click"] | None = Field(default=None, alias="List-Unsubscribe")


# Flask autoescapes templates rendered from strings: the address cannot inject markup.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }}</title>
</head>
<body style="font-family: sans-serif; line-height: 1.5; max-width: 36em; margin: 2em auto;">
<h1>{{ title }}</h1>
<p>{{ message }}</p>
{% if action %}<form method="post" action="{{ action }}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button>
</form>{% endif %}
</body>
</html>
"""


def _page(status: int, title: str, message: str, action: str | None = None) -> Response:
    body = render_template_string(_PAGE, title=title, message=message, action=action)
    response = Response(body, status=status, mimetype="text/html")
    # A signed link in a page must not be cached by a proxy nor leak as a Referer.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _signed_address() -> str | None:
    """The link's address when its signature is right, else None."""
    address = request.args.get("u", "")
    signature = request.args.get("s", "")
    if not address or len(address) > MAX_ADDRESS or len(signature) > MAX_SIGNATURE:
        return None
    secret = current_app.config["TOURNO_SETTINGS"].secret_key
    if not links.verify(secret, address, signature):
        return None
    return links.normalize_address(address)


def _refused() -> Response:
    log.info(
        "unsubscribe refused: missing or wrong signature for %r", request.args.get("u", "")[:MAX_ADDRESS]
    )
    return _page(
        403,
        "Link not valid",
        "This unsubscribe link is incomplete or was changed. Use the link from the email itself.",
    )


@bp.get("/unsubscribe")
@documented("Confirm unsubscribing (signed link)", query=UnsubscribeLink, html=True)
def confirm() -> Response:
    address = _signed_address()
    if address is None:
        return _refused()
    action = url_for("unsubscribe.apply", u=address, s=request.args["s"].strip().lower())
    return _page(
        200,
        "Unsubscribe from announcements",
        f"Stop announcements from tournament organizers to {address}? "
        "Mail about your own matches and registrations still comes.",
        action,
    )


@bp.post("/unsubscribe")
@documented(
    "Unsubscribe from bulk mail: the page's form or RFC 8058 one-click",
    query=UnsubscribeLink,
    form=OneClick,
    html=True,
)
def apply() -> Response:
    address = _signed_address()
    if address is None:
        return _refused()
    # One-click clients send List-Unsubscribe=One-Click; the page's form sends the
    # same. Neither body is required: the signed URL alone says who and what.
    now = current_app.config["TOURNO_CLOCK"]()
    if services.unsubscribe(address, now=now):
        log.info("unsubscribed %s from bulk mail", address)
    return _page(
        200,
        "Unsubscribed",
        f"{address} gets no more announcements. Mail about your own matches and registrations still comes.",
    )

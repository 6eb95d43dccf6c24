"""Signed unsubscribe links for bulk mail.

A link is ``{app_url}/unsubscribe?u=<address>&s=<signature>``, the signature
being the hex HMAC-SHA256 of the lower-cased address under
``TOURNO_SECRET_KEY``. It needs no database row per message and never
expires: an old announcement's link still works, and only someone holding
the key can make a link for another address.
"""

from __future__ import annotations

import hashlib
import hmac
from email.utils import parseaddr
from urllib.parse import quote


def normalize_address(address: str) -> str:
    return address.strip().lower()


def sign(secret_key: str, address: str) -> str:
    """The hex HMAC-SHA256 of the lower-cased ``address``."""
    return hmac.new(
        secret_key.encode("utf-8"), normalize_address(address).encode("utf-8"), hashlib.sha256
    ).hexdigest()


def verify(secret_key: str | None, address: str | None, signature: str | None) -> bool:
    """True when ``signature`` is ``address``'s (constant-time compare)."""
    if not secret_key or not address or not signature:
        return False
    expected = sign(secret_key, address)
    # compare_digest wants two str of ASCII: anything else is not a signature of ours.
    if not signature.isascii():
        return False
    return hmac.compare_digest(expected, signature.strip().lower())


def link(app_url: str, secret_key: str, address: str) -> str:
    """The unsubscribe URL for ``address`` (RFC 8058 one-click POSTs to it too)."""
    address = normalize_address(parseaddr(address)[1] or address)
    return f"{app_url}/unsubscribe?u={quote(address, safe='@')}&s={sign(secret_key, address)}"

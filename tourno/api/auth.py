"""Bearer tokens: ``Authorization: Bearer <token>``.

A token is 32 random bytes (``secrets.token_urlsafe``), shown once. Only its
SHA-256 hex digest is stored, in ``users.api_token_hash``, whose unique index
turns the check into one indexed equality lookup: no comparison of secrets
in Python, and a leaked database holds no usable token.
"""

from __future__ import annotations

import hashlib
import secrets

from flask import g, request

from tourno.accounts.models import Role, User
from tourno.api.errors import ApiError, unauthorized
from tourno.tournaments import services

_UNSET = object()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def issue_token(user: User) -> str:
    """Give ``user`` a new token (the old one stops working); returns it."""
    token = new_token()
    services.set_api_token_hash(user, hash_token(token))
    return token


def user_for_token(token: str) -> User | None:
    return User.get_or_none(User.api_token_hash == hash_token(token))


def current_user() -> User | None:
    """The caller, None when anonymous; a malformed or unknown token is a 401
    (a client with a stale token should hear so, not be served as anonymous)."""
    cached = g.get("_tourno_user", _UNSET)
    if cached is not _UNSET:
        return cached
    header = request.headers.get("Authorization")
    user = None
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("the Authorization header must be: Bearer <token>")
        if len(token) > 200:
            raise unauthorized("invalid token")
        user = user_for_token(token)
        if user is None:
            raise unauthorized("invalid token")
    g._tourno_user = user
    return user


def require_user() -> User:
    user = current_user()
    if user is None:
        raise unauthorized()
    return user


def require_role(*roles: Role) -> User:
    user = require_user()
    if user.role not in roles:
        raise ApiError(
            403, "permission_denied", f"only {' or '.join(r.value for r in roles)} users may do this"
        )
    return user

"""The users table and its role enum."""

from __future__ import annotations

import enum

import peewee

from tourno.db import BaseModel, EnumField, SerialField, TimestampField, utcnow


class Role(enum.StrEnum):
    PLAYER = "player"
    ORGANIZER = "organizer"
    ADMIN = "admin"


class User(BaseModel):
    id = SerialField()
    # Stored lower-cased by the services, so the unique index is case-insensitive in effect.
    email = peewee.CharField(max_length=320, unique=True)
    display_name = peewee.CharField(max_length=100)
    role = EnumField(Role, default=Role.PLAYER)
    # A hash of the API token (never the token); unique so a lookup finds one user.
    api_token_hash = peewee.CharField(max_length=128, null=True, unique=True)
    # Opt-out of non-transactional mail (announcements); match and registration mail still goes.
    notifications_opt_out = peewee.BooleanField(default=False)
    created_at = TimestampField(default=utcnow)

    class Meta:
        table_name = "users"


MODELS = [User]

CHECKS: dict[str, tuple[str, str]] = {
    "users_role_check": ("users", f"role IN ({', '.join(repr(r.value) for r in Role)})"),
}

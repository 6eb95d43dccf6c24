"""Every refusal the domain services raise: one hierarchy, each with a stable
``code`` the API puts in its JSON errors and tests can match on."""

from __future__ import annotations


class DomainError(Exception):
    """A state change the rules refuse. Nothing was written."""

    code = "domain_error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.__doc__ or self.code
        super().__init__(self.message)

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class NotFound(DomainError):
    """No such tournament, participant or match."""

    code = "not_found"


class InvalidState(DomainError):
    """The object is not in a state that allows this change."""

    code = "invalid_state"


class TournamentFull(DomainError):
    """Every place is taken and the tournament keeps no waitlist."""

    code = "tournament_full"


class AlreadyRegistered(DomainError):
    """The user is already registered or waitlisted in this tournament."""

    code = "already_registered"


class NotRegistered(DomainError):
    """The user has no active entry in this tournament."""

    code = "not_registered"


class DeadlinePassed(DomainError):
    """The window for this action has closed."""

    code = "deadline_passed"


class NotYourMatch(DomainError):
    """The user plays in neither slot of this match."""

    code = "not_your_match"


class PermissionDenied(DomainError):
    """The user may not do this."""

    code = "permission_denied"


class ValidationError(DomainError):
    """Some values are invalid; ``errors`` maps each field to its message."""

    code = "validation_error"

    def __init__(self, errors: dict[str, str], message: str | None = None) -> None:
        self.errors = dict(errors)
        super().__init__(message or "invalid: " + ", ".join(sorted(self.errors)))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "errors": self.errors}

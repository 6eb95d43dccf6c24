"""Every state change of the domain, each in one transaction. The API and the
jobs call these functions and nothing else writes domain rows."""

from tourno.tournaments.services.registration import (
    check_in,
    check_in_window,
    close_registration,
    create_tournament,
    create_user,
    public_state,
    publish,
    register,
    registration_open,
    withdraw,
)
from tourno.tournaments.services.start import start_tournament

__all__ = [
    "check_in",
    "check_in_window",
    "close_registration",
    "create_tournament",
    "create_user",
    "public_state",
    "publish",
    "register",
    "registration_open",
    "start_tournament",
    "withdraw",
]

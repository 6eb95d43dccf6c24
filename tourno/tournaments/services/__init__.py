"""Every state change of the domain, each in one transaction. The API and the
jobs call these functions and nothing else writes domain rows.

The modules, in their import order (each imports only those before it):
``common`` (the row lock, the permission check, version bumps, the event log),
``notify`` (the mail the changes write), ``brackets`` (planning and writing a
bracket), ``standings`` (read only), ``progress`` (deciding a match and what
follows: the one path), then the services people and jobs call:
``reporting`` (players), ``organizer``, ``registration``, ``lifecycle``,
``start``, ``deadlines``, ``reminders``, ``accounts``. The pure rules of a
decision are in :mod:`tourno.tournaments.decisions`.
"""

from __future__ import annotations

from tourno.tournaments.services.accounts import announce, set_api_token_hash, unsubscribe
from tourno.tournaments.services.deadlines import resolve_expired_match
from tourno.tournaments.services.lifecycle import (
    add_entrant,
    add_entrants,
    cancel_tournament,
    finalize,
    process_check_ins,
    remove_participant,
    set_seed,
    update_tournament,
)
from tourno.tournaments.services.organizer import (
    disqualify_participant,
    extend_deadline,
    forfeit_match,
    reopen_match,
    resolve_match,
)
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
from tourno.tournaments.services.reminders import remind_full_tournament, warn_match_deadline
from tourno.tournaments.services.reporting import claim_forfeit, confirm_result, dispute_result, report_result
from tourno.tournaments.services.standings import standings
from tourno.tournaments.services.start import start_tournament

__all__ = [
    "announce",
    "set_api_token_hash",
    "unsubscribe",
    "add_entrant",
    "add_entrants",
    "cancel_tournament",
    "claim_forfeit",
    "confirm_result",
    "disqualify_participant",
    "dispute_result",
    "extend_deadline",
    "finalize",
    "forfeit_match",
    "process_check_ins",
    "remove_participant",
    "reopen_match",
    "report_result",
    "resolve_expired_match",
    "resolve_match",
    "set_seed",
    "standings",
    "update_tournament",
    "check_in",
    "check_in_window",
    "close_registration",
    "create_tournament",
    "create_user",
    "public_state",
    "publish",
    "register",
    "registration_open",
    "remind_full_tournament",
    "start_tournament",
    "warn_match_deadline",
    "withdraw",
]

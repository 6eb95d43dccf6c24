"""Every input limit of the domain, written once.

The input models (:mod:`tourno.tournaments.inputs`), the database CHECK
constraints (:data:`tourno.tournaments.models.CHECKS`) and the OpenAPI
document (generated from the models) all read these names, so they cannot
disagree. Changing a bound that a CHECK uses needs a migration: the
migrations keep frozen copies of the CHECK text and a test compares them.
"""

from __future__ import annotations

#: The largest id a bigint column holds.
MAX_ID = 2**63 - 1

# -- tournaments -----------------------------------------------------------------------------

MIN_CAPACITY = 2
MAX_CAPACITY = 4096
MIN_PARTICIPANTS = 2  # the fewest a tournament can start with

NAME_MAX_LENGTH = 200  # tournament name
GAME_MAX_LENGTH = 100

#: Match deadline: 10 minutes to 7 days (DESIGN.md §5).
MIN_MATCH_DEADLINE_MINUTES = 10
MAX_MATCH_DEADLINE_MINUTES = 7 * 24 * 60
MIN_DEADLINE_WARNING_MINUTES = 0
#: A warning lead as long as the deadline itself means no warning is sent.
MAX_DEADLINE_WARNING_MINUTES = MAX_MATCH_DEADLINE_MINUTES
MIN_CHECK_IN_MINUTES = 1
MAX_CHECK_IN_MINUTES = 7 * 24 * 60

# -- participants and users ------------------------------------------------------------------

DISPLAY_NAME_MAX_LENGTH = 100  # a user's and a participant's
EMAIL_MAX_LENGTH = 320  # RFC 5321's longest path

# -- matches ---------------------------------------------------------------------------------

MAX_SCORE = 1_000_000
MAX_GAMES = 99  # per-game scores in one report
COMMENT_MAX_LENGTH = 2000
MIN_EXTENSION_MINUTES = 1
MAX_EXTENSION_MINUTES = 7 * 24 * 60

# -- announcements ---------------------------------------------------------------------------

SUBJECT_MAX_LENGTH = 200
BODY_MAX_LENGTH = 20_000

# -- lists -----------------------------------------------------------------------------------

MAX_PAGE = 100_000
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
MAX_ROUND = 100_000
QUERY_TEXT_MAX_LENGTH = 100

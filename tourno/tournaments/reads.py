"""The read side's hand-written statements: the hot reads of a bracket, which
every viewer of a running tournament polls. Each is a fast path over what
peewee would do, kept because ``bench/api.py`` measures the difference and
``tests/api/test_api_cache.py`` pins the behaviour; the API builds its JSON from
what these return and never runs SQL itself.
"""

from __future__ import annotations

from typing import Any

from tourno import db
from tourno.db import database
from tourno.tournaments.models import Match, Round, Tournament

# -- the tournament row with its data version -----------------------------------------------

_FIELDS = Tournament._meta.sorted_fields
_NAMES = [f.name for f in _FIELDS]
_CONVERTERS = [f.python_value for f in _FIELDS]
#: Written out once: peewee would build the same statement on every request.
_ROW_SQL = "SELECT {}, xmin::text FROM tournaments WHERE id = %s".format(
    ", ".join(f'"{f.column_name}"' for f in _FIELDS)
)


def tournament_row(tid: int) -> tuple[Tournament | None, str | None]:
    """The tournament (None when there is none) and its data token: the row's
    ``xmin`` on PostgreSQL, None on SQLite (no caching there)."""
    if not db.is_postgres():
        return Tournament.get_or_none(Tournament.id == tid), None
    row = database.execute_sql(_ROW_SQL, (tid,)).fetchone()
    if row is None:
        return None, None
    # Built from the row's values directly: no model query, no second round trip.
    t = Tournament(__no_default__=1)
    t.__data__.update(
        (name, None if value is None else convert(value))
        for name, convert, value in zip(_NAMES, _CONVERTERS, row, strict=False)
    )
    return t, row[-1]


# -- match rows --------------------------------------------------------------------------------

#: Every column of a match row as the API shows it, with its round's number and name.
MATCH_FIELDS = (
    "bracket",
    "identifier",
    "position",
    "state",
    "player1_is_bye",
    "player2_is_bye",
    "player1_score",
    "player2_score",
    "game_scores",
    "is_draw",
    "result_type",
    "opened_at",
    "underway_at",
    "deadline_at",
    "deadline_extensions",
    "completed_at",
    "version",
    "updated_at",
)
MATCH_COLUMNS: list[tuple[str, Any]] = [
    ("id", Match.id),
    ("tournament_id", Match.tournament),
    ("round_id", Match.round),
    ("round_number", Round.number),
    ("round_name", Round.name),
    ("player1_id", Match.player1),
    ("player2_id", Match.player2),
    ("winner_id", Match.winner),
    ("loser_id", Match.loser),
    *((name, getattr(Match, name)) for name in MATCH_FIELDS),
]


def match_rows(query: Any) -> list[tuple[Any, ...]]:
    """The rows of ``query`` (a ``Match`` select joined to ``Round``) as raw
    cursor tuples in :data:`MATCH_COLUMNS` order, without a model instance per
    match."""
    sql, params = query.select(*(column for _, column in MATCH_COLUMNS)).sql()
    rows: list[tuple[Any, ...]] = database.execute_sql(sql, params).fetchall()
    return rows


#: The statement of :func:`tournament_match_rows` per database class (quoting
#: and placeholders differ): building it with peewee costs more than running it.
_TOURNAMENT_MATCHES_SQL: dict[type, str] = {}


def tournament_match_rows(tid: int) -> list[tuple[Any, ...]]:
    """Every match of a tournament in bracket order (round, position), as :func:`match_rows`."""
    kind = type(database.obj)
    sql = _TOURNAMENT_MATCHES_SQL.get(kind)
    if sql is None:
        query = Match.select().join(Round).where(Match.tournament == 0).order_by(Match.round, Match.position)
        sql, params = query.select(*(column for _, column in MATCH_COLUMNS)).sql()
        if params != [0]:
            raise RuntimeError(f"unexpected parameters {params!r} in the tournament matches statement")
        _TOURNAMENT_MATCHES_SQL[kind] = sql
    rows: list[tuple[Any, ...]] = database.execute_sql(sql, [tid]).fetchall()
    return rows

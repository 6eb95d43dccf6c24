"""The input of every command and list query, declared once as pydantic models.

The services check their arguments with these models (so jobs, the CLI and
the API get the same checks), the API parses request bodies and query strings
with them, the OpenAPI document's schemas are generated from them, and their
bounds come from :mod:`tourno.tournaments.limits`, which the database CHECK
constraints read too. Only rules that need the database (a winner who plays in the match, a
capacity not below the entrants already in) stay in the services.

``Model.check(data)`` validates and raises the domain's
:class:`~tourno.tournaments.errors.ValidationError`, one message per field,
worded from the field's JSON Schema, so the 422 a client gets and the
document it reads say the same thing. Body models are strict (``true`` is
not a number and ``"5"`` is not 5) and refuse unknown fields; query models
parse text, as query strings are text, and ignore unknown parameters.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    WithJsonSchema,
)

from tourno.tournaments import limits
from tourno.tournaments.errors import ValidationError
from tourno.tournaments.models import (
    EliminationNoShowPolicy,
    FinalSecondExpiry,
    LeagueNoShowPolicy,
    MatchState,
    ParticipantStatus,
    ReportMode,
    TournamentFormat,
    TournamentState,
)

INSTANT_RULE = "an ISO 8601 date-time with a timezone, like 2026-12-01T18:00:00Z"
UNSTORABLE = "must not contain NUL characters or unpaired surrogates"


def storable(text: str) -> bool:
    """Whether PostgreSQL can store ``text``: no NUL character, no lone surrogate
    (either would fail inside the driver)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable_text(text: str) -> str:
    if not storable(text):
        raise ValueError(UNSTORABLE)
    return text


def parse_instant(value: object) -> dt.datetime | None:
    """An aware ``datetime`` (in UTC) from ISO 8601 text or a datetime; None if it is not one."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None or not 1900 <= parsed.year <= 9000:
        return None
    return parsed.astimezone(dt.UTC)


def _instant(value: object) -> dt.datetime:
    parsed = parse_instant(value)
    if parsed is None:
        raise ValueError(f"must be {INSTANT_RULE}")
    return parsed


def _comma_list(value: object) -> object:
    return {part.strip() for part in value.split(",") if part.strip()} if isinstance(value, str) else value


# -- field types -----------------------------------------------------------------------------
# Bodies are strict: a bool is not an int, a number is not a string.

Id = Annotated[int, Strict(), Field(ge=1, le=limits.MAX_ID)]
Instant = Annotated[
    dt.datetime,
    BeforeValidator(_instant),
    WithJsonSchema({"type": "string", "format": "date-time", "description": INSTANT_RULE}),
]
Capacity = Annotated[int, Strict(), Field(ge=limits.MIN_CAPACITY, le=limits.MAX_CAPACITY)]
Seed = Annotated[int, Strict(), Field(ge=1, le=limits.MAX_CAPACITY)]
Score = Annotated[int, Strict(), Field(ge=0, le=limits.MAX_SCORE)]
GameScore = Annotated[list[Score], Field(min_length=2, max_length=2)]
DisplayName = Annotated[
    str,
    Strict(),
    StringConstraints(strip_whitespace=True, min_length=1, max_length=limits.DISPLAY_NAME_MAX_LENGTH),
]


def _trimmed_or_none(text: str) -> str | None:
    return text.strip() or None


# The length is checked before trimming, as the document's maxLength says; a
# blank comment is no comment.
Comment = Annotated[
    str, Strict(), StringConstraints(max_length=limits.COMMENT_MAX_LENGTH), AfterValidator(_trimmed_or_none)
]


def _email(address: str) -> str:
    if "@" not in address:
        raise ValueError("must be an email address")
    return address


Email = Annotated[
    str,
    Strict(),
    StringConstraints(strip_whitespace=True, to_lower=True, max_length=limits.EMAIL_MAX_LENGTH),
    AfterValidator(_email),
]


def _unset() -> Any:
    """The default of an optional field that is left out rather than null: the
    caller sends only the fields given (``values()``), the service fills in
    the rest."""
    return Field(default=None)


def drop_placeholder_defaults(schema: dict[str, Any]) -> None:
    """A left-out field is not null (nor an empty list): keep such placeholder
    defaults out of the document."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] in (None, []):
            del prop["default"]


class Input(BaseModel):
    """A command's body: strict, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=drop_placeholder_defaults)

    #: Field name -> the services' keyword name, where they differ (the API
    #: names ids ``winner_id``, the services take ``winner``).
    argument_names: ClassVar[dict[str, str]] = {}

    @classmethod
    def check(cls, data: Mapping[str, Any]) -> Self:
        """``data`` validated, or the domain's ValidationError naming each bad field."""
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ValidationError(problems(cls, exc)) from None

    @classmethod
    def values_or_problems(cls, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """(the given fields validated, no problems), or (``data`` as it came,
        the problems by field): for a service that adds the problems of its
        own rules before it refuses, so one answer names every bad field."""
        try:
            return cls.check(data).values(), {}
        except ValidationError as exc:
            return dict(data), exc.errors

    @classmethod
    def check_arguments(cls, **arguments: Any) -> Self:
        """Like :meth:`check`, from a service's keyword arguments: the names in
        :attr:`argument_names` are translated both ways, so the service's
        ValidationError names its own arguments (``winner``, not ``winner_id``)."""
        fields = {argument: field for field, argument in cls.argument_names.items()}
        try:
            return cls.check({fields.get(name, name): value for name, value in arguments.items()})
        except ValidationError as exc:
            renamed = {cls.argument_names.get(name, name): message for name, message in exc.errors.items()}
            raise ValidationError(renamed) from None

    def values(self) -> dict[str, Any]:
        """The fields the caller gave, validated."""
        return self.model_dump(exclude_unset=True)


class QueryInput(Input):
    """A list's query string: text parsed into numbers and choices; other
    parameters are ignored, empty ones count as absent."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=drop_placeholder_defaults)

    @classmethod
    def check(cls, data: Mapping[str, Any]) -> Self:
        return super().check({name: value for name, value in data.items() if value != ""})


# -- users -----------------------------------------------------------------------------------


class UserInput(Input):
    """Signing up."""

    email: Email
    display_name: DisplayName


# -- tournaments -----------------------------------------------------------------------------


class TournamentOptions(Input):
    """The optional settings of a tournament; the service's defaults fill in
    what is left out. Cross-field rules (``min_participants <= capacity``,
    check-in needs ``starts_at``, registration closes before the start) are the
    service's."""

    min_participants: Annotated[int, Strict(), Field(ge=limits.MIN_PARTICIPANTS, le=limits.MAX_CAPACITY)] = (
        _unset()
    )
    waitlist_enabled: Annotated[bool, Strict()] = _unset()
    starts_at: Instant | None = _unset()
    registration_closes_at: Instant | None = _unset()
    auto_start: Annotated[bool, Strict()] = _unset()
    check_in_enabled: Annotated[bool, Strict()] = _unset()
    check_in_minutes: Annotated[
        int, Strict(), Field(ge=limits.MIN_CHECK_IN_MINUTES, le=limits.MAX_CHECK_IN_MINUTES)
    ] = _unset()
    match_deadline_minutes: Annotated[
        int,
        Strict(),
        Field(ge=limits.MIN_MATCH_DEADLINE_MINUTES, le=limits.MAX_MATCH_DEADLINE_MINUTES),
    ] = _unset()
    deadline_warning_minutes: Annotated[
        int,
        Strict(),
        Field(ge=limits.MIN_DEADLINE_WARNING_MINUTES, le=limits.MAX_DEADLINE_WARNING_MINUTES),
    ] = _unset()
    report_mode: ReportMode = _unset()
    no_show_policy_elimination: EliminationNoShowPolicy = _unset()
    no_show_policy_league: LeagueNoShowPolicy = _unset()
    final_second_expiry: FinalSecondExpiry = _unset()
    settings: dict[str, Any] | None = _unset()


TournamentName = Annotated[
    str, Strict(), StringConstraints(strip_whitespace=True, min_length=1, max_length=limits.NAME_MAX_LENGTH)
]


def _trimmed_game(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError(f"must be 1 to {limits.GAME_MAX_LENGTH} characters, not only spaces")
    return text


# The length is checked on the text as sent, which is what the document's
# maxLength describes, and only then trimmed: what is stored is never longer.
# (Trimming first let 110 characters with padding through a maxLength of 100.)
GameName = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=limits.GAME_MAX_LENGTH),
    AfterValidator(_trimmed_game),
]


class TournamentInput(TournamentOptions):
    """Creating a tournament."""

    name: TournamentName
    game: GameName
    format: TournamentFormat
    capacity: Capacity


class TournamentUpdate(TournamentOptions):
    """Changing some of a tournament's settings; which may still change is the service's rule."""

    name: TournamentName = _unset()
    game: GameName = _unset()
    format: TournamentFormat = _unset()
    capacity: Capacity = _unset()


class TournamentQuery(QueryInput):
    include: Annotated[
        frozenset[Literal["participants", "matches"]],
        BeforeValidator(_comma_list),
        WithJsonSchema(
            {
                "type": "string",
                "enum": ["participants", "matches", "participants,matches"],
                "description": "a comma list of matches, participants",
            }
        ),
    ] = frozenset()


class Paging(QueryInput):
    page: Annotated[int, Field(ge=1, le=limits.MAX_PAGE)] = 1
    per_page: Annotated[int, Field(ge=1, le=limits.MAX_PER_PAGE)] = limits.DEFAULT_PER_PAGE


class TournamentListQuery(Paging):
    state: TournamentState | None = None
    format: TournamentFormat | None = None
    game: (
        Annotated[
            str,
            StringConstraints(max_length=limits.QUERY_TEXT_MAX_LENGTH),
            AfterValidator(_storable_text),
        ]
        | None
    ) = None


class Announcement(Input):
    subject: Annotated[
        str,
        Strict(),
        StringConstraints(strip_whitespace=True, min_length=1, max_length=limits.SUBJECT_MAX_LENGTH),
    ]
    # Not blank (some character that is not white space), yet kept as written.
    body: Annotated[
        str, Strict(), StringConstraints(min_length=1, max_length=limits.BODY_MAX_LENGTH, pattern=r"\S")
    ]


# -- participants ----------------------------------------------------------------------------


class EntrantInput(Input):
    """An organizer adds one entrant, by name and optionally their account."""

    display_name: DisplayName
    user_id: Id | None = None


class EntrantsInput(Input):
    """An organizer adds entrants by name."""

    names: Annotated[
        list[DisplayName],
        Field(
            min_length=1,
            max_length=limits.MAX_CAPACITY,
            description=f"a list of 1 to {limits.MAX_CAPACITY} names",
        ),
    ]


class SeedInput(Input):
    seed: Seed


class ParticipantListQuery(QueryInput):
    status: ParticipantStatus | None = None


# -- matches ---------------------------------------------------------------------------------

GAME_SCORES_RULE = (
    f"a list of at most {limits.MAX_GAMES} [player1, player2] score pairs, each from 0 to {limits.MAX_SCORE}"
)


class MatchScores(Input):
    """A result as the organizer decides it. The winner may be left out when
    the scores name one; whether the winner plays in the match, agrees with
    the scores, or may be left out (a draw) is the service's rule."""

    player1_score: Score
    player2_score: Score
    winner_id: Id | None = None
    game_scores: (
        Annotated[list[GameScore], Field(max_length=limits.MAX_GAMES, description=GAME_SCORES_RULE)] | None
    ) = None

    argument_names: ClassVar[dict[str, str]] = {"winner_id": "winner"}

    def arguments(self) -> dict[str, Any]:
        """The result as the services' keyword arguments (``winner`` for
        ``winner_id``); a report's comment is not part of the result."""
        return {self.argument_names.get(name, name): getattr(self, name) for name in MatchScores.model_fields}


class ResultReport(MatchScores):
    """A player reports their match's result."""

    comment: Comment | None = None


class ForfeitClaim(Input):
    """A player claims the opponent did not show up (the same endpoint as a report)."""

    forfeit_claim: Annotated[Literal[True], Field(description="true (or left out to report a result)")]
    comment: Comment | None = None


class DisputeInput(Input):
    comment: Comment | None = None


class ForfeitDecision(Input):
    """The organizer records a forfeit by the named participant."""

    argument_names: ClassVar[dict[str, str]] = {"loser_id": "loser"}

    loser_id: Id


class DeadlineExtension(Input):
    minutes: Annotated[int, Strict(), Field(ge=limits.MIN_EXTENSION_MINUTES, le=limits.MAX_EXTENSION_MINUTES)]


class MatchListQuery(QueryInput):
    state: MatchState | None = None
    round: Annotated[int, Field(ge=1, le=limits.MAX_ROUND)] | None = None
    participant_id: Annotated[int, Field(ge=1, le=limits.MAX_ID)] | None = None


class MyMatchesQuery(Paging):
    state: MatchState | None = None


# -- error messages --------------------------------------------------------------------------


def problems(model: type[BaseModel], exc: pydantic.ValidationError) -> dict[str, str]:
    """Field name (``names[2]`` for one item of a list of strings) -> message.

    The first problem of each field wins; messages are worded from the
    field's JSON Schema, the one the OpenAPI document publishes."""
    schema = _schema(model)
    out: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if not loc:
            out.setdefault("body", "must be an object")
            continue
        name = str(loc[0])
        if error["type"] == "missing":
            out.setdefault(name, "is required")
            continue
        if error["type"] == "extra_forbidden":
            out.setdefault(name, "is not a known field")
            continue
        field = _resolve(schema, schema.get("properties", {}).get(name, {}))
        items = _resolve(schema, field.get("items", {}))
        if len(loc) > 1 and isinstance(loc[1], int) and field.get("type") == "array" and "items" not in items:
            # One bad item of a list of plain values: name the item.
            name, field = f"{name}[{loc[1]}]", items
        if error["type"] == "value_error":
            out.setdefault(name, str(error["ctx"]["error"]))
        else:
            out.setdefault(name, rule(schema, field))
    return out


def rule(root: dict[str, Any], schema: dict[str, Any]) -> str:
    """What a value of ``schema`` must be, as a message."""
    schema = _resolve(root, schema)
    if "description" in schema:
        return f"must be {schema['description']}"
    if "enum" in schema:
        return f"must be one of {', '.join(str(v) for v in schema['enum'])}"
    kind = schema.get("type")
    if kind == "integer":
        return f"must be a whole number from {schema.get('minimum', 0)} to {schema.get('maximum')}"
    if kind == "string":
        return f"must be {schema.get('minLength', 0)} to {schema.get('maxLength')} characters"
    if kind == "boolean":
        return "must be true or false"
    if kind == "object":
        return "must be an object"
    if kind == "array":
        return f"must be a list of {schema.get('minItems', 0)} to {schema.get('maxItems')} items"
    return "is not valid"


def _resolve(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without ``$ref`` indirection and without the null branch of a nullable."""
    while True:
        if "$ref" in schema:
            # A referenced type's own description documents the type, it is not a rule.
            target = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
            schema = {**_but(target, "description"), **_but(schema, "$ref")}
        elif "anyOf" in schema:
            options = [s for s in schema["anyOf"] if s.get("type") != "null"]
            schema = {**options[0], **_but(schema, "anyOf")} if len(options) == 1 else _but(schema, "anyOf")
        else:
            return schema


def _but(schema: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in (key, "default", "title")}


@functools.cache
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()

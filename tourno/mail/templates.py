"""The email catalogue: a subject and a body per template name, sent as plain
text and as HTML.

Each body is written once and rendered twice: as plain text, and through an
autoescaping environment into the HTML part, so a player's name or an
organizer's message can never inject markup (``<b>`` arrives as ``&lt;b&gt;``).
The HTML part keeps the text's paragraphs and line breaks and turns its
http(s) URLs into links.

Templates are Jinja2 with ``StrictUndefined``: a context without a key the
template needs is an error (:class:`TemplateError`), which the drain records
as a permanent failure of that one row. Keys that only refine the text are
written ``{% if key is defined %}`` or ``key | default(...)``, so a service
can add detail without breaking older rows.

Every template sees the outbox row's ``context`` plus ``app_url`` (links),
``to_email`` and, for bulk mail, ``unsubscribe_url`` (a signed link, or empty
without ``TOURNO_SECRET_KEY``). Times arrive as ISO
strings and go through the ``when`` filter (UTC, plus the reader's own time
zone when the context names one in ``timezone``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from markupsafe import Markup

from tourno.mail import unsubscribe


class TemplateError(Exception):
    """A row cannot be rendered: unknown template or unusable context."""


@dataclass(frozen=True)
class Template:
    subject: str
    body: str
    # Non-transactional mail: gets List-Unsubscribe headers and honours opt-outs.
    bulk: bool = False


@dataclass(frozen=True)
class Rendered:
    template: str
    subject: str
    text: str
    html: str
    bulk: bool
    unsubscribe_url: str | None = None


_HELLO = "Hi {{ display_name | default('there') }},\n\n"
_T_LINK = "{{ app_url }}/tournaments/{{ tournament_id }}"
_M_LINK = "{{ app_url }}/matches/{{ match_id }}"
_TOURNAMENT_LINK = "{% if tournament_id is defined %}\nTournament page: " + _T_LINK + "\n{% endif %}"
_MATCH_LINK = "{% if match_id is defined %}\nYour match: " + _M_LINK + "\n{% endif %}"
_SIGN = "\n-- \nTourno\n"
_OPPONENT = "{{ opponent_name | default('your opponent') }}"
_ROUND = "{% if round_name is defined and round_name %} ({{ round_name }}){% endif %}"
_SCORE = (
    "{% if player1_score is defined and player2_score is defined %}"
    "{{ player1_score }}-{{ player2_score }}{% endif %}"
)


def _t(subject: str, body: str, *, bulk: bool = False) -> Template:
    return Template(subject=subject, body=_HELLO + body + _SIGN, bulk=bulk)


_REGISTERED = _t(
    "You're registered for {{ tournament_name }}",
    "you have a place in {{ tournament_name }}."
    "{% if starts_at is defined and starts_at %} It starts {{ starts_at | when }}.{% endif %}\n"
    "{% if check_in is defined and check_in %}Remember to check in before the start.\n{% endif %}"
    + _TOURNAMENT_LINK,
)
_WAITLISTED = _t(
    "You're on the waitlist for {{ tournament_name }}",
    "{{ tournament_name }} is full, so you are on its waitlist"
    "{% if waitlist_position is defined and waitlist_position %} at position {{ waitlist_position }}"
    "{% endif %}. We will email you if a place opens up.\n" + _TOURNAMENT_LINK,
)
_PROMOTED = _t(
    "A place opened up: you're in {{ tournament_name }}",
    "a place opened up and you moved from the waitlist into {{ tournament_name }}."
    "{% if starts_at is defined and starts_at %} It starts {{ starts_at | when }}.{% endif %}\n"
    + _TOURNAMENT_LINK,
)
_WITHDRAWN = _t(
    "You have left {{ tournament_name }}",
    "you are no longer registered for {{ tournament_name }}"
    "{% if reason is defined and reason %} ({{ reason }}){% endif %}.\n" + _TOURNAMENT_LINK,
)
_CHECKED_IN = _t(
    "Checked in for {{ tournament_name }}",
    "your check-in for {{ tournament_name }} is confirmed.\n" + _TOURNAMENT_LINK,
)
_CHECK_IN_OPEN = _t(
    "Check-in is open for {{ tournament_name }}",
    "check-in for {{ tournament_name }} is open"
    "{% if check_in_closes_at is defined and check_in_closes_at %} until "
    "{{ check_in_closes_at | when }}{% endif %}. Players who do not check in lose their place.\n"
    + _TOURNAMENT_LINK,
)
_NO_SHOW = _t(
    "You were removed from {{ tournament_name }}",
    "you did not check in for {{ tournament_name }} in time, so your place went to someone else.\n"
    + _TOURNAMENT_LINK,
)
_FULL = _t(
    "{{ tournament_name }} is full",
    "{{ tournament_name }} has reached its capacity"
    "{% if capacity is defined %} of {{ capacity }} players{% endif %}. "
    "You can start it when you are ready.\n" + _TOURNAMENT_LINK,
)
_FULL_REMINDER = _t(
    "{{ tournament_name }} is full but has not started",
    "{{ tournament_name }} is full"
    "{% if full_since is defined and full_since %} since {{ full_since | when }}{% endif %}"
    " and has not started yet. Please start it"
    "{% if auto_start_at is defined %}, or it starts itself at {{ auto_start_at | when }}{% endif %}"
    "{% if cancel_at is defined and cancel_at %}: it will be cancelled automatically at "
    "{{ cancel_at | when }}{% else %}; full tournaments that never start are cancelled automatically"
    "{% endif %}.\n" + _TOURNAMENT_LINK,
)
_STARTED = _t(
    "{{ tournament_name }} has started",
    "{{ tournament_name }} is underway.{% if opponent_name is defined %} Your first match is against "
    + _OPPONENT
    + ".{% endif %}\n"
    + _MATCH_LINK
    + _TOURNAMENT_LINK,
)
_MATCH_READY = _t(
    "Your match in {{ tournament_name }} is ready: vs {{ opponent_name }}",
    "your match{% if match_identifier is defined and match_identifier %} {{ match_identifier }}{% endif %}"
    + _ROUND
    + " against {{ opponent_name }} is ready to play.\n"
    "{% if deadline_at is defined and deadline_at %}Report the result by {{ deadline_at | when }}.\n"
    "{% endif %}" + _MATCH_LINK + _TOURNAMENT_LINK,
)
_OPPONENT_REPORTED = _t(
    "Confirm your result in {{ tournament_name }}",
    _OPPONENT
    + " reported the result of your match"
    + _ROUND
    + "{% if player1_score is defined %}: "
    + _SCORE
    + "{% endif %}.\nConfirm it or dispute it"
    "{% if deadline_at is defined and deadline_at %} by {{ deadline_at | when }}; after that the "
    "report stands{% endif %}.\n" + _MATCH_LINK,
)
_DEADLINE_WARNING = _t(
    "Deadline in {{ tournament_name }}: {{ (deadline_at | default(deadline)) | when }}",
    "your match" + _ROUND + "{% if opponent_name is defined %} against {{ opponent_name }}{% endif %} "
    "must be played and reported by {{ (deadline_at | default(deadline)) | when }}.\n"
    "{% if missing is defined and missing %}Still missing: {{ missing }}.\n{% endif %}"
    "{% if consequence is defined and consequence %}If nothing happens by then: {{ consequence }}\n"
    "{% endif %}" + _MATCH_LINK,
)
_RESULT = _t(
    "Result recorded in {{ tournament_name }}",
    "the result of your match" + _ROUND + "{% if opponent_name is defined %} against {{ opponent_name }}"
    "{% endif %} is recorded{% if player1_score is defined %}: " + _SCORE + "{% endif %}"
    "{% if result_type is defined and result_type not in ('played', 'auto_confirmed') %}"
    " ({{ result_type | replace('_', ' ') }}){% endif %}."
    "{% if draw is defined and draw %} It is a draw."
    "{% elif won is defined %}{% if won %} You won.{% else %} You lost.{% endif %}{% endif %}\n"
    + _MATCH_LINK,
)
_DISPUTED = _t(
    "Disputed result in {{ tournament_name }}",
    "match{% if match_identifier is defined %} {{ match_identifier }}{% endif %}" + _ROUND + " in "
    "{{ tournament_name }} needs a decision"
    "{% if reason is defined %} ({{ reason | replace('_', ' ') }}){% endif %}: the reports disagree or "
    "could not settle it. Please decide the result.\n" + _MATCH_LINK,
)
_DISQUALIFIED = _t(
    "You were disqualified from {{ tournament_name }}",
    "an organizer disqualified you from {{ tournament_name }}; your remaining matches are forfeited.\n"
    + _TOURNAMENT_LINK,
)
_DEADLINE_EXTENDED = _t(
    "New deadline for your match in {{ tournament_name }}",
    "the deadline of your match" + _ROUND + "{% if opponent_name is defined %} against {{ opponent_name }}"
    "{% endif %} is now {{ (deadline_at | default(deadline)) | when }}.\n" + _MATCH_LINK,
)
_CORRECTED = _t(
    "Score corrected in {{ tournament_name }}",
    "an organizer set the result of your match"
    + _ROUND
    + "{% if player1_score is defined %} to "
    + _SCORE
    + "{% endif %}.\n"
    + _MATCH_LINK,
)
_FINAL_EXTENDED = _t(
    "Final of {{ tournament_name }}: deadline extended",
    "the final of {{ tournament_name }} was not decided in time, so its deadline is extended once"
    "{% if deadline_at is defined and deadline_at %}, to {{ deadline_at | when }}{% endif %}. "
    "If it is still open then, an organizer decides.\n" + _MATCH_LINK,
)
_AWAITING_REVIEW = _t(
    "{{ tournament_name }} needs your review",
    "{{ tournament_name }} cannot finish on its own (the final was not decided after its extension). "
    "Please review it and decide the result.\n" + _TOURNAMENT_LINK,
)
_NEXT_ROUND = _t(
    "Next round of {{ tournament_name }}",
    "round{% if round_name is defined %} {{ round_name }}{% endif %} of {{ tournament_name }} is "
    "ready.{% if opponent_name is defined %} You play {{ opponent_name }}.{% endif %}\n"
    + _MATCH_LINK
    + _TOURNAMENT_LINK,
)
_CANCELLED = _t(
    "{{ tournament_name }} is cancelled",
    "{{ tournament_name }} has been cancelled"
    "{% if reason is defined and reason %} ({{ reason | replace('_', ' ') }}){% endif %}.\n"
    + _TOURNAMENT_LINK,
)
_COMPLETE = _t(
    "{{ tournament_name }} is complete",
    "{{ tournament_name }} is over.{% if final_rank is defined and final_rank %} You finished "
    "#{{ final_rank }}.{% endif %}"
    "{% if champion is defined %} The winner is {{ champion }}.{% endif %}\n"
    "{% if standings is defined and standings %}\nStandings:\n{% for row in standings[:10] %}"
    "  {{ row.rank | default(loop.index) }}. {{ row.name | default(row.display_name) }}\n"
    "{% endfor %}{% endif %}" + _TOURNAMENT_LINK,
)
_ANNOUNCEMENT = _t(
    "{{ subject | default(tournament_name | default('Tourno') ~ ': announcement') }}",
    "{% if tournament_name is defined %}a message from the organizer of {{ tournament_name }}:\n\n"
    "{% endif %}{{ message | default(body) }}\n" + _TOURNAMENT_LINK + "\n"
    "{% if unsubscribe_url %}You get this because you take part. "
    "Unsubscribe from announcements: {{ unsubscribe_url }}\n{% endif %}",
    bulk=True,
)
_TEST = Template(
    subject="Tourno test message",
    body="This is a test message from Tourno ({{ app_url }}), sent with `tourno mail test`.\n"
    "If you can read it, the mail settings work.\n" + _SIGN,
)

# Template name -> template. Several names share one template where the
# services and the catalogue in domain.md §5.1 spell the same email differently.
TEMPLATES: dict[str, Template] = {
    "registration_confirmed": _REGISTERED,
    "registered": _REGISTERED,
    "registration_waitlisted": _WAITLISTED,
    "waitlisted": _WAITLISTED,
    "waitlist_promoted": _PROMOTED,
    "promoted": _PROMOTED,
    "withdrawn": _WITHDRAWN,
    "removed": _WITHDRAWN,
    "checked_in": _CHECKED_IN,
    "check_in_open": _CHECK_IN_OPEN,
    "no_show": _NO_SHOW,
    "check_in_missed": _NO_SHOW,
    "tournament_full": _FULL,
    "full_reminder": _FULL_REMINDER,
    "tournament_started": _STARTED,
    "match_ready": _MATCH_READY,
    "opponent_reported": _OPPONENT_REPORTED,
    "result_to_confirm": _OPPONENT_REPORTED,
    "deadline_warning": _DEADLINE_WARNING,
    "match_result": _RESULT,
    "match_disputed": _DISPUTED,
    "disqualified": _DISQUALIFIED,
    "deadline_extended": _DEADLINE_EXTENDED,
    "score_corrected": _CORRECTED,
    "final_extended": _FINAL_EXTENDED,
    "awaiting_review": _AWAITING_REVIEW,
    "next_round": _NEXT_ROUND,
    "tournament_cancelled": _CANCELLED,
    "tournament_complete": _COMPLETE,
    "tournament_completed": _COMPLETE,
    "announcement": _ANNOUNCEMENT,
    "test": _TEST,
}


def is_bulk(template: str) -> bool:
    """Whether ``template`` names bulk mail (which opt-outs and unsubscribes stop)."""
    spec = TEMPLATES.get(template)
    return spec is not None and spec.bulk


def _when(value: Any, tz: str | None = None) -> str:
    """``2026-11-28T12:00:00+00:00`` -> ``2026-11-28 12:00 UTC`` (+ local time)."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # raises: the key is missing
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise TemplateError(f"{value!r} is not an ISO date-time") from None
    elif isinstance(value, dt.datetime):
        moment = value
    else:
        raise TemplateError(f"{value!r} is not a date-time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    text = moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if tz and tz != "UTC":
        try:
            local = moment.astimezone(ZoneInfo(tz))
        except (ZoneInfoNotFoundError, ValueError):
            return text  # an unknown zone only loses the local time, not the email
        text += local.strftime(f" ({'%Y-%m-%d %H:%M'} {tz})")
    return text


@jinja2.pass_context
def _when_filter(ctx: Any, value: Any) -> str:
    tz = ctx.get("timezone")
    return _when(value, tz if isinstance(tz, str) else None)


_env = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # the plain-text part and the subject
    keep_trailing_newline=True,
)
# The same sources for the HTML part: every value is escaped on the way in.
_html_env = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    autoescape=True,
    keep_trailing_newline=True,
)
for _e in (_env, _html_env):
    _e.filters["when"] = _when_filter

_LAYOUT = _html_env.from_string(
    "<!DOCTYPE html>\n"
    '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>{{ subject }}</title>\n</head>\n"
    '<body style="font-family: sans-serif; line-height: 1.5; max-width: 40em;">\n'
    "{% for paragraph in paragraphs %}<p>{{ paragraph }}</p>\n{% endfor %}"
    "</body>\n</html>\n"
)
# Escaped text holds no quote or angle bracket, so a match is safe inside href="".
_URL = re.compile(r"https?://[^\s<>\"']+")
_TRAILING = ".,;:!?)"

_compiled: dict[str, tuple[jinja2.Template, jinja2.Template, jinja2.Template]] = {}


def _compile(name: str) -> tuple[jinja2.Template, jinja2.Template, jinja2.Template]:
    found = _compiled.get(name)
    if found is None:
        spec = TEMPLATES[name]
        found = (
            _env.from_string(spec.subject),
            _env.from_string(spec.body),
            _html_env.from_string(spec.body),
        )
        _compiled[name] = found
    return found


def _linkify(escaped: str) -> str:
    def anchor(m: re.Match[str]) -> str:
        url = m.group(0)
        tail = ""
        while url and url[-1] in _TRAILING:
            url, tail = url[:-1], url[-1] + tail
        return f'<a href="{url}">{url}</a>{tail}'

    return _URL.sub(anchor, escaped)


def _html_document(subject: str, escaped_body: str) -> str:
    """The HTML part: the escaped body's paragraphs (blank-line separated),
    line breaks kept, URLs as links."""
    paragraphs = [
        Markup("<br>\n".join(_linkify(line) for line in block.strip("\n").split("\n")))
        for block in re.split(r"\n\s*\n", escaped_body)
        if block.strip()
    ]
    return _LAYOUT.render(subject=subject, paragraphs=paragraphs)


def render(
    name: str,
    context: Any,
    *,
    app_url: str,
    to_email: str,
    secret_key: str | None = None,
) -> Rendered:
    """Subject, text and HTML of one email; :class:`TemplateError` says why not.

    Bulk mail gets a signed unsubscribe link when ``secret_key`` is set."""
    if name not in TEMPLATES:
        raise TemplateError(f"unknown template {name!r}")
    if not isinstance(context, dict):
        raise TemplateError(f"template {name!r}: context must be a JSON object, got {type(context).__name__}")
    spec = TEMPLATES[name]
    # A None value is an absent one: optional parts are left out, required ones fail.
    values = {k: v for k, v in context.items() if v is not None}
    values["app_url"] = app_url
    values["to_email"] = to_email
    unsubscribe_url = None
    if spec.bulk:
        # Only a link we signed: never one from the row's context.
        if secret_key:
            unsubscribe_url = unsubscribe.link(app_url, secret_key, to_email)
        values["unsubscribe_url"] = unsubscribe_url or ""
    subject_t, body_t, html_t = _compile(name)
    try:
        subject = subject_t.render(values)
        text = body_t.render(values)
        escaped = html_t.render(values)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {name!r}: context is missing a value ({exc.message})") from None
    except TemplateError as exc:
        raise TemplateError(f"template {name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any other rendering error is this row's, not the drain's
        raise TemplateError(f"template {name!r}: {type(exc).__name__}: {exc}") from None
    # A header cannot hold a line break; collapse whitespace.
    subject = " ".join(subject.split())
    if not subject:
        raise TemplateError(f"template {name!r}: empty subject")
    return Rendered(
        template=name,
        subject=subject,
        text=text,
        html=_html_document(subject, escaped),
        bulk=spec.bulk,
        unsubscribe_url=unsubscribe_url,
    )

"""The Job base class, the registry of job names, and payload encode/decode.

A job is a dataclass whose fields are its JSON arguments::

    @dataclass
    class SendInvite(Job):
        queue = "mail"          # class attributes, not annotated fields
        tries = 5
        backoff = [10, 60, 300]

        player_id: int

        def handle(self) -> None:
            ...

    SendInvite(player_id=7).dispatch(delay=30)

Jobs register under a stable name (the class name, or ``job_name``); the
name, not the import path, is what the payload stores, so a job class can move
between modules without stranding queued jobs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from tourno.queue import events
from tourno.queue.exceptions import DuplicateJobName, InvalidPayload

if TYPE_CHECKING:
    from tourno.queue.middleware import Middleware
    from tourno.queue.workflows import Batch

_registry: dict[str, type[Job]] = {}

#: The longest timeout or backoff a job may ask for (about three years; the
#: claim caps a lease at the same value). Larger values overflow setitimer()
#: and timestamp arithmetic in the worker.
MAX_SECONDS = 1e8


def _is_seconds(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_SECONDS
    )


class Job:
    """Base class of every job. Subclass it as a dataclass and define ``handle``."""

    #: Registry name; defaults to the class name.
    job_name: ClassVar[str]
    #: Queue to dispatch to unless ``dispatch(queue=...)`` says otherwise.
    queue: ClassVar[str] = "default"
    #: Lower runs first within a queue.
    priority: ClassVar[int] = 0
    #: Attempts before the job fails for good (None: the worker's ``--tries``; 0: unlimited).
    tries: ClassVar[int | None] = None
    #: Seconds before the job is interrupted (None: the worker's ``--timeout``; 0: none).
    timeout: ClassVar[float | None] = None
    #: Seconds to wait before a retry: one number, or one per attempt (the last repeats).
    backoff: ClassVar[float | list[float] | None] = None
    #: Keep retrying (ignoring ``tries``) until this many seconds after dispatch.
    retry_until: ClassVar[float | None] = None
    #: A timed-out attempt fails the job for good instead of being retried.
    fail_on_timeout: ClassVar[bool] = False
    #: Fail for good at this many attempts that raised, whatever ``tries``
    #: allows (None: no limit). Timeouts, snoozes and a worker that died do
    #: not count: ``tries`` covers those.
    max_exceptions: ClassVar[int | None] = None
    #: Make the job unique: a dispatch while one with the same key is pending
    #: or running is a no-op. ``unique_key`` may be a string or a method;
    #: ``unique_for`` (seconds) bounds how long the key is held.
    unique_key: ClassVar[Any] = None
    unique_for: ClassVar[float | None] = None
    # Set on the instance by the worker's monitor (request_cancel()); a class
    # default, so that it is no dataclass field and costs nothing per job.
    _cancel_requested: ClassVar[bool] = False
    # Set on the instance by the worker for a batch's job or callback
    # (``workflows.attach``); a class default for the same reason.
    _batch_id: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("job_name", cls.__name__)
        cls.job_name = name
        existing = _registry.get(name)
        if existing is not None and _qualified(existing) != _qualified(cls):
            raise DuplicateJobName(
                f"job name {name!r} is already used by {_qualified(existing)}; "
                f"give {_qualified(cls)} a distinct job_name"
            )
        # The same class defined again (a module reload, or dataclass(slots=True)
        # building a new class) replaces the old entry.
        _registry[name] = cls

    def handle(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define handle()")

    def failed(self, exc: BaseException) -> None:
        """Called once, in the worker, after the job has failed for good."""

    def middleware(self) -> Sequence[Middleware]:
        """Layers around ``handle``, outermost first (``tourno.queue.middleware``)."""
        return ()

    def cancel_requested(self) -> bool:
        """Whether ``tourno queue cancel`` asked for this job while it runs.
        A long job checks it now and then and returns (or raises) early;
        either way the worker deletes the job instead of retrying it. Always
        False outside a worker."""
        return self._cancel_requested

    @property
    def batch(self) -> Batch | None:
        """The batch this job runs in (or is a callback of), read now: its
        progress, ``cancelled``, ``add()``. None outside a batch."""
        if self._batch_id is None:
            return None
        from tourno.queue.workflows import Batch

        return Batch.find(self._batch_id)

    # -- dispatching ---------------------------------------------------------

    def dispatch(
        self,
        *,
        delay: float | dt.timedelta | None = None,
        queue: str | None = None,
        priority: int | None = None,
    ) -> int | str | None:
        """Enqueue this job. Returns its id, or None when a unique job was
        already pending. Inside ``db.atomic()`` the job commits or rolls back
        with the surrounding transaction (on the Redis driver, while Redis is
        unreachable, the id is the job's uuid until it is handed over)."""
        from tourno.queue import backends

        pending = [self.pending(delay=delay, queue=queue, priority=priority)]
        ids = backends.current().push(pending)
        _dispatched(pending, ids)
        return ids[0]

    def pending(
        self,
        *,
        delay: float | dt.timedelta | None = None,
        queue: str | None = None,
        priority: int | None = None,
        now: dt.datetime | None = None,
    ) -> PendingJob:
        """This job with its dispatch options, ready to hand to ``dispatch_many``."""
        cls = type(self)
        if delay is None:
            seconds = 0.0
        else:
            seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else float(delay)
            if not _is_seconds(seconds):
                # available_at = now + delay: past about 3 years it overflows
                # the datetime arithmetic or means "never"; NaN means nothing.
                raise ValueError(f"delay must be seconds between 0 and {MAX_SECONDS:g}, got {seconds:g}")
        q = queue or cls.queue
        if not q or not isinstance(q, str):
            raise ValueError(f"queue must be a non-empty string, got {q!r}")
        uuid, payload = encode_payload(self, now)
        return PendingJob(
            queue=q,
            uuid=uuid,
            payload_json=payload,
            priority=cls.priority if priority is None else int(priority),
            delay=seconds,
            unique_key=self._unique_key(),
            unique_for=cls.unique_for,
        )

    def _unique_key(self) -> str | None:
        cls = type(self)
        key = cls.unique_key
        if key is None and cls.unique_for is None:
            return None
        if callable(key):
            key = key(self)
        return cls.job_name if key is None else f"{cls.job_name}:{key}"

    def args(self) -> dict[str, Any]:
        cls = type(self)
        names = _arg_names.get(cls)
        if names is None:
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"{cls.__name__} must be a dataclass (decorate it with @dataclass)")
            # fields(), not __dataclass_fields__: a ClassVar annotation (say
            # ``cron: ClassVar[str]``) is listed there too, and is no argument.
            names = _arg_names[cls] = tuple(f.name for f in dataclasses.fields(cls))
        return {name: getattr(self, name) for name in names}


#: Each job class's argument names (its dataclass fields), worked out once.
_arg_names: dict[type, tuple[str, ...]] = {}


@dataclasses.dataclass(frozen=True, slots=True)
class PendingJob:
    """A job encoded for the backend: what one row of ``jobs`` will hold."""

    queue: str
    uuid: str
    payload_json: str
    priority: int = 0
    delay: float = 0.0
    unique_key: str | None = None
    unique_for: float | None = None

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.payload_json)

    @classmethod
    def from_payload(cls, queue: str, payload: dict[str, Any], priority: int = 0) -> PendingJob:
        """A stored payload (e.g. a failed job's) to push again as it is."""
        uuid = str(payload.get("uuid") or uuidlib.uuid4())
        return cls(queue, uuid, _encode({**payload, "uuid": uuid}), priority)

    def renewed(self) -> PendingJob:
        """The same job under a fresh uuid: one PendingJob sent twice is two jobs."""
        payload = self.payload
        payload["uuid"] = str(uuidlib.uuid4())
        return dataclasses.replace(self, uuid=payload["uuid"], payload_json=_encode(payload))


def dispatch_many(
    jobs: Iterable[Job | PendingJob],
) -> list[int | str | None]:
    """Enqueue many jobs in one round trip; returns their ids (None for a
    unique job that was already pending)."""
    from tourno.queue import backends

    now = dt.datetime.now(dt.UTC)
    pending = [j if isinstance(j, PendingJob) else j.pending(now=now) for j in jobs]
    if not pending:
        return []
    # Ids are matched to jobs by uuid, and failed_jobs files them by uuid.
    seen: set[str] = set()
    for i, p in enumerate(pending):
        if p.uuid in seen:
            pending[i] = p = p.renewed()
        seen.add(p.uuid)
    ids = backends.current().push(pending)
    _dispatched(pending, ids)
    return ids


def _dispatched(pending: list[PendingJob], ids: list[Any]) -> None:
    """``job.dispatched`` for each job the backend accepted (a None id is a
    unique job that was already pending)."""
    if not events.wanted("job.dispatched"):
        return
    for p, job_id in zip(pending, ids, strict=True):
        if job_id is not None:
            events.emit(
                "job.dispatched", job=p.payload.get("job"), uuid=p.uuid, id=job_id, queue=p.queue, attempt=0
            )


def request_cancel(job: Job) -> None:
    """Make ``job.cancel_requested()`` true (the worker's monitor calls it
    from its own thread; a bool is written at once). Works on frozen and
    slotted dataclasses alike: ``Job`` itself has no slots, so every job
    instance has a ``__dict__``."""
    object.__setattr__(job, "_cancel_requested", True)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def registered() -> dict[str, type[Job]]:
    return dict(_registry)


def job_class(name: str) -> type[Job]:
    try:
        return _registry[name]
    except KeyError:
        raise InvalidPayload(
            f"unknown job {name!r}: no job class is registered under that name "
            "(is its module imported? see --import / TOURNO_IMPORTS)"
        ) from None


def _backoff_list(value: Any) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return [float(value)]
    return [float(v) for v in value]


#: Compact JSON, with one encoder built once (json.dumps with options builds one per call).
#: NaN and Infinity are not JSON: PostgreSQL's jsonb and other readers refuse them.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
#: A NUL character in a JSON string (``\\u0000`` not preceded by an escaped
#: backslash): PostgreSQL's jsonb cannot store it.
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_templates: dict[tuple, str] = {}


def _template(cls: type[Job]) -> str:
    """The payload JSON of ``cls`` with holes for uuid, args, retry_until and
    dispatched_at: the constant parts are encoded once per class.

    A fast path, kept on purpose: encoding the whole payload with json per
    job cost a noticeable share of a dispatch; ``bench/queue.py``'s
    "Dispatch, dispatch_many batch" and "one Job.dispatch() per job" figures
    (``disp_n``, ``disp_1``) measure it, and
    ``test_dispatch_returns_id_and_writes_the_documented_payload`` and
    ``test_large_batch_keeps_every_field_of_every_job`` pin its output."""
    backoff = _backoff_list(cls.backoff)
    key = (cls, cls.job_name, cls.tries, cls.timeout, tuple(backoff or ()))
    template = _templates.get(key)
    if template is None:
        # Refuse here what parse_payload would refuse at every run.
        if cls.tries is not None and (
            not isinstance(cls.tries, int) or isinstance(cls.tries, bool) or cls.tries < 0
        ):
            raise TypeError(f"{cls.__name__}.tries must be a whole number >= 0, got {cls.tries!r}")
        if cls.max_exceptions is not None and (
            not isinstance(cls.max_exceptions, int)
            or isinstance(cls.max_exceptions, bool)
            or cls.max_exceptions < 1
        ):
            raise TypeError(
                f"{cls.__name__}.max_exceptions must be a whole number >= 1, got {cls.max_exceptions!r}"
            )
        if cls.timeout is not None and not _is_seconds(cls.timeout):
            raise TypeError(
                f"{cls.__name__}.timeout must be seconds between 0 and {MAX_SECONDS:g}, got {cls.timeout!r}"
            )
        if backoff is not None and (not backoff or not all(_is_seconds(b) for b in backoff)):
            raise TypeError(
                f"{cls.__name__}.backoff must be seconds between 0 and {MAX_SECONDS:g} "
                f"(one number or a non-empty list), got {cls.backoff!r}"
            )
        if cls.retry_until is not None and not (_is_seconds(cls.retry_until) and cls.retry_until > 0):
            raise TypeError(
                f"{cls.__name__}.retry_until must be seconds after dispatch (above 0), got {cls.retry_until!r}"
            )
        const = {
            "job": cls.job_name,
            "display_name": _qualified(cls),
            "max_tries": cls.tries,
            "timeout": cls.timeout,
            "backoff": backoff,
        }
        parts = {k: _encode(v).replace("%", "%%") for k, v in const.items()}
        template = (
            '{"uuid":"%s","job":'
            + parts["job"]
            + ',"display_name":'
            + parts["display_name"]
            + ',"args":%s,"max_tries":'
            + parts["max_tries"]
            + ',"timeout":'
            + parts["timeout"]
            + ',"backoff":'
            + parts["backoff"]
            + ',"retry_until":%s,"dispatched_at":"%s"}'
        )
        _templates[key] = template
    return template


def encode_payload(job: Job, now: dt.datetime | None = None) -> tuple[str, str]:
    """(uuid, payload JSON) for ``job``. The payload keys are uuid, job,
    display_name, args, max_tries, timeout, backoff, retry_until, dispatched_at."""
    cls = type(job)
    template = _template(cls)
    try:
        args = _encode(job.args())
    except TypeError as exc:
        raise TypeError(f"{cls.__name__}: job arguments must be JSON values ({exc})") from None
    except ValueError:
        raise ValueError(
            f"{cls.__name__}: job arguments must be JSON values, and NaN or Infinity is not one"
        ) from None
    if "\\u0000" in args and _ESCAPED_NUL.search(args):
        raise ValueError(f"{cls.__name__}: job arguments must not contain a NUL character (\\x00)")
    global _last_stamp
    now = now or dt.datetime.now(dt.UTC)
    # A batch shares one dispatch time: format it once, not once per job.
    when, stamp = _last_stamp
    if when is not now:
        stamp = now.isoformat()
        _last_stamp = (now, stamp)
    retry_until = "null"
    if cls.retry_until is not None:
        retry_until = _encode((now + dt.timedelta(seconds=float(cls.retry_until))).isoformat())
    uuid = str(uuidlib.uuid4())
    return uuid, template % (uuid, args, retry_until, stamp)


_last_stamp: tuple[dt.datetime | None, str] = (None, "")


def payload_uuid(text: str) -> str:
    """The uuid a failed payload is filed under (a fresh one if it has none)."""
    try:
        value = json.loads(text)
        if isinstance(value, dict) and isinstance(value.get("uuid"), str) and value["uuid"]:
            return value["uuid"][:36]
    except (TypeError, ValueError):
        pass
    return str(uuidlib.uuid4())


def parse_payload(text: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """Decode a stored payload, checking the keys the worker relies on."""
    if isinstance(text, dict):
        payload = text
    else:
        try:
            payload = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise InvalidPayload(f"payload is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidPayload(f"payload must be a JSON object, got {type(payload).__name__}")
    if not isinstance(payload.get("job"), str):
        raise InvalidPayload("payload has no job name (key 'job')")
    if not isinstance(payload.get("args", {}), dict):
        raise InvalidPayload("payload 'args' must be a JSON object")
    for key, kinds in (("max_tries", int), ("timeout", (int, float)), ("retry_until", str)):
        value = payload.get(key)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise InvalidPayload(f"payload {key!r} has an invalid value {value!r}")
    if payload.get("max_tries") is not None and payload["max_tries"] < 0:
        raise InvalidPayload(f"payload 'max_tries' has an invalid value {payload['max_tries']!r}")
    if payload.get("timeout") is not None and not _is_seconds(payload["timeout"]):
        raise InvalidPayload(f"payload 'timeout' has an invalid value {payload['timeout']!r}")
    backoff = payload.get("backoff")
    if backoff is not None and (
        not isinstance(backoff, list) or not backoff or not all(_is_seconds(v) for v in backoff)
    ):
        raise InvalidPayload(f"payload 'backoff' has an invalid value {backoff!r}")
    return payload


def build_job(payload: dict[str, Any]) -> Job:
    """The job instance a payload describes."""
    cls = job_class(payload["job"])
    args = payload.get("args", {})
    try:
        return cls(**args)
    except TypeError as exc:
        raise InvalidPayload(f"arguments {sorted(args)} no longer fit {_qualified(cls)}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the job's own validation (__post_init__) refused them
        raise InvalidPayload(
            f"{_qualified(cls)} refused arguments {sorted(args)}: {type(exc).__name__}: {exc}"
        ) from None


def backoff_delay(backoff: list[float], attempts: int) -> float:
    """The delay before retry number ``attempts`` (the last value repeats)."""
    if not backoff:
        return 0.0
    return float(backoff[min(max(attempts, 1), len(backoff)) - 1])


def retry_deadline(payload: dict[str, Any]) -> dt.datetime | None:
    raw = payload.get("retry_until")
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidPayload(f"payload 'retry_until' is not an ISO time: {raw!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

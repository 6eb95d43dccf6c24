"""Jobs waiting, delayed or running, on the database driver: a list per
queue and state in dispatch order (keyset pages on the primary key), a
search by job name or uuid, one job's page, and cancel (through
:func:`tourno.queue.control.cancel`, as ``tourno queue cancel``: a waiting
job is deleted, a running one is flagged and its worker stops it).

The Redis driver keeps its jobs in Redis; these pages say so instead.
"""

from __future__ import annotations

import json
from typing import Any

import peewee
from flask import current_app, flash, redirect, render_template, request, url_for

from tourno import db
from tourno.dashboard.blueprint import bp, confirm, confirmed, message, now
from tourno.queue import backends, control
from tourno.queue.models import JobRecord, WorkerRecord

PAGE_ROWS = 50
STATES = ("ready", "delayed", "reserved")
MAX_SEARCH = 200


def _payload_field(key: str) -> Any:
    """``payload ->> key`` in this database's spelling (jsonb on PostgreSQL, JSON text on SQLite)."""
    if db.is_postgres():
        return peewee.SQL(f"(payload ->> '{key}')")
    return peewee.fn.json_extract(JobRecord.payload, f"$.{key}")


def _on_database() -> bool:
    return bool(backends.current().connection_name == "database")


def _after() -> int | None:
    raw = request.args.get("after", "").strip()
    return int(raw) if raw.isdigit() and 0 < int(raw) < 2**63 else None


def _name(payload: Any) -> str:
    if isinstance(payload, dict):
        return str(payload.get("job") or payload.get("display_name") or "?")
    return "?"


@bp.get("/jobs")
def jobs() -> Any:
    if not _on_database():
        return message(
            "Jobs", "Jobs live in Redis on this installation; this page reads the database driver.", 200
        )
    queue = request.args.get("queue", "").strip()[:255]
    state = request.args.get("state", "ready").strip()
    search = request.args.get("q", "").strip()[:MAX_SEARCH]
    if state not in STATES:
        return message("Bad filter", f"state must be one of {', '.join(STATES)}, not {state!r}", 400)
    at = now()
    rows = JobRecord.select()
    if queue:
        rows = rows.where(JobRecord.queue == queue)
    if state == "reserved":
        rows = rows.where(JobRecord.reserved_at.is_null(False))
    elif state == "ready":
        rows = rows.where(JobRecord.reserved_at.is_null() & (JobRecord.available_at <= at))
    else:
        rows = rows.where(JobRecord.reserved_at.is_null() & (JobRecord.available_at > at))
    if search:
        rows = rows.where((_payload_field("uuid") == search) | (_payload_field("job") == search))
    after = _after()
    if after is not None:
        rows = rows.where(JobRecord.id > after)
    page = list(rows.order_by(JobRecord.id).limit(PAGE_ROWS + 1))
    more = len(page) > PAGE_ROWS
    page = page[:PAGE_ROWS]
    return render_template(
        "dashboard/jobs.html",
        rows=[{"record": r, "job": _name(r.payload)} for r in page],
        queue=queue,
        state=state,
        states=STATES,
        search=search,
        next_after=page[-1].id if more and page else None,
    )


@bp.get("/jobs/<id:jid>")
def job(jid: int) -> Any:
    if not _on_database():
        return message(
            "Jobs", "Jobs live in Redis on this installation; this page reads the database driver.", 200
        )
    rec = JobRecord.get_or_none(JobRecord.id == jid)
    if rec is None:
        return message(
            "Not found", f"There is no job {jid} waiting or running (finished jobs are deleted).", 404
        )
    holder = None
    if rec.reserved_by is not None:
        holder = WorkerRecord.get_or_none(WorkerRecord.id == rec.reserved_by)
    return render_template(
        "dashboard/job.html",
        job=rec,
        name=_name(rec.payload),
        payload=json.dumps(rec.payload, indent=2, sort_keys=True),
        holder=holder,
    )


@bp.post("/jobs/<id:jid>/cancel")
def job_cancel(jid: int) -> Any:
    rec = JobRecord.get_or_none(JobRecord.id == jid)
    if rec is None:
        return message(
            "Not found", f"There is no job {jid} waiting or running (finished jobs are deleted).", 404
        )
    name = _name(rec.payload)
    if not confirmed():
        running = "It is running: its worker stops it when the attempt ends." if rec.reserved_at else ""
        return confirm(
            f"Cancel job {jid} ({name})?",
            f"It will not run (again). {running}".strip(),
            url_for("dashboard.job_cancel", jid=jid),
            "Cancel the job",
            {},
            url_for("dashboard.job", jid=jid),
        )
    result = control.cancel([str(jid)], count_metrics=current_app.config["TOURNO_SETTINGS"].queue_metrics)
    if result.removed:
        flash(f"Cancelled job {jid} ({name}).", "ok")
    elif result.flagged:
        flash(f"Job {jid} ({name}) is running; its worker stops it when the attempt ends.", "ok")
    else:
        flash(f"Job {jid} had already finished or gone.", "error")
    return redirect(
        url_for("dashboard.jobs", queue=rec.queue, state="reserved" if result.flagged else "ready")
    )

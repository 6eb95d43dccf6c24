"""Failed jobs: the list, one job with its whole traceback, and the
operator's actions, each a call into :mod:`tourno.queue.failed` (the same
functions as ``tourno queue retry/forget/flush``).

Destructive actions (forget, flush, retry all) ask first: a POST without
``confirmed=yes`` renders a confirmation page and changes nothing, so the
question is asked with or without JavaScript.
"""

from __future__ import annotations

import json
from typing import Any

from flask import flash, redirect, render_template, request, url_for

from tourno.dashboard.blueprint import bp, confirm, confirmed, message
from tourno.queue import failed as store

#: Rows on the list page (newest first, on the failed_at index).
PAGE_ROWS = 100


def _confirm(title: str, text: str, action: str, button: str, fields: dict[str, str]) -> str:
    return confirm(title, text, action, button, fields, url_for("dashboard.failed_list"))


def _report(result: store.RetryResult) -> None:
    if result.retried:
        flash(f"Retried {len(result.retried)} job(s): they are back on their queues.", "ok")
    for ident in result.missing:
        flash(f"No failed job {ident}.", "error")
    for rec_id, reason in result.unretryable:
        flash(f"Failed job {rec_id} was not retried: {reason}.", "error")
    if not (result.retried or result.missing or result.unretryable):
        flash("Nothing to retry.", "ok")


def _row(rec: Any) -> dict[str, Any]:
    return {
        "id": rec.id,
        "uuid": rec.uuid,
        "connection": rec.connection,
        "queue": rec.queue,
        "job": store.job_name(rec),
        "failed_at": rec.failed_at,
        "attempts": rec.attempts,
        "summary": store.exception_summary(rec.exception),
    }


@bp.get("/failed")
def failed_list() -> str:
    queue = request.args.get("queue", "").strip() or None
    rows = [_row(rec) for rec in store.newest(PAGE_ROWS, queue)]
    return render_template(
        "dashboard/failed.html",
        rows=rows,
        queue=queue,
        total=store.count(queue),
        shown=PAGE_ROWS,
    )


@bp.get("/failed/<id:fid>")
def failed_show(fid: int) -> Any:
    rec = store.find(str(fid))
    if rec is None:
        return message("Not found", f"There is no failed job {fid}.", 404)
    try:
        payload = json.dumps(json.loads(rec.payload), indent=2, sort_keys=True)
    except (TypeError, ValueError):
        payload = rec.payload
    return render_template(
        "dashboard/failed_job.html", job=_row(rec), payload=payload, exception=rec.exception
    )


@bp.post("/failed/<id:fid>/retry")
def failed_retry_one(fid: int) -> Any:
    _report(store.retry([str(fid)]))
    return redirect(url_for("dashboard.failed_list"))


@bp.post("/failed/retry")
def failed_retry_selected() -> Any:
    ids = [i for i in request.form.getlist("ids") if i.strip().isdigit()]
    if not ids:
        flash("Select at least one failed job to retry.", "error")
    else:
        _report(store.retry(ids))
    return redirect(url_for("dashboard.failed_list"))


@bp.post("/failed/retry-all")
def failed_retry_all() -> Any:
    queue = request.form.get("queue", "").strip()
    if not confirmed():
        scope = f"queue {queue!r}" if queue else "every queue"
        return _confirm(
            "Retry all failed jobs?",
            f"Every failed job of {scope} ({store.count(queue or None)}) goes back on its queue.",
            url_for("dashboard.failed_retry_all"),
            "Retry them all",
            {"queue": queue},
        )
    _report(store.retry_all(queue or None))
    return redirect(url_for("dashboard.failed_list"))


@bp.post("/failed/<id:fid>/forget")
def failed_forget(fid: int) -> Any:
    if not confirmed():
        return _confirm(
            f"Forget failed job {fid}?",
            "Its record and traceback are deleted; the job does not run again.",
            url_for("dashboard.failed_forget", fid=fid),
            "Forget it",
            {},
        )
    if store.forget(str(fid)):
        flash(f"Forgot failed job {fid}.", "ok")
    else:
        flash(f"No failed job {fid}.", "error")
    return redirect(url_for("dashboard.failed_list"))


@bp.post("/failed/flush")
def failed_flush() -> Any:
    raw = request.form.get("hours", "").strip()
    hours: float | None = None
    if raw:
        try:
            hours = float(raw)
        except ValueError:
            hours = -1.0
        if not 0 < hours < 1e6:
            flash(f"Hours must be a number greater than 0, not {raw!r}.", "error")
            return redirect(url_for("dashboard.failed_list"))
    if not confirmed():
        scope = f"that failed at least {hours:g} hours ago" if hours else f"({store.count()})"
        return _confirm(
            "Flush failed jobs?",
            f"Every failed job {scope} is deleted; none of them runs again.",
            url_for("dashboard.failed_flush"),
            "Flush",
            {"hours": raw},
        )
    flash(f"Deleted {store.flush(hours)} failed job(s).", "ok")
    return redirect(url_for("dashboard.failed_list"))

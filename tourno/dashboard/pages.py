"""The overview (with its JSON for the page's polling), workers, schedule
(with "run now", as ``tourno schedule run``) and mail: each reads the
snapshot the CLI and the JSON admin API read."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import current_app, flash, jsonify, redirect, render_template, request, url_for

from tourno.config import ConfigError, Settings
from tourno.dashboard import charts, timefmt
from tourno.dashboard.blueprint import bp, now
from tourno.db import COUNT_CAP, parse_timestamp
from tourno.mail import store as mail_store
from tourno.mail.models import EmailOutbox, EmailStatus, EmailSuppression
from tourno.queue import backends
from tourno.queue import status as queue_status
from tourno.scheduler import status as schedule_status
from tourno.scheduler.loop import dispatch_now
from tourno.scheduler.tasks import find_task, task_table

#: Rows the mail page lists of each kind.
MAIL_ROWS = 50
#: How often the overview's script re-reads its JSON.
POLL_MS = 5000


def _settings() -> Settings:
    settings: Settings = current_app.config["TOURNO_SETTINGS"]
    return settings


def schedule_rows(at: dt.datetime) -> tuple[list[schedule_status.TaskStatus], str | None]:
    """The scheduler's snapshot, or why there is none (the periodic jobs are
    registered by ``tourno.setup()``; a bad frequency setting names itself)."""
    try:
        tasks = task_table(_settings())
    except (RuntimeError, ConfigError) as exc:
        return [], str(exc)
    return schedule_status.snapshot(tasks, at), None


def overview_data() -> dict[str, Any]:
    """Plain JSON values: the page renders them and its script re-reads them."""
    at = now()
    # Counts exact up to COUNT_CAP, estimated above: this runs at every poll.
    snap = queue_status.snapshot(_settings(), cap=COUNT_CAP)
    queues = []
    for q in snap["queues"]:
        oldest = parse_timestamp(q["oldest_ready_at"])
        queues.append(
            {
                "queue": q["queue"],
                "ready": q["ready"],
                "delayed": q["delayed"],
                "reserved": q["reserved"],
                # As shown ("≈1,200,000" for an estimate); the poll's script uses these.
                "ready_text": str(q["ready"]),
                "delayed_text": str(q["delayed"]),
                "reserved_text": str(q["reserved"]),
                "oldest_ready_at": timefmt.iso(oldest),
                "oldest_ready_age": timefmt.duration_text((at - oldest).total_seconds()) if oldest else "",
                "paused_at": timefmt.iso(q.get("paused_at")),
            }
        )
    tasks, schedule_problem = schedule_rows(at)
    dispatched = [t for t in tasks if t.last_dispatched_slot is not None]
    last = max(dispatched, key=lambda t: t.last_dispatched_slot or at, default=None)
    return {
        "generated_at": timefmt.iso(at),
        "connection": snap["connection"],
        "queues": queues,
        "workers": len(snap["workers"]),
        "busy_workers": sum(1 for w in snap["workers"] if w["current_job_id"] is not None),
        "failed": snap["failed"],
        "failed_text": str(snap["failed"]),
        "waiting_for_redis": snap.get("waiting_for_redis"),
        "last_dispatch": None
        if last is None
        else {"task": last.task, "slot": timefmt.iso(last.last_dispatched_slot)},
        "schedule_problem": schedule_problem,
        "mail": {status: str(n) for status, n in mail_store.outbox_status(COUNT_CAP).items()},
        "charts": charts.charts(at),
    }


@bp.get("")
def overview() -> str:
    box = {"width": charts.WIDTH, "height": charts.HEIGHT, "left": charts.LEFT}
    box |= {"right": charts.WIDTH - charts.RIGHT, "top": charts.TOP, "bottom": charts.HEIGHT - charts.BOTTOM}
    return render_template("dashboard/overview.html", data=overview_data(), poll_ms=POLL_MS, box=box)


@bp.get("/overview.json")
def overview_json() -> Any:
    return jsonify(overview_data())


@bp.get("/workers")
def workers() -> str:
    # The backend's own list, as the snapshot reads it, without the snapshot's
    # queue sizes and failed count (whole-table counts this page does not show).
    stale_after = _settings().worker_stale_after
    rows = backends.current().workers(stale_after)
    return render_template("dashboard/workers.html", workers=rows, stale_after=stale_after)


@bp.get("/schedule")
def schedule() -> str:
    at = now()
    tasks, problem = schedule_rows(at)
    return render_template("dashboard/schedule.html", tasks=tasks, problem=problem, now=at)


@bp.get("/mail")
def mail() -> str:
    summary = mail_store.summary(now(), _settings(), cap=COUNT_CAP)
    troubled = (
        EmailOutbox.select()
        .where(EmailOutbox.status.in_([EmailStatus.FAILED, EmailStatus.DEAD, EmailStatus.SUPPRESSED]))
        .order_by(EmailOutbox.id.desc())
        .limit(MAIL_ROWS)
    )
    suppressions = EmailSuppression.select().order_by(EmailSuppression.created_at.desc()).limit(MAIL_ROWS)
    return render_template(
        "dashboard/mail.html", summary=summary, troubled=list(troubled), suppressions=list(suppressions)
    )


@bp.post("/schedule/run")
def schedule_run() -> Any:
    """Dispatch one task now, outside its slots, as ``tourno schedule run``."""
    try:
        task = find_task(request.form.get("task", ""), task_table(_settings()))
    except (RuntimeError, ConfigError) as exc:
        flash(str(exc), "error")
        return redirect(url_for("dashboard.schedule"))
    except KeyError as exc:
        flash(str(exc.args[0]), "error")
        return redirect(url_for("dashboard.schedule"))
    result = dispatch_now(task)
    if result.job_id is None:
        flash(f"{task.name} is already pending; not dispatched again.", "ok")
    else:
        flash(f"Dispatched {task.name} as job {result.job_id}.", "ok")
    return redirect(url_for("dashboard.schedule"))

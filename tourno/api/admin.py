"""Admin views: the queue's state (the same figures as ``tourno queue status``)
and the periodic jobs' recent runs."""

from __future__ import annotations

import importlib

from flask import Blueprint, current_app, jsonify

from tourno.accounts.models import Role
from tourno.api.auth import require_role
from tourno.api.serializers import when
from tourno.api.validation import Query

bp = Blueprint("admin", __name__)


@bp.get("/admin/queue")
def queue_status():
    from tourno.queue.status import snapshot

    require_role(Role.ADMIN)
    data = snapshot(current_app.config["TOURNO_SETTINGS"])
    for q in data["queues"]:
        q["oldest_ready_at"] = when(q["oldest_ready_at"])
    for w in data["workers"]:
        w["started_at"], w["heartbeat_at"] = when(w["started_at"]), when(w["heartbeat_at"])
        w["current_job_id"] = None if w["current_job_id"] is None else str(w["current_job_id"])
    return jsonify(data)


def _job_run_model():
    """The scheduler's JobRun model, if this build has it."""
    try:
        module = importlib.import_module("tourno.scheduler.models")
    except ImportError:
        return None
    return getattr(module, "JobRun", None)


@bp.get("/admin/jobs/runs")
def job_runs():
    require_role(Role.ADMIN)
    query = Query()
    page, per_page = query.page(max_per_page=200, default_per_page=50)
    query.check()
    model = _job_run_model()
    if model is None:
        return jsonify({"runs": [], "note": "this build records no job runs yet"})
    rows = model.select().order_by(model.id.desc()).paginate(page, per_page)
    return jsonify({"runs": [_plain_row(r) for r in rows.dicts()], "page": page, "per_page": per_page})


def _plain_row(row: dict) -> dict:
    import datetime as dt

    return {k: when(v) if isinstance(v, dt.datetime) else v for k, v in row.items()}

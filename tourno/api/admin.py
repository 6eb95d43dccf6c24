"""Admin views: the queue's state (the same figures as ``tourno queue status``)
and the periodic jobs' recent runs."""

from __future__ import annotations

import datetime as dt
import importlib
from typing import Annotated, Any

from flask import Blueprint, Response, current_app, jsonify
from pydantic import Field

from tourno.accounts.models import Role
from tourno.api import schemas
from tourno.api.auth import require_role
from tourno.api.openapi import documented
from tourno.api.serializers import when
from tourno.api.validation import query
from tourno.tournaments.inputs import Paging

bp = Blueprint("admin", __name__)


MAX_RUNS_PER_PAGE = 200
DEFAULT_RUNS_PER_PAGE = 50


class JobRunsQuery(Paging):
    """Longer pages than the domain's lists: an admin scans many runs."""

    per_page: Annotated[int, Field(ge=1, le=MAX_RUNS_PER_PAGE)] = DEFAULT_RUNS_PER_PAGE


@bp.get("/admin/queue")
@documented("Queue sizes, paused queues, live workers, failed count", response=schemas.QueueStatus, auth=True)
def queue_status() -> Response:
    from tourno.queue.status import snapshot

    require_role(Role.ADMIN)
    data = snapshot(current_app.config["TOURNO_SETTINGS"])
    for q in data["queues"]:
        q["oldest_ready_at"], q["paused_at"] = when(q["oldest_ready_at"]), when(q["paused_at"])
    for p in data["paused"]:
        p["paused_at"] = when(p["paused_at"])
    for w in data["workers"]:
        w["started_at"], w["heartbeat_at"] = when(w["started_at"]), when(w["heartbeat_at"])
        w["current_job_id"] = None if w["current_job_id"] is None else str(w["current_job_id"])
    return jsonify(data)


def _job_run_model() -> Any:
    """The scheduler's JobRun model, if this build has it."""
    try:
        module = importlib.import_module("tourno.scheduler.models")
    except ImportError:
        return None
    return getattr(module, "JobRun", None)


@bp.get("/admin/jobs/runs")
@documented("Recent runs of the periodic jobs", query=JobRunsQuery, response=schemas.JobRuns, auth=True)
def job_runs() -> Response:
    require_role(Role.ADMIN)
    asked = query(JobRunsQuery)
    page, per_page = asked.page, asked.per_page
    model = _job_run_model()
    if model is None:
        return jsonify({"runs": [], "note": "this build records no job runs yet"})
    rows = model.select().order_by(model.id.desc()).paginate(page, per_page)
    return jsonify({"runs": [_plain_row(r) for r in rows.dicts()], "page": page, "per_page": per_page})


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: when(v) if isinstance(v, dt.datetime) else v for k, v in row.items()}

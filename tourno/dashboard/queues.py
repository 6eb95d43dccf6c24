"""Queues: pause and resume, each a call into :mod:`tourno.queue.pauses`
(the same functions as ``tourno queue pause/resume``). A paused queue keeps
taking dispatches; no worker claims from it until it is resumed."""

from __future__ import annotations

from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for

from tourno.config import Settings
from tourno.dashboard.blueprint import bp
from tourno.db import COUNT_CAP
from tourno.queue import pauses
from tourno.queue import status as queue_status

#: Longer than any queue name the jobs table holds.
MAX_QUEUE_NAME = 255


def _queue() -> str | None:
    name = request.form.get("queue", "").strip()
    return name if 0 < len(name) <= MAX_QUEUE_NAME else None


@bp.get("/queues")
def queues() -> str:
    settings: Settings = current_app.config["TOURNO_SETTINGS"]
    snap = queue_status.snapshot(settings, cap=COUNT_CAP)
    return render_template("dashboard/queues.html", queues=snap["queues"])


@bp.post("/queues/pause")
def queue_pause() -> Any:
    name = _queue()
    if name is None:
        flash("Name the queue to pause.", "error")
    elif pauses.pause([name]):
        flash(f"Paused {name}: workers stop claiming from it within a second.", "ok")
    else:
        flash(f"{name} was already paused.", "ok")
    return redirect(url_for("dashboard.queues"))


@bp.post("/queues/resume")
def queue_resume() -> Any:
    name = _queue()
    if name is None:
        flash("Name the queue to resume.", "error")
    elif pauses.resume([name]):
        flash(f"Resumed {name}.", "ok")
    else:
        flash(f"{name} was not paused.", "ok")
    return redirect(url_for("dashboard.queues"))

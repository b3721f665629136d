"""The progress view: ``/containers/<id>/progress``.

The phases of the container's plan as a stepper (five; a sandbox's six,
its import among them), percent, elapsed time and an ETA, and the live log
console fed by the relay (``static/progress.js``).  The page is rendered
with what the script needs to start: the container's lifecycle, the last
``seq`` stored when the page was made (events up to it are history, later
ones are live), the server's clock, the plan's phases with their labels
and percent ranges (``provisioner.phases``), and the ETA: medians of the
phase durations of past clean runs of the same template and plan
(``web.eta``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from flask import Blueprint, Flask, render_template, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.events import TERMINAL_TYPES, now_iso
from provisioner.models import CONTAINER_ID, Container, ContainerEvent, Lifecycle
from provisioner.phases import PROVISION, Plan, plan_named
from provisioner.timings import Mark, RunTiming
from web.eta import Estimate, estimate, run_durations
from web.pages import not_found
from web.resources import get_db

bp = Blueprint("progress", __name__)

HISTORY_CANDIDATES = 20  # finished containers of the template looked at, newest first
HISTORY_RUNS = 10  # clean runs the median is taken over
_CACHE_SIZE = 4096

# A finished container's first run never changes: remember its durations
# (None: not a clean run) instead of reading its events again.
_runs: OrderedDict[str, RunTiming | None] = OrderedDict()
_runs_lock = threading.Lock()


def _first_run(session: Session, container_id: str, plan: Plan) -> RunTiming | None:
    with _runs_lock:
        if container_id in _runs:
            _runs.move_to_end(container_id)
            return _runs[container_id]
    query = (select(ContainerEvent.type, ContainerEvent.phase, ContainerEvent.ts)
             .where(ContainerEvent.container_id == container_id, ContainerEvent.type != "log")
             .order_by(ContainerEvent.seq))  # fmt: skip
    marks: list[Mark] = []
    ended = False
    for type_, phase, ts in session.execute(query):  # stops reading at the first end
        marks.append(Mark(type=type_, phase=phase, ts=ts))
        if type_ in TERMINAL_TYPES:
            ended = True
            break
    durations = run_durations(marks, plan)
    if ended:
        with _runs_lock:
            _runs[container_id] = durations
            while len(_runs) > _CACHE_SIZE:
                _runs.popitem(last=False)
    return durations


def template_estimate(session: Session, template: str, exclude: str,
                      plan: Plan = PROVISION) -> Estimate | None:  # fmt: skip
    """The ETA of a run of ``template`` through ``plan`` from the latest
    clean runs of containers of both (not ``exclude``'s): a sandbox's import
    is timed by earlier sandboxes only, and has no estimate without them."""
    candidates = session.scalars(
        select(Container.id)
        .where(Container.template == template, Container.id != exclude,
               Container.plan == plan.name,
               Container.finished_at.is_not(None),
               Container.lifecycle.in_([Lifecycle.READY, Lifecycle.DESTROYING,
                                        Lifecycle.DESTROYED]))
        .order_by(Container.created_at.desc()).limit(HISTORY_CANDIDATES)).all()  # fmt: skip
    runs: list[RunTiming] = []
    for container_id in candidates:
        durations = _first_run(session, container_id, plan)
        if durations is not None:
            runs.append(durations)
            if len(runs) >= HISTORY_RUNS:
                break
    return estimate(runs, plan)


def container_plan(ct: Container) -> Plan:
    """The plan the container's runs follow (an unknown name: the five
    phases, so a page of a newer release's container still shows)."""
    try:
        return plan_named(ct.plan)
    except KeyError:
        return PROVISION


def page_data(ct: Container, eta: Estimate | None) -> dict[str, Any]:
    """What ``progress.js`` starts from (rendered as JSON into the page)."""
    plan = container_plan(ct)
    return {
        "id": ct.id, "hostname": ct.hostname, "template": ct.template, "node": ct.node.name,
        "vmid": ct.vmid, "lifecycle": str(ct.lifecycle), "attempts": ct.attempts,
        "last_seq": max(ct.next_seq - 1, 0), "now": now_iso(),
        "eta": eta.as_json() if eta is not None else None,
        "plan": plan.name, "phases": plan.as_json(),
        "urls": {
            "api": url_for("api.get_container", container_id=ct.id),
            "ws": f"/ws/containers/{ct.id}/events",
            "detail": url_for("pages.container", container_id=ct.id),
            "list": url_for("pages.index"),
        },
    }  # fmt: skip


@bp.route("/containers/<container_id>/progress")
def progress(container_id: str) -> str | tuple[str, int]:
    """The live progress of one container's run."""
    session = get_db()
    ct = session.get(Container, container_id) if CONTAINER_ID.fullmatch(container_id) else None
    if ct is None:
        return not_found("Container not found",
                         f"There is no container with the id {container_id!r}, so there is no "
                         "progress to show. It may have been removed, or the link is mistyped.",
                         "pages.index", "Back to containers")  # fmt: skip
    plan = container_plan(ct)
    data = page_data(ct, template_estimate(session, ct.template, exclude=ct.id, plan=plan))
    session.commit()
    return render_template("progress.html", data=data)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

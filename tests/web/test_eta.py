"""The ETA from past runs: phase durations of a clean first run, medians."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from provisioner.models import ContainerEvent, Lifecycle, Sandbox
from provisioner.phases import PHASES, SANDBOX, as_json
from provisioner.timings import Mark, RunTiming
from tests.web.conftest import add_container, db_session, form_csrf
from web.eta import estimate, run_durations

T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)


def marks(*spec: tuple[str, str | None, float]) -> list[Mark]:
    """(type, phase, seconds after T0) -> marks (stored with seq 1, 2, ...)."""
    return [Mark(type=t, phase=p, ts=T0 + timedelta(seconds=s)) for t, p, s in spec]


CLEAN = marks(
    ("step", "create", 0),
    ("step", "create", 2),
    ("warning", "create", 3),
    ("step", "start", 5),
    ("step", "start", 8),
    ("step", "deploy", 9),
    ("step", "scripts", 10),
    ("step", "scripts", 30),
    ("step", "finalize", 40),
    ("complete", "finalize", 41.5),
)


def test_a_clean_run_lasts_from_each_phases_first_event_to_the_next_ones() -> None:
    run = run_durations(CLEAN)
    assert run is not None
    assert run.phases == {"create": 5, "start": 4, "deploy": 1, "scripts": 30, "finalize": 1.5}
    assert run.seconds == 41.5


def test_events_after_the_first_run_do_not_count() -> None:
    later = marks(("step", "finalize", 100), ("complete", "finalize", 200))
    run = run_durations([*CLEAN, *later])
    assert run is not None and run.seconds == 41.5


@pytest.mark.parametrize(
    "events",
    [
        # failed, even if a retry succeeded later
        marks(("step", "create", 0), ("step", "start", 1), ("error", "start", 2),
              ("step", "start", 50), ("step", "deploy", 51), ("step", "scripts", 52),
              ("step", "finalize", 53), ("complete", "finalize", 54)),
        # destroyed while pending: a complete without the phases
        marks(("step", "finalize", 0), ("complete", "finalize", 1)),
        # still running
        CLEAN[:-1],
        # phases out of order
        marks(("step", "start", 0), ("step", "create", 1), ("step", "deploy", 2),
              ("step", "scripts", 3), ("step", "finalize", 4), ("complete", "finalize", 5)),
        [],
    ],
    ids=["failed-then-retried", "destroyed-pending", "unfinished", "out-of-order", "empty"],
)  # fmt: skip
def test_only_clean_finished_runs_count(events: list[Mark]) -> None:
    assert run_durations(events) is None


def test_the_estimate_is_the_median_per_phase_and_in_total() -> None:
    def run(scale: float) -> RunTiming:
        return RunTiming(outcome="ready", seconds=scale * 15,
                         phases={p: scale * (i + 1) for i, p in enumerate(PHASES)})  # fmt: skip

    est = estimate([run(1), run(100), run(2)])  # one slow outlier moves nothing
    assert est is not None
    assert est.runs == 3
    assert est.total == 30
    assert est.phases == {"create": 2, "start": 4, "deploy": 6, "scripts": 8, "finalize": 10}
    assert est.as_json() == {"runs": 3, "total": 30,
                             "phases": {"create": 2, "start": 4, "deploy": 6, "scripts": 8,
                                        "finalize": 10}}  # fmt: skip


def test_no_runs_no_estimate() -> None:
    assert estimate([]) is None


# --- the progress page renders the estimate from the database ------------------------------


def _store_run(app: Flask, spec: list[Mark], lifecycle: Lifecycle, start: datetime) -> str:
    cid = add_container(app, template="lines", lifecycle=lifecycle, finished_at=start)
    with db_session(app) as session:
        for seq, m in enumerate(spec, 1):
            session.add(ContainerEvent(container_id=cid, seq=seq, type=m.type, phase=m.phase,
                                       message="", ts=m.ts + (start - T0)))  # fmt: skip
            # log lines in between are skipped by the query, whatever their number
            session.add(ContainerEvent(container_id=cid, seq=1000 + seq, type="log",
                                       phase=m.phase, message="x", ts=start))  # fmt: skip
    return cid


def page_data(html: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="progress-data">(.*?)</script>', html,
                      re.S)  # fmt: skip
    assert match, html
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def test_the_progress_page_carries_the_median_of_earlier_clean_runs(app: Flask,
                                                                    logged_in: FlaskClient) -> None:  # fmt: skip
    slow = marks(*[(m.type, m.phase, (m.ts - T0).total_seconds() * 3) for m in CLEAN])
    _store_run(app, CLEAN, Lifecycle.READY, T0)
    _store_run(app, slow, Lifecycle.DESTROYED, T0 + timedelta(hours=1))
    _store_run(app, CLEAN, Lifecycle.READY, T0 + timedelta(hours=2))
    failed = marks(("step", "create", 0), ("error", "create", 500))
    _store_run(app, failed, Lifecycle.ERROR, T0 + timedelta(hours=3))
    current = add_container(app, template="lines", hostname="web01", lifecycle=Lifecycle.CREATING,
                            next_seq=43)  # fmt: skip
    other = add_container(app, template="nginx", hostname="other")

    response = logged_in.get(f"/containers/{current}/progress")
    assert response.status_code == 200
    data = page_data(response.text)
    assert data["eta"] == {"runs": 3, "total": 41.5, "phases": {
        "create": 5, "start": 4, "deploy": 1, "scripts": 30, "finalize": 1.5}}  # fmt: skip
    assert data["lifecycle"] == "creating" and data["last_seq"] == 42
    assert data["hostname"] == "web01" and data["node"] == "offline"
    assert data["urls"]["ws"] == f"/ws/containers/{current}/events"
    assert data["phases"] == as_json()  # progress.js takes the phases from here
    assert '<span class="stage-label">Deploy files</span>' in response.text
    assert 'id="progress" class="progress-view" data-lifecycle="creating"' in response.text
    # a template without clean runs has no estimate (and says so)
    response = logged_in.get(f"/containers/{other}/progress")
    assert page_data(response.text)["eta"] is None
    assert "no history yet" in response.text


def test_the_progress_page_needs_a_login_and_a_container(client: FlaskClient,
                                                         logged_in: FlaskClient) -> None:  # fmt: skip
    assert logged_in.get("/containers/0000-nope/progress").status_code == 404
    logged_in.post("/logout", data={"csrf_token": form_csrf(logged_in.get("/").text)})
    assert logged_in.get("/containers/0000-nope/progress").status_code in (302, 401)


# --- a sandbox's plan: six phases, the import among them -----------------------------------

SANDBOX_CLEAN = marks(
    ("step", "create", 0),
    ("step", "start", 5),
    ("step", "deploy", 9),
    ("step", "scripts", 10),
    ("step", "import", 30),
    ("step", "import", 50),
    ("step", "finalize", 70),
    ("complete", "finalize", 72),
)


def test_a_sandbox_run_is_clean_through_its_own_plan_only() -> None:
    run = run_durations(SANDBOX_CLEAN, SANDBOX)
    assert run is not None
    assert run.phases == {"create": 5, "start": 4, "deploy": 1, "scripts": 20, "import": 40,
                          "finalize": 2}  # fmt: skip
    # the five phases' estimate takes no sandbox run, and a sandbox's no plain one
    assert run_durations(SANDBOX_CLEAN) is None
    assert run_durations(CLEAN, SANDBOX) is None
    est = estimate([run], SANDBOX)
    assert est is not None and list(est.phases) == list(SANDBOX.names)
    assert est.phases["import"] == 40 and est.total == 72


def _sandbox_container(app: Flask, **columns: Any) -> str:
    cid = add_container(app, template="wordpress", plan="sandbox", **columns)
    with db_session(app) as session:
        session.add(Sandbox(container_id=cid, client="acme", source_url="https://acme.example",
                            source_user="editor", source_secret_ciphertext="x",
                            expires_at=T0 + timedelta(days=7)))  # fmt: skip
    return cid


def test_a_sandbox_progress_page_shows_its_six_phases_and_times_them_by_sandboxes(
        app: Flask, logged_in: FlaskClient) -> None:  # fmt: skip
    # a plain wordpress container's clean run says nothing about a sandbox's import
    plain = add_container(app, template="wordpress", lifecycle=Lifecycle.READY, finished_at=T0)
    with db_session(app) as session:
        for seq, m in enumerate(CLEAN, 1):
            session.add(ContainerEvent(container_id=plain, seq=seq, type=m.type, phase=m.phase,
                                       message="", ts=m.ts))  # fmt: skip
    current = _sandbox_container(app, hostname="sandbox-acme", lifecycle=Lifecycle.CREATING)
    response = logged_in.get(f"/containers/{current}/progress")
    assert response.status_code == 200
    data = page_data(response.text)
    assert data["plan"] == "sandbox" and data["phases"] == SANDBOX.as_json()
    assert data["eta"] is None and "no history yet" in response.text
    labels = re.findall(r'<span class="stage-label">([^<]+)</span>', response.text)
    assert labels == ["Create", "Start", "Deploy files", "Run scripts", "Import content",
                      "Finalize"]  # fmt: skip
    assert re.findall(r'class="stage" data-phase="([a-z]+)"', response.text) == list(SANDBOX.names)

    # an earlier sandbox's clean run: its six phases are the estimate
    earlier = _sandbox_container(app, hostname="sandbox-old", lifecycle=Lifecycle.DESTROYED,
                                 finished_at=T0)  # fmt: skip
    with db_session(app) as session:
        for seq, m in enumerate(SANDBOX_CLEAN, 1):
            session.add(ContainerEvent(container_id=earlier, seq=seq, type=m.type, phase=m.phase,
                                       message="", ts=m.ts))  # fmt: skip
    data = page_data(logged_in.get(f"/containers/{current}/progress").text)
    assert data["eta"] == {"runs": 1, "total": 72, "phases": {
        "create": 5, "start": 4, "deploy": 1, "scripts": 20, "import": 40, "finalize": 2}}  # fmt: skip
    # and the plain container's page still has five phases, timed by plain runs only
    data = page_data(logged_in.get(f"/containers/{plain}/progress").text)
    assert data["plan"] == "provision" and data["phases"] == as_json()

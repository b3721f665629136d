"""/metrics in the app: authentication, content, caching, runs folded once."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import timedelta
from importlib.metadata import version

import pytest
from flask import Flask
from flask.testing import FlaskClient

from provisioner.config import Settings
from provisioner.models import ContainerEvent, Lifecycle, utcnow
from provisioner.queue import enqueue
from tests.ops import promtext
from tests.web.conftest import add_container as add_container_row
from tests.web.conftest import bearer, closed_port, db_session, login
from web.app import create_app
from web.metrics import CONTENT_TYPE

# what Prometheus 2.x sends
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")  # fmt: skip


@pytest.fixture
def fresh_app(settings: Settings) -> Iterator[Flask]:
    """The app with its metrics recomputed at every scrape."""
    app = create_app(dataclasses.replace(settings, web_metrics_max_age=0), {"TESTING": True})
    yield app
    app.extensions["provisioner"].close()


def scrape(client: FlaskClient, token: str) -> dict[str, promtext.MetricFamily]:
    response = client.get("/metrics", headers={**bearer(token), "Accept": PROMETHEUS_ACCEPT})
    assert response.status_code == 200, response.text
    return promtext.parse(response.text)


def api_token(app: Flask) -> str:
    from provisioner import users

    with db_session(app) as session:
        if users.get_user(session, "scraper") is None:
            users.create_user(session, "scraper", "scraper password 1", is_admin=False)
        _, secret = users.create_api_token(session, "scraper", f"p{time.monotonic_ns()}")
    return secret


def test_metrics_need_authentication(app: Flask, client: FlaskClient, token: str) -> None:
    for headers in ({}, {"Accept": PROMETHEUS_ACCEPT}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401, headers  # not the login page's redirect
        assert "Authorization: Bearer" in response.text
    response = client.get("/metrics", headers={"Authorization": "Bearer lxcp_wrong"})
    assert response.status_code == 401 and "invalid" in response.text
    assert client.get("/metrics").headers["WWW-Authenticate"].startswith("Bearer")
    response = client.get("/metrics", headers=bearer(token))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    promtext.parse(response.text)


def test_a_logged_in_browser_sees_them_too(app: Flask, client: FlaskClient, user: str) -> None:
    assert login(client).status_code == 302
    assert client.get("/metrics").status_code == 200


def test_a_fresh_install(fresh_app: Flask, settings: Settings) -> None:
    families = scrape(fresh_app.test_client(), api_token(fresh_app))
    build = families["provisioner_build_info"].matching()
    assert len(build) == 1 and build[0][1] == 1
    assert build[0][0]["version"] == version("lxc-provisioner")
    containers = families["provisioner_containers"]
    assert {labels["lifecycle"]: v for labels, v in containers.matching()} == {
        state.value: 0 for state in Lifecycle}  # fmt: skip
    assert families["provisioner_runs_total"].value(outcome="ready") == 0
    assert families["provisioner_runs_total"].type == "counter"
    phase = families["provisioner_phase_duration_seconds"]
    assert phase.type == "histogram"
    assert phase.value("provisioner_phase_duration_seconds_count", phase="scripts",
                       outcome="ready") == 0  # fmt: skip
    queue = settings.queue_name
    jobs = families["provisioner_queue_jobs"]
    for state in ("queued", "started", "failed", "finished", "deferred", "scheduled"):
        assert jobs.value(queue=queue, state=state) == 0
    assert families["provisioner_workers"].value(queue=queue, state="idle") == 0
    assert families["provisioner_redis_up"].value() == 1


def test_containers_and_the_queue(fresh_app: Flask, settings: Settings) -> None:
    client, token = fresh_app.test_client(), api_token(fresh_app)
    for state in (Lifecycle.READY, Lifecycle.READY, Lifecycle.ERROR):
        add_container_row(fresh_app, lifecycle=state)
    with fresh_app.app_context():
        redis = fresh_app.extensions["provisioner"].redis
        enqueue(redis, settings, add_container_row(fresh_app))
    time.sleep(1.1)
    families = scrape(client, token)
    containers = families["provisioner_containers"]
    assert containers.value(lifecycle="ready") == 2
    assert containers.value(lifecycle="error") == 1
    assert containers.value(lifecycle="pending") == 1
    assert families["provisioner_queue_jobs"].value(queue=settings.queue_name, state="queued") == 1
    age = families["provisioner_queue_oldest_job_age_seconds"].value(queue=settings.queue_name)
    assert 1 <= age < 60


def _run(app: Flask, cid: str, first_seq: int, start: float, outcome: str) -> int:
    """Store the events of one run, ``start`` seconds from now (negative:
    in the past); returns the next seq."""
    t0 = utcnow() + timedelta(seconds=start)
    rows = [("step", "create", 0, "creating"), ("step", "start", 4, "starting"),
            ("log", "start", 5, "a log line"), ("step", "deploy", 6, "deploying"),
            ("step", "scripts", 7, "scripts")]  # fmt: skip
    if outcome == "ready":
        rows += [("step", "finalize", 17, "finalizing"),
                 ("complete", "finalize", 20, "CT 104 is ready at 198.18.0.130")]  # fmt: skip
    else:
        rows += [("error", "scripts", 9, "scripts failed: script 20-check.sh exited with 3")]
    with db_session(app) as session:
        for i, (kind, phase, second, message) in enumerate(rows):
            session.add(ContainerEvent(container_id=cid, seq=first_seq + i, type=kind,
                                       phase=phase, message=message,
                                       outcome=outcome if kind in ("complete", "error") else None,
                                       ts=t0 + timedelta(seconds=second)))  # fmt: skip
    return first_seq + len(rows)


def test_runs_are_folded_once(fresh_app: Flask) -> None:
    client, token = fresh_app.test_client(), api_token(fresh_app)
    first, second = add_container_row(fresh_app), add_container_row(fresh_app)
    seq = _run(fresh_app, first, 1, -3600, "error")  # long settled
    _run(fresh_app, second, 1, -30, "ready")  # not settled yet: read again, counted once
    families = scrape(client, token)
    runs = families["provisioner_runs_total"]
    assert (runs.value(outcome="ready"), runs.value(outcome="error")) == (1, 1)
    phase = families["provisioner_phase_duration_seconds"]
    name = "provisioner_phase_duration_seconds"
    # the failed run spent 2 s in scripts, the ready one 10 s
    assert phase.value(f"{name}_sum", phase="scripts", outcome="error") == 2
    assert phase.value(f"{name}_sum", phase="scripts", outcome="ready") == 10
    assert phase.value(f"{name}_bucket", phase="scripts", outcome="ready", le="5") == 0
    assert phase.value(f"{name}_bucket", phase="scripts", outcome="ready", le="10") == 1
    assert phase.value(f"{name}_sum", phase="start", outcome="ready") == 2
    assert phase.value(f"{name}_count", phase="finalize", outcome="error") == 0
    run = families["provisioner_run_duration_seconds"]
    assert run.value("provisioner_run_duration_seconds_sum", outcome="ready") == 20

    assert scrape(client, token)["provisioner_runs_total"].value(outcome="ready") == 1
    seq = _run(fresh_app, first, seq, -10, "ready")  # the retry of the failed one
    runs = scrape(client, token)["provisioner_runs_total"]
    assert (runs.value(outcome="ready"), runs.value(outcome="error")) == (2, 1)
    with db_session(fresh_app) as session:  # a destroy is no provisioning run
        for i, kind in enumerate(("step", "complete")):
            session.add(ContainerEvent(container_id=first, seq=seq + i, type=kind,
                                       phase="finalize", message="destroyed",
                                       outcome="destroyed" if kind == "complete" else None,
                                       ts=utcnow()))  # fmt: skip
    runs = scrape(client, token)["provisioner_runs_total"]
    assert (runs.value(outcome="ready"), runs.value(outcome="error")) == (2, 1)


def test_cached_for_a_few_seconds(app: Flask, token: str) -> None:
    client = app.test_client()
    before = client.get("/metrics", headers=bearer(token)).text
    add_container_row(app, lifecycle=Lifecycle.READY)
    assert client.get("/metrics", headers=bearer(token)).text == before
    app.extensions["provisioner.metrics"].ttl = 0
    assert promtext.parse(client.get("/metrics", headers=bearer(token)).text)[
        "provisioner_containers"].value(lifecycle="ready") == 1  # fmt: skip


def test_without_redis_the_database_figures_remain(settings: Settings) -> None:
    no_redis = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    app = create_app(no_redis, {"TESTING": True})
    try:
        add_container_row(app, lifecycle=Lifecycle.READY)
        families = scrape(app.test_client(), api_token(app))
    finally:
        app.extensions["provisioner"].close()
    assert families["provisioner_redis_up"].value() == 0
    assert families["provisioner_containers"].value(lifecycle="ready") == 1
    assert "provisioner_queue_jobs" not in families

"""/metrics after real runs: a real worker provisions one container to ready
and fails another in its scripts phase."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from flask import Flask
from rq import Queue, Worker

from provisioner.models import Lifecycle
from provisioner.phases import PHASES
from tests.ops import promtext
from tests.ops.test_metrics import PROMETHEUS_ACCEPT
from tests.pipeline.conftest import Stack
from tests.web.conftest import bearer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_metrics_after_a_ready_and_a_failed_run(
    ops_stack: Stack, stack_app: Flask, stack_token: str, destroy_later: Callable[[str], str]
) -> None:
    ops_stack.start_workers(1)
    ready = destroy_later(ops_stack.submit("lines", "metrics-ready", variables={"count": 20}))
    failed = destroy_later(ops_stack.submit("failing", "metrics-error"))
    assert ops_stack.wait(ready).lifecycle == Lifecycle.READY, ops_stack.worker_logs()[-3000:]
    assert ops_stack.wait(failed).lifecycle == Lifecycle.ERROR
    # the row says error a moment before RQ files the job as failed and the worker idles
    queue = Queue(ops_stack.settings.queue_name, connection=ops_stack.redis)
    deadline = time.monotonic() + 30
    while (queue.failed_job_registry.count < 1 or queue.started_job_registry.count
           or any(w.get_state() != "idle" for w in Worker.all(queue=queue))):  # fmt: skip
        assert time.monotonic() < deadline, ops_stack.worker_logs()[-3000:]
        time.sleep(0.1)

    response = stack_app.test_client().get(
        "/metrics", headers={**bearer(stack_token), "Accept": PROMETHEUS_ACCEPT}
    )
    assert response.status_code == 200
    families = promtext.parse(response.text)

    containers = families["provisioner_containers"]
    assert containers.value(lifecycle="ready") == 1 and containers.value(lifecycle="error") == 1
    runs = families["provisioner_runs_total"]
    assert runs.value(outcome="ready") == 1 and runs.value(outcome="error") == 1

    name = "provisioner_phase_duration_seconds"
    phases = families[name]
    total = 0.0
    for phase in PHASES:
        assert phases.value(f"{name}_count", phase=phase, outcome="ready") == 1, phase
        total += phases.value(f"{name}_sum", phase=phase, outcome="ready")
    # the failed run went through create, start, deploy and failed in scripts
    for phase in ("create", "start", "deploy", "scripts"):
        assert phases.value(f"{name}_count", phase=phase, outcome="error") == 1, phase
    assert phases.value(f"{name}_count", phase="finalize", outcome="error") == 0
    assert phases.value(f"{name}_sum", phase="create", outcome="ready") > 0
    run = families["provisioner_run_duration_seconds"]
    run_seconds = run.value("provisioner_run_duration_seconds_sum", outcome="ready")
    assert 0 < total <= run_seconds + 1e-6  # the phases fit in the run

    jobs = families["provisioner_queue_jobs"]
    assert jobs.value(queue=queue.name, state="finished") == 1
    assert jobs.value(queue=queue.name, state="failed") == 1  # the job failed in RQ too
    assert jobs.value(queue=queue.name, state="queued") == 0
    assert jobs.value(queue=queue.name, state="started") == 0
    workers = families["provisioner_workers"]
    assert workers.value(queue=queue.name, state="idle") == 1
    assert workers.value(queue=queue.name, state="busy") == 0
    assert families["provisioner_jobs_running"].matching() == []

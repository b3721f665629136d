"""`rq info` against our Redis and queue, with a real `provisioner worker`;
a running job's phase and percent through RQ's Job API and /metrics."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable

import pytest
from flask import Flask
from rq import Queue, Worker
from rq.job import Job

from provisioner.models import Lifecycle
from tests.conftest import ROOT
from tests.ops import promtext
from tests.pipeline.conftest import Stack
from tests.web.conftest import bearer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def rq_info(stack: Stack, *options: str, url_from_env: bool = False) -> str:
    """``rq info --url $REDIS_URL [OPTIONS] $PROVISIONER_QUEUE_NAME`` as an
    operator runs it (or with RQ_REDIS_URL, which keeps a password out of ps)."""
    url = [] if url_from_env else ["--url", stack.settings.redis_url]
    env = {**os.environ, "RQ_REDIS_URL": stack.settings.redis_url} if url_from_env else None
    done = subprocess.run(
        [str(ROOT / ".venv/bin/rq"), "info", *url, *options, stack.settings.queue_name],
        capture_output=True, text=True, timeout=60, check=False, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def start_worker(stack: Stack) -> str:
    """Start one `provisioner worker`; returns its name once it is registered."""
    stack.start_workers(1)
    name = str(stack.workers[-1].args[-1])  # type: ignore[index]
    queue = Queue(stack.settings.queue_name, connection=stack.redis)
    deadline = time.monotonic() + 60
    while name not in {w.name for w in Worker.all(queue=queue)}:
        assert stack.workers[-1].poll() is None, stack.worker_logs()[-2000:]
        assert time.monotonic() < deadline, "the worker did not register"
        time.sleep(0.2)
    return name


def test_rq_info_shows_the_queue_and_the_worker(ops_stack: Stack) -> None:
    name = start_worker(ops_stack)
    queue = ops_stack.settings.queue_name
    try:
        out = rq_info(ops_stack)
        assert re.search(rf"^{re.escape(queue)}\s+\|\s*0, 0 executing", out, re.M), out
        # the provisioning queue first, then its webhooks queue (docs/webhooks.md)
        listens = re.escape(f"{queue}, {queue}-webhooks")
        assert re.search(rf"^{re.escape(name)} \(.+\): idle {listens}\.", out, re.M), out
        assert "1 workers, 1 queues" in out
        by_queue = rq_info(ops_stack, "-R")
        assert re.search(rf"^{re.escape(queue)}:\s+{re.escape(name)} \(idle\)", by_queue, re.M)
        raw = rq_info(ops_stack, "--raw", url_from_env=True)
        assert f"queue {queue} 0, 0 executing" in raw and f"worker {name} (" in raw
    finally:
        ops_stack.stop_workers()


def test_a_running_jobs_phase_and_percent_are_visible(
    ops_stack: Stack, stack_app: Flask, stack_token: str, destroy_later: Callable[[str], str]
) -> None:
    name = start_worker(ops_stack)
    queue = Queue(ops_stack.settings.queue_name, connection=ops_stack.redis)
    # 20-long.sh runs for about ten seconds: long enough to look at it
    cid = destroy_later(ops_stack.submit("longrun", "rq-info-long"))
    deadline = time.monotonic() + 120
    while ops_stack.container(cid).current_phase != "scripts" or not any(
            "long script started" in line for line in _log_lines(ops_stack, cid)):  # fmt: skip
        assert time.monotonic() < deadline, ops_stack.worker_logs()[-3000:]
        time.sleep(0.2)

    out = rq_info(ops_stack)
    assert re.search(rf"^{re.escape(queue.name)}\s+\|\s*0, 1 executing", out, re.M), out
    assert re.search(rf"^{re.escape(name)} \(.+\): busy ", out, re.M), out
    assert f"{name} (busy)" in rq_info(ops_stack, "-R")

    job_ids = queue.started_job_registry.get_job_ids()
    assert len(job_ids) == 1 and job_ids[0].startswith(f"provision-{cid}-")
    job = Job.fetch(job_ids[0], connection=ops_stack.redis)
    assert job.meta["container"] == cid and job.meta["action"] == "provision"
    assert job.meta["phase"] == "scripts" and 50 <= job.meta["percent"] < 90, job.meta
    worker = next(w for w in Worker.all(queue=queue) if w.name == name)
    assert worker.get_current_job_id() == job.id

    families = promtext.parse(stack_app.test_client().get(
        "/metrics", headers=bearer(stack_token)).text)  # fmt: skip
    running = families["provisioner_jobs_running"]
    assert running.value(queue=queue.name, action="provision", phase="scripts") == 1
    assert families["provisioner_workers"].value(queue=queue.name, state="busy") == 1

    assert ops_stack.wait(cid).lifecycle == Lifecycle.READY
    job.refresh()
    assert job.meta["phase"] == "finalize" and job.meta["percent"] == 100


def _log_lines(stack: Stack, cid: str) -> list[str]:
    from sqlalchemy import select

    from provisioner.models import ContainerEvent

    with stack.factory() as session:
        return list(session.scalars(select(ContainerEvent.message).where(
            ContainerEvent.container_id == cid, ContainerEvent.type == "log")))  # fmt: skip

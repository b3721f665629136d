"""The worker process: SIGTERM lets the current job finish; progress is in
the job's meta for `rq info`; jobs carry only ids."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from rq import Queue
from rq.registry import FinishedJobRegistry

from provisioner.models import Lifecycle
from provisioner.queue import enqueue
from tests.pipeline.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_sigterm_finishes_the_current_job_then_exits(
    stack: Stack, cleanup: Callable[[str], str]
) -> None:
    stack.stop_workers()  # only ours, so the job cannot go elsewhere
    stack.start_workers(1)
    worker = stack.workers[0]
    cid = cleanup(stack.submit("lines", "term-e2e", variables={"count": 30000}))
    deadline = time.monotonic() + 120
    while stack.container(cid).current_phase != "scripts" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.container(cid).current_phase == "scripts"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(300) == 0  # it waited for the job, then left cleanly
    ct = stack.container(cid)
    assert ct.lifecycle == Lifecycle.READY, (ct.error_message, stack.worker_logs()[-2000:])
    stack.workers.remove(worker)
    queue = Queue(stack.settings.queue_name, connection=stack.redis)
    finished = FinishedJobRegistry(queue=queue).get_job_ids()
    jobs = [queue.fetch_job(job_id) for job_id in finished]
    ours = [j for j in jobs if j is not None and j.args and j.args[0] == cid]
    assert len(ours) == 1
    job = ours[0]
    assert job.args == (cid, "provision") or list(job.args) == [cid, "provision"]
    assert job.kwargs == {}
    assert job.meta["phase"] == "finalize" and job.meta["percent"] == 100
    assert job.return_value() == f"ready at {ct.ip}"


def test_an_action_asked_for_during_a_run_waits_for_it(
    stack: Stack, cleanup: Callable[[str], str]
) -> None:
    """A destroy queued while another worker provisions the container is not
    dropped: it waits for the run's lease, then destroys."""
    stack.stop_workers()
    stack.start_workers(2)
    cid = cleanup(stack.submit("longrun", "wait-lease"))
    deadline = time.monotonic() + 180
    while stack.container(cid).current_phase != "scripts" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.container(cid).current_phase == "scripts"
    stack.enqueue(cid, "destroy")  # the idle worker takes it at once and must wait
    ct = stack.wait(cid, (Lifecycle.DESTROYED, Lifecycle.ERROR), timeout=300)
    assert ct.lifecycle == Lifecycle.DESTROYED, (ct.error_message, stack.worker_logs()[-2000:])
    assert "destroy waits for the running job" in stack.worker_logs()
    # a second destroy that slipped in (the API refuses one while the first is
    # queued or running) finds nothing to do, and says nothing on the stream
    seq = stack.container(cid).next_seq
    queue = Queue(stack.settings.queue_name, connection=stack.redis)
    job = enqueue(stack.redis, stack.settings, cid, "destroy")
    deadline = time.monotonic() + 60
    while job.get_status(refresh=True) != "finished":
        assert time.monotonic() < deadline, stack.worker_logs()[-2000:]
        time.sleep(0.1)
    assert queue.fetch_job(job.id).return_value() == "not needed: the container is destroyed"
    assert stack.container(cid).next_seq == seq

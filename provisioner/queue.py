"""The provisioning queue.  The web app and the CLI enqueue through here by
the job's dotted name, so they never import pipeline code."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from redis import Redis
from rq import Queue
from rq.job import Job

from provisioner.config import Settings

JOB_FUNCTION = "pipeline.job.run"
ACTIONS = ("provision", "retry", "resync", "destroy", "start", "stop", "reboot")


def provisioning_queue(redis: Redis, settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=redis)


class ActionPending(Exception):
    """The same action of the container is queued or running already."""

    def __init__(self, action: str, job_id: str, state: str) -> None:
        super().__init__(f"a {action} of this container is {state} already (job {job_id})")
        self.job_id = job_id


def pending_job(redis: Redis, settings: Settings, container_id: str, action: str,
                run_alive: Callable[[], bool]) -> tuple[str, str] | None:  # fmt: skip
    """The container's job of ``action`` that is queued, or started by a
    worker whose run is alive (``run_alive``: its lease is held), as
    (job id, "queued" | "running"); None if there is none.  A started job
    of a worker that died does not count: recovery takes care of it."""
    prefix = f"{action}-{container_id}-"  # the ids ``enqueue`` gives
    queue = provisioning_queue(redis, settings)
    for job_id in queue.get_job_ids():
        if job_id.startswith(prefix):
            return job_id, "queued"
    started = [j for j in queue.started_job_registry.get_job_ids() if j.startswith(prefix)]
    if started and run_alive():
        return started[0], "running"
    return None


def enqueue_action(redis: Redis, settings: Settings, container_id: str, action: str,
                   run_alive: Callable[[], bool]) -> Job:  # fmt: skip
    """Queue ``action`` unless the same one is queued or running already (a
    double click, a second tab, a script run twice).  The check and the
    enqueue hold a short per-container lock, so two callers cannot both pass.

    Raises:
        ActionPending: the same action is queued or running.
    """
    with redis.lock(f"provisioner:container:{container_id}:enqueue", timeout=10,
                    blocking_timeout=10):  # fmt: skip
        pending = pending_job(redis, settings, container_id, action, run_alive)
        if pending is not None:
            raise ActionPending(action, *pending)
        return enqueue(redis, settings, container_id, action)


def enqueue(redis: Redis, settings: Settings, container_id: str, action: str = "provision",
            *, job_timeout: int | None = None) -> Job:  # fmt: skip
    """Queue one run of ``action`` for a container.  The job carries only
    the container id and the action; never a secret."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    return provisioning_queue(redis, settings).enqueue(
        JOB_FUNCTION, container_id, action,
        job_id=f"{action}-{container_id}-{uuid.uuid4().hex[:8]}",
        job_timeout=job_timeout or settings.job_timeout,
        result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600,
        description=f"{action} container {container_id}",
        meta={"container": container_id, "action": action, "phase": None, "percent": 0},
    )  # fmt: skip

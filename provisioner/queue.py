"""The provisioning queue.  The web app and the CLI enqueue through here by
the job's dotted name, so they never import pipeline code."""

from __future__ import annotations

import uuid

from redis import Redis
from rq import Queue
from rq.job import Job

from provisioner.config import Settings

JOB_FUNCTION = "pipeline.job.run"
ACTIONS = ("provision", "retry", "resync", "destroy", "start", "stop", "reboot")


def provisioning_queue(redis: Redis, settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=redis)


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

"""The provisioning queue.  The web app and the CLI enqueue through here by
the job's dotted name, so they never import pipeline code."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import LockError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from provisioner.config import Settings
from provisioner.errors import TransientError

JOB_FUNCTION = "pipeline.job.run"
ACTIONS = ("provision", "retry", "resync", "destroy", "start", "stop", "reboot",
           "snapshot", "rollback", "delete-snapshot", "set", "sync", "promote",
           "migrate")  # fmt: skip
# the actions whose parameters are an Operation row (the job carries its id)
OPERATIONS = ("resync", "snapshot", "rollback", "delete-snapshot", "set", "sync", "promote",
              "migrate")  # fmt: skip


def provisioning_queue(redis: Redis, settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=redis)


class ActionPending(Exception):
    """The same action of the container is queued or running already."""

    def __init__(self, action: str, job_id: str, state: str) -> None:
        super().__init__(f"a {action} of this container is {state} already (job {job_id})")
        self.job_id = job_id


def container_jobs(redis: Redis, settings: Settings, container_id: str) -> dict[str, str]:
    """The container's jobs that are queued or started: job id -> "queued" |
    "started" (ids are ``<action>-<container id>-<random>``, see ``enqueue``)."""
    queue = provisioning_queue(redis, settings)
    jobs = {j: "queued" for j in queue.get_job_ids() if f"-{container_id}-" in j}
    jobs.update((j, "started") for j in queue.started_job_registry.get_job_ids()
                if f"-{container_id}-" in j)  # fmt: skip
    return jobs


def pending_job(redis: Redis, settings: Settings, container_id: str, action: str,
                run_alive: Callable[[], bool]) -> tuple[str, str] | None:  # fmt: skip
    """The container's job of ``action`` that is queued, or started and
    alive, as (job id, "queued" | "running"); None if there is none.

    A started job is alive while a run of the container holds its lease
    (``run_alive``), or in its first ``lease_duration`` seconds (before its
    work horse has taken the lease).  A started job of a worker that died
    does not count after that: recovery takes care of its run.
    """
    for job_id, state in container_jobs(redis, settings, container_id).items():
        if not job_id.startswith(f"{action}-"):
            continue
        if state == "queued":
            return job_id, "queued"
        try:
            started = Job.fetch(job_id, connection=redis).started_at
        except NoSuchJobError:  # gone meanwhile
            continue
        young = (
            started is not None
            and (datetime.now(UTC) - started.replace(tzinfo=started.tzinfo or UTC)).total_seconds()
            < settings.lease_duration
        )
        if young or run_alive():
            return job_id, "running"
    return None


def enqueue_action(redis: Redis, settings: Settings, container_id: str, action: str,
                   run_alive: Callable[[], bool], operation_id: str | None = None) -> Job:  # fmt: skip
    """Queue ``action`` unless the same one is queued or running already (a
    double click, a second tab, a script run twice).  The check and the
    enqueue hold a short per-container lock, so two callers cannot both pass.

    Raises:
        ActionPending: the same action is queued or running.
        TransientError: the lock could not be had (Redis very slow or busy).
    """
    lock = redis.lock(f"provisioner:container:{container_id}:enqueue", timeout=30,
                      blocking_timeout=10)  # fmt: skip
    if not lock.acquire():
        raise TransientError(f"another request for container {container_id} holds its queue "
                             "lock: try again")  # fmt: skip
    try:
        pending = pending_job(redis, settings, container_id, action, run_alive)
        if pending is not None:
            raise ActionPending(action, *pending)
        return enqueue(redis, settings, container_id, action, operation_id=operation_id)
    finally:
        with contextlib.suppress(LockError):  # expired meanwhile: the job is queued all the same
            lock.release()


def enqueue(redis: Redis, settings: Settings, container_id: str, action: str = "provision",
            *, job_timeout: int | None = None, operation_id: str | None = None) -> Job:  # fmt: skip
    """Queue one run of ``action`` for a container.  The job carries only
    the container id, the action and, for an action with parameters, the id
    of its ``Operation`` row; never a parameter, never a secret."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    args = (container_id, action) if operation_id is None else (container_id, action, operation_id)
    return provisioning_queue(redis, settings).enqueue(
        JOB_FUNCTION, *args,
        job_id=f"{action}-{container_id}-{uuid.uuid4().hex[:8]}",
        job_timeout=job_timeout or settings.job_timeout,
        result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600,
        description=f"{action} container {container_id}",
        meta={"container": container_id, "action": action, "phase": None, "percent": 0},
    )  # fmt: skip

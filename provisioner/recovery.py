"""Picking up runs whose worker died.

A run holds its container's lease and renews it; a worker killed with -9
stops renewing.  Every worker looks now and then for containers that are
mid-run (creating/destroying) or still pending, whose lease has expired or
is missing, and enqueues a run again; the new run resumes from the stored
checkpoints.  A short Redis key makes sure only one worker re-enqueues.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from redis import Redis
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from provisioner.config import Settings
from provisioner.models import Container, Lease, Lifecycle, utcnow
from provisioner.queue import enqueue, provisioning_queue

log = logging.getLogger(__name__)


def stalled(factory: sessionmaker[Session], grace: float) -> list[tuple[str, Lifecycle]]:
    """Containers mid-run (or pending) with no live lease for ``grace`` seconds."""
    now = utcnow()
    quiet_since = now - timedelta(seconds=grace)
    with factory() as session:
        rows = session.execute(
            select(Container.id, Container.lifecycle)
            .outerjoin(Lease, Lease.container_id == Container.id)
            .where(Container.lifecycle.in_([Lifecycle.PENDING, Lifecycle.CREATING,
                                            Lifecycle.DESTROYING]),
                   Container.updated_at < quiet_since,
                   or_(Lease.container_id.is_(None), Lease.expires_at < now))
        ).all()  # fmt: skip
    return [(cid, lifecycle) for cid, lifecycle in rows]


def _queued_containers(redis: Redis, settings: Settings) -> set[str]:
    """Containers that have a job waiting in the queue."""
    queue = provisioning_queue(redis, settings)
    return {job_id.split("-", 1)[1][:36] for job_id in queue.get_job_ids() if "-" in job_id}


def recover_stalled(factory: sessionmaker[Session], redis: Redis, settings: Settings) -> list[str]:
    """Enqueue a run for every stalled container; returns their ids."""
    recovered = []
    candidates = stalled(factory, settings.lease_duration)
    # a pending request whose job is still waiting in a backlog is not stalled
    waiting = _queued_containers(redis, settings) if candidates else set()
    for cid, lifecycle in candidates:
        if lifecycle == Lifecycle.PENDING and cid in waiting:
            continue
        # one worker re-enqueues; the key outlives the time a new run needs to
        # take the lease
        if not redis.set(f"provisioner:recover:{cid}", "1", nx=True,
                         ex=max(1, int(settings.lease_duration))):  # fmt: skip
            continue
        action = "destroy" if lifecycle == Lifecycle.DESTROYING else "provision"
        enqueue(redis, settings, cid, action)
        log.warning("container %s had no live worker; run enqueued again (%s)", cid, action)
        recovered.append(cid)
    return recovered


class RecoveryLoop:
    """Runs :func:`recover_stalled` every ``interval`` seconds in a thread."""

    def __init__(self, factory: sessionmaker[Session], redis: Redis, settings: Settings,
                 interval: float) -> None:  # fmt: skip
        self.factory, self.redis, self.settings, self.interval = factory, redis, settings, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="recovery")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                recover_stalled(self.factory, self.redis, self.settings)
            except Exception:  # the database or Redis is down: try next time
                log.warning("recovery check failed", exc_info=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

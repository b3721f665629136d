"""Picking up runs whose worker died.

Two ways a run loses its process:

- Its work horse dies (kill -9, the OOM killer) while its worker lives: the
  worker sees it at once (RQ's work-horse-killed hook, :func:`on_work_horse_killed`)
  and hands the run on without waiting for anything.
- The whole worker dies (or its host): the run's lease stops being renewed.
  Every worker looks every few seconds for containers that are mid-run
  (creating/destroying) or still pending, whose lease has expired or is
  missing, and hands those runs on (:func:`recover_stalled`).

Handing on (:func:`hand_over`) takes the dead run's lease, says so on the
container's stream (a ``recovering`` event: which worker stopped, when it
was last seen, the attempt that follows), queues the run again and gives
the lease back; the new run resumes from the stored checkpoints.  A short
Redis key makes sure only one worker re-enqueues.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from redis import Redis
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from provisioner import lease
from provisioner.config import Settings
from provisioner.events import EventPublisher, channel, stored_events, stream_key, stream_seq
from provisioner.models import Container, Lease, Lifecycle, utcnow
from provisioner.queue import JOB_FUNCTION, enqueue, provisioning_queue
from provisioner.stream_delivery import repair
from provisioner.webhook_store import requeue_stalled

log = logging.getLogger(__name__)


def stalled(factory: sessionmaker[Session],
            grace: float) -> list[tuple[str, Lifecycle, str, str | None]]:  # fmt: skip
    """Containers mid-run (or pending), or with a change in flight, with no
    live lease for ``grace`` seconds: (id, lifecycle, the action that
    resumes the run, its operation id)."""
    now = utcnow()
    quiet_since = now - timedelta(seconds=grace)
    with factory() as session:
        rows = session.execute(
            select(Container.id, Container.lifecycle, Container.safe_change)
            .outerjoin(Lease, Lease.container_id == Container.id)
            .where(or_(Container.lifecycle.in_([Lifecycle.PENDING, Lifecycle.CREATING,
                                                Lifecycle.DESTROYING]),
                       Container.safe_change.is_not(None)),
                   Container.updated_at < quiet_since,
                   or_(Lease.container_id.is_(None), Lease.expires_at < now))
        ).all()  # fmt: skip
    found: list[tuple[str, Lifecycle, str, str | None]] = []
    for cid, lifecycle, change in rows:
        if lifecycle == Lifecycle.DESTROYING:
            found.append((cid, lifecycle, "destroy", None))
        elif lifecycle in (Lifecycle.PENDING, Lifecycle.CREATING):
            found.append((cid, lifecycle, "provision", None))  # a resync resumes so too
        elif lifecycle in (Lifecycle.READY, Lifecycle.ERROR) and change:
            found.append((cid, lifecycle, str(change["action"]), change.get("operation")))
    return found


def _queued_containers(redis: Redis, settings: Settings) -> set[str]:
    """Containers that have a job waiting in the queue."""
    queue = provisioning_queue(redis, settings)
    return {job_id.split("-", 1)[1][:36] for job_id in queue.get_job_ids() if "-" in job_id}


def recovering_message(what: str, last_seen: datetime, resuming: str, action: str,
                       attempt: int | None) -> str:  # fmt: skip
    """``the worker running this stopped responding at 12:03:04 UTC; resuming
    on another worker (attempt 2)``: what the progress view and ``--follow`` show."""
    then = last_seen.astimezone(UTC).strftime("%H:%M:%S UTC")
    run = f"attempt {attempt}" if attempt is not None else f"the {action}"
    return f"{what} at {then}; {resuming} ({run})"


def hand_over(factory: sessionmaker[Session], redis: Redis, settings: Settings,
              container_id: str, action: str, *, what: str,
              resuming: str = "resuming on another worker",
              dead_prefix: str | None = None, operation_id: str | None = None) -> bool:  # fmt: skip
    """Hand the run of a container whose worker is gone on to another worker.

    Takes the dead run's lease (expired, or held by ``dead_prefix``: see
    ``lease.take_over``), publishes a ``recovering`` event saying ``what``
    happened and when the run was last seen, queues ``action`` again and
    gives the lease back.

    Returns:
        False when there was nothing to hand on (a live run holds the
        lease, or none does).
    """
    holder = lease.make_holder()
    gone = lease.take_over(factory, container_id, holder, settings.lease_duration,
                           dead_prefix=dead_prefix)  # fmt: skip
    if gone is None:
        return False
    try:
        with factory() as session:
            ct = session.get(Container, container_id)
            if ct is None:
                return False
            phase, provisioning = ct.current_phase, ct.lifecycle == Lifecycle.CREATING
            attempt = ct.attempts + 1 if provisioning else None
        message = recovering_message(what, gone.last_renewed, resuming, action, attempt)
        log.warning("container %s: %s", container_id, message)
        with EventPublisher(redis, factory, container_id) as events:
            events.publish("recovering", message, phase=phase)
        enqueue(redis, settings, container_id, action, operation_id=operation_id)
        return True
    finally:
        lease.release(factory, container_id, holder)


def on_work_horse_killed(factory: sessionmaker[Session], redis: Redis, settings: Settings,
                         job: Any, pid: int | None, status: int | None) -> None:  # fmt: skip
    """RQ's work-horse-killed hook, in the worker: hand the run on at once.

    Never raises: the worker must go on serving its queue.
    """
    if job.func_name != JOB_FUNCTION or not pid:
        return
    args = list(job.args)
    container_id = args[0]
    action = args[1] if len(args) > 1 else "provision"
    operation_id = args[2] if len(args) > 2 else None
    if status is not None and os.WIFSIGNALED(status):
        how = f"was killed (signal {os.WTERMSIG(status)})"
    else:
        how = f"exited unexpectedly (status {os.WEXITSTATUS(status or 0)})"
    try:
        hand_over(factory, redis, settings, container_id, action,
                  what=f"the worker process running this (pid {pid}) {how}",
                  resuming="resuming it", dead_prefix=lease.process_prefix(pid),
                  operation_id=operation_id)  # fmt: skip
    except Exception:  # the database or Redis is away: the lease expires, recovery takes over
        log.exception("handing on the run of %s after its work horse died failed", container_id)


def recover_stalled(factory: sessionmaker[Session], redis: Redis, settings: Settings) -> list[str]:
    """Hand on (or enqueue) a run for every stalled container; returns their ids."""
    recovered = []
    candidates = stalled(factory, settings.lease_duration)
    # a pending request whose job is still waiting in a backlog is not stalled
    waiting = _queued_containers(redis, settings) if candidates else set()
    for cid, lifecycle, action, operation_id in candidates:
        if lifecycle == Lifecycle.PENDING and cid in waiting:
            continue
        # one worker re-enqueues; the key outlives the time a new run needs to
        # take the lease
        if not redis.set(f"provisioner:recover:{cid}", "1", nx=True,
                         ex=max(1, int(settings.lease_duration))):  # fmt: skip
            continue
        if not hand_over(factory, redis, settings, cid, action, operation_id=operation_id,
                         what="the worker running this stopped responding"):  # fmt: skip
            # no lease to take over: a request whose job got lost before it ran
            enqueue(redis, settings, cid, action, operation_id=operation_id)
            log.warning("container %s had no live worker; run enqueued again (%s)", cid, action)
        recovered.append(cid)
    return recovered


def check_interval(settings: Settings) -> float:
    """How often a worker looks for stalled runs: as often as leases are
    renewed (a run is noticed within one interval of its lease's expiry)."""
    return max(1.0, min(settings.lease_renew_interval, settings.lease_duration / 4))


REPAIR_EVERY = 10  # recovery checks between two stream repair passes
REPAIR_WINDOW = timedelta(hours=1)  # containers touched this recently are looked at


def repair_streams(factory: sessionmaker[Session], redis: Redis) -> dict[str, int]:
    """Add to the Redis streams the events the database has past their end:
    runs that ended while Redis was away (or restarted empty).  Only
    containers touched within ``REPAIR_WINDOW`` are looked at, with one
    pipelined read of their streams' ends.  Returns container id -> events added."""
    with factory() as session:
        rows = session.execute(select(Container.id, Container.next_seq)
                               .where(Container.updated_at > utcnow() - REPAIR_WINDOW)).all()  # fmt: skip
    if not rows:
        return {}
    pipe = redis.pipeline(transaction=False)
    for cid, _ in rows:
        pipe.xrevrange(stream_key(cid), count=1)
    ends: list[Any] = pipe.execute()
    added: dict[str, int] = {}
    for (cid, next_seq), top in zip(rows, ends, strict=True):
        if (stream_seq(top[0][0]) if top else 0) >= next_seq - 1:
            continue
        source = functools.partial(stored_events, factory, cid)
        count = repair(redis, stream_key(cid), channel(cid), next_seq - 1, source)
        if count:
            log.warning("container %s: %d events the stream lacked were added from the database",
                        cid, count)  # fmt: skip
            added[cid] = count
    return added


class RecoveryLoop:
    """Runs :func:`recover_stalled` every few seconds (:func:`check_interval`)
    in a thread, and :func:`repair_streams` and the webhook deliveries'
    ``requeue_stalled`` every ``REPAIR_EVERY`` of them."""

    def __init__(self, factory: sessionmaker[Session], redis: Redis, settings: Settings,
                 interval: float | None = None) -> None:  # fmt: skip
        self.factory, self.redis, self.settings = factory, redis, settings
        self.interval = interval if interval is not None else check_interval(settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="recovery")

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(self.interval):
            ticks += 1
            try:
                recover_stalled(self.factory, self.redis, self.settings)
                if ticks % REPAIR_EVERY == 0:
                    repair_streams(self.factory, self.redis)
                    requeue_stalled(self.factory, self.redis, self.settings)
            except Exception:  # the database or Redis is down: try next time
                log.warning("recovery check failed", exc_info=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

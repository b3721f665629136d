"""Draining a node: marked in maintenance (placement skips it), its
containers are moved to other nodes of its cluster one at a time, each a
``migrate`` run with its events on the container's stream.

The drain is a chain of small jobs, never a job that waits for another:
:func:`enqueue_step` queues ``pipeline.drain.step``, which queues the
``migrate`` of the node's next container (its target chosen by placement)
and returns; when that run ends, ``pipeline.job`` queues the next step.  A
container whose move is refused or fails is noted and skipped (the drain
goes on with the others; ``nodes ls`` keeps counting it).  ``undrain``
ends the maintenance; a step that finds the node out of it stops.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.config import Settings
from provisioner.errors import ConfigError
from provisioner.models import Container, Lifecycle, Node
from provisioner.queue import ActionPending, provisioning_queue
from provisioner.request_checks import ActionRefused
from provisioner.secrets.box import SecretBox

STEP_FUNCTION = "pipeline.drain.step"
MOVABLE = (Lifecycle.READY, Lifecycle.ERROR)


def skipped_key(node: str) -> str:
    """The containers a drain of ``node`` could not move (a Redis set)."""
    return f"provisioner:drain:{node}:skipped"


def movable(session: Session, node: Node) -> list[Container]:
    """The node's containers a drain moves, oldest first: those that own a
    CT and are ready or in error."""
    return list(session.scalars(
        select(Container).where(Container.node_id == node.id, Container.vmid.is_not(None),
                                Container.lifecycle.in_(MOVABLE))
        .order_by(Container.created_at)))  # fmt: skip


def enqueue_step(redis: Redis, settings: Settings, node: str) -> str:
    """Queue the drain's next step; returns its job id."""
    job = provisioning_queue(redis, settings).enqueue(
        STEP_FUNCTION, node, job_id=f"drain-{node}-{uuid.uuid4().hex[:8]}",
        job_timeout=300, result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600,
        description=f"drain node {node}: the next move")  # fmt: skip
    return str(job.id)


def start(session: Session, redis: Redis, settings: Settings, node: Node) -> list[Container]:
    """Mark ``node`` in maintenance (committed) and queue the first step.
    Returns the containers it will move.

    Raises:
        ConfigError: ``node: ...`` it is in no cluster (nowhere to move to).
    """
    if not node.cluster:
        raise ConfigError(f"node: {node.name} is in no cluster: there is nowhere to move its "
                          "containers (maintenance alone: provisioner nodes drain --no-move)")  # fmt: skip
    node.maintenance = True
    session.commit()
    redis.delete(skipped_key(node.name))
    enqueue_step(redis, settings, node.name)
    return movable(session, node)


def next_move(session: Session, box: SecretBox, redis: Redis, settings: Settings, name: str,
              run_alive: Callable[[str], bool]) -> str:  # fmt: skip
    """One step: queue the move of the node's next container; returns what
    it did.  ``run_alive(container_id)``: whether a run holds its lease."""
    from provisioner.placement import AUTO
    from provisioner.placing import move_params
    from provisioner.requests import request_action

    node = session.scalars(select(Node).where(Node.name == name)).one_or_none()
    if node is None or not node.maintenance:
        return f"node {name} is not being drained"
    skipped = {s.decode() if isinstance(s, bytes) else str(s)
               for s in redis.smembers(skipped_key(name))}  # fmt: skip
    for ct in movable(session, node):
        if ct.id in skipped:
            continue
        try:
            params, _reasons = move_params(session, box, settings, redis, ct, AUTO)
            queued = request_action(session, settings, redis, ct, "migrate",
                                    {**params, "drain": name},
                                    functools.partial(run_alive, ct.id))  # fmt: skip
        except (ConfigError, ActionRefused, ActionPending) as exc:
            redis.sadd(skipped_key(name), ct.id)
            message = getattr(exc, "message", str(exc))
            return f"{ct.hostname} is not moved ({message}); " + next_step_queued(redis, settings,
                                                                                  name)  # fmt: skip
        return f"moving {ct.hostname} to node {params['to']} (job {queued.job_id})"
    left = len(skipped)
    return f"node {name} drained" + (f"; {left} container(s) could not be moved" if left else "")


def next_step_queued(redis: Redis, settings: Settings, name: str) -> str:
    enqueue_step(redis, settings, name)
    return "the next step is queued"


def note_failed(redis: Redis, node: str, container_id: str) -> None:
    """A drain's move that failed: the drain skips that container now."""
    redis.sadd(skipped_key(node), container_id)

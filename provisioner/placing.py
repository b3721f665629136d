"""Placing a request on a node (``--node auto``): the I/O around the pure
rules of :mod:`provisioner.placement`.

The registered nodes are grouped by PVE cluster (a standalone node is a
cluster of its own); each cluster's ``GET /cluster/resources`` is read once,
through the first of its nodes that answers.  What requests in flight
reserve comes from Redis (:mod:`provisioner.reservations`), the members of a
spread group from the database.  Choosing and reserving happen under one
Redis lock, so that concurrent requests see each other's reservations.
The reservation is made for the container id the request will be stored
under; whoever stores it releases the reservation if the request is then
refused, and the run releases it when it ends (ready or error).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioner.config import Settings
from provisioner.errors import ConfigError, ProvisionError
from provisioner.migration import check_target
from provisioner.models import Container, Lifecycle, Node, new_container_id
from provisioner.node_facts import CONNECT_TIMEOUT, READ_TIMEOUT, Lender
from provisioner.nodes import connection_for, container_counts
from provisioner.placement import (
    AUTO,
    MIB,
    Ask,
    Candidate,
    InFlight,
    NodeUsage,
    Placement,
    check_spread,
    place,
    usage_of,
)
from provisioner.pve.client import PveClient
from provisioner.requests import ProvisionRequest, load_named_template
from provisioner.reservations import Reservations
from provisioner.secrets.box import SecretBox
from provisioner.stored_request import StoredRequest
from provisioner.templates.model import Resources, Template
from provisioner.templates.mounts import parse_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placed:
    """A request placed: its node, why, and the id it is reserved under."""

    node: str
    container_id: str
    reasons: str
    warning: str | None = None

    def to_json(self) -> dict[str, str]:
        return {"node": self.node, "reasons": self.reasons,
                **({"warning": self.warning} if self.warning else {})}  # fmt: skip


def default_node(session: Session) -> str | None:
    """The node a request that names none goes to: the only one, else
    ``auto`` (placement); None when no node is registered."""
    names = list(session.scalars(select(Node.name).limit(2)))
    if not names:
        return None
    return names[0] if len(names) == 1 else AUTO


def cluster_key(node: Node) -> str:
    """Nodes of one PVE cluster share it; a standalone node has its own."""
    return f"cluster:{node.cluster}" if node.cluster else f"host:{node.host}:{node.port}"


def read_usage(nodes: Iterable[Node], box: SecretBox, *, lend: Lender = PveClient,
               connect_timeout: float = CONNECT_TIMEOUT,
               read_timeout: float = READ_TIMEOUT) -> tuple[dict[str, NodeUsage], dict[str, str]]:  # fmt: skip
    """Each node's usage by its registered name, and why the nodes whose
    cluster could not be asked were left out."""
    groups: dict[str, list[Node]] = {}
    for node in nodes:
        groups.setdefault(cluster_key(node), []).append(node)
    usage: dict[str, NodeUsage] = {}
    down: dict[str, str] = {}
    for members in groups.values():
        resources, problem = None, "no node of its cluster answered"
        for node in members:
            try:
                connection = dataclasses.replace(connection_for(node, box),
                                                 connect_timeout=connect_timeout,
                                                 read_timeout=read_timeout)  # fmt: skip
                with lend(connection) as client:
                    resources = client.cluster_resources()
                break
            except ProvisionError as exc:
                problem = exc.message
                log.info("placement: node %s cannot be asked: %s", node.name, exc)
        if resources is None:
            down.update({node.name: problem for node in members})
            continue
        by_pve = usage_of(resources)
        for node in members:
            if node.pve_node in by_pve:
                usage[node.name] = by_pve[node.pve_node]
    return usage, down


def spread_members(session: Session, group: str | None) -> dict[str, int]:
    """How many live members of a spread group each node holds."""
    if not group:
        return {}
    rows = session.execute(
        select(Node.name, func.count(Container.id)).join(Container, Container.node_id == Node.id)
        .where(Container.spread_group == group, Container.lifecycle != Lifecycle.DESTROYED)
        .group_by(Node.name))  # fmt: skip
    return {name: int(count) for name, count in rows}


@dataclass(frozen=True)
class _Inputs:
    """What a placement decides on, read from the database and the nodes."""

    candidates: list[Candidate]
    usage: dict[str, NodeUsage]
    down: dict[str, str]
    members: dict[str, int]


def _inputs(session: Session, box: SecretBox, ask: Ask, lend: Lender, connect_timeout: float,
            read_timeout: float, among: Callable[[Node], bool] | None = None) -> _Inputs:  # fmt: skip
    nodes = [n for n in session.scalars(select(Node).order_by(Node.name))
             if among is None or among(n)]  # fmt: skip
    if not nodes:
        raise ConfigError(
            "node: no node is registered (add one: provisioner nodes add)"
            if among is None
            else "to: no other node of its cluster is registered"
        )
    members = spread_members(session, ask.spread)
    candidates = [Candidate(name=n.name, pve_node=n.name, maintenance=n.maintenance,
                            max_containers=n.max_containers, default_storage=n.default_storage)
                  for n in nodes]  # fmt: skip
    session.commit()  # no transaction while the nodes are asked
    usage, down = read_usage(nodes, box, lend=lend, connect_timeout=connect_timeout,
                             read_timeout=read_timeout)  # fmt: skip
    usage = {name: dataclasses.replace(u, node=name) for name, u in usage.items()}
    return _Inputs(candidates, usage, down, members)


def _in_flight(session: Session, reservations: Reservations) -> dict[str, InFlight]:
    """The reservations of requests still waiting for their CT: once it
    exists, the cluster's resources count its configured memory and disk;
    a reservation whose request is gone, ended or not this database's
    (a Redis shared with another deployment) does not count at all."""

    def settled(ids: set[str]) -> set[str]:
        waiting = set(session.scalars(select(Container.id).where(
            Container.id.in_(ids), Container.vmid.is_(None),
            Container.lifecycle.in_((Lifecycle.PENDING, Lifecycle.CREATING)))))  # fmt: skip
        session.commit()  # no transaction left open
        return ids - waiting

    return reservations.in_flight(settled)


def preview(session: Session, box: SecretBox, reservations: Reservations, ask: Ask, *,
            lend: Lender = PveClient, strict_spread: bool = True,
            connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
            among: Callable[[Node], bool] | None = None) -> Placement:  # fmt: skip
    """Where ``ask`` would go now, reserving nothing (the wizard's review; a
    move's target, ``among`` the nodes of the container's cluster).

    Raises:
        ConfigError: no node is registered (or none ``among``).
    """
    got = _inputs(session, box, ask, lend, connect_timeout, read_timeout, among)
    return place(got.candidates, got.usage, ask, _in_flight(session, reservations), got.members,
                 strict_spread=strict_spread, down=got.down)  # fmt: skip


def cluster_view(session: Session, box: SecretBox, reservations: Reservations, *,
                 lend: Lender = PveClient, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT) -> list[dict[str, Any]]:  # fmt: skip
    """Every registered node's load as placement sees it, in one view (the
    Nodes page's cluster usage, ``provisioner nodes usage``, ``GET
    /api/cluster``): its cluster's ``/cluster/resources`` read once per
    cluster, the memory its guests may take, its default storage, and
    what requests placed on it and still waiting for their CT reserve.

    ``status`` is ``online``, ``offline`` (its cluster says so),
    ``unreachable`` (no node of its cluster answered: ``problem`` says
    why) or ``unknown`` (its cluster does not list it).
    """
    nodes = list(session.scalars(select(Node).order_by(Node.name)))
    counts = container_counts(session)
    marks = [(n.name, n.cluster, n.pve_node, n.maintenance, n.max_containers,
              n.default_storage or "local-lvm", counts.get(n.id, 0)) for n in nodes]  # fmt: skip
    flight = _in_flight(session, reservations) if nodes else {}
    session.commit()  # no transaction while the nodes are asked
    usage, down = read_usage(nodes, box, lend=lend, connect_timeout=connect_timeout,
                             read_timeout=read_timeout)  # fmt: skip
    out = []
    for name, cluster, pve_node, maintenance, cap, storage, ours in marks:
        use, reserved = usage.get(name), flight.get(name, InFlight())
        row: dict[str, Any] = {
            "name": name, "cluster": cluster, "pve_node": pve_node, "maintenance": maintenance,
            "max_containers": cap, "containers": ours, "problem": down.get(name),
            "status": "unreachable" if name in down else "unknown", "storage": storage,
            "cpu": None, "cpus": None, "memory_used": None, "memory_committed": None,
            "memory_total": None, "disk_used": None, "disk_total": None, "guests": None,
            "running": None, "in_flight": reserved.count,
            "in_flight_memory": reserved.memory * MIB,
        }  # fmt: skip
        if use is not None:
            store = use.storages.get(storage)
            row.update(status="online" if use.online else "offline", cpu=use.cpu,
                       cpus=use.maxcpu, memory_used=use.mem, memory_committed=use.mem_taken,
                       memory_total=use.maxmem, guests=use.guests, running=use.running,
                       disk_used=store.used if store else None,
                       disk_total=store.total if store else None)  # fmt: skip
        out.append(row)
    return out


def choose(session: Session, box: SecretBox, reservations: Reservations, ask: Ask, *,
           lend: Lender = PveClient, strict_spread: bool = True,
           connect_timeout: float = CONNECT_TIMEOUT,
           read_timeout: float = READ_TIMEOUT) -> Placed:  # fmt: skip
    """Choose a node for ``ask`` and reserve it for a new container id.
    Ends ``session``'s transaction before asking the nodes.

    Raises:
        ConfigError: ``node: no node fits; ...`` naming each node's reason.
    """
    got = _inputs(session, box, ask, lend, connect_timeout, read_timeout)
    with reservations.placing():
        placement = place(got.candidates, got.usage, ask, _in_flight(session, reservations),
                          got.members,
                          strict_spread=strict_spread, down=got.down)  # fmt: skip
        if placement.node is None:
            raise ConfigError(f"node: {placement.reasons}")
        container_id = new_container_id()
        reservations.reserve(container_id, placement.node, ask.memory, ask.disk)
    log.info("%s", placement.reasons)
    return Placed(placement.node, container_id, placement.reasons, placement.warning)


def ask_of(req: ProvisionRequest, template: Template | None) -> Ask:
    """What a request needs of its node: its memory, its root disk and data
    volumes (the template's when it leaves them out), storage and spread."""
    resources = template.resources if template is not None else Resources()
    volumes = 0
    for i, mount in enumerate(req.mounts):
        try:
            volumes += parse_size(f"mounts[{i}].size", mount.get("size"))
        except (ConfigError, AttributeError):  # refused by the request's own checks
            continue
    return Ask(memory=req.memory or resources.memory, disk=(req.disk or resources.disk) + volumes,
               storage=req.storage, spread=req.spread)  # fmt: skip


def place_request(session: Session, box: SecretBox, settings: Settings,
                  reservations: Reservations, req: ProvisionRequest, *,
                  lend: Lender = PveClient, connect_timeout: float = CONNECT_TIMEOUT,
                  read_timeout: float = READ_TIMEOUT) -> tuple[ProvisionRequest, Placed | None]:  # fmt: skip
    """The request with its node: the one it names, the default
    (:func:`default_node`) when it names none, or the node placement
    chooses for ``auto`` (reserved: the caller stores it under
    ``Placed.container_id`` or releases the reservation).

    Raises:
        ConfigError: ``node: ...`` no node fits (each node's reason said).
    """
    node = req.node or default_node(session) or ""
    if node != AUTO:
        return dataclasses.replace(req, node=node), None
    try:
        template: Template | None = load_named_template(settings, req.template)
    except ConfigError:  # the request's own checks say so
        template = None
    try:
        spread = check_spread(req.spread)
    except ConfigError:
        spread = None
    ask = dataclasses.replace(ask_of(req, template), spread=spread)
    placed = choose(session, box, reservations, ask, lend=lend,
                    strict_spread=settings.spread_strict, connect_timeout=connect_timeout,
                    read_timeout=read_timeout)  # fmt: skip
    return dataclasses.replace(req, node=placed.node), placed


def release(redis: Redis, container_id: str) -> None:
    """End a container's reservation, if it has one (a Redis that fails
    leaves it to expire: ``RESERVATION_TTL``)."""
    try:
        Reservations(redis).release(container_id)
    except RedisError as exc:
        log.warning("the reservation of %s is left to expire: %s", container_id, exc)


def move_target(session: Session, box: SecretBox, reservations: Reservations, ct: Container,
                source: Node, settings: Settings, *, lend: Lender = PveClient,
                connect_timeout: float = CONNECT_TIMEOUT,
                read_timeout: float = READ_TIMEOUT) -> Placement:  # fmt: skip
    """Where a container on ``source`` would move now (``--to auto``, a
    drain): placement among the other nodes of its cluster, by what the
    container asked for (its memory, disk and volumes, its spread group).

    Raises:
        ConfigError: ``to: ...`` its node is in no cluster, or no other
            node of it is registered.
    """
    if not source.cluster:
        raise ConfigError(f"to: node {source.name} is in no cluster: there is nowhere to move to")
    stored = StoredRequest.from_dict(ct.request)
    try:
        template: Template | None = load_named_template(settings, ct.template)
    except ConfigError:
        template = None
    req = ProvisionRequest(template=ct.template, node=AUTO, hostname=ct.hostname,
                           memory=stored.memory, disk=stored.disk, storage=stored.storage,
                           mounts=list(stored.mounts), spread=ct.spread_group)  # fmt: skip
    cluster, here = source.cluster, source.id
    return preview(session, box, reservations, ask_of(req, template), lend=lend,
                   strict_spread=settings.spread_strict, connect_timeout=connect_timeout,
                   read_timeout=read_timeout,
                   among=lambda n: n.cluster == cluster and n.id != here)  # fmt: skip


def move_params(session: Session, box: SecretBox, settings: Settings, redis: Redis,
                ct: Container, to: str, *, lend: Lender = PveClient,
                connect_timeout: float = CONNECT_TIMEOUT,
                read_timeout: float = READ_TIMEOUT) -> tuple[dict[str, str], str | None]:  # fmt: skip
    """The ``migrate`` operation's parameters for moving ``ct`` to ``to`` (a
    node's name, or ``auto``), and for ``auto`` the placement's reasons.

    Raises:
        ConfigError: ``to: ...`` no such node, not in its cluster, in
            maintenance, or (``auto``) no node fits.
    """
    source = session.get(Node, ct.node_id)
    assert source is not None
    if to == AUTO:
        got = move_target(session, box, Reservations(redis), ct, source, settings, lend=lend,
                          connect_timeout=connect_timeout, read_timeout=read_timeout)  # fmt: skip
        if got.node is None:
            raise ConfigError(f"to: {got.reasons}")
        return {"to": got.node}, got.reasons
    target = session.scalars(select(Node).where(Node.name == to)).one_or_none()
    if target is None:
        known = ", ".join(session.scalars(select(Node.name).order_by(Node.name)))
        raise ConfigError(f"to: no node named {to!r} (known: {known})")
    check_target(source, target)
    return {"to": target.name}, None

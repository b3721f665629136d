"""The ``migrate`` run: a container moved to another node of its cluster.

PVE does the move (``POST .../migrate``, its ``vzmigrate`` task, whose log
becomes the run's): a stopped container offline, a running one in restart
mode (shut down, its local volumes copied, started on the target).  The
record then follows its CT: its node becomes the target, the CT is proven
ours there through the target's own API, and a running one's address is
read again and reached over SSH with the host key pinned at provisioning.

A run that dies after PVE moved the CT and before the record followed is
resumed by the ownership guard: the CT gone from its node is looked for
in the cluster (:func:`follow_elsewhere`) and found, ours, on the target;
so is one that someone moved outside the provisioner.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from pipeline.context import Context, off_loop
from provisioner.errors import ConfigError, PermanentError, ProvisionError
from provisioner.migration import check_target
from provisioner.models import Container, Node
from provisioner.nodes import client_for
from provisioner.ownership import NotOurs, prove
from provisioner.pve.client import PveClient


class Refused(PermanentError):
    """The move is refused before any PVE write (the message says why)."""


def _nodes(ctx: Context, target_name: str) -> tuple[Node, Node]:
    """The container's node and the target, detached."""
    with ctx.factory() as session:
        ct = session.get(Container, ctx.container_id)
        assert ct is not None
        source = session.get(Node, ct.node_id)
        target = session.scalars(select(Node).where(Node.name == target_name)).one_or_none()
        if target is None:
            raise Refused(f"no node named {target_name!r} is registered")
        assert source is not None
        session.expunge_all()
        return source, target


def _follow(ctx: Context, target: Node) -> None:
    """The record is on ``target`` now: its node, and the run's client."""
    ctx.update(node_id=target.id)
    old, ctx.pve = ctx.pve, client_for(target, ctx.box)
    old.close()


async def migrate(ctx: Context, params: dict[str, Any]) -> str:
    source, target = _nodes(ctx, str(params["to"]))
    vmid = ctx.read_vmid()
    if source.id == target.id:
        return f"CT {vmid} is on node {target.name}"
    try:
        check_target(source, target)
    except ConfigError as exc:
        raise Refused(exc.message) from None
    owned = await off_loop(ctx.owned)
    running = (await off_loop(ctx.pve.status, vmid)).running
    how = "restart mode: shut down, moved, started there" if running else "it is stopped"
    ctx.step(f"moving CT {vmid} from node {source.name} to node {target.name} ({how})", 0.1)
    upid = await off_loop(ctx.pve.migrate, owned, target.pve_node, restart=running)
    await off_loop(ctx.pve.wait_for_task, upid, timeout=ctx.settings.task_timeout, poll=0.25,
                   on_log=lambda line: ctx.log(line))  # fmt: skip
    _follow(ctx, target)
    await off_loop(ctx.owned)  # ours, on the target, through the target's own API
    ctx.step(f"CT {vmid} is on node {target.name}", 0.7)
    if running:
        await _reachable(ctx, ctx.pve, vmid)
    return f"moved to node {target.name}" + (" and running there" if running else "")


async def _reachable(ctx: Context, pve: PveClient, vmid: int) -> None:
    """A running CT after its move: its address again (DHCP may give
    another), then SSH with the host key pinned at provisioning."""
    net0 = str((await off_loop(pve.get_config, vmid)).get("net0", ""))
    ip = await off_loop(pve.resolve_container_ip, vmid, net0, timeout=ctx.settings.ip_timeout,
                        poll=0.1)  # fmt: skip
    ctx.update(ip=ip)
    session = await ctx.ssh()
    ctx.step(f"address {ip}; SSH is up ({session.host_key_fingerprint})", 0.9)


async def follow_elsewhere(ctx: Context) -> bool:
    """The record's CT is gone from its node: when ``/cluster/resources``
    places it on another registered node of the same cluster and it proves
    ours there (someone moved it, in PVE's web UI or with ``pct migrate``),
    the record follows it.  Returns whether it did."""
    vmid = ctx.read_vmid()
    with ctx.factory() as session:
        ct = session.get(Container, ctx.container_id)
        assert ct is not None
        source = session.get(Node, ct.node_id)
        assert source is not None
        if not source.cluster:
            return False
        peers = {n.pve_node: n for n in session.scalars(
            select(Node).where(Node.cluster == source.cluster, Node.id != source.id))}  # fmt: skip
        session.expunge_all()
    if not peers:
        return False
    try:
        found = await off_loop(ctx.pve.cluster_resources)
    except ProvisionError:
        return False  # the cluster cannot say: the guard decides on what it knows
    where = next((str(r.get("node")) for r in found
                  if r.get("type") == "lxc" and r.get("vmid") == vmid), None)  # fmt: skip
    target = peers.get(where or "")
    if target is None:
        return False
    with client_for(target, ctx.box) as pve:
        try:
            await off_loop(prove, pve, ctx.container_id, vmid)
        except (NotOurs, ProvisionError):
            return False
    ctx.warn(f"CT {vmid} is on node {target.name} now (moved outside the provisioner); the "
             "record follows it")  # fmt: skip
    _follow(ctx, target)
    return True

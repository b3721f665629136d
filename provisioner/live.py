"""Live PVE status of containers, merged into their records, for every
listing (the dashboard and the REST API through ``web.live``, the CLI's
``ls`` and ``show``).

One ``GET /nodes/{node}/lxc`` per node gives every CT's status and name.  A
record whose claim that list cannot confirm (another name under its vmid,
or several records claiming one vmid) is settled by reading that CT's
config, as the ownership guard does (``provisioner.ownership``): a record
whose CT is someone else's shows no status but why it owns no container.
Nothing here writes; the next action on such a record marks it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provisioner.models import Lifecycle
from provisioner.ownership import Claim, claims_in_doubt, describe_loss, settle_claims

if TYPE_CHECKING:
    from provisioner.models import Container
    from provisioner.pve.client import PveClient
    from provisioner.pve.types import ContainerStatus


@dataclass(frozen=True)
class NodeStatus:
    """What one node said: vmid -> status and record id -> why it does not
    hold the CT it claims; or why the node said nothing."""

    statuses: dict[int, ContainerStatus]
    error: str | None = None
    lost: dict[str, str] = field(default_factory=dict)
    pve_node: str = "?"  # the node's name in PVE


def wants_status(ct: Container) -> bool:
    """Whether a live status makes sense for the record (it claims a CT)."""
    return ct.vmid is not None and ct.lifecycle not in (Lifecycle.DESTROYED, Lifecycle.PENDING)


def claims(cts: Iterable[Container]) -> list[Claim]:
    """The claims of the records that want a status (one node's records)."""
    return [Claim(ct.id, ct.hostname, ct.vmid) for ct in cts
            if wants_status(ct) and ct.vmid is not None]  # fmt: skip


def survey(pve: PveClient, node_claims: Iterable[Claim]) -> NodeStatus:
    """Ask one node for its CTs and settle the claims its list cannot confirm.

    Raises:
        PveTransientError, PvePermanentError: the node could not tell.
    """
    listed = {s.vmid: s for s in pve.containers()}
    lost = settle_claims(pve, claims_in_doubt(node_claims, listed))
    return NodeStatus(listed, lost=lost, pve_node=pve.node)


def status_json(status: ContainerStatus | None) -> dict[str, Any] | None:
    if status is None:
        return None
    return {"status": status.status, "lock": status.lock, "uptime": status.uptime,
            "cpu": status.cpu, "memory_used": status.memory_used,
            "memory_total": status.memory_total, "disk_used": status.disk_used,
            "disk_total": status.disk_total}  # fmt: skip


def merge(item: dict[str, Any], node: NodeStatus | None, wanted: bool) -> dict[str, Any]:
    """Add ``pve`` (the live status or None) and ``pve_error`` to a
    container's JSON (``views.container_json``); a record whose CT is not its
    own gets ``owns_container`` false and says why in ``pve_error``.

    ``wanted``: whether a live status makes sense (:func:`wants_status`).
    """
    item["pve"] = None
    item["pve_error"] = None
    vmid = item["vmid"]
    if not wanted or vmid is None or node is None:
        return item
    if node.error is not None:
        item["pve_error"] = node.error
    elif item["id"] in node.lost:
        item["pve_error"] = node.lost[item["id"]]
        item["owns_container"] = False
    elif vmid in node.statuses:
        item["pve"] = status_json(node.statuses[vmid])
    else:
        item["pve_error"] = describe_loss(node.pve_node, vmid, None)
        item["owns_container"] = False
    return item


@dataclass(frozen=True)
class Snapshots:
    """A container's snapshots as its node reports them, newest last, and
    whether the CT is running and protected now."""

    snapshots: list[Any]  # provisioner.pve.types.SnapshotInfo
    running: bool
    protected: bool


def container_snapshots(pve: PveClient, container_id: str, vmid: int) -> Snapshots:
    """Read a record's snapshots, once the ownership guard has proven the
    CT is its own (a read: nothing is written).

    Raises:
        NotOurs: the CT is gone or someone else's.
        PveApiError: the node could not tell.
    """
    from provisioner.ownership import prove

    prove(pve, container_id, vmid)
    config = pve.get_config(vmid)
    found = sorted(pve.snapshots(vmid), key=lambda s: (s.snaptime, s.name))
    return Snapshots(found, pve.status(vmid).running,
                     str(config.get("protection", "0")) in ("1", "true"))  # fmt: skip

"""Live PVE status of containers, merged into their lifecycle.

One ``GET /nodes/{node}/lxc`` per node (in parallel, each with a client
of the process's pool and short timeouts) instead of one call per container.  An
unreachable node does not fail the listing: its containers keep their
lifecycle and carry the error instead of a status.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from provisioner.errors import ProvisionError
from provisioner.pve import ContainerStatus, PveConnection
from web.pve_pool import ClientPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeStatus:
    """What one node said: vmid -> status, or why it said nothing."""

    statuses: dict[int, ContainerStatus]
    error: str | None = None


def status_json(status: ContainerStatus | None) -> dict[str, Any] | None:
    if status is None:
        return None
    return {"status": status.status, "lock": status.lock, "uptime": status.uptime,
            "cpu": status.cpu, "memory_used": status.memory_used,
            "memory_total": status.memory_total, "disk_used": status.disk_used,
            "disk_total": status.disk_total}  # fmt: skip


def _ask(clients: ClientPool, connection: PveConnection) -> NodeStatus:
    try:
        with clients.client(connection) as client:
            return NodeStatus({s.vmid: s for s in client.containers()})
    except ProvisionError as exc:
        return NodeStatus({}, str(exc))
    except Exception:  # a bug for one node must not take the whole list down with it
        log.exception("asking %s:%s for its containers failed", connection.host, connection.port)
        return NodeStatus({}, "the node's answer could not be read (logged on the server)")


def fetch_statuses(clients: ClientPool,
                   connections: dict[str, PveConnection]) -> dict[str, NodeStatus]:  # fmt: skip
    """Ask every node at once; node name -> what it said."""
    if not connections:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(connections))) as pool:
        answers = pool.map(lambda c: _ask(clients, c), connections.values())
        return dict(zip(connections, answers, strict=True))


def merge(item: dict[str, Any], vmid: int | None, node: NodeStatus | None,
          wanted: bool) -> dict[str, Any]:  # fmt: skip
    """Add ``pve`` (the live status or None) and ``pve_error`` to a container's JSON.

    ``wanted``: whether a live status makes sense (created, not destroyed).
    """
    item["pve"] = None
    item["pve_error"] = None
    if not wanted or vmid is None or node is None:
        return item
    if node.error is not None:
        item["pve_error"] = node.error
    elif vmid in node.statuses:
        item["pve"] = status_json(node.statuses[vmid])
    else:
        item["pve_error"] = f"CT {vmid} does not exist on the node"
    return item


def nodes_needed(pairs: Iterable[tuple[str, bool]]) -> set[str]:
    """The node names worth asking, from (node name, wanted) pairs."""
    return {name for name, wanted in pairs if wanted}

"""Live PVE status of the containers a web request lists.

One ``GET /nodes/{node}/lxc`` per node (in parallel, each with a client of
the process's pool and short timeouts) instead of one call per container;
claims that list cannot confirm are settled from the CT's config
(``provisioner.live``).  An unreachable node does not fail the listing: its
containers keep their lifecycle and carry the error instead of a status.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from provisioner.errors import ProvisionError
from provisioner.live import NodeStatus, survey
from provisioner.ownership import Claim
from provisioner.pve.http import PveConnection
from web.pve_pool import ClientPool

log = logging.getLogger(__name__)


def _ask(clients: ClientPool, connection: PveConnection, claims: list[Claim]) -> NodeStatus:
    try:
        with clients.client(connection) as client:
            return survey(client, claims)
    except ProvisionError as exc:
        return NodeStatus({}, str(exc))
    except Exception:  # a bug for one node must not take the whole list down with it
        log.exception("asking %s:%s for its containers failed", connection.host, connection.port)
        return NodeStatus({}, "the node's answer could not be read (logged on the server)")


def fetch_statuses(clients: ClientPool, connections: dict[str, PveConnection],
                   claims: dict[str, list[Claim]]) -> dict[str, NodeStatus]:  # fmt: skip
    """Ask every node at once; node name -> what it said about its CTs and
    the claims (``claims``: node name -> its records' claims)."""
    if not connections:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(connections))) as pool:
        answers = pool.map(lambda name: _ask(clients, connections[name], claims.get(name, [])),
                           connections)  # fmt: skip
        return dict(zip(connections, answers, strict=True))

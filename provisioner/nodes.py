"""Stored nodes: from one to a connected Proxmox client, how many
containers each holds, and the other nodes of a registered node's cluster
(found, confirmed by their certificate fingerprints, registered)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioner.errors import ConfigError
from provisioner.models import AuthKind, Container, Lifecycle, Node
from provisioner.pve.client import PveClient
from provisioner.pve.http import PasswordAuth, PveConnection, TokenAuth
from provisioner.pve.parse import format_fingerprint, normalize_fingerprint
from provisioner.secrets.box import SecretBox
from provisioner.secrets.vault import node_secret, set_node_secret


def connection_for(node: Node, box: SecretBox) -> PveConnection:
    """The connection settings of a stored node, its secret decrypted."""
    secret = node_secret(box, node)
    auth: TokenAuth | PasswordAuth
    if node.auth_kind == AuthKind.TOKEN:
        assert node.token_id is not None
        auth = TokenAuth(node.token_id, secret)
    else:
        auth = PasswordAuth(node.pve_user, secret)
    # the cluster's nodes share one vmid allocation lock (provisioner.pve.vmid)
    return PveConnection(host=node.host, port=node.port, node=node.pve_node, auth=auth,
                         ca_file=node.ca_file, fingerprint=node.fingerprint,
                         insecure=node.tls_insecure, cluster=node.cluster)  # fmt: skip


def client_for(node: Node, box: SecretBox) -> PveClient:
    return PveClient(connection_for(node, box))


def container_counts(session: Session, node_id: int | None = None) -> dict[int, int]:
    """How many containers each node holds, by node id (``node_id``: only
    that node's): every container not destroyed.  A destroyed one keeps
    its record, for its history, but no longer exists on the node."""
    query = (select(Container.node_id, func.count())
             .where(Container.lifecycle != Lifecycle.DESTROYED)
             .group_by(Container.node_id))  # fmt: skip
    if node_id is not None:
        query = query.where(Container.node_id == node_id)
    return {nid: count for nid, count in session.execute(query)}


@dataclass(frozen=True)
class Peer:
    """Another node of a registered node's PVE cluster, as that node reports it."""

    name: str  # PVE's name for it
    ip: str
    online: bool
    fingerprint: str | None  # its certificate's SHA-256, from GET /nodes
    registered: str | None  # the provisioner's name for it, when registered already

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "ip": self.ip, "online": self.online,
                "fingerprint": self.fingerprint, "registered": self.registered}  # fmt: skip


def cluster_peers(session: Session, box: SecretBox, node: Node,
                  lend: Callable[[PveConnection], AbstractContextManager[PveClient]] = PveClient,
                  ) -> tuple[str | None, list[Peer]]:  # fmt: skip
    """The cluster ``node`` is in, and its other nodes with their addresses
    and certificate fingerprints (read through ``node``'s authenticated TLS
    connection): what an operator confirms before they are registered.

    Raises:
        ProvisionError: the node cannot be asked.
    """
    with lend(connection_for(node, box)) as client:
        status = client.cluster_status()
        fingerprints = {n.name: n.ssl_fingerprint for n in client.nodes()}
    cluster = next((str(e["name"]) for e in status if e.get("type") == "cluster"), None)
    known = {(n.cluster, n.pve_node): n.name for n in session.scalars(select(Node))}
    peers = [Peer(name=str(e["name"]), ip=str(e.get("ip", "")), online=bool(e.get("online")),
                  fingerprint=fingerprints.get(str(e["name"])),
                  registered=known.get((cluster, str(e["name"]))) if cluster else None)
             for e in status if e.get("type") == "node" and str(e.get("name")) != node.pve_node]  # fmt: skip
    return cluster, sorted(peers, key=lambda p: p.name)


def add_peers(session: Session, box: SecretBox, node: Node, confirmed: Mapping[str, str],
              lend: Callable[[PveConnection], AbstractContextManager[PveClient]] = PveClient,
              ) -> list[Node]:  # fmt: skip
    """Register the peers of ``node`` named in ``confirmed`` (PVE name ->
    the fingerprint the operator confirmed), each under its PVE name, at
    its cluster address on ``node``'s port, with ``node``'s login, its
    certificate pinned; ``node`` and they get the cluster's name.  Not
    committed.

    Raises:
        ConfigError: ``nodes: ...`` a name that is not a peer, one registered
            already, a fingerprint that is not the one the node reports now,
            or a name taken by another registered node.
    """
    cluster, peers = cluster_peers(session, box, node, lend)
    if cluster is None:
        raise ConfigError(f"nodes: node {node.name} is not in a cluster")
    by_name = {p.name: p for p in peers}
    taken = set(session.scalars(select(Node.name)))
    added: list[Node] = []
    secret = node_secret(box, node)
    for name, fingerprint in confirmed.items():
        peer = by_name.get(name)
        if peer is None:
            raise ConfigError(f"nodes: {name!r} is not another node of cluster {cluster} "
                              f"(it has {', '.join(by_name) or 'no other node'})")  # fmt: skip
        if peer.registered:
            raise ConfigError(f"nodes: {name} is registered already (as {peer.registered})")
        if not peer.fingerprint or normalize_fingerprint(fingerprint) != normalize_fingerprint(
                peer.fingerprint):  # fmt: skip
            raise ConfigError(f"nodes: {name}'s certificate fingerprint is {peer.fingerprint}, "
                              f"not the {fingerprint} confirmed")  # fmt: skip
        if name in taken:
            raise ConfigError(f"nodes: a node named {name!r} exists already (for another host)")
        new = Node(name=name, host=peer.ip, port=node.port, pve_node=name,
                   auth_kind=node.auth_kind, pve_user=node.pve_user, token_name=node.token_name,
                   secret_ciphertext="", fingerprint=format_fingerprint(
                       normalize_fingerprint(peer.fingerprint)),
                   default_storage=node.default_storage, default_bridge=node.default_bridge,
                   cluster=cluster)  # fmt: skip
        set_node_secret(box, new, secret)
        session.add(new)
        added.append(new)
    node.cluster = cluster
    session.flush()
    return added

"""Stored nodes: from one to a connected Proxmox client, and how many
containers each holds."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioner.models import AuthKind, Container, Lifecycle, Node
from provisioner.pve.client import PveClient
from provisioner.pve.http import PasswordAuth, PveConnection, TokenAuth
from provisioner.secrets.box import SecretBox
from provisioner.secrets.vault import node_secret


def connection_for(node: Node, box: SecretBox) -> PveConnection:
    """The connection settings of a stored node, its secret decrypted."""
    secret = node_secret(box, node)
    auth: TokenAuth | PasswordAuth
    if node.auth_kind == AuthKind.TOKEN:
        assert node.token_id is not None
        auth = TokenAuth(node.token_id, secret)
    else:
        auth = PasswordAuth(node.pve_user, secret)
    return PveConnection(host=node.host, port=node.port, node=node.pve_node, auth=auth,
                         ca_file=node.ca_file, fingerprint=node.fingerprint,
                         insecure=node.tls_insecure)  # fmt: skip


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

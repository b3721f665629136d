"""From a stored node to a connected Proxmox client."""

from __future__ import annotations

from provisioner.models import AuthKind, Node
from provisioner.pve import PasswordAuth, PveClient, PveConnection, TokenAuth
from provisioner.secrets import SecretBox
from provisioner.vault import node_secret


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

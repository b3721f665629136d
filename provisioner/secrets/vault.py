"""Which columns hold secrets, under which associated data, and rotating them.

Every encrypted column is read and written through these functions, so the
associated data (which binds a ciphertext to its row and column) is decided
in one place, and ``rotate_all`` knows every secret there is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.models import Container, Node, Sandbox, Webhook
from provisioner.secrets.box import SecretBox, field_aad
from provisioner.stored_request import StoredRequest


def node_secret_aad(node: Node) -> str:
    # the node's name: unique and known before the row is inserted
    return field_aad("node", node.name, "secret")


def container_aad(container: Container, field: str) -> str:
    return field_aad("container", container.id, field)


def set_node_secret(box: SecretBox, node: Node, secret: str) -> None:
    """Encrypt the node's API token secret (or password) into its row."""
    node.secret_ciphertext = box.encrypt(secret, node_secret_aad(node))


def node_secret(box: SecretBox, node: Node) -> str:
    """The node's API token secret (or password).

    Raises:
        SecretError: if no known key made it, or it belongs to another row.
    """
    return box.decrypt(node.secret_ciphertext, node_secret_aad(node))


def set_container_secrets(box: SecretBox, container: Container, *,
                          root_password: str | None = None,
                          ssh_private_key: str | None = None) -> None:  # fmt: skip
    """Encrypt a container's generated root password and/or SSH private key."""
    if container.id is None:
        raise ValueError("give the container its id before storing its secrets")
    if root_password is not None:
        container.root_password_ciphertext = box.encrypt(
            root_password, container_aad(container, "root_password"))  # fmt: skip
    if ssh_private_key is not None:
        container.ssh_private_key_ciphertext = box.encrypt(
            ssh_private_key, container_aad(container, "ssh_private_key"))  # fmt: skip


def container_root_password(box: SecretBox, container: Container) -> str | None:
    token = container.root_password_ciphertext
    return box.decrypt(token, container_aad(container, "root_password")) if token else None


def container_ssh_private_key(box: SecretBox, container: Container) -> str | None:
    token = container.ssh_private_key_ciphertext
    return box.decrypt(token, container_aad(container, "ssh_private_key")) if token else None


def webhook_secret_aad(hook: Webhook) -> str:
    return field_aad("webhook", hook.id, "secret")


def set_webhook_secret(box: SecretBox, hook: Webhook, secret: str) -> None:
    """Encrypt a webhook's signing secret into its row (flushed first: its id binds it)."""
    if hook.id is None:
        raise ValueError("flush the webhook before storing its secret: its id binds it")
    hook.secret_ciphertext = box.encrypt(secret, webhook_secret_aad(hook))


def webhook_secret(box: SecretBox, hook: Webhook) -> str:
    """A webhook's signing secret.

    Raises:
        SecretError: if no known key made it, or it belongs to another row.
    """
    return box.decrypt(hook.secret_ciphertext, webhook_secret_aad(hook))


# a sandbox's two Application Passwords: the live site's (read) and its own (written)
SANDBOX_SECRETS = ("source", "target")


def sandbox_aad(container_id: str, which: str) -> str:
    return field_aad("sandbox", container_id, f"{which}_secret")


def set_sandbox_secret(box: SecretBox, sandbox: Sandbox, which: str, secret: str) -> None:
    """Encrypt the live site's (``source``) or the sandbox's own (``target``)
    Application Password into the sandbox's row."""
    if which not in SANDBOX_SECRETS:
        raise ValueError(f"no sandbox secret {which!r}")
    setattr(sandbox, f"{which}_secret_ciphertext",
            box.encrypt(secret, sandbox_aad(sandbox.container_id, which)))  # fmt: skip


def sandbox_secret(box: SecretBox, sandbox: Sandbox, which: str) -> str | None:
    token = getattr(sandbox, f"{which}_secret_ciphertext")
    return box.decrypt(token, sandbox_aad(sandbox.container_id, which)) if token else None


@dataclass(frozen=True)
class RotationReport:
    """How many secrets were re-encrypted and how many were already current."""

    reencrypted: int
    current: int


def variable_aad(container_id: str, name: str) -> str:
    """The associated data of a secret template variable of a request."""
    return field_aad("container", container_id, f"var.{name}")


def rotate_all(session: Session, box: SecretBox) -> RotationReport:
    """Re-encrypt every stored secret with ``box``'s current key: node
    credentials, root passwords, SSH keys, secret template variables,
    webhook signing secrets and sandboxes' Application Passwords.

    Safe to run while workers run: old ciphertexts stay readable as long as
    the old key is known, and a secret is rewritten in one UPDATE.  Commit
    is the caller's.
    """
    counts = {"changed": 0, "same": 0}

    def rotated(token: str, aad: str) -> str | None:
        """The token under the current key, or None when it is under it."""
        if not box.needs_rotation(token):
            counts["same"] += 1
            return None
        counts["changed"] += 1
        return box.reencrypt(token, aad)

    def column(row: object, attr: str, aad: str) -> None:
        token = getattr(row, attr)
        if token and (new := rotated(token, aad)) is not None:
            setattr(row, attr, new)

    for node in session.scalars(select(Node)):
        column(node, "secret_ciphertext", node_secret_aad(node))
    for ct in session.scalars(select(Container)):
        for field in ("root_password", "ssh_private_key"):
            column(ct, f"{field}_ciphertext", container_aad(ct, field))
        stored = StoredRequest.from_dict(ct.request)
        tokens = dict(stored.secret_variables)
        dirty = False
        for name, token in tokens.items():
            if (new := rotated(token, variable_aad(ct.id, name))) is not None:
                tokens[name], dirty = new, True
        if dirty:  # a new dict: the JSON column does not track changes in place
            ct.request = replace(stored, secret_variables=tokens).to_dict()
    for hook in session.scalars(select(Webhook)):
        column(hook, "secret_ciphertext", webhook_secret_aad(hook))
    for sb in session.scalars(select(Sandbox)):
        for which in SANDBOX_SECRETS:
            column(sb, f"{which}_secret_ciphertext", sandbox_aad(sb.container_id, which))
    return RotationReport(reencrypted=counts["changed"], current=counts["same"])

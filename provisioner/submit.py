"""Turning "I want a container like this" into a stored, queued request.

Everything is validated before anything is written: the node exists, the
template loads, the variables resolve, and the PVE create parameters pass
PVE's own schema.  Then one ``Container`` row is stored (secrets encrypted:
the generated root password, the generated SSH key, secret variables) and one
job is enqueued carrying only its id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.config import Settings
from provisioner.errors import ConfigError
from provisioner.models import Container, FailurePolicy, Lifecycle, Node, new_container_id
from provisioner.secrets import SecretBox, generate_password, generate_ssh_keypair
from provisioner.templates import (
    CreateRequest,
    NetworkConfig,
    NodeDefaults,
    Template,
    build_create_params,
    load_template,
    resolve_variables,
)
from provisioner.vault import set_container_secrets, variable_aad


@dataclass(frozen=True)
class ProvisionRequest:
    """What an operator asks for (the wizard, the CLI and the API fill it)."""

    template: str
    node: str
    hostname: str
    vmid: int | None = None
    cores: int | None = None
    memory: int | None = None
    swap: int | None = None
    disk: int | None = None
    ip: str = "dhcp"
    gateway: str | None = None
    bridge: str | None = None
    storage: str | None = None
    ssh_public_key: str | None = None
    root_password: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    failure_policy: str = "keep"


def load_named_template(settings: Settings, name: str) -> Template:
    """A template from the configured directory, by name.

    Raises:
        ConfigError: unknown name or an invalid template.
    """
    path = settings.templates_dir / name
    if "/" in name or name.startswith(".") or not (path / "template.toml").is_file():
        raise ConfigError(f"template: no template named {name!r} in {settings.templates_dir}")
    return load_template(path)


def create_request_of(container: Container, node: Node) -> tuple[CreateRequest, NodeDefaults]:
    """The PVE-facing request stored in a container row (no secrets inside)."""
    r = container.request
    network = NetworkConfig(ip=r.get("ip", "dhcp"), gateway=r.get("gateway"),
                            bridge=r.get("bridge"))  # fmt: skip
    keys = "\n".join(k for k in (container.ssh_public_key, r.get("ssh_public_key")) if k)
    request = CreateRequest(hostname=container.hostname, vmid=r.get("vmid"), cores=r.get("cores"),
                            memory=r.get("memory"), swap=r.get("swap"), disk=r.get("disk"),
                            network=network, storage=r.get("storage"), ssh_public_keys=keys,
                            marker=container.id)  # fmt: skip
    defaults = NodeDefaults(node=node.pve_node, storage=node.default_storage or "local-lvm",
                            bridge=node.default_bridge or "vmbr0")  # fmt: skip
    return request, defaults


def stored_variables(box: SecretBox, container: Container) -> dict[str, Any]:
    """The resolved template variables of a request, secrets decrypted."""
    values = dict(container.request.get("variables", {}))
    for name, token in container.request.get("secret_variables", {}).items():
        values[name] = box.decrypt(token, variable_aad(container.id, name))
    return values


def submit(
    session: Session, box: SecretBox, settings: Settings, req: ProvisionRequest
) -> Container:
    """Validate a request and store it as a pending container (not committed).

    Raises:
        ConfigError: naming the field that is wrong; nothing is stored.
    """
    node = session.scalars(select(Node).where(Node.name == req.node)).one_or_none()
    if node is None:
        raise ConfigError(f"node: no node named {req.node!r} (add it first)")
    if req.failure_policy not in ("keep", "destroy"):
        raise ConfigError(
            f"failure_policy: must be 'keep' or 'destroy', got {req.failure_policy!r}"
        )
    template = load_named_template(settings, req.template)
    variables = resolve_variables(template, req.variables)
    container = Container(id=new_container_id(), node=node, template=template.name,
                          hostname=req.hostname, lifecycle=Lifecycle.PENDING,
                          failure_policy=FailurePolicy(req.failure_policy))  # fmt: skip
    container.request = {
        "vmid": req.vmid, "cores": req.cores, "memory": req.memory, "swap": req.swap,
        "disk": req.disk, "ip": req.ip, "gateway": req.gateway, "bridge": req.bridge,
        "storage": req.storage, "ssh_public_key": req.ssh_public_key,
        "variables": {k: v for k, v in variables.items() if k not in template.secret_names},
        "secret_variables": {k: box.encrypt(str(v), variable_aad(container.id, k))
                             for k, v in variables.items() if k in template.secret_names},
    }  # fmt: skip
    private_key, public_key = generate_ssh_keypair(f"lxc-provisioner@{req.hostname}")
    container.ssh_public_key = public_key
    password = req.root_password or generate_password()
    set_container_secrets(box, container, root_password=password, ssh_private_key=private_key)
    request, defaults = create_request_of(container, node)
    build_create_params(request, template, defaults)  # PVE's schema, before any API call
    session.add(container)
    session.flush()
    return container

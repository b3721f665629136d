"""Turning a request and a template into PVE's ``POST /nodes/{node}/lxc`` parameters.

Pure: no I/O besides reading the packaged PVE schema once.  The parameters
are validated against that schema here, before any API call, so a bad
hostname or a static address without a prefix fails with PVE's own wording
instead of a 400 from the node.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from provisioner.errors import ConfigError, InvalidRequest
from provisioner.templates.model import Template
from provisioner.templates.mounts import check_mount_paths
from provisioner.templates.surface import MAX_NICS, Surface, features_pve

__all__ = [
    "MARKER_PREFIX",
    "PVE_CREATE_PATH",
    "CreateRequest",
    "NetworkConfig",
    "NodeDefaults",
    "build_create_params",
    "marker_line",
    "parse_marker",
    "validate_create_params",
]

PVE_CREATE_PATH = "/nodes/{node}/lxc"
# The description carries this line so a retried job recognises its own container.
MARKER_PREFIX = "lxc-provisioner-id:"
# Only the schema check needs a vmid; the allocated one replaces it later.
_PLACEHOLDER_VMID = 100
_MARKER_RE = re.compile(rf"^{re.escape(MARKER_PREFIX)}\s*(\S+)\s*$", re.M)


@dataclass(frozen=True)
class NetworkConfig:
    """``net0`` of the container.

    Attributes:
        ip: ``"dhcp"`` or a static IPv4 address with prefix (``"198.18.0.10/24"``).
        gateway: the IPv4 gateway (static addresses only).
        bridge: the bridge; the node default when None.
        vlan: an optional VLAN tag.
        ip6: None (no IPv6, or the template's), ``auto`` (SLAAC), ``dhcp`` or
            a static IPv6 address with prefix.
        gateway6: the IPv6 gateway (static ip6 only).
        firewall: PVE's firewall flag on the interface (None: the template's).
    """

    ip: str = "dhcp"
    gateway: str | None = None
    bridge: str | None = None
    vlan: int | None = None
    ip6: str | None = None
    gateway6: str | None = None
    firewall: bool | None = None

    @property
    def is_dhcp(self) -> bool:
        return self.ip == "dhcp"


@dataclass(frozen=True)
class NodeDefaults:
    """Per-node defaults the request may leave out."""

    node: str = "pve"
    storage: str = "local-lvm"  # root filesystems
    bridge: str = "vmbr0"
    template_storage: str = "local"  # where OS templates (vztmpl) live


@dataclass(frozen=True)
class CreateRequest:
    """What the user asked for; None means "the template's (or node's) default".

    Attributes:
        hostname: the container's hostname (a DNS name).
        vmid: a fixed id, or None to allocate one (``/cluster/nextid``).
        cores, memory, swap, disk: overrides of the template's resources
            (memory and swap in MiB, disk in GiB).
        network: net0 settings.
        storage: the root filesystem's storage; the node default when None.
        ssh_public_keys: public keys for root (one per line).
        root_password: root's password; it is a secret, never logged.
        tags: extra PVE tags.
        description: free text shown in PVE.
        marker: an id written into the description (see :func:`parse_marker`).
        protection: set PVE's protection flag (no destroy, no rollback).
        surface: further interfaces, DNS, pool, start on boot, mount points,
            bind mounts and feature overrides (checked: ``Surface.from_json``).
    """

    hostname: str
    vmid: int | None = None
    cores: int | None = None
    memory: int | None = None
    swap: int | None = None
    disk: int | None = None
    network: NetworkConfig = field(default_factory=NetworkConfig)
    storage: str | None = None
    ssh_public_keys: str | None = None
    root_password: str | None = None
    tags: tuple[str, ...] = ()
    description: str | None = None
    marker: str | None = None
    protection: bool = False  # PVE's protection flag (production containers)
    surface: Surface = field(default_factory=Surface)


def marker_line(marker: str) -> str:
    """The description line that marks a container as ours."""
    return f"{MARKER_PREFIX} {marker}"


def parse_marker(description: str | None) -> str | None:
    """The marker in a container's description, or None."""
    m = _MARKER_RE.search(description or "")
    return m.group(1) if m else None


def _ostemplate(template: Template, node: NodeDefaults) -> str:
    volid = template.ostemplate
    return volid if ":" in volid else f"{node.template_storage}:vztmpl/{volid}"


def _net0(network: NetworkConfig, template: Template, node: NodeDefaults) -> str:
    if network.is_dhcp and network.gateway:
        raise ConfigError("net0: a gateway only applies to a static ip, not to ip=dhcp")
    ip6 = network.ip6 or template.network.ip6
    gateway6 = network.gateway6 if network.ip6 else None
    firewall = network.firewall if network.firewall is not None else template.network.firewall
    parts = ["name=eth0", f"bridge={network.bridge or node.bridge}", f"ip={network.ip}"]
    if network.gateway:
        parts.append(f"gw={network.gateway}")
    if ip6:
        parts.append(f"ip6={ip6}")
    if gateway6:
        parts.append(f"gw6={gateway6}")
    if network.vlan is not None:
        parts.append(f"tag={network.vlan}")
    if firewall:
        parts.append("firewall=1")
    return ",".join(parts)


def _mount_points(request: CreateRequest, template: Template, storage: str) -> dict[str, str]:
    """``mp0``...: the template's volumes (a request's volume at the same path
    replaces one), the request's, then its bind mounts."""
    asked = request.surface.mounts
    mounts = [m for m in template.mounts if m.path not in {a.path for a in asked}] + list(asked)
    check_mount_paths(mounts, request.surface.binds)
    values = [m.pve(storage) for m in mounts] + [b.pve() for b in request.surface.binds]
    return {f"mp{i}": value for i, value in enumerate(values)}


def _surface(request: CreateRequest, template: Template, storage: str,
             node: NodeDefaults) -> dict[str, str | int]:  # fmt: skip
    """The parameters of the create surface beyond ``net0`` (defaults from the template)."""
    surface, defaults = request.surface, template.network
    if len(surface.nics) > MAX_NICS:
        raise ConfigError(f"nics: at most {MAX_NICS} further interfaces, got {len(surface.nics)}")
    params: dict[str, str | int] = {f"net{i}": nic.pve(i, node.bridge)
                                    for i, nic in enumerate(surface.nics, 1)}  # fmt: skip
    nameserver = surface.nameserver or defaults.nameserver
    searchdomain = surface.searchdomain or defaults.searchdomain
    pool = surface.pool or template.pool
    onboot = surface.onboot if surface.onboot is not None else template.onboot
    startup = surface.startup or template.startup
    if nameserver:
        params["nameserver"] = nameserver
    if searchdomain:
        params["searchdomain"] = searchdomain
    if pool:
        params["pool"] = pool
    if onboot is not None:
        params["onboot"] = int(onboot)
    if startup is not None:
        params["startup"] = str(startup)
    params.update(_mount_points(request, template, storage))
    return params


def _tags(template: Template, request: CreateRequest) -> str:
    tags = dict.fromkeys(("provisioner", *template.tags, *request.tags, *request.surface.tags))
    return ";".join(tags)


def _description(template: Template, request: CreateRequest) -> str:
    lines = [request.description or f"{template.name}: {template.description}"]
    if request.marker:
        lines += ["", marker_line(request.marker)]
    return "\n".join(lines)


def build_create_params(
    request: CreateRequest, template: Template, node_defaults: NodeDefaults
) -> dict[str, str | int]:
    """Build the parameters of ``POST /nodes/{node}/lxc`` and validate them.

    Booleans are sent as 0/1 ints (PVE rejects ``True``).  ``vmid`` is
    included only when the request fixes one; the caller adds the allocated
    id otherwise.  The node is the path parameter, not part of the result.

    Args:
        request: what the user asked for.
        template: the loaded template (OS template, resources, features).
        node_defaults: storage, bridge and template storage of the node.

    Returns:
        Parameter name -> str or int, ready for the Proxmox client.

    Raises:
        ConfigError: a parameter fails PVE's schema; the message names every
            offending field with PVE's wording (``hostname: invalid format -
            value does not look like a valid DNS name``) and never a secret.
    """
    res = template.resources
    disk = request.disk if request.disk is not None else res.disk
    if disk < 1:
        # PVE reads "<storage>:0" as "no size limit" on some storages; never what we want.
        raise ConfigError(f"rootfs: the disk size must be at least 1 GiB, got {disk}")
    features = features_pve(vars(template.features), request.surface.features)
    storage = request.storage or node_defaults.storage
    params: dict[str, str | int] = {
        "ostemplate": _ostemplate(template, node_defaults),
        "hostname": request.hostname,
        "cores": request.cores if request.cores is not None else res.cores,
        "memory": request.memory if request.memory is not None else res.memory,
        "swap": request.swap if request.swap is not None else res.swap,
        "rootfs": f"{storage}:{disk}",
        "net0": _net0(request.network, template, node_defaults),
        "unprivileged": int(template.unprivileged),
        "tags": _tags(template, request),
        "description": _description(template, request),
        **_surface(request, template, storage, node_defaults),
    }
    if features:
        params["features"] = features
    if request.protection:
        params["protection"] = 1
    if request.vmid is not None:
        params["vmid"] = request.vmid
    if request.ssh_public_keys:
        params["ssh-public-keys"] = request.ssh_public_keys
    if request.root_password is not None:
        params["password"] = request.root_password
    validate_create_params(params, node_defaults.node)
    return params


def validate_create_params(params: Mapping[str, str | int], node: str) -> None:
    """Check create parameters against PVE's schema (see :func:`build_create_params`).

    Raises:
        InvalidRequest: naming every offending field with PVE's message, a
            problem per field.
        ConfigError: the storage's name is malformed.
    """
    # Imported here: the schema is the simulator's validator, loaded on first use.
    from provisioner.pve.formats import FormatError, check_format
    from provisioner.pve.schema import ParameterError, load_api_schema

    full = {"node": node, "vmid": _PLACEHOLDER_VMID, **params}
    storage = str(params.get("rootfs", "")).split(":", 1)[0]
    try:
        # The schema accepts any volume text; PVE would only fail in the task.
        check_format("pve-storage-id", storage)
    except FormatError as exc:
        raise ConfigError(f"invalid container parameters: rootfs: {exc}") from None
    try:
        load_api_schema().validate("POST", PVE_CREATE_PATH, full)
    except ParameterError as exc:
        # Property strings report "net0: invalid format - format error" plus the
        # detail under "net0.ip"; the detail says more, so drop the summary.
        errors = {
            field: msg
            for field, msg in sorted(exc.errors.items())
            if not (msg == "invalid format - format error" and any(
                k.startswith(f"{field}.") for k in exc.errors))
        }  # fmt: skip
        detail = "; ".join(f"{field}: {msg}" for field, msg in errors.items())
        raise InvalidRequest([ConfigError(f"invalid container parameters: {field}: {msg}")
                              for field, msg in errors.items()],
                             f"invalid container parameters: {detail}") from None  # fmt: skip

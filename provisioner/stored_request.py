"""What a container's request stores: the typed, versioned ``Container.request``.

``StoredRequest`` is what ``provisioner.requests`` writes into the JSON
column and what the worker, the views and key rotation read back.  The
settings an operator may ask for (``RequestSettings``) are shared with
``provisioner.requests.ProvisionRequest``, the request as submitted.

No secret is ever stored here: the root password and the generated SSH key
have their own encrypted columns, and secret template variables are kept as
``provisioner.secrets.box`` tokens.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from provisioner.errors import PermanentError
from provisioner.templates.surface import SURFACE_KEYS

# Rows written before the version key existed have the same shape: version 1.
# Version 2 adds the create surface (SURFACE_SETTINGS); a row is written as
# version 2 only when it asks for one of them, so that an older release,
# which would drop them (a retry without the data volume), refuses it instead.
STORED_REQUEST_VERSION = 2
SURFACE_SETTINGS = SURFACE_KEYS


@dataclass(frozen=True, kw_only=True)
class RequestSettings:
    """The settings a request may ask for; None means the template's (or the
    node's) default.

    Attributes:
        vmid: a fixed id, or None to have PVE allocate one.
        cores, memory, swap, disk: overrides of the template's resources
            (memory and swap in MiB, disk in GiB).
        ip: ``"dhcp"`` or a static IPv4 address with prefix.
        gateway: the IPv4 gateway of a static address.
        bridge, storage: the network bridge and the root disk's storage.
        ssh_public_key: public keys for root, one per line (not a secret).
        ip6, gateway6, vlan, firewall: net0's IPv6 (``auto``, ``dhcp`` or a
            static address with prefix), its gateway, VLAN tag and firewall flag.
        nics: further interfaces (``provisioner.templates.surface.Nic``'s JSON).
        nameserver, searchdomain: DNS, space-separated.
        tags, pool: PVE tags (besides the template's) and resource pool.
        onboot, startup: start on boot, and PVE's ``order=N[,up=S][,down=S]``.
        mounts: storage-backed volumes (``MountPoint``'s JSON).
        binds: bind mounts of host paths (``BindMount``'s JSON).
        features: feature overrides, name -> on/off.

    The create surface's settings (``SURFACE_SETTINGS``) are JSON as the API
    takes them; ``provisioner.templates.surface.Surface.from_json`` checks them.
    """

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
    ip6: str | None = None
    gateway6: str | None = None
    vlan: int | None = None
    firewall: bool | None = None
    nics: list[dict[str, Any]] = field(default_factory=list)
    nameserver: str | None = None
    searchdomain: str | None = None
    tags: list[str] = field(default_factory=list)
    pool: str | None = None
    onboot: bool | None = None
    startup: str | None = None
    mounts: list[dict[str, Any]] = field(default_factory=list)
    binds: list[dict[str, Any]] = field(default_factory=list)
    features: dict[str, bool] = field(default_factory=dict)

    def settings_json(self) -> dict[str, Any]:
        """The asked-for settings alone, in the order the views show them
        (the create surface's only when asked for)."""
        return {f.name: getattr(self, f.name) for f in fields(RequestSettings)
                if f.name not in SURFACE_SETTINGS or getattr(self, f.name) not in (None, [], {})}  # fmt: skip

    @property
    def uses_surface(self) -> bool:
        """Whether it asks for any option of the create surface (version 2)."""
        return any(getattr(self, name) not in (None, [], {}) for name in SURFACE_SETTINGS)


@dataclass(frozen=True, kw_only=True)
class StoredRequest(RequestSettings):
    """A request as ``Container.request`` holds it.

    Attributes:
        variables: the resolved template variables that are not secret.
        secret_variables: secret variable name -> its ciphertext token.
        clone: for a clone, ``{"source": <container id>, "full": bool}``:
            the create phase clones that container instead of creating one.
        placement: for a request placed by ``--node auto``, ``{"node",
            "reasons", "warning"?}``: the create phase says it first.
    """

    variables: dict[str, Any] = field(default_factory=dict)
    secret_variables: dict[str, str] = field(default_factory=dict)
    clone: dict[str, Any] | None = None
    placement: dict[str, Any] | None = None

    @property
    def version(self) -> int:
        """The shape of its JSON: 2 with a create surface option, else 1."""
        return 2 if self.uses_surface else 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON written to ``Container.request``."""
        data = {"version": self.version, **self.settings_json(),
                "variables": dict(self.variables),
                "secret_variables": dict(self.secret_variables)}  # fmt: skip
        if self.clone is not None:
            data["clone"] = dict(self.clone)
        if self.placement is not None:
            data["placement"] = dict(self.placement)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StoredRequest:
        """Read ``Container.request`` back, in the current shape.  A row
        without a version key is version 1; a missing setting is its
        default; unknown keys are ignored.

        Raises:
            PermanentError: a version this release does not know (a row
                written by a newer release).
        """
        data = data or {}
        version = data.get("version", 1)
        if not isinstance(version, int) or not 1 <= version <= STORED_REQUEST_VERSION:
            raise PermanentError(
                f"stored request: version {version!r} is not one this release reads "
                f"(1 to {STORED_REQUEST_VERSION})",
                hint="upgrade the provisioner to the release that wrote it",
            )
        settings = {f.name: data[f.name] for f in fields(RequestSettings) if f.name in data}
        clone, placement = data.get("clone"), data.get("placement")
        return cls(**settings, variables=dict(data.get("variables") or {}),
                   secret_variables=dict(data.get("secret_variables") or {}),
                   clone=dict(clone) if isinstance(clone, dict) else None,
                   placement=dict(placement) if isinstance(placement, dict) else None)  # fmt: skip

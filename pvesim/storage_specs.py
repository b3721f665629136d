"""The storages of a simulated node, as PVE has them after installation.

Kept apart from :mod:`pvesim.storage` (which serves their API and content)
so the node can check a create's storage without importing the API side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pvesim.errors import PveError


@dataclass(frozen=True)
class StorageSpec:
    name: str
    type: str
    content: tuple[str, ...]
    # the section's other keys in storage.cfg, in the file's order
    options: tuple[tuple[str, str], ...] = field(default=())
    vgname: str | None = None  # an LVM storage's volume group


# PVE's defaults after installation on ext4: a dir storage and an LVM-thin
# pool, as the installer writes them into /etc/pve/storage.cfg
STORAGES = {
    "local": StorageSpec("local", "dir", ("backup", "iso", "vztmpl"),
                         (("path", "/var/lib/vz"), ("content", "iso,vztmpl,backup"))),
    "local-lvm": StorageSpec("local-lvm", "lvmthin", ("images", "rootdir"),
                             (("thinpool", "data"), ("vgname", "pve"),
                              ("content", "rootdir,images")), vgname="pve"),
}  # fmt: skip


def storage_cfg() -> str:
    """The text of /etc/pve/storage.cfg (its SHA-1 is the config's digest)."""
    return "".join(
        f"{spec.type}: {spec.name}\n" + "".join(f"\t{k} {v}\n" for k, v in spec.options) + "\n"
        for spec in STORAGES.values()
    )


def get_spec(name: str) -> StorageSpec:
    spec = STORAGES.get(name)
    if spec is None:
        raise PveError(500, f"storage '{name}' does not exist")
    return spec

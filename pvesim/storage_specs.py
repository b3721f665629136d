"""The storages of a simulated node, as PVE has them after installation.

Kept apart from :mod:`pvesim.storage` (which serves their API and content)
so the node can check a create's storage without importing the API side.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvesim.errors import PveError


@dataclass(frozen=True)
class StorageSpec:
    name: str
    type: str
    content: tuple[str, ...]
    vgname: str | None = None  # an LVM storage's volume group


# PVE's defaults after installation on ext4: a dir storage and an LVM-thin pool
STORAGES = {
    "local": StorageSpec("local", "dir", ("backup", "iso", "vztmpl")),
    "local-lvm": StorageSpec("local-lvm", "lvmthin", ("images", "rootdir"), "pve"),
}


def get_spec(name: str) -> StorageSpec:
    spec = STORAGES.get(name)
    if spec is None:
        raise PveError(500, f"storage '{name}' does not exist")
    return spec

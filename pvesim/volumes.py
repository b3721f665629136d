"""Mount points (``rootfs``, ``mp[n]``) and the volumes behind them.

A storage-backed mount point is a volume ``STORAGE:vm-VMID-disk-K``; pvesim
keeps each one as a directory ``state/volumes/STORAGE/vm-VMID-disk-K/``
(on the state directory's file system, so the storage's usage counts it)
and bind-mounts it into the container at its ``mp`` path when the container
boots.  A bind mount point (``/host/path,mp=/mnt/x``) bind-mounts the host
path.  The parsing and naming here are pure; the directory work is small
and synchronous.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.pve.schema import format_property_string, load_api_schema
from pvesim.guest import split_property_string

# PVE::LXC's $NEW_DISK_RE: "STORAGE:SIZE_GB" asks for a new volume
NEW_DISK_RE = re.compile(r"([^:\s]+):(\d+(?:\.\d+)?)")
# pve-container's create (API2::LXC create_vm): a bare number is a size on
# the create's `storage`
BARE_SIZE_RE = re.compile(r"\d+(?:\.\d+)?")
_MP_KEY = re.compile(r"mp(\d+)")


def is_mount_key(key: str) -> bool:
    return key == "rootfs" or _MP_KEY.fullmatch(key) is not None


def mount_keys(config: dict[str, Any]) -> list[str]:
    """``rootfs`` then ``mp0``, ``mp1``, ... as PVE's foreach_volume walks them."""
    mps = sorted((k for k in config if _MP_KEY.fullmatch(k)), key=lambda k: int(k[2:]))
    return (["rootfs"] if "rootfs" in config else []) + mps


def with_default_storage(value: str, storage: str) -> str:
    """pve-container's create_vm: "allow to use simple numbers (add default
    storage in that case)" - ``4`` with ``storage=local-lvm`` is ``local-lvm:4``.
    Only a whole value that is a number; ``4,mp=/x`` is left as it is."""
    return f"{storage}:{value}" if BARE_SIZE_RE.fullmatch(value) else value


@dataclass(frozen=True)
class MountPoint:
    """One ``rootfs`` / ``mp[n]`` value, as PVE::LXC::Config::parse_volume reads it."""

    key: str
    volume: str
    options: dict[str, str]

    @classmethod
    def parse(cls, key: str, value: str) -> MountPoint:
        kv = split_property_string(value, "volume")
        volume = kv.pop("volume", "")
        return cls(key=key, volume=volume, options=kv)

    @property
    def kind(self) -> str:
        """PVE::LXC::Config::classify_mountpoint: a path is a bind mount (or a
        device under /dev/), anything else a storage volume."""
        if self.volume.startswith("/"):
            return "device" if self.volume.startswith("/dev/") else "bind"
        return "volume"

    @property
    def path(self) -> str:
        return "/" if self.key == "rootfs" else self.options.get("mp", "")

    @property
    def read_only(self) -> bool:
        return self.options.get("ro") == "1"

    @property
    def new_size_gb(self) -> tuple[str, float] | None:
        """``(storage, size_gb)`` when this asks for a new volume."""
        m = NEW_DISK_RE.fullmatch(self.volume)
        return (m.group(1), float(m.group(2))) if m else None

    @property
    def storage(self) -> str | None:
        return self.volume.split(":", 1)[0] if self.kind == "volume" else None

    @property
    def volname(self) -> str:
        return self.volume.split(":", 1)[-1]

    def format(self, **changes: str) -> str:
        """The value as PVE's print_ct_mountpoint writes it: the volume, then
        the required ``mp``, then the rest sorted (``size`` as format_size)."""
        values: dict[str, object] = {"volume": self.volume, **self.options, **changes}
        name = "rootfs" if self.key == "rootfs" else "mp0"
        fmt = load_api_schema().param_schema("POST", "/nodes/{node}/lxc", name)
        assert fmt is not None
        return format_property_string(values, default_key="volume", fmt=fmt["format"])


def mount_points(config: dict[str, Any]) -> list[MountPoint]:
    """The ``mp[n]`` entries in the order they are mounted: PVE mounts them
    sorted by path, so ``/a`` comes before ``/a/b``."""
    mps = [MountPoint.parse(k, str(config[k])) for k in mount_keys(config) if k != "rootfs"]
    return sorted(mps, key=lambda m: m.path)


def volume_dir(state_root: Path, volume: str) -> Path:
    storage, _, volname = volume.partition(":")
    if "/" in volname or "/" in storage or not volname:
        raise ValueError(f"unexpected volume name '{volume}'")
    return state_root / "volumes" / storage / volname


def owned_volumes(state_root: Path, vmid: int) -> list[str]:
    """Every volume on any storage whose name says it belongs to ``vmid``
    (PVE's vdisk_list with a vmid filter)."""
    out = []
    base = state_root / "volumes"
    if base.is_dir():
        for storage in sorted(base.iterdir()):
            for vol in sorted(storage.glob(f"vm-{vmid}-disk-*")):
                out.append(f"{storage.name}:{vol.name}")
    return out


def free_disk_name(state_root: Path, storage: str, vmid: int, taken: Iterable[str] = ()) -> str:
    """PVE::Storage::Plugin::find_free_diskname: the lowest ``vm-VMID-disk-K``
    not used on that storage (``taken`` names volumes not made yet)."""
    used = {v.split(":", 1)[-1] for v in owned_volumes(state_root, vmid)
            if v.startswith(f"{storage}:")} | {v.split(":", 1)[-1] for v in taken}  # fmt: skip
    k = 0
    while f"vm-{vmid}-disk-{k}" in used:
        k += 1
    return f"{storage}:vm-{vmid}-disk-{k}"


def allocate(state_root: Path, volume: str) -> Path:
    path = volume_dir(state_root, volume)
    path.mkdir(parents=True, exist_ok=False)
    path.chmod(0o755)
    return path


def free(state_root: Path, volume: str) -> None:
    shutil.rmtree(volume_dir(state_root, volume), ignore_errors=True)


def disk_used(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return total


def add_unused(config: dict[str, Any], volume: str) -> None:
    """AbstractConfig::add_unused_volume: the volume as the first free
    ``unused[n]``, unless it is listed already."""
    keys = [k for k in config if re.fullmatch(r"unused\d+", k)]
    if any(str(config[k]) == volume for k in keys):
        return
    n = 0
    while f"unused{n}" in config:
        n += 1
    config[f"unused{n}"] = volume


def referenced_volumes(config: dict[str, Any]) -> list[str]:
    """The storage volumes a config names (mount points and unused disks)."""
    out = []
    for key, value in config.items():
        if is_mount_key(key):
            mp = MountPoint.parse(key, str(value))
            if mp.kind == "volume":
                out.append(mp.volume)
        elif re.fullmatch(r"unused\d+", key):
            out.append(str(value))
    return out

"""Mount points (``rootfs``, ``mp[n]``) and the volumes behind them.

A storage-backed mount point is a volume ``STORAGE:vm-VMID-disk-K``; as on
LVM-thin it is a block device of the volume's size holding an ext4 file
system.  pvesim keeps each one in ``state/volumes/STORAGE/vm-VMID-disk-K/``:

    disk.raw    a sparse image file of the volume's size, ``mkfs.ext4``-ed
    mnt/        where the image is loop-mounted while its container runs

(on the state directory's file system, so the storage's usage counts what
the image holds).  The image is loop-mounted before the container boots and
``mnt/`` bind-mounted into it at its ``mp`` path; it is unmounted (and its
loop device detached) once the container has stopped.  A bind mount point
(``/host/path,mp=/mnt/x``) bind-mounts the host path.  The parsing and
naming here are pure; the image work runs host commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.pve.schema import format_property_string, load_api_schema
from pvesim.guest import split_property_string
from pvesim.proc import CommandError, run

# PVE::LXC's $NEW_DISK_RE: "STORAGE:SIZE_GB" asks for a new volume
NEW_DISK_RE = re.compile(r"([^:\s]+):(\d+(?:\.\d+)?)")
# pve-container's create (API2::LXC create_vm): a bare number is a size on
# the create's `storage`
BARE_SIZE_RE = re.compile(r"\d+(?:\.\d+)?")
_MP_KEY = re.compile(r"mp(\d+)")
log = logging.getLogger(__name__)


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
            for vol in sorted(storage.iterdir()):
                # LvmThinPlugin list_images: vm-VMID-* and (a template's) base-VMID-*
                if re.match(rf"(vm|base)-{vmid}-disk-\d+$", vol.name):
                    out.append(f"{storage.name}:{vol.name}")
    return out


def free_disk_name(state_root: Path, storage: str, vmid: int, taken: Iterable[str] = ()) -> str:
    """PVE::Storage::Plugin::find_free_diskname: the lowest ``vm-VMID-disk-K``
    not used on that storage (``taken`` names volumes not made yet)."""
    # get_next_vm_diskname counts a base-VMID-disk-K as taken too
    names = [v.split(":", 1)[-1] for v in owned_volumes(state_root, vmid)
             if v.startswith(f"{storage}:")] + [v.split(":", 1)[-1] for v in taken]  # fmt: skip
    used = {int(m[1]) for n in names if (m := re.fullmatch(r"(?:vm|base)-\d+-disk-(\d+)", n))}
    k = 0
    while k in used:
        k += 1
    return f"{storage}:vm-{vmid}-disk-{k}"


def rename_volume(state_root: Path, src: str, dest: str) -> None:
    """Rename a volume (LvmThinPlugin create_base's ``lvrename``); it must
    not be in use."""
    volume_dir(state_root, src).rename(volume_dir(state_root, dest))


def image_path(state_root: Path, volume: str) -> Path:
    """The volume's image file (its "block device")."""
    return volume_dir(state_root, volume) / "disk.raw"


def mount_dir(state_root: Path, volume: str) -> Path:
    """Where the volume's file system is mounted on the host while in use."""
    return volume_dir(state_root, volume) / "mnt"


def _is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mounts") as fh:
        return any(line.split()[1] == target for line in fh)


def is_mounted(state_root: Path, volume: str) -> bool:
    return _is_mounted(mount_dir(state_root, volume))


async def allocate(state_root: Path, volume: str, size: int) -> Path:
    """vdisk_alloc and PVE::LXC's format_disk for a new volume: an image of
    ``size`` bytes (sparse, as a thin LV takes no space until written) with
    an ext4 file system (``mkfs.ext4``) on it."""
    path = volume_dir(state_root, volume)
    path.mkdir(parents=True, exist_ok=False)
    try:
        path.chmod(0o755)
        (path / "mnt").mkdir(mode=0o755)
        with open(path / "disk.raw", "xb") as fh:
            fh.truncate(size)
        await run("mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", str(path / "disk.raw"))
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


async def mount(state_root: Path, volume: str) -> Path:
    """Loop-mount the volume's file system at its ``mnt/`` (once)."""
    target = mount_dir(state_root, volume)
    if not _is_mounted(target):
        image = image_path(state_root, volume)
        if not image.is_file():
            raise FileNotFoundError(f"volume '{volume}' does not exist")
        target.mkdir(exist_ok=True)
        await settle(image)  # the last run's mount fully released
        if (image.parent / "grow").exists():  # resized while mounted (resize)
            await _grow_offline(image)
        await run("mount", "-o", "loop", str(image), str(target))
    return target


async def _loop_devices(image: Path) -> list[str]:
    out = await run("losetup", "-j", str(image), check=False)
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


async def unmount(state_root: Path, volume: str) -> None:
    """Unmount the volume (lazily if still busy after 5 s) and detach its
    loop devices (see ``_unmount_dir``)."""
    await _unmount_dir(volume_dir(state_root, volume))


async def _unmount_dir(path: Path, wait: float = 0.0) -> None:
    """Unmount ``path/mnt`` and detach the loop devices of ``path/disk.raw``.

    A ``mount -o loop`` device goes with its last user (autoclear): when a
    container stops, the kernel may release its mount of the volume (and
    write the file system's last blocks) some seconds later; ``losetup -d``
    of a busy device only marks it.  Whatever uses the image next waits for
    that first (``settle``); ``wait`` does so here."""
    target = path / "mnt"
    for _ in range(50):
        if not _is_mounted(target):
            break
        try:
            await run("umount", str(target))
        except CommandError:
            await asyncio.sleep(0.1)
    else:
        await run("umount", "-l", str(target), check=False)
    image = path / "disk.raw"
    if image.exists():
        for dev in await _loop_devices(image):
            await run("losetup", "-d", dev, check=False)
        if wait:
            await settle(image, wait)


async def settle(image: Path, timeout: float = 60.0) -> bool:
    """Wait until no loop device is attached to ``image`` (the kernel has let
    go of a stopped container's mount), so the image can be copied, checked
    or mounted again safely."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        devs = await _loop_devices(image)
        if not devs:
            return True
        if asyncio.get_running_loop().time() > deadline:
            log.warning("%s is still attached to %s", image, ", ".join(devs))
            return False
        for dev in devs:
            await run("losetup", "-d", dev, check=False)
        await asyncio.sleep(0.1)


async def free(state_root: Path, volume: str) -> None:
    """vdisk_free: unmount, detach, remove the image."""
    path = volume_dir(state_root, volume)
    if path.exists():
        await _unmount_dir(path)
    await asyncio.to_thread(shutil.rmtree, path, True)


async def unmount_all(state_root: Path) -> None:
    """Unmount every volume and detach its loop devices: at the simulator's
    stop, and at its start for what a killed simulator left behind."""
    base = state_root / "volumes"
    if not base.is_dir():
        return
    for storage in sorted(base.iterdir()):
        for path in sorted(storage.iterdir()):
            with contextlib.suppress(OSError, CommandError):
                await _unmount_dir(path, wait=10.0)


def disk_used(state_root: Path, volume: str) -> int:
    """What the volume takes on the storage: the image's allocated blocks
    (a thin volume's data usage)."""
    try:
        return image_path(state_root, volume).stat().st_blocks * 512
    except OSError:
        return 0


@contextlib.asynccontextmanager
async def _frozen(target: Path | None) -> AsyncIterator[None]:
    """``fsfreeze`` a mounted file system while its image is copied, so the
    copy is consistent (as a thin snapshot of a running CT's volume)."""
    if target is None:
        yield
        return
    await run("sync", "-f", str(target), check=False)
    try:
        await run("fsfreeze", "-f", str(target))
        ok = True
    except CommandError:  # not freezable: the sync above is the best there is
        ok = False
    try:
        yield
    finally:
        if ok:
            await run("fsfreeze", "-u", str(target), check=False)


async def copy_image(src: Path, dest: Path, mounted: Path | None = None) -> None:
    """Copy an image sparsely (``cp --sparse=always``), replacing ``dest``
    at once; ``mounted``: the source's mount, frozen during the copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        async with _frozen(mounted):
            await run("cp", "--sparse=always", str(src), str(tmp))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


async def save_image(state_root: Path, volume: str, dest: Path) -> None:
    """Copy a volume's image to ``dest`` (a snapshot's or a clone's copy),
    frozen while copied if it is mounted."""
    mounted = mount_dir(state_root, volume)
    image = image_path(state_root, volume)
    if _is_mounted(mounted):
        await copy_image(image, dest, mounted)
    else:
        await settle(image)
        await copy_image(image, dest)


async def clone_volume(state_root: Path, src: str, dest: str) -> None:
    """Make the new volume ``dest`` a copy of the volume ``src``."""
    mount_dir(state_root, dest).mkdir(parents=True, exist_ok=True)
    await save_image(state_root, src, image_path(state_root, dest))


async def restore_image(state_root: Path, volume: str, src: Path) -> None:
    """Make ``volume`` a copy of the image ``src`` (a rollback, a clone's new
    volume); the volume must not be mounted."""
    path = volume_dir(state_root, volume)
    (path / "mnt").mkdir(parents=True, exist_ok=True)
    if (path / "disk.raw").exists():
        await settle(path / "disk.raw")
    await copy_image(src, path / "disk.raw")
    (path / "grow").unlink(missing_ok=True)  # the copy's file system fits its image


async def resize(state_root: Path, volume: str, size: int) -> list[str]:
    """Grow the volume to ``size`` bytes and its file system with it, as
    pve-container's resize_vm: online (``losetup --set-capacity``, then
    ``resize2fs`` on the mounted device) or offline (``e2fsck -f -y``, then
    ``resize2fs``).  An online grow the host refuses (it needs
    CAP_SYS_RESOURCE) is done at the volume's next mount.  Returns the lines
    to log."""
    image = image_path(state_root, volume)
    if not image.is_file():
        return []
    await asyncio.to_thread(os.truncate, image, size)
    devs = await _loop_devices(image) if is_mounted(state_root, volume) else []
    if not devs:
        await settle(image)
        return await _grow_offline(image)
    for dev in devs:
        await run("losetup", "--set-capacity", dev)
    try:
        out = await run("resize2fs", devs[0])
    except CommandError as exc:
        if "Permission denied" not in exc.stderr:
            raise
        (image.parent / "grow").touch()
        return ["the host refuses an online resize2fs: the file system grows at the next start"]
    return [line for line in out.splitlines() if line.strip()]


async def _grow_offline(image: Path) -> list[str]:
    await run("e2fsck", "-f", "-y", str(image), check=False)
    out = await run("resize2fs", str(image))
    (image.parent / "grow").unlink(missing_ok=True)
    return [line for line in out.splitlines() if line.strip()]


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

"""Container config (GET/PUT), clones and snapshots.

Clones and snapshots copy the overlay's upper layer, so they are real copies
of the container's files, like a full clone or an LVM-thin snapshot.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pvesim import perms, volumes
from pvesim.errors import PveError, param_error
from pvesim.guest import split_property_string
from pvesim.node import (
    config_digest,
    config_value,
    format_net,
    net_keys,
    normalize_config,
    random_hwaddr,
)
from pvesim.proc import CommandError
from pvesim.runtime import copy_tree
from pvesim.state import ContainerRecord
from pvesim.tasks import DURATIONS, Task, TaskFailed

if TYPE_CHECKING:
    from pvesim.node import Node

# parameters of PUT config that steer the call instead of being config keys
_PUT_CONTROL = {"node", "vmid", "delete", "digest", "revert"}
# keys PUT may not change (PVE: "unable to modify read-only option")
_READ_ONLY = {"rootfs", "arch", "unprivileged"}


def get_config(node: Node, vmid: int, snapshot: str | None) -> dict[str, Any]:
    rec = node.get(vmid)
    if snapshot:
        snap = rec.snapshots.get(snapshot)
        if snap is None:
            raise PveError(500, f"snapshot '{snapshot}' does not exist")
        config = dict(snap["config"])
    else:
        config = dict(rec.config)
    config["digest"] = config_digest(config)
    return config


def pending(node: Node, vmid: int) -> list[dict[str, Any]]:
    """``GET .../pending`` as pve-container's vm_pending answers it
    (PVE::GuestHelpers::config_with_pending_array): every plain config key
    with its value, the digest included.  Every option pvesim lets a PUT
    change is one PVE applies at once (hot-plugged on a running CT), so
    nothing is ever pending here."""
    config = get_config(node, vmid, None)
    return [{"key": key, "value": value} for key, value in config.items()
            if not isinstance(value, dict | list)]  # fmt: skip


async def put_config(node: Node, vmid: int, params: dict[str, Any], user: str) -> None:
    async with node.config_lock(vmid):
        rec = node.get(vmid)
        if not params.get("skiplock"):
            node.check_lock(rec)
        digest = params.get("digest")
        if digest and digest != config_digest(rec.config):
            raise PveError(
                500, "detected modified configuration - file changed by other user? Try again."
            )
        changes = {k: v for k, v in params.items() if k not in _PUT_CONTROL | {"skiplock"}}
        deletes = [d for d in str(params.get("delete", "")).replace(";", ",").split(",") if d]
        errors = {}
        for key in [*changes, *deletes]:
            if key in _READ_ONLY and (key in deletes or changes.get(key) != rec.config.get(key)):
                errors[key] = "unable to modify read-only option"
        overlap = set(changes) & set(deletes)
        for key in overlap:
            errors[key] = f"unable to delete and set the same option '{key}'"
        if errors:
            raise param_error(errors)
        perms.check_ct_modify_config_perm(user, rec.config, changes, deletes,
                                          str(rec.config.get("unprivileged", "0")) == "1")  # fmt: skip
        config = dict(rec.config)
        for key in deletes:
            await _delete_option(node, rec, config, key)
        normalize_config(changes)
        for key in sorted(changes):
            value = changes[key]
            if volumes.is_mount_key(key):
                value = await _apply_mountpoint(node, vmid, config, key, str(value))
            if key.startswith("net") and key[3:].isdigit():
                kv = split_property_string(str(value))
                if "hwaddr" not in kv:
                    old = split_property_string(str(config.get(key, "")))
                    kv["hwaddr"] = old.get("hwaddr") or random_hwaddr()
                kv.setdefault("type", "veth")
                value = format_net(kv)
            config[key] = config_value(value)
        rec.config = config
        node.save(rec)


async def _delete_option(
    node: Node, rec: ContainerRecord, config: dict[str, Any], key: str
) -> None:
    """vmconfig_apply_pending's deletes: a volume mount point becomes an
    ``unused[n]`` disk; deleting an ``unused[n]`` frees its volume
    (delete_mountpoint_volume) unless the config or a snapshot still uses
    it (is_volume_in_use with snapshots)."""
    value = config.pop(key, None)
    if value is None:
        return
    if volumes.is_mount_key(key):
        mp = volumes.MountPoint.parse(key, str(value))
        if mp.kind == "volume":
            volumes.add_unused(config, mp.volume)
    elif key.startswith("unused"):
        in_use = [config, *(snap["config"] for snap in rec.snapshots.values())]
        if not any(str(value) in volumes.referenced_volumes(c) for c in in_use):
            await volumes.free(node.store.root, str(value))


async def _apply_mountpoint(
    node: Node, vmid: int, config: dict[str, Any], key: str, value: str
) -> str:
    """apply_pending_mountpoint: ``STORAGE:SIZE_GB`` allocates a new volume
    (create_disks); a replaced volume becomes an ``unused[n]`` disk."""
    mp = volumes.MountPoint.parse(key, value)
    new = mp.new_size_gb
    if new is not None:
        node._check_rootdir_storage(new[0])
        volid = volumes.free_disk_name(node.store.root, new[0], vmid,
                                       volumes.referenced_volumes(config))  # fmt: skip
        size_kb = int(new[1] * 1024) * 1024
        await volumes.allocate(node.store.root, volid, size_kb * 1024)
        mp = volumes.MountPoint(key, volid, mp.options)
        value = mp.format(size=str(size_kb * 1024))
    else:
        value = mp.format()
    if key in config:
        old = volumes.MountPoint.parse(key, str(config[key]))
        if old.kind == "volume" and old.volume != mp.volume:
            volumes.add_unused(config, old.volume)
    return value


async def clone(node: Node, vmid: int, params: dict[str, Any], user: str) -> str:
    """``POST .../clone`` as pve-container's ``clone_vm``: the source holds
    ``lock: disk`` until the copy is done; a full clone of a running CT only
    from a snapshot; a linked clone only from a template or a snapshot (the
    lvmthin rule), and never to another storage."""
    newid = int(params["newid"])
    snapname = params.get("snapname")
    pool = str(params["pool"]) if params.get("pool") else None
    if pool:
        node.pools.check_exists(pool)
    async with node.config_lock(vmid):
        src = node.get(vmid)
        storage = params.get("storage")
        node.check_lock(src)
        if newid in node.containers:
            raise PveError(500, f"CT {newid} already exists on node '{node.name}'")
        template = str(src.config.get("template", "0")) == "1"
        full = bool(params["full"]) if params.get("full") is not None else not template
        if not full and storage:
            raise PveError(500, "parameter 'storage' not allowed for linked clones")
        if snapname and snapname not in src.snapshots:
            raise PveError(500, f"snapshot '{snapname}' does not exist")
        volume = split_property_string(str(src.config["rootfs"]), "volume")["volume"]
        # clone_vm walks the options sorted ("mp0" before "rootfs"): a bind
        # mount point fails first ("TODO: allow bind mounts?")
        src_cfg = src.snapshots[snapname]["config"] if snapname else src.config
        for key in sorted(k for k in src_cfg if volumes.is_mount_key(k)):
            mp = volumes.MountPoint.parse(key, str(src_cfg[key]))
            if mp.kind != "volume":
                raise PveError(500, f"unable to clone mountpoint '{mp.key}' (type {mp.kind})")
        if full and vmid in node.running and not snapname:
            raise PveError(
                500, "Full clone of a running container is only possible from a snapshot"
            )
        if not full and not template and not snapname:
            raise PveError(500, f"Linked clone feature for '{volume}' is not available")
        base_cfg = dict(src.snapshots[snapname]["config"] if snapname else src.config)
        dropped = ("lock", "parent", "snaptime", "snapstate", "pending", "template")
        config = {k: v for k, v in base_cfg.items()
                  if k not in dropped and not k.startswith("unused")}  # fmt: skip

        if params.get("hostname"):
            config["hostname"] = params["hostname"]
        if params.get("description"):
            config["description"] = params["description"]
        for key in net_keys(config):
            kv = split_property_string(str(config[key]))
            kv["hwaddr"] = random_hwaddr()  # PVE gives a clone new MAC addresses
            config[key] = format_net(kv)
        rootfs = split_property_string(str(config["rootfs"]), "volume")
        target = str(storage or rootfs["volume"].split(":")[0])
        node._check_storage(target, "rootdir")
        rootfs["volume"] = f"{target}:vm-{newid}-disk-0"
        config["rootfs"] = ",".join(
            [rootfs.pop("volume"), *(f"{k}={v}" for k, v in rootfs.items())]
        )
        # every volume mount point is copied (full) or thin-cloned (linked)
        # to a new volume of the clone, numbered on after its rootfs
        copies: list[tuple[str, str, str]] = []
        taken = [f"{target}:vm-{newid}-disk-0"]
        for mp in volumes.mount_points(config):
            mp_target = str(storage or mp.storage)
            node._check_storage(mp_target, "rootdir")
            volid = volumes.free_disk_name(node.store.root, mp_target, newid, taken)
            taken.append(volid)
            copies.append((mp.key, mp.volume, volid))
            config[mp.key] = volumes.MountPoint(mp.key, volid, mp.options).format()
        config["lock"] = "create"
        new = ContainerRecord(vmid=newid, config=config)
        node.save(new)
        node.set_lock(src, "disk")

    async def body(task: Task) -> None:
        task.log(f"creating a clone of container {vmid} with ID {newid}")
        kind = "full clone of mountpoint" if full else "linked clone of mount point"
        task.log(f"create {kind} rootfs ({volume})")
        # a full clone copies the volume; a linked one is a thin snapshot of it
        await task.sleep(DURATIONS["vzclone" if full else "vzclone-linked"])
        src_fs, dest_fs = node.fs(vmid), node.fs(newid)
        dest_fs.create(src_fs.base())
        upper = src_fs.root / "snapshots" / str(snapname) / "upper" if snapname else src_fs.upper
        dest_fs.upper.rmdir()
        await copy_tree(upper, dest_fs.upper)
        for key, src_vol, dest_vol in copies:
            task.log(f"create {kind} {key} ({src_vol})")
            # the snapshot's copy of the image, or the (unmounted) volume's own
            saved = _snapshot_volume(node, vmid, str(snapname), src_vol) if snapname else None
            if saved is not None and saved.is_file():
                await volumes.restore_image(node.store.root, dest_vol, saved)
            else:
                await volumes.clone_volume(node.store.root, src_vol, dest_vol)
        root = await dest_fs.mount()
        try:
            clear_machine_id(root)
        finally:
            await dest_fs.unmount()
        node.set_lock(new, None)
        node.set_lock(src, None)
        if pool:
            node.pools.add_vm(newid, pool)

    async def failed() -> None:
        node.set_lock(src, None)
        for _key, _src_vol, dest_vol in copies:
            await volumes.free(node.store.root, dest_vol)
        await node._forget(newid)

    return node.tasks.start("vzclone", str(vmid), user, body, on_error=failed,
                            error_prefix="clone failed: ")  # fmt: skip


def clear_machine_id(root: Path) -> None:
    """pve-container's ``clear_machine_id`` for a clone: a systemd guest's
    ``/etc/machine-id`` is emptied (unless ``uninitialized``), a
    ``/var/lib/dbus/machine-id`` that is not a symlink is removed.  PVE
    leaves a lone newline; systemd-nspawn refuses to boot that, and an empty
    file means the same to systemd: a new machine ID at first boot."""
    systemd = any(os.access(root / p, os.X_OK)
                  for p in ("lib/systemd/systemd", "usr/lib/systemd/systemd"))  # fmt: skip
    dbus = root / "var/lib/dbus/machine-id"
    if systemd and dbus.exists() and not dbus.is_symlink():
        dbus.unlink()
    machine_id = root / "etc/machine-id"
    if systemd and machine_id.exists():
        first = machine_id.read_text(errors="replace").partition("\n")[0]
        if first != "uninitialized":
            machine_id.write_text("")


_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGT](?:iB)?)?")
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_EXTENT = 4 << 20  # an LVM extent


def parse_size(text: str) -> int | None:
    """PVE's ``PVE::JSONSchema::parse_size``: bytes without a unit; K, M, G, T
    (or KiB...) are powers of 1024; fractions allowed, truncated."""
    m = _SIZE.fullmatch(text)
    if m is None:
        return None
    number = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    return int(number * _UNITS[m.group(2)[0]] if m.group(2) else number)


def format_size(size: int) -> str:
    """PVE's ``PVE::JSONSchema::format_size``: the largest unit that divides evenly."""
    text = str(size)
    for unit in "KMGT":
        if size % 1024:
            break
        size //= 1024
        text = f"{size}{unit}"
    return text


async def resize(node: Node, vmid: int, params: dict[str, Any], user: str) -> str:
    """``PUT .../resize`` as pve-container's ``resize_vm``: grow only, the
    checks once before the task and again in it under the config lock."""
    sizestr = str(params["size"])
    grow = sizestr.startswith("+")
    requested = parse_size(sizestr.removeprefix("+"))
    if requested is None:
        raise PveError(500, "invalid size string")
    disk = str(params["disk"])

    def load_and_check() -> tuple[ContainerRecord, dict[str, str], int, int]:
        rec = node.get(vmid)
        node.check_lock(rec)
        digest = params.get("digest")
        if digest and digest != config_digest(rec.config):
            raise PveError(
                500, "detected modified configuration - file changed by other user? Try again."
            )
        if disk not in rec.config:  # pvesim has no mount points (docs/pvesim.md)
            raise param_error({"disk": f"CT {vmid} has no mount point '{disk}'"})
        mp = split_property_string(str(rec.config[disk]), "volume")
        size = parse_size(mp.get("size", ""))
        if size is None:
            raise PveError(500, f"Could not determine current size of volume '{mp['volume']}'")
        new = int(size + requested if grow else requested)
        if new < size:
            raise PveError(500, "unable to shrink disk size")
        if new == size:
            raise PveError(500, "disk is already at specified size")
        return rec, mp, size, new

    load_and_check()  # early checks before forking and locking, as PVE does

    async def body(task: Task) -> None:
        async with node.config_lock(vmid):
            rec, mp, size, new = load_and_check()
            await task.sleep(DURATIONS["resize"])
            lv = f"pve/{mp['volume'].split(':', 1)[-1]}"
            task.log(f"  Size of logical volume {lv} changed from {size / (1 << 30):.2f} GiB "
                     f"({size // _EXTENT} extents) to {new / (1 << 30):.2f} GiB "
                     f"({new // _EXTENT} extents).")  # fmt: skip
            task.log(f"  Logical volume {lv} successfully resized.")
            # the file system grows with its volume (online if mounted)
            kind = volumes.MountPoint.parse(disk, str(rec.config[disk])).kind
            if disk != "rootfs" and kind == "volume":
                try:
                    lines = await volumes.resize(node.store.root, mp["volume"], new)
                except CommandError as exc:
                    raise TaskFailed(f"resizing the file system failed: {exc}") from exc
                for line in lines:
                    task.log(line)
            mp["size"] = format_size(new)
            config = dict(rec.config)
            config[disk] = ",".join([mp.pop("volume"), *(f"{k}={v}" for k, v in mp.items())])
            rec.config = config
            node.save(rec)

    return node.tasks.start("resize", str(vmid), user, body)


def list_snapshots(node: Node, vmid: int) -> list[dict[str, Any]]:
    rec = node.get(vmid)
    out = []
    for name, snap in sorted(rec.snapshots.items(), key=lambda kv: kv[1]["snaptime"]):
        entry = {"name": name, "description": snap.get("description", ""),
                 "snaptime": snap["snaptime"]}  # fmt: skip
        if snap.get("parent"):
            entry["parent"] = snap["parent"]
        out.append(entry)
    current: dict[str, Any] = {"name": "current", "description": "You are here!",
                               "running": 1 if vmid in node.running else 0}  # fmt: skip
    if rec.config.get("parent"):
        current["parent"] = rec.config["parent"]
    out.append(current)
    return out


async def snapshot(node: Node, vmid: int, snapname: str, description: str, user: str) -> str:
    async with node.config_lock(vmid):
        rec = node.get(vmid)
        node.check_lock(rec)
        if snapname in rec.snapshots or snapname == "current":
            raise PveError(500, f"snapshot name '{snapname}' already used")
        node.set_lock(rec, "snapshot")

    async def body(task: Task) -> None:
        # pve-guest-common __snapshot_prepare, in the vzsnapshot task
        if str(rec.config.get("template", "")) == "1":
            raise TaskFailed("you can't take a snapshot if it's a template")
        task.log(f"create snapshot '{snapname}'")
        # __snapshot_prepare's has_feature('snapshot'): a bind mount has none
        if any(mp.kind != "volume" for mp in volumes.mount_points(rec.config)):
            raise TaskFailed("snapshot feature is not available")
        await task.sleep(DURATIONS["vzsnapshot"])
        fs = node.fs(vmid)
        await fs.copy_upper_to(fs.root / "snapshots" / snapname / "upper")
        # every volume mount point is snapshotted with the rootfs: its image
        # copied (a running CT's file system frozen meanwhile)
        for mp in volumes.mount_points(rec.config):
            await volumes.save_image(node.store.root, mp.volume,
                                     _snapshot_volume(node, vmid, snapname, mp.volume))  # fmt: skip
        config = {k: v for k, v in rec.config.items() if k != "lock"}
        rec.snapshots[snapname] = {"config": config, "snaptime": int(time.time()),
                                   "description": description,
                                   "parent": rec.config.get("parent")}  # fmt: skip
        rec.config["parent"] = snapname
        node.set_lock(rec, None)

    async def failed() -> None:
        node.set_lock(rec, None)

    return node.tasks.start("vzsnapshot", str(vmid), user, body, on_error=failed)


def _snapshot_volume(node: Node, vmid: int, snapname: str, volume: str) -> Path:
    """Where a snapshot keeps its copy of a mount point volume's image."""
    storage, _, volname = volume.partition(":")
    return node.fs(vmid).root / "snapshots" / snapname / "volumes" / storage / volname


def _snap(node: Node, vmid: int, snapname: str) -> tuple[ContainerRecord, dict[str, Any]]:
    rec = node.get(vmid)
    snap = rec.snapshots.get(snapname)
    if snap is None:
        raise PveError(500, f"snapshot '{snapname}' does not exist")
    return rec, snap


async def delete_snapshot(node: Node, vmid: int, snapname: str, force: bool, user: str) -> str:
    async with node.config_lock(vmid):
        rec, snap = _snap(node, vmid, snapname)
        if not force:
            node.check_lock(rec)
        node.set_lock(rec, "snapshot-delete")

    async def body(task: Task) -> None:
        await task.sleep(DURATIONS["vzdelsnapshot"])
        shutil.rmtree(node.fs(vmid).root / "snapshots" / snapname, ignore_errors=True)
        parent = snap.get("parent")
        for other in rec.snapshots.values():
            if other.get("parent") == snapname:
                other["parent"] = parent
        if rec.config.get("parent") == snapname:
            if parent:
                rec.config["parent"] = parent
            else:
                rec.config.pop("parent", None)
        del rec.snapshots[snapname]
        node.set_lock(rec, None)

    async def failed() -> None:
        node.set_lock(rec, None)

    return node.tasks.start("vzdelsnapshot", str(vmid), user, body, on_error=failed)


async def rollback(node: Node, vmid: int, snapname: str, start: bool, user: str) -> str:
    async with node.config_lock(vmid):
        rec, snap = _snap(node, vmid, snapname)
        node.check_lock(rec)
        node.set_lock(rec, "rollback")

    async def body(task: Task) -> None:
        await task.sleep(DURATIONS["vzrollback"])
        if vmid in node.running:
            task.log("stopping the running container before the rollback")
            await node._halt(vmid)
        fs = node.fs(vmid)
        await fs.replace_upper_from(fs.root / "snapshots" / snapname / "upper")
        for mp in volumes.mount_points(snap["config"]):
            saved = _snapshot_volume(node, vmid, snapname, mp.volume)
            if saved.is_file():
                await volumes.unmount(node.store.root, mp.volume)
                await volumes.restore_image(node.store.root, mp.volume, saved)
        # pve-guest-common's __snapshot_copy_config copies all but the
        # description (and the lock, digest, snapshot keys): the CT keeps its own
        kept = {k: v for k, v in snap["config"].items() if k != "description"}
        if "description" in rec.config:
            kept["description"] = rec.config["description"]
        rec.config = {**kept, "parent": snapname, "lock": "rollback"}
        node.set_lock(rec, None)
        if start:
            await node._start_body(task, vmid)

    async def failed() -> None:
        node.set_lock(rec, None)

    return node.tasks.start("vzrollback", str(vmid), user, body, on_error=failed)


def snapshot_config(node: Node, vmid: int, snapname: str) -> dict[str, Any]:
    _rec, snap = _snap(node, vmid, snapname)
    return {
        **snap["config"],
        "snaptime": snap["snaptime"],
        "description": snap.get("description", ""),
    }


async def update_snapshot(node: Node, vmid: int, snapname: str, description: str | None) -> None:
    rec, snap = _snap(node, vmid, snapname)
    if description is not None:
        snap["description"] = description
    node.save(rec)

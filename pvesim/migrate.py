"""Container migration between the nodes of a pvesim cluster.

``POST /nodes/{node}/lxc/{vmid}/migrate`` as pve-container's
PVE::API2::LXC migrate_vm checks it, and its ``vzmigrate`` task as
PVE::LXC::Migrate (on PVE::AbstractMigrate's phases) runs it: prepare
(locks, running state, volumes, the target reachable, a restart-mode
shutdown), phase1 (``lock: migrate``, the local volumes copied to the target,
the config moved to the target node), phase3 (the source's copies freed),
final cleanup (unlock on the target, a restart-mode start there).
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from pvesim import volumes
from pvesim.errors import PveError, param_error
from pvesim.node import Node
from pvesim.storage_specs import STORAGES
from pvesim.tasks import Task, TaskFailed

DEFAULT_SHUTDOWN_TIMEOUT = 180  # migrate_vm's ``timeout`` default


def parse_storage_map(value: str) -> dict[str, Any]:
    """PVE::JSONSchema::parse_idmap for ``target-storage``: ``1`` maps each
    storage to itself, a lone ``ID`` maps every storage there, ``SRC:DST``
    entries map one each.

    Raises:
        PveError: 400 as migrate_vm's raise_param_exc words it.
    """
    out: dict[str, Any] = {"entries": {}}
    for entry in [e for e in value.replace(";", ",").split(",") if e]:
        if entry == "1":
            out["identity"] = 1
            continue
        src, sep, dst = entry.partition(":")
        ids = [src, dst] if sep else [src]
        for sid in ids:
            if not sid or not all(c.isalnum() or c in "-_." for c in sid) or not sid[0].isalpha():
                raise param_error({"target-storage": "failed to parse storage map: "
                                                     f"invalid format - {entry}"})  # fmt: skip
        if sep:
            if src in out["entries"]:
                raise param_error({"target-storage": "failed to parse storage map: "
                                                     f"duplicate mapping for source '{src}'"})  # fmt: skip
            out["entries"][src] = dst
        elif "default" in out:
            raise param_error({"target-storage": "failed to parse storage map: "
                                                 "default target specified more than once"})  # fmt: skip
        else:
            out["default"] = src
    return out


def map_id(storage_map: dict[str, Any] | None, source: str) -> str:
    """PVE::JSONSchema::map_id."""
    if not storage_map or storage_map.get("identity"):
        return source
    return str(storage_map["entries"].get(source, storage_map.get("default", source)))


def _check_target_storage(storage: str) -> None:
    """migrate_vm's check_storage_access_migrate."""
    spec = STORAGES.get(storage)
    if spec is None:
        raise PveError(500, f"storage '{storage}' does not exist")
    if "rootdir" not in spec.content:
        raise PveError(500, f"storage '{storage}' does not support CT rootdirs")


def _log(task: Task, message: str, level: str = "info") -> None:
    """PVE::AbstractMigrate log: each line prefixed with the local time
    (and ``ERROR:`` for errors)."""
    prefix = time.strftime("%Y-%m-%d %H:%M:%S")
    if level == "err":
        prefix += " ERROR:"
    for line in message.rstrip("\n").split("\n"):
        task.log(f"{prefix} {line}")


def _duration(started: float) -> str:
    secs = int(time.time() - started)
    return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"


async def migrate(source: Node, target: Node, target_ip: str, target_online: bool,
                  params: dict[str, Any], user: str) -> str:  # fmt: skip
    """migrate_vm: the checks before the task, then the ``vzmigrate`` task.

    Raises:
        PveError: as migrate_vm refuses a call before forking its task.
    """
    vmid = int(params["vmid"])
    if target is source:
        raise param_error({"target": "target is local node."})
    rec = source.get(vmid)  # "test if VM exists"
    online, restart = bool(params.get("online")), bool(params.get("restart"))
    if vmid in source.running and not online and not restart:
        raise PveError(500, "can't migrate running container without --online or --restart")
    storage_map = None
    if params.get("target-storage"):
        storage_map = parse_storage_map(str(params["target-storage"]))
        for sid in storage_map["entries"].values():
            _check_target_storage(sid)
        if storage_map.get("default"):
            _check_target_storage(storage_map["default"])
    timeout = int(params.get("timeout", DEFAULT_SHUTDOWN_TIMEOUT))

    async def body(task: Task) -> None:
        started = time.time()
        try:
            # PVE::GuestHelpers::guest_migration_lock, then lock_config
            async with source.config_lock(vmid):
                problems = await _migrate_locked(task, source, target, target_ip,
                                                 target_online, vmid, online, restart, timeout,
                                                 storage_map)  # fmt: skip
        except (TaskFailed, PveError) as exc:
            message = exc.message if isinstance(exc, PveError) else str(exc)
            _log(task, f"migration aborted (duration {_duration(started)}): {message}", "err")
            raise TaskFailed("migration aborted") from None
        if problems:
            _log(task, f"migration finished with problems (duration {_duration(started)})", "err")
            raise TaskFailed("migration problems")
        _log(task, f"migration finished successfully (duration {_duration(started)})")

    del rec
    return source.tasks.start("vzmigrate", str(vmid), user, body)


async def _migrate_locked(task: Task, source: Node, target: Node, target_ip: str,
                          target_online: bool, vmid: int, online: bool, restart: bool,
                          timeout: int, storage_map: dict[str, Any] | None) -> bool:  # fmt: skip
    """The migration under the config lock; True if it ended with problems."""
    # --- prepare (PVE::LXC::Migrate prepare)
    rec = source.get(vmid)
    source.check_lock(rec)
    running = vmid in source.running
    if running and online:
        raise TaskFailed("lxc live migration is currently not implemented")
    if running and not restart:
        raise TaskFailed("running container can only be migrated in restart mode")
    moves: list[tuple[str, str]] = []  # (volid on the source, volid on the target)
    # foreach_volume_full with include_unused: rootfs, mp[n], unused[n]
    mps = [volumes.MountPoint.parse(k, str(rec.config[k])) for k in volumes.mount_keys(rec.config)]
    mps += [volumes.MountPoint(k, str(v), {}) for k, v in sorted(rec.config.items())
            if k.startswith("unused") and k[6:].isdigit()]  # fmt: skip
    for mp in mps:
        if mp.kind != "volume":
            raise TaskFailed(f"cannot migrate local {mp.kind} mount point '{mp.key}'")
        storage = mp.storage or ""
        spec = STORAGES.get(storage)
        if spec is None or "rootdir" not in spec.content:
            raise TaskFailed(f"content type 'rootdir' is not available on storage '{storage}'")
        target_sid = map_id(storage_map, storage)
        target_spec = STORAGES.get(target_sid)
        if target_spec is None or "rootdir" not in target_spec.content:
            raise TaskFailed(f"{mp.volume}: content type 'rootdir' is not available on storage "
                             f"'{target_sid}'")  # fmt: skip
        moves.append((mp.volume, f"{target_sid}:{mp.volume.split(':', 1)[1]}"))
    if not target_online:  # the ssh test of prepare
        raise TaskFailed("Can't connect to destination address using public key")
    if vmid in target.containers:
        raise TaskFailed(f"CT {vmid} already exists on node '{target.name}'")
    if restart and running:
        _log(task, f"shutdown CT {vmid}")
        # PVE::LXC::vm_stop with a shutdown timeout: lxc-stop kills after it
        await source._clean_halt(task, vmid, timeout, True)
    was_running = running

    # --- phase1
    _log(task, f"starting migration of CT {vmid} to node '{target.name}' ({target_ip})")
    source.set_lock(rec, "migrate")
    try:
        _check_volumes(task, rec, moves)
        for volid, new_volid in moves:
            await _move_volume(source, target, vmid, volid, new_volid)
            _log(task, f"volume '{volid}' is '{new_volid}' on the target")
        # the snapshots, the container's own files, then the config
        # (PVE::LXC::Config move_config_to_node: a rename within /etc/pve)
        src_dir, dst_dir = source.store.container_dir(vmid), target.store.container_dir(vmid)
        dst_dir.parent.mkdir(parents=True, exist_ok=True)
        if src_dir.exists():
            shutil.move(src_dir, dst_dir)
        for key, value in list(rec.config.items()):
            for volid, new_volid in moves:
                if isinstance(value, str) and (value.startswith(f"{volid},") or value == volid):
                    rec.config[key] = new_volid + str(value)[len(volid) :]
        target.save(rec)
        source.containers.pop(vmid, None)
        source.store.delete_container(vmid)
    except Exception as exc:
        # AbstractMigrate: the error, phase1_cleanup, final_cleanup (unlock;
        # restart mode starts the CT again where it was)
        message = exc.message if isinstance(exc, PveError) else str(exc)
        _log(task, message, "err")
        _log(task, "aborting phase 1 - cleanup resources")
        _log(task, "start final cleanup")
        if vmid in source.containers:
            source.set_lock(rec, None)
            if restart and was_running:
                _log(task, "start container on source node")
                await source._start_body(task, vmid)
        raise TaskFailed(message) from None

    # --- phase3 frees the source's copies: here they were moved
    # --- final_cleanup
    _log(task, "start final cleanup")
    target.set_lock(rec, None)  # pct unlock on the target
    if restart and was_running:
        _log(task, "start container on target node")
        upid = await target.start(vmid, "root@pam")
        record = await target.tasks.wait(upid)
        if record.exitstatus != "OK":
            _log(task, f"command 'pct start {vmid}' failed: {record.exitstatus}", "err")
            return True
    return False


def _check_volumes(task: Task, rec: Any, moves: list[tuple[str, str]]) -> None:
    """PVE::LXC::Migrate phase1's volume scan: every local volume found, in
    the config or only in snapshots; a snapshot on a storage that cannot
    carry it (all but zfspool and btrfs; here lvmthin) makes the volume
    non-migratable and the migration fail."""
    found = {volid: "in current VM config" for volid, _ in moves}
    errors: dict[str, str] = {}
    for entry in rec.snapshots.values():
        snap = entry.get("config", {})
        for key in volumes.mount_keys(snap):
            mp = volumes.MountPoint.parse(key, str(snap[key]))
            if mp.kind != "volume":
                continue
            found.setdefault(mp.volume, "referenced by snapshot(s)")
            spec = STORAGES.get(mp.storage or "")
            if spec is None or spec.type not in ("zfspool", "btrfs"):
                errors.setdefault(mp.volume, "non-migratable snapshot exists")
    for volid in sorted(found):
        _log(task, f"found local volume '{volid}' ({found[volid]})")
    for volid in sorted(errors):
        _log(task, f"can't migrate local volume '{volid}': {errors[volid]}", "warn")
    if errors:
        raise TaskFailed("can't migrate CT - check log")


async def _move_volume(source: Node, target: Node, vmid: int, volid: str, new_volid: str) -> None:
    """PVE::Storage::storage_migrate to the target's storage, then the
    source's copy freed (phase3): the volume's files move."""
    del vmid
    src = volumes.volume_dir(source.store.root, volid)
    dst = volumes.volume_dir(target.store.root, new_volid)
    if not src.exists():
        return
    if dst.exists():
        raise PveError(500, f"volume '{new_volid}' already exists on node '{target.name}'")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(src, dst)

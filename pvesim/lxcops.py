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

from provisioner.pve.schema import load_api_schema
from pvesim import perms, volumes
from pvesim.ctconfig import stored_description
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
from pvesim.storage_specs import STORAGES
from pvesim.tasks import DURATIONS, Task, TaskFailed

if TYPE_CHECKING:
    from pvesim.node import Node

_CONFIG_PATH = "/nodes/{node}/lxc/{vmid}/config"
# update_vm's parameters that steer the call instead of being config keys
_PUT_CONTROL = {"node", "vmid", "digest", "delete", "revert"}
# PVE::LXC::Config's $LXC_FASTPLUG_OPTIONS: applied to a running CT at once
_FASTPLUG = {"description", "onboot", "startup", "protection", "hostname", "hookscript",
             "cores", "tags", "lock"}  # fmt: skip
_MODIFIED = "detected modified configuration - file changed by other user? Try again."


def option_exists(key: str) -> bool:
    """PVE::LXC::Config->option_exists: a key of $confdesc (update_vm's
    config properties, plus ``parent`` and ``snaptime``)."""
    if key in _PUT_CONTROL:
        return False
    schema = load_api_schema().param_schema("PUT", _CONFIG_PATH, key)
    return schema is not None or key in ("parent", "snaptime")


def _split_list(value: Any) -> list[str]:
    """PVE::Tools::split_list: ``,`` ``;`` and spaces separate."""
    return [item for item in re.split(r"[,;\s]+", str(value or "")) if item]


def _pending_deletes(rec: ContainerRecord) -> list[str]:
    """AbstractConfig parse_pending_delete (pvesim never sets ``force``)."""
    return [d.removeprefix("!") for d in _split_list(rec.pending.get("delete"))]


def _set_pending_deletes(rec: ContainerRecord, keys: list[str]) -> None:
    """AbstractConfig print_pending_delete: sorted, joined with ``,``."""
    if keys:
        rec.pending["delete"] = ",".join(sorted(set(keys)))
    else:
        rec.pending.pop("delete", None)


def record_digest(rec: ContainerRecord) -> str:
    """The digest of the config file: its ``[pve:pending]`` section too."""
    if not rec.pending:
        return config_digest(rec.config)
    pending = {f"[pve:pending] {k}": v for k, v in rec.pending.items()}
    return config_digest({**rec.config, **pending})


def get_config(
    node: Node, vmid: int, snapshot: str | None, current: bool = False
) -> dict[str, Any]:
    """``GET .../config`` as pve-container's vm_config: a snapshot's config,
    or load_current_config: the pending values taken in and the pending
    deletes gone unless ``current`` is set."""
    if snapshot and current:
        msg = "cannot use 'snapshot' parameter with 'current'"
        raise param_error({"snapshot": msg, "current": msg})
    rec = node.get(vmid)
    if snapshot:
        snap = rec.snapshots.get(snapshot)
        if snap is None:
            raise PveError(500, f"snapshot '{snapshot}' does not exist")
        config = dict(snap["config"])
        config["digest"] = config_digest(config)
        return config
    config = dict(rec.config)
    if not current:
        config.update({k: v for k, v in rec.pending.items() if k != "delete"})
        for key in _pending_deletes(rec):
            config.pop(key, None)
    config["digest"] = record_digest(rec)
    return config


def pending(node: Node, vmid: int) -> list[dict[str, Any]]:
    """``GET .../pending`` as pve-container's vm_pending answers it
    (PVE::GuestHelpers::config_with_pending_array): every current key with
    its ``value`` (the digest too), ``pending`` where a new value waits for
    the next start, ``delete: 1`` where it is to be deleted; then the
    pending keys not set yet, then deletes of unset keys (``delete: 2``:
    the function tests the parsed hash, always true)."""
    rec = node.get(vmid)
    config = {**rec.config, "digest": record_digest(rec)}
    waiting = {k: v for k, v in rec.pending.items() if k != "delete"}
    deletes = _pending_deletes(rec)
    out: list[dict[str, Any]] = []
    for key, value in config.items():
        if isinstance(value, dict | list):
            continue
        item: dict[str, Any] = {"key": key, "value": value}
        if key in waiting:
            item["pending"] = waiting.pop(key)
        if key in deletes:
            deletes.remove(key)
            item["delete"] = 1
        out.append(item)
    out.extend({"key": key, "pending": value} for key, value in waiting.items())
    out.extend({"key": key, "delete": 2} for key in deletes)
    return out


def _check_protection(rec: ContainerRecord, msg: str) -> None:
    """AbstractConfig check_protection."""
    if str(rec.config.get("protection", "0")) == "1":
        raise PveError(500, f"{msg} - protection mode enabled")


async def put_config(node: Node, vmid: int, params: dict[str, Any], user: str) -> None:
    """``PUT .../config`` as pve-container's update_vm and
    PVE::LXC::Config::update_pct_config: every change goes to the pending
    section first; a stopped CT takes it at once (vmconfig_apply_pending),
    a running one only what vmconfig_hotplug_pending can plug in, the rest
    waits for the next start."""
    digest = params.get("digest")
    rest = {k: v for k, v in params.items() if k not in ("node", "vmid", "digest")}
    if not rest:
        raise PveError(500, "no options specified")
    deletes = _split_list(rest.pop("delete", None))
    reverts = _split_list(rest.pop("revert", None))
    changes = {k: config_value(v) for k, v in rest.items()}
    async with node.config_lock(vmid):
        rec = node.get(vmid)
        node.check_lock(rec)
        if digest and digest != record_digest(rec):
            raise PveError(500, _MODIFIED)
        unprivileged = str(rec.config.get("unprivileged", "0")) == "1"
        perms.check_ct_modify_config_perm(user, rec.config, {}, [*deletes, *reverts],
                                          unprivileged)  # fmt: skip
        for opt in reverts:
            if not option_exists(opt):
                raise param_error({"revert": f"unknown option '{opt}'"})
            if opt in changes:
                raise param_error(
                    {"revert": f"you can't use '-{opt}' and '-revert {opt}' at the same time"}
                )
        for opt in deletes:
            if not option_exists(opt):
                raise param_error({"delete": f"unknown option '{opt}'"})
            if opt in changes:  # sic: PVE's message lacks a quote
                raise param_error(
                    {"delete": f"you can't use '-{opt}' and -delete {opt}' at the same time"}
                )
            if opt in reverts:
                both = f"you can't use '-delete {opt}' and '-revert {opt}' at the same time"
                raise param_error({"delete": both})
        perms.check_ct_modify_config_perm(user, rec.config, changes, [], unprivileged)
        old_pending = dict(rec.pending)
        try:
            errors = await _update_pct_config(node, rec, changes, deletes, reverts)
        except BaseException:
            rec.pending = old_pending
            raise
        if errors:  # "don't write to config if we get any errors"
            rec.pending = old_pending
            raise param_error(errors)
        node.save(rec)


async def _update_pct_config(
    node: Node, rec: ContainerRecord, changes: dict[str, Any], deletes: list[str],
    reverts: list[str],
) -> dict[str, str]:  # fmt: skip
    """PVE::LXC::Config::update_pct_config on ``rec`` (its config replaced
    only if every step succeeds); returns the hot-plug/apply errors."""
    vmid = rec.vmid
    for opt in reverts:
        rec.pending.pop(opt, None)
        _set_pending_deletes(rec, [d for d in _pending_deletes(rec) if d != opt])
    modified: set[str] = set()
    for opt in deletes:
        if opt not in rec.config and opt not in rec.pending:
            continue  # PVE warns "cannot delete '...' - not set in current configuration!"
        modified.add(opt)
        if opt in ("memory", "rootfs", "ostype"):
            raise PveError(500, f"unable to delete required option '{opt}'")
        if re.fullmatch(r"(unused|mp)\d+", opt):
            _check_protection(rec, f"can't remove CT {vmid} drive '{opt}'")
        elif opt == "unprivileged":
            raise PveError(500, f"unable to delete read-only option: '{opt}'")
        _set_pending_deletes(rec, [*_pending_deletes(rec), opt])
    normalize_config(changes)
    if "description" in changes:  # as the config file will hold it ("": none)
        changes["description"] = stored_description(str(changes["description"])) or ""
    for opt in sorted(changes):
        modified.add(opt)
        value = changes[opt]
        if volumes.is_mount_key(opt):
            _check_protection(rec, f"can't update CT {vmid} drive '{opt}'")
            mp = volumes.MountPoint.parse(opt, str(value))
            if mp.storage is not None:
                spec = STORAGES.get(mp.storage)
                if spec is None:
                    raise PveError(500, f"storage '{mp.storage}' does not exist")
                if "rootdir" not in spec.content:
                    raise PveError(500, f"storage '{mp.storage}' does not allow content "
                                        "type 'rootdir' (Container)")  # fmt: skip
        elif opt == "unprivileged":
            raise PveError(500, f"unable to modify read-only option: '{opt}'")
        rec.pending[opt] = value
        _set_pending_deletes(rec, [d for d in _pending_deletes(rec) if d != opt])
    _cleanup_pending(rec, rec.config)
    errors: dict[str, str] = {}
    config = dict(rec.config)
    if vmid in node.running:
        await _hotplug_pending(node, rec, config, modified, errors)
    else:
        await _apply_pending(node, rec, config, modified, errors)
    if not errors:
        rec.config = config
    return errors


def _cleanup_pending(rec: ContainerRecord, config: dict[str, Any]) -> None:
    """AbstractConfig cleanup_pending: a pending value equal to the current
    one, and a pending delete of an unset key, are dropped."""
    for opt in [k for k in rec.pending if k != "delete"]:
        if opt in config and str(rec.pending[opt]) == str(config[opt]):
            del rec.pending[opt]
    _set_pending_deletes(rec, [d for d in _pending_deletes(rec) if d in config])


def _set_option(config: dict[str, Any], key: str, value: Any) -> None:
    """A value into the config; an empty description is none (the config
    file writes it as no comment lines)."""
    if key == "description" and value == "":
        config.pop(key, None)
    else:
        config[key] = value


def _net_value(config: dict[str, Any], key: str, value: Any) -> str:
    """parse_lxc_network + print_lxc_network: a generated ``hwaddr`` (the
    current one kept) and ``type=veth``."""
    kv = split_property_string(str(value))
    if "hwaddr" not in kv:
        old = split_property_string(str(config.get(key, "")))
        kv["hwaddr"] = old.get("hwaddr") or random_hwaddr()
    kv.setdefault("type", "veth")
    return format_net(kv)


def _error_text(exc: Exception) -> str:
    return exc.message if isinstance(exc, PveError) else str(exc)


async def _hotplug_pending(
    node: Node, rec: ContainerRecord, config: dict[str, Any], selection: set[str],
    errors: dict[str, str],
) -> None:  # fmt: skip
    """PVE::LXC::Config::vmconfig_hotplug_pending on a running CT: the fast-
    plug options; deleting them, ``unused[n]`` (its volume freed),
    ``swap``, ``cpulimit``, ``cpuunits`` and ``net[0-9]``; setting
    ``cpulimit``, ``cpuunits``, ``memory``, ``swap``, ``net[n]`` and a new
    ``mp[n]`` or ``dev[n]``.  Everything else stays pending ("skip").
    pvesim changes the config only: the running nspawn keeps its limits,
    links and mounts until the next start."""
    for opt in sorted(k for k in rec.pending if k != "delete"):
        if opt in selection and opt in _FASTPLUG:
            _set_option(config, opt, rec.pending.pop(opt))
    for opt in sorted(_pending_deletes(rec)):
        if opt not in selection:
            continue
        if opt.startswith("unused"):
            try:
                await _delete_option(node, rec, config, opt)
            except Exception as exc:
                errors[opt] = f"unable to hotplug {opt}: {_error_text(exc)}"
                continue
        elif opt in _FASTPLUG | {"swap", "cpulimit", "cpuunits"} or re.fullmatch(r"net\d", opt):
            config.pop(opt, None)
        else:
            continue  # skip non-hotpluggable opts
        _set_pending_deletes(rec, [d for d in _pending_deletes(rec) if d != opt])
    for opt in sorted(k for k in rec.pending if k != "delete"):
        if opt not in selection:
            continue
        value = rec.pending[opt]
        try:
            if re.fullmatch(r"net\d+", opt):
                value = _net_value(config, opt, value)
            elif re.fullmatch(r"(mp|dev)\d+", opt):
                if opt in config:
                    continue  # don't try to hotplug over an existing mp/dev
                if opt.startswith("mp"):
                    value = await _apply_mountpoint(node, rec.vmid, config, opt, str(value))
            elif opt not in ("cpulimit", "cpuunits", "memory", "swap"):
                continue  # skip non-hotpluggable
        except Exception as exc:
            errors[opt] = f"unable to hotplug {opt}: {_error_text(exc)}"
            continue
        _set_option(config, opt, value)
        del rec.pending[opt]


async def _apply_pending(
    node: Node, rec: ContainerRecord, config: dict[str, Any], selection: set[str] | None,
    errors: dict[str, str],
) -> None:  # fmt: skip
    """PVE::LXC::Config::vmconfig_apply_pending (a stopped CT): every
    pending delete (a volume mount point becomes ``unused[n]``, an
    ``unused[n]`` volume is freed), then every pending value (a new
    ``mp[n]`` volume allocated, ``net[n]`` completed)."""

    def add_error(opt: str, exc: Exception) -> None:
        errors[opt] = f"unable to apply pending change {opt} : {_error_text(exc)}"

    for opt in sorted(_pending_deletes(rec)):
        if selection is not None and opt not in selection:
            continue
        try:
            await _delete_option(node, rec, config, opt)
        except Exception as exc:
            add_error(opt, exc)
            continue
        _set_pending_deletes(rec, [d for d in _pending_deletes(rec) if d != opt])
    _cleanup_pending(rec, config)
    for opt in sorted(k for k in rec.pending if k != "delete"):
        if selection is not None and opt not in selection:
            continue
        value = rec.pending[opt]
        try:
            if re.fullmatch(r"mp\d+", opt):
                value = await _apply_mountpoint(node, rec.vmid, config, opt, str(value))
            elif re.fullmatch(r"net\d+", opt):
                value = _net_value(config, opt, value)
        except Exception as exc:
            add_error(opt, exc)
            continue
        _set_option(config, opt, value)
        del rec.pending[opt]


async def apply_pending(node: Node, vmid: int) -> list[str]:
    """Pending changes at a start (PVE::LXC::vm_start: "apply pending
    changes while starting") and after a stop (lxc-pve-poststop-hook): all
    of them, written; returns the warnings (PVE warns and goes on)."""
    rec = node.containers.get(vmid)
    if rec is None or not rec.pending:
        return []
    errors: dict[str, str] = {}
    config = dict(rec.config)
    await _apply_pending(node, rec, config, None, errors)
    rec.config = config
    node.save(rec)
    return list(errors.values())


async def _delete_option(
    node: Node, rec: ContainerRecord, config: dict[str, Any], key: str
) -> None:
    """vmconfig_apply_pending's deletes: a volume mount point becomes an
    ``unused[n]`` disk; deleting an ``unused[n]`` frees its volume
    (delete_mountpoint_volume) unless the config, a pending change or a
    snapshot still uses it (is_volume_in_use with snapshots and pending)."""
    value = config.get(key)
    if value is None:
        return
    if volumes.is_mount_key(key):
        mp = volumes.MountPoint.parse(key, str(value))
        if mp.kind == "volume":
            volumes.add_unused(config, mp.volume)
    elif key.startswith("unused"):
        others = {k: v for k, v in config.items() if k != key}
        in_use = [others, rec.pending, *(snap["config"] for snap in rec.snapshots.values())]
        if not any(str(value) in volumes.referenced_volumes(c) for c in in_use):
            await volumes.free(node.store.root, str(value))
    config.pop(key, None)


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
        if params.get("description"):  # as the config file keeps it (none: no lines)
            config["description"] = stored_description(str(params["description"]))
            if config["description"] is None:
                del config["description"]
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
        if digest and digest != record_digest(rec):
            raise PveError(500, _MODIFIED)
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
                                   # a comment-line description, as config descriptions
                                   "description": stored_description(description) or "",
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
        rec.pending = {}  # __snapshot_apply_config keeps no pending section
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
    if description is not None:  # stored as comment lines (see put_config)
        snap["description"] = stored_description(description) or ""
    node.save(rec)

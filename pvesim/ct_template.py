"""Container templates: ``POST .../template`` (convert a container) and
``GET .../feature``, as pve-container's API2/LXC.pm ``template`` and
``vm_feature`` do them.

A template's volumes are LVM-thin base volumes (``base-VMID-disk-K``, read
only on PVE); it cannot be started or snapshotted, and a clone of it is a
linked clone unless ``full`` is asked for (see :func:`pvesim.lxcops.clone`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pvesim import storage, volumes
from pvesim.errors import PveError
from pvesim.tasks import DURATIONS, Task, TaskFailed

if TYPE_CHECKING:
    from pvesim.node import Node


def is_template(config: dict[str, Any]) -> bool:
    """PVE::AbstractConfig::is_template: ``template: 1``."""
    return str(config.get("template", "")) == "1"


def _mount_volumes(config: dict[str, Any]) -> list[volumes.MountPoint]:
    """PVE::LXC::Config foreach_volume's order: rootfs, then mp0, mp1, ..."""
    return [volumes.MountPoint.parse(k, str(config[k])) for k in volumes.mount_keys(config)]


async def convert(node: Node, vmid: int, user: str) -> None:
    """pve-container API2/LXC.pm ``template``: under the config lock the CT's
    lock, its snapshots, whether it is a template already and whether it
    runs are checked (500s); then a ``vztemplate`` task runs
    PVE::LXC::template_create (every volume must have the ``template``
    feature - a bind or device mount point has none - then each becomes a
    base volume: PVE::Storage::vdisk_create_base, LvmThinPlugin create_base
    renames ``vm-`` to ``base-``) and writes ``template: 1``.  The API
    answers null, not the task's UPID (``fork_worker``'s return is
    dropped): the task runs on after the answer."""
    async with node.config_lock(vmid):
        rec = node.get(vmid)
        node.check_lock(rec)
        if rec.snapshots:
            raise PveError(500, "unable to create template, because CT contains snapshots")
        if is_template(rec.config):
            raise PveError(500, "you can't convert a template to a template")
        if vmid in node.running:
            raise PveError(500, "you can't convert a CT to template if the CT is running")

    async def body(task: Task) -> None:
        mps = _mount_volumes(rec.config)
        for mp in mps:
            if not storage.volume_has_feature("template", mp.volume):
                raise TaskFailed(f"Template feature is not available for '{mp.volume}'")
        await task.sleep(DURATIONS["vztemplate"])
        for mp in mps:
            storeid, _, volname = mp.volume.partition(":")
            base = f"{storeid}:{volname.replace('vm-', 'base-', 1)}"
            if mp.key != "rootfs":  # the rootfs is the CT's overlay, kept by vmid
                volumes.rename_volume(node.store.root, mp.volume, base)
            task.log(f'  Renamed "{volname}" to "{base.partition(":")[2]}" in volume group "pve"')
            # template_create: print_ct_mountpoint of the new volume id
            rec.config[mp.key] = mp.format(volume=base)
            node.save(rec)
        rec.config["template"] = 1
        node.save(rec)

    node.tasks.start("vztemplate", str(vmid), user, body)


def has_feature(node: Node, vmid: int, feature: str, snapname: str | None) -> dict[str, Any]:
    """pve-container API2/LXC.pm ``vm_feature``: PVE::LXC::Config has_feature
    - every volume of the config (or of the snapshot) has the feature."""
    rec = node.get(vmid)
    config = rec.config
    if snapname:
        if snapname not in rec.snapshots:
            raise PveError(500, f"snapshot '{snapname}' does not exist")
        config = rec.snapshots[snapname]["config"]
    ok = all(storage.volume_has_feature(feature, mp.volume, snapname)
             for mp in _mount_volumes(config))  # fmt: skip
    return {"hasFeature": 1 if ok else 0}

"""Phase 1, create: pre-flight checks, vmid allocation, ``POST /lxc``, the
task log streamed as log events.  A retry recognises its own container by
the marker in its description and never creates a second one; a create
task that fails leaves no CT behind (PVE removes it), so the record drops
its claim on the vmid at once."""

from __future__ import annotations

import re

from pipeline import clone
from pipeline.context import Context, off_loop
from provisioner.errors import PermanentError, TaskFailedError
from provisioner.models import Node
from provisioner.requests import create_request_of
from provisioner.secrets.vault import container_root_password
from provisioner.stored_request import StoredRequest
from provisioner.templates.params import build_create_params, parse_marker


def _find_own(ctx: Context) -> int | None:
    """A container on the node carrying this request's marker, if any.
    Blocking (PVE calls): run through ``off_loop``."""
    hostname = ctx.container().hostname
    for status in ctx.pve.containers():
        if status.name != hostname:
            continue
        config = ctx.pve.get_config(status.vmid)
        if parse_marker(config.get("description")) == ctx.container_id:
            return status.vmid
    return None


def preflight(ctx: Context, params: dict[str, object], disk_gb: int) -> None:
    """Fail early, with a clear message, on what would fail the create.
    Blocking (PVE calls): run through ``off_loop``."""
    node = ctx.pve.connection.node
    ctx.step(f"checking node {node}", 0.05)
    ctx.pve.version()  # reachable and authenticated
    storage_name = str(params["rootfs"]).split(":", 1)[0]
    storages = {s.name: s for s in ctx.pve.storages()}
    storage = storages.get(storage_name)
    if storage is None:
        raise PermanentError(f"storage '{storage_name}' does not exist on node {node}",
                             hint=f"available: {', '.join(sorted(storages))}")  # fmt: skip
    if "rootdir" not in storage.content:
        raise PermanentError(
            f"storage '{storage_name}' on node {node} does not support container directories",
            hint="choose a storage with content type 'rootdir' (e.g. local-lvm)")  # fmt: skip
    if storage.avail and storage.avail < disk_gb * (1 << 30):
        raise PermanentError(f"storage '{storage_name}' on node {node} has "
                             f"{storage.avail >> 30} GiB free, the container needs {disk_gb} GiB")  # fmt: skip
    for key, value in params.items():  # the data volumes' storages (mp0...; not bind mounts)
        name = str(value).split(":", 1)[0]
        volume = re.fullmatch(r"mp\d+", key) and not name.startswith("/")
        if volume and (name not in storages or "rootdir" not in storages[name].content):
            raise PermanentError(f"{key}: storage '{name}' on node {node} does not exist or "
                                     "does not hold container volumes",
                                     hint="choose a storage with content type 'rootdir'")  # fmt: skip
    bridges = {b.name for b in ctx.pve.bridges()}
    for key, value in params.items():  # net0, and the further interfaces
        if not re.fullmatch(r"net\d+", key):
            continue
        parts = str(value).split(",")
        bridge = next((p.split("=", 1)[1] for p in parts if p.startswith("bridge=")), None)
        if bridge and bridge not in bridges:
            raise PermanentError(f"bridge '{bridge}' ({key}) does not exist on node {node}",
                                 hint=f"available: {', '.join(sorted(bridges))}")  # fmt: skip
    pool = params.get("pool")
    if pool:
        pools = ctx.pve.pools()
        if pool not in pools:
            raise PermanentError(f"pool '{pool}' does not exist (or this node's login cannot "
                                 "see it: Pool.Audit)",
                                 hint=f"pools: {', '.join(sorted(pools)) or 'none'}")  # fmt: skip
    volid = str(params["ostemplate"])
    ctx.step(f"checking OS template {volid}", 0.1)
    if ctx.pve.ensure_template(volid.split(":", 1)[0], volid):
        ctx.log(f"downloaded OS template {volid}")


async def run(ctx: Context) -> None:
    ct = ctx.container()
    with ctx.factory() as session:
        node = session.get(Node, ct.node_id)
        assert node is not None
        request, defaults = create_request_of(ct, node)
    stored = StoredRequest.from_dict(ct.request)
    if stored.placement and ct.attempts <= 1:  # --node auto: where, and why (once)
        ctx.step(str(stored.placement.get("reasons", f"placed on {node.name}")), 0.0)
        if stored.placement.get("warning"):
            ctx.warn(str(stored.placement["warning"]))
    if stored.clone is not None:
        if ct.vmid is None and ct.attempts > 1:
            found = await off_loop(_find_own, ctx)
            if found is not None:
                ctx.update(vmid=found)
                ctx.log(f"found CT {found}, cloned by an earlier attempt")
        await clone.create(ctx, request, defaults)
        return
    params: dict[str, object] = dict(build_create_params(request, ctx.template, defaults))
    password = container_root_password(ctx.box, ct)
    if password:
        params["password"] = password
    if ct.vmid is not None:
        # proven ours by the run's guard (job.py), which drops a claim that is not
        await off_loop(ctx.owned)
        ctx.step(f"CT {ct.vmid} already exists (created by an earlier attempt)", 1.0)
        await off_loop(ctx.pve.wait_unlocked, ct.vmid, timeout=ctx.settings.task_timeout)
        return
    # an earlier attempt may have died between its POST and saving the vmid
    found = await off_loop(_find_own, ctx) if ct.attempts > 1 else None
    if found is not None:
        ctx.update(vmid=found)
        ctx.step(f"found CT {found}, created by an earlier attempt", 1.0)
        await off_loop(ctx.pve.wait_unlocked, found, timeout=ctx.settings.task_timeout)
        return
    disk = request.disk or ctx.template.resources.disk
    await off_loop(preflight, ctx, params, disk)
    ctx.step("allocating a vmid", 0.15)

    def create(vmid: int) -> str:
        upid = ctx.pve.create_container({**params, "vmid": vmid})
        ctx.update(vmid=vmid)  # at once: a crash from here on must find it again
        return upid

    # nextid + POST take well under a second; a worker killed while holding
    # the lock must not stall the others for long
    allocation = await off_loop(ctx.pve.allocate_vmid, ct.vmid or request.vmid, create,
                                redis=ctx.redis, lock_timeout=15)  # fmt: skip
    vmid, upid = allocation.vmid, allocation.result
    ctx.step(f"creating CT {vmid} on node {ctx.pve.connection.node}", 0.2)
    try:
        result = await off_loop(ctx.pve.wait_for_task, upid, timeout=ctx.settings.task_timeout,
                                poll=0.1, on_log=lambda line: ctx.log(line))  # fmt: skip
    except TaskFailedError:
        if not await off_loop(ctx.pve.exists, vmid):  # PVE removed what the failed task made
            ctx.update(vmid=None)  # the id is free again: never act on it later
        raise
    for warning in result.warning_lines:
        ctx.warn(warning)
    ctx.step(f"CT {vmid} created", 1.0)

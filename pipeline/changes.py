"""Day-two runs: snapshots asked for by users, ``set``, and safe change.

Safe change: a run that changes a container (resync, set) first takes a
safety snapshot (``auto-<action>-<time>``) and records it in the
container's ``safe_change``; if the change then fails (its health check
included), it rolls the container back to that snapshot (unless the
request said ``keep``) and puts the record back as it was.  A run that
resumes after its worker died finds the snapshot there.  After a change
that worked, the safety snapshots beyond ``PROVISIONER_AUTO_SNAPSHOTS_KEEP``
are deleted, oldest first.

Every PVE write takes the ownership guard's proof (``ctx.owned``), read
afresh before the write.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pipeline.context import Context, off_loop
from pipeline.finalize import health_check
from provisioner.changes import (
    SafeChange,
    SetRequest,
    auto_snapshot_name,
    parse_size_gib,
    pending_changes,
    to_prune,
)
from provisioner.errors import ConfigError, PermanentError, ProvisionError
from provisioner.models import utcnow
from provisioner.pve.types import Owned, SnapshotInfo
from provisioner.request_checks import bind_mount_paths
from provisioner.stored_request import StoredRequest

log = logging.getLogger(__name__)


class Refused(PermanentError):
    """The run refuses the change before any PVE write (the message names why)."""


async def _task(ctx: Context, upid: str) -> None:
    await off_loop(ctx.pve.wait_for_task, upid, timeout=ctx.settings.task_timeout, poll=0.25,
                   on_log=lambda line: ctx.log(line))  # fmt: skip


async def snapshots(ctx: Context) -> list[SnapshotInfo]:
    return await off_loop(ctx.pve.snapshots, ctx.read_vmid())


async def _protected(ctx: Context) -> bool:
    config = await off_loop(ctx.pve.get_config, ctx.read_vmid())
    return str(config.get("protection", "0")) in ("1", "true")


async def _running(ctx: Context) -> bool:
    return (await off_loop(ctx.pve.status, ctx.read_vmid())).running


# -- snapshots -------------------------------------------------------------------


async def take_snapshot(ctx: Context, name: str, description: str | None,
                        fraction: float = 0.5) -> None:  # fmt: skip
    vmid = ctx.read_vmid()
    ctx.step(f"taking snapshot '{name}' of CT {vmid}", fraction)
    owned = await off_loop(ctx.owned)
    await _task(ctx, await off_loop(ctx.pve.snapshot_create, owned, name, description))


async def snapshot(ctx: Context, params: dict[str, Any]) -> str:
    name = str(params["name"])
    if name in {s.name for s in await snapshots(ctx)}:
        raise Refused(f"CT {ctx.read_vmid()} already has a snapshot '{name}'",
                      hint="choose another name, or remove that snapshot first")  # fmt: skip
    await take_snapshot(ctx, name, params.get("description"))
    return f"snapshot '{name}' taken"


async def delete_snapshot(ctx: Context, params: dict[str, Any]) -> str:
    name = str(params["name"])
    if name not in {s.name for s in await snapshots(ctx)}:
        raise Refused(f"CT {ctx.read_vmid()} has no snapshot '{name}'")
    ctx.step(f"removing snapshot '{name}'", 0.5)
    owned = await off_loop(ctx.owned)
    await _task(ctx, await off_loop(ctx.pve.snapshot_delete, owned, name))
    return f"snapshot '{name}' removed"


async def _rollback_to(ctx: Context, name: str, *, start: bool, fraction: float) -> None:
    """Roll the CT back (PVE stops a running one first) and, with
    ``start``, start it and find its address and SSH again."""
    vmid = ctx.read_vmid()
    await ctx.close()  # the SSH session dies with the rollback
    ctx.step(f"rolling CT {vmid} back to snapshot '{name}'", fraction)
    owned = await off_loop(ctx.owned)
    await _task(ctx, await off_loop(ctx.pve.snapshot_rollback, owned, name, start or None))
    await off_loop(ctx.pve.wait_unlocked, vmid, timeout=ctx.settings.task_timeout)
    if not start:
        return
    net0 = str((await off_loop(ctx.pve.get_config, vmid)).get("net0", ""))
    ip = await off_loop(ctx.pve.resolve_container_ip, vmid, net0,
                        timeout=ctx.settings.ip_timeout, poll=0.1)  # fmt: skip
    ctx.update(ip=ip)
    session = await ctx.ssh()
    ctx.log(f"CT {vmid} is running again at {ip} ({session.host_key_fingerprint})")


async def _healthy(ctx: Context) -> str | None:
    """The template's health check after a rollback: None when it passes
    (or there is none), else why not (a warning, not a failure)."""
    check, ip = ctx.template.health, ctx.container().ip
    if check is None or ip is None:
        return None
    try:
        await health_check(ctx, ip, check)
    except ProvisionError as exc:
        return exc.message
    return None


async def rollback(ctx: Context, params: dict[str, Any]) -> str:
    name = str(params["name"])
    vmid = ctx.read_vmid()
    if await _protected(ctx):
        raise Refused(f"CT {vmid} is protected: a rollback would lose its data",
                      hint="provisioner set ID --unprotect first, if you mean it")  # fmt: skip
    if name not in {s.name for s in await snapshots(ctx)}:
        raise Refused(f"CT {vmid} has no snapshot '{name}'")
    start = await _running(ctx)
    await _rollback_to(ctx, name, start=start, fraction=0.3)
    await _resources_from(ctx, await off_loop(ctx.pve.get_config, vmid))
    problem = await _healthy(ctx) if start else None
    if problem:
        ctx.warn(f"after the rollback: {problem}")
    return f"rolled back to snapshot '{name}'" + ("" if start else " (the CT is stopped)")


async def _resources_from(ctx: Context, config: dict[str, Any]) -> None:
    """The record's request follows the resources the CT has after a rollback."""
    stored = StoredRequest.from_dict(ctx.container().request).to_dict()
    for name in ("cores", "memory", "swap"):
        if name in config:
            stored[name] = int(config[name])
    size = parse_size_gib(str(config.get("rootfs", "")))
    if size is not None and size == int(size):
        stored["disk"] = int(size)
    ctx.update(request=stored)


# -- safe change -----------------------------------------------------------------


async def begin_safe_change(ctx: Context, action: str, on_failure: str,
                            fraction: float = 0.0) -> SafeChange:  # fmt: skip
    """The safety snapshot before a change, recorded (once: a resumed run
    finds it) with the record's state to put back."""
    ct = ctx.container()
    found = SafeChange.from_dict(ct.safe_change)
    if found is not None:
        ctx.log(
            f"resuming the {found.action}; its safety snapshot is '{found.snapshot}'"
            if found.snapshot
            else f"resuming the {found.action} (without a safety snapshot)"
        )
        return found
    binds = bind_mount_paths(ct)
    without = bool(binds) and on_failure != "rollback"  # rollback was refused when asked for
    name = ""
    if not without:  # a name no snapshot has yet (a change may have begun this second)
        name = auto_snapshot_name(action, utcnow(), {s.name for s in await snapshots(ctx)})
    change = SafeChange(action=action, snapshot=name,
                        on_failure=on_failure, lifecycle=ct.lifecycle.value,
                        finished_phases=list(ct.finished_phases),
                        finished_scripts=list(ct.finished_scripts),
                        running=await _running(ctx), operation=ctx.operation_id)  # fmt: skip
    if without:
        ctx.update(safe_change=change.to_dict())
        ctx.warn(f"no safety snapshot before the {action}: Proxmox VE cannot snapshot a "
                 f"container with bind mounts ({', '.join(binds)}); a failure keeps the "
                 "container as it leaves it (on_failure=keep)")  # fmt: skip
        return change
    # recorded first: a run that dies during the snapshot task finds its name
    ctx.update(safe_change=change.to_dict())
    await take_snapshot(ctx, change.snapshot, f"automatic, before a {action} (lxc-provisioner)",
                        fraction)  # fmt: skip
    return change


async def end_safe_change(ctx: Context, change: SafeChange) -> None:
    """The change worked: forget it and prune the safety snapshots."""
    ctx.update(safe_change=None)
    keep = ctx.settings.auto_snapshots_keep
    try:
        for name in to_prune(await snapshots(ctx), keep):
            ctx.log(f"removing the old safety snapshot '{name}' "
                    f"(PROVISIONER_AUTO_SNAPSHOTS_KEEP={keep})")  # fmt: skip
            owned = await off_loop(ctx.owned)
            await _task(ctx, await off_loop(ctx.pve.snapshot_delete, owned, name))
    except ProvisionError as exc:  # the change stands; pruning is tried again next time
        ctx.warn(f"pruning the safety snapshots failed: {exc.message}")


async def undo_safe_change(ctx: Context, change: SafeChange, failure: str) -> str | None:
    """The change failed: roll back to its safety snapshot (policy
    ``rollback``) and put the record back.  Returns what was done, for the
    terminal event, or None when the policy keeps the failed state (or
    the snapshot was never taken)."""
    if change.on_failure != "rollback":
        ctx.update(safe_change=None)
        held = (f"snapshot '{change.snapshot}' holds it as it was" if change.snapshot
                else "no snapshot was taken")  # fmt: skip
        ctx.warn(f"{failure}; keeping the container as the failed {change.action} left it "
                 f"(on_failure=keep); {held}")  # fmt: skip
        return None
    if change.snapshot not in {s.name for s in await snapshots(ctx)}:
        ctx.update(safe_change=None)
        ctx.warn(f"{failure}; the safety snapshot '{change.snapshot}' was never taken: "
                 "nothing to roll back to")  # fmt: skip
        return None
    ctx.warn(f"{failure}; rolling back to the safety snapshot '{change.snapshot}'")
    await _rollback_to(ctx, change.snapshot, start=change.running, fraction=0.95)
    # forgotten only now: a run that dies during the rollback rolls back again
    await _resources_from(ctx, await off_loop(ctx.pve.get_config, ctx.read_vmid()))
    # (the lifecycle is the caller's to put back, after the terminal event)
    ctx.update(finished_phases=change.finished_phases, finished_scripts=change.finished_scripts,
               current_phase=None, safe_change=None)  # fmt: skip
    problem = await _healthy(ctx) if change.running else None
    if problem:
        ctx.warn(f"after the rollback: {problem}")
    else:
        ctx.step(f"rolled back: CT {ctx.read_vmid()} is as it was before the {change.action}", 1.0)
    return f"rolled back to the safety snapshot '{change.snapshot}'"


# -- set -------------------------------------------------------------------------


def _check_live(req: SetRequest, config: dict[str, Any]) -> None:
    problems = req.check(disk_now=parse_size_gib(str(config.get("rootfs", ""))))
    if problems:
        raise ConfigError("; ".join(p.message for p in problems))


async def _apply(ctx: Context, owned: Owned, req: SetRequest, config: dict[str, Any]) -> None:
    params = req.config_params(ctx.container_id)
    if params:
        shown = [f"{k}={v}" for k, v in params.items() if k != "description"]
        if "description" in params:
            shown.append("the description")
        ctx.step("changing " + ", ".join(shown), 0.4)
        await off_loop(ctx.pve.put_config, owned, params, digest=config.get("digest"))
    if req.disk is not None:
        ctx.step(f"growing the root disk to {req.disk} GiB", 0.5)
        await _task(ctx, await off_loop(ctx.pve.resize, owned, "rootfs", f"{req.disk}G"))


def _store(ctx: Context, req: SetRequest) -> None:
    """The record's request follows what was changed (shown by ``show``)."""
    stored = StoredRequest.from_dict(ctx.container().request)
    changed: dict[str, Any] = {name: getattr(req, name) for name in ("cores", "memory", "swap",
                               "disk", "onboot") if getattr(req, name) is not None}  # fmt: skip
    if req.tags is not None:  # the stored tags are those besides the template's
        changed["tags"] = [t for t in req.tags
                           if t != "provisioner" and t not in ctx.template.tags]  # fmt: skip
    ctx.update(request=dataclasses.replace(stored, **changed).to_dict())


async def set_settings(ctx: Context, params: dict[str, Any]) -> str:
    req = SetRequest.from_params(params)
    vmid = ctx.read_vmid()
    config = await off_loop(ctx.pve.get_config, vmid)
    resumed = SafeChange.from_dict(ctx.container().safe_change)
    if (resumed is not None and resumed.operation == ctx.operation_id
            and req.disk is not None
            and parse_size_gib(str(config.get("rootfs", ""))) == req.disk):  # fmt: skip
        req = dataclasses.replace(req, disk=None)  # grown before the worker died
    _check_live(req, config)  # against the CT as it is now, before any write
    change = None
    waiting = ""
    if req.resources:
        change = await begin_safe_change(ctx, "set", req.on_failure, 0.1)
        config = await off_loop(ctx.pve.get_config, vmid)  # the snapshot changed the digest
    try:
        owned = await off_loop(ctx.owned)
        await _apply(ctx, owned, req, config)
        # PVE keeps what it cannot hot-plug into a running CT pending until the
        # next start (vmconfig_hotplug_pending): said in an event and the result
        pending = pending_changes(await off_loop(ctx.pve.pending, vmid))
        if pending:
            waiting = ", ".join(f"{k}={v}" if v is not None else f"{k} (removed)"
                                for k, v in pending.items())  # fmt: skip
            if req.restart:
                ctx.log(f"pending until a restart: {waiting}")
            else:
                ctx.warn(f"pending until the next restart: {waiting} (restart to apply)")
        if req.restart:
            await _restart(ctx, owned)
        if change is not None and await _running(ctx):
            check = ctx.template.health
            if check is not None and ctx.container().ip:
                ctx.step(f"health check: {check.kind.value} port {check.port}", 0.8)
                await health_check(ctx, str(ctx.container().ip), check)
    except ProvisionError as exc:
        if change is None:
            raise
        done = await undo_safe_change(ctx, change, f"set failed: {exc.message}")
        if done is None:
            raise
        raise RolledBack(f"set failed: {exc.message}; {done}") from exc
    _store(ctx, req)
    if change is not None:
        await end_safe_change(ctx, change)
    later = f"; pending until the next restart: {waiting}" if waiting and not req.restart else ""
    return "changed " + ", ".join(req.changed()) + (" and restarted" if req.restart else later)


async def _restart(ctx: Context, owned: Owned) -> None:
    vmid = ctx.read_vmid()
    await ctx.close()
    if await _running(ctx):
        ctx.step(f"restarting CT {vmid} to apply the pending changes", 0.6)
        await _task(ctx, await off_loop(ctx.pve.reboot, owned))
    else:
        ctx.step(f"starting CT {vmid}", 0.6)
        await _task(ctx, await off_loop(ctx.pve.start, owned))
    await off_loop(ctx.pve.wait_unlocked, vmid, timeout=ctx.settings.task_timeout)
    net0 = str((await off_loop(ctx.pve.get_config, vmid)).get("net0", ""))
    ip = await off_loop(ctx.pve.resolve_container_ip, vmid, net0,
                        timeout=ctx.settings.ip_timeout, poll=0.1)  # fmt: skip
    ctx.update(ip=ip)
    await ctx.ssh()


class RolledBack(PermanentError):
    """A change failed and the container was rolled back to its safety snapshot."""


RUNS = {"snapshot": snapshot, "rollback": rollback, "delete-snapshot": delete_snapshot,
        "set": set_settings}  # fmt: skip

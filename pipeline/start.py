"""Phase 2, start: start the container (unless running), wait for the task
and the config lock, resolve its address (static or DHCP), wait for SSH."""

from __future__ import annotations

from pipeline import clone
from pipeline.context import Context, off_loop
from provisioner.stored_request import StoredRequest


async def run(ctx: Context) -> None:
    vmid = ctx.read_vmid()
    timeout = ctx.settings.task_timeout
    status = await off_loop(ctx.pve.wait_unlocked, vmid, timeout=timeout)
    if status.status == "running":
        ctx.step(f"CT {vmid} is already running", 0.2)
    else:
        ctx.step(f"starting CT {vmid}", 0.1)
        owned = await off_loop(ctx.owned)
        upid = await off_loop(ctx.pve.start, owned)
        await off_loop(ctx.pve.wait_for_task, upid, timeout=timeout, poll=0.1,
                       on_log=lambda line: ctx.log(line))  # fmt: skip
        await off_loop(ctx.pve.wait_unlocked, vmid, timeout=timeout)
    net0 = str((await off_loop(ctx.pve.get_config, vmid)).get("net0", ""))
    ctx.step("waiting for the container's address", 0.4)
    ip = await off_loop(ctx.pve.resolve_container_ip, vmid, net0,
                        timeout=ctx.settings.ip_timeout, poll=0.1)  # fmt: skip
    ctx.update(ip=ip)
    if StoredRequest.from_dict(ctx.container().request).clone is not None:
        await clone.fresh_identity(ctx)
    ctx.step(f"address {ip}; waiting for SSH", 0.6)
    session = await ctx.ssh()
    ctx.step(f"SSH is up ({session.host_key_fingerprint})", 1.0)

"""Phase 2, start: start the container (unless running), wait for the task
and the config lock, resolve its address (static or DHCP), wait for SSH."""

from __future__ import annotations

from pipeline.context import Context


async def run(ctx: Context) -> None:
    vmid = ctx.read_vmid()
    status = ctx.pve.wait_unlocked(vmid, timeout=ctx.settings.task_timeout)
    if status.status == "running":
        ctx.step(f"CT {vmid} is already running", 0.2)
    else:
        ctx.step(f"starting CT {vmid}", 0.1)
        upid = ctx.pve.start(ctx.owned())
        ctx.pve.wait_for_task(upid, timeout=ctx.settings.task_timeout, poll=0.1,
                              on_log=lambda line: ctx.log(line))  # fmt: skip
        ctx.pve.wait_unlocked(vmid, timeout=ctx.settings.task_timeout)
    net0 = str(ctx.pve.get_config(vmid).get("net0", ""))
    ctx.step("waiting for the container's address", 0.4)
    ip = ctx.pve.resolve_container_ip(vmid, net0, timeout=ctx.settings.ip_timeout, poll=0.1)
    ctx.update(ip=ip)
    ctx.step(f"address {ip}; waiting for SSH", 0.6)
    session = await ctx.ssh()
    ctx.step(f"SSH is up ({session.host_key_fingerprint})", 1.0)

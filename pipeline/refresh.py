"""Sync and promote: one container's application data into another, through
the template's data hooks, as a safe change of the container that receives
it.

- ``sync`` is a run of a clone: its source's data comes in (a staging copy
  refreshed from production).
- ``promote`` is a run of the source: its clone's data comes in (the
  approved staging site becomes production).

Either way the receiving container (the run's own, the *target*) gets a
safety snapshot first; then the *peer*'s ``export`` hook is piped into the
target's ``import`` hook over the worker's two SSH sessions (no copy on the
worker's disk, bounded memory, progress in bytes), the target's ``rewrite``
hook adapts the data to its identity, its ``anonymise`` hook scrubs
personal data when asked (by default when a sync's target is not
production), and its health check must pass.  On any failure the target is
rolled back to the safety snapshot: production is never left
half-promoted.  The peer is only read, and held (its lease) for the run, so
no other run changes it meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipeline import changes
from pipeline.context import Context, off_loop
from pipeline.finalize import health_check
from pipeline.scripts import HOOK_DIR, hook_specs
from provisioner import lease
from provisioner.changes import PROTECTED_ENVIRONMENT
from provisioner.errors import PermanentError, ProvisionError
from provisioner.models import Container
from provisioner.ownership import NotOurs, prove
from provisioner.requests import stored_variables
from provisioner.ssh.pipe import pipe
from provisioner.ssh.session import SshSession
from provisioner.templates.render import hook_env

# per action: the phase each step is shown in (the progress view's bars)
STEPS = {"snapshot": "create", "transfer": "deploy", "adapt": "scripts", "check": "finalize"}


def peer_of(ctx: Context, action: str) -> Container:
    """The other container: a sync's source, a promote's clone (detached)."""
    ct = ctx.container()
    peer_id = ct.source_id if action == "sync" else ctx.params.get("from")
    with ctx.factory() as session:
        peer = session.get(Container, peer_id) if peer_id else None
        if peer is None:
            what = "source" if action == "sync" else "clone"
            raise PermanentError(f"the {what} to {action} from no longer exists")
        session.expunge(peer)
        return peer


def _human(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GiB"


def _progress(ctx: Context) -> Callable[[int], None]:
    started = time.monotonic()
    last = [0.0]

    def on_bytes(total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 2.0:
            return
        last[0] = now
        rate = total / max(now - started, 1e-6)
        ctx.log(f"transferred {_human(total)} ({_human(rate)}/s)")

    return on_bytes


async def run_hook(ctx: Context, session: SshSession, kind: str, env: dict[str, str],
                   fraction: float) -> bool:  # fmt: skip
    """Run the target's ``kind`` hook if the template has one."""
    hook = ctx.template.hooks.get(kind)
    if hook is None:
        return False
    ctx.step(f"running the {kind} hook", fraction)
    result = await session.run(f"cd /root && exec bash {HOOK_DIR}/{hook.name}", env=env,
                               timeout=float(hook.timeout), name=f"hooks/{hook.name}",
                               on_line=lambda stream, line: ctx.log(line, stream=stream,
                                                                    script=f"hooks/{hook.name}"))  # fmt: skip
    if result.exit_status != 0:
        from provisioner.errors import CommandFailedError

        raise CommandFailedError(f"the {kind} hook failed with exit code {result.exit_status}",
                                 exit_status=result.exit_status,
                                 output_tail=[line for _s, line in result.tail][-20:])  # fmt: skip
    return True


def _env(ctx: Context, variables: dict[str, Any], me: Container,
         peer: Container) -> dict[str, str]:  # fmt: skip
    return hook_env(ctx.template, variables, hostname=me.hostname, ip=me.ip or "",
                    peer_hostname=peer.hostname, peer_ip=peer.ip or "",
                    environment=me.environment or "")  # fmt: skip


async def refresh(ctx: Context, action: str) -> str:
    """The run of a ``sync`` or a ``promote`` (``ctx`` is the target's)."""
    hooks = ctx.template.hooks
    if not hooks.syncable:
        raise changes.Refused(f"template {ctx.template.name} has no export and import hooks: "
                              f"its data cannot be {'synced' if action == 'sync' else 'promoted'}")  # fmt: skip
    peer = peer_of(ctx, action)
    if peer.vmid is None or peer.ip is None:
        raise changes.Refused(f"{peer.hostname} owns no running CT to read from")
    holder = lease.make_holder()
    if not await _hold(ctx, peer.id, holder):
        raise changes.Refused(f"{peer.hostname} is busy: another run holds it; try again when "
                              "that run ends")  # fmt: skip
    try:
        with lease.LeaseKeeper(ctx.factory, peer.id, holder, ctx.settings.lease_duration,
                               ctx.settings.lease_renew_interval):  # fmt: skip
            return await _refresh(ctx, action, peer)
    finally:
        lease.release(ctx.factory, peer.id, holder)


async def _hold(ctx: Context, peer_id: str, holder: str) -> bool:
    """Take the peer's lease; a dead run's expires within the lease duration."""
    deadline = time.monotonic() + ctx.settings.lease_duration + ctx.settings.lease_renew_interval
    while True:
        if await off_loop(lease.acquire, ctx.factory, peer_id, holder,
                          ctx.settings.lease_duration):  # fmt: skip
            return True
        if time.monotonic() >= deadline:
            return False
        await _sleep(1.0)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def _refresh(ctx: Context, action: str, peer: Container) -> str:
    try:
        await off_loop(prove, ctx.pve, peer.id, peer.vmid or 0)
    except NotOurs as exc:
        raise PermanentError(f"{peer.hostname}: {exc.message}") from None
    ctx.phase = STEPS["snapshot"]
    change = await changes.begin_safe_change(ctx, action, str(ctx.params.get("on_failure",
                                                                             "rollback")))  # fmt: skip
    try:
        done = await _transfer(ctx, action, peer)
    except ProvisionError as exc:
        recovered = await changes.undo_safe_change(ctx, change, f"{action} failed: {exc.message}")
        if recovered is None:
            raise
        raise changes.RolledBack(f"{action} failed: {exc.message}; {recovered}") from exc
    await changes.end_safe_change(ctx, change)
    return done


async def _transfer(ctx: Context, action: str, peer: Container) -> str:
    me = ctx.container()
    target = await ctx.ssh()
    source = await ctx.ssh_to(peer)
    try:
        ctx.phase = STEPS["transfer"]
        specs = hook_specs(ctx.template)
        await target.upload(specs)
        await source.upload(specs)
        export, import_ = ctx.template.hooks.get("export"), ctx.template.hooks.get("import")
        assert export is not None and import_ is not None
        peer_env = _env(ctx, await off_loop(stored_variables, ctx.box, peer), peer, me)
        my_env = _env(ctx, ctx.variables, me, peer)
        ctx.step(f"exporting {peer.hostname}'s data into {me.hostname}", 0.1)
        started = time.monotonic()
        total = await pipe(source, f"cd /root && exec bash {HOOK_DIR}/{export.name}", target,
                           f"cd /root && exec bash {HOOK_DIR}/{import_.name}",
                           source_env=peer_env, target_env=my_env, on_bytes=_progress(ctx),
                           on_stderr=lambda side, line: ctx.log(f"{side}: {line}",
                                                                stream="stderr"),
                           timeout=float(max(export.timeout, import_.timeout)))  # fmt: skip
        took = time.monotonic() - started
        ctx.step(f"imported {_human(total)} in {took:.1f}s "
                 f"({_human(total / max(took, 1e-6))}/s)", 1.0)  # fmt: skip
        ctx.phase = STEPS["adapt"]
        await run_hook(ctx, target, "rewrite", my_env, 0.2)
        if _anonymise(ctx, action, me):
            await run_hook(ctx, target, "anonymise", my_env, 0.6)
        ctx.step("the data is adapted to this container", 1.0)
        ctx.phase = STEPS["check"]
        check = ctx.template.health
        if check is not None and me.ip:
            ctx.step(f"health check: {check.kind.value} port {check.port}", 0.5)
            await health_check(ctx, me.ip, check)
    finally:
        await source.close()
    what = "synced from" if action == "sync" else "promoted from"
    return f"{what} {peer.hostname}: {_human(total)} of data"


def _anonymise(ctx: Context, action: str, me: Container) -> bool:
    asked: Any = ctx.params.get("anonymise")
    if asked is not None:
        return bool(asked)
    return action == "sync" and me.environment != PROTECTED_ENVIRONMENT

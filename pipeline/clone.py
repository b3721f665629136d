"""A clone's run: the create phase clones the source's CT from a fresh
snapshot; the start phase gives it a fresh identity before anything else
talks to it; the scripts phase runs only the template's ``clone`` hook.

Identity: PVE gives a clone new MAC addresses and (pve-container's
``clear_machine_id``) an empty ``/etc/machine-id``; the run then sets the
clone's own network, drops the source's protection flag (unless the clone
is production itself), and over SSH (logging in with the source's key,
which the copy still trusts) writes a new machine id, new SSH host keys,
root's new password and the clone's own authorized key; the new host key is
pinned at the next login.  Each step is idempotent, so a retry after a dead
worker redoes what is missing and never makes a second clone: the clone is
found again by the marker in its description, as a create is.
"""

from __future__ import annotations

from pipeline.context import SSH_BACKOFF, Context, off_loop
from provisioner.changes import PROTECTED_ENVIRONMENT
from provisioner.errors import PermanentError, SshPermanentError, TaskFailedError
from provisioner.models import Container
from provisioner.ownership import NotOurs, prove
from provisioner.pve.parse import parse_net
from provisioner.pve.types import Owned
from provisioner.secrets.vault import container_root_password, container_ssh_private_key
from provisioner.ssh.files import FilePolicy, FileSpec
from provisioner.ssh.session import connect
from provisioner.stored_request import StoredRequest
from provisioner.templates.params import CreateRequest, NodeDefaults, build_create_params

IDENTITY_MARK = "/var/lib/lxc-provisioner/identity"


def source_of(ctx: Context) -> Container:
    """The clone's source record (detached)."""
    source_id = (StoredRequest.from_dict(ctx.container().request).clone or {}).get("source")
    with ctx.factory() as session:
        source = session.get(Container, source_id) if source_id else None
        if source is None:
            raise PermanentError("the clone's source container no longer exists",
                                 hint="destroy this record and clone again")  # fmt: skip
        session.expunge(source)
        return source


def snapshot_name(ctx: Context) -> str:
    """The source's snapshot this clone is made from: one per clone, so a
    retry finds the one an earlier attempt took."""
    return f"clone-{ctx.container_id[:8]}"


def _prove_source(ctx: Context, source: Container) -> Owned:
    if source.vmid is None:
        raise PermanentError(f"the source {source.hostname} owns no CT any more")
    try:
        return prove(ctx.pve, source.id, source.vmid)
    except NotOurs as exc:
        raise PermanentError(f"the source {source.hostname}: {exc.message}") from None


async def create(ctx: Context, request: CreateRequest, defaults: NodeDefaults) -> None:
    """The create phase of a clone (``pipeline.create.run`` hands over here)."""
    ct = ctx.container()
    clone = StoredRequest.from_dict(ct.request).clone or {}
    full = bool(clone.get("full", True))
    if ct.vmid is None:
        source = source_of(ctx)
        snap = snapshot_name(ctx)
        owned_source = await off_loop(_prove_source, ctx, source)
        ctx.step(f"checking node {ctx.pve.connection.node}", 0.05)
        if snap not in {s.name for s in await off_loop(ctx.pve.snapshots, owned_source.vmid)}:
            ctx.step(f"taking snapshot '{snap}' of {source.hostname} (CT {owned_source.vmid}): "
                     "the clone is made from it, so a running source stays consistent",
                     0.1)  # fmt: skip
            upid = await off_loop(ctx.pve.snapshot_create, owned_source, snap,
                                  f"the state {ct.hostname} was cloned from (lxc-provisioner)")  # fmt: skip
            await off_loop(ctx.pve.wait_for_task, upid, timeout=ctx.settings.task_timeout,
                           poll=0.1, on_log=lambda line: ctx.log(line))  # fmt: skip
        params = build_create_params(request, ctx.template, defaults)
        storage = str(params["rootfs"]).split(":", 1)[0] if full else None
        ctx.step("allocating a vmid", 0.15)

        def make(vmid: int) -> str:
            upid = ctx.pve.clone(owned_source, vmid, hostname=request.hostname, full=full,
                                 storage=storage, snapname=snap,
                                 description=str(params["description"]))  # fmt: skip
            ctx.update(vmid=vmid)  # at once: a crash from here on must find it again
            return upid

        allocation = await off_loop(ctx.pve.allocate_vmid, None, make, redis=ctx.redis,
                                    lock_timeout=15)  # fmt: skip
        vmid, upid = allocation.vmid, allocation.result
        how = "full" if full else "linked"
        ctx.step(f"cloning CT {owned_source.vmid} into CT {vmid} ({how} clone)", 0.3)
        try:
            await off_loop(ctx.pve.wait_for_task, upid, timeout=ctx.settings.task_timeout,
                           poll=0.1, on_log=lambda line: ctx.log(line))  # fmt: skip
        except TaskFailedError:
            if not await off_loop(ctx.pve.exists, vmid):
                ctx.update(vmid=None)
            raise
    vmid = ctx.read_vmid()
    await off_loop(ctx.pve.wait_unlocked, vmid, timeout=ctx.settings.task_timeout)
    await _own_settings(ctx, request, defaults)
    if full:
        await _drop_snapshot(ctx)
    ctx.step(f"CT {vmid} cloned", 1.0)


async def _own_settings(ctx: Context, request: CreateRequest, defaults: NodeDefaults) -> None:
    """The clone's own network (its new MAC kept) and protection flag."""
    vmid = ctx.read_vmid()
    config = await off_loop(ctx.pve.get_config, vmid)
    params = build_create_params(request, ctx.template, defaults)
    wanted = parse_net(str(params["net0"]))
    current = parse_net(str(config.get("net0", "")))
    changes: dict[str, object] = {}
    # everything of net0 but its MAC (kept: the clone's own) and PVE's type
    if _without_mac(wanted.options) != _without_mac(current.options):
        hwaddr = f",hwaddr={current.hwaddr}" if current.hwaddr else ""
        changes["net0"] = f"{params['net0']}{hwaddr}"
    protect = ctx.container().environment == PROTECTED_ENVIRONMENT
    if (str(config.get("protection", "0")) in ("1", "true")) != protect:
        changes["protection"] = int(protect)
    if changes:
        what = ", ".join(f"{k}={v}" for k, v in changes.items())
        ctx.step(f"giving CT {vmid} its own settings: {what}", 0.8)
        owned = await off_loop(ctx.owned)
        await off_loop(ctx.pve.put_config, owned, changes, digest=config.get("digest"))


def _without_mac(options: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in options.items() if k not in ("hwaddr", "type")}


async def _drop_snapshot(ctx: Context) -> None:
    """A full clone no longer needs the source's snapshot."""
    source = source_of(ctx)
    snap = snapshot_name(ctx)
    owned_source = await off_loop(_prove_source, ctx, source)
    if snap in {s.name for s in await off_loop(ctx.pve.snapshots, owned_source.vmid)}:
        # not waited for: nothing of this run depends on it (a failure is in
        # the source's task log, and the snapshot stays, named for this clone)
        upid = await off_loop(ctx.pve.snapshot_delete, owned_source, snap)
        ctx.log(f"removing snapshot '{snap}' of {source.hostname}: the full clone holds its "
                f"copy (task {upid})")  # fmt: skip


_IDENTITY_SCRIPT = f"""set -eu
mark={IDENTITY_MARK}
if [ "$(cat "$mark" 2>/dev/null || true)" != "$PROV_CLONE_ID" ]; then
  rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
  ssh-keygen -q -N "" -t ed25519 -f /etc/ssh/ssh_host_ed25519_key
  ssh-keygen -q -N "" -t ecdsa -f /etc/ssh/ssh_host_ecdsa_key
  rm -f /etc/machine-id /var/lib/dbus/machine-id
  systemd-machine-id-setup >/dev/null 2>&1 || dbus-uuidgen > /etc/machine-id
  mkdir -p "$(dirname "$mark")"
  echo "$PROV_CLONE_ID" > "$mark"
  echo "new machine id and SSH host keys"
fi
echo "root:$PROV_ROOT_PASSWORD" | chpasswd
echo "root's password set"
"""


async def fresh_identity(ctx: Context) -> None:
    """The clone's own machine id, SSH host keys, root password and
    authorized key (a no-op once its new host key is pinned)."""
    ct = ctx.container()
    if ct.ssh_host_key is not None or ct.ip is None:
        return
    source = source_of(ctx)
    own_key = container_ssh_private_key(ctx.box, ct)
    assert own_key is not None
    ctx.step("giving the clone its own identity: machine id, SSH host keys, root password, "
             "authorized key", 0.7)  # fmt: skip
    deadline = ctx.settings.ssh_connect_timeout
    try:  # a retry: the clone's own key may be authorized already
        session = await connect(ct.ip, private_key=own_key, known_host_key=None,
                                deadline=deadline, backoff=SSH_BACKOFF)  # fmt: skip
    except SshPermanentError:
        source_key = container_ssh_private_key(ctx.box, source)
        if source_key is None:
            raise PermanentError(
                "the source's SSH key is gone: cannot log in to the clone"
            ) from None
        session = await connect(ct.ip, private_key=source_key, known_host_key=None,
                                deadline=deadline, backoff=SSH_BACKOFF)  # fmt: skip
    try:
        password = container_root_password(ctx.box, ct) or ""
        await session.run(_IDENTITY_SCRIPT, check=True, name="identity",
                          env={"PROV_CLONE_ID": ct.id, "PROV_ROOT_PASSWORD": password},
                          on_line=lambda _s, line: ctx.log(line))  # fmt: skip
        stored = StoredRequest.from_dict(ct.request)
        keys = "\n".join(k for k in (ct.ssh_public_key, stored.ssh_public_key) if k) + "\n"
        await session.upload([FileSpec("/root/.ssh/authorized_keys", keys.encode(), 0o600,
                                       "root:root", FilePolicy.REPLACE)])  # fmt: skip
        await session.run("systemctl restart ssh.service || systemctl restart sshd.service",
                          check=True, name="restart-sshd")  # fmt: skip
    finally:
        await session.close()
    ctx.log("the source's key no longer opens the clone; its new host key is pinned next")

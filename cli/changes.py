"""Day-two changes: ``provisioner snapshot create|ls|rollback|rm`` and
``provisioner set``.

Each change is a run with events on the container's stream, like any other
action (``--follow`` shows it); its parameters are checked here first, each
problem naming its field (exit 2), and nothing is queued until all pass.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from cli.actions import ON_FAILURE_HELP, queue_action
from cli.containers import find_container, label
from cli.follow import follow_options
from cli.output import echo_err, echo_json, print_table
from cli.runtime import BadInput, CliFailure, Conflict, Runtime, Unreachable, pass_runtime
from provisioner.changes import (
    SetRequest,
    check_snapshot_description,
    check_snapshot_name,
    default_snapshot_name,
    rollback_warning,
)
from provisioner.errors import ConfigError, PveApiError
from provisioner.models import Container, utcnow


def _snapshots(rt: Runtime, ref: str) -> tuple[Container, Any]:
    """The container and its live snapshots (``provisioner.live.Snapshots``)."""
    from provisioner.live import container_snapshots
    from provisioner.nodes import client_for
    from provisioner.ownership import NotOurs

    with rt.factory() as session:
        ct = find_container(session, ref)
        if ct.vmid is None:
            raise Conflict(f"{label(ct)} owns no container in Proxmox VE: it has no snapshots")
        try:
            with client_for(ct.node, rt.box) as pve:
                found = container_snapshots(pve, ct.id, ct.vmid)
        except NotOurs as exc:
            raise Conflict(f"{label(ct)}: {exc.message}") from None
        except PveApiError as exc:
            raise Unreachable(f"node {ct.node.name}: {exc.message}") from None
        session.expunge(ct)
    return ct, found


@click.group("snapshot")
def snapshot() -> None:
    """A container's snapshots: take, list, roll back to, remove."""


@snapshot.command("create")
@click.argument("ref", metavar="ID")
@click.argument("name", required=False)
@click.option("--description", "-d", help="What the snapshot holds (shown in PVE too).")
@follow_options("queued", '"action", "id", "job_id", "after"')
@pass_runtime
def snapshot_create(rt: Runtime, ref: str, name: str | None, description: str | None,
                    follow: bool, as_json: bool, timeout: float | None) -> None:  # fmt: skip
    """Take a snapshot of a container (NAME: default snap-<date>-<time>).
    ID: an id, a unique id prefix, or a hostname."""
    try:
        name = check_snapshot_name(name) if name else default_snapshot_name(utcnow())
        description = check_snapshot_description(description)
    except ConfigError as exc:
        raise BadInput(exc.message) from None
    queue_action(rt, ref, "snapshot", follow=follow, as_json=as_json, timeout=timeout,
                 params={"name": name, "description": description})  # fmt: skip


@snapshot.command("ls")
@click.argument("ref", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help='Print {"snapshots": [...]} as JSON.')
@pass_runtime
def snapshot_ls(rt: Runtime, ref: str, as_json: bool) -> None:
    """List a container's snapshots, oldest first (asks its node).  The
    automatic ones (auto-*) are the safety snapshots taken before changes."""
    from provisioner.views import snapshot_json

    _ct, found = _snapshots(rt, ref)
    items = [snapshot_json(s) for s in found.snapshots]
    if as_json:
        echo_json({"snapshots": items, "running": found.running, "protected": found.protected})
        return
    print_table(("NAME", "TAKEN", "KIND", "DESCRIPTION"), [
        (i["name"], (i["taken_at"] or "-").replace("+00:00", "Z"),
         "automatic" if i["automatic"] else "user",
         (i["description"] or "").splitlines()[0] if i["description"] else "")
        for i in items])  # fmt: skip


def _confirm_rollback(found: Any, name: str, yes: bool, ct: Container) -> None:
    snap = next((s for s in found.snapshots if s.name == name), None)
    if snap is None:
        known = ", ".join(s.name for s in found.snapshots) or "none"
        raise BadInput(f"name: {label(ct)} has no snapshot {name!r} (it has: {known})")
    if found.protected:
        raise Conflict(f"{label(ct)} is protected: a rollback would lose its data; "
                       f"provisioner set {label(ct)} --unprotect first, if you mean it")  # fmt: skip
    warning = rollback_warning(snap, found.running)
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInput(f"{warning} This needs confirmation: pass --yes")
    click.echo(warning, err=True)
    if not click.confirm(f"Roll {label(ct)} back to '{name}'?", default=False, err=True):
        raise CliFailure(f"{label(ct)} was not rolled back")


@snapshot.command("rollback")
@click.argument("ref", metavar="ID")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@follow_options("queued", '"action", "id", "job_id", "after"')
@pass_runtime
def snapshot_rollback(rt: Runtime, ref: str, name: str, yes: bool, follow: bool, as_json: bool,
                      timeout: float | None) -> None:  # fmt: skip
    """Roll a container back to a snapshot.  Says what will be lost and asks
    first (unless --yes); refused while the container is protected."""
    try:
        check_snapshot_name(name)
    except ConfigError as exc:
        raise BadInput(exc.message) from None
    ct, found = _snapshots(rt, ref)
    _confirm_rollback(found, name, yes, ct)
    queue_action(rt, ct.id, "rollback", follow=follow, as_json=as_json, timeout=timeout,
                 params={"name": name})  # fmt: skip


@snapshot.command("rm")
@click.argument("ref", metavar="ID")
@click.argument("name")
@follow_options("queued", '"action", "id", "job_id", "after"')
@pass_runtime
def snapshot_rm(rt: Runtime, ref: str, name: str, follow: bool, as_json: bool,
                timeout: float | None) -> None:  # fmt: skip
    """Remove a snapshot of a container."""
    try:
        check_snapshot_name(name)
    except ConfigError as exc:
        raise BadInput(exc.message) from None
    ct, found = _snapshots(rt, ref)
    if name not in {s.name for s in found.snapshots}:
        raise BadInput(f"name: {label(ct)} has no snapshot {name!r}")
    queue_action(rt, ct.id, "delete-snapshot", follow=follow, as_json=as_json, timeout=timeout,
                 params={"name": name})  # fmt: skip


def disk_now(ct: Container, templates_dir: Any) -> int | None:
    """The root disk's size the record knows (its request, else its
    template's), in GiB; the run checks the live size again."""
    from provisioner.stored_request import StoredRequest
    from provisioner.templates.loader import load_template

    stored = StoredRequest.from_dict(ct.request)
    if stored.disk is not None:
        return stored.disk
    try:
        return load_template(templates_dir / ct.template).resources.disk
    except (ConfigError, OSError):
        return None


@click.command("set")
@click.argument("ref", metavar="ID")
@click.option("--cores", type=int, help="CPU cores.")
@click.option("--memory", type=int, help="Memory in MiB.")
@click.option("--swap", type=int, help="Swap in MiB.")
@click.option("--disk", type=int, help="The root disk's new size in GiB (grow only).")
@click.option("--tag", "tags", multiple=True,
              help="A tag (repeatable): the container's tags become these (and "
                   "'provisioner').")  # fmt: skip
@click.option("--no-tags", is_flag=True, help="Remove every tag but 'provisioner'.")
@click.option("--onboot/--no-onboot", default=None, help="Start with the node.")
@click.option("--description", help="The description shown in PVE (the record's marker stays).")
@click.option("--protect/--unprotect", "protection", default=None,
              help="PVE's protection flag: no destroy and no rollback while set.")  # fmt: skip
@click.option("--restart", is_flag=True,
              help="Restart afterwards, applying what PVE applies only at a restart.")  # fmt: skip
@click.option("--on-failure", type=click.Choice(["rollback", "keep"]), default="rollback",
              show_default=True, help=ON_FAILURE_HELP)  # fmt: skip
@follow_options("queued", '"action", "id", "job_id", "after"')
@pass_runtime
def set_command(rt: Runtime, ref: str, cores: int | None, memory: int | None, swap: int | None,
                disk: int | None, tags: tuple[str, ...], no_tags: bool, onboot: bool | None,
                description: str | None, protection: bool | None, restart: bool,
                on_failure: str, follow: bool, as_json: bool,
                timeout: float | None) -> None:  # fmt: skip
    """Change a container in place, without recreating it.  Resources
    (cores, memory, swap, disk) are changed safely: a snapshot first, the
    template's health check after, and a rollback if that fails.  A shrink
    or an impossible value is refused before anything is asked of PVE."""
    if tags and no_tags:
        raise BadInput("tags: give --tag or --no-tags, not both")
    req = SetRequest(cores=cores, memory=memory, swap=swap, disk=disk,
                     tags=() if no_tags else (tuple(tags) or None), onboot=onboot,
                     description=description, protection=protection, restart=restart,
                     on_failure=on_failure)  # fmt: skip
    with rt.factory() as session:
        ct = find_container(session, ref)
        known = disk_now(ct, rt.settings.templates_dir) if disk is not None else None
        cid = ct.id
    problems = req.check(disk_now=known)
    if problems:
        raise BadInput("; ".join(p.message for p in problems))
    queue_action(rt, cid, "set", follow=follow, as_json=as_json, timeout=timeout,
                 params=req.to_params())  # fmt: skip


COMMANDS: list[click.Command] = [snapshot, set_command]


@click.command("clone")
@click.argument("ref", metavar="SOURCE")
@click.option("--hostname", "-H", required=True, help="The clone's hostname.")
@click.option("--env", "environment", default="staging", show_default=True, metavar="NAME",
              help="The clone's environment (production gets PVE's protection flag).")  # fmt: skip
@click.option("--full/--linked", default=True, show_default=True,
              help="A full copy, or a linked clone on the source's storage.")  # fmt: skip
@click.option("--ip", default="dhcp", show_default=True,
              help="'dhcp' or an IPv4 address with prefix length.")  # fmt: skip
@click.option("--gateway", help="IPv4 gateway (with a static --ip).")
@click.option("--bridge", help="Network bridge (default: the source's).")
@click.option("--storage", help="Storage of a full clone's disk (default: the source's).")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE",
              help="A template variable that differs from the source's (repeatable), e.g. "
                   "basic_auth=true for an nginx staging clone.")  # fmt: skip
@click.option("--owner", metavar="USER", help="Who the clone is for: that user's webhooks get "
                                              "its events.")  # fmt: skip
@follow_options("submitted", '"id", "job_id", "container", "root_password", "generated_secrets"')
@pass_runtime
def clone_command(rt: Runtime, ref: str, hostname: str, environment: str, full: bool, ip: str,
                  gateway: str | None, bridge: str | None, storage: str | None,
                  variables: tuple[str, ...], owner: str | None, follow: bool, as_json: bool,
                  timeout: float | None) -> None:  # fmt: skip
    """Clone a ready container (SOURCE) with a fresh identity.

    \b
    The clone is taken from a fresh snapshot of the source (a running source
    stays consistent), then gets its own hostname, MAC, address, machine id,
    SSH host keys (pinned anew), root password (printed once) and new values
    for the template's secret variables marked regenerate; then the
    template's clone hook and health check.  Progress as for a create.
    \b
    Examples:
      provisioner clone shop --env staging -H shop-staging --follow
      provisioner clone shop -H shop-dev --env development --linked --ip 198.18.0.171/24
    """
    from cli.create import _refusal, option_error, parse_vars
    from cli.follow import follow_run
    from provisioner.errors import InvalidRequest
    from provisioner.request_checks import ActionRefused
    from provisioner.requests import CloneRequest, request_clone
    from provisioner.views import container_json

    req = CloneRequest(hostname=hostname, environment=environment, full=full, ip=ip.strip(),
                       gateway=gateway, bridge=bridge, storage=storage,
                       variables=dict(parse_vars(variables)), owner=owner)  # fmt: skip
    with rt.factory() as session:
        source = find_container(session, ref)
        try:
            requested = request_clone(session, rt.box, rt.settings, rt.redis, source, req)
        except ActionRefused as exc:
            raise Conflict(f"{label(source)}: {exc.message}") from None
        except InvalidRequest as exc:
            raise _refusal(list(exc.problems)) from None
        except ConfigError as exc:
            raise option_error(exc) from None
        ct = requested.container
        cid, name, job_id = ct.id, label(ct), requested.job_id
        submitted: dict[str, Any] = {"id": cid, "job_id": job_id,
                                     "container": container_json(ct, ct.node.name),
                                     "root_password": requested.root_password,
                                     "generated_secrets": requested.generated_secrets}  # fmt: skip
        source_name = label(source)
    if as_json:
        echo_json({"type": "submitted", **submitted} if follow else submitted, lines=follow)
    else:
        if not follow:
            click.echo(cid)
        click.echo(f"clone {name} of {source_name} queued", err=True)
        click.echo(f"root password (shown once, store it now): {requested.root_password}",
                   err=True)  # fmt: skip
        for name, value in requested.generated_secrets.items():
            click.echo(f"{name}, new for the clone (shown once): {value}", err=True)
    if follow:
        if job_id is None:
            raise Unreachable(f"cannot follow {name}: {requested.queue_warning()}")
        follow_run(rt, cid, "provision", after=0, job_id=job_id, as_json=as_json,
                   timeout=timeout)  # fmt: skip


COMMANDS.append(clone_command)


def _refresh_command(action: str, summary: str) -> click.Command:
    @click.command(action, help=summary)
    @click.argument("ref", metavar="CLONE")
    @click.option("--on-failure", type=click.Choice(["rollback", "keep"]), default="rollback",
                  show_default=True, help=ON_FAILURE_HELP)  # fmt: skip
    @follow_options("queued", '"action", "id", "job_id", "after"')
    @pass_runtime
    def command(rt: Runtime, ref: str, on_failure: str, follow: bool, as_json: bool,
                timeout: float | None, yes: bool = False,
                anonymise: bool | None = None) -> None:  # fmt: skip
        from provisioner.request_checks import ActionRefused
        from provisioner.requests import refresh_pair

        with rt.factory() as session:
            clone = find_container(session, ref)
            try:
                target, peer = refresh_pair(session, rt.settings, clone, action)
            except ActionRefused as exc:
                raise Conflict(f"{label(clone)}: {exc.message}") from None
            except ConfigError as exc:
                raise BadInput(exc.message) from None
            target_id, target_name, peer_name = target.id, label(target), label(peer)
            peer_id = peer.id
        if action == "promote" and not yes:
            text = (f"Replace the data of {target_name} with {peer_name}'s? A snapshot of "
                    f"{target_name} is taken first; any failure rolls it back to it.")  # fmt: skip
            if not sys.stdin.isatty():
                raise BadInput(f"{text} This needs confirmation: pass --yes")
            if not click.confirm(text, default=False, err=True):
                raise CliFailure(f"{target_name} was not changed")
        params: dict[str, Any] = {"on_failure": on_failure}
        if action == "promote":
            params["from"] = peer_id
        if anonymise is not None:
            params["anonymise"] = anonymise
        queue_action(rt, target_id, action, follow=follow, as_json=as_json, timeout=timeout,
                     params=params)  # fmt: skip

    if action == "promote":
        command = click.option("--yes", "-y", is_flag=True,
                               help="Do not ask for confirmation.")(command)  # fmt: skip
    else:
        command = click.option("--anonymise/--no-anonymise", default=None,
                               help="Run the template's anonymise hook (default: when the "
                                    "clone is not production).")(command)  # fmt: skip
    return command


COMMANDS += [
    _refresh_command("sync", "Refresh a clone from its source: a snapshot of the clone, then "
                     "the source's data exported and imported, rewritten for the clone, "
                     "anonymised unless it is production, and its health check; any failure "
                     "rolls the clone back."),
    _refresh_command("promote", "Apply a clone's data to its source (asks first): a snapshot "
                     "of the source, then the clone's data exported and imported, rewritten "
                     "for the source, and its health check; any failure rolls the source back, "
                     "so it is never left half-promoted."),
]  # fmt: skip


@click.command("migrate")
@click.argument("ref", metavar="ID")
@click.option("--to", "to", required=True, metavar="NODE|auto",
              help="The node of its cluster to move it to, or 'auto': the node placement "
                   "chooses.")  # fmt: skip
@follow_options("queued", '"action", "id", "job_id", "after"')
@pass_runtime
def migrate_command(rt: Runtime, ref: str, to: str, follow: bool, as_json: bool,
                    timeout: float | None) -> None:  # fmt: skip
    """Move a container to another node of its Proxmox VE cluster, without
    recreating it: a stopped one offline, a running one in restart mode
    (shut down, its local volumes copied, started on the target).  The
    record follows it; a running one is reached again over SSH."""
    from redis.exceptions import RedisError

    from provisioner.placing import move_params

    with rt.factory() as session:
        ct = find_container(session, ref)
        try:
            params, reasons = move_params(session, rt.box, rt.settings, rt.redis, ct, to)
        except ConfigError as exc:
            raise BadInput(f"--{exc.message}") from None
        except RedisError as exc:
            raise Unreachable(f"--to auto: placement needs Redis, which failed: {exc}") from None
        cid = ct.id
    if reasons:
        echo_err(reasons)
    queue_action(rt, cid, "migrate", follow=follow, as_json=as_json, timeout=timeout,
                 params=params)  # fmt: skip


COMMANDS.append(migrate_command)

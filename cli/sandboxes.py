"""``provisioner sandbox``: client sandboxes of a live WordPress site
(docs/sandboxes.md).

``create`` checks every option, asks the live site (read only) whether it
answers and takes the Application Password, then stores and queues the
sandbox; asked again for the same client it shows the existing sandbox
(unless ``--new``).  ``ls``, ``extend`` and ``expire`` manage their life.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from sqlalchemy import select

from cli.containers import find_container, label
from cli.create import parse_vars, pick_node
from cli.follow import follow_options
from cli.output import echo_err, echo_json, print_table, short_id, stdin_line
from cli.runtime import BadInput, CliFailure, Runtime, Unreachable, pass_runtime
from provisioner.errors import ConfigError, InvalidRequest
from provisioner.models import Node
from provisioner.placement import AUTO
from provisioner.request_checks import first_per_field
from provisioner.sandboxes import format_duration

# a problem's field -> the option to correct
_OPTIONS = {"from": "--from", "client": "--client", "user": "--user",
            "app_password": "--app-password-stdin", "ttl": "--ttl", "by": "--by",
            "fingerprint": "--fingerprint", "ca_file": "--ca-file", "owner": "--owner",
            "node": "--node", "hostname": "--hostname", "id": "ID"}  # fmt: skip


def _refusal(exc: InvalidRequest) -> BadInput:
    parts = []
    for problem in first_per_field(exc.problems):
        field, sep, rest = problem.message.partition(": ")
        parts.append(f"{_OPTIONS[field]}: {rest}" if sep and field in _OPTIONS else problem.message)
    return BadInput("; ".join(parts))


def _read_app_password() -> str:
    if sys.stdin.isatty():  # typed by hand: do not echo it
        return str(click.prompt("Application Password", hide_input=True, err=True))
    return stdin_line("--app-password-stdin")


@click.group("sandbox")
def sandbox() -> None:
    """Client sandboxes: a copy of a live WordPress site, with an expiry."""


@sandbox.command("create")
@click.option("--from", "source_url", required=True, metavar="URL",
              help="The live site's address (https://...).")  # fmt: skip
@click.option("--client", required=True, help="The client's key (lower case, digits, '-').")
@click.option("--user", required=True, help="The live site's user the Application Password is of.")
@click.option("--app-password-stdin", is_flag=True, required=True,
              help="Read the live site's Application Password from stdin (required: never "
                   "an argument).")  # fmt: skip
@click.option(
    "--ttl",
    metavar="DURATION",
    help="How long the sandbox lives: 12h, 7d, 2w (default: the setting, 7d).",
)
@click.option("--new", is_flag=True, help="A new sandbox even if the client has one.")
@click.option("--owner", help="Whose sandbox it is (limits and webhooks are per owner).")
@click.option("--ca-file", metavar="PATH", help="Trust the live site's certificate by this CA.")
@click.option(
    "--fingerprint",
    metavar="SHA256",
    help="Trust the live site's certificate by its pinned SHA-256 fingerprint.",
)
@click.option("--node", "-n", help="Node name (default: the only node).")
@click.option("--hostname", "-H", help="The sandbox's hostname (default: sandbox-<client>).")
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="KEY=VALUE",
    help="A variable of the wordpress template (repeatable).",
)
@follow_options("submitted", '"id", "job_id", "existing", "sandbox"')
@pass_runtime
def create(rt: Runtime, source_url: str, client: str, user: str, app_password_stdin: bool,
           ttl: str | None, new: bool, owner: str | None, ca_file: str | None,
           fingerprint: str | None, node: str | None, hostname: str | None,
           variables: tuple[str, ...], follow: bool, as_json: bool,
           timeout: float | None) -> None:  # fmt: skip
    """A sandbox of the client's live WordPress site, or the client's existing one.

    \b
    Prints the sandbox's id on stdout (or with --json one object). A new
    sandbox's root password and generated secrets are shown once.
    \b
    Examples:
      provisioner sandbox create --from https://acme.example --client acme \\
          --user editor --app-password-stdin --ttl 7d --follow < app-password.txt
      provisioner sandbox create --from https://10.0.0.5 --fingerprint AB:CD:... \\
          --client acme --user admin --app-password-stdin --new
    """
    from cli.follow import follow_run
    from provisioner.sandbox_requests import SandboxRequest, request_sandbox, sandbox_json

    rt.settings  # noqa: B018  # a broken configuration is refused before stdin is read
    password = _read_app_password()
    given = parse_vars(variables)
    with rt.factory() as session:
        chosen = pick_node(session, node)
        if chosen == AUTO:  # a sandbox names its node (as the API's POST /api/sandboxes)
            names = ", ".join(session.scalars(select(Node.name).order_by(Node.name)))
            raise BadInput(f"--node: choose one of {names}")
        req = SandboxRequest(source_url=source_url, client=client, user=user,
                             app_password=password, node=chosen, ttl=ttl,
                             owner=owner, new=new, ca_file=ca_file, fingerprint=fingerprint,
                             hostname=hostname, variables=given)  # fmt: skip
        try:
            got = request_sandbox(session, rt.box, rt.settings, rt.redis, req)
        except InvalidRequest as exc:
            raise _refusal(exc) from None
        except ConfigError as exc:
            raise BadInput(exc.message) from None
        ct = got.container
        cid, name = ct.id, label(ct)
        body: dict[str, Any] = {"id": cid, "existing": got.existing, "sandbox": sandbox_json(ct)}
        requested = got.requested
        if requested is not None:
            body["job_id"] = requested.job_id
            if requested.root_password:
                body["root_password"] = requested.root_password
            if requested.generated_secrets:
                body["generated_secrets"] = dict(requested.generated_secrets)
            warning = requested.queue_warning(with_cause=True)
            if warning:
                body["warning"] = warning
    left = format_duration(body["sandbox"]["seconds_left"])
    if as_json:
        echo_json({"type": "submitted", **body} if follow and not got.existing else body,
                  lines=follow and not got.existing)  # fmt: skip
    else:
        if not follow or got.existing:
            click.echo(cid)
        if got.existing:
            echo_err(f"client {client} has sandbox {name} already ({ct.lifecycle.value}, expires "
                     f"in {left}); another one: --new")  # fmt: skip
        else:
            echo_err(f"sandbox {name} of client {client} queued (expires in {left})")
            if "warning" in body:
                echo_err(f"warning: {body['warning']}")
            if "root_password" in body:
                echo_err(f"root password (shown once, store it now): {body['root_password']}")
            for key, value in body.get("generated_secrets", {}).items():
                echo_err(f"{key} (shown once, store it now): {value}")
            if not follow:
                echo_err(f"follow it: provisioner logs {short_id(cid)} --follow")
    if follow and not got.existing:
        if requested is None or requested.job_id is None:
            raise Unreachable(f"cannot follow {name}: {body.get('warning')}")
        follow_run(rt, cid, "provision", after=0, job_id=requested.job_id, as_json=as_json,
                   timeout=timeout)  # fmt: skip


@sandbox.command("ls")
@click.option("--client", help="Only this client's.")
@click.option("--owner", help="Only this owner's.")
@click.option("--all", "include_gone", is_flag=True, help="Also those destroyed.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list.")
@pass_runtime
def ls(rt: Runtime, client: str | None, owner: str | None, include_gone: bool,
       as_json: bool) -> None:  # fmt: skip
    """Sandboxes, soonest expiry first."""
    from provisioner.sandbox_requests import list_sandboxes, sandbox_json

    with rt.factory() as session:
        rows = [sandbox_json(ct) for ct in list_sandboxes(session, client, owner, include_gone)]
    if as_json:
        echo_json(rows)
        return
    print_table(("ID", "HOSTNAME", "CLIENT", "OWNER", "STATE", "EXPIRES IN", "SOURCE"),
                [(r["id"][:8], r["hostname"], r["client"], r["owner"] or "-", r["lifecycle"],
                  format_duration(r["seconds_left"]) if r["seconds_left"] else "expired",
                  r["source_url"]) for r in rows])  # fmt: skip


@sandbox.command("extend")
@click.argument("ref", metavar="ID")
@click.option("--by", required=True, metavar="DURATION", help="12h, 7d, 2w...")
@click.option("--json", "as_json", is_flag=True, help="The sandbox as JSON.")
@pass_runtime
def extend(rt: Runtime, ref: str, by: str, as_json: bool) -> None:
    """Push a sandbox's expiry back (from now if it is overdue)."""
    from provisioner.sandbox_requests import extend_sandbox, sandbox_json

    with rt.factory() as session:
        ct = find_container(session, ref)
        try:
            until = extend_sandbox(session, ct, by)
        except InvalidRequest as exc:
            raise _refusal(exc) from None
        session.commit()
        body = sandbox_json(ct)
    if as_json:
        echo_json(body)
    else:
        echo_err(f"sandbox {body['hostname']} now expires at {until:%Y-%m-%d %H:%M} UTC "
                 f"(in {format_duration(body['seconds_left'])})")  # fmt: skip


@sandbox.command("expire")
@click.argument("ref", metavar="ID")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@pass_runtime
def expire(rt: Runtime, ref: str, yes: bool) -> None:
    """End a sandbox now: the expired event and its destroy, as at its expiry."""
    from provisioner.models import utcnow
    from provisioner.sandbox_expiry import expire_now

    with rt.factory() as session:
        ct = find_container(session, ref)
        cid, name = ct.id, label(ct)
    if not yes:
        if not sys.stdin.isatty():
            raise BadInput(f"expiring {name} destroys it: pass --yes")
        if not click.confirm(f"Expire {name} now? It is destroyed", default=False, err=True):
            raise CliFailure(f"{name} was not expired")
    try:
        expire_now(rt.settings, rt.factory, rt.redis, cid, utcnow())
    except InvalidRequest as exc:
        raise _refusal(exc) from None
    echo_err(f"sandbox {name} expired: its destroy is queued (follow it: provisioner logs "
             f"{short_id(cid)} --follow)")  # fmt: skip


COMMANDS: list[click.Command] = [sandbox]

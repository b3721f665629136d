"""``provisioner create``: request a container, optionally wait for it.

Every option is checked by the REST API's rules (``provisioner.request_checks``
and ``provisioner.requests``) before anything is stored; every problem found is
reported at once, on one line, each naming the option to correct.  Then one
row is stored and one job queued.
"""

from __future__ import annotations

import re
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session

from cli.containers import label
from cli.follow import follow_options
from cli.output import echo_err, echo_json, read_stdin, short_id, stdin_line
from cli.runtime import BadInput, Conflict, Runtime, Unreachable, pass_runtime
from provisioner.errors import ConfigError, gather
from provisioner.models import Node
from provisioner.placement import AUTO
from provisioner.request_checks import (
    TEMPLATE_NAME,
    ActionRefused,
    check_name,
    check_network,
    check_root_password,
    check_ssh_public_keys,
    field_of,
    first_per_field,
)
from provisioner.views import container_json

if TYPE_CHECKING:
    from provisioner.placing import Placed
    from provisioner.requests import ProvisionRequest, RequestedContainer

T = TypeVar("T")

# a ConfigError's field -> the option to correct
_OPTIONS = {"ip": "--ip", "gateway": "--gateway", "ssh_public_key": "--ssh-key",
            "root_password": "--password-stdin", "vmid": "--vmid", "node": "--node",
            "template": "--template", "storage": "--storage", "bridge": "--bridge",
            "hostname": "--hostname", "cores": "--cores", "memory": "--memory",
            "swap": "--swap", "rootfs": "--disk", "net0": "--ip", "net0.ip": "--ip",
            "net0.gw": "--gateway", "net0.bridge": "--bridge",
            "ssh-public-keys": "--ssh-key", "password": "--password-stdin",
            "environment": "--env", "owner": "--owner", "ip6": "--ip6",
            "gateway6": "--gateway6", "vlan": "--vlan", "firewall": "--firewall",
            "nics": "--nic", "nameserver": "--nameserver", "searchdomain": "--searchdomain",
            "tags": "--tag", "pool": "--pool", "onboot": "--onboot", "startup": "--startup",
            "mounts": "--mount", "binds": "--bind", "features": "--feature",
            "net0.ip6": "--ip6", "net0.gw6": "--gateway6", "net0.tag": "--vlan"}  # fmt: skip
_BASE_FIELD = re.compile(r"[a-z_0-9]+")


def parse_vars(pairs: tuple[str, ...], var_file: str | None = None) -> dict[str, str]:
    """``--var KEY=VALUE`` options, then the ``--var-file`` lines."""
    # (where, the text, whether an error may show it: a file's line may be a secret)
    given = [("--var", pair, True) for pair in pairs]
    if var_file is not None:
        given += [(f"--var-file line {n}", line, False)
                  for n, line in enumerate(_read_text("--var-file", var_file).splitlines(), 1)
                  if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    values: dict[str, str] = {}
    for where, pair, shown in given:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise BadInput(f"{where}: expected KEY=VALUE" + (f", got {pair!r}" if shown else ""))
        if name.strip() in values:
            raise BadInput(f"{where}: {name.strip()!r} given twice")
        values[name.strip()] = value
    return values


def _read_text(option: str, path: str) -> str:
    """The text of an option's file, or of stdin for '-'."""
    if path == "-":
        return read_stdin(f"{option} -")
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{option}: cannot read {path}: {exc}") from None


def _read_ssh_keys(path: str | None, text: str | None) -> str | None:
    parts = [] if path is None else [_read_text("--ssh-key", path)]
    if text is not None:
        parts.append(text)
    return check_ssh_public_keys("\n".join(p.strip() for p in parts)) if parts else None


def _read_password() -> str:
    if sys.stdin.isatty():  # typed by hand: do not echo it
        return str(click.prompt("Root password", hide_input=True, err=True))
    return stdin_line("--password-stdin")


def option_error(exc: ConfigError) -> BadInput:
    """A validation error, naming the option to correct."""
    from provisioner.templates.model import TemplateError

    if isinstance(exc, TemplateError):
        more = f" and {len(exc.problems) - 1} more" if len(exc.problems) > 1 else ""
        return BadInput(f"--template: the template is invalid: {exc.problems[0]}{more} "
                        "(see: provisioner templates validate)")  # fmt: skip
    message = exc.message
    field, sep, rest = message.partition(": ")
    base = m.group(0) if (m := _BASE_FIELD.match(field)) else field
    if sep and field in _OPTIONS:
        message = f"{_OPTIONS[field]}: {rest}"
    elif sep and base in _OPTIONS and field[len(base)] in "[.":  # nics[0].vlan: the --nic's vlan
        message = f"{_OPTIONS[base]}: {field}: {rest}"
    elif message.startswith("invalid container parameters: "):
        param = message.removeprefix("invalid container parameters: ").split(":", 1)[0]
        if param in _OPTIONS:
            message += f" (check {_OPTIONS[param]})"
    elif message.startswith("template '") and "variable '" in message:
        message += " (check --var)"
    return BadInput(message + (f" ({exc.hint})" if exc.hint else ""))


def _refusal(problems: list[ConfigError]) -> BadInput:
    """Every problem of a request on one line, each naming its option."""
    return BadInput("; ".join(option_error(p).message for p in first_per_field(problems)))


def _surface_options(problems: list[ConfigError], allow: tuple[str, ...], *,
                     nics: tuple[str, ...], mounts: tuple[str, ...], binds: tuple[str, ...],
                     features: tuple[str, ...]) -> dict[str, Any]:  # fmt: skip
    """``--nic``, ``--mount``, ``--bind`` and ``--feature`` as the API's JSON
    (``provisioner.templates.surface``); problems added, each naming its option."""
    from provisioner.templates.mounts import parse_bind_option, parse_mount_option
    from provisioner.templates.surface import parse_feature_option, parse_nic_option

    parsed: dict[str, Any] = {"nics": [], "mounts": [], "binds": [], "features": {}}
    for key, given, parse in (
        ("nics", nics, parse_nic_option), ("mounts", mounts, parse_mount_option),
        ("binds", binds, lambda field, text: parse_bind_option(field, text, allow)),
    ):  # fmt: skip
        items = [gather(problems, partial(parse, f"{key}[{i}]", text))
                 for i, text in enumerate(given)]  # fmt: skip
        # one refused: none is checked further (later ones' indexes would be off by one)
        parsed[key] = items if None not in items else []
    for text in features:
        flag = gather(problems, partial(parse_feature_option, text))
        if flag is not None:
            parsed["features"][flag[0]] = flag[1]
    return parsed


def pick_node(session: Session, name: str | None) -> str:
    """The node asked for: the one named, ``auto`` (placement), or when none
    is named the only node, else ``auto``."""
    names = list(session.scalars(select(Node.name).order_by(Node.name)))
    if not names:
        raise BadInput("--node: no node is registered (add one: provisioner nodes add)")
    if name is None:
        return names[0] if len(names) == 1 else AUTO
    if name == AUTO:
        return name
    if name not in names:
        known = ", ".join(names) or "none; add one: provisioner nodes add"
        raise BadInput(f"--node: no node named {name!r} (known: {known})")
    return name


def _request(rt: Runtime, session: Session, req: ProvisionRequest, placed: Placed | None,
             problems: list[ConfigError]) -> RequestedContainer:  # fmt: skip
    """Check the request against its node and as a whole, then store and queue it.

    Raises:
        BadInput, Conflict: every problem found (nothing is stored).
    """
    from provisioner.node_facts import NodeFactsCache, node_fact_problems
    from provisioner.requests import check_request, request_container

    problems += node_fact_problems(session, rt.box, req, NodeFactsCache(),
                                   refused={field_of(p.message) or "" for p in problems})  # fmt: skip
    checked = gather(problems, lambda: check_request(session, rt.settings, req))
    if problems or checked is None:
        raise _refusal(problems)
    try:
        return request_container(session, rt.box, rt.settings, rt.redis, req, checked,
                                 container_id=placed.container_id if placed else None,
                                 placement=placed.to_json() if placed else None)  # fmt: skip
    except ActionRefused as exc:
        raise Conflict(f"--{exc.message}") from None
    except ConfigError as exc:
        raise option_error(exc) from None


@click.command("create")
@click.option("--template", "-t", required=True, help="Template name (provisioner templates ls).")
@click.option("--node", "-n", help="Node name, or 'auto' to place it on the node with the most "
                                   "room (default: the only node, else auto).")  # fmt: skip
@click.option("--spread", metavar="GROUP",
              help="An anti-affinity group: placement puts its members on different nodes.")  # fmt: skip
@click.option("--hostname", "-H", required=True, help="The container's hostname.")
@click.option(
    "--vmid", type=click.IntRange(100, 999_999_999), help="VMID (default: PVE's next free one)."
)
@click.option("--cores", type=click.IntRange(1, 8192), help="CPU cores (default: the template's).")
@click.option("--memory", type=click.IntRange(16, 64 * 1024 * 1024), metavar="MIB",
              help="Memory in MiB (default: the template's).")  # fmt: skip
@click.option("--swap", type=click.IntRange(0, 64 * 1024 * 1024), metavar="MIB",
              help="Swap in MiB (default: the template's).")  # fmt: skip
@click.option("--disk", type=click.IntRange(1, 128 * 1024), metavar="GIB",
              help="Root disk in GiB (default: the template's).")  # fmt: skip
@click.option("--storage", help="Storage for the root disk (default: the node's).")
@click.option("--bridge", help="Network bridge (default: the node's).")
@click.option("--ip", default="dhcp", show_default=True,
              help="'dhcp' or an IPv4 address with prefix length, e.g. 198.18.0.170/24.")  # fmt: skip
@click.option("--gateway", help="IPv4 gateway (with a static --ip).")
@click.option("--ip6", help="IPv6 of eth0: 'auto' (SLAAC), 'dhcp' or an address with prefix "
                            "length, e.g. 2001:db8::10/64 (default: the template's, else none).")  # fmt: skip
@click.option("--gateway6", help="IPv6 gateway (with a static --ip6).")
@click.option("--vlan", type=int, metavar="TAG", help="VLAN tag of eth0 (1-4094).")
@click.option("--firewall/--no-firewall", default=None,
              help="PVE's firewall flag on eth0 (default: the template's).")  # fmt: skip
@click.option("--nic", "nics", multiple=True, metavar="KEY=VALUE,...",
              help="A further interface, eth1, eth2, ... (repeatable, at most 7): "
                   "bridge=, ip= (dhcp or address/prefix), gw=, ip6= (auto, dhcp or "
                   "address/prefix), gw6=, vlan=, firewall=1; e.g. "
                   "bridge=vmbr1,ip=dhcp,ip6=auto,vlan=20,firewall=1.")  # fmt: skip
@click.option("--nameserver", metavar="IP[,IP]", help="DNS servers (default: the node's).")
@click.option("--searchdomain", metavar="DOMAIN[,DOMAIN]", help="DNS search domains.")
@click.option("--tag", "tags", multiple=True, metavar="TAG",
              help="A PVE tag besides the template's (repeatable).")  # fmt: skip
@click.option("--pool", metavar="POOL", help="The PVE resource pool to add the container to.")
@click.option("--onboot/--no-onboot", default=None,
              help="Start the container when the node boots (default: the template's).")  # fmt: skip
@click.option("--startup", metavar="order=N[,up=S][,down=S]",
              help="Start order and delays on boot, e.g. order=2,up=30.")  # fmt: skip
@click.option("--mount", "mounts", multiple=True,
              metavar="/PATH:SIZE[,backup=0][,quota=1][,acl=1][,storage=NAME]",
              help="A data volume (repeatable): mounted at /PATH, SIZE in GiB (2, 2G or 1T), "
                   "on the root disk's storage unless storage= is given; backed up unless "
                   "backup=0.")  # fmt: skip
@click.option("--bind", "binds", multiple=True, metavar="/HOST/PATH:/PATH[,ro]",
              help="Bind-mount a host directory (repeatable); only under "
                   "PROVISIONER_BIND_MOUNT_ALLOW.")  # fmt: skip
@click.option("--feature", "features", multiple=True, metavar="NAME=1|0",
              help="Override a feature flag of the template (repeatable): nesting, keyctl, "
                   "fuse, mknod.")  # fmt: skip
@click.option("--ssh-key", "ssh_key_file", metavar="PATH",
              type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="Authorized SSH public key(s) for root, from a file ('-': stdin).")  # fmt: skip
@click.option("--ssh-key-text", metavar="KEY", help="An SSH public key line for root.")
@click.option("--password-stdin", is_flag=True,
              help="Read the root password from stdin's first line (default: generate one "
                   "and print it once).")  # fmt: skip
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE",
              help="A template variable (repeatable), typed and checked by the template.")  # fmt: skip
@click.option("--var-file", metavar="PATH",
              type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="Template variables from a file of KEY=VALUE lines ('-': stdin; blank "
                   "and # lines skipped): secrets stay off the command line.")  # fmt: skip
@click.option("--on-failure", type=click.Choice(["keep", "destroy"]), default="keep",
              show_default=True, help="What to do with the container when provisioning fails.")  # fmt: skip
@click.option("--env", "environment", metavar="NAME",
              help="The container's environment: production (which gets PVE's protection "
                   "flag), staging, development or another name.")  # fmt: skip
@click.option("--owner", metavar="USER",
              help="Who the container is for: that user's webhooks get its events "
                   "(requests through the API are owned by their user).")  # fmt: skip
@follow_options(
    "submitted",
    '"id", "job_id", "container", "root_password" and "generated_secrets" when generated',
)
@pass_runtime
def create(rt: Runtime, template: str, node: str | None, hostname: str, vmid: int | None,
           cores: int | None, memory: int | None, swap: int | None, disk: int | None,
           storage: str | None, bridge: str | None, ip: str, gateway: str | None,
           ip6: str | None, gateway6: str | None, vlan: int | None, firewall: bool | None,
           nics: tuple[str, ...], nameserver: str | None, searchdomain: str | None,
           tags: tuple[str, ...], pool: str | None, onboot: bool | None, startup: str | None,
           mounts: tuple[str, ...], binds: tuple[str, ...], features: tuple[str, ...],
           ssh_key_file: str | None, ssh_key_text: str | None, password_stdin: bool,
           variables: tuple[str, ...], var_file: str | None, on_failure: str,
           environment: str | None, owner: str | None, spread: str | None, follow: bool,
           as_json: bool, timeout: float | None) -> None:  # fmt: skip
    """Request a container: validate everything, store it, queue its run.

    \b
    Prints the container id on stdout, or with --json one object (id, job_id,
    container, root_password and generated_secrets when generated).  A
    generated root password, and the values generated for the template's
    secret variables the request left out, are shown once: on stderr, or in
    the JSON.
    \b
    With --follow, waits for the run: progress bars per phase on stderr (a
    terminal) or step lines (otherwise), the run's stdout lines on stdout and
    its stderr lines on stderr; exit 0 only when the container is ready, else
    a one-line reason (phase, script, exit code) and exit 1.
    \b
    Examples:
      provisioner create -t nginx -H web1 --node pve1 --follow
      provisioner create -t nginx -H web2 --ip 198.18.0.170/24 --gateway 198.18.0.1 \\
          --ssh-key ~/.ssh/id_ed25519.pub --var site_title=Hello --follow --json
      provisioner create -t redis -H cache1 --var-file redis.vars --follow
      provisioner create -t debian-base -H files1 --ip6 auto --vlan 20 \\
          --nic bridge=vmbr1,ip=dhcp,ip6=auto,firewall=1 --mount /data:2G \\
          --bind /srv/shared/site:/mnt/site,ro --feature nesting=1 --onboot
    """
    from cli.follow import follow_run
    from provisioner.placing import place_request, release
    from provisioner.requests import ProvisionRequest
    from provisioner.reservations import Reservations

    rt.settings  # noqa: B018  # a broken configuration is refused before stdin is read
    readers = [name for name, reads in (("--password-stdin", password_stdin),
                                        ("--ssh-key -", ssh_key_file == "-"),
                                        ("--var-file -", var_file == "-")) if reads]  # fmt: skip
    if len(readers) > 1:
        raise BadInput(f"only one of {', '.join(readers)} may read stdin")
    if not TEMPLATE_NAME.fullmatch(template):
        raise BadInput(f"--template: no template named {template!r}")
    problems: list[ConfigError] = []
    network = gather(problems, lambda: check_network(ip.strip(), gateway))
    if network is None:  # the address alone is still checked against the node
        network = gather([], lambda: check_network(ip.strip(), None))
    gather(problems, lambda: check_name("storage", storage))
    gather(problems, lambda: check_name("bridge", bridge))
    keys = gather(problems, lambda: _read_ssh_keys(ssh_key_file, ssh_key_text))
    given_variables = parse_vars(variables, var_file)
    password = (gather(problems, lambda: check_root_password(_read_password()))
                if password_stdin else None)  # fmt: skip
    ip, gateway = network or ("dhcp", None)  # a placeholder when refused
    surface = _surface_options(problems, rt.settings.bind_mount_allow, nics=nics,
                               mounts=mounts, binds=binds, features=features)  # fmt: skip
    with rt.factory() as session:
        req = ProvisionRequest(template=template, node=pick_node(session, node),
                               hostname=hostname, vmid=vmid, cores=cores, memory=memory,
                               swap=swap, disk=disk, ip=ip, gateway=gateway, bridge=bridge,
                               storage=storage, ssh_public_key=keys, root_password=password,
                               variables=given_variables, failure_policy=on_failure,
                               environment=environment, owner=owner, ip6=ip6,
                               gateway6=gateway6, vlan=vlan, firewall=firewall,
                               nameserver=nameserver, searchdomain=searchdomain,
                               tags=list(tags), pool=pool, onboot=onboot, startup=startup,
                               spread=spread, **surface)  # fmt: skip
        try:
            req, placed = place_request(session, rt.box, rt.settings, Reservations(rt.redis), req)
        except ConfigError as exc:  # no node fits: said with what else is wrong
            raise _refusal([*problems, exc]) from None
        except RedisError as exc:
            raise Unreachable(f"--node auto: placement needs Redis, which failed: {exc}") from None
        requested = None
        try:
            requested = _request(rt, session, req, placed, problems)
        finally:
            if placed is not None and requested is None:  # refused: the node is not held
                release(rt.redis, placed.container_id)
        ct, job_id, generated = requested.container, requested.job_id, requested.root_password
        cid, name = ct.id, label(ct)
        submitted: dict[str, Any] = {"id": cid, "job_id": job_id,
                                     "container": container_json(ct, req.node)}  # fmt: skip
        if placed is not None:
            submitted["placement"] = placed.to_json()
    if placed is not None:
        echo_err(placed.reasons)
        if placed.warning:
            echo_err(f"warning: {placed.warning}")
    warning = requested.queue_warning(with_cause=True)
    if warning is not None:  # the row is pending: a worker's recovery loop queues it later
        submitted["warning"] = warning
    if generated is not None:
        submitted["root_password"] = generated
    if requested.generated_secrets:
        submitted["generated_secrets"] = requested.generated_secrets
    if as_json:
        echo_json({"type": "submitted", **submitted} if follow else submitted, lines=follow)
    else:
        if not follow:
            click.echo(cid)
        echo_err(f"container {name} queued on node {req.node} (template {template})")
        if "warning" in submitted:
            echo_err(f"warning: {submitted['warning']}")
        if generated is not None:
            echo_err(f"root password (shown once, store it now): {generated}")
        for var, value in requested.generated_secrets.items():
            echo_err(f"{var}, generated (shown once, store it now): {value}")
        if not follow:
            echo_err(f"follow it: provisioner logs {short_id(cid)} --follow")
    if follow and job_id is None:
        raise Unreachable(f"cannot follow {name}: {submitted['warning']}")
    if follow:
        follow_run(rt, cid, "provision", after=0, job_id=job_id, as_json=as_json,
                   timeout=timeout)  # fmt: skip


COMMANDS: list[click.Command] = [create]

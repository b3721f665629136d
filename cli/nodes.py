"""``provisioner nodes``: the Proxmox VE nodes containers are created on.

A node is added with an API token (preferred) or a user and password, read
from stdin (never from the command line, where ``ps`` shows it), and
trusted by a CA file, a pinned SHA-256 fingerprint, or (only when asked)
not at all.  The secret is encrypted at rest (``provisioner.secrets.vault``) and
never printed.  Adding a node connects to it first unless ``--no-test``.
"""

from __future__ import annotations

import dataclasses
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from redis.exceptions import RedisError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from cli.output import echo_json, human_bytes, print_table, stdin_line
from cli.runtime import BadInput, Conflict, NotFound, Runtime, Unreachable, pass_runtime
from provisioner.errors import ConfigError, ProvisionError
from provisioner.models import AuthKind, Container, Lifecycle, Node
from provisioner.placement import AUTO
from provisioner.pve.parse import format_fingerprint, normalize_fingerprint, normalize_host
from provisioner.request_checks import NAME, check_name
from provisioner.views import node_json

if TYPE_CHECKING:
    from provisioner.pve.client import PveClient
    from provisioner.pve.http import PasswordAuth, PveConnection, TokenAuth
    from provisioner.pve.types import NodeInfo


def quick(connection: PveConnection) -> PveConnection:
    """The connection with short timeouts: an operator is waiting."""
    return dataclasses.replace(connection, connect_timeout=3.0, read_timeout=10.0)


def find_node(session: Session, name: str) -> Node:
    """The node named ``name``.

    Raises:
        NotFound: naming the known nodes.
    """
    node = session.scalars(select(Node).where(Node.name == name)).one_or_none()
    if node is None:
        known = ", ".join(session.scalars(select(Node.name).order_by(Node.name))) or "none"
        raise NotFound(f"no node named {name!r} (known: {known})")
    return node


def node_info(client: PveClient) -> NodeInfo:
    """The client's node as the cluster lists it.

    Raises:
        Unreachable: the cluster does not list it.
    """
    nodes = client.nodes()
    info = next((n for n in nodes if n.name == client.node), None)
    if info is None:
        names = ", ".join(sorted(n.name for n in nodes)) or "no nodes"
        raise Unreachable(f"PVE does not list a node {client.node!r} (it has {names}); "
                          "correct --pve-node")  # fmt: skip
    return info


def _trust_word(node: Node) -> str:
    if node.fingerprint:
        return "fingerprint"
    if node.ca_file:
        return "ca-file"
    return "insecure" if node.tls_insecure else "system"


# -- add ---------------------------------------------------------------------------


def _secret(kind: str, flag: str, from_stdin: bool) -> str:
    """The secret from stdin's first line; asked for, unechoed, on a terminal."""
    if sys.stdin.isatty():
        secret = str(click.prompt(kind.capitalize(), hide_input=True, err=True))
    elif from_stdin:
        secret = stdin_line(flag)
    else:
        raise BadInput(f"missing secret: pass {flag} and write the {kind} to stdin")
    if not secret:
        raise BadInput(f"missing secret: {flag} read an empty line")
    return secret


def _auth(token_id: str | None, user: str | None, token_secret_stdin: bool,
          password_stdin: bool) -> TokenAuth | PasswordAuth:  # fmt: skip
    from provisioner.pve.http import PasswordAuth, TokenAuth

    if token_id and user:
        raise BadInput("give either --token-id or --user, not both")
    if not token_id and not user:
        raise BadInput("--token-id (an API token: user@realm!name) or --user is required")
    try:
        if token_id:
            if password_stdin:
                raise BadInput("--password-stdin goes with --user; a token needs "
                               "--token-secret-stdin")  # fmt: skip
            TokenAuth(token_id, "-")  # the id's form, before reading a secret
            return TokenAuth(token_id, _secret("token secret", "--token-secret-stdin",
                                               token_secret_stdin))  # fmt: skip
        assert user is not None
        if token_secret_stdin:
            raise BadInput("--token-secret-stdin goes with --token-id; a user needs "
                           "--password-stdin")  # fmt: skip
        PasswordAuth(user, "-")
        return PasswordAuth(user, _secret("password", "--password-stdin", password_stdin))
    except ConfigError as exc:
        flag = "--token-id" if token_id else "--user"
        raise BadInput(f"{flag}: {exc}") from None


def _discover(connection: PveConnection, name: str) -> tuple[dict[str, Any], str, str | None]:
    """Connect; return the PVE version, the node name inside PVE and its
    cluster's name (None: a standalone node).

    Raises:
        Unreachable: the node cannot be reached, trusted or logged in to.
        BadInput: ``--pve-node`` is not in the cluster, or is needed.
    """
    from provisioner.pve.client import PveClient

    try:
        with PveClient(quick(connection)) as client:
            version = client.version()
            names = sorted(n.name for n in client.nodes())
            cluster = client.cluster_name()
    except ProvisionError as exc:
        raise Unreachable(f"cannot use node {name!r}: {exc}") from None
    if not connection.node:
        if len(names) != 1:
            raise BadInput(f"--pve-node: the cluster has nodes {', '.join(names)}: choose one")
        return version, names[0], cluster
    if connection.node not in names:
        raise BadInput(f"--pve-node: {connection.node!r} is not in the cluster (it has "
                       f"{', '.join(names) or 'no nodes'})")  # fmt: skip
    return version, connection.node, cluster


@click.group("nodes")
def nodes() -> None:
    """Proxmox VE nodes."""


@nodes.command("add")
@click.argument("name")
@click.option("--host", required=True, help="Host name or address of the node's API.")
@click.option("--port", type=click.IntRange(1, 65535), default=8006, show_default=True)
@click.option("--pve-node", help="The node's name inside PVE (default: the cluster's only node).")
@click.option("--token-id", metavar="USER@REALM!NAME", help="API token id (preferred).")
@click.option("--token-secret-stdin", is_flag=True, help="Read the token secret from stdin.")
@click.option("--user", metavar="USER@REALM", help="PVE user, for password login.")
@click.option("--password-stdin", is_flag=True, help="Read the user's password from stdin.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trust the node through this CA certificate (PEM).")  # fmt: skip
@click.option("--fingerprint", metavar="SHA256",
              help="Trust the node's certificate by its SHA-256 fingerprint (AA:BB:...).")  # fmt: skip
@click.option("--insecure", is_flag=True, help="Do not verify the node's certificate at all.")
@click.option("--default-storage", help="Storage for root disks (default: local-lvm).")
@click.option("--default-bridge", help="Bridge for networks (default: vmbr0).")
@click.option("--no-test", is_flag=True, help="Store the node without connecting to it first.")
@click.option("--json", "as_json", is_flag=True, help="Print the node as JSON.")
@pass_runtime
def nodes_add(rt: Runtime, name: str, host: str, port: int, pve_node: str | None,
              token_id: str | None, token_secret_stdin: bool, user: str | None,
              password_stdin: bool, ca_file: Path | None, fingerprint: str | None,
              insecure: bool, default_storage: str | None, default_bridge: str | None,
              no_test: bool, as_json: bool) -> None:  # fmt: skip
    """Register a node; its secret is read from stdin and stored encrypted.

    \b
    Example:
      echo "$TOKEN_SECRET" | provisioner nodes add pve1 --host pve1.example.org \\
          --token-id 'provisioner@pve!cli' --token-secret-stdin \\
          --fingerprint AA:BB:...:FF --default-storage local-lvm --default-bridge vmbr0
    """
    from provisioner.pve.http import PveConnection, TokenAuth
    from provisioner.secrets.vault import set_node_secret

    if not NAME.fullmatch(name):
        raise BadInput(f"NAME: must be 1-64 letters, digits and '_.-', got {name!r}")
    if name == AUTO:
        raise BadInput(f"NAME: {AUTO!r} is what a request names to be placed: choose another")
    try:
        host = normalize_host(host)
    except ValueError as exc:
        raise BadInput(f"--host: {exc}") from None
    try:
        check_name("--default-storage", default_storage)
        check_name("--default-bridge", default_bridge)
        check_name("--pve-node", pve_node)
    except ConfigError as exc:
        raise BadInput(exc.message) from None
    trust = [m for m, v in (("--ca-file", ca_file), ("--fingerprint", fingerprint),
                            ("--insecure", insecure)) if v]  # fmt: skip
    if len(trust) > 1:
        raise BadInput(f"choose one TLS trust mode, not {' and '.join(trust)}")
    if fingerprint:
        try:
            fingerprint = format_fingerprint(normalize_fingerprint(fingerprint))
        except ValueError as exc:
            raise BadInput(f"--fingerprint: {exc}") from None
    with rt.factory() as session:
        if session.scalars(select(Node.id).where(Node.name == name)).first() is not None:
            raise Conflict(f"a node named {name!r} already exists (remove it first: "
                           f"provisioner nodes rm {name})")  # fmt: skip
    auth = _auth(token_id, user, token_secret_stdin, password_stdin)
    ca_path = str(ca_file.resolve()) if ca_file else None
    try:
        connection = PveConnection(host=host, port=port, node=pve_node or "", auth=auth,
                                   ca_file=ca_path, fingerprint=fingerprint,
                                   insecure=insecure)  # fmt: skip
    except ConfigError as exc:
        raise BadInput(exc.message) from None
    version: dict[str, Any] | None = None
    cluster = None
    if not no_test:
        version, pve_node, cluster = _discover(connection, name)
    elif not pve_node:
        raise BadInput("--pve-node is required with --no-test")
    is_token = isinstance(auth, TokenAuth)
    node = Node(
        name=name, host=connection.host, port=connection.port, pve_node=pve_node,
        auth_kind=AuthKind.TOKEN if is_token else AuthKind.PASSWORD,
        pve_user=auth.token_id.split("!")[0] if isinstance(auth, TokenAuth) else auth.user,
        token_name=auth.token_id.split("!", 1)[1] if isinstance(auth, TokenAuth) else None,
        secret_ciphertext="", ca_file=ca_path, fingerprint=fingerprint, tls_insecure=insecure,
        default_storage=default_storage, default_bridge=default_bridge, cluster=cluster,
    )  # fmt: skip
    set_node_secret(rt.box, node, auth.secret if isinstance(auth, TokenAuth) else auth.password)
    with rt.factory() as session:
        session.add(node)
        session.commit()
        body = {**node_json(node, 0), "version": version}
    if as_json:
        echo_json(body)
        return
    tested = f"PVE {version.get('version', '?')}" if version else "not tested"
    click.echo(f"node {name} added: {host}:{port}, PVE node {pve_node}, "
               f"{'token ' + (node.token_id or '') if is_token else 'user ' + node.pve_user}, "
               f"trust {connection.trust} ({tested})")  # fmt: skip
    if cluster:
        click.echo(f"node {name} is in cluster {cluster}: provisioner nodes peers {name} lists its "
                   "other nodes, and --add registers them", err=True)  # fmt: skip


# -- ls, test, rm ------------------------------------------------------------------


def _ask(connection: PveConnection) -> NodeInfo | str:
    from provisioner.pve.client import PveClient

    try:
        with PveClient(quick(connection)) as client:
            return node_info(client)
    except ProvisionError as exc:
        return str(exc)
    except Unreachable as exc:
        return exc.format_message()


@nodes.command("ls")
@click.option("--no-live", is_flag=True, help="Do not ask the nodes for their free resources.")
@click.option("--json", "as_json", is_flag=True, help='Print {"nodes": [...]} as JSON.')
@pass_runtime
def nodes_ls(rt: Runtime, no_live: bool, as_json: bool) -> None:
    """List the nodes with their container counts and free CPU and memory."""
    from provisioner.nodes import connection_for, container_counts
    from provisioner.pve.types import NodeInfo

    with rt.factory() as session:
        counts = container_counts(session)
        rows = list(session.scalars(select(Node).order_by(Node.name)))
        items = [node_json(n, counts.get(n.id, 0)) for n in rows]
        connections: dict[str, PveConnection] = {}
        answers: dict[str, NodeInfo | str] = {}
        for node in [] if no_live else rows:
            try:
                connections[node.name] = connection_for(node, rt.box)
            except ProvisionError as exc:  # its secret cannot be decrypted
                answers[node.name] = str(exc)
    if connections:
        with ThreadPoolExecutor(max_workers=min(8, len(connections))) as pool:
            answers.update(zip(connections, pool.map(_ask, connections.values()), strict=True))
    for item in items:
        answer = answers.get(item["name"])
        item["live"] = None
        item["live_error"] = answer if isinstance(answer, str) else None
        if isinstance(answer, NodeInfo):
            item["live"] = {"online": answer.online, "cpus": answer.max_cpu,
                            "free_cpu": answer.free_cpu, "memory_total": answer.memory_total,
                            "free_memory": answer.free_memory}  # fmt: skip
    if as_json:
        echo_json({"nodes": items})
        return

    def status(item: dict[str, Any]) -> tuple[str, str, str]:
        live = item["live"]
        if live is None:
            return ("unreachable" if item["live_error"] else "-"), "-", "-"
        state = ("online" if live["online"] else "offline") + (
            ", maintenance" if item["maintenance"] else ""
        )
        return (state, f"{live['free_cpu']:g}/{live['cpus']}",
                f"{human_bytes(live['free_memory'])}/{human_bytes(live['memory_total'])}")  # fmt: skip

    print_table(("NAME", "HOST", "PVE NODE", "AUTH", "TRUST", "CONTAINERS", "STATUS",
                 "FREE CPU", "FREE MEMORY"),
                [(i["name"], f"{i['host']}:{i['port']}", i["pve_node"],
                  i["token_id"] or i["user"], _trust_word(n), str(i["containers"]), *status(i))
                 for i, n in zip(items, rows, strict=True)])  # fmt: skip
    for item in items:
        if item["live_error"]:
            click.echo(f"warning: node {item['name']}: {item['live_error']}", err=True)


@nodes.command("usage")
@click.option("--json", "as_json", is_flag=True, help='Print {"nodes": [...]} as JSON.')
@pass_runtime
def nodes_usage(rt: Runtime, as_json: bool) -> None:
    """Every node's load as placement sees it, one line each: CPU, memory
    in use and what its guests may take, its default storage, guests
    (running of all, and the cap), requests in flight, maintenance."""
    from provisioner.placing import cluster_view
    from provisioner.reservations import Reservations

    with rt.factory() as session:
        try:
            items = cluster_view(session, rt.box, Reservations(rt.redis), connect_timeout=3.0,
                                 read_timeout=10.0)  # fmt: skip
        except RedisError as exc:
            raise Unreachable(f"the requests in flight are in Redis, which failed: {exc}") from None
    if as_json:
        echo_json({"nodes": items})
        return

    def share(used: int | float | None, total: int | float | None) -> str:
        return "-" if used is None or not total else f"{used / total:.0%}"

    def row(i: dict[str, Any]) -> tuple[str, ...]:
        status = i["status"] + (", maintenance" if i["maintenance"] else "")
        if i["memory_total"] is None:
            return (i["name"], i["cluster"] or "-", status, "-", "-", "-", "-", "-",
                    str(i["in_flight"]))  # fmt: skip
        cap = f" (cap {i['max_containers']})" if i["max_containers"] is not None else ""
        return (i["name"], i["cluster"] or "-", status,
                f"{i['cpu']:.0%} of {i['cpus']}",
                f"{share(i['memory_used'], i['memory_total'])} of "
                f"{human_bytes(i['memory_total'])}",
                share(i["memory_committed"], i["memory_total"]),
                f"{i['storage']} {share(i['disk_used'], i['disk_total'])} of "
                f"{human_bytes(i['disk_total'])}" if i["disk_total"] else f"{i['storage']} -",
                f"{i['running']}/{i['guests']}{cap}", str(i["in_flight"]))  # fmt: skip

    print_table(("NAME", "CLUSTER", "STATUS", "CPU", "MEMORY", "COMMITTED", "STORAGE",
                 "RUNNING/GUESTS", "IN FLIGHT"), [row(i) for i in items])  # fmt: skip
    for item in items:
        if item["problem"]:
            click.echo(f"warning: node {item['name']}: {item['problem']}", err=True)


@nodes.command("peers")
@click.argument("name")
@click.option("--add", "add", is_flag=True,
              help="Register the ones not registered yet, each under its PVE name, with this "
                   "node's login and its certificate fingerprint pinned.")  # fmt: skip
@click.option("--yes", is_flag=True, help="Take the fingerprints shown without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@pass_runtime
def nodes_peers(rt: Runtime, name: str, add: bool, yes: bool, as_json: bool) -> None:
    """The other nodes of a node's Proxmox VE cluster: name, address,
    certificate fingerprint (read through this node's trusted connection)
    and whether it is registered; --add registers the rest after you
    confirm their fingerprints."""
    from provisioner.nodes import add_peers, cluster_peers

    with rt.factory() as session:
        node = find_node(session, name)
        try:
            cluster, peers = cluster_peers(session, rt.box, node)
        except ProvisionError as exc:
            raise Unreachable(f"node {name}: {exc}") from None
        if as_json and not add:
            echo_json({"cluster": cluster, "peers": [p.to_json() for p in peers]})
            return
        if cluster is None:
            click.echo(f"node {name} is a standalone node (no cluster)")
            return
        print_table(("NAME", "ADDRESS", "ONLINE", "FINGERPRINT", "REGISTERED"),
                    [(p.name, p.ip, "yes" if p.online else "no", p.fingerprint or "-",
                      p.registered or "-") for p in peers])  # fmt: skip
        new = [p for p in peers if not p.registered]
        if not add:
            if new:
                click.echo(f"register them: provisioner nodes peers {name} --add", err=True)
            return
        if not new:
            click.echo(f"every node of cluster {cluster} is registered")
            return
        missing = [p.name for p in new if not p.fingerprint]
        if missing:
            raise Unreachable(f"node {name} reports no certificate fingerprint for "
                              f"{', '.join(missing)}")  # fmt: skip
        if not yes:
            if not sys.stdin.isatty():
                raise BadInput("--add: confirm the fingerprints above with --yes (stdin is not "
                               "a terminal)")  # fmt: skip
            if not click.confirm(f"register {', '.join(p.name for p in new)} with node {name}'s "
                                 "login, trusting the fingerprints above?", default=False):  # fmt: skip
                raise BadInput("--add: not confirmed; nothing registered")
        try:
            added = add_peers(session, rt.box, node, {p.name: p.fingerprint or "" for p in new})
        except ConfigError as exc:
            raise Conflict(exc.message.removeprefix("nodes: ")) from None
        except ProvisionError as exc:
            raise Unreachable(f"node {name}: {exc}") from None
        session.commit()
        names = [n.name for n in added]
    if as_json:
        echo_json({"cluster": cluster, "added": names})
        return
    click.echo(f"registered {', '.join(names)} (cluster {cluster})")


@nodes.command("drain")
@click.argument("name")
@click.option("--no-move", is_flag=True,
              help="Only mark it in maintenance (placement skips it); move nothing.")  # fmt: skip
@pass_runtime
def nodes_drain(rt: Runtime, name: str, no_move: bool) -> None:
    """Put a node in maintenance (new requests are placed elsewhere) and
    move its containers to other nodes of its cluster, one at a time, each
    a migrate run with its events (provisioner logs ID --follow)."""
    from provisioner import drain
    from provisioner.nodes import container_counts

    with rt.factory() as session:
        node = find_node(session, name)
        if no_move:
            node.maintenance = True
            session.commit()
            click.echo(f"node {name} is in maintenance; its "
                       f"{container_counts(session).get(node.id, 0)} container(s) stay")  # fmt: skip
            return
        try:
            moving = drain.start(session, rt.redis, rt.settings, node)
        except ConfigError as exc:
            raise Conflict(exc.message.removeprefix("node: ")) from None
        click.echo(f"node {name} is in maintenance; moving {len(moving)} container(s), one at "
                   "a time: " + (", ".join(c.hostname for c in moving) or "none"))  # fmt: skip


@nodes.command("undrain")
@click.argument("name")
@pass_runtime
def nodes_undrain(rt: Runtime, name: str) -> None:
    """End a node's maintenance: placement uses it again, a drain stops
    after the move under way."""
    with rt.factory() as session:
        node = find_node(session, name)
        node.maintenance = False
        session.commit()
    click.echo(f"node {name} is schedulable again")


@nodes.command("test")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_runtime
def nodes_test(rt: Runtime, name: str, as_json: bool) -> None:
    """Connect to a node: exit 4 with the reason when it is unreachable, its
    certificate is not trusted, or the token or password is refused."""
    from provisioner.nodes import connection_for
    from provisioner.pve.client import PveClient

    with rt.factory() as session:
        connection = quick(connection_for(find_node(session, name), rt.box))
    try:
        with PveClient(connection) as client:
            version = client.version()
            info = node_info(client)
    except ProvisionError as exc:
        raise Unreachable(f"node {name}: {exc}") from None
    if as_json:
        echo_json({"ok": True, "node": name, "version": version, "online": info.online,
                   "cpus": info.max_cpu, "free_cpu": info.free_cpu,
                   "memory_total": info.memory_total, "free_memory": info.free_memory})  # fmt: skip
        return
    click.echo(f"node {name}: ok, PVE {version.get('version', '?')}, node {info.name} "
               f"{'online' if info.online else 'OFFLINE'}, {info.free_cpu:g} of {info.max_cpu} "
               f"CPUs free, {human_bytes(info.free_memory)} of "
               f"{human_bytes(info.memory_total)} memory free ({connection.trust})")  # fmt: skip


@nodes.command("rm")
@click.argument("name")
@click.option("--force", is_flag=True,
              help="Also delete the node's container records (their PVE containers are "
                   "left alone).")  # fmt: skip
@pass_runtime
def nodes_rm(rt: Runtime, name: str, force: bool) -> None:
    """Remove a node; refused while container records reference it."""
    with rt.factory() as session:
        node = find_node(session, name)
        total = session.scalar(select(func.count()).where(Container.node_id == node.id)) or 0
        alive = session.scalar(select(func.count()).where(
            Container.node_id == node.id, Container.lifecycle != Lifecycle.DESTROYED)) or 0  # fmt: skip
        if total and not force:
            raise Conflict(
                f"node {name!r} still has {total} container record(s), {alive} not destroyed: "
                "destroy them first (provisioner ls --node " + name + "), or pass --force to "
                "delete the records too (their PVE containers are left alone)"
            )  # fmt: skip
        busy = session.scalar(select(func.count()).where(
            Container.node_id == node.id, Container.lifecycle.in_(
                (Lifecycle.PENDING, Lifecycle.CREATING, Lifecycle.DESTROYING)))) or 0  # fmt: skip
        if busy:
            raise Conflict(f"node {name!r} has {busy} container(s) being created or destroyed: "
                           "wait for their runs to end (provisioner ls --node " + name + ")")  # fmt: skip
        session.execute(delete(Container).where(Container.node_id == node.id))
        session.delete(node)
        session.commit()
    extra = (
        f" with {total} container record(s); their PVE containers were left alone" if total else ""
    )
    click.echo(f"node {name} removed{extra}")


COMMANDS: list[click.Command] = [nodes]

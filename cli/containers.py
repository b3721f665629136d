"""Finding and showing containers: ``ls`` and ``show``.

A container is named by its id, a unique prefix of the id, or its hostname
when that is unique.  Listings carry the live PVE status, asked of every
node once, in parallel, with short timeouts; an unreachable node does not
fail them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from cli.output import echo_json, human_bytes, print_fields, print_table, short_id
from cli.runtime import BadInput, NotFound, Runtime, pass_runtime
from provisioner.errors import ProvisionError
from provisioner.models import Container, Lifecycle, Node
from provisioner.views import container_json

_HEX_PREFIX = set("0123456789abcdef-")


# -- finding containers ------------------------------------------------------------


def find_container(session: Session, ref: str) -> Container:
    """A container by id, unique id prefix, or hostname (unique among the
    containers not destroyed, else among all).

    Raises:
        NotFound: nothing matches.
        BadInput: more than one container matches.
    """
    ref = ref.strip()
    exact = session.get(Container, ref.lower()) if ref else None
    if exact is not None:
        return exact
    matches: dict[str, Container] = {}
    if ref and set(ref.lower()) <= _HEX_PREFIX:
        for ct in session.scalars(select(Container).where(Container.id.startswith(ref.lower()))):
            matches[ct.id] = ct
    named = list(session.scalars(select(Container).where(Container.hostname == ref)))
    alive = [ct for ct in named if ct.lifecycle != Lifecycle.DESTROYED]
    for ct in alive or named:
        matches[ct.id] = ct
    if not matches:
        raise NotFound(f"no container matches {ref!r} (give its id, a unique prefix of the "
                       "id, or its hostname; see: provisioner ls --all)")  # fmt: skip
    if len(matches) > 1:
        found = sorted(matches.values(), key=lambda c: c.created_at)
        listed = ", ".join(f"{short_id(c.id)} ({c.hostname}, {c.lifecycle.value})"
                           for c in found[:5])  # fmt: skip
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        raise BadInput(f"{ref!r} is ambiguous: it matches {len(found)} containers: {listed}"
                       f"{more}; give more of the id")  # fmt: skip
    return next(iter(matches.values()))


def label(ct: Container) -> str:
    """``web1 (3f2a9c1e)``."""
    return f"{ct.hostname} ({short_id(ct.id)})"


# -- live status -------------------------------------------------------------------


def live_statuses(rt: Runtime, rows: list[tuple[Container, Node]]) -> dict[str, dict[str, Any]]:
    """Each container's live PVE status (``pve``) or why there is none
    (``pve_error``, and ``owns_container`` false for a record whose CT is gone
    or someone else's), asking every node once, in parallel, with short timeouts."""
    from provisioner.live import NodeStatus, claims, merge, survey, wants_status
    from provisioner.nodes import connection_for
    from provisioner.pve.client import PveClient
    from provisioner.pve.http import PveConnection

    connections: dict[str, PveConnection] = {}
    answers: dict[str, NodeStatus] = {}
    for ct, node in rows:
        if wants_status(ct) and node.name not in connections and node.name not in answers:
            try:
                connections[node.name] = dataclasses.replace(
                    connection_for(node, rt.box), connect_timeout=3.0, read_timeout=10.0)  # fmt: skip
            except ProvisionError as exc:  # its secret cannot be decrypted, or bad settings
                answers[node.name] = NodeStatus({}, str(exc))

    def ask(name: str) -> NodeStatus:
        try:
            with PveClient(connections[name]) as client:
                return survey(client, claims(ct for ct, node in rows if node.name == name))
        except ProvisionError as exc:
            return NodeStatus({}, str(exc))

    if connections:
        with ThreadPoolExecutor(max_workers=min(8, len(connections))) as pool:
            answers.update(zip(connections, pool.map(ask, connections), strict=True))
    result: dict[str, dict[str, Any]] = {}
    for ct, node in rows:
        item = merge({"id": ct.id, "vmid": ct.vmid}, answers.get(node.name), wants_status(ct))
        result[ct.id] = {k: v for k, v in item.items() if k not in ("id", "vmid")}
    return result


def _status_word(item: dict[str, Any]) -> str:
    if item["pve"] is not None:
        lock = item["pve"].get("lock")
        return f"{item['pve']['status']}{f' ({lock})' if lock else ''}"
    if not item["owns_container"] and item["lifecycle"] in ("ready", "error"):
        return "no container"
    return "-" if item["pve_error"] is None else "unreachable"


# -- ls, show ----------------------------------------------------------------------


@click.command("ls")
@click.option("--all", "-a", "show_all", is_flag=True, help="Include destroyed containers.")
@click.option("--node", "-n", help="Only this node's containers.")
@click.option("--template", "-t", help="Only containers of this template.")
@click.option("--lifecycle", "-l", "lifecycles", multiple=True,
              type=click.Choice([lc.value for lc in Lifecycle]),
              help="Only containers in this state (repeatable).")  # fmt: skip
@click.option("--no-live", is_flag=True, help="Do not ask the nodes for the live status.")
@click.option("--json", "as_json", is_flag=True, help='Print {"containers": [...]} as JSON.')
@pass_runtime
def ls(rt: Runtime, show_all: bool, node: str | None, template: str | None,
       lifecycles: tuple[str, ...], no_live: bool, as_json: bool) -> None:  # fmt: skip
    """List containers, newest first, with their live PVE status."""
    query = select(Container, Node).join(Node, Container.node_id == Node.id)
    if lifecycles:
        query = query.where(Container.lifecycle.in_([Lifecycle(v) for v in lifecycles]))
    elif not show_all:
        query = query.where(Container.lifecycle != Lifecycle.DESTROYED)
    if node:
        query = query.where(Node.name == node)
    if template:
        query = query.where(Container.template == template)
    with rt.factory() as session:
        if node and session.scalars(select(Node.id).where(Node.name == node)).first() is None:
            raise NotFound(f"--node: no node named {node!r} (provisioner nodes ls)")
        rows = [(ct, n) for ct, n in session.execute(query.order_by(Container.created_at.desc()))]
        items = [container_json(ct, n.name) for ct, n in rows]
        session.expunge_all()
    live = {} if no_live else live_statuses(rt, rows)
    for item in items:
        item.update(live.get(item["id"], {"pve": None, "pve_error": None}))
    if as_json:
        echo_json({"containers": items})
        return
    print_table(("ID", "HOSTNAME", "LIFECYCLE", "STATUS", "NODE", "TEMPLATE", "VMID", "IP"), [
        (short_id(i["id"]), i["hostname"], i["lifecycle"], _status_word(i), i["node"],
         i["template"], str(i["vmid"] or "-") if i["owns_container"] else "-",
         i["ip"] or "-") for i in items])  # fmt: skip


@click.command("show")
@click.argument("ref", metavar="ID")
@click.option("--no-live", is_flag=True, help="Do not ask the node for the live status.")
@click.option("--json", "as_json", is_flag=True, help="Print the container as JSON.")
@pass_runtime
def show(rt: Runtime, ref: str, no_live: bool, as_json: bool) -> None:
    """Everything about one container, error details included (ID: an id, a
    unique id prefix, or a hostname)."""
    with rt.factory() as session:
        ct = find_container(session, ref)
        item = container_json(ct, ct.node.name)
        rows = [(ct, ct.node)]
        session.expunge_all()
    item.update({"pve": None, "pve_error": None} if no_live else live_statuses(rt, rows)[ct.id])
    if as_json:
        echo_json(item)
        return
    print_fields(_show_fields(item))


def _surface_fields(r: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The create surface's settings a request asked for (absent when not)."""
    eth0 = [f"{k}={r[k]}" for k in ("ip6", "gateway6", "vlan") if r.get(k) is not None]
    if r.get("firewall"):
        eth0.append("firewall")
    if eth0:
        yield "eth0", " ".join(eth0)
    for n, nic in enumerate(r.get("nics") or [], 1):
        yield f"eth{n}", " ".join(k if v is True else f"{k}={v}" for k, v in nic.items()
                                  if v is not None and v is not False)  # fmt: skip
    for key in ("nameserver", "searchdomain", "pool", "startup"):
        if r.get(key):
            yield key, str(r[key])
    if r.get("onboot") is not None:
        yield "onboot", "yes" if r["onboot"] else "no"
    if r.get("tags"):
        yield "tags", ", ".join(r["tags"])
    for m in r.get("mounts") or []:
        flags = [f"{k}={int(m[k])}" for k in ("backup", "quota", "acl") if k in m]
        yield "volume", f"{m['path']} {m['size']} GiB" + (f" on {m['storage']}" if m.get("storage")
                                                          else "") + f" ({', '.join(flags)})"  # fmt: skip
    for b in r.get("binds") or []:
        yield (
            "bind mount",
            f"{b['source']} -> {b['path']}" + (" (read-only)" if b.get("ro") else ""),
        )
    if r.get("features"):
        yield "features", ", ".join(f"{k}={int(v)}" for k, v in r["features"].items())


def _show_fields(i: dict[str, Any]) -> Iterator[tuple[str, str]]:
    r = i["request"]
    yield "id", i["id"]
    yield "hostname", i["hostname"]
    yield (
        "lifecycle",
        i["lifecycle"] + (f" (phase {i['current_phase']})" if i["current_phase"] else ""),
    )
    if i["pve"] is not None:
        p = i["pve"]
        yield "status", (f"{p['status']}{' (lock ' + p['lock'] + ')' if p['lock'] else ''}, "
                         f"up {p['uptime']}s, memory {human_bytes(p['memory_used'])} of "
                         f"{human_bytes(p['memory_total'])}")  # fmt: skip
    elif i["pve_error"]:
        yield "status", f"{'unknown' if i['owns_container'] else 'no container'}: {i['pve_error']}"
    yield "node", i["node"]
    if i.get("placement"):
        yield "placement", i["placement"]["reasons"]
    if i.get("spread_group"):
        yield "spread group", i["spread_group"]
    yield "template", i["template"]
    if i.get("environment"):
        yield "environment", i["environment"]
    if i.get("owner"):
        yield "owner", i["owner"]
    change = i.get("change_in_flight")
    if change:
        yield "change", (f"a {change['action']} is under way; its safety snapshot is "
                         f"'{change['snapshot']}' (on failure: {change['on_failure']})")  # fmt: skip
    if not i["owns_container"] and i["lifecycle"] in ("ready", "error"):
        yield "vmid", "none: this record owns no container (destroy only removes the record)"
    else:
        yield "vmid", str(i["vmid"] or "-")
    yield "ip", i["ip"] or "-"
    if i["ssh_host_key_fingerprint"]:
        yield "ssh host key", i["ssh_host_key_fingerprint"]
    for s in i["services"]:
        yield "service", " ".join(f"{k}={v}" for k, v in s.items())
    resources = ", ".join(f"{k} {r[k]}" for k in ("cores", "memory", "swap", "disk") if r[k])
    yield "requested", resources or "the template's resources"
    yield "network", " ".join(p for p in (
        f"ip={r['ip']}", r["gateway"] and f"gw={r['gateway']}", r["bridge"] and f"bridge={r['bridge']}",
        r["storage"] and f"storage={r['storage']}") if p)  # fmt: skip
    yield from _surface_fields(r)
    for name, value in i["variables"].items():
        yield f"var {name}", str(value)
    for name in i["secret_variables"]:
        yield f"var {name}", "(secret)"
    yield "on failure", i["failure_policy"]
    yield "attempts", str(i["attempts"])
    yield "phases done", ", ".join(i["finished_phases"]) or "-"
    yield "scripts done", ", ".join(i["finished_scripts"]) or "-"
    for key in ("created_at", "started_at", "finished_at"):
        if i[key]:
            yield key.replace("_at", ""), i[key]
    yield "events", str(i["last_seq"])
    if i["error"]:
        yield "error", i["error"]
    d = i["error_details"] or {}
    for key in ("phase", "script", "exit_code", "timed_out", "hint"):
        if d.get(key) not in (None, False):
            yield f"error {key.replace('_', ' ')}", str(d[key])
    for line in d.get("last_lines") or []:
        yield "error output", line


COMMANDS: list[click.Command] = [ls, show]

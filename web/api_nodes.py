"""``/api/nodes``: the Proxmox VE nodes containers are created on.

A node is added with an API token (preferred) or a user and password, and
trusted by a CA file, a pinned SHA-256 fingerprint, or (only when asked)
not at all.  Its secret is encrypted at rest and never returned.  Calls to
a node happen after the request's database transaction has ended, with
short timeouts, so a slow node never holds the database.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from flask import Response, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from provisioner import drain
from provisioner.errors import ConfigError, ProvisionError, PveApiError
from provisioner.models import AuthKind, Container, Node
from provisioner.nodes import add_peers, cluster_peers, connection_for, container_counts
from provisioner.placement import AUTO, check_spread
from provisioner.placing import ask_of, cluster_view, preview
from provisioner.pve.client import PveClient
from provisioner.pve.http import PasswordAuth, PveConnection, TokenAuth
from provisioner.pve.parse import format_fingerprint, normalize_fingerprint, normalize_host
from provisioner.request_checks import NAME
from provisioner.requests import ProvisionRequest, load_named_template
from provisioner.reservations import Reservations
from provisioner.secrets.vault import set_node_secret
from provisioner.views import node_json
from web.api import ApiError, Body, bp, json_body, require_admin, upstream
from web.resources import get_db, get_redis, resources

# PVE's storage content types (pve-storage-content)
STORAGE_CONTENT = ("rootdir", "images", "vztmpl", "iso", "backup", "snippets", "import")


def find_node(name: str) -> Node:
    """The node named ``name``; ApiError 404 if there is none."""
    if not NAME.fullmatch(name):
        raise ApiError(404, f"no node named {name!r}")
    node = get_db().scalars(select(Node).where(Node.name == name)).one_or_none()
    if node is None:
        raise ApiError(404, f"no node named {name!r}")
    return node


def quick(connection: PveConnection) -> PveConnection:
    """The connection with the web app's (short) timeouts."""
    settings = resources().settings
    return dataclasses.replace(connection, connect_timeout=settings.web_pve_connect_timeout,
                               read_timeout=settings.web_pve_read_timeout)  # fmt: skip


def node_client(node: Node) -> AbstractContextManager[PveClient]:
    """A client of the process's pool for a stored node, for a ``with``
    block; ends the request's transaction first."""
    connection = quick(connection_for(node, resources().box))
    get_db().commit()
    return resources().pve.client(connection)


def _host(body: Body) -> str | None:
    host = body.string("host", required=True, max_length=255)
    if host is None:
        return None
    try:
        return normalize_host(host)
    except ValueError as exc:
        body.refuse("host", f"host: {exc}")
        return None


def _auth(body: Body) -> TokenAuth | PasswordAuth | None:
    """The credentials given (a token, or a user and password); problems
    recorded on ``body``."""
    token_id = body.string("token_id", max_length=255)
    token_secret = body.string("token_secret", max_length=1024)
    user = body.string("user", max_length=128)
    password = body.string("password", max_length=1024)
    if any(body.failed(f) for f in ("token_id", "token_secret", "user", "password")):
        return None
    try:
        if token_id or token_secret:
            if user or password:
                body.refuse("user", "give either token_id and token_secret or user and password")
                return None
            field = "token_id" if not token_id else "token_secret"
            return TokenAuth(token_id or "", token_secret or "")
        if user or password:
            field = "user" if not user else "password"
            return PasswordAuth(user or "", password or "")
        body.refuse("token_id", "token_id and token_secret (or user and password) are required")
    except ConfigError as exc:
        wrong = "token_id" if "not of the form" in exc.message else (
            "user" if "realm" in exc.message else field)  # fmt: skip
        body.refuse(wrong, exc.message)
    return None


def _trust(body: Body) -> tuple[str | None, str | None, bool]:
    """(ca_file, fingerprint, insecure): exactly one mode or none; problems
    recorded on ``body``."""
    ca_file = body.string("ca_file", max_length=1024)
    fingerprint = body.string("fingerprint", max_length=128)
    insecure = body.boolean("insecure")
    trust = [m for m, v in (("ca_file", ca_file), ("fingerprint", fingerprint),
                            ("insecure", insecure)) if v]  # fmt: skip
    if len(trust) > 1:
        body.refuse(trust[1], f"choose one TLS trust mode, not {' and '.join(trust)}")
    if ca_file and not (os.path.isabs(ca_file) and Path(ca_file).is_file()):
        body.refuse("ca_file", f"ca_file {ca_file!r} is not a readable file on the server "
                    "(give an absolute path)")  # fmt: skip
    if fingerprint:
        try:
            fingerprint = format_fingerprint(normalize_fingerprint(fingerprint))
        except ValueError as exc:
            body.refuse("fingerprint", f"fingerprint: {exc}")
    return ca_file, fingerprint, insecure


def _connection_from(body: Body) -> tuple[PveConnection, dict[str, Any]] | None:
    """Read the connection fields; the connection and the columns to store,
    or None when a field was refused (recorded on ``body``)."""
    host = _host(body)
    port = body.integer("port", minimum=1, maximum=65535, default=8006)
    pve_node = body.string("pve_node", max_length=64)
    auth = _auth(body)
    ca_file, fingerprint, insecure = _trust(body)
    if body.errors or host is None or auth is None:
        return None
    try:
        connection = PveConnection(host=host, port=port or 8006, node=pve_node or "",
                                   auth=auth, ca_file=ca_file, fingerprint=fingerprint,
                                   insecure=insecure)  # fmt: skip
    except ConfigError as exc:
        body.refuse("port" if "port" in exc.message else "host", exc.message)
        return None
    columns = {
        "host": connection.host, "port": connection.port, "pve_node": pve_node,
        "auth_kind": AuthKind.TOKEN if isinstance(auth, TokenAuth) else AuthKind.PASSWORD,
        "pve_user": auth.token_id.split("!")[0] if isinstance(auth, TokenAuth) else auth.user,
        "token_name": auth.token_id.split("!", 1)[1] if isinstance(auth, TokenAuth) else None,
        "ca_file": ca_file, "fingerprint": fingerprint, "tls_insecure": insecure,
        "secret": auth.secret if isinstance(auth, TokenAuth) else auth.password,
    }  # fmt: skip
    return connection, columns


def _failed_field(exc: ProvisionError, columns: dict[str, Any]) -> str:
    """Which input a failed connection test most likely got wrong."""
    text = str(exc).lower()
    if isinstance(exc, PveApiError) and exc.status in (401, 403):
        return "token_secret" if columns["auth_kind"] == AuthKind.TOKEN else "password"
    if "tls" in text or "certificate" in text or "fingerprint" in text:
        return "fingerprint" if columns["fingerprint"] else "ca_file"
    return "host"


def _discover(connection: PveConnection, columns: dict[str, Any]) -> dict[str, Any]:
    """Connect; return the version; settle ``pve_node`` from the cluster's
    nodes, and ``cluster`` (its name; None for a standalone node)."""
    try:
        with PveClient(quick(connection)) as client:
            version = client.version()
            names = sorted(n.name for n in client.nodes())
            columns["cluster"] = client.cluster_name()
    except ProvisionError as exc:
        raise ApiError(400, f"cannot use the node: {exc}", _failed_field(exc, columns)) from None
    if columns["pve_node"] is None:
        if len(names) != 1:
            raise ApiError(400, f"the cluster has nodes {', '.join(names)}: choose one",
                           "pve_node")  # fmt: skip
        columns["pve_node"] = names[0]
    elif columns["pve_node"] not in names:
        raise ApiError(400, f"pve_node {columns['pve_node']!r} is not in the cluster "
                       f"(it has {', '.join(names) or 'no nodes'})", "pve_node")  # fmt: skip
    return version


@bp.route("/nodes")
def list_nodes() -> Response:
    """Every node, with how many containers it holds (not destroyed)."""
    session = get_db()
    counts = container_counts(session)
    nodes = session.scalars(select(Node).order_by(Node.name)).all()
    return jsonify({"nodes": [node_json(n, counts.get(n.id, 0)) for n in nodes]})


@bp.route("/nodes", methods=["POST"])
def add_node() -> tuple[Response, int]:
    """Register a node (administrators); by default connect first
    (``"verify": false`` skips it)."""
    require_admin()
    body = Body(json_body())
    name = body.name("name", required=True)
    if name == AUTO:
        body.refuse("name", f"{AUTO!r} is what a request names to be placed: choose another name")
    read = _connection_from(body)
    default_storage = body.name("default_storage")
    default_bridge = body.name("default_bridge")
    verify = body.boolean("verify", default=True)
    body.finish()  # every field's problem at once
    assert read is not None  # refused by finish() otherwise
    connection, columns = read
    if get_db().scalars(select(Node).where(Node.name == name)).one_or_none() is not None:
        raise ApiError(409, f"a node named {name!r} already exists", "name")
    get_db().commit()  # no transaction while talking to the node
    version = _discover(connection, columns) if verify else None
    if columns["pve_node"] is None:
        raise ApiError(400, "pve_node is required when verify is false", "pve_node")
    secret = columns.pop("secret")
    node = Node(name=name, secret_ciphertext="", default_storage=default_storage,
                default_bridge=default_bridge, **columns)  # fmt: skip
    set_node_secret(resources().box, node, secret)
    session = get_db()
    session.add(node)
    try:
        session.commit()
    except IntegrityError:  # added by someone else while we talked to the node
        session.rollback()
        raise ApiError(409, f"a node named {name!r} already exists", "name") from None
    return jsonify({**node_json(node, 0), "version": version}), 201


@bp.route("/nodes/<name>")
def get_node(name: str) -> Response:
    node = find_node(name)
    return jsonify(node_json(node, container_counts(get_db(), node.id).get(node.id, 0)))


@bp.route("/nodes/<name>", methods=["DELETE"])
def delete_node(name: str) -> tuple[str, int]:
    """Remove a node that holds no containers (administrators; destroyed
    ones count: they keep their history)."""
    require_admin()
    session = get_db()
    node = find_node(name)
    count = session.scalar(select(func.count()).where(Container.node_id == node.id)) or 0
    if count:
        raise ApiError(409, f"node {name!r} still has {count} container record(s); "
                       "a node can only be removed when it has none")  # fmt: skip
    session.delete(node)
    try:
        session.commit()
    except IntegrityError:  # a container was requested on it meanwhile
        session.rollback()
        raise ApiError(409, f"node {name!r} got a container while being removed; "
                       "it can only be removed when it has none") from None  # fmt: skip
    return "", 204


@bp.route("/nodes/<name>/test", methods=["POST"])
def test_node(name: str) -> Response:
    """Connect to the node and return its PVE version."""
    node = find_node(name)
    with upstream(f"node {name}"), node_client(node) as client:
        version = client.version()
        status = next((n for n in client.nodes() if n.name == client.node), None)
    return jsonify({"ok": True, "version": version,
                    "online": status.online if status else False})  # fmt: skip


@bp.route("/nodes/<name>/peers")
def node_peers(name: str) -> Response:
    """The other nodes of the node's cluster, with their addresses and
    certificate fingerprints (read through this node), and which are
    registered."""
    node = find_node(name)
    with upstream(f"node {name}"):
        cluster, peers = cluster_peers(get_db(), resources().box, node, lend=resources().pve.client)
    return jsonify({"cluster": cluster, "peers": [p.to_json() for p in peers]})


@bp.route("/nodes/<name>/peers", methods=["POST"])
def add_node_peers(name: str) -> tuple[Response, int]:
    """Register peers of the node (administrators): ``{"add": [{"name",
    "fingerprint"}]}``, each fingerprint the one the caller confirmed (it
    must still be the one the node reports)."""
    require_admin()
    body = Body(json_body())
    wanted = body.value("add")
    if not isinstance(wanted, list) or not wanted or not all(
            isinstance(w, dict) and isinstance(w.get("name"), str)
            and isinstance(w.get("fingerprint"), str) for w in wanted):  # fmt: skip
        body.refuse("add", "a list of {name, fingerprint}: the peers to register, each with the "
                           "fingerprint you confirmed")  # fmt: skip
    body.finish()
    node = find_node(name)
    session = get_db()
    try:
        added = add_peers(session, resources().box, node,
                          {str(w["name"]): str(w["fingerprint"]) for w in wanted},
                          lend=resources().pve.client)  # fmt: skip
    except ConfigError as exc:  # a refusal (ConfigError is a ProvisionError too: first)
        session.rollback()
        raise ApiError(409, exc.message.removeprefix("nodes: "), "add") from None
    except ProvisionError as exc:
        session.rollback()
        raise ApiError(502, f"node {name}: {exc}", transient=exc.transient) from None
    session.commit()
    counts = container_counts(session)
    return jsonify({"cluster": node.cluster,
                    "added": [node_json(n, counts.get(n.id, 0)) for n in added]}), 201  # fmt: skip


@bp.route("/nodes/<name>/drain", methods=["POST"])
def drain_node(name: str) -> tuple[Response, int]:
    """Put the node in maintenance and move its containers away, one at a
    time (administrators); ``{"move": false}`` only marks it.  202 with the
    containers to move."""
    require_admin()
    body = Body(json_body() if request.content_length else {})
    move = body.boolean("move", default=True)
    body.finish()
    node = find_node(name)
    session = get_db()
    if not move:
        node.maintenance = True
        session.commit()
        return jsonify({"node": name, "maintenance": True, "moving": []}), 202
    try:
        moving = drain.start(session, get_redis(), resources().settings, node)
    except ConfigError as exc:
        raise ApiError(409, exc.message.removeprefix("node: "), "node") from None
    return jsonify({"node": name, "maintenance": True,
                    "moving": [{"id": c.id, "hostname": c.hostname} for c in moving]}), 202  # fmt: skip


@bp.route("/nodes/<name>/undrain", methods=["POST"])
def undrain_node(name: str) -> Response:
    """End the node's maintenance (administrators)."""
    require_admin()
    node = find_node(name)
    node.maintenance = False
    get_db().commit()
    return jsonify({"node": name, "maintenance": False})


@bp.route("/nodes/<name>/storages")
def node_storages(name: str) -> Response:
    """The node's storages; ``?content=rootdir`` (or ``vztmpl``...) filters."""
    node = find_node(name)
    content = request.args.get("content") or None
    if content is not None and content not in STORAGE_CONTENT:
        raise ApiError(400, f"content must be one of {', '.join(STORAGE_CONTENT)}", "content")
    with upstream(f"node {name}"), node_client(node) as client:
        storages = client.storages(content)
    return jsonify({"storages": [
        {"name": s.name, "type": s.type, "content": sorted(s.content), "total": s.total,
         "used": s.used, "avail": s.avail, "active": s.active, "enabled": s.enabled,
         "shared": s.shared} for s in storages]})  # fmt: skip


@bp.route("/nodes/<name>/bridges")
def node_bridges(name: str) -> Response:
    node = find_node(name)
    with upstream(f"node {name}"), node_client(node) as client:
        bridges = client.bridges()
    return jsonify({"bridges": [{"name": b.name, "active": b.active, "cidr": b.cidr,
                                 "comments": b.comments} for b in bridges]})  # fmt: skip


@bp.route("/nodes/<name>/templates")
def node_os_templates(name: str) -> Response:
    """OS templates (``vztmpl``) on every storage that holds them."""
    node = find_node(name)
    found: list[dict[str, Any]] = []
    with upstream(f"node {name}"), node_client(node) as client:
        for storage in client.storages("vztmpl"):
            for t in client.templates(storage.name):
                found.append({"volid": t.volid, "storage": storage.name, "file": t.filename,
                              "size": t.size, "format": t.format, "ctime": t.ctime})  # fmt: skip
    return jsonify({"templates": found})


@bp.route("/nodes/<name>/resources")
def node_resources(name: str) -> Response:
    """Free CPU and memory of the node, for placement."""
    node = find_node(name)
    with upstream(f"node {name}"), node_client(node) as client:
        info = next((n for n in client.nodes() if n.name == client.node), None)
    if info is None:
        raise ApiError(502, f"node {name}: PVE does not list {node.pve_node!r} among its nodes")
    return jsonify({"node": info.name, "online": info.online, "cpus": info.max_cpu,
                    "cpu_usage": info.cpu_usage, "free_cpu": info.free_cpu,
                    "memory_total": info.memory_total, "memory_used": info.memory_used,
                    "free_memory": info.free_memory})  # fmt: skip


@bp.route("/cluster")
def cluster_usage() -> Response:
    """Every node's load as placement sees it, in one view: CPU, memory
    (used, and what its guests may take), its default storage, guests and
    requests in flight, maintenance (the Nodes page's cluster usage)."""
    res = resources()
    try:
        nodes = cluster_view(get_db(), res.box, Reservations(get_redis()), lend=res.pve.client,
                             connect_timeout=res.settings.web_pve_connect_timeout,
                             read_timeout=res.settings.web_pve_read_timeout)  # fmt: skip
    except RedisError as exc:
        raise ApiError(503, f"the requests in flight are in Redis, which failed: {exc}") from None
    return jsonify({"nodes": nodes})


@bp.route("/placement", methods=["POST"])
def placement_preview() -> Response:
    """Where a request would be placed now (``"node": "auto"``), with each
    node's reason; nothing is reserved (the wizard's review step)."""
    body = Body(json_body())
    template_name = body.string("template", max_length=128)
    req = ProvisionRequest(template=template_name or "", node=AUTO, hostname="preview",
                           memory=body.integer("memory", minimum=16, maximum=64 * 1024 * 1024),
                           disk=body.integer("disk", minimum=1, maximum=128 * 1024),
                           storage=body.name("storage"), spread=body.string("spread", max_length=64),
                           mounts=[m for m in body.value("mounts") or [] if isinstance(m, dict)])  # fmt: skip
    try:
        check_spread(req.spread)
    except ConfigError as exc:
        body.refuse("spread", exc.message)
    body.finish()
    res = resources()
    template = None
    if template_name:
        try:
            template = load_named_template(res.settings, template_name)
        except ConfigError as exc:
            raise ApiError(400, exc.message, "template") from None
    try:
        got = preview(get_db(), res.box, Reservations(get_redis()), ask_of(req, template),
                      lend=res.pve.client, strict_spread=res.settings.spread_strict,
                      connect_timeout=res.settings.web_pve_connect_timeout,
                      read_timeout=res.settings.web_pve_read_timeout)  # fmt: skip
    except ConfigError as exc:
        raise ApiError(409, exc.message, "node") from None
    except RedisError as exc:
        raise ApiError(503, f"placement needs Redis, which failed: {exc}") from None
    return jsonify({"node": got.node, "reasons": got.reasons, "warning": got.warning,
                    "skipped": dict(got.skipped)})  # fmt: skip

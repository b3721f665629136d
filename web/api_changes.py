"""Day-two changes through the REST API: a container's snapshots, rollback,
``set`` (``PATCH /api/containers/<id>``) and the actions with a body.

Each change is checked here (every problem names its field: 400), then
queued as a run through ``provisioner.requests.request_action``: 202 with
the job and the events' URL, progress as events on the container's stream.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from provisioner import views
from provisioner.changes import (
    MAX_DESCRIPTION,
    MAX_SNAPSHOT_NAME,
    ON_FAILURE,
    SNAPSHOT_NAME,
    SetRequest,
    check_snapshot_name,
    default_snapshot_name,
    rollback_warning,
)
from provisioner.errors import ConfigError, InvalidRequest, ProvisionError
from provisioner.live import Snapshots, container_snapshots
from provisioner.models import Container, Node, utcnow
from provisioner.ownership import NotOurs
from provisioner.request_checks import ActionRefused
from provisioner.requests import CloneRequest, refresh_pair, request_clone
from provisioner.stored_request import StoredRequest
from provisioner.templates.loader import load_template
from web.api import ApiError, Body, bp, config_error, json_body
from web.api_containers import created, find_container, queue
from web.api_nodes import node_client
from web.auth import current_user
from web.resources import get_db, get_redis, resources


def _snapshots(ct: Container, node: Node) -> Snapshots:
    """The CT's snapshots, asked of its node (409: the record owns no CT)."""
    if ct.vmid is None:
        raise ApiError(409, "this record owns no container in Proxmox VE: it has no snapshots")
    cid, vmid = ct.id, ct.vmid
    try:
        with node_client(node) as pve:
            return container_snapshots(pve, cid, vmid)
    except NotOurs as exc:
        raise ApiError(409, exc.message) from None
    except ProvisionError as exc:
        raise ApiError(502, f"node {node.name}: {exc.message}", transient=exc.transient) from None


def _check_name(name: str) -> str:
    try:
        return check_snapshot_name(name)
    except ConfigError as exc:
        raise ApiError(400, exc.message.replace("name: ", "name ", 1), "name") from None


@bp.route("/containers/<container_id>/snapshots")
def list_snapshots(container_id: str) -> Response:
    """The container's snapshots, oldest first, live from its node."""
    ct, node = find_container(container_id)
    found = _snapshots(ct, node)
    return jsonify({"snapshots": [views.snapshot_json(s) for s in found.snapshots],
                    "running": found.running, "protected": found.protected})  # fmt: skip


@bp.route("/containers/<container_id>/snapshots", methods=["POST"])
def create_snapshot(container_id: str) -> tuple[Response, int]:
    """Take a snapshot: ``{"name": ..., "description": ...}`` (both optional)."""
    ct, _node = find_container(container_id)
    body = Body(json_body() if request.content_length else {})
    name = body.string("name", max_length=MAX_SNAPSHOT_NAME, pattern=SNAPSHOT_NAME,
                       what="2-40 letters, digits, '-' or '_', starting with a letter")  # fmt: skip
    description = body.string("description", max_length=MAX_DESCRIPTION)
    body.finish()
    name = _check_name(name) if name else default_snapshot_name(utcnow())
    return queue(ct, "snapshot", {"name": name, "description": description})


@bp.route("/containers/<container_id>/snapshots/<snapshot>/rollback", methods=["POST"])
def rollback_snapshot(container_id: str, snapshot: str) -> tuple[Response, int]:
    """Roll back to a snapshot (409 while the container is protected)."""
    name = snapshot
    ct, node = find_container(container_id)
    _check_name(name)
    found = _snapshots(ct, node)
    snap = next((s for s in found.snapshots if s.name == name), None)
    if snap is None:
        raise ApiError(404, f"no snapshot {name!r} of this container")
    if found.protected:
        raise ApiError(409, "the container is protected: a rollback would lose its data; "
                            "unprotect it first (PATCH with protection: false)",
                       "protection")  # fmt: skip
    ct, node = find_container(container_id)  # (the node's answer ended the transaction)
    return queue(ct, "rollback", {"name": name},
                 loses=rollback_warning(snap, found.running))  # fmt: skip


@bp.route("/containers/<container_id>/snapshots/<snapshot>", methods=["DELETE"])
def delete_snapshot(container_id: str, snapshot: str) -> tuple[Response, int]:
    """Remove a snapshot."""
    name = snapshot
    ct, node = find_container(container_id)
    _check_name(name)
    if name not in {s.name for s in _snapshots(ct, node).snapshots}:
        raise ApiError(404, f"no snapshot {name!r} of this container")
    ct, node = find_container(container_id)
    return queue(ct, "delete-snapshot", {"name": name})


def _disk_now(ct: Container) -> int | None:
    """The root disk's size the record knows, in GiB (the run checks the live one)."""
    stored = StoredRequest.from_dict(ct.request)
    if stored.disk is not None:
        return stored.disk
    try:
        return load_template(resources().settings.templates_dir / ct.template).resources.disk
    except (ConfigError, OSError):
        return None


@bp.route("/containers/<container_id>", methods=["PATCH"])
def set_container(container_id: str) -> tuple[Response, int]:
    """Change a container in place (``provisioner set``): cores, memory,
    swap, disk (grow only), tags, onboot, description, protection; restart
    and on_failure say how."""
    ct, _node = find_container(container_id)
    body = Body(json_body())
    values: dict[str, Any] = {
        "cores": body.integer("cores", minimum=1, maximum=8192),
        "memory": body.integer("memory", minimum=16, maximum=2**31 - 1),
        "swap": body.integer("swap", minimum=0, maximum=2**31 - 1),
        "disk": body.integer("disk", minimum=1, maximum=131072),
        "description": body.string("description", max_length=MAX_DESCRIPTION - 100),
        "on_failure": body.choice("on_failure", ON_FAILURE, default="rollback"),
        "restart": body.boolean("restart"),
    }
    for flag in ("onboot", "protection"):
        body.seen.add(flag)
        raw = body.data.get(flag)
        if raw is not None and not isinstance(raw, bool):
            body.refuse(flag, f"{flag} must be true or false")
        values[flag] = raw
    body.seen.add("tags")
    tags = body.data.get("tags")
    if tags is not None and (not isinstance(tags, list) or
                             not all(isinstance(t, str) for t in tags)):  # fmt: skip
        body.refuse("tags", "tags must be a list of strings")
        tags = None
    values["tags"] = tuple(tags) if tags is not None else None
    body.finish()
    req = SetRequest(**values)
    problems = req.check(disk_now=_disk_now(ct) if req.disk is not None else None)
    if problems:
        errors = []
        for problem in problems:
            field, _, rest = problem.message.partition(": ")
            errors.append(ApiError(400, f"{field} {rest}", field))
        raise ApiError(400, errors[0].message, errors[0].field, errors=errors)
    return queue(ct, "set", req.to_params())


@bp.route("/containers/<container_id>/clone", methods=["POST"])
def clone_container(container_id: str) -> tuple[Response, int]:
    """Clone a ready container with a fresh identity (``provisioner clone``):
    201 as for a create, with the clone's generated root password once."""
    source, node = find_container(container_id)
    body = Body(json_body())
    hostname = body.string("hostname", required=True, max_length=253) or ""
    environment = body.string("environment", max_length=32)
    full = body.boolean("full", default=True)
    ip = body.string("ip", max_length=64) or "dhcp"
    gateway = body.string("gateway", max_length=64)
    bridge, storage = body.name("bridge"), body.name("storage")
    variables = body.scalars("variables")
    body.finish()
    req = CloneRequest(hostname=hostname, environment=environment or "staging", full=full,
                       ip=ip, gateway=gateway, bridge=bridge, storage=storage,
                       variables=variables, owner=current_user().username)  # fmt: skip
    res = resources()
    try:
        requested = request_clone(get_db(), res.box, res.settings, get_redis(), source, req)
    except ActionRefused as exc:
        raise ApiError(409, exc.message, "action") from None
    except InvalidRequest as exc:
        get_db().rollback()
        errors = [config_error(p) for p in exc.problems]
        raise ApiError(400, errors[0].message, errors[0].field, errors=errors) from None
    response, status = created(requested, node.name)
    if requested.generated_secrets:
        body_json = response.get_json()
        body_json["generated_secrets"] = requested.generated_secrets  # shown once, here only
        response = jsonify(body_json)
    return response, status


@bp.route("/containers/<container_id>/sync", methods=["POST"], defaults={"action": "sync"})
@bp.route("/containers/<container_id>/promote", methods=["POST"], defaults={"action": "promote"})
def refresh_container(container_id: str, action: str) -> tuple[Response, int]:
    """Sync a clone from its source, or promote its data to the source:
    ``{"on_failure": ..., "anonymise": ...}`` (optional).  202; the run is
    the receiving container's (a promote's: the source's), so follow the
    ``events_url`` answered."""
    clone, _node = find_container(container_id)
    body = Body(json_body() if request.content_length else {})
    on_failure = body.choice("on_failure", ON_FAILURE, default="rollback")
    body.seen.add("anonymise")
    anonymise = body.data.get("anonymise")
    if anonymise is not None and not isinstance(anonymise, bool):
        body.refuse("anonymise", "anonymise must be true or false")
    if action == "promote" and anonymise is not None:
        body.refuse("anonymise", "anonymise applies to a sync only")
    body.finish()
    try:
        target, peer = refresh_pair(get_db(), resources().settings, clone, action)
    except ActionRefused as exc:
        raise ApiError(409, exc.message, "action") from None
    params: dict[str, Any] = {"on_failure": on_failure}
    if action == "promote":
        params["from"] = peer.id
    if anonymise is not None:
        params["anonymise"] = anonymise
    return queue(target, action, params)

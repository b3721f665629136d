"""Client sandboxes through the REST API (docs/sandboxes.md).

``POST /api/sandboxes`` checks every field (400 naming each), asks the live
site read-only whether it answers and takes the Application Password (400
naming ``from`` or ``app_password`` when not), then stores and queues the
sandbox (201), or answers the client's existing one (200) unless ``new``.
The caller owns what it asks for: a user who is not an administrator sees,
extends and expires only their own sandboxes.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request
from sqlalchemy import select

from provisioner.errors import ConfigError, InvalidRequest
from provisioner.models import Container, Node, utcnow
from provisioner.request_checks import field_of
from provisioner.sandbox_expiry import expire_now
from provisioner.sandbox_requests import (
    SandboxRequest,
    extend_sandbox,
    list_sandboxes,
    request_sandbox,
    sandbox_json,
)
from web.api import ApiError, Body, bp, json_body
from web.api_containers import created, find_container
from web.auth import current_user
from web.resources import get_db, get_redis, resources


def _invalid(exc: InvalidRequest) -> ApiError:
    errors = [ApiError(400, p.message, field_of(p.message)) for p in exc.problems]
    first = errors[0]
    return ApiError(400, first.message, first.field, errors=errors)


def _mine(container_id: str) -> Container:
    ct, _node = find_container(container_id)
    user = current_user()
    if ct.sandbox is None or (not user.is_admin and ct.owner != user.username):
        raise ApiError(404, f"no sandbox {container_id!r}")
    return ct


@bp.route("/sandboxes")
def list_sandboxes_api() -> Response:
    """Sandboxes (an administrator's: all; anyone else's: their own),
    soonest expiry first.  Query: ``client``, ``include_destroyed``."""
    user = current_user()
    owner = None if user.is_admin else user.username
    rows = list_sandboxes(get_db(), request.args.get("client") or None, owner,
                          request.args.get("include_destroyed", "").lower() in ("1", "true"))  # fmt: skip
    return jsonify({"sandboxes": [sandbox_json(ct) for ct in rows]})


@bp.route("/sandboxes", methods=["POST"])
def create_sandbox() -> tuple[Response, int]:
    """``{"from", "client", "user", "app_password", "ttl"?, "new"?,
    "fingerprint"?, "node"?, "hostname"?, "variables"?}``."""
    body = Body(json_body())
    source_url = body.string("from", required=True, max_length=2048)
    client = body.string("client", required=True, max_length=40)
    user = body.string("user", required=True, max_length=60)
    app_password = body.string("app_password", required=True, max_length=256)
    ttl = body.string("ttl", max_length=32)
    new = body.boolean("new")
    fingerprint = body.string("fingerprint", max_length=200)
    node = body.name("node")
    hostname = body.string("hostname", max_length=63)
    variables = body.scalars("variables")
    body.finish()
    db = get_db()
    if node is None:
        names = list(db.scalars(select(Node.name)))
        if len(names) != 1:
            raise ApiError(400, "node: choose one of " + (", ".join(names) or "none registered"),
                           "node")  # fmt: skip
        node = names[0]
    req = SandboxRequest(source_url=source_url or "", client=client or "", user=user or "",
                         app_password=app_password or "", node=node, ttl=ttl or None,
                         owner=current_user().username, new=new, fingerprint=fingerprint,
                         hostname=hostname or None,
                         variables={k: str(v) for k, v in variables.items()})  # fmt: skip
    res = resources()
    try:
        got = request_sandbox(db, res.box, res.settings, get_redis(), req)
    except InvalidRequest as exc:
        raise _invalid(exc) from None
    except ConfigError as exc:
        raise ApiError(400, exc.message, field_of(exc.message)) from None
    if got.existing or got.requested is None:
        return jsonify({"id": got.container.id, "existing": True,
                        "sandbox": sandbox_json(got.container)}), 200  # fmt: skip
    response, status = created(got.requested, node)
    data: dict[str, Any] = response.get_json()
    data.update(existing=False, sandbox=sandbox_json(got.container))
    if got.requested.generated_secrets:
        data["generated_secrets"] = dict(got.requested.generated_secrets)
    return jsonify(data), status


@bp.route("/sandboxes/<container_id>/extend", methods=["POST"])
def extend_sandbox_api(container_id: str) -> Response:
    """``{"by": "7d"}``: the expiry pushed back (from now when overdue)."""
    ct = _mine(container_id)
    body = Body(json_body())
    by = body.string("by", required=True, max_length=32)
    body.finish()
    try:
        extend_sandbox(get_db(), ct, by or "")
    except InvalidRequest as exc:
        raise _invalid(exc) from None
    get_db().commit()
    return jsonify(sandbox_json(ct))


@bp.route("/sandboxes/<container_id>/expire", methods=["POST"])
def expire_sandbox_api(container_id: str) -> tuple[Response, int]:
    """End the sandbox now: its expired event and its destroy (202)."""
    ct = _mine(container_id)
    cid = ct.id
    get_db().commit()
    res = resources()
    try:
        expire_now(res.settings, res.factory, get_redis(), cid, utcnow())
    except InvalidRequest as exc:
        raise ApiError(409, exc.problems[0].message, "id") from None
    return jsonify({"id": cid, "expired": True}), 202

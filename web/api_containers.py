"""``/api/containers``: request containers, watch them, act on them.

Creating one validates everything (``provisioner.requests``), stores the row
and enqueues one job (``provisioner.queue``): the web app never imports the
pipeline.  The generated root password is returned by the create call only;
no other response carries a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from flask import Response, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from provisioner import lease, views
from provisioner.changes import ON_FAILURE
from provisioner.errors import ConfigError, InvalidRequest, ProvisionError, TransientError
from provisioner.events import MAX_SEQ, Event
from provisioner.live import NodeStatus, claims, merge, wants_status
from provisioner.models import CONTAINER_ID, Container, ContainerEvent, Lifecycle, Node
from provisioner.node_facts import node_fact_problems
from provisioner.nodes import connection_for
from provisioner.placing import Placed, move_params, place_request, release
from provisioner.pve.http import PveConnection
from provisioner.queue import ActionPending
from provisioner.request_checks import (
    MAX_SSH_KEYS_TEXT,
    MIN_ROOT_PASSWORD,
    TEMPLATE_NAME,
    ActionRefused,
    check_network,
    check_ssh_public_keys,
)
from provisioner.requests import (
    CheckedRequest,
    ProvisionRequest,
    RequestedContainer,
    check_request,
    request_action,
    request_container,
)
from provisioner.reservations import Reservations
from provisioner.templates.surface import SURFACE_KEYS
from web.api import ApiError, Body, bp, config_error, json_body, query_int
from web.api_nodes import quick
from web.auth import current_user
from web.live import fetch_statuses
from web.resources import get_db, get_redis, resources

_LOG_PAGE = 2000
PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")  # root passwords (and the OpenAPI document)


def events_url(container_id: str, after: int | None = None) -> str:
    return f"/ws/containers/{container_id}/events" + (f"?after={after}" if after else "")


def container_json(ct: Container, node_name: str) -> dict[str, Any]:
    """A container's state and request, without a secret, with its events' URL."""
    return {**views.container_json(ct, node_name), "events_url": events_url(ct.id)}


def _rule_error(exc: ProvisionError, status: int) -> ApiError:
    """A ``provisioner.request_checks`` error (``"field: ..."``) as the API's
    (``"field ..."``, naming the field)."""
    field, _, rest = exc.message.partition(": ")
    return ApiError(status, f"{field} {rest}", field)


def _live(rows: list[tuple[Container, Node]]) -> list[dict[str, Any]]:
    """The containers' JSON with their live status (the transaction ends first)."""
    box = resources().box
    connections: dict[str, PveConnection] = {}
    broken: dict[str, NodeStatus] = {}  # a node whose stored settings no longer pass
    for ct, node in rows:
        if wants_status(ct) and node.name not in connections and node.name not in broken:
            try:
                connections[node.name] = quick(connection_for(node, box))
            except ProvisionError as exc:  # bad settings, or a secret no key decrypts
                broken[node.name] = NodeStatus({}, f"the node's settings are unusable: {exc}")
    node_claims = {name: claims(ct for ct, node in rows if node.name == name)
                   for name in connections}  # fmt: skip
    items = [(container_json(ct, node.name), node.name, wants_status(ct)) for ct, node in rows]
    get_db().commit()  # no transaction while the nodes answer
    statuses = {**broken, **fetch_statuses(resources().pve, connections, node_claims)}
    return [merge(item, statuses.get(name), ok) for item, name, ok in items]


def find_container(container_id: str) -> tuple[Container, Node]:
    if not CONTAINER_ID.fullmatch(container_id):
        raise ApiError(404, f"no container {container_id!r}")
    row = get_db().execute(select(Container, Node).join(Node, Container.node_id == Node.id)
                           .where(Container.id == container_id)).one_or_none()  # fmt: skip
    if row is None:
        raise ApiError(404, f"no container {container_id!r}")
    return row[0], row[1]


def _flag(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, f"{name} must be true or false, got {raw!r}", name)


@bp.route("/containers")
def list_containers() -> Response:
    """Containers, newest first, with their live PVE status.

    Query: ``lifecycle`` (comma-separated), ``node``, ``template``,
    ``include_destroyed`` (default false), ``live`` (default true), ``limit``.
    """
    query = select(Container, Node).join(Node, Container.node_id == Node.id)
    if request.args.get("lifecycle"):
        wanted = request.args["lifecycle"].split(",")
        unknown = [w for w in wanted if w not in {lc.value for lc in Lifecycle}]
        if unknown:
            raise ApiError(400, f"lifecycle: unknown state {unknown[0]!r} (known: "
                           f"{', '.join(lc.value for lc in Lifecycle)})", "lifecycle")  # fmt: skip
        query = query.where(Container.lifecycle.in_([Lifecycle(w) for w in wanted]))
    elif not _flag("include_destroyed", False):
        query = query.where(Container.lifecycle != Lifecycle.DESTROYED)
    if request.args.get("node"):
        query = query.where(Node.name == request.args["node"])
    if request.args.get("template"):
        query = query.where(Container.template == request.args["template"])
    limit = query_int("limit", default=500, minimum=1, maximum=5000)
    live = _flag("live", True)
    rows = [(ct, node) for ct, node in get_db().execute(
        query.order_by(Container.created_at.desc()).limit(limit)).all()]  # fmt: skip
    if not live:
        return jsonify({"containers": [container_json(ct, n.name) for ct, n in rows]})
    return jsonify({"containers": _live(rows)})


def _refuse_rule(body: Body, exc: ConfigError) -> None:
    """Record a ``provisioner`` rule's error (``"field: ..."``) as the API's
    (``"field ..."``, naming the field)."""
    error = _rule_error(exc, 400)
    body.refuse(error.field or "", error.message)


def _ip(body: Body) -> tuple[str, str | None]:
    ip = body.string("ip", max_length=64) or "dhcp"
    gateway = body.string("gateway", max_length=64)
    if body.failed("ip") or body.failed("gateway"):
        return "dhcp", None  # a placeholder: the request is refused
    try:
        return check_network(ip, gateway)
    except ConfigError as exc:
        _refuse_rule(body, exc)
    try:  # the address alone is still checked against the node when the gateway was wrong
        return check_network(ip, None)
    except ConfigError:
        return "dhcp", None


def _ssh_keys(body: Body) -> str | None:
    keys = body.string("ssh_public_key", max_length=MAX_SSH_KEYS_TEXT)
    try:
        check_ssh_public_keys(keys)
    except ConfigError as exc:
        _refuse_rule(body, exc)
    return keys


def _root_password(body: Body) -> str | None:
    password = body.string("root_password", max_length=256, pattern=PRINTABLE,
                           what="text without control characters")  # fmt: skip
    if password is not None and len(password) < MIN_ROOT_PASSWORD:
        body.refuse(
            "root_password", f"root_password must be at least {MIN_ROOT_PASSWORD} characters long"
        )
    return password


def _provision_request(body: Body) -> ProvisionRequest:
    """Every field read and checked by its own rules; problems recorded on ``body``."""
    ip, gateway = _ip(body)
    return ProvisionRequest(
        template=body.string("template", required=True, max_length=128, pattern=TEMPLATE_NAME,
                             what="a template name") or "",
        node=body.string("node", max_length=64) or "",  # none: the only node, else auto
        hostname=body.string("hostname", required=True, max_length=253) or "",
        vmid=body.integer("vmid", minimum=100, maximum=999_999_999),
        cores=body.integer("cores", minimum=1, maximum=8192),
        memory=body.integer("memory", minimum=16, maximum=64 * 1024 * 1024),
        swap=body.integer("swap", minimum=0, maximum=64 * 1024 * 1024),
        disk=body.integer("disk", minimum=1, maximum=128 * 1024),
        ip=ip, gateway=gateway,
        bridge=body.name("bridge"), storage=body.name("storage"),
        ssh_public_key=_ssh_keys(body),
        root_password=_root_password(body),
        variables=body.scalars("variables"),
        failure_policy=body.choice("failure_policy", ("keep", "destroy"), default="keep"),
        environment=body.string("environment", max_length=32),
        owner=current_user().username,  # who asks owns it: their webhooks get its events
        spread=body.string("spread", max_length=64),
        **_surface(body),
    )  # fmt: skip


def _surface(body: Body) -> dict[str, Any]:
    """The create surface's fields as sent: ``check_request`` checks them
    (``provisioner.templates.surface``), each problem naming its field."""
    empty: dict[str, Any] = {"nics": [], "tags": [], "mounts": [], "binds": [], "features": {}}
    return {name: body.value(name) if body.value(name) is not None else empty.get(name)
            for name in SURFACE_KEYS}  # fmt: skip


def _check_node_facts(body: Body, req: ProvisionRequest) -> None:
    """Record the problems of the storage, bridge and address on the node
    (``provisioner.node_facts``: asked with the app's pool and timeouts)."""
    res = resources()
    refused = {e.field for e in body.errors if e.field}
    for problem in node_fact_problems(get_db(), res.box, req, res.node_facts, lend=res.pve.client,
                                      refused=refused,
                                      connect_timeout=res.settings.web_pve_connect_timeout,
                                      read_timeout=res.settings.web_pve_read_timeout):  # fmt: skip
        error = config_error(problem)
        body.refuse(error.field or "", error.message)


def _checked(body: Body, req: ProvisionRequest) -> CheckedRequest:
    """The request checked as a whole (its node's storage, bridge and
    subnet; node, template, variables, PVE's schema); every problem of the
    body refuses it at once.

    Raises:
        ApiError: 400 with every field error.
    """
    _check_node_facts(body, req)
    checked = None
    try:
        checked = check_request(get_db(), resources().settings, req)
    except InvalidRequest as exc:
        get_db().rollback()
        for problem in exc.problems:
            error = config_error(problem)
            body.refuse(error.field or "", error.message)
    body.finish()
    assert checked is not None  # finish() raised otherwise
    return checked


def _place(body: Body, req: ProvisionRequest) -> tuple[ProvisionRequest, Placed | None]:
    """The request with its node (``provisioner.placing``: the only node when
    it names none, the node placement chooses for ``auto``, reserved)."""
    res = resources()
    try:
        return place_request(get_db(), res.box, res.settings, Reservations(get_redis()), req,
                             lend=res.pve.client,
                             connect_timeout=res.settings.web_pve_connect_timeout,
                             read_timeout=res.settings.web_pve_read_timeout)  # fmt: skip
    except ConfigError as exc:
        error = config_error(exc)
        body.refuse(error.field or "node", error.message)
        body.finish()
        raise AssertionError("finish() raises") from exc
    except RedisError as exc:
        raise ApiError(
            503,
            f"placement needs Redis, which failed: {exc}",
            hint="name a node, or retry when Redis is back",
        ) from None


@bp.route("/containers", methods=["POST"])
def create_container() -> tuple[Response, int]:
    """Validate, store and enqueue a container.  201 with its id, the
    websocket URL of its events, and (once, here only) a generated root password."""
    body = Body(json_body())
    req, placed = _place(body, _provision_request(body))
    res = resources()
    stored = False
    try:
        checked = _checked(body, req)
        try:
            requested = request_container(
                get_db(), res.box, res.settings, get_redis(), req, checked,
                container_id=placed.container_id if placed else None,
                placement=placed.to_json() if placed else None)  # fmt: skip
        except ActionRefused as exc:
            raise _rule_error(exc, 409) from None
        except ConfigError as exc:
            raise config_error(exc) from None
        stored = True
    finally:
        if placed is not None and not stored:  # refused: the node is not held for it
            release(get_redis(), placed.container_id)
    return created(requested, req.node)


def created(requested: RequestedContainer, node_name: str) -> tuple[Response, int]:
    """201 for a stored (and queued) container: its id, the websocket URL of
    its events, and (once, here only) a generated root password and the
    generated values of the template's secret variables."""
    container = requested.container
    response: dict[str, Any] = {"id": container.id, "events_url": events_url(container.id),
                                "job_id": requested.job_id}  # fmt: skip
    warning = requested.queue_warning()
    if warning is not None:  # the row is pending: the workers' recovery loop enqueues it later
        response["warning"] = warning
    response["container"] = container_json(container, node_name)
    if requested.root_password is not None:
        response["root_password"] = requested.root_password
    if requested.generated_secrets:  # the secret variables generated for it: once, here only
        response["generated_secrets"] = requested.generated_secrets
    return jsonify(response), 201


@bp.route("/containers/<container_id>")
def get_container(container_id: str) -> Response:
    """One container with its live PVE status (no secrets)."""
    ct, node = find_container(container_id)
    return jsonify(_live([(ct, node)])[0])


@bp.route("/containers/<container_id>/events")
def container_events(container_id: str) -> Response:
    """Stored events with ``seq > after``, at most ``limit``, in order."""
    find_container(container_id)
    after = query_int("after", default=0, minimum=0, maximum=MAX_SEQ)
    limit = query_int("limit", default=200, minimum=1, maximum=2000)
    rows = get_db().scalars(
        select(ContainerEvent)
        .where(ContainerEvent.container_id == container_id, ContainerEvent.seq > after)
        .order_by(ContainerEvent.seq).limit(limit + 1)).all()  # fmt: skip
    events = [Event.from_row(r).as_dict() for r in rows[:limit]]
    return jsonify({"events": events, "next_after": events[-1]["seq"] if events else after,
                    "more": len(rows) > limit})  # fmt: skip


def format_log_line(e: Event) -> str:
    """One event as a line of the text log (continuation lines indented)."""
    return views.log_line(e) + "\n"


def _log_lines(factory: sessionmaker[Session], container_id: str) -> Iterator[str]:
    last = 0
    while True:
        with factory() as session:  # one short transaction per page
            rows = [Event.from_row(r) for r in session.scalars(
                select(ContainerEvent)
                .where(ContainerEvent.container_id == container_id, ContainerEvent.seq > last)
                .order_by(ContainerEvent.seq).limit(_LOG_PAGE))]  # fmt: skip
        for event in rows:
            yield format_log_line(event)
        if len(rows) < _LOG_PAGE:
            return
        last = rows[-1].seq


@bp.route("/containers/<container_id>/log")
def container_log(container_id: str) -> Response:
    """The full log as text, one event a line (streamed)."""
    find_container(container_id)
    get_db().commit()
    # the generator runs after the view returned: it gets the factory, not the app
    return Response(_log_lines(resources().factory, container_id), mimetype="text/plain")


def queue(ct: Container, action: str, params: dict[str, Any] | None,
          **extra: Any) -> tuple[Response, int]:  # fmt: skip
    """Queue an action of the container (its parameters, if any, as an
    operation): 202 with the job and the events' URL; 409 when its
    lifecycle forbids it or it is pending already; 503 when the queue's
    lock could not be had."""
    res = resources()
    cid = ct.id
    try:
        queued = request_action(get_db(), res.settings, get_redis(), ct, action, params,
                                lambda: lease.held(res.factory, cid))  # fmt: skip
    except ActionRefused as exc:
        raise ApiError(409, exc.message, "action") from None
    except ActionPending as exc:
        raise ApiError(409, str(exc), "action", job_id=exc.job_id) from None
    except TransientError as exc:
        raise ApiError(503, exc.message) from None
    body = {"job_id": queued.job_id, "action": action, "container": cid,
            "events_url": events_url(cid, queued.after), **extra}  # fmt: skip
    if queued.operation_id is not None:
        body["operation"] = queued.operation_id
    return jsonify(body), 202


@bp.route("/containers/<container_id>/migrate", methods=["POST"])
def migrate_container(container_id: str) -> tuple[Response, int]:
    """Move a container to another node of its cluster: ``{"to": NODE |
    "auto"}``; 202 as for an action (``placement``: why, for ``auto``)."""
    ct, _node = find_container(container_id)
    body = Body(json_body())
    to = body.name("to", required=True)
    body.finish()
    assert to is not None
    res = resources()
    try:
        params, reasons = move_params(get_db(), res.box, res.settings, get_redis(), ct, to,
                                      lend=res.pve.client,
                                      connect_timeout=res.settings.web_pve_connect_timeout,
                                      read_timeout=res.settings.web_pve_read_timeout)  # fmt: skip
    except ConfigError as exc:
        raise config_error(exc) from None
    except RedisError as exc:
        raise ApiError(503, f"placement needs Redis, which failed: {exc}") from None
    return queue(ct, "migrate", params, **({"placement": reasons} if reasons else {}))


@bp.route("/containers/<container_id>/actions/<any(start,stop,reboot,destroy,retry,resync):action>",
          methods=["POST"])  # fmt: skip
def container_action(container_id: str, action: str) -> tuple[Response, int]:
    """Enqueue an action; 202 with the job id (progress arrives as events).
    A resync takes an optional body: ``{"on_failure": "rollback" | "keep"}``."""
    ct, _node = find_container(container_id)
    params = None
    if action == "resync":
        body = Body(json_body() if request.content_length else {})
        params = {"on_failure": body.choice("on_failure", ON_FAILURE, default="rollback")}
        body.finish()
    return queue(ct, action, params)

"""The HTTP face of the simulator: PVE's ``/api2/json`` plus the admin API.

Authentication, the ``{"data": ...}`` envelope, reason-phrase errors, schema
validation and injected HTTP faults all happen here, once, for every call;
the handlers below only translate validated parameters into node calls.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from provisioner.pve.schema import ApiSchema, ParameterError, load_api_schema
from pvesim import ct_template, info, lxcops, storage, tasks
from pvesim.auth import Authenticator, AuthError
from pvesim.errors import PveError, param_error
from pvesim.faults import HttpFault, TaskFault
from pvesim.node import Node
from pvesim.upid import parse_upid

log = logging.getLogger(__name__)

Handler = Callable[[Node, dict[str, Any], str], Awaitable[Any]]
HANDLERS: dict[tuple[str, str], Handler] = {}
NODE_KEY: web.AppKey[Node] = web.AppKey("node", Node)
SCHEMA_KEY: web.AppKey[ApiSchema] = web.AppKey("schema", ApiSchema)
# set by pvesim.cluster when serving several nodes: its handlers (added to and
# replacing HANDLERS), the proxying of /nodes/{node}/... and its admin actions
HANDLERS_KEY: web.AppKey[dict[tuple[str, str], Handler]] = web.AppKey("handlers", dict)
RESOLVE_KEY: web.AppKey[Callable[[Node, str], Node]] = web.AppKey("resolve")
ADMIN_KEY: web.AppKey[Callable[..., Awaitable[Any]]] = web.AppKey("admin")


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        HANDLERS[(method, template)] = fn
        return fn

    return deco


def _reason(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "error"
    # the reason phrase is latin-1 on the wire
    return first.encode("latin-1", "replace").decode("latin-1")[:500]


def json_response(body: Any, status: int = 200, reason: str | None = None) -> web.Response:
    """JSON with the exact headers pve-http-server sends (some clients
    compare the content type as a string)."""
    return web.Response(status=status, reason=reason, body=json.dumps(body).encode(),
                        headers={"Content-Type": "application/json;charset=UTF-8",
                                 "Server": "pve-api-daemon/3.0", "Cache-Control": "max-age=0",
                                 "Pragma": "no-cache"})  # fmt: skip


def error_response(status: int, message: str, errors: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"data": None, "message": message.rstrip("\n") + "\n"}
    if errors:
        body["errors"] = errors
    return json_response(body, status, _reason(message))


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.method in ("POST", "PUT", "DELETE") and request.can_read_body:
        raw = await request.read()
        ctype = request.content_type
        if ctype == "application/json" and raw.strip():
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise PveError(400, f"unable to parse JSON body: {exc}") from exc
            if not isinstance(body, dict):
                raise PveError(400, "JSON body must be an object")
            params.update(body)
        elif raw:
            params.update(dict(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True)))
    return params


async def _authenticate(request: web.Request, auth: Authenticator) -> str:
    header = request.headers.get("Authorization", "")
    if header.startswith("PVEAPIToken="):
        try:
            return auth.verify_token(header.removeprefix("PVEAPIToken="))
        except AuthError as exc:
            raise PveError(401, str(exc)) from exc
    ticket = request.cookies.get("PVEAuthCookie")
    if not ticket:
        raise PveError(401, "No ticket")
    try:
        user, stamp = auth.verify_ticket(urllib.parse.unquote(ticket))
    except AuthError as exc:
        raise PveError(401, str(exc)) from exc
    if request.method != "GET" and not auth.verify_csrf(
        request.headers.get("CSRFPreventionToken"), user, stamp
    ):
        raise PveError(401, "Permission denied - invalid csrf token")
    return user


async def api_entry(request: web.Request) -> web.Response:
    node, schema = request.app[NODE_KEY], request.app[SCHEMA_KEY]
    auth = node.auth
    path = "/" + request.match_info["path"].strip("/")
    method = request.method
    handlers = request.app.get(HANDLERS_KEY, HANDLERS)
    try:
        found = schema.match(method, path)
        if found is None or (method, found[0]) not in handlers:
            raise PveError(501, f"Method '{method} {path}' not implemented")
        template, path_params = found
        params = await _params(request)
        if template == "/access/ticket":
            user = ""
        else:
            user = await _authenticate(request, auth)
        fault = node.faults.take_http(method, path)
        if fault is not None:
            raise PveError(fault.status, fault.message or _default_fault_message(fault.status))
        try:
            clean = schema.validate(method, template, {**params, **path_params})
        except ParameterError as exc:
            raise param_error(merge_property_errors(exc.errors)) from exc
        if "node" in clean:
            if RESOLVE_KEY in request.app:  # a cluster: the named node handles it
                node = request.app[RESOLVE_KEY](node, str(clean["node"]))
            else:
                info.check_node(node, str(clean["node"]))
        data = await handlers[(method, template)](node, clean, user)
    except PveError as exc:
        if getattr(exc, "empty_body", False):  # a failed proxy: no body (pvesim.cluster)
            return web.Response(status=exc.status, reason=_reason(exc.message))
        return error_response(exc.status, exc.message, exc.errors)
    if isinstance(data, Counted):
        return json_response({"data": data.lines, "total": data.total})
    if isinstance(data, web.Response):
        return data
    return json_response({"data": data})


def merge_property_errors(errors: dict[str, str]) -> dict[str, str]:
    """PVE reports a property string's inner errors inside the parameter's own
    message: {"net0": "invalid format - format error\nnet0.ip: invalid ..."}."""
    out = {k: v for k, v in errors.items() if "." not in k}
    for key, msg in errors.items():
        if "." in key:
            parent = key.split(".", 1)[0]
            out[parent] = f"{out.get(parent, 'invalid format - format error')}\n{key}: {msg}"
    return out


def _default_fault_message(status: int) -> str:
    if status == 595:
        return "Errors during connection establishment, proxy handshake: Connection timed out"
    return "injected failure (pvesim)"


class Counted:
    """A list answered with PVE's ``total`` result attribute
    (``$rpcenv->set_result_attrib('total', ...)``) beside ``data``."""

    def __init__(self, lines: list[dict[str, Any]], total: int) -> None:
        self.lines, self.total = lines, total


# --- access -------------------------------------------------------------------
@route("POST", "/access/ticket")
async def create_ticket(node: Node, p: dict[str, Any], _user: str) -> Any:
    auth = node.auth
    try:
        user = auth.login(str(p["username"]), str(p["password"]), p.get("realm"))
    except AuthError as exc:
        raise PveError(401, "authentication failure") from exc
    ticket, csrf = auth.issue_ticket(user)
    return {"username": user, "ticket": ticket, "CSRFPreventionToken": csrf,
            "cap": {"vms": {}, "nodes": {}, "storage": {}, "access": {}, "dc": {}, "sdn": {}}}  # fmt: skip


@route("GET", "/access/ticket")
async def get_ticket(node: Node, p: dict[str, Any], user: str) -> Any:
    return None


# --- cluster and node ---------------------------------------------------------
@route("GET", "/version")
async def get_version(node: Node, p: dict[str, Any], user: str) -> Any:
    return info.version()


@route("GET", "/nodes")
async def get_nodes(node: Node, p: dict[str, Any], user: str) -> Any:
    return [info.node_entry(node)]


@route("GET", "/nodes/{node}/status")
async def get_node_status(node: Node, p: dict[str, Any], user: str) -> Any:
    return info.node_status(node)


@route("GET", "/cluster/status")
async def get_cluster_status(node: Node, p: dict[str, Any], user: str) -> Any:
    """PVE::API2::ClusterConfig status of a standalone node: no ``cluster``
    entry, its own ``node`` entry (a cluster's is pvesim.cluster's)."""
    return [{"type": "node", "id": f"node/{node.name}", "name": node.name, "nodeid": 0,
             "ip": "127.0.0.1", "local": 1, "online": 1, "level": ""}]  # fmt: skip


@route("GET", "/cluster/resources")
async def get_resources(node: Node, p: dict[str, Any], user: str) -> Any:
    return info.cluster_resources(node, p.get("type"))


@route("GET", "/pools")
async def get_pools(node: Node, p: dict[str, Any], user: str) -> Any:
    if not p.get("poolid"):
        return node.pools.index()
    resources = info.cluster_resources(node, None)
    guests = [r for r in resources if r["type"] == "lxc"]
    storages = [r for r in resources if r["type"] == "storage"]
    return node.pools.read(str(p["poolid"]), p.get("type"), guests, storages)


@route("POST", "/pools")
async def post_pool(node: Node, p: dict[str, Any], user: str) -> Any:
    node.pools.create(str(p["poolid"]), p.get("comment"))


@route("PUT", "/pools")
async def put_pool(node: Node, p: dict[str, Any], user: str) -> Any:
    node.pools.update(str(p["poolid"]), p)


@route("DELETE", "/pools")
async def delete_pool(node: Node, p: dict[str, Any], user: str) -> Any:
    node.pools.delete(str(p["poolid"]))


@route("GET", "/cluster/nextid")
async def get_nextid(node: Node, p: dict[str, Any], user: str) -> Any:
    return info.nextid(node, p.get("vmid"))


@route("GET", "/nodes/{node}/network")
async def get_network(node: Node, p: dict[str, Any], user: str) -> Any:
    return info.network_list(node, p.get("type"))


# --- storage ------------------------------------------------------------------
@route("GET", "/storage")
async def get_datacenter_storages(node: Node, p: dict[str, Any], user: str) -> Any:
    return storage.datacenter_storages(p.get("type"))


@route("GET", "/storage/{storage}")
async def get_storage_config(node: Node, p: dict[str, Any], user: str) -> Any:
    return storage.read_storage(str(p["storage"]))


@route("GET", "/nodes/{node}/storage")
async def get_storages(node: Node, p: dict[str, Any], user: str) -> Any:
    return storage.list_storages(node, p)


@route("GET", "/nodes/{node}/storage/{storage}/status")
async def get_storage_status(node: Node, p: dict[str, Any], user: str) -> Any:
    return storage.storage_status(node, p["storage"])


@route("GET", "/nodes/{node}/storage/{storage}/content")
async def get_storage_content(node: Node, p: dict[str, Any], user: str) -> Any:
    return storage.list_content(node, p["storage"], p)


@route("GET", "/nodes/{node}/aplinfo")
async def get_aplinfo(node: Node, p: dict[str, Any], user: str) -> Any:
    return storage.aplinfo()


@route("POST", "/nodes/{node}/aplinfo")
async def post_aplinfo(node: Node, p: dict[str, Any], user: str) -> Any:
    return await storage.aplinfo_download(node, p, user)


@route("POST", "/nodes/{node}/storage/{storage}/download-url")
async def post_download_url(node: Node, p: dict[str, Any], user: str) -> Any:
    return await storage.download_url(node, p["storage"], p, user)


# --- containers ---------------------------------------------------------------
@route("GET", "/nodes/{node}/lxc")
async def list_lxc(node: Node, p: dict[str, Any], user: str) -> Any:
    out = []
    for vmid in sorted(node.containers):
        st = node.status(vmid)
        st.pop("ha", None)
        out.append(st)
    return out


@route("POST", "/nodes/{node}/lxc")
async def create_lxc(node: Node, p: dict[str, Any], user: str) -> Any:
    return await node.create(p, user)


@route("GET", "/nodes/{node}/lxc/{vmid}")
async def lxc_index(node: Node, p: dict[str, Any], user: str) -> Any:
    node.get(p["vmid"])
    return [{"subdir": s} for s in ("config", "status", "vncproxy", "termproxy", "vncwebsocket",
                                    "spiceproxy", "migrate", "clone", "rrd", "rrddata",
                                    "firewall", "snapshot", "resize", "interfaces")]  # fmt: skip


@route("DELETE", "/nodes/{node}/lxc/{vmid}")
async def delete_lxc(node: Node, p: dict[str, Any], user: str) -> Any:
    return await node.destroy(p["vmid"], user, bool(p.get("force")))


@route("GET", "/nodes/{node}/lxc/{vmid}/config")
async def get_lxc_config(node: Node, p: dict[str, Any], user: str) -> Any:
    return lxcops.get_config(node, p["vmid"], p.get("snapshot"), bool(p.get("current")))


@route("PUT", "/nodes/{node}/lxc/{vmid}/config")
async def put_lxc_config(node: Node, p: dict[str, Any], user: str) -> Any:
    await lxcops.put_config(node, p["vmid"], p, user)
    return None


@route("GET", "/nodes/{node}/lxc/{vmid}/pending")
async def get_lxc_pending(node: Node, p: dict[str, Any], user: str) -> Any:
    return lxcops.pending(node, p["vmid"])


@route("PUT", "/nodes/{node}/lxc/{vmid}/resize")
async def lxc_resize(node: Node, p: dict[str, Any], user: str) -> Any:
    return await lxcops.resize(node, p["vmid"], p, user)


@route("GET", "/nodes/{node}/lxc/{vmid}/status")
async def lxc_status_index(node: Node, p: dict[str, Any], user: str) -> Any:
    node.get(p["vmid"])
    return [{"subdir": s} for s in ("current", "start", "stop", "shutdown", "reboot",
                                    "suspend", "resume")]  # fmt: skip


@route("GET", "/nodes/{node}/lxc/{vmid}/status/current")
async def lxc_status(node: Node, p: dict[str, Any], user: str) -> Any:
    return node.status(p["vmid"])


@route("POST", "/nodes/{node}/lxc/{vmid}/status/start")
async def lxc_start(node: Node, p: dict[str, Any], user: str) -> Any:
    return await node.start(p["vmid"], user, bool(p.get("skiplock")))


@route("POST", "/nodes/{node}/lxc/{vmid}/status/stop")
async def lxc_stop(node: Node, p: dict[str, Any], user: str) -> Any:
    return await node.stop(p["vmid"], user, bool(p.get("skiplock")))


@route("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown")
async def lxc_shutdown(node: Node, p: dict[str, Any], user: str) -> Any:
    return await node.shutdown_ct(p["vmid"], user, int(p.get("timeout", 60)),
                                  bool(p.get("forceStop")))  # fmt: skip


@route("POST", "/nodes/{node}/lxc/{vmid}/status/reboot")
async def lxc_reboot(node: Node, p: dict[str, Any], user: str) -> Any:
    return await node.reboot(p["vmid"], user, int(p.get("timeout", 60)))


@route("GET", "/nodes/{node}/lxc/{vmid}/interfaces")
async def lxc_interfaces(node: Node, p: dict[str, Any], user: str) -> Any:
    return await node.interfaces(p["vmid"])


@route("POST", "/nodes/{node}/lxc/{vmid}/clone")
async def lxc_clone(node: Node, p: dict[str, Any], user: str) -> Any:
    return await lxcops.clone(node, p["vmid"], p, user)


@route("POST", "/nodes/{node}/lxc/{vmid}/template")
async def lxc_template(node: Node, p: dict[str, Any], user: str) -> Any:
    await ct_template.convert(node, p["vmid"], user)
    return None


@route("GET", "/nodes/{node}/lxc/{vmid}/feature")
async def lxc_feature(node: Node, p: dict[str, Any], user: str) -> Any:
    return ct_template.has_feature(node, p["vmid"], str(p["feature"]), p.get("snapname"))


@route("GET", "/nodes/{node}/lxc/{vmid}/snapshot")
async def lxc_snapshots(node: Node, p: dict[str, Any], user: str) -> Any:
    return lxcops.list_snapshots(node, p["vmid"])


@route("POST", "/nodes/{node}/lxc/{vmid}/snapshot")
async def lxc_snapshot(node: Node, p: dict[str, Any], user: str) -> Any:
    return await lxcops.snapshot(node, p["vmid"], p["snapname"], str(p.get("description", "")),
                                 user)  # fmt: skip


@route("GET", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}")
async def lxc_snapshot_index(node: Node, p: dict[str, Any], user: str) -> Any:
    lxcops.snapshot_config(node, p["vmid"], p["snapname"])
    return [{"rel": "config"}, {"rel": "rollback"}]


@route("DELETE", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}")
async def lxc_delete_snapshot(node: Node, p: dict[str, Any], user: str) -> Any:
    return await lxcops.delete_snapshot(node, p["vmid"], p["snapname"], bool(p.get("force")),
                                        user)  # fmt: skip


@route("GET", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/config")
async def lxc_snapshot_config(node: Node, p: dict[str, Any], user: str) -> Any:
    return lxcops.snapshot_config(node, p["vmid"], p["snapname"])


@route("PUT", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/config")
async def lxc_update_snapshot(node: Node, p: dict[str, Any], user: str) -> Any:
    await lxcops.update_snapshot(node, p["vmid"], p["snapname"], p.get("description"))
    return None


@route("POST", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback")
async def lxc_rollback(node: Node, p: dict[str, Any], user: str) -> Any:
    return await lxcops.rollback(node, p["vmid"], p["snapname"], bool(p.get("start")), user)


# --- tasks --------------------------------------------------------------------
def _task(node: Node, upid: str) -> Any:
    """PVE::API2::Tasks: a UPID that does not parse, or whose task has no
    log file, is a parameter error - also what a real node answers in the
    moment before a new task's log exists."""
    rec = _parsed_task(node, upid)
    if rec is None:
        raise param_error({"upid": "no such task"})
    return rec


def _parsed_task(node: Node, upid: str) -> Any:
    """The task of a UPID that parses (None: no such task); a UPID that does
    not parse is PVE's ``unable to parse worker upid``."""
    try:
        parse_upid(upid)
    except ValueError:
        raise param_error({"upid": "unable to parse worker upid"}) from None
    return node.tasks.tasks.get(upid)


@route("GET", "/nodes/{node}/tasks")
async def list_tasks(node: Node, p: dict[str, Any], user: str) -> Any:
    total, entries = tasks.list_tasks(list(node.tasks.tasks.values()), p)
    return Counted(entries, total)


@route("GET", "/nodes/{node}/tasks/{upid}")
async def task_index(node: Node, p: dict[str, Any], user: str) -> Any:
    # upid_index checks nothing
    return [{"name": "log"}, {"name": "status"}]


@route("DELETE", "/nodes/{node}/tasks/{upid}")
async def stop_task(node: Node, p: dict[str, Any], user: str) -> Any:
    _task(node, p["upid"])
    node.tasks.stop(p["upid"])
    return None


@route("GET", "/nodes/{node}/tasks/{upid}/status")
async def task_status(node: Node, p: dict[str, Any], user: str) -> Any:
    return tasks.task_status(_task(node, p["upid"]))


@route("GET", "/nodes/{node}/tasks/{upid}/log")
async def task_log(node: Node, p: dict[str, Any], user: str) -> Any:
    """read_task_log: PVE::Tools::dump_logfile of the task's log file (a
    well-formed UPID without one reads as PVE's ``unable to open file`` line)."""
    rec = _parsed_task(node, str(p["upid"]))
    if rec is None:
        return Counted([{"n": 1, "t": "unable to open file - No such file or directory"}], 1)
    total, lines = tasks.dump_log(rec.log, int(p.get("start") or 0), int(p.get("limit", 50)))
    return Counted(lines, total)


# --- the admin API (outside /api2/json) ---------------------------------------
async def admin_entry(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    auth = node.auth
    try:
        await _authenticate(request, auth)
        action = request.match_info["action"]
        body = await request.json() if request.can_read_body else {}
        if not isinstance(body, dict):
            raise PveError(400, "the body must be a JSON object")
        admin = request.app.get(ADMIN_KEY, _admin)
        result = await admin(node, request.method, action, body)
    except PveError as exc:
        return error_response(exc.status, exc.message, exc.errors)
    except (ValueError, TypeError, KeyError) as exc:
        return error_response(400, f"bad fault request: {exc}")
    return json_response({"data": result})


ADMIN_ACTIONS = ("faults", "http", "task", "lock", "dhcp-delay", "ssh-refuse", "ssh-drop")


async def _admin(node: Node, method: str, action: str, body: dict[str, Any]) -> Any:
    if action == "faults" and method == "GET":
        return node.faults.describe()
    if action == "faults" and method == "DELETE":
        node.faults.clear()
        await node.end_timed_faults()
        return None
    if action not in ADMIN_ACTIONS:
        raise PveError(404, f"unknown fault '{action}'")
    if action == "faults" or method != "POST":
        raise PveError(405, f"{method} not allowed on /pvesim/{action}")
    vmid = int(body["vmid"]) if "vmid" in body and body["vmid"] is not None else None
    if action == "http":
        f = node.faults.add_http(HttpFault(path=str(body["path"]), status=int(body.get("status", 500)),
                                           count=int(body.get("count", 1)),
                                           method=body.get("method"), message=body.get("message")))  # fmt: skip
        return {"id": f.id}
    if action == "task":
        t = node.faults.add_task(TaskFault(type=str(body["type"]), vmid=vmid,
                                           error=body.get("error"),
                                           delay=float(body.get("delay", 0)),
                                           warnings=int(body.get("warnings", 0)),
                                           count=int(body.get("count", 1))))  # fmt: skip
        return {"id": t.id}
    if vmid is None:
        raise PveError(400, "vmid is required for this fault")
    node.get(vmid)
    seconds = float(body.get("seconds", 0))
    if action == "lock":
        if body.get("kind") == "file":
            await node.hold_file_lock(vmid, seconds)
        else:
            await node.hold_lock(vmid, str(body.get("lock", "backup")), seconds)
        return None
    if action == "dhcp-delay":
        node.faults.dhcp_delay[vmid] = seconds
        return None
    if action == "ssh-refuse":
        await node.refuse_ssh(vmid, seconds)
        return None
    return {"dropped": await node.drop_ssh(vmid)}  # ssh-drop


def create_app(node: Node) -> web.Application:
    app = web.Application(client_max_size=16 << 20)
    app[NODE_KEY] = node
    app[SCHEMA_KEY] = load_api_schema()
    app.router.add_route("*", "/api2/json/{path:.*}", api_entry)
    app.router.add_route("*", "/pvesim/{action}", admin_entry)
    return app

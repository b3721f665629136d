"""``/api/openapi.json``: the REST API described as OpenAPI 3.1.

Written by hand next to the routes; a test proves that every ``/api`` route
is described with its methods, and nothing else is.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from web.api import bp

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _list(key: str, item: str) -> dict[str, Any]:
    return {"type": "object", "properties": {key: {"type": "array", "items": _ref(item)}}}


_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "400": {"$ref": "#/components/responses/BadRequest"},
}
_NOT_FOUND = {"404": {"$ref": "#/components/responses/NotFound"}}
_UPSTREAM = {"502": {"$ref": "#/components/responses/Upstream"}}
_ADMIN = {"403": {"$ref": "#/components/responses/Forbidden"}}


def _op(summary: str, tag: str, ok: dict[str, Any], *, status: str = "200",
        body: str | None = None, params: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    op: dict[str, Any] = {"summary": summary, "tags": [tag],
                          "responses": {status: ok, **_ERRORS, **(extra or {})}}  # fmt: skip
    if body:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", **schema}}  # fmt: skip


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}  # fmt: skip


NODE = _path_param("name", "the node's name in the provisioner")
CONTAINER = _path_param("id", "the container's id (a UUID)")
ACTION = _path_param("action", "what to do", enum=["start", "stop", "reboot", "destroy",
                                                   "retry", "resync"])  # fmt: skip
INT = {"type": "integer"}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
NSTR = {"type": ["string", "null"]}
NINT = {"type": ["integer", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": STR, "field": {**STR, "description": "the input field to blame"}}},
    "Me": {"type": "object", "properties": {"username": STR, "is_admin": BOOL,
           "auth": {"enum": ["session", "token"]},
           "csrf_token": {**STR, "description": "session callers: send it as X-CSRF-Token"}}},
    "Node": {"type": "object", "properties": {
        "name": STR, "host": STR, "port": INT, "pve_node": STR, "auth": {"enum": ["token",
        "password"]}, "user": STR, "token_id": NSTR, "ca_file": NSTR, "fingerprint": NSTR,
        "insecure": BOOL, "default_storage": NSTR, "default_bridge": NSTR, "containers": INT,
        "created_at": STR}},
    "NodeCreate": {"type": "object", "required": ["name", "host"], "additionalProperties": False,
                   "properties": {
        "name": STR, "host": STR, "port": {**INT, "default": 8006},
        "pve_node": {**STR, "description": "discovered when the cluster has one node"},
        "token_id": {**STR, "description": "user@realm!name (preferred)"}, "token_secret": STR,
        "user": {**STR, "description": "user@realm, with password"}, "password": STR,
        "ca_file": {**STR, "description": "absolute path on the server"},
        "fingerprint": {**STR, "description": "SHA-256 of the node's certificate"},
        "insecure": BOOL, "default_storage": STR, "default_bridge": STR,
        "verify": {**BOOL, "default": True, "description": "connect before storing"}}},
    "Variable": {"type": "object", "properties": {
        "name": STR, "type": {"enum": ["string", "int", "bool", "choice", "password"]},
        "description": STR, "default": {}, "required": BOOL, "secret": BOOL, "multiline": BOOL,
        "pattern": NSTR, "min": NINT, "max": NINT, "min_length": NINT, "max_length": NINT,
        "choices": {"type": "array", "items": STR}, "generated_length": NINT}},
    "Template": {"type": "object", "properties": {
        "name": STR, "description": STR, "tags": {"type": "array", "items": STR},
        "ostemplate": STR, "unprivileged": BOOL, "resources": {"type": "object"},
        "features": {"type": "object"},
        "variables": {"type": "array", "items": _ref("Variable")},
        "files": {"type": "array"}, "scripts": {"type": "array"}, "packages": {"type": "object"},
        "snapshot": NSTR, "health": {"type": ["object", "null"]}}},
    "ContainerCreate": {"type": "object", "required": ["template", "node", "hostname"],
                        "additionalProperties": False, "properties": {
        "template": STR, "node": STR, "hostname": STR, "vmid": INT, "cores": INT, "memory": INT,
        "swap": INT, "disk": {**INT, "description": "GiB"},
        "ip": {**STR, "description": "'dhcp' (default) or 198.18.0.10/24"}, "gateway": STR,
        "bridge": STR, "storage": STR, "ssh_public_key": STR,
        "root_password": {**STR, "description": "generated (and returned once) when absent"},
        "variables": {"type": "object"}, "failure_policy": {"enum": ["keep", "destroy"]}}},
    "Container": {"type": "object", "properties": {
        "id": STR, "node": STR, "template": STR, "hostname": STR, "vmid": NINT,
        "lifecycle": {"enum": ["pending", "creating", "ready", "error", "destroying",
                               "destroyed"]},
        "current_phase": NSTR, "finished_phases": {"type": "array", "items": STR},
        "finished_scripts": {"type": "array", "items": STR}, "failure_policy": STR,
        "ip": NSTR, "ssh_host_key_fingerprint": NSTR, "services": {"type": "array"},
        "error": NSTR, "error_details": {"type": ["object", "null"]}, "attempts": INT,
        "last_seq": INT, "request": {"type": "object"}, "variables": {"type": "object"},
        "secret_variables": {"type": "array", "items": STR}, "created_at": STR,
        "updated_at": STR, "started_at": NSTR, "finished_at": NSTR, "events_url": STR,
        "pve": {"type": ["object", "null"], "description": "live status from the node"},
        "pve_error": {**NSTR, "description": "why there is no live status"}}},
    "Created": {"type": "object", "required": ["id", "events_url"], "properties": {
        "id": STR, "events_url": STR, "job_id": NSTR, "container": _ref("Container"),
        "root_password": {**STR, "description": "the generated root password: shown only here"},
        "warning": STR}},
    "Event": {"type": "object", "required": ["seq", "container", "type", "ts"], "properties": {
        "seq": INT, "container": STR,
        "type": {"enum": ["step", "log", "warning", "complete", "error"]},
        "phase": {"enum": ["create", "start", "deploy", "scripts", "finalize"]},
        "percent": INT, "message": STR, "stream": {"enum": ["stdout", "stderr"]},
        "script": STR, "ts": STR}},
    "Events": {"type": "object", "properties": {
        "events": {"type": "array", "items": _ref("Event")}, "next_after": INT, "more": BOOL}},
    "Job": {"type": "object", "properties": {"job_id": STR, "action": STR, "container": STR,
                                             "events_url": STR}},
}  # fmt: skip

PATHS: dict[str, Any] = {
    "/api/me": {"get": _op("The caller", "session", _json(_ref("Me"), "the caller"))},
    "/api/openapi.json": {"get": _op("This document", "session",
                                     _json({"type": "object"}, "OpenAPI 3.1"))},
    "/api/nodes": {
        "get": _op("List nodes", "nodes", _json(_list("nodes", "Node"), "the nodes")),
        "post": _op("Add a node (administrators)", "nodes", _json(_ref("Node"), "added"),
                    status="201", body="NodeCreate",
                    extra={"409": {"$ref": "#/components/responses/Conflict"}, **_ADMIN}),
    },
    "/api/nodes/{name}": {
        "parameters": [NODE],
        "get": _op("One node", "nodes", _json(_ref("Node"), "the node"), extra=_NOT_FOUND),
        "delete": _op("Remove a node without containers (administrators)", "nodes",
                      {"description": "removed"}, status="204",
                      extra={**_NOT_FOUND, **_ADMIN,
                             "409": {"$ref": "#/components/responses/Conflict"}}),
    },
    "/api/nodes/{name}/test": {"parameters": [NODE], "post": _op(
        "Connect and return the PVE version", "nodes",
        _json({"type": "object", "properties": {"ok": BOOL, "version": {"type": "object"},
                                                "online": BOOL}}, "reachable"),
        extra={**_NOT_FOUND, **_UPSTREAM})},
    "/api/nodes/{name}/storages": {"parameters": [NODE], "get": _op(
        "The node's storages", "nodes", _json({"type": "object"}, "storages"),
        params=[_query("content", "only storages holding this content (rootdir, vztmpl)", STR)],
        extra={**_NOT_FOUND, **_UPSTREAM})},
    "/api/nodes/{name}/bridges": {"parameters": [NODE], "get": _op(
        "The node's bridges", "nodes", _json({"type": "object"}, "bridges"),
        extra={**_NOT_FOUND, **_UPSTREAM})},
    "/api/nodes/{name}/templates": {"parameters": [NODE], "get": _op(
        "OS templates on the node", "nodes", _json({"type": "object"}, "OS templates"),
        extra={**_NOT_FOUND, **_UPSTREAM})},
    "/api/nodes/{name}/resources": {"parameters": [NODE], "get": _op(
        "Free CPU and memory", "nodes", _json({"type": "object"}, "resources"),
        extra={**_NOT_FOUND, **_UPSTREAM})},
    "/api/templates": {"get": _op("List container templates", "templates", _json(
        {"type": "object", "properties": {"templates": {"type": "array", "items":
         _ref("Template")}, "invalid": {"type": "array"}}}, "the templates"))},
    "/api/templates/{name}": {
        "parameters": [_path_param("name", "the template's name")],
        "get": _op("One template with its variables", "templates",
                   _json(_ref("Template"), "the template"), extra=_NOT_FOUND)},
    "/api/containers": {
        "get": _op("List containers with their live status", "containers",
                   _json(_list("containers", "Container"), "the containers"), params=[
                       _query("lifecycle", "comma-separated states", STR),
                       _query("node", "only this node", STR),
                       _query("template", "only this template", STR),
                       _query("include_destroyed", "include destroyed ones", BOOL),
                       _query("live", "ask the nodes for live status (default true)", BOOL),
                       _query("limit", "at most this many", INT)]),
        "post": _op("Request a container", "containers", _json(_ref("Created"), "stored and "
                    "queued; follow events_url"), status="201", body="ContainerCreate",
                    extra={"409": {"$ref": "#/components/responses/Conflict"}}),
    },
    "/api/containers/{id}": {"parameters": [CONTAINER], "get": _op(
        "One container with its live status", "containers",
        _json(_ref("Container"), "the container"), extra=_NOT_FOUND)},
    "/api/containers/{id}/events": {"parameters": [CONTAINER], "get": _op(
        "Stored events, paginated by seq", "containers", _json(_ref("Events"), "events"),
        params=[_query("after", "only events with a greater seq", INT),
                _query("limit", "at most this many (1-2000)", INT)], extra=_NOT_FOUND)},
    "/api/containers/{id}/log": {"parameters": [CONTAINER], "get": _op(
        "The full log as text", "containers",
        {"description": "one event a line", "content": {"text/plain": {"schema": STR}}},
        extra=_NOT_FOUND)},
    "/api/containers/{id}/actions/{action}": {"parameters": [CONTAINER, ACTION], "post": _op(
        "Enqueue an action", "containers", _json(_ref("Job"), "queued"), status="202",
        extra={**_NOT_FOUND, "409": {"$ref": "#/components/responses/Conflict"}})},
}  # fmt: skip


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "lxc-provisioner",
        "version": "1",
        "description": (
            "Provision LXC containers on Proxmox VE.  Authenticate with "
            "`Authorization: Bearer <token>` (`provisioner token create`) or the dashboard "
            "session (state-changing calls then need the `X-CSRF-Token` header; see /api/me).  "
            "Live events: the websocket `/ws/containers/{id}/events?after=<seq>` sends one "
            "Event per message and closes after `complete` or `error`."
        ),
    },
    "security": [{"bearer": []}, {"session": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "provisioner_session"},
        },
        "responses": {
            "BadRequest": _error("invalid input; `field` names it"),
            "Unauthorized": _error("not logged in, or a bad token"),
            "Forbidden": _error("administrators only"),
            "NotFound": _error("no such object"),
            "Conflict": _error("not possible in the object's current state"),
            "Upstream": _error("the Proxmox node failed or is unreachable"),
        },
    },
}


@bp.route("/openapi.json")
def openapi() -> Response:
    """This API as an OpenAPI 3.1 document."""
    return jsonify(DOCUMENT)

"""``/api/openapi.json``: the REST API described as OpenAPI 3.1.

Written by hand next to the routes; a test proves that every ``/api`` route
is described with its methods, and nothing else is.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from provisioner.changes import MAX_DESCRIPTION, MAX_SNAPSHOT_NAME, ON_FAILURE, SNAPSHOT_NAME
from provisioner.events import EVENT_TYPES, MAX_SEQ, OUTCOMES
from provisioner.phases import ALL_PHASES
from provisioner.request_checks import TEMPLATE_NAME
from provisioner.templates.model import HOOK_KINDS
from provisioner.templates.mounts import MAX_BINDS, MAX_MOUNTS, MOUNT_SIZE_MAX, MOUNT_SIZE_MIN
from provisioner.templates.surface import (
    FEATURE_NAMES,
    MAX_NICS,
    MAX_TAGS,
    SURFACE_KEYS,
    VLAN_MAX,
    VLAN_MIN,
)
from provisioner.webhooks import EVENTS, MAX_SECRET_LENGTH, MAX_URL_LENGTH, MIN_SECRET_LENGTH, PING
from web.api import NAME_PATTERN, bp
from web.api_containers import PRINTABLE

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _list(key: str, item: str) -> dict[str, Any]:
    return _object({key: {"type": "array", "items": _ref(item)}})


_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "400": {"$ref": "#/components/responses/BadRequest"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}
_BODY_ERRORS = {
    "413": {"$ref": "#/components/responses/TooLarge"},
    "415": {"$ref": "#/components/responses/NotJson"},
}
_NOT_FOUND = {"404": {"$ref": "#/components/responses/NotFound"}}
_UPSTREAM = {"502": {"$ref": "#/components/responses/Upstream"}}
_ADMIN = {"403": {"$ref": "#/components/responses/Forbidden"}}
_CONFLICT = {"409": {"$ref": "#/components/responses/Conflict"}}


def _op(summary: str, tag: str, ok: dict[str, Any], *, status: str = "200",
        body: str | None = None, params: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        optional_body: str | None = None) -> dict[str, Any]:  # fmt: skip
    op: dict[str, Any] = {"summary": summary, "tags": [tag],
                          "responses": {status: ok, **_ERRORS, **(extra or {})}}  # fmt: skip
    if body or optional_body:
        op["requestBody"] = {
            "required": body is not None,
            "content": {JSON: {"schema": _ref(body or optional_body or "")}},
        }
        op["responses"].update(_BODY_ERRORS)
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
WEBHOOK = {"name": "webhook_id", "in": "path", "required": True, "description": "the webhook's id",
           "schema": {"type": "integer"}}  # fmt: skip
ACTION = _path_param("action", "what to do", enum=["start", "stop", "reboot", "destroy",
                                                   "retry", "resync"])  # fmt: skip
SNAPSHOT = _path_param("snapshot", "the snapshot's name", maxLength=MAX_SNAPSHOT_NAME,
                       pattern=f"^{SNAPSHOT_NAME.pattern}$")  # fmt: skip
ON_FAILURE_SCHEMA = {"enum": list(ON_FAILURE), "default": "rollback",
                     "description": "a failed change: roll back to its safety snapshot, or "
                                    "keep the container as the failure left it"}  # fmt: skip
INT = {"type": "integer"}
NUM = {"type": "number"}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
NSTR = {"type": ["string", "null"]}
NINT = {"type": ["integer", "null"]}
NNUM = {"type": ["number", "null"]}
STRS = {"type": "array", "items": STR}
# request fields: the same bounds the API checks (web/api.py Body, web/api_*.py)
NAME = {"type": "string", "pattern": f"^{NAME_PATTERN.pattern}$",
        "description": "1-64 letters, digits and '_.-'"}  # fmt: skip


def _text(max_length: int, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, **extra}


def _int(minimum: int, maximum: int, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, **extra}


def _surface() -> dict[str, Any]:
    """The create surface's fields (``provisioner.templates.surface``)."""
    ip6 = _text(64, description="'auto' (SLAAC), 'dhcp' (DHCPv6) or 2001:db8::10/64")
    vlan = _int(VLAN_MIN, VLAN_MAX, description="a VLAN tag")
    nic = {"type": "object", "additionalProperties": False, "properties": {
        "bridge": {**NAME, "description": "default: the node's"},
        "ip": {"type": ["string", "null"], "maxLength": 64,
               "description": "'dhcp' (default), 198.18.1.10/24, or null (no IPv4)"},
        "gateway": _text(64), "ip6": ip6, "gateway6": _text(64), "vlan": vlan,
        "firewall": BOOL}}  # fmt: skip
    mount = {"type": "object", "additionalProperties": False, "required": ["path", "size"],
             "properties": {
        "path": _text(255, pattern="^/", description="where it is mounted: absolute, no '..', "
                      "not a system directory (/, /etc, /usr, ...)"),
        "size": {"oneOf": [_int(MOUNT_SIZE_MIN, MOUNT_SIZE_MAX),
                           _text(16, pattern="^[0-9]+ *([GgTt]([Ii]?[Bb]?))?$")],
                 "description": f"GiB ({MOUNT_SIZE_MIN}-{MOUNT_SIZE_MAX}), or '2G', '1T'"},
        "storage": {**NAME, "description": "default: the root disk's"},
        "backup": {**BOOL, "default": True}, "quota": {**BOOL, "default": False},
        "acl": {**BOOL, "description": "default: the storage's"}}}  # fmt: skip
    bind = {"type": "object", "additionalProperties": False, "required": ["source", "path"],
            "properties": {
        "source": _text(255, pattern="^/", description="a host directory under "
                        "PROVISIONER_BIND_MOUNT_ALLOW (none by default)"),
        "path": _text(255, pattern="^/"), "ro": {**BOOL, "default": False}}}  # fmt: skip
    return {
        "ip6": ip6, "gateway6": _text(64, description="an IPv6 address, with a static ip6"),
        "vlan": vlan, "firewall": {**BOOL, "description": "PVE's firewall flag on eth0"},
        "nics": {"type": "array", "maxItems": MAX_NICS, "items": nic,
                 "description": "further interfaces: eth1, eth2, ..."},
        "nameserver": _text(200, description="DNS servers, space- or comma-separated (at most 3)"),
        "searchdomain": _text(400, description="DNS search domains, space- or comma-separated"),
        "tags": {"type": "array", "maxItems": MAX_TAGS,
                 "items": _text(64, pattern="^[a-z0-9_][a-z0-9_+.-]*$"),
                 "description": "PVE tags besides the template's"},
        "pool": _text(64, pattern="^[A-Za-z0-9_-]+$", description="a PVE resource pool"),
        "onboot": {**BOOL, "description": "start on the node's boot (default: the template's)"},
        "startup": _text(64, pattern="^[a-z]+=[0-9]+(,[a-z]+=[0-9]+)*$",
                         description="order=N[,up=S][,down=S]"),
        "mounts": {"type": "array", "maxItems": MAX_MOUNTS, "items": mount,
                   "description": "data volumes (mp0, mp1, ...), never recreated by a resync"},
        "binds": {"type": "array", "maxItems": MAX_BINDS, "items": bind,
                  "description": "bind mounts of host directories; a container with one "
                  "cannot be cloned"},
        "features": {"type": "object", "additionalProperties": False,
                     "properties": {name: BOOL for name in FEATURE_NAMES},
                     "description": "overrides of the template's feature flags"},
    }  # fmt: skip


def _object(properties: dict[str, Any], *, optional: tuple[str, ...] = (),
            description: str | None = None) -> dict[str, Any]:  # fmt: skip
    """An object with exactly these properties: all required but ``optional``."""
    schema: dict[str, Any] = {
        "type": "object", "properties": properties, "additionalProperties": False,
        "required": [name for name in properties if name not in optional]}  # fmt: skip
    if description:
        schema["description"] = description
    return schema


_NODE = {
    "name": STR,
    "host": STR,
    "port": INT,
    "pve_node": STR,
    "auth": {"enum": ["token", "password"]},
    "user": STR,
    "token_id": NSTR,
    "ca_file": NSTR,
    "fingerprint": NSTR,
    "insecure": BOOL,
    "default_storage": NSTR,
    "default_bridge": NSTR,
    "cluster": {**NSTR, "description": "its Proxmox VE cluster (null: a standalone node)"},
    "maintenance": {**BOOL, "description": "placement skips it; a drain moves its containers"},
    "max_containers": {**NINT, "description": "placement's cap of guests (null: none)"},
    "created_at": STR,
    "containers": {**INT, "description": "containers on the node, destroyed ones not counted"},
}
_CONTAINER = {
    "id": STR,
    "node": STR,
    "template": STR,
    "hostname": STR,
    "vmid": NINT,
    "owns_container": {
        **BOOL,
        "description": "whether the record holds a CT in PVE; false "
        "when its CT is gone or someone else's (pve_error says which): "
        "destroy then only removes the record, retry creates a new CT",
    },
    "lifecycle": {"enum": ["pending", "creating", "ready", "error", "destroying", "destroyed"]},
    "current_phase": NSTR,
    "finished_phases": STRS,
    "finished_scripts": STRS,
    "failure_policy": {"enum": ["keep", "destroy"]},
    "ip": NSTR,
    "ssh_host_key_fingerprint": NSTR,
    "services": {"type": "array", "items": {"type": "object"}},
    "error": NSTR,
    "error_details": {"type": ["object", "null"]},
    "attempts": INT,
    "last_seq": INT,
    "request": _object(
        {
            k: {}
            for k in (
                "vmid",
                "cores",
                "memory",
                "swap",
                "disk",
                "ip",
                "gateway",
                "bridge",
                "storage",
                "ssh_public_key",
                *SURFACE_KEYS,
            )
        },
        optional=SURFACE_KEYS,
    ),
    "variables": {"type": "object", "description": "the non-secret variables"},
    "secret_variables": {**STRS, "description": "names only: values are never returned"},
    "created_at": STR,
    "updated_at": STR,
    "started_at": NSTR,
    "finished_at": NSTR,
    "environment": {**NSTR, "description": "production, staging, development or another name"},
    "source_id": {**NSTR, "description": "the container this one was cloned from"},
    "owner": {
        **NSTR,
        "description": "who asked for it (the API's user; the CLI's --owner): "
        "the webhooks of that owner get its events",
    },
    "change_in_flight": {
        "type": ["object", "null"],
        "description": "a change under way and its safety snapshot (resync, set, sync, promote)",
    },
    "spread_group": {**NSTR, "description": "its anti-affinity group (spread)"},
    "placement": {
        "type": ["object", "null"],
        "description": "for a request placed by node 'auto': the node, the reasons (each "
        "node left out and why) and a warning when its spread group could not be kept apart",
    },
    "events_url": STR,
    "pve": {
        "oneOf": [
            {"type": "null"},
            _object(
                {
                    "status": STR,
                    "lock": NSTR,
                    "uptime": NINT,
                    "cpu": NNUM,
                    "memory_used": NINT,
                    "memory_total": NINT,
                    "disk_used": NINT,
                    "disk_total": NINT,
                }
            ),
        ],
        "description": "the live status from the node (lists and single reads)",
    },
    "pve_error": {**NSTR, "description": "why there is no live status"},
}

_WEBHOOK = {
    "id": INT,
    "owner": {**NSTR, "description": "whose containers' events it gets; null: every container's"},
    "url": STR,
    "events": {"type": "array", "items": {"enum": list(EVENTS)}},
    "active": BOOL,
    "created_at": STR,
}
_ATTEMPT = _object({"attempt": INT, "at": STR, "status_code": NINT, "error": NSTR, "ms": INT})
_DELIVERY = {
    "id": {**STR, "description": "also the X-Provisioner-Delivery header"},
    "webhook_id": INT,
    "container_id": NSTR,
    "event": {"enum": [*EVENTS, PING]},
    "status": {"enum": ["pending", "delivered", "failed"]},
    "attempts": INT,
    "last_status_code": NINT,
    "last_error": NSTR,
    "created_at": STR,
    "next_attempt_at": {**NSTR, "description": "when a pending delivery is tried (again)"},
    "delivered_at": NSTR,
    "history": {"type": "array", "items": _ATTEMPT, "description": "every attempt, oldest first"},
    "payload": {
        "type": "object",
        "description": "the body as sent: states and links, never a secret",
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "additionalProperties": False,
              "properties": {
        "error": STR, "field": {**STR, "description": "the input field to blame (the first "
                                "of errors)"},
        "errors": {"type": "array", "minItems": 1, "description": "every field error of the "
                   "request, in the order found (with field; the first is error and field)",
                   "items": _object({"field": STR, "message": STR})},
        "transient": {**BOOL, "description": "502: whether trying again may help"},
        "job_id": {**STR, "description": "409 on an action: the same action's job"},
        "problems": {**STRS, "description": "422: the template's problems"}}},
    "Me": _object({"username": STR, "is_admin": BOOL, "auth": {"enum": ["session", "token"]},
                   "csrf_token": {**STR, "description": "session callers: send it as "
                                  "X-CSRF-Token"}}, optional=("csrf_token",)),
    "Node": _object(_NODE),
    "NodeAdded": _object({**_NODE, "version": {"type": ["object", "null"],
                          "description": "the node's PVE version (null with verify false)"}}),
    "NodeCreate": {"type": "object", "required": ["name", "host"], "additionalProperties": False,
                   "properties": {
        "name": NAME, "host": _text(255, minLength=1, description="a DNS name or an IP address"),
        "port": _int(1, 65535, default=8006),
        "pve_node": _text(64, description="discovered when the cluster has one node"),
        "token_id": _text(255, description="user@realm!name (preferred)"),
        "token_secret": _text(1024), "user": _text(128, description="user@realm, with password"),
        "password": _text(1024), "ca_file": _text(1024, description="absolute path on the server"),
        "fingerprint": _text(128, description="SHA-256 of the node's certificate"),
        "insecure": BOOL, "default_storage": NAME, "default_bridge": NAME,
        "verify": {**BOOL, "default": True, "description": "connect before storing"}}},
    "NodeTest": _object({"ok": BOOL, "version": {"type": "object"}, "online": BOOL}),
    "Storages": _object({"storages": {"type": "array", "items": _object({
        "name": STR, "type": STR, "content": STRS, "total": INT, "used": INT, "avail": INT,
        "active": BOOL, "enabled": BOOL, "shared": BOOL})}}),
    "Bridges": _object({"bridges": {"type": "array", "items": _object({
        "name": STR, "active": BOOL, "cidr": NSTR, "comments": NSTR})}}),
    "OsTemplates": _object({"templates": {"type": "array", "items": _object({
        "volid": STR, "storage": STR, "file": STR, "size": NINT, "format": NSTR,
        "ctime": NINT})}}),
    "Resources": _object({"node": STR, "online": BOOL, "cpus": INT, "cpu_usage": NUM,
                          "free_cpu": NUM, "memory_total": INT, "memory_used": INT,
                          "free_memory": INT}),
    "Variable": _object({
        "name": STR, "type": {"enum": ["string", "int", "bool", "choice", "password"]},
        "description": STR, "default": {}, "required": BOOL, "secret": BOOL, "multiline": BOOL,
        "pattern": NSTR, "min": NINT, "max": NINT, "min_length": NINT, "max_length": NINT,
        "choices": STRS, "generated_length": NINT,
        "regenerate": {**BOOL, "description": "a clone gets a new value (secrets only)"}}),
    "Template": _object({
        "name": STR, "description": STR, "tags": STRS, "ostemplate": STR, "unprivileged": BOOL,
        "resources": _object({"cores": INT, "memory": INT, "swap": INT, "disk": INT}),
        "features": {"type": "object", "additionalProperties": BOOL},
        "variables": {"type": "array", "items": _ref("Variable")},
        "syncable": {**BOOL, "description": "has export and import hooks: its data can be "
                     "synced between containers"},
        "files": {"type": "array", "items": _object({
            "target": STR, "mode": STR, "owner": STR,
            "policy": {"enum": ["replace", "default", "backup"]}, "template": BOOL})},
        "scripts": {"type": "array", "items": _object({"name": STR, "timeout": INT})},
        "hooks": {**_object({kind: STR for kind in HOOK_KINDS}, optional=HOOK_KINDS),
                  "description": "the data hooks it declares: kind -> script under hooks/"},
        "packages": _object({"apt": STRS, "pip": STRS, "npm": STRS}),
        "snapshot": NSTR, "health": {"oneOf": [{"type": "null"}, _object({
            "type": {"enum": ["http", "https", "tcp"]}, "port": INT, "path": NSTR})]},
        "network": _object({"ip6": NSTR, "firewall": BOOL, "nameserver": NSTR,
                            "searchdomain": NSTR}),
        "mounts": {"type": "array", "items": _surface()["mounts"]["items"],
                   "description": "data volumes every container of it gets"},
        "boot": _object({"onboot": {"type": ["boolean", "null"]}, "pool": NSTR,
                         "startup": NSTR})},
        optional=("files", "scripts", "hooks", "packages", "snapshot", "health", "network",
                  "mounts", "boot"),
        description="files, scripts, hooks, packages, snapshot and health: in single reads"),
    "Templates": _object({"templates": {"type": "array", "items": _ref("Template")},
                          "invalid": {"type": "array", "items": _object({
                              "name": STR, "problems": STRS})}}),
    "ContainerMigrate": _object({"to": _text(64, minLength=1, description="a node of the "
                                              "container's cluster, or 'auto'")}),
    "Peers": _object({"cluster": NSTR, "peers": {"type": "array", "items": _object({
        "name": STR, "ip": STR, "online": BOOL, "fingerprint": NSTR, "registered": NSTR})}}),
    "PeersAdd": _object({"add": {"type": "array", "minItems": 1, "items": _object({
        "name": STR, "fingerprint": STR})}}),
    "PeersAdded": _object({"cluster": NSTR, "added": {"type": "array", "items": _ref("Node")}}),
    "DrainAsk": _object({"move": {**BOOL, "description": "false: only the maintenance mark"}},
                        optional=("move",)),
    "Drain": _object({"node": STR, "maintenance": BOOL, "moving": {
        "type": "array", "items": _object({"id": STR, "hostname": STR})}}),
    "ClusterUsage": _object({"nodes": {"type": "array", "items": _object({
        "name": STR, "cluster": NSTR, "pve_node": STR, "maintenance": BOOL,
        "max_containers": NINT, "containers": {**INT, "description": "ours, not destroyed"},
        "status": {"enum": ["online", "offline", "unreachable", "unknown"]},
        "problem": {**NSTR, "description": "why its cluster could not be asked"},
        "cpu": {**NNUM, "description": "0..1 of all its CPUs"}, "cpus": NINT,
        "memory_used": NINT, "memory_committed": {**NINT, "description": "bytes its guests "
                                                  "may take: what placement counts"},
        "memory_total": NINT, "storage": {**STR, "description": "its default storage"},
        "disk_used": NINT, "disk_total": NINT, "guests": NINT, "running": NINT,
        "in_flight": {**INT, "description": "requests placed on it, waiting for their CT"},
        "in_flight_memory": {**INT, "description": "bytes they reserve"}})}}),
    "PlacementAsk": _object({
        "template": _text(128, description="its resources are the defaults"),
        "memory": _int(16, 64 * 1024 * 1024, description="MiB"),
        "disk": _int(1, 128 * 1024, description="GiB"), "storage": NAME,
        "spread": _text(64, pattern="^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
        "mounts": {"type": "array", "items": {"type": "object"}}},
        optional=("template", "memory", "disk", "storage", "spread", "mounts")),
    "Placement": _object({
        "node": NSTR, "reasons": STR, "warning": NSTR,
        "skipped": {"type": "object", "additionalProperties": STR,
                    "description": "each node left out, and why"}}),
    "ContainerCreate": {"type": "object", "required": ["template", "hostname"],
                        "additionalProperties": False, "properties": {
        "template": _text(128, pattern=f"^{TEMPLATE_NAME.pattern}$",
                          description="a template's name (GET /api/templates)"),
        "node": _text(64, minLength=1, description="a node's name (GET /api/nodes), or 'auto': "
                      "placed on the node with the most room; absent: the only node, else "
                      "auto"),
        "spread": _text(64, pattern="^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                        description="an anti-affinity group: placement puts its members on "
                                    "different nodes"),
        "hostname": _text(253, pattern="^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
                          description="a DNS host name (labels of letters, digits and '-')"),
        "vmid": _int(100, 999_999_999, description="chosen by the node when absent"),
        "cores": _int(1, 8192), "memory": _int(16, 64 * 1024 * 1024, description="MiB"),
        "swap": _int(0, 64 * 1024 * 1024, description="MiB"),
        "disk": _int(1, 128 * 1024, description="GiB"),
        "ip": _text(64, description="'dhcp' (default) or 198.18.0.10/24: a static address "
                    "must lie in the bridge's subnet on the node"),
        "gateway": _text(64, description="an IPv4 address, with a static ip"),
        "bridge": {**NAME, "description": "a bridge of the node (default: the node's)"},
        "storage": {**NAME, "description": "a storage of the node holding containers "
                    "(content rootdir; default: the node's)"},
        "ssh_public_key": _text(16384, description="one or more OpenSSH public keys, a line "
                                "each (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp*, sk-*), whole"),
        "root_password": {"type": "string", "minLength": 8, "maxLength": 256,
                          "pattern": f"^{PRINTABLE.pattern}$",
                          "description": "generated (and returned once) when absent"},
        "variables": {"type": "object", "additionalProperties": {
            "type": ["string", "integer", "boolean"]},
            "description": "the template's variables (GET /api/templates/{name})"},
        "failure_policy": {"enum": ["keep", "destroy"]},
        "environment": _text(32, pattern="^[a-z][a-z0-9-]{0,31}$",
                             description="production (gets PVE's protection flag), "
                                         "staging, development or another name"),
        **_surface()}},
    "ContainerClone": _object({
        "hostname": _text(253, pattern="^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$"),
        "environment": _text(32, pattern="^[a-z][a-z0-9-]{0,31}$", default="staging"),
        "full": {**BOOL, "default": True,
                 "description": "false: a linked clone on the source's storage"},
        "ip": _text(64, description="'dhcp' (default) or an address with its prefix"),
        "gateway": _text(64), "bridge": {**NAME, "description": "default: the source's"},
        "storage": {**NAME, "description": "a full clone's storage (default: the source's)"},
        "variables": {"type": "object", "additionalProperties": {
            "type": ["string", "integer", "boolean"]},
            "description": "template variables that differ from the source's"}},
        optional=("environment", "full", "ip", "gateway", "bridge", "storage", "variables")),
    "Container": _object(_CONTAINER, optional=("pve", "pve_error")),
    "Sandbox": _object({
        "id": STR, "hostname": STR, "client": STR, "owner": NSTR, "source_url": STR,
        "source_user": STR, "lifecycle": STR, "ip": NSTR,
        "url": {**NSTR, "description": "the sandbox's site (https, self-signed)"},
        "expires_at": STR, "seconds_left": INT,
        "warned": {**BOOL, "description": "the expiring event came"},
        "created_at": STR,
        "imported": {"type": "object", "description": "what the import copied: counts, "
                     "bytes, skipped items, the permalink structure"}}),
    "Sandboxes": _list("sandboxes", "Sandbox"),
    "SandboxCreate": _object({
        "from": _text(2048, description="the live site, https://..."),
        "client": _text(40, pattern="^[a-z0-9][a-z0-9-]{0,39}$"),
        "user": _text(60, description="the live site's user"),
        "app_password": _text(256, description="that user's Application Password (used "
                              "read-only; encrypted at rest, never shown again)"),
        "ttl": _text(32, description="12h, 7d, 2w... (default: the setting, 7d)"),
        "new": {**BOOL, "default": False,
                "description": "a new sandbox even if the client has one"},
        "fingerprint": _text(200, description="the live site's certificate, SHA-256 pinned"),
        "node": NAME, "hostname": _text(63, description="default sandbox-<client>"),
        "variables": {"type": "object", "additionalProperties": {
            "type": ["string", "integer", "boolean"]},
            "description": "variables of the wordpress template"}},
        optional=("ttl", "new", "fingerprint", "node", "hostname", "variables")),
    "SandboxCreated": _object({
        "id": STR, "events_url": STR, "job_id": NSTR, "container": _ref("Container"),
        "root_password": STR, "warning": STR,
        "generated_secrets": {"type": "object", "additionalProperties": STR},
        "existing": {"const": False}, "sandbox": _ref("Sandbox")},
        optional=("root_password", "warning", "generated_secrets")),
    "SandboxExisting": _object({"id": STR, "existing": {"const": True},
                                "sandbox": _ref("Sandbox")}),
    "SandboxExtend": _object({"by": _text(32, description="12h, 7d, 2w...")}),
    "SandboxExpired": _object({"id": STR, "expired": {"const": True}}),
    "Containers": _object({"containers": {"type": "array", "items": _ref("Container")}}),
    "Created": _object({
        "id": STR, "events_url": STR, "job_id": NSTR, "container": _ref("Container"),
        "root_password": {**STR, "description": "the generated root password: shown only here"},
        "warning": {**STR, "description": "the queue was unavailable: it runs later"},
        "generated_secrets": {"type": "object", "additionalProperties": STR,
                              "description": "secret variables given generated values, shown "
                                             "only here: a create's that the request left out, "
                                             "a clone's that the template regenerates"}},
        optional=("root_password", "warning", "generated_secrets")),
    "Event": _object({
        "seq": INT, "container": STR,
        "type": {"enum": list(EVENT_TYPES)},
        "phase": {"enum": list(ALL_PHASES)},
        "percent": INT, "message": STR, "stream": {"enum": ["stdout", "stderr"]},
        "script": STR,
        "outcome": {"enum": list(OUTCOMES), "description": "how the run ended (terminal events)"},
        "ts": STR}, optional=("phase", "percent", "message", "stream", "script", "outcome")),
    "Events": _object({"events": {"type": "array", "items": _ref("Event")}, "next_after": INT,
                       "more": BOOL}),
    "Job": _object({"job_id": STR, "action": STR, "container": STR, "events_url": STR,
                    "operation": {**STR, "description": "the change's parameters, stored"},
                    "loses": {**STR, "description": "a rollback: what it loses"},
                    "placement": {**STR, "description": "a move to 'auto': the node chosen "
                                  "and why"}},
                   optional=("operation", "loses", "placement")),
    "Resync": _object({"on_failure": ON_FAILURE_SCHEMA}, optional=("on_failure",),
                      description="only for the action resync (optional)"),
    "Refresh": _object({"on_failure": ON_FAILURE_SCHEMA,
                        "anonymise": {**BOOL, "description": "a sync only; default: when the "
                                      "clone is not production"}},
                       optional=("on_failure", "anonymise")),
    "Snapshot": _object({"name": STR, "description": STR, "taken_at": NSTR, "parent": NSTR,
                         "automatic": {**BOOL, "description": "a safety snapshot (auto-*)"}}),
    "Snapshots": _object({"snapshots": {"type": "array", "items": _ref("Snapshot")},
                          "running": BOOL, "protected": BOOL}),
    "SnapshotCreate": _object({
        "name": _text(MAX_SNAPSHOT_NAME, pattern=f"^{SNAPSHOT_NAME.pattern}$",
                      description="default snap-<date>-<time>"),
        "description": _text(MAX_DESCRIPTION)}, optional=("name", "description")),
    "ContainerSet": _object({
        "cores": _int(1, 8192), "memory": _int(16, 2**31 - 1, description="MiB"),
        "swap": _int(0, 2**31 - 1, description="MiB"),
        "disk": _int(1, 131072, description="GiB, larger than now: a disk only grows"),
        "tags": {**STRS, "description": "the tags ('provisioner' is kept)"},
        "onboot": BOOL, "description": _text(MAX_DESCRIPTION - 100),
        "protection": {**BOOL, "description": "no destroy and no rollback while true"},
        "restart": {**BOOL, "description": "restart after, applying what is pending"},
        "on_failure": ON_FAILURE_SCHEMA},
        optional=("cores", "memory", "swap", "disk", "tags", "onboot", "description",
                  "protection", "restart", "on_failure")),
    "Webhook": _object(_WEBHOOK),
    "Webhooks": _list("webhooks", "Webhook"),
    "WebhookCreate": _object({
        "url": _text(MAX_URL_LENGTH, minLength=1, description="http:// or https://, without "
                     "a user or password"),
        "events": {"type": "array", "items": {"enum": list(EVENTS)}, "uniqueItems": True,
                   "description": "default: all of them"},
        "owner": {"type": ["string", "null"], "maxLength": 64,
                  "description": "default: the caller; another user, or null (every "
                                 "container): administrators only"},
        "secret": _text(MAX_SECRET_LENGTH, minLength=MIN_SECRET_LENGTH,
                        description="the signing secret; default: generated and returned "
                                    "once")},
        optional=("events", "owner", "secret")),
    "WebhookAdded": _object({"webhook": _ref("Webhook"), "secret": {
        **STR, "description": "the generated signing secret: shown only here"}},
        optional=("secret",)),
    "Delivery": _object(_DELIVERY),
    "Deliveries": _list("deliveries", "Delivery"),
    "DeliveryQueued": _object({"delivery": _ref("Delivery")}),
}  # fmt: skip

PATHS: dict[str, Any] = {
    "/api/me": {"get": _op("The caller", "session", _json(_ref("Me"), "the caller"))},
    "/api/openapi.json": {"get": _op("This document", "session",
                                     _json({"type": "object"}, "OpenAPI 3.1"))},
    "/api/nodes": {
        "get": _op("List nodes", "nodes", _json(_list("nodes", "Node"), "the nodes")),
        "post": _op("Add a node (administrators)", "nodes", _json(_ref("NodeAdded"), "added"),
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
        _json(_ref("NodeTest"), "reachable"),
        extra={**_NOT_FOUND, **_UPSTREAM})},
    "/api/nodes/{name}/peers": {
        "parameters": [NODE],
        "get": _op("The other nodes of its cluster, with their fingerprints", "nodes",
                   _json(_ref("Peers"), "the cluster and its other nodes"),
                   extra={**_NOT_FOUND, **_UPSTREAM}),
        "post": _op("Register peers whose fingerprints the caller confirmed (administrators)",
                    "nodes", _json(_ref("PeersAdded"), "registered"), status="201",
                    body="PeersAdd", extra={**_NOT_FOUND, **_UPSTREAM, **_ADMIN,
                                            "409": {"$ref": "#/components/responses/Conflict"}}),
    },
    "/api/nodes/{name}/drain": {"parameters": [NODE], "post": _op(
        "Maintenance, and move its containers away one at a time (administrators)", "nodes",
        _json(_ref("Drain"), "in maintenance; the moves are queued one after another"),
        status="202", body="DrainAsk",
        extra={**_NOT_FOUND, **_ADMIN, "409": {"$ref": "#/components/responses/Conflict"}})},
    "/api/nodes/{name}/undrain": {"parameters": [NODE], "post": _op(
        "End the maintenance (administrators)", "nodes",
        _json(_object({"node": STR, "maintenance": BOOL}), "schedulable again"),
        extra={**_NOT_FOUND, **_ADMIN})},
    "/api/nodes/{name}/storages": {"parameters": [NODE], "get": _op(
        "The node's storages", "nodes", _json(_ref("Storages"), "storages"),
        params=[_query("content", "only storages holding this content (rootdir, vztmpl)", STR)],
        extra={**_NOT_FOUND, **_UPSTREAM})},
    "/api/nodes/{name}/bridges": {"parameters": [NODE], "get": _op(
        "The node's bridges", "nodes", _json(_ref("Bridges"), "bridges"),
        extra={**_NOT_FOUND, **_UPSTREAM})},
    "/api/nodes/{name}/templates": {"parameters": [NODE], "get": _op(
        "OS templates on the node", "nodes", _json(_ref("OsTemplates"), "OS templates"),
        extra={**_NOT_FOUND, **_UPSTREAM})},
    "/api/nodes/{name}/resources": {"parameters": [NODE], "get": _op(
        "Free CPU and memory", "nodes", _json(_ref("Resources"), "resources"),
        extra={**_NOT_FOUND, **_UPSTREAM})},
    "/api/cluster": {"get": _op(
        "Every node's load as placement sees it", "nodes",
        _json(_ref("ClusterUsage"), "one entry per registered node"))},
    "/api/placement": {"post": _op(
        "Where a request would be placed now (node auto); nothing is reserved", "nodes",
        _json(_ref("Placement"), "the node it would get (null: none fits) and why"),
        body="PlacementAsk", extra={"409": {"$ref": "#/components/responses/Conflict"}})},
    "/api/templates": {"get": _op("List container templates", "templates",
                                  _json(_ref("Templates"), "the templates"))},
    "/api/templates/{name}": {
        "parameters": [_path_param("name", "the template's name")],
        "get": _op("One template with its variables", "templates",
                   _json(_ref("Template"), "the template"),
                   extra={**_NOT_FOUND, "422": {"$ref": "#/components/responses/Invalid"}})},
    "/api/containers": {
        "get": _op("List containers with their live status", "containers",
                   _json(_ref("Containers"), "the containers"), params=[
                       _query("lifecycle", "comma-separated states", STR),
                       _query("node", "only this node", STR),
                       _query("template", "only this template", STR),
                       _query("include_destroyed", "include destroyed ones", BOOL),
                       _query("live", "ask the nodes for live status (default true)", BOOL),
                       _query("limit", "at most this many", _int(1, 5000, default=500))]),
        "post": _op("Request a container", "containers", _json(_ref("Created"), "stored and "
                    "queued; follow events_url"), status="201", body="ContainerCreate",
                    extra={"409": {"$ref": "#/components/responses/Conflict"}}),
    },
    "/api/containers/{id}/migrate": {"parameters": [CONTAINER], "post": _op(
        "Move a container to another node of its cluster (a run)", "containers",
        _json(_ref("Job"), "queued"), status="202", body="ContainerMigrate",
        extra={**_NOT_FOUND, "409": {"$ref": "#/components/responses/Conflict"}})},
    "/api/containers/{id}": {"parameters": [CONTAINER], "get": _op(
        "One container with its live status", "containers",
        _json(_ref("Container"), "the container"), extra=_NOT_FOUND),
        "patch": _op("Change a container in place (a run)", "containers",
                     _json(_ref("Job"), "queued"), status="202", body="ContainerSet",
                     extra={**_NOT_FOUND, **_CONFLICT})},
    "/api/containers/{id}/clone": {"parameters": [CONTAINER],
        "post": _op("Clone a ready container with a fresh identity", "containers",
                    _json(_ref("Created"), "stored and queued; follow events_url"),
                    status="201", body="ContainerClone", extra={**_NOT_FOUND, **_CONFLICT})},
    "/api/containers/{id}/sync": {"parameters": [CONTAINER],
        "post": _op("Refresh a clone from its source (a run of the clone)", "environments",
                    _json(_ref("Job"), "queued"), status="202", optional_body="Refresh",
                    extra={**_NOT_FOUND, **_CONFLICT})},
    "/api/containers/{id}/promote": {"parameters": [CONTAINER],
        "post": _op("Apply a clone's data to its source (a run of the source)", "environments",
                    _json(_ref("Job"), "queued; events_url is the source's"), status="202",
                    optional_body="Refresh", extra={**_NOT_FOUND, **_CONFLICT})},
    "/api/containers/{id}/snapshots": {"parameters": [CONTAINER],
        "get": _op("The container's snapshots, live", "snapshots",
                   _json(_ref("Snapshots"), "oldest first"),
                   extra={**_NOT_FOUND, **_CONFLICT, **_UPSTREAM}),
        "post": _op("Take a snapshot (a run)", "snapshots", _json(_ref("Job"), "queued"),
                    status="202", optional_body="SnapshotCreate",
                    extra={**_NOT_FOUND, **_CONFLICT})},
    "/api/containers/{id}/snapshots/{snapshot}": {"parameters": [CONTAINER, SNAPSHOT],
        "delete": _op("Remove a snapshot (a run)", "snapshots", _json(_ref("Job"), "queued"),
                      status="202", extra={**_NOT_FOUND, **_CONFLICT, **_UPSTREAM})},
    "/api/containers/{id}/snapshots/{snapshot}/rollback": {"parameters": [CONTAINER, SNAPSHOT],
        "post": _op("Roll back to a snapshot (a run; refused while protected)", "snapshots",
                    _json(_ref("Job"), "queued; loses says what is lost"), status="202",
                    extra={**_NOT_FOUND, **_CONFLICT, **_UPSTREAM})},
    "/api/sandboxes": {
        "get": _op("Sandboxes (an administrator's: all; others': their own)", "sandboxes",
                   _json(_ref("Sandboxes"), "soonest expiry first"),
                   params=[_query("client", "only this client's", STR),
                           _query("include_destroyed", "also destroyed ones", BOOL)]),
        "post": _op("A sandbox of a live WordPress site (or the client's existing one)",
                    "sandboxes", _json(_ref("SandboxCreated"), "stored and queued"),
                    status="201", body="SandboxCreate",
                    extra={"200": _json(_ref("SandboxExisting"), "the client's sandbox "
                                        "(new: false)")}),
    },
    "/api/sandboxes/{id}/extend": {"parameters": [CONTAINER],
        "post": _op("Push a sandbox's expiry back", "sandboxes", _json(_ref("Sandbox"),
                    "the new expiry"), body="SandboxExtend", extra=_NOT_FOUND)},
    "/api/sandboxes/{id}/expire": {"parameters": [CONTAINER],
        "post": _op("End a sandbox now (its destroy is queued)", "sandboxes",
                    _json(_ref("SandboxExpired"), "expired"), status="202",
                    extra={**_NOT_FOUND, **_CONFLICT})},
    "/api/containers/{id}/events": {"parameters": [CONTAINER], "get": _op(
        "Stored events, paginated by seq", "containers", _json(_ref("Events"), "events"),
        params=[_query("after", "only events with a greater seq",
                       _int(0, MAX_SEQ, default=0)),
                _query("limit", "at most this many", _int(1, 2000, default=200))],
        extra=_NOT_FOUND)},
    "/api/containers/{id}/log": {"parameters": [CONTAINER], "get": _op(
        "The full log as text", "containers",
        {"description": "one event a line", "content": {"text/plain": {"schema": STR}}},
        extra=_NOT_FOUND)},
    "/api/containers/{id}/actions/{action}": {"parameters": [CONTAINER, ACTION], "post": _op(
        "Enqueue an action", "containers", _json(_ref("Job"), "queued"), status="202",
        optional_body="Resync", extra={**_NOT_FOUND, **_CONFLICT})},
    "/api/webhooks": {
        "get": _op("The caller's webhooks (administrators: all)", "webhooks",
                   _json(_ref("Webhooks"), "by id")),
        "post": _op("Add a webhook (its secret is returned once)", "webhooks",
                    _json(_ref("WebhookAdded"), "added"), status="201", body="WebhookCreate",
                    extra=_ADMIN)},
    "/api/webhooks/{webhook_id}": {"parameters": [WEBHOOK],
        "delete": _op("Remove a webhook and its delivery log", "webhooks",
                      {"description": "removed"}, status="204", extra=_NOT_FOUND)},
    "/api/webhooks/{webhook_id}/deliveries": {"parameters": [WEBHOOK],
        "get": _op("The webhook's delivery log, newest first", "webhooks",
                   _json(_ref("Deliveries"), "deliveries and their attempts"), params=[
                       _query("container", "only this container's", STR),
                       _query("limit", "at most this many", _int(1, 1000, default=50))],
                   extra=_NOT_FOUND)},
    "/api/webhooks/{webhook_id}/test": {"parameters": [WEBHOOK],
        "post": _op("Queue a ping delivery", "webhooks",
                    _json(_ref("DeliveryQueued"), "queued; a worker sends it"), status="202",
                    extra=_NOT_FOUND)},
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
            "BadRequest": _error(
                "invalid input; `field` names it, `errors` lists every field's problem"
            ),
            "Unauthorized": _error("not logged in, or a bad token"),
            "Forbidden": _error("administrators only (or the owner of the object)"),
            "NotFound": _error("no such object"),
            "Conflict": _error("not possible in the object's current state"),
            "Upstream": _error("the Proxmox node failed or is unreachable"),
            "Unavailable": _error("the database or Redis is unavailable: try again shortly"),
            "TooLarge": _error("the body is larger than 1 MiB"),
            "NotJson": _error("the body is not sent as application/json"),
            "Invalid": _error("the template is broken on the server; `problems` lists why"),
        },
    },
}


@bp.route("/openapi.json")
def openapi() -> Response:
    """This API as an OpenAPI 3.1 document."""
    return jsonify(DOCUMENT)

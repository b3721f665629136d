"""The JSON shapes of containers, templates and nodes, without a secret.

One definition for the REST API (``web/``) and the CLI's ``--json``
output: both show the same fields, in the same order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner.errors import PermanentError
from provisioner.stored_request import StoredRequest

if TYPE_CHECKING:  # the CLI imports the template machinery only when it needs it
    from provisioner.events import Event
    from provisioner.models import Container, Node, Webhook, WebhookDelivery
    from provisioner.pve.types import SnapshotInfo
    from provisioner.templates.model import Template, Variable


def iso(value: Any) -> str | None:
    """A datetime as ISO 8601, or None."""
    return value.isoformat() if value is not None else None


def owns_container(ct: Container) -> bool:
    """Whether the record holds a CT in PVE, as far as it knows (a live
    listing may find the CT gone or someone else's: ``provisioner.live``)."""
    return ct.vmid is not None and str(ct.lifecycle) != "destroyed"


def container_json(ct: Container, node_name: str) -> dict[str, Any]:
    """A container's state and request, without a secret."""
    unreadable = ""
    try:
        stored: StoredRequest | None = StoredRequest.from_dict(ct.request)  # holds no secret
    except PermanentError as exc:  # written by a newer release: list the record anyway
        stored, unreadable = None, exc.message
    return {
        "id": ct.id, "node": node_name, "template": ct.template, "hostname": ct.hostname,
        "vmid": ct.vmid, "owns_container": owns_container(ct),
        "lifecycle": str(ct.lifecycle), "current_phase": ct.current_phase,
        "finished_phases": list(ct.finished_phases or []),
        "finished_scripts": list(ct.finished_scripts or []),
        "failure_policy": str(ct.failure_policy), "ip": ct.ip,
        "ssh_host_key_fingerprint": ct.ssh_host_key_fingerprint,
        "services": list(ct.services or []), "error": ct.error_message,
        "error_details": dict(ct.error_details) if ct.error_details else None,
        "attempts": ct.attempts, "last_seq": max(ct.next_seq - 1, 0),
        "request": stored.settings_json() if stored else {"unreadable": unreadable},
        "variables": dict(stored.variables) if stored else {},
        "secret_variables": sorted(stored.secret_variables) if stored else [],
        "created_at": iso(ct.created_at), "updated_at": iso(ct.updated_at),
        "started_at": iso(ct.started_at), "finished_at": iso(ct.finished_at),
        "environment": ct.environment, "source_id": ct.source_id, "owner": ct.owner,
        "change_in_flight": dict(ct.safe_change) if ct.safe_change else None,
        "spread_group": ct.spread_group,
        "placement": dict(stored.placement) if stored and stored.placement else None,
    }  # fmt: skip


def snapshot_json(snap: SnapshotInfo) -> dict[str, Any]:
    """One snapshot of a container (PVE gives no size for a CT's snapshot)."""
    from datetime import UTC, datetime

    from provisioner.changes import AUTO_PREFIX

    taken = datetime.fromtimestamp(snap.snaptime, UTC).isoformat() if snap.snaptime else None
    return {"name": snap.name, "description": snap.description, "taken_at": taken,
            "parent": snap.parent, "automatic": snap.name.startswith(AUTO_PREFIX)}  # fmt: skip


def log_line(e: Event) -> str:
    """One event as a line of the text log, without the newline
    (continuation lines indented)."""
    message = e.message.replace("\n", "\n    ")
    if e.type == "log":
        source = " ".join(p for p in (e.stream or "log", e.script) if p)
        return f"{e.ts} [{source}] {message}"
    percent = f" {e.percent}%" if e.percent is not None else ""
    return f"{e.ts} [{e.type}] {e.phase or '-'}{percent}: {message}"


def variable_json(var: Variable) -> dict[str, Any]:
    """Everything a form needs to ask for a variable (never a secret value)."""
    return {
        "name": var.name, "type": str(var.type), "description": var.description,
        "default": None if var.secret else var.default, "required": var.required,
        "secret": var.secret, "multiline": var.multiline, "pattern": var.pattern,
        "min": var.min, "max": var.max, "min_length": var.min_length,
        "max_length": var.max_length, "choices": list(var.choices),
        "generated_length": var.length if var.secret else None,
        "regenerate": var.regenerate,
    }  # fmt: skip


def template_json(template: Template, *, detail: bool = False) -> dict[str, Any]:
    """A template for listings; ``detail`` adds files, packages, scripts and
    the data hooks (by kind, the script's name)."""
    body: dict[str, Any] = {
        "name": template.name, "description": template.description, "tags": list(template.tags),
        "ostemplate": template.ostemplate, "unprivileged": template.unprivileged,
        "resources": vars(template.resources).copy(), "features": vars(template.features).copy(),
        "variables": [variable_json(v) for v in template.variables.values()],
        "syncable": template.hooks.syncable,
    }  # fmt: skip
    if detail:
        body.update(
            files=[{"target": f.target, "mode": f"{f.mode:04o}", "owner": f.owner,
                    "policy": str(f.policy), "template": f.template} for f in template.files],
            scripts=[{"name": s.name, "timeout": s.timeout} for s in template.scripts],
            hooks={kind: s.name for kind, s in template.hooks.declared().items()},
            packages={"apt": list(template.packages.apt), "pip": list(template.packages.pip),
                      "npm": list(template.packages.npm)},
            snapshot=template.snapshot.name if template.snapshot else None,
            health=({"type": str(template.health.kind), "port": template.health.port,
                     "path": template.health.path} if template.health else None),
            network=vars(template.network).copy(),
            mounts=[m.to_dict() for m in template.mounts],
            boot={"onboot": template.onboot, "pool": template.pool,
                  "startup": None if template.startup is None else str(template.startup)},
        )  # fmt: skip
    return body


def template_listing(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The templates of a directory, read now: the valid ones (as
    :func:`template_json`) and the broken ones with their problems."""
    from provisioner.templates.loader import load_template
    from provisioner.templates.model import TemplateError

    found: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    paths = sorted(p for p in root.iterdir() if (p / "template.toml").is_file()) if (
        root.is_dir()) else []  # fmt: skip
    for path in paths:
        try:
            found.append(template_json(load_template(path)))
        except TemplateError as exc:
            invalid.append({"name": path.name, "problems": [str(p) for p in exc.problems]})
    return found, invalid


def node_json(node: Node, containers: int | None = None) -> dict[str, Any]:
    """A node without its secret."""
    body: dict[str, Any] = {
        "name": node.name, "host": node.host, "port": node.port, "pve_node": node.pve_node,
        "auth": str(node.auth_kind), "user": node.pve_user, "token_id": node.token_id,
        "ca_file": node.ca_file, "fingerprint": node.fingerprint, "insecure": node.tls_insecure,
        "default_storage": node.default_storage, "default_bridge": node.default_bridge,
        "cluster": node.cluster, "maintenance": bool(node.maintenance),
        "max_containers": node.max_containers,
        "created_at": node.created_at.isoformat(),
    }  # fmt: skip
    if containers is not None:
        body["containers"] = containers
    return body


def webhook_json(hook: Webhook) -> dict[str, Any]:
    """A webhook without its secret (``owner`` None: every container's events)."""
    return {"id": hook.id, "owner": hook.owner, "url": hook.url, "events": list(hook.events),
            "active": hook.active, "created_at": iso(hook.created_at)}  # fmt: skip


def delivery_json(d: WebhookDelivery, *, payload: bool = True) -> dict[str, Any]:
    """One delivery and its attempts; ``payload``: the body as sent (no secret in it)."""
    body: dict[str, Any] = {
        "id": d.id, "webhook_id": d.webhook_id, "container_id": d.container_id,
        "event": d.event, "status": str(d.status), "attempts": d.attempts,
        "last_status_code": d.last_status_code, "last_error": d.last_error,
        "created_at": iso(d.created_at), "next_attempt_at": iso(d.next_attempt_at),
        "delivered_at": iso(d.delivered_at), "history": list(d.history or []),
    }  # fmt: skip
    if payload:
        body["payload"] = dict(d.payload)
    return body

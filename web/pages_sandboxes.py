"""The client sandboxes page: ``/sandboxes`` (docs/sandboxes.md).

The page is rendered with what its form needs (the nodes, the default
time to live); ``static/sandboxes.js`` lists the sandboxes from
``GET /api/sandboxes`` (an administrator's: all; anyone else's: their own),
counts their expiry down, extends and expires them, and asks for a new one
through ``POST /api/sandboxes``: the Application Password goes in that
request's body and nowhere else.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, render_template
from sqlalchemy import select

from provisioner.events import now_iso
from provisioner.models import Node
from provisioner.sandboxes import format_duration
from web.auth import current_user
from web.resources import get_db, resources

bp = Blueprint("sandboxes", __name__)


def page_config(node_names: list[str], is_admin: bool, ttl_seconds: float,
                now: str) -> dict[str, Any]:  # fmt: skip
    """What ``sandboxes.js`` starts from (rendered as JSON into the page):
    the server's clock (``now``) is what the expiries count down against."""
    return {"is_admin": is_admin, "nodes": node_names, "now": now,
            "default_ttl": format_duration(ttl_seconds).replace(" ", "")}  # fmt: skip


@bp.route("/sandboxes")
def sandboxes() -> str:
    """The sandboxes: client, source site, status, expiry; extend, destroy, new."""
    db = get_db()
    names = list(db.scalars(select(Node.name).order_by(Node.name)))
    db.commit()
    config = page_config(names, current_user().is_admin, resources().settings.sandbox_ttl,
                         now_iso())  # fmt: skip
    return render_template("sandboxes.html", config=config)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

"""The dashboard's pages: the containers list, container detail, templates,
nodes and webhooks.  The wizard (``pages_wizard``) and the progress view
(``pages_progress``) have modules of their own.  Pages are rendered on the
server; small vanilla scripts in ``static/`` talk to the REST API.

What needs a Proxmox node (live status, free resources, storages) is
fetched by the page's script, so a slow node never delays a page; what
lives in the database or on disk (a container's stored state, templates) is
rendered here with the same JSON shape the API gives.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, render_template, render_template_string

from provisioner.errors import ConfigError
from provisioner.models import CONTAINER_ID, Container, Node
from provisioner.request_checks import ACTIONS
from provisioner.requests import load_named_template
from provisioner.templates.model import TemplateError
from provisioner.views import template_json, template_listing
from provisioner.webhooks import EVENTS
from web.api_containers import container_json
from web.auth import current_user
from web.resources import get_db, resources

bp = Blueprint("pages", __name__)
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

_NOT_FOUND = """{% extends "base.html" %}
{% block title %}Not found · LXC provisioner{% endblock %}
{% block content %}
<div class="empty not-found">
  <h1>{{ title }}</h1>
  <p>{{ message }}</p>
  <a class="button primary" href="{{ url_for(back_endpoint) }}">{{ back_label }}</a>
</div>
{% endblock %}"""


def not_found(title: str, message: str, back_endpoint: str, back_label: str) -> tuple[str, int]:
    """A 404 as a dashboard page that says what is missing and where to go."""
    return render_template_string(_NOT_FOUND, title=title, message=message,
                                  back_endpoint=back_endpoint, back_label=back_label), 404  # fmt: skip


def _actions() -> dict[str, list[str]]:
    """Which lifecycle states allow each action (the page's buttons follow them)."""
    return {action: sorted(lc.value for lc in states) for action, states in ACTIONS.items()}


@bp.route("/")
def index() -> str:
    """The containers list."""
    return render_template("containers.html", actions=_actions())


@bp.route("/containers/<container_id>")
def container(container_id: str) -> str | tuple[str, int]:
    """One container: overview, events timeline, full log, actions."""
    ct = get_db().get(Container, container_id) if CONTAINER_ID.fullmatch(container_id) else None
    if ct is None:
        return not_found("Container not found",
                         f"There is no container with the id {container_id!r}. It may have "
                         "been removed, or the link is mistyped.",
                         "pages.index", "Back to containers")  # fmt: skip
    node = get_db().get(Node, ct.node_id)
    data = container_json(ct, node.name if node else "?")
    data["pve"], data["pve_error"] = None, None  # the script fetches the live status
    get_db().commit()
    return render_template("container.html", ct=data, actions=_actions(),
                           defaults=_template_resources(ct.template))  # fmt: skip


def _template_resources(name: str) -> dict[str, object] | None:
    """The template's default resources (what a request without them got), if it loads."""
    try:
        return dict(vars(load_named_template(resources().settings, name).resources))
    except ConfigError:
        return None


@bp.route("/templates")
def templates() -> str:
    """The templates the provisioner offers (broken ones apart, with their problems)."""
    root = resources().settings.templates_dir
    found, invalid = template_listing(root)
    return render_template("templates.html", templates=found, invalid=invalid,
                           templates_dir=str(root))  # fmt: skip


@bp.route("/templates/<name>")
def template(name: str) -> tuple[str, int]:
    """One template: description, variables, files and scripts."""
    try:
        if not _TEMPLATE_NAME.fullmatch(name):
            raise ConfigError(f"template: no template named {name!r}")
        loaded = load_named_template(resources().settings, name)
    except TemplateError as exc:
        problems = [str(p) for p in exc.problems]
        return render_template("template.html", name=name, t=None, problems=problems), 422
    except ConfigError:
        return not_found("Template not found",
                         f"There is no template named {name!r} in the templates directory.",
                         "pages.templates", "Back to templates")  # fmt: skip
    return render_template("template.html", name=name, t=template_json(loaded, detail=True),
                           problems=[]), 200  # fmt: skip


@bp.route("/nodes")
def nodes() -> str:
    """The Proxmox nodes, their free resources; add, test, remove."""
    return render_template("nodes.html", is_admin=current_user().is_admin)


@bp.route("/webhooks")
def webhooks() -> str:
    """The caller's webhooks (an administrator's: all): add, test, remove,
    and each one's delivery log."""
    user = current_user()
    return render_template("webhooks.html", is_admin=user.is_admin, username=user.username,
                           events=list(EVENTS))  # fmt: skip


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

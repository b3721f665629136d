"""The creation wizard: ``/containers/new``.

The page is rendered on the server; ``static/wizard.js`` walks the steps
against the REST API and, once the container is created, goes straight to
its progress view.  ``?template=<name>`` preselects a template (the
templates pages link here with it).
"""

from __future__ import annotations

from flask import Blueprint, Flask, render_template, request

bp = Blueprint("wizard", __name__)


@bp.route("/containers/new")
def new_container() -> str:
    """The wizard: template, node, network, resources, access, variables, review."""
    # The script looks the name up in the template list (and says so when it is unknown).
    return render_template("wizard.html", preselect=request.args.get("template", "")[:128])


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

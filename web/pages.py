"""The dashboard's pages.  For now the landing page only; the containers
list, the creation wizard, the progress view, container detail, templates
and nodes pages build on ``base.html`` and the REST API."""

from __future__ import annotations

from flask import Blueprint, Flask, render_template

from web.auth import current_user

bp = Blueprint("pages", __name__)


@bp.route("/")
def index() -> str:
    """The landing page: who is logged in, and a way out."""
    return render_template("index.html", user=current_user())


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

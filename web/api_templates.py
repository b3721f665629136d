"""``/api/templates``: the container templates the wizard offers.

Read from the templates directory on every request (a few small files), so
a template added or fixed on disk shows up without a restart.  Secret
variables never have a value to show: they are generated per container.
"""

from __future__ import annotations

from flask import Response, jsonify

from provisioner.errors import ConfigError
from provisioner.request_checks import TEMPLATE_NAME
from provisioner.requests import load_named_template
from provisioner.templates.model import TemplateError
from provisioner.views import template_json, template_listing
from web.api import ApiError, bp
from web.resources import resources


@bp.route("/templates")
def list_templates() -> Response:
    """Every valid template; broken ones are listed apart with their problems."""
    found, invalid = template_listing(resources().settings.templates_dir)
    return jsonify({"templates": found, "invalid": invalid})


@bp.route("/templates/<name>")
def get_template(name: str) -> Response:
    """One template with its variables, defaults, files, scripts and packages."""
    if not TEMPLATE_NAME.fullmatch(name):
        raise ApiError(404, f"no template named {name!r}")
    try:
        template = load_named_template(resources().settings, name)
    except TemplateError as exc:
        raise ApiError(422, f"template {name!r} is invalid on the server",
                       problems=[str(p) for p in exc.problems]) from None  # fmt: skip
    except ConfigError:
        raise ApiError(404, f"no template named {name!r}") from None
    return jsonify(template_json(template, detail=True))

"""``/api/templates``: the container templates the wizard offers.

Read from the templates directory on every request (a few small files), so
a template added or fixed on disk shows up without a restart.  Secret
variables never have a value to show: they are generated per container.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, jsonify

from provisioner.errors import ConfigError
from provisioner.submit import load_named_template
from provisioner.templates import Template, TemplateError, Variable, load_template
from web.api import ApiError, bp
from web.app import resources

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def variable_json(var: Variable) -> dict[str, Any]:
    """Everything a form needs to ask for a variable (never a secret value)."""
    return {
        "name": var.name, "type": str(var.type), "description": var.description,
        "default": None if var.secret else var.default, "required": var.required,
        "secret": var.secret, "multiline": var.multiline, "pattern": var.pattern,
        "min": var.min, "max": var.max, "min_length": var.min_length,
        "max_length": var.max_length, "choices": list(var.choices),
        "generated_length": var.length if var.secret else None,
    }  # fmt: skip


def template_json(template: Template, *, detail: bool = False) -> dict[str, Any]:
    """A template for listings; ``detail`` adds files, packages and scripts."""
    body: dict[str, Any] = {
        "name": template.name, "description": template.description, "tags": list(template.tags),
        "ostemplate": template.ostemplate, "unprivileged": template.unprivileged,
        "resources": vars(template.resources).copy(), "features": vars(template.features).copy(),
        "variables": [variable_json(v) for v in template.variables.values()],
    }  # fmt: skip
    if detail:
        body.update(
            files=[{"target": f.target, "mode": f"{f.mode:04o}", "owner": f.owner,
                    "policy": str(f.policy), "template": f.template} for f in template.files],
            scripts=[{"name": s.name, "timeout": s.timeout} for s in template.scripts],
            packages={"apt": list(template.packages.apt), "pip": list(template.packages.pip),
                      "npm": list(template.packages.npm)},
            snapshot=template.snapshot.name if template.snapshot else None,
            health=({"type": str(template.health.kind), "port": template.health.port,
                     "path": template.health.path} if template.health else None),
        )  # fmt: skip
    return body


@bp.route("/templates")
def list_templates() -> Response:
    """Every valid template; broken ones are listed apart with their problems."""
    root = resources().settings.templates_dir
    found: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    directories = sorted(p for p in root.iterdir() if (p / "template.toml").is_file()) if (
        root.is_dir()) else []  # fmt: skip
    for path in directories:
        try:
            found.append(template_json(load_template(path)))
        except TemplateError as exc:
            invalid.append({"name": path.name, "problems": [str(p) for p in exc.problems]})
    return jsonify({"templates": found, "invalid": invalid})


@bp.route("/templates/<name>")
def get_template(name: str) -> Response:
    """One template with its variables, defaults, files, scripts and packages."""
    if not _NAME.fullmatch(name):
        raise ApiError(404, f"no template named {name!r}")
    try:
        template = load_named_template(resources().settings, name)
    except TemplateError as exc:
        raise ApiError(422, f"template {name!r} is invalid on the server",
                       problems=[str(p) for p in exc.problems]) from None  # fmt: skip
    except ConfigError:
        raise ApiError(404, f"no template named {name!r}") from None
    return jsonify(template_json(template, detail=True))

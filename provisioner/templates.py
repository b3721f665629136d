"""Container templates: ``templates_lxc/<name>/`` loaded, validated and rendered.

A template directory holds::

    template.toml        name, description, tags, ostemplate, unprivileged,
                         [resources], [features], [variables.<name>], [[files]],
                         [scripts], [packages], [snapshot], [health]
    files/...            sources of the [[files]] declarations
    scripts/NN-name.sh   run in numeric order, with TPL_<VARIABLE> in the environment
    packages/*.apt|*.pip|*.npm   one package per line, '#' comments

This module is the public face; the work is done in ``template_*`` modules:
:mod:`~provisioner.template_loader` (validation, every problem with file and
line), :mod:`~provisioner.template_variables` (typed values, generated
secrets), :mod:`~provisioner.template_render` (sandboxed Jinja2, script
environment) and :mod:`~provisioner.template_params` (PVE create parameters).
"""

from __future__ import annotations

from provisioner.template_loader import (
    load_all,
    load_template,
    validate_template,
    validate_tree,
)
from provisioner.template_model import (
    Features,
    FilePolicy,
    FileSpec,
    HealthCheck,
    HealthKind,
    Packages,
    Problem,
    Resources,
    Script,
    Snapshot,
    Template,
    TemplateError,
    Variable,
    VariableType,
)
from provisioner.template_params import (
    CreateRequest,
    NetworkConfig,
    NodeDefaults,
    build_create_params,
    marker_line,
    parse_marker,
    validate_create_params,
)
from provisioner.template_render import RenderedFile, render_files, script_env
from provisioner.template_variables import (
    SECRET_ALPHABET,
    generate_secret,
    resolve_variables,
    secret_values,
)

__all__ = [
    "SECRET_ALPHABET",
    "CreateRequest",
    "Features",
    "FilePolicy",
    "FileSpec",
    "HealthCheck",
    "HealthKind",
    "NetworkConfig",
    "NodeDefaults",
    "Packages",
    "Problem",
    "RenderedFile",
    "Resources",
    "Script",
    "Snapshot",
    "Template",
    "TemplateError",
    "Variable",
    "VariableType",
    "build_create_params",
    "generate_secret",
    "load_all",
    "load_template",
    "marker_line",
    "parse_marker",
    "render_files",
    "resolve_variables",
    "script_env",
    "secret_values",
    "validate_create_params",
    "validate_template",
    "validate_tree",
]

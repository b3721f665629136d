"""Rendering template files and the scripts' environment from variables.

Files marked ``template = true`` are Jinja2 templates rendered in an
immutable sandbox with ``StrictUndefined``: variable values are data, never
compiled, so a value like ``{{ 7*7 }}`` stays literal, and a template cannot
reach Python internals (``''.__class__``) or mutate its context.  Autoescape
is off because the outputs are config files, not HTML; HTML templates use
``|e`` explicitly.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Iterable, Mapping

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from provisioner.errors import ConfigError
from provisioner.ssh.files import FileSpec
from provisioner.templates.model import Template, VariableValue

__all__ = [
    "HOOK_ENV_NAMES",
    "check_jinja_source",
    "hook_env",
    "render_files",
    "render_text",
    "sandbox_environment",
    "script_env",
]

_TEMPLATE_FILENAME = "<template>"


@functools.cache
def sandbox_environment() -> ImmutableSandboxedEnvironment:
    """The one Jinja2 environment templates are parsed and rendered with."""
    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,  # deploy files byte for byte as written
        auto_reload=False,
    )


def check_jinja_source(source: str, declared: Iterable[str]) -> list[tuple[int | None, str]]:
    """Parse a template and find names it uses that are not declared variables.

    Returns:
        (line, message) pairs; empty if the template is fine.
    """
    env = sandbox_environment()
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return [(exc.lineno, f"Jinja2 syntax error: {exc.message}")]
    known = set(declared) | set(env.globals)
    problems: list[tuple[int | None, str]] = []
    for name in sorted(meta.find_undeclared_variables(ast) - known):
        line = next((n.lineno for n in ast.find_all(nodes.Name) if n.name == name), None)
        problems.append((line, f"uses {name!r}, which is not a declared variable"))
    return problems


def _error_line(exc: BaseException) -> int | None:
    # Jinja2 rewrites tracebacks so template frames carry template line numbers.
    lines = [
        lineno
        for frame, lineno in traceback.walk_tb(exc.__traceback__)
        if frame.f_code.co_filename == _TEMPLATE_FILENAME
    ]
    return lines[-1] if lines else None


def render_text(source: str, variables: Mapping[str, VariableValue], *, name: str) -> str:
    """Render one template source in the sandbox.

    Args:
        source: the Jinja2 template text.
        variables: the resolved variables (see ``resolve_variables``).
        name: the file name used in error messages.

    Raises:
        ConfigError: the template has a syntax error, uses an undefined
            variable, is refused by the sandbox (``SecurityError``) or fails
            while rendering; the message names the file (and line if known).
    """
    env = sandbox_environment()
    try:
        return env.from_string(source).render(dict(variables))
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{name}:{exc.lineno}: Jinja2 syntax error: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        where = _where(name, exc)
        raise ConfigError(f"{where}: refused by the template sandbox: {exc}") from None
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError) as exc:
        raise ConfigError(f"{_where(name, exc)}: rendering failed: {exc}") from None


def _where(name: str, exc: BaseException) -> str:
    line = _error_line(exc)
    return f"{name}:{line}" if line is not None else name


def render_files(template: Template, variables: Mapping[str, VariableValue]) -> list[FileSpec]:
    """Read the template's files and render those marked ``template = true``.

    Args:
        template: the loaded template.
        variables: the resolved variables (see ``resolve_variables``).

    Returns:
        One :class:`~provisioner.ssh.files.FileSpec` per declared file (its
        final bytes, target, mode, owner and policy), in declaration order.

    Raises:
        ConfigError: a source cannot be read, is not UTF-8 although it is a
            template, fails to render (see :func:`render_text`), or its
            target, mode or owner is refused by the SSH layer.
    """
    rendered: list[FileSpec] = []
    for spec in template.files:
        label = str(spec.source_path)
        try:
            content = spec.source_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{label}: cannot read: {exc.strerror}") from None
        if spec.template:
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{label}: a template must be UTF-8 text") from None
            content = render_text(text, variables, name=label).encode("utf-8")
        rendered.append(spec.to_spec(content))
    return rendered


def _env_value(value: VariableValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def script_env(template: Template, variables: Mapping[str, VariableValue]) -> dict[str, str]:
    """The environment the template's scripts run with.

    Every variable appears as ``TPL_<NAME>`` (upper-cased); booleans are
    ``true``/``false``, integers their decimal text.  Secret variables are
    included (scripts need them); mask them with ``secret_values`` in output.

    Raises:
        ConfigError: a variable of the template has no value.
    """
    missing = [name for name in template.variables if name not in variables]
    if missing:
        raise ConfigError(f"template {template.name!r}: no value for {', '.join(missing)}")
    return {var.env_name: _env_value(variables[name]) for name, var in template.variables.items()}


#: The variables a data hook gets besides the template's ``TPL_*``.
HOOK_ENV_NAMES = (
    "PROV_HOSTNAME", "PROV_IP", "PROV_PEER_HOSTNAME", "PROV_PEER_IP", "PROV_ENVIRONMENT",
)  # fmt: skip


def hook_env(
    template: Template, variables: Mapping[str, VariableValue], *, hostname: str, ip: str,
    peer_hostname: str = "", peer_ip: str = "", environment: str = "",
) -> dict[str, str]:  # fmt: skip
    """The environment a data hook runs with (docs/templates.md, "Data hooks").

    The scripts' ``TPL_*`` variables (:func:`script_env`) and ``PROV_*``:
    this container's host name and address, the peer's (the other container
    of a sync, promote or clone: for a clone its source; for ``rewrite``,
    the container whose data was imported) and the environment's name
    (production, staging, ...); what is not known is empty.

    Raises:
        ConfigError: a variable of the template has no value.
    """
    env = script_env(template, variables)
    env.update(
        PROV_HOSTNAME=hostname, PROV_IP=ip, PROV_PEER_HOSTNAME=peer_hostname,
        PROV_PEER_IP=peer_ip, PROV_ENVIRONMENT=environment,
    )  # fmt: skip
    return env

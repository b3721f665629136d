"""Template variables: typing, validation and generated secrets.

The same checks serve the loader (a default must satisfy its own variable's
rules) and :func:`resolve_variables` (the values a user gives).  Messages
never echo the value of a secret variable.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping

from provisioner.errors import ConfigError
from provisioner.templates.model import Template, Variable, VariableType, VariableValue

__all__ = [
    "SECRET_ALPHABET",
    "check_value",
    "coerce_value",
    "generate_secret",
    "resolve_variables",
    "secret_values",
]

# Letters and digits only: safe unquoted in shell, SQL, URLs and config files.
SECRET_ALPHABET = string.ascii_letters + string.digits

_INT = re.compile(r"^[+-]?\d+$")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def generate_secret(length: int = 24) -> str:
    """A random secret of ``length`` characters from :data:`SECRET_ALPHABET`."""
    return "".join(secrets.choice(SECRET_ALPHABET) for _ in range(length))


def _shown(var: Variable, value: object) -> str:
    # Never put a secret into a message (messages end up in events and logs).
    return "" if var.secret else f", got {value!r}"


def coerce_value(var: Variable, raw: object) -> VariableValue:
    """Turn a given value (usually a form string) into the variable's type.

    Raises:
        ValueError: with a message (no variable name) if it is not of the type.
    """
    if var.type is VariableType.INT:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and _INT.match(raw.strip()):
            return int(raw.strip())
        raise ValueError(f"must be an integer{_shown(var, raw)}")
    if var.type is VariableType.BOOL:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"must be a boolean (true/false, yes/no, on/off, 1/0){_shown(var, raw)}")
    if not isinstance(raw, str):
        raise ValueError(f"must be a string{_shown(var, raw)}")
    return raw


def check_value(var: Variable, value: VariableValue) -> str | None:
    """Check a typed value against the variable's rules.

    Returns:
        None if it is fine, else a message without the variable's name.
    """
    if var.type is VariableType.INT:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be an integer{_shown(var, value)}"
        if var.min is not None and value < var.min:
            return f"must be at least {var.min}, got {value}"
        if var.max is not None and value > var.max:
            return f"must be at most {var.max}, got {value}"
        return None
    if var.type is VariableType.BOOL:
        return None if isinstance(value, bool) else f"must be a boolean{_shown(var, value)}"
    if not isinstance(value, str):
        return f"must be a string{_shown(var, value)}"
    if var.type is VariableType.CHOICE:
        if value not in var.choices:
            allowed = ", ".join(repr(c) for c in var.choices)
            return f"must be one of {allowed}{_shown(var, value)}"
        return None
    # Values land in config files: a stray newline could add a directive.
    control = _CONTROL_MULTILINE if var.multiline else _CONTROL
    if control.search(value):
        allowed = " other than newline and tab" if var.multiline else ""
        return f"must not contain control characters{allowed}"
    if var.min_length is not None and len(value) < var.min_length:
        return f"must be at least {var.min_length} characters long"
    if var.max_length is not None and len(value) > var.max_length:
        return f"may be at most {var.max_length} characters long"
    if var.pattern is not None and not re.fullmatch(var.pattern, value):
        return f"must match the pattern {var.pattern!r}{_shown(var, value)}"
    return None


def resolve_variables(template: Template, given: Mapping[str, object]) -> dict[str, VariableValue]:
    """Validate the given values, apply defaults and generate missing secrets.

    Args:
        template: the loaded template.
        given: variable name -> value, usually strings from a form or the CLI
            (ints and bools are accepted for int/bool variables).

    Returns:
        Every variable of the template -> its typed value, in declaration order.

    Raises:
        ConfigError: naming every offending variable (unknown, missing
            required, wrong type, failed validation); secret values are never
            part of the message.
    """
    errors: list[str] = []
    for name in given:
        if name not in template.variables:
            known = ", ".join(template.variables) or "none"
            errors.append(f"unknown variable {name!r} (known: {known})")
    values: dict[str, VariableValue] = {}
    for name, var in template.variables.items():
        raw = given.get(name)
        if raw is None:
            if var.default is not None:
                values[name] = var.default
            elif var.required:
                errors.append(f"variable {name!r} is required")
            elif var.secret:
                values[name] = generate_secret(var.length)
            continue
        try:
            value = coerce_value(var, raw)
        except ValueError as exc:
            errors.append(f"variable {name!r} {exc}")
            continue
        problem = check_value(var, value)
        if problem:
            errors.append(f"variable {name!r} {problem}")
        else:
            values[name] = value
    if errors:
        raise ConfigError(f"template {template.name!r}: " + "; ".join(errors))
    return values


def secret_values(template: Template, variables: Mapping[str, VariableValue]) -> list[str]:
    """The values of secret variables, for masking them in script output."""
    return [str(variables[n]) for n in sorted(template.secret_names) if variables.get(n)]

"""Parameter validation against the official PVE API schema.

This mirrors ``PVE::JSONSchema`` (``check_prop``/``check_object``/
``parse_property_string`` in pve-common): the same checks in the same order,
with the same messages.  It is pure: the only I/O is reading the packaged
``pve-api-schema.json`` once.

Form parameters arrive as strings; JSON bodies may carry int/float/bool, which
are judged the way Perl sees the decoded JSON (numbers as their string form,
``true``/``false`` as ``JSON::PP::Boolean`` objects).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

from provisioner.pve import formats

__all__ = [
    "INDEXED_PARAMS",
    "ApiSchema",
    "ParameterError",
    "format_property_string",
    "iter_indexed",
    "load_api_schema",
    "parse_property_string",
    "split_indexed",
]

Schema = Mapping[str, Any]

# "net[n]" etc. in the schema stand for base0 .. base(N-1).
INDEXED_PARAMS: dict[str, int] = {"net": 32, "mp": 256, "unused": 256, "dev": 256}

_TYPES = frozenset({"string", "integer", "number", "boolean"})
_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$")
_TEMPLATE_INDEXED = re.compile(r"^([a-z]+)\[n\]$")
_CONCRETE_INDEXED = re.compile(r"^([a-z]+)(\d+)$")

MISSING = "property is missing and it is not optional"
NOT_DEFINED = (
    "property is not defined in schema and the schema does not allow additional properties"
)


class ParameterError(Exception):
    """Parameter verification failed (PVE answers 400).

    Attributes:
        errors: parameter name (``net0.ip`` for property-string keys) -> message.
    """

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("Parameter verification failed.")
        self.errors: dict[str, str] = dict(errors)


class _PropertyStringDie(Exception):
    """A ``die`` inside parse_property_string (before the object check)."""


def iter_indexed(name: str) -> Iterator[str]:
    """Expand a schema parameter name: ``net[n]`` -> net0..net31; others as is."""
    m = _TEMPLATE_INDEXED.match(name)
    if not m:
        yield name
        return
    yield from (f"{m[1]}{i}" for i in range(INDEXED_PARAMS[m[1]]))


def split_indexed(name: str) -> tuple[str, int] | None:
    """``net3`` -> ("net", 3) if it is a valid indexed name, else None (``net32``, ``net03``)."""
    m = _CONCRETE_INDEXED.match(name)
    if not m or m[1] not in INDEXED_PARAMS or str(int(m[2])) != m[2]:
        return None
    index = int(m[2])
    return (m[1], index) if index < INDEXED_PARAMS[m[1]] else None


def _perl_str(value: object) -> str:
    """How Perl stringifies a decoded JSON scalar."""
    if isinstance(value, float):
        return f"{value:.15g}"
    return str(value)


def _number(text: str) -> int | float:
    return int(text) if _INTEGER.match(text) else float(text)


def _add_error(errors: dict[str, str], path: str, msg: str) -> None:
    # JSONSchema.pm joins with '\n' in single quotes: a literal backslash-n.
    errors[path] = f"{errors[path]}\\n{msg}" if path in errors else msg


@functools.cache
def _compile_pattern(pattern: str) -> re.Pattern[str]:
    # Perl's "(?^:...)" (default flags) is Python's "(?:...)"; PVE anchors
    # without grouping: m/^$pattern$/.
    return re.compile("^" + pattern.replace("(?^", "(?") + "$")


def _check_type(path: str, type_: str | None, value: object, errors: dict[str, str]) -> bool:
    if not type_:
        return True
    # Decoded JSON references: true/false, arrays and objects.
    kind = None
    if isinstance(value, bool):
        if type_ == "boolean":
            return True
        kind = "JSON::PP::Boolean"
    elif isinstance(value, list | tuple):
        kind = "ARRAY"
    elif isinstance(value, dict):
        kind = "HASH"
    if kind:
        _add_error(errors, path, f"type check ('{type_}') failed - got {kind}")
        return False
    text = _perl_str(value)
    ok = {
        "boolean": text in ("0", "1"),
        "integer": bool(_INTEGER.match(text)),
        "number": bool(_NUMBER.match(text)),
    }.get(type_, True)
    if not ok:
        _add_error(errors, path, f"type check ('{type_}') failed - got '{text}'")
    return ok


def _convert(schema: Schema, value: object) -> object:
    type_ = schema.get("type")
    if isinstance(value, bool):
        return value
    text = _perl_str(value)
    if isinstance(schema.get("format"), Mapping):
        return text  # property strings stay strings
    if type_ == "integer":
        return int(text)
    if type_ == "number":
        return float(text)
    if type_ == "boolean":
        return text == "1"
    return text


def _check_prop(value: object, schema: Schema, path: str, errors: dict[str, str]) -> bool:
    """One value against one schema; True if it passed (check_prop)."""
    if value is None:
        if not schema.get("optional"):
            _add_error(errors, path, MISSING)
        return False
    if not _check_type(path, schema.get("type"), value, errors):
        return False
    if isinstance(value, bool | list | tuple | dict):
        return True  # references get no further scalar checks in Perl
    text = _perl_str(value)
    fmt = schema.get("format")
    if isinstance(fmt, Mapping):
        try:
            _parse_property_string(fmt, text, path)
        except ParameterError as exc:
            for key, msg in exc.errors.items():
                _add_error(errors, key, msg)
            return False
    elif fmt:
        try:
            formats.check_format(fmt, text)
        except formats.FormatError as exc:
            _add_error(errors, path, f"invalid format - {exc}")
            return False
    failure = _scalar_failure(schema, text)
    if failure:
        _add_error(errors, path, failure)
    return failure is None


def _scalar_failure(schema: Schema, text: str) -> str | None:
    """pattern, length, range and enum checks, in check_prop's order."""
    pattern = schema.get("pattern")
    if pattern and not _compile_pattern(pattern).match(text):
        return "value does not match the regex pattern"
    max_len, min_len = schema.get("maxLength"), schema.get("minLength")
    if max_len is not None and len(text) > int(max_len):
        return f"value may only be {max_len} characters long"
    if min_len is not None and len(text) < int(min_len):
        return f"value must be at least {min_len} characters long"
    if _NUMBER.match(text):
        maximum, minimum = schema.get("maximum"), schema.get("minimum")
        if maximum is not None and _number(text) > _number(_perl_str(maximum)):
            return f"value must have a maximum value of {_perl_str(maximum)}"
        if minimum is not None and _number(text) < _number(_perl_str(minimum)):
            return f"value must have a minimum value of {_perl_str(minimum)}"
    enum = schema.get("enum")
    if enum and text not in [_perl_str(e) for e in enum]:
        joined = ", ".join(_perl_str(e) for e in enum)
        return f"value '{text}' does not have a value in the enumeration '{joined}'"
    return None


def _lookup(props: Schema, name: str, indexed: bool) -> Schema | None:
    if name in props:
        return props[name]
    split = split_indexed(name) if indexed else None
    return props.get(f"{split[0]}[n]") if split else None


def _check_object(
    path: str,
    props: Schema,
    values: Mapping[str, object],
    additional: bool,
    errors: dict[str, str],
    indexed: bool = False,
) -> dict[str, object]:
    """check_object: every schema key, then every given key; returns converted values."""

    def sub(key: str) -> str:
        return f"{path}.{key}" if path else key

    out: dict[str, object] = {}
    for name, schema in props.items():
        if schema.get("optional"):
            continue
        for concrete in iter_indexed(name) if indexed else (name,):
            if values.get(concrete) is None:
                _add_error(errors, sub(concrete), MISSING)
    for name, value in values.items():
        schema = _lookup(props, name, indexed)
        if schema is None:
            if not additional:
                _add_error(errors, sub(name), NOT_DEFINED)
            continue
        requires = schema.get("requires")
        if isinstance(requires, str) and values.get(requires) is None:
            _add_error(
                errors, sub(requires), f"missing property - '{sub(name)}' requires this property"
            )
        if value is not None and _check_prop(value, schema, sub(name), errors):
            out[name] = _convert(schema, value)
    return out


def _perl_bool(text: str) -> object:
    """parse_boolean, falling back to the text itself."""
    if re.match(r"^(1|on|yes|true)$", text, re.I):
        return "1"
    if re.match(r"^(0|off|no|false)$", text, re.I):
        return "0"
    return text


def _split_property_string(fmt: Schema, data: str) -> dict[str, object]:
    """The parsing half of parse_property_string; dies like the Perl code."""
    res: dict[str, object] = {}
    default_key: str | None = None
    for part in data.split(","):
        if re.match(r"^\s*$", part):
            continue
        m = re.match(r"^([^=]+)=(.+)$", part)
        if m:
            key, val = m[1], m[2]
            if key in res:
                raise _PropertyStringDie(f"duplicate key in comma-separated list property: {key}")
            schema = fmt.get(key)
            if schema is None:
                raise _PropertyStringDie(f"invalid key in comma-separated list property: {key}")
            res[key] = _perl_bool(val) if schema.get("type") == "boolean" else val
        elif "=" not in part:
            if default_key:
                raise _PropertyStringDie(
                    f"duplicate key in comma-separated list property: {default_key}"
                )
            default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
            if default_key is None:
                raise _PropertyStringDie(
                    "value without key, but schema does not define a default key"
                )
            if res.get(default_key) not in (None, "", "0"):
                raise _PropertyStringDie(
                    f"duplicate key in comma-separated list property: {default_key}"
                )
            res[default_key] = part
        else:
            raise _PropertyStringDie("missing key in comma-separated list property")
    return res


def _parse_property_string(fmt: Schema, data: str, path: str) -> dict[str, object]:
    try:
        res = _split_property_string(fmt, data)
    except _PropertyStringDie as exc:
        raise ParameterError({path: f"invalid format - {exc}"}) from None
    errors: dict[str, str] = {}
    out = _check_object(path, fmt, res, False, errors)
    if errors:
        # Real PVE folds these into one message ("invalid format - format error\n
        # net0.ip: ..."); we keep them as separate keys.
        raise ParameterError({path: "invalid format - format error", **errors})
    return out


def parse_property_string(fmt: Schema, value: str, param_name: str) -> dict[str, object]:
    """Parse and check a property string such as ``name=eth0,bridge=vmbr0,ip=dhcp``.

    Args:
        fmt: the ``format`` dict of the parameter (key -> sub-schema).
        value: the property string.
        param_name: the parameter name, used as the error prefix (``net0``).

    Returns:
        key -> value converted to its sub-schema type (bool/int/float/str).

    Raises:
        ParameterError: with ``{param_name: "invalid format - ...", "param.key": ...}``.
    """
    return _parse_property_string(fmt, value, param_name)


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return _perl_str(value)


def format_property_string(
    values: Mapping[str, object],
    default_key: str | None = None,
    fmt: Schema | None = None,
) -> str:
    """Render a property string like PVE's print_property_string.

    The default key comes first without ``key=``, then required keys (if
    ``fmt`` is given), then the rest, each group sorted; None values are left out.

    Args:
        values: key -> value (bools print as 1/0).
        default_key: the key written bare; taken from ``fmt`` when not given.
        fmt: the format dict, for key order and ``disk-size`` values.

    Raises:
        ValueError: if a value contains a comma.
    """
    fmt = fmt or {}
    if default_key is None:
        default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    present = sorted(k for k, v in values.items() if v is not None)
    required = [k for k in present if k in fmt and not fmt[k].get("optional")]
    order = [k for k in present if k == default_key] + required + present
    parts: list[str] = []
    for key in dict.fromkeys(order):
        text = _format_value(values[key])
        size = formats.parse_size(text) if fmt.get(key, {}).get("format") == "disk-size" else None
        if size is not None:
            text = _format_size(size)
        if "," in text:
            raise ValueError(f"illegal value with commas for {key}")
        parts.append(text if key == default_key else f"{key}={text}")
    return ",".join(parts)


def _format_size(size: int) -> str:
    """PVE::JSONSchema::format_size: the largest unit that divides exactly."""
    for unit in ("", "K", "M", "G"):
        if size % 1024:
            return f"{size}{unit}"
        size //= 1024
    return f"{size}T"


class ApiSchema:
    """The PVE API structure: path templates, methods and their parameters."""

    def __init__(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        """Build from the schema dict; checks every format name and pattern.

        Raises:
            formats.UnknownFormatError: if a parameter names an unknown format.
            ValueError: for other schema entries this validator cannot honour.
        """
        self._data = data
        self._routes = sorted(
            ((tpl, [s for s in tpl.split("/") if s]) for tpl in data),
            # At each level PVE prefers a literal directory over a {param}.
            key=lambda r: [seg.startswith("{") for seg in r[1]],
        )
        for tpl, methods in data.items():
            for method, info in methods.items():
                for name, schema in info.get("parameters", {}).get("properties", {}).items():
                    self._check_schema(f"{method} {tpl} {name}", name, schema)

    def _check_schema(self, where: str, name: str, schema: Schema) -> None:
        m = _TEMPLATE_INDEXED.match(name)
        if m and m[1] not in INDEXED_PARAMS:
            raise ValueError(f"{where}: unknown indexed parameter")
        if schema.get("type") not in _TYPES:
            raise ValueError(f"{where}: unsupported type {schema.get('type')!r}")
        for bound in ("minimum", "maximum"):
            if bound in schema and not _NUMBER.match(_perl_str(schema[bound])):
                raise ValueError(f"{where}: non-numeric {bound}")
        if schema.get("pattern"):
            _compile_pattern(schema["pattern"])
        if not isinstance(schema.get("requires", ""), str):
            raise ValueError(f"{where}: only named 'requires' are supported")
        fmt = schema.get("format")
        if isinstance(fmt, Mapping):
            for key, sub in fmt.items():
                self._check_schema(f"{where}.{key}", key, sub)
        elif fmt:
            formats.resolve_format(fmt)

    @property
    def templates(self) -> list[str]:
        """All path templates."""
        return list(self._data)

    def methods_for(self, template: str) -> frozenset[str]:
        """The HTTP methods the template defines (empty if unknown)."""
        return frozenset(self._data.get(template, {}))

    def allows(self, method: str, template: str) -> bool:
        """Whether ``method`` is defined for ``template``."""
        return method.upper() in self.methods_for(template)

    def method_info(self, method: str, template: str) -> Schema:
        """The raw schema entry (parameters, returns, permissions, ...).

        Raises:
            KeyError: if the template or method is not defined.
        """
        return self._data[template][method.upper()]

    def match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        """Find the template for a request path (the part after ``/api2/json``).

        Routing is by path alone, like PVE's: a known path with an undefined
        method still matches; check :meth:`allows` to answer "not implemented".

        Returns:
            (template, path params) or None if no template fits the path.
        """
        del method  # routing does not depend on it; kept for a uniform call site
        parts = [p for p in path.split("/") if p]  # PVE skips empty fragments
        for template, segments in self._routes:
            if len(segments) != len(parts):
                continue
            params: dict[str, str] = {}
            for seg, part in zip(segments, parts, strict=True):
                if seg.startswith("{") and seg.endswith("}"):
                    params[seg[1:-1]] = part
                elif seg != part:
                    break
            else:
                return template, params
        return None

    def param_schema(self, method: str, template: str, name: str) -> Schema | None:
        """The schema of one parameter, resolving ``net0`` to ``net[n]``."""
        props = self.method_info(method, template).get("parameters", {}).get("properties", {})
        return _lookup(props, name, indexed=True)

    def validate(
        self, method: str, template: str, params: Mapping[str, object]
    ) -> dict[str, object]:
        """Check request parameters (path params merged with query/body).

        Returns:
            The given parameters converted: int for integer, float for number,
            bool for boolean, str otherwise (property strings stay strings).

        Raises:
            ParameterError: with every error found.
            KeyError: if the template or method is not defined.
        """
        spec = self.method_info(method, template).get("parameters", {})
        additional = spec.get("additionalProperties", 1)
        errors: dict[str, str] = {}
        out = _check_object("", spec.get("properties", {}), params, bool(additional), errors, True)
        if errors:
            raise ParameterError(errors)
        return out


# The subset was extracted with prose descriptions removed, which also removed
# the *parameters* named "description".  PVE defines them as below (pve-container
# API: create/config maxLength 8192; snapshot and clone plain strings).
_DROPPED_DESCRIPTION_PARAMS = {
    ("/nodes/{node}/lxc", "POST"): {"optional": 1, "type": "string", "maxLength": 8192},
    ("/nodes/{node}/lxc/{vmid}/config", "PUT"): {
        "optional": 1,
        "type": "string",
        "maxLength": 8192,
    },
    ("/nodes/{node}/lxc/{vmid}/clone", "POST"): {"optional": 1, "type": "string"},
    ("/nodes/{node}/lxc/{vmid}/snapshot", "POST"): {"optional": 1, "type": "string"},
    ("/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/config", "PUT"): {
        "optional": 1,
        "type": "string",
    },
}


@functools.cache
def load_api_schema() -> ApiSchema:
    """The packaged PVE API schema, loaded once."""
    text = (
        resources.files("provisioner.pve")
        .joinpath("pve-api-schema.json")
        .read_text(encoding="utf-8")
    )
    data = json.loads(text)
    for (path, method), prop in _DROPPED_DESCRIPTION_PARAMS.items():
        props = data[path][method].setdefault("parameters", {}).setdefault("properties", {})
        props.setdefault("description", prop)
    return ApiSchema(data)

"""Reading the fields of a request's JSON (the REST API's body, the stored
request, the CLI's short syntax): flags, bounded integers, text, known keys,
``key=value`` lists.  Every failure is a ConfigError naming the field.  Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from provisioner.errors import ConfigError

__all__ = [
    "read_flag",
    "read_int",
    "read_list",
    "read_optional_flag",
    "read_pairs",
    "read_text",
    "unknown_keys",
]

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def read_flag(field: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ConfigError(f"{field}: must be true or false (1 or 0), got {value!r}")


def read_int(field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{field}: must be an integer from {low} to {high}, got {value!r}")
    return value


def read_text(field: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{field}: must be a string, got {value!r}")
    return value.strip() or None


def unknown_keys(field: str, data: Mapping[str, Any], known: Iterable[str]) -> None:
    extra = sorted(set(data) - set(known))
    if extra:
        raise ConfigError(f"{field}.{extra[0]}: unknown key (known: {', '.join(known)})")


def read_pairs(field: str, text: str, flags: Iterable[str] = ()) -> dict[str, str]:
    """``key=value,key=value`` (a bare flag means ``flag=1``)."""
    pairs: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            if key not in flags:
                raise ConfigError(f"{field}: expected key=value, got {part!r}")
            value = "1"
        if key in pairs:
            raise ConfigError(f"{field}: {key!r} given twice")
        pairs[key] = value
    return pairs


def read_list(field: str, data: object, limit: int) -> list[Any]:
    """A JSON list of at most ``limit`` items (None: empty).

    Raises:
        ConfigError: ``<field>: ...``.
    """
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError(f"{field}: must be an array, got {type(data).__name__}")
    if len(data) > limit:
        raise ConfigError(f"{field}: at most {limit} entries, got {len(data)}")
    return data


def read_optional_flag(field: str, value: object) -> bool | None:
    return None if value is None else read_flag(field, value)

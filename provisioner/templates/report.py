"""Collecting a template's problems while reading its ``template.toml``.

:class:`TemplateReport` records :class:`~provisioner.templates.model.Problem`
entries located by :class:`~provisioner.templates.toml.TomlLocator` and offers
typed access to TOML tables that reports a wrong type instead of raising, so
one pass finds every problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from provisioner.templates.model import Problem
from provisioner.templates.toml import KeyPath, TomlLocator

__all__ = ["TEMPLATE_FILE", "TemplateReport"]

TEMPLATE_FILE = "template.toml"

T = TypeVar("T")
_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}


class TemplateReport:
    """Problems of one template directory, and typed access to its TOML."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.toml_file = str(directory / TEMPLATE_FILE)
        self.problems: list[Problem] = []
        self.locator = TomlLocator("")

    # --- reporting -----------------------------------------------------------------------

    def at(self, file: Path | str, line: int | None, message: str) -> None:
        self.problems.append(Problem(str(file), line, message))

    def key(self, path: KeyPath, message: str) -> None:
        """A problem in template.toml at the line of ``path``."""
        self.at(self.toml_file, self.locator.line(*path), message)

    @staticmethod
    def label(path: KeyPath) -> str:
        out = ""
        for part in path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    # --- typed access --------------------------------------------------------------------

    def get(self, table: Mapping[str, Any], path: KeyPath, kind: type[T], default: T) -> T:
        """``table[path[-1]]`` if present and of ``kind``; reports and returns default otherwise."""
        name = path[-1]
        assert isinstance(name, str)
        if name not in table:
            return default
        value = table[name]
        # bool is an int subclass; TOML keeps them apart, so do we.
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        self.key(path, f"{self.label(path)} must be {_TYPE_NAMES[kind]}, got {value!r}")
        return default

    def opt(self, table: Mapping[str, Any], path: KeyPath, kind: type[T]) -> T | None:
        """Like :meth:`get` with no default: None when absent or invalid."""
        if path[-1] not in table:
            return None
        sentinel: Any = object()
        value = self.get(table, path, kind, sentinel)
        return None if value is sentinel else value

    def require(self, table: Mapping[str, Any], path: KeyPath, kind: type[T], default: T) -> T:
        if path[-1] not in table:
            self.key(path[:-1], f"{self.label(path)} is required")
            return default
        return self.get(table, path, kind, default)

    def unknown_keys(
        self, table: Mapping[str, Any], path: KeyPath, allowed: tuple[str, ...]
    ) -> None:
        for key in table:
            if key not in allowed:
                where = self.label((*path, key))
                self.key((*path, key), f"unknown key {where!r} (allowed: {', '.join(allowed)})")

    def bounded_int(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        default: int,
        low: int | None,
        high: int | None,
    ) -> int:
        value = self.get(table, path, int, default)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.key(path, f"{self.label(path)} must be {bounds}, got {value}")
            return default
        return value

    def table(self, data: Mapping[str, Any], path: KeyPath) -> dict[str, Any]:
        return self.get(data, path, dict, {})

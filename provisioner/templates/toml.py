"""Line numbers for TOML keys, which ``tomllib`` does not keep.

A pragmatic scanner: it follows table headers (``[a.b]``, ``[[files]]``
with their running index) and ``key = value`` lines, skipping multi-line
strings and arrays, and records the line of each key path.  Lookups fall back
to the nearest recorded parent, so a key inside an inline table reports the
line of the table's key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence

__all__ = ["KeyPath", "TomlLocator", "toml_error_line"]

KeyPath = tuple[str | int, ...]

_PART = r"(?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')"
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_KEY = re.compile(rf"^\s*({_DOTTED})\s*=\s*(.*)$")
_TABLE = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]\s*(?:#.*)?$")
_ARRAY_TABLE = re.compile(rf"^\s*\[\[\s*({_DOTTED})\s*\]\]\s*(?:#.*)?$")
_PART_RE = re.compile(_PART)
_STRINGS = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'")
_ERROR_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def _split_dotted(dotted: str) -> list[str]:
    parts = []
    for m in _PART_RE.finditer(dotted):
        part = m.group(0)
        if part[0] in "\"'":
            part = part[1:-1]
        parts.append(part)
    return parts


def toml_error_line(exc: tomllib.TOMLDecodeError) -> tuple[int | None, str]:
    """Split tomllib's "msg (at line N, column M)" into (N, msg)."""
    text = str(exc)
    m = _ERROR_LINE.search(text)
    if not m:
        return None, text
    return int(m.group(1)), (text[: m.start()] + text[m.end() :]).strip()


class TomlLocator:
    """Maps key paths such as ``("files", 2, "target")`` to 1-based lines."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        self._array_index: dict[tuple[str, ...], int] = {}
        self._scan(text.splitlines())

    def line(self, *path: str | int) -> int | None:
        """The line of ``path`` or of its nearest recorded parent (None if none)."""
        for end in range(len(path), 0, -1):
            line = self._lines.get(path[:end])
            if line is not None:
                return line
        return None

    def _resolve(self, names: Sequence[str], *, new_array_item: bool) -> KeyPath:
        path: list[str | int] = []
        for i, name in enumerate(names):
            path.append(name)
            key = tuple(names[: i + 1])
            last = i == len(names) - 1
            if last and new_array_item:
                self._array_index[key] = self._array_index.get(key, -1) + 1
                path.append(self._array_index[key])
            elif key in self._array_index:
                path.append(self._array_index[key])
        return tuple(path)

    def _record(self, path: KeyPath, line: int) -> None:
        for end in range(1, len(path) + 1):
            self._lines.setdefault(path[:end], line)

    def _scan(self, lines: list[str]) -> None:
        table: KeyPath = ()
        skip_until: str | None = None  # closing delimiter of a multi-line string
        depth = 0  # open brackets of a multi-line array or inline table
        for number, raw in enumerate(lines, start=1):
            if skip_until is not None:
                if skip_until in raw:
                    skip_until = None
                continue
            if depth > 0:
                depth += _bracket_balance(raw)
                continue
            if m := _ARRAY_TABLE.match(raw):
                table = self._resolve(_split_dotted(m.group(1)), new_array_item=True)
                self._record(table, number)
            elif m := _TABLE.match(raw):
                table = self._resolve(_split_dotted(m.group(1)), new_array_item=False)
                self._record(table, number)
            elif m := _KEY.match(raw):
                self._record(table + tuple(_split_dotted(m.group(1))), number)
                value = m.group(2)
                for delim in ('"""', "'''"):
                    if value.startswith(delim) and value.count(delim) == 1:
                        skip_until = delim
                if skip_until is None:
                    depth = max(_bracket_balance(value), 0)


def _bracket_balance(text: str) -> int:
    code = _STRINGS.sub("", text).split("#", 1)[0]
    return code.count("[") + code.count("{") - code.count("]") - code.count("}")

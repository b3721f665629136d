"""Small validators shared by the template loader: names, paths, modes, packages.

Each returns a message (or a parsed value) instead of raising, so the loader
can collect every problem of a template in one pass.
"""

from __future__ import annotations

import posixpath
import re

__all__ = [
    "HOOK_NAME_RE",
    "OSTEMPLATE_RE",
    "PACKAGE_LINE_RES",
    "SCRIPT_NAME_RE",
    "check_absolute_path",
    "check_owner",
    "check_relative_source",
    "is_pve_configid",
    "is_pve_tag",
    "is_template_name",
    "is_variable_name",
    "package_lines",
    "parse_mode",
]

SCRIPT_NAME_RE = re.compile(r"^\d{2}-[a-z0-9][a-z0-9_.-]*\.sh$")
# A file directly under hooks/, bash like the scripts.
HOOK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*\.sh$")
# A volid on a template storage, or just the file name (the node's template
# storage is prepended when building the create parameters).
OSTEMPLATE_RE = re.compile(
    r"^(?:[a-z][a-z0-9\-_.]*[a-z0-9]:vztmpl/)?[A-Za-z0-9][A-Za-z0-9._+-]*\.tar\.(?:gz|xz|zst)$"
)
_TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_VARIABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_PVE_TAG = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$")
_PVE_CONFIGID = re.compile(r"^[a-z][a-z0-9_-]+$", re.I)
_ACCOUNT = r"(?:[a-z_][a-z0-9_-]{0,31}\$?|\d+)"
_OWNER = re.compile(rf"^{_ACCOUNT}:{_ACCOUNT}$")
_MODE = re.compile(r"^[0-7]{3,4}$")

_PIP_OP = r"(?:===|==|!=|~=|>=|<=|<|>)\s*[A-Za-z0-9.*+!_-]+"
PACKAGE_LINE_RES: dict[str, re.Pattern[str]] = {
    # name[:arch][=version]
    "apt": re.compile(r"^[a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+)?$"),
    # PEP 508 name, optional extras and version specifiers; no URLs or options
    "pip": re.compile(
        r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
        r"(?:\[\s*[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*\s*\])?"
        rf"(?:\s*{_PIP_OP}(?:\s*,\s*{_PIP_OP})*)?$"
    ),
    # [@scope/]name[@version-or-range]
    "npm": re.compile(
        r"^(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*(?:@[A-Za-z0-9.^~<>=*|+-]+)?$"
    ),
}


def is_template_name(name: str) -> bool:
    """Lowercase letters, digits and '-': the directory name and PVE tag friendly."""
    return bool(_TEMPLATE_NAME.match(name))


def is_variable_name(name: str) -> bool:
    """Lowercase identifiers: usable in Jinja2 and as ``TPL_<NAME>``."""
    return bool(_VARIABLE_NAME.match(name))


def is_pve_tag(tag: str) -> bool:
    """PVE's ``pve-tag`` format (lowercase only, as PVE shows tags)."""
    return bool(_PVE_TAG.match(tag))


def is_pve_configid(name: str) -> bool:
    """PVE's ``pve-configid`` format, used for snapshot names."""
    return bool(_PVE_CONFIGID.match(name))


def check_absolute_path(value: str) -> str | None:
    """None if ``value`` is an absolute, normalised path without ``..``; else why not."""
    if not value.startswith("/") or ".." in value.split("/"):
        return "must be an absolute path without '..'"
    if "\0" in value or "\n" in value:
        return "must not contain NUL or newline characters"
    if value == "/" or posixpath.normpath(value) != value:
        return "must be a normalised absolute path of a file (no '//', '.' or trailing '/')"
    return None


def check_relative_source(value: str) -> str | None:
    """None if ``value`` is a normalised relative path without ``..``; else why not."""
    if not value or value.startswith("/") or ".." in value.split("/"):
        return "must be a path relative to files/ without '..'"
    if posixpath.normpath(value) != value:
        return "must be a normalised relative path (no '//', '.' or trailing '/')"
    return None


def check_owner(value: str) -> bool:
    """``user:group`` with Debian-style names or numeric ids."""
    return bool(_OWNER.match(value))


def parse_mode(value: str) -> int | None:
    """An octal mode string ("0644", "755") as an int, or None if invalid."""
    if not _MODE.match(value):
        return None
    return int(value, 8)


def package_lines(kind: str, text: str) -> tuple[list[str], list[tuple[int, str]]]:
    """Parse a ``packages/*.<kind>`` file: one package per line, ``#`` comments.

    Returns:
        (packages, [(line, message), ...]).
    """
    pattern = PACKAGE_LINE_RES[kind]
    packages: list[str] = []
    problems: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not entry:
            continue
        if pattern.match(entry):
            packages.append(entry)
        else:
            problems.append(
                (number, f"not a valid {kind} package (one name per line), got {entry!r}")
            )
    return packages, problems

"""Mount points of the create surface: storage-backed volumes and bind
mounts of host directories, their JSON, their checks and their PVE ``mpN``
strings; the CLI's ``--mount`` and ``--bind`` syntax.  Every failure is a
ConfigError naming the field (``mounts[1].path: ...``).  Pure.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provisioner.errors import ConfigError
from provisioner.templates.fields import read_flag, read_pairs, read_text, unknown_keys

__all__ = [
    "MAX_BINDS",
    "MAX_MOUNTS",
    "MOUNT_SIZE_MAX",
    "MOUNT_SIZE_MIN",
    "BindMount",
    "MountPoint",
    "check_bind_source",
    "check_container_path",
    "check_mount_paths",
    "parse_bind_option",
    "parse_mount_option",
    "parse_size",
]

MAX_MOUNTS = 16  # storage-backed mount points
MAX_BINDS = 8  # bind mounts of host paths
MOUNT_SIZE_MIN, MOUNT_SIZE_MAX = 1, 128 * 1024  # GiB, as the root disk
_STORAGE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_SIZE = re.compile(r"(\d+)\s*([GT]i?B?)?", re.I)
# paths PVE (or the container's boot) owns: mounting over them breaks the container
_RESERVED_PATHS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run",
                   "/sbin", "/sys", "/usr")  # fmt: skip


def check_container_path(field: str, path: object) -> str:
    """A mount point inside the container: absolute, normalised, not a
    system directory.

    Raises:
        ConfigError: ``<field>: ...``.
    """
    return _absolute_path(field, path, "the container", reserved=True)


def _absolute_path(field: str, path: object, where: str, *, reserved: bool) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"{field}: must be an absolute path in {where}, got {path!r}")
    if any(part == ".." for part in path.split("/")):
        raise ConfigError(f"{field}: must not contain '..', got {path!r}")
    if re.search(r"[\x00-\x20,=;\x7f]", path):  # PVE's property strings split on ',' and '='
        raise ConfigError(f"{field}: must not contain spaces, control characters, ',', '=' "
                          f"or ';', got {path!r}")  # fmt: skip
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = normal[1:]
    if len(normal) > 255:
        raise ConfigError(f"{field}: at most 255 characters")
    if reserved and (normal in _RESERVED_PATHS):
        raise ConfigError(f"{field}: {normal} is a system directory of the container; "
                          "mount under another path (e.g. /data, /srv/x or /mnt/x)")  # fmt: skip
    return normal


def check_bind_source(field: str, source: object, allow: Sequence[str]) -> str:
    """A bind mount's host path: absolute, normalised and under a prefix of
    ``PROVISIONER_BIND_MOUNT_ALLOW`` (``allow``; empty: no bind mounts).

    Raises:
        ConfigError: ``<field>: ...`` naming the path.
    """
    path = _absolute_path(field, source, "the host", reserved=False)
    if not allow:
        raise ConfigError(f"{field}: bind mounts are not allowed here ({path}): "
                          "PROVISIONER_BIND_MOUNT_ALLOW lists no host path")  # fmt: skip
    for prefix in allow:
        root = posixpath.normpath(prefix)
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return path
    raise ConfigError(f"{field}: host path {path} is not under an allowed prefix "
                      f"(PROVISIONER_BIND_MOUNT_ALLOW: {', '.join(allow)})")  # fmt: skip


def parse_size(field: str, text: object) -> int:
    """A mount point's size in GiB: an integer (GiB), or ``2G``, ``2GiB``, ``1T``.

    Raises:
        ConfigError: ``<field>: ...``.
    """
    if isinstance(text, bool):
        size = None
    elif isinstance(text, int):
        size = text
    elif isinstance(text, str) and (m := _SIZE.fullmatch(text.strip())):
        unit = (m.group(2) or "G")[0].upper()
        size = int(m.group(1)) * (1024 if unit == "T" else 1)
    else:
        size = None
    if size is None or not MOUNT_SIZE_MIN <= size <= MOUNT_SIZE_MAX:
        raise ConfigError(f"{field}: must be a size from {MOUNT_SIZE_MIN} to {MOUNT_SIZE_MAX} GiB "
                          f"(e.g. 2 or '2G'), got {text!r}")  # fmt: skip
    return size


@dataclass(frozen=True)
class MountPoint:
    """A storage-backed volume mounted in the container (``mpN``).

    Attributes:
        path: where it is mounted in the container.
        size: its size in GiB.
        storage: the storage it is allocated on; the root disk's when None.
        backup: included in backups (PVE's ``backup`` flag; on by default).
        quota: user quotas inside the container.
        acl: POSIX ACLs (None: the storage's default).
    """

    path: str
    size: int
    storage: str | None = None
    backup: bool = True
    quota: bool = False
    acl: bool | None = None

    KEYS = ("path", "size", "storage", "backup", "quota", "acl")

    @classmethod
    def from_dict(cls, field: str, data: object) -> MountPoint:
        """A volume from the API's (and the stored request's) JSON.

        Raises:
            ConfigError: ``<field>.<key>: ...``.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{field}: must be an object, got {data!r}")
        unknown_keys(field, data, cls.KEYS)
        if data.get("path") is None:
            raise ConfigError(f"{field}.path: is required (where the volume is mounted)")
        if data.get("size") is None:
            raise ConfigError(f"{field}.size: is required (in GiB)")
        storage = read_text(f"{field}.storage", data.get("storage"))
        if storage is not None and not _STORAGE.fullmatch(storage):
            raise ConfigError(f"{field}.storage: must be a storage name (letters, digits and "
                              f"'_.-'), got {storage!r}")  # fmt: skip
        acl = data.get("acl")
        return cls(path=check_container_path(f"{field}.path", data["path"]),
                   size=parse_size(f"{field}.size", data["size"]), storage=storage,
                   backup=read_flag(f"{field}.backup", data.get("backup", True)),
                   quota=read_flag(f"{field}.quota", data.get("quota", False)),
                   acl=None if acl is None else read_flag(f"{field}.acl", acl))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "size": self.size}
        if self.storage is not None:
            data["storage"] = self.storage
        data["backup"] = self.backup
        if self.quota:
            data["quota"] = True
        if self.acl is not None:
            data["acl"] = self.acl
        return data

    def pve(self, default_storage: str) -> str:
        """PVE's ``mpN`` for a new volume: ``STORAGE:SIZE_GB,mp=/path,...``."""
        parts = [f"{self.storage or default_storage}:{self.size}", f"mp={self.path}",
                 f"backup={int(self.backup)}"]  # fmt: skip
        if self.quota:
            parts.append("quota=1")
        if self.acl is not None:
            parts.append(f"acl={int(self.acl)}")
        return ",".join(parts)


def parse_mount_option(field: str, text: str) -> dict[str, Any]:
    """``--mount /data:2G[,backup=0][,quota=1][,acl=1][,storage=local-lvm]`` as
    the API's JSON.

    Raises:
        ConfigError: ``<field>: ...``.
    """
    head, _, rest = text.partition(",")
    path, sep, size = head.rpartition(":")
    if not sep or not path:
        raise ConfigError(f"{field}: expected /path:SIZE[,backup=0][,quota=1][,acl=1]"
                          f"[,storage=NAME], got {text!r}")  # fmt: skip
    pairs = read_pairs(field, rest, ("backup", "quota", "acl"))
    unknown_keys(field, pairs, ("backup", "quota", "acl", "storage"))
    return MountPoint.from_dict(field, {"path": path, "size": size, **pairs}).to_dict()


@dataclass(frozen=True)
class BindMount:
    """A host directory bind-mounted into the container (``mpN``).

    Attributes:
        source: the host path (under ``PROVISIONER_BIND_MOUNT_ALLOW``).
        path: where it is mounted in the container.
        ro: read-only.
    """

    source: str
    path: str
    ro: bool = False

    KEYS = ("source", "path", "ro")

    @classmethod
    def from_dict(cls, field: str, data: object, allow: Sequence[str]) -> BindMount:
        """A bind mount from the API's (and the stored request's) JSON.

        Raises:
            ConfigError: ``<field>.<key>: ...``; a source outside ``allow``.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{field}: must be an object, got {data!r}")
        unknown_keys(field, data, cls.KEYS)
        if data.get("source") is None:
            raise ConfigError(f"{field}.source: is required (the host path)")
        if data.get("path") is None:
            raise ConfigError(f"{field}.path: is required (where it is mounted)")
        return cls(source=check_bind_source(f"{field}.source", data["source"], allow),
                   path=check_container_path(f"{field}.path", data["path"]),
                   ro=read_flag(f"{field}.ro", data.get("ro", False)))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "path": self.path, **({"ro": True} if self.ro else {})}

    def pve(self) -> str:
        """PVE's ``mpN`` for a bind mount: ``/host/path,mp=/path[,ro=1]``."""
        return f"{self.source},mp={self.path}" + (",ro=1" if self.ro else "")


def parse_bind_option(field: str, text: str, allow: Sequence[str]) -> dict[str, Any]:
    """``--bind /host/path:/mnt/x[,ro]`` as the API's JSON.

    Raises:
        ConfigError: ``<field>: ...``.
    """
    head, _, rest = text.partition(",")
    source, sep, path = head.partition(":")
    if not sep:
        raise ConfigError(f"{field}: expected /host/path:/path[,ro], got {text!r}")
    data: dict[str, Any] = {"source": source, "path": path}
    pairs = read_pairs(field, rest, ("ro",))
    unknown_keys(field, pairs, ("ro",))
    if "ro" in pairs:
        data["ro"] = read_flag(f"{field}.ro", pairs["ro"])
    return BindMount.from_dict(field, data, allow).to_dict()


def check_mount_paths(mounts: Sequence[MountPoint], binds: Sequence[BindMount]) -> None:
    """Two mount points must not share a path.

    Raises:
        ConfigError: ``mounts[i].path: ...`` or ``binds[i].path: ...``.
    """
    seen: dict[str, str] = {}
    named = [(f"mounts[{i}]", m.path) for i, m in enumerate(mounts)]
    named += [(f"binds[{i}]", b.path) for i, b in enumerate(binds)]
    for name, path in named:
        if path in seen:
            raise ConfigError(f"{name}.path: {path} is already the path of {seen[path]}")
        seen[path] = name

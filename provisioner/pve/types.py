"""Small typed views of PVE API answers (pure: no I/O).

Each ``from_api`` takes the JSON PVE returns, tolerating numbers sent as
strings and fields a PVE version leaves out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Owned:
    """Proof that CT ``vmid`` on PVE node ``node`` carries the marker of record
    ``container_id``.  Made by :func:`provisioner.ownership.prove` (and by
    tests of the PVE client alone); the PVE client's write methods take one."""

    node: str
    vmid: int
    container_id: str


class PveCalls(Protocol):
    """What task polling and vmid allocation need of the PVE client (it
    satisfies this; the protocol keeps those modules from importing it)."""

    node: str

    @property
    def connection(self) -> Any: ...

    def _request(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any: ...

    def next_vmid(self) -> int: ...


@dataclass(frozen=True)
class TaskResult:
    """A task that ended successfully (``OK`` or ``WARNINGS: N``); ``warning_lines``
    are its ``WARN:`` log lines."""

    upid: str
    exitstatus: str
    warnings: int = 0
    warning_lines: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """Ended plain ``OK``, without warnings."""
        return self.exitstatus == "OK"


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class NodeInfo:
    """A cluster node with its free resources (``GET /nodes``)."""

    name: str
    online: bool
    cpu_usage: float  # 0..1 of maxcpu
    max_cpu: int
    memory_used: int
    memory_total: int
    ssl_fingerprint: str | None = None  # its certificate's SHA-256 (AB:CD:...)

    @property
    def free_cpu(self) -> float:
        """Idle CPUs (e.g. 3.2 of 4)."""
        return round(self.max_cpu * (1.0 - min(max(self.cpu_usage, 0.0), 1.0)), 2)

    @property
    def free_memory(self) -> int:
        return max(0, self.memory_total - self.memory_used)

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> NodeInfo:
        return cls(name=str(d["node"]), online=d.get("status") == "online",
                   cpu_usage=_float(d.get("cpu")), max_cpu=_int(d.get("maxcpu")),
                   memory_used=_int(d.get("mem")), memory_total=_int(d.get("maxmem")),
                   ssl_fingerprint=str(d["ssl_fingerprint"]) if d.get("ssl_fingerprint") else None)  # fmt: skip


@dataclass(frozen=True)
class StorageInfo:
    """A storage as a node sees it (``GET /nodes/{node}/storage``)."""

    name: str
    type: str
    content: frozenset[str]
    total: int
    used: int
    avail: int
    active: bool
    enabled: bool
    shared: bool

    def supports(self, content: str) -> bool:
        """Whether it holds ``content`` (``rootdir``, ``vztmpl``, ...)."""
        return content in self.content

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> StorageInfo:
        content = frozenset(c for c in str(d.get("content", "")).split(",") if c)
        return cls(name=str(d["storage"]), type=str(d.get("type", "")), content=content,
                   total=_int(d.get("total")), used=_int(d.get("used")),
                   avail=_int(d.get("avail")), active=bool(_int(d.get("active"), 1)),
                   enabled=bool(_int(d.get("enabled"), 1)),
                   shared=bool(_int(d.get("shared"))))  # fmt: skip


@dataclass(frozen=True)
class BridgeInfo:
    """A bridge containers can attach to (``GET /nodes/{node}/network``)."""

    name: str
    active: bool
    cidr: str | None = None
    comments: str = ""

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> BridgeInfo:
        return cls(name=str(d["iface"]), active=bool(_int(d.get("active"))),
                   cidr=_cidr(d), comments=str(d.get("comments", "")).strip())  # fmt: skip


def _cidr(d: Mapping[str, Any]) -> str | None:
    """An interface's IPv4 ``address/prefix``: PVE's ``cidr``, or made from
    ``address`` and ``netmask`` (a prefix length or a dotted mask) when it
    is missing; None for an interface without an IPv4 address."""
    if d.get("cidr"):
        return str(d["cidr"])
    if not d.get("address"):
        return None
    try:
        mask = str(d.get("netmask") or "32")
        return str(ipaddress.IPv4Interface(f"{d['address']}/{mask}"))
    except ValueError:
        return None


@dataclass(frozen=True)
class TemplateInfo:
    """An OS template on a storage (``content=vztmpl``)."""

    volid: str
    size: int
    format: str = ""
    ctime: int = 0

    @property
    def filename(self) -> str:
        return self.volid.split("/", 1)[-1]

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> TemplateInfo:
        return cls(volid=str(d["volid"]), size=_int(d.get("size")),
                   format=str(d.get("format", "")), ctime=_int(d.get("ctime")))  # fmt: skip


@dataclass(frozen=True)
class ContainerStatus:
    """``GET /nodes/{node}/lxc/{vmid}/status/current`` (or one list entry)."""

    vmid: int
    status: str  # running | stopped
    name: str = ""
    lock: str | None = None
    uptime: int = 0
    cpu: float = 0.0
    memory_used: int = 0
    memory_total: int = 0
    disk_used: int = 0
    disk_total: int = 0
    tags: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self.status == "running"

    @classmethod
    def from_api(cls, d: Mapping[str, Any], vmid: int | None = None) -> ContainerStatus:
        tags = tuple(t for t in re.split(r"[;, ]+", str(d.get("tags") or "")) if t)
        return cls(vmid=_int(d.get("vmid", vmid)), status=str(d.get("status", "unknown")),
                   name=str(d.get("name", "")), lock=str(d["lock"]) if d.get("lock") else None,
                   uptime=_int(d.get("uptime")), cpu=_float(d.get("cpu")),
                   memory_used=_int(d.get("mem")), memory_total=_int(d.get("maxmem")),
                   disk_used=_int(d.get("disk")), disk_total=_int(d.get("maxdisk")),
                   tags=tags)  # fmt: skip


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot of a container (the ``current`` pseudo-entry is dropped)."""

    name: str
    description: str = ""
    snaptime: int = 0
    parent: str | None = None

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> SnapshotInfo:
        # PVE reads a description back from comment lines, each ending with a
        # newline (PVE::LXC::Config::parse_pct_config): shown without the last
        description = str(d.get("description") or "").removesuffix("\n")
        return cls(name=str(d["name"]), description=description,
                   snaptime=_int(d.get("snaptime")), parent=d.get("parent"))  # fmt: skip

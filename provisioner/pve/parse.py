"""Pure helpers of the Proxmox client: no I/O, tested without fixtures.

Encoding request parameters the way PVE wants them, classifying failures,
parsing UPIDs, ``net0`` property strings, interface lists, task exit
statuses and certificate fingerprints.  The typed views of API answers are
in ``types``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# --- request parameters --------------------------------------------------------


def _encode_value(value: Any) -> Any:
    # bool first: it is an int subclass, and PVE rejects "True" with a 400
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Mapping):
        return format_property_string(value)
    if isinstance(value, list | tuple):
        return [_encode_value(v) for v in value if v is not None]
    return value


def encode_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Form parameters as PVE expects them.

    Booleans become ``1``/``0``, ``None`` values are dropped, mappings become
    property strings (``{"nesting": True}`` -> ``"nesting=1"``).
    """
    return {k: _encode_value(v) for k, v in (params or {}).items() if v is not None}


def format_property_string(values: Mapping[str, Any], default_key: str | None = None) -> str:
    """``{"name": "eth0", "firewall": True}`` -> ``"name=eth0,firewall=1"``.

    ``default_key``'s value (if present) comes first, written without its key.
    """
    parts: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        text = str(int(value)) if isinstance(value, bool) else str(value)
        if key == default_key:
            parts.insert(0, text)
        else:
            parts.append(f"{key}={text}")
    return ",".join(parts)


def parse_property_string(text: str, default_key: str | None = None) -> dict[str, str]:
    """``"name=eth0,bridge=vmbr0"`` -> ``{"name": "eth0", "bridge": "vmbr0"}``.

    Raises:
        ValueError: if a part has no ``=`` and there is no ``default_key``.
    """
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            if default_key is None or default_key in out:
                raise ValueError(f"invalid property string part {part!r} in {text!r}")
            key, value = default_key, part
        out[key.strip()] = value.strip()
    return out


# --- failures ------------------------------------------------------------------

# PVE answers these with 500, yet they clear by themselves: another task
# holds the config lock, or the config file lock timed out (10 s).
_LOCK_MARKERS = ("is locked", "can't lock file", "got timeout")
# ... while these 500s mean the request itself cannot succeed.
_PERMANENT_MARKERS = (
    "already exists", "does not exist", "does not support", "not implemented",
    "already used", "already running", "not running", "container is running",
    "no such", "permission denied", "unable to parse", "hostname lookup",
)  # fmt: skip


def is_lock_failure(message: str) -> bool:
    """Whether a failure is another holder's lock: PVE's check_lock ("CT is
    locked (backup)") or lock_file_full's 10 s timeout ("can't lock file
    '...' - got timeout"), as a call's 500 or a task's error."""
    text = message.lower()
    return any(m in text for m in _LOCK_MARKERS)


def is_transient_failure(status: int, message: str) -> bool:
    """Whether a failed PVE call may succeed when retried.

    4xx is permanent; 5xx and 595-599 are transient, except handler failures
    that are permanent in nature ("CT 100 already exists", "storage 'x' does
    not support container directories", 501); lock failures are transient.
    """
    if status < 500:
        return False
    text = message.lower()
    if is_lock_failure(text):
        return True
    if status == 501:
        return False
    return not any(m in text for m in _PERMANENT_MARKERS)


def failure_hint(status: int, message: str) -> str | None:
    """A short what-to-do for common failures, or None."""
    text = message.lower()
    if status == 401:
        return "check the API token (user@realm!name and secret) or the user's password"
    if status == 403:
        return "the token or user lacks a privilege on this path (see docs/proxmox.md)"
    if is_lock_failure(text):
        return "another operation holds the container's lock; retry when it has finished"
    if status == 501:
        return "this PVE version does not offer the endpoint"
    return None


def describe_failure(node: str, call: str, status: int, message: str,
                     errors: Mapping[str, str] | None = None) -> str:  # fmt: skip
    """``"POST /nodes/pve/lxc on node pve failed (HTTP 400): Parameter
    verification failed.; memory: type check ('integer') failed"``."""
    text = f"{call} on node {node} failed (HTTP {status}): {message or 'no message'}"
    if errors:
        details = "; ".join(f"{k}: {' '.join(str(v).split())}" for k, v in sorted(errors.items()))
        text = f"{text}; {details}"
    return text


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each (non-trivial) secret with ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def clean_errors(errors: Any) -> dict[str, str]:
    """PVE's per-parameter ``errors`` as ``{param: message}``; anything else
    (proxmoxer hands over raw bytes for a non-JSON body) gives ``{}``."""
    if not isinstance(errors, Mapping):
        return {}
    return {str(k): str(v) for k, v in errors.items() if not isinstance(v, bytes | bytearray)}


# --- TLS -----------------------------------------------------------------------


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 certificate fingerprint as 64 lowercase hex digits.

    Accepts PVE's ``AA:BB:...`` (as ``pvenode cert info`` prints it), plain
    hex, or openssl's whole line (``sha256 Fingerprint=AA:BB:...``), in any
    case, with surrounding whitespace.

    Raises:
        ValueError: if it is not 32 bytes of hex.
    """
    text = re.sub(r"^\s*sha-?256\s+fingerprint\s*=", "", text, flags=re.I)
    compact = re.sub(r"[\s:]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]*", compact):
        raise ValueError("the fingerprint must be hex digits, optionally separated by colons")
    if len(compact) != 64:
        raise ValueError(
            f"the fingerprint must be a SHA-256 digest (32 bytes), got {len(compact) // 2} bytes"
        )
    return compact


_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def normalize_host(text: str) -> str:
    """A node's host as the client uses it: a DNS name, an IPv4 address or an
    IPv6 address (brackets optional, stored without them).

    Raises:
        ValueError: anything else (a URL, a port, a malformed address).
    """
    host = text.strip()
    if "/" in host:
        raise ValueError(f"give a host name or an IP address, not a URL ({text!r})")
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv6 address in brackets") from None
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"{text!r} is not a host name or an IP address (a port goes "
                             "in its own field)") from None  # fmt: skip
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f"{text!r} is not a valid IPv4 address") from None
    name = host.removesuffix(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(p) for p in name.split(".")):
        raise ValueError(f"{text!r} is not a host name or an IP address")
    return name


def format_fingerprint(hexdigest: str) -> str:
    """64 hex digits as PVE shows them: ``AA:BB:...``."""
    compact = normalize_fingerprint(hexdigest)
    return ":".join(compact[i : i + 2] for i in range(0, 64, 2)).upper()


# --- UPIDs and tasks -----------------------------------------------------------

_UPID_RE = re.compile(
    r"^UPID:(?P<node>[a-zA-Z0-9][a-zA-Z0-9.\-]*):(?P<pid>[0-9A-Fa-f]{8}):"
    r"(?P<pstart>[0-9A-Fa-f]{8,9}):(?P<starttime>[0-9A-Fa-f]{8}):(?P<type>[^:\s]+):"
    r"(?P<id>[^:\s]*):(?P<user>[^:\s]+):$"
)


@dataclass(frozen=True)
class Upid:
    """A parsed task id: ``UPID:node:pid:pstart:starttime:type:id:user:``."""

    text: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str

    @property
    def vmid(self) -> int | None:
        """The guest's id for guest tasks (vzcreate, vzstart, ...), else None."""
        return int(self.id) if self.id.isdigit() else None

    def describe(self) -> str:
        """``"vzcreate of CT 104 on node pve"`` for messages."""
        target = (
            f" of CT {self.id}" if self.vmid is not None else (f" {self.id}" if self.id else "")
        )
        return f"task {self.type}{target} on node {self.node}"


def parse_upid(text: str) -> Upid:
    """Parse a UPID (note PVE's trailing colon).

    Raises:
        ValueError: if ``text`` is not a well-formed UPID.
    """
    m = _UPID_RE.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"not a PVE task id (UPID): {text!r}")
    return Upid(text=text.strip(), node=m["node"], pid=int(m["pid"], 16),
                pstart=int(m["pstart"], 16), starttime=int(m["starttime"], 16),
                type=m["type"], id=m["id"], user=m["user"])  # fmt: skip


def parse_exitstatus(exitstatus: str) -> tuple[bool, int]:
    """``(succeeded, warning count)`` of a stopped task's exit status.

    ``OK`` and ``WARNINGS: N`` are successes; anything else is the error text.
    """
    if exitstatus == "OK":
        return True, 0
    m = re.fullmatch(r"WARNINGS: (\d+)", exitstatus.strip())
    if m:
        return True, int(m[1])
    return False, 0


# --- network -------------------------------------------------------------------


@dataclass(frozen=True)
class NetSpec:
    """A container's ``net[n]`` property string, parsed."""

    name: str
    bridge: str | None = None
    ip: str | None = None  # CIDR, "dhcp", "manual" or None
    gw: str | None = None
    ip6: str | None = None
    hwaddr: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_dhcp(self) -> bool:
        return (self.ip or "").lower() == "dhcp"

    @property
    def static_ipv4(self) -> str | None:
        """The static IPv4 address without its prefix length, if any."""
        if not self.ip or self.ip.lower() in ("dhcp", "manual"):
            return None
        return str(ipaddress.IPv4Interface(self.ip).ip)


def parse_net(text: str) -> NetSpec:
    """Parse a ``net0`` value such as ``name=eth0,bridge=vmbr0,ip=10.0.0.5/24``.

    Raises:
        ValueError: on a malformed property string or static address.
    """
    values = parse_property_string(text)
    spec = NetSpec(name=values.get("name", "eth0"), bridge=values.get("bridge"),
                   ip=values.get("ip"), gw=values.get("gw"), ip6=values.get("ip6"),
                   hwaddr=values.get("hwaddr"), options=values)  # fmt: skip
    try:
        spec.static_ipv4  # noqa: B018 -- validate now, not when resolving
    except ValueError as exc:
        raise ValueError(f"invalid ip= in {text!r}: {exc}") from exc
    return spec


def _usable(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("/")[0])
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def global_ipv4(interfaces: Iterable[Mapping[str, Any]], name: str | None = "eth0") -> str | None:
    """The first usable IPv4 address of interface ``name`` (any but ``lo``
    when None) in a ``/lxc/{vmid}/interfaces`` answer.

    Loopback, link-local (169.254/16), unspecified and multicast addresses
    are skipped: a container without its lease yet shows none or only those.
    """
    for iface in interfaces:
        ifname = iface.get("name")
        if ifname == "lo" or (name is not None and ifname != name):
            continue
        candidates = [
            str(a.get("ip-address", ""))
            for a in iface.get("ip-addresses") or []
            if a.get("ip-address-type") == "inet"
        ]
        if iface.get("inet"):
            candidates.append(str(iface["inet"]).split("/")[0])
        for address in candidates:
            if address and ":" not in address and _usable(address):
                return address
    return None

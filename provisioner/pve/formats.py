"""Named PVE parameter formats (``format => 'pve-vmid'`` and friends).

Each check follows the Perl verifier PVE registers for the name
(pve-common ``PVE/JSONSchema.pm``, pve-container ``PVE/LXC/Config.pm``,
pve-storage ``PVE/Storage/Plugin.pm``, pve-access-control) and fails with the
same message that verifier dies with, minus the trailing newline.  A name
ending in ``-list`` checks every element of a PVE list (see :func:`split_list`);
``-opt`` skips empty values, as ``check_format`` does.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "FORMATS",
    "FormatError",
    "UnknownFormatError",
    "check_format",
    "parse_size",
    "resolve_format",
    "split_list",
]


class FormatError(ValueError):
    """A value fails a named format; ``str(err)`` is PVE's message."""


class UnknownFormatError(LookupError):
    """The schema names a format this module does not implement."""


Verifier = Callable[[str], None]

# PVE::Tools / PVE::ParseUtils address patterns, verbatim.
_OCTET = r"(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])"
IPV4RE = rf"(?:(?:{_OCTET}\.){{3}}{_OCTET})"
_H16 = r"(?:[0-9a-fA-F]{1,4})"
_LS32 = rf"(?:(?:{IPV4RE}|{_H16}:{_H16}))"
IPV6RE = (
    "(?:"
    rf"(?:(?:(?:{_H16}:){{6}}){_LS32})|"
    rf"(?:(?:::(?:{_H16}:){{5}}){_LS32})|"
    rf"(?:(?:(?:{_H16})?::(?:{_H16}:){{4}}){_LS32})|"
    rf"(?:(?:(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}){_LS32})|"
    rf"(?:(?:(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}){_LS32})|"
    rf"(?:(?:(?:(?:{_H16}:){{0,3}}{_H16})?::(?:{_H16}:){{1}}){_LS32})|"
    rf"(?:(?:(?:(?:{_H16}:){{0,4}}{_H16})?::){_LS32})|"
    rf"(?:(?:(?:(?:{_H16}:){{0,5}}{_H16})?::){_H16})|"
    rf"(?:(?:(?:(?:{_H16}:){{0,6}}{_H16})?::))"
    ")"
)


def _full(pattern: str, flags: int = 0) -> re.Pattern[str]:
    # Python's ``$`` matches before one trailing newline, exactly like Perl's.
    return re.compile(rf"^(?:{pattern})$", flags)


_IPV4 = _full(IPV4RE)
_IPV6 = _full(IPV6RE)
_CIDR4 = re.compile(rf"^(?:{IPV4RE})(?:/(\d+))$")
_CIDR6 = re.compile(rf"^(?:{IPV6RE})(?:/(\d+))$")
_DNS_LABEL = r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)"
_DNS_NAME = re.compile(rf"^({_DNS_LABEL}\.)*{_DNS_LABEL}$")
_IFACE = _full(r"[a-z][a-z0-9_]{1,20}([:\.]\d+)?", re.I)
_SIZE = re.compile(r"^(\d+(\.\d+)?)([KMGT])?$")

_IPV4_MASKS = frozenset(
    ".".join(str((((0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF) >> s) & 0xFF) for s in (24, 16, 8, 0))
    for bits in range(33)
)

# Dir storage accepts every content type (valid_content_types('dir')).
_CONTENT_TYPES = frozenset(
    {"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none"}
)

# PVE 9 privileges ($privgroups in PVE::AccessControl); VM.Monitor is gone.
_PRIVILEGE_NAMES = """
    Datastore.Allocate Datastore.AllocateSpace Datastore.AllocateTemplate Datastore.Audit
    Group.Allocate Mapping.Audit Mapping.Modify Mapping.Use Permissions.Modify
    Pool.Allocate Pool.Audit Realm.Allocate Realm.AllocateUser
    SDN.Allocate SDN.Audit SDN.Use
    Sys.AccessNetwork Sys.Audit Sys.Console Sys.Incoming Sys.Modify Sys.PowerMgmt Sys.Syslog
    User.Modify VM.Allocate VM.Audit VM.Backup VM.Clone
    VM.Config.CDROM VM.Config.CPU VM.Config.Cloudinit VM.Config.Disk VM.Config.HWType
    VM.Config.Memory VM.Config.Network VM.Config.Options VM.Console
    VM.GuestAgent.Audit VM.GuestAgent.FileRead VM.GuestAgent.FileSystemMgmt
    VM.GuestAgent.FileWrite VM.GuestAgent.Unrestricted
    VM.Migrate VM.PowerMgmt VM.Replicate VM.Snapshot VM.Snapshot.Rollback
"""
_PRIVILEGES = frozenset(_PRIVILEGE_NAMES.split())


def _perl_true(text: str) -> bool:
    """Perl truthiness of a string: only "" and "0" are false."""
    return text not in ("", "0")


def _perl_split(sep: str, text: str) -> list[str]:
    """Perl ``split``: trailing empty fields are dropped."""
    parts = re.split(sep, text)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def split_list(text: str) -> list[str]:
    """Split a PVE list value the way ``PVE::Tools::split_list`` does.

    NUL bytes separate if present; otherwise commas, semicolons and whitespace.
    """
    if "\0" in text:
        return _perl_split("\0", text)
    text = re.sub(r"^\s+", "", re.sub(r"[,;]", " ", text))
    return _perl_split(r"\s+", text)


def parse_size(value: str) -> int | None:
    """``PVE::JSONSchema::parse_size``: "8G" -> bytes, None if unparsable."""
    m = _SIZE.match(value)
    if not m:
        return None
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(m[3] or "", 1)
    return int(float(m[1]) * factor)


def _regex_check(pattern: re.Pattern[str], message: str) -> Verifier:
    def check(value: str) -> None:
        if not pattern.match(value):
            raise FormatError(message.format(value=value))

    return check


def _is_ip(value: str) -> bool:
    return bool(_IPV4.match(value) or _IPV6.match(value))


def _cidr_ok(pattern: re.Pattern[str], value: str, max_bits: int) -> bool:
    m = pattern.match(value)
    return m is not None and 7 < int(m[1]) <= max_bits


def _ip(value: str) -> None:
    if not _is_ip(value):
        raise FormatError("value does not look like a valid IP address")


def _ipv4mask(value: str) -> None:
    if value not in _IPV4_MASKS:
        raise FormatError("value does not look like a valid IP netmask")


def _cidrv4(value: str) -> None:
    if not _cidr_ok(_CIDR4, value, 32):
        raise FormatError("value does not look like a valid IPv4 CIDR network")


def _cidrv6(value: str) -> None:
    if not _cidr_ok(_CIDR6, value, 128):
        raise FormatError("value does not look like a valid IPv6 CIDR network")


def _ipv4_config(value: str) -> None:
    if value not in ("dhcp", "manual") and not _cidr_ok(_CIDR4, value, 32):
        raise FormatError("value does not look like a valid ipv4 network configuration")


def _ipv6_config(value: str) -> None:
    if value not in ("auto", "dhcp", "manual") and not _cidr_ok(_CIDR6, value, 128):
        raise FormatError("value does not look like a valid ipv6 network configuration")


def _ip_with_ll_iface(value: str) -> None:
    # pve-container: "fe80::1%eth0" is fine; anything else must be a plain IP.
    m = re.match(r"^(fe80:[^%]+)%(.*)$", value)
    if m and _is_ip(m[1]) and _IFACE.match(m[2]):
        return
    _ip(value)


def _disk_size(value: str) -> None:
    if parse_size(value) is None:
        raise FormatError(f"value does not look like a valid disk size: {value}")


def _startup_order(value: str) -> None:
    parts = [p for p in value.split(",") if not re.match(r"^\s*$", p)]
    item = re.compile(r"^(?:(?:order=)?\d+|up=\d+|down=\d+)$")
    # pve_parse_startup_order bails out on a false value, so "0" is rejected.
    if not _perl_true(value) or not all(item.match(p) for p in parts):
        raise FormatError("unable to parse startup options")


def _vlan_id_or_range(value: str) -> None:
    m = re.match(r"^(\d+)(?:-(\d+))?$", value)
    if not m:
        raise FormatError(f"invalid VLAN configuration '{value}'")
    start, end = m[1], m[2]
    for tag in (start, end):
        # Perl tests ``if ($end)``, so an end of "0" is silently ignored.
        if tag is not None and _perl_true(tag) and not 2 <= int(tag) <= 4094:
            raise FormatError(f"invalid VLAN tag '{tag}'")
    if end is not None and _perl_true(end) and int(start) >= int(end):
        raise FormatError(f"VLAN range must go from lower to higher tag '{value}'")


def _lxc_mp_string(value: str) -> None:
    if re.search(r"/\.\.?/", value) or re.search(r"/\.\.?$", value) or value.startswith("../"):
        raise FormatError(f"{value} contains illegal character sequences")


def _lxc_dev_string(value: str) -> None:
    if re.search(r"/\.\.?(?:/|$)", value) or not value.startswith("/dev/"):
        raise FormatError(f"{value} is not a valid device path")


def _poolid(value: str) -> None:
    # Nested pools (PVE >= 8.1): up to three levels separated by "/".
    if len(_perl_split("/", value)) > 3:
        raise FormatError(f"pool name '{value}' nested too deeply (max levels = 3)")
    if not re.match(r"^[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}$", value):
        raise FormatError(f"pool name '{value}' contains invalid characters")


@functools.cache
def _zones() -> frozenset[str]:
    # PVE reads zone.tab, which lists canonical zones only (no aliases).
    for base in zoneinfo.TZPATH:
        tab = Path(base) / "zone.tab"
        if tab.is_file():
            lines = tab.read_text(encoding="utf-8").splitlines()
            rows = (line.split("\t") for line in lines if not re.match(r"^\s*#", line))
            return frozenset(row[2] for row in rows if len(row) > 2)
    return frozenset(zoneinfo.available_timezones())


def _ct_timezone(value: str) -> None:
    if value not in ("host", "UTC") and value not in _zones():
        raise FormatError(f"invalid time zone '{value}'")


def _member(allowed: frozenset[str], message: str) -> Verifier:
    def check(value: str) -> None:
        if value not in allowed:
            raise FormatError(message.format(value=value))

    return check


FORMATS: dict[str, Verifier] = {
    "pve-configid": _regex_check(
        _full(r"[a-z][a-z0-9_-]+", re.I), "invalid configuration ID '{value}'"
    ),
    "pve-storage-id": _regex_check(
        _full(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.I),
        "storage ID '{value}' contains illegal characters",
    ),
    "pve-vmid": _regex_check(_full(r"[1-9][0-9]{2,8}"), "value does not look like a valid VM ID"),
    "pve-node": _regex_check(
        _full(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?"),
        "value does not look like a valid node name",
    ),
    "mac-addr": _regex_check(
        _full(r"[a-f0-9][02468ace](?::[a-f0-9]{2}){5}", re.I),
        "value does not look like a valid unicast MAC address",
    ),
    "ipv4": _regex_check(_IPV4, "value does not look like a valid IPv4 address"),
    "ipv6": _regex_check(_IPV6, "value does not look like a valid IPv6 address"),
    "ip": _ip,
    "ipv4mask": _ipv4mask,
    "CIDRv4": _cidrv4,
    "CIDRv6": _cidrv6,
    "pve-ipv4-config": _ipv4_config,
    "pve-ipv6-config": _ipv6_config,
    "dns-name": _regex_check(_DNS_NAME, "value does not look like a valid DNS name"),
    "pve-iface": _regex_check(_IFACE, "invalid network interface name '{value}'"),
    "pve-vlan-id-or-range": _vlan_id_or_range,
    "disk-size": _disk_size,
    "pve-startup-order": _startup_order,
    "pve-tag": _regex_check(_full(r"[a-z0-9_][a-z0-9_\-+.]*", re.I), "invalid characters in tag"),
    "pve-task-status-type": _regex_check(
        _full(r"ok|error|warning|unknown", re.I), "invalid status '{value}'"
    ),
    "pve-lxc-mp-string": _lxc_mp_string,
    "pve-lxc-dev-string": _lxc_dev_string,
    "lxc-ip-with-ll-iface": _ip_with_ll_iface,
    "pve-ct-timezone": _ct_timezone,
    "pve-poolid": _poolid,
    "pve-volume-id": _regex_check(
        _full(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)", re.I), "unable to parse volume ID '{value}'"
    ),
    "pve-storage-content": _member(_CONTENT_TYPES, "invalid content type '{value}'"),
    "pve-priv": _member(_PRIVILEGES, "invalid privilege '{value}'"),
    "pve-realm": _regex_check(
        _full(r"[A-Za-z][A-Za-z0-9.\-_]+"), "value does not look like a valid realm"
    ),
}


@functools.cache
def resolve_format(name: str) -> Verifier:
    """Return the verifier for a format name, including ``-list``/``-opt`` forms.

    Raises:
        UnknownFormatError: if no such format is implemented (PVE: "undefined
            format").
    """
    # Same split as check_format: m/^(.*?)(?:-(list|opt))?$/ (non-greedy base).
    m = re.match(r"^(.*?)(?:-(list|opt))?$", name, re.S)
    base, kind = (m[1], m[2]) if m else (name, None)
    verify = FORMATS.get(base)
    if verify is None:
        raise UnknownFormatError(f"undefined format '{name}'")
    if kind == "list":

        def check_list(value: str) -> None:
            for item in split_list(value):  # an empty list is fine
                verify(item)

        return check_list
    if kind == "opt":
        return lambda value: verify(value) if _perl_true(value) else None
    return verify


def check_format(name: str, value: str) -> None:
    """Check ``value`` against the named format.

    Raises:
        FormatError: with PVE's message if the value does not fit.
        UnknownFormatError: if the format name is unknown.
    """
    resolve_format(name)(value)

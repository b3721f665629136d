"""The create surface beyond the basics: IPv6, VLANs, further interfaces,
DNS, tags, pool, start on boot and feature flags here, mount points and
bind mounts in :mod:`provisioner.templates.mounts`; ``Surface`` holds a
request's, checked.

One place for each option's rule, its JSON shape (what the REST API takes
and ``Container.request`` stores) and its PVE property string; the CLI's
short syntax (``--nic``, ``--startup``, ``--feature``; ``--mount`` and
``--bind`` in ``mounts``) is parsed here too, so the three front ends
cannot drift.

Every failure is a :class:`~provisioner.errors.ConfigError` whose message
starts with the request field it blames (``"nics[0].vlan: ..."``,
``"mounts[1].path: ..."``).  Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from provisioner.errors import ConfigError, InvalidRequest, gather
from provisioner.templates import checks
from provisioner.templates.fields import (
    read_flag,
    read_int,
    read_list,
    read_optional_flag,
    read_pairs,
    read_text,
    unknown_keys,
)
from provisioner.templates.mounts import (
    MAX_BINDS,
    MAX_MOUNTS,
    BindMount,
    MountPoint,
    check_mount_paths,
)

__all__ = [
    "FEATURE_NAMES",
    "MAX_NICS",
    "MAX_TAGS",
    "SURFACE_KEYS",
    "VLAN_MAX",
    "Nic",
    "Startup",
    "Surface",
    "check_ip6",
    "check_nameserver",
    "check_pool",
    "check_searchdomain",
    "check_tags",
    "check_vlan",
    "parse_feature_option",
    "parse_nic_option",
]

VLAN_MIN, VLAN_MAX = 1, 4094  # 802.1Q: 0 and 4095 are reserved
MAX_NICS = 7  # further interfaces (net1..net7) besides net0
MAX_TAGS = 16
STARTUP_DELAY_MAX = 86_400  # seconds
STARTUP_ORDER_MAX = 1_000_000
FEATURE_NAMES = ("nesting", "keyctl", "fuse", "mknod")
_POOL = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BRIDGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DNS_NAME = re.compile(r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # fmt: skip
T = TypeVar("T")
U = TypeVar("U")
# the request settings of the create surface (the API body's and the stored request's keys)
SURFACE_KEYS = ("ip6", "gateway6", "vlan", "firewall", "nics", "nameserver", "searchdomain",
                "tags", "pool", "onboot", "startup", "mounts", "binds", "features")  # fmt: skip


# --- single values ---------------------------------------------------------------------


def check_ip6(field: str, ip6: str | None, gateway6: str | None) -> tuple[str | None, str | None]:
    """``ip6`` is None, ``auto`` (SLAAC), ``dhcp`` (DHCPv6) or an IPv6 address
    with its prefix length; ``gateway6`` only goes with a static address.
    ``field`` is the prefix of the fields blamed (``""`` or ``"nics[0]."``).

    Raises:
        ConfigError: ``<field>ip6: ...`` or ``<field>gateway6: ...``.
    """
    ip6 = ip6 or None
    if ip6 is not None and ip6 not in ("auto", "dhcp"):
        try:
            if "/" not in ip6:
                raise ValueError("no prefix length")
            ipaddress.IPv6Interface(ip6)
        except ValueError:
            raise ConfigError(f"{field}ip6: must be 'auto' (SLAAC), 'dhcp' or an IPv6 address "
                              f"with its prefix length (2001:db8::10/64), got {ip6!r}") from None  # fmt: skip
    if gateway6:
        if ip6 is None or ip6 in ("auto", "dhcp"):
            raise ConfigError(f"{field}gateway6: only applies to a static ip6, not to "
                              f"ip6={ip6 or 'none'}")  # fmt: skip
        try:
            ipaddress.IPv6Address(gateway6)
        except ValueError:
            raise ConfigError(f"{field}gateway6: must be an IPv6 address, "
                              f"got {gateway6!r}") from None  # fmt: skip
    return ip6, gateway6 or None


def check_ip4(field: str, ip: str | None, gateway: str | None) -> tuple[str | None, str | None]:
    """``ip`` of a further interface: None (no IPv4), ``dhcp`` or an IPv4
    address with its prefix length; a gateway only with a static address.

    Raises:
        ConfigError: ``<field>ip: ...`` or ``<field>gateway: ...``.
    """
    ip = ip or None
    if ip is not None and ip != "dhcp":
        try:
            if "/" not in ip:
                raise ValueError("no prefix length")
            ipaddress.IPv4Interface(ip)
        except ValueError:
            raise ConfigError(f"{field}ip: must be 'dhcp' or an IPv4 address with its prefix "
                              f"length (198.18.0.10/24), got {ip!r}") from None  # fmt: skip
    if gateway:
        if ip is None or ip == "dhcp":
            raise ConfigError(f"{field}gateway: only applies to a static ip, not to "
                              f"ip={ip or 'none'}")  # fmt: skip
        try:
            ipaddress.IPv4Address(gateway)
        except ValueError:
            raise ConfigError(f"{field}gateway: must be an IPv4 address, got {gateway!r}") from None
    return ip, gateway or None


def check_vlan(field: str, vlan: object) -> int | None:
    """A VLAN tag, 1 to 4094, or None.

    Raises:
        ConfigError: ``<field>: ...``.
    """
    if vlan is None:
        return None
    if isinstance(vlan, bool) or not isinstance(vlan, int) or not VLAN_MIN <= vlan <= VLAN_MAX:
        raise ConfigError(f"{field}: must be a VLAN tag from {VLAN_MIN} to {VLAN_MAX}, "
                          f"got {vlan!r}")  # fmt: skip
    return vlan


def check_nameserver(value: str | None) -> str | None:
    """DNS servers, IPv4 or IPv6, separated by spaces or commas; stored
    space-separated (PVE's form).

    Raises:
        ConfigError: ``nameserver: ...`` naming the bad address.
    """
    if not value or not value.strip():
        return None
    servers = [s for s in re.split(r"[\s,]+", value.strip()) if s]
    if len(servers) > 3:  # resolv.conf reads three
        raise ConfigError(f"nameserver: at most 3 servers, got {len(servers)}")
    for server in servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise ConfigError(f"nameserver: {server!r} is not an IP address") from None
    return " ".join(servers)


def check_searchdomain(value: str | None) -> str | None:
    """DNS search domains separated by spaces or commas; stored space-separated.

    Raises:
        ConfigError: ``searchdomain: ...`` naming the bad domain.
    """
    if not value or not value.strip():
        return None
    domains = [d for d in re.split(r"[\s,]+", value.strip()) if d]
    if len(domains) > 6:
        raise ConfigError(f"searchdomain: at most 6 domains, got {len(domains)}")
    for domain in domains:
        if not _DNS_NAME.fullmatch(domain):
            raise ConfigError(f"searchdomain: {domain!r} is not a DNS domain")
    return " ".join(domains)


def check_tags(tags: Iterable[str]) -> list[str]:
    """PVE tags (lowercase letters, digits and ``_-+.``), in order, without repeats.

    Raises:
        ConfigError: ``tags: ...`` naming the bad tag.
    """
    kept: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not checks.is_pve_tag(tag):
            raise ConfigError(f"tags: {tag!r} is not a PVE tag (lowercase letters, digits and "
                              "'_-+.', not starting with '-+.')")  # fmt: skip
        if tag not in kept:
            kept.append(tag)
    if len(kept) > MAX_TAGS:
        raise ConfigError(f"tags: at most {MAX_TAGS} tags, got {len(kept)}")
    return kept


def check_pool(pool: str | None) -> str | None:
    """A PVE resource pool's id (letters, digits, ``_-``), or None.

    Raises:
        ConfigError: ``pool: ...``.
    """
    if pool is None or pool == "":
        return None
    if not _POOL.fullmatch(pool):
        raise ConfigError(f"pool: must be 1-64 letters, digits, '_' and '-', got {pool!r}")
    return pool


# --- interfaces ------------------------------------------------------------------------


@dataclass(frozen=True)
class Nic:
    """A further network interface (``net1`` ... ``net7``, named ``eth1`` ...).

    Attributes:
        bridge: the bridge; the node default when None.
        ip: None (no IPv4), ``dhcp`` or a static IPv4 address with prefix.
        gateway: the IPv4 gateway of a static address.
        ip6: None, ``auto`` (SLAAC), ``dhcp`` or a static IPv6 address with prefix.
        gateway6: the IPv6 gateway of a static ip6.
        vlan: the VLAN tag (1-4094).
        firewall: PVE's firewall flag on the interface.
    """

    bridge: str | None = None
    ip: str | None = "dhcp"
    gateway: str | None = None
    ip6: str | None = None
    gateway6: str | None = None
    vlan: int | None = None
    firewall: bool = False

    KEYS = ("bridge", "ip", "gateway", "ip6", "gateway6", "vlan", "firewall")

    @classmethod
    def from_dict(cls, field: str, data: object) -> Nic:
        """An interface from the API's (and the stored request's) JSON.

        Raises:
            ConfigError: ``<field>.<key>: ...``.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{field}: must be an object, got {data!r}")
        unknown_keys(field, data, cls.KEYS)
        bridge = read_text(f"{field}.bridge", data.get("bridge"))
        if bridge is not None and not _BRIDGE.fullmatch(bridge):
            raise ConfigError(f"{field}.bridge: must be 1-64 letters, digits and '_.-', "
                              f"got {bridge!r}")  # fmt: skip
        ip, gateway = check_ip4(f"{field}.", read_text(f"{field}.ip", data.get("ip", "dhcp")),
                                read_text(f"{field}.gateway", data.get("gateway")))  # fmt: skip
        ip6, gateway6 = check_ip6(f"{field}.", read_text(f"{field}.ip6", data.get("ip6")),
                                  read_text(f"{field}.gateway6", data.get("gateway6")))  # fmt: skip
        if ip is None and ip6 is None:
            raise ConfigError(f"{field}.ip: an interface needs an IPv4 or an IPv6 setting "
                              "(ip=dhcp, ip6=auto, ...)")  # fmt: skip
        vlan = data.get("vlan")
        return cls(bridge=bridge, ip=ip, gateway=gateway, ip6=ip6, gateway6=gateway6,
                   vlan=check_vlan(f"{field}.vlan", read_int(f"{field}.vlan", vlan, -1, 1 << 31)
                                   if isinstance(vlan, str) else vlan),
                   firewall=read_flag(f"{field}.firewall", data.get("firewall", False)))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The JSON the API takes and the stored request keeps (defaults left out)."""
        data: dict[str, Any] = {"bridge": self.bridge, "ip": self.ip, "gateway": self.gateway,
                                "ip6": self.ip6, "gateway6": self.gateway6, "vlan": self.vlan,
                                "firewall": self.firewall}  # fmt: skip
        return {k: v for k, v in data.items() if v not in (None, False) or k == "ip"}

    def pve(self, index: int, default_bridge: str) -> str:
        """PVE's ``net<index>`` property string."""
        parts = [f"name=eth{index}", f"bridge={self.bridge or default_bridge}"]
        if self.ip is not None:
            parts.append(f"ip={self.ip}")
        if self.gateway:
            parts.append(f"gw={self.gateway}")
        if self.ip6 is not None:
            parts.append(f"ip6={self.ip6}")
        if self.gateway6:
            parts.append(f"gw6={self.gateway6}")
        if self.vlan is not None:
            parts.append(f"tag={self.vlan}")
        if self.firewall:
            parts.append("firewall=1")
        return ",".join(parts)

    @property
    def static_addresses(self) -> list[str]:
        """The static addresses it asks for (a clone must not copy them)."""
        return [a for a in (self.ip, self.ip6) if a is not None and a not in ("dhcp", "auto")]


def parse_nic_option(field: str, text: str) -> dict[str, Any]:
    """``--nic bridge=vmbr1,ip=dhcp,ip6=auto,vlan=20,firewall=1`` as the API's JSON
    (``gw``/``gw6``/``tag`` are accepted for PVE's names; ``firewall`` alone means on).

    Raises:
        ConfigError: ``<field>: ...``.
    """
    aliases = {"gw": "gateway", "gw6": "gateway6", "tag": "vlan"}
    pairs = {aliases.get(k, k): v for k, v in read_pairs(field, text, ("firewall",)).items()}
    data: dict[str, Any] = dict(pairs)
    if "vlan" in data:
        data["vlan"] = read_int(f"{field}.vlan", data["vlan"], VLAN_MIN, VLAN_MAX)
    if "firewall" in data:
        data["firewall"] = read_flag(f"{field}.firewall", data["firewall"])
    if "ip" not in data and "ip6" in data:
        data["ip"] = None  # an IPv6-only interface
    return Nic.from_dict(field, data).to_dict()


# --- start on boot, features -----------------------------------------------------------


@dataclass(frozen=True)
class Startup:
    """PVE's ``startup``: the start order and delays (seconds) on boot."""

    order: int | None = None
    up: int | None = None
    down: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> Startup | None:
        """``order=N[,up=S][,down=S]`` (what the API, the CLI and PVE write).

        Raises:
            ConfigError: ``startup: ...``.
        """
        if text is None or not text.strip():
            return None
        pairs = read_pairs("startup", text)
        unknown_keys("startup", pairs, ("order", "up", "down"))
        values = {k: read_int(f"startup.{k}", v, 0, STARTUP_ORDER_MAX if k == "order"
                          else STARTUP_DELAY_MAX) for k, v in pairs.items()}  # fmt: skip
        if not values:
            raise ConfigError("startup: expected order=N[,up=S][,down=S]")
        return cls(**values)

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in (("order", self.order), ("up", self.up),
                                                ("down", self.down)) if v is not None)  # fmt: skip


def check_features(data: object) -> dict[str, bool]:
    """Feature overrides (``{"nesting": true, "fuse": false}``): names among
    :data:`FEATURE_NAMES`.

    Raises:
        ConfigError: ``features.<name>: ...`` or ``features: ...``.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"features: must be an object of flags, got {data!r}")
    for name in data:
        if name not in FEATURE_NAMES:
            raise ConfigError(f"features.{name}: unknown feature (known: "
                              f"{', '.join(FEATURE_NAMES)})")  # fmt: skip
    return {name: read_flag(f"features.{name}", data[name]) for name in FEATURE_NAMES
            if name in data}  # fmt: skip


def parse_feature_option(text: str) -> tuple[str, bool]:
    """``--feature nesting=1`` (or ``nesting``, ``fuse=0``).

    Raises:
        ConfigError: ``features.<name>: ...``.
    """
    name, sep, value = text.strip().partition("=")
    flags = check_features({name: value if sep else True})
    return name, flags[name]


def features_pve(base: Mapping[str, bool], overrides: Mapping[str, bool]) -> str | None:
    """PVE's ``features`` of a template's flags with a request's overrides."""
    merged = {**base, **overrides}
    enabled = [name for name in FEATURE_NAMES if merged.get(name)]
    return ",".join(f"{name}=1" for name in enabled) or None


@dataclass(frozen=True)
class Surface:
    """The create surface of one request, checked and typed (see the module
    docstring); what :class:`~provisioner.templates.params.CreateRequest` carries."""

    ip6: str | None = None
    gateway6: str | None = None
    vlan: int | None = None
    firewall: bool | None = None
    nics: tuple[Nic, ...] = ()
    nameserver: str | None = None
    searchdomain: str | None = None
    tags: tuple[str, ...] = ()
    pool: str | None = None
    onboot: bool | None = None
    startup: Startup | None = None
    mounts: tuple[MountPoint, ...] = ()
    binds: tuple[BindMount, ...] = ()
    features: Mapping[str, bool] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], allow: Sequence[str] | None) -> Surface:
        """The surface of a request's JSON settings (the API's body, the
        stored request).  ``allow``: the bind-mount prefixes to check host
        paths against; None for a stored request (checked when submitted).

        Raises:
            InvalidRequest: every problem, each naming its field.
        """
        problems: list[ConfigError] = []

        def attempt(check: Callable[[], T], fallback: T) -> T:
            return gather(problems, check, fallback)

        def each(name: str, limit: int, read: Callable[[str, object], U]) -> tuple[U, ...]:
            items: list[object] = attempt(lambda: read_list(name, data.get(name), limit), [])
            read_ = [
                attempt(partial(read, f"{name}[{i}]", raw), None) for i, raw in enumerate(items)
            ]
            return tuple(item for item in read_ if item is not None)

        no_address: tuple[str | None, str | None] = (None, None)
        ip6, gateway6 = attempt(lambda: check_ip6("", read_text("ip6", data.get("ip6")),
                                                  read_text("gateway6", data.get("gateway6"))),
                                no_address)  # fmt: skip
        anywhere = ("/",) if allow is None else allow
        tags: list[str] = attempt(lambda: read_list("tags", data.get("tags"), MAX_TAGS), [])
        surface = cls(
            ip6=ip6, gateway6=gateway6,
            vlan=attempt(lambda: check_vlan("vlan", data.get("vlan")), None),
            firewall=attempt(lambda: read_optional_flag("firewall", data.get("firewall")), None),
            nics=each("nics", MAX_NICS, Nic.from_dict),
            nameserver=attempt(lambda: check_nameserver(read_text("nameserver",
                                                              data.get("nameserver"))), None),
            searchdomain=attempt(lambda: check_searchdomain(
                read_text("searchdomain", data.get("searchdomain"))), None),
            tags=tuple(attempt(lambda: check_tags(tags), [])),
            pool=attempt(lambda: check_pool(read_text("pool", data.get("pool"))), None),
            onboot=attempt(lambda: read_optional_flag("onboot", data.get("onboot")), None),
            startup=attempt(lambda: Startup.parse(read_text("startup", data.get("startup"))), None),
            mounts=each("mounts", MAX_MOUNTS, MountPoint.from_dict),
            binds=each("binds", MAX_BINDS,
                       lambda name, raw: BindMount.from_dict(name, raw, anywhere)),
            features=attempt(lambda: check_features(data.get("features")), {}),
        )  # fmt: skip
        attempt(lambda: check_mount_paths(surface.mounts, surface.binds), None)
        if problems:
            raise InvalidRequest(problems)
        return surface

    def to_json(self) -> dict[str, Any]:
        """The settings' JSON (``SURFACE_KEYS``), normalised, as stored."""
        return {
            "ip6": self.ip6, "gateway6": self.gateway6, "vlan": self.vlan,
            "firewall": self.firewall, "nics": [n.to_dict() for n in self.nics],
            "nameserver": self.nameserver, "searchdomain": self.searchdomain,
            "tags": list(self.tags), "pool": self.pool, "onboot": self.onboot,
            "startup": None if self.startup is None else str(self.startup),
            "mounts": [m.to_dict() for m in self.mounts],
            "binds": [b.to_dict() for b in self.binds], "features": dict(self.features),
        }  # fmt: skip

"""A request checked against what its node has, at submit: the storage
exists and holds containers (``rootdir``), the bridge exists, a static
address lies inside the bridge's subnet (not its network, broadcast or the
node's own address), and the resource pool exists.  The API and the CLI both call
:func:`node_fact_problems`; the create phase's pre-flight stays the last word.

The facts (``GET /nodes/{node}/storage``, ``/network`` and ``/pools``, through
``PveClient``) are kept in the process for ``FACTS_TTL`` seconds: a burst of
requests asks the node once.  A refusal is never based on cached facts
alone: facts from the cache that would refuse a request are read again
first, so a storage or bridge added a moment ago passes.  A node that cannot
be asked (down, refusing the login or TLS, settings that no longer decrypt)
refuses nothing here: the request is stored and the pre-flight decides.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.errors import ConfigError, ProvisionError, PvePermanentError
from provisioner.models import Node
from provisioner.nodes import connection_for
from provisioner.pve.client import PveClient
from provisioner.pve.http import PveConnection
from provisioner.pve.types import BridgeInfo, StorageInfo
from provisioner.requests import ProvisionRequest, node_defaults
from provisioner.secrets.box import SecretBox
from provisioner.templates.surface import check_pool

log = logging.getLogger(__name__)

FACTS_TTL = 30.0  # seconds; a refusal always reads again first
CONNECT_TIMEOUT = 3.0  # a submit waits for the node this long at most to connect
READ_TIMEOUT = 15.0


@dataclass(frozen=True)
class NodeFacts:
    """What a node offers containers: storages with their content types,
    bridges with their CIDR (the node's address/prefix; None without one),
    and the cluster's resource pools the login may see (None: not known)."""

    storages: Mapping[str, frozenset[str]]
    bridges: Mapping[str, str | None]
    pools: frozenset[str] | None = None

    @classmethod
    def of(cls, storages: Iterable[StorageInfo], bridges: Iterable[BridgeInfo],
           pools: Iterable[str] | None = None) -> NodeFacts:  # fmt: skip
        return cls({s.name: s.content for s in storages}, {b.name: b.cidr for b in bridges},
                   None if pools is None else frozenset(pools))  # fmt: skip


@dataclass(frozen=True)
class Wanted:
    """What a request will use on its node; None is "not to be checked"
    (the field was already refused)."""

    storage: str | None
    bridge: str | None
    ip: str | None = None  # "dhcp" or address/prefix
    default_storage: bool = False  # the node's default, not the request's choice
    default_bridge: bool = False
    # the further interfaces: (field, bridge, ip or None), e.g. ("nics[0]", "vmbr1", "dhcp")
    nics: tuple[tuple[str, str, str | None], ...] = ()
    # the data volumes that name a storage: (field, storage), e.g. ("mounts[1]", "fast")
    volumes: tuple[tuple[str, str], ...] = ()
    pool: str | None = None


def wanted_of(req: ProvisionRequest, node: Node, refused: Collection[str] = ()) -> Wanted:
    """The storage, bridge and address ``req`` gets on ``node`` (the node's
    defaults for what it leaves out), except fields in ``refused``."""
    defaults = node_defaults(node)

    def items(name: str) -> list[tuple[str, dict[str, object]]]:
        """The list's entries that are objects and not refused already."""
        given = getattr(req, name)
        if name in refused or not isinstance(given, list):
            return []
        return [(f"{name}[{i}]", item) for i, item in enumerate(given) if isinstance(item, dict)
                and not any(r.startswith(f"{name}[{i}]") for r in refused)]  # fmt: skip

    nics = tuple((field, str(nic.get("bridge") or defaults.bridge),
                  ip if isinstance(ip := nic.get("ip", "dhcp"), str) else None)
                 for field, nic in items("nics"))  # fmt: skip
    volumes = tuple((field, storage) for field, mount in items("mounts")
                    if isinstance(storage := mount.get("storage"), str) and storage)  # fmt: skip
    return Wanted(storage=None if "storage" in refused else req.storage or defaults.storage,
                  bridge=None if "bridge" in refused else req.bridge or defaults.bridge,
                  ip=None if "ip" in refused else req.ip,
                  default_storage=req.storage is None,
                  default_bridge=req.bridge is None, nics=nics, volumes=volumes,
                  pool=None if "pool" in refused else _pool(req.pool))  # fmt: skip


def _pool(pool: object) -> str | None:
    """A pool to look for on the node; None when there is none, or when it is
    malformed (the request's own checks say so)."""
    try:
        return check_pool(pool) if isinstance(pool, str) else None
    except ConfigError:
        return None


def address_problem(ip: str, bridge: str, cidr: str | None) -> str | None:
    """Why a static ``ip`` (address/prefix) cannot be used on a bridge whose
    address is ``cidr``, or None.  A bridge without an address, or with a
    /31 or /32, has no subnet to hold the address to: anything passes.

    Raises:
        ValueError: ``ip`` is not an IPv4 address with its prefix length.
    """
    if ip == "dhcp" or not cidr:
        return None
    address = ipaddress.IPv4Interface(ip).ip
    try:
        own = ipaddress.IPv4Interface(cidr)
    except ValueError:  # PVE gave something else (an IPv6 cidr is "cidr6")
        return None
    net = own.network
    if net.prefixlen >= 31:
        return None
    where = f"the subnet {net} of bridge {bridge}"
    if address not in net:
        return f"{address} is not in {where}"
    if address == net.network_address:
        return f"{address} is the network address of {where}"
    if address == net.broadcast_address:
        return f"{address} is the broadcast address of {where}"
    if address == own.ip:
        return f"{address} is the node's own address on bridge {bridge}"
    return None


def _storage_problem(facts: NodeFacts, node: str, name: str | None,
                     default: bool = False) -> str | None:  # fmt: skip
    if name is None:
        return None
    which = f"storage {name!r}" + (" (the node's default)" if default else "")
    able = sorted(n for n, content in facts.storages.items() if "rootdir" in content)
    can = f"storages that can: {', '.join(able)}" if able else "none of its storages can"
    if name not in facts.storages:
        return f"node {node} has no {which}; {can} hold containers"
    if "rootdir" not in facts.storages[name]:
        return f"{which} on node {node} cannot hold containers (no 'rootdir' content); {can}"
    return None


def _bridge_problem(facts: NodeFacts, node: str, name: str | None,
                    default: bool = False) -> str | None:  # fmt: skip
    if name is None or name in facts.bridges:
        return None
    which = f"bridge {name!r}" + (" (the node's default)" if default else "")
    known = ", ".join(sorted(facts.bridges)) or "none"
    return f"node {node} has no {which}; its bridges: {known}"


def _pool_problem(facts: NodeFacts, node: str, pool: str | None) -> str | None:
    if pool is None or facts.pools is None or pool in facts.pools:
        return None
    known = ", ".join(sorted(facts.pools)) or "none"
    # GET /pools lists only the pools the login has Pool.Audit on
    return (
        f"the cluster of node {node} has no pool {pool!r} that this node's login can see; "
        f"its pools: {known}"
    )


def fact_problems(facts: NodeFacts, node: str, wanted: Wanted) -> list[ConfigError]:
    """Every problem of ``wanted`` on a node with ``facts`` (pure).

    Returns:
        ``ConfigError``s naming the field a user would change (``storage``,
        ``bridge``, ``ip``, ``pool``), also when the node's default is to blame.
    """
    problems: list[ConfigError] = []
    storage = _storage_problem(facts, node, wanted.storage, wanted.default_storage)
    if storage:
        problems.append(ConfigError(f"storage: {storage}"))
    for field, name in wanted.volumes:
        if problem := _storage_problem(facts, node, name):
            problem = problem.replace("hold containers", "hold container volumes")
            problems.append(ConfigError(f"{field}.storage: {problem}"))
    interfaces = [("", wanted.bridge, wanted.ip, wanted.default_bridge)]
    interfaces += [(f"{field}.", bridge, ip, False) for field, bridge, ip in wanted.nics]
    for prefix, bridge_name, ip, default in interfaces:
        bridge = _bridge_problem(facts, node, bridge_name, default)
        if bridge:
            problems.append(ConfigError(f"{prefix}bridge: {bridge}"))
        elif ip is not None and bridge_name is not None:
            try:
                address = address_problem(ip, bridge_name, facts.bridges[bridge_name])
            except ValueError:  # refused by the request's own checks
                address = None
            if address:
                problems.append(ConfigError(f"{prefix}ip: {address} on node {node}"))
    if pool := _pool_problem(facts, node, wanted.pool):
        problems.append(ConfigError(f"pool: {pool}"))
    return problems


class NodeFactsCache:
    """Facts by connection, each kept ``ttl`` seconds (thread-safe)."""

    def __init__(self, ttl: float = FACTS_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.ttl = ttl
        self.clock = clock
        self._facts: dict[Hashable, tuple[float, NodeFacts]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> NodeFacts | None:
        """The facts stored for ``key`` if they are fresh enough."""
        with self._lock:
            found = self._facts.get(key)
        if found is None or self.clock() - found[0] > self.ttl:
            return None
        return found[1]

    def put(self, key: Hashable, facts: NodeFacts) -> None:
        now = self.clock()
        with self._lock:
            for stale in [k for k, (at, _) in self._facts.items() if now - at > self.ttl]:
                del self._facts[stale]
            self._facts[key] = (now, facts)


def checked_facts(cache: NodeFactsCache, key: Hashable, node: str, wanted: Wanted,
                  read: Callable[[], NodeFacts]) -> list[ConfigError]:  # fmt: skip
    """The problems of ``wanted`` by the cached facts, by fresh ones when
    the cached would refuse (a name they miss may have been added since).

    Raises:
        ProvisionError: from ``read`` (the node cannot be asked).
    """
    cached = cache.get(key)
    if cached is not None:
        problems = fact_problems(cached, node, wanted)
        if not problems:
            return problems
    facts = read()
    cache.put(key, facts)
    return fact_problems(facts, node, wanted)


Lender = Callable[[PveConnection], AbstractContextManager[PveClient]]


def node_fact_problems(session: Session, box: SecretBox, req: ProvisionRequest,
                       cache: NodeFactsCache, *, lend: Lender = PveClient,
                       refused: Collection[str] = (), connect_timeout: float = CONNECT_TIMEOUT,
                       read_timeout: float = READ_TIMEOUT) -> list[ConfigError]:  # fmt: skip
    """The problems of ``req``'s storage, bridge and address on its node.

    Ends ``session``'s transaction before asking the node, so that no
    transaction waits on it.  Fields in ``refused`` are not checked.

    Args:
        lend: gives a client for a connection in a ``with`` block (a pool's,
            or a new ``PveClient``).

    Returns:
        ``ConfigError``s naming ``storage``, ``bridge``, ``ip`` or ``pool``; none when
        the node is unknown (``check_request`` says so) or cannot be asked.
    """
    node = session.scalars(select(Node).where(Node.name == req.node)).one_or_none()
    if node is None:
        return []
    wanted = wanted_of(req, node, refused)
    name = node.name
    try:
        connection = dataclasses.replace(connection_for(node, box), connect_timeout=connect_timeout,
                                         read_timeout=read_timeout)  # fmt: skip
    except ProvisionError as exc:  # settings that no longer pass, a secret no key decrypts
        log.warning("node %s: its settings are unusable (%s); storage, bridge and address are "
                    "left to the create phase", name, exc)  # fmt: skip
        return []
    session.commit()

    def read() -> NodeFacts:
        with lend(connection) as client:
            storages, bridges = client.storages(), client.bridges()
            try:
                pools: list[str] | None = client.pools()
            except PvePermanentError as exc:  # a login that may not list pools
                log.info("node %s: its pools cannot be listed (%s); the create checks the "
                         "pool", name, exc)  # fmt: skip
                pools = None
            return NodeFacts.of(storages, bridges, pools)

    try:
        return checked_facts(cache, connection, name, wanted, read)
    except ProvisionError as exc:
        log.warning("node %s cannot be asked for its storages and bridges (%s); the create "
                    "phase checks them", name, exc)  # fmt: skip
        return []

"""Choosing a node for a request (``--node auto``): pure rules over what
``GET /cluster/resources`` reports, the requests still in flight and the
operator's marks (maintenance, caps, spread groups).

A node is a candidate when it is online, not in maintenance, under its cap
of containers, has the storage the request needs for containers, and has
the memory and disk the request asks for after what is already committed
to it (what the host uses beside its guests plus the configured memory of
its guests, or the memory in use if that is more) and what requests in
flight have reserved.  The candidates are ranked with busy CPUs last, then
by free memory, then free disk (each to the percent); equal nodes go to the
one with fewer guests, so a burst spreads evenly.  Every choice
says why, naming each node left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from provisioner.errors import ConfigError

AUTO = "auto"  # the node a request names to have it placed
GIB = 1 << 30
MIB = 1 << 20

# a node whose CPUs are this busy (0..1 of all of them) is chosen only when
# every other that fits is too: pvestatd's figure, an average over seconds
CPU_BUSY = 0.8
NEAR = 0.01  # shares of memory or disk this close count as equal


SPREAD_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_spread(group: str | None) -> str | None:
    """A spread group's name, or None.

    Raises:
        ConfigError: ``spread: ...``.
    """
    if group is None or group == "":
        return None
    if not isinstance(group, str) or not SPREAD_GROUP.fullmatch(group):
        raise ConfigError(f"spread: 1-64 letters, digits and '_.-', starting with a letter or "
                          f"digit; got {group!r}")  # fmt: skip
    return group


@dataclass(frozen=True)
class StorageUsage:
    """One storage as a node sees it."""

    name: str
    content: frozenset[str]
    total: int  # bytes
    used: int
    shared: bool = False
    active: bool = True

    @property
    def avail(self) -> int:
        return max(0, self.total - self.used)


@dataclass(frozen=True)
class NodeUsage:
    """One PVE node's load, as ``/cluster/resources`` reports it."""

    node: str  # PVE's name for it
    online: bool
    maxmem: int  # bytes
    mem: int
    maxcpu: int
    cpu: float  # 0..1 of all its CPUs
    committed_mem: int = 0  # the configured memory of its guests, bytes
    guest_mem: int = 0  # the memory its running guests use now, bytes
    guests: int = 0
    running: int = 0
    storages: Mapping[str, StorageUsage] = field(default_factory=dict)

    @property
    def mem_taken(self) -> int:
        """The node's memory as if every guest used all it may: what the
        host itself uses plus its guests' configured memory (never less
        than what is in use now).  A container that is ready counts what it
        was given, as it did while its reservation held it."""
        return max(self.mem, self.mem - self.guest_mem + self.committed_mem)


def usage_of(resources: Iterable[Mapping[str, object]]) -> dict[str, NodeUsage]:
    """Per node, from the entries of ``GET /cluster/resources`` (every type)."""
    nodes: dict[str, dict[str, object]] = {}
    guests: dict[str, list[Mapping[str, object]]] = {}
    storages: dict[str, dict[str, StorageUsage]] = {}
    for item in resources:
        kind, node = item.get("type"), str(item.get("node", ""))
        if kind == "node":
            nodes[node] = dict(item)
        elif kind in ("lxc", "qemu"):
            guests.setdefault(node, []).append(item)
        elif kind == "storage":
            content = frozenset(filter(None, str(item.get("content", "")).split(",")))
            name = str(item.get("storage", ""))
            storages.setdefault(node, {})[name] = StorageUsage(
                name=name, content=content, total=_int(item.get("maxdisk")),
                used=_int(item.get("disk")), shared=_int(item.get("shared")) == 1,
                active=item.get("status", "available") == "available")  # fmt: skip
    out = {}
    for name, item in nodes.items():
        mine = guests.get(name, [])
        out[name] = NodeUsage(
            node=name, online=item.get("status") == "online", maxmem=_int(item.get("maxmem")),
            mem=_int(item.get("mem")), maxcpu=_int(item.get("maxcpu")),
            cpu=_float(item.get("cpu")),
            committed_mem=sum(_int(g.get("maxmem")) for g in mine if not _int(g.get("template"))),
            guest_mem=sum(_int(g.get("mem")) for g in mine if g.get("status") == "running"),
            guests=sum(1 for g in mine if not _int(g.get("template"))),
            running=sum(1 for g in mine if g.get("status") == "running"),
            storages=storages.get(name, {}))  # fmt: skip
    return out


def _int(value: object) -> int:
    try:
        return int(float(str(value)))
    except ValueError:
        return 0


def _float(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class Candidate:
    """A node the provisioner knows, with the operator's marks."""

    name: str  # the provisioner's name for it
    pve_node: str
    maintenance: bool = False
    max_containers: int | None = None  # a cap of guests, None: none
    default_storage: str | None = None


@dataclass(frozen=True)
class InFlight:
    """What requests placed on a node and not yet ready or failed reserve."""

    memory: int = 0  # MiB
    disk: int = 0  # GiB
    count: int = 0


@dataclass(frozen=True)
class Ask:
    """What a request needs of its node."""

    memory: int  # MiB
    disk: int  # GiB, the root disk and the data volumes together
    storage: str | None = None  # None: each node's default
    spread: str | None = None  # an anti-affinity group


@dataclass(frozen=True)
class Placement:
    """The node chosen (None: none fits) and why, one reason per node."""

    node: str | None
    reasons: str
    skipped: Mapping[str, str]
    warning: str | None = None


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def place(candidates: Sequence[Candidate], usage: Mapping[str, NodeUsage], ask: Ask,
          in_flight: Mapping[str, InFlight] | None = None,
          members: Mapping[str, int] | None = None, *, strict_spread: bool = True,
          down: Mapping[str, str] | None = None) -> Placement:  # fmt: skip
    """The best node for ``ask``.

    Args:
        in_flight: reservations by candidate name.
        members: how many members of ``ask.spread`` each candidate holds.
        strict_spread: when every node that fits already holds a member of
            the spread group, refuse (True) or place anyway on one holding
            the fewest, with a warning (False).
        down: why a candidate's cluster could not be asked, by name.
    """
    in_flight = in_flight or {}
    members = members or {}
    skipped: dict[str, str] = {}
    fits: list[tuple[Candidate, NodeUsage, int, int]] = []
    for cand in sorted(candidates, key=lambda c: c.name):
        if down and cand.name in down:
            skipped[cand.name] = f"unreachable ({down[cand.name]})"
            continue
        why, free_mem, free_disk = _fit(cand, usage.get(cand.pve_node), ask,
                                        in_flight.get(cand.name, InFlight()))  # fmt: skip
        if why:
            skipped[cand.name] = why
        else:
            fits.append((cand, usage[cand.pve_node], free_mem, free_disk))
    warning = None
    if ask.spread and fits:
        apart = [f for f in fits if not members.get(f[0].name)]
        if not apart:
            held = ", ".join(f"{f[0].name} ({members[f[0].name]})" for f in fits)
            text = f"every node that fits holds a member of spread group {ask.spread!r}: {held}"
            if strict_spread:
                return Placement(None, _explain(None, skipped, text), skipped)
            fewest = min(members[f[0].name] for f in fits)
            apart = [f for f in fits if members[f[0].name] == fewest]
            warning = f"{text}; placed where it has the fewest"
        for f in fits:
            if f not in apart:
                skipped[f[0].name] = f"holds a member of spread group {ask.spread!r}"
        fits = apart
    if not fits:
        return Placement(None, _explain(None, skipped, None), skipped)

    best, use, free_mem = _rank(fits, ask, in_flight)
    chosen = (f"{best.name}: {_gib(free_mem - ask.memory * MIB)} free after it, "
              f"{use.running} running, CPU {use.cpu:.0%}")  # fmt: skip
    return Placement(best.name, _explain(chosen, skipped, warning), skipped, warning)


def _rank(fits: list[tuple[Candidate, NodeUsage, int, int]], ask: Ask,
          in_flight: Mapping[str, InFlight]) -> tuple[Candidate, NodeUsage, int]:  # fmt: skip
    """The best of the nodes that fit: busy CPUs last; then the most free
    memory, then free disk, each as a share of the node's and within a
    percent of the best (so that noise does not decide); then the fewest
    guests with those in flight, so that equal nodes take turns."""
    pool = [f for f in fits if f[1].cpu < CPU_BUSY] or fits

    def share(f: tuple[Candidate, NodeUsage, int, int], disk: bool) -> float:
        cand, use, free_mem, free_disk = f
        if disk:
            return free_disk / (use.storages[_storage(cand, ask)].total or 1)
        return free_mem / (use.maxmem or 1)

    for disk in (False, True):
        top = max(share(f, disk) for f in pool)
        pool = [f for f in pool if share(f, disk) >= top - NEAR]
    cand, use, free_mem, _ = min(pool, key=lambda f: (
        f[1].guests + in_flight.get(f[0].name, InFlight()).count, f[0].name))  # fmt: skip
    return cand, use, free_mem


def _storage(cand: Candidate, ask: Ask) -> str:
    return ask.storage or cand.default_storage or "local-lvm"


def _fit(cand: Candidate, use: NodeUsage | None, ask: Ask,
         flight: InFlight) -> tuple[str | None, int, int]:  # fmt: skip
    """(why not, free memory, free disk) of a node for ``ask``."""
    if use is None:
        return "not in the cluster's resources", 0, 0
    if not use.online:
        return "offline", 0, 0
    if cand.maintenance:
        return "maintenance", 0, 0
    if cand.max_containers is not None and use.guests + flight.count >= cand.max_containers:
        return f"at its cap of {cand.max_containers} containers", 0, 0
    name = _storage(cand, ask)
    store = use.storages.get(name)
    if store is None or not store.active or "rootdir" not in store.content:
        return f"no storage {name!r} for containers", 0, 0
    free_mem = use.maxmem - use.mem_taken - flight.memory * MIB
    if free_mem < ask.memory * MIB:
        return f"{_gib(max(free_mem, 0))} memory free, needs {_gib(ask.memory * MIB)}", 0, 0
    free_disk = store.avail - flight.disk * GIB
    if free_disk < ask.disk * GIB:
        return (f"{_gib(max(free_disk, 0))} free on {name}, needs {_gib(ask.disk * GIB)}",
                0, 0)  # fmt: skip
    return None, free_mem, free_disk


def _explain(chosen: str | None, skipped: Mapping[str, str], extra: str | None) -> str:
    head = f"placed on {chosen}" if chosen else "no node fits"
    parts = [head, *(f"{name} skipped: {why}" for name, why in sorted(skipped.items()))]
    if extra and not chosen:
        parts.append(extra)
    return "; ".join(parts)

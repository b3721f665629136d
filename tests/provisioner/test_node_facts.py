"""A request against its node's facts: the pure rules, the cache and its
refresh (no fixtures, no node; the API and CLI tests ask the simulator)."""

from __future__ import annotations

import pytest

from provisioner.errors import ConfigError, TransientError
from provisioner.models import Node
from provisioner.node_facts import (
    NodeFacts,
    NodeFactsCache,
    Wanted,
    address_problem,
    checked_facts,
    fact_problems,
    wanted_of,
)
from provisioner.pve.types import BridgeInfo, StorageInfo
from provisioner.requests import ProvisionRequest

FACTS = NodeFacts(
    storages={"local": frozenset({"vztmpl", "iso", "backup"}),
              "local-lvm": frozenset({"rootdir", "images"})},
    bridges={"vmbr0": "198.18.4.1/24", "vmbr1": None, "vnet9": None},
)  # fmt: skip


@pytest.mark.parametrize(("ip", "cidr", "problem"), [
    ("198.18.4.10/24", "198.18.4.1/24", None),
    ("198.18.4.254/24", "198.18.4.1/24", None),
    ("198.18.4.10/16", "198.18.4.1/24", None),  # the container's own prefix is its business
    ("dhcp", "198.18.4.1/24", None),
    ("10.0.0.5/24", None, None),  # a bridge without an address: nothing to hold it to
    ("10.0.0.5/24", "192.0.2.7/32", None),  # PVE writes /32 for an address without a mask
    ("10.0.0.5/24", "192.0.2.6/31", None),
    ("10.0.0.5/24", "fd00::1/64", None),
    ("198.18.5.10/24", "198.18.4.1/24", "198.18.5.10 is not in the subnet 198.18.4.0/24 of "
                                        "bridge vmbr0"),
    ("198.18.4.0/24", "198.18.4.1/24", "198.18.4.0 is the network address of the subnet "
                                       "198.18.4.0/24 of bridge vmbr0"),
    ("198.18.4.255/24", "198.18.4.1/24", "198.18.4.255 is the broadcast address of the subnet"),
    ("198.18.4.1/24", "198.18.4.1/24", "198.18.4.1 is the node's own address on bridge vmbr0"),
])  # fmt: skip
def test_a_static_address_must_fit_the_bridge(ip: str, cidr: str | None,
                                             problem: str | None) -> None:  # fmt: skip
    found = address_problem(ip, "vmbr0", cidr)
    assert found == problem if problem is None else (found or "").startswith(problem)


def _messages(problems: list[ConfigError]) -> list[str]:
    return [p.message for p in problems]


def test_a_request_the_node_can_hold_passes() -> None:
    assert fact_problems(FACTS, "pve1", Wanted("local-lvm", "vmbr0", "198.18.4.9/24")) == []
    assert fact_problems(FACTS, "pve1", Wanted("local-lvm", "vmbr1", "10.1.1.1/8")) == []
    assert fact_problems(FACTS, "pve1", Wanted(None, None, None)) == []  # all refused already


def test_every_problem_names_the_field_to_change() -> None:
    problems = _messages(fact_problems(FACTS, "pve1", Wanted("fast", "vmbr9", "10.0.0.5/24")))
    assert problems == [
        "storage: node pve1 has no storage 'fast'; storages that can: local-lvm hold containers",
        "bridge: node pve1 has no bridge 'vmbr9'; its bridges: vmbr0, vmbr1, vnet9"]  # fmt: skip
    (local,) = _messages(fact_problems(FACTS, "pve1", Wanted("local", "vmbr0", "dhcp")))
    assert local == ("storage: storage 'local' on node pve1 cannot hold containers (no 'rootdir' "
                     "content); storages that can: local-lvm")  # fmt: skip
    (ip,) = _messages(fact_problems(FACTS, "pve1", Wanted("local-lvm", "vmbr0", "10.0.0.5/24")))
    assert ip == "ip: 10.0.0.5 is not in the subnet 198.18.4.0/24 of bridge vmbr0 on node pve1"


def test_the_node_defaults_are_checked_and_blamed_on_the_field() -> None:
    node = Node(name="pve1", pve_node="pve", default_storage="local", default_bridge=None)
    wanted = wanted_of(ProvisionRequest(template="t", node="pve1", hostname="h"), node)
    assert wanted == Wanted("local", "vmbr0", "dhcp", default_storage=True, default_bridge=True)
    (storage,) = _messages(fact_problems(FACTS, "pve1", wanted))
    assert storage.startswith("storage: storage 'local' (the node's default) on node pve1 cannot")
    bare = NodeFacts(storages={"data": frozenset({"images"})}, bridges={})
    assert _messages(fact_problems(bare, "pve1", wanted)) == [
        "storage: node pve1 has no storage 'local' (the node's default); none of its storages "
        "can hold containers",
        "bridge: node pve1 has no bridge 'vmbr0' (the node's default); its bridges: none",
    ]  # fmt: skip
    given = ProvisionRequest(template="t", node="pve1", hostname="h", storage="x", bridge="y",
                             ip="10.0.0.2/24")  # fmt: skip
    assert wanted_of(given, node) == Wanted("x", "y", "10.0.0.2/24")
    assert wanted_of(given, node, refused={"storage", "ip"}) == Wanted(None, "y", None)


def test_further_interfaces_and_volume_storages_are_checked_naming_their_field() -> None:
    node = Node(name="pve1", pve_node="pve", default_storage="local-lvm", default_bridge="vmbr0")
    req = ProvisionRequest(template="t", node="pve1", hostname="h", nics=[
        {"bridge": "vmbr1", "ip": "dhcp"}, {"ip": "198.18.9.5/24"}, {"bridge": "vmbr7"},
        {"ip": None, "ip6": "auto"}, "not an object"],
        mounts=[{"path": "/data", "size": 2}, {"path": "/b", "size": 1, "storage": "local"},
                {"path": "/c", "size": 1, "storage": "nvme"}])  # fmt: skip
    wanted = wanted_of(req, node)
    assert wanted.nics == (("nics[0]", "vmbr1", "dhcp"), ("nics[1]", "vmbr0", "198.18.9.5/24"),
                           ("nics[2]", "vmbr7", "dhcp"), ("nics[3]", "vmbr0", None))  # fmt: skip
    assert wanted.volumes == (("mounts[1]", "local"), ("mounts[2]", "nvme"))
    assert _messages(fact_problems(FACTS, "pve1", wanted)) == [
        "mounts[1].storage: storage 'local' on node pve1 cannot hold container volumes (no 'rootdir' "
        "content); storages that can: local-lvm",
        "mounts[2].storage: node pve1 has no storage 'nvme'; storages that can: local-lvm hold "
        "container volumes",
        "nics[1].ip: 198.18.9.5 is not in the subnet 198.18.4.0/24 of bridge vmbr0 on node pve1",
        "nics[2].bridge: node pve1 has no bridge 'vmbr7'; its bridges: vmbr0, vmbr1, vnet9",
    ]  # fmt: skip
    # a field refused by the request's own checks is not blamed again
    assert wanted_of(req, node, refused={"nics[1].ip", "mounts"}).nics[1][0] == "nics[2]"
    assert wanted_of(req, node, refused={"nics[1].ip", "mounts"}).volumes == ()


def test_the_pool_must_be_one_the_login_sees() -> None:
    node = Node(name="pve1", pve_node="pve", default_storage="local-lvm", default_bridge="vmbr0")
    req = ProvisionRequest(template="t", node="pve1", hostname="h", pool="customers")
    wanted = wanted_of(req, node)
    assert wanted.pool == "customers" and wanted_of(req, node, refused={"pool"}).pool is None
    with_pools = NodeFacts(FACTS.storages, FACTS.bridges, frozenset({"web", "db"}))
    assert _messages(fact_problems(with_pools, "pve1", wanted)) == [
        "pool: the cluster of node pve1 has no pool 'customers' that this node's login can see; "
        "its pools: db, web"]  # fmt: skip
    assert fact_problems(NodeFacts(FACTS.storages, FACTS.bridges, frozenset({"customers"})),
                         "pve1", wanted) == []  # fmt: skip
    assert fact_problems(FACTS, "pve1", wanted) == []  # pools not known: the create checks it
    assert wanted_of(ProvisionRequest(template="t", node="pve1", hostname="h"), node).pool is None


def test_bridges_carry_their_cidr_as_pve_gives_it() -> None:
    def cidr(**fields: str) -> str | None:
        return BridgeInfo.from_api({"iface": "vmbr0", **fields}).cidr

    assert cidr(cidr="198.18.4.1/24", address="198.18.4.1", netmask="24") == "198.18.4.1/24"
    assert cidr(address="10.0.0.5", netmask="24") == "10.0.0.5/24"
    assert cidr(address="10.0.0.5", netmask="255.255.255.0") == "10.0.0.5/24"
    assert cidr(address="10.0.0.5") == "10.0.0.5/32"
    assert cidr() is None and cidr(address="nonsense", netmask="24") is None
    facts = NodeFacts.of([StorageInfo.from_api({"storage": "s", "content": "rootdir,images"})],
                         [BridgeInfo.from_api({"iface": "vmbr0", "cidr": "10.0.0.1/8"})])  # fmt: skip
    assert facts == NodeFacts({"s": frozenset({"rootdir", "images"})}, {"vmbr0": "10.0.0.1/8"})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_cache_keeps_facts_for_its_ttl() -> None:
    clock = Clock()
    cache = NodeFactsCache(ttl=30, clock=clock)
    assert cache.get("pve1") is None
    cache.put("pve1", FACTS)
    clock.now += 30
    assert cache.get("pve1") is FACTS and cache.get("pve2") is None
    clock.now += 1
    assert cache.get("pve1") is None


def test_cached_facts_answer_and_a_refusal_reads_again_first() -> None:
    clock = Clock()
    cache = NodeFactsCache(ttl=30, clock=clock)
    reads: list[NodeFacts] = []
    fresh = NodeFacts(storages=FACTS.storages, bridges={**FACTS.bridges, "vmbr7": None})

    def read() -> NodeFacts:
        reads.append(fresh)
        return fresh

    wanted = Wanted("local-lvm", "vmbr7", "dhcp")
    cache.put("pve1", FACTS)  # from before vmbr7 was added
    assert checked_facts(cache, "pve1", "pve1", wanted, read) == [] and len(reads) == 1
    assert cache.get("pve1") is fresh
    assert checked_facts(cache, "pve1", "pve1", wanted, read) == [] and len(reads) == 1  # cached
    (problem,) = checked_facts(cache, "pve1", "pve1", Wanted("local-lvm", "vmbr8"), read)
    assert problem.message.startswith("bridge: node pve1 has no bridge 'vmbr8'") and len(reads) == 2
    clock.now += 31
    checked_facts(cache, "pve2", "pve2", wanted, read)  # nothing cached: one read
    assert len(reads) == 3


def test_a_node_that_cannot_be_read_is_the_callers_to_judge() -> None:
    def down() -> NodeFacts:
        raise TransientError("connection refused")

    with pytest.raises(TransientError):
        checked_facts(NodeFactsCache(), "pve1", "pve1", Wanted("local-lvm", "vmbr0"), down)

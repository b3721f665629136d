"""Placement across a cluster's nodes: the pure rules (no node, no Redis)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from provisioner.models import AuthKind, Node
from provisioner.nodes import connection_for
from provisioner.placement import (
    GIB,
    Ask,
    Candidate,
    InFlight,
    NodeUsage,
    StorageUsage,
    place,
    usage_of,
)
from provisioner.secrets.box import SecretBox
from provisioner.secrets.vault import set_node_secret

LVM = frozenset({"rootdir", "images"})


def node(name: str, *, maxmem: int = 16, mem: float = 2, cpu: float = 0.1, guests: int = 0,
         running: int = 0, committed: float = 0, free_disk: float = 100, online: bool = True,
         storage: str = "local-lvm") -> NodeUsage:  # fmt: skip
    store = StorageUsage(storage, LVM, total=200 * GIB, used=int((200 - free_disk) * GIB))
    return NodeUsage(node=name, online=online, maxmem=maxmem * GIB, mem=int(mem * GIB), maxcpu=8,
                     cpu=cpu, committed_mem=int(committed * GIB), guests=guests,
                     running=running, storages={storage: store})  # fmt: skip


def cands(*names: str, **marks: Any) -> list[Candidate]:
    return [Candidate(name=n, pve_node=n, **marks.get(n, {})) for n in names]


SMALL = Ask(memory=512, disk=4)


def test_the_node_with_the_most_free_memory_is_chosen_and_the_reason_says_why() -> None:
    usage = {"pve1": node("pve1", mem=10), "pve2": node("pve2", mem=3.5, running=3),
             "pve3": node("pve3", mem=6)}  # fmt: skip
    got = place(cands("pve1", "pve2", "pve3"), usage, SMALL)
    assert got.node == "pve2"
    assert got.reasons == "placed on pve2: 12.0 GiB free after it, 3 running, CPU 10%"


def test_nodes_that_cannot_take_it_are_skipped_each_with_its_reason() -> None:
    usage = {"pve1": node("pve1"), "pve2": node("pve2", online=False), "pve3": node("pve3"),
             "pve4": node("pve4", maxmem=2, mem=1.8), "pve5": node("pve5", free_disk=2),
             "pve6": node("pve6", storage="zfs"), "pve7": node("pve7", guests=5)}  # fmt: skip
    got = place(cands("pve1", "pve2", "pve3", "pve4", "pve5", "pve6", "pve7", "gone",
                      pve1={"maintenance": True}, pve7={"max_containers": 5}),
                usage, SMALL)  # fmt: skip
    assert got.node == "pve3"
    assert dict(got.skipped) == {
        "gone": "not in the cluster's resources",
        "pve1": "maintenance",
        "pve2": "offline",
        "pve4": "0.2 GiB memory free, needs 0.5 GiB",
        "pve5": "2.0 GiB free on local-lvm, needs 4.0 GiB",
        "pve6": "no storage 'local-lvm' for containers",
        "pve7": "at its cap of 5 containers",
    }
    assert got.reasons.startswith("placed on pve3: ")
    assert "; pve1 skipped: maintenance; pve2 skipped: offline;" in got.reasons


def test_nothing_fits_says_so_for_every_node() -> None:
    got = place(cands("pve1", "pve2"), {"pve1": node("pve1", maxmem=1, mem=0.9),
                                        "pve2": node("pve2", online=False)}, SMALL)  # fmt: skip
    assert got.node is None
    assert got.reasons == ("no node fits; pve1 skipped: 0.1 GiB memory free, needs 0.5 GiB; "
                           "pve2 skipped: offline")  # fmt: skip


def test_committed_memory_counts_when_it_is_more_than_the_memory_in_use() -> None:
    # pve1's guests use little now but may take 14 GiB; pve2 really uses 6
    usage = {"pve1": node("pve1", mem=1, committed=14), "pve2": node("pve2", mem=6)}
    assert place(cands("pve1", "pve2"), usage, SMALL).node == "pve2"
    big = Ask(memory=3072, disk=4)
    assert place(cands("pve1"), usage, big).skipped["pve1"] == (
        "1.0 GiB memory free, needs 3.0 GiB")  # fmt: skip


def test_a_ready_container_counts_what_it_was_given_not_what_it_uses() -> None:
    """pve1 runs a container given 4 GiB that uses 50 MiB now; pve2 runs
    nothing: the next goes to pve2, as it would have while the first was in
    flight (its reservation then counted its 4 GiB)."""
    base, used = 1 * GIB, 50 * (1 << 20)
    one = NodeUsage("pve1", True, 16 * GIB, base + used, 8, 0.05, committed_mem=4 * GIB,
                    guest_mem=used, guests=1, running=1, storages=node("x").storages)  # fmt: skip
    two = NodeUsage("pve2", True, 16 * GIB, base, 8, 0.05, storages=node("x").storages)
    assert one.mem_taken == base + 4 * GIB
    assert place(cands("pve1", "pve2"), {"pve1": one, "pve2": two}, SMALL).node == "pve2"


def test_reservations_in_flight_spread_a_burst_over_equal_nodes() -> None:
    """Twenty requests at once: each reserves on the node it gets, so equal
    nodes end within one container of each other."""
    names = ("pve1", "pve2", "pve3")
    usage = {n: node(n) for n in names}
    flight: dict[str, InFlight] = {}
    for _ in range(20):
        got = place(cands(*names), usage, SMALL, flight)
        assert got.node is not None
        was = flight.get(got.node, InFlight())
        flight[got.node] = InFlight(was.memory + 512, was.disk + 4, was.count + 1)
    counts = Counter({n: f.count for n, f in flight.items()})
    assert sum(counts.values()) == 20 and max(counts.values()) - min(counts.values()) <= 1


def test_reservations_count_against_memory_and_disk() -> None:
    usage = {"pve1": node("pve1", maxmem=4, mem=1)}
    flight = {"pve1": InFlight(memory=2600, disk=0, count=5)}
    assert place(cands("pve1"), usage, SMALL, flight).node is None
    disk = {"pve1": InFlight(memory=0, disk=97, count=1)}
    assert place(cands("pve1"), usage, SMALL, disk).skipped["pve1"].startswith("3.0 GiB free on")


def test_a_named_storage_or_the_nodes_default_is_what_must_exist() -> None:
    usage = {"pve1": node("pve1", storage="fast"), "pve2": node("pve2")}
    assert place(cands("pve1", "pve2"), usage, Ask(memory=512, disk=4, storage="fast")).node == (
        "pve1")  # fmt: skip
    marked = cands("pve1", "pve2", pve1={"default_storage": "fast"})
    assert place(marked, usage, Ask(memory=512, disk=4)).node in ("pve1", "pve2")
    assert "pve1" not in place(marked, usage, Ask(memory=512, disk=4)).skipped


def test_a_spread_group_goes_to_a_node_without_a_member() -> None:
    usage = {n: node(n) for n in ("pve1", "pve2", "pve3")}
    ask = Ask(memory=512, disk=4, spread="web")
    got = place(cands("pve1", "pve2", "pve3"), usage, ask, members={"pve1": 1, "pve2": 1})
    assert got.node == "pve3"
    assert got.skipped["pve1"] == "holds a member of spread group 'web'"


@pytest.mark.parametrize("strict", [True, False])
def test_a_spread_that_cannot_be_kept_is_refused_or_warned(strict: bool) -> None:
    usage = {n: node(n) for n in ("pve1", "pve2")}
    ask = Ask(memory=512, disk=4, spread="web")
    got = place(cands("pve1", "pve2"), usage, ask, members={"pve1": 2, "pve2": 1},
                strict_spread=strict)  # fmt: skip
    said = "every node that fits holds a member of spread group 'web': pve1 (2), pve2 (1)"
    if strict:
        assert got.node is None and said in got.reasons
    else:
        assert got.node == "pve2" and got.warning == f"{said}; placed where it has the fewest"


def test_usage_is_read_from_cluster_resources_as_pve_reports_it() -> None:
    resources: list[dict[str, Any]] = [
        {"id": "node/pve1", "type": "node", "node": "pve1", "status": "online",
         "maxmem": 16 * GIB, "mem": 2 * GIB, "maxcpu": 8, "cpu": 0.25},
        {"id": "node/pve2", "type": "node", "node": "pve2", "status": "offline"},
        {"id": "lxc/100", "type": "lxc", "node": "pve1", "status": "running", "maxmem": GIB,
         "mem": GIB // 4},
        {"id": "lxc/101", "type": "lxc", "node": "pve1", "status": "stopped",
         "maxmem": 2 * GIB},
        {"id": "lxc/900", "type": "lxc", "node": "pve1", "status": "stopped", "template": 1,
         "maxmem": 8 * GIB},
        {"id": "qemu/102", "type": "qemu", "node": "pve2", "status": "unknown"},
        {"id": "storage/pve1/local-lvm", "type": "storage", "node": "pve1",
         "storage": "local-lvm", "content": "rootdir,images", "disk": 10 * GIB,
         "maxdisk": 100 * GIB, "shared": 0, "status": "available"},
        {"id": "storage/pve1/nfs", "type": "storage", "node": "pve1", "storage": "nfs",
         "content": "rootdir", "shared": 1, "status": "unknown"},
    ]  # fmt: skip
    usage = usage_of(resources)
    one = usage["pve1"]
    assert (one.online, one.maxmem, one.mem, one.maxcpu, one.cpu) == (True, 16 * GIB, 2 * GIB,
                                                                      8, 0.25)  # fmt: skip
    assert (one.committed_mem, one.guests, one.running) == (3 * GIB, 2, 1)
    assert one.guest_mem == GIB // 4 and one.mem_taken == 2 * GIB - GIB // 4 + 3 * GIB
    assert one.storages["local-lvm"].avail == 90 * GIB and not one.storages["local-lvm"].shared
    assert one.storages["nfs"].shared and not one.storages["nfs"].active
    assert not usage["pve2"].online and usage["pve2"].guests == 1


def test_a_busy_node_comes_last_and_small_differences_do_not_decide() -> None:
    usage = {"pve1": node("pve1", mem=1, cpu=0.9), "pve2": node("pve2", mem=4, cpu=0.3)}
    assert place(cands("pve1", "pve2"), usage, SMALL).node == "pve2"  # pve1's CPUs are busy
    # 20 MiB more in use on pve1, one guest fewer: under a percent, so the guests decide
    even = {"pve1": node("pve1", mem=2.02, guests=1), "pve2": node("pve2", mem=2, guests=2)}
    assert place(cands("pve1", "pve2"), even, SMALL).node == "pve1"


def test_the_nodes_of_one_cluster_share_one_vmid_lock(box: SecretBox) -> None:
    """Two nodes of a cluster serialise vmid allocation under one Redis lock
    (their vmids are the cluster's); a standalone node has a lock of its own."""
    locks = []
    for name, host, cluster in (("a", "10.0.0.1", "lab"), ("b", "10.0.0.2", "lab"),
                                ("c", "10.0.0.3", None)):  # fmt: skip
        row = Node(name=name, host=host, port=8006, pve_node=name, auth_kind=AuthKind.TOKEN,
                   pve_user="root@pam", token_name="p", cluster=cluster)  # fmt: skip
        set_node_secret(box, row, "00000000-0000-0000-0000-000000000000")
        locks.append(connection_for(row, box).cluster_id)
    assert locks == ["lab", "lab", "10.0.0.3:8006"]

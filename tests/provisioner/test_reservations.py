"""Placement reservations in a real Redis (the one scripts/test starts)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from redis import Redis

from provisioner.placement import GIB, Ask, Candidate, InFlight, NodeUsage, StorageUsage, place
from provisioner.reservations import Reservations

pytestmark = pytest.mark.integration


@pytest.fixture
def reservations(redis: Redis) -> Iterator[Reservations]:
    key = f"test:reservations:{uuid.uuid4().hex}"
    yield Reservations(redis, key=key)
    redis.delete(key, f"{key}:lock")


def test_reservations_add_up_per_node_and_are_released(reservations: Reservations) -> None:
    reservations.reserve("a", "pve1", 512, 4)
    reservations.reserve("b", "pve1", 1024, 8)
    reservations.reserve("c", "pve2", 256, 2)
    assert reservations.in_flight() == {"pve1": InFlight(1536, 12, 2), "pve2": InFlight(256, 2, 1)}
    assert reservations.node_of("b") == "pve1" and reservations.node_of("zz") is None
    assert reservations.release("b") and not reservations.release("b")
    assert reservations.in_flight()["pve1"] == InFlight(512, 4, 1)
    reservations.reserve("a", "pve2", 512, 4)  # placed again: one reservation, the new node
    assert reservations.in_flight() == {"pve2": InFlight(768, 6, 2)}


def test_an_expired_reservation_stops_counting_and_is_removed(redis: Redis,
                                                              reservations: Reservations) -> None:  # fmt: skip
    now = [1000.0]
    timed = Reservations(redis, key=reservations.key, ttl=60, clock=lambda: now[0])
    timed.reserve("old", "pve1", 512, 4)
    now[0] += 30
    timed.reserve("new", "pve1", 512, 4)
    assert timed.in_flight()["pve1"].count == 2
    now[0] += 45
    assert timed.in_flight()["pve1"].count == 1
    assert redis.hkeys(reservations.key) == [b"new"]
    redis.hset(reservations.key, "bad", "not json")
    assert timed.in_flight()["pve1"].count == 1 and not redis.hexists(reservations.key, "bad")


def test_concurrent_placements_under_the_lock_spread_over_equal_nodes(
        reservations: Reservations) -> None:  # fmt: skip
    """Twenty threads place at once: choosing and reserving under the lock,
    three equal nodes end within one container of each other."""
    store = StorageUsage("local-lvm", frozenset({"rootdir"}), total=100 * GIB, used=0)
    usage = {n: NodeUsage(n, True, 16 * GIB, GIB, 8, 0.1, storages={"local-lvm": store})
             for n in ("pve1", "pve2", "pve3")}  # fmt: skip
    nodes = [Candidate(n, n) for n in usage]
    chosen: list[str] = []

    def one(i: int) -> None:
        with reservations.placing():
            got = place(nodes, usage, Ask(memory=512, disk=4), reservations.in_flight())
            assert got.node is not None
            reservations.reserve(f"ct-{i}", got.node, 512, 4)
        chosen.append(got.node)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    counts = Counter(chosen)
    assert len(chosen) == 20 and max(counts.values()) - min(counts.values()) <= 1
    assert sum(f.count for f in reservations.in_flight().values()) == 20


def test_reservations_whose_container_exists_can_be_left_out(reservations: Reservations) -> None:
    reservations.reserve("made", "pve1", 512, 4)
    reservations.reserve("pending", "pve1", 256, 2)
    assert reservations.in_flight(lambda ids: {i for i in ids if i == "made"}) == {
        "pve1": InFlight(256, 2, 1)}  # fmt: skip
    assert reservations.in_flight()["pve1"].count == 2  # still held until ready or error

"""What requests placed on a node and not yet ready or failed hold of it
(memory, disk, one container), kept in Redis so that every web process and
worker sees the same: twenty requests at once spread instead of all
choosing the node that looked freest.

A reservation is made at placement, under one Redis lock per key so that
choosing and reserving is one step, and released when the run ends (ready
or error).  One that outlives ``RESERVATION_TTL`` (a run that never ended,
its worker gone and the run not recovered) stops counting by itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from redis import Redis

from provisioner.placement import InFlight

KEY = "provisioner:placement:reservations"  # hash: container id -> JSON
RESERVATION_TTL = 3600.0  # seconds
LOCK_TIMEOUT = 30.0


class Reservations:
    """The reservations in one Redis hash."""

    def __init__(self, redis: Redis, key: str = KEY, ttl: float = RESERVATION_TTL,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.redis = redis
        self.key = key
        self.ttl = ttl
        self.clock = clock

    @contextmanager
    def placing(self) -> Iterator[None]:
        """Hold the placement lock: read, choose and reserve as one step."""
        with self.redis.lock(f"{self.key}:lock", timeout=LOCK_TIMEOUT,
                             blocking_timeout=LOCK_TIMEOUT):  # fmt: skip
            yield

    def reserve(self, container_id: str, node: str, memory: int, disk: int) -> None:
        """Hold ``memory`` MiB and ``disk`` GiB of ``node`` for a container."""
        entry = {"node": node, "memory": memory, "disk": disk, "until": self.clock() + self.ttl}
        self.redis.hset(self.key, container_id, json.dumps(entry))

    def release(self, container_id: str) -> bool:
        """End a container's reservation; False if it had none."""
        return bool(self.redis.hdel(self.key, container_id))

    def node_of(self, container_id: str) -> str | None:
        raw = self.redis.hget(self.key, container_id)
        return None if raw is None else str(json.loads(raw)["node"])

    def in_flight(
        self, exclude: Callable[[set[str]], set[str]] | None = None
    ) -> dict[str, InFlight]:
        """What each node has reserved now; expired entries are removed.
        ``exclude`` names, among the reserved container ids, those that no
        longer count (their CT exists: the cluster counts it itself)."""
        now = self.clock()
        out: dict[str, InFlight] = {}
        expired = []
        entries = {(c.decode() if isinstance(c, bytes) else str(c)): raw
                   for c, raw in self.redis.hgetall(self.key).items()}  # fmt: skip
        skip = exclude(set(entries)) if exclude is not None and entries else set()
        for cid, raw in entries.items():
            if cid in skip:
                continue
            try:
                entry = json.loads(raw)
                node, memory, disk = str(entry["node"]), int(entry["memory"]), int(entry["disk"])
                alive = float(entry["until"]) > now
            except (ValueError, KeyError, TypeError):
                alive = False
            if not alive:
                expired.append(cid)
                continue
            was = out.get(node, InFlight())
            out[node] = InFlight(was.memory + memory, was.disk + disk, was.count + 1)
        if expired:
            self.redis.hdel(self.key, *expired)
        return out

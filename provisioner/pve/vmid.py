"""vmid allocation: ``/cluster/nextid`` plus create, atomic across workers.

``/cluster/nextid`` reserves nothing, so two workers asking at once get the
same id and one create fails with "CT N already exists".  We serialise
nextid + create with a Redis lock per PVE cluster (workers on many hosts
share it), and still retry with a fresh nextid on "already exists", which
covers clients that do not take our lock (the GUI, other tools).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from redis.exceptions import LockError, RedisError
from redis.lock import Lock

from provisioner.errors import PvePermanentError, PveTransientError, TransientError
from provisioner.pve.types import PveCalls

if TYPE_CHECKING:
    from redis import Redis


log = logging.getLogger(__name__)
T = TypeVar("T")
# how often a waiting allocator retries the lock: short enough to hand it
# on quickly, long enough that dozens of waiters do not flood Redis
LOCK_POLL = 0.05


@dataclass(frozen=True)
class VmidAllocation(Generic[T]):
    """The vmid that was used, what ``create`` returned (a UPID), the number
    of tries (1 unless something outside the lock took an id) and how long
    the lock took to get."""

    vmid: int
    result: T
    attempts: int
    lock_wait: float


def lock_key(client: PveCalls, key_prefix: str = "provisioner") -> str:
    """The Redis key of a cluster's allocation lock."""
    return f"{key_prefix}:pve:{client.connection.cluster_id}:vmid-lock"


def is_already_exists(exc: PvePermanentError) -> bool:
    return "already exists" in (exc.pve_message or exc.message)


def allocate_vmid(client: PveCalls, redis: Redis, requested: int | None,
                  create: Callable[[int], T], *, key_prefix: str = "provisioner",
                  lock_timeout: float = 120.0, wait_timeout: float = 120.0,
                  attempts: int = 5) -> VmidAllocation[T]:  # fmt: skip
    """Choose a vmid and call ``create(vmid)`` while holding the cluster's lock.

    A ``requested`` vmid is used as is (under the lock too, so a concurrent
    nextid cannot hand it out in between); otherwise ``/cluster/nextid`` is
    asked and, should create fail with "already exists", asked again.
    ``create`` must POST the container (PVE writes its config before it
    answers), so once the lock is released nextid no longer offers that id.

    Args:
        client: the PVE client.
        redis: the Redis all allocating workers share.
        requested: the user's vmid, or None for the next free one.
        create: creates the container with the given vmid; returns e.g. its UPID.
        key_prefix: namespace of the lock key.
        lock_timeout: seconds after which a holder that died loses the lock.
        wait_timeout: seconds to wait for the lock.
        attempts: nextid tries before giving up.

    Raises:
        PvePermanentError: the requested vmid exists, or create failed so.
        PveTransientError: no free vmid after ``attempts`` tries.
        TransientError: Redis unreachable, or the lock not obtained in time.
    """
    key = lock_key(client, key_prefix)
    lock = Lock(redis, key, timeout=lock_timeout, sleep=LOCK_POLL, blocking_timeout=wait_timeout)
    asked = time.monotonic()
    try:
        acquired = lock.acquire()
    except RedisError as exc:
        raise TransientError(f"vmid allocation lock {key}: Redis unavailable ({exc})") from None
    if not acquired:
        raise TransientError(f"vmid allocation lock {key} still busy after {wait_timeout:g}s",
                             hint="another worker holds it; retry later")  # fmt: skip
    lock_wait = time.monotonic() - asked
    try:
        for attempt in range(1, attempts + 1):
            vmid = requested if requested is not None else client.next_vmid()
            try:
                return VmidAllocation(vmid, create(vmid), attempt, lock_wait)
            except PvePermanentError as exc:
                if requested is not None or not is_already_exists(exc):
                    raise
                log.warning("CT %s was taken outside the allocation lock; asking nextid again",
                            vmid)  # fmt: skip
        raise PveTransientError(f"no free vmid on node {client.node} after {attempts} tries: "
                                "something keeps taking the ids nextid offers")  # fmt: skip
    finally:
        try:
            lock.release()
        except LockError:
            log.warning("vmid allocation lock %s expired before it was released "
                        "(create took over %gs)", key, lock_timeout)  # fmt: skip
        except RedisError as exc:
            log.warning("releasing vmid allocation lock %s failed: %s", key, exc)

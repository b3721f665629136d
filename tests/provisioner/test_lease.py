"""The run lease on SQLite and PostgreSQL, from threads and processes."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session, sessionmaker

from provisioner import lease
from provisioner.models import Lease
from tests.provisioner.conftest import make_container


def test_one_holder_at_a_time_and_takeover_after_expiry(factory: sessionmaker[Session]) -> None:
    cid = make_container(factory)
    assert lease.acquire(factory, cid, "worker-a", 0.5)
    assert lease.acquire(factory, cid, "worker-a", 0.5)  # re-entrant for its holder
    assert not lease.acquire(factory, cid, "worker-b", 0.5)
    assert lease.renew(factory, cid, "worker-a", 0.5)
    assert not lease.renew(factory, cid, "worker-b", 0.5)
    time.sleep(0.6)  # worker-a died: the lease runs out
    assert lease.acquire(factory, cid, "worker-b", 30)
    assert not lease.renew(factory, cid, "worker-a", 30)
    lease.release(factory, cid, "worker-a")  # not ours: nothing happens
    with factory() as session:
        assert session.get(Lease, cid).holder == "worker-b"  # type: ignore[union-attr]
    lease.release(factory, cid, "worker-b")
    assert lease.acquire(factory, cid, "worker-c", 30)


def test_keeper_renews_and_notices_a_lost_lease(factory: sessionmaker[Session]) -> None:
    cid = make_container(factory)
    assert lease.acquire(factory, cid, "me", 0.4)
    with lease.LeaseKeeper(factory, cid, "me", duration=0.4, interval=0.1) as keeper:
        time.sleep(0.8)
        assert not keeper.lost.is_set()
        assert not lease.acquire(factory, cid, "other", 0.4)  # still ours
        with factory() as session:  # someone steals it (e.g. an operator)
            session.get(Lease, cid).holder = "thief"  # type: ignore[union-attr]
            session.commit()
        assert keeper.lost.wait(2)


def test_holder_names_are_unique() -> None:
    assert lease.make_holder() != lease.make_holder()

"""The run lease on SQLite and PostgreSQL, from threads and processes."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from provisioner import lease
from provisioner.models import Lease, utcnow
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


def test_take_over_a_dead_holder_says_who_and_when(factory: sessionmaker[Session]) -> None:
    cid = make_container(factory)
    assert lease.take_over(factory, cid, "me", 10) is None  # nobody holds it: nothing to hand on
    horse = f"{lease.process_prefix(4242)}abcd1234"
    assert lease.acquire(factory, cid, horse, 10)
    assert lease.take_over(factory, cid, "me", 10) is None  # alive and not expired
    assert lease.take_over(factory, cid, "me", 10, dead_prefix=lease.process_prefix(4243)) is None
    before = utcnow()
    gone = lease.take_over(factory, cid, "me", 10, dead_prefix=lease.process_prefix(4242))
    assert gone is not None and gone.holder == horse
    assert before - timedelta(seconds=2) <= gone.last_renewed <= before  # it renewed just now
    assert not lease.renew(factory, cid, horse, 10)  # the dead run could not go on
    assert lease.renew(factory, cid, "me", 10)
    assert lease.acquire(factory, cid, "short", 0.2) is False
    lease.release(factory, cid, "me")
    assert lease.acquire(factory, cid, "short", 0.2)
    time.sleep(0.3)  # expired: anyone may take it over
    assert lease.take_over(factory, cid, "me", 10) is not None

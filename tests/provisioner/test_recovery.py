"""Recovery of runs whose worker died, against a real Redis and database."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from provisioner import lease
from provisioner.config import Settings
from provisioner.events import EventReader
from provisioner.models import Container, Lifecycle, utcnow
from provisioner.queue import enqueue
from provisioner.recovery import hand_over, recover_stalled, recovering_message
from tests.provisioner.conftest import make_container


@pytest.fixture()
def settings(tmp_path: Path, redis: Redis) -> Iterator[Settings]:
    s = Settings.from_env(environ={"PROVISIONER_DATA_DIR": str(tmp_path),
                                   "PROVISIONER_QUEUE_NAME": f"recovery-{uuid.uuid4().hex[:8]}",
                                   "PROVISIONER_LEASE_DURATION": "5",
                                   "PROVISIONER_LEASE_RENEW_INTERVAL": "1"})  # fmt: skip
    yield s
    Queue(s.queue_name, connection=redis).empty()


def make(factory: sessionmaker[Session], lifecycle: Lifecycle, quiet_for: float) -> str:
    """A container whose row was last touched ``quiet_for`` seconds ago."""
    cid = make_container(factory, lifecycle)
    with factory() as session:
        session.execute(update(Container).where(Container.id == cid)
                        .values(updated_at=utcnow() - timedelta(seconds=quiet_for)))  # fmt: skip
        session.commit()
    return cid


def test_only_runs_without_a_live_worker_are_enqueued_again(
    factory: sessionmaker[Session], redis: Redis, settings: Settings
) -> None:
    dead = make(factory, Lifecycle.CREATING, quiet_for=60)  # its worker was killed
    alive = make(factory, Lifecycle.CREATING, quiet_for=60)
    assert lease.acquire(factory, alive, "a-live-worker", 60)
    expired = make(factory, Lifecycle.DESTROYING, quiet_for=60)
    assert lease.acquire(factory, expired, "gone", 0.001)
    waiting = make(factory, Lifecycle.PENDING, quiet_for=60)  # still in the backlog
    enqueue(redis, settings, waiting)
    lost = make(factory, Lifecycle.PENDING, quiet_for=60)  # its job never made it
    fresh = make(factory, Lifecycle.CREATING, quiet_for=0)  # just started
    done = make(factory, Lifecycle.READY, quiet_for=60)
    recovered = recover_stalled(factory, redis, settings)
    assert sorted(recovered) == sorted([dead, expired, lost])
    assert alive not in recovered and waiting not in recovered
    assert fresh not in recovered and done not in recovered
    queue = Queue(settings.queue_name, connection=redis)
    actions = {(j.args[0], j.args[1]) for j in queue.get_jobs() if j.args[0] != waiting}
    assert actions == {(dead, "provision"), (expired, "destroy"), (lost, "provision")}
    # another worker looking at the same moment enqueues nothing twice
    assert recover_stalled(factory, redis, settings) == []


def test_handing_on_says_so_on_the_stream(factory: sessionmaker[Session], redis: Redis,
                                          settings: Settings) -> None:  # fmt: skip
    """A run whose work horse died: its lease is taken at once (no expiry
    wait), a ``recovering`` event says what happened, the run is queued again."""
    cid = make(factory, Lifecycle.CREATING, quiet_for=0)
    with factory() as session:
        session.execute(update(Container).where(Container.id == cid)
                        .values(current_phase="scripts", attempts=1))  # fmt: skip
        session.commit()
    horse = f"{lease.process_prefix(31337)}feedbeef"
    assert lease.acquire(factory, cid, horse, 60)
    assert not hand_over(factory, redis, settings, cid, "provision", what="x")  # alive
    assert hand_over(factory, redis, settings, cid, "provision", resuming="resuming it",
                     what="the worker process running this (pid 31337) was killed (signal 9)",
                     dead_prefix=lease.process_prefix(31337))  # fmt: skip
    events = list(EventReader(redis, factory, cid).events(0, follow=False))
    assert [(e.type, e.phase) for e in events] == [("recovering", "scripts")]
    assert re.fullmatch(
        r"the worker process running this \(pid 31337\) was killed \(signal 9\) "
        r"at \d\d:\d\d:\d\d UTC; resuming it \(attempt 2\)",
        events[0].message,
    )
    queue = Queue(settings.queue_name, connection=redis)
    assert [(j.args[0], j.args[1]) for j in queue.get_jobs()] == [(cid, "provision")]
    assert not lease.held(factory, cid)  # given back for the next run to take


def test_recovering_message() -> None:
    at = datetime(2026, 12, 6, 12, 3, 4, tzinfo=UTC)
    assert recovering_message("the worker running this stopped responding", at,
                              "resuming on another worker", "provision", 2) == (
        "the worker running this stopped responding at 12:03:04 UTC; resuming on another "
        "worker (attempt 2)")  # fmt: skip
    assert recovering_message("x", at, "resuming it", "destroy", None).endswith("(the destroy)")

"""A provisioning run survives a Redis Sentinel failover: a real worker, the
simulator, the websocket relay, and a Sentinel group of the test's own
(a master, a replica, three sentinels; REDIS_URL is redis+sentinel://).

Mid-run the replica stops receiving (so the new master lacks the newest
stream entries, as asynchronous replication may leave it), the master is
killed with SIGKILL and a sentinel promotes the replica.  The run ends
ready with one PVE container; its events' seqs are contiguous; the new
master's stream equals the database; the run said once that Redis failed
over; a websocket that followed the run got every event once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from redis import Redis

from provisioner.events import EventReader, stream_key, stream_seq
from provisioner.models import Lifecycle
from provisioner.redis_url import redis_client
from tests.pipeline.conftest import Stack, admin_token, build_stack
from tests.pipeline.test_redis_outage import Follower, db_events, in_phase, stream_events
from tests.pipeline.test_resilience import assert_event_stream, pve_containers
from tests.redis_sentinel import SentinelGroup, start_sentinel_group
from tests.web.conftest import serve
from web.app import create_app

pytestmark = [pytest.mark.integration]
TEMPLATES = Path(__file__).parent / "templates"


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    group = start_sentinel_group(tmp_path_factory.mktemp("sentinel"))
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture(scope="module")
def failover_stack(sim: dict[str, Any], group: SentinelGroup,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # fmt: skip
    stack = build_stack(sim, group.url, tmp_path_factory.mktemp("failover"), [TEMPLATES])
    made: list[str] = []
    stack.made = made  # type: ignore[attr-defined]
    stack.start_workers(1)
    try:
        yield stack
    finally:
        stack.destroy_in_pve(made)
        stack.redis.close()


@pytest.fixture(scope="module")
def app(failover_stack: Stack) -> Iterator[Flask]:
    app = create_app(failover_stack.settings, {"TESTING": True})
    yield app
    app.extensions["provisioner"].close()


@pytest.mark.timeout(240)
def test_a_run_survives_a_master_killed_mid_run(failover_stack: Stack, group: SentinelGroup,
                                                app: Flask) -> None:  # fmt: skip
    stack = failover_stack
    hostname = f"failover-{uuid.uuid4().hex[:6]}"
    token = admin_token(stack.factory)
    cid = stack.submit("lines", hostname, variables={"count": 6000, "pause_ms": 200})
    stack.made.append(cid)  # type: ignore[attr-defined]
    with serve(app) as server:
        follower = Follower(f"{server.ws}/ws/containers/{cid}/events", token)
        follower.start()
        deadline = time.monotonic() + 120
        while not in_phase("scripts", 200)(db_events(stack, cid)):
            assert time.monotonic() < deadline, stack.worker_logs()[-3000:]
            time.sleep(0.05)
        old = group.master_port()
        (replica,) = group.cut_replication()
        try:
            time.sleep(0.5)  # lines the old master takes and the replica never gets
            with Redis(port=old) as master:
                old_last = stream_seq(master.xrevrange(stream_key(cid), count=1)[0][0])
            killed_at = time.monotonic()
            assert group.kill_master() == old
        finally:
            group.resume_replicas()
        with Redis(port=replica) as lagging:  # not promoted yet (that takes a second)
            top = lagging.xrevrange(stream_key(cid), count=1)
            assert stream_seq(top[0][0]) < old_last  # it lacks the newest events
        new = group.wait_failover(old)
        failed_over_in = time.monotonic() - killed_at
        ct = stack.wait(cid, timeout=180)
        follower.join(120)
    assert ct.lifecycle == Lifecycle.READY, (ct.error_message, stack.worker_logs()[-3000:])

    # exactly one PVE container for this request
    mine = [c for c in pve_containers(stack) if c.get("name") == hostname]
    assert [int(c["vmid"]) for c in mine] == [ct.vmid], mine

    with redis_client(group.url, socket_timeout=5) as redis:
        events = list(EventReader(redis, stack.factory, cid).events(0, follow=False))
        assert_event_stream(stack, cid, events)
        stored = db_events(stack, cid)
        deadline = time.monotonic() + 30  # the stream catches up once the new master answers
        while stream_events(redis, cid) != stored and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stream_events(redis, cid) == stored  # same seqs, same content, on the new master
    said = [(e.type, e.message) for e in events if e.message.startswith("Redis failed over")]
    assert said == [("warning", f"Redis failed over (new master 127.0.0.1:{new}, was "
                                f"127.0.0.1:{old}); continuing")], said  # fmt: skip
    assert [e["seq"] for e in follower.events] == list(range(1, len(stored) + 1))
    assert follower.events == stored
    assert follower.closed_after_terminal, (follower.errors, follower.events[-3:])
    print(
        f"\nmaster killed in scripts: failed over in {failed_over_in:.1f} s, "
        f"{follower.connections} websocket connection(s)"
    )

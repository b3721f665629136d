"""Every kind of Redis client through a ``redis+sentinel://`` REDIS_URL, on
a real Sentinel group (a master, a replica, three sentinels): the queue and
a worker, the event stream and its readers, pub/sub; and the same clients
after the master is killed (kill -9) and a sentinel promoted the replica,
which had not received the newest events (its replication was paused)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from rq import Queue, SimpleWorker
from sqlalchemy.orm import Session, sessionmaker

from provisioner import db
from provisioner.events import Event, EventPublisher, EventReader, channel, stream_key
from provisioner.redis_url import master_address, redis_client
from provisioner.worker import ProvisioningWorker
from tests.conftest import ROOT
from tests.provisioner.conftest import make_container
from tests.redis_sentinel import SentinelGroup, start_sentinel_group


class QuickWorker(SimpleWorker):
    """RQ's worker in this process, whose command listener stops at once
    (as ``provisioner worker``'s: RQ's own may wait a minute)."""

    subscribe = ProvisioningWorker.subscribe


def shout(text: str) -> str:
    """The job the worker runs."""
    return text.upper()


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = start_sentinel_group(tmp_path / "sentinel")
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path}/provisioner.db"
    db.upgrade(url)
    engine = db.make_engine(url)
    yield db.session_factory(engine)
    engine.dispose()


def run_client(url: str) -> Redis:
    """As a run makes it (pipeline.job.run_redis): short timeouts, no retries."""
    return redis_client(url, socket_timeout=1.5, socket_connect_timeout=1.5,
                        retry=Retry(NoBackoff(), 0), health_check_interval=10)  # fmt: skip


def stream_seqs(redis: Redis, cid: str) -> list[int]:
    return [json.loads(f[b"e"])["seq"] for _, f in redis.xrange(stream_key(cid))]


@pytest.mark.timeout(60)
def test_queue_worker_stream_and_pubsub_through_sentinel(
    group: SentinelGroup, factory: sessionmaker[Session]
) -> None:
    client = redis_client(group.url, socket_timeout=5, socket_connect_timeout=5)
    try:
        assert client.ping()
        assert master_address(client) == ("127.0.0.1", group.master_port())

        queue = Queue(f"sentinel-{uuid.uuid4().hex[:6]}", connection=client)
        job = queue.enqueue(shout, "through sentinel")
        assert QuickWorker([queue], connection=client).work(burst=True)
        job.refresh()
        assert job.return_value() == "THROUGH SENTINEL"
        queue.enqueue(shout, "waiting")
        info = subprocess.run(
            [str(ROOT / ".venv/bin/rq"), "info", "--raw", "--only-queues", "-c",
             "provisioner.rq_config", queue.name],
            env={**os.environ, "REDIS_URL": group.url, "PROVISIONER_CONFIG": ""},
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert info.returncode == 0, info.stderr
        assert f"queue {queue.name} 1, 0 executing, 1 finished, 0 failed" in info.stdout, (
            info.stdout
        )

        cid = make_container(factory)
        subscriber = client.pubsub()
        subscriber.subscribe(channel(cid))
        assert subscriber.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
        with run_client(group.url) as run, EventPublisher(run, factory, cid) as events:
            events.publish("step", "one", phase="create", percent=1)
            events.publish("complete", "done", outcome="ready")
        got = [m for m in iter(lambda: subscriber.get_message(timeout=2), None)]
        assert [json.loads(m["data"])["seq"] for m in got] == [1, 2]
        subscriber.close()
        read = list(EventReader(client, factory, cid).events(0, follow=False))
        assert [(e.seq, e.type) for e in read] == [(1, "step"), (2, "complete")]
        assert stream_seqs(client, cid) == [1, 2]
    finally:
        client.close()


class Subscriber(threading.Thread):
    """Listens on a channel the way the workers' command listener does:
    after a connection error, again (redis-py subscribes anew)."""

    def __init__(self, client: Redis, name: str) -> None:
        super().__init__(daemon=True)
        self.pubsub = client.pubsub()
        self.pubsub.subscribe(name)
        self.messages: list[bytes] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            except RedisError:
                self.errors += 1
                time.sleep(0.2)
                continue
            if message is not None:
                self.messages.append(message["data"])


@pytest.mark.timeout(90)
def test_clients_follow_a_failover_and_the_stream_is_repaired(
    group: SentinelGroup, factory: sessionmaker[Session]
) -> None:
    cid = make_container(factory)
    web = redis_client(group.url, socket_timeout=5, socket_connect_timeout=5)  # as web/app.py's
    run = run_client(group.url)
    subscriber = Subscriber(redis_client(group.url, socket_timeout=5), "sentinel-test")
    subscriber.start()
    followed: list[Event] = []
    reader = threading.Thread(
        target=lambda: followed.extend(EventReader(web, factory, cid).events(0, block_ms=500)),
        daemon=True,
    )
    reader.start()
    try:
        publisher = EventPublisher(run, factory, cid, redis_grace=30)
        for i in range(20):
            publisher.publish("log", f"before {i}", stream="stdout")
        publisher.flush()
        old = group.master_port()
        deadline = time.monotonic() + 10
        while len(stream_seqs(web, cid)) < 20 or _replica_offset(group, old) < _offset(old):  # fmt: skip
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.05)

        # the replica stops taking writes: what comes now only the old master has
        (replica,) = group.cut_replication()
        try:
            for i in range(10):
                publisher.publish("step", f"tail {i}", phase="create")
            with Redis(port=old) as direct:
                assert stream_seqs(direct, cid)[-1] == 30
            assert group.kill_master() == old
        finally:
            group.resume_replicas()
        with Redis(port=replica) as lagging:  # not promoted yet (that takes a second)
            assert stream_seqs(lagging, cid)[-1] == 20
        for i in range(10):  # during the failover: they wait in the outbox
            publisher.publish("log", f"during {i}", stream="stdout")
            time.sleep(0.1)
        new = group.wait_failover(old)
        assert new == replica
        publisher.publish("step", "after", phase="start")
        deadline = time.monotonic() + 20  # the outbox's retries reach the new master
        while publisher.redis_down:
            assert time.monotonic() < deadline, "the events were not delivered after the failover"
            time.sleep(0.1)
        publisher.publish("complete", "done", outcome="ready")
        publisher.close()

        stored = list(EventReader(web, factory, cid).events(0, follow=False))
        assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
        failovers = [e for e in stored if e.message.startswith("Redis failed over")]
        assert [(e.type, e.message) for e in failovers] == [
            ("warning", f"Redis failed over (new master 127.0.0.1:{new}, was 127.0.0.1:{old}); "
                        "continuing")]  # fmt: skip
        assert stored[-1].type == "complete"
        # the new master lacked seqs 21..30: the delivery added them again from the database
        assert stream_seqs(web, cid) == [e.seq for e in stored]
        reader.join(30)
        assert not reader.is_alive()
        assert followed == stored  # every event once, in order, through the failover

        web.publish("sentinel-test", "after the failover")
        deadline = time.monotonic() + 15
        while b"after the failover" not in subscriber.messages:
            assert time.monotonic() < deadline, "the subscriber did not reconnect"
            time.sleep(0.1)
            web.publish("sentinel-test", "after the failover")
        assert master_address(web) == ("127.0.0.1", new)
    finally:
        subscriber.stop.set()
        subscriber.join(5)
        subscriber.pubsub.close()
        web.close()
        run.close()


def _offset(port: int) -> int:
    with Redis(port=port, socket_timeout=1) as r:
        info: dict[str, Any] = r.info("replication")
    return int(info["master_repl_offset"])


def _replica_offset(group: SentinelGroup, master: int) -> int:
    replica = next(p for p in group.servers if p != master)
    with Redis(port=replica, socket_timeout=1) as r:
        info: dict[str, Any] = r.info("replication")
    return int(info.get("slave_repl_offset", 0))

"""Delivering events to a Redis stream through a Redis that stalls, breaks
or restarts empty (a real Redis; the failures are made by the client)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.orm import Session, sessionmaker

from provisioner import stream_delivery
from provisioner.events import Event, EventPublisher, channel, stored_events, stream_key
from provisioner.recovery import repair_streams
from provisioner.stream_delivery import StreamDelivery, deliver
from tests.provisioner.conftest import make_container


def events(cid: str, first: int, last: int, terminal: bool = False) -> list[Event]:
    return [Event(seq=s, container=cid, type="complete" if terminal and s == last else "log",
                  message=f"line {s}") for s in range(first, last + 1)]  # fmt: skip


def in_stream(redis: Redis, cid: str) -> list[int]:
    return [json.loads(f[b"e"])["seq"] for _, f in redis.xrange(stream_key(cid))]


@pytest.fixture()
def cid(factory: sessionmaker[Session], redis: Redis) -> Iterator[str]:
    cid = make_container(factory)
    yield cid
    redis.delete(stream_key(cid))


def test_a_retried_delivery_adds_nothing_twice(redis: Redis, cid: str) -> None:
    """A delivery whose first try timed out may still run once Redis wakes
    up: run twice, in either order, each event is in the stream once."""
    pubsub = redis.pubsub()
    pubsub.subscribe(channel(cid))
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    batch = events(cid, 1, 5)
    assert deliver(redis, stream_key(cid), channel(cid), batch, lambda a, b: []) == 5
    assert deliver(redis, stream_key(cid), channel(cid), batch, lambda a, b: []) == 5
    assert deliver(redis, stream_key(cid), channel(cid), batch[:3], lambda a, b: []) == 5
    assert in_stream(redis, cid) == [1, 2, 3, 4, 5]
    published = []
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        published.append(json.loads(message["data"])["seq"])
    assert published == [1, 2, 3, 4, 5]  # the channel too: once each
    pubsub.close()


def test_a_gap_is_filled_from_the_source_first(redis: Redis, cid: str) -> None:
    """A stream that lost events (Redis restarted empty) gets them back
    before the new ones, in order; a finished one expires, a running one not."""
    stored = events(cid, 1, 9)
    deliver(redis, stream_key(cid), channel(cid), stored[:3], lambda a, b: [])
    redis.delete(stream_key(cid))  # the restart
    asked = []

    def source(after: int, upto: int) -> list[Event]:
        asked.append((after, upto))
        return [e for e in stored if after < e.seq < upto]

    deliver(redis, stream_key(cid), channel(cid), stored[6:], source)
    assert asked == [(0, 7)] and in_stream(redis, cid) == list(range(1, 10))
    assert redis.ttl(stream_key(cid)) == -1
    deliver(redis, stream_key(cid), channel(cid), events(cid, 10, 10, terminal=True), source)
    assert 0 < redis.ttl(stream_key(cid)) <= stream_delivery.STREAM_TTL


def test_what_the_source_lacks_is_skipped_not_waited_for(redis: Redis, cid: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    deliver(redis, stream_key(cid), channel(cid), events(cid, 5, 6), lambda a, b: [])
    assert in_stream(redis, cid) == [5, 6]  # 1-4 exist nowhere: the stream starts at 5
    monkeypatch.setattr(stream_delivery, "REFILL_MAX", 3)
    stored = events(cid, 7, 20)
    redis.delete(stream_key(cid))
    deliver(redis, stream_key(cid), channel(cid), stored[-1:],
            lambda a, b: [e for e in stored if a < e.seq < b])  # fmt: skip
    assert in_stream(redis, cid) == [17, 18, 19, 20]  # at most REFILL_MAX copied back


class FlakyRedis:
    """A Redis client whose scripts fail while ``down`` is set."""

    def __init__(self, redis: Redis) -> None:
        self.redis, self.down = redis, True

    def register_script(self, text: str) -> Any:
        script = self.redis.register_script(text)

        def call(**kwargs: Any) -> Any:
            if self.down:
                raise RedisConnectionError("Error 111 connecting: Connection refused.")
            return script(**kwargs)

        return call

    def __getattr__(self, name: str) -> Any:
        return getattr(self.redis, name)


def test_events_wait_while_redis_is_away(redis: Redis, cid: str) -> None:
    flaky = FlakyRedis(redis)
    delivery = StreamDelivery(flaky, stream_key(cid), channel(cid),  # type: ignore[arg-type]
                              lambda a, b: [])  # fmt: skip
    started = time.monotonic()
    for event in events(cid, 1, 50):
        delivery.send(event)  # never raises, never blocks for long
    assert time.monotonic() - started < 1
    assert delivery.undelivered == 50 and delivery.down_since is not None
    assert in_stream(redis, cid) == []
    flaky.down = False
    deadline = time.monotonic() + 10
    while delivery.undelivered and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_stream(redis, cid) == list(range(1, 51)) and delivery.down_since is None
    assert delivery.close(1)


def test_a_run_that_ended_while_redis_was_away_is_repaired(
        redis: Redis, factory: sessionmaker[Session], cid: str) -> None:  # fmt: skip
    """The publisher's close gave up on Redis: the database has the events,
    a worker's repair pass adds them to the stream."""
    publisher = EventPublisher(redis, factory, cid, redis_grace=0.2)
    publisher.publish("step", "one", phase="create", percent=1)
    flaky = FlakyRedis(redis)
    publisher._stream.redis = flaky  # type: ignore[assignment]
    publisher.publish("log", "two", phase="create")
    publisher.publish("complete", "done", phase="finalize", percent=100)
    publisher.close()
    assert in_stream(redis, cid) == [1]
    assert [e.seq for e in stored_events(factory, cid, 0)] == [1, 2, 3]
    assert repair_streams(factory, redis).get(cid) == 2
    assert in_stream(redis, cid) == [1, 2, 3]
    assert repair_streams(factory, redis).get(cid) is None  # nothing left to do

"""The relay's shared tail of a container's stream: read once, framed once,
kept for a window; streams behind the window are told so (they read on
their own), and a tail nobody uses stops.  Real Redis, real publisher."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from provisioner import db
from provisioner.events import EventPublisher, stream_key
from tests.provisioner.conftest import make_container
from web.frames import text_frames
from web.tail import Behind, Chunk, Tail, Tails, frame_chunk

pytestmark = pytest.mark.timeout(60)


def test_a_chunk_gives_the_frames_after_any_seq() -> None:
    from provisioner.events import Raw

    payloads = [f'{{"seq":{i},"type":"log"}}'.encode() for i in range(5, 9)]
    chunk = frame_chunk([Raw(5 + i, p, False) for i, p in enumerate(payloads)])
    assert (chunk.first, chunk.last, chunk.end) == (5, 8, "")
    assert chunk.after(0) == chunk.after(4) == text_frames(payloads)
    assert chunk.after(6) == text_frames(payloads[2:])
    assert chunk.after(8) == chunk.after(20) == b""
    ended = Chunk(1, b"", (0,), "complete")
    assert ended.last == 1 and ended.end == "complete"


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def factory(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path}/tail.db"
    db.upgrade(url)
    return db.session_factory(db.make_engine(url))


@pytest.fixture
def publisher(redis: Redis, factory: sessionmaker[Session]) -> Iterator[EventPublisher]:
    pub = EventPublisher(redis, factory, make_container(factory))
    yield pub
    pub.close()
    redis.delete(stream_key(pub.container_id))


def stored(redis: Redis, cid: str, after: int = 0) -> list[bytes]:
    return [f[b"e"] for _i, f in redis.xrange(stream_key(cid), min=f"{after + 1}-0")]


def tail_threads(cid: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"tail-{cid[:8]}"]


def read_until(tail: Tail, seq: int, upto: int) -> tuple[bytes, int, str]:
    data, end = b"", ""
    deadline = time.monotonic() + 10
    while seq < upto and time.monotonic() < deadline:
        frames, seq, end = tail.read(seq, timeout=0.5)
        data += frames
    return data, seq, end


def test_streams_share_one_reader_and_get_every_event(redis: Redis,
                                                      publisher: EventPublisher) -> None:  # fmt: skip
    cid = publisher.container_id
    publisher.publish("step", "creating", phase="create", percent=1)
    tails = Tails(redis)
    joined = [tails.join(cid) for _ in range(10)]
    assert all(t is joined[0] for t in joined) and len(tail_threads(cid)) == 1
    tail = joined[0]
    assert tail.first == 2  # it starts at the end of the stream as it was
    with pytest.raises(Behind):
        tail.read(0, timeout=0)  # seq 1 is the streams' own business
    for i in range(2500):
        publisher.publish("log", f"line {i}", stream="stdout")
    publisher.publish("complete", "ready", phase="finalize", percent=100)
    data, last, end = read_until(tail, 1, 2502)
    assert (last, end) == (2502, "complete")
    assert data == text_frames(stored(redis, cid, 1))
    # a stream that had come as far as 2000 gets exactly the rest
    assert tail.read(2000, timeout=0) == (text_frames(stored(redis, cid, 2000)), 2502, "complete")
    # after the terminal event the tail stops; a stream waiting for a retry gets a new one
    deadline = time.monotonic() + 5
    while tail_threads(cid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tail.ended and not tail_threads(cid)
    with pytest.raises(Behind):
        tail.read(2502, timeout=0)
    fresh = tails.join(cid)
    assert fresh is not tail and fresh.first == 2503
    publisher.publish("step", "retrying", phase="scripts", percent=60)
    assert read_until(fresh, 2502, 2503)[1] == 2503
    for t in [*joined, fresh]:
        tails.release(cid, t)


def test_a_stream_behind_the_window_is_told_so(redis: Redis, publisher: EventPublisher) -> None:
    cid = publisher.container_id
    tail = Tail(redis, cid, 0, window=100)
    tail.users = 1
    tail.thread.start()
    for i in range(1000):
        publisher.publish("log", f"line {i}", stream="stdout")
    read_until(tail, 900, 1000)
    assert tail.held >= 100 and tail.held - len(tail.chunks[0].offsets) < 100  # the window
    assert tail.first == tail.chunks[0].first and tail.last == 1000
    with pytest.raises(Behind):
        tail.read(10, timeout=0)
    assert tail.read(950, timeout=0)[0] == text_frames(stored(redis, cid, 950))
    tail.ended = True


def test_a_tail_nobody_uses_stops(redis: Redis) -> None:
    cid = str(uuid.uuid4())  # no stream at all: an idle tail
    tails = Tails(redis)
    a, b = tails.join(cid), tails.join(cid)
    assert a is b and len(tail_threads(cid)) == 1
    assert a.read(0, timeout=0.1) == (b"", 0, "")  # nothing yet
    tails.release(cid, a)
    assert not a.ended  # one stream still follows it
    tails.release(cid, b)
    deadline = time.monotonic() + 5
    while tail_threads(cid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.ended and not tail_threads(cid)  # stopped within one read's wait


def test_a_tail_released_while_events_flow_stops(redis: Redis,
                                                 publisher: EventPublisher) -> None:  # fmt: skip
    cid = publisher.container_id
    tails = Tails(redis)
    tail = tails.join(cid)
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            publisher.publish("log", f"line {i}", stream="stdout")
            i += 1
            time.sleep(0.001)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        read_until(tail, 0, 50)
        tails.release(cid, tail)  # events keep coming: it must stop all the same
        deadline = time.monotonic() + 5
        while tail_threads(cid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tail.ended and not tail_threads(cid)
        again = tails.join(cid)
        assert again is not tail and len(tail_threads(cid)) == 1
        tails.release(cid, again)
    finally:
        stop.set()
        producer.join()


def test_a_crowded_tail_gathers_a_burst_into_one_fan_out(redis: Redis,
                                                         publisher: EventPublisher) -> None:  # fmt: skip
    """With more than LINGER_USERS streams, events that come within LINGER
    of the first one go out as one chunk (one wake-up and write per stream)."""
    from web.tail import LINGER, LINGER_USERS

    cid = publisher.container_id
    tails = Tails(redis)
    joined = [tails.join(cid) for _ in range(LINGER_USERS + 1)]
    tail = joined[0]
    for i in range(6):  # a burst, well within LINGER
        publisher.publish("log", f"line {i}", stream="stdout")
    data, last, _ = read_until(tail, 0, 6)
    assert last == 6 and data == text_frames(stored(redis, cid))
    assert [(c.first, c.last) for c in tail.chunks] == [(1, 6)]
    began = time.monotonic()
    publisher.publish("log", "alone", stream="stdout")
    read_until(tail, 6, 7)
    assert time.monotonic() - began < LINGER + 0.5  # the wait is bounded by LINGER
    for t in joined:
        tails.release(cid, t)

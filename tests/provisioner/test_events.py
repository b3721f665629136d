"""Events through a real Redis and a real database: seq, durability, and a
reader that replays then follows with no gap and no duplicate."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis
from sqlalchemy import delete, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from provisioner.db import read_only
from provisioner.events import (
    Event,
    EventPublisher,
    EventReader,
    Raw,
    channel,
    stored_events,
    stream_key,
)
from provisioner.models import Container, ContainerEvent
from tests.provisioner.conftest import make_container


def test_event_json_round_trip_and_validation() -> None:
    ev = Event(seq=3, container="c1", type="log", message="hi", phase="scripts",
               stream="stdout", script="20-app.sh")  # fmt: skip
    data = ev.as_dict()
    assert set(data) == {"seq", "container", "type", "message", "phase", "stream", "script", "ts"}
    assert data["ts"].endswith("Z") and len(data["ts"]) == 24
    assert Event.from_json(ev.to_json()) == ev
    assert Event(seq=1, container="c", type="complete").terminal
    for bad in ({"type": "nope"}, {"phase": "nope"}, {"stream": "nope"}, {"seq": 0}):
        with pytest.raises(ValueError):
            Event(**{"seq": 1, "container": "c", "type": "log", **bad})  # type: ignore[arg-type]
    assert channel("abc") == "provisioner:container:abc:events"


def test_a_terminal_event_carries_its_runs_outcome() -> None:
    done = Event(seq=9, container="c1", type="complete", message="CT 104 is ready at 10.0.0.5",
                 phase="finalize", percent=100, outcome="ready")  # fmt: skip
    assert done.as_dict()["outcome"] == "ready"
    assert Event.from_json(done.to_json()) == done
    assert '"outcome":"ready"' in done.to_json()
    # published before terminal events carried one: still read
    assert Event.from_dict({"seq": 1, "container": "c", "type": "error"}).outcome is None
    for bad in ({"outcome": "nope"}, {"type": "step", "outcome": "ready"}):
        with pytest.raises(ValueError):
            Event(**{"seq": 1, "container": "c", "type": "error", **bad})  # type: ignore[arg-type]


@pytest.fixture()
def container_id(factory: sessionmaker[Session], redis: Redis) -> Iterator[str]:
    cid = make_container(factory)
    yield cid
    redis.delete(stream_key(cid))


def db_seqs(factory: sessionmaker[Session], cid: str) -> list[int]:
    with factory() as session:
        return list(session.scalars(select(ContainerEvent.seq).where(
            ContainerEvent.container_id == cid).order_by(ContainerEvent.seq)))  # fmt: skip


def test_steps_are_durable_at_once_logs_in_batches(
    redis: Redis, factory: sessionmaker[Session], container_id: str
) -> None:
    pub = EventPublisher(redis, factory, container_id, flush_interval=60, batch_size=1000)
    try:
        pub.publish("step", "creating", phase="create", percent=5)
        assert db_seqs(factory, container_id) == [1]
        for i in range(10):
            pub.publish("log", f"line {i}", phase="create", stream="stdout")
        assert db_seqs(factory, container_id) == [1]  # batched
        assert redis.xlen(stream_key(container_id)) == 11  # but live at once
        pub.publish("warning", "slow", phase="create")
        assert db_seqs(factory, container_id) == list(range(1, 13))
    finally:
        pub.close()
    with factory() as session:
        assert session.get(Container, container_id).next_seq == 13  # type: ignore[union-attr]


def test_the_outcome_is_stored_streamed_and_read_back(
    redis: Redis, factory: sessionmaker[Session], container_id: str
) -> None:
    with EventPublisher(redis, factory, container_id) as pub:
        pub.publish("step", "scripts", phase="scripts", percent=60)
        sent = pub.publish("error", "scripts failed: exit 3", phase="scripts", outcome="error")
    with factory() as session:
        rows = session.scalars(select(ContainerEvent).where(
            ContainerEvent.container_id == container_id).order_by(ContainerEvent.seq)).all()  # fmt: skip
        assert [r.outcome for r in rows] == [None, "error"]
    entries = redis.xrange(stream_key(container_id))
    assert Event.from_json(entries[-1][1][b"e"]).outcome == "error"
    replayed = list(EventReader(redis, factory, container_id).events(0, follow=False))
    assert replayed[-1] == sent
    redis.delete(stream_key(container_id))  # from the database alone
    assert list(EventReader(redis, factory, container_id).events(0, follow=False))[-1] == sent


def test_a_nul_in_a_message_is_stored_and_streamed_as_a_replacement_character(
    redis: Redis, factory: sessionmaker[Session], container_id: str
) -> None:
    """PostgreSQL refuses NUL in text where SQLite takes it: a script that
    prints one (``printf 'a\\0b'``, ``find -print0``) once made every later
    flush of its run's events fail there."""
    pub = EventPublisher(redis, factory, container_id)
    try:
        pub.publish("log", "a\0b", phase="scripts", stream="stdout", script="10-x.sh")
        pub.publish("complete", "ready\0", phase="finalize", percent=100, outcome="ready")
    finally:
        pub.close()
    stored = stored_events(factory, container_id, 0)
    assert [e.message for e in stored] == ["a\ufffdb", "ready\ufffd"]
    assert list(EventReader(redis, factory, container_id).events(0, follow=False)) == stored


def test_a_new_publisher_continues_seq_and_recovers_unflushed_events(
    redis: Redis, factory: sessionmaker[Session], container_id: str
) -> None:
    dead = EventPublisher(redis, factory, container_id, flush_interval=3600, batch_size=10_000)
    dead.publish("step", "start", phase="start")
    for i in range(5):
        dead.publish("log", f"unflushed {i}", stream="stdout")
    dead._stop.set()  # the worker dies: nothing more is flushed
    assert db_seqs(factory, container_id) == [1]
    with EventPublisher(redis, factory, container_id) as pub:
        assert db_seqs(factory, container_id) == [1, 2, 3, 4, 5, 6]
        assert pub.publish("step", "again", phase="start").seq == 7


def test_reader_replays_then_follows_without_gap_or_duplicate(
    redis: Redis, factory: sessionmaker[Session], container_id: str
) -> None:
    lines = 5000
    pub = EventPublisher(redis, factory, container_id, flush_interval=0.05, batch_size=300)
    pub.publish("step", "scripts", phase="scripts", percent=60)
    received: list[Event] = []
    resumes = 0

    def produce() -> None:
        for i in range(lines):
            pub.publish("log", f"line {i}", phase="scripts", stream="stdout", script="20-app.sh")
        pub.publish("complete", "ready", phase="finalize", percent=100)

    producer = threading.Thread(target=produce)
    producer.start()
    reader = EventReader(redis, factory, container_id)
    after = 0
    # disconnect and resume 20 times while lines are being printed
    while True:
        stop_after = len(received) + (lines // 20)
        for event in reader.events(after, block_ms=200):
            received.append(event)
            after = event.seq
            if len(received) >= stop_after and not event.terminal:
                break
        else:
            break
        resumes += 1
        if received and received[-1].terminal:
            break
    producer.join()
    pub.close()
    assert resumes >= 19
    assert [e.seq for e in received] == list(range(1, lines + 3))
    assert [e.message for e in received[1:-1]] == [f"line {i}" for i in range(lines)]
    assert received[-1].type == "complete"
    # and a late reader gets the whole history from the database
    history = list(EventReader(redis, factory, container_id).events(0, follow=False))
    assert [e.seq for e in history] == list(range(1, lines + 3))


def test_reader_fills_a_trimmed_stream_from_the_database(
    redis: Redis, factory: sessionmaker[Session], container_id: str
) -> None:
    with EventPublisher(redis, factory, container_id) as pub:
        for i in range(50):
            pub.publish("log", f"l{i}", stream="stdout")
        pub.publish("complete", "ready")
    redis.xtrim(stream_key(container_id), maxlen=10)  # Redis lost the old ones

    class LaggingReader(EventReader):
        """Its first database replay sees only the first 20 rows."""

        first = True

        def _from_db(
            self, after: int, upto: int | None = None, page: int = 2000
        ) -> Iterator[list[Raw]]:
            if self.first:
                self.first = False
                return super()._from_db(after, upto=21, page=page)
            return super()._from_db(after, upto=upto, page=page)

    events = list(LaggingReader(redis, factory, container_id).events(0, follow=False))
    assert [e.seq for e in events] == list(range(1, 52))


def publish_run_retried(pub: EventPublisher) -> None:
    """A run that fails at seq 5, then a retry that completes at seq 10."""
    pub.publish("step", "creating", phase="create", percent=1)
    for i in range(3):
        pub.publish("log", f"a{i}", stream="stdout")
    pub.publish("error", "script failed", phase="scripts")
    pub.publish("step", "retrying", phase="scripts", percent=60)
    for i in range(3):
        pub.publish("log", f"b{i}", stream="stdout")
    pub.publish("complete", "ready", phase="finalize", percent=100)


def read(reader: EventReader, after: int) -> list[int]:
    return [e.seq for e in reader.events(after, follow=False)]


def test_replay_comes_from_redis_while_the_stream_holds_it(
    redis: Redis, factory: sessionmaker[Session], container_id: str
) -> None:
    with EventPublisher(redis, factory, container_id) as pub:
        publish_run_retried(pub)
    with factory() as session, session.begin():  # the database forgets: Redis alone answers
        session.execute(delete(ContainerEvent).where(ContainerEvent.container_id == container_id))
    reader = EventReader(redis, factory, container_id)
    assert read(reader, 0) == [1, 2, 3, 4, 5]  # ends at the first terminal event
    assert read(reader, 5) == [6, 7, 8, 9, 10]
    # the relay's batches carry the stored JSON byte for byte
    batches = list(reader.batches(0, follow=False))
    stored = [f[b"e"] for _i, f in redis.xrange(stream_key(container_id))]
    assert [raw.payload for batch in batches for raw in batch] == stored[:5]
    assert [raw.terminal for batch in batches for raw in batch] == [False] * 4 + [True]


def test_stream_entries_without_their_type_still_read() -> None:
    """Entries published before they carried ``t`` are decoded instead."""
    event = Event(seq=7, container="c", type="error", message="x")
    payload = event.to_json().encode()
    old = Raw.from_entry(b"7-0", {b"e": payload})
    assert (old.seq, old.payload, old.terminal, old.decode()) == (7, payload, True, event)
    new = Raw.from_entry(b"7-0", {b"e": payload, b"t": b"error"})
    assert (new.seq, new.payload, new.terminal, new.decode()) == (7, payload, True, event)
    assert not Raw.from_entry("8-0", {"e": payload.decode(), "t": "log"}).terminal


def test_replay_comes_from_the_database_once_the_stream_is_gone(
    redis: Redis, factory: sessionmaker[Session], container_id: str
) -> None:
    with EventPublisher(redis, factory, container_id) as pub:
        publish_run_retried(pub)
    stored = {_seq: f[b"e"] for _seq, f in redis.xrange(stream_key(container_id))}
    redis.delete(stream_key(container_id))  # expired (STREAM_TTL) or a new Redis
    reader = EventReader(redis, factory, container_id)
    assert read(reader, 0) == [1, 2, 3, 4, 5]
    assert read(reader, 5) == [6, 7, 8, 9, 10]
    assert read(reader, 10) == []
    events = [Event.from_json(p) for p in stored.values()]
    assert list(reader.events(5, follow=False)) == events[5:]  # the same events, from rows
    # small pages: a terminal event in the middle of a page still ends the replay
    pages = list(reader._from_db(0, page=3))
    assert [[raw.seq for raw in page] for page in pages] == [[1, 2, 3], [4, 5]]


def test_a_replay_holds_no_write_lock(factory: sessionmaker[Session], container_id: str) -> None:
    with factory() as reader:
        read_only(reader)
        assert reader.scalar(select(ContainerEvent.seq).limit(1)) is None  # a transaction is open
        if reader.get_bind().dialect.name == "postgresql":
            assert reader.scalar(text("SHOW transaction_read_only")) == "on"
        # meanwhile a writer commits at once (on SQLite, BEGIN IMMEDIATE would
        # otherwise wait for the reader's lock until the busy timeout)
        started = time.monotonic()
        with factory() as writer, writer.begin():
            writer.add(Event(seq=1, container=container_id, type="step", message="x").to_row())
        assert time.monotonic() - started < 2
    with factory() as session, session.begin():  # the pooled connection writes again
        session.add(Event(seq=2, container=container_id, type="step", message="y").to_row())
    assert db_seqs(factory, container_id) == [1, 2]
    if factory.kw["bind"].dialect.name == "sqlite":
        # and the option stays with that session: the next ones take the write lock up front
        path = factory.kw["bind"].url.database
        for _ in range(3):
            with factory() as session:
                session.scalar(select(ContainerEvent.seq).limit(1))
                other = sqlite3.connect(path, timeout=0, isolation_level=None)
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
                other.close()


def test_events_a_failed_flush_could_not_store_are_kept(
    redis: Redis, factory: sessionmaker[Session], container_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import provisioner.events as events

    pub = EventPublisher(redis, factory, container_id, flush_interval=60, batch_size=1000)
    try:
        for i in range(5):
            pub.publish("log", f"line {i}", stream="stdout")
        real = events.session_scope

        def unavailable(_factory: object) -> object:
            raise OperationalError("INSERT", {}, Exception("the database is away"))

        monkeypatch.setattr(events, "session_scope", unavailable)
        with pytest.raises(OperationalError):
            pub.publish("step", "scripts", phase="scripts", percent=60)  # flushes at once
        assert db_seqs(factory, container_id) == []
        monkeypatch.setattr(events, "session_scope", real)
        pub.publish("warning", "back")
        assert db_seqs(factory, container_id) == list(range(1, 8))  # nothing lost
    finally:
        pub.close()


def test_a_retry_after_a_terminal_event_keeps_its_stream(
    redis: Redis, factory: sessionmaker[Session], container_id: str
) -> None:
    with EventPublisher(redis, factory, container_id) as pub:
        pub.publish("error", "failed", phase="scripts")
    assert redis.ttl(stream_key(container_id)) > 0  # a finished run's stream expires
    with EventPublisher(redis, factory, container_id) as pub:  # the retry's worker
        assert redis.ttl(stream_key(container_id)) == -1
        pub.publish("step", "retrying", phase="scripts", percent=60)
    assert redis.ttl(stream_key(container_id)) == -1


def test_secrets_never_reach_events(
    redis: Redis, factory: sessionmaker[Session], container_id: str
) -> None:
    from provisioner.logsafe import register_secret

    secret = "Sup3rS3cretValue-" + uuid.uuid4().hex
    register_secret(secret)
    with EventPublisher(redis, factory, container_id) as pub:
        pub.publish("log", f"password is {secret}", stream="stdout")
        pub.publish("error", f"failed with PVEAPIToken=root@pam!x={secret}")
    raw = b"".join(f[b"e"] for _i, f in redis.xrange(stream_key(container_id)))
    assert secret.encode() not in raw
    with factory() as session:
        messages = " ".join(session.scalars(select(ContainerEvent.message).where(
            ContainerEvent.container_id == container_id)))  # fmt: skip
    assert secret not in messages and "[REDACTED]" in messages

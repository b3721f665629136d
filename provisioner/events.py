"""Events: the contract between worker, relay, browser and CLI.

Every event gets the container's next ``seq`` (+1 across retries and workers;
only the lease holder publishes), goes into the database (steps, warnings
and terminal events immediately, log lines in batches) and into a Redis
stream (entry id ``<seq>-0``) and onto the pub/sub channel
``provisioner:container:{id}:events`` (``provisioner.stream_delivery``: in
order, each once, held while Redis is away).  Readers replay from the stream
while it still holds what they need (it keeps the newest ``STREAM_MAXLEN``
events, and a finished container's for ``STREAM_TTL``), from the database
for what it no longer holds, then block on the stream for live events: the
stream holds every event in order, so there is no race between replay and
subscribe, no gap and no duplicate.  While Redis fails, and whenever the
stream falls idle, readers look in the database too, so a run that ended
while Redis was away still reaches its terminal event.  The relay forwards
the stored JSON as it is (``Raw``), in the batches it reads; everyone else
gets ``Event`` objects.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from provisioner.db import read_only, session_scope
from provisioner.logsafe import redact
from provisioner.models import Container, ContainerEvent
from provisioner.phases import ALL_PHASES
from provisioner.redis_url import master_address
from provisioner.stream_delivery import StreamDelivery

# "recovering": the run lost its worker and is handed on (the message says
# which, when, and the attempt that follows); the next step ends that state
EVENT_TYPES = ("step", "log", "warning", "recovering", "complete", "error")
TERMINAL_TYPES = ("complete", "error")
# How a run ended, carried by its terminal event: a provisioning run (provision,
# retry, resync) ends "ready" or "error"; a destroy ends "destroyed"; a power
# action (start, stop, reboot) and a day-two change (snapshot, rollback,
# delete-snapshot, set) end "done"; any of those, or a resync refused before
# it began, ends "failed"; a change (resync, set) that failed and was rolled
# back to its safety snapshot ends "rolled-back" (an error event).
OUTCOMES = ("ready", "error", "destroyed", "done", "failed", "rolled-back")
PROVISIONING_OUTCOMES = ("ready", "error")
STREAMS = ("stdout", "stderr")
MAX_SEQ = 2**31 - 1  # the largest seq a reader may ask to start after (a 32-bit column)
DB_POLL = 0.5  # seconds between database reads of a reader while Redis fails
IDLE_DB_CHECK = 3.0  # seconds of a quiet stream after which a reader asks the database

log = logging.getLogger(__name__)


def channel(container_id: str) -> str:
    """The pub/sub channel of a container's events."""
    return f"provisioner:container:{container_id}:events"


def stream_key(container_id: str) -> str:
    """The Redis stream holding a container's events in ``seq`` order."""
    return f"provisioner:container:{container_id}:stream"


def now_iso() -> str:
    """``2026-11-23T10:32:39.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """One event, exactly the fields of the contract (None fields omitted)."""

    seq: int
    container: str
    type: str
    message: str = ""
    phase: str | None = None
    percent: int | None = None
    stream: str | None = None
    script: str | None = None
    outcome: str | None = None  # terminal events only (an older release's worker omits it)
    ts: str = field(default_factory=now_iso)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")
        if self.outcome is not None and self.type not in TERMINAL_TYPES:
            raise ValueError(f"a {self.type} event has no outcome")
        if self.phase is not None and self.phase not in ALL_PHASES:
            raise ValueError(f"unknown phase {self.phase!r}")
        if self.stream is not None and self.stream not in STREAMS:
            raise ValueError(f"unknown stream {self.stream!r}")
        if self.seq < 1:
            raise ValueError("seq starts at 1")

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        known = {"seq", "container", "type", "message", "phase", "percent", "stream", "script",
                 "outcome", "ts"}  # fmt: skip
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_row(cls, row: ContainerEvent) -> Event:
        ts = row.ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return cls(seq=row.seq, container=row.container_id, type=row.type, message=row.message,
                   phase=row.phase, percent=row.percent, stream=row.stream, script=row.script,
                   outcome=row.outcome, ts=ts)  # fmt: skip

    def to_row(self) -> ContainerEvent:
        ts = datetime.fromisoformat(self.ts.replace("Z", "+00:00"))
        return ContainerEvent(container_id=self.container, seq=self.seq, type=self.type,
                              phase=self.phase, percent=self.percent, message=self.message,
                              stream=self.stream, script=self.script, outcome=self.outcome,
                              ts=ts)  # fmt: skip


class Raw(NamedTuple):
    """One event as stored: its JSON exactly as published (the relay sends it
    on untouched), its ``seq`` and whether it ends the stream."""

    seq: int
    payload: bytes
    terminal: bool
    event: Event | None = None  # already decoded (a database row)

    def decode(self) -> Event:
        return self.event if self.event is not None else Event.from_json(self.payload)

    @classmethod
    def of(cls, event: Event) -> Raw:
        return cls(event.seq, event.to_json().encode(), event.terminal, event)

    @classmethod
    def from_entry(cls, entry_id: Any, fields: Any) -> Raw:
        """From a stream entry (``e``: the JSON, ``t``: its type)."""
        payload = _field(fields, b"e")
        if isinstance(payload, str):
            payload = payload.encode()
        kind = _field(fields, b"t")
        if kind is None:  # published before entries carried their type
            event = Event.from_json(payload)
            return cls(event.seq, payload, event.terminal, event)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        return cls(stream_seq(entry_id), payload, kind in TERMINAL_TYPES)


def _field(fields: Any, name: bytes) -> Any:
    if name in fields:
        return fields[name]
    return fields.get(name.decode())


def _payload(fields: Any) -> Any:
    return _field(fields, b"e")


def stream_seq(entry_id: Any) -> int:
    """The seq of a stream entry id (``<seq>-0``)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def latest_seq(redis: Redis, factory: sessionmaker[Session], container_id: str) -> int:
    """The seq of the container's newest event, stored or only in Redis (0: none)."""
    with factory() as session:
        ct = session.get(Container, container_id)
        stored = session.scalar(select(func.max(ContainerEvent.seq))
                                .where(ContainerEvent.container_id == container_id)) or 0  # fmt: skip
        counted = ct.next_seq - 1 if ct is not None else 0
    top: Any = redis.xrevrange(stream_key(container_id), count=1)
    return max(stored, counted, stream_seq(top[0][0]) if top else 0)


class EventPublisher:
    """Publishes one container's events.  Only the lease holder makes one.

    Every event goes to the database first (steps, warnings and terminal
    events at once, log lines in batches), then to the Redis stream and
    channel (``provisioner.stream_delivery``): in order, each once, and held
    while Redis is away, so a Redis that stalls or restarts never fails the
    run nor loses an event.

    Thread-safe: log lines may arrive from an SSH reader while a step is
    published from the pipeline.
    """

    def __init__(self, redis: Redis, factory: sessionmaker[Session], container_id: str, *,
                 flush_interval: float = 0.25, batch_size: int = 500,
                 redis_grace: float = 30.0) -> None:  # fmt: skip
        self.redis = redis
        self.factory = factory
        self.container_id = container_id
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.redis_grace = redis_grace  # how long close() waits for a Redis that is away
        self._lock = threading.RLock()
        self._pending: list[Event] = []
        self._last_flush = time.monotonic()
        self._next_seq = self._recover()
        self._ended = False  # a terminal event was published: nothing may follow it
        # a Sentinel client's master (None otherwise): a change is a failover
        self._master = master_address(redis)
        self._stream = StreamDelivery(redis, stream_key(container_id), channel(container_id),
                                      self._stored, name=f"deliver-{container_id[:8]}",
                                      on_delivered=self._check_failover)  # fmt: skip
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                         name=f"events-{container_id[:8]}")  # fmt: skip
        self._flusher.start()

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def redis_down(self) -> bool:
        """Redis failed and has not answered since (events wait for it)."""
        return self._stream.down_since is not None

    def _recover(self) -> int:
        """The next seq, after copying into the database any events a dead
        worker published to the stream but never flushed.  Redis must answer
        here (the run's job came from it a moment ago): a few tries."""
        for attempt in range(1, 6):
            try:
                return self._copy_unflushed()
            except RedisError:
                if attempt == 5:
                    raise
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    def _copy_unflushed(self) -> int:
        key = stream_key(self.container_id)
        with session_scope(self.factory) as session:
            ct = session.get(Container, self.container_id)
            if ct is None:
                raise LookupError(f"no container {self.container_id}")
            db_max = session.scalar(select(func.max(ContainerEvent.seq)).where(
                ContainerEvent.container_id == self.container_id)) or 0  # fmt: skip
            # redis-py's stubs type stream replies loosely
            missing: Any = self.redis.xrange(key, min=f"{db_max + 1}-0", max="+")
            for _entry_id, fields in missing:
                session.add(Event.from_json(_payload(fields)).to_row())
            last_stream = stream_seq(missing[-1][0]) if missing else 0
            if not missing:
                top: Any = self.redis.xrevrange(key, count=1)
                last_stream = stream_seq(top[0][0]) if top else 0
            next_seq = max(ct.next_seq, db_max + 1, last_stream + 1)
            ct.next_seq = next_seq
        # a retry after a terminal event: its stream must not expire mid-run
        self.redis.persist(key)
        return next_seq

    def _check_failover(self) -> None:
        """Say once per failover that Redis's master changed (a Sentinel
        client follows it by itself; what the new master lost of the stream
        was added again from the database by the delivery that just
        succeeded)."""
        now = master_address(self.redis)
        with self._lock:
            if now is None or now == self._master:
                return
            old, self._master = self._master, now
            if old is None or self._ended:
                return
            self.publish("warning", f"Redis failed over (new master {now[0]}:{now[1]}, "
                                    f"was {old[0]}:{old[1]}); continuing")  # fmt: skip
        log.warning("container %s: Redis failed over to %s:%d", self.container_id, *now)

    def _stored(self, after: int, upto: int) -> list[Event]:
        """The events with ``after < seq < upto``, from the database (what
        the stream lost): pending ones are written first."""
        self.flush()
        return stored_events(self.factory, self.container_id, after, upto)

    def publish(self, type: str, message: str = "", *, phase: str | None = None,
                percent: int | None = None, stream: str | None = None,
                script: str | None = None, outcome: str | None = None) -> Event:  # fmt: skip
        """Publish one event: the database at once (or batched, for log
        lines), then Redis.  Only a database failure raises.

        Messages pass through the secret redactor first, and a NUL becomes
        U+FFFD (PostgreSQL refuses NUL in text; a script may well print one).
        A terminal event says how the run ended (``outcome``, one of
        ``OUTCOMES``).
        """
        with self._lock:
            event = Event(seq=self._next_seq, container=self.container_id, type=type,
                          message=redact(message).replace("\0", "\ufffd"), phase=phase,
                          percent=percent, stream=stream, script=script,
                          outcome=outcome)  # fmt: skip
            self._next_seq += 1
            self._ended = self._ended or event.terminal
            self._pending.append(event)
            if type != "log" or len(self._pending) >= self.batch_size:
                self.flush()
            self._stream.send(event)
            return event

    def flush(self) -> None:
        """Write pending events and the next seq to the database."""
        with self._lock:
            if not self._pending:
                return
            pending, self._pending = self._pending, []
            try:
                with session_scope(self.factory) as session:
                    session.add_all(e.to_row() for e in pending)
                    session.execute(update(Container).where(Container.id == self.container_id)
                                    .values(next_seq=self._next_seq))  # fmt: skip
            except BaseException:
                self._pending[:0] = pending  # kept for the next flush: nothing is lost
                raise
            self._last_flush = time.monotonic()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            if self._pending and time.monotonic() - self._last_flush >= self.flush_interval:
                try:
                    self.flush()
                except Exception as exc:  # the database is away: try again next time
                    self._last_flush = time.monotonic()
                    log.warning("events of %s not yet stored (%s): retrying",
                                self.container_id, type(exc).__name__)  # fmt: skip

    def close(self) -> None:
        """Store what is pending, then wait (up to ``redis_grace``) for Redis
        to take what it has not yet."""
        self._stop.set()
        self._flusher.join(5)
        self.flush()
        self._stream.close(self.redis_grace)

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stored_events(factory: sessionmaker[Session], container_id: str, after: int,
                  upto: int | None = None) -> list[Event]:  # fmt: skip
    """The stored events with ``after < seq < upto``, in order."""
    with factory() as session:
        read_only(session)
        query = (select(ContainerEvent)
                 .where(ContainerEvent.container_id == container_id, ContainerEvent.seq > after)
                 .order_by(ContainerEvent.seq))  # fmt: skip
        if upto is not None:
            query = query.where(ContainerEvent.seq < upto)
        return [Event.from_row(r) for r in session.scalars(query)]


class EventReader:
    """Replay then follow one container's events: each exactly once, in order.

    ``events()`` gives ``Event`` objects; ``batches()`` gives the stored JSON
    in the batches it was read (one Redis read, one database page), for the
    relay to forward without decoding it.
    """

    def __init__(self, redis: Redis, factory: sessionmaker[Session], container_id: str) -> None:
        self.redis = redis
        self.factory = factory
        self.container_id = container_id
        self.key = stream_key(container_id)

    def _from_db(
        self, after: int, upto: int | None = None, page: int = 2000
    ) -> Iterator[list[Raw]]:
        """Pages of stored events with ``after < seq < upto``, up to the first
        terminal one.  Read-only transactions: a replay never holds the
        database's write lock."""
        last = after
        while True:
            with self.factory() as session:
                read_only(session)
                query = (select(ContainerEvent)
                         .where(ContainerEvent.container_id == self.container_id,
                                ContainerEvent.seq > last)
                         .order_by(ContainerEvent.seq).limit(page))  # fmt: skip
                if upto is not None:
                    query = query.where(ContainerEvent.seq < upto)
                rows = [Raw.of(Event.from_row(r)) for r in session.scalars(query)]
            end = next((i for i, raw in enumerate(rows) if raw.terminal), None)
            if end is not None:  # the stream ends there
                yield rows[: end + 1]
                return
            if rows:
                yield rows
            if len(rows) < page:
                return
            last = rows[-1].seq

    def _first_in_stream(self) -> int | None:
        first: Any = self.redis.xrange(self.key, count=1)
        return stream_seq(first[0][0]) if first else None

    def batches(self, after: int = 0, *, block_ms: int = 1000, count: int = 1000,
                stop: threading.Event | None = None,
                follow: bool = True) -> Iterator[list[Raw]]:  # fmt: skip
        """Every event with ``seq > after``, in non-empty batches; ends after
        the terminal event, when ``stop`` is set, or (``follow=False``) once
        nothing more is there.

        While Redis fails, the database is read instead (every
        ``DB_POLL`` seconds) until Redis answers again; and whenever the
        stream has been quiet for ``IDLE_DB_CHECK`` seconds, the database is
        asked whether it holds more (a run that ended while Redis was away).
        """
        last = after
        quiet_since = time.monotonic()
        whole = False  # the stream holds everything after `last`
        while not (stop is not None and stop.is_set()):
            try:
                if not whole:
                    first = self._first_in_stream()
                    if first is None or first > last + 1:  # what it no longer (or not yet) holds
                        for rows in self._from_db(last, upto=first):
                            yield rows
                            last = rows[-1].seq
                            if rows[-1].terminal:
                                return
                    whole = True
                got = self._read(last, count, block_ms if follow else None)
            except RedisError:
                if not follow:
                    got = list(self._from_db(last))
                    yield from got
                    return
                whole = False
                got = list(self._from_db(last))
                if not got:
                    time.sleep(DB_POLL)
            if not got and (not follow or time.monotonic() - quiet_since >= IDLE_DB_CHECK):
                got = list(self._from_db(last))  # what never reached the stream
                quiet_since = time.monotonic()
                whole = whole and not got
            for rows in got:
                yield rows
                last = rows[-1].seq
                if rows[-1].terminal:
                    return
            if got:
                quiet_since = time.monotonic()
            elif not follow:
                return

    def _read(self, last: int, count: int, block: int | None) -> list[list[Raw]]:
        """One read of the stream after ``last`` (blocking up to ``block``
        ms), up to a terminal event; what Redis trimmed meanwhile comes from
        the database.

        Raises:
            RedisError: Redis failed.
        """
        entries: Any = self.redis.xread({self.key: f"{last}-0"}, count=count, block=block)
        out: list[list[Raw]] = []
        batch: list[Raw] = []
        for entry_id, fields in entries[0][1] if entries else ():
            seq = stream_seq(entry_id)
            if seq <= last:
                continue
            if seq > last + 1:  # trimmed from Redis meanwhile: the database has them
                if batch:
                    out.append(batch)
                    batch = []
                for rows in self._from_db(last, upto=seq):
                    out.append(rows)
                    last = rows[-1].seq
                    if rows[-1].terminal:
                        return out
            raw = Raw.from_entry(entry_id, fields)
            batch.append(raw)
            last = seq
            if raw.terminal:
                break
        if batch:
            out.append(batch)
        return out

    def events(self, after: int = 0, *, block_ms: int = 1000,
               stop: threading.Event | None = None, follow: bool = True) -> Iterator[Event]:  # fmt: skip
        """Every event with ``seq > after``, as ``batches()``, one by one."""
        for batch in self.batches(after, block_ms=block_ms, stop=stop, follow=follow):
            for raw in batch:
                yield raw.decode()

"""One reader of a container's Redis stream per web process, shared by every
websocket following that container there.

Without it, N watchers of one container make N blocked ``XREAD`` calls, and
every event the worker publishes wakes all of them: Redis (which the worker
publishes through) does N times the work, and the web decodes and frames
every event N times.  A ``Tail`` reads the newest events once, frames them
once (``web.frames.text_frames``) and keeps the last ``WINDOW`` of them; each
stream then only copies ready bytes to its socket.

A stream joins a tail once it has caught up by its own reads
(``EventReader``: Redis, then the database for what Redis no longer holds),
and goes back to its own reads whenever it falls behind the window, so the
guarantee stays the reader's: every event once, in order, no gap.

While Redis fails, a tail reads the database instead (and tries Redis again
every few seconds); when the stream has been quiet for a while it asks the
database too, so a run that ended while Redis was away still reaches its
terminal event and every stream of it closes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from provisioner.events import DB_POLL, IDLE_DB_CHECK, Raw, stored_events, stream_key, stream_seq
from provisioner.models import ContainerEvent
from web.frames import text_frames

log = logging.getLogger(__name__)

WINDOW = 20_000  # events a tail keeps for its streams (at ~200 bytes each, ~4 MB)
BLOCK_MS = 1000  # one read's wait: how soon a tail nobody uses stops
# With many streams on a tail, each fan-out wakes every one of them and
# costs each a socket write: events that come within LINGER of the first
# go out together (a script prints in bursts), trading at most LINGER of
# latency for far fewer wake-ups and writes.  With few streams, none.
LINGER = 0.02
LINGER_USERS = 8
BATCH = 1000  # events per Redis read
REDIS_RETRY = 2.0  # seconds between tries of a Redis that failed (the database meanwhile)


class Behind(Exception):
    """The stream needs events the tail no longer (or does not yet) hold."""


@dataclass(frozen=True)
class Chunk:
    """Consecutive events, framed: ``frames[offsets[i]:]`` starts at seq ``first + i``."""

    first: int
    frames: bytes
    offsets: tuple[int, ...]
    end: str  # its last event's type if that ends the stream ("complete", "error"), else ""

    @property
    def last(self) -> int:
        return self.first + len(self.offsets) - 1

    def after(self, seq: int) -> bytes:
        """The frames of the events with a seq above ``seq``."""
        if seq < self.first:
            return self.frames
        return self.frames[self.offsets[seq - self.first + 1] :] if seq < self.last else b""


def frame_chunk(batch: list[Raw]) -> Chunk:
    offsets, position, framed = [], 0, []
    for raw in batch:
        frame = text_frames((raw.payload,))
        offsets.append(position)
        position += len(frame)
        framed.append(frame)
    end = batch[-1].decode().type if batch[-1].terminal else ""
    return Chunk(batch[0].seq, b"".join(framed), tuple(offsets), end)


class Tail:
    """The newest events of one container, read and framed once."""

    def __init__(self, redis: Redis, container_id: str, start: int, window: int = WINDOW,
                 factory: sessionmaker[Session] | None = None) -> None:  # fmt: skip
        self.redis = redis
        self.factory = factory  # the database to read while Redis fails (None: give up)
        self.container_id = container_id
        self.key = stream_key(container_id)
        self.window = window
        self.cond = threading.Condition()
        self.first = start + 1  # the oldest seq held (none yet: the next one)
        self.last = start  # the newest seq held
        self.chunks: deque[Chunk] = deque()
        self.held = 0  # events in chunks
        self.ended = False  # a terminal event came, Redis failed, or nobody uses it
        self.users = 0
        self.error: Exception | None = None  # why it ended, if Redis failed
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"tail-{container_id[:8]}")  # fmt: skip

    def read(self, seq: int, timeout: float) -> tuple[bytes, int, str]:
        """The frames of the events after ``seq`` (waiting up to ``timeout``
        for one): ``(frames, the newest seq in them or seq, the type of the
        terminal event among them or "")``.

        Raises:
            Behind: ``seq + 1`` is older than the window, or the tail has
                ended without it (the stream reads on its own instead).
        """
        with self.cond:
            if seq + 1 < self.first:
                raise Behind(seq)
            if self.last <= seq:
                if self.ended:
                    raise Behind(seq)
                self.cond.wait(timeout)
                if seq + 1 < self.first or (self.last <= seq and self.ended):
                    raise Behind(seq)
            parts = [chunk.after(seq) for chunk in self.chunks if chunk.last > seq]
            end = self.chunks[-1].end if self.chunks and self.last > seq else ""
            return b"".join(parts), max(self.last, seq), end

    def _append(self, batch: list[Raw]) -> None:
        chunk = frame_chunk(batch)
        with self.cond:
            if chunk.first != self.last + 1:  # Redis trimmed what we had not read: start anew
                self.chunks.clear()
                self.held = 0
                self.first = chunk.first
            self.chunks.append(chunk)
            self.held += len(chunk.offsets)
            self.last = chunk.last
            while self.held - len(self.chunks[0].offsets) >= self.window:
                self.held -= len(self.chunks.popleft().offsets)
            self.first = self.chunks[0].first
            self.ended = self.ended or bool(chunk.end)  # released meanwhile: stays ended
            self.cond.notify_all()

    def _read(self, after: int, count: int, block: int | None) -> list[Raw]:
        """Up to ``count`` events after seq ``after``, up to a terminal one."""
        entries: Any = self.redis.xread({self.key: f"{after}-0"}, count=count, block=block)
        batch: list[Raw] = []
        for entry_id, fields in entries[0][1] if entries else ():
            batch.append(Raw.from_entry(entry_id, fields))
            if batch[-1].terminal:
                break
        return batch

    def _stored(self, after: int) -> list[Raw]:
        """Up to ``BATCH`` stored events after ``after``, up to a terminal one."""
        assert self.factory is not None
        batch: list[Raw] = []
        for event in stored_events(self.factory, self.container_id, after, after + BATCH + 1):
            batch.append(Raw.of(event))
            if event.terminal:
                break
        return batch

    def _next(self, failing_since: float | None) -> list[Raw]:
        """The next events: from Redis, or (while it fails) from the database.

        Raises:
            RedisError: Redis failed and there is no database to read.
        """
        if failing_since is not None and time.monotonic() - failing_since < REDIS_RETRY:
            return self._stored(self.last)
        batch = self._read(self.last, BATCH, BLOCK_MS)
        if batch and not batch[-1].terminal and len(batch) < BATCH and (
                self.users > LINGER_USERS):  # fmt: skip
            time.sleep(LINGER)
            batch += self._read(batch[-1].seq, BATCH - len(batch), None)
        return batch

    def _run(self) -> None:
        failing_since: float | None = None
        quiet_since = time.monotonic()
        try:
            while not self.ended:
                try:
                    batch = self._next(failing_since)
                    if (
                        failing_since is not None
                        and time.monotonic() - failing_since >= REDIS_RETRY
                    ):
                        log.info("reading the events of %s from Redis again", self.key)
                        failing_since = None
                except RedisError as exc:
                    if self.factory is None:
                        raise
                    if failing_since is None:
                        log.warning("reading the events of %s from Redis failed (%s): from the "
                                    "database meanwhile", self.key, type(exc).__name__)  # fmt: skip
                    failing_since = time.monotonic()
                    batch = self._stored(self.last)
                if not batch and self.factory is not None and (
                        failing_since is not None
                        or time.monotonic() - quiet_since >= IDLE_DB_CHECK):  # fmt: skip
                    batch = self._stored(self.last)  # what never reached the stream
                    quiet_since = time.monotonic()
                    if not batch and failing_since is not None:
                        time.sleep(DB_POLL)
                if batch:
                    self._append(batch)
                    quiet_since = time.monotonic()
        except Exception as exc:  # Redis failed: its streams see tail.error
            self.error = exc
            log.warning("reading the events of %s failed: %s", self.key, type(exc).__name__)
        finally:
            with self.cond:
                self.ended = True
                self.cond.notify_all()


class Tails:
    """The tails of one web process, by container; a tail stops once its
    last stream leaves."""

    def __init__(self, redis: Redis, factory: sessionmaker[Session] | None = None) -> None:
        self.redis = redis
        self.factory = factory
        self._lock = threading.Lock()
        self._tails: dict[str, Tail] = {}

    def join(self, container_id: str) -> Tail:
        """The container's running tail, or a new one starting at the end of
        its stream now; release() it when done."""
        with self._lock:
            tail = self._running(container_id)
            if tail is not None:
                return tail
        # outside the lock: a slow Redis holds up this stream, not every other
        start = self._end(container_id)
        with self._lock:
            tail = self._running(container_id)
            if tail is not None:
                return tail
            tail = Tail(self.redis, container_id, start, factory=self.factory)
            self._tails[container_id] = tail
            tail.users = 1
            tail.thread.start()
            return tail

    def _end(self, container_id: str) -> int:
        """Where a new tail starts: the stream's last seq (the database's
        while Redis fails)."""
        try:
            top: Any = self.redis.xrevrange(stream_key(container_id), count=1)
            return stream_seq(top[0][0]) if top else 0
        except RedisError:
            if self.factory is None:
                raise
            with self.factory() as session:
                return session.scalar(select(func.max(ContainerEvent.seq)).where(
                    ContainerEvent.container_id == container_id)) or 0  # fmt: skip

    def _running(self, container_id: str) -> Tail | None:
        tail = self._tails.get(container_id)
        if tail is None or tail.ended:
            return None
        tail.users += 1
        return tail

    def release(self, container_id: str, tail: Tail) -> None:
        with self._lock:
            tail.users -= 1
            if tail.users == 0:
                with tail.cond:
                    tail.ended = True
                    tail.cond.notify_all()
                if self._tails.get(container_id) is tail:
                    del self._tails[container_id]

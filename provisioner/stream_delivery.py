"""Delivering a container's events to its Redis stream and channel, through
whatever Redis does meanwhile.

The database is the record (``provisioner.events`` writes there first);
the stream is what readers follow live.  Delivery must survive a Redis that
stops answering for a while (a timeout, whose command may still run once
Redis wakes up), a connection that breaks, and a Redis that restarts empty.
So:

- One Lua script adds events only past the stream's newest entry, in seq
  order, each once: a delivery retried after a timeout never adds an event
  twice, even if the first try runs late.  It refuses to leave a gap; the
  events before are read from the database and added first (at most
  ``REFILL_MAX`` of them: a stream that lost more starts later, and readers
  take the older ones from the database).
- Events wait in an outbox while Redis is away; a background thread retries
  with backoff and the run goes on.  Closing waits a while for Redis; what
  is still undelivered then is in the database, and the next publisher of
  the container or a worker's repair pass (:func:`repair`) adds it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class Event(Protocol):
    """What delivery needs of an event (:class:`provisioner.events.Event`
    is one; the protocol keeps this module below the events module)."""

    @property
    def seq(self) -> int: ...

    @property
    def type(self) -> str: ...

    def to_json(self) -> str: ...


STREAM_MAXLEN = 200_000  # entries kept in Redis; the database keeps everything
STREAM_TTL = 7 * 24 * 3600  # seconds a finished container's stream stays in Redis
REFILL_MAX = 20_000  # events copied back into a stream that lost them
BATCH = 500  # events per script call

# KEYS: the stream, the channel.  ARGV: maxlen, ttl, whether a gap before the
# first event is allowed (1/0), then (seq, type, payload) per event, in order.
# Returns {added, the stream's last seq} or, on a gap, {-1, the last seq}.
_DELIVER = """
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last = 0
if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)')) end
local added = 0
local terminal = false
for i = 4, #ARGV, 3 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    if seq ~= last + 1 and not (added == 0 and ARGV[3] == '1') then
      return {-1, last}
    end
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], seq .. '-0', 'e', ARGV[i + 2],
               't', ARGV[i + 1])
    redis.call('PUBLISH', KEYS[2], ARGV[i + 2])
    terminal = ARGV[i + 1] == 'complete' or ARGV[i + 1] == 'error'
    last = seq
    added = added + 1
  end
end
if terminal then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
elseif added > 0 then
  redis.call('PERSIST', KEYS[1])
end
return {added, last}
"""

# (after, upto) -> the stored events with after < seq < upto, in order
Source = Callable[[int, int], Sequence[Event]]


class Gap(RedisError):
    """The stream lacks events the database does not have either."""


def deliver(redis: Redis, stream: str, channel: str, events: Sequence[Event],
            source: Source) -> int:  # fmt: skip
    """Add ``events`` (consecutive seqs) to the stream and the channel, those
    it does not hold yet, after whatever it lacks before them (from ``source``).

    Returns:
        The stream's last seq.

    Raises:
        RedisError: Redis failed (nothing is lost: deliver again).
    """
    script = redis.register_script(_DELIVER)
    allow_gap = False
    for _ in range(3):
        last = 0
        for start in range(0, len(events), BATCH):
            chunk = events[start : start + BATCH]
            args: list[Any] = [STREAM_MAXLEN, STREAM_TTL, int(allow_gap and start == 0)]
            for e in chunk:
                args += [e.seq, e.type, e.to_json()]
            added, last = (int(x) for x in script(keys=[stream, channel], args=args))
            if added == -1:
                break
        else:
            return last
        # the stream ends at `last`: add what comes before the events first
        missing = list(source(last, events[0].seq))
        if len(missing) > REFILL_MAX:
            missing = missing[-REFILL_MAX:]
        if not missing or missing[0].seq != last + 1:
            allow_gap = True  # what the stream lost, the database has not (or too much)
            log.warning("stream %s resumes at seq %d after %d (the older events are only in "
                        "the database)", stream, (missing or events)[0].seq, last)  # fmt: skip
        events = [*missing, *events]
    raise Gap(f"stream {stream} keeps changing under its delivery")


class StreamDelivery:
    """The Redis side of one publisher: events sent in order, never twice,
    kept in an outbox while Redis is away (a thread retries with backoff)."""

    def __init__(self, redis: Redis, stream: str, channel: str, source: Source, *,
                 name: str = "deliver",
                 on_delivered: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.redis, self.stream, self.channel, self.source = redis, stream, channel, source
        # called after each delivery that emptied the outbox (outside the
        # delivery's lock: it may send again)
        self.on_delivered = on_delivered
        self._outbox: deque[Event] = deque()
        self._lock = threading.Lock()  # the outbox
        self._sending = threading.Lock()  # one delivery at a time, in order
        self._wake = threading.Event()
        self._closing = threading.Event()
        self.down_since: float | None = None  # Redis failed and has not answered since
        self._thread = threading.Thread(target=self._retry_loop, daemon=True, name=name)
        self._thread.start()

    @property
    def undelivered(self) -> int:
        return len(self._outbox)

    def send(self, event: Event) -> None:
        """Queue an event and deliver what is queued now, unless Redis is
        known to be away (the retry thread does it then).  Never raises."""
        with self._lock:
            self._outbox.append(event)
        delivered = False
        if self.down_since is None and self._sending.acquire(blocking=False):
            try:
                delivered = self._drain()
            finally:
                self._sending.release()
        if self._outbox:
            self._wake.set()
        elif delivered and self.on_delivered is not None:
            self.on_delivered()

    def _drain(self) -> bool:
        """Deliver the outbox in order (holding ``_sending``); False if Redis failed."""
        while True:
            with self._lock:
                batch = list(itertools.islice(self._outbox, BATCH))
            if not batch:
                if self.down_since is not None:
                    log.warning("Redis answers again: the events of %s held for %.1f s are "
                                "delivered", self.stream, time.monotonic() - self.down_since)  # fmt: skip
                    self.down_since = None
                return True
            try:
                deliver(self.redis, self.stream, self.channel, batch, self.source)
            except RedisError as exc:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    log.warning("Redis failed (%s: %s): the events of %s wait and are "
                                "delivered once it answers", type(exc).__name__, exc,
                                self.stream)  # fmt: skip
                return False
            with self._lock:
                for _ in batch:
                    self._outbox.popleft()

    def _retry_loop(self) -> None:
        delay = 0.2
        while True:
            self._wake.wait(delay if self.down_since is not None else None)
            self._wake.clear()
            with self._sending:
                ok = self._drain()
            if ok and self.on_delivered is not None:
                self.on_delivered()
            delay = 0.2 if ok else min(delay * 2, 5.0)
            if self._closing.is_set() and (ok or not self._outbox):
                return

    def close(self, timeout: float) -> bool:
        """Deliver what is left, waiting up to ``timeout`` seconds for Redis.

        Returns:
            Whether everything was delivered (else it is in the database only).
        """
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._outbox:
            log.warning("%d events of %s not delivered to Redis (it did not answer for %g s): "
                        "the database has them; a worker adds them to the stream later",
                        len(self._outbox), self.stream, timeout)  # fmt: skip
            return False
        return True


def repair(redis: Redis, stream: str, channel: str, last_stored: int, source: Source) -> int:
    """Add to a stream the events the database has past its end (a run that
    ended while Redis was away).  Returns how many were added.

    Raises:
        RedisError: Redis failed.
    """
    top: Any = redis.xrevrange(stream, count=1)
    entry = top[0][0] if top else b"0-0"
    last = int((entry.decode() if isinstance(entry, bytes) else entry).split("-")[0])
    if last >= last_stored:
        return 0
    events = list(source(last, last_stored + 1))
    if not events:
        return 0
    deliver(redis, stream, channel, events[-REFILL_MAX:], source)
    return len(events[-REFILL_MAX:])

"""The websocket relay: ``/ws/containers/<id>/events?after=<seq>``.

Streams a container's events (the contract in docs/architecture.md) through
``provisioner.events.EventReader``: the stored history after ``after``, then
live events, each exactly once and in order, one JSON event per message;
the server closes the connection after ``complete`` or ``error``.  A client
that reconnects with the last ``seq`` it saw gets exactly the rest.

Each connection runs in its own thread (gunicorn's gthread worker, or the
threaded development server).  It catches up by its own reads (the Redis
stream, the database for what Redis no longer holds), then follows the
process's shared tail of the container (``web.tail``): one Redis reader per
container per process, each event framed once, so a hundred watchers cost
Redis, and so the workers publishing through it, what one does.  The stored
JSON goes out as it is, never decoded and encoded again, and whatever is
ready leaves in one write (``Outbox``).  A stream that falls behind the
tail's window goes back to its own reads, so a slow client holds up nobody
else, and the workers never wait for a browser.

Pings (every ``web_relay_ping_interval`` seconds, 25) keep idle connections
open through proxies and find dead clients.  A client that reads, however
far behind, is alive: its pong may wait behind the backlog, so progress
counts as one.  A client that takes nothing for ``web_relay_stall_timeout``
seconds (60) is dropped; one that goes away ends its reader within a second.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, g, request
from flask_sock import Sock
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.routing import WebsocketMismatch
from werkzeug.wrappers import Response as BaseResponse

from provisioner.events import MAX_SEQ, EventReader
from provisioner.models import CONTAINER_ID, Container
from web.auth import error_response
from web.frames import text_frames
from web.resources import EXTENSION, get_db, resources
from web.tail import Behind, Tail, Tails

log = logging.getLogger(__name__)
bp = Blueprint("relay", __name__)
sock = Sock()
NORMAL_CLOSURE = 1000
INTERNAL_ERROR = 1011
POLL_MS = 1000  # how long one Redis read blocks: the delay to notice a departed client
TAILS = "relay_tails"  # app.extensions: the process's shared stream readers
SLOTS = "relay_slots"  # app.extensions: its count of open streams


class ClientStalled(TimeoutError):
    """The client took nothing for the stall timeout."""


class ClientGone(threading.Event):
    """Set when asked to stop, or as soon as the client has disconnected."""

    def __init__(self, ws: Any) -> None:
        super().__init__()
        self.ws = ws

    def is_set(self) -> bool:
        return super().is_set() or not self.ws.connected


class Outbox:
    """The connection's socket, for every writer: this relay's frames and
    simple_websocket's pings, pongs and close frames, one write at a time.

    Installed as ``ws.sock``.  A write never blocks longer than
    ``stall_timeout`` without progress (the socket stays blocking for
    simple_websocket's reader thread: writes use ``MSG_DONTWAIT`` and wait
    for room with ``poll``).
    """

    def __init__(self, ws: Any, stall_timeout: float) -> None:
        self.ws = ws
        self.raw: socket.socket = ws.sock
        self.stall_timeout = stall_timeout
        self._lock = threading.Lock()
        self._progress_at = time.monotonic()
        self.tls = isinstance(self.raw, ssl.SSLSocket)
        if self.tls:
            # TLS writes block (see _write): each wait of a send is bounded by
            # the stall timeout (TimeoutError, an OSError: the client is dropped
            # as a stalled one); recv() waits on through the same timeout
            self.raw.settimeout(stall_timeout)
        ws.sock = self

    # what simple_websocket's thread uses
    def send(self, data: bytes) -> int:
        self._write(data, progress=False)
        return len(data)

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self.raw.recv(size)
            except TimeoutError:  # TLS: an idle client is no stalled one; pings find dead ones
                if not self.ws.connected:
                    raise

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()

    def send_frames(self, payloads: Iterable[bytes]) -> None:
        """Send each payload as one text message, all in one write."""
        self._write(text_frames(payloads), progress=True)

    def send_framed(self, frames: bytes) -> None:
        """Send frames made by ``text_frames``."""
        self._write(frames, progress=True)

    def abort(self) -> None:
        """Drop the connection at once (a stalled client): the reader thread
        sees the end of the stream and closes the socket."""
        self.ws.connected = False
        with contextlib.suppress(OSError):
            self.raw.shutdown(socket.SHUT_RDWR)

    def _acquire(self) -> None:
        """The lock, waiting as long as the write holding it makes progress
        (one write may carry megabytes to a slow reader)."""
        while not self._lock.acquire(timeout=1.0):
            if time.monotonic() - self._progress_at > self.stall_timeout:
                raise ClientStalled("another write to this client is stuck")

    def _write(self, data: bytes, *, progress: bool) -> None:
        self._acquire()
        try:
            if self.tls:
                # gunicorn serving TLS itself: SSL sockets take no send flags, so
                # writes block, each wait up to the timeout set in __init__
                self.raw.sendall(data)
                self._progress_at = time.monotonic()
                if progress:
                    self.ws.pong_received = True
                return
            fd = self.raw.fileno()
            if fd < 0:  # closed meanwhile (a ping racing the close): what the callers catch
                raise OSError("the connection is closed")
            view = memoryview(data)
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            deadline = time.monotonic() + self.stall_timeout
            while view:
                try:
                    sent = self.raw.send(view, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                if sent:
                    view = view[sent:]
                    self._progress_at = time.monotonic()
                    deadline = self._progress_at + self.stall_timeout
                    if progress:  # it reads, so it is alive: its pong may be queued behind
                        self.ws.pong_received = True
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ClientStalled(f"the client took nothing for {self.stall_timeout:g} s")
                poller.poll(min(left, 1.0) * 1000)
                if not self.ws.connected and progress:
                    raise ConnectionResetError("the client has gone")
        finally:
            self._lock.release()


def _after() -> int | None:
    raw = request.args.get("after", "")
    if raw == "":
        return 0
    if not re.fullmatch(r"\d{1,10}", raw) or int(raw) > MAX_SEQ:
        return None
    return int(raw)


class StreamSlots:
    """Counts the process's open event streams: each holds one of its
    threads, and pages and API calls need the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.open >= self.limit:
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.open -= 1


def refusal(container_id: str, *, take_slot: bool) -> BaseResponse | None:
    """Why a stream request is refused, as a plain HTTP answer, or None:
    a bad ``after``, a foreign origin, an unknown container, or a process
    whose streams hold all the threads it may give them (503: try again).
    With ``take_slot`` a stream slot is taken (given back at teardown)."""
    if _after() is None:
        return error_response(400, "after must be a non-negative integer (the last seq seen)",
                              field="after")  # fmt: skip
    origin = request.headers.get("Origin")
    # A browser sends cookies with a cross-site websocket handshake: only a
    # page from this site may use the session (bearer tokens are not sent by
    # browsers).  A page cannot set X-Forwarded-Host, so a proxy's is trusted.
    allowed = {request.host, request.headers.get("X-Forwarded-Host")}
    if g.auth == "session" and origin and urlsplit(origin).netloc not in allowed:
        return error_response(403, f"websocket from a foreign origin {origin!r} refused")
    exists = bool(CONTAINER_ID.fullmatch(container_id)) and (
        get_db().get(Container, container_id) is not None)  # fmt: skip
    get_db().commit()  # the stream may last hours: hold no transaction
    if not exists:
        return error_response(404, f"no container {container_id!r}")
    slots: StreamSlots = current_app.extensions[SLOTS]
    if not (slots.take() if take_slot else slots.open < slots.limit):
        if take_slot:
            log.warning("event stream of %s refused: %d streams already open in this process",
                        container_id, slots.limit)  # fmt: skip
        response = error_response(503, f"this web process already serves {slots.limit} event "
                                  "streams: try again shortly")  # fmt: skip
        response.headers["Retry-After"] = "5"
        return response
    if take_slot:
        g.stream_slot = slots
    return None


@bp.before_request
def check_stream() -> BaseResponse | None:
    """Refuse a handshake before it happens (``refusal``)."""
    return refusal((request.view_args or {}).get("container_id", ""), take_slot=True)


@bp.teardown_request
def give_back_slot(_exc: BaseException | None) -> None:
    slots: StreamSlots | None = g.pop("stream_slot", None)
    if slots is not None:
        slots.give_back()


_STREAM_PATH = re.compile(r"/ws/containers/([^/]*)/events")


def not_a_handshake(exc: WebsocketMismatch) -> BaseResponse:
    """A plain HTTP request of a stream's URL (werkzeug's routing refuses it
    with a bare 400): what a handshake would get, or 426 saying what the URL
    is for.  The progress view asks this way why its socket keeps failing."""
    m = _STREAM_PATH.fullmatch(request.path)
    refused = refusal(m.group(1), take_slot=False) if m else None
    if refused is not None:
        return refused
    response = error_response(426, "this is a websocket endpoint: open it with a websocket "
                              "handshake (Upgrade: websocket)")  # fmt: skip
    response.headers["Upgrade"] = "websocket"
    return response


def stream(ws: Any, reader: EventReader, tails: Tails, after: int, stall_timeout: float) -> None:
    """Send every event after ``after``; close after the terminal one.

    Catches up by its own reads, then follows the process's shared tail of
    the container; back to its own reads whenever it falls behind the tail.
    """
    outbox = Outbox(ws, stall_timeout)
    gone = ClientGone(ws)
    container_id = reader.container_id
    last, ended = after, ""
    tail: Tail | None = None
    try:
        while not (ended or gone.is_set()):
            for batch in reader.batches(last, follow=False):
                outbox.send_frames(raw.payload for raw in batch)
                last = batch[-1].seq
                if batch[-1].terminal:
                    ended = batch[-1].decode().type
                    break
            if ended:
                break
            if tail is not None and tail.error is not None:
                raise tail.error  # its Redis reads failed: ours would too
            if tail is None or tail.ended:  # none yet, or it stopped after a terminal event
                if tail is not None:
                    tails.release(container_id, tail)
                    tail = None
                tail = tails.join(container_id)
            try:
                while not (ended or gone.is_set()):
                    frames, last, ended = tail.read(last, timeout=POLL_MS / 1000)
                    if frames:
                        outbox.send_framed(frames)
            except Behind:
                continue  # on our own reads again
        if ended and ws.connected:
            ws.close(reason=NORMAL_CLOSURE, message=f"{ended}: stream ends")
    except OSError:  # stalled, or gone while we wrote
        outbox.abort()
    except (RedisError, SQLAlchemyError) as exc:  # the client reconnects and resumes
        log.warning("event stream of %s failed: %s", container_id, type(exc).__name__)
        if ws.connected:
            with contextlib.suppress(OSError):
                ws.close(reason=INTERNAL_ERROR, message="events are unavailable: try again")
    finally:
        if tail is not None:
            tails.release(container_id, tail)


@sock.route("/ws/containers/<container_id>/events", bp=bp)
def container_events(ws: Any, container_id: str) -> None:
    """Replay, then follow; close after the terminal event."""
    res = resources()
    stream(ws, EventReader(res.redis, res.factory, container_id), current_app.extensions[TAILS],
           _after() or 0, res.settings.web_relay_stall_timeout)  # fmt: skip


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_error_handler(WebsocketMismatch, not_a_handshake)
    resources = app.extensions[EXTENSION]
    app.extensions[TAILS] = Tails(resources.redis, resources.factory)
    app.extensions[SLOTS] = StreamSlots(resources.settings.relay_stream_limit)

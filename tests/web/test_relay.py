"""The websocket relay against a real threaded server, real Redis and the
real event publisher: replay, then live, no gap, no duplicate, close after
the terminal event; resume with after=N."""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from redis import Redis
from simple_websocket import ConnectionClosed
from wsproto.frame_protocol import FrameProtocol

from provisioner.config import Settings, stream_limit
from provisioner.db import session_scope
from provisioner.events import Event, EventPublisher
from tests.web.conftest import (
    PASSWORD,
    LiveServer,
    add_container,
    bearer,
    closed_port,
    form_csrf,
    serve,
)
from tests.web.wsclient import Client
from web.app import create_app
from web.frames import text_frames
from web.relay import ClientStalled, Outbox

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def container(app: Flask) -> str:
    return add_container(app)


@pytest.fixture
def publisher(app: Flask, container: str) -> Iterator[EventPublisher]:
    res = app.extensions["provisioner"]
    redis = Redis.from_url(res.settings.redis_url)
    pub = EventPublisher(redis, res.factory, container)
    yield pub
    pub.close()
    redis.delete(f"provisioner:container:{container}:stream")
    redis.close()


def handshake_status(server: LiveServer, path: str, headers: dict[str, str]) -> int:
    """The status a websocket handshake gets (refusals come before the upgrade)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", **headers})  # fmt: skip
        return conn.getresponse().status
    finally:
        conn.close()


def connect(server: LiveServer, container: str, token: str, after: int | None = None,
            **headers: str) -> Client:  # fmt: skip
    query = f"?after={after}" if after is not None else ""
    return Client.connect(f"{server.ws}/ws/containers/{container}/events{query}",
                          headers={**bearer(token), **headers})  # fmt: skip


def receive_all(ws: Client, timeout: float = 10) -> list[dict[str, Any]]:
    """Every message until the server closes the connection."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        except ConnectionClosed:
            return got
        if message is not None:
            got.append(json.loads(message))
    raise AssertionError(f"the stream did not close; got {[e['seq'] for e in got]}")


def receive(ws: Client, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    got = []
    for _ in range(n):
        message = ws.receive(timeout=timeout)
        assert message is not None, f"only {len(got)} of {n} events arrived"
        got.append(json.loads(message))
    return got


def test_replay_then_live_then_close(live_server: LiveServer, container: str, token: str,
                                     publisher: EventPublisher) -> None:  # fmt: skip
    publisher.publish("step", "creating", phase="create", percent=5)
    publisher.publish("log", "line one", phase="create", stream="stdout")
    publisher.publish("log", "line two", phase="create", stream="stderr")
    ws = connect(live_server, container, token)
    replayed = receive(ws, 3)
    assert [e["seq"] for e in replayed] == [1, 2, 3]
    assert replayed[0] == {**replayed[0], "type": "step", "phase": "create", "percent": 5,
                           "message": "creating", "container": container}  # fmt: skip
    assert replayed[2]["stream"] == "stderr"
    publisher.publish("step", "starting", phase="start", percent=30)
    assert receive(ws, 1)[0]["seq"] == 4  # live
    for i in range(50):
        publisher.publish("log", f"burst {i}", phase="start", stream="stdout")
    publisher.publish("complete", "ready", phase="finalize", percent=100)
    publisher.publish("log", "after the end", phase="finalize")  # never sent: the stream ended
    rest = receive_all(ws)
    assert [e["seq"] for e in rest] == list(range(5, 56))
    assert rest[-1]["type"] == "complete"
    assert ws.close_reason == 1000


def test_resume_after_gives_exactly_the_rest(live_server: LiveServer, container: str,
                                             token: str, publisher: EventPublisher) -> None:  # fmt: skip
    for i in range(10):
        publisher.publish("log", f"line {i}", phase="scripts", stream="stdout", script="10-a.sh")
    publisher.publish("error", "scripts failed: 10-a.sh exited 1", phase="scripts")
    full = receive_all(connect(live_server, container, token, after=0))
    assert [e["seq"] for e in full] == list(range(1, 12))
    for after in (0, 1, 7, 10):
        got = receive_all(connect(live_server, container, token, after=after))
        assert got == full[after:], after
    # after the terminal event there is nothing to wait for but what comes next
    ws = connect(live_server, container, token, after=11)
    publisher.publish("step", "retrying", phase="scripts", percent=60)
    publisher.publish("complete", "ready", phase="finalize", percent=100)
    assert [e["seq"] for e in receive_all(ws)] == [12, 13]


def _request_threads(before: set[threading.Thread] | None = None) -> set[threading.Thread]:
    """The server's live request threads, those in ``before`` left out."""
    return {t for t in threading.enumerate()
            if "process_request_thread" in t.name and t not in (before or set())}  # fmt: skip


def _wait_for_threads(before: set[threading.Thread], count: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while len(_request_threads(before)) > count and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(_request_threads(before))


def stalled_client(server: LiveServer, container: str, token: str) -> socket.socket:
    """A websocket client that completes the handshake, then never reads:
    a tiny receive buffer, so the server's sends to it soon block."""
    return raw_client(server, container, token)


def raw_client(server: LiveServer, container: str, token: str) -> socket.socket:
    """A handshaken websocket connection as a bare socket (4 KiB receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall((f"GET /ws/containers/{container}/events HTTP/1.1\r\n"
                  f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


@pytest.mark.long
def test_concurrent_clients_are_independent(live_server: LiveServer, container: str,
                                            token: str, publisher: EventPublisher) -> None:  # fmt: skip
    publisher.publish("step", "creating", phase="create", percent=1)
    before = _request_threads()
    quitter = connect(live_server, container, token)
    assert receive(quitter, 1)[0]["seq"] == 1
    assert len(_request_threads(before)) == 1
    quitter.close()
    assert _wait_for_threads(before, 0) == 0  # a departed client's reader ended by itself
    stalled = stalled_client(live_server, container, token)
    reader = connect(live_server, container, token)
    results: dict[str, list[int]] = {}

    def read_all() -> None:
        results["seqs"] = [e["seq"] for e in receive_all(reader, timeout=40)]

    thread = threading.Thread(target=read_all)
    thread.start()
    # ~3 MB: far more than the stalled client's buffers hold
    for i in range(2000):
        publisher.publish("log", f"line {i} " + "x" * 1500, phase="create", stream="stdout")
    publisher.publish("complete", "ready", phase="finalize", percent=100)
    thread.join(40)
    assert results["seqs"] == list(range(1, 2003))
    stalled.close()


def test_pings_find_dead_clients(settings: Settings, app: Flask, container: str, token: str,
                                 publisher: EventPublisher) -> None:  # fmt: skip
    pinging = create_app(dataclasses.replace(settings, web_relay_ping_interval=0.3),
                         {"TESTING": True})  # fmt: skip
    try:
        with serve(pinging) as server:
            publisher.publish("step", "creating", phase="create", percent=1)
            before = _request_threads()
            alive = connect(server, container, token)  # answers pings by itself
            dead = stalled_client(server, container, token)  # never answers
            assert len(_request_threads(before)) == 2
            assert _wait_for_threads(before, 1) == 1  # the dead one's reader is gone
            time.sleep(1)
            assert alive.connected  # pings alone never end a healthy stream
            assert receive(alive, 1)[0]["seq"] == 1
            publisher.publish("complete", "ready", phase="finalize", percent=100)
            assert [e["seq"] for e in receive_all(alive)] == [2]
            dead.close()
    finally:
        pinging.extensions["provisioner"].close()


def test_session_cookie_and_origin(app: Flask, live_server: LiveServer, container: str,
                                   user: str, publisher: EventPublisher) -> None:  # fmt: skip
    import requests

    with requests.Session() as http:
        page = http.get(f"{live_server.http}/login")
        http.post(f"{live_server.http}/login", data={
            "username": user, "password": PASSWORD, "csrf_token": form_csrf(page.text)})  # fmt: skip
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
    publisher.publish("complete", "done", phase="finalize", percent=100)
    url = f"{live_server.ws}/ws/containers/{container}/events"
    # simple-websocket's client sends "Host: 127.0.0.1" (no port); a browser's
    # Origin names exactly the host it sent
    same_site = Client.connect(url, headers={"Cookie": cookie, "Origin": "http://127.0.0.1"})
    assert [e["seq"] for e in receive_all(same_site)] == [1]
    path = url.split(str(live_server.port), 1)[1]
    assert (
        handshake_status(live_server, path, {"Cookie": cookie, "Origin": "https://evil.example"})
        == 403
    )
    assert handshake_status(live_server, path, {"Origin": "http://127.0.0.1"}) == 401


def test_refusals_before_the_handshake(live_server: LiveServer, container: str,
                                       token: str) -> None:  # fmt: skip
    path = f"/ws/containers/{container}/events"
    assert handshake_status(live_server, path, {}) == 401
    assert handshake_status(live_server, path, bearer("lxcp_wrong")) == 401
    assert handshake_status(live_server, "/ws/containers/nope/events", bearer(token)) == 404
    assert handshake_status(live_server, f"{path}?after=-3", bearer(token)) == 400
    # a plain GET of the stream (no handshake) gets what a handshake would, or
    # is told what the URL is for: never a 500
    for plain_path, status in ((path, 426), ("/ws/containers/nope/events", 404),
                               (f"{path}?after=x", 400)):  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", live_server.port, timeout=10)
        try:
            conn.request("GET", plain_path, headers=bearer(token))
            plain = conn.getresponse()
            assert plain.status == status, plain_path
            body = json.loads(plain.read())
            if status == 426:
                assert plain.getheader("Upgrade") == "websocket"
                assert "websocket endpoint" in body["error"]
        finally:
            conn.close()
    # the control: the same request, authenticated, is upgraded
    assert handshake_status(live_server, path, bearer(token)) == 101


def test_streams_leave_threads_for_everything_else(settings: Settings, container: str,
                                                    token: str) -> None:  # fmt: skip
    """Each stream holds a thread: past the process's limit a handshake gets
    503 with Retry-After, and pages and the API still answer."""
    app = create_app(dataclasses.replace(settings, web_relay_max_streams=2), {"TESTING": True})
    try:
        with serve(app) as server:
            open_ = [connect(server, container, token) for _ in range(2)]
            path = f"/ws/containers/{container}/events"
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", path, headers={
                "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", **bearer(token)})  # fmt: skip
            full = conn.getresponse()
            assert full.status == 503 and full.getheader("Retry-After") == "5"
            assert "already serves 2 event streams" in json.loads(full.read())["error"]
            conn.close()
            # a plain request of the stream's URL says the same (the page asks it why)
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", path, headers=bearer(token))
            assert conn.getresponse().status == 503
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/api/me", headers=bearer(token))
            assert conn.getresponse().status == 200
            conn.close()
            open_.pop().close()  # a stream that ends gives its thread back
            deadline = time.monotonic() + 10
            while handshake_status(server, path, bearer(token)) != 101:
                assert time.monotonic() < deadline, "the slot was not given back"
                time.sleep(0.1)
            for ws in open_:
                ws.close()
    finally:
        app.extensions["provisioner"].close()


def test_the_stream_limit_leaves_an_eighth_of_the_threads() -> None:
    assert [stream_limit(t) for t in (4, 16, 64, 128, 216, 1024)] == [2, 14, 56, 112, 200, 1008]


# --- the relay's writer: frames, one writer at a time, stalled clients ------------------


def read_frame(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """One unmasked (server) frame: (opcode, payload)."""

    def need(n: int) -> None:
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buf.extend(chunk)

    need(2)
    opcode, size, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
    assert buf[0] & 0x80 and not buf[0] & 0x70 and not buf[1] & 0x80  # FIN, no RSV, unmasked
    if size == 126:
        need(4)
        size, start = struct.unpack("!H", buf[2:4])[0], 4
    elif size == 127:
        need(10)
        size, start = struct.unpack("!Q", buf[2:10])[0], 10
    need(start + size)
    payload = bytes(buf[start : start + size])
    del buf[: start + size]
    return opcode, payload


def pong(sock: socket.socket, payload: bytes) -> None:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes((0x8A, 0x80 | len(payload))) + mask + masked)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_text_frames_are_what_wsproto_would_send(size: int) -> None:
    payload = b"x" * size
    expected = FrameProtocol(client=False, extensions=[]).send_data(payload.decode(), fin=True)
    assert text_frames([payload]) == expected
    assert text_frames([payload, b"{}"]) == expected + b"\x81\x02{}"
    assert text_frames([]) == b""


class FakeWs:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.connected = True
        self.pong_received = False


def test_outbox_on_a_closed_socket_raises_what_the_ping_thread_catches() -> None:
    """simple_websocket's ping thread may write after the relay closed the
    socket; it catches OSError (a ValueError from poll would escape it)."""
    server, client = socket.socketpair()
    outbox = Outbox(FakeWs(server), stall_timeout=1)
    server.close()
    client.close()
    with pytest.raises(OSError, match="closed"):
        outbox.send(bytes((0x89, 0)))


def test_outbox_writes_whole_frames_one_writer_at_a_time() -> None:
    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    ws = FakeWs(server)
    outbox = Outbox(ws, stall_timeout=10)
    assert ws.sock is outbox  # simple_websocket's own writes (pings) go through it too
    payloads = [json.dumps({"seq": i, "message": "y" * (i % 700)}).encode() for i in range(3000)]
    ping = bytes((0x89, 4)) + b"ping"

    def pings() -> None:
        for _ in range(200):
            outbox.send(ping)

    pinger = threading.Thread(target=pings)
    pinger.start()
    writer = threading.Thread(target=lambda: [outbox.send_frames(payloads[i : i + 100])
                                              for i in range(0, 3000, 100)])  # fmt: skip
    writer.start()
    buf = bytearray()
    texts, pings_seen = [], 0
    while len(texts) < 3000 or pings_seen < 200:
        opcode, payload = read_frame(client, buf)
        if opcode == 0x9:
            assert payload == b"ping"
            pings_seen += 1
        else:
            assert opcode == 0x1
            texts.append(payload)
    writer.join(10)
    pinger.join(10)
    assert texts == payloads  # nothing torn, nothing interleaved
    assert ws.pong_received  # a client that reads is alive
    server.close()
    client.close()


def test_outbox_gives_up_on_a_client_that_takes_nothing() -> None:
    server, client = socket.socketpair()
    ws = FakeWs(server)
    outbox = Outbox(ws, stall_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ClientStalled):
        for _ in range(10_000):  # far more than the socket buffers hold
            outbox.send_frames([b"z" * 4000])
    assert time.monotonic() - started < 5
    outbox.abort()
    assert not ws.connected
    server.close()
    client.close()


def tls_pair(tmp_path: Any) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    """A connected TLS server and client, in this process (gunicorn with --certfile)."""
    from tests.web.test_web_command import self_signed

    cert, key, client_context = self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    a, b = socket.socketpair()
    server = server_context.wrap_socket(a, server_side=True, do_handshake_on_connect=False)
    client = client_context.wrap_socket(b, server_hostname="127.0.0.1",
                                        do_handshake_on_connect=False)  # fmt: skip
    shake = threading.Thread(target=client.do_handshake)
    shake.start()
    server.do_handshake()
    shake.join(10)
    return server, client


def test_outbox_over_tls_gives_up_on_a_client_that_takes_nothing(tmp_path: Any) -> None:
    """TLS served by gunicorn itself: writes block, but no longer than the
    stall timeout without progress; an idle reader is not a stalled one."""
    server, client = tls_pair(tmp_path)
    ws = FakeWs(server)
    outbox = Outbox(ws, stall_timeout=0.5)
    outbox.send_frames([b"hello"])
    assert client.recv(100).endswith(b"hello")
    reader = threading.Thread(target=lambda: outbox.recv(100), daemon=True)
    reader.start()
    time.sleep(1.2)  # more than the timeout: still waiting, not failed
    assert reader.is_alive()
    started = time.monotonic()
    with pytest.raises(OSError):
        for _ in range(10_000):  # far more than the socket buffers hold
            outbox.send_frames([b"z" * 4000])
    assert time.monotonic() - started < 5
    outbox.abort()
    reader.join(5)
    assert not reader.is_alive()
    server.close()
    client.close()


@pytest.mark.long
def test_a_reader_far_behind_outlives_the_pings(settings: Settings, container: str,
                                                token: str, publisher: EventPublisher) -> None:  # fmt: skip
    """Its pongs wait behind a backlog that takes several ping intervals to
    read: it is reading, so it stays connected and gets every event."""
    pinging = create_app(dataclasses.replace(settings, web_relay_ping_interval=0.3),
                         {"TESTING": True})  # fmt: skip
    try:
        with serve(pinging) as server:
            for i in range(1500):
                publisher.publish("log", f"line {i} " + "x" * 1500, phase="create", stream="stdout")
            publisher.publish("complete", "ready", phase="finalize", percent=100)
            sock = raw_client(server, container, token)
            buf = bytearray()
            seqs: list[int] = []
            pings = 0
            started = time.monotonic()
            while True:
                time.sleep(0.002)  # a slow reader: ~2.3 MB take a few seconds
                opcode, payload = read_frame(sock, buf)
                if opcode == 0x9:
                    pings += 1
                    pong(sock, payload)
                elif opcode == 0x8:
                    assert struct.unpack("!H", payload[:2])[0] == 1000, payload
                    break
                else:
                    seqs.append(json.loads(payload)["seq"])
            assert time.monotonic() - started > 1.5  # several ping intervals behind
            assert seqs == list(range(1, 1502))
            sock.close()
    finally:
        pinging.extensions["provisioner"].close()


@pytest.mark.long
def test_a_client_that_stops_reading_is_dropped(settings: Settings, container: str,
                                                token: str, publisher: EventPublisher) -> None:  # fmt: skip
    stalling = create_app(dataclasses.replace(settings, web_relay_stall_timeout=1.0),
                          {"TESTING": True})  # fmt: skip
    try:
        with serve(stalling) as server:
            publisher.publish("step", "creating", phase="create", percent=1)
            before = _request_threads()
            stalled = stalled_client(server, container, token)
            reader = connect(server, container, token)
            for i in range(2000):  # ~3 MB: more than the stalled client's buffers hold
                publisher.publish("log", f"line {i} " + "x" * 1500, phase="create", stream="stdout")
            assert _wait_for_threads(before, 1, timeout=15) == 1  # the stalled one is gone
            publisher.publish("complete", "ready", phase="finalize", percent=100)
            assert [e["seq"] for e in receive_all(reader, timeout=30)] == list(range(1, 2003))
            stalled.close()
    finally:
        stalling.extensions["provisioner"].close()


def test_streams_of_one_container_share_one_redis_reader(live_server: LiveServer, container: str,
                                                         token: str, publisher: EventPublisher) -> None:  # fmt: skip
    publisher.publish("step", "creating", phase="create", percent=1)
    clients = [connect(live_server, container, token) for _ in range(12)]
    for ws in clients:
        assert receive(ws, 1)[0]["seq"] == 1  # caught up on its own, now on the tail
    deadline = time.monotonic() + 5
    while not _tail_threads(container) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_tail_threads(container)) == 1
    results: dict[int, list[int]] = {}

    def read_all(i: int, ws: Client) -> None:
        results[i] = [e["seq"] for e in receive_all(ws, timeout=40)]

    threads = [threading.Thread(target=read_all, args=(i, ws)) for i, ws in enumerate(clients)]
    for t in threads:
        t.start()
    for i in range(3000):
        publisher.publish("log", f"line {i}", phase="scripts", stream="stdout")
        if i == 1500:  # one more comes in the middle: replay, then the same tail
            late = connect(live_server, container, token)
            threads.append(threading.Thread(target=read_all, args=(99, late)))
            threads[-1].start()
    publisher.publish("complete", "ready", phase="finalize", percent=100)
    for t in threads:
        t.join(40)
    assert len(results) == 13
    assert all(seqs == list(range(2, 3003)) for i, seqs in results.items() if i != 99)
    assert results[99] == list(range(1, 3003))
    assert len(_tail_threads(container)) <= 1
    deadline = time.monotonic() + 5
    while _tail_threads(container) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _tail_threads(container)  # the last stream gone, the tail stops


def _tail_threads(container: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"tail-{container[:8]}"]


def test_a_ping_waits_while_a_long_write_makes_progress() -> None:
    """One write of megabytes to a slow reader outlasts the stall timeout; a
    ping queued behind it waits instead of declaring the client dead."""
    server, client = socket.socketpair()
    with server, client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        ws = FakeWs(server)
        outbox = Outbox(ws, stall_timeout=0.5)
        payloads = [b"p" * 60_000] * 40  # 2.4 MB in one write
        errors: list[BaseException] = []

        def run(target: Any) -> threading.Thread:
            def guarded() -> None:
                try:
                    target()
                except BaseException as exc:  # reported by the assertion below
                    errors.append(exc)

            thread = threading.Thread(target=guarded)
            thread.start()
            return thread

        writer = run(lambda: outbox.send_frames(payloads))
        time.sleep(0.1)
        pinger = run(lambda: outbox.send(bytes((0x89, 0))))
        buf, texts, pings = bytearray(), 0, 0
        started = time.monotonic()
        while (texts < 40 or not pings) and time.monotonic() - started < 20:
            time.sleep(0.05)  # ~1 MB/s: the write takes over 2 s
            opcode, _payload = read_frame(client, buf)
            texts += opcode == 0x1
            pings += opcode == 0x9
        writer.join(10)
        pinger.join(10)
        assert time.monotonic() - started > 1.0  # longer than the stall timeout
        assert not errors and ws.connected


def test_without_redis_the_stream_goes_on_from_the_database(settings: Settings, container: str,
                                                             token: str, app: Flask) -> None:  # fmt: skip
    """No Redis at all: the relay serves what the database has, follows it
    (a run's events that reach only the database while Redis is away) and
    closes after the terminal event."""
    factory = app.extensions["provisioner"].factory

    def store(seq: int, type: str = "step") -> None:
        with session_scope(factory) as session:
            session.add(Event(seq=seq, container=container, type=type, phase="create",
                              message=f"event {seq}").to_row())  # fmt: skip

    store(1)
    store(2)
    nowhere = f"redis://127.0.0.1:{closed_port()}/0"
    broken = create_app(dataclasses.replace(settings, redis_url=nowhere), {"TESTING": True})
    try:
        with serve(broken) as server:
            ws = connect(server, container, token)
            assert [e["seq"] for e in receive(ws, 2)] == [1, 2]
            store(3, "log")
            store(4, "complete")
            rest = receive_all(ws, timeout=20)
            assert [(e["seq"], e["type"]) for e in rest] == [(3, "log"), (4, "complete")]
    finally:
        broken.extensions["provisioner"].close()

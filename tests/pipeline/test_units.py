"""Pure logic of the pipeline's phases."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.context import off_loop
from pipeline.finalize import parse_listening
from tests.certs import self_signed

SS_TULNP = """\
udp   UNCONN 0      0            0.0.0.0:68        0.0.0.0:*    users:(("dhclient",pid=80,fd=7))
tcp   LISTEN 0      128          0.0.0.0:22        0.0.0.0:*    users:(("sshd",pid=61,fd=3))
tcp   LISTEN 0      511             [::]:80           [::]:*    users:(("nginx",pid=99,fd=7),("nginx",pid=98,fd=7))
tcp   LISTEN 0      128             [::]:22           [::]:*    users:(("sshd",pid=61,fd=4))
"""


def test_listening_services_with_their_protocol() -> None:
    assert parse_listening(SS_TULNP) == [
        {"proto": "tcp", "address": "0.0.0.0", "port": 22, "process": "sshd"},
        {"proto": "tcp", "address": "::", "port": 22, "process": "sshd"},
        {"proto": "udp", "address": "0.0.0.0", "port": 68, "process": "dhclient"},
        {"proto": "tcp", "address": "::", "port": 80, "process": "nginx"},
    ]


def test_one_protocol_without_the_netid_column() -> None:
    udp = 'UNCONN 0 0 0.0.0.0:68 0.0.0.0:* users:(("dhclient",pid=80,fd=7))\n'
    tcp = 'LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=61,fd=3))\n'
    assert [s["proto"] for s in parse_listening(udp + tcp)] == ["tcp", "udp"]


def test_actions_settled_while_they_waited_are_moot() -> None:
    from pipeline.job import moot
    from provisioner.models import Lifecycle

    assert moot(Lifecycle.READY, "retry") == "the container is ready"
    for action in ("retry", "resync", "destroy", "start", "stop", "reboot"):
        assert moot(Lifecycle.DESTROYED, action) == "the container is destroyed"
    assert moot(Lifecycle.DESTROYED, "provision") is None  # provision has its own rule
    for lifecycle in (Lifecycle.ERROR, Lifecycle.CREATING, Lifecycle.DESTROYING):
        assert moot(lifecycle, "retry") is None and moot(lifecycle, "destroy") is None
    assert moot(Lifecycle.READY, "resync") is None and moot(Lifecycle.READY, "stop") is None


def test_blocking_calls_run_off_the_event_loop_and_keep_their_errors() -> None:
    released = threading.Event()

    def blocking(x: int, *, y: int) -> tuple[int, int]:
        # set by a coroutine: only reached if the loop runs meanwhile
        assert released.wait(5), "the event loop was blocked"
        return threading.get_ident(), x + y

    async def release() -> None:
        released.set()

    error = LookupError("the container has no vmid yet")

    def failing() -> None:
        raise error

    async def main() -> None:
        (thread, value), _ = await asyncio.gather(off_loop(blocking, 1, y=2), release())
        assert thread != threading.get_ident() and value == 3
        with pytest.raises(LookupError) as raised:
            await off_loop(failing)
        assert raised.value is error  # the very exception, not a wrapper

    asyncio.run(main())


# --- health checks over HTTPS ---------------------------------------------------------------


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"name":"Site","namespaces":["wp/v2"]}' if self.path == "/wp-json/" else b"no"
        self.send_response(200 if self.path == "/wp-json/" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate; its port."""
    cert, key, _ = self_signed(tmp_path)  # nothing trusts it, as a container makes its own
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_an_https_health_check_takes_the_containers_own_certificate(https_server: int) -> None:
    from pipeline.finalize import _probe
    from provisioner.templates.model import HealthCheck, HealthKind

    check = HealthCheck(HealthKind.HTTPS, https_server, "/wp-json/", contains='"wp/v2"')
    assert _probe("127.0.0.1", check) is None
    wrong = HealthCheck(HealthKind.HTTPS, https_server, "/wp-json/", contains="nope")
    assert _probe("127.0.0.1", wrong) == (
        f"GET https://127.0.0.1:{https_server}/wp-json/ does not contain 'nope'"
    )
    missing = HealthCheck(HealthKind.HTTPS, https_server, "/missing")
    assert _probe("127.0.0.1", missing) == (
        f"GET https://127.0.0.1:{https_server}/missing answered 404, expected 200"
    )
    # plain HTTP to a TLS port fails: the scheme follows the kind
    plain = HealthCheck(HealthKind.HTTP, https_server, "/wp-json/")
    problem = _probe("127.0.0.1", plain)
    assert problem is not None and problem.startswith(f"GET http://127.0.0.1:{https_server}/")

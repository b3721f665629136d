"""Pure logic of the pipeline's phases."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import pytest

from pipeline.context import Context, off_loop
from pipeline.create import preflight
from pipeline.finalize import parse_listening
from provisioner.errors import PermanentError
from provisioner.pve.types import BridgeInfo, StorageInfo
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


class _PreflightPve:
    """What ``preflight`` asks the node, answered as a node with one pool."""

    connection = type("Conn", (), {"node": "pve"})()

    def version(self) -> dict[str, str]:
        return {"version": "8.2"}

    def storages(self) -> list[StorageInfo]:
        return [StorageInfo.from_api({"storage": "local-lvm", "content": "rootdir,images"})]

    def bridges(self) -> list[BridgeInfo]:
        return [BridgeInfo.from_api({"iface": "vmbr0"})]

    def pools(self) -> list[str]:
        return ["web"]

    def ensure_template(self, storage: str, volid: str) -> bool:
        return False


class _PreflightCtx:
    pve = _PreflightPve()

    def step(self, message: str, progress: float) -> None:
        pass

    def log(self, message: str) -> None:
        pass


def test_preflight_refuses_a_pool_the_node_does_not_have() -> None:
    """PVE's create_vm checks the pool first (check_pool_exist): the
    pre-flight says so before the create, naming the pools there are."""
    params: dict[str, object] = {"rootfs": "local-lvm:8", "net0": "name=eth0,bridge=vmbr0",
                                 "ostemplate": "local:vztmpl/debian.tar.zst"}  # fmt: skip
    ctx = cast(Context, _PreflightCtx())
    preflight(ctx, {**params, "pool": "web"}, 8)
    with pytest.raises(PermanentError, match="pool 'db' does not exist") as refused:
        preflight(ctx, {**params, "pool": "db"}, 8)
    assert refused.value.hint == "pools: web"

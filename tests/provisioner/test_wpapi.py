"""The WordPress REST client against a real HTTPS server on loopback that
answers as WordPress does (a unit test of the adapter: the whole import
runs against a real WordPress in tests/pipeline/test_sandboxes.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from provisioner.errors import TransientError
from provisioner.wpapi import MediaMissing, MediaTooLarge, WpClient, WpError, WpSite, WpTrust
from tests.certs import self_signed

pytestmark = pytest.mark.timeout(30)
PASSWORD = "abcd EFGH ijkl MNOP qrst UVWX"
POSTS = [{"id": i, "slug": f"post-{i}"} for i in range(1, 251)]
FILE = bytes(range(256)) * 40


class Handler(BaseHTTPRequestHandler):
    rest = True  # class-level switches for one test
    seen: list[str] = []  # noqa: RUF012

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, bytes)
                         else "image/jpeg")  # fmt: skip
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        Handler.seen.append(self.path)
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        route = parts.path.removeprefix("/wp-json")
        if parts.path == "/" and "rest_route" in query:
            route = query["rest_route"][0]
        if route.startswith("/wp-content/"):
            if route.endswith("missing.jpg"):
                return self._send(404, {"code": "not_found"})
            return self._send(200, FILE)
        if not Handler.rest or not (parts.path.startswith("/wp-json") or "rest_route" in query):
            return self._send(404, b"<html>not found</html>")
        auth = self.headers.get("Authorization", "")
        good = "Basic " + base64.b64encode(f"editor:{PASSWORD}".encode()).decode()
        if route == "/":
            return self._send(200, {"name": "Site", "namespaces": ["oembed/1.0", "wp/v2"]})
        if auth != good:
            return self._send(401, {"code": "incorrect_password",
                                    "message": "The provided password is an invalid application password."})  # fmt: skip
        if route == "/wp/v2/users/me":
            return self._send(200, {"id": 2, "name": "Ed", "roles": ["editor"]})
        if route == "/wp/v2/posts":
            page, per = int(query["page"][0]), int(query["per_page"][0])
            items = POSTS[(page - 1) * per : page * per]
            return self._send(200, items, {"X-WP-Total": str(len(POSTS)),
                                           "X-WP-TotalPages": str(-(-len(POSTS) // per))})  # fmt: skip
        if route == "/wp/v2/broken":
            return self._send(502, b"bad gateway")
        return self._send(404, {"code": "rest_no_route", "message": "No route was found"})

    def do_POST(self) -> None:
        Handler.seen.append("POST " + self.path)
        self._send(201, {"id": 1})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str]]:
    cert, key, _ = self_signed(tmp_path_factory.mktemp("wp"))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    yield f"https://127.0.0.1:{httpd.server_address[1]}", cert, hashlib.sha256(der).hexdigest()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _reset() -> None:
    Handler.rest = True
    Handler.seen = []


def client(base: str, trust: WpTrust, password: str = PASSWORD, read_only: bool = True) -> WpClient:
    return WpClient(WpSite(base, "editor", password, trust, read_only=read_only))


def test_reads_with_the_ca_or_the_pin(server: tuple[str, Path, str]) -> None:
    base, cert, pin = server
    for trust in (WpTrust(ca_file=str(cert)), WpTrust(fingerprint=pin)):
        with client(base, trust) as wp:
            assert wp.index()["name"] == "Site"
            assert wp.me()["roles"] == ["editor"]
            pages = list(wp.pages("/wp/v2/posts", context="edit"))
            assert [len(items) for items, _ in pages] == [100, 100, 50]
            assert {total for _, total in pages} == {250}
            assert [p["slug"] for p in wp.collect("/wp/v2/posts")] == [p["slug"] for p in POSTS]


def test_untrusted_certificate_is_refused(server: tuple[str, Path, str]) -> None:
    base = server[0]
    for trust in (WpTrust(), WpTrust(fingerprint="0" * 64)):
        with client(base, trust) as wp, pytest.raises(WpError, match="not trusted") as caught:
            wp.index()
        assert caught.value.hint and "--fingerprint" in caught.value.hint
    assert not Handler.seen  # nothing was sent before the handshake failed


def test_a_wrong_password_names_the_user_never_the_password(server: tuple[str, Path, str]) -> None:
    base, _, pin = server
    wrong = "zzzz zzzz zzzz zzzz zzzz zzzz"
    with (
        client(base, WpTrust(fingerprint=pin), wrong) as wp,
        pytest.raises(WpError, match="refused the Application Password of user 'editor'") as caught,
    ):
        wp.me()
    assert "zzzz" not in str(caught.value) and "zzzz" not in repr(wp.site)
    assert not any("zzzz" in path for path in Handler.seen)


def test_the_source_is_only_read(server: tuple[str, Path, str]) -> None:
    base, _, pin = server
    with client(base, WpTrust(fingerprint=pin)) as wp, pytest.raises(WpError, match="only read"):
        wp.create("/wp/v2/posts", {"title": "x"})
    assert not Handler.seen
    with client(base, WpTrust(fingerprint=pin), read_only=False) as wp:
        assert wp.create("/wp/v2/posts", {"title": "x"}) == {"id": 1}


def test_no_rest_api(server: tuple[str, Path, str]) -> None:
    base, _, pin = server
    Handler.rest = False
    with (
        client(base, WpTrust(fingerprint=pin)) as wp,
        pytest.raises(WpError, match="no WordPress REST API"),
    ):
        wp.index()
    assert any("rest_route" in path for path in Handler.seen)  # tried both forms


def test_server_errors_and_unreachable_are_transient(server: tuple[str, Path, str]) -> None:
    base, _, pin = server
    with client(base, WpTrust(fingerprint=pin)) as wp, pytest.raises(TransientError, match="502"):
        wp.get("/wp/v2/broken")
    unreachable = client("https://127.0.0.1:9", WpTrust(fingerprint=pin))
    with unreachable, pytest.raises(TransientError, match=r"cannot reach https://127\.0\.0\.1:9"):
        unreachable.index()


def test_downloads(server: tuple[str, Path, str]) -> None:
    base, _, pin = server
    counted: list[int] = []
    with client(base, WpTrust(fingerprint=pin)) as wp:
        url = f"{base}/wp-content/uploads/a.jpg"
        assert wp.download(url, 1 << 20, counted.append) == FILE
        assert sum(counted) == len(FILE)
        with pytest.raises(MediaTooLarge, match="over the limit of 1000"):
            wp.download(url, 1000)
        with pytest.raises(MediaMissing, match=r"missing\.jpg: 404"):
            wp.download(f"{base}/wp-content/uploads/missing.jpg", 1 << 20)
        with pytest.raises(WpError, match="not on"):
            wp.download("https://elsewhere.example/a.jpg", 1 << 20)

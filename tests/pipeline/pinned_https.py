"""An HTTPS client for a container that serves its own self-signed
certificate (the wordpress template): the certificate is pinned by its
SHA-256 fingerprint, as the template's scripts print it, and checked before
anything is sent."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import ssl
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: The line scripts/20-tls.sh and 50-verify.sh print (and the clone hook).
FINGERPRINT_RE = re.compile(
    r"TLS certificate SHA-256 fingerprint: ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})$"
)


def last_fingerprint(lines: Iterable[str]) -> str | None:
    """The last certificate fingerprint printed in ``lines``, or None."""
    found = [m.group(1) for line in lines if (m := FINGERPRINT_RE.search(line))]
    return found[-1] if found else None


def fingerprint_of(der: bytes) -> str:
    """``AB:CD:...``: the SHA-256 of a DER certificate, as openssl prints it."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


@dataclass(frozen=True)
class Pinned:
    """HTTPS to ``ip``:443 whose certificate must have ``fingerprint``;
    ``auth`` ("user:password") is sent as HTTP basic auth."""

    ip: str
    fingerprint: str
    auth: str | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        """One request: (status, headers with lower-case names, body).

        Raises:
            ssl.SSLError: the certificate is not the pinned one (nothing was sent).
        """
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the pin below is the check
        conn = http.client.HTTPSConnection(self.ip, 443, timeout=30, context=context)
        try:
            conn.connect()
            assert isinstance(conn.sock, ssl.SSLSocket)
            seen = fingerprint_of(conn.sock.getpeercert(binary_form=True) or b"")
            if seen != self.fingerprint:
                raise ssl.SSLError(f"{self.ip}: certificate {seen} is not the pinned one")
            sent = dict(headers or {})
            if self.auth is not None:
                sent["Authorization"] = "Basic " + base64.b64encode(self.auth.encode()).decode()
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        """A JSON request (``payload`` None: no body) and its decoded answer."""
        headers = {"Accept": "application/json"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        status, _headers, data = self.request(method, path, body, headers)
        try:
            return status, json.loads(data)
        except ValueError:
            return status, data.decode(errors="replace")


def tiny_png() -> bytes:
    """A valid 2x2 red PNG, for a media upload."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))  # fmt: skip

"""Websocket text frames made by hand: the relay frames each event once
(``web.tail``) and writes ready bytes, instead of one library call per
message per client.  Pure: no Flask, no sockets."""

from __future__ import annotations

import struct
from collections.abc import Iterable

_TEXT = 0x81  # FIN + text opcode


def text_frames(payloads: Iterable[bytes]) -> bytes:
    """Unmasked (server) websocket text frames, one message per payload.

    Uncompressed even when permessage-deflate was agreed: RFC 7692 lets every
    message choose (RSV1 clear), and deflating log lines costs more CPU than
    the bytes it saves on a LAN.  The payloads are JSON from ``json.dumps``:
    ASCII, hence valid UTF-8.
    """
    parts: list[bytes] = []
    for payload in payloads:
        n = len(payload)
        if n < 126:
            parts.append(bytes((_TEXT, n)))
        elif n < 1 << 16:
            parts.append(struct.pack("!BBH", _TEXT, 126, n))
        else:
            parts.append(struct.pack("!BBQ", _TEXT, 127, n))
        parts.append(payload)
    return b"".join(parts)

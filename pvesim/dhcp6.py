"""A small stateful DHCPv6 server (RFC 8415) for the simulator's bridge.

A container with ``ip6=dhcp`` gets ``iface eth0 inet6 dhcp`` and runs
``dhclient -6``; without a server ifupdown waits for it and the container's
network (and SSH) comes up only after dhclient gives up.  This server
answers SOLICIT, REQUEST, RENEW, REBIND and CONFIRM with one address (IA_NA)
from the simulator's IPv6 subnet, chosen by the ``address_for`` callback.
Parsing and building are pure functions; :class:`Dhcp6Server` adds the socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SERVER_PORT, CLIENT_PORT = 547, 546
ALL_SERVERS = "ff02::1:2"
SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE = range(1, 10)
INFORMATION_REQUEST = 11
OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_IAADDR, OPT_STATUS = 1, 2, 3, 5, 13
OPT_RAPID_COMMIT = 14
STATUS_NOT_ON_LINK = 4
PREFERRED, VALID = 1800, 3600


@dataclass
class Dhcp6Message:
    msg_type: int
    xid: bytes
    options: list[tuple[int, bytes]]

    def option(self, code: int) -> bytes | None:
        return next((v for c, v in self.options if c == code), None)


def parse_options(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos + 4 <= len(data):
        code, length = struct.unpack_from("!HH", data, pos)
        if pos + 4 + length > len(data):
            raise ValueError(f"truncated option {code}")
        out.append((code, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def parse_message(data: bytes) -> Dhcp6Message:
    """Raises ValueError for a truncated or malformed message."""
    if len(data) < 4:
        raise ValueError("short DHCPv6 message")
    return Dhcp6Message(data[0], data[1:4], parse_options(data[4:]))


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("!HH", code, len(value)) + value


def mac_of_duid(duid: bytes) -> str | None:
    """The link-layer address in a DUID-LLT (1) or DUID-LL (3) of Ethernet."""
    if len(duid) >= 14 and duid[:4] == b"\x00\x01\x00\x01":
        raw = duid[8:14]
    elif len(duid) >= 10 and duid[:4] == b"\x00\x03\x00\x01":
        raw = duid[4:10]
    else:
        return None
    return ":".join(f"{b:02x}" for b in raw)


def mac_of_link_local(address: str) -> str | None:
    """The MAC in an EUI-64 link-local address (``fe80::be24:11ff:fe2b:8eed``)."""
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return None
    iid = ip.packed[8:]
    if not ip.is_link_local or iid[3:5] != b"\xff\xfe":
        return None
    raw = bytes([iid[0] ^ 0x02]) + iid[1:3] + iid[5:8]
    return ":".join(f"{b:02x}" for b in raw)


def server_duid(mac: str) -> bytes:
    """A DUID-LL from the bridge's MAC."""
    return b"\x00\x03\x00\x01" + bytes(int(x, 16) for x in mac.split(":"))


def build_reply(msg: Dhcp6Message, server_id: bytes, address: str | None) -> bytes | None:
    """ADVERTISE for SOLICIT (REPLY with rapid commit), REPLY otherwise; the
    client's IA_NA (its IAID) with ``address``, or NotOnLink without one."""
    client_id = msg.option(OPT_CLIENTID)
    if client_id is None:
        return None
    if msg.msg_type == SOLICIT:
        rapid = msg.option(OPT_RAPID_COMMIT) is not None
        kind = REPLY if rapid else ADVERTISE
    elif msg.msg_type in (REQUEST, RENEW, REBIND, CONFIRM, RELEASE, DECLINE):
        kind = REPLY
    else:
        return None
    opts = _opt(OPT_CLIENTID, client_id) + _opt(OPT_SERVERID, server_id)
    if msg.msg_type == SOLICIT and msg.option(OPT_RAPID_COMMIT) is not None:
        opts += _opt(OPT_RAPID_COMMIT, b"")
    ia = msg.option(OPT_IA_NA)
    if ia is not None and len(ia) >= 12 and msg.msg_type not in (RELEASE, DECLINE):
        iaid = ia[:4]
        if address is None:
            inner = _opt(OPT_STATUS, struct.pack("!H", STATUS_NOT_ON_LINK) + b"no address")
        else:
            addr = ipaddress.IPv6Address(address).packed
            inner = _opt(OPT_IAADDR, addr + struct.pack("!II", PREFERRED, VALID))
        opts += _opt(OPT_IA_NA, iaid + struct.pack("!II", PREFERRED // 2, PREFERRED * 4 // 5)
                     + inner)  # fmt: skip
    return bytes([kind]) + msg.xid + opts


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: Dhcp6Server) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            reply = self.server.handle(data, str(addr[0]))
            if reply is not None and self.server.transport is not None:
                self.server.transport.sendto(reply, (addr[0], CLIENT_PORT, 0, self.server.ifindex))
        except Exception:  # one bad packet must not kill the server
            log.exception("DHCPv6: error handling packet from %s", addr)


class Dhcp6Server:
    """DHCPv6 on one bridge: joins ff02::1:2 there and answers on port 547."""

    def __init__(self, interface: str, address_for: Callable[[str], str | None]) -> None:
        self.interface = interface
        self.address_for = address_for
        self.transport: asyncio.DatagramTransport | None = None
        self.ifindex = 0
        self.duid = b""

    async def start(self) -> None:
        self.ifindex = socket.if_nametoindex(self.interface)
        with open(f"/sys/class/net/{self.interface}/address") as fh:
            self.duid = server_duid(fh.read().strip())
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            group = socket.inet_pton(socket.AF_INET6, ALL_SERVERS) + struct.pack("@I", self.ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
            sock.bind(("::", SERVER_PORT))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        log.info("DHCPv6 server on %s", self.interface)

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def handle(self, data: bytes, source: str = "") -> bytes | None:
        """The reply to one client message (None: no answer)."""
        try:
            msg = parse_message(data)
        except ValueError as exc:
            log.debug("DHCPv6: dropped packet: %s", exc)
            return None
        server_id = msg.option(OPT_SERVERID)
        if server_id is not None and server_id != self.duid:
            return None  # meant for another server
        mac = mac_of_duid(msg.option(OPT_CLIENTID) or b"") or mac_of_link_local(source)
        address = self.address_for(mac) if mac else None
        if address is None and msg.msg_type == SOLICIT:
            return None  # not one of ours
        reply = build_reply(msg, self.duid, address)
        if reply is not None:
            log.info("DHCPv6: %s %s -> %s", msg.msg_type, mac, address)
        return reply

"""A small DHCPv4 server for the simulator's bridge.

Containers run ISC dhclient in their own network namespace; this server answers
them on the bridge.  Which address a MAC gets is decided by the ``lease_for``
callback, and ``delay_for`` lets a MAC be ignored for a while after its first
packet to simulate a late lease.  Packet parsing and building are pure
functions; :class:`DhcpServer` only adds the socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SERVER_PORT = 67
CLIENT_PORT = 68
MAGIC_COOKIE = b"\x63\x82\x53\x63"
BOOTREQUEST, BOOTREPLY = 1, 2
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
MESSAGE_NAMES = dict(
    enumerate(["DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM"], 1)
)
# op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_MIN_REPLY = 300  # the BOOTP minimum; some clients drop shorter packets


@dataclass
class Lease:
    """What one MAC is given."""

    ip: str
    prefix_len: int
    router: str | None = None
    dns: list[str] = field(default_factory=list)
    lease_time: int = 3600
    hostname: str | None = None


@dataclass
class DhcpPacket:
    """A decoded BOOTP/DHCP packet; addresses as dotted strings."""

    op: int
    xid: int
    mac: str
    chaddr: bytes = b""
    secs: int = 0
    flags: int = 0
    ciaddr: str = "0.0.0.0"
    yiaddr: str = "0.0.0.0"
    siaddr: str = "0.0.0.0"
    giaddr: str = "0.0.0.0"
    htype: int = 1
    hlen: int = 6
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def msg_type(self) -> int | None:
        value = self.options.get(53)
        return value[0] if value else None

    def ip_option(self, code: int) -> str | None:
        """An option holding one IPv4 address (50 requested IP, 54 server id...)."""
        value = self.options.get(code)
        return socket.inet_ntoa(value[:4]) if value and len(value) >= 4 else None

    @property
    def requested_ip(self) -> str | None:
        # Option 50 in SELECTING/INIT-REBOOT, ciaddr when renewing or rebinding.
        return self.ip_option(50) or (self.ciaddr if self.ciaddr != "0.0.0.0" else None)


def normalize_mac(mac: str) -> str:
    """``AA-BB-CC-DD-EE-FF``, ``aabb.ccdd.eeff`` etc. -> ``aa:bb:cc:dd:ee:ff``."""
    digits = "".join(c for c in mac.lower() if c in "0123456789abcdef")
    if len(digits) != 12:
        raise ValueError(f"not a MAC address: {mac!r}")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def parse_packet(data: bytes) -> DhcpPacket:
    """Decode a DHCP packet.

    Args:
        data: The UDP payload.

    Returns:
        The packet; repeated options are concatenated (RFC 3396).

    Raises:
        ValueError: If the packet is truncated or not DHCP.
    """
    if len(data) < _HEADER.size + 4 or data[_HEADER.size : _HEADER.size + 4] != MAGIC_COOKIE:
        raise ValueError("not a DHCP packet")
    op, htype, hlen, _hops, xid, secs, flags, ci, yi, si, gi, chaddr, _sn, _f = _HEADER.unpack_from(
        data
    )
    options: dict[int, bytes] = {}
    pos, end = _HEADER.size + 4, len(data)
    while pos < end:
        code = data[pos]
        if code == 255:
            break
        if code == 0:
            pos += 1
            continue
        if pos + 1 >= end or pos + 2 + data[pos + 1] > end:
            raise ValueError(f"truncated option {code}")
        length = data[pos + 1]
        options[code] = options.get(code, b"") + data[pos + 2 : pos + 2 + length]
        pos += 2 + length
    mac = ":".join(f"{b:02x}" for b in chaddr[:6])
    return DhcpPacket(
        op=op,
        xid=xid,
        mac=mac,
        chaddr=chaddr,
        secs=secs,
        flags=flags,
        ciaddr=socket.inet_ntoa(ci),
        yiaddr=socket.inet_ntoa(yi),
        siaddr=socket.inet_ntoa(si),
        giaddr=socket.inet_ntoa(gi),
        htype=htype,
        hlen=hlen,
        options=options,
    )


def encode_packet(packet: DhcpPacket) -> bytes:
    """Encode a packet (options in ascending code order, then 255), padded to 300 bytes."""
    chaddr = packet.chaddr or bytes.fromhex(packet.mac.replace(":", ""))
    header = _HEADER.pack(
        packet.op,
        packet.htype,
        packet.hlen,
        0,
        packet.xid,
        packet.secs,
        packet.flags,
        socket.inet_aton(packet.ciaddr),
        socket.inet_aton(packet.yiaddr),
        socket.inet_aton(packet.siaddr),
        socket.inet_aton(packet.giaddr),
        chaddr.ljust(16, b"\0")[:16],
        b"",
        b"",
    )
    body = bytearray(MAGIC_COOKIE)
    for code in sorted(packet.options):
        value = packet.options[code]
        # Values over 255 bytes are split into several instances (RFC 3396).
        for i in range(0, max(len(value), 1), 255):
            chunk = value[i : i + 255]
            body += bytes([code, len(chunk)]) + chunk
    body.append(255)
    return (header + bytes(body)).ljust(_MIN_REPLY, b"\0")


def build_reply(
    request: DhcpPacket, msg_type: int, server_ip: str, lease: Lease | None = None
) -> bytes:
    """Build the server's answer to ``request``.

    Args:
        request: The client's packet (xid, chaddr, flags and giaddr are echoed).
        msg_type: OFFER, ACK or NAK.
        server_ip: Our address on the bridge, sent as option 54.
        lease: The client's lease; ignored for NAK.  An ACK to an INFORM carries
            configuration only: no ``yiaddr`` and no lease times (RFC 2131 4.3.5).

    Returns:
        The encoded packet.
    """
    opts: dict[int, bytes] = {53: bytes([msg_type]), 54: socket.inet_aton(server_ip)}
    yiaddr = "0.0.0.0"
    if msg_type != NAK and lease is not None:
        if request.msg_type != INFORM:
            yiaddr = lease.ip
            opts[51] = struct.pack("!I", lease.lease_time)
            opts[58] = struct.pack("!I", lease.lease_time // 2)
            opts[59] = struct.pack("!I", lease.lease_time * 7 // 8)
        net = ipaddress.IPv4Network(f"0.0.0.0/{lease.prefix_len}")
        opts[1] = net.netmask.packed
        if lease.router:
            opts[3] = socket.inet_aton(lease.router)
        if lease.dns:
            opts[6] = b"".join(socket.inet_aton(d) for d in lease.dns)
        if lease.hostname:
            opts[12] = lease.hostname.encode()
    reply = DhcpPacket(
        op=BOOTREPLY,
        xid=request.xid,
        mac=request.mac,
        chaddr=request.chaddr,
        flags=request.flags,
        ciaddr=request.ciaddr if msg_type != NAK else "0.0.0.0",
        yiaddr=yiaddr,
        giaddr=request.giaddr,
        htype=request.htype,
        hlen=request.hlen,
        options=opts,
    )
    return encode_packet(reply)


class DelayGate:
    """Keeps the server silent towards a MAC until its delay since first contact passed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.first_seen: dict[str, float] = {}

    def allows(self, mac: str, delay: float) -> bool:
        """Record contact from ``mac``; True once ``delay`` seconds passed since the first."""
        now = self._clock()
        first = self.first_seen.setdefault(normalize_mac(mac), now)
        return now - first >= delay

    def forget(self, mac: str) -> None:
        """Start the delay afresh at the MAC's next packet (e.g. the container restarted)."""
        self.first_seen.pop(normalize_mac(mac), None)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DhcpServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        try:
            self.server.handle(data)
        except Exception:  # one bad packet or callback must not kill the server
            log.exception("DHCP: error handling packet from %s", addr)


class DhcpServer:
    """DHCPv4 server bound to one bridge; replies are broadcast on that bridge."""

    def __init__(
        self,
        interface: str,
        server_ip: str,
        lease_for: Callable[[str], Lease | None],
        delay_for: Callable[[str], float] = lambda mac: 0.0,
        on_lease: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interface = interface
        self.server_ip = server_ip
        self.lease_for = lease_for
        self.delay_for = delay_for
        self.on_lease = on_lease
        self.gate = DelayGate(clock)
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        """Open the socket: 0.0.0.0:67 bound to the bridge, so instances do not clash."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            sock.bind(("0.0.0.0", SERVER_PORT))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        log.info("DHCP server on %s (%s)", self.interface, self.server_ip)

    async def stop(self) -> None:
        """Close the socket."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def forget(self, mac: str) -> None:
        """Re-arm the MAC's delay, e.g. when its container starts again."""
        self.gate.forget(mac)

    def handle(self, data: bytes) -> bytes | None:
        """Process one request and send the reply, if any.

        Args:
            data: The UDP payload received on port 67.

        Returns:
            The reply that was sent (also returned without a socket, for tests).
        """
        try:
            pkt = parse_packet(data)
        except ValueError as exc:
            log.debug("DHCP: dropped packet: %s", exc)
            return None
        if pkt.op != BOOTREQUEST or pkt.htype != 1 or pkt.hlen != 6 or pkt.msg_type is None:
            return None
        mac, kind = pkt.mac, pkt.msg_type
        lease = self.lease_for(mac)
        if lease is None:
            return None  # not one of ours: another server may answer it
        if not self.gate.allows(mac, self.delay_for(mac)):
            log.debug("DHCP: %s from %s ignored (delayed)", MESSAGE_NAMES.get(kind), mac)
            return None
        reply_type: int | None = None
        if kind == DISCOVER:
            reply_type = OFFER
        elif kind == REQUEST:
            server_id = pkt.ip_option(54)
            if server_id is not None and server_id != self.server_ip:
                return None  # the client chose another server's offer
            reply_type = ACK if pkt.requested_ip == lease.ip else NAK
        elif kind == INFORM:
            reply_type = ACK
        elif kind == RELEASE:
            self.gate.forget(mac)
        elif kind == DECLINE:
            log.warning("DHCP: %s declined %s (address in use?)", mac, pkt.ip_option(50))
        if reply_type is None:
            return None
        reply = build_reply(pkt, reply_type, self.server_ip, lease)
        log.info("DHCP: %s %s -> %s", MESSAGE_NAMES[reply_type], mac, lease.ip)
        if self._transport is not None:
            # Clients have no address yet; dhclient reads raw frames, so a broadcast reaches it.
            self._transport.sendto(reply, ("255.255.255.255", CLIENT_PORT))
        if reply_type == ACK and kind == REQUEST and self.on_lease is not None:
            self.on_lease(mac, lease.ip)
        return reply

"""Router advertisements for ``ip6=auto`` (SLAAC) on the simulator's bridge.

A container with ``ip6=auto`` gets ``iface eth0 inet6 auto``; its kernel
sends router solicitations and forms an address from the prefix of an
advertisement.  This answers the solicitations of those containers only
(the ``wants_ra`` callback, by MAC), unicast, with the simulator's IPv6 /64
(on-link, autonomous) and the bridge as a router - through which nothing is
routed, as the host forwards no IPv6.  Other containers see no RA, as on a
network without an IPv6 router.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

from pvesim.dhcp6 import mac_of_link_local

log = logging.getLogger(__name__)

ROUTER_SOLICITATION, ROUTER_ADVERTISEMENT = 133, 134
ALL_ROUTERS = "ff02::2"
VALID, PREFERRED, ROUTER_LIFETIME = 86400, 14400, 1800


def build_ra(prefix: ipaddress.IPv6Network, mac: str) -> bytes:
    """An RA: hop limit 64, no M/O flags, the source link-layer address and
    one prefix with the on-link and autonomous flags (RFC 4861 4.2, 4.6)."""
    header = struct.pack("!BBHBBHII", ROUTER_ADVERTISEMENT, 0, 0, 64, 0, ROUTER_LIFETIME, 0, 0)
    lladdr = struct.pack("!BB", 1, 1) + bytes(int(x, 16) for x in mac.split(":"))
    info = struct.pack("!BBBBIII", 3, 4, prefix.prefixlen, 0xC0, VALID, PREFERRED, 0)
    return header + lladdr + info + prefix.network_address.packed


class RouterAdvertiser:
    """Answers router solicitations on one bridge (raw ICMPv6 socket)."""

    def __init__(self, interface: str, prefix: ipaddress.IPv6Network,
                 wants_ra: Callable[[str], bool]) -> None:  # fmt: skip
        self.interface = interface
        self.prefix = prefix
        self.wants_ra = wants_ra
        self._sock: socket.socket | None = None
        self._ifindex = 0
        self._ra = b""

    async def start(self) -> None:
        self._ifindex = socket.if_nametoindex(self.interface)
        with open(f"/sys/class/net/{self.interface}/address") as fh:
            self._ra = build_ra(self.prefix, fh.read().strip())
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            group = socket.inet_pton(socket.AF_INET6, ALL_ROUTERS) + struct.pack(
                "@I", self._ifindex
            )
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        log.info("router advertisements on %s (%s)", self.interface, self.prefix)

    async def stop(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data, addr = self._sock.recvfrom(1500)
        except OSError:
            return
        if not data or data[0] != ROUTER_SOLICITATION:
            return
        mac = mac_of_link_local(str(addr[0]))
        if mac is None or not self.wants_ra(mac):
            return
        try:
            self._sock.sendto(self._ra, (str(addr[0]).split("%")[0], 0, 0, self._ifindex))
        except OSError as exc:
            log.warning("RA to %s failed: %s", addr[0], exc)

"""Tests for the DHCP server: packets without sockets, plus one real dhclient run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pvesim import dhcp
from pvesim.dhcp import (
    ACK,
    DISCOVER,
    INFORM,
    NAK,
    OFFER,
    RELEASE,
    REQUEST,
    DelayGate,
    DhcpPacket,
    DhcpServer,
    Lease,
    build_reply,
    encode_packet,
    normalize_mac,
    parse_packet,
)

MAC = "02:ab:cd:00:11:22"
SERVER = "198.18.250.1"
LEASE = Lease(
    ip="198.18.250.10",
    prefix_len=24,
    router=SERVER,
    dns=[SERVER, "198.18.250.2"],
    lease_time=3600,
    hostname="ct101",
)
# What Debian 12's dhclient asks for in option 55.
PARAM_LIST = bytes([1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42])


def dhclient_packet(
    msg_type: int,
    mac: str = MAC,
    xid: int = 0x3903F326,
    extra: bytes = b"",
    ciaddr: str = "0.0.0.0",
) -> bytes:
    """A request laid out byte by byte as ISC dhclient sends it."""
    chaddr = bytes.fromhex(mac.replace(":", ""))
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1,  # BOOTREQUEST
        1,  # ethernet
        6,
        0,
        xid,
        3,  # secs
        0,  # flags: dhclient does not ask for broadcast
        socket.inet_aton(ciaddr),
        bytes(4),
        bytes(4),
        bytes(4),
        chaddr.ljust(16, b"\0"),
        bytes(64),
        bytes(128),
    )
    options = (
        b"\x63\x82\x53\x63"
        + bytes([53, 1, msg_type])
        + bytes([12, 5])
        + b"ct101"
        + bytes([55, len(PARAM_LIST)])
        + PARAM_LIST
        + bytes([61, 7, 1])
        + chaddr
        + extra
        + b"\xff"
    )
    return (header + options).ljust(300, b"\0")


def test_parse_realistic_discover() -> None:
    pkt = parse_packet(dhclient_packet(DISCOVER))
    assert pkt.op == dhcp.BOOTREQUEST
    assert pkt.xid == 0x3903F326
    assert pkt.mac == MAC
    assert pkt.secs == 3
    assert pkt.msg_type == DISCOVER
    assert pkt.options[12] == b"ct101"
    assert pkt.options[55] == PARAM_LIST
    assert pkt.options[61] == b"\x01" + bytes.fromhex("02abcd001122")
    assert pkt.requested_ip is None
    assert pkt.ciaddr == "0.0.0.0"


def test_parse_requested_ip_and_server_id() -> None:
    extra = bytes([50, 4]) + socket.inet_aton(LEASE.ip) + bytes([54, 4]) + socket.inet_aton(SERVER)
    pkt = parse_packet(dhclient_packet(REQUEST, extra=extra))
    assert pkt.requested_ip == LEASE.ip
    assert pkt.ip_option(54) == SERVER
    # A renewing client names its address in ciaddr instead of option 50.
    assert parse_packet(dhclient_packet(REQUEST, ciaddr=LEASE.ip)).requested_ip == LEASE.ip


def test_parse_concatenates_repeated_options() -> None:
    pkt = parse_packet(dhclient_packet(DISCOVER, extra=b"\x0f\x02ab\x00\x0f\x01c"))
    assert pkt.options[15] == b"abc"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(300),  # no magic cookie
        dhclient_packet(DISCOVER)[:236],
        dhclient_packet(DISCOVER)[:240] + bytes([53, 9, 1]),  # option runs past the end
    ],
)
def test_parse_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_packet(data)


def test_normalize_mac() -> None:
    assert normalize_mac("02-AB-CD-00-11-22") == MAC
    assert normalize_mac("02ab.cd00.1122") == MAC
    assert normalize_mac("02:AB:CD:00:11:22") == MAC
    with pytest.raises(ValueError):
        normalize_mac("02:ab:cd")


def test_build_offer_round_trip() -> None:
    request = parse_packet(dhclient_packet(DISCOVER))
    raw = build_reply(request, OFFER, SERVER, LEASE)
    assert len(raw) >= 300
    reply = parse_packet(raw)
    assert reply.op == dhcp.BOOTREPLY
    assert reply.xid == request.xid
    assert reply.mac == MAC
    assert reply.chaddr == request.chaddr
    assert reply.yiaddr == LEASE.ip
    assert reply.msg_type == OFFER
    assert reply.ip_option(54) == SERVER
    assert reply.options[1] == socket.inet_aton("255.255.255.0")
    assert reply.ip_option(3) == SERVER
    assert reply.options[6] == socket.inet_aton(SERVER) + socket.inet_aton("198.18.250.2")
    assert reply.options[12] == b"ct101"
    assert struct.unpack("!I", reply.options[51]) == (3600,)
    assert struct.unpack("!I", reply.options[58]) == (1800,)
    assert struct.unpack("!I", reply.options[59]) == (3150,)


def test_build_ack_leaves_out_what_is_not_given() -> None:
    request = parse_packet(dhclient_packet(REQUEST))
    bare = Lease(ip="198.18.250.20", prefix_len=28, lease_time=600)
    reply = parse_packet(build_reply(request, ACK, SERVER, bare))
    assert reply.msg_type == ACK
    assert reply.yiaddr == "198.18.250.20"
    assert reply.options[1] == socket.inet_aton("255.255.255.240")
    assert not {3, 6, 12} & reply.options.keys()


def test_build_nak() -> None:
    request = parse_packet(dhclient_packet(REQUEST, ciaddr="10.0.0.5"))
    reply = parse_packet(build_reply(request, NAK, SERVER, LEASE))
    assert reply.msg_type == NAK
    assert reply.yiaddr == "0.0.0.0"
    assert reply.ciaddr == "0.0.0.0"
    assert set(reply.options) == {53, 54}


def test_build_inform_ack_has_no_lease() -> None:
    request = parse_packet(dhclient_packet(INFORM, ciaddr=LEASE.ip))
    reply = parse_packet(build_reply(request, ACK, SERVER, LEASE))
    assert reply.yiaddr == "0.0.0.0"
    assert reply.ciaddr == LEASE.ip
    assert not {51, 58, 59} & reply.options.keys()
    assert reply.ip_option(3) == SERVER


def test_encode_splits_long_options() -> None:
    pkt = DhcpPacket(op=2, xid=1, mac=MAC, options={53: bytes([ACK]), 43: bytes(300)})
    assert parse_packet(encode_packet(pkt)).options[43] == bytes(300)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delay_gate() -> None:
    clock = FakeClock()
    gate = DelayGate(clock)
    assert gate.allows("aa:aa:aa:aa:aa:aa", 0.0)
    assert not gate.allows(MAC, 2.0)
    clock.now += 1.9
    assert not gate.allows(MAC, 2.0)
    clock.now += 0.1
    assert gate.allows(MAC, 2.0)
    gate.forget(MAC.upper())
    assert not gate.allows(MAC, 2.0)


@dataclass
class Recorder:
    leases: list[tuple[str, str]]

    def __call__(self, mac: str, ip: str) -> None:
        self.leases.append((mac, ip))


def make_server(delay: float = 0.0) -> tuple[DhcpServer, FakeClock, Recorder]:
    clock = FakeClock()
    recorder = Recorder([])
    server = DhcpServer(
        "pvesimtest",
        SERVER,
        lease_for=lambda mac: LEASE if mac == MAC else None,
        delay_for=lambda mac: delay,
        on_lease=recorder,
        clock=clock,
    )
    return server, clock, recorder


def request_for(ip: str, server_id: str = SERVER) -> bytes:
    extra = bytes([50, 4]) + socket.inet_aton(ip) + bytes([54, 4]) + socket.inet_aton(server_id)
    return dhclient_packet(REQUEST, extra=extra)


def reply_type(raw: bytes | None) -> int | None:
    return None if raw is None else parse_packet(raw).msg_type


def test_server_discover_request_ack() -> None:
    server, _, recorder = make_server()
    assert reply_type(server.handle(dhclient_packet(DISCOVER))) == OFFER
    assert reply_type(server.handle(request_for(LEASE.ip))) == ACK
    assert recorder.leases == [(MAC, LEASE.ip)]


def test_server_naks_and_ignores() -> None:
    server, _, recorder = make_server()
    assert reply_type(server.handle(request_for("198.18.250.99"))) == NAK
    # The client took another server's offer: stay quiet.
    assert server.handle(request_for(LEASE.ip, server_id="198.18.250.254")) is None
    assert server.handle(dhclient_packet(DISCOVER, mac="02:00:00:00:00:99")) is None
    assert server.handle(b"junk") is None
    assert server.handle(dhclient_packet(RELEASE, ciaddr=LEASE.ip)) is None
    assert recorder.leases == []


def test_server_delay_and_release() -> None:
    server, clock, recorder = make_server(delay=5.0)
    assert server.handle(dhclient_packet(DISCOVER)) is None
    clock.now += 4.0
    assert server.handle(dhclient_packet(DISCOVER)) is None
    clock.now += 1.0
    assert reply_type(server.handle(dhclient_packet(DISCOVER))) == OFFER
    assert reply_type(server.handle(request_for(LEASE.ip))) == ACK
    # A RELEASE re-arms the delay for the next round.
    server.handle(dhclient_packet(RELEASE, ciaddr=LEASE.ip))
    assert server.handle(dhclient_packet(DISCOVER)) is None
    assert len(recorder.leases) == 1


# --- one real run: bridge + veth + netns + dhclient --------------------------------------


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class NetSetup:
    bridge: str
    netns: str
    client_if: str
    client_mac: str
    server_ip: str
    client_ip: str


@pytest.fixture
def testnet() -> Iterator[NetSetup]:
    suffix = secrets.token_hex(3)
    bridge, host_if, client_if, netns = (
        f"brt{suffix}",
        f"vth{suffix}",
        f"vtc{suffix}",
        f"dhcpt-{suffix}",
    )
    # A random /28 inside 198.18.250.0/24 so parallel runs do not share a route.
    base = 16 * secrets.randbelow(16)
    net = NetSetup(bridge, netns, client_if, "", f"198.18.250.{base + 1}", f"198.18.250.{base + 5}")
    try:
        ip("netns", "add", netns)
        ip("link", "add", bridge, "type", "bridge", "forward_delay", "0")
        ip("addr", "add", f"{net.server_ip}/28", "dev", bridge)
        ip("link", "add", host_if, "type", "veth", "peer", "name", client_if, "netns", netns)
        ip("link", "set", host_if, "master", bridge, "up")
        ip("link", "set", bridge, "up")
        ip("-n", netns, "link", "set", client_if, "up")
        out = subprocess.run(
            ["ip", "-n", netns, "-o", "link", "show", client_if],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        net.client_mac = re.search(r"link/ether ([0-9a-f:]{17})", out).group(1)  # type: ignore[union-attr]
        yield net
    finally:
        # Only processes inside our own throw-away namespace: the dhclient we started.
        pids = subprocess.run(
            ["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        for cmd in (["link", "del", host_if], ["link", "del", bridge], ["netns", "del", netns]):
            subprocess.run(["ip", *cmd], capture_output=True, timeout=10)


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for bridges and namespaces")
def test_real_dhclient_gets_delayed_lease(testnet: NetSetup, tmp_path: Path) -> None:
    dhclient = shutil.which("dhclient")
    if dhclient is None:
        pytest.skip("dhclient not installed (apt-get install isc-dhcp-client)")
    lease = Lease(
        ip=testnet.client_ip,
        prefix_len=28,
        router=testnet.server_ip,
        dns=[testnet.server_ip],
        lease_time=600,
        hostname="ct-test",
    )
    leases: dict[str, float] = {}
    # Short retransmit interval so a 2 s silence costs seconds, not tens of seconds.
    conf = tmp_path / "dhclient.conf"
    conf.write_text("initial-interval 1;\ntimeout 30;\n")
    lease_file, log_file = tmp_path / "dhclient.leases", tmp_path / "dhclient.log"

    def on_lease(mac: str, addr: str) -> None:
        leases.setdefault(mac, time.monotonic())

    async def run() -> tuple[int, float]:
        server = DhcpServer(
            testnet.bridge,
            testnet.server_ip,
            lease_for=lambda mac: lease if mac == testnet.client_mac else None,
            delay_for=lambda mac: 2.0,
            on_lease=on_lease,
        )
        await server.start()
        try:
            start = time.monotonic()
            with log_file.open("wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    *["ip", "netns", "exec", testnet.netns, dhclient, "-1", "-v"],
                    *["-cf", str(conf), "-sf", "/bin/true", "-pf", str(tmp_path / "pid")],
                    *["-lf", str(lease_file), testnet.client_if],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
                # dhclient -1 exits (leaving a daemon behind) once bound, or fails after 30 s.
                rc = await asyncio.wait_for(proc.wait(), timeout=45)
            first_seen = server.gate.first_seen.get(testnet.client_mac, start)
            return rc, first_seen
        finally:
            await server.stop()

    rc, first_seen = asyncio.run(run())
    assert rc == 0, log_file.read_text()
    text = lease_file.read_text()
    assert re.search(rf"fixed-address {re.escape(testnet.client_ip)};", text), text
    assert 'option host-name "ct-test";' in text
    assert f"option dhcp-server-identifier {testnet.server_ip};" in text
    assert testnet.client_mac in leases
    assert leases[testnet.client_mac] - first_seen >= 2.0

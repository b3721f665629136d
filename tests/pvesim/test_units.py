"""Pure logic of the simulator, tested without a running simulator."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path

import pytest

from pvesim.api import merge_property_errors
from pvesim.auth import Authenticator, AuthError, Credentials
from pvesim.ctconfig import create_defaults, detect_ostype, stored_description
from pvesim.faults import Faults, HttpFault, TaskFault
from pvesim.guest import (
    NetConfig,
    render_hosts,
    render_interfaces,
    render_resolv,
    size_to_bytes,
    split_property_string,
)
from pvesim.network import SimNetwork, apt_mirror_hosts
from pvesim.node import config_digest, config_value, random_hwaddr
from pvesim.server import ServeError, parse_listen
from pvesim.state import StateStore
from pvesim.tasks import DURATIONS, TaskManager
from pvesim.tls import ensure_certificates
from pvesim.upid import Upid, parse_upid


def test_upid_round_trip_has_trailing_colon() -> None:
    upid = Upid("pve", 0x1A2B, 0x3C4D, 0x655F1A2B, "vzcreate", "100", "root@pam!pvesim")
    text = str(upid)
    assert text == "UPID:pve:00001A2B:00003C4D:655F1A2B:vzcreate:100:root@pam!pvesim:"
    assert parse_upid(text) == upid


@pytest.mark.parametrize("bad", ["UPID:pve:1:2:3:vzcreate:100:root@pam", "nonsense", ""])
def test_upid_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match="unable to parse worker upid"):
        parse_upid(bad)


def _auth(now: float = 1_800_000_000.0) -> Authenticator:
    creds = Credentials("root@pam", "pw-123", "pvesim", "secret-uuid", b"k" * 32)
    return Authenticator(creds, clock=lambda: now)


def test_login_accepts_user_with_or_without_realm() -> None:
    auth = _auth()
    assert auth.login("root@pam", "pw-123") == "root@pam"
    assert auth.login("root", "pw-123", realm="pam") == "root@pam"
    with pytest.raises(AuthError):
        auth.login("root@pam", "wrong")
    with pytest.raises(AuthError):
        auth.login("root", "pw-123", realm="pve")


def test_ticket_and_csrf_round_trip() -> None:
    auth = _auth()
    ticket, csrf = auth.issue_ticket("root@pam")
    assert ticket.startswith("PVE:root@pam:")
    user, stamp = auth.verify_ticket(ticket)
    assert user == "root@pam"
    assert auth.verify_csrf(csrf, user, stamp)
    assert not auth.verify_csrf(csrf + "x", user, stamp)
    assert not auth.verify_csrf(None, user, stamp)


def test_forged_and_expired_tickets_are_refused() -> None:
    auth = _auth()
    ticket, _ = auth.issue_ticket("root@pam")
    with pytest.raises(AuthError):
        auth.verify_ticket(ticket.replace("root@pam", "admin@pve"))
    later = _auth(now=1_800_000_000.0 + 7201)
    with pytest.raises(AuthError, match="invalid PVE ticket"):
        later.verify_ticket(ticket)
    with pytest.raises(AuthError):
        auth.verify_ticket("garbage")


def test_api_token_check() -> None:
    auth = _auth()
    assert auth.verify_token("root@pam!pvesim=secret-uuid") == "root@pam!pvesim"
    for bad in ("root@pam!pvesim=nope", "root@pam!other=secret-uuid", "nonsense"):
        with pytest.raises(AuthError, match="invalid token value"):
            auth.verify_token(bad)


def test_http_faults_are_consumed_in_order() -> None:
    faults = Faults()
    faults.add_http(HttpFault(path=r"/lxc$", status=500, count=2, method="POST"))
    assert faults.take_http("GET", "/nodes/pve/lxc") is None
    assert faults.take_http("POST", "/nodes/pve/lxc/100/status/start") is None
    first = faults.take_http("POST", "/nodes/pve/lxc")
    assert first is not None and first.status == 500
    assert faults.take_http("POST", "/nodes/pve/lxc") is not None
    assert faults.take_http("POST", "/nodes/pve/lxc") is None


def test_fault_validation() -> None:
    faults = Faults()
    with pytest.raises(ValueError):
        faults.add_http(HttpFault(path="(", status=500))
    with pytest.raises(ValueError):
        faults.add_http(HttpFault(path="/x", status=700))
    with pytest.raises(ValueError):
        faults.add_task(TaskFault(type="vzcreate"))


def test_task_faults_match_type_and_vmid() -> None:
    faults = Faults()
    faults.add_task(TaskFault(type="vzstart", vmid=101, error="boom"))
    assert faults.take_task("vzstart", "100") is None
    assert faults.take_task("vzcreate", "101") is None
    taken = faults.take_task("vzstart", "101")
    assert taken is not None and taken.error == "boom"
    assert faults.take_task("vzstart", "101") is None


def test_property_strings() -> None:
    assert split_property_string("name=eth0,bridge=vmbr0,ip=dhcp") == {
        "name": "eth0", "bridge": "vmbr0", "ip": "dhcp"}  # fmt: skip
    assert split_property_string("local-lvm:8,size=8G", "volume") == {
        "volume": "local-lvm:8", "size": "8G"}  # fmt: skip
    with pytest.raises(ValueError):
        split_property_string("local-lvm:8")


def test_interfaces_file_as_pve_writes_it() -> None:
    static = NetConfig.parse(0, "name=eth0,bridge=vmbr0,ip=198.18.0.5/24,gw=198.18.0.1")
    dhcp = NetConfig.parse(1, "name=eth1,bridge=vmbr0,ip=dhcp")
    text = render_interfaces([static, dhcp])
    assert (
        "auto eth0\niface eth0 inet static\n\taddress 198.18.0.5/24\n\tgateway 198.18.0.1" in text
    )
    assert "auto eth1\niface eth1 inet dhcp" in text
    assert text.startswith("auto lo\niface lo inet loopback")
    assert static.static_interface == ipaddress.IPv4Interface("198.18.0.5/24")
    assert dhcp.static_interface is None and dhcp.is_dhcp


def test_hosts_and_resolv() -> None:
    hosts = render_hosts("web1.example.com", "198.18.0.5", {"deb.debian.org": "203.0.113.80"})
    assert "198.18.0.5 web1.example.com web1" in hosts
    assert "203.0.113.80 deb.debian.org" in hosts
    assert "127.0.1.1 db" in render_hosts("db", None, {})
    assert render_resolv(None, None, "nameserver 9.9.9.9\n") == "nameserver 9.9.9.9\n"
    assert render_resolv("1.1.1.1 8.8.8.8", "lan", "x") == (
        "search lan\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n")  # fmt: skip


def test_config_helpers() -> None:
    assert config_value(True) == 1 and config_value(False) == 0 and config_value("x") == "x"
    assert config_digest({"a": 1, "b": "x"}) == config_digest({"b": "x", "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})
    mac = random_hwaddr()
    assert mac.startswith("BC:24:11:") and len(mac) == 17
    assert size_to_bytes("8G") == 8 << 30 and size_to_bytes("512M") == 512 << 20
    assert size_to_bytes("4") == 4 << 30


def test_listen_must_be_loopback() -> None:
    assert parse_listen("127.0.0.2:8006") == ("127.0.0.2", 8006)
    assert parse_listen("[::1]:8006") == ("::1", 8006)
    for bad in ("0.0.0.0:8006", "192.168.1.2:8006", "10.0.0.1:8006", "[::]:8006"):
        with pytest.raises(ServeError, match="loopback"):
            parse_listen(bad)
    for bad in ("127.0.0.2", "localhost:8006", "127.0.0.2:99999"):
        with pytest.raises(ServeError):
            parse_listen(bad)


def test_network_names_and_pools() -> None:
    net = SimNetwork(index=3, subnet=ipaddress.IPv4Network("198.18.3.0/24"))
    assert net.bridge == "pvesim3" and net.netns(100) == "pvesim3-100"
    assert str(net.gateway) == "198.18.3.1"
    pool = net.dhcp_pool()
    assert str(pool[0]) == "198.18.3.128" and str(pool[-1]) == "198.18.3.254"


def test_apt_mirror_hosts_reads_both_source_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "deb http://mirror.example/debian bookworm main\n# deb http://commented.example/debian x\n"
    )
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://security.debian.org/debian-security\n"
    )
    (tmp_path / "sources.list.d" / "other.list").write_text("deb https://apt.example/repo x main\n")
    assert apt_mirror_hosts(tmp_path) == ["mirror.example", "deb.debian.org", "security.debian.org"]


def test_property_errors_take_pve_shape() -> None:
    merged = merge_property_errors({
        "net0": "invalid format - format error",
        "net0.ip": "invalid format - value does not look like a valid ipv4 network configuration",
        "memory": "value must have a minimum value of 16",
    })  # fmt: skip
    assert merged == {
        "net0": "invalid format - format error\nnet0.ip: invalid format - value does not "
                "look like a valid ipv4 network configuration",
        "memory": "value must have a minimum value of 16",
    }  # fmt: skip


def test_certificates_are_stable_and_cover_the_host(tmp_path: Path) -> None:
    import ssl

    files = ensure_certificates(tmp_path, "127.0.0.2", "pve")
    fp = files.fingerprint()
    assert ensure_certificates(tmp_path, "127.0.0.2", "pve").fingerprint() == fp
    assert (tmp_path / "pve-root-ca.key").stat().st_mode & 0o777 == 0o600
    ctx = ssl.create_default_context(cafile=str(files.cafile))
    ctx.load_verify_locations(cafile=str(files.cafile))
    # a different address re-issues the leaf from the same CA
    other = ensure_certificates(tmp_path, "127.0.0.3", "pve")
    assert other.fingerprint() != fp
    assert other.cafile.read_bytes() == files.cafile.read_bytes()


@pytest.mark.parametrize("scale", [0.0, 0.01])
def test_task_durations_follow_the_time_scale(scale: float, tmp_path: Path) -> None:
    # time scale 0 skips PVE's durations (the integration tests' setting);
    # otherwise a task sleeps its realistic duration times the scale
    tasks = TaskManager(StateStore(tmp_path), "pve", Faults(), scale)
    started = time.monotonic()
    asyncio.run(tasks.sleep(DURATIONS["vzcreate"]))
    took = time.monotonic() - started
    expected = DURATIONS["vzcreate"] * scale
    assert expected <= took < expected + 0.5


@pytest.mark.parametrize(("given", "stored"), [
    ("web server", "web server\n"), ("a\n\nb\n\n", "a\n\nb\n"), ("\nx", "\nx\n"),
    ("100% ok: \u00e9", "100% ok: \u00e9\n"), ("", None), ("\n\n", None),
])  # fmt: skip
def test_descriptions_as_the_config_file_keeps_them(given: str, stored: str | None) -> None:
    """PVE::LXC::Config::write_pct_config writes ``#`` lines (Perl's split
    drops trailing empty fields, encode_text round-trips), parse_pct_config
    appends a newline to each."""
    assert stored_description(given) == stored


def test_create_defaults_and_the_detected_ostype(tmp_path: Path) -> None:
    """create_vm: ``unprivileged`` defaults to 1 and is written only when
    true; PVE::LXC::Setup->new's autodetect_type (os-release ID, aliases,
    marker files) and the plugin's ``$conf->{ostype}`` over the given one."""
    config: dict[str, object] = {"unprivileged": 0}
    create_defaults(config, {"unprivileged": False})
    assert "unprivileged" not in config
    create_defaults(config, {})
    assert config["unprivileged"] == 1
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('NAME="Rocky"\nID="rocky"\n')
    config = {"ostype": "debian"}
    assert detect_ostype(tmp_path, config) == ["got unexpected ostype (centos != debian)"]
    assert config["ostype"] == "centos"
    config = {"ostype": "unmanaged"}
    assert detect_ostype(tmp_path, config) == [] and config["ostype"] == "unmanaged"
    (tmp_path / "etc/os-release").write_text("ID=plan9\n")
    (tmp_path / "etc/debian_version").write_text("12.7\n")
    config = {}
    assert detect_ostype(tmp_path, config) == [
        "unknown ID 'plan9' in /etc/os-release file, trying fallback detection"]  # fmt: skip
    assert config["ostype"] == "debian"

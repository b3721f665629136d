"""The Proxmox client's pure logic, without any network: failure
classification, parameter encoding, fingerprints, net0 and interface
parsing, UPIDs, and wait_for_task's polling against a scripted node."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from provisioner.errors import (
    ConfigError,
    PveApiError,
    PvePermanentError,
    PveTransientError,
    TaskFailedError,
    TaskLockedError,
    TransientError,
)
from provisioner.pve import tasks as pve_tasks
from provisioner.pve.client import PveClient
from provisioner.pve.http import PasswordAuth, PveConnection, TokenAuth
from provisioner.pve.parse import (
    describe_failure,
    encode_params,
    format_fingerprint,
    format_property_string,
    global_ipv4,
    is_transient_failure,
    normalize_fingerprint,
    normalize_host,
    parse_exitstatus,
    parse_net,
    parse_property_string,
    parse_upid,
    redact,
)
from provisioner.pve.types import ContainerStatus, NodeInfo, StorageInfo

FP = "42:EA:9A:61:64:B0:88:8C:07:8E:5D:8D:74:0F:87:4B:D0:78:E0:83:23:0B:BF:19:E9:D2:86:80:D5:83:77:0F"
UPID = "UPID:pve:00007221:00056CC9:6B043370:vzcreate:5999:root@pam!pvesim:"


# --- failure classification ------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "message", "transient"),
    [
        (400, "Parameter verification failed.", False),
        (401, "No ticket", False),
        (403, "Permission check failed (/vms/100, VM.Allocate)", False),
        (404, "Not Found", False),
        (500, "CT 104 already exists on node 'pve'", False),
        (500, "Configuration file 'nodes/pve/lxc/104.conf' does not exist", False),
        (500, "storage 'local' does not support container directories", False),
        (500, "snapshot name 'base' already used", False),
        (500, "unable to destroy CT 104 - container is running", False),
        (501, "Method 'GET /nodes/pve/foo' not implemented", False),
        (500, "CT is locked (create)", True),
        (500, "CT is locked (backup)", True),
        (500, "can't lock file '/run/lock/lxc/pve-config-104.lock' - got timeout", True),
        (500, "injected failure (pvesim)", True),
        (502, "Bad Gateway", True),
        (503, "Service Unavailable", True),
        (
            595,
            "Errors during connection establishment, proxy handshake: Connection timed out",
            True,
        ),
        (596, "Errors during TLS negotiation, request sending and header processing", True),
        (599, "Other, usually nonretryable, errors", True),
    ],
)
def test_failure_classification(status: int, message: str, transient: bool) -> None:
    assert is_transient_failure(status, message) is transient


def test_failure_message_names_node_call_and_parameter_errors() -> None:
    text = describe_failure("pve1", "POST /nodes/pve1/lxc", 400, "Parameter verification failed.",
                            {"net0": "invalid format - format error\nnet0.ip: invalid",
                             "memory": "type check ('integer') failed - got 'lots'"})  # fmt: skip
    assert text == (
        "POST /nodes/pve1/lxc on node pve1 failed (HTTP 400): Parameter verification failed.; "
        "memory: type check ('integer') failed - got 'lots'; "
        "net0: invalid format - format error net0.ip: invalid"
    )


def test_redact_hides_secrets_but_not_tiny_strings() -> None:
    assert redact("password 's3cr3t-pw' rejected", ["s3cr3t-pw", ""]) == "password '***' rejected"
    assert redact("a b c", ["a"]) == "a b c"


# --- parameters ---------------------------------------------------------------------
def test_booleans_are_sent_as_0_and_1_and_none_is_dropped() -> None:
    encoded = encode_params({"start": True, "unprivileged": False, "pool": None, "memory": 512,
                             "features": {"nesting": True, "keyctl": False, "fuse": None},
                             "tags": ["a", None, "b"], "ssh-public-keys": "ssh-ed25519 AAA"})  # fmt: skip
    assert encoded == {"start": 1, "unprivileged": 0, "memory": 512,
                       "features": "nesting=1,keyctl=0", "tags": ["a", "b"],
                       "ssh-public-keys": "ssh-ed25519 AAA"}  # fmt: skip
    assert "True" not in repr(encoded) and "False" not in repr(encoded)
    assert encode_params(None) == {}


def test_property_strings_round_trip() -> None:
    text = format_property_string({"volume": "local-lvm:8", "mountoptions": "noatime"},
                                  default_key="volume")  # fmt: skip
    assert text == "local-lvm:8,mountoptions=noatime"
    assert parse_property_string(text, default_key="volume") == {
        "volume": "local-lvm:8", "mountoptions": "noatime"}  # fmt: skip
    with pytest.raises(ValueError):
        parse_property_string("name=eth0,oops")


# --- TLS and connection settings --------------------------------------------------
@pytest.mark.parametrize(
    "given",
    [
        FP,
        FP.lower(),
        FP.replace(":", ""),
        f"  {FP}\n",
        f"sha256 Fingerprint={FP}\n",
        f"SHA256 Fingerprint={FP}",
    ],
)
def test_fingerprint_normalisation(given: str) -> None:
    assert normalize_fingerprint(given) == FP.replace(":", "").lower()
    assert format_fingerprint(given) == FP


@pytest.mark.parametrize("bad", ["", "AB:CD", "zz" * 32, FP[:-3], "a" * 40])
def test_bad_fingerprints_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_fingerprint(bad)


@pytest.mark.parametrize(("given", "host"), [
    ("pve1", "pve1"), ("pve1.example.org.", "pve1.example.org"), (" 192.0.2.10 ", "192.0.2.10"),
    ("fd00::1", "fd00::1"), ("[FD00:0::1]", "fd00::1"), ("a-b.c-d", "a-b.c-d"),
])  # fmt: skip
def test_hosts_are_normalised(given: str, host: str) -> None:
    assert normalize_host(given) == host


@pytest.mark.parametrize("bad", ["", "[::1", "::::", "pve1:8006", "https://pve1", "300.1.2.3",
                                 "1.2.3", "-pve", "pve-", "a..b", "a b", "[pve1]", "x" * 64,
                                 ".".join(["a" * 60] * 5)])  # fmt: skip
def test_bad_hosts_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_host(bad)


def token() -> TokenAuth:
    return TokenAuth("root@pam!prov", "9f0c1f3e-secret-token-value")


def test_connection_validates_and_keeps_secrets_out_of_repr() -> None:
    conn = PveConnection(host="pve1.example", node="pve1", auth=token(), fingerprint=FP.lower())
    assert conn.fingerprint == FP.replace(":", "").lower()
    assert conn.base_url == "https://pve1.example:8006/api2/json"
    assert conn.cluster_id == "pve1.example:8006"
    assert "pinned fingerprint 42:EA" in conn.trust
    pw = PveConnection(host="::1", node="pve1", auth=PasswordAuth("root@pam", "hunter2-long"))
    assert pw.base_url == "https://[::1]:8006/api2/json"
    client = PveClient(conn)
    for text in (repr(conn), repr(pw), repr(client), repr(client._session.auth),
                 repr(pw.auth), str(conn.auth)):  # fmt: skip
        assert "9f0c1f3e" not in text and "hunter2" not in text
    with pytest.raises(ConfigError, match="one TLS trust mode"):
        PveConnection(host="h", node="n", auth=token(), ca_file="/ca.pem", insecure=True)
    with pytest.raises(ConfigError, match="SHA-256"):
        PveConnection(host="h", node="n", auth=token(), fingerprint="AB:CD")
    with pytest.raises(ConfigError, match="user@realm!name"):
        TokenAuth("root!prov", "x")
    with pytest.raises(ConfigError, match="realm"):
        PasswordAuth("root", "x")
    with pytest.raises(ConfigError, match="not a URL"):
        PveConnection(host="https://pve1:8006", node="n", auth=token())


def test_building_a_client_quiets_proxmoxer_and_makes_no_request() -> None:
    logging.getLogger("proxmoxer.core").setLevel(logging.DEBUG)
    # an unresolvable host: any request would fail
    PveClient(PveConnection(host="pve.invalid", node="n", auth=PasswordAuth("a@pam", "pw")))
    for name in ("proxmoxer", "proxmoxer.core", "proxmoxer.backends.https"):
        assert logging.getLogger(name).level == logging.WARNING


# --- net0 and interfaces -----------------------------------------------------------
def test_net0_parsing() -> None:
    static = parse_net("name=eth0,bridge=vmbr0,ip=198.18.0.41/24,gw=198.18.0.1,firewall=1")
    assert (static.name, static.bridge, static.static_ipv4, static.gw, static.is_dhcp) == (
        "eth0", "vmbr0", "198.18.0.41", "198.18.0.1", False)  # fmt: skip
    assert static.options["firewall"] == "1"
    dhcp = parse_net("bridge=vmbr0,ip=dhcp,hwaddr=BC:24:11:00:00:01")
    assert (dhcp.name, dhcp.is_dhcp, dhcp.static_ipv4) == ("eth0", True, None)
    assert parse_net("name=eth1,bridge=vmbr0,ip=manual").static_ipv4 is None
    assert parse_net("name=eth0,bridge=vmbr0,ip6=dhcp").static_ipv4 is None
    with pytest.raises(ValueError, match="invalid ip="):
        parse_net("name=eth0,ip=300.1.1.1/24")


LO = {"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128",
      "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "inet", "prefix": 8},
                       {"ip-address": "::1", "ip-address-type": "inet6", "prefix": 128}]}  # fmt: skip


def eth0(*addresses: tuple[str, str]) -> dict[str, Any]:
    return {"name": "eth0", "hwaddr": "bc:24:11:00:00:01",
            "ip-addresses": [{"ip-address": a, "ip-address-type": t, "prefix": 24}
                             for a, t in addresses]}  # fmt: skip


@pytest.mark.parametrize(
    ("interfaces", "expected"),
    [
        ([LO], None),  # lo only
        ([LO, eth0()], None),  # eth0 up, no lease yet
        ([LO, eth0(("fe80::be24:11ff:fe00:1", "inet6"))], None),  # link-local IPv6 only
        ([LO, eth0(("169.254.10.2", "inet"))], None),  # IPv4 link-local (no DHCP answer)
        ([LO, eth0(("169.254.10.2", "inet"), ("198.18.0.130", "inet"))], "198.18.0.130"),
        ([eth0(("fe80::1", "inet6"), ("198.18.0.131", "inet"))], "198.18.0.131"),
        ([LO, {"name": "eth0", "inet": "10.1.2.3/16"}], "10.1.2.3"),  # older answer shape
        ([LO, {"name": "eth1", "inet": "10.9.9.9/24"}], None),  # another interface
    ],
)
def test_global_ipv4(interfaces: list[dict[str, Any]], expected: str | None) -> None:
    assert global_ipv4(interfaces, "eth0") == expected


def test_global_ipv4_of_any_interface() -> None:
    assert global_ipv4([LO, {"name": "eth1", "inet": "10.9.9.9/24"}], None) == "10.9.9.9"


# --- UPIDs and exit statuses --------------------------------------------------------
def test_upid_parsing() -> None:
    upid = parse_upid(UPID)
    assert (upid.node, upid.type, upid.id, upid.user, upid.vmid) == (
        "pve", "vzcreate", "5999", "root@pam!pvesim", 5999)  # fmt: skip
    assert upid.pid == 0x7221 and upid.starttime == 0x6B043370
    assert upid.describe() == "task vzcreate of CT 5999 on node pve"
    download = parse_upid("UPID:pve:0000A1B2:0000C3D4:6B043370:download:debian.tar.zst:root@pam:")
    assert (
        download.vmid is None and download.describe() == "task download debian.tar.zst on node pve"
    )
    for bad in (UPID.rstrip(":"), "UPID:pve:zz", "", "104"):
        with pytest.raises(ValueError, match="not a PVE task id"):
            parse_upid(bad)


@pytest.mark.parametrize(
    ("exitstatus", "expected"),
    [("OK", (True, 0)), ("WARNINGS: 3", (True, 3)), ("unable to create CT 104 - disk full", (False, 0)),
     ("", (False, 0)), ("WARNINGS: x", (False, 0))],
)  # fmt: skip
def test_exitstatus(exitstatus: str, expected: tuple[bool, int]) -> None:
    assert parse_exitstatus(exitstatus) == expected


def test_typed_views() -> None:
    node = NodeInfo.from_api({"node": "pve", "status": "online", "cpu": 0.25, "maxcpu": 4,
                              "mem": 3 << 30, "maxmem": 8 << 30})  # fmt: skip
    assert (node.free_cpu, node.free_memory, node.online) == (3.0, 5 << 30, True)
    storage = StorageInfo.from_api({"storage": "local-lvm", "type": "lvmthin",
                                    "content": "rootdir,images", "avail": "1024", "total": 2048})  # fmt: skip
    assert storage.supports("rootdir") and not storage.supports("vztmpl") and storage.avail == 1024
    ct = ContainerStatus.from_api({"status": "running", "lock": "backup", "tags": "a;b"}, 104)
    assert (ct.vmid, ct.running, ct.lock, ct.tags) == (104, True, "backup", ("a", "b"))


# --- wait_for_task against a scripted node ----------------------------------------
Reply = Callable[[str, Mapping[str, Any]], Any]


class ScriptedClient(PveClient):
    """A client whose every call is answered by ``reply`` (no network)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(PveConnection(host="pve.invalid", node="pve", auth=token()))
        self.reply = reply
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _request(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        self.calls.append((path, dict(params or {})))
        return self.reply(path, params or {})


def api_error(status: int, message: str, cls: type[PveApiError] = PvePermanentError) -> PveApiError:
    return cls(f"GET ... failed (HTTP {status}): {message}", status=status, pve_message=message)


class FakeTask:
    """A task whose status and log advance by one step per status poll."""

    def __init__(self, steps: list[tuple[list[str], str | None]], early_400: int = 0) -> None:
        # each step: (log lines so far, exitstatus or None while running)
        self.steps = steps
        self.polls = 0
        self.early_400 = early_400

    def __call__(self, path: str, params: Mapping[str, Any]) -> Any:
        step = self.steps[min(self.polls, len(self.steps) - 1)]
        if path.endswith("/status"):
            self.polls += 1
            if self.polls <= self.early_400:
                raise api_error(400, "Parameter verification failed.")
            return {"status": "running"} if step[1] is None else {"status": "stopped",
                                                                    "exitstatus": step[1]}  # fmt: skip
        assert path.endswith("/log"), path
        lines = step[0] or ["no content"]  # PVE's answer for an empty log
        start, limit = int(params["start"]), int(params["limit"])
        return [{"n": i + 1, "t": t} for i, t in enumerate(lines)][start : start + limit]


def test_streams_each_log_line_exactly_once_in_order() -> None:
    full = ["extracting archive", "Total bytes read: 1", "Detected OS distribution 'debian'",
            *(f"line {i}" for i in range(1200)), "TASK OK"]  # fmt: skip
    task = FakeTask([([], None), ([], None), (full[:2], None), (full[:2], None),
                     (full[:700], None), (full, "OK")])  # fmt: skip
    seen: list[str] = []
    result = ScriptedClient(task).wait_for_task(UPID, timeout=30, poll=0.01, on_log=seen.append)
    assert seen == full  # "no content" was never delivered, nothing twice, pages joined
    assert (result.exitstatus, result.clean, result.warnings) == ("OK", True, 0)


def test_warnings_are_success_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    lines = ["starting", "WARN: systemd 252 detected, features missing", "TASK WARNINGS: 1"]
    task = FakeTask([([], None), (lines, "WARNINGS: 1")])
    with caplog.at_level(logging.WARNING, logger="provisioner.pve.tasks"):
        result = ScriptedClient(task).wait_for_task(UPID, timeout=30, poll=0.01)
    assert (result.clean, result.warnings, result.exitstatus) == (False, 1, "WARNINGS: 1")
    assert result.warning_lines == ("WARN: systemd 252 detected, features missing",)
    assert "1 warning(s)" in caplog.text and "systemd 252" in caplog.text


@pytest.mark.parametrize("error", [
    "CT is locked (backup)",
    "can't lock file '/run/lock/lxc/pve-config-5999.lock' - got timeout",
])  # fmt: skip
def test_a_task_failed_on_a_lock_is_transient(error: str) -> None:
    """PVE::API2::LXC::Status vm_start / vm_stop / vm_shutdown check the
    lock inside their task (lock_config, then check_lock): such a task error
    clears by itself, so it is a transient TaskLockedError (still a
    TaskFailedError, with the log tail)."""
    task = FakeTask([([], None), ([f"TASK ERROR: {error}"], error)])
    with pytest.raises(TaskLockedError) as info:
        ScriptedClient(task).wait_for_task(UPID, timeout=30, poll=0.01)
    exc = info.value
    assert isinstance(exc, TaskFailedError) and isinstance(exc, TransientError)
    assert exc.transient and exc.exitstatus == error
    assert exc.log_tail == [f"TASK ERROR: {error}"]
    assert "lock" in str(exc.hint)


def test_task_error_carries_the_log_tail() -> None:
    lines = [f"step {i}" for i in range(30)] + ["TASK ERROR: unable to create CT 5999 - disk full"]
    task = FakeTask([([], None), (lines, "unable to create CT 5999 - disk full")])
    with pytest.raises(TaskFailedError) as info:
        ScriptedClient(task).wait_for_task(UPID, timeout=30, poll=0.01)
    exc = info.value
    assert exc.exitstatus == "unable to create CT 5999 - disk full" and exc.upid == UPID
    assert (
        str(exc)
        == "task vzcreate of CT 5999 on node pve failed: unable to create CT 5999 - disk full"
    )
    assert exc.log_tail == lines[-20:] and not exc.transient


def test_the_brief_400_after_a_start_is_tolerated() -> None:
    task = FakeTask([([], None), (["TASK OK"], "OK")], early_400=2)
    assert ScriptedClient(task).wait_for_task(UPID, timeout=30, poll=0.01).clean
    assert task.polls == 3  # two 400s, then the stopped status


def test_a_lasting_400_is_permanent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pve_tasks, "TASK_STARTUP_GRACE", 0.2)
    task = FakeTask([([], None)], early_400=10**6)
    with pytest.raises(PvePermanentError) as info:
        ScriptedClient(task).wait_for_task(UPID, timeout=30, poll=0.01)
    assert info.value.status == 400


def test_transient_poll_failures_are_ridden_out() -> None:
    task = FakeTask([([], None), (["TASK OK"], "OK")])
    failures = iter([True, True, False, False, False, False])

    def flaky(path: str, params: Mapping[str, Any]) -> Any:
        if next(failures, False):
            raise api_error(595, "Errors during connection establishment", PveTransientError)
        return task(path, params)

    seen: list[str] = []
    assert (
        ScriptedClient(flaky).wait_for_task(UPID, timeout=30, poll=0.01, on_log=seen.append).clean
    )
    assert seen == ["TASK OK"]


def test_timeout_is_transient_and_names_the_task() -> None:
    task = FakeTask([(["still busy"], None)])
    with pytest.raises(PveTransientError, match="vzcreate of CT 5999 on node pve still running"):
        ScriptedClient(task).wait_for_task(UPID, timeout=0.3, poll=0.05)


def test_wait_for_task_rejects_what_is_not_a_upid() -> None:
    client = ScriptedClient(lambda p, q: pytest.fail("no call expected"))
    with pytest.raises(PvePermanentError, match="not a PVE task id"):
        client.wait_for_task("OK")


def test_static_ip_needs_no_call() -> None:
    client = ScriptedClient(lambda p, q: pytest.fail("no call expected"))
    assert client.resolve_container_ip(5041, "name=eth0,bridge=vmbr0,ip=198.18.0.41/24") == (
        "198.18.0.41"
    )
    with pytest.raises(ConfigError, match="CT 5041"):
        client.resolve_container_ip(5041, "name=eth0,ip=not-an-ip/24")


def test_dhcp_ip_is_polled_until_global() -> None:
    answers = iter([[LO, eth0()], [LO, eth0(("fe80::1", "inet6"))],
                    [LO, eth0(("fe80::1", "inet6"), ("198.18.0.140", "inet"))]])  # fmt: skip
    client = ScriptedClient(lambda p, q: next(answers))
    assert client.resolve_container_ip(5042, "name=eth0,bridge=vmbr0,ip=dhcp", poll=0.01) == (
        "198.18.0.140"
    )


def test_dhcp_ip_deadline_is_transient_with_a_clear_message() -> None:
    client = ScriptedClient(lambda p, q: [LO, eth0()])
    with pytest.raises(PveTransientError) as info:
        client.resolve_container_ip(5042, "name=eth0,bridge=vmbr0,ip=dhcp", timeout=0.2, poll=0.05)
    assert "CT 5042 on node pve: no IPv4 address on eth0 after 0.2s (DHCP lease)" in str(info.value)
    assert "bridge vmbr0" in str(info.value)

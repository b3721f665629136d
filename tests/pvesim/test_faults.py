"""Fault injection, seen from the client: every fault the admin API (and
``pvesim fault``) offers, driven through proxmoxer, raw TCP and real SSH."""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from proxmoxer.core import ResourceException

from tests.conftest import ROOT
from tests.pvesim.helpers import (
    admin,
    raw,
    task_log,
    token_api,
    token_header,
    wait_port,
    wait_start_after_create,
    wait_task,
)

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
SHARED_VMID = 7000
SHARED_IP_HOST = 20  # .20 of the simulator's subnet
PVESIM = str(ROOT / ".venv/bin/pvesim")


# --- helpers ------------------------------------------------------------------
@dataclass(frozen=True)
class SshKey:
    path: Path
    public: str


@dataclass(frozen=True)
class Container:
    vmid: int
    ip: str


def subnet_host(sim: dict[str, Any], n: int) -> str:
    return str(ipaddress.ip_network(sim["subnet"]).network_address + n)


def api_error(call: Callable[[], Any]) -> ResourceException:
    """Run ``call``; it must fail with a ResourceException, which is returned."""
    with pytest.raises(ResourceException) as info:
        call()
    return info.value


def clear_faults(sim: dict[str, Any]) -> None:
    admin(sim, "faults", method="DELETE")


def pending_faults(sim: dict[str, Any]) -> dict[str, Any]:
    return dict(admin(sim, "faults", method="GET"))


def create_ct(api: Any, sim: dict[str, Any], vmid: int, net0: str, pubkey: str) -> str:
    """POST a vzcreate; return its UPID."""
    return str(
        api.nodes(sim["node"]).lxc.post(
            vmid=vmid,
            ostemplate=TEMPLATE,
            storage="local-lvm",
            hostname=f"faults-{vmid}",
            net0=net0,
            **{"ssh-public-keys": pubkey},
        )
    )


def run_ok(api: Any, sim: dict[str, Any], upid: str, timeout: float = 120) -> dict[str, Any]:
    """Wait for a task that must succeed."""
    status = wait_task(api, sim["node"], upid, timeout)
    assert status["exitstatus"] == "OK", (status, task_log(api, sim["node"], upid))
    return status


def ct_status(api: Any, sim: dict[str, Any], vmid: int) -> dict[str, Any]:
    return dict(api.nodes(sim["node"]).lxc(vmid).status.current.get())


def ensure_running(api: Any, sim: dict[str, Any], ct: Container) -> None:
    if ct_status(api, sim, ct.vmid)["status"] != "running":
        run_ok(api, sim, api.nodes(sim["node"]).lxc(ct.vmid).status.start.post())
    wait_port(ct.ip, 22, timeout=60)


def destroy_ct(api: Any, sim: dict[str, Any], vmid: int) -> None:
    """Stop and delete a container if it exists, waiting for every task.

    Faults are cleared first so a pending injected failure cannot break the
    clean-up, and a held config lock is waited out (they all expire)."""
    clear_faults(sim)
    node = sim["node"]
    deadline = time.monotonic() + 40
    while True:
        try:
            status = ct_status(api, sim, vmid)
        except ResourceException as exc:
            if "does not exist" in str(exc.content):
                return
            raise
        if not status.get("lock") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if status["status"] == "running":
        wait_task(api, node, api.nodes(node).lxc(vmid).status.stop.post())
    run_ok(api, sim, api.nodes(node).lxc(vmid).delete())


def ssh_cmd(key: SshKey, ip: str, *command: str) -> list[str]:
    return [
        "ssh", "-i", str(key.path), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"root@{ip}", *command,
    ]  # fmt: skip


def ssh_run(
    key: SshKey, ip: str, command: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_cmd(key, ip, command), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def wait_ssh_login(key: SshKey, ip: str, timeout: float = 60) -> None:
    """sshd may accept TCP a moment before it lets a key in: retry a login."""
    deadline = time.monotonic() + timeout
    while True:
        done = ssh_run(key, ip, "echo ok")
        if done.returncode == 0 and done.stdout.strip() == "ok":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"cannot log in to {ip}: {done.returncode} {done.stderr}")
        time.sleep(0.5)


def cli(
    sim: dict[str, Any], *args: str, state_dir: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PVESIM, "fault", *args, "--state-dir", state_dir or sim["state_dir"]],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


# --- fixtures -----------------------------------------------------------------
@pytest.fixture(scope="module")
def api(sim: dict[str, Any]) -> Any:
    return token_api(sim)


@pytest.fixture(scope="module")
def ssh_key() -> Iterator[SshKey]:
    # a plain temp dir: pytest's numbered tmp dirs also sweep other runs' leftovers
    with tempfile.TemporaryDirectory(prefix="pvesim-faults-ssh-") as tmp:
        path = Path(tmp) / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pvesim-faults",
                        "-f", str(path)], check=True, timeout=30)  # fmt: skip
        yield SshKey(path, path.with_suffix(".pub").read_text().strip())


@pytest.fixture(autouse=True)
def no_faults(sim: dict[str, Any]) -> Iterator[None]:
    """Every test starts and ends without pending faults."""
    clear_faults(sim)
    yield
    clear_faults(sim)


@pytest.fixture(scope="module")
def ct(sim: dict[str, Any], api: Any, ssh_key: SshKey) -> Iterator[Container]:
    """One running container with a static address and our SSH key."""
    vmid, ip = SHARED_VMID, subnet_host(sim, SHARED_IP_HOST)
    destroy_ct(api, sim, vmid)  # left over from an interrupted run
    try:
        net0 = f"name=eth0,bridge=vmbr0,ip={ip}/24,gw={sim['gateway']}"
        run_ok(api, sim, create_ct(api, sim, vmid, net0, ssh_key.public))
        run_ok(api, sim, api.nodes(sim["node"]).lxc(vmid).status.start.post())
        wait_port(ip, 22, timeout=60)
        yield Container(vmid, ip)
    finally:
        destroy_ct(api, sim, vmid)


@pytest.fixture
def disposable(sim: dict[str, Any], api: Any) -> Iterator[Callable[[int], int]]:
    """Register vmids that are destroyed (if they exist) after the test."""
    vmids: list[int] = []

    def register(vmid: int) -> int:
        destroy_ct(api, sim, vmid)
        vmids.append(vmid)
        return vmid

    yield register
    errors = []
    for vmid in vmids:
        try:
            destroy_ct(api, sim, vmid)
        except Exception as exc:  # clean up the others, then report
            errors.append(f"{vmid}: {exc!r}")
    assert not errors, errors


# --- 1. HTTP faults -------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(30)
def test_http_faults_fail_the_next_requests_then_clear(sim: dict[str, Any], api: Any) -> None:
    admin(sim, "http", {"path": "/cluster/nextid$", "status": 500, "count": 2})
    admin(sim, "http", {"path": "/cluster/nextid$", "status": 595, "count": 1})
    pending = pending_faults(sim)["http"]
    assert [(f["path"], f["status"], f["count"]) for f in pending] == [
        ("/cluster/nextid$", 500, 2),
        ("/cluster/nextid$", 595, 1),
    ]
    # other paths are untouched
    assert api.version.get()["release"]
    for _ in range(2):
        exc = api_error(lambda: api.cluster.nextid.get())
        assert exc.status_code == 500
        assert exc.status_message == "Internal Server Error"
        assert exc.content == "injected failure (pvesim)"
    exc = api_error(lambda: api.cluster.nextid.get())
    assert exc.status_code == 595
    assert exc.status_message == "Errors during connection establishment, proxy handshake"
    assert exc.content == (
        "Errors during connection establishment, proxy handshake: Connection timed out"
    )
    assert int(api.cluster.nextid.get()) >= 100
    assert pending_faults(sim)["http"] == []


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_http_fault_method_filter(sim: dict[str, Any], api: Any, ct: Container) -> None:
    config = api.nodes(sim["node"]).lxc(ct.vmid).config
    admin(sim, "http", {"path": f"/lxc/{ct.vmid}/config$", "method": "PUT", "status": 500})
    # GETs of the same path pass and do not use the fault up
    for _ in range(3):
        assert config.get()["hostname"] == f"faults-{ct.vmid}"
    assert len(pending_faults(sim)["http"]) == 1
    exc = api_error(lambda: config.put(description="never-written"))
    assert exc.status_code == 500
    assert "description" not in config.get()
    assert pending_faults(sim)["http"] == []
    config.put(description="written")
    assert config.get()["description"] == "written\n"  # a comment line (parse_pct_config)


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_http_fault_custom_message_is_the_reason_phrase(sim: dict[str, Any], api: Any) -> None:
    message = "proxy loop detected (pvesim test)"
    admin(sim, "http", {"path": f"/nodes/{sim['node']}/status$", "status": 503,
                        "message": message, "count": 2})  # fmt: skip
    exc = api_error(lambda: api.nodes(sim["node"]).status.get())
    assert exc.status_code == 503
    assert exc.status_message == "Service Unavailable"
    assert exc.content == message
    # the same without a client library: reason phrase and PVE's JSON body
    status, reason, body = raw(sim, "GET", f"/nodes/{sim['node']}/status",
                               headers=token_header(sim))  # fmt: skip
    assert (status, reason) == (503, message)
    assert body == {"data": None, "message": message + "\n"}
    assert api.nodes(sim["node"]).status.get()["uptime"] >= 0


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_admin_rejects_bad_faults(sim: dict[str, Any]) -> None:
    headers = {**token_header(sim), "Content-Type": "application/json"}

    def post(action: str, body: dict[str, Any]) -> tuple[int, str]:
        status, reason, _ = raw(sim, "POST", f"/{action}", base=sim["admin_url"],
                                headers=headers, data=json.dumps(body).encode())  # fmt: skip
        return status, reason

    assert post("http", {"path": "(", "status": 500})[0] == 400
    assert post("http", {"path": "/version", "status": 700})[0] == 400
    assert post("task", {"type": "vzstart"})[0] == 400  # neither error nor delay
    assert post("lock", {"vmid": 7999, "seconds": 1}) == (
        500, f"Configuration file 'nodes/{sim['node']}/lxc/7999.conf' does not exist")  # fmt: skip
    status, _, _ = raw(sim, "GET", "/faults", base=sim["admin_url"])
    assert status == 401  # the admin API wants the token too
    assert pending_faults(sim) == {"http": [], "tasks": [], "dhcp_delay": {}}


# --- 2. task faults ---------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(90)
def test_task_fault_fails_create_and_removes_config(
    sim: dict[str, Any], api: Any, ssh_key: SshKey, disposable: Callable[[int], int]
) -> None:
    node = sim["node"]
    vmid = disposable(7001)
    message = "unable to create CT 7001 - disk quota exceeded (pvesim test)"
    # the delay keeps the task running long enough to see the half-made CT
    admin(sim, "task", {"type": "vzcreate", "vmid": vmid, "error": message, "delay": 2})
    net0 = f"name=eth0,bridge=vmbr0,ip={subnet_host(sim, 21)}/24,gw={sim['gateway']}"
    upid = create_ct(api, sim, vmid, net0, ssh_key.public)
    assert f":vzcreate:{vmid}:" in upid
    assert api.nodes(node).tasks(upid).status.get()["status"] == "running"
    assert api.nodes(node).lxc(vmid).config.get()["lock"] == "create"
    taken = api_error(lambda: api.cluster.nextid.get(vmid=vmid))
    assert taken.status_code == 400
    assert taken.errors == {"vmid": f"VM {vmid} already exists"}

    status = wait_task(api, node, upid)
    assert status["status"] == "stopped"
    assert status["exitstatus"] == message
    lines = task_log(api, node, upid)
    assert lines[-1] == f"TASK ERROR: {message}"
    # the task list reports the failure too
    listed = [t for t in api.nodes(node).tasks.get(vmid=vmid, errors=1) if t["upid"] == upid]
    assert listed and listed[0]["status"] == message

    gone = api_error(lambda: api.nodes(node).lxc(vmid).config.get())
    assert gone.status_code == 500
    assert "does not exist" in gone.content
    assert f"lxc/{vmid}.conf" in gone.content
    assert vmid not in [int(c["vmid"]) for c in api.nodes(node).lxc.get()]
    assert int(api.cluster.nextid.get(vmid=vmid)) == vmid
    assert pending_faults(sim)["tasks"] == []

    # the fault was used up: the same create now works
    run_ok(api, sim, create_ct(api, sim, vmid, net0, ssh_key.public))
    assert api.nodes(node).lxc(vmid).config.get()["hostname"] == f"faults-{vmid}"


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_task_delay_makes_start_take_longer(sim: dict[str, Any], api: Any, ct: Container) -> None:
    node = sim["node"]
    if ct_status(api, sim, ct.vmid)["status"] == "running":
        run_ok(api, sim, api.nodes(node).lxc(ct.vmid).status.stop.post())
    delay = 3.0
    # a fault for another vmid must not slow this start down
    admin(sim, "task", {"type": "vzstart", "vmid": 7999, "delay": 30})
    admin(sim, "task", {"type": "vzstart", "vmid": ct.vmid, "delay": delay})
    started = time.monotonic()
    upid = api.nodes(node).lxc(ct.vmid).status.start.post()
    seen_running = 0.0
    while True:
        task = api.nodes(node).tasks(upid).status.get()
        elapsed = time.monotonic() - started
        if task["status"] != "running":
            break
        seen_running = elapsed
        assert ct_status(api, sim, ct.vmid)["status"] == "stopped" or elapsed >= delay
        time.sleep(0.1)
    assert task["exitstatus"] == "OK", task_log(api, node, upid)
    assert elapsed >= delay
    assert seen_running >= delay - 0.5
    assert ct_status(api, sim, ct.vmid)["status"] == "running"
    assert [f["vmid"] for f in pending_faults(sim)["tasks"]] == [7999]
    wait_port(ct.ip, 22, timeout=60)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_task_warnings_end_in_warnings_n(sim: dict[str, Any], api: Any, ct: Container) -> None:
    node = sim["node"]
    if ct_status(api, sim, ct.vmid)["status"] != "running":
        run_ok(api, sim, api.nodes(node).lxc(ct.vmid).status.start.post())
    admin(sim, "task", {"type": "vzsnapshot", "vmid": ct.vmid, "warnings": 2})
    upid = api.nodes(node).lxc(ct.vmid).snapshot.post(snapname="warned")
    status = wait_task(api, node, upid)
    log = task_log(api, node, upid)
    assert status["exitstatus"] == "WARNINGS: 2"
    assert log[-1] == "TASK WARNINGS: 2"
    assert sum(1 for line in log if line.startswith("WARN: ")) == 2
    wait_task(api, node, api.nodes(node).lxc(ct.vmid).snapshot("warned").delete())


# --- 3. locks ---------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_config_lock_blocks_until_released(sim: dict[str, Any], api: Any, ct: Container) -> None:
    """PVE::API2::LXC::Status vm_stop and vm_shutdown check the lock in
    their task (lock_config, load_config, check_lock): a UPID at once, then
    ``TASK ERROR: CT is locked (backup)``; vm_start does the same for a
    stopped CT; vm_reboot (PVE::LXC::vm_reboot) never checks it; a config
    update (update_vm) refuses with 500 before any task."""
    node = sim["node"]
    ensure_running(api, sim, ct)
    lxc = api.nodes(node).lxc(ct.vmid)
    held = 8.0
    started = time.monotonic()
    admin(sim, "lock", {"vmid": ct.vmid, "lock": "backup", "seconds": held})
    assert ct_status(api, sim, ct.vmid)["lock"] == "backup"
    assert lxc.config.get()["lock"] == "backup"
    for name, call in {"stop": lxc.status.stop.post, "shutdown": lxc.status.shutdown.post}.items():
        upid = call()
        status = wait_task(api, node, upid)
        assert (name, status["exitstatus"]) == (name, "CT is locked (backup)")
        assert task_log(api, node, upid)[-1] == "TASK ERROR: CT is locked (backup)"
    exc = api_error(lambda: lxc.config.put(description="while-locked"))
    assert (exc.status_code, exc.content) == (500, "CT is locked (backup)")
    assert ct_status(api, sim, ct.vmid)["status"] == "running"
    run_ok(api, sim, lxc.status.reboot.post())  # the lock does not stop a reboot
    assert ct_status(api, sim, ct.vmid)["lock"] == "backup"
    # all of that happened while the lock was certainly held
    assert time.monotonic() - started < held - 0.5
    assert lxc.config.get().get("description") != "while-locked"
    while ct_status(api, sim, ct.vmid).get("lock"):
        assert time.monotonic() - started < held + 10, "the lock was never released"
        time.sleep(0.1)
    assert time.monotonic() - started >= held
    assert "lock" not in lxc.config.get()

    lxc.config.put(description="after-lock")
    assert lxc.config.get()["description"] == "after-lock\n"
    run_ok(api, sim, lxc.status.stop.post())
    assert ct_status(api, sim, ct.vmid)["status"] == "stopped"
    admin(sim, "lock", {"vmid": ct.vmid, "lock": "backup", "seconds": 3})
    upid = lxc.status.start.post()
    assert wait_task(api, node, upid)["exitstatus"] == "CT is locked (backup)"
    assert ct_status(api, sim, ct.vmid)["status"] == "stopped"
    while ct_status(api, sim, ct.vmid).get("lock"):
        time.sleep(0.1)
    run_ok(api, sim, lxc.status.start.post())
    assert ct_status(api, sim, ct.vmid)["status"] == "running"
    wait_port(ct.ip, 22, timeout=60)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_power_actions_check_before_their_task(sim: dict[str, Any], api: Any) -> None:
    """What PVE::API2::LXC::Status refuses before forking a task: skiplock
    from anyone but root@pam (a token is not: raise_param_exc "Only root may
    use this option."), stop/shutdown of a CT that is not running ("CT N not
    running", check_running needs no config), reboot likewise ("VM N not
    running").  A start of a missing CT gets a UPID: its task fails in
    load_config ("Configuration file '...' does not exist")."""
    node = sim["node"]
    lxc = api.nodes(node).lxc(7998)
    for call in (lambda: lxc.status.start.post(skiplock=1),
                 lambda: lxc.status.stop.post(skiplock=1)):  # fmt: skip
        exc = api_error(call)
        assert exc.status_code == 400
        assert exc.errors == {"skiplock": "Only root may use this option."}
    for name, call, message in (("stop", lxc.status.stop.post, "CT 7998 not running"),
                                ("shutdown", lxc.status.shutdown.post, "CT 7998 not running"),
                                ("reboot", lxc.status.reboot.post, "VM 7998 not running")):  # fmt: skip
        exc = api_error(call)
        assert (name, exc.status_code, exc.content) == (name, 500, message)
    upid = lxc.status.start.post()
    assert ":vzstart:7998:" in upid
    assert wait_task(api, node, upid)["exitstatus"] == (
        f"Configuration file 'nodes/{node}/lxc/7998.conf' does not exist"
    )


@pytest.mark.integration
@pytest.mark.timeout(40)
def test_file_lock_makes_config_update_time_out(
    sim: dict[str, Any], api: Any, ct: Container
) -> None:
    lxc = api.nodes(sim["node"]).lxc(ct.vmid)
    held = 12.0
    started = time.monotonic()
    admin(sim, "lock", {"vmid": ct.vmid, "kind": "file", "seconds": held})
    # reading the config takes no lock
    assert lxc.config.get()["hostname"] == f"faults-{ct.vmid}"
    assert time.monotonic() - started < 2
    put_at = time.monotonic()
    exc = api_error(lambda: lxc.config.put(description="file-locked"))
    waited = time.monotonic() - put_at
    assert exc.status_code == 500
    assert exc.content == (
        f"can't lock file '/run/lock/lxc/pve-config-{ct.vmid}.lock' - got timeout"
    )
    assert 9.5 <= waited <= 12, waited
    assert lxc.config.get().get("description") != "file-locked"
    # once the holder lets go, the update goes through at once
    time.sleep(max(0.0, held + 0.5 - (time.monotonic() - started)))
    put_at = time.monotonic()
    lxc.config.put(description="file-unlocked")
    assert time.monotonic() - put_at < 2
    assert lxc.config.get()["description"] == "file-unlocked\n"


@pytest.mark.integration
@pytest.mark.timeout(40)
def test_file_lock_fails_a_stop_in_its_task(sim: dict[str, Any], api: Any, ct: Container) -> None:
    """PVE::API2::LXC::Status vm_stop forks its task at once; the task's
    lock_config waits lock_file_full's 10 s for the flock (logging "trying
    to acquire lock...") and ends "can't lock file '...' - got timeout"."""
    node = sim["node"]
    ensure_running(api, sim, ct)
    admin(sim, "lock", {"vmid": ct.vmid, "kind": "file", "seconds": 12})
    posted = time.monotonic()
    upid = api.nodes(node).lxc(ct.vmid).status.stop.post()
    assert time.monotonic() - posted < 2
    status = wait_task(api, node, upid)
    message = f"can't lock file '/run/lock/lxc/pve-config-{ct.vmid}.lock' - got timeout"
    assert status["exitstatus"] == message
    assert 9.5 <= time.monotonic() - posted <= 12
    assert task_log(api, node, upid) == ["trying to acquire lock...", f"TASK ERROR: {message}"]
    assert ct_status(api, sim, ct.vmid)["status"] == "running"


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_create_start_is_its_own_task_and_a_failed_start_keeps_the_ct(
    sim: dict[str, Any], api: Any, disposable: Callable[[int], int]
) -> None:
    """PVE::API2::LXC create_vm's worker ends OK and, with ``start=1``,
    calls PVE::API2::LXC::Status->vm_start: a separate ``vzstart`` task;
    when it fails the container stays (stopped)."""
    node = sim["node"]
    vmid = disposable(7002)
    # a bridge that does not exist: the create is fine, the start fails
    net0 = "name=eth0,bridge=vmbr9,ip=dhcp"
    upid = str(api.nodes(node).lxc.post(vmid=vmid, ostemplate=TEMPLATE, storage="local-lvm",
                                        net0=net0, start=1))  # fmt: skip
    assert wait_start_after_create(api, node, upid)["exitstatus"] == (
        "bridge 'vmbr9' does not exist"
    )
    assert wait_task(api, node, upid)["exitstatus"] == "OK"
    assert ct_status(api, sim, vmid)["status"] == "stopped"
    assert "lock" not in api.nodes(node).lxc(vmid).config.get()


# --- 4. DHCP delay ----------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_dhcp_delay_holds_back_the_lease(
    sim: dict[str, Any], api: Any, ssh_key: SshKey, disposable: Callable[[int], int]
) -> None:
    node = sim["node"]
    vmid = disposable(7002)
    run_ok(api, sim, create_ct(api, sim, vmid, "name=eth0,bridge=vmbr0,ip=dhcp", ssh_key.public))
    delay = 4.0
    admin(sim, "dhcp-delay", {"vmid": vmid, "seconds": delay})
    assert pending_faults(sim)["dhcp_delay"] == {str(vmid): delay}
    started = time.monotonic()
    run_ok(api, sim, api.nodes(node).lxc(vmid).status.start.post())
    polls_without_ip = 0
    address = None
    while address is None:
        elapsed = time.monotonic() - started
        assert elapsed < 90, "no DHCP lease within 90 s"
        ifaces = {i["name"]: i for i in api.nodes(node).lxc(vmid).interfaces.get()}
        assert "eth0" in ifaces, ifaces
        address = ifaces["eth0"].get("inet")
        if address is None:
            polls_without_ip += 1
            time.sleep(0.2)
        else:
            assert elapsed >= 3.0, f"eth0 got {address} after only {elapsed:.1f}s"
    got_after = time.monotonic() - started
    assert polls_without_ip >= 10  # we really watched eth0 go without an address
    assert got_after >= delay
    ip, _, prefix = address.partition("/")
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(sim["subnet"])
    assert int(prefix) == ipaddress.ip_network(sim["subnet"]).prefixlen


# --- 5. SSH refuse ----------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(60)
def test_ssh_refuse_then_accept(sim: dict[str, Any], api: Any, ct: Container) -> None:
    ensure_running(api, sim, ct)
    period = 3.0
    started = time.monotonic()
    admin(sim, "ssh-refuse", {"vmid": ct.vmid, "seconds": period})
    refused = 0
    while True:
        try:
            with socket.create_connection((ct.ip, 22), timeout=2) as sock:
                sock.settimeout(5)
                banner = sock.recv(64)
            break
        except ConnectionRefusedError:
            refused += 1
        assert time.monotonic() - started < period + 10, "port 22 never accepted again"
        time.sleep(0.1)
    accepted_after = time.monotonic() - started
    assert refused >= 10
    assert accepted_after >= period
    assert banner.startswith(b"SSH-2.0-")


# --- 6. SSH drop ------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(90)
def test_ssh_drop_ends_live_sessions(sim: dict[str, Any], api: Any, ct: Container,
                                     ssh_key: SshKey) -> None:  # fmt: skip
    ensure_running(api, sim, ct)
    wait_ssh_login(ssh_key, ct.ip)
    proc = subprocess.Popen(ssh_cmd(ssh_key, ct.ip, "echo ready; exec sleep 60"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the SSH session did not start"
        assert proc.stdout.readline().strip() == "ready"
        assert proc.poll() is None
        dropped = admin(sim, "ssh-drop", {"vmid": ct.vmid})["dropped"]
        assert dropped >= 1
        dropped_at = time.monotonic()
        rc = proc.wait(timeout=15)
        assert time.monotonic() - dropped_at < 10
        assert rc == 255, (rc, proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    # the listener survived: new sessions work
    done = ssh_run(ssh_key, ct.ip, "echo again")
    assert (done.returncode, done.stdout.strip()) == (0, "again"), done.stderr


# --- 7. the CLI -------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(60)
def test_cli_fault_http_list_clear(sim: dict[str, Any], api: Any) -> None:
    if not sim.get("state_dir") or not (Path(sim["state_dir"]) / "pvesim.json").exists():
        pytest.skip("the simulator's state dir is unknown (set PVESIM_STATE_DIR)")
    path = f"/nodes/{sim['node']}/storage$"
    done = cli(sim, "http", "--path", path, "--status", "500", "--count", "1")
    assert done.returncode == 0, done.stderr
    fault_id = json.loads(done.stdout)["id"]
    assert isinstance(fault_id, int)

    listed = cli(sim, "list")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["http"] == [
        {"path": path, "status": 500, "count": 1, "method": None, "message": None, "id": fault_id}
    ]
    exc = api_error(lambda: api.nodes(sim["node"]).storage.get())
    assert (exc.status_code, exc.content) == (500, "injected failure (pvesim)")
    assert {s["storage"] for s in api.nodes(sim["node"]).storage.get()} >= {"local", "local-lvm"}
    assert json.loads(cli(sim, "list").stdout)["http"] == []

    # clear drops faults that were never used
    assert cli(sim, "http", "--path", path, "--count", "5").returncode == 0
    assert cli(sim, "task", "--type", "vzstart", "--vmid", "7999", "--delay", "5").returncode == 0
    assert cli(sim, "task", "--type", "vzstop", "--vmid", "7999", "--warnings", "2").returncode == 0
    pending = json.loads(cli(sim, "list").stdout)
    assert len(pending["http"]) == 1 and len(pending["tasks"]) == 2
    assert pending["tasks"][1]["warnings"] == 2
    cleared = cli(sim, "clear")
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cli(sim, "list").stdout) == {"http": [], "tasks": [], "dhcp_delay": {}}
    assert api.nodes(sim["node"]).storage.get()


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_cli_without_a_simulator(sim: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="pvesim-faults-") as empty:
        done = cli(sim, "list", state_dir=empty)
    assert done.returncode == 1
    assert f"no simulator is running with state dir {empty}" in done.stderr

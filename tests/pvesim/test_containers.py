"""Containers end to end through proxmoxer: create, start, SSH in, serve,
install packages, clone, snapshot, stop, destroy.  Shared simulator;
vmids 8000-8999, static addresses .50-.90 of its subnet."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxmoxer import ResourceException

from tests.pvesim.helpers import (
    task_log,
    ticket_api,
    token_api,
    wait_port,
    wait_start_after_create,
    wait_task,
)

pytestmark = pytest.mark.integration
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


@pytest.fixture(scope="module")
def api(sim: dict[str, Any]) -> Any:
    return token_api(sim)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def addr(sim: dict[str, Any], host: int) -> str:
    return str(ipaddress.ip_network(sim["subnet"]).network_address + host)


def ssh(key: Path, ip: str, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", "-o", "BatchMode=yes", f"root@{ip}", command],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def ok(api: Any, upid: str, timeout: float = 120) -> list[str]:
    status = wait_task(api, "pve", upid, timeout)
    log = task_log(api, "pve", upid)
    assert status["exitstatus"] == "OK", log
    return log


class Containers:
    """Creates containers for a test and removes them afterwards."""

    def __init__(self, api: Any, sim: dict[str, Any], key: Path) -> None:
        self.api, self.sim, self.key = api, sim, key
        self.made: list[int] = []

    def create(self, vmid: int, ip: str = "dhcp", **extra: Any) -> list[str]:
        net = "name=eth0,bridge=vmbr0,ip=dhcp" if ip == "dhcp" else (
            f"name=eth0,bridge=vmbr0,ip={ip}/24,gw={self.sim['gateway']}")  # fmt: skip
        params = {"vmid": vmid, "ostemplate": TEMPLATE, "storage": "local-lvm",
                  "hostname": f"ct{vmid}", "net0": net,
                  "ssh-public-keys": self.key.with_suffix(".pub").read_text(), **extra}  # fmt: skip
        self.made.append(vmid)
        upid = self.api.nodes("pve").lxc.post(**params)
        log = ok(self.api, upid)
        if extra.get("start"):  # a separate vzstart task, as on PVE
            assert wait_start_after_create(self.api, "pve", upid)["exitstatus"] == "OK"
        return log

    def start(self, vmid: int) -> None:
        ok(self.api, self.api.nodes("pve").lxc(vmid).status.start.post())

    def ip_of(self, vmid: int, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for iface in self.api.nodes("pve").lxc(vmid).interfaces.get():
                if iface["name"] == "eth0" and "inet" in iface:
                    return str(iface["inet"].split("/")[0])
            time.sleep(0.1)
        raise TimeoutError(f"CT {vmid} got no address")

    def cleanup(self) -> None:
        for vmid in self.made:
            try:
                ct = self.api.nodes("pve").lxc(vmid)
                if ct.status.current.get()["status"] == "running":
                    wait_task(self.api, "pve", ct.status.stop.post())
                wait_task(self.api, "pve", ct.delete())
            except ResourceException:
                pass  # already gone


@pytest.fixture()
def cts(api: Any, sim: dict[str, Any], key: Path) -> Iterator[Containers]:
    made = Containers(api, sim, key)
    yield made
    made.cleanup()


def test_lifecycle_with_ticket_auth(sim: dict[str, Any], key: Path, tmp_path: Path) -> None:
    api = ticket_api(sim)
    made = Containers(api, sim, key)
    ip = addr(sim, 50)
    try:
        log = made.create(8001, ip, password="s3cret-pw", memory=256, cores=1, unprivileged=1)
        assert log[0].startswith("extracting archive")
        assert any("ssh_host_ed25519_key" in line for line in log) and log[-1] == "TASK OK"
        config = api.nodes("pve").lxc(8001).config.get()
        assert config["hostname"] == "ct8001" and config["memory"] == 256
        assert config["unprivileged"] == 1 and "lock" not in config
        assert "ssh-public-keys" not in config and "password" not in config
        assert config["rootfs"].startswith("local-lvm:vm-8001-disk-0")
        assert config["net0"].startswith("name=eth0,bridge=vmbr0,gw=")
        assert ",hwaddr=BC:24:11:" in config["net0"] and config["net0"].endswith(",type=veth")
        made.start(8001)
        assert api.nodes("pve").lxc(8001).status.current.get()["status"] == "running"
        assert wait_port(ip, 22) < 30
        ifaces = {i["name"]: i for i in api.nodes("pve").lxc(8001).interfaces.get()}
        assert ifaces["lo"]["inet"] == "127.0.0.1/8"
        assert ifaces["eth0"]["inet"] == f"{ip}/24"
        assert ifaces["eth0"]["hwaddr"].upper() in config["net0"]
        # inside: its own hostname, filesystem and processes
        marker = tmp_path / "host-only-marker"
        marker.write_text("host")
        result = ssh(key, ip, f"hostname; test -e {marker} && echo LEAK; ps -e -o pid=,comm= | head -1;"
                              " grep -c . /etc/hostname; getent shadow root | cut -d: -f2 | cut -c1-3")  # fmt: skip
        assert result.returncode == 0, result.stderr
        lines = result.stdout.split()
        assert lines[0] == "ct8001" and "LEAK" not in lines
        assert lines[1:3] == ["1", "systemd"] and lines[-1] == "$6$"
        status = api.nodes("pve").lxc(8001).status.current.get()
        assert status["pid"] > 0 and status["maxmem"] == 256 << 20 and status["uptime"] >= 0
        # PVE's errors for the wrong state
        with pytest.raises(ResourceException, match="already running"):
            api.nodes("pve").lxc(8001).status.start.post()
        with pytest.raises(ResourceException, match="container is running"):
            api.nodes("pve").lxc(8001).delete()
        ok(api, api.nodes("pve").lxc(8001).status.stop.post())
        assert api.nodes("pve").lxc(8001).status.current.get()["status"] == "stopped"
        # PVE::LXC::get_interfaces finds no process: {"data": null}
        assert api.nodes("pve").lxc(8001).interfaces.get() is None
        with pytest.raises(ResourceException, match="not running"):
            api.nodes("pve").lxc(8001).status.stop.post()
        ok(api, api.nodes("pve").lxc(8001).delete())
        assert 8001 not in [c["vmid"] for c in api.nodes("pve").lxc.get()]
        assert not (Path(sim["state_dir"]) / "ct/8001").exists()
    finally:
        made.cleanup()


def test_dhcp_address_and_apt_install(cts: Containers, key: Path, sim: dict[str, Any]) -> None:
    cts.create(8010, "dhcp", start=1)
    ip = cts.ip_of(8010)
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(sim["subnet"])
    ifaces = {i["name"]: i for i in cts.api.nodes("pve").lxc(8010).interfaces.get()}
    types = {a["ip-address-type"] for a in ifaces["eth0"]["ip-addresses"]}
    assert types == {"inet", "inet6"}  # the link-local address is there too, as on PVE
    wait_port(ip, 22)
    result = ssh(key, ip, "ip route | grep default; apt-get update -qq && "
                          "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hello >/dev/null "
                          "&& hello", timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"default via {sim['gateway']}" in result.stdout
    assert "Hello, world!" in result.stdout
    # destroying the container returns its address to the pool
    leases = Path(sim["state_dir"]) / "leases.json"
    assert ip in json.loads(leases.read_text()).values()
    cts.cleanup()
    assert ip not in json.loads(leases.read_text()).values()


def test_two_containers_serve_on_the_same_port(
    cts: Containers, key: Path, sim: dict[str, Any]
) -> None:
    ips = {8020: addr(sim, 60), 8021: addr(sim, 61)}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda v: cts.create(v, ips[v], start=1), ips))
    for vmid, ip in ips.items():
        wait_port(ip, 22)
        cmd = (f"mkdir -p /srv/www && echo 'hello from {vmid}' > /srv/www/index.html && "
               "systemd-run --unit=web python3 -m http.server 8080 --directory /srv/www")  # fmt: skip
        result = ssh(key, ip, cmd)
        assert result.returncode == 0, result.stderr
    for vmid, ip in ips.items():
        wait_port(ip, 8080)
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=10) as resp:
            assert resp.read().decode().strip() == f"hello from {vmid}"


@pytest.mark.parametrize(("vmid", "disks", "volname"), [
    (8035, {"rootfs": "local-lvm:8G"}, "8G"),
    (8036, {"rootfs": "local-lvm:1", "mp0": "local-lvm:1G,mp=/data"}, "1G"),
])  # fmt: skip
def test_a_volume_size_with_a_unit_fails_the_create(
    cts: Containers, api: Any, sim: dict[str, Any], vmid: int, disks: dict[str, str],
    volname: str,
) -> None:  # fmt: skip
    """PVE::LXC::create_disks allocates only ``STORAGE:SIZE_IN_GiB``
    ($NEW_DISK_RE): ``local-lvm:8G`` is taken for an existing volume, and
    mount_all's activate_volumes (LvmThinPlugin activate_lv) fails the task:
    "no such logical volume pve/8G"; create_vm's error path removes the
    disks it made and the config."""
    cts.made.append(vmid)
    upid = api.nodes("pve").lxc.post(vmid=vmid, ostemplate=TEMPLATE, **disks)
    status = wait_task(api, "pve", upid)
    assert status["exitstatus"] == (
        f"unable to create CT {vmid} - no such logical volume pve/{volname}"
    )
    with pytest.raises(ResourceException, match="does not exist"):
        api.nodes("pve").lxc(vmid).config.get()
    assert not list((Path(sim["state_dir"]) / "volumes").glob(f"*/vm-{vmid}-*"))


def test_static_address_outside_the_subnet_fails_the_create(cts: Containers, api: Any) -> None:
    upid = api.nodes("pve").lxc.post(vmid=8030, ostemplate=TEMPLATE, storage="local-lvm",
                                     net0="name=eth0,bridge=vmbr0,ip=10.1.2.3/24")  # fmt: skip
    status = wait_task(api, "pve", upid)
    assert "10.1.2.3/24" in status["exitstatus"] and "subnet" in status["exitstatus"]
    with pytest.raises(ResourceException, match="does not exist"):
        api.nodes("pve").lxc(8030).config.get()  # a failed create removes its config


def test_unknown_bridge_fails_the_start(cts: Containers, api: Any) -> None:
    cts.create(8031, "dhcp")
    api.nodes("pve").lxc(8031).config.put(net0="name=eth0,bridge=vmbr9,ip=dhcp")
    status = wait_task(api, "pve", api.nodes("pve").lxc(8031).status.start.post())
    assert status["exitstatus"] == "bridge 'vmbr9' does not exist"


def test_existing_vmid_and_the_create_lock(cts: Containers, api: Any, sim: dict[str, Any]) -> None:
    from tests.pvesim.helpers import admin

    admin(sim, "task", {"type": "vzcreate", "vmid": 8040, "delay": 2})
    lxc = api.nodes("pve").lxc
    cts.made.append(8040)
    upid = lxc.post(vmid=8040, ostemplate=TEMPLATE, storage="local-lvm")
    with pytest.raises(ResourceException, match=r"CT 8040 already exists on node 'pve'"):
        lxc.post(vmid=8040, ostemplate=TEMPLATE, storage="local-lvm")
    # vm_start checks the lock in its task (PVE::API2::LXC::Status), under
    # the config flock that create_vm's task holds for its whole run: the
    # start waits for the flock, then finds the create lock gone
    start = lxc(8040).status.start.post()
    assert lxc(8040).status.current.get()["lock"] == "create"
    assert api.nodes("pve").tasks(upid).status.get()["status"] == "running"
    assert api.nodes("pve").tasks(start).status.get()["status"] == "running"
    ok(api, upid)
    assert ok(api, start)[:2] == ["trying to acquire lock...", " OK"]
    assert lxc(8040).status.current.get()["status"] == "running"
    assert "lock" not in lxc(8040).config.get()


def test_nextid_race_loser_gets_already_exists(cts: Containers, api: Any) -> None:
    lxc = api.nodes("pve").lxc
    vmid = int(api.cluster.nextid.get())
    cts.made.append(vmid)

    def create() -> str:
        try:
            return str(lxc.post(vmid=vmid, ostemplate=TEMPLATE, storage="local-lvm"))
        except ResourceException as exc:
            return f"{exc.status_code} {exc.content}"

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: create(), range(2)))
    winners = [r for r in results if r.startswith("UPID:")]
    losers = [r for r in results if not r.startswith("UPID:")]
    assert len(winners) == 1 and losers == [f"500 CT {vmid} already exists on node 'pve'"]
    ok(api, winners[0])


def test_config_put_digest_delete_and_read_only(cts: Containers, api: Any) -> None:
    """PUT config as pve-container's update_vm and update_pct_config, the
    create defaults as create_vm and PVE::LXC::Setup write them, and a
    description as write_pct_config/parse_pct_config keep it (comment lines,
    each read back with a newline)."""
    log = cts.create(8050, "dhcp", ostype="ubuntu")
    # create_vm: unprivileged defaults to 1, memory ||= 512, swap //= 512;
    # Setup->new stores the detected type over the given one, with a warning
    assert "got unexpected ostype (debian != ubuntu)" in log
    ct = api.nodes("pve").lxc(8050)
    config = ct.config.get()
    assert (config["memory"], config["swap"], config["unprivileged"]) == (512, 512, 1)
    assert config["ostype"] == "debian"
    ct.config.put(memory=1024, description="web server", digest=config["digest"])
    config = ct.config.get()
    assert config["memory"] == 1024 and config["description"] == "web server\n"
    ct.config.put(description="a\r\n\nb: 100%\n\n")  # trailing empty lines are lost
    assert ct.config.get()["description"] == "a\r\n\nb: 100%\n"
    with pytest.raises(ResourceException, match="detected modified configuration"):
        ct.config.put(memory=512, digest="0" * 40)
    ct.config.put(delete="description")
    assert "description" not in ct.config.get()
    ct.config.put(description="")  # no comment lines: no description
    assert "description" not in ct.config.get()
    with pytest.raises(ResourceException) as info:
        ct.config.put(onboot="yes")
    assert info.value.errors == {"onboot": "type check ('boolean') failed - got 'yes'"}

    def refused(**params: Any) -> tuple[int, str, Any]:
        with pytest.raises(ResourceException) as info:
            ct.config.put(**params)
        return info.value.status_code, info.value.content, info.value.errors

    digest = ct.config.get()["digest"]
    assert refused(digest=digest) == (500, "no options specified", None)
    assert refused(delete="bogus")[2] == {"delete": "unknown option 'bogus'"}
    assert refused(delete="memory", memory=256)[2] == {
        "delete": "you can't use '-memory' and -delete memory' at the same time"}  # fmt: skip
    assert refused(revert="cores", cores=2)[2] == {
        "revert": "you can't use '-cores' and '-revert cores' at the same time"}  # fmt: skip
    assert refused(unprivileged=1)[:2] == (500, "unable to modify read-only option: 'unprivileged'")
    assert refused(delete="unprivileged")[:2] == (
        500, "unable to delete read-only option: 'unprivileged'")  # fmt: skip
    assert refused(delete="memory")[:2] == (500, "unable to delete required option 'memory'")
    ct.config.put(arch="amd64", delete="searchdomain")  # allowed; an unset key is only warned of
    config = ct.config.get()
    assert config["arch"] == "amd64" and config["memory"] == 1024
    assert ct.pending.get() and not [e for e in ct.pending.get() if "pending" in e]


def test_pending_changes_of_a_running_container(cts: Containers, api: Any) -> None:
    """PVE::LXC::Config::update_pct_config writes every change to the
    pending section; on a running CT vmconfig_hotplug_pending applies the
    fast-plug options, memory, swap, cpulimit, cpuunits and net[n], the rest
    waits: GET config shows it (``current=1`` does not), GET pending lists
    it (config_with_pending_array), ``revert`` drops it, and the
    lxc-pve-poststop-hook (vmconfig_apply_pending) applies it at the stop."""
    cts.create(8090, "dhcp", start=1, nameserver="192.0.2.53")
    ct = api.nodes("pve").lxc(8090)
    before = ct.config.get()
    ct.config.put(memory=768, hostname="renamed", cores=2, searchdomain="example.org",
                  delete="nameserver")  # fmt: skip
    config = ct.config.get()
    assert (config["memory"], config["hostname"], config["cores"]) == (768, "renamed", 2)
    assert config["searchdomain"] == "example.org" and "nameserver" not in config
    assert config["digest"] != before["digest"]
    current = ct.config.get(current=1)
    assert current["memory"] == 768 and "searchdomain" not in current
    assert current["nameserver"] == "192.0.2.53"
    pending = {e["key"]: e for e in ct.pending.get()}
    assert pending["searchdomain"] == {"key": "searchdomain", "pending": "example.org"}
    assert pending["nameserver"] == {"key": "nameserver", "value": "192.0.2.53", "delete": 1}
    assert pending["memory"] == {"key": "memory", "value": 768}
    ct.config.put(revert="searchdomain")
    assert "searchdomain" not in ct.config.get()
    assert "searchdomain" not in {e["key"] for e in ct.pending.get()}
    ct.config.put(ostype="unmanaged")
    assert ct.config.get(current=1)["ostype"] == "debian"
    ok(api, ct.status.stop.post())
    config = ct.config.get(current=1)
    assert config["ostype"] == "unmanaged" and "nameserver" not in config
    assert not [e for e in ct.pending.get() if "pending" in e or "delete" in e]
    with pytest.raises(ResourceException) as info:
        ct.config.get(snapshot="first", current=1)
    assert info.value.errors == {"snapshot": "cannot use 'snapshot' parameter with 'current'",
                                 "current": "cannot use 'snapshot' parameter with 'current'"}  # fmt: skip


def test_clone_snapshot_and_rollback(
    cts: Containers, api: Any, key: Path, sim: dict[str, Any]
) -> None:
    ip = addr(sim, 70)
    cts.create(8060, ip, start=1)
    wait_port(ip, 22)
    assert ssh(key, ip, "echo one > /root/marker").returncode == 0
    ct = api.nodes("pve").lxc(8060)
    ok(api, ct.snapshot.post(snapname="first", description="before change"))
    snaps = {s["name"]: s for s in ct.snapshot.get()}
    assert snaps["first"]["description"] == "before change\n"  # a comment line
    assert snaps["current"]["parent"] == "first"
    with pytest.raises(ResourceException, match="snapshot name 'first' already used"):
        ct.snapshot.post(snapname="first")
    assert ssh(key, ip, "echo two > /root/marker").returncode == 0
    ct.config.put(description="after the snapshot", memory=384)
    ok(api, ct.snapshot("first").rollback.post(start=1))
    wait_port(ip, 22)
    assert ssh(key, ip, "cat /root/marker").stdout.strip() == "one"
    # the config comes back but for the description, which PVE keeps
    # (pve-guest-common's AbstractConfig::__snapshot_copy_config skips it)
    config = ct.config.get()
    assert config["description"] == "after the snapshot\n" and config.get("memory") != 384
    # GET .../pending as pve-container's vm_pending: every plain key with its
    # value (the rollback's stop applied what was pending)
    pending = {e["key"]: e for e in ct.pending.get()}
    assert pending["hostname"]["value"] == config["hostname"] and "digest" in pending
    assert not [e for e in pending.values() if "pending" in e or "delete" in e]
    # a full clone of the stopped container: same files, new MAC
    ok(api, ct.status.stop.post())
    cts.made.append(8061)
    ok(api, ct.clone.post(newid=8061, hostname="clone8061", full=1))
    clone_cfg = api.nodes("pve").lxc(8061).config.get()
    assert clone_cfg["hostname"] == "clone8061"
    orig_mac = [p for p in ct.config.get()["net0"].split(",") if p.startswith("hwaddr")]
    assert orig_mac[0] not in clone_cfg["net0"]
    clone_ip = addr(sim, 71)
    api.nodes("pve").lxc(8061).config.put(
        net0=f"name=eth0,bridge=vmbr0,ip={clone_ip}/24,gw={sim['gateway']}"
    )
    cts.start(8061)
    wait_port(clone_ip, 22)
    result = ssh(key, clone_ip, "hostname; cat /root/marker")
    assert result.stdout.split() == ["clone8061", "one"]
    ok(api, ct.snapshot("first").delete())
    assert [s["name"] for s in ct.snapshot.get()] == ["current"]


def test_shutdown_and_reboot(cts: Containers, api: Any, key: Path, sim: dict[str, Any]) -> None:
    ip = addr(sim, 80)
    cts.create(8070, ip, start=1)
    wait_port(ip, 22)
    boot_id = ssh(
        key, ip, "cat /proc/sys/kernel/random/boot_id; systemctl is-system-running --wait"
    )
    ok(api, api.nodes("pve").lxc(8070).status.reboot.post())
    wait_port(ip, 22)
    after = ssh(
        key, ip, "systemctl show -p ActiveEnterTimestampMonotonic --value init.scope; uptime -s"
    )
    assert after.returncode == 0 and boot_id.returncode == 0
    assert api.nodes("pve").lxc(8070).status.current.get()["uptime"] < 30
    ok(api, api.nodes("pve").lxc(8070).status.shutdown.post(timeout=30))
    assert api.nodes("pve").lxc(8070).status.current.get()["status"] == "stopped"


def test_resize_grows_only_and_protection_blocks_destroy(cts: Containers, api: Any) -> None:
    """As pve-container's resize_vm and check_protection: ``+`` adds to the
    current size, a size without a unit is bytes, a shrink or the same size
    is refused before any task, and a protected CT cannot be destroyed."""
    cts.create(8070)
    ct = api.nodes("pve").lxc(8070)
    assert ct.config.get()["rootfs"] == "local-lvm:vm-8070-disk-0,size=4G"
    log = ok(api, ct.resize.put(disk="rootfs", size="+1G"))
    assert "  Logical volume pve/vm-8070-disk-0 successfully resized." in log
    assert any("changed from 4.00 GiB (1024 extents) to 5.00 GiB (1280 extents)" in line
               for line in log)  # fmt: skip
    assert ct.config.get()["rootfs"] == "local-lvm:vm-8070-disk-0,size=5G"
    ok(api, ct.resize.put(disk="rootfs", size="5632M"))  # absolute
    assert ct.config.get()["rootfs"] == "local-lvm:vm-8070-disk-0,size=5632M"
    assert ct.status.current.get()["maxdisk"] == 5632 << 20
    for size, message in (("5G", "unable to shrink disk size"),
                          ("10", "unable to shrink disk size"),  # ten bytes
                          ("+0", "disk is already at specified size"),
                          ("5.5G", "disk is already at specified size")):  # fmt: skip
        with pytest.raises(ResourceException, match=message):
            ct.resize.put(disk="rootfs", size=size)
    with pytest.raises(ResourceException, match="detected modified configuration"):
        ct.resize.put(disk="rootfs", size="+1G", digest="0" * 40)
    assert ct.config.get()["rootfs"] == "local-lvm:vm-8070-disk-0,size=5632M"

    ct.config.put(protection=1)
    with pytest.raises(ResourceException, match="can't remove CT 8070 - protection mode enabled"):
        ct.delete()
    assert 8070 in {int(c["vmid"]) for c in api.nodes("pve").lxc.get()}
    ct.config.put(delete="protection")


def test_clone_rules_as_pve(cts: Containers, api: Any, key: Path, sim: dict[str, Any]) -> None:
    """As pve-container's clone_vm: a running CT is cloned in full only from
    a snapshot, a linked clone needs a template or a snapshot and keeps the
    storage, the source is locked (``disk``) while it is copied, and the
    clone's machine-id is emptied so it gets its own at first boot."""
    ip = addr(sim, 72)
    cts.create(8072, ip, start=1)
    wait_port(ip, 22)
    ct = api.nodes("pve").lxc(8072)
    machine_id = ssh(key, ip, "cat /etc/machine-id").stdout.strip()
    assert len(machine_id) == 32, machine_id
    for params, message in (
        ({"full": 1}, "Full clone of a running container is only possible from a snapshot"),
        ({}, "Full clone of a running container is only possible from a snapshot"),
        ({"full": 0}, "Linked clone feature for 'local-lvm:vm-8072-disk-0' is not available"),
        ({"full": 0, "storage": "local-lvm"}, "parameter 'storage' not allowed for linked clones"),
    ):
        with pytest.raises(ResourceException, match=message):
            ct.clone.post(newid=8073, **params)
    assert 8073 not in {int(c["vmid"]) for c in api.nodes("pve").lxc.get()}

    ok(api, ct.snapshot.post(snapname="s1"))
    cts.made.append(8073)
    upid = ct.clone.post(newid=8073, snapname="s1", full=0, hostname="linked8073")
    assert ct.config.get()["lock"] == "disk"  # the source, while the copy runs
    with pytest.raises(ResourceException, match=r"CT is locked \(disk\)"):
        ct.snapshot.post(snapname="s2")
    log = ok(api, upid)
    assert log[:2] == ["creating a clone of container 8072 with ID 8073",
                       "create linked clone of mount point rootfs (local-lvm:vm-8072-disk-0)"]  # fmt: skip
    assert "lock" not in ct.config.get()
    clone = api.nodes("pve").lxc(8073)
    assert clone.config.get()["rootfs"].startswith("local-lvm:vm-8073-disk-0")
    clone_ip = addr(sim, 73)
    clone.config.put(net0=f"name=eth0,bridge=vmbr0,ip={clone_ip}/24,gw={sim['gateway']}")
    cts.start(8073)
    wait_port(clone_ip, 22)
    new_id = ssh(key, clone_ip, "cat /etc/machine-id").stdout.strip()
    assert len(new_id) == 32 and new_id != machine_id, (new_id, machine_id)
    ok(api, ct.snapshot("s1").delete())

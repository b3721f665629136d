"""The create surface of issue 19 against a real simulator: bare sizes,
mount point volumes and bind mounts, tags, the interfaces of a stopped CT,
and the root@pam-only rules an API token meets.  Shared simulator; vmids
9500-9599, static addresses .100-.110 of its subnet."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pvesim import perms
from pvesim.errors import PveError
from pvesim.node import unique_tags
from pvesim.volumes import MountPoint, free_disk_name, with_default_storage
from tests.pvesim.helpers import raw, ticket_api, token_api, token_header, wait_port, wait_task
from tests.pvesim.test_containers import TEMPLATE, Containers, addr, ok, ssh

# --- pure rules ----------------------------------------------------------


def test_tags_sorted_unique_lowercase_as_get_unique_tags() -> None:
    # PVE::GuestHelpers::get_unique_tags, default tag style: sorted with a
    # case-insensitive compare, lower-cased, duplicates dropped, ';'-joined
    assert unique_tags("web;Alpha;web,beta") == "alpha;beta;web"
    assert unique_tags("B a b") == "a;b"


def test_bare_size_takes_the_create_storage() -> None:
    # API2::LXC create_vm: "allow to use simple numbers (add default storage)"
    assert with_default_storage("4", "local-lvm") == "local-lvm:4"
    assert with_default_storage("0.5", "local-lvm") == "local-lvm:0.5"
    assert with_default_storage("local-lvm:8", "x") == "local-lvm:8"
    assert with_default_storage("4,mp=/x", "local-lvm") == "4,mp=/x"


def test_mount_point_printed_as_print_ct_mountpoint() -> None:
    mp = MountPoint.parse("mp0", "local-lvm:2,quota=1,mp=/data,backup=1")
    assert mp.kind == "volume" and mp.new_size_gb == ("local-lvm", 2.0)
    assert MountPoint("mp0", "local-lvm:vm-101-disk-1", mp.options).format(size=str(2 << 30)) == (
        "local-lvm:vm-101-disk-1,mp=/data,backup=1,quota=1,size=2G"
    )
    bind = MountPoint.parse("mp1", "/srv/x,ro=1,mp=/mnt/x")
    assert bind.kind == "bind" and bind.read_only and bind.format() == "/srv/x,mp=/mnt/x,ro=1"
    assert MountPoint.parse("mp2", "/dev/sdb1,mp=/m").kind == "device"


def test_disk_names_continue_after_rootfs(tmp_path: Path) -> None:
    # find_free_diskname: the lowest vm-VMID-disk-K free on the storage
    assert free_disk_name(tmp_path, "local-lvm", 7, ["local-lvm:vm-7-disk-0"]) == (
        "local-lvm:vm-7-disk-1"
    )


def test_root_only_rules_for_a_token() -> None:
    # PVE::LXC::check_ct_modify_config_perm compares the user with 'root@pam';
    # a token authenticates as root@pam!NAME
    token = "root@pam!pvesim"
    with pytest.raises(PveError) as exc:
        perms.check_ct_modify_config_perm(token, None, {"mp0": "/srv,mp=/x"}, [], True)
    assert exc.value.status == 403
    assert exc.value.message == (
        "Permission check failed (mount point type bind is only allowed for root@pam)"
    )
    with pytest.raises(PveError, match="except nesting"):
        perms.check_ct_modify_config_perm(token, None, {"features": "nesting=1,keyctl=1"}, [], True)
    with pytest.raises(PveError, match="privileged container"):
        perms.check_ct_modify_config_perm(token, None, {"features": "nesting=1"}, [], False)
    perms.check_ct_modify_config_perm(token, None, {"features": "nesting=1"}, [], True)
    perms.check_ct_modify_config_perm(token, None, {"mp0": "local-lvm:1,mp=/d"}, [], False)
    perms.check_ct_modify_config_perm("root@pam", None, {"mp0": "/srv,mp=/x"}, [], False)


# --- against the simulator -----------------------------------------------


def vol_read(vol: Path, name: str) -> str:
    """A file of a stopped CT's volume, read from its ext4 image (debugfs)."""
    out = subprocess.run(["debugfs", "-R", f"cat /{name}", str(vol / "disk.raw")],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout


def vol_write(vol: Path, name: str, text: str, tmp_path: Path) -> None:
    """Write a file into a stopped CT's volume image (debugfs -w)."""
    src = tmp_path / "vol_write.src"
    src.write_text(text)
    cmds = tmp_path / "vol_write.cmds"
    cmds.write_text(f"rm /{name}\nwrite {src} /{name}\n")
    subprocess.run(["debugfs", "-w", "-f", str(cmds), str(vol / "disk.raw")],
                   capture_output=True, check=True)  # fmt: skip
    assert vol_read(vol, name) == text


def volume_mounts(state: Path, loops: bool = True) -> list[str]:
    """The host's mounts (and loop devices) of the simulator's volumes."""
    base = str(state.resolve() / "volumes")
    mounts = [line for line in Path("/proc/self/mounts").read_text().splitlines()
              if base in line]  # fmt: skip
    if not loops:
        return mounts
    devs = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return mounts + [line for line in devs.splitlines() if base in line]


def assert_no_volume_mounts(state: Path, vmid: int | None = None, timeout: float = 60) -> None:
    """No mount at once; no loop device once the kernel has let go of the
    stopped CT's mount (autoclear), which can take some seconds."""

    def left(loops: bool) -> list[str]:
        found = volume_mounts(state, loops)
        return [line for line in found if vmid is None or f"/vm-{vmid}-disk-" in line]

    assert left(loops=False) == []
    deadline = time.monotonic() + timeout
    while left(loops=True) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left(loops=True) == []


def df_mib(key: Path, ip: str, path: str) -> int:
    result = ssh(key, ip, f"df -BM --output=size {path} | tail -1")
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().removesuffix("M"))


@pytest.fixture(scope="module")
def api(sim: dict[str, Any]) -> Any:
    return token_api(sim)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.mark.integration
def test_bare_rootfs_size_volume_mount_point_and_tags(
    api: Any, sim: dict[str, Any], key: Path
) -> None:
    cts = Containers(api, sim, key)
    ip = addr(sim, 100)
    state = Path(sim["state_dir"])
    try:
        cts.create(9500, ip, rootfs="1", mp0="local-lvm:0.5,mp=/data,backup=1",
                   tags="web;Alpha;web")  # fmt: skip
        config = api.nodes("pve").lxc(9500).config.get()
        assert config["rootfs"] == "local-lvm:vm-9500-disk-0,size=1G"
        assert config["mp0"] == "local-lvm:vm-9500-disk-1,mp=/data,backup=1,size=512M"
        assert config["tags"] == "alpha;web"
        content = api.nodes("pve").storage("local-lvm").content.get(vmid=9500)
        assert {c["volid"] for c in content} == {"local-lvm:vm-9500-disk-0",
                                                 "local-lvm:vm-9500-disk-1"}  # fmt: skip
        # a stopped CT's interfaces: PVE finds no process and returns nothing
        status, _reason, body = raw(sim, "GET", "/nodes/pve/lxc/9500/interfaces",
                                    headers=token_header(sim))  # fmt: skip
        assert status == 200 and body == {"data": None}
        cts.start(9500)
        wait_port(ip, 22)
        result = ssh(key, ip, "findmnt -n -o TARGET /data && echo kept > /data/file && sync")
        assert result.returncode == 0 and result.stdout.split() == ["/data"], result.stderr
        # the volume's file system is loop-mounted on the host while the CT runs
        assert (state / "volumes/local-lvm/vm-9500-disk-1/mnt/file").read_text() == "kept\n"
        # kept through reboot, stop/start and a config change
        ok(api, api.nodes("pve").lxc(9500).status.reboot.post())
        wait_port(ip, 22)
        assert ssh(key, ip, "cat /data/file").stdout == "kept\n"
        ok(api, api.nodes("pve").lxc(9500).status.stop.post())
        api.nodes("pve").lxc(9500).config.put(memory=256, tags="b;A")
        assert api.nodes("pve").lxc(9500).config.get()["tags"] == "a;b"
        cts.start(9500)
        wait_port(ip, 22)
        assert ssh(key, ip, "cat /data/file").stdout == "kept\n"
        # a full clone copies the volume to the clone's own disk-1
        ok(api, api.nodes("pve").lxc(9500).status.stop.post())
        cts.made.append(9501)
        ok(api, api.nodes("pve").lxc(9500).clone.post(newid=9501, hostname="ct9501"))
        clone = api.nodes("pve").lxc(9501).config.get()
        assert clone["mp0"] == "local-lvm:vm-9501-disk-1,mp=/data,backup=1,size=512M"
        assert vol_read(state / "volumes/local-lvm/vm-9501-disk-1", "file") == "kept\n"
        # destroy frees the volumes it owns
        log = ok(api, api.nodes("pve").lxc(9501).delete())
        assert 'Logical volume "vm-9501-disk-1" successfully removed.' in log
        assert not (state / "volumes/local-lvm/vm-9501-disk-1").exists()
        assert (state / "volumes/local-lvm/vm-9500-disk-1").exists()
    finally:
        cts.cleanup()
    assert not (state / "volumes/local-lvm/vm-9500-disk-1").exists()
    assert_no_volume_mounts(state)


@pytest.mark.integration
def test_volumes_are_sized_ext4_file_systems(
    api: Any, sim: dict[str, Any], key: Path, tmp_path: Path
) -> None:
    """A volume is an ext4 file system of the volume's size, as on LVM-thin:
    ``df`` in the CT shows that size, writing past it fails with ENOSPC, and
    resize grows it; nothing stays mounted or attached once it is gone."""
    cts = Containers(api, sim, key)
    ip = addr(sim, 110)
    state = Path(sim["state_dir"])
    vol = state / "volumes/local-lvm/vm-9580-disk-1"
    ct = api.nodes("pve").lxc(9580)
    try:
        cts.create(9580, ip, rootfs="1", mp0="local-lvm:2,mp=/data",
                   mp1="local-lvm:0.5,mp=/small")  # fmt: skip
        assert ct.config.get()["mp0"] == "local-lvm:vm-9580-disk-1,mp=/data,size=2G"
        # a sparse image: the storage counts what it holds, not its size
        content = {c["volid"]: c for c in api.nodes("pve").storage("local-lvm").content.get(vmid=9580)}  # fmt: skip
        entry = content["local-lvm:vm-9580-disk-1"]
        assert entry["size"] == 2 << 30 and 0 < entry["used"] < 256 << 20
        assert_no_volume_mounts(state, 9580)  # mounted only while the CT runs
        cts.start(9580)
        wait_port(ip, 22)
        assert 1800 <= df_mib(key, ip, "/data") <= 2048
        assert 400 <= df_mib(key, ip, "/small") <= 512
        assert ssh(key, ip, "findmnt -n -o FSTYPE /data").stdout.strip() == "ext4"
        full = ssh(key, ip, "dd if=/dev/zero of=/small/big bs=1M count=600 2>&1; sync")
        assert "No space left on device" in full.stdout, full.stdout
        assert ssh(key, ip, "rm /small/big && echo kept > /data/file && sync").returncode == 0
        # a snapshot of the running CT (its file systems frozen while copied)
        ok(api, ct.snapshot.post(snapname="s1"))
        assert ssh(key, ip, "echo changed > /data/file && sync").returncode == 0
        ok(api, ct.status.stop.post())
        assert_no_volume_mounts(state, 9580)
        ok(api, ct.snapshot("s1").rollback.post())
        assert vol_read(vol, "file") == "kept\n"
        ok(api, ct.resize.put(disk="mp0", size="3G"))  # offline: e2fsck, resize2fs
        cts.start(9580)
        wait_port(ip, 22)
        assert 2800 <= df_mib(key, ip, "/data") <= 3072
        assert ssh(key, ip, "cat /data/file").stdout == "kept\n"
        # resize of a running CT's volume: the host refuses an online resize2fs
        # without CAP_SYS_RESOURCE, so it may take effect at the next start
        ok(api, ct.resize.put(disk="mp1", size="+512M"))
        assert ct.config.get()["mp1"] == "local-lvm:vm-9580-disk-2,mp=/small,size=1G"
        ok(api, ct.status.reboot.post())
        wait_port(ip, 22)
        assert 900 <= df_mib(key, ip, "/small") <= 1024
        ok(api, ct.status.stop.post())
        # a full clone copies the images
        cts.made.append(9581)
        ok(api, ct.clone.post(newid=9581, hostname="ct9581"))
        assert vol_read(state / "volumes/local-lvm/vm-9581-disk-1", "file") == "kept\n"
        ok(api, api.nodes("pve").lxc(9581).delete())
        assert not (state / "volumes/local-lvm/vm-9581-disk-1").exists()
        # deleting a running CT's mount point is pending (vmconfig_hotplug_pending
        # skips mp[n]): at the stop it becomes unused0, whose delete frees it
        ok(api, ct.snapshot("s1").delete())  # it uses the volume too
        cts.start(9580)
        ct.config.put(delete="mp1")
        assert {"key": "mp1", "value": ct.config.get(current=1)["mp1"], "delete": 1} in (
            ct.pending.get())  # fmt: skip
        ct.config.put(delete="unused0")  # not set yet: only warned of
        assert (state / "volumes/local-lvm/vm-9580-disk-2").exists()
        ok(api, ct.status.stop.post())
        assert ct.config.get()["unused0"] == "local-lvm:vm-9580-disk-2"
        ct.config.put(delete="unused0")
        assert not (state / "volumes/local-lvm/vm-9580-disk-2").exists()
        ok(api, ct.delete(force=1))
        assert not vol.exists()
    finally:
        cts.cleanup()
    assert_no_volume_mounts(state, 9580)
    assert_no_volume_mounts(state, 9581)


def test_volume_mounts_cleaned_at_stop_and_after_a_crash(tmp_path: Path) -> None:
    """``pvesim`` stop unmounts the running CTs' volumes; a start after a
    killed simulator unmounts and detaches what it left."""
    from tests.conftest import start_simulator, stop_simulator

    state = tmp_path / "state"
    proc, info = start_simulator(state)
    try:
        api = token_api(info)
        ok(api, api.nodes("pve").lxc.post(vmid=310, ostemplate=TEMPLATE, storage="local-lvm",
                                          rootfs="1", mp0="local-lvm:0.5,mp=/data"))  # fmt: skip
        ok(api, api.nodes("pve").lxc(310).status.start.post())
        assert len(volume_mounts(state)) == 2  # the mount and its loop device
    finally:
        assert stop_simulator(proc) == 0
    assert_no_volume_mounts(state)
    proc, info = start_simulator(state)
    try:
        api = token_api(info)
        ok(api, api.nodes("pve").lxc(310).status.start.post())
        assert len(volume_mounts(state)) == 2
        proc.kill()
        proc.wait()
        assert len(volume_mounts(state)) == 2
    finally:
        if proc.stdout:
            proc.stdout.close()
    proc, info = start_simulator(state)
    try:
        assert_no_volume_mounts(state)
        api = token_api(info)
        ok(api, api.nodes("pve").lxc(310).status.start.post())
        ok(api, api.nodes("pve").lxc(310).delete(force=1))
        assert_no_volume_mounts(state)
    finally:
        assert stop_simulator(proc) == 0
    assert_no_volume_mounts(state)


@pytest.mark.integration
def test_create_errors_as_pve(api: Any, sim: dict[str, Any]) -> None:
    lxc = "/nodes/pve/lxc"

    def post(**params: Any) -> tuple[int, str, Any]:
        data = json.dumps({"vmid": 9510, "ostemplate": TEMPLATE, **params}).encode()
        return raw(sim, "POST", lxc, data=data,
                   headers={**token_header(sim), "Content-Type": "application/json"})  # fmt: skip

    status, reason, _ = post(storage="local-lvm", mp0="local-lvm:1,mp=/data")
    assert (status, reason) == (500, "mount points configured, but 'rootfs' not set - aborting")
    status, _, body = post(storage="local")
    assert status == 400
    assert body["errors"] == {"storage": "storage 'local' does not support container directories"}
    status, reason, _ = post(storage="nope", rootfs="4")
    assert (status, reason) == (500, "storage 'nope' does not exist")
    # a bind mount with root@pam's API token: the user is root@pam!pvesim
    status, reason, _ = post(storage="local-lvm", rootfs="1", mp0="/tmp,mp=/mnt/x")
    assert status == 403
    assert reason == "Permission check failed (mount point type bind is only allowed for root@pam)"


@pytest.mark.integration
def test_bind_mount_as_root_at_pam(sim: dict[str, Any], key: Path, tmp_path: Path) -> None:
    root = ticket_api(sim)  # root@pam with its password: bind mounts allowed
    cts = Containers(root, sim, key)
    ip = addr(sim, 101)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host").write_text("host\n")
    try:
        cts.create(9520, ip, rootfs="1", mp0=f"{shared},mp=/mnt/shared",
                   mp1=f"{shared},mp=/mnt/ro,ro=1")  # fmt: skip
        config = root.nodes("pve").lxc(9520).config.get()
        assert config["mp0"] == f"{shared},mp=/mnt/shared"
        assert config["mp1"] == f"{shared},mp=/mnt/ro,ro=1"
        cts.start(9520)
        wait_port(ip, 22)
        result = ssh(key, ip, "cat /mnt/shared/from-host && echo ct > /mnt/shared/from-ct; "
                              "touch /mnt/ro/x 2>/dev/null || echo read-only")  # fmt: skip
        assert result.stdout.split() == ["host", "read-only"], result.stderr
        assert (shared / "from-ct").read_text() == "ct\n"
        # a bind mount cannot be cloned (clone_vm: "TODO: allow bind mounts?")
        with pytest.raises(Exception, match="unable to clone mountpoint 'mp0' \\(type bind\\)"):
            root.nodes("pve").lxc(9520).clone.post(newid=9521)
        ok(root, root.nodes("pve").lxc(9520).status.stop.post())
        # a missing host directory fails the start as PVE's pre-start hook does
        root.nodes("pve").lxc(9520).config.put(mp0=f"{tmp_path}/gone,mp=/mnt/shared")
        status = wait_task(root, "pve", root.nodes("pve").lxc(9520).status.start.post())
        assert status["exitstatus"] == "startup for container '9520' failed"
    finally:
        cts.cleanup()
    assert (shared / "from-host").exists()  # the host's directory stays


def v6(sim: dict[str, Any], host: int) -> str:
    return str(ipaddress.ip_network(sim["subnet6"]).network_address + host)


def netns(sim: dict[str, Any], vmid: int) -> str:
    return f"{sim['bridge']}-{vmid}"


@pytest.mark.integration
def test_ipv6_second_interface_resolv_and_options(api: Any, sim: dict[str, Any], key: Path) -> None:
    cts = Containers(api, sim, key)
    ip, ip6 = addr(sim, 102), v6(sim, 0x102)
    try:
        cts.create(
            9530, ip, rootfs="1", nameserver="198.18.0.53 fd00::53", searchdomain="example.test",
            onboot=1, startup="order=2,up=30", features="nesting=1", unprivileged=1,
        )  # fmt: skip
        ct = api.nodes("pve").lxc(9530)
        net0 = ct.config.get()["net0"]
        hwaddr = net0.split("hwaddr=")[1].split(",")[0]
        ct.config.put(
            net0=f"name=eth0,bridge=vmbr0,firewall=1,gw={sim['gateway']},hwaddr={hwaddr},"
            f"ip={ip}/24,ip6={ip6}/64,gw6={sim['gateway6']},type=veth",
            net1="name=eth1,bridge=vmbr0,ip=manual,ip6=auto,tag=5",
        )
        config = ct.config.get()
        assert config["net0"] == (
            f"name=eth0,bridge=vmbr0,firewall=1,gw={sim['gateway']},gw6={sim['gateway6']},"
            f"hwaddr={hwaddr},ip={ip}/24,ip6={ip6}/64,type=veth"
        )
        assert config["net1"].startswith("name=eth1,bridge=vmbr0,hwaddr=BC:24:11:")
        assert config["net1"].endswith(",ip=manual,ip6=auto,tag=5,type=veth")
        assert (config["onboot"], config["startup"], config["features"]) == (
            1, "order=2,up=30", "nesting=1")  # fmt: skip
        cts.start(9530)
        wait_port(ip, 22)
        result = ssh(key, ip, "cat /etc/resolv.conf; cat /etc/network/interfaces; "
                              "ip -6 route show default")  # fmt: skip
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "search example.test\nnameserver 198.18.0.53\nnameserver fd00::53\n" in out
        # PVE::LXC::Setup::Debian::setup_network
        assert (
            f"auto eth0\niface eth0 inet static\n\taddress {ip}/24\n\tgateway {sim['gateway']}\n\n"
            f"iface eth0 inet6 static\n\taddress {ip6}/64\n\tgateway {sim['gateway6']}\n\n"
            "auto eth1\niface eth1 inet manual\n\niface eth1 inet6 auto\n"
        ) in out
        assert f"default via {sim['gateway6']} dev eth0" in out
        # the static address answers on the bridge (sshd, from the host)
        socket.create_connection((ip6, 22), timeout=10).close()
        ifaces = {i["name"]: i for i in ct.interfaces.get()}
        eth0 = ifaces["eth0"]
        assert {a["ip-address"] for a in eth0["ip-addresses"] if a["ip-address-type"] == "inet6"
                } >= {ip6}  # fmt: skip
        assert eth0["hardware-address"] == eth0["hwaddr"] == hwaddr.lower()
        assert "inet6" in eth0  # PVE: the last inet6 address listed (the link-local)
        # net1 comes up (a link-local address); its port sits on VLAN 5's bridge
        # (PVE's vmbr0v5 on a bridge that is not VLAN-aware)
        assert any(a["ip-address"].startswith("fe80:") for a in ifaces["eth1"]["ip-addresses"])
        index = sim["bridge"].removeprefix("pvesim")
        master = Path(f"/sys/class/net/vp{index}x9530i1/master").resolve().name
        assert master == f"{sim['bridge']}v5"
    finally:
        cts.cleanup()


@pytest.mark.integration
def test_vlan_tag_isolates(api: Any, sim: dict[str, Any], key: Path) -> None:
    cts = Containers(api, sim, key)
    a, b, c = addr(sim, 104), addr(sim, 105), addr(sim, 106)
    try:
        for vmid, ip, tag in ((9531, a, ",tag=5"), (9532, b, ",tag=5"), (9533, c, "")):
            cts.create(vmid, rootfs="1",
                       net0=f"name=eth0,bridge=vmbr0,ip={ip}/24,gw={sim['gateway']}{tag}")  # fmt: skip
            cts.start(vmid)
        wait_port(c, 22)

        def reaches(vmid: int, target: str) -> bool:
            probe = f"import socket; socket.create_connection(('{target}', 22), timeout=3)"
            return subprocess.run(["ip", "netns", "exec", netns(sim, vmid), "python3", "-c", probe],
                                  capture_output=True).returncode == 0  # fmt: skip

        deadline = time.monotonic() + 30
        while not reaches(9531, b) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert reaches(9531, b)  # the same VLAN
        assert not reaches(9531, c)  # an untagged container: VLAN 1
        assert not reaches(9533, b)
    finally:
        cts.cleanup()


@pytest.mark.integration
def test_pools_as_pve(api: Any, sim: dict[str, Any], key: Path) -> None:
    cts = Containers(api, sim, key)
    status, reason, _ = raw(sim, "POST", "/nodes/pve/lxc", headers={
        **token_header(sim), "Content-Type": "application/json"}, data=json.dumps(
        {"vmid": 9540, "ostemplate": TEMPLATE, "storage": "local-lvm", "pool": "nope19"}).encode())  # fmt: skip
    # PVE::RPCEnvironment::check_pool_exist raises a permission error
    assert (status, reason) == (403, "Permission check failed (pool 'nope19' does not exist)")
    api.pools.post(poolid="web19", comment="issue 19")
    try:
        assert {"poolid": "web19", "comment": "issue 19"} in api.pools.get()
        cts.create(9540, rootfs="1", pool="web19")
        assert "pool" not in api.nodes("pve").lxc(9540).config.get()  # user.cfg, not the CT's
        [pool] = api.pools.get(poolid="web19")
        assert [m["id"] for m in pool["members"]] == ["lxc/9540"]
        resources = {r["id"]: r for r in api.cluster.resources.get(type="vm")}
        assert resources["lxc/9540"]["pool"] == "web19"
        with pytest.raises(Exception, match="pool 'web19' is not empty \\(contains VM 9540\\)"):
            api.pools.delete(poolid="web19")
        cts.cleanup()
        assert api.pools.get(poolid="web19")[0]["members"] == []  # a destroy leaves the pool
    finally:
        cts.cleanup()
        api.pools.delete(poolid="web19")
    assert all(p["poolid"] != "web19" for p in api.pools.get())


@pytest.mark.integration
def test_snapshots_cover_mount_point_volumes(
    api: Any, sim: dict[str, Any], key: Path, tmp_path: Path
) -> None:
    cts = Containers(api, sim, key)
    vol = Path(sim["state_dir"]) / "volumes/local-lvm/vm-9550-disk-1"
    try:
        cts.create(9550, rootfs="1", mp0="local-lvm:1,mp=/data")
        vol_write(vol, "file", "before\n", tmp_path)
        ct = api.nodes("pve").lxc(9550)
        ok(api, ct.snapshot.post(snapname="s1"))
        vol_write(vol, "file", "after\n", tmp_path)
        ok(api, ct.snapshot("s1").rollback.post())
        assert vol_read(vol, "file") == "before\n"
        # a clone from the snapshot gets the volume as it was then
        vol_write(vol, "file", "after\n", tmp_path)
        cts.made.append(9551)
        ok(api, ct.clone.post(newid=9551, snapname="s1"))
        clone_vol = Path(sim["state_dir"]) / "volumes/local-lvm/vm-9551-disk-1"
        assert vol_read(clone_vol, "file") == "before\n"
        # a bind mount has no snapshot feature (has_feature in __snapshot_prepare)
        root = ticket_api(sim)
        root.nodes("pve").lxc(9550).config.put(mp1=f"{tmp_path},mp=/mnt/host")
        status = wait_task(api, "pve", ct.snapshot.post(snapname="s2"))
        assert status["exitstatus"] == "snapshot feature is not available"
        # deleting a volume mount point leaves an unused disk; deleting that
        # frees it once no snapshot uses it (is_volume_in_use)
        ct.config.put(delete="mp0")
        assert ct.config.get()["unused0"] == "local-lvm:vm-9550-disk-1"
        ct.config.put(delete="unused0")
        assert vol.exists()  # snapshot s1 still has it
        ct.config.put(mp0="local-lvm:1,mp=/more")
        assert ct.config.get()["mp0"].startswith("local-lvm:vm-9550-disk-2,mp=/more,")
        ok(api, ct.snapshot("s1").delete())
        ct.config.put(delete="mp0")
        ct.config.put(delete="unused0")
        assert not (vol.parent / "vm-9550-disk-2").exists()
    finally:
        cts.cleanup()


def test_dhcp6_reply_carries_the_clients_ia() -> None:
    from pvesim import dhcp6

    duid = b"\x00\x01\x00\x01\x2c\x00\x00\x00" + bytes.fromhex("bc24112b8eed")
    ia = b"\x00\x00\x00\x07" + b"\x00" * 8
    solicit = bytes([dhcp6.SOLICIT]) + b"abc" + dhcp6._opt(1, duid) + dhcp6._opt(3, ia)
    msg = dhcp6.parse_message(solicit)
    assert dhcp6.mac_of_duid(duid) == "bc:24:11:2b:8e:ed"
    assert dhcp6.mac_of_link_local("fe80::be24:11ff:fe2b:8eed%eth0") == "bc:24:11:2b:8e:ed"
    reply = dhcp6.build_reply(msg, b"\x00\x03\x00\x01" + b"\x02" * 6, "fd00::d:2b:8eed")
    assert reply is not None and reply[0] == dhcp6.ADVERTISE and reply[1:4] == b"abc"
    back = dhcp6.parse_message(reply)
    ia_na = back.option(dhcp6.OPT_IA_NA)
    assert ia_na is not None and ia_na[:4] == b"\x00\x00\x00\x07"
    [(code, value)] = dhcp6.parse_options(ia_na[12:])
    assert code == dhcp6.OPT_IAADDR
    assert ipaddress.IPv6Address(value[:16]) == ipaddress.IPv6Address("fd00::d:2b:8eed")


@pytest.mark.integration
def test_ip6_dhcp_gets_an_address(api: Any, sim: dict[str, Any], key: Path) -> None:
    cts = Containers(api, sim, key)
    ip = addr(sim, 107)
    try:
        cts.create(9560, rootfs="1",
                   net0=f"name=eth0,bridge=vmbr0,ip={ip}/24,gw={sim['gateway']},ip6=dhcp")  # fmt: skip
        cts.start(9560)
        # without a DHCPv6 answer ifupdown would hold the network (and SSH) back
        assert wait_port(ip, 22) < 30
        deadline = time.monotonic() + 30
        subnet6 = ipaddress.ip_network(sim["subnet6"])
        found: list[str] = []
        while not found and time.monotonic() < deadline:
            eth0 = {i["name"]: i for i in api.nodes("pve").lxc(9560).interfaces.get()}["eth0"]
            found = [a["ip-address"] for a in eth0["ip-addresses"]
                     if ipaddress.ip_address(a["ip-address"]) in subnet6]  # fmt: skip
            time.sleep(0.5)
        # ::d:XXXX:XXXX, the low bytes of its MAC
        assert (
            found
            and int(ipaddress.ip_address(found[0])) - int(subnet6.network_address) >> 32 == 0xD
        )
    finally:
        cts.cleanup()


@pytest.mark.integration
def test_ip6_auto_forms_a_slaac_address(api: Any, sim: dict[str, Any], key: Path) -> None:
    cts = Containers(api, sim, key)
    ip = addr(sim, 108)
    try:
        cts.create(9570, rootfs="1",
                   net0=f"name=eth0,bridge=vmbr0,ip={ip}/24,gw={sim['gateway']},ip6=auto")  # fmt: skip
        cts.start(9570)
        wait_port(ip, 22)
        subnet6 = ipaddress.ip_network(sim["subnet6"])
        deadline = time.monotonic() + 30
        found: list[str] = []
        while not found and time.monotonic() < deadline:
            eth0 = {i["name"]: i for i in api.nodes("pve").lxc(9570).interfaces.get()}["eth0"]
            found = [a["ip-address"] for a in eth0["ip-addresses"]
                     if ipaddress.ip_address(a["ip-address"]) in subnet6]  # fmt: skip
            time.sleep(0.5)
        # the EUI-64 address from the simulator's prefix (RFC 4862)
        mac = eth0["hardware-address"].split(":")
        eui = f"{int(mac[0], 16) ^ 2:02x}{mac[1]}:{mac[2]}ff:fe{mac[3]}:{mac[4]}{mac[5]}"
        iid = int(ipaddress.IPv6Address("::" + eui))
        assert found == [str(ipaddress.IPv6Address(int(subnet6.network_address) + iid))]
    finally:
        cts.cleanup()


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_onboot_containers_start_with_the_simulator(tmp_path: Path) -> None:
    from tests.conftest import start_simulator, stop_simulator

    state = tmp_path / "state"
    proc, info = start_simulator(state)
    try:
        api = token_api(info)
        for vmid, extra in ((301, {"startup": "order=2"}), (302, {"startup": "order=1,up=1"}),
                            (303, {}), (304, {"onboot": 0})):  # fmt: skip
            params = {"onboot": 1, **extra}
            ok(api, api.nodes("pve").lxc.post(vmid=vmid, ostemplate=TEMPLATE, storage="local-lvm",
                                              rootfs="1", **params))  # fmt: skip
    finally:
        assert stop_simulator(proc) == 0
    proc, info = start_simulator(state)
    try:
        api = token_api(info)
        [task] = api.nodes("pve").tasks.get(typefilter="startall", source="all")
        log = [line["t"] for line in api.nodes("pve").tasks(task["upid"]).log.get()]
        status = wait_task(api, "pve", task["upid"])
        assert status["exitstatus"] == "OK", log
        log = [line["t"] for line in api.nodes("pve").tasks(task["upid"]).log.get()]
        # pve-manager's startall: by startup order (none: last), then vmid
        assert [line for line in log if line.startswith(("Starting", "Waiting"))] == [
            "Starting CT 302", "Waiting for 1 seconds (startup delay)",
            "Starting CT 301", "Starting CT 303"]  # fmt: skip
        running = {c["vmid"]: c["status"] for c in api.nodes("pve").lxc.get()}
        assert running == {301: "running", 302: "running", 303: "running", 304: "stopped"}
    finally:
        assert stop_simulator(proc) == 0

"""``pvesim serve --nodes 3``: a simulated Proxmox VE cluster, seen through
each node's API as PVE answers it.  The module runs a cluster of its own."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, start_simulator, stop_simulator
from tests.pvesim.helpers import (
    admin,
    raw,
    token_api,
    token_header,
    wait_port,
    wait_start_after_create,
    wait_task,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="the simulator needs root"),
]
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
PVESIM = str(ROOT / ".venv/bin/pvesim")
MIB = 1 << 20


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="pvesim-cluster-") as tmp:
        state = Path(tmp) / "state"
        proc, info = start_simulator(state, "--nodes", "3", "--node-memory", "4096,8192,2048",
                                     "--node-cores", "2,4,1")  # fmt: skip
        info["state_dir"] = str(state)
        try:
            yield info
        finally:
            stop_simulator(proc)


def via(sim: dict[str, Any], node: str) -> dict[str, Any]:
    """The connection info for one node's own API."""
    entry = next(n for n in sim["nodes"] if n["node"] == node)
    return {**sim, "url": entry["url"], "admin_url": entry["admin_url"]}


def served_fingerprint(url: str, cafile: str) -> str:
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    with socket.create_connection((host, int(port)), timeout=10) as sock,\
            ctx.wrap_socket(sock) as tls:  # fmt: skip
        der = tls.getpeercert(binary_form=True)
    assert der
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def create(api: Any, node: str, vmid: int, start: bool = False) -> str:
    upid = api.nodes(node).lxc.post(vmid=vmid, ostemplate=TEMPLATE, storage="local-lvm",
                                    hostname=f"cl-{vmid}", start=int(start),
                                    net0="name=eth0,bridge=vmbr0,ip=dhcp")  # fmt: skip
    if start:  # create_vm starts it in a vzstart task of its own, once the create ended OK
        assert wait_start_after_create(api, node, upid)["exitstatus"] == "OK"
    else:
        assert wait_task(api, node, upid)["exitstatus"] == "OK"
    return str(upid)


def lease_of(api: Any, node: str, vmid: int, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for iface in api.nodes(node).lxc(vmid).interfaces.get() or []:
            for addr in iface.get("ip-addresses", []):
                if iface["name"] == "eth0" and addr["ip-address-type"] == "inet":
                    return str(addr["ip-address"])
        time.sleep(0.2)
    raise TimeoutError(f"CT {vmid} got no address")


def test_each_node_has_its_own_listener_and_certificate(cluster: dict[str, Any]) -> None:
    """PVE::API2::Certificates info (proxyto node) lists the node's own
    pve-ssl.pem beside the cluster CA; every node's pveproxy serves its own
    certificate, and the readiness line lists each node's URL and fingerprint."""
    assert [n["node"] for n in cluster["nodes"]] == ["pve1", "pve2", "pve3"]
    assert len({n["url"] for n in cluster["nodes"]}) == 3
    assert len({n["fingerprint"] for n in cluster["nodes"]}) == 3
    api = token_api(cluster)
    for entry in cluster["nodes"]:
        assert served_fingerprint(entry["url"], cluster["cafile"]) == entry["fingerprint"]
        certs = api.nodes(entry["node"]).certificates.info.get()
        assert [c["filename"] for c in certs] == ["pve-root-ca.pem", "pve-ssl.pem"]
        assert certs[1]["fingerprint"] == entry["fingerprint"]
        assert certs[1]["pem"].startswith("-----BEGIN CERTIFICATE-----")
        assert certs[0]["fingerprint"] == api.nodes("pve1").certificates.info.get()[0][
            "fingerprint"]  # fmt: skip  # one cluster CA


def test_cluster_status_lists_the_cluster_and_every_node(cluster: dict[str, Any]) -> None:
    """PVE::API2::ClusterConfig status (GET /cluster/status): a ``cluster``
    entry from get_clinfo (name, nodes, quorate, version) and a ``node`` entry
    per member (name, nodeid, ip, online, level, ``local`` for the node that
    answers)."""
    for answering in ("pve1", "pve3"):
        entries = token_api(via(cluster, answering)).cluster.status.get()
        head = entries[0]
        assert head["type"] == "cluster" and head["id"] == "cluster"
        assert head["nodes"] == 3 and head["quorate"] == 1 and head["name"]
        nodes = {e["name"]: e for e in entries[1:]}
        assert set(nodes) == {"pve1", "pve2", "pve3"}
        assert [nodes[n]["nodeid"] for n in ("pve1", "pve2", "pve3")] == [1, 2, 3]
        assert all(e["online"] == 1 and e["type"] == "node" for e in nodes.values())
        assert [n for n, e in nodes.items() if e["local"]] == [answering]
        ips = {n["node"]: n["ip"] for n in cluster["nodes"]}
        assert all(nodes[n]["ip"] == ips[n] for n in nodes)


def test_nodes_report_their_own_size(cluster: dict[str, Any]) -> None:
    """PVE::API2::Nodes index: extract_node_stats for every node (status,
    cpu, maxcpu, mem, maxmem, uptime) plus get_node_fingerprint."""
    nodes = {n["node"]: n for n in token_api(cluster).nodes.get()}
    assert {n: (e["maxmem"], e["maxcpu"]) for n, e in nodes.items()} == {
        "pve1": (4096 * MIB, 2), "pve2": (8192 * MIB, 4), "pve3": (2048 * MIB, 1)}  # fmt: skip
    for entry in cluster["nodes"]:
        got = nodes[entry["node"]]
        assert got["status"] == "online" and got["ssl_fingerprint"] == entry["fingerprint"]
        assert 0 < got["mem"] < got["maxmem"] and 0 <= got["cpu"] <= 1 and got["uptime"] >= 0
    status = token_api(cluster).nodes("pve2").status.get()
    assert status["memory"]["total"] == 8192 * MIB and status["cpuinfo"]["cpus"] == 4


def test_a_call_for_another_node_is_handled_there(cluster: dict[str, Any]) -> None:
    """PVE::HTTPServer rest_handler proxies a ``proxyto => 'node'`` call to
    the named node: a container created through pve1 for pve2 lives on pve2
    (its UPID names pve2), and any node's API reads it."""
    api1, api3 = token_api(cluster), token_api(via(cluster, "pve3"))
    upid = create(api1, "pve2", 3100)
    assert upid.split(":")[1] == "pve2"
    assert api3.nodes("pve2").lxc(3100).config.get()["hostname"] == "cl-3100"
    assert api3.nodes("pve2").tasks(upid).status.get()["exitstatus"] == "OK"
    assert 3100 not in [c["vmid"] for c in api3.nodes("pve1").lxc.get()]
    status, reason, _ = raw(cluster, "GET", "/nodes/pve1/lxc/3100/config",
                            headers=token_header(cluster))  # fmt: skip
    assert (status, reason) == (500, "Configuration file 'nodes/pve1/lxc/3100.conf' does not exist")


def test_an_unknown_node_fails_its_hostname_lookup(cluster: dict[str, Any]) -> None:
    """PVE::Cluster::remote_node_ip for a name outside the nodelist: the
    proxy's address lookup fails."""
    status, reason, body = raw(cluster, "GET", "/nodes/pve9/status",
                               headers=token_header(cluster))  # fmt: skip
    assert status == 500
    assert reason == ("hostname lookup 'pve9' failed - failed to get address info for: pve9: "
                      "Name or service not known")  # fmt: skip
    assert body["data"] is None


def test_vmids_are_unique_across_the_cluster(cluster: dict[str, Any]) -> None:
    """PVE::Cluster::check_vmid_unused in create_vm and clone_vm ("CT N
    already exists on node 'X'") and PVE::API2::Cluster nextid read the
    cluster-wide vmlist."""
    api = token_api(cluster)
    create(api, "pve3", 3200)
    create(api, "pve2", 3201)
    status, reason, _ = raw(cluster, "POST", "/nodes/pve1/lxc", headers=token_header(cluster),
                            data=f"vmid=3200&ostemplate={TEMPLATE}&storage=local-lvm".encode())  # fmt: skip
    assert (status, reason) == (500, "CT 3200 already exists on node 'pve3'")
    status, _, body = raw(
        cluster, "GET", "/cluster/nextid?vmid=3200", headers=token_header(cluster)
    )
    assert status == 400 and body["errors"] == {"vmid": "VM 3200 already exists"}
    assert int(api.cluster.nextid.get()) not in {
        r["vmid"] for r in api.cluster.resources.get(type="vm")}  # fmt: skip
    status, reason, _ = raw(cluster, "POST", "/nodes/pve3/lxc/3200/clone",
                            headers=token_header(cluster), data=b"newid=3201")  # fmt: skip
    assert (status, reason) == (500, "CT 3201 already exists on node 'pve2'")


def test_one_vmid_created_on_two_nodes_at_once_is_created_once(cluster: dict[str, Any]) -> None:
    """pmxcfs refuses a config for a vmid another node holds
    (create_and_lock_config), so of two creates of one vmid on two nodes
    at the same moment one fails, even before either config is written."""
    body = f"vmid=3250&ostemplate={TEMPLATE}&storage=local-lvm".encode()
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda node: raw(cluster, "POST", f"/nodes/{node}/lxc",
                                                 headers=token_header(cluster), data=body),
                                ["pve1", "pve2"]))  # fmt: skip
    refused = [reason for status, reason, _ in answers if status == 500]
    assert len(refused) == 1 and refused[0].startswith("CT 3250 already exists on node"), answers
    api = token_api(cluster)
    for status, _, answer in answers:
        if status == 200:
            wait_task(api, answer["data"].split(":")[1], answer["data"])
    owners = [r["node"] for r in api.cluster.resources.get(type="vm") if r["vmid"] == 3250]
    assert len(owners) == 1, owners


def test_resources_cover_every_node(cluster: dict[str, Any]) -> None:
    """PVE::API2::Cluster resources: guests of all nodes (node field set),
    one ``node`` entry per node, each storage once per node (storage.cfg
    holds ``local`` and ``local-lvm`` for all nodes, not shared), and the
    ``type`` filter."""
    api = token_api(via(cluster, "pve2"))
    create(api, "pve1", 3300)
    create(api, "pve2", 3301)
    everything = api.cluster.resources.get()
    guests = {r["vmid"]: r["node"] for r in everything if r["type"] == "lxc"}
    assert guests[3300] == "pve1" and guests[3301] == "pve2"
    assert sorted(r["node"] for r in everything if r["type"] == "node") == ["pve1", "pve2", "pve3"]
    storages = sorted(r["id"] for r in everything if r["type"] == "storage")
    assert storages == sorted(f"storage/{n}/{s}" for n in ("pve1", "pve2", "pve3")
                              for s in ("local", "local-lvm"))  # fmt: skip
    assert all(r["shared"] == 0 for r in everything if r["type"] == "storage")
    assert {r["type"] for r in api.cluster.resources.get(type="node")} == {"node"}
    assert {r["type"] for r in api.cluster.resources.get(type="vm")} == {"lxc"}


def test_containers_of_all_nodes_share_one_network(cluster: dict[str, Any]) -> None:
    """A cluster's vmbr0 is one L2 segment: containers on different nodes get
    distinct addresses of one subnet and reach each other; a node's memory
    use grows by what its running container uses (its cgroup)."""
    api = token_api(cluster)
    before = {n["node"]: n["mem"] for n in api.nodes.get()}
    create(api, "pve2", 3400, start=True)
    create(api, "pve3", 3401, start=True)
    ip_a, ip_b = lease_of(api, "pve2", 3400), lease_of(api, "pve3", 3401)
    assert ip_a != ip_b
    prefix = cluster["subnet"].rsplit(".", 1)[0]
    assert ip_a.startswith(prefix) and ip_b.startswith(prefix)
    wait_port(ip_a, 22)
    wait_port(ip_b, 22)
    ns = f"{cluster['bridge']}-3400"
    done = subprocess.run(["ip", "netns", "exec", ns, "bash", "-c",
                           f"exec 3<>/dev/tcp/{ip_b}/22 && head -c 4 <&3"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.stdout == "SSH-", done.stderr
    after = {n["node"]: n["mem"] for n in api.nodes.get()}
    assert after["pve2"] > before["pve2"] and after["pve1"] == before["pve1"]


def test_an_offline_node(cluster: dict[str, Any]) -> None:
    """A node cut off from the cluster: its pveproxy cannot be reached,
    PVE::APIServer::AnyEvent proxy_request answers AnyEvent::HTTP's 595 with
    an empty body, /cluster/status and /nodes show it offline
    (extract_node_stats), /cluster/resources its guests ``unknown``
    (extract_vm_stats without RRD data); its containers keep running, and
    everything returns when it does."""
    api = token_api(cluster)
    create(api, "pve3", 3500, start=True)
    create(api, "pve2", 3501, start=True)
    pve3 = next(n for n in cluster["nodes"] if n["node"] == "pve3")
    host, port = pve3["url"].split("//")[1].split("/")[0].rsplit(":", 1)
    subprocess.run([PVESIM, "fault", "node-offline", "--state-dir", cluster["state_dir"],
                    "--node", "pve3"], check=True, timeout=30)  # fmt: skip
    try:
        time.sleep(0.3)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=5).close()
        status, reason, body = raw(cluster, "GET", "/nodes/pve3/lxc",
                                   headers=token_header(cluster))  # fmt: skip
        assert (status, reason, body) == (
            595,
            "Errors during connection establishment, proxy handshake: No route to host",
            {},
        )
        member = next(e for e in api.cluster.status.get() if e.get("name") == "pve3")
        assert member["online"] == 0
        node = next(n for n in api.nodes.get() if n["node"] == "pve3")
        assert node["status"] == "offline" and "mem" not in node and node["maxmem"] == 2048 * MIB
        guests = {r["vmid"]: r for r in api.cluster.resources.get(type="vm")}
        assert guests[3500]["status"] == "unknown" and guests[3500]["node"] == "pve3"
        assert guests[3501]["status"] == "running"
        assert api.cluster.status.get()[0]["quorate"] == 1  # 2 of 3 votes
        wait_port(lease_of(api, "pve2", 3501), 22)  # the rest of the cluster carries on
    finally:
        admin(cluster, "node-online", {"node": "pve3"})
    assert api.nodes("pve3").lxc(3500).status.current.get()["status"] == "running"
    assert served_fingerprint(pve3["url"], cluster["cafile"]) == pve3["fingerprint"]
    admin(cluster, "node-offline", {"node": "pve2", "seconds": 1})
    assert raw(cluster, "GET", "/nodes/pve2/status", headers=token_header(cluster))[0] == 595
    deadline = time.monotonic() + 20
    while raw(cluster, "GET", "/nodes/pve2/status", headers=token_header(cluster))[0] != 200:
        assert time.monotonic() < deadline, "pve2 did not come back"
        time.sleep(0.2)


# --- migration ------------------------------------------------------------------
def migrate(api: Any, node: str, vmid: int, **params: Any) -> dict[str, Any]:
    upid = api.nodes(node).lxc(vmid).migrate.post(**params)
    assert upid.split(":")[1] == node and upid.split(":")[5] == "vzmigrate"
    status = wait_task(api, node, upid)
    lines = [e["t"] for e in api.nodes(node).tasks(upid).log.get(limit=10000)]
    assert lines[-1] == ("TASK OK" if status["exitstatus"] == "OK"
                         else f"TASK ERROR: {status['exitstatus']}")  # fmt: skip
    return {"exitstatus": status["exitstatus"], "log": lines[:-1], "upid": upid}


def messages(lines: list[str]) -> list[str]:
    """The log lines without AbstractMigrate's timestamp prefix."""
    return [line[20:] if line[:4].isdigit() else line for line in lines]


def test_migrating_a_stopped_container(cluster: dict[str, Any]) -> None:
    """PVE::LXC::Migrate (on PVE::AbstractMigrate migrate): a ``vzmigrate``
    task on the source node; phase1 sets ``lock: migrate``, copies each local
    volume to the target's storage (rootfs and mount points) and moves the
    config to the target node (move_config_to_node); final_cleanup unlocks;
    the log's lines carry a timestamp."""
    api = token_api(cluster)
    upid = api.nodes("pve1").lxc.post(vmid=3600, ostemplate=TEMPLATE, storage="local-lvm",
                                      hostname="cl-3600", rootfs="local-lvm:4", mp0="local-lvm:1,mp=/data")  # fmt: skip
    assert wait_task(api, "pve1", upid)["exitstatus"] == "OK"
    done = migrate(token_api(via(cluster, "pve3")), "pve1", 3600, target="pve2")
    assert done["exitstatus"] == "OK", done["log"]
    text = messages(done["log"])
    ip = next(n["ip"] for n in cluster["nodes"] if n["node"] == "pve2")
    assert text[0] == f"starting migration of CT 3600 to node 'pve2' ({ip})"
    assert "found local volume 'local-lvm:vm-3600-disk-0' (in current VM config)" in text
    assert "volume 'local-lvm:vm-3600-disk-1' is 'local-lvm:vm-3600-disk-1' on the target" in text
    assert text[-2:] == ["start final cleanup", text[-1]]
    assert text[-1].startswith("migration finished successfully (duration 00:00:")
    assert done["log"][0][:4].isdigit() and done["log"][0][10] == " "
    config = api.nodes("pve2").lxc(3600).config.get()
    assert config["mp0"].startswith("local-lvm:vm-3600-disk-1,") and "lock" not in config
    status, reason, _ = raw(cluster, "GET", "/nodes/pve1/lxc/3600/config",
                            headers=token_header(cluster))  # fmt: skip
    assert (status, reason) == (500, "Configuration file 'nodes/pve1/lxc/3600.conf' does not exist")
    assert {r["vmid"]: r["node"] for r in api.cluster.resources.get(type="vm")}[3600] == "pve2"
    volids = {c["volid"] for c in api.nodes("pve2").storage("local-lvm").content.get()}
    assert "local-lvm:vm-3600-disk-1" in volids
    assert "local-lvm:vm-3600-disk-1" not in {
        c["volid"] for c in api.nodes("pve1").storage("local-lvm").content.get()}  # fmt: skip
    upid = api.nodes("pve2").lxc(3600).status.start.post()
    assert wait_task(api, "pve2", upid)["exitstatus"] == "OK"


def test_a_running_container_needs_restart_mode(cluster: dict[str, Any]) -> None:
    """PVE::API2::LXC migrate_vm refuses a running CT without ``online`` or
    ``restart`` before any task; with ``online`` PVE::LXC::Migrate prepare
    dies ("lxc live migration is currently not implemented") and
    AbstractMigrate ends the task in "migration aborted"."""
    api = token_api(cluster)
    create(api, "pve1", 3700, start=True)
    status, reason, _ = raw(cluster, "POST", "/nodes/pve1/lxc/3700/migrate",
                            headers=token_header(cluster), data=b"target=pve2")  # fmt: skip
    assert (status, reason) == (
        500,
        "can't migrate running container without --online or --restart",
    )
    done = migrate(api, "pve1", 3700, target="pve2", online=1)
    assert done["exitstatus"] == "migration aborted"
    assert messages(done["log"])[-1].startswith("ERROR: migration aborted (duration 00:00:")
    assert done["log"][-1].endswith(": lxc live migration is currently not implemented")
    assert api.nodes("pve1").lxc(3700).status.current.get()["status"] == "running"


def test_restart_mode_moves_a_running_container(cluster: dict[str, Any]) -> None:
    """PVE::LXC::Migrate in restart mode: prepare shuts the CT down
    (vm_stop with the ``timeout``), phase1 moves it, final_cleanup starts it
    on the target ("start container on target node"); its MAC, and so its
    address on the one network, stay."""
    api = token_api(cluster)
    create(api, "pve1", 3701, start=True)
    ip = lease_of(api, "pve1", 3701)
    done = migrate(api, "pve1", 3701, target="pve3", restart=1, timeout=30)
    assert done["exitstatus"] == "OK", done["log"]
    text = messages(done["log"])
    assert text[0] == "shutdown CT 3701"
    assert text.index("start final cleanup") < text.index("start container on target node")
    assert api.nodes("pve3").lxc(3701).status.current.get()["status"] == "running"
    assert lease_of(api, "pve3", 3701) == ip
    wait_port(ip, 22)


def test_migration_refusals(cluster: dict[str, Any]) -> None:
    """migrate_vm: ``target is local node.`` (400), check_node_exists ("no
    such cluster node"), check_storage_access_migrate for
    ``target-storage``; in the task, prepare's check_lock and its ssh test of
    an unreachable target ("Can't connect to destination address using
    public key")."""
    api = token_api(cluster)
    create(api, "pve2", 3800)
    headers = token_header(cluster)
    status, _, body = raw(cluster, "POST", "/nodes/pve2/lxc/3800/migrate", headers=headers,
                          data=b"target=pve2")  # fmt: skip
    assert status == 400 and body["errors"] == {"target": "target is local node."}
    status, reason, _ = raw(cluster, "POST", "/nodes/pve2/lxc/3800/migrate", headers=headers,
                            data=b"target=pve7")  # fmt: skip
    assert (status, reason) == (500, "no such cluster node 'pve7'")
    status, reason, _ = raw(cluster, "POST", "/nodes/pve2/lxc/3800/migrate", headers=headers,
                            data=b"target=pve1&target-storage=local")  # fmt: skip
    assert (status, reason) == (500, "storage 'local' does not support CT rootdirs")
    admin(cluster, "lock", {"vmid": 3800, "seconds": 30, "lock": "backup"})
    try:
        done = migrate(api, "pve2", 3800, target="pve1")
        assert done["exitstatus"] == "migration aborted"
        assert done["log"][-1].endswith(": CT is locked (backup)")
    finally:
        admin(cluster, "faults", method="DELETE")
    admin(cluster, "node-offline", {"node": "pve3"})
    try:
        done = migrate(api, "pve2", 3800, target="pve3")
        assert done["exitstatus"] == "migration aborted"
        assert done["log"][-1].endswith(": Can't connect to destination address using public key")
    finally:
        admin(cluster, "node-online", {"node": "pve3"})
    assert api.nodes("pve2").lxc(3800).config.get()["hostname"] == "cl-3800"
    upid = api.nodes("pve2").lxc(3800).snapshot.post(snapname="before")
    assert wait_task(api, "pve2", upid)["exitstatus"] == "OK"
    done = migrate(api, "pve2", 3800, target="pve1")
    assert done["exitstatus"] == "migration aborted"
    text = messages(done["log"])
    volid = "local-lvm:vm-3800-disk-0"
    assert f"can't migrate local volume '{volid}': non-migratable snapshot exists" in text
    assert text[-4:-1] == ["ERROR: can't migrate CT - check log",
                           "aborting phase 1 - cleanup resources", "start final cleanup"]  # fmt: skip
    assert text[-1].startswith("ERROR: migration aborted (duration 00:00:")
    assert text[-1].endswith("): can't migrate CT - check log")
    assert "lock" not in api.nodes("pve2").lxc(3800).config.get()


def test_a_restarted_cluster_keeps_its_nodes(tmp_path: Path) -> None:
    """A cluster restarted on its state dir keeps each node's containers,
    certificate (so its fingerprint) and the one set of credentials, as a
    rebooted PVE cluster keeps /etc/pve; names and sizes come from the
    options (``--node-names``). On the one network, DHCP skips a static
    address set on any node."""
    state = tmp_path / "state"
    args = ("--nodes", "2", "--node-names", "alpha,beta", "--node-memory", "2048")
    proc, first = start_simulator(state, *args)
    try:
        assert [n["node"] for n in first["nodes"]] == ["alpha", "beta"]
        api = token_api(first)
        create(api, "beta", 3900)
        # the DHCP pool's first address, taken statically on the other node
        net = ipaddress.ip_network(first["subnet"])
        hosts = list(net.hosts())
        pool_first = hosts[len(hosts) // 2]
        upid = api.nodes("alpha").lxc.post(
            vmid=3901, ostemplate=TEMPLATE, storage="local-lvm",
            net0=f"name=eth0,bridge=vmbr0,ip={pool_first}/{net.prefixlen},gw={first['gateway']}")  # fmt: skip
        assert wait_task(api, "alpha", upid)["exitstatus"] == "OK"
        upid = api.nodes("beta").lxc(3900).status.start.post()
        assert wait_task(api, "beta", upid)["exitstatus"] == "OK"
        assert lease_of(api, "beta", 3900) == str(pool_first + 1)
    finally:
        assert stop_simulator(proc) == 0
    proc, second = start_simulator(state, *args)
    try:
        assert [n["fingerprint"] for n in second["nodes"]] == [
            n["fingerprint"] for n in first["nodes"]]  # fmt: skip
        assert second["token_secret"] == first["token_secret"]
        api = token_api(second)
        assert api.nodes("beta").lxc(3900).config.get()["hostname"] == "cl-3900"
        assert [n["maxmem"] for n in api.nodes.get()] == [2048 * MIB, 2048 * MIB]
    finally:
        assert stop_simulator(proc) == 0
    bad = subprocess.run([PVESIM, "serve", "--state-dir", str(state), "--nodes", "2",
                          "--node", "x"], capture_output=True, text=True, timeout=30)  # fmt: skip
    assert bad.returncode == 2 and "--node-names" in bad.stderr

"""Several simulated nodes as one Proxmox VE cluster (``pvesim serve --nodes N``).

Each node is a :class:`ClusterNode` with its own HTTPS listener, state dir,
certificate, storages, tasks and containers; what a real cluster shares
through /etc/pve (users and tokens, pools, the vmid space, the CA) and its one
L2 network (vmbr0 on every node) is shared here: one bridge, one DHCP server
(run by the first node, answering for every node's containers).

A request naming another node (``/nodes/{node}/...``) is handled by that node,
as pveproxy proxies it (PVE::HTTPServer rest_handler's ``proxyto``).  A node
can go offline (``pvesim fault node-offline``): its listener closes, calls
proxied to it fail as pveproxy's do, and the cluster views show it offline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from provisioner.pve.schema import ApiSchema, load_api_schema
from pvesim import api, info, migrate, network, server, storage, templates
from pvesim.dhcp import Lease
from pvesim.errors import PveError, param_error
from pvesim.network import SimNetwork
from pvesim.node import Node
from pvesim.proc import CommandError
from pvesim.server import ServeOptions
from pvesim.state import StateStore
from pvesim.storage_specs import STORAGES
from pvesim.tls import TlsFiles, ensure_certificates

if TYPE_CHECKING:
    from collections.abc import Callable


log = logging.getLogger(__name__)

CLUSTER_NAME = "pvesim"
# what the host itself uses on a node without guests (pveproxy, pmxcfs, ...)
NODE_BASE_MEMORY = 1 << 30
# PVE::APIServer::AnyEvent proxy_request: AnyEvent::HTTP's status for a failed
# connect, with its reason (the body is empty)
PROXY_FAILED = "Errors during connection establishment, proxy handshake: No route to host"


class ProxyError(PveError):
    """pveproxy's answer when the node it proxies to cannot be reached: the
    status and reason of AnyEvent::HTTP, no body."""

    empty_body = True


@dataclass(frozen=True)
class NodeSpec:
    """One node's name, size and address."""

    name: str
    memory: int  # bytes
    cores: int
    host: str
    port: int


def _split(value: str | None, count: int, what: str) -> list[str] | None:
    if not value:
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if len(parts) == 1:
        parts *= count
    if len(parts) != count:
        raise ValueError(f"{what}: give one value or {count} (one per node), got {len(parts)}")
    return parts


def _meminfo_total() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def node_specs(count: int, host: str, port: int, names: str | None = None,
               memory: str | None = None, cores: str | None = None) -> list[NodeSpec]:  # fmt: skip
    """The nodes of ``--nodes N``: names ``pve1``..``pveN`` (or ``names``,
    comma-separated), memory in MiB and cores (one value for all or one per
    node; default: the host's), and addresses: an IPv4 loopback address each
    (127.0.0.2, 127.0.0.3, ... from ``host``) on ``port`` like real nodes on
    8006, or consecutive ports on ``::1``.

    Raises:
        ValueError: for a malformed or mismatched list.
    """
    import ipaddress

    if count < 2:
        raise ValueError("a cluster has at least 2 nodes")
    name_list = _split(names, count, "--node-names") or [f"pve{i + 1}" for i in range(count)]
    if len(set(name_list)) != count or (names and len(names.split(",")) != count):
        raise ValueError(f"--node-names: give {count} different names")
    for name in name_list:
        if not name.replace("-", "").isalnum() or name[0] == "-":
            raise ValueError(f"--node-names: '{name}' is not a valid node name")
    mems = _split(memory, count, "--node-memory")
    cpus = _split(cores, count, "--node-cores")
    specs = []
    addr = ipaddress.ip_address(host)
    for i, name in enumerate(name_list):
        mem = int(mems[i]) << 20 if mems else _meminfo_total()
        ncores = int(cpus[i]) if cpus else os.cpu_count() or 1
        if mem <= NODE_BASE_MEMORY or ncores < 1:
            raise ValueError(f"node {name}: needs more than 1024 MiB and at least 1 core")
        if addr.version == 4:
            node_host, node_port = str(addr + i), port
            if not ipaddress.ip_address(node_host).is_loopback:
                raise ValueError(f"{node_host} is not a loopback address")
        else:
            node_host, node_port = host, port + i
        specs.append(NodeSpec(name, mem, ncores, node_host, node_port))
    return specs


class ClusterNode(Node):
    """A node that knows its cluster: the vmid space and DHCP are cluster-wide."""

    cluster: Cluster
    spec: NodeSpec
    online_since: float

    # the first node's DHCP servers answer for every node's containers
    def _owner_of(self, mac: str) -> Node | None:
        for node in self.cluster.nodes.values():
            if node._vmid_for_mac(mac) is not None:
                return node
        return None

    def _lease_for(self, mac: str) -> Lease | None:
        owner = self._owner_of(mac)
        if owner is None:
            return None
        if mac not in self.leases:
            # the first free address of the pool, past every node's static ones
            self._prune_leases()
            used = set(self.leases.values())
            used |= {str(net.static_interface.ip) for node in self.cluster.nodes.values()
                     for vmid in node.containers for net in node._nets_of(vmid)
                     if net.static_interface}  # fmt: skip
            free = [a for a in self.net.dhcp_pool() if str(a) not in used]
            if not free:
                return None
            self.leases[mac] = str(free[0])
            owner.store.save("leases", self.leases)
        return Node._lease_for(owner, mac)

    def _delay_for(self, mac: str) -> float:
        owner = self._owner_of(mac)
        return Node._delay_for(owner, mac) if owner is not None else self.dhcp_delay

    def _address6_for(self, mac: str) -> str | None:
        for node in self.cluster.nodes.values():
            if (found := Node._address6_for(node, mac)) is not None:
                return found
        return None

    def _wants_ra(self, mac: str) -> bool:
        return any(Node._wants_ra(node, mac) for node in self.cluster.nodes.values())

    def _prune_leases(self) -> None:
        """The leases are shared: a MAC is stale only if no node has it."""
        macs = {net.hwaddr.lower() for node in self.cluster.nodes.values()
                for vmid in node.containers for net in node._nets_of(vmid) if net.hwaddr}  # fmt: skip
        for mac in [m for m in self.leases if m not in macs]:
            del self.leases[mac]

    async def create(self, params: dict[str, Any], user: str) -> str:
        # PVE::API2::LXC create_vm: PVE::Cluster::check_vmid_unused (the vmid
        # space is the cluster's, /etc/pve/.vmlist); pmxcfs refuses a config
        # for a vmid another node has, so two creates of one vmid on two
        # nodes at once leave one: claimed here until the config exists
        vmid = int(params["vmid"])
        self.cluster.check_vmid_unused(vmid)
        self.cluster.creating[vmid] = self.name
        try:
            return await super().create(params, user)
        finally:
            del self.cluster.creating[vmid]


@dataclass
class Cluster:
    """The nodes, their listeners and which of them are offline."""

    nodes: dict[str, ClusterNode]
    tls: dict[str, TlsFiles]
    offline: set[str] = field(default_factory=set)
    creating: dict[int, str] = field(default_factory=dict)  # vmid -> node, until its config exists
    runners: dict[str, web.AppRunner] = field(default_factory=dict)
    schema: ApiSchema | None = None
    _timers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _closing: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    @property
    def quorate(self) -> bool:
        """Corosync's votequorum with one vote a node: a majority online."""
        return len(self.nodes) - len(self.offline) > len(self.nodes) // 2

    # --- the shared vmid space ---------------------------------------------
    def owner_of_vmid(self, vmid: int) -> ClusterNode | None:
        for node in self.nodes.values():
            if vmid in node.containers:
                return node
        return None

    def check_vmid_unused(self, vmid: int) -> None:
        """PVE::Cluster::check_vmid_unused."""
        owner = self.owner_of_vmid(vmid)
        name = owner.name if owner is not None else self.creating.get(vmid)
        if name is not None:
            raise PveError(500, f"CT {vmid} already exists on node '{name}'")

    # --- proxying -----------------------------------------------------------
    def resolve(self, receiving: Node, name: str) -> Node:
        """The node that handles a call for ``/nodes/{name}``: PVE::HTTPServer
        rest_handler proxies it there (PVE::Cluster::remote_node_ip for an
        unknown name dies with the hostname lookup's message); a node that
        cannot be reached fails as AnyEvent::HTTP's connect does (595)."""
        target = self.nodes.get(name)
        if target is None:
            info.check_node(receiving, name)  # raises the lookup failure
            raise AssertionError  # pragma: no cover
        if target is not receiving and name in self.offline:
            raise ProxyError(595, PROXY_FAILED)
        return target

    # --- listeners ----------------------------------------------------------
    def app_for(self, node: ClusterNode) -> web.Application:
        app = api.create_app(node)
        if self.schema is None:
            self.schema = load_api_schema()
        app[api.SCHEMA_KEY] = self.schema
        app[api.HANDLERS_KEY] = {**api.HANDLERS, **self.handlers()}
        app[api.RESOLVE_KEY] = self.resolve
        app[api.ADMIN_KEY] = self.admin
        return app

    async def listen(self, node: ClusterNode) -> None:
        tls = self.tls[node.name]
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls.certfile, tls.keyfile)
        runner = web.AppRunner(self.app_for(node), access_log=None, handle_signals=False,
                               shutdown_timeout=1.0)  # fmt: skip
        await runner.setup()
        await web.TCPSite(runner, node.spec.host, node.spec.port, ssl_context=ctx).start()
        self.runners[node.name] = runner
        node.online_since = time.time()

    async def close(self, name: str) -> None:
        runner = self.runners.pop(name, None)
        if runner is not None:
            await runner.cleanup()

    async def set_offline(self, name: str, seconds: float | None) -> None:
        """The node leaves the cluster's view (a network partition: its
        containers keep running); after ``seconds`` (if given) it returns."""
        if name not in self.nodes:
            raise PveError(400, f"no such node '{name}'")
        if (timer := self._timers.pop(name, None)) is not None:
            timer.cancel()
        self.offline.add(name)
        # the call may have come in on that very listener: close it after answering
        runner = self.runners.pop(name, None)
        if runner is not None:
            self._closing[name] = asyncio.create_task(runner.cleanup())
        if seconds:

            async def back() -> None:
                await asyncio.sleep(seconds)
                self._timers.pop(name, None)
                await self.set_online(name)

            self._timers[name] = asyncio.create_task(back())

    async def set_online(self, name: str) -> None:
        if name not in self.nodes:
            raise PveError(400, f"no such node '{name}'")
        if (timer := self._timers.pop(name, None)) is not None:
            timer.cancel()
        if name in self.offline:
            if (closing := self._closing.pop(name, None)) is not None:
                await closing
            await self.close(name)
            self.offline.discard(name)
            await self.listen(self.nodes[name])

    # --- the admin API ------------------------------------------------------
    async def admin(self, receiving: Node, method: str, action: str,
                    body: dict[str, Any]) -> Any:  # fmt: skip
        """``pvesim fault node-offline``/``node-online`` here; the other faults
        go to the node named in ``node``, or the node holding ``vmid``."""
        if action == "node-offline" and method == "POST":
            seconds = body.get("seconds")
            await self.set_offline(str(body["node"]), float(seconds) if seconds else None)
            return None
        if action == "node-online" and method == "POST":
            await self.set_online(str(body["node"]))
            return None
        if action == "faults" and method == "GET":
            return {"offline": sorted(self.offline),
                    "nodes": {name: node.faults.describe() for name, node in self.nodes.items()}}  # fmt: skip
        if action == "faults" and method == "DELETE":
            for node in self.nodes.values():
                await api._admin(node, method, action, body)
            for name in list(self.offline):
                await self.set_online(name)
            return None
        target: Node = receiving
        if body.get("node"):
            if str(body["node"]) not in self.nodes:
                raise PveError(400, f"no such node '{body['node']}'")
            target = self.nodes[str(body["node"])]
        elif body.get("vmid") is not None:
            target = self.owner_of_vmid(int(body["vmid"])) or receiving
        return await api._admin(target, method, action, body)

    # --- the cluster-wide endpoints ------------------------------------------
    def handlers(self) -> dict[tuple[str, str], api.Handler]:
        async def nodes(node: Node, p: dict[str, Any], user: str) -> Any:
            return self.nodes_index()

        async def resources(node: Node, p: dict[str, Any], user: str) -> Any:
            return self.resources(p.get("type"))

        async def status(node: Node, p: dict[str, Any], user: str) -> Any:
            return self.status(node)

        async def nextid(node: Node, p: dict[str, Any], user: str) -> Any:
            return self.nextid(p.get("vmid"))

        async def certificates(node: Node, p: dict[str, Any], user: str) -> Any:
            return certificate_info(self.tls[node.name])

        async def node_status(node: Node, p: dict[str, Any], user: str) -> Any:
            out = info.node_status(node)
            assert isinstance(node, ClusterNode)
            usage = self.usage(node)
            out["cpu"] = usage["cpu"]
            out["uptime"] = usage["uptime"]
            out["cpuinfo"].update({"cpus": node.spec.cores, "cores": node.spec.cores})
            out["memory"] = {"total": node.spec.memory, "used": usage["mem"],
                             "free": node.spec.memory - usage["mem"]}  # fmt: skip
            return out

        async def clone(node: Node, p: dict[str, Any], user: str) -> Any:
            self.check_vmid_unused(int(p["newid"]))  # PVE::API2::LXC clone_vm
            return await api.HANDLERS[("POST", "/nodes/{node}/lxc/{vmid}/clone")](node, p, user)

        async def migrate_ct(node: Node, p: dict[str, Any], user: str) -> Any:
            # migrate_vm: check_cfs_quorum, check_node_exists, remote_node_ip
            if not self.quorate:
                raise PveError(500, "cluster not ready - no quorum?")
            target = self.nodes.get(str(p["target"]))
            if target is None:
                raise PveError(500, f"no such cluster node '{p['target']}'")
            return await migrate.migrate(node, target, target.spec.host,
                                         target.name not in self.offline, p, user)  # fmt: skip

        async def pools(node: Node, p: dict[str, Any], user: str) -> Any:
            if not p.get("poolid"):
                return node.pools.index()
            found = self.resources(None)
            guests = [r for r in found if r["type"] == "lxc"]
            storages = [r for r in found if r["type"] == "storage"]
            return node.pools.read(str(p["poolid"]), p.get("type"), guests, storages)

        return {
            ("GET", "/nodes"): nodes,
            ("GET", "/cluster/resources"): resources,
            ("GET", "/cluster/status"): status,
            ("GET", "/cluster/nextid"): nextid,
            ("GET", "/nodes/{node}/certificates/info"): certificates,
            ("GET", "/nodes/{node}/status"): node_status,
            ("POST", "/nodes/{node}/lxc/{vmid}/clone"): clone,
            ("GET", "/pools"): pools,
            ("POST", "/nodes/{node}/lxc/{vmid}/migrate"): migrate_ct,
        }

    def usage(self, node: ClusterNode) -> dict[str, Any]:
        """A node's figures as pvestatd reports them: memory is what its
        running containers use (their cgroups) plus the host's base, CPU the
        sum of their CPU use over the node's cores."""
        mem, cpu = NODE_BASE_MEMORY, 0.0
        for vmid in list(node.running):
            try:
                st = node.status(vmid)
            except PveError:
                continue
            mem += int(st["mem"])
            cpu += float(st["cpu"]) * int(st["cpus"])
        st_fs = os.statvfs(node.store.root)
        return {
            "cpu": round(min(cpu / node.spec.cores, 1.0), 4),
            "mem": min(mem, node.spec.memory),
            "disk": (st_fs.f_blocks - st_fs.f_bfree) * st_fs.f_frsize,
            "maxdisk": st_fs.f_blocks * st_fs.f_frsize,
            "uptime": int(time.time() - node.online_since),
        }

    def node_entry(self, node: ClusterNode) -> dict[str, Any]:
        """PVE::API2Tools::extract_node_stats: an offline member keeps its
        maxima (from its last RRD data) but no usage or uptime."""
        usage = self.usage(node)
        entry: dict[str, Any] = {
            "id": f"node/{node.name}", "node": node.name, "type": "node", "level": "",
            "maxcpu": node.spec.cores, "maxmem": node.spec.memory, "maxdisk": usage["maxdisk"],
        }  # fmt: skip
        if node.name in self.offline:
            entry["status"] = "offline"
        else:
            entry.update(status="online", cpu=usage["cpu"], mem=usage["mem"],
                         disk=usage["disk"], uptime=usage["uptime"])  # fmt: skip
        return entry

    def nodes_index(self) -> list[dict[str, Any]]:
        """PVE::API2::Nodes index: every node of the nodelist, with its
        certificate's fingerprint (PVE::Cluster::get_node_fingerprint)."""
        return [{**self.node_entry(node), "ssl_fingerprint": node.ssl_fingerprint}
                for node in self.nodes.values()]  # fmt: skip

    def status(self, receiving: Node) -> list[dict[str, Any]]:
        """PVE::API2::ClusterConfig status (GET /cluster/status): the
        ``cluster`` entry (get_clinfo) and one ``node`` entry per member."""
        out: list[dict[str, Any]] = [{
            "type": "cluster", "id": "cluster", "name": CLUSTER_NAME, "nodes": len(self.nodes),
            "version": len(self.nodes), "quorate": int(self.quorate),
        }]  # fmt: skip
        for nodeid, node in enumerate(self.nodes.values(), start=1):
            out.append({
                "type": "node", "id": f"node/{node.name}", "name": node.name, "nodeid": nodeid,
                "ip": node.spec.host, "local": int(node is receiving),
                "online": int(node.name not in self.offline), "level": "",
            })  # fmt: skip
        return out

    def resources(self, kind: str | None) -> list[dict[str, Any]]:
        """PVE::API2::Cluster resources: the guests of every node (an offline
        node's with ``status: unknown``, PVE::API2Tools::extract_vm_stats
        without RRD data; lock, tags and pool still come from the shared
        configs), its nodes, and each storage once per node."""
        out: list[dict[str, Any]] = []
        if kind in (None, "vm"):
            guests: list[dict[str, Any]] = []
            for node in self.nodes.values():
                if node.name not in self.offline:
                    guests += info.cluster_resources(node, "vm")
                    continue
                for vmid, rec in node.containers.items():
                    entry: dict[str, Any] = {"id": f"lxc/{vmid}", "vmid": vmid,
                                             "node": node.name, "type": "lxc",
                                             "status": "unknown"}  # fmt: skip
                    if rec.config.get("tags"):
                        entry["tags"] = rec.config["tags"]
                    if pool := node.pools.pool_of(vmid):
                        entry["pool"] = pool
                    if rec.lock:
                        entry["lock"] = rec.lock
                    guests.append(entry)
            out += sorted(guests, key=lambda e: e["vmid"])
        if kind in (None, "node"):
            out += [self.node_entry(node) for node in self.nodes.values()]
        if kind in (None, "storage"):
            for spec in STORAGES.values():
                for node in self.nodes.values():
                    entry = {
                        "id": f"storage/{node.name}/{spec.name}", "type": "storage",
                        "storage": spec.name, "node": node.name, "shared": 0,
                        "plugintype": spec.type, "content": ",".join(sorted(spec.content)),
                        "status": "unknown",
                    }  # fmt: skip
                    if node.name not in self.offline:
                        e = storage.storage_entry(node, spec)
                        entry.update(status="available", disk=e["used"], maxdisk=e["total"])
                    out.append(entry)
        return out

    def nextid(self, vmid: int | None) -> str:
        """PVE::API2::Cluster nextid over the cluster's vmlist."""
        taken = {v for node in self.nodes.values() for v in node.containers} | set(self.creating)
        if vmid is not None:
            if vmid in taken:
                raise param_error({"vmid": f"VM {vmid} already exists"})
            return str(vmid)
        candidate = 100
        while candidate in taken:
            candidate += 1
        return str(candidate)


def certificate_info(tls: TlsFiles) -> list[dict[str, Any]]:
    """PVE::API2::Certificates info: the cluster CA and the node's
    certificate, each as PVE::Certificate::get_certificate_info reads it."""
    out = []
    for path in (tls.cafile, tls.certfile):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        key = cert.public_key()
        kind = ("id-ecPublicKey" if isinstance(key, ec.EllipticCurvePublicKey)
                else "rsaEncryption" if isinstance(key, rsa.RSAPublicKey) else "unknown")  # fmt: skip
        try:
            san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            san = [str(v) for v in san_ext.value.get_values_for_type(x509.DNSName)]
            san += [str(v) for v in san_ext.value.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            san = []
        out.append({
            "filename": "pve-root-ca.pem" if path == tls.cafile else "pve-ssl.pem",
            "fingerprint": ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256())),
            "subject": "/" + cert.subject.rfc4514_string().replace(",", "/"),
            "issuer": "/" + cert.issuer.rfc4514_string().replace(",", "/"),
            "notbefore": int(cert.not_valid_before_utc.timestamp()),
            "notafter": int(cert.not_valid_after_utc.timestamp()),
            "san": san,
            "pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "public-key-type": kind,
            "public-key-bits": getattr(key, "key_size", 0),
        })  # fmt: skip
    return out


def make_cluster(state_dir: Path, specs: list[NodeSpec], net: SimNetwork, time_scale: float,
                 dhcp_delay: float, factory: Callable[..., ClusterNode] = ClusterNode) -> Cluster:  # fmt: skip
    """The nodes under ``state_dir/nodes/<name>``, sharing the first node's
    credentials, pools and the DHCP leases, each with a certificate of the
    one cluster CA (PVE's /etc/pve/pve-root-ca.pem)."""
    nodes: dict[str, ClusterNode] = {}
    tls: dict[str, TlsFiles] = {}
    first: ClusterNode | None = None
    for spec in specs:
        node_dir = state_dir / "nodes" / spec.name
        node_dir.mkdir(parents=True, exist_ok=True)
        if first is not None:
            for name in ("pve-root-ca.pem", "pve-root-ca.key"):
                if not (node_dir / name).exists():
                    shutil.copy2(first.store.root / name, node_dir / name)
        node = factory(node_dir, spec.name, net, time_scale, dhcp_delay)
        node.spec = spec
        node.online_since = time.time()
        tls[spec.name] = ensure_certificates(node_dir, spec.host, spec.name)
        node.ssl_fingerprint = tls[spec.name].fingerprint()
        if first is None:
            first = node
        else:
            node.owns_network = False
            node.auth = first.auth
            node.pools = first.pools
            first.leases.update(node.leases)
            node.leases = first.leases
        nodes[spec.name] = node
    cluster = Cluster(nodes=nodes, tls=tls)
    for node in nodes.values():
        node.cluster = cluster
    return cluster


async def serve_cluster(opts: ServeOptions, ready_out: object = sys.stdout) -> None:
    """``pvesim serve --nodes N``: like :func:`pvesim.server.serve` for each
    node, one network for all; run until SIGINT/SIGTERM."""
    server.check_root()
    try:
        specs = node_specs(opts.nodes, opts.host, opts.port, opts.node_names, opts.node_memory,
                           opts.node_cores)  # fmt: skip
    except ValueError as exc:
        raise server.ServeError(str(exc)) from None
    server.raise_inotify_limits()
    opts.state_dir.mkdir(parents=True, exist_ok=True)
    first_store = StateStore(opts.state_dir / "nodes" / specs[0].name)
    egress_names = list(opts.egress_hosts) if opts.egress_hosts is not None else [
        *network.apt_mirror_hosts(), *network.DEFAULT_EGRESS_HOSTS]  # fmt: skip
    try:
        net = await network.acquire_network(
            first_store.load("network", None), opts.bridge_index, opts.subnet
        )
    except RuntimeError as exc:
        raise server.ServeError(str(exc)) from None
    net.egress = network.resolve_egress(egress_names)
    cluster = make_cluster(opts.state_dir, specs, net, opts.time_scale, opts.dhcp_delay)
    if not templates.template_path().exists():
        log.warning("no OS template in %s: run `pvesim build-template`", templates.template_path())
    started: list[ClusterNode] = []
    try:
        for node in cluster.nodes.values():
            try:
                await node.startup()
            except CommandError as exc:
                raise server.ServeError(f"setting up the simulator's host network failed: "
                                        f"{exc}") from None  # fmt: skip
            started.append(node)
        first = next(iter(cluster.nodes.values()))
        for node in cluster.nodes.values():
            # the one DHCP server: a starting container re-arms its MAC there
            node._dhcp = first._dhcp
            await cluster.listen(node)
        ready = {
            **server.ready_info(first, first.spec.host, first.spec.port,
                                str(cluster.tls[first.name].cafile), net),
            "cluster": CLUSTER_NAME,
            "nodes": [{"node": n.name, "ip": n.spec.host,
                       "url": server.node_url(n.spec.host, n.spec.port, "/api2/json"),
                       "admin_url": server.node_url(n.spec.host, n.spec.port, "/pvesim"),
                       "fingerprint": n.ssl_fingerprint, "memory": n.spec.memory,
                       "cores": n.spec.cores}
                      for n in cluster.nodes.values()],
        }  # fmt: skip
        await server.announce_and_wait(opts.state_dir, ready, ready_out)
    finally:
        for timer in cluster._timers.values():
            timer.cancel()
        for name in list(cluster.runners):
            await cluster.close(name)
        for closing in cluster._closing.values():
            await closing
        # the first node owns the network: it goes last
        for node in reversed(started):
            await node.shutdown()
        (opts.state_dir / "pvesim.json").unlink(missing_ok=True)
        if net.lock_file is not None:
            net.lock_file.close()

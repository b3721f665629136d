"""Read-only views of the node and cluster: version, nodes, status,
resources, nextid, network interfaces.  Figures come from the real host."""

from __future__ import annotations

import os
import platform
import time
from typing import TYPE_CHECKING, Any

from pvesim import storage
from pvesim.errors import PveError, param_error

if TYPE_CHECKING:
    from pvesim.node import Node

PVE_VERSION = "9.1.1"
PVE_RELEASE = "9.1"


def version() -> dict[str, Any]:
    return {
        "version": PVE_VERSION,
        "release": PVE_RELEASE,
        "repoid": "pvesim0",
        "console": "xtermjs",
    }


def _meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) * 1024
    return out


def _cpu_fraction() -> float:
    return round(min(os.getloadavg()[0] / (os.cpu_count() or 1), 1.0), 4)


def _host_uptime() -> int:
    with open("/proc/uptime") as fh:
        return int(float(fh.read().split()[0]))


def node_entry(node: Node) -> dict[str, Any]:
    mem = _meminfo()
    st = os.statvfs(node.store.root)
    return {
        "node": node.name, "status": "online", "type": "node", "id": f"node/{node.name}",
        "cpu": _cpu_fraction(), "maxcpu": os.cpu_count() or 1,
        "mem": mem["MemTotal"] - mem["MemAvailable"], "maxmem": mem["MemTotal"],
        "disk": (st.f_blocks - st.f_bfree) * st.f_frsize, "maxdisk": st.f_blocks * st.f_frsize,
        "uptime": _host_uptime(), "level": "", "ssl_fingerprint": node.ssl_fingerprint,
    }  # fmt: skip


def node_status(node: Node) -> dict[str, Any]:
    mem = _meminfo()
    st = os.statvfs(node.store.root)
    model = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cpus = os.cpu_count() or 1
    return {
        "cpu": _cpu_fraction(), "wait": 0, "uptime": _host_uptime(),
        "loadavg": [f"{x:.2f}" for x in os.getloadavg()],
        "kversion": f"Linux {platform.release()} #1 SMP",
        "pveversion": f"pve-manager/{PVE_VERSION}/pvesim",
        "cpuinfo": {"cpus": cpus, "cores": cpus, "sockets": 1, "model": model,
                    "mhz": "0", "hvm": "1", "flags": ""},
        "memory": {"total": mem["MemTotal"], "free": mem["MemAvailable"],
                   "used": mem["MemTotal"] - mem["MemAvailable"]},
        "swap": {"total": mem.get("SwapTotal", 0), "free": mem.get("SwapFree", 0),
                 "used": mem.get("SwapTotal", 0) - mem.get("SwapFree", 0)},
        "rootfs": {"total": st.f_blocks * st.f_frsize, "avail": st.f_bavail * st.f_frsize,
                   "free": st.f_bfree * st.f_frsize,
                   "used": (st.f_blocks - st.f_bfree) * st.f_frsize},
        "boot-info": {"mode": "efi", "secureboot": 0},
        "current-kernel": {"sysname": "Linux", "release": platform.release(),
                           "machine": platform.machine(), "version": "#1 SMP"},
        "ksm": {"shared": 0}, "idle": 0, "time": int(time.time()),
    }  # fmt: skip


def cluster_resources(node: Node, kind: str | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if kind in (None, "node"):
        out.append(node_entry(node))
    if kind in (None, "vm"):
        for vmid in sorted(node.containers):
            st = node.status(vmid)
            out.append({
                "id": f"lxc/{vmid}", "type": "lxc", "vmid": vmid, "node": node.name,
                "name": st["name"], "status": st["status"], "template": st["template"],
                "cpu": st["cpu"], "maxcpu": st["cpus"], "mem": st["mem"], "maxmem": st["maxmem"],
                "disk": st["disk"], "maxdisk": st["maxdisk"], "uptime": st["uptime"],
                "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
                **({"tags": st["tags"]} if "tags" in st else {}),
                **({"pool": pool} if (pool := node.pools.pool_of(vmid)) else {}),
                **({"lock": st["lock"]} if "lock" in st else {}),
            })  # fmt: skip
    if kind in (None, "storage"):
        for spec in storage.STORAGES.values():
            e = storage.storage_entry(node, spec)
            out.append({
                "id": f"storage/{node.name}/{spec.name}", "type": "storage",
                "storage": spec.name, "node": node.name, "status": "available",
                "plugintype": spec.type, "content": e["content"], "shared": 0,
                "disk": e["used"], "maxdisk": e["total"],
            })  # fmt: skip
    return out


def nextid(node: Node, vmid: int | None) -> str:
    """The first free id >= 100 now; reserves nothing (so races are real)."""
    if vmid is not None:
        if vmid in node.containers:
            raise param_error({"vmid": f"VM {vmid} already exists"})
        return str(vmid)
    candidate = 100
    while candidate in node.containers:
        candidate += 1
    return str(candidate)


def network_list(node: Node, kind: str | None) -> list[dict[str, Any]]:
    if kind not in (None, "bridge", "any_bridge"):
        return []
    net = node.net
    return [{
        "iface": "vmbr0", "type": "bridge", "active": 1, "autostart": 1, "method": "static",
        "method6": "static", "families": ["inet", "inet6"], "bridge_ports": "", "bridge_stp": "off",
        "bridge_fd": "0",
        "address": str(net.gateway), "netmask": str(net.subnet.prefixlen),
        "cidr": f"{net.gateway}/{net.subnet.prefixlen}",
        "address6": str(net.gateway6), "netmask6": str(net.subnet6.prefixlen),
        "cidr6": f"{net.gateway6}/{net.subnet6.prefixlen}", "priority": 3,
        "comments": f"pvesim bridge {net.bridge} ({net.subnet}, {net.subnet6})\n",
    }]  # fmt: skip


def check_node(node: Node, name: str) -> None:
    if name != node.name:
        # PVE proxies to the named node; an unknown name fails its lookup
        raise PveError(
            500,
            f"hostname lookup '{name}' failed - failed to get address info "
            f"for: {name}: Name or service not known",
        )

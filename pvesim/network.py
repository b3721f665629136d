"""The simulator's host network: one bridge, a subnet, NAT and per-container
network namespaces.

Every object the simulator creates carries its instance index, so several
simulators can run side by side and a crashed run's leftovers can be found
and removed:

    bridge          pvesim{index}            (shown through the API as vmbr0)
    netns           pvesim{index}-{vmid}
    host veth       vp{index}x{vmid}
    iptables rules  comment "pvesim{index}"

An instance holds ``/run/pvesim/net-{index}.lock`` (flock) while it runs: a
lock that can be taken means whoever made those objects is gone.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pvesim.guest import NetConfig
from pvesim.proc import CommandError, run

log = logging.getLogger(__name__)

LOCK_DIR = Path("/run/pvesim")
DEFAULT_POOL = ipaddress.ip_network("198.18.0.0/15")
# The registries DEVELOPERS.md allows; containers may reach only these.
DEFAULT_EGRESS_HOSTS = ("pypi.org", "files.pythonhosted.org", "registry.npmjs.org")


@dataclass
class SimNetwork:
    """The network one simulator instance owns."""

    index: int
    subnet: ipaddress.IPv4Network
    egress: dict[str, str] = field(default_factory=dict)  # hostname -> IPv4
    lock_file: IO[str] | None = None

    @property
    def bridge(self) -> str:
        return f"pvesim{self.index}"

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return next(self.subnet.hosts())

    @property
    def subnet6(self) -> ipaddress.IPv6Network:
        """A ULA /64 of this instance's own (RFC 4193 space, so it clashes with
        nothing routed): fd70:7673:696d:INDEX::/64."""
        return ipaddress.IPv6Network(f"fd70:7673:696d:{self.index:x}::/64")

    @property
    def gateway6(self) -> ipaddress.IPv6Address:
        return self.subnet6.network_address + 1

    @property
    def tag(self) -> str:
        return f"pvesim{self.index}"

    def netns(self, vmid: int) -> str:
        return f"pvesim{self.index}-{vmid}"

    def host_veth(self, vmid: int) -> str:
        return f"vp{self.index}x{vmid}"  # + "i{n}" per interface

    def dhcp_pool(self) -> list[ipaddress.IPv4Address]:
        hosts = list(self.subnet.hosts())
        # the upper half: static addresses are usually picked from the lower
        return hosts[len(hosts) // 2 :]


def _try_lock(index: int) -> IO[str] | None:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fh = open(LOCK_DIR / f"net-{index}.lock", "a+")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


async def _host_networks() -> list[ipaddress.IPv4Network]:
    out = await run("ip", "-j", "-4", "addr", "show")
    nets = []
    for link in json.loads(out or "[]"):
        if link.get("ifname", "").startswith("pvesim"):
            continue
        for addr in link.get("addr_info", []):
            nets.append(ipaddress.IPv4Network(f"{addr['local']}/{addr['prefixlen']}", strict=False))
    return nets


async def acquire_network(
    preferred: dict[str, object] | None,
    bridge_index: int | None = None,
    subnet: str | None = None,
) -> SimNetwork:
    """Pick and lock an instance index and a /24 no other simulator uses.

    ``preferred`` is what this state directory used last time, tried first so
    that static addresses stay valid across restarts.

    Raises:
        RuntimeError: if nothing is free, or an explicit choice is taken.
    """
    taken = await _host_networks()

    def free(net: ipaddress.IPv4Network) -> bool:
        return not any(net.overlaps(t) for t in taken)

    candidates: list[tuple[int, ipaddress.IPv4Network]] = []
    if bridge_index is not None or subnet is not None:
        idx = bridge_index if bridge_index is not None else 0
        try:
            net = ipaddress.IPv4Network(subnet) if subnet else _pool_subnet(idx)
        except ValueError as exc:
            raise RuntimeError(f"--subnet: {exc}") from exc
        if net.prefixlen > 29:
            raise RuntimeError(f"subnet {net} must be IPv4 and at least a /29")
        candidates.append((idx, net))
    else:
        if preferred:
            candidates.append(
                (int(str(preferred["index"])), ipaddress.IPv4Network(str(preferred["subnet"])))
            )
        candidates += [(i, _pool_subnet(i)) for i in range(256)]
    for idx, net in candidates:
        assert isinstance(net, ipaddress.IPv4Network)
        if not free(net):
            continue
        fh = _try_lock(idx)
        if fh is None:
            continue
        return SimNetwork(index=idx, subnet=net, lock_file=fh)
    raise RuntimeError("no free bridge index/subnet for the simulator (all taken)")


def _pool_subnet(index: int) -> ipaddress.IPv4Network:
    base = int(DEFAULT_POOL.network_address) + index * 256
    return ipaddress.IPv4Network((base, 24))


def resolve_egress(hosts: list[str]) -> dict[str, str]:
    """Resolve the package registries containers may reach (IPv4 only)."""
    out: dict[str, str] = {}
    for host in hosts:
        try:
            infos = socket.getaddrinfo(host, 443, socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("egress host %s does not resolve (%s); skipped", host, exc)
            continue
        if infos:
            out[host] = str(infos[0][4][0])
    return out


def apt_mirror_hosts(sources_dir: Path = Path("/etc/apt")) -> list[str]:
    """The hosts of the host's Debian apt sources (one-line and deb822 forms)."""
    from urllib.parse import urlparse

    hosts: list[str] = []
    files = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            urls = []
            if line.startswith(("deb ", "deb-src ")):
                urls = [w for w in line.split() if "://" in w][:1]
            elif line.lower().startswith("uris:"):
                urls = line.split()[1:]
            for url in urls:
                host = urlparse(url).hostname
                if host and "debian" in url and host not in hosts:
                    hosts.append(host)
    return hosts


async def _iptables(*args: str, table: str = "filter", check: bool = True, v6: bool = False) -> str:
    return await run("ip6tables" if v6 else "iptables", "-w", "-t", table, *args, check=check)


def _chains(index: int) -> tuple[str, str]:
    return f"pvesim{index}-fwd", f"pvesim{index}-in"


async def setup_network(net: SimNetwork) -> None:
    """Create the bridge, its address, forwarding and the NAT/egress rules.

    Our filter rules live in two chains of our own, entered from FORWARD and
    INPUT for traffic on our bridge: containers talk to each other, to the
    package registries (TCP 80/443) and to the simulator's DHCP server, and
    to nothing else.
    """
    await cleanup_network(net.index)
    await run("ip", "link", "add", net.bridge, "type", "bridge")
    await run("ip", "addr", "add", f"{net.gateway}/{net.subnet.prefixlen}", "dev", net.bridge)
    await run("ip", "-6", "addr", "add", f"{net.gateway6}/{net.subnet6.prefixlen}", "dev",
              net.bridge, "nodad")  # fmt: skip
    await run("ip", "link", "set", net.bridge, "up")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    fwd, inp = _chains(net.index)
    br, tag = net.bridge, ["-m", "comment", "--comment", net.tag]
    established = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]
    reject = ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]
    await _iptables("-N", fwd)
    await _iptables("-N", inp)
    await _iptables("-A", fwd, "-i", br, "-o", br, "-j", "ACCEPT")
    # a VLAN's own bridge (see vlan_bridge): the host has no address there,
    # so nothing is routed in or out; its frames pass FORWARD (br_netfilter)
    await _iptables("-A", fwd, "-i", f"{br}v+", "-o", f"{br}v+", "-j", "ACCEPT")
    await _iptables("-A", fwd, "-o", br, *established)
    for ip in sorted(set(net.egress.values())):
        await _iptables("-A", fwd, "-i", br, "-d", ip, "-p", "tcp", "-m", "multiport",
                        "--dports", "80,443", "-j", "ACCEPT")  # fmt: skip
    await _iptables("-A", fwd, *reject)
    await _iptables("-A", inp, "-p", "udp", "--dport", "67", "-j", "ACCEPT")
    await _iptables("-A", inp, "-p", "icmp", "-j", "ACCEPT")
    await _iptables("-A", inp, *established)
    await _iptables("-A", inp, *reject)
    await _iptables("-I", "FORWARD", "-i", br, "-j", fwd, *tag)
    await _iptables("-I", "FORWARD", "-i", f"{br}v+", "-j", fwd, *tag)
    await _iptables("-I", "FORWARD", "-o", br, "-j", fwd, *tag)
    await _iptables("-I", "INPUT", "-i", br, "-j", inp, *tag)
    # not within the subnet: frames bridged on a VLAN's bridge pass here too
    # (br_netfilter) and must keep their addresses
    await _iptables("-A", "POSTROUTING", "-s", str(net.subnet), "!", "-d", str(net.subnet),
                    "!", "-o", br, "-j", "MASQUERADE", *tag, table="nat")  # fmt: skip
    # IPv6 stays on the bridge: containers reach each other, the host answers
    # ICMPv6 (neighbour discovery, ping) and DHCPv6, nothing else; nothing is routed
    reject6 = ["-j", "REJECT", "--reject-with", "icmp6-adm-prohibited"]
    await _iptables("-N", fwd, v6=True)
    await _iptables("-N", inp, v6=True)
    await _iptables("-A", fwd, "-i", br, "-o", br, "-j", "ACCEPT", v6=True)
    await _iptables("-A", fwd, "-i", f"{br}v+", "-o", f"{br}v+", "-j", "ACCEPT", v6=True)
    await _iptables("-A", fwd, *reject6, v6=True)
    await _iptables("-A", inp, "-p", "ipv6-icmp", "-j", "ACCEPT", v6=True)
    await _iptables("-A", inp, "-p", "udp", "--dport", "547", "-j", "ACCEPT", v6=True)  # DHCPv6
    await _iptables("-A", inp, *established, v6=True)
    await _iptables("-A", inp, *reject6, v6=True)
    await _iptables("-I", "FORWARD", "-i", br, "-j", fwd, *tag, v6=True)
    await _iptables("-I", "FORWARD", "-i", f"{br}v+", "-j", fwd, *tag, v6=True)
    await _iptables("-I", "FORWARD", "-o", br, "-j", fwd, *tag, v6=True)
    await _iptables("-I", "INPUT", "-i", br, "-j", inp, *tag, v6=True)


async def cleanup_network(index: int) -> None:
    """Remove everything instance ``index`` may have left: netns, veths,
    iptables rules and chains, the bridge.  Safe when nothing exists."""
    tag = f"pvesim{index}"
    netns_list = await run("ip", "-j", "netns", "list", check=False)
    for ns in json.loads(netns_list or "[]"):
        name = ns.get("name", "")
        if name.startswith(f"{tag}-"):
            await run("ip", "netns", "delete", name, check=False)
    links = await run("ip", "-j", "link", "show", check=False)
    for link in json.loads(links or "[]"):
        name = link.get("ifname", "")
        if name.startswith(f"vp{index}x") or name == tag or re.fullmatch(rf"{tag}v\d+", name):
            await run("ip", "link", "delete", name, check=False)
    for v6, table in ((False, "filter"), (False, "nat"), (True, "filter")):
        listing = await _iptables("-S", table=table, check=False, v6=v6)
        for line in listing.splitlines():
            words = [w.strip('"') for w in line.split()]
            if words[:1] == ["-A"] and "--comment" in words and tag in words:
                try:
                    await _iptables("-D", *words[1:], table=table, v6=v6)
                except CommandError as exc:
                    log.warning("could not remove iptables rule %s: %s", line, exc)
    for v6 in (False, True):
        for chain in _chains(index):
            await _iptables("-F", chain, check=False, v6=v6)
            await _iptables("-X", chain, check=False, v6=v6)


def _veth_name(net: SimNetwork, vmid: int, index: int) -> str:
    name = f"{net.host_veth(vmid)}i{index}"
    if len(name) > 15:  # IFNAMSIZ; only for huge vmids
        name = "vp" + hashlib.sha1(name.encode()).hexdigest()[:13]
    return name


async def create_container_link(net: SimNetwork, vmid: int, nets: list[NetConfig]) -> str:
    """Create the container's netns with one veth per ``net[n]`` on the bridge.

    Deleting the namespace later removes the veth pairs with it.
    """
    ns = net.netns(vmid)
    await delete_container_link(net, vmid)
    await run("ip", "netns", "add", ns)
    await run("ip", "-n", ns, "link", "set", "lo", "up")
    for cfg in nets:
        veth = _veth_name(net, vmid, cfg.index)
        await run("ip", "link", "add", veth, "type", "veth", "peer", "name", cfg.name, "netns", ns)
        if cfg.hwaddr:
            await run("ip", "-n", ns, "link", "set", cfg.name, "address", cfg.hwaddr.lower())
        if cfg.mtu:
            await run("ip", "-n", ns, "link", "set", cfg.name, "mtu", str(cfg.mtu))
            await run("ip", "link", "set", veth, "mtu", str(cfg.mtu))
        # "drop link local address (it can't be used when on a bridge anyway)"
        Path(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6").write_text("1\n")
        bridge = await vlan_bridge(net, cfg.tag) if cfg.tag else net.bridge
        await run("ip", "link", "set", veth, "master", bridge, "up")
    return ns


async def vlan_bridge(net: SimNetwork, tag: int) -> str:
    """The bridge of VLAN ``tag``, made on first use.

    PVE on a bridge that is not VLAN-aware (its default) plugs a tagged port
    into ``vmbr0v{tag}``, a bridge of its own whose uplink is the VLAN
    device ``{port}.{tag}`` (pve-common's PVE::Network::activate_bridge_vlan).
    The simulator's kernel may lack 802.1Q and bridge VLAN filtering, and
    its bridge has no physical port, so ``pvesim{index}v{tag}`` is that
    bridge without the uplink: containers in one VLAN reach each other and
    nothing else (not the gateway, DHCP or other VLANs), as on a PVE node
    whose VLAN is not routed.
    """
    name = f"{net.bridge}v{tag}"
    if not Path(f"/sys/class/net/{name}").exists():
        # two starts may race to make it: either one's bridge will do
        await run("ip", "link", "add", name, "type", "bridge", check=False)
        Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1\n")
        await run("ip", "link", "set", name, "up")
    return name


async def delete_container_link(net: SimNetwork, vmid: int) -> None:
    await run("ip", "netns", "delete", net.netns(vmid), check=False)


async def netns_addresses(ns: str) -> list[dict[str, Any]]:
    """``ip -j addr`` inside a namespace."""
    out = await run("ip", "-n", ns, "-j", "addr", "show")
    return list(json.loads(out or "[]"))


async def set_ssh_refused(ns: str, refused: bool) -> None:
    """Make port 22 in the container's namespace refuse connections (RST)."""
    rule = ["INPUT", "-p", "tcp", "--dport", "22", "-j", "REJECT", "--reject-with", "tcp-reset"]
    if refused:
        await run("ip", "netns", "exec", ns, "iptables", "-w", "-I", *rule)
    else:
        await run("ip", "netns", "exec", ns, "iptables", "-w", "-D", *rule, check=False)

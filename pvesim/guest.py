"""What PVE writes into a container's root filesystem.

At create: hostname, root password, ``ssh-public-keys`` and fresh SSH host
keys.  At every start (PVE's pre-start setup): hostname, ``/etc/hosts``,
``/etc/network/interfaces`` and ``/etc/resolv.conf`` from the config.
The ``render_*`` functions are pure; ``apply_*`` touch the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pvesim.proc import run


def split_property_string(value: str, default_key: str | None = None) -> dict[str, str]:
    """``a=1,b=2`` -> {"a": "1", "b": "2"}; a bare first item is ``default_key``."""
    out: dict[str, str] = {}
    for part in value.split(","):
        if not part:
            continue
        key, sep, val = part.partition("=")
        if not sep:
            if default_key is None:
                raise ValueError(f"missing key in '{part}'")
            key, val = default_key, part
        out[key.strip()] = val.strip()
    return out


def join_property_string(values: dict[str, str], first: str | None = None) -> str:
    parts = []
    if first and first in values:
        parts.append(f"{first}={values[first]}")
    parts += [f"{k}={v}" for k, v in values.items() if k != first]
    return ",".join(parts)


@dataclass(frozen=True)
class NetConfig:
    """One ``net[n]`` entry of a container config."""

    index: int
    name: str
    bridge: str | None
    hwaddr: str | None
    ip: str | None  # "dhcp", "manual" or CIDR
    gw: str | None
    mtu: int | None
    ip6: str | None = None  # "auto", "dhcp", "manual" or CIDR
    gw6: str | None = None
    tag: int | None = None  # the VLAN of the bridge port

    @classmethod
    def parse(cls, index: int, value: str) -> NetConfig:
        kv = split_property_string(value)
        return cls(
            index=index,
            name=kv.get("name", f"eth{index}"),
            bridge=kv.get("bridge"),
            hwaddr=kv.get("hwaddr"),
            ip=kv.get("ip"),
            gw=kv.get("gw"),
            mtu=int(kv["mtu"]) if "mtu" in kv else None,
            ip6=kv.get("ip6"),
            gw6=kv.get("gw6"),
            tag=int(kv["tag"]) if "tag" in kv else None,
        )

    @property
    def is_dhcp(self) -> bool:
        return self.ip == "dhcp"

    @property
    def static_interface(self) -> ipaddress.IPv4Interface | None:
        if self.ip in (None, "dhcp", "manual"):
            return None
        return ipaddress.IPv4Interface(self.ip)

    @property
    def static_interface6(self) -> ipaddress.IPv6Interface | None:
        if self.ip6 in (None, "auto", "dhcp", "manual"):
            return None
        return ipaddress.IPv6Interface(self.ip6)


def _iface_section(name: str, family: str, method: str | None, gw: str | None) -> list[str]:
    if method is None:  # "no address => no iface line"
        return []
    if method in ("dhcp", "manual", "auto"):
        return [f"iface {name} {family} {method}", ""]
    lines = [f"iface {name} {family} static", f"\taddress {method}"]
    if gw:
        lines.append(f"\tgateway {gw}")
    return [*lines, ""]


def render_interfaces(nets: list[NetConfig]) -> str:
    """``/etc/network/interfaces`` as PVE::LXC::Setup::Debian::setup_network
    writes it for Debian >= 10: per interface (sorted by name) ``auto``, the
    ``inet`` section, then the ``inet6`` one (``static`` with the CIDR as
    ``address`` and the ``gateway``, or ``dhcp``/``auto``/``manual``)."""
    lines = ["auto lo", "iface lo inet loopback", "iface lo inet6 loopback", ""]
    for net in sorted(nets, key=lambda n: n.name):
        if net.ip is None and net.ip6 is None:
            continue
        lines.append(f"auto {net.name}")
        lines += _iface_section(net.name, "inet", net.ip, net.gw)
        lines += _iface_section(net.name, "inet6", net.ip6, net.gw6)
    return "\n".join(lines)


def render_hosts(hostname: str, static_ip: str | None, extra: dict[str, str]) -> str:
    """``/etc/hosts``; ``extra`` pins the package registries' addresses the
    way the host resolves them, since containers have no DNS of their own
    beyond the simulator."""
    short = hostname.split(".")[0]
    names = f"{hostname} {short}" if short != hostname else hostname
    own = f"{static_ip} {names}" if static_ip else f"127.0.1.1 {names}"
    lines = ["127.0.0.1 localhost.localdomain localhost", own, "",
             "::1     localhost ip6-localhost ip6-loopback",
             "ff02::1 ip6-allnodes", "ff02::2 ip6-allrouters", ""]  # fmt: skip
    if extra:
        lines.append("# package registries, as the pvesim host resolves them")
        lines += [f"{ip} {name}" for name, ip in sorted(extra.items())]
        lines.append("")
    return "\n".join(lines)


def render_resolv(nameserver: str | None, searchdomain: str | None, host_resolv: str) -> str:
    """``/etc/resolv.conf``: the config's values, else the host's (as PVE)."""
    if not nameserver and not searchdomain:
        return host_resolv
    lines = []
    if searchdomain:
        lines.append(f"search {searchdomain}")
    for ns in (nameserver or "").replace(",", " ").split():
        lines.append(f"nameserver {ns}")
    return "\n".join(lines) + "\n"


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


def apply_start_config(
    rootfs: Path, config: dict[str, object], nets: list[NetConfig], extra_hosts: dict[str, str]
) -> None:
    """PVE's pre-start setup: hostname, hosts, network, resolv.conf."""
    hostname = str(config.get("hostname") or f"CT{config.get('vmid', '')}")
    _write(rootfs, "/etc/hostname", hostname + "\n")
    first_static = next((n.static_interface for n in nets if n.static_interface), None)
    _write(
        rootfs,
        "/etc/hosts",
        render_hosts(hostname, str(first_static.ip) if first_static else None, extra_hosts),
    )
    _write(rootfs, "/etc/network/interfaces", render_interfaces(nets))
    try:
        host_resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        host_resolv = ""
    _write(
        rootfs,
        "/etc/resolv.conf",
        render_resolv(
            str(config["nameserver"]) if config.get("nameserver") else None,
            str(config["searchdomain"]) if config.get("searchdomain") else None,
            host_resolv,
        ),
    )


async def apply_create_config(
    rootfs: Path,
    hostname: str,
    password: str | None,
    ssh_public_keys: str | None,
    pool: HostKeyPool | None = None,
) -> list[str]:
    """Create-time setup.  Returns task log lines (host key fingerprints)."""
    _write(rootfs, "/etc/hostname", hostname + "\n")
    (rootfs / "etc/machine-id").write_text("")
    if ssh_public_keys:
        ssh_dir = rootfs / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = ssh_public_keys.strip() + "\n"
        _write(rootfs, "/root/.ssh/authorized_keys", keys, mode=0o600)
    if password:
        hashed = (await run("openssl", "passwd", "-6", "-stdin", input=password.encode())).strip()
        shadow = rootfs / "etc/shadow"
        lines = shadow.read_text().splitlines()
        out = []
        for line in lines:
            fields = line.split(":")
            if fields[0] == "root":
                fields[1] = hashed
            out.append(":".join(fields))
        shadow.write_text("\n".join(out) + "\n")
        os.chmod(shadow, 0o640)
    return await regenerate_host_keys(rootfs, hostname, pool)


class HostKeyPool:
    """RSA host keys generated ahead of time.

    A 3072-bit RSA key takes anywhere from 0.1 to over a second to generate
    (a random prime search); keeping a few fresh ones ready makes a create
    take the same short time every time.  Every key is used once.
    """

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.directory = directory
        self.size = size
        self._filling: asyncio.Task[None] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def _ready(self) -> list[Path]:
        return sorted(
            p for p in self.directory.glob("rsa-*") if not p.name.endswith((".pub", ".tmp"))
        )

    def take(self) -> Path | None:
        """A ready key (its ``.pub`` beside it), or None if the pool is empty."""
        ready = self._ready()
        self.refill()
        return ready[0] if ready else None

    def refill(self) -> None:
        if self._filling is None or self._filling.done():
            self._filling = asyncio.create_task(self._fill())

    async def _fill(self) -> None:
        while len(self._ready()) < self.size:
            name = f"rsa-{os.getpid()}-{time.monotonic_ns()}"
            tmp = self.directory / f"{name}.tmp"
            await run("ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "", "-C", "root@pvesim",
                      "-f", str(tmp))  # fmt: skip
            (self.directory / f"{name}.tmp.pub").rename(self.directory / f"{name}.pub")
            tmp.rename(self.directory / name)

    async def close(self) -> None:
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filling


async def regenerate_host_keys(rootfs: Path, hostname: str,
                               pool: HostKeyPool | None = None) -> list[str]:  # fmt: skip
    """Fresh SSH host keys (PVE does this on create, not on clone)."""
    ssh_dir = rootfs / "etc/ssh"
    for old in ssh_dir.glob("ssh_host_*"):
        old.unlink()

    async def keygen(kind: str, bits: list[str]) -> str:
        path = ssh_dir / f"ssh_host_{kind}_key"
        pooled = pool.take() if pool is not None and kind == "rsa" else None
        if pooled is not None:
            shutil.move(pooled, path)
            shutil.move(f"{pooled}.pub", f"{path}.pub")
            os.chmod(path, 0o600)
            await run("ssh-keygen", "-q", "-c", "-C", f"root@{hostname}", "-f", str(path))
        else:
            await run("ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-C", f"root@{hostname}",
                      "-f", str(path))  # fmt: skip
        fp = await run("ssh-keygen", "-l", "-f", f"{path}.pub")
        return (
            f"Creating SSH host key '{path.name}' - this may take some time ...\ndone: {fp.strip()}"
        )

    results = await asyncio.gather(
        keygen("rsa", ["-b", "3072"]), keygen("ecdsa", []), keygen("ed25519", [])
    )
    return [line for block in results for line in block.splitlines()]


def size_to_bytes(size: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if size and size[-1].upper() in units:
        return int(float(size[:-1]) * units[size[-1].upper()])
    return int(float(size) * (1 << 30))

"""``pvesim serve``: bring up the node, serve HTTPS, clean up on exit."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import os
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from pvesim import lxcops, network, templates
from pvesim.api import create_app
from pvesim.node import Node
from pvesim.proc import CommandError
from pvesim.state import StateStore, write_json
from pvesim.tls import ensure_certificates

log = logging.getLogger(__name__)


class ServeError(Exception):
    """A reason not to start, said plainly (exit code 2)."""


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    state_dir: Path
    node: str = "pve"
    time_scale: float = 1.0
    dhcp_delay: float = 0.0
    bridge_index: int | None = None
    subnet: str | None = None
    egress_hosts: tuple[str, ...] | None = None  # None = the defaults
    # a cluster (pvesim.cluster.serve_cluster): the nodes, their names, MiB and cores
    nodes: int = 1
    node_names: str | None = None
    node_memory: str | None = None
    node_cores: str | None = None


def parse_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.2:8006`` / ``[::1]:8006`` -> (host, port); loopback only.

    Raises:
        ServeError: for a malformed or non-loopback address.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ServeError(f"--listen must be HOST:PORT, got '{listen}'")
    host = host.strip("[]")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ServeError(f"--listen needs an IP address, got '{host}'") from exc
    if not addr.is_loopback:
        raise ServeError(
            f"pvesim listens on loopback addresses only (127.0.0.0/8, ::1); {host} is not one"
        )
    if not 0 < int(port) < 65536:
        raise ServeError(f"port {port} is out of range")
    return host, int(port)


INOTIFY_MINIMUMS = {"max_user_instances": 8192, "max_user_watches": 524288}


def raise_inotify_limits() -> None:
    """systemd in every container needs inotify instances; the kernel's
    default of 128 per user runs out at about twenty containers ("Failed to
    create control group inotify object: Too many open files")."""
    for name, minimum in INOTIFY_MINIMUMS.items():
        path = Path("/proc/sys/fs/inotify") / name
        try:
            if int(path.read_text()) < minimum:
                path.write_text(f"{minimum}\n")
                log.info("raised fs.inotify.%s to %d for the containers", name, minimum)
        except (OSError, ValueError) as exc:
            log.warning("could not raise fs.inotify.%s: %s", name, exc)


def check_root() -> None:
    if os.geteuid() != 0:
        raise ServeError(
            "pvesim must run as root: its containers need network namespaces, a bridge, "
            "NAT rules, overlay mounts and systemd-nspawn (try: sudo pvesim serve ...)"
        )


def node_url(host: str, port: int, path: str) -> str:
    """``https://host:port/path``, an IPv6 host in brackets."""
    return f"https://[{host}]:{port}{path}" if ":" in host else f"https://{host}:{port}{path}"


def ready_info(node: Node, host: str, port: int, cafile: str,
               net: network.SimNetwork) -> dict[str, object]:  # fmt: skip
    """What ``pvesim.json`` and the ready line say of a node listening on
    ``host:port``: its API, credentials and the containers' network."""
    creds = node.auth.creds
    return {
        "url": node_url(host, port, "/api2/json"),
        "cafile": cafile,
        "fingerprint": node.ssl_fingerprint,
        "node": node.name,
        "user": creds.user,
        "password": creds.password,
        "token_id": creds.token_id,
        "token_secret": creds.token_secret,
        "admin_url": node_url(host, port, "/pvesim"),
        "bridge": net.bridge,
        "subnet": str(net.subnet),
        "gateway": str(net.gateway),
        "subnet6": str(net.subnet6),
        "gateway6": str(net.gateway6),
        "pid": os.getpid(),
    }


async def announce_and_wait(state_dir: Path, ready: dict[str, object], ready_out: object) -> None:
    """Write ``pvesim.json`` (0600: it holds the credentials), print the
    ready line, and wait for SIGINT or SIGTERM."""
    write_json(state_dir / "pvesim.json", ready, mode=0o600)
    print(json.dumps(ready), file=ready_out, flush=True)  # type: ignore[call-overload]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: halting containers and removing the network")


async def serve(opts: ServeOptions, ready_out: object = sys.stdout) -> None:
    """Run until SIGINT/SIGTERM."""
    check_root()
    raise_inotify_limits()
    opts.state_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore(opts.state_dir)
    egress_names = list(opts.egress_hosts) if opts.egress_hosts is not None else [
        *network.apt_mirror_hosts(), *network.DEFAULT_EGRESS_HOSTS]  # fmt: skip
    try:
        net = await network.acquire_network(
            store.load("network", None), opts.bridge_index, opts.subnet
        )
    except RuntimeError as exc:
        raise ServeError(str(exc)) from None
    net.egress = network.resolve_egress(egress_names)
    node = Node(opts.state_dir, opts.node, net, opts.time_scale, opts.dhcp_delay)
    node.apply_pending = functools.partial(lxcops.apply_pending, node)
    tls = ensure_certificates(opts.state_dir, opts.host, opts.node)
    node.ssl_fingerprint = tls.fingerprint()
    if not templates.template_path().exists():
        log.warning("no OS template in %s: run `pvesim build-template` (containers cannot be "
                    "created until then)", templates.template_path())  # fmt: skip
    runner: web.AppRunner | None = None
    try:
        try:
            await node.startup()
        except CommandError as exc:
            raise ServeError(f"setting up the simulator's host network failed: {exc}") from None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls.certfile, tls.keyfile)
        runner = web.AppRunner(create_app(node), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, opts.host, opts.port, ssl_context=ctx).start()
        ready = ready_info(node, opts.host, opts.port, str(tls.cafile), net)
        await announce_and_wait(opts.state_dir, ready, ready_out)
    finally:
        if runner is not None:
            await runner.cleanup()
        await node.shutdown()
        (opts.state_dir / "pvesim.json").unlink(missing_ok=True)
        if net.lock_file is not None:
            net.lock_file.close()

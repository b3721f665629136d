"""The ``pvesim`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from pvesim import templates
from pvesim.cluster import serve_cluster
from pvesim.server import ServeError, ServeOptions, parse_listen, serve

DEFAULT_STATE = Path("/var/lib/pvesim")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """pvesim: a Proxmox VE API simulator with real containers."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s pvesim %(levelname)s %(message)s",
    )


@main.command("serve")
@click.option(
    "--listen",
    default="127.0.0.2:8006",
    show_default=True,
    help="Loopback HOST:PORT to serve HTTPS on.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_STATE,
    show_default=True,
    help="Where configs, tasks and container files live.",
)
@click.option("--node", "node_name", default="pve", show_default=True, help="The node's name.")
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Multiplier for simulated task durations (0 = as fast as possible).",
)
@click.option(
    "--dhcp-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds before the DHCP server answers a container.",
)
@click.option(
    "--bridge-index",
    type=click.IntRange(0, 255),
    default=None,
    help="Use bridge pvesimN (default: the first free one).",
)
@click.option(
    "--subnet",
    default=None,
    help="The bridge's IPv4 subnet (default: a free /24 in 198.18.0.0/15).",
)
@click.option(
    "--egress-host",
    "egress_hosts",
    multiple=True,
    help="A host containers may reach on TCP 80/443 (repeatable; default: the "
    "host's Debian mirrors and the PyPI and npm registries).",
)
@click.option(
    "--nodes",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Serve a cluster of this many nodes (pve1..pveN), each on its own address.",
)
@click.option("--node-names", default=None, help="The cluster's node names, comma-separated.")
@click.option(
    "--node-memory",
    default=None,
    help="Each cluster node's memory in MiB: one value, or one per node comma-separated "
    "(default: the host's).",
)
@click.option(
    "--node-cores",
    default=None,
    help="Each cluster node's cores: one value, or one per node (default: the host's).",
)
def serve_cmd(listen: str, state_dir: Path, node_name: str, time_scale: float,
              dhcp_delay: float, bridge_index: int | None, subnet: str | None,
              egress_hosts: tuple[str, ...], nodes: int, node_names: str | None,
              node_memory: str | None, node_cores: str | None) -> None:  # fmt: skip
    """Serve the PVE API; print one JSON line with the credentials once ready."""
    if nodes > 1 and node_name != "pve":
        raise click.UsageError("--node names the one node; a cluster's are --node-names")
    if nodes == 1 and (node_names or node_memory or node_cores):
        raise click.UsageError(
            "--node-names, --node-memory and --node-cores need --nodes 2 or more"
        )
    try:
        host, port = parse_listen(listen)
        opts = ServeOptions(host=host, port=port, state_dir=state_dir.resolve(),
                            node=node_name, time_scale=time_scale, dhcp_delay=dhcp_delay,
                            bridge_index=bridge_index, subnet=subnet,
                            egress_hosts=egress_hosts or None, nodes=nodes,
                            node_names=node_names, node_memory=node_memory,
                            node_cores=node_cores)  # fmt: skip
        asyncio.run(serve(opts) if nodes == 1 else serve_cluster(opts))
    except ServeError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {listen}: {exc.strerror or exc}") from None


@main.command("build-template")
@click.option("--force", is_flag=True, help="Rebuild even when cached.")
@click.option("--mirror", default=None, help="Debian mirror URL (default: the host's).")
def build_template_cmd(force: bool, mirror: str | None) -> None:
    """Build the Debian 12 standard template with debootstrap (cached)."""
    started = time.monotonic()
    try:
        path = templates.build_template(force=force, mirror=mirror)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    templates.ensure_base(path)
    click.echo(f"{path} ({path.stat().st_size >> 20} MiB, {time.monotonic() - started:.1f}s)")


def _admin(state_dir: Path, method: str, action: str, body: dict[str, Any] | None = None) -> Any:
    try:
        info = json.loads((state_dir / "pvesim.json").read_text())
    except FileNotFoundError:
        raise click.ClickException(f"no simulator is running with state dir {state_dir}") from None
    ctx = ssl.create_default_context(cafile=info["cafile"])
    # a cluster's admin API is on every node: the next one if a node is offline
    urls = [info["admin_url"], *(n["admin_url"] for n in info.get("nodes", [])[1:])]
    for i, url in enumerate(urls):
        req = urllib.request.Request(
            f"{url}/{action}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"PVEAPIToken={info['token_id']}={info['token_secret']}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
                return json.loads(resp.read())["data"]
        except urllib.error.HTTPError as exc:
            raise click.ClickException(f"{exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            if i == len(urls) - 1:
                raise click.ClickException(f"cannot reach the simulator: {exc.reason}") from None
    return None


state_opt = click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_STATE,
    show_default=True,
    help="The running simulator's state dir.",
)


@main.group()
def fault() -> None:
    """Inject failures into a running simulator."""


@fault.command("http")
@state_opt
@click.option("--path", required=True, help="Regex searched in the API path, e.g. '/lxc$'.")
@click.option("--status", type=click.IntRange(100, 599), default=500, show_default=True)
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--method", type=click.Choice(["GET", "POST", "PUT", "DELETE"]), default=None)
@click.option("--message", default=None, help="The reason phrase.")
def fault_http(state_dir: Path, path: str, status: int, count: int, method: str | None,
               message: str | None) -> None:  # fmt: skip
    """Fail the next COUNT matching requests with STATUS."""
    click.echo(
        json.dumps(
            _admin(
                state_dir,
                "POST",
                "http",
                {
                    "path": path,
                    "status": status,
                    "count": count,
                    "method": method,
                    "message": message,
                },
            )
        )
    )


@fault.command("task")
@state_opt
@click.option("--type", "task_type", required=True, help="vzcreate, vzstart, ...")
@click.option("--vmid", type=int, default=None)
@click.option("--error", default=None, help="End the task in TASK ERROR with this message.")
@click.option("--delay", type=float, default=0.0, help="Extra seconds the task takes.")
@click.option(
    "--warnings",
    type=click.IntRange(min=0),
    default=0,
    help="Log this many warnings (the task ends in WARNINGS: N).",
)
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True)
def fault_task(state_dir: Path, task_type: str, vmid: int | None, error: str | None,
               delay: float, warnings: int, count: int) -> None:  # fmt: skip
    """Make the next matching task fail, take longer or end with warnings."""
    if error is None and delay <= 0 and warnings <= 0:
        raise click.UsageError("give --error, --delay or --warnings")
    body = {"type": task_type, "vmid": vmid, "error": error, "delay": delay,
            "warnings": warnings, "count": count}  # fmt: skip
    click.echo(json.dumps(_admin(state_dir, "POST", "task", body)))


@fault.command("lock")
@state_opt
@click.option("--vmid", type=int, required=True)
@click.option("--seconds", type=float, required=True)
@click.option("--lock", default="backup", show_default=True, help="The config lock to hold.")
@click.option(
    "--file",
    "file_lock",
    is_flag=True,
    help="Hold the config file lock instead (callers time out after 10 s).",
)
def fault_lock(state_dir: Path, vmid: int, seconds: float, lock: str, file_lock: bool) -> None:
    """Hold a container's lock for SECONDS."""
    _admin(state_dir, "POST", "lock", {"vmid": vmid, "seconds": seconds, "lock": lock,
                                       "kind": "file" if file_lock else "config"})  # fmt: skip


@fault.command("dhcp-delay")
@state_opt
@click.option("--vmid", type=int, required=True)
@click.option("--seconds", type=float, required=True)
def fault_dhcp(state_dir: Path, vmid: int, seconds: float) -> None:
    """Delay a container's DHCP lease by SECONDS."""
    _admin(state_dir, "POST", "dhcp-delay", {"vmid": vmid, "seconds": seconds})


@fault.command("ssh-refuse")
@state_opt
@click.option("--vmid", type=int, required=True)
@click.option("--seconds", type=float, required=True)
def fault_ssh_refuse(state_dir: Path, vmid: int, seconds: float) -> None:
    """Refuse SSH connections to a container for SECONDS."""
    _admin(state_dir, "POST", "ssh-refuse", {"vmid": vmid, "seconds": seconds})


@fault.command("ssh-drop")
@state_opt
@click.option("--vmid", type=int, required=True)
def fault_ssh_drop(state_dir: Path, vmid: int) -> None:
    """Drop a container's SSH connections now."""
    click.echo(json.dumps(_admin(state_dir, "POST", "ssh-drop", {"vmid": vmid})))


@fault.command("node-offline")
@state_opt
@click.option("--node", required=True, help="The cluster node to take offline.")
@click.option(
    "--seconds", type=click.FloatRange(min=0), default=None, help="Come back after SECONDS."
)
def fault_node_offline(state_dir: Path, node: str, seconds: float | None) -> None:
    """Take a cluster node offline: its API refuses connections, calls proxied
    to it fail with 595, the cluster shows it offline (its containers run on)."""
    _admin(state_dir, "POST", "node-offline", {"node": node, "seconds": seconds})


@fault.command("node-online")
@state_opt
@click.option("--node", required=True, help="The cluster node to bring back.")
def fault_node_online(state_dir: Path, node: str) -> None:
    """Bring an offline cluster node back."""
    _admin(state_dir, "POST", "node-online", {"node": node})


@fault.command("list")
@state_opt
def fault_list(state_dir: Path) -> None:
    """Show pending faults."""
    click.echo(json.dumps(_admin(state_dir, "GET", "faults"), indent=1))


@fault.command("clear")
@state_opt
def fault_clear(state_dir: Path) -> None:
    """Remove all pending faults."""
    _admin(state_dir, "DELETE", "faults")


@main.command("info")
@state_opt
def info_cmd(state_dir: Path) -> None:
    """Print the running simulator's connection JSON line."""
    try:
        click.echo((state_dir / "pvesim.json").read_text().strip())
    except FileNotFoundError:
        raise click.ClickException(f"no simulator is running with state dir {state_dir}") from None

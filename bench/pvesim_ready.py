"""How fast does the simulator make a container you can SSH into?

Measures, at time scale 0, create + start + SSH-ready through the API (what
the provisioner sees), N times, against a baseline taken in the same run on
the same machine: the bare runtime floor — an overlay over the same unpacked
base, a network namespace on the same bridge, systemd-nspawn, wait for sshd —
with no API, tasks or config handling.  Prints medians, p99 and the ratio.

    sudo .venv/bin/python bench/pvesim_ready.py [--runs 10]

Starts its own simulator in a temporary state dir (needs root and the cached
template; scripts/setup builds it).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pvesim import network, runtime, templates
from pvesim.guest import NetConfig, apply_start_config, regenerate_host_keys
from tests.conftest import start_simulator, stop_simulator
from tests.pvesim.helpers import token_api, wait_task

TEMPLATE = f"local:vztmpl/{templates.STANDARD_TEMPLATE}"


def ssh_banner(ip: str, timeout: float = 60) -> None:
    """Until sshd sends its banner (a TCP accept alone can be too early)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, 22), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"no SSH banner from {ip}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def via_api(info: dict, runs: int) -> tuple[list[float], list[float], list[float], list[float]]:
    api = token_api(info)
    net = ipaddress.ip_network(info["subnet"])
    total, create, start, ready = [], [], [], []
    for i in range(runs):
        vmid, ip = 900 + i, str(net.network_address + 30 + i)
        t0 = time.monotonic()
        upid = api.nodes("pve").lxc.post(vmid=vmid, ostemplate=TEMPLATE, storage="local-lvm",
                                         net0=f"name=eth0,bridge=vmbr0,ip={ip}/24")  # fmt: skip
        assert wait_task(api, "pve", upid, 60)["exitstatus"] == "OK"
        t1 = time.monotonic()
        assert (
            wait_task(api, "pve", api.nodes("pve").lxc(vmid).status.start.post(), 60)["exitstatus"]
            == "OK"
        )
        t2 = time.monotonic()
        ssh_banner(ip)
        t3 = time.monotonic()
        total.append(t3 - t0)
        create.append(t1 - t0)
        start.append(t2 - t1)
        ready.append(t3 - t2)
        wait_task(api, "pve", api.nodes("pve").lxc(vmid).status.stop.post())
        wait_task(api, "pve", api.nodes("pve").lxc(vmid).delete())
    return total, create, start, ready


async def bare(info: dict, runs: int, work: Path) -> list[float]:
    """The floor: the same runtime steps without the simulator around them."""
    sim_net = network.SimNetwork(index=int(info["bridge"].removeprefix("pvesim")),
                                 subnet=ipaddress.IPv4Network(info["subnet"]))  # fmt: skip
    base = templates.ensure_base(templates.template_path())
    subnet = ipaddress.ip_network(info["subnet"])
    out = []
    for i in range(runs):
        vmid, ip = 950 + i, str(subnet.network_address + 60 + i)
        fs = runtime.ContainerFs(work / str(vmid))
        t0 = time.monotonic()
        fs.create(base)
        root = await fs.mount()
        await regenerate_host_keys(root, f"bare{vmid}")
        nets = [
            NetConfig.parse(0, f"name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:09:{i:02X},ip={ip}/24")
        ]
        apply_start_config(root, {"hostname": f"bare{vmid}"}, nets, {})
        ns = await network.create_container_link(sim_net, vmid, nets)
        ct = await runtime.boot(fs, vmid, f"bare{vmid}", ns, machine=f"bare-{vmid}")
        await asyncio.to_thread(ssh_banner, ip)
        out.append(time.monotonic() - t0)
        await runtime.kill(ct)
        await network.delete_container_link(sim_net, vmid)
        await fs.remove()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pvesim-bench-") as tmp:
        proc, info = start_simulator(Path(tmp) / "state")
        try:
            via_api(info, 1)  # warm-up: page cache, first unpack
            total, create, start, ready = via_api(info, args.runs)
            floor = asyncio.run(bare(info, args.runs, Path(tmp) / "bare"))
        finally:
            stop_simulator(proc)
    med = statistics.median
    print(f"pvesim create+start+SSH-ready at time scale 0, {args.runs} runs")
    print(f"  through the API : median {med(total):.3f}s  p99 {pct(total, 0.99):.3f}s  "
          f"min {min(total):.3f}s")  # fmt: skip
    print(f"    create task   : median {med(create):.3f}s")
    print(f"    start task    : median {med(start):.3f}s")
    print(f"    boot to sshd  : median {med(ready):.3f}s")
    print(f"  bare runtime    : median {med(floor):.3f}s  p99 {pct(floor, 0.99):.3f}s")
    print(f"  ratio API/bare  : {med(total) / med(floor):.2f}")


if __name__ == "__main__":
    main()

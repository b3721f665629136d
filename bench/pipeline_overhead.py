"""Pipeline overhead: the provisioner versus a minimal hand-written script.

For a template with a few files and a short script, at time scale 0, the
pipeline's wall time (submit -> ready, a worker already running) divided by
that of a hand-written sequential script making the same PVE and SSH calls
(create, wait, start, wait, address, SSH, upload the files, run the script),
measured alternately in the same run.  Target: under 1.15.

    sudo .venv/bin/python bench/pipeline_overhead.py [--runs 5]

Starts its own simulator and Redis; needs root and the cached template.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provisioner.events import EventReader
from provisioner.models import Lifecycle
from provisioner.secrets.generate import generate_ssh_keypair
from provisioner.templates.loader import load_template
from provisioner.templates.render import render_files
from tests.conftest import start_simulator, stop_simulator
from tests.pipeline.conftest import build_stack
from tests.pvesim.helpers import token_api, wait_task

HERE = Path(__file__).resolve().parent
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


def start_redis(work: Path, port: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of the bench's own (on ``port``, or a free one)."""
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(work)],
                            stdout=subprocess.DEVNULL)  # fmt: skip
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


async def hand_written(info: dict, vmid: int, ip: str, files: list, script: bytes) -> float:
    """The same calls, written by hand, with no events, database or retries."""
    api = token_api(info)
    node = api.nodes(info["node"])
    private, public = generate_ssh_keypair()
    t0 = time.monotonic()
    upid = node.lxc.post(vmid=vmid, ostemplate=TEMPLATE, storage="local-lvm", hostname=f"hw{vmid}",
                         memory=256, cores=1, rootfs="local-lvm:2", unprivileged=1,
                         net0=f"name=eth0,bridge=vmbr0,ip={ip}/24,gw={info['gateway']}",
                         **{"ssh-public-keys": public})  # fmt: skip
    wait_task(api, info["node"], upid)
    wait_task(api, info["node"], node.lxc(vmid).status.start.post())
    key = asyncssh.import_private_key(private)
    while True:
        try:
            conn = await asyncssh.connect(ip, username="root", client_keys=[key],
                                          known_hosts=None, connect_timeout=2)  # fmt: skip
            break
        except (OSError, asyncssh.Error):
            await asyncio.sleep(0.1)
    async with conn:
        await conn.run("mkdir -p /etc/bench /usr/local/bin", check=True)
        async with conn.start_sftp_client() as sftp:
            for f in files:
                async with sftp.open(f.path, "wb") as fh:
                    await fh.write(f.content)
                await sftp.chmod(f.path, f.mode)
        await conn.run("bash -s", input=script.decode(), check=True)
    elapsed = time.monotonic() - t0
    wait_task(api, info["node"], node.lxc(vmid).status.stop.post())
    wait_task(api, info["node"], node.lxc(vmid).delete())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    template = load_template(HERE / "templates/overhead")
    files = render_files(template, {"greeting": "hello"})
    script = template.scripts[0].path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        work = Path(tmp)
        redis_proc, redis_url = start_redis(work)
        sim_proc, info = start_simulator(work / "sim")
        stack = build_stack(info, redis_url, work / "data", [HERE / "templates"])
        net = ipaddress.ip_network(info["subnet"])
        pipeline_times, manual_times = [], []
        try:
            stack.start_workers(1)
            time.sleep(2)  # the worker is up and waiting, as in production
            for i in range(args.runs + 1):  # the first round warms caches up
                ip = str(net.network_address + 20 + i)
                t0 = time.monotonic()
                cid = stack.submit("overhead", f"pl{i}", ip=f"{ip}/24", gateway=info["gateway"])
                # follow the events as a client does: done at the terminal event
                for event in EventReader(stack.redis, stack.factory, cid).events(0, block_ms=100):
                    if event.terminal:
                        break
                elapsed = time.monotonic() - t0
                ct = stack.wait(cid, timeout=30)
                assert ct.lifecycle == Lifecycle.READY, ct.error_message
                api = token_api(info)
                wait_task(api, info["node"], api.nodes(info["node"]).lxc(ct.vmid).delete(force=1))
                manual = asyncio.run(hand_written(info, 700 + i, str(net.network_address + 60 + i),
                                                  files, script))  # fmt: skip
                if i:
                    pipeline_times.append(elapsed)
                    manual_times.append(manual)
        finally:
            stack.stop_workers()
            stop_simulator(sim_proc)
            redis_proc.terminate()
            redis_proc.wait()
    med = statistics.median
    print(
        f"pipeline overhead, template 'overhead' (3 files, 1 script), {args.runs} runs, time scale 0"
    )
    print(f"  pipeline (submit -> ready) : median {med(pipeline_times):.3f}s  "
          f"max {max(pipeline_times):.3f}s")  # fmt: skip
    print(f"  hand-written script        : median {med(manual_times):.3f}s  "
          f"max {max(manual_times):.3f}s")  # fmt: skip
    print(
        f"  ratio (medians)            : {med(pipeline_times) / med(manual_times):.2f}  (target < 1.15)"
    )


if __name__ == "__main__":
    main()

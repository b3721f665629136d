"""Scale on a cluster: 60 containers placed automatically on a simulated
3-node cluster at realistic task durations, with 1, 4 and 16 workers.

For each worker count, submits N containers at once with ``node: auto``
(placement chooses each node, reservations spreading the burst) to already
running workers, and measures until all are ready: containers per minute
and the speed-up against the first worker count measured in the same run
(with the ratio to linear), submit -> ready median and p99, how the
containers spread over the nodes, each worker's memory (RSS and PSS,
sampled every second, with its work horse), and the CPU seconds of the
simulator (its API and the containers' boots) against the product's
(workers and their horses), with the product's CPU per container.

    sudo .venv/bin/python bench/cluster_scale.py [--containers 60] [--workers 1 4 16]
        [--time-scale 1] [--nodes 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline_overhead import HERE, start_redis
from provisioner.db import session_scope
from provisioner.models import Container, Lifecycle, Node
from provisioner.nodes import add_peers, cluster_peers
from provisioner.placing import place_request
from provisioner.requests import ProvisionRequest, check_request, request_container
from provisioner.reservations import Reservations
from provisioner.secrets.keyfile import load_secret_box
from tests.conftest import start_simulator, stop_simulator
from tests.pipeline.conftest import NODE, Stack, build_stack
from tests.pvesim.helpers import token_api, wait_task

TICK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int, children: bool = True) -> float:
    """utime + stime (+ the reaped children's) of a process, in seconds."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = int(fields[11]) + int(fields[12])
        reaped = int(fields[13]) + int(fields[14]) if children else 0
        return (own + reaped) / TICK
    return 0.0


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (every core), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICK


def tree(pid: int) -> list[int]:
    """A process and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                todo += [int(k) for k in kids]
    return out


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB, from smaps_rollup."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


class MemorySampler(threading.Thread):
    """Each worker's peak RSS and PSS (itself plus its work horse)."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak: dict[int, tuple[int, int]] = {p: (0, 0) for p in pids}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            for pid in self.pids:
                rss = pss = 0
                for p in tree(pid):
                    r, s = memory_kib(p)
                    rss, pss = rss + r, pss + s
                old = self.peak[pid]
                self.peak[pid] = (max(old[0], rss), max(old[1], pss))


def register_cluster(stack: Stack) -> None:
    """Node "sim" (the first) and its peers, their fingerprints taken as the
    first node reports them (what ``nodes peers --add --yes`` does)."""
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    with session_scope(stack.factory) as session:
        first = session.query(Node).filter_by(name=NODE).one()
        _cluster, peers = cluster_peers(session, box, first)
        add_peers(session, box, first, {p.name: p.fingerprint or "" for p in peers})


def submit_auto(stack: Stack, hostname: str) -> str:
    """What POST /api/containers does for ``node: auto``."""
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    req = ProvisionRequest(template="overhead", node="auto", hostname=hostname)
    with session_scope(stack.factory) as session:
        req, placed = place_request(session, box, stack.settings, Reservations(stack.redis), req)
        assert placed is not None
        checked = check_request(session, stack.settings, req)
        done = request_container(session, box, stack.settings, stack.redis, req, checked,
                                 container_id=placed.container_id,
                                 placement=placed.to_json())  # fmt: skip
        return done.container.id


def clean(info: dict[str, object]) -> None:
    api = token_api(info)
    for entry in info["nodes"]:  # type: ignore[attr-defined]
        node = entry["node"]
        for ct in api.nodes(node).lxc.get():
            wait_task(api, node, api.nodes(node).lxc(ct["vmid"]).delete(force=1, purge=1))


# worker count, seconds, latencies, containers per node, peak (RSS, PSS) per worker,
# CPU seconds of the product, of the simulator's API, of the whole machine
Row = tuple[int, float, list[float], Counter[str], dict[int, tuple[int, int]], float, float, float]


def report(row: Row, base: Row, containers: int) -> None:
    """One worker count's figures, against the first count measured."""
    n_workers, total, latencies, nodes, peak, ours, sim_cpu, busy = row
    cores = os.cpu_count() or 1
    speed = base[1] / total
    linear = n_workers / base[0]
    rss = [r / 1024 for r, _ in peak.values()]
    pss = [p / 1024 for _, p in peak.values()]
    print(f"  {n_workers:2d} worker(s): all ready in {total:6.1f}s  "
          f"{containers / total * 60:5.1f} containers/min  speed-up x{speed:.2f} "
          f"({speed / linear:.2f} of linear)  submit->ready median "
          f"{statistics.median(latencies):5.1f}s p99 {pct(latencies, 0.99):5.1f}s")  # fmt: skip
    print(f"      spread {dict(sorted(nodes.items()))} (max-min "
          f"{max(nodes.values()) - min(nodes.values())})  worker peak RSS median "
          f"{statistics.median(rss):.0f} MiB max {max(rss):.0f}, PSS median "
          f"{statistics.median(pss):.0f} MiB max {max(pss):.0f}")  # fmt: skip
    print(f"      CPU: machine {busy:6.1f}s busy of {total * cores:6.1f}s "
          f"({busy / (total * cores):.0%}); simulator API {sim_cpu:5.1f}s, product (workers "
          f"and horses) {ours:5.1f}s, the rest (containers booting, Redis) "
          f"{busy - sim_cpu - ours:6.1f}s; product per container "
          f"{ours / containers:.2f}s", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()
    rows: list[Row] = []
    print(f"cluster scale: {args.containers} containers ('overhead' template, node auto) on "
          f"{args.nodes} simulated nodes, time scale {args.time_scale:g}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        redis_proc, redis_url = start_redis(work)
        sim_proc, info = start_simulator(work / "sim", "--nodes", str(args.nodes),
                                         "--time-scale", str(args.time_scale))  # fmt: skip
        try:
            for n_workers in args.workers:
                stack = build_stack(info, redis_url, work / f"data{n_workers}",
                                    [HERE / "templates"])  # fmt: skip
                register_cluster(stack)
                stack.start_workers(n_workers)
                time.sleep(3)
                pids = [p.pid for p in stack.workers]
                sampler = MemorySampler(pids)
                sampler.start()
                sim_cpu0 = cpu_seconds(sim_proc.pid, children=False)
                ours0 = sum(cpu_seconds(p) for p in pids)
                busy0 = machine_busy()
                t0 = time.monotonic()
                submitted = {}
                for i in range(args.containers):
                    submitted[submit_auto(stack, f"cs{n_workers}-{i}")] = time.time()
                latencies, nodes = [], Counter()
                for cid, started in submitted.items():
                    ct = stack.wait(cid, timeout=3600)
                    assert ct.lifecycle == Lifecycle.READY, ct.error_message
                    assert ct.finished_at is not None
                    latencies.append(ct.finished_at.timestamp() - started)
                    with stack.factory() as session:
                        nodes[session.get(Container, cid).node.name] += 1  # type: ignore[union-attr]
                total = time.monotonic() - t0
                sampler.stop.set()
                ours = sum(cpu_seconds(p) for p in pids) - ours0
                sim_cpu = cpu_seconds(sim_proc.pid, children=False) - sim_cpu0
                busy = machine_busy() - busy0
                rows.append((n_workers, total, latencies, nodes, dict(sampler.peak), ours, sim_cpu,
                             busy))  # fmt: skip
                report(rows[-1], rows[0], args.containers)
                stack.stop_workers()
                clean(info)
        finally:
            stop_simulator(sim_proc)
            redis_proc.terminate()
            redis_proc.wait()


if __name__ == "__main__":
    main()

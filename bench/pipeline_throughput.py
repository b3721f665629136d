"""Pipeline throughput: 20 containers with 1, 2 and 4 workers.

For each worker count, submits N containers at once (DHCP, the light
``overhead`` template) to already running workers and measures the time until
all are ready: containers per minute, per-container median and p99 from
submit to ready, and the speed-up against 1 worker measured in the same run.

    sudo .venv/bin/python bench/pipeline_throughput.py [--containers 20] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline_overhead import HERE, start_redis
from provisioner.models import Lifecycle
from tests.conftest import start_simulator, stop_simulator
from tests.pipeline.conftest import build_stack
from tests.pvesim.helpers import token_api, wait_task


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        work = Path(tmp)
        redis_proc, redis_url = start_redis(work)
        sim_proc, info = start_simulator(work / "sim")
        try:
            for n_workers in args.workers:
                stack = build_stack(
                    info, redis_url, work / f"data{n_workers}", [HERE / "templates"]
                )
                stack.start_workers(n_workers)
                time.sleep(2)
                t0 = time.monotonic()
                submitted = {stack.submit("overhead", f"tp{n_workers}-{i}"): time.time()
                             for i in range(args.containers)}  # fmt: skip
                latencies = []
                for cid, started in submitted.items():
                    ct = stack.wait(cid, timeout=900)
                    assert ct.lifecycle == Lifecycle.READY, ct.error_message
                    assert ct.finished_at is not None
                    latencies.append(ct.finished_at.timestamp() - started)
                total = time.monotonic() - t0
                results[n_workers] = (total, latencies)
                stack.stop_workers()
                api = token_api(info)
                for ct_info in api.nodes(info["node"]).lxc.get():
                    wait_task(api, info["node"],
                              api.nodes(info["node"]).lxc(ct_info["vmid"]).delete(force=1))  # fmt: skip
        finally:
            stop_simulator(sim_proc)
            redis_proc.terminate()
            redis_proc.wait()
    base = results[args.workers[0]][0]
    print(f"pipeline throughput, {args.containers} containers ('overhead' template, DHCP), "
          f"time scale 0")  # fmt: skip
    for n_workers, (total, latencies) in results.items():
        print(f"  {n_workers} worker(s): all ready in {total:6.1f}s  "
              f"{args.containers / total * 60:5.1f} containers/min  "
              f"submit->ready median {statistics.median(latencies):5.1f}s "
              f"p99 {pct(latencies, 0.99):5.1f}s  speed-up x{base / total:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

"""How fast, and how safely, do concurrent workers allocate vmids?

Runs N allocations (``/cluster/nextid`` + a tiny create, serialised by the
Redis lock of ``PveClient.allocate_vmid``) from P processes at once against a
simulator of its own, and prints collisions (must be 0), retries,
allocations/s and the median and p99 latency per allocation.  Baseline,
measured in the same run: N sequential allocations from one process.  For
contrast it also shows what happens without the lock (bare nextid + create
from N threads at once): the collisions the lock prevents.

    sudo .venv/bin/python bench/vmid_alloc.py [--allocations 50] [--processes 4]

Needs root, the cached template (scripts/setup builds it) and a Redis
(``REDIS_URL``, default redis://127.0.0.1:6379/15; keys get a unique prefix).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from provisioner.errors import PvePermanentError
from provisioner.pve.client import PveClient
from provisioner.redis_url import redis_client
from tests.conftest import start_simulator, stop_simulator
from tests.provisioner.pve.test_client import (
    connection,
    destroy_by_prefix,
    run_concurrent_allocations,
    tiny,
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_all(client: PveClient, upids: list[str]) -> None:
    for upid in upids:
        client.wait_for_task(upid, timeout=300)


def sequential(client: PveClient, r: redis.Redis, prefix: str, key_prefix: str,
               n: int) -> tuple[list[float], float, list[dict[str, Any]]]:  # fmt: skip
    """N allocations one after another from one process."""
    latencies, results = [], []
    t0 = time.monotonic()
    for i in range(n):
        started = time.monotonic()
        hostname = f"{prefix}-{i:02d}"

        def create(vmid: int, hostname: str = hostname) -> str:
            return client.create_container(tiny(vmid, hostname))

        got = client.allocate_vmid(None, create, redis=r, key_prefix=key_prefix)
        latencies.append(time.monotonic() - started)
        results.append({"vmid": got.vmid, "upid": got.result, "attempts": got.attempts,
                        "hostname": hostname})  # fmt: skip
    return latencies, time.monotonic() - t0, results


def lock_overhead(r: redis.Redis, key_prefix: str, n: int) -> list[float]:
    """Acquire + release of the allocation lock alone, uncontended."""
    from redis.lock import Lock

    out = []
    for _ in range(n):
        lock = Lock(r, f"{key_prefix}:overhead", timeout=10, sleep=0.01)
        t0 = time.monotonic()
        lock.acquire()
        lock.release()
        out.append(time.monotonic() - t0)
    return out


def unlocked(info: dict[str, Any], prefix: str, n: int) -> tuple[int, list[str]]:
    """Bare nextid + create from N threads at once: how many creates lose the race."""
    go = threading.Event()
    failures: list[str] = []
    upids: list[str] = []
    clients = [PveClient(connection(info)) for _ in range(n)]
    for c in clients:
        c.version()

    def one(i: int, c: PveClient) -> None:
        go.wait()
        vmid = c.next_vmid()
        try:
            upids.append(c.create_container(tiny(vmid, f"{prefix}-{i:02d}")))
        except PvePermanentError as exc:
            failures.append(str(exc.pve_message))

    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    return len([f for f in failures if "already exists" in f]), upids


def check(client: PveClient, results: list[dict[str, Any]]) -> tuple[int, int]:
    """(collisions, retries): a collision is a vmid two allocations both got,
    or a container that is not the one its allocator created."""
    vmids = [r["vmid"] for r in results]
    owners = {c.vmid: c.name for c in client.containers()}
    collisions = len(vmids) - len(set(vmids))
    collisions += sum(1 for r in results if owners.get(r["vmid"]) != r["hostname"])
    return collisions, sum(r["attempts"] - 1 for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allocations", type=int, default=50)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    n, procs = args.allocations, args.processes
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    r = redis_client(redis_url)
    r.ping()
    key_prefix = f"bench-vmid-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="pvesim-bench-") as tmp:
        proc, info = start_simulator(Path(tmp) / "state")
        client = PveClient(connection(info))
        try:
            # warm-up: page cache, the unpacked base, TLS
            lat, _, res = sequential(client, r, "warm", key_prefix, 2)
            wait_all(client, [x["upid"] for x in res])
            destroy_by_prefix(client, info, "warm")

            base_lat, base_total, base_res = sequential(client, r, "seq", key_prefix, n)
            wait_all(client, [x["upid"] for x in base_res])
            base_coll, base_retries = check(client, base_res)
            destroy_by_prefix(client, info, "seq")

            hostnames = [f"conc-{i:02d}" for i in range(n)]
            conc = run_concurrent_allocations(connection(info), redis_url, key_prefix,
                                              hostnames, procs)  # fmt: skip
            errors = [x for x in conc if "error" in x]
            ok = [x for x in conc if "error" not in x]
            wait_all(client, [x["upid"] for x in ok])
            coll, retries = check(client, ok)
            destroy_by_prefix(client, info, "conc")

            overhead = lock_overhead(r, key_prefix, n)
            lost, upids = unlocked(info, "bare", n)
            wait_all(client, upids)
            destroy_by_prefix(client, info, "bare")
        finally:
            client.close()
            for key in r.scan_iter(f"{key_prefix}:*"):
                r.delete(key)
            stop_simulator(proc)

    med = statistics.median
    lat = [x["latency"] for x in ok]
    wall = max(x["ended"] for x in ok) - min(x["started"] for x in ok)
    waits = [x["lock_wait"] for x in ok]
    print(f"vmid allocation (nextid + tiny create under the Redis lock), pvesim time scale 0, "
          f"{n} allocations")  # fmt: skip
    print(f"  concurrent, {procs} processes : collisions {coll}  errors {len(errors)}  "
          f"retries {retries}")  # fmt: skip
    print(f"    throughput               : {len(ok) / wall:.1f} allocations/s "
          f"({wall:.2f}s wall)")  # fmt: skip
    holds = [x["latency"] - x["lock_wait"] for x in ok]
    print(f"    latency per allocation   : median {med(lat):.3f}s  p99 {pct(lat, 0.99):.3f}s")
    print(f"      waiting for the lock   : median {med(waits):.3f}s  p99 {pct(waits, 0.99):.3f}s")
    print(f"      holding it (nextid+POST): median {med(holds):.3f}s  p99 {pct(holds, 0.99):.3f}s")
    print(f"  baseline, sequential, 1 proc: collisions {base_coll}  retries {base_retries}")
    print(f"    throughput               : {n / base_total:.1f} allocations/s "
          f"({base_total:.2f}s)")  # fmt: skip
    print(f"    latency per allocation   : median {med(base_lat):.3f}s  "
          f"p99 {pct(base_lat, 0.99):.3f}s")  # fmt: skip
    print(f"  the Redis lock alone       : acquire+release median {med(overhead) * 1000:.2f}ms")
    print(f"  ratio concurrent/sequential: throughput {len(ok) / wall / (n / base_total):.2f}x")
    print(
        f"  without the lock ({n} threads, bare nextid + create): {lost} of {n} creates "
        "failed with 'already exists'"
    )
    if errors:
        print("errors:", *[x["error"] for x in errors], sep="\n  ")
    if coll or errors:
        sys.exit(1)


if __name__ == "__main__":
    main()

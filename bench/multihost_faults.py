"""Faults across hosts: two hosts on this machine (tests/multihost/harness.py:
each laid out by scripts/install-systemd, two workers, a web process and
the scheduler), one PostgreSQL, one Redis behind Sentinel (a master, a
replica, three sentinels: tests/redis_sentinel.py), the simulator, haproxy
in front of the web processes.  Prints the fault table: the outcome, the time to
recover, the time to the last run ready, duplicates (PVE containers beyond
one per request, seqs seen twice), contiguous seqs (the database and the
stream equal; for the browser, the page's log too).

Faults: host A lost (kill -9 of its every process while its workers run),
the Redis master lost (kill -9, Sentinel fails over), PostgreSQL restarted
(pg_ctl restart -m fast), the web process serving a browser's event stream
lost (kill -9).  Takes about five minutes.

    sudo .venv/bin/python bench/multihost_faults.py [--only host-lost web-lost ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import start_simulator, stop_simulator
from tests.multihost import faults
from tests.multihost.harness import destroy_all, start_cluster
from tests.postgres import start_postgres
from tests.redis_sentinel import start_sentinel_group

FAULTS = ("web-lost", "host-lost", "redis-master-lost", "postgres-restarted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=FAULTS, help="run only these faults")
    parser.add_argument("--runs", type=int, default=4,
                        help="provisionings in flight when host A dies (default: %(default)s)")  # fmt: skip
    parser.add_argument("--lease", type=float, default=15,
                        help="PROVISIONER_LEASE_DURATION (renewed every fifth of it; "
                        "default: %(default)s, the product's)")  # fmt: skip
    args = parser.parse_args()
    wanted = args.only or list(FAULTS)
    rows: list[faults.FaultRow] = []
    with tempfile.TemporaryDirectory(prefix="bench-multihost-") as tmp:
        work = Path(tmp)
        group = start_sentinel_group(work / "sentinel")
        sim_proc, info = start_simulator(work / "sim")
        postgres = start_postgres(work / "pg")
        try:
            with start_cluster(work, info, group.url, postgres, sentinel=group,
                               lease=(args.lease, args.lease / 5)) as cluster:  # fmt: skip
                try:
                    if "web-lost" in wanted:
                        from playwright.sync_api import sync_playwright

                        with sync_playwright() as pw:
                            browser = pw.chromium.launch(executable_path=CHROMIUM,
                                                         args=CHROMIUM_ARGS)  # fmt: skip
                            rows.append(faults.web_lost(cluster, browser))
                            browser.close()
                        print(rows[-1], file=sys.stderr)
                    if "host-lost" in wanted:
                        rows.append(faults.host_lost(cluster, "a", runs=args.runs))
                        print(rows[-1], file=sys.stderr)
                        cluster.hosts["a"].start()  # the host comes back
                        cluster.wait_web()
                    if "redis-master-lost" in wanted:
                        rows.append(faults.redis_master_lost(cluster, runs=2))
                        print(rows[-1], file=sys.stderr)
                    if "postgres-restarted" in wanted:
                        rows.append(faults.postgres_restarted(cluster, runs=2))
                        print(rows[-1], file=sys.stderr)
                finally:
                    for host in cluster.hosts.values():
                        host.stop()
                    destroy_all(cluster)
        finally:
            postgres.stop()
            stop_simulator(sim_proc)
            group.stop()
    print(f"\ntwo hosts x 2 workers, lease {args.lease:g} s, runs of 'lines' "
          f"{faults.SLOW} (the browser's: {faults.WATCHED})\n")  # fmt: skip
    print(faults.HEADER)
    for r in rows:
        print(r.line())


if __name__ == "__main__":
    main()

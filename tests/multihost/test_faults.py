"""Two hosts on one machine (tests/multihost/harness.py), for real: each laid
out by scripts/install-systemd with two workers, a web process and the
scheduler, sharing a PostgreSQL of the module's own, the test Redis and the
simulator, haproxy in front of the web processes.  The faults across hosts
(tests/multihost/faults.py) must end with every run ready, one PVE
container each, seqs contiguous and the stream equal to the database.

The hosts' Redis is a Sentinel group of the module's own (a master, a
replica, three sentinels), so that its master can be lost too;
bench/multihost_faults.py runs the same faults with the product's lease
and prints the fault table."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.multihost import faults
from tests.multihost.harness import Cluster, destroy_all, start_cluster
from tests.postgres import start_postgres
from tests.redis_sentinel import start_sentinel_group

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def cluster(sim: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the hosts' PostgreSQL runs as postgres: needs root (run scripts/test)")
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is missing (scripts/setup installs it)")
    work = tmp_path_factory.mktemp("multihost")
    group = start_sentinel_group(work / "sentinel")
    postgres = None
    try:
        postgres = start_postgres(work / "pg")
        with start_cluster(work, sim, group.url, postgres, sentinel=group) as running:
            try:
                yield running
            finally:
                for host in running.hosts.values():
                    host.stop()
                destroy_all(running)
    finally:
        if postgres is not None:
            postgres.stop()
        group.stop()


@pytest.fixture(scope="module")
def browser(cluster: Cluster) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/setup installs Debian's chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def assert_row(row: faults.FaultRow, runs: int) -> None:
    print(f"\n{faults.HEADER}\n{row.line()}")
    assert row.outcome == f"{runs}/{runs} ready", row
    assert row.duplicates == 0, row
    assert row.contiguous, row


def test_a_browser_follows_a_run_through_the_other_host_when_its_web_process_dies(
        cluster: Cluster, browser: Any) -> None:  # fmt: skip
    assert_row(faults.web_lost(cluster, browser), 1)


def test_host_b_takes_over_the_runs_of_host_a_killed_whole(cluster: Cluster) -> None:
    row = faults.host_lost(cluster, "a", runs=4)
    assert_row(row, 4)
    # host A comes back (systemd starts its units at boot): both serve again
    cluster.hosts["a"].start()
    cluster.wait_web()


def test_runs_go_on_across_a_postgresql_restart(cluster: Cluster) -> None:
    assert_row(faults.postgres_restarted(cluster, runs=2), 2)


def test_runs_go_on_when_the_redis_master_dies_and_sentinel_fails_over(cluster: Cluster) -> None:
    assert_row(faults.redis_master_lost(cluster, runs=2), 2)

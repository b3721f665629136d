"""A dead worker is visible at once and its run goes on, through real
workers, Redis and the simulator.

- A work horse killed with -9: its worker hands the run on within a second
  or two (a ``recovering`` event saying so), not after the lease; on
  SQLite and on PostgreSQL.
- A whole worker killed with -9: noticed by its lease's expiry, with the
  default lease settings within 20 s.
- A loaded machine (CPU hogs, slow PVE tasks, several runs at once) never
  takes a live run away from its worker.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from provisioner.events import Event, EventReader
from provisioner.models import Lifecycle
from tests.conftest import ROOT
from tests.databases import BOTH
from tests.pipeline.conftest import Stack
from tests.pipeline.test_resilience import (
    assert_database_is_the_stream,
    assert_event_stream,
    children,
    kill_worker_and_horse,
    pve_containers,
)
from tests.pvesim.helpers import admin

pytestmark = [pytest.mark.integration]

# printed lines of the "lines" template's 10-print.sh, paused every 100: the
# scripts phase lasts a few seconds
SLOW_SCRIPT = {"count": 3000, "pause_ms": 100}
RECOVERING = re.compile(r"(?P<what>.+) at \d\d:\d\d:\d\d UTC; (?P<how>.+) \(attempt 2\)")


def events_of(stack: Stack, cid: str) -> list[Event]:
    return list(EventReader(stack.redis, stack.factory, cid).events(0, follow=False))


def wait_for(stack: Stack, cid: str, predicate: Callable[[list[Event]], bool],
             timeout: float = 90) -> list[Event]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = events_of(stack, cid)
        if predicate(events):
            return events
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {[e.message for e in events_of(stack, cid)][-5:]}"
                         f"\n{stack.worker_logs()[-3000:]}")  # fmt: skip


def printing(events: list[Event]) -> bool:
    return sum(e.script == "10-print.sh" for e in events) >= 300


def horse_of(stack: Stack, index: int = 0, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        horses = children(stack.workers[index].pid)
        if horses:
            return horses[0]
        time.sleep(0.02)
    raise AssertionError("the worker runs no work horse")


@pytest.fixture()
def workers(stack: Stack) -> Iterator[Stack]:
    """The stack, its workers stopped after the test (and the env put back)."""
    env = dict(stack.env)
    yield stack
    stack.stop_workers()
    stack.env = env


@BOTH
@pytest.mark.timeout(240)
def test_a_killed_work_horse_is_handed_on_at_once(workers: Stack,
                                                  cleanup: Callable[[str], str]) -> None:  # fmt: skip
    stack = workers
    stack.start_workers(1)
    hostname = f"horse-{uuid.uuid4().hex[:4]}"
    cid = cleanup(stack.submit("lines", hostname, variables=SLOW_SCRIPT))
    wait_for(stack, cid, printing)
    horse = horse_of(stack)
    os.kill(horse, signal.SIGKILL)
    killed = time.monotonic()
    events = wait_for(stack, cid, lambda ev: any(e.type == "recovering" for e in ev), timeout=20)
    noticed = time.monotonic() - killed
    note = next(e for e in events if e.type == "recovering")
    match = RECOVERING.fullmatch(note.message)
    assert match, note.message
    assert match["what"] == f"the worker process running this (pid {horse}) was killed (signal 9)"
    assert match["how"] == "resuming it" and note.phase == "scripts"
    assert noticed < 3, f"the dead work horse was noticed after {noticed:.1f} s"
    ct = stack.wait(cid, timeout=120)
    assert ct.lifecycle == Lifecycle.READY, ct.error_message
    assert ct.attempts == 2
    assert_event_stream(stack, cid, events_of(stack, cid))
    assert_database_is_the_stream(stack, cid)
    assert [c["vmid"] for c in pve_containers(stack) if c.get("name") == hostname] == [ct.vmid]
    print(
        f"\nwork horse killed: noticed in {noticed:.2f} s, ready "
        f"{time.monotonic() - killed:.1f} s after the kill"
    )


@pytest.mark.long
@pytest.mark.timeout(240)
def test_a_killed_worker_is_noticed_within_20_s_by_default(
        workers: Stack, cleanup: Callable[[str], str]) -> None:  # fmt: skip
    """The default lease (15 s, renewed every 3 s): the second worker hands
    the run on within 20 s of the first one's death; ``--follow`` says so."""
    stack = workers
    for name in ("PROVISIONER_LEASE_DURATION", "PROVISIONER_LEASE_RENEW_INTERVAL"):
        stack.env.pop(name)
    stack.start_workers(1)
    cid = cleanup(stack.submit("lines", f"worker-{uuid.uuid4().hex[:4]}",
                               variables={**SLOW_SCRIPT, "count": 6000}))  # fmt: skip
    follow = subprocess.Popen([str(ROOT / ".venv/bin/provisioner"), "logs", cid, "--follow"],
                              env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)  # fmt: skip
    try:
        wait_for(stack, cid, printing)
        kill_worker_and_horse(stack, 0)
        killed = time.monotonic()
        stack.start_workers(1)  # another worker, which has to notice
        events = wait_for(stack, cid, lambda ev: any(e.type == "recovering" for e in ev),
                          timeout=30)  # fmt: skip
        noticed = time.monotonic() - killed
        note = next(e for e in events if e.type == "recovering")
        match = RECOVERING.fullmatch(note.message)
        assert match and match["what"] == "the worker running this stopped responding", note.message
        assert match["how"] == "resuming on another worker"
        assert noticed < 20, f"the dead worker was noticed after {noticed:.1f} s"
        ct = stack.wait(cid, timeout=120)
        assert ct.lifecycle == Lifecycle.READY and ct.attempts == 2, ct.error_message
        out, _ = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert f"[recovering] scripts: {note.message}" in out, out[-2000:]
    assert_event_stream(stack, cid, events_of(stack, cid))
    print(f"\nworker killed: noticed in {noticed:.1f} s")


@pytest.mark.long
@pytest.mark.timeout(300)
def test_no_takeover_of_live_runs_on_a_loaded_machine(
        workers: Stack, cleanup: Callable[[str], str]) -> None:  # fmt: skip
    """Default lease settings; three workers run six provisionings while two
    processes keep both cores busy and every PVE start task takes 3 s more:
    no run is taken from its worker (one attempt each, no ``recovering``)."""
    stack = workers
    for name in ("PROVISIONER_LEASE_DURATION", "PROVISIONER_LEASE_RENEW_INTERVAL"):
        stack.env.pop(name)
    assert stack.log_dir is not None
    logged = {p: p.stat().st_size for p in stack.log_dir.glob("*.log")}
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        admin(stack.sim, "task", {"type": "vzstart", "delay": 3.0, "count": 6})
        stack.start_workers(3)
        cids = [cleanup(stack.submit("lines", f"load-{i}-{uuid.uuid4().hex[:4]}",
                                     variables={"count": 2000, "pause_ms": 50}))
                for i in range(6)]  # fmt: skip
        done = [stack.wait(cid, timeout=240) for cid in cids]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        admin(stack.sim, "faults", method="DELETE")
    assert [ct.lifecycle for ct in done] == [Lifecycle.READY] * 6, [ct.error_message for ct in done]
    assert [ct.attempts for ct in done] == [1] * 6
    for cid in cids:
        assert not [e for e in events_of(stack, cid) if e.type == "recovering"]
    for path in stack.log_dir.glob("*.log"):  # what this test's workers logged
        with path.open(errors="replace") as f:
            f.seek(logged.get(path, 0))
            logs = f.read()
        assert "taken over" not in logs and "lost the lease" not in logs, logs[-3000:]

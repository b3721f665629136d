"""Resilience, end to end: workers killed with -9 in every phase, many
requests at once, readers that keep disconnecting.

Real `provisioner worker` processes, Redis and the simulator's containers
(see conftest.py: the lease lasts 6 s, so a dead worker's run is recovered
within seconds).  The test-only template ``phases`` can make each phase last
a while: ``deploy_mb`` (size of the rendered file), ``count`` (lines printed
by a script) and ``late_seconds`` (the health-checked port opens late, so
finalize waits).

``stack.kill_worker`` alone does not stop a running job (RQ's work horse has
its own process group), so the kills here go through
:func:`kill_worker_and_horse`.  Twenty containers at once need more inotify
instances than the kernel's default allows; see :func:`inotify_room`."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from provisioner.db import session_scope
from provisioner.events import Event, EventReader, Raw, stored_events, stream_key
from provisioner.models import Container, ContainerEvent, Lifecycle
from provisioner.queue import provisioning_queue
from provisioner.templates.params import parse_marker
from tests.pipeline.conftest import Stack
from tests.pvesim.helpers import admin, token_api

pytestmark = pytest.mark.integration

PHASES = ["create", "start", "deploy", "scripts", "finalize"]


@pytest.fixture(autouse=True)
def _stop_workers(stack: Stack, cleanup: Callable[[str], str]) -> Iterator[None]:
    """Workers stop at the end of every test, before `cleanup` destroys the
    containers (fixtures tear down in reverse order)."""
    yield
    stack.stop_workers()


def proc_stat(pid: int | str) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def children(pid: int) -> list[int]:
    """Pids of the live child processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        stat = proc_stat(entry) if entry.isdigit() else None
        if stat is not None and stat[1] == pid and stat[0] != "Z":
            found.append(int(entry))
    return found


def kill_worker_and_horse(stack: Stack, index: int = 0) -> list[int]:
    """kill -9 a worker *and* its work horse, as when the machine dies.

    ``stack.kill_worker`` kills the worker's process group, but RQ 3's work
    horse calls ``os.setpgrp()`` after the fork and lives in a group of its
    own: it would survive, finish the run and prove nothing.  Returns the
    killed horses' pids."""
    horses = children(stack.workers[index].pid)
    for pid in horses:
        os.killpg(pid, signal.SIGKILL)
    stack.kill_worker(index)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = [proc_stat(p) for p in horses]
        if all(st is None or st[0] == "Z" for st in states):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"work horses {horses} survived kill -9")
    return horses


# -- the simulator's view ---------------------------------------------------


def pve_containers(stack: Stack) -> list[dict[str, Any]]:
    return list(token_api(stack.sim).nodes(stack.sim["node"]).lxc.get())


def vzcreate_tasks(stack: Stack) -> set[str]:
    tasks = token_api(stack.sim).nodes(stack.sim["node"]).tasks.get(
        typefilter="vzcreate", source="all", limit=100000)  # fmt: skip
    return {t["upid"] for t in tasks}


def marker_of(stack: Stack, vmid: int) -> str | None:
    config = token_api(stack.sim).nodes(stack.sim["node"]).lxc(vmid).config.get()
    return parse_marker(config.get("description"))


def destroy_new(stack: Stack, before: set[int], keep: Collection[int] = ()) -> list[int]:
    """Destroy the containers made since ``before`` except ``keep``; their vmids."""
    api = token_api(stack.sim)
    node = stack.sim["node"]
    made = sorted({int(c["vmid"]) for c in pve_containers(stack)} - before - set(keep))
    for vmid in made:
        upid = api.nodes(node).lxc(vmid).delete(force=1, purge=1)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if api.nodes(node).tasks(upid).status.get()["status"] == "stopped":
                break
            time.sleep(0.2)
    return made


# -- events -----------------------------------------------------------------


def all_events(stack: Stack, cid: str) -> list[Event]:
    return list(EventReader(stack.redis, stack.factory, cid).events(0, follow=False))


def assert_event_stream(stack: Stack, cid: str, events: list[Event]) -> None:
    """seq 1..n without gap or duplicate, one terminal event, `complete`, last."""
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(events) + 1)), (
        f"{cid}: seq not contiguous from 1: first gaps/dups at "
        f"{[(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1][:5]}")  # fmt: skip
    terminal = [e for e in events if e.terminal]
    assert [e.type for e in terminal] == ["complete"], [
        (e.seq, e.type, e.message) for e in terminal
    ]
    assert events[-1].type == "complete"
    assert all(e.container == cid for e in events)
    assert stack.container(cid).next_seq == len(events) + 1


def assert_database_is_the_stream(stack: Stack, cid: str) -> None:
    """The stored events and those of the Redis stream are the same, seq for
    seq and field for field (the stream holds every event of a run this size)."""
    streamed = [Raw.from_entry(i, f).decode() for i, f in stack.redis.xrange(stream_key(cid))]
    stored = stored_events(stack.factory, cid, 0)
    assert [e.seq for e in stored] == [e.seq for e in streamed], "stored and streamed seqs differ"
    assert stored == streamed, next((a, b) for a, b in zip(stored, streamed, strict=True)
                                    if a != b)  # fmt: skip


# -- 1. kill -9 in every phase --------------------------------------------

# per phase: the template variables that make that phase last a few seconds,
# and when (container row, events so far) the worker is killed
KILL_PLANS: dict[str, tuple[dict[str, int], Callable[[Container, list[Event]], bool]]] = {
    # the create task runs (the vmid is recorded right after the POST)
    "create": ({}, lambda ct, ev: ct.current_phase == "create" and ct.vmid is not None),
    "start": ({}, lambda ct, ev: ct.current_phase == "start"),
    # rendering and uploading a 40 MiB file takes a few seconds
    "deploy": ({"deploy_mb": 40}, lambda ct, ev: ct.current_phase == "deploy"),
    # in the middle of 10-print.sh's output
    "scripts": (
        {"count": 12000},
        lambda ct, ev: (
            ct.current_phase == "scripts" and sum(e.script == "10-print.sh" for e in ev) >= 200
        ),
    ),
    # the health check waits for port 8080
    "finalize": ({"late_seconds": 6}, lambda ct, ev: ct.current_phase == "finalize"),
}


def wait_until(stack: Stack, cid: str, predicate: Callable[[Container, list[Event]], bool],
               timeout: float = 120) -> tuple[Container, list[Event]]:  # fmt: skip
    reader = EventReader(stack.redis, stack.factory, cid)
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events.extend(reader.events(events[-1].seq if events else 0, follow=False))
        ct = stack.container(cid)
        if predicate(ct, events):
            return ct, events
        if ct.lifecycle in (Lifecycle.READY, Lifecycle.ERROR):
            break
        time.sleep(0.02)
    raise AssertionError(f"the kill point never came: {stack.container(cid).lifecycle} "
                         f"{stack.container(cid).current_phase}; {stack.worker_logs()[-3000:]}")  # fmt: skip


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("case", "db_backend"),
    [  # the slowest kill points run with scripts/test-long
        *[pytest.param(c, "sqlite", marks=pytest.mark.long) if c in ("start", "finalize")
          else (c, "sqlite") for c in (*PHASES, "create-unrecorded")],
        # on PostgreSQL: mid-script, where the most events are written
        ("scripts", "postgresql"),
    ],
    indirect=["db_backend"],
)  # fmt: skip
def test_kill_worker_in_phase_recovers(stack: Stack, cleanup: Callable[[str], str],
                                       case: str) -> None:  # fmt: skip
    """``create-unrecorded``: killed during the create task, and the vmid is
    then erased from the row, as if the worker had died between the POST and
    recording the vmid: the next run must find its container by the marker.
    The ``scripts`` case runs on PostgreSQL too (the lease row locked
    ``FOR UPDATE``, the recovering worker's take-over, the event seqs)."""
    phase = case.split("-")[0]
    variables, kill_when = KILL_PLANS[phase]
    hostname = f"kill-{case}-{uuid.uuid4().hex[:4]}"
    before = {int(c["vmid"]) for c in pve_containers(stack)}
    tasks_before = vzcreate_tasks(stack)
    if phase == "create":  # at time scale 0 the task is over in milliseconds: widen the window
        admin(stack.sim, "task", {"type": "vzcreate", "vmid": None, "error": None, "delay": 4.0,
                                  "warnings": 0, "count": 1})  # fmt: skip
    stack.start_workers(1)
    cid = cleanup(stack.submit("phases", hostname, variables=variables))
    kept: set[int] = set()
    try:
        wait_until(stack, cid, kill_when)
        horses = kill_worker_and_horse(stack, 0)
        assert horses, "the worker had no work horse running the job"
        killed_at = time.monotonic()
        ct = stack.container(cid)
        # the kill really interrupted the phase
        assert ct.lifecycle == Lifecycle.CREATING, ct.lifecycle
        assert ct.current_phase == phase and phase not in ct.finished_phases, (
            ct.current_phase, ct.finished_phases)  # fmt: skip
        assert ct.finished_phases == PHASES[: PHASES.index(phase)]
        created = ct.vmid
        if case == "create-unrecorded":
            with session_scope(stack.factory) as session:
                row = session.get(Container, cid)
                assert row is not None
                row.vmid = None

        stack.start_workers(1)
        ct = stack.wait(cid, timeout=180)
        recovered_in = time.monotonic() - killed_at
        assert ct.lifecycle == Lifecycle.READY, (ct.error_message, stack.worker_logs()[-4000:])
        assert ct.finished_phases == PHASES
        assert ct.attempts == 2, ct.attempts  # the killed run and one recovered run
        assert ct.vmid is not None
        kept.add(ct.vmid)

        # exactly one PVE container for this request, and nothing else left behind
        after = pve_containers(stack)
        mine = [c for c in after if c.get("name") == hostname]
        assert [int(c["vmid"]) for c in mine] == [ct.vmid], mine
        assert {int(c["vmid"]) for c in after} - before == {ct.vmid}
        assert marker_of(stack, ct.vmid) == cid
        assert len(vzcreate_tasks(stack) - tasks_before) == 1, "more than one create task"
        assert mine[0]["status"] == "running"

        events = all_events(stack, cid)
        assert_event_stream(stack, cid, events)
        assert_database_is_the_stream(stack, cid)
        assert not [e for e in events if e.type == "error"]
        if case == "create-unrecorded":
            assert ct.vmid == created
            assert f"found CT {created}, created by an earlier attempt" in [
                e.message for e in events if e.type == "step"]  # fmt: skip
        if phase == "scripts":
            # the interrupted script ran again from its start, completely
            reruns = [i for i, e in enumerate(events)
                      if e.type == "step" and e.message == "running 10-print.sh"]  # fmt: skip
            assert len(reruns) == 2, [events[i].message for i in reruns]
            lines = [e.message for e in events[reruns[-1]:]
                     if e.type == "log" and e.script == "10-print.sh" and e.stream == "stdout"]  # fmt: skip
            assert lines == [f"line {i}" for i in range(1, variables["count"] + 1)]
        print(f"\n{case}: killed, ready {recovered_in:.1f}s later; {len(events)} events")
    finally:
        stray = destroy_new(stack, before, kept)
    assert not stray, f"PVE containers left behind by the pipeline: {stray}"


# -- 2. many requests at once ---------------------------------------------

INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_PER_CONTAINER = 10  # systemd as PID 1 and its services take about 8


def inotify_instances() -> int:
    """inotify instances open on the host (an overestimate: shared ones count twice)."""
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify"
            except OSError:
                continue
    return count


@contextlib.contextmanager
def inotify_room(containers: int) -> Iterator[None]:
    """Make sure the host lets ``containers`` more containers boot.

    Every container's systemd takes inotify instances, all counted against
    root's fs.inotify.max_user_instances (the kernel's default: 128, shared
    with every other simulator on the machine).  Past it, systemd in a new
    container dies with "Failed to allocate manager object: Too many open
    files" and PVE answers "CT not running".  ``pvesim serve`` raises the
    limit when it starts; should it still be too low (an older simulator),
    it is raised for this test and put back afterwards."""
    limit = int(INOTIFY_LIMIT.read_text())
    wanted = inotify_instances() + containers * INOTIFY_PER_CONTAINER
    if wanted <= limit:
        yield
        return
    try:
        INOTIFY_LIMIT.write_text(f"{wanted}\n")
    except OSError as exc:
        pytest.skip(f"{containers} containers need fs.inotify.max_user_instances >= {wanted} "
                    f"(it is {limit}) and it cannot be raised: {exc}")  # fmt: skip
    print(f"\nraised fs.inotify.max_user_instances from {limit} to {wanted} for this test")
    try:
        yield
    finally:
        if int(INOTIFY_LIMIT.read_text()) == wanted:
            INOTIFY_LIMIT.write_text(f"{limit}\n")


@pytest.mark.long
@pytest.mark.timeout(900)
def test_twenty_at_once_four_workers(stack: Stack, cleanup: Callable[[str], str]) -> None:
    n = 20
    before = {int(c["vmid"]) for c in pve_containers(stack)}
    tasks_before = vzcreate_tasks(stack)
    tag = uuid.uuid4().hex[:4]
    hostnames = [f"many-{tag}-{i:02d}" for i in range(n)]
    kept: set[int] = set()
    with inotify_room(n):
        try:
            stack.start_workers(4)
            started = time.monotonic()
            cids = [cleanup(stack.submit("lines", h, variables={"count": 10})) for h in hostnames]
            cts = [stack.wait(cid, timeout=600) for cid in cids]
            took = time.monotonic() - started
            kept = {ct.vmid for ct in cts if ct.vmid is not None}
            check_twenty(stack, cts, before, tasks_before)
            print(f"\n{n} containers ready with 4 workers in {took:.1f}s")
        finally:
            stack.stop_workers()
            # destroyed here, while the raised inotify limit still holds
            stray = sorted({int(c["vmid"]) for c in pve_containers(stack)} - before - kept)
            destroy_new(stack, before)
    assert not stray, f"PVE containers left behind by the pipeline: {stray}"


def check_twenty(stack: Stack, cts: list[Container], before: set[int],
                 tasks_before: set[str]) -> None:  # fmt: skip
    n = len(cts)
    bad = [(ct.hostname, ct.lifecycle, ct.error_message) for ct in cts
           if ct.lifecycle != Lifecycle.READY]  # fmt: skip
    assert not bad, (bad, stack.worker_logs()[-4000:])
    vmids = [ct.vmid for ct in cts]
    assert None not in vmids and len(set(vmids)) == n, vmids
    ips = [ct.ip for ct in cts]
    assert None not in ips and len(set(ips)) == n, ips

    after = pve_containers(stack)
    assert {int(c["vmid"]) for c in after} - before == set(vmids)
    assert len(vzcreate_tasks(stack) - tasks_before) == n, "create tasks != containers"
    by_name: dict[str, list[int]] = {}
    for c in after:
        by_name.setdefault(str(c.get("name")), []).append(int(c["vmid"]))
    api = token_api(stack.sim).nodes(stack.sim["node"])
    for ct in cts:
        assert ct.vmid is not None
        assert by_name.get(ct.hostname) == [ct.vmid], (ct.hostname, by_name.get(ct.hostname))
        assert marker_of(stack, ct.vmid) == ct.id
        # the address the pipeline recorded is the one this container got
        inet = [i.get("inet", "") for i in api.lxc(ct.vmid).interfaces.get()
                if i.get("name") == "eth0"]  # fmt: skip
        assert [a.split("/")[0] for a in inet] == [ct.ip], (ct.vmid, inet, ct.ip)
        assert ct.attempts == 1, (ct.hostname, ct.attempts)
        assert_event_stream(stack, ct.id, all_events(stack, ct.id))


# -- 3. a reader that keeps disconnecting ---------------------------------


@pytest.mark.timeout(300)
def test_reader_resumes_twenty_times_without_loss(stack: Stack,
                                                   cleanup: Callable[[str], str]) -> None:  # fmt: skip
    count, chunk = 5000, 225
    cid = cleanup(stack.submit("lines", f"reader-{uuid.uuid4().hex[:4]}",
                               variables={"count": count}))  # fmt: skip
    stop = threading.Event()
    timer = threading.Timer(240, stop.set)  # never hang: give up after 4 minutes
    timer.start()
    rng = random.Random(7)
    seen: list[Event] = []
    resumes = live_resumes = 0
    try:
        stack.start_workers(1)
        started = time.monotonic()
        while not (seen and seen[-1].terminal) and not stop.is_set():
            after = seen[-1].seq if seen else 0
            if after:
                resumes += 1
                if stack.container(cid).lifecycle == Lifecycle.CREATING:
                    live_resumes += 1
            # a fresh reader each time, as a reconnecting client makes one
            reader = EventReader(stack.redis, stack.factory, cid)
            for got, event in enumerate(reader.events(after, block_ms=200, stop=stop), 1):
                seen.append(event)
                if got >= chunk and not event.terminal:
                    break  # disconnect in the middle of the stream
            time.sleep(rng.uniform(0, 0.1))  # offline for a moment
        took = time.monotonic() - started
    finally:
        timer.cancel()
    assert seen and seen[-1].terminal, f"no terminal event after {len(seen)} events"
    ct = stack.container(cid)
    assert ct.lifecycle == Lifecycle.READY, (ct.error_message, stack.worker_logs()[-3000:])
    assert seen[-1].type == "complete"
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert resumes >= 20, resumes
    assert live_resumes >= 5, f"only {live_resumes} of {resumes} resumes while the run went"
    lines = [e.message for e in seen
             if e.type == "log" and e.stream == "stdout" and e.script == "10-print.sh"]  # fmt: skip
    assert lines == [f"line {i}" for i in range(1, count + 1)]
    # what the reader pieced together is exactly the stored history
    assert [e.as_dict() for e in seen] == [e.as_dict() for e in all_events(stack, cid)]
    print(f"\n{len(seen)} events, {resumes} resumes ({live_resumes} live) in {took:.1f}s")


# -- 4. a request waiting in the queue is run once --------------------------


def terminal_events(stack: Stack, cid: str) -> list[tuple[int, str]]:
    """Every stored terminal event (EventReader stops at the first one)."""
    with stack.factory() as session:
        rows = session.scalars(
            select(ContainerEvent)
            .where(ContainerEvent.container_id == cid,
                   ContainerEvent.type.in_(["complete", "error"]))
            .order_by(ContainerEvent.seq))  # fmt: skip
        return [(r.seq, r.type) for r in rows]


def wait_jobs_done(stack: Stack, cids: list[str], timeout: float = 120) -> None:
    """Wait until no job of these containers is queued or running (job ids
    carry the container id)."""
    queue = provisioning_queue(stack.redis, stack.settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = [*queue.get_job_ids(), *queue.started_job_registry.get_job_ids()]
        if not [j for j in ids if any(cid in j for cid in cids)]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"jobs still queued or running after {timeout}s")


@pytest.mark.timeout(300)
def test_a_queued_request_runs_once(stack: Stack, cleanup: Callable[[str], str]) -> None:
    tag = uuid.uuid4().hex[:4]
    stack.start_workers(1)
    # one worker, busy for more than twice the lease duration with the request
    # ahead (its health check waits for a port that opens after 15 s)
    ahead = [cleanup(stack.submit("phases", f"queued-{tag}-busy", variables={"late_seconds": 15}))]
    # 20-check.sh fails when the marker file exists: /etc/hostname always does
    failing = cleanup(stack.submit("lines", f"queued-{tag}-fail",
                                   variables={"count": 10, "fail_marker": "/etc/hostname"}))  # fmt: skip
    for cid in ahead:
        assert stack.wait(cid).lifecycle == Lifecycle.READY, stack.container(cid).error_message
    assert stack.wait(failing).lifecycle == Lifecycle.ERROR
    wait_jobs_done(stack, [*ahead, failing])
    ct = stack.container(failing)
    # what happened to the failed request after it failed: nothing
    assert (ct.lifecycle, ct.attempts) == (Lifecycle.ERROR, 1), (ct.lifecycle, ct.attempts)
    assert [t for _, t in terminal_events(stack, failing)] == ["error"]
    # no worker died, so nothing was "recovered"
    ids = [*ahead, failing]
    recovered = [line for line in stack.worker_logs().splitlines()
                 if "had no live worker" in line and any(cid in line for cid in ids)]  # fmt: skip
    assert not recovered, recovered

"""Faults across hosts, each a function that returns its row of the fault
table: the outcome, the time to recover, duplicates, contiguous seqs.

- :func:`host_lost`: kill -9 every process of host A (workers, their work
  horses, the web process, the scheduler) while its workers run
  provisionings: host B's workers take them over once their leases expire.
- :func:`postgres_restarted`: ``pg_ctl restart -m fast`` mid-run.
- :func:`redis_master_lost`: kill -9 the Redis master behind Sentinel mid-run.
- :func:`web_lost`: a real browser follows a run's progress page through
  haproxy; the web process serving its stream is killed (kill -9); the
  page's log must end complete, reconnected through the other host.

Every run is checked the same way (:func:`check_runs`): ready, one PVE
container per request, its events' seqs 1..n once each with the terminal
event last, and the Redis stream equal to the database.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from provisioner import users
from provisioner.db import session_scope
from provisioner.events import Event, stored_events, stream_key, stream_seq
from provisioner.models import ContainerEvent, Lease, Lifecycle
from tests.multihost.harness import WEB_UNIT, Cluster, Host
from tests.pvesim.helpers import token_api

# a run of the "lines" template printing COUNT lines, pausing after every
# hundred: mostly idle (the machine has two cores for two hosts), long
# enough to be caught mid-run
SLOW = {"count": 1500, "pause_ms": 400}


@dataclass
class FaultRow:
    fault: str
    outcome: str  # e.g. "4/4 ready"
    recover_s: float  # the fault -> every affected run going on again (see each fault)
    ready_s: float  # the fault -> the last run ready
    duplicates: int  # PVE containers beyond one per request + seqs seen twice
    contiguous: bool  # seqs 1..n with the terminal event last, and the stream == the database
    detail: str = ""

    def line(self) -> str:
        return (f"{self.fault:<22} {self.outcome:<12} {self.recover_s:>8.1f} s "
                f"{self.ready_s:>8.1f} s {self.duplicates:>10} {self.contiguous!s:>10}  "
                f"{self.detail}")  # fmt: skip


HEADER = (f"{'fault':<22} {'outcome':<12} {'recovered':>10} {'ready':>10} "
          f"{'duplicates':>10} {'seqs ok':>10}  detail")  # fmt: skip


@dataclass
class RunCheck:
    cid: str
    lifecycle: Lifecycle
    in_pve: int
    seqs: list[int]
    contiguous: bool
    converged: bool  # the Redis stream holds exactly the stored events
    stream_duplicates: int
    finished: float | None  # epoch seconds


def submit_runs(cluster: Cluster, n: int, prefix: str,
                variables: dict[str, Any] | None = None) -> dict[str, str]:  # fmt: skip
    """``n`` provisionings of ``lines``: container id -> hostname."""
    runs = {}
    for i in range(n):
        hostname = f"{prefix}-{uuid.uuid4().hex[:5]}-{i}"
        runs[cluster.client.submit("lines", hostname, variables=variables or SLOW)] = hostname
    return runs


def last_seqs(cluster: Cluster, cids: list[str]) -> dict[str, int]:
    """The highest stored seq of each run (0: none yet)."""
    with cluster.client.factory() as session:
        rows = session.execute(select(ContainerEvent.container_id, func.max(ContainerEvent.seq))
                               .where(ContainerEvent.container_id.in_(cids))
                               .group_by(ContainerEvent.container_id)).all()  # fmt: skip
    found = {cid: int(seq) for cid, seq in rows}
    return {cid: found.get(cid, 0) for cid in cids}


def wait_going_on(cluster: Cluster, before: dict[str, int], t0: float,
                  timeout: float = 180) -> float:  # fmt: skip
    """Until every run has stored an event after ``before`` (its seq then) or
    ended; seconds since ``t0``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            now = last_seqs(cluster, list(before))
            ended = {cid for cid in before if cluster.client.container(cid).lifecycle
                     in (Lifecycle.READY, Lifecycle.ERROR)}  # fmt: skip
        except DBAPIError:  # the database itself may be the fault
            time.sleep(0.1)
            continue
        if all(now[c] > before[c] or c in ended for c in before):
            return time.time() - t0
        time.sleep(0.1)
    raise TimeoutError(f"runs did not go on within {timeout}s: {before}")


def wait_ready(cluster: Cluster, cids: list[str], timeout: float = 300) -> None:
    for cid in cids:
        try:
            cluster.client.wait(cid, timeout=timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{cluster.logs()}") from None


def check_runs(cluster: Cluster, runs: dict[str, str]) -> list[RunCheck]:
    """Every run's end state, PVE containers, seqs and stream (the stream is
    given up to a minute to catch up with the database)."""
    redis = cluster.client.redis
    cts = token_api(cluster.sim).nodes(cluster.sim["node"]).lxc.get()
    checks = []
    for cid, hostname in runs.items():
        ct = cluster.client.container(cid)
        events = stored_events(cluster.client.factory, cid, 0)
        seqs = [e.seq for e in events]
        contiguous = (seqs == list(range(1, len(seqs) + 1)) and bool(events)
                      and events[-1].terminal and sum(e.terminal for e in events) == 1)  # fmt: skip
        stored = [e.as_dict() for e in events]
        streamed: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            streamed = [json.loads(f[b"e"]) for _, f in redis.xrange(stream_key(cid))]
            if streamed == stored:
                break
            time.sleep(0.5)
        stream_seqs = [Event.from_dict(e).seq for e in streamed]
        finished = ct.finished_at.timestamp() if ct.finished_at else None
        checks.append(RunCheck(cid, ct.lifecycle, sum(1 for c in cts if c.get("name") == hostname),
                               seqs, contiguous, streamed == stored,
                               len(stream_seqs) - len(set(stream_seqs)), finished))  # fmt: skip
    return checks


def row(fault: str, checks: list[RunCheck], recover_s: float, t0: float,
        detail: str = "", extra_duplicates: int = 0) -> FaultRow:  # fmt: skip
    ready = sum(c.lifecycle == Lifecycle.READY for c in checks)
    duplicates = extra_duplicates + sum(max(0, c.in_pve - 1) + c.stream_duplicates
                                        for c in checks)  # fmt: skip
    missing = [c.cid for c in checks if c.in_pve == 0]
    if missing:
        detail += f"; no PVE container for {missing}"
    ends = [c.finished for c in checks if c.finished is not None]
    return FaultRow(fault, f"{ready}/{len(checks)} ready", recover_s,
                    (max(ends) - t0) if ends else float("nan"), duplicates,
                    all(c.contiguous and c.converged for c in checks), detail.lstrip("; "))  # fmt: skip


def leases_of(cluster: Cluster, host: Host | None = None) -> list[str]:
    """The runs whose lease a process of ``host`` holds (holder
    ``host:pid:...``; the work horse's pid), or anyone when None."""
    pids = {str(p) for p in host.pids()} if host is not None else None
    with cluster.client.factory() as session:
        holders = session.execute(select(Lease.container_id, Lease.holder)).all()
    return [cid for cid, holder in holders if pids is None or holder.split(":")[1] in pids]


def event_time(event: Event) -> float:
    return datetime.fromisoformat(event.ts.replace("Z", "+00:00")).timestamp()


def wait_lines(cluster: Cluster, cids: list[str], at_least: int, timeout: float = 180) -> None:
    """Until each run stored ``at_least`` events (its script is printing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s >= at_least for s in last_seqs(cluster, cids).values()):
            return
        time.sleep(0.1)
    raise TimeoutError(f"runs never reached {at_least} events: {last_seqs(cluster, cids)}")


# -- the faults -------------------------------------------------------------------------


def host_lost(cluster: Cluster, victim: str = "a", runs: int = 4) -> FaultRow:
    """kill -9 every process of one host while its workers run provisionings.

    ``runs`` requests are submitted to the shared queue (one per worker when
    there are as many); once every worker of the victim holds a run that is
    printing, the whole host dies.  Recovered: the victim's runs going on
    again on the other host (their leases expire first: PROVISIONER_LEASE_DURATION).
    """
    host = cluster.hosts[victim]
    submitted = submit_runs(cluster, runs, f"lost-{victim}")
    deadline = time.monotonic() + 120
    held: list[str] = []
    while time.monotonic() < deadline:  # until the victim's workers all run one, or all are taken
        held = leases_of(cluster, host)
        if len(held) >= len(host.workers) or len(leases_of(cluster)) >= runs:
            break
        time.sleep(0.1)
    if not held:
        raise RuntimeError(f"host {victim}'s workers never took a run\n{cluster.logs()}")
    wait_lines(cluster, held, 50)
    t0 = time.time()
    killed = host.kill()
    wait_ready(cluster, list(submitted))
    checks = check_runs(cluster, submitted)
    # per run taken over: the recovering event (noticed), then its next one
    # (the new attempt going on, on the other host)
    noticed, going_on = [], []
    for cid in held:
        events = stored_events(cluster.client.factory, cid, 0)
        at = next((i for i, e in enumerate(events) if e.type == "recovering"), None)
        if at is None or at + 1 >= len(events):
            raise AssertionError(f"{cid}: no recovering event followed by the new attempt's")
        noticed.append(event_time(events[at]) - t0)
        going_on.append(event_time(events[at + 1]) - t0)
    return row(f"host {victim} lost", checks, max(going_on), t0,
               f"{len(killed)} processes killed, {len(held)} run(s) taken over, noticed after "
               f"{max(noticed):.1f} s (lease {cluster.client.settings.lease_duration:g} s)")  # fmt: skip


def postgres_restarted(cluster: Cluster, runs: int = 2) -> FaultRow:
    """``pg_ctl restart -m fast`` while runs print.  Recovered: every run
    storing events again (after the restart itself)."""
    submitted = submit_runs(cluster, runs, "pg")
    cids = list(submitted)
    wait_lines(cluster, cids, 50)
    before = last_seqs(cluster, cids)
    t0 = time.time()
    cluster.postgres.restart()
    restart = time.time() - t0
    recovered = wait_going_on(cluster, before, t0)
    wait_ready(cluster, cids)
    checks = check_runs(cluster, submitted)
    attempts = [cluster.client.container(c).attempts for c in cids]
    return row("PostgreSQL restarted", checks, recovered, t0,
               f"the restart took {restart:.1f} s; attempts {attempts}")  # fmt: skip


def redis_master_lost(cluster: Cluster, runs: int = 2) -> FaultRow:
    """kill -9 the Redis master (Sentinel promotes the replica) while runs
    print.  Recovered: every run storing events again."""
    group = cluster.sentinel
    if group is None:
        raise RuntimeError("redis_master_lost needs a cluster started with a SentinelGroup")
    submitted = submit_runs(cluster, runs, "redis")
    cids = list(submitted)
    wait_lines(cluster, cids, 50)
    before = last_seqs(cluster, cids)
    t0 = time.time()
    old = group.kill_master()
    new = group.wait_failover(old)
    failover = time.time() - t0
    recovered = wait_going_on(cluster, before, t0)
    wait_ready(cluster, cids)
    checks = check_runs(cluster, submitted)
    group.restart(old)  # back as the new master's replica
    return row("Redis master lost", checks, recovered, t0,
               f"failover {old} -> {new} in {failover:.1f} s")  # fmt: skip


BROWSER_USER, BROWSER_PASSWORD = "watcher", "multihost watcher password"
WATCHED = {"count": 3000, "pause_ms": 150}


def web_lost(cluster: Cluster, browser: Any, victim: str = "a") -> FaultRow:
    """A browser follows a run through haproxy; the web process serving its
    event stream (the victim's: the other host is out of haproxy's rotation
    while the page opens it) is killed (kill -9, then started again as
    systemd would).  Recovered: the page showing an event stored after the
    kill (only a new stream, through the other host, can bring it).
    Duplicates: seqs the page shows twice; contiguous: the page's log is
    1..n, in order, every printed line once, and the run's stored events
    are too."""
    from tests.browser.conftest import login
    from tests.browser.test_progress import console_rows, count_lines, printed

    other = next(n for n in cluster.hosts if n != victim)
    host = cluster.hosts[victim]
    with session_scope(cluster.client.factory) as session:
        if users.get_user(session, BROWSER_USER) is None:
            users.create_user(session, BROWSER_USER, BROWSER_PASSWORD, is_admin=True)
    context = browser.new_context(base_url=cluster.balancer.url)
    context.set_default_timeout(30_000)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        login(page, BROWSER_USER, BROWSER_PASSWORD)
        submitted = submit_runs(cluster, 1, "watched", WATCHED)
        (cid,) = submitted
        cluster.balancer.set_state(other, "maint")  # the stream opens on the victim
        try:
            page.goto(f"/containers/{cid}/progress")
            page.wait_for_function(
                """n => document.querySelectorAll('#console .line[data-script="10-print.sh"]').length >= n""",
                arg=300, timeout=180_000)  # fmt: skip
            if cluster.balancer.current_sessions()[victim] < 1:
                raise RuntimeError(f"the page holds no stream on host {victim}'s web process")
        finally:
            cluster.balancer.set_state(other, "ready")
        cluster.wait_web()
        shown = count_lines(page)
        t0 = time.time()
        host.kill(WEB_UNIT)
        # an event neither in the stream nor stored when the web process
        # died can only come through a new stream
        newest = cluster.client.redis.xrevrange(stream_key(cid), count=1)
        sent = max([last_seqs(cluster, [cid])[cid], *(stream_seq(i) for i, _ in newest)])
        page.wait_for_function(
            "n => [...document.querySelectorAll('#console .line')].some(l => Number(l.dataset.seq) > n)",
            arg=sent, timeout=120_000)  # fmt: skip
        recovered = time.time() - t0
        reopened = _stream_through(cluster, other, cid)
        host.start(WEB_UNIT)  # as systemd's Restart= would
        page.wait_for_selector("#progress[data-lifecycle=ready]", timeout=240_000)
        last = cluster.client.container(cid).next_seq - 1
        page.wait_for_function(
            "n => { const l = document.querySelector('#console .line:last-child');"
            " return l && Number(l.dataset.seq) === n; }", arg=last, timeout=60_000)  # fmt: skip
        rows = console_rows(page)
        seqs = [r["seq"] for r in rows]
        page_ok = (seqs == list(range(1, last + 1))
                   and printed(rows) == [f"line {i}" for i in range(1, WATCHED["count"] + 1)])  # fmt: skip
        checks = check_runs(cluster, submitted)
        how = {
            True: f"its stream reopened through host {other}",
            None: "the run ended before its stream could be seen",
            False: f"NO stream open through host {other} (the page polled?)",
        }[reopened]
        result = row("web process lost", checks, recovered, t0,
                     f"web of host {victim} killed with {shown} lines shown, {how}; "
                     f"the page: {len(seqs)} lines, seqs 1..{last} "
                     f"{'once each, in order' if page_ok else 'NOT complete'}",
                     extra_duplicates=len(seqs) - len(set(seqs)))  # fmt: skip
        result.contiguous = result.contiguous and page_ok and reopened is not False
        cluster.wait_web()
    finally:
        context.close()
    if errors:
        result.detail += f"; page errors: {errors[:3]}"
    return result


def _stream_through(cluster: Cluster, server: str, cid: str, timeout: float = 10) -> bool | None:
    """Whether haproxy holds a connection to ``server`` (the page's
    reopened stream) within ``timeout``; None if the run ended first (its
    stream closes after the terminal event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.balancer.current_sessions()[server] >= 1:
            return True
        if cluster.client.container(cid).lifecycle != Lifecycle.CREATING:
            return None
        time.sleep(0.05)
    return False

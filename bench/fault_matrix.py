"""The fault matrix: one provisioning per fault, through real workers, a
Redis and a simulator of the bench's own, with the default lease settings.

For each fault: the outcome, the time from the request to ready against a
clean run of the same template measured in the same bench, the attempts,
the PVE containers with the request's hostname (one, or none when the run
failed before creating), whether the events' seqs are contiguous with one
terminal event, whether the database and the Redis stream hold the same
events, and (kills) how long until the ``recovering`` event said so.

Faults: kill -9 of the work horse and of the whole worker in each phase,
Redis paused 15 s and restarted (in scripts), PVE answering 500, 595 and
403 to the create and to the start, SSH connections dropped in deploy and
in scripts.  Takes about 15 minutes.

    sudo .venv/bin/python bench/fault_matrix.py [--only kill-horse-scripts ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis import Redis

from bench.pipeline_overhead import start_redis
from provisioner.events import Event, EventReader, stream_key
from provisioner.models import Lifecycle
from provisioner.phases import PHASES
from provisioner.redis_url import redis_client
from tests.conftest import start_simulator, stop_simulator
from tests.pipeline.conftest import Stack, build_stack
from tests.pipeline.test_resilience import children, kill_worker_and_horse
from tests.pvesim.helpers import admin, token_api

TEMPLATES = Path(__file__).resolve().parent.parent / "tests" / "pipeline" / "templates"
# the phases template, each phase lasting a few seconds: a 40 MiB file to
# deploy, 4000 printed lines, a health-checked port opening 4 s late
VARIABLES = {"deploy_mb": 40, "count": 4000, "late_seconds": 4}


@dataclass
class Outcome:
    fault: str
    lifecycle: str
    seconds: float
    attempts: int
    in_pve: int
    contiguous: bool
    converged: bool
    noticed: float | None = None


def events_of(stack: Stack, redis: Redis, cid: str) -> list[Event]:
    return list(EventReader(redis, stack.factory, cid).events(0, follow=False))


def wait_phase(stack: Stack, cid: str, phase: str, lines: int = 0, timeout: float = 120) -> None:
    """Until the run is in ``phase`` (with ``lines`` log lines of it, if asked)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ct = stack.container(cid)
        if ct.current_phase == phase and ct.vmid is not None:
            if not lines:
                return
            with stack.factory() as session:
                from provisioner.models import ContainerEvent

                n = session.query(ContainerEvent).filter_by(container_id=cid, phase=phase,
                                                            type="log").count()  # fmt: skip
            if n >= lines:
                return
        if ct.lifecycle in (Lifecycle.READY, Lifecycle.ERROR):
            raise RuntimeError(f"{cid} ended ({ct.lifecycle}) before phase {phase}")
        time.sleep(0.02)
    raise RuntimeError(f"{cid} never reached phase {phase}")


def running_worker(stack: Stack) -> int:
    """The index of the worker whose work horse runs now."""
    for _ in range(500):
        for i, proc in enumerate(stack.workers):
            if children(proc.pid):
                return i
        time.sleep(0.01)
    raise RuntimeError("no worker runs a job")


Act = Callable[[str], None]


def measure(stack: Stack, redis: Redis, fault: str, act: Act,
            prepare: Callable[[], None] | None = None) -> Outcome:  # fmt: skip
    """One provisioning with ``prepare()`` before it is asked for and
    ``act(its id)`` once it is (both may wait for the moment of the fault)."""
    hostname = f"fm-{uuid.uuid4().hex[:6]}"
    if prepare is not None:
        prepare()
    started = time.time()
    cid = stack.submit("phases", hostname, variables=VARIABLES)
    act(cid)  # may block (a Redis paused for 15 s): the run's own times count
    acted = time.time()
    ct = stack.wait(cid, timeout=600)
    ended = ct.finished_at.timestamp() if ct.finished_at else time.time()
    seconds = ended - started
    events = events_of(stack, redis, cid)
    seqs = [e.seq for e in events]
    terminal = [e for e in events if e.terminal]
    contiguous = (
        seqs == list(range(1, len(seqs) + 1)) and len(terminal) >= 1 and events[-1].terminal
    )
    stored = [e.as_dict() for e in events]
    deadline = time.monotonic() + 60
    streamed: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        streamed = [json.loads(f[b"e"]) for _, f in redis.xrange(stream_key(cid))]
        if streamed == stored:
            break
        time.sleep(0.5)
    noticed = next((e["ts"] for e in stored if e["type"] == "recovering"), None)
    latency = None
    if noticed is not None:  # the event's time against the moment of the kill
        latency = datetime.fromisoformat(noticed.replace("Z", "+00:00")).timestamp() - acted
    in_pve = sum(1 for c in token_api(stack.sim).nodes(stack.sim["node"]).lxc.get()
                 if c.get("name") == hostname)  # fmt: skip
    stack.made.append(cid)  # type: ignore[attr-defined]
    return Outcome(fault, ct.lifecycle.value, seconds, ct.attempts, in_pve, contiguous,
                   streamed == stored, latency)  # fmt: skip


def faults(stack: Stack, redis_proc: Callable[[], Any],
           restart_redis: Callable[[], None]) -> dict[str, tuple[Act, Callable[[], None] | None]]:  # fmt: skip
    """Fault name -> (what to do once the run is asked for, what before)."""
    plan: dict[str, tuple[Act, Callable[[], None] | None]] = {}
    nothing: Act = lambda cid: None  # noqa: E731

    def lines_for(phase: str) -> int:
        return 300 if phase == "scripts" else 0

    for phase in PHASES:

        def kill_horse(cid: str, phase: str = phase) -> None:
            if phase == "create":
                admin(stack.sim, "task", {"type": "vzcreate", "delay": 4.0})
            wait_phase(stack, cid, phase, lines_for(phase))
            os.kill(children(stack.workers[running_worker(stack)].pid)[0], signal.SIGKILL)

        def kill_worker(cid: str, phase: str = phase) -> None:
            if phase == "create":
                admin(stack.sim, "task", {"type": "vzcreate", "delay": 4.0})
            wait_phase(stack, cid, phase, lines_for(phase))
            index = running_worker(stack)
            kill_worker_and_horse(stack, index)
            stack.workers.pop(index)
            stack.start_workers(1)  # as systemd's Restart= would

        plan[f"kill-horse-{phase}"] = (kill_horse, None)
        plan[f"kill-worker-{phase}"] = (kill_worker, None)

    def pause(cid: str) -> None:
        wait_phase(stack, cid, "scripts", 300)
        os.kill(redis_proc().pid, signal.SIGSTOP)
        time.sleep(15)
        os.kill(redis_proc().pid, signal.SIGCONT)

    def restart(cid: str) -> None:
        wait_phase(stack, cid, "scripts", 300)
        restart_redis()

    plan["redis-paused-15s"] = (pause, None)
    plan["redis-restarted"] = (restart, None)
    for status in (500, 595, 403):
        for where, path in (("create", r"/lxc$"), ("start", r"/status/start$")):

            def http(status: int = status, path: str = path) -> None:
                admin(stack.sim, "http", {"path": path, "method": "POST", "status": status,
                                          "count": 1})  # fmt: skip

            plan[f"pve-{status}-{where}"] = (nothing, http)
    for phase in ("deploy", "scripts"):

        def drop(cid: str, phase: str = phase) -> None:
            wait_phase(stack, cid, phase, lines_for(phase))
            admin(stack.sim, "ssh-drop", {"vmid": stack.container(cid).vmid})

        plan[f"ssh-dropped-{phase}"] = (drop, None)
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only these faults")
    parser.add_argument("--baseline-runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        work = Path(tmp)
        redis_proc, redis_url = start_redis(work)
        current = {"proc": redis_proc}
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])

        def restart_redis() -> None:
            current["proc"].kill()
            current["proc"].wait()
            time.sleep(1)
            current["proc"], _ = start_redis(work, port)

        sim_proc, info = start_simulator(work / "sim")
        stack = build_stack(info, redis_url, work / "data", [TEMPLATES])
        for name in ("PROVISIONER_LEASE_DURATION", "PROVISIONER_LEASE_RENEW_INTERVAL"):
            stack.env.pop(name)  # the defaults: 15 s, renewed every 3 s
        stack.made = []  # type: ignore[attr-defined]
        redis = redis_client(redis_url)
        try:
            stack.start_workers(2)
            time.sleep(2)
            baseline = [measure(stack, redis, "baseline", lambda cid: None)
                        for _ in range(args.baseline_runs)]  # fmt: skip
            normal = statistics.median(o.seconds for o in baseline)
            results = list(baseline)
            plan = faults(stack, lambda: current["proc"], restart_redis)
            for name, (act, prepare) in plan.items():
                if args.only and name not in args.only:
                    continue
                try:
                    results.append(measure(stack, redis, name, act, prepare))
                except Exception as exc:  # a fault that could not be set up: say so, go on
                    print(f"{name}: not measured: {exc}", file=sys.stderr)
                admin(stack.sim, "faults", method="DELETE")
                print(results[-1], file=sys.stderr)
        finally:
            stack.destroy_in_pve(stack.made)  # type: ignore[attr-defined]
            stop_simulator(sim_proc)
            current["proc"].kill()
    print(
        f"\nclean run of 'phases' {VARIABLES}: median {normal:.1f} s "
        f"({', '.join(f'{o.seconds:.1f}' for o in baseline)})\n"
    )
    print(
        f"{'fault':<22} {'outcome':<8} {'ready in':>9} {'vs clean':>9} {'noticed':>8} "
        f"{'attempts':>8} {'in PVE':>6} {'seqs ok':>7} {'db=stream':>9}"
    )
    for o in results[len(baseline) :]:
        noticed = f"{o.noticed:.1f} s" if o.noticed is not None else "-"
        print(
            f"{o.fault:<22} {o.lifecycle:<8} {o.seconds:>7.1f} s {o.seconds - normal:>+7.1f} s "
            f"{noticed:>8} {o.attempts:>8} {o.in_pve:>6} {o.contiguous!s:>7} "
            f"{o.converged!s:>9}"
        )


if __name__ == "__main__":
    main()

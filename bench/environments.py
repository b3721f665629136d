"""Environments: clone -> ready versus a fresh provision -> ready, and the
time of an automatic rollback after a failed resync.

1. For a shipped template (default ``nginx``), provision a container
   (submit -> ready), then clone it (submit -> ready), ``--runs`` times,
   alternately in the same run; the ratio of the medians (goal <= 0.3).
2. For the test template ``stateful``, a resync whose health check fails
   (its page is changed to fail the check): submit -> the terminal
   ``rolled-back`` event, and the rollback alone (from the "rolling back"
   warning to the end); median and max.

    sudo .venv/bin/python bench/environments.py [--runs 3] [--template nginx] [--time-scale 1]

Starts its own simulator (at ``--time-scale``: 1 gives PVE's task
durations) and Redis; needs root and the cached template.  The shipped
templates install their packages from Debian's mirror: a fresh provision
includes that, a clone does not need it.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline_overhead import start_redis
from provisioner.events import EventReader
from provisioner.models import Container, Lifecycle
from provisioner.requests import CloneRequest, request_action, request_clone
from provisioner.secrets.keyfile import load_secret_box
from tests.conftest import start_simulator, stop_simulator
from tests.pipeline.conftest import Stack, build_stack

ROOT = Path(__file__).resolve().parent.parent
TEST_TEMPLATES = ROOT / "tests/pipeline/templates"


def until_terminal(stack: Stack, cid: str, after: int = 0) -> tuple[float, list]:
    """Follow the events as a client does; the time of the terminal event."""
    seen = []
    for event in EventReader(stack.redis, stack.factory, cid).events(after, block_ms=100):
        seen.append(event)
        if event.terminal:
            break
    return time.monotonic(), seen


def clone(stack: Stack, source: str, hostname: str, full: bool = True) -> str:
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    with stack.factory() as session:
        src = session.get(Container, source)
        assert src is not None
        requested = request_clone(session, box, stack.settings, stack.redis, src,
                                  CloneRequest(hostname=hostname, environment="staging",
                                               full=full))  # fmt: skip
        return requested.container.id


def ts(event: object) -> float:
    return datetime.fromisoformat(str(event.ts).replace("Z", "+00:00")).timestamp()  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--template", default="nginx")
    parser.add_argument("--time-scale", default="1")
    args = parser.parse_args()
    provision_times, clone_times, linked_times, resync_times, rollback_times = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-env-") as tmp:
        work = Path(tmp)
        redis_proc, redis_url = start_redis(work)
        sim_proc, info = start_simulator(work / "sim", "--time-scale", args.time_scale)
        stack = build_stack(info, redis_url, work / "data", [TEST_TEMPLATES])
        ipaddress.ip_network(info["subnet"])
        try:
            stack.start_workers(1)
            time.sleep(2)
            for i in range(args.runs):
                t0 = time.monotonic()
                cid = stack.submit(args.template, f"src{i}")
                t1, _ = until_terminal(stack, cid)
                ct = stack.wait(cid, timeout=60)
                assert ct.lifecycle == Lifecycle.READY, ct.error_message
                provision_times.append(t1 - t0)
                t0 = time.monotonic()
                copy = clone(stack, cid, f"copy{i}")
                t1, _ = until_terminal(stack, copy)
                done = stack.wait(copy, timeout=60)
                assert done.lifecycle == Lifecycle.READY, done.error_message
                clone_times.append(t1 - t0)
                t0 = time.monotonic()
                copy = clone(stack, cid, f"linked{i}", full=False)
                t1, _ = until_terminal(stack, copy)
                done = stack.wait(copy, timeout=60)
                assert done.lifecycle == Lifecycle.READY, done.error_message
                linked_times.append(t1 - t0)
                print(f"  run {i + 1}: provision {provision_times[-1]:.1f}s, "
                      f"full clone {clone_times[-1]:.1f}s, linked clone {linked_times[-1]:.1f}s",
                      flush=True)  # fmt: skip
            # a failing resync, rolled back
            cid = stack.submit("stateful", "rb")
            stack.wait(cid, timeout=300)
            health = stack.settings.templates_dir / "stateful/files/health.txt.j2"
            for i in range(args.runs):
                health.write_text("failing\n")
                with stack.factory() as session:
                    row = session.get(Container, cid)
                    assert row is not None
                    t0 = time.monotonic()
                    queued = request_action(session, stack.settings, stack.redis, row, "resync",
                                            {"on_failure": "rollback"}, lambda: False)  # fmt: skip
                t1, seen = until_terminal(stack, cid, queued.after)
                stack.wait(cid, timeout=60)  # the lifecycle follows the terminal event
                health.write_text("{{ health_word }}\n")
                assert seen[-1].outcome == "rolled-back", seen[-1].message
                start = next(e for e in seen if "rolling back to the safety snapshot" in e.message)
                resync_times.append(t1 - t0)
                rollback_times.append(ts(seen[-1]) - ts(start))
                print(f"  failed resync {i + 1}: {resync_times[-1]:.1f}s, of which the rollback "
                      f"{rollback_times[-1]:.1f}s", flush=True)  # fmt: skip
        finally:
            stack.stop_workers()
            stop_simulator(sim_proc)
            redis_proc.terminate()
            redis_proc.wait()
    med = statistics.median
    print(f"clone versus provision, template {args.template!r}, {args.runs} runs, "
          f"time scale {args.time_scale}")  # fmt: skip
    print(f"  provision (submit -> ready): median {med(provision_times):.1f}s  "
          f"max {max(provision_times):.1f}s")  # fmt: skip
    print(f"  full clone   (submit -> ready): median {med(clone_times):.1f}s  "
          f"max {max(clone_times):.1f}s  ratio {med(clone_times) / med(provision_times):.2f}")  # fmt: skip
    print(f"  linked clone (submit -> ready): median {med(linked_times):.1f}s  "
          f"max {max(linked_times):.1f}s  ratio {med(linked_times) / med(provision_times):.2f}"
          "  (goal <= 0.3)")  # fmt: skip
    print("automatic rollback after a failed resync (template 'stateful', health timeout 8 s)")
    print(f"  failed resync -> rolled-back: median {med(resync_times):.1f}s  "
          f"max {max(resync_times):.1f}s")  # fmt: skip
    print(f"  the rollback alone          : median {med(rollback_times):.1f}s  "
          f"max {max(rollback_times):.1f}s")  # fmt: skip


if __name__ == "__main__":
    main()

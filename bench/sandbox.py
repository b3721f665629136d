"""A client sandbox of a seeded live site: submit -> ready, and its parts.

The live site is a container of the ``wordpress`` template seeded through
its REST API (``--posts`` posts, 20 pages, ``--media`` images of about
290 KB, featured and inline).  Then ``--runs`` sandboxes of it (each a new
one: ``new``), each timed from the request to ``ready``, split into the
provision (create, start, deploy, scripts), the import's reading of the
site, its media (download and upload), the rest of its writing, and
finalize.  The goal: ready within 2 minutes for 100 posts and 50 media.

    sudo .venv/bin/python bench/sandbox.py [--runs 3] [--posts 100] [--media 50] [--time-scale 1]

Starts its own simulator (at ``--time-scale``: 1 gives PVE's task
durations) and Redis; needs root and the cached template.  The template's
packages come from Debian's mirror, as in production.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.environments import until_terminal
from bench.pipeline_overhead import start_redis
from provisioner.models import Lifecycle, Sandbox
from provisioner.sandbox_requests import SandboxRequest, request_sandbox
from provisioner.secrets.keyfile import load_secret_box
from provisioner.timings import run_phase_durations
from provisioner.wpapi import WpClient, WpSite, WpTrust
from tests.conftest import start_simulator, stop_simulator
from tests.pipeline.conftest import NODE, build_stack
from tests.pipeline.test_failures import ssh_run
from tests.pipeline.wpsite import seed


def out(stack: Any, cid: str, command: str) -> str:
    done = ssh_run(stack, cid, command)
    assert done.exit_status == 0, (command, done.stderr)
    return str(done.stdout).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--posts", type=int, default=100)
    parser.add_argument("--media", type=int, default=50)
    parser.add_argument("--time-scale", default="1")
    args = parser.parse_args()
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        work = Path(tmp)
        redis_proc, redis_url = start_redis(work)
        sim_proc, info = start_simulator(work / "sim", "--time-scale", args.time_scale)
        stack = build_stack(info, redis_url, work / "data")
        box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
        try:
            stack.start_workers(1)
            t0 = time.monotonic()
            live = stack.submit("wordpress", "acme-live")
            ct = stack.wait(live, timeout=1200)
            assert ct.lifecycle == Lifecycle.READY, ct.error_message
            print(f"live site provisioned in {time.monotonic() - t0:.1f}s", flush=True)
            password = out(stack, live, "wp-app-password admin bench")
            pin = out(stack, live, "openssl x509 -in /etc/ssl/wordpress/cert.pem -noout "
                                   "-fingerprint -sha256").split("=", 1)[1]  # fmt: skip
            base = f"https://{ct.ip}"
            t0 = time.monotonic()
            with WpClient(WpSite(base, "admin", password, WpTrust(fingerprint=pin.replace(":", "").lower()),
                                 read_only=False)) as wp:  # fmt: skip
                seed(wp, base, posts=args.posts, media=args.media)
            print(f"seeded {args.posts} posts, 20 pages, {args.media} media in "
                  f"{time.monotonic() - t0:.1f}s", flush=True)  # fmt: skip
            for i in range(args.runs):
                t0 = time.monotonic()
                with stack.factory() as session:
                    got = request_sandbox(session, box, stack.settings, stack.redis, SandboxRequest(
                        source_url=base, client="acme", user="admin", app_password=password,
                        node=NODE, new=True, fingerprint=pin, hostname=f"sandbox-bench-{i}"))  # fmt: skip
                    cid = got.container.id
                t1, _ = until_terminal(stack, cid)
                done = stack.wait(cid, timeout=120)
                assert done.lifecycle == Lifecycle.READY, done.error_message
                with stack.factory() as session:
                    phases = run_phase_durations(session, cid)
                    sandbox = session.get(Sandbox, cid)
                    assert sandbox is not None
                    parts = dict(sandbox.summary["seconds"])
                    mib = sandbox.summary["bytes"] / 1048576
                row = {"total": t1 - t0, "provision": sum(phases.get(p, 0.0) for p in
                                                          ("create", "start", "deploy", "scripts")),
                       "import": phases.get("import", 0.0), "read": parts["read"],
                       "media": parts["media"], "write": parts["write"],
                       "finalize": phases.get("finalize", 0.0), "mib": mib}  # fmt: skip
                rows.append(row)
                print(f"  run {i + 1}: " + ", ".join(f"{k} {v:.1f}" + ("" if k == "mib" else "s")
                                                     for k, v in row.items()), flush=True)  # fmt: skip
        finally:
            stack.stop_workers()
            stop_simulator(sim_proc)
            redis_proc.terminate()
            redis_proc.wait()
    med = statistics.median
    print(f"sandbox of a seeded site ({args.posts} posts, 20 pages, {args.media} media), "
          f"{args.runs} runs, time scale {args.time_scale}")  # fmt: skip
    for key in ("total", "provision", "import", "read", "media", "write", "finalize"):
        values = [r[key] for r in rows]
        share = med(values) / med([r["total"] for r in rows])
        print(f"  {key:<9} median {med(values):6.1f}s  max {max(values):6.1f}s  "
              f"({share:.0%} of the total)")  # fmt: skip
    print(f"  media copied: {med([r['mib'] for r in rows]):.1f} MiB; goal: total <= 120 s "
          f"({'met' if med([r['total'] for r in rows]) <= 120 else 'not met'})")  # fmt: skip


if __name__ == "__main__":
    main()

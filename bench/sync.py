"""Sync throughput: ``provisioner sync`` of a PostgreSQL database between two
containers versus the same dump and restore piped by hand through OpenSSH.

Provisions a ``postgresql`` container, fills its database with about
``--size-mib`` MiB (one table of random-looking rows), clones it, then
alternately, ``--runs`` times:

- by hand: ``ssh source <the export hook> | ssh clone <the import hook>``
  with the OpenSSH client (the same pg_dump and pg_restore, no provisioner);
- ``sync``: the run's transfer (export piped into import by the worker over
  its two SSH sessions), as its "imported N in Ts" event reports, and the
  whole run (submit -> complete: snapshot, transfer, rewrite, health).

Prints the median times, the throughput of the dump stream, and the ratio of
the sync's transfer throughput to the hand pipeline's (goal >= 0.9).

    sudo .venv/bin/python bench/sync.py [--size-mib 1024] [--runs 3]

Starts its own simulator (time scale 0: the transfer is what is measured)
and Redis; needs root, the cached template, and Debian's mirror for the
postgresql packages.
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.environments import clone, until_terminal
from bench.pipeline_overhead import start_redis
from provisioner.models import Container, Lifecycle
from provisioner.requests import request_action, stored_variables
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import container_ssh_private_key
from provisioner.templates.loader import load_template
from provisioner.templates.render import script_env
from tests.conftest import start_simulator, stop_simulator
from tests.pipeline.conftest import Stack, build_stack

HOOKS = "/var/lib/lxc-provisioner/hooks"
IMPORTED = re.compile(r"imported ([\d.]+) (B|KiB|MiB|GiB) in ([\d.]+)s")
SCALE = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def ssh_base(stack: Stack, ct: Container, keyfile: Path) -> list[str]:
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    keyfile.write_text(container_ssh_private_key(box, ct) or "")
    keyfile.chmod(0o600)
    return ["ssh", "-i", str(keyfile), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{ct.ip}"]  # fmt: skip


def remote(stack: Stack, ct: Container, hook: str) -> str:
    """The hook's command line with its variables (a bench's own test secrets)."""
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    template = load_template(stack.settings.templates_dir / ct.template)
    env = script_env(template, stored_variables(box, ct))
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return f"cd /root && env {exports} bash {HOOKS}/{hook}"


def by_hand(stack: Stack, src: Container, dst: Container, work: Path) -> float:
    export = [*ssh_base(stack, src, work / "src.key"), remote(stack, src, "export.sh")]
    import_ = [*ssh_base(stack, dst, work / "dst.key"), remote(stack, dst, "import.sh")]
    t0 = time.monotonic()
    producer = subprocess.Popen(export, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    consumer = subprocess.run(import_, stdin=producer.stdout, stderr=subprocess.DEVNULL,
                              check=False)  # fmt: skip
    assert producer.stdout is not None
    producer.stdout.close()
    assert producer.wait() == 0 and consumer.returncode == 0, "the hand pipeline failed"
    return time.monotonic() - t0


def fill(stack: Stack, src: Container, size_mib: int, work: Path) -> None:
    rows = size_mib * (1 << 20) // 300  # ~300 bytes a row on disk
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    db = stored_variables(box, src)["db_name"]
    sql = (f"DROP TABLE IF EXISTS big; CREATE TABLE big AS SELECT g AS id, "
           f"md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) || "
           f"md5((g * 31)::text) || md5((g * 97)::text) || md5((g * 101)::text) || "
           f"md5((g * 211)::text) AS payload FROM generate_series(1, {rows}) g; "
           f"SELECT pg_size_pretty(pg_database_size(current_database()));")  # fmt: skip
    cmd = (
        f"cd / && runuser -u postgres -- psql -qtA -d {shlex.quote(str(db))} -c {shlex.quote(sql)}"
    )
    out = subprocess.run([*ssh_base(stack, src, work / "fill.key"), cmd], capture_output=True,
                         text=True, check=True)  # fmt: skip
    print(f"  source database filled: {out.stdout.strip()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    hand, transfer, whole, streamed = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        work = Path(tmp)
        redis_proc, redis_url = start_redis(work)
        sim_proc, info = start_simulator(work / "sim")
        stack = build_stack(info, redis_url, work / "data")
        try:
            stack.start_workers(1)
            src_id = stack.submit("postgresql", "pg-prod", disk=8)
            src = stack.wait(src_id, timeout=900)
            assert src.lifecycle == Lifecycle.READY, src.error_message
            fill(stack, src, args.size_mib, work)
            dst_id = clone(stack, src_id, "pg-staging")
            dst = stack.wait(dst_id, timeout=900)
            assert dst.lifecycle == Lifecycle.READY, dst.error_message
            for i in range(args.runs):
                hand.append(by_hand(stack, stack.container(src_id), stack.container(dst_id), work))
                with stack.factory() as session:
                    row = session.get(Container, dst_id)
                    assert row is not None
                    t0 = time.monotonic()
                    queued = request_action(session, stack.settings, stack.redis, row, "sync",
                                            {"on_failure": "rollback"}, lambda: False)  # fmt: skip
                t1, seen = until_terminal(stack, dst_id, queued.after)
                stack.wait(dst_id, timeout=60)
                assert seen[-1].outcome == "done", seen[-1].message
                m = next(IMPORTED.search(e.message) for e in seen if IMPORTED.search(e.message))
                assert m is not None
                streamed.append(float(m.group(1)) * SCALE[m.group(2)])
                transfer.append(float(m.group(3)))
                whole.append(t1 - t0)
                print(f"  run {i + 1}: by hand {hand[-1]:.1f}s; sync transfer {transfer[-1]:.1f}s, "
                      f"whole run {whole[-1]:.1f}s", flush=True)  # fmt: skip
        finally:
            stack.stop_workers()
            stop_simulator(sim_proc)
            redis_proc.terminate()
            redis_proc.wait()
    med = statistics.median
    mib = med(streamed) / (1 << 20)
    print(f"sync of a ~{args.size_mib} MiB PostgreSQL database (dump stream {mib:.0f} MiB), "
          f"{args.runs} runs")  # fmt: skip
    print(f"  by hand (ssh | ssh)  : median {med(hand):.1f}s  ({mib / med(hand):.1f} MiB/s)")
    print(
        f"  sync transfer        : median {med(transfer):.1f}s  ({mib / med(transfer):.1f} MiB/s)"
    )
    print(f"  sync whole run       : median {med(whole):.1f}s")
    print(f"  throughput ratio (sync transfer / by hand): {med(hand) / med(transfer):.2f}  "
          "(goal >= 0.9)")  # fmt: skip


if __name__ == "__main__":
    main()

"""The real thing: ``.venv/bin/provisioner`` as a subprocess against the
stack (SQLite, Redis, the simulator, real ``provisioner worker`` processes).
Every PVE container made here is destroyed at the end (``cleanup``).

The containers take DHCP addresses: on a simulator shared by many test
sessions the DHCP pool reaches into the addresses reserved for static use,
so a static one may already be taken."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from provisioner.models import Container, Lifecycle
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import container_root_password
from tests.cli.conftest import Cli, Stack, run
from tests.cli.test_keys import file_keys, keyed_by_file
from tests.pipeline.test_failures import pve_vmids, ssh_run
from tests.pvesim.helpers import host_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def cid_of(stack: Stack, hostname: str) -> str:
    with stack.factory() as session:
        return str(session.scalars(select(Container.id).where(Container.hostname == hostname)
                                  .order_by(Container.created_at.desc())).first())  # fmt: skip


def explain(stack: Stack, result: subprocess.CompletedProcess[str]) -> str:
    return (f"exit {result.returncode}\nstdout: {result.stdout[-3000:]}\nstderr: "
            f"{result.stderr[-3000:]}\nworkers: {stack.worker_logs()[-3000:]}")  # fmt: skip


def show(stack: Stack, ref: str) -> dict[str, object]:
    result = run(stack, "show", ref, "--json")
    assert result.returncode == 0, explain(stack, result)
    body: dict[str, object] = json.loads(result.stdout)
    return body


def pve_status(stack: Stack, ref: str) -> str:
    live = show(stack, ref)["pve"]
    assert isinstance(live, dict), live
    return str(live["status"])


def test_create_follow_serves_the_page_then_stop_start_destroy(
        stack: Stack, cleanup: Callable[[str], str]) -> None:  # fmt: skip
    stack.start_workers(1)
    created = run(stack, "create", "--template", "nginx", "--node", "sim", "--hostname",
                  "cli-web", "--var", "site_title=Hello from the CLI", "--follow",
                  timeout=560)  # fmt: skip
    cid = cleanup(cid_of(stack, "cli-web"))
    assert created.returncode == 0, explain(stack, created)
    ip = show(stack, cid)["ip"]
    assert "root password (shown once, store it now): " in created.stderr
    assert f"ready: cli-web ({cid[:8]}), CT " in created.stderr
    assert created.stderr.rstrip().endswith(f"at {ip}")
    # the run's stdout lines on stdout, its steps on stderr
    assert "==> index page served" in created.stdout.splitlines()
    assert "[scripts " in created.stderr and "[finalize 100%]" not in created.stdout
    page = requests.get(f"http://{ip}/", timeout=10)
    assert page.status_code == 200 and "Hello from the CLI" in page.text

    listed = run(stack, "ls")
    row = next(line for line in listed.stdout.splitlines() if " cli-web " in line).split()
    assert row[:5] == [cid[:8], "cli-web", "ready", "running", "sim"] and row[-1] == ip
    assert show(stack, "cli-web")["lifecycle"] == "ready"
    logs = run(stack, "logs", cid[:8])
    assert logs.returncode == 0 and "[complete] finalize 100%: CT " in logs.stdout

    stopped = run(stack, "stop", "cli-web", "--follow")
    assert stopped.returncode == 0, explain(stack, stopped)
    assert stopped.stderr.rstrip().endswith("stop done")
    assert pve_status(stack, "cli-web") == "stopped"
    started = run(stack, "start", "cli-web", "--follow")
    assert started.returncode == 0, explain(stack, started)
    assert pve_status(stack, "cli-web") == "running"
    # each run's terminal event says how it ended
    history = [json.loads(line) for line in run(stack, "logs", cid, "--json").stdout.splitlines()]
    assert [e.get("outcome") for e in history if e["type"] in ("complete", "error")] == [
        "ready", "done", "done"]  # fmt: skip

    refused = run(stack, "destroy", "cli-web")
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    destroyed = run(stack, "destroy", "cli-web", "--yes", "--follow")
    assert destroyed.returncode == 0, explain(stack, destroyed)
    assert show(stack, cid)["lifecycle"] == "destroyed"
    vmid = show(stack, cid)["vmid"]
    assert vmid not in pve_vmids(stack)
    again = run(stack, "start", cid)
    assert again.returncode == 5
    assert "cannot start a container that is destroyed" in again.stderr


def test_a_failed_run_exits_nonzero_and_retry_fixes_it(
        stack: Stack, cleanup: Callable[[str], str]) -> None:  # fmt: skip
    stack.start_workers(1)
    # 20-check.sh fails while the marker file exists; /etc/motd does in Debian
    failed = run(stack, "create", "-t", "lines", "-H", "cli-fail", "--var", "count=5",
                 "--var", "fail_marker=/etc/motd", "--follow")  # fmt: skip
    cid = cleanup(cid_of(stack, "cli-fail"))
    assert failed.returncode == 1, explain(stack, failed)
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: cli-fail ({cid[:8]}) failed in phase scripts, script 20-check.sh, exit code 3: "
        "script 20-check.sh failed with exit code 3 (fix the script or the container, then "
        "retry: the run resumes at 20-check.sh)"]  # fmt: skip
    assert "line 5" in failed.stdout.splitlines()  # 10-print.sh's stdout
    assert "found /etc/motd: failing on purpose" in failed.stderr  # 20-check.sh's stderr
    assert run(stack, "logs", "cli-fail").returncode == 1
    assert show(stack, "cli-fail")["error_details"]["exit_code"] == 3  # type: ignore[index]

    assert ssh_run(stack, cid, "rm /etc/motd").exit_status == 0
    # the progress bars of a terminal (forced): resumed phases are "done earlier"
    retried = run(stack, "retry", "cli-fail", "--follow", TTY_COMPATIBLE="1")
    assert retried.returncode == 0, explain(stack, retried)
    assert "done earlier" in retried.stderr and "scripts" in retried.stderr
    assert "100%" in retried.stderr and "check passed" in retried.stderr
    assert f"ready: cli-fail ({cid[:8]})" in retried.stderr
    assert show(stack, cid)["lifecycle"] == "ready"
    assert run(stack, "logs", cid).returncode == 0  # the latest run ended well


def test_json_output_and_logs_follow(stack: Stack, cleanup: Callable[[str], str]) -> None:
    stack.start_workers(1)
    created = run(stack, "create", "-t", "lines", "-H", "cli-json", "--var", "count=40", "--json")
    assert created.returncode == 0, explain(stack, created)
    body = json.loads(created.stdout)
    cid = cleanup(body["id"])
    assert body["root_password"] and body["container"]["request"]["ip"] == "dhcp"
    followed = run(stack, "logs", cid[:8], "--follow")
    assert followed.returncode == 0, explain(stack, followed)
    lines = followed.stdout.splitlines()
    assert any(line.endswith("[stdout 10-print.sh] line 40") for line in lines)
    assert "[complete] finalize 100%: CT " in lines[-1]
    assert body["root_password"] not in followed.stdout
    everything = run(stack, "logs", cid, "--json")
    seqs = [json.loads(line)["seq"] for line in everything.stdout.splitlines()]
    assert seqs == list(range(1, len(seqs) + 1))

    destroyed = run(stack, "destroy", cid, "--yes", "--follow", "--json")
    assert destroyed.returncode == 0, explain(stack, destroyed)
    out = [json.loads(line) for line in destroyed.stdout.splitlines()]
    assert out[0]["type"] == "queued" and out[0]["action"] == "destroy"
    assert [e["seq"] for e in out[1:-1]] == list(range(seqs[-1] + 1, seqs[-1] + len(out) - 1))
    assert out[-2]["type"] == "complete" and out[-2]["message"] == "destroyed"
    assert out[-2]["outcome"] == "destroyed"
    assert out[-1]["type"] == "result" and out[-1]["ok"] is True
    assert out[-1]["container"]["lifecycle"] == Lifecycle.DESTROYED.value


def test_nodes_against_the_simulator(stack: Stack) -> None:
    sim = stack.sim
    host, port = host_port(sim)
    base = ["nodes", "add", "cli-sim", "--host", host, "--port", str(port)]
    bad = run(stack, *base, "--token-id", sim["token_id"], "--token-secret-stdin",
              "--fingerprint", ":".join(["00"] * 32), input=sim["token_secret"] + "\n")  # fmt: skip
    assert bad.returncode == 4 and "does not match the pinned fingerprint" in bad.stderr
    added = run(stack, *base, "--token-id", sim["token_id"], "--token-secret-stdin",
                "--fingerprint", sim["fingerprint"], input=sim["token_secret"] + "\n")  # fmt: skip
    assert added.returncode == 0, explain(stack, added)
    assert sim["token_secret"] not in added.stdout + added.stderr
    try:
        assert run(stack, "nodes", "test", "cli-sim").returncode == 0
        nodes = json.loads(run(stack, "nodes", "ls", "--json").stdout)["nodes"]
        assert next(n for n in nodes if n["name"] == "cli-sim")["live"]["online"] is True
    finally:
        removed = run(stack, "nodes", "rm", "cli-sim")
    assert removed.returncode == 0, explain(stack, removed)
    assert run(stack, "nodes", "test", "cli-sim").returncode == 3


def test_keys_rotate_in_a_subprocess(cli: Cli, tmp_path: Path) -> None:
    """Rotation with a key file, then a real PVE call with the node secret,
    and the container's root password decrypted with the new key alone."""
    keyed, key_file = keyed_by_file(cli, tmp_path)
    created = run(keyed, "create", "-t", "nginx", "-H", "rotated", "--json")
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    rotated = run(keyed, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    (new_key,) = file_keys(key_file)
    assert new_key not in rotated.stdout + rotated.stderr
    # the node secret, the container's root password and SSH key (at least:
    # earlier tests may share this database)
    done = re.search(r"re-encrypted (\d+) secret\(s\)", rotated.stdout)
    assert done and int(done.group(1)) >= 3, rotated.stdout
    tested = run(keyed, "nodes", "test", "sim")
    assert tested.returncode == 0, tested.stderr
    box = load_secret_box(new_key, Path("/nonexistent"))
    assert container_root_password(box, keyed.container(body["id"])) == body["root_password"]

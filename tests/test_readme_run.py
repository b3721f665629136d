"""The documentation's commands, run as a reader runs them: the shell
blocks of the README and of docs/, line by line, through bash, against the
real stack (the simulator as node "sim", Redis, real workers), in the order
the pages give them.

Only what cannot be the same here is substituted, each substitution named
below: the simulator's address, port, token, certificate and state
directory for a real node's or the demo's, its subnet for 198.18.0.0/24,
this test's queue and files for the service paths.  Which lines run
elsewhere is in ``ELSEWHERE`` at the end, and a test proves that every
shell line of the README and docs/ is accounted for.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from provisioner.db import session_scope
from provisioner.models import Container, Lifecycle, Node
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import set_node_secret
from tests.conftest import ROOT
from tests.pipeline.conftest import NODE, Stack, build_stack
from tests.test_readme import all_shell_lines, section, sh_blocks, shell_lines

__all__ = ["shell_blocks", "shell_lines"]  # what tests/ops and tests/demo take from here
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

STATIC_HOST = 105  # box2's address: below the DHCP pool, apart from other suites'


def shell_blocks(heading: str) -> list[str]:
    """The ```sh blocks of the section under ``heading``, in the README or
    in the page of docs/ that has it."""
    return sh_blocks(section(heading))


@dataclasses.dataclass
class Reader:
    """A reader's shell: the stack's settings, a home and a working directory."""

    stack: Stack
    cwd: Path
    env: dict[str, str]

    def run(self, line: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", line], cwd=self.cwd, env=self.env, text=True,
                              capture_output=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def reader(sim: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("REDIS_URL is not set (scripts/test starts a Redis)")
    data = tmp_path_factory.mktemp("readme")
    stack = build_stack(sim, redis_url, data / "data")
    # a key file, as on a fresh installation (keys rotate rewrites it)
    del stack.env["PROVISIONER_SECRET_KEY"]
    stack.settings = dataclasses.replace(stack.settings, secret_key=None)
    box = load_secret_box(None, stack.settings.secret_key_file)
    with session_scope(stack.factory) as session:
        node = session.scalars(select(Node).where(Node.name == NODE)).one()
        set_node_secret(box, node, sim["token_secret"])
    home = data / "home"
    (home / ".ssh").mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "reader@readme",
                    "-f", str(home / ".ssh/id_ed25519")], check=True)  # fmt: skip
    work = data / "work"
    work.mkdir()
    (work / "templates_lxc").symlink_to(ROOT / "templates_lxc")  # as in the checkout
    env = {**stack.env, "HOME": str(home),
           "PATH": f"{ROOT / '.venv/bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"}  # fmt: skip
    stack.start_workers(2)
    try:
        yield Reader(stack, work, env)
    finally:
        with stack.factory() as session:
            made = list(session.scalars(select(Container.id)))
        stack.destroy_in_pve(made)
        stack.redis.close()


def run_block(reader: Reader, block: str, substitutions: dict[str, str],
              expected: dict[str, int] | None = None) -> dict[str, str]:  # fmt: skip
    """Run each line (after the substitutions); each must exit 0, or with the
    code ``expected`` gives for a line containing the key.  Returns line ->
    output."""
    for old, new in substitutions.items():
        assert old in block, f"the README no longer says {old!r}"
        block = block.replace(old, new)
    outputs: dict[str, str] = {}
    for line in shell_lines(block):
        done = reader.run(line)
        want = next((code for key, code in (expected or {}).items() if key in line), 0)
        assert done.returncode == want, (
            f"{line}\nexit {done.returncode}, expected {want}\n{done.stdout[-3000:]}\n"
            f"{done.stderr[-3000:]}\n{reader.stack.worker_logs()[-3000:]}")  # fmt: skip
        assert "Traceback" not in done.stderr, (line, done.stderr)
        outputs[line] = done.stdout + done.stderr
    return outputs


def by_hostname(reader: Reader, hostname: str) -> Container:
    with reader.stack.factory() as session:
        ct = session.scalars(select(Container).where(Container.hostname == hostname)).one()
        session.expunge(ct)
        return ct


def test_the_tour(reader: Reader) -> None:
    """The README's `A five-minute tour`: the simulator fails the next
    start, so the run stops in phase start with the reason; `show` tells
    it, `retry` resumes there and the container is ready; then destroyed."""
    state_dir = reader.stack.sim.get("state_dir")
    if not state_dir:
        pytest.skip("the simulator's state dir is unknown (PVESIM_STATE_DIR)")
    (block,) = shell_blocks("A five-minute tour")
    try:
        # the failed run exits 1
        outputs = run_block(reader, block, {".state/demo/pvesim": state_dir},
                            expected={"-H tour1": 1})  # fmt: skip
    finally:
        reader.run(f"pvesim fault clear --state-dir {state_dir}")
    failed = next(v for k, v in outputs.items() if "-H tour1" in k)
    assert re.search(r"error: tour1 \(\w+\) failed in phase start: .*simulated: start failed",
                     failed), failed  # fmt: skip
    shown = next(v for k, v in outputs.items() if "show tour1" in k)
    assert "simulated: start failed" in shown, shown
    retried = next(v for k, v in outputs.items() if "retry tour1" in k)
    # it resumed at the start phase: no second create
    assert "[start " in retried and "[create " not in retried, retried
    tour1 = by_hostname(reader, "tour1")
    assert tour1.lifecycle == Lifecycle.DESTROYED and tour1.attempts == 2


@pytest.mark.long
def test_the_cli_tour(reader: Reader) -> None:
    """`Using it` → `The CLI`: create three containers (DHCP, static with a
    key, JSON Lines), look at them, power them, retry, destroy, templates,
    nodes, a user and a token, a key rotation."""
    (block,) = shell_blocks("The CLI")
    subnet = ipaddress.ip_network(reader.stack.sim["subnet"])
    address = f"{subnet.network_address + STATIC_HOST}/{subnet.prefixlen}"
    outputs = run_block(reader, block, {
        "--ip 198.18.0.170/24 --gateway 198.18.0.1":
            f"--ip {address} --gateway {reader.stack.sim['gateway']}",
    }, expected={
        # box2 did not fail, so there is nothing to retry: refused, exit 5
        "provisioner retry box2": 5,
    })  # fmt: skip
    web1, box2, cache1 = (by_hostname(reader, h) for h in ("web1", "box2", "cache1"))
    assert web1.lifecycle == Lifecycle.DESTROYED
    assert box2.lifecycle == Lifecycle.READY and box2.ip == address.split("/")[0]
    assert box2.request["ssh_public_key"].endswith("reader@readme")
    assert (box2.request["cores"], box2.request["memory"]) == (2, 1024)
    assert cache1.lifecycle == Lifecycle.READY and str(cache1.failure_policy) == "destroy"
    lines = [json.loads(line) for line in (reader.cwd / "run.jsonl").read_text().splitlines()]
    assert lines[0]["type"] == "submitted" and lines[-1]["type"] == "result"
    assert lines[-1]["ok"] is True and lines[-1]["container"]["lifecycle"] == "ready"
    assert any(e.get("type") == "complete" for e in lines[1:-1])
    retry = next(v for k, v in outputs.items() if "retry box2" in k)
    assert "cannot retry a container that is ready" in retry
    added = next(v for k, v in outputs.items() if "user add alice" in k)
    assert re.search(r"password: \S{16,}", added)  # no terminal: generated, shown once
    rotated = next(v for k, v in outputs.items() if "keys rotate" in k)
    assert "re-encrypted" in rotated and "retired key(s)" in rotated
    # after the rotation the workers still decrypt everything: a new run works
    again = reader.run("provisioner resync box2 --follow")
    assert again.returncode == 0, again.stderr[-2000:]


def test_connecting_a_node(reader: Reader) -> None:
    """`Connecting a real Proxmox node`: the certificate's fingerprint read
    with openssl, then `nodes add` and `nodes test`, with the simulator as
    the node (its address, port, token)."""
    sim = reader.stack.sim
    host, port = sim["url"].split("//")[1].split("/")[0].rsplit(":", 1)
    pve_side, register = shell_blocks("Connecting a real Proxmox node")
    fingerprint_line = next(line for line in shell_lines(pve_side) if "openssl" in line)
    shown = reader.run(fingerprint_line.replace("127.0.0.1:8006", f"{host}:{port}"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().lower() == f"sha256 fingerprint={sim['fingerprint']}".lower()
    reader.env["TOKEN_SECRET"] = sim["token_secret"]
    run_block(reader, register, {
        "--host 192.0.2.10": f"--host {host} --port {port}",
        "--pve-node pve1": f"--pve-node {sim['node']}",
        "'provisioner@pve!lxc'": f"'{sim['token_id']}'",
        # the whole openssl line, as a reader would paste it
        "AB:CD:...:EF": f"'{shown.stdout.strip()}'",
    })  # fmt: skip
    with reader.stack.factory() as session:
        node = session.scalars(select(Node).where(Node.name == "pve1")).one()
        assert node.fingerprint == sim["fingerprint"]
    assert reader.run("provisioner nodes rm pve1").returncode == 0


def test_monitoring_and_rq_info(reader: Reader) -> None:
    """`Monitoring`: a scrape user and token into a file; `rq info` on the queue."""
    token_file = reader.cwd / "prometheus.token"
    scrape, rq_info = shell_blocks("Monitoring")
    run_block(reader, scrape, {"/etc/prometheus/lxc-provisioner.token": str(token_file)})
    assert token_file.read_text().startswith("lxcp_")
    queue = reader.stack.settings.queue_name
    outputs = run_block(reader, rq_info, {
        ".venv/bin/rq": str(ROOT / ".venv/bin/rq"),
        '"$REDIS_URL" provisioning': f'"$REDIS_URL" {queue}',
        "provisioner.rq_config provisioning": f"provisioner.rq_config {queue}",
    })  # fmt: skip
    # the provisioning queue, the webhooks queue, the provisioning queue from REDIS_URL
    shown, deliveries, configured = outputs.values()
    assert re.search(rf"^{re.escape(queue)} \|", shown, re.M), shown
    assert "2 workers, 1 queues" in shown
    assert re.search(rf"^{re.escape(queue)}-webhooks \|", deliveries, re.M), deliveries
    assert re.search(rf"^{re.escape(queue)} \|", configured, re.M), configured
    assert "2 workers, 1 queues" in configured


def test_fault_injection(reader: Reader) -> None:
    """`Fault injection`: every `pvesim fault` line against the simulator,
    then `clear` (so no other test meets the faults)."""
    (block,) = shell_blocks("Fault injection")
    state_dir = reader.stack.sim.get("state_dir")
    if not state_dir:
        pytest.skip("the simulator's state dir is unknown (PVESIM_STATE_DIR)")
    with reader.stack.factory() as session:
        ready = session.scalars(select(Container).where(
            Container.lifecycle == Lifecycle.READY)).first()  # fmt: skip
        vmid = ready.vmid if ready is not None else None
    if vmid is None:  # run alone: a container of our own to aim the faults at
        ct = reader.stack.wait(reader.stack.submit("debian-base", "faulty"))
        vmid = ct.vmid
    try:
        outputs = run_block(reader, block, {
            "DIR": state_dir,
            "104": str(vmid),  # lock, DHCP and SSH faults need an existing container
            " [--lock backup | --file]": " --lock backup",
            "pvesim fault list|clear": "pvesim fault list",
        })  # fmt: skip
        listed = json.loads(outputs[next(k for k in outputs if "fault list" in k)])
        assert len(listed["http"]) == 2 and len(listed["tasks"]) == 2, listed
        assert str(vmid) in json.dumps(listed["dhcp_delay"]), listed
    finally:
        cleared = reader.run(f"pvesim fault clear --state-dir {state_dir}")
    assert cleared.returncode == 0, cleared.stderr


# Where the other shell lines of the README and docs/ run, line by line as
# the pages say them: a change that is not mapped here fails the test below.
ELSEWHERE = {
    "The two commands": "tests/demo/test_demo.py runs scripts/demo, then in bash the lines that "
                        "source its env file and run the CLI; CI runs scripts/test",
    "Running as services": "tests/ops/test_systemd_boot.py runs every line, in order",
    "pvesim: a Proxmox VE simulator with real containers":
        "scripts/setup builds the template; scripts/test and tests/pvesim/test_serve.py serve",
    "Running them": "by hand: each benchmark takes minutes and a machine of its own; "
                    "tests/test_readme.py checks the scripts and options they name",
    "Client sandboxes": "tests/pipeline/test_sandboxes.py runs each line against a seeded live "
                        "site (its address and the fingerprint substituted)",
    "Networks, volumes and bind mounts": "tests/cli/test_create_surface.py runs each line (no "
                                         "worker: what it stores is checked)",
    "The harness and its faults": "scripts/test runs tests/multihost (the same four faults, "
                                  "asserted); the benchmark by hand, as the others",
    "Webhooks": "tests/cli/test_webhooks.py runs each command with a URL and hook ids of its "
                "own; tests/pipeline/test_webhooks_e2e.py delivers to a real receiver",
}  # fmt: skip
ON_THE_PVE_NODE = "pveum "  # the simulator has no pveum: these run on the Proxmox node


def lines_run_here() -> set[str]:
    """The lines the tests above run (before their substitutions)."""
    pve_side, register = shell_blocks("Connecting a real Proxmox node")
    blocks = [*shell_blocks("A five-minute tour"), *shell_blocks("The CLI"), register,
              *shell_blocks("Monitoring"), *shell_blocks("Fault injection")]  # fmt: skip
    lines = {line for block in blocks for line in shell_lines(block)}
    return lines | {line for line in shell_lines(pve_side) if "openssl" in line}


def sections_own_lines(heading: str) -> set[str]:
    """The shell lines of a section, without those of its subsections."""
    return {line for block in shell_blocks(heading) for line in shell_lines(block)}


def test_every_documented_command_runs_somewhere() -> None:
    accounted = lines_run_here() | {line for heading in ELSEWHERE
                                    for line in sections_own_lines(heading)}  # fmt: skip
    pve_side, _ = shell_blocks("Connecting a real Proxmox node")
    on_the_node = {line for line in shell_lines(pve_side) if line.startswith(ON_THE_PVE_NODE)}
    assert len(on_the_node) == 4, on_the_node
    every = set(all_shell_lines())
    assert every - accounted - on_the_node == set(), "lines of README.md and docs/ no test runs"
    # the boot test takes the services section's lines by position: they are these
    services = sections_own_lines("Running as services")
    assert {line.split()[0] for line in services} == {"scripts/install-systemd", "sudo",
                                                      "sudoedit", "journalctl"}  # fmt: skip

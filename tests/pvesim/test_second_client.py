"""A second, independent PVE client against the simulator: npm's
``proxmox-api`` (TypeScript, undici) runs tests/pvesim/js/second_client.mjs,
which logs in both ways, reads the basics and takes one container through
create, start, DHCP, stop and destroy, plus one request PVE rejects."""

from __future__ import annotations

import ipaddress
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from proxmoxer import ResourceException

from tests.pvesim import helpers

JS_DIR = Path(__file__).resolve().parent / "js"
SCRIPT = JS_DIR / "second_client.mjs"

STEPS = [
    "ticket-login",
    "token-login",
    "nodes",
    "nextid",
    "storage",
    "templates",
    "bad-request",
    "create",
    "start",
    "dhcp-ip",
    "status-running",
    "stop",
    "destroy",
    "gone",
]


def _free_vmid(api: Any) -> int:
    """nextid plus a random offset, so tests sharing the simulator don't clash."""
    base = int(api.cluster.nextid.get())
    for _ in range(50):
        vmid = base + random.randint(5000, 5999)
        try:
            return int(api.cluster.nextid.get(vmid=vmid))
        except ResourceException:
            continue  # taken
    raise AssertionError("no free vmid found")


def _cleanup(api: Any, node: str, vmid: int) -> None:
    """Stop and destroy the container if the script left it behind."""
    if not any(int(c["vmid"]) == vmid for c in api.nodes(node).lxc.get()):
        return
    ct = api.nodes(node).lxc(vmid)
    if ct.status.current.get()["status"] == "running":
        helpers.wait_task(api, node, ct.status.stop.post())
    helpers.wait_task(api, node, ct.delete())


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_proxmox_api_npm_client(sim: dict[str, Any], tmp_path: Path) -> None:
    node_bin = shutil.which("node")
    if node_bin is None:
        pytest.skip("node is not installed")
    if not (JS_DIR / "node_modules" / "proxmox-api").is_dir():
        pytest.skip("tests/pvesim/js/node_modules is missing (run scripts/setup)")

    api = helpers.token_api(sim)
    node = sim["node"]
    vmid = _free_vmid(api)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "jsclient",
                    "-f", str(key)], check=True)  # fmt: skip
    host, port = helpers.host_port(sim)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "NODE_EXTRA_CA_CERTS": sim["cafile"],
        "PVE_HOST": host,
        "PVE_PORT": str(port),
        "PVE_USER": sim["user"],
        "PVE_PASSWORD": sim["password"],
        "PVE_TOKEN_ID": sim["token_id"],
        "PVE_TOKEN_SECRET": sim["token_secret"],
        "PVE_CAFILE": sim["cafile"],
        "PVE_NODE": node,
        "PVE_VMID": str(vmid),
        "PVE_SSH_KEY": key.with_suffix(".pub").read_text().strip(),
    }
    try:
        proc = subprocess.run([node_bin, str(SCRIPT)], cwd=JS_DIR, env=env,
                              capture_output=True, text=True, timeout=150)  # fmt: skip
        assert proc.returncode == 0, (
            f"second_client.mjs exited {proc.returncode}:\n{proc.stderr}{proc.stdout}"
        )
        lines = proc.stdout.strip().splitlines()
        assert lines, f"no output; stderr:\n{proc.stderr}"
        seen = json.loads(lines[-1])
    finally:
        _cleanup(api, node, vmid)

    assert seen["steps"] == STEPS
    assert seen["vmid"] == vmid
    assert seen["version"] == api.version.get()["version"]
    assert seen["template"].startswith("local:vztmpl/")
    assert ipaddress.ip_address(seen["ip"]) in ipaddress.ip_network(sim["subnet"])
    assert seen["ip"] != sim["gateway"]
    assert seen["status"] == "running"
    assert seen["bad_request"]["status"] == 400
    assert "minimum" in seen["bad_request"]["errors"]["memory"]
    assert not any(int(c["vmid"]) == vmid for c in api.nodes(node).lxc.get())

"""The create surface end to end (issue 19), on the simulator with a real
worker: a container with two interfaces (eth0 with a static IPv6 in the
simulator's /64, eth1 VLAN-tagged with a static address in its IPv4 subnet:
it routes no other), a 2 GiB data volume and a bind mount of an allowed host
directory (the node signed in as root@pam, as PVE requires) provisions to ready; PVE's config holds what was asked; the
volume's data survives a resync (checksum before and after), and the
volume is the same one (not recreated).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from provisioner.db import session_scope
from provisioner.models import AuthKind, Lifecycle, Node
from provisioner.reservations import Reservations
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import set_node_secret
from tests.pipeline.conftest import NODE, Stack, api_client, module_stack
from tests.pipeline.test_changes import terminal_after
from tests.pipeline.test_ownership import pve_client
from tests.pipeline.test_templates_e2e import ssh_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
MADE: list[str] = []
TEMPLATES = Path(__file__).parent / "templates"
DATA_FILE = "/data/payload.bin"
ETH1_HOST = 119  # below the simulator's DHCP pool, apart from other suites' static addresses


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The allowed host directory, with a file the container must see."""
    root = tmp_path_factory.mktemp("bind-allowed")
    (root / "site").mkdir()
    (root / "site" / "hello.txt").write_text("from the host\n")
    root.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def surface_stack(sim: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
                  shared: Path) -> Iterator[Stack]:  # fmt: skip
    with module_stack(sim, tmp_path_factory, "surface", MADE, [TEMPLATES],
                      {"PROVISIONER_BIND_MOUNT_ALLOW": str(shared)}) as stack:  # fmt: skip
        # the API's app is built on the stack's settings, the workers on its env
        stack.settings = dataclasses.replace(stack.settings, bind_mount_allow=(str(shared),))
        # PVE lets only root@pam itself set a bind mount, not an API token
        # (root@pam!NAME): the node signs in with root@pam's password
        box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
        with session_scope(stack.factory) as session:
            node = session.scalars(select(Node).where(Node.name == NODE)).one()
            node.auth_kind, node.pve_user, node.token_name = AuthKind.PASSWORD, sim["user"], None
            set_node_secret(box, node, sim["password"])
        yield stack


@pytest.fixture(scope="module")
def api(surface_stack: Stack) -> Iterator[Callable[..., Any]]:
    with api_client(surface_stack) as call:
        yield call


def test_two_interfaces_a_volume_and_a_bind_mount_provision_and_survive_a_resync(
    surface_stack: Stack, api: Callable[..., Any], shared: Path
) -> None:
    prefix = ipaddress.ip_network(surface_stack.sim["subnet"]).prefixlen
    eth1 = f"{surface_stack.address(ETH1_HOST)}/{prefix}"
    subnet6 = ipaddress.ip_network(surface_stack.sim["subnet6"])
    ip6 = f"{subnet6.network_address + 0x1910}/{subnet6.prefixlen}"
    gateway6 = surface_stack.sim["gateway6"]
    answer = api("POST", "/containers", {
        "template": "lines", "node": NODE, "hostname": "surface-1", "variables": {"count": 1},
        "ip6": ip6, "gateway6": gateway6,
        "nics": [{"ip": eth1, "vlan": 20, "firewall": True}],
        "mounts": [{"path": "/data", "size": 2}],
        "binds": [{"source": f"{shared}/site", "path": "/mnt/site", "ro": True}],
    })  # fmt: skip
    assert answer.status_code == 201, answer.json
    cid: str = answer.json["id"]
    MADE.append(cid)
    done = surface_stack.wait(cid, timeout=500)
    assert done.lifecycle == Lifecycle.READY, (done.error_message,
                                               surface_stack.worker_logs()[-3000:])  # fmt: skip
    assert done.vmid is not None

    # PVE's config: what was asked, the volume as PVE writes it back
    with pve_client(surface_stack) as pve:
        config = pve.get_config(done.vmid)
    assert f"ip6={ip6}" in config["net0"] and f"gw6={gateway6}" in config["net0"]
    assert "tag=20" in config["net1"] and "firewall=1" in config["net1"]
    assert config["mp0"].startswith(f"local-lvm:vm-{done.vmid}-disk-")
    assert "mp=/data" in config["mp0"] and "size=2G" in config["mp0"]
    assert config["mp1"] == f"{shared}/site,mp=/mnt/site,ro=1"
    volume = config["mp0"].split(",")[0]

    # inside: both interfaces with their addresses, the volume's size, the host's file
    inside = ssh_run(surface_stack, done, "ip -o addr show; df -BM --output=size /data | tail -1; "
                                          "cat /mnt/site/hello.txt")  # fmt: skip
    assert ip6 in inside
    assert "eth1" in inside and eth1 in inside
    assert "from the host" in inside
    assert any(line.strip().rstrip("M").isdigit() and 1800 <= int(line.strip().rstrip("M"))
               <= 2048 for line in inside.splitlines())  # fmt: skip

    # data written in the volume survives a resync, in the same volume
    before = ssh_run(surface_stack, done, f"head -c 3000000 /dev/urandom > {DATA_FILE} && sync "
                                          f"&& sha256sum {DATA_FILE}")  # fmt: skip
    after_seq = surface_stack.container(cid).next_seq - 1
    # PVE cannot snapshot a CT with a bind mount: no rollback is possible
    refused = api("POST", f"/containers/{cid}/actions/resync", {})
    assert refused.status_code == 409, refused.json
    assert "cannot snapshot a container with bind mounts (/mnt/site)" in refused.json["error"]
    snapshot = api("POST", f"/containers/{cid}/snapshots", {"name": "before"})
    assert snapshot.status_code == 409, snapshot.json
    resync = api("POST", f"/containers/{cid}/actions/resync", {"on_failure": "keep"})
    assert resync.status_code == 202, resync.json
    end = terminal_after(surface_stack, cid, after_seq, timeout=400)
    assert end.type == "complete", end.message
    ready = surface_stack.wait(cid)
    assert ready.lifecycle == Lifecycle.READY
    assert ssh_run(surface_stack, ready, f"sha256sum {DATA_FILE}") == before
    with pve_client(surface_stack) as pve:
        again = pve.get_config(done.vmid)
    assert again["mp0"].split(",")[0] == volume and again["mp1"] == config["mp1"]


def test_a_volume_keeps_its_data_through_a_change_of_options_and_into_a_clone(
    surface_stack: Stack, api: Callable[..., Any]
) -> None:
    """A change of options with a restart keeps the volume (same volume,
    same checksum); a full clone gets a volume of its own with the same
    data, and the source's is left as it was."""
    answer = api("POST", "/containers", {
        "template": "lines", "node": NODE, "hostname": "surface-2", "variables": {"count": 1},
        "mounts": [{"path": "/data", "size": 1}],
    })  # fmt: skip
    assert answer.status_code == 201, answer.json
    cid: str = answer.json["id"]
    MADE.append(cid)
    done = surface_stack.wait(cid, timeout=500)
    assert done.lifecycle == Lifecycle.READY, done.error_message
    with pve_client(surface_stack) as pve:
        volume = pve.get_config(done.vmid)["mp0"].split(",")[0]
    before = ssh_run(surface_stack, done, f"head -c 2000000 /dev/urandom > {DATA_FILE} && sync "
                                          f"&& sha256sum {DATA_FILE}")  # fmt: skip

    after_seq = surface_stack.container(cid).next_seq - 1
    change = api("PATCH", f"/containers/{cid}", {"memory": 768, "tags": ["surface"],
                                                  "restart": True})  # fmt: skip
    assert change.status_code == 202, change.json
    end = terminal_after(surface_stack, cid, after_seq, timeout=300)
    assert end.type == "complete", end.message
    changed = surface_stack.wait(cid)
    assert ssh_run(surface_stack, changed, f"sha256sum {DATA_FILE}") == before
    with pve_client(surface_stack) as pve:
        config = pve.get_config(done.vmid)
    assert config["mp0"].split(",")[0] == volume and config["memory"] == 768

    clone = api("POST", f"/containers/{cid}/clone", {"hostname": "surface-2-copy", "full": True})
    assert clone.status_code == 201, clone.json
    copy_id: str = clone.json["id"]
    MADE.append(copy_id)
    copy = surface_stack.wait(copy_id, timeout=500)
    assert copy.lifecycle == Lifecycle.READY, copy.error_message
    assert copy.vmid is not None and copy.vmid != done.vmid
    with pve_client(surface_stack) as pve:
        copy_volume = pve.get_config(copy.vmid)["mp0"].split(",")[0]
        assert pve.get_config(done.vmid)["mp0"].split(",")[0] == volume
    assert copy_volume != volume and copy_volume.endswith(f"vm-{copy.vmid}-disk-1")
    assert ssh_run(surface_stack, copy, f"sha256sum {DATA_FILE}") == before
    assert ssh_run(surface_stack, changed, f"sha256sum {DATA_FILE}") == before


def test_a_request_for_auto_is_placed_said_first_and_released_when_ready(
    surface_stack: Stack, api: Callable[..., Any]
) -> None:
    answer = api("POST", "/containers", {"template": "lines", "node": "auto",
                                         "hostname": "placed-1", "variables": {"count": 1}})  # fmt: skip
    assert answer.status_code == 201, answer.json
    cid: str = answer.json["id"]
    MADE.append(cid)
    assert answer.json["container"]["placement"]["node"] == NODE
    done = surface_stack.wait(cid, timeout=500)
    assert done.lifecycle == Lifecycle.READY, done.error_message
    events = api("GET", f"/containers/{cid}/events").json["events"]
    first = next(e for e in events if e["phase"] == "create")
    assert first["type"] == "step" and first["message"].startswith(f"placed on {NODE}: ")
    assert Reservations(surface_stack.redis).node_of(cid) is None  # used now: released

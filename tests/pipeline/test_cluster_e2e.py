"""A cluster (``pvesim serve --nodes 3``) registered node by node: requests
placed with ``node: auto`` spread over the nodes that may take them, and
containers moved between nodes (``migrate``) keep their data, their host
key and the ownership guard."""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from provisioner.db import session_scope
from provisioner.models import Container, Lifecycle, Node
from provisioner.nodes import client_for
from provisioner.ownership import prove
from provisioner.secrets.keyfile import load_secret_box
from tests.conftest import start_simulator, stop_simulator
from tests.pipeline.conftest import NODE, Stack, api_client, module_stack
from tests.pipeline.test_changes import terminal_after
from tests.pipeline.test_templates_e2e import ssh_run
from tests.pvesim.helpers import admin, token_api, wait_task

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.geteuid() != 0, reason="the simulator needs root"),
]
MADE: list[str] = []
DATA_FILE = "/data/payload.bin"
TEMPLATES = Path(__file__).parent / "templates"


@pytest.fixture(scope="module")
def cluster_sim() -> Iterator[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="pvesim-cl-e2e-") as tmp:
        proc, info = start_simulator(Path(tmp) / "state", "--nodes", "3")
        try:
            yield info
        finally:
            stop_simulator(proc)


@pytest.fixture(scope="module")
def cluster_stack(cluster_sim: dict[str, Any],
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # fmt: skip
    """Node "sim" is the cluster's first node; the other two are found
    through it and registered with their fingerprints confirmed (the API's
    peers), as an operator would."""
    with module_stack(cluster_sim, tmp_path_factory, "cluster", MADE, [TEMPLATES]) as stack:
        with api_client(stack) as call:
            found = call("GET", f"/nodes/{NODE}/peers")
            assert found.status_code == 200, found.json
            assert found.json["cluster"] == cluster_sim["cluster"]
            reported = {p["name"]: p["fingerprint"] for p in found.json["peers"]}
            expected = {n["node"]: n["fingerprint"] for n in cluster_sim["nodes"][1:]}
            assert reported == expected  # what each node's own TLS presents
            wrong = call("POST", f"/nodes/{NODE}/peers", {"add": [
                {"name": name, "fingerprint": "AA:" * 31 + "AA"} for name in expected]})  # fmt: skip
            assert wrong.status_code == 409 and "not the AA:AA" in wrong.json["error"]
            added = call("POST", f"/nodes/{NODE}/peers", {"add": [
                {"name": name, "fingerprint": fp} for name, fp in expected.items()]})  # fmt: skip
            assert added.status_code == 201, added.json
            assert [n["name"] for n in added.json["added"]] == sorted(expected)
        with session_scope(stack.factory) as session:
            for node in session.scalars(select(Node)):
                assert node.cluster == cluster_sim["cluster"]
                node.default_storage, node.default_bridge = "local-lvm", "vmbr0"
        yield stack


@pytest.fixture(scope="module")
def api(cluster_stack: Stack) -> Iterator[Callable[..., Any]]:
    with api_client(cluster_stack) as call:
        yield call


def _maintenance(stack: Stack, *names: str) -> None:
    with session_scope(stack.factory) as session:
        session.execute(update(Node).values(maintenance=Node.name.in_(names)))


def _node_of(stack: Stack, cid: str) -> str:
    with stack.factory() as session:
        ct = session.get(Container, cid)
        assert ct is not None
        return ct.node.name


def _submit(api: Callable[..., Any], hostname: str, **fields: Any) -> str:
    answer = api("POST", "/containers", {"template": "lines", "hostname": hostname,
                                         "variables": {"count": 1}, **fields})  # fmt: skip
    assert answer.status_code == 201, answer.json
    cid: str = answer.json["id"]
    MADE.append(cid)
    return cid


def test_a_burst_for_auto_spreads_over_the_nodes_not_in_maintenance(
    cluster_stack: Stack, api: Callable[..., Any], cluster_sim: dict[str, Any]
) -> None:
    third = cluster_sim["nodes"][2]["node"]
    _maintenance(cluster_stack, third)
    cluster_stack.stop_workers()  # a burst: all four in flight at once, none created yet
    try:
        cids = [_submit(api, f"spread-{i}", node="auto") for i in range(4)]
        # the cluster view shows the burst in flight where it was placed
        view = {n["name"]: n for n in api("GET", "/cluster").json["nodes"]}
        assert {n["status"] for n in view.values()} == {"online"}, view
        assert view[third]["maintenance"] and view[third]["in_flight"] == 0
        assert sorted(n["in_flight"] for n in view.values()) == [0, 2, 2], view
        assert all(0 < n["memory_committed"] <= n["memory_total"] and n["cpus"] > 0
                   and n["disk_total"] > 0 for n in view.values()), view  # fmt: skip
    finally:
        _maintenance(cluster_stack)
        cluster_stack.start_workers(1)
    for cid in cids:
        assert cluster_stack.wait(cid, timeout=500).lifecycle == Lifecycle.READY
    placed = Counter(_node_of(cluster_stack, cid) for cid in cids)
    assert third not in placed and sorted(placed.values()) == [2, 2], placed


def test_a_running_container_moves_with_its_volume_its_data_and_its_host_key(
    cluster_stack: Stack, api: Callable[..., Any], cluster_sim: dict[str, Any]
) -> None:
    second = cluster_sim["nodes"][1]["node"]
    cid = _submit(api, "mover", node=NODE, mounts=[{"path": "/data", "size": 1}])
    done = cluster_stack.wait(cid, timeout=500)
    assert done.lifecycle == Lifecycle.READY, done.error_message
    before = ssh_run(cluster_stack, done, f"head -c 1000000 /dev/urandom > {DATA_FILE} && sync "
                                          f"&& sha256sum {DATA_FILE}")  # fmt: skip
    for to, says in ((NODE, "is on node sim already"), ("nowhere", "no node named 'nowhere'")):
        refused = api("POST", f"/containers/{cid}/migrate", {"to": to})
        assert refused.status_code == 400 and refused.json["field"] == "to", refused.json
        assert says in refused.json["error"]

    after = cluster_stack.container(cid).next_seq - 1
    moved = api("POST", f"/containers/{cid}/migrate", {"to": second})
    assert moved.status_code == 202, moved.json
    end = terminal_after(cluster_stack, cid, after, timeout=300)
    assert end.type == "complete" and end.message == f"moved to node {second} and running there"
    assert _node_of(cluster_stack, cid) == second
    ct = cluster_stack.container(cid)
    assert ct.lifecycle == Lifecycle.READY and ct.vmid == done.vmid
    box = load_secret_box(cluster_stack.settings.secret_key,
                          cluster_stack.settings.secret_key_file)  # fmt: skip
    with cluster_stack.factory() as session:
        node = session.scalars(select(Node).where(Node.name == second)).one()
        with client_for(node, box) as pve:
            assert prove(pve, cid, done.vmid).node == second  # PVE has it there, ours
            assert pve.get_config(done.vmid)["mp0"].startswith("local-lvm:")
    # the same host key (pinned at provisioning), the same data
    assert ssh_run(cluster_stack, ct, f"sha256sum {DATA_FILE}") == before
    events = api("GET", f"/containers/{cid}/events?after={after}").json["events"]
    assert any(e["message"].startswith(f"moving CT {done.vmid} from node {NODE} to node "
                                       f"{second} (restart mode") for e in events)  # fmt: skip

    # auto: placement among the other nodes of the cluster
    after = cluster_stack.container(cid).next_seq - 1
    again = api("POST", f"/containers/{cid}/migrate", {"to": "auto"})
    assert again.status_code == 202, again.json
    assert again.json["placement"].startswith("placed on ")
    end = terminal_after(cluster_stack, cid, after, timeout=300)
    assert end.type == "complete", end.message
    assert _node_of(cluster_stack, cid) not in (second,)


def test_a_move_of_a_container_that_is_not_ours_writes_nothing(
    cluster_stack: Stack, api: Callable[..., Any], cluster_sim: dict[str, Any]
) -> None:
    """The ownership guard: a record whose CT now carries another marker is
    not moved; the CT stays where it is, untouched."""
    second = cluster_sim["nodes"][1]["node"]
    cid = _submit(api, "not-ours", node=NODE)
    done = cluster_stack.wait(cid, timeout=500)
    assert done.lifecycle == Lifecycle.READY and done.vmid is not None
    box = load_secret_box(cluster_stack.settings.secret_key,
                          cluster_stack.settings.secret_key_file)  # fmt: skip
    with cluster_stack.factory() as session:
        first = session.scalars(select(Node).where(Node.name == NODE)).one()
        with client_for(first, box) as pve:
            pve._request("PUT", f"/nodes/{first.pve_node}/lxc/{done.vmid}/config",
                         {"description": "someone else's now"})  # fmt: skip
    after = cluster_stack.container(cid).next_seq - 1
    moved = api("POST", f"/containers/{cid}/migrate", {"to": second})
    assert moved.status_code == 202, moved.json
    end = terminal_after(cluster_stack, cid, after, timeout=300)
    assert end.type == "error" and "belongs to another container" in end.message
    with cluster_stack.factory() as session:
        first = session.scalars(select(Node).where(Node.name == NODE)).one()
        with client_for(first, box) as pve:
            assert pve.get_config(done.vmid)["description"].startswith("someone else's")
    assert _node_of(cluster_stack, cid) == NODE


def test_a_drain_moves_every_container_off_the_node_one_at_a_time(
    cluster_stack: Stack, api: Callable[..., Any], cluster_sim: dict[str, Any]
) -> None:
    second = cluster_sim["nodes"][1]["node"]
    cids = [_submit(api, f"drained-{i}", node=second) for i in range(2)]
    for cid in cids:
        assert cluster_stack.wait(cid, timeout=500).lifecycle == Lifecycle.READY
    with cluster_stack.factory() as session:
        node = session.scalars(select(Node).where(Node.name == second)).one()
        on_it = {c.id for c in session.scalars(select(Container).where(
            Container.node_id == node.id, Container.lifecycle == Lifecycle.READY))}  # fmt: skip
    assert set(cids) <= on_it
    answer = api("POST", f"/nodes/{second}/drain", {})
    assert answer.status_code == 202, answer.json
    assert {m["id"] for m in answer.json["moving"]} == on_it
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if all(_node_of(cluster_stack, cid) != second for cid in on_it):
            break
        time.sleep(1)
    moved = {cid: _node_of(cluster_stack, cid) for cid in on_it}
    assert second not in moved.values(), moved
    for cid in on_it:
        ct = cluster_stack.wait(cid)
        assert ct.lifecycle == Lifecycle.READY
        events = api("GET", f"/containers/{cid}/events?limit=2000").json["events"]
        starts = [e for e in events if e["message"].startswith(f"moving CT {ct.vmid} from node "
                                                                 f"{second} to node ")]  # fmt: skip
        assert len(starts) == 1, [e["message"] for e in events[-10:]]
    # placement skips the node while it is in maintenance; undrain ends that
    preview = api("POST", "/placement", {"template": "lines"})
    assert preview.json["skipped"][second] == "maintenance"
    assert api("POST", f"/nodes/{second}/undrain").json["maintenance"] is False
    assert second not in api("POST", "/placement", {"template": "lines"}).json["skipped"]


def test_a_run_waits_for_its_node_to_come_back(
    cluster_stack: Stack, api: Callable[..., Any], cluster_sim: dict[str, Any]
) -> None:
    """A node offline (its listener closed, 595 through the others) when
    the run starts: the run says it waits, goes on when the node answers
    again, and ends ready; placement meanwhile leaves the node out."""
    third = cluster_sim["nodes"][2]["node"]
    admin(cluster_sim, "node-offline", {"node": third, "seconds": 8})
    preview = api("POST", "/placement", {"template": "lines"})
    assert preview.json["skipped"][third].startswith(("offline", "unreachable")), preview.json
    view = {n["name"]: n for n in api("GET", "/cluster").json["nodes"]}
    assert view[third]["status"] in ("offline", "unreachable"), view[third]
    assert [n["status"] for name, n in view.items() if name != third] == ["online", "online"]
    cid = _submit(api, "patient", node=third)
    ct = cluster_stack.wait(cid, timeout=300)
    assert ct.lifecycle == Lifecycle.READY, ct.error_message
    events = api("GET", f"/containers/{cid}/events?limit=2000").json["events"]
    (waiting,) = [e for e in events if e["type"] == "warning"]
    assert f"waiting up to 900s for node {third} to answer" in waiting["message"]
    assert [e for e in events if e["type"] == "step" and "answers again" in e["message"]]


def test_a_container_moved_outside_the_provisioner_is_followed(
    cluster_stack: Stack, api: Callable[..., Any], cluster_sim: dict[str, Any]
) -> None:
    """Someone migrates the CT in PVE itself: the next run's guard finds it,
    ours, on the other node of the cluster and the record follows it
    (rather than taking it for gone)."""
    first, second = cluster_sim["nodes"][0]["node"], cluster_sim["nodes"][1]["node"]
    cid = _submit(api, "wanderer", node=NODE)
    done = cluster_stack.wait(cid, timeout=500)
    assert done.lifecycle == Lifecycle.READY and done.vmid is not None
    pve = token_api(cluster_sim)
    upid = pve.nodes(first).lxc(done.vmid).migrate.post(target=second, restart=1)
    assert wait_task(pve, first, upid, 120)["exitstatus"] == "OK"
    after = cluster_stack.container(cid).next_seq - 1
    stopped = api("POST", f"/containers/{cid}/actions/stop")
    assert stopped.status_code == 202, stopped.json
    end = terminal_after(cluster_stack, cid, after, timeout=300)
    assert end.type == "complete", end.message
    assert _node_of(cluster_stack, cid) == second
    ct = cluster_stack.container(cid)
    assert ct.vmid == done.vmid and ct.lifecycle == Lifecycle.READY
    events = api("GET", f"/containers/{cid}/events?after={after}").json["events"]
    assert any(e["type"] == "warning" and e["message"] == (
        f"CT {done.vmid} is on node {second} now (moved outside the provisioner); the record "
        "follows it") for e in events)  # fmt: skip
    assert pve.nodes(second).lxc(done.vmid).status.current.get()["status"] == "stopped"

"""The ownership guard's decisions and its reach, without fixtures."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from provisioner.live import NodeStatus, merge
from provisioner.ownership import NO_CONTAINER_HINT, Claim, NotOurs, claims_in_doubt, judge
from provisioner.pve.client import PveClient
from provisioner.pve.types import ContainerStatus, Owned
from provisioner.templates.params import marker_line
from tests.conftest import ROOT

CID = "0b6c3f3e-8a1e-4c55-9a59-3a8d2f0e7d11"
OTHER = "5e0d1b2a-0000-4000-8000-000000000000"


def config(marker: str | None, hostname: str = "web1") -> dict[str, object]:
    lines = ["nginx: a web server"] + (["", marker_line(marker)] if marker else [])
    return {"hostname": hostname, "description": "\n".join(lines), "digest": "abc"}


def test_our_marker_on_our_node_is_proof() -> None:
    assert judge("pve", 108, CID, config(CID)) == Owned("pve", 108, CID)


@pytest.mark.parametrize(
    ("found", "message"),
    [
        (None, "CT 108 no longer exists on node pve; this record owns no container"),
        (config(OTHER, "b1"), "CT 108 on node pve belongs to another container now "
                              "(hostname b1); this record owns no container"),
        (config(None, "hand-made"), "CT 108 on node pve belongs to another container now "
                                    "(hostname hand-made); this record owns no container"),
        ({"description": "lxc-provisioner-id: " + CID + "x"}, "CT 108 on node pve belongs to "
         "another container now (hostname CT108); this record owns no container"),
    ],
)  # fmt: skip
def test_anything_else_is_not_ours(found: dict[str, object] | None, message: str) -> None:
    with pytest.raises(NotOurs) as info:
        judge("pve", 108, CID, found)
    assert info.value.message == message and info.value.hint == NO_CONTAINER_HINT
    assert info.value.vmid == 108 and info.value.gone == (found is None)


def status(vmid: int, name: str) -> ContainerStatus:
    return ContainerStatus.from_api({"vmid": vmid, "name": name, "status": "running"})


def test_claims_in_doubt_are_those_the_list_cannot_confirm() -> None:
    listed = {108: status(108, "b1"), 109: status(109, "c1")}
    a1, b1 = Claim("a", "a1", 108), Claim("b", "b1", 108)  # two records, one CT
    c1, d1 = Claim("c", "c1", 109), Claim("d", "d1", 110)  # confirmed; missing (not in doubt)
    renamed = Claim("e", "old-name", 109)
    assert claims_in_doubt([a1, b1, c1, d1], listed) == [a1, b1]
    assert claims_in_doubt([c1, renamed], listed) == [c1, renamed]
    assert claims_in_doubt([c1, d1], listed) == []


def test_merge_says_which_records_own_no_container() -> None:
    node = NodeStatus({108: status(108, "b1")}, lost={"a": "CT 108 ... no container"},
                      pve_node="pve")  # fmt: skip
    owned = merge({"id": "b", "vmid": 108, "owns_container": True}, node, True)
    assert owned["pve"]["status"] == "running" and owned["owns_container"] is True
    lost = merge({"id": "a", "vmid": 108, "owns_container": True}, node, True)
    assert lost["pve"] is None and lost["owns_container"] is False
    assert lost["pve_error"] == "CT 108 ... no container"
    gone = merge({"id": "c", "vmid": 120, "owns_container": True}, node, True)
    assert gone["owns_container"] is False
    assert gone["pve_error"] == "CT 120 no longer exists on node pve; this record owns no container"
    down = merge({"id": "b", "vmid": 108, "owns_container": True}, NodeStatus({}, "down"), True)
    assert down["pve_error"] == "down" and down["owns_container"] is True  # unknown, not lost


# -- the guard's reach: no PVE write to an existing CT without proof -----------------------

WRITES = ("start", "stop", "shutdown", "reboot", "destroy", "clone", "snapshot_create",
          "snapshot_delete", "snapshot_rollback", "put_config")  # fmt: skip


def test_every_write_to_an_existing_ct_takes_a_proof() -> None:
    for name in WRITES:
        first = list(inspect.signature(getattr(PveClient, name)).parameters.values())[1]
        assert first.name == "ct" and first.annotation in ("Owned", Owned), name


def test_the_client_refuses_a_proof_from_another_node() -> None:
    from provisioner.errors import PvePermanentError
    from provisioner.pve.http import PveConnection, TokenAuth

    connection = PveConnection(host="127.0.0.1", port=1, node="pve1",
                               auth=TokenAuth("u@pve!t", "secret"))  # fmt: skip
    with PveClient(connection) as client, pytest.raises(PvePermanentError,
                                                        match="proven on node pve2"):  # fmt: skip
        client.start(Owned("pve2", 108, CID))


def test_only_the_guard_makes_proofs() -> None:
    """In the product, an ``Owned`` comes from ``ownership.judge`` alone."""
    makers = []
    for package in ("provisioner", "cli", "pipeline", "web", "pvesim"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id == "Owned"):  # fmt: skip
                    makers.append(f"{Path(path).relative_to(ROOT)}:{node.lineno}")
    assert len(makers) == 1 and makers[0].startswith("provisioner/ownership.py:"), makers

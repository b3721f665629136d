"""Converting a container to a template and what a template then allows, and
the datacenter's storage list: shared simulator, vmids 7700-7799."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxmoxer import ResourceException

from tests.pvesim.helpers import task_log, ticket_api, token_api, wait_task
from tests.pvesim.test_containers import Containers, ok

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(sim: dict[str, Any]) -> Any:
    return token_api(sim)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture()
def cts(api: Any, sim: dict[str, Any], key: Path) -> Iterator[Containers]:
    made = Containers(api, sim, key)
    yield made
    made.cleanup()


def _template_task(api: Any, vmid: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = api.nodes("pve").tasks.get(source="all", typefilter="vztemplate", vmid=vmid)
        if found and found[0].get("status") != "RUNNING":
            return dict(found[0])
        time.sleep(0.05)
    raise TimeoutError(f"no vztemplate task of CT {vmid} ended")


def test_convert_to_template_and_what_a_template_refuses(cts: Containers, api: Any) -> None:
    """pve-container API2/LXC.pm ``template``: null answered, a ``vztemplate``
    task runs PVE::LXC::template_create (LvmThinPlugin create_base renames
    each volume ``vm-`` to ``base-``) and writes ``template: 1``; a template
    is refused as a template again (500), at start (PVE::API2::LXC::Status
    vm_start, in the task), at snapshot (__snapshot_prepare, in the task);
    ``vm_feature`` reports LvmThinPlugin's features (clone of a base: yes,
    snapshot: no); a clone of it is linked by default (clone_vm) and gets
    ``vm-`` volumes."""
    node = api.nodes("pve")
    cts.create(7700, rootfs="1", mp0="local-lvm:0.5,mp=/data")
    assert node.lxc(7700).feature.get(feature="snapshot")["hasFeature"] == 1
    assert node.lxc(7700).feature.get(feature="clone")["hasFeature"] == 0
    assert node.lxc(7700).template.post() is None
    assert _template_task(api, 7700)["status"] == "OK"
    config = node.lxc(7700).config.get()
    assert config["template"] == 1
    assert config["rootfs"].startswith("local-lvm:base-7700-disk-0,")
    assert config["mp0"].startswith("local-lvm:base-7700-disk-1,mp=/data")
    content = {v["volid"] for v in node.storage("local-lvm").content.get(vmid=7700)}
    assert {"local-lvm:base-7700-disk-0", "local-lvm:base-7700-disk-1"} <= content
    with pytest.raises(ResourceException) as info:
        node.lxc(7700).template.post()
    assert info.value.status_code == 500
    assert "you can't convert a template to a template" in info.value.content
    started = wait_task(api, "pve", node.lxc(7700).status.start.post())
    assert started["exitstatus"] == "you can't start a CT if it's a template"
    snap = wait_task(api, "pve", node.lxc(7700).snapshot.post(snapname="s1"))
    assert snap["exitstatus"] == "you can't take a snapshot if it's a template"
    assert node.lxc(7700).feature.get(feature="clone")["hasFeature"] == 1
    assert node.lxc(7700).feature.get(feature="snapshot")["hasFeature"] == 0

    cts.made.append(7701)
    log = ok(api, node.lxc(7700).clone.post(newid=7701, hostname="ct7701"))
    assert "create linked clone of mount point rootfs (local-lvm:base-7700-disk-0)" in log
    clone = node.lxc(7701).config.get()
    assert clone["rootfs"].startswith("local-lvm:vm-7701-disk-0,")
    assert clone["mp0"].startswith("local-lvm:vm-7701-disk-1,")
    assert "template" not in clone


def test_a_template_with_a_bind_mount_is_refused_in_the_task(
    sim: dict[str, Any], key: Path, tmp_path: Path
) -> None:
    """PVE::LXC::template_create: every volume needs the ``template`` feature
    (PVE::Storage::volume_has_feature: none for a path), checked in the task
    before any volume is renamed.  (A bind mount needs root@pam: a ticket.)"""
    api = ticket_api(sim)
    node = api.nodes("pve")
    tmp_path.chmod(0o755)
    cts = Containers(api, sim, key)
    try:
        cts.create(7702, rootfs="1", mp0=f"{tmp_path},mp=/host")
        node.lxc(7702).template.post()
        task = _template_task(api, 7702)
        assert task["status"] == f"Template feature is not available for '{tmp_path}'"
        assert task_log(api, "pve", task["upid"])[-1].startswith("TASK ERROR: Template feature")
        config = node.lxc(7702).config.get()
        assert "template" not in config and "vm-7702-disk-0" in config["rootfs"]
    finally:
        cts.cleanup()


def test_datacenter_storage_list(api: Any) -> None:
    """pve-storage PVE::API2::Storage::Config index and read
    (``$api_storage_config``): the sections of storage.cfg as the installer
    writes them, with ``storage`` and the file's ``digest``; ``type``
    filters."""
    listed = api.storage.get()
    assert [s["storage"] for s in listed] == ["local", "local-lvm"]
    local, lvm = listed
    assert (local["type"], local["path"], local["content"]) == ("dir", "/var/lib/vz",
                                                                 "backup,iso,vztmpl")  # fmt: skip
    assert (lvm["type"], lvm["thinpool"], lvm["vgname"]) == ("lvmthin", "data", "pve")
    assert lvm["content"] == "images,rootdir"
    assert len(local["digest"]) == 40 and local["digest"] == lvm["digest"]
    assert [s["storage"] for s in api.storage.get(type="lvmthin")] == ["local-lvm"]
    assert api.storage.get(type="nfs") == []
    assert api.storage("local-lvm").get() == lvm
    with pytest.raises(ResourceException) as info:
        api.storage("nope").get()
    assert "storage 'nope' does not exist" in info.value.content

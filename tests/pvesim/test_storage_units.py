"""Storage rules as pve-storage has them: pure logic, without a running
simulator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pvesim import storage, volumes
from pvesim.storage_specs import storage_cfg


def test_free_disk_name_skips_a_templates_base_volumes(tmp_path: Path) -> None:
    """PVE::Storage::Plugin::get_next_vm_diskname counts ``base-VMID-disk-K``
    as taken as well as ``vm-VMID-disk-K``; LvmThinPlugin list_images lists
    both."""
    for name in ("base-100-disk-0", "vm-100-disk-1", "vm-1000-disk-2"):
        (tmp_path / "volumes" / "local-lvm" / name).mkdir(parents=True)
    assert volumes.owned_volumes(tmp_path, 100) == ["local-lvm:base-100-disk-0",
                                                    "local-lvm:vm-100-disk-1"]  # fmt: skip
    assert volumes.free_disk_name(tmp_path, "local-lvm", 100) == "local-lvm:vm-100-disk-2"
    assert volumes.free_disk_name(tmp_path, "local-lvm", 1000) == "local-lvm:vm-1000-disk-0"


@pytest.mark.parametrize(
    ("feature", "volid", "snapname", "has"),
    [
        ("template", "local-lvm:vm-100-disk-0", None, True),
        ("template", "local-lvm:base-100-disk-0", None, False),
        ("clone", "local-lvm:base-100-disk-0", None, True),
        ("clone", "local-lvm:vm-100-disk-0", None, False),
        ("clone", "local-lvm:vm-100-disk-0", "s1", True),
        ("snapshot", "local-lvm:vm-100-disk-0", None, True),
        ("snapshot", "local-lvm:base-100-disk-0", None, False),
        ("copy", "local-lvm:base-100-disk-0", None, True),
        ("template", "/srv/data", None, False),
    ],
)
def test_volume_features_as_lvmthin(feature: str, volid: str, snapname: str | None,
                                    has: bool) -> None:  # fmt: skip
    """PVE::Storage::volume_has_feature: LvmThinPlugin's table, keyed by
    snap / base / current; a path (bind mount) has no feature."""
    assert storage.volume_has_feature(feature, volid, snapname) is has


def test_datacenter_storages_are_storage_cfg_sections() -> None:
    """pve-storage API2/Storage/Config.pm index: ``$api_storage_config`` per
    section, ``digest`` the SHA-1 of storage.cfg; ``type`` filters."""
    listed = storage.datacenter_storages(None)
    assert listed[0] == {"storage": "local", "type": "dir", "path": "/var/lib/vz",
                         "content": "backup,iso,vztmpl",
                         "digest": hashlib.sha1(storage_cfg().encode()).hexdigest()}  # fmt: skip
    assert storage_cfg().startswith(
        "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n"
    )
    assert [s["storage"] for s in storage.datacenter_storages("lvmthin")] == ["local-lvm"]

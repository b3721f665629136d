"""The pure rules of day-two changes (provisioner/changes.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from provisioner.changes import auto_snapshot_name, to_prune
from provisioner.pve.types import SnapshotInfo

NOW = datetime(2026, 12, 7, 1, 36, 54, tzinfo=UTC)


def test_a_safety_snapshot_is_named_after_its_change_and_second() -> None:
    assert auto_snapshot_name("promote", NOW) == "auto-promote-20261207-013654"


def test_two_changes_in_one_second_get_two_names() -> None:
    # CI met this: a promote right after another took the same name, and PVE
    # refused the second snapshot ("snapshot name ... already used").
    first = auto_snapshot_name("promote", NOW)
    second = auto_snapshot_name("promote", NOW, {first, "snap-20261207-013654"})
    third = auto_snapshot_name("promote", NOW, {first, second})
    assert (second, third) == (f"{first}-2", f"{first}-3")
    assert auto_snapshot_name("resync", NOW, {first}) == "auto-resync-20261207-013654"


def test_pruning_keeps_the_newest_safety_snapshots_and_every_users() -> None:
    snaps = [SnapshotInfo("auto-set-1", snaptime=1), SnapshotInfo("mine", snaptime=2),
             SnapshotInfo("auto-set-3", snaptime=3), SnapshotInfo("auto-set-3-2", snaptime=3),
             SnapshotInfo("auto-set-4", snaptime=4)]  # fmt: skip
    assert to_prune(snaps, 2) == ["auto-set-1", "auto-set-3"]
    assert to_prune(snaps, 2, spare="auto-set-1") == ["auto-set-3", "auto-set-3-2"]
    assert to_prune(snaps, 10) == []

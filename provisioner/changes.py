"""Day-two changes of a container: snapshots, ``set``, and the safety
snapshot that lets a change roll back (pure rules; no I/O).

An operation with parameters (a snapshot's name, the settings of a ``set``)
is stored as an :class:`~provisioner.models.Operation` row; its job carries
only the container id, the action and the operation id.  The rules here are
applied by the CLI and the REST API before anything is queued (every
problem names its field: ``"memory: ..."``) and by the run again against
the container's live config before any PVE write.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from provisioner.errors import ConfigError
from provisioner.pve.types import SnapshotInfo

# what a change does when it fails after its safety snapshot
ON_FAILURE = ("rollback", "keep")
AUTO_PREFIX = "auto-"  # the safety snapshots, pruned to PROVISIONER_AUTO_SNAPSHOTS_KEEP
# PVE's snapshot names: the pve-configid format, at most 40 characters
SNAPSHOT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]+")
MAX_SNAPSHOT_NAME = 40
RESERVED_SNAPSHOT_NAMES = ("current", "vzdump")  # PVE refuses them
MAX_DESCRIPTION = 8192  # PVE's limit on a config description
MAX_CORES = 8192  # PVE's bounds of cores, memory (MiB) and swap
MIN_MEMORY = 16
TAG = re.compile(r"[a-z0-9_][a-z0-9_+.-]*", re.I)  # PVE's pve-tag
SYSTEM_TAG = "provisioner"  # every container of ours carries it; a set keeps it
# environments: these three are offered; any name of this shape is taken
ENVIRONMENTS = ("production", "staging", "development")
ENVIRONMENT_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
PROTECTED_ENVIRONMENT = "production"  # its containers get PVE's protection flag


def check_environment(name: str | None) -> str | None:
    """An environment name (lower case letters, digits, '-'), or None.

    Raises:
        ConfigError: ``environment: ...``.
    """
    if name is None or name == "":
        return None
    if not ENVIRONMENT_NAME.fullmatch(name):
        raise ConfigError(f"environment: 1-32 lower-case letters, digits or '-', starting with "
                          f"a letter (e.g. {', '.join(ENVIRONMENTS)}); got {name!r}")  # fmt: skip
    return name


def check_snapshot_name(name: str, field_name: str = "name") -> str:
    """A snapshot name PVE takes, and not one of the safety snapshots'.

    Raises:
        ConfigError: ``name: ...``.
    """
    if not SNAPSHOT_NAME.fullmatch(name) or len(name) > MAX_SNAPSHOT_NAME:
        raise ConfigError(f"{field_name}: a snapshot name is 2 to {MAX_SNAPSHOT_NAME} letters, "
                          f"digits, '-' or '_', starting with a letter; got {name!r}")  # fmt: skip
    if name.lower() in RESERVED_SNAPSHOT_NAMES:
        raise ConfigError(f"{field_name}: {name!r} is reserved by Proxmox VE")
    return name


def check_snapshot_description(text: str | None) -> str | None:
    if text is None:
        return None
    if len(text) > MAX_DESCRIPTION:
        raise ConfigError(f"description: at most {MAX_DESCRIPTION} characters")
    return text


def stamp(now: datetime) -> str:
    return now.strftime("%Y%m%d-%H%M%S")


def default_snapshot_name(now: datetime) -> str:
    """The name of a snapshot asked for without one: ``snap-20261206-081500``."""
    return f"snap-{stamp(now)}"


def auto_snapshot_name(action: str, now: datetime, taken: Collection[str] = ()) -> str:
    """The safety snapshot before a change: ``auto-resync-20261206-081500``,
    or ``...-081500-2`` (``-3``...) when a snapshot of ``taken`` has that
    name (two changes in one second)."""
    base = f"{AUTO_PREFIX}{action}-{stamp(now)}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def to_prune(
    snapshots: Iterable[SnapshotInfo], keep: int, *, spare: str | None = None
) -> list[str]:
    """The safety snapshots beyond the newest ``keep`` (oldest first); the
    snapshots users took, and ``spare``, are never pruned."""
    auto = sorted((s for s in snapshots if s.name.startswith(AUTO_PREFIX) and s.name != spare),
                  key=lambda s: (s.snaptime, s.name))  # fmt: skip
    room = max(keep - (1 if spare else 0), 0)
    return [s.name for s in auto[: max(len(auto) - room, 0)]]


def newer_than(snapshots: Sequence[SnapshotInfo], name: str) -> list[str]:
    """The snapshots taken after ``name`` (by time)."""
    target = next((s for s in snapshots if s.name == name), None)
    if target is None:
        return []
    return [s.name for s in snapshots if s.snaptime > target.snaptime]


def rollback_warning(snap: SnapshotInfo, running: bool | None) -> str:
    """What a rollback to ``snap`` loses, said before it is asked for."""
    when = datetime.fromtimestamp(snap.snaptime).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    restart = " The container is stopped for the rollback and started again." if running else ""
    return (f"Rolling back to '{snap.name}' ({when}) loses everything written to the "
            f"container since then: files, databases, packages, and its configuration "
            f"(cores, memory, swap, disk size) as it is now; the description stays.{restart}")  # fmt: skip


@dataclass(frozen=True)
class SafeChange:
    """A change in flight (``Container.safe_change``): the safety snapshot
    taken before it, what to do on failure, and the record's state to put
    back after a rollback.  A run that resumes after its worker died finds
    it here."""

    action: str
    snapshot: str
    on_failure: str = "rollback"
    lifecycle: str = "ready"
    finished_phases: list[str] = field(default_factory=list)
    finished_scripts: list[str] = field(default_factory=list)
    running: bool = True
    operation: str | None = None  # the Operation row of the change

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SafeChange | None:
        if not data:
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def check_on_failure(value: str | None) -> str:
    value = value or "rollback"
    if value not in ON_FAILURE:
        raise ConfigError(f"on_failure: must be one of {', '.join(ON_FAILURE)}, got {value!r}")
    return value


def parse_size_gib(volume: str) -> float | None:
    """The size of a ``rootfs``/``mpN`` value in GiB (``size=8G``), if given."""
    match = re.search(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)(?:,|$)", volume)
    if match is None:
        return None
    scale = {"": 1 / 1024**3, "K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}
    return float(match.group(1)) * scale[match.group(2)]


@dataclass(frozen=True, kw_only=True)
class SetRequest:
    """What ``provisioner set`` may change in place; None: unchanged.

    Attributes:
        cores, memory, swap: resources (memory and swap in MiB).
        disk: the root disk's new size in GiB: larger than now (PVE grows
            a disk; it never shrinks one).
        tags: the container's tags (``provisioner`` is always kept).
        onboot: start with the node.
        description: the text shown in PVE (the record's marker is kept).
        protection: PVE's protection flag (no destroy, and here no rollback).
        restart: reboot afterwards, so what PVE applies only at a restart
            takes effect.
        on_failure: ``rollback`` (the default) or ``keep``.
    """

    cores: int | None = None
    memory: int | None = None
    swap: int | None = None
    disk: int | None = None
    tags: tuple[str, ...] | None = None
    onboot: bool | None = None
    description: str | None = None
    protection: bool | None = None
    restart: bool = False
    on_failure: str = "rollback"

    CHANGES = ("cores", "memory", "swap", "disk", "tags", "onboot", "description", "protection")

    def changed(self) -> list[str]:
        return [name for name in self.CHANGES if getattr(self, name) is not None]

    @property
    def resources(self) -> bool:
        """Whether it changes what the container runs with (a safety
        snapshot first); tags, onboot, description and protection do not."""
        return any(getattr(self, n) is not None for n in ("cores", "memory", "swap", "disk"))

    def to_params(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        if self.tags is not None:
            data["tags"] = list(self.tags)
        return data

    @classmethod
    def from_params(cls, data: Mapping[str, Any]) -> SetRequest:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("tags") is not None:
            values["tags"] = tuple(values["tags"])
        return cls(**values)

    def check(self, *, disk_now: float | None = None) -> list[ConfigError]:
        """Every problem, each naming its field; ``disk_now`` (GiB) when known."""
        problems: list[ConfigError] = []

        def bounded(name: str, low: int, high: int | None, unit: str = "") -> None:
            value = getattr(self, name)
            if value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(ConfigError(f"{name}: must be a whole number, got {value!r}"))
            elif value < low or (high is not None and value > high):
                span = f"{low} to {high}" if high is not None else f"at least {low}"
                problems.append(ConfigError(f"{name}: must be {span}{unit}, got {value}"))

        bounded("cores", 1, MAX_CORES)
        bounded("memory", MIN_MEMORY, None, " MiB")
        bounded("swap", 0, None, " MiB")
        bounded("disk", 1, 131072, " GiB")
        if (isinstance(self.disk, int) and not isinstance(self.disk, bool)
                and disk_now is not None and self.disk <= disk_now):  # fmt: skip
            how = "the same as" if self.disk == disk_now else "smaller than"
            problems.append(ConfigError(
                f"disk: {self.disk} GiB is {how} the disk now ({disk_now:g} GiB): "
                "a disk only grows (Proxmox VE cannot shrink one)"))  # fmt: skip
        for tag in self.tags or ():
            if not isinstance(tag, str) or not TAG.fullmatch(tag):
                problems.append(ConfigError(f"tags: {tag!r} is not a tag (letters, digits, "
                                            "'_', '-', '+', '.')"))  # fmt: skip
                break
        if self.description is not None and len(self.description) > MAX_DESCRIPTION - 100:
            problems.append(ConfigError(f"description: at most {MAX_DESCRIPTION - 100} characters"))
        for name in ("onboot", "protection", "restart"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                problems.append(ConfigError(f"{name}: must be true or false"))
        if self.on_failure not in ON_FAILURE:
            problems.append(ConfigError(f"on_failure: must be one of {', '.join(ON_FAILURE)}, "
                                        f"got {self.on_failure!r}"))  # fmt: skip
        if not self.changed() and not self.restart:
            problems.append(ConfigError("settings: nothing to change (give at least one of "
                                        f"{', '.join(self.CHANGES)}, or restart)"))  # fmt: skip
        return problems

    def config_params(self, marker: str) -> dict[str, Any]:
        """The ``PUT .../config`` parameters (without the disk: a resize)."""
        from provisioner.templates.params import marker_line

        params: dict[str, Any] = {}
        for name in ("cores", "memory", "swap"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        if self.onboot is not None:
            params["onboot"] = int(self.onboot)
        if self.protection is not None:
            params["protection"] = int(self.protection)
        if self.tags is not None:
            params["tags"] = ";".join(dict.fromkeys((SYSTEM_TAG, *self.tags)))
        if self.description is not None:
            params["description"] = "\n".join([self.description, "", marker_line(marker)])
        return params


def pending_changes(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """From ``GET .../pending``: key -> the value applied at the next restart
    (``None``: the key is deleted then)."""
    found: dict[str, Any] = {}
    for entry in entries:
        if "pending" in entry:
            found[str(entry["key"])] = entry["pending"]
        elif entry.get("delete"):
            found[str(entry["key"])] = None
    return found

"""The simulator's durable state: container configs, snapshots, tasks, leases.

Layout of the state directory (all JSON, written atomically):

    credentials.json       user, password, API token, ticket signing key (0600)
    network.json           the bridge index and subnet last used
    leases.json            DHCP leases by MAC address
    lxc/<vmid>.json        a container's config and snapshots (like /etc/pve/lxc)
    tasks/<n>.json         one task each (status and log)
    ct/<vmid>/             the container's files (see runtime.py)
    storage/local/...      the ``local`` storage (templates)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pvesim.auth import Credentials


def write_json(path: Path, data: Any, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename); ``durable``
    also fsyncs, which the hot task records skip to keep the API fast."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


@dataclass
class ContainerRecord:
    """One container as PVE's config file describes it."""

    vmid: int
    config: dict[str, Any]
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the config file's [pve:pending] section: changes waiting for the next
    # start (PVE::LXC::Config vmconfig_hotplug_pending), "delete" a list
    pending: dict[str, Any] = field(default_factory=dict)

    @property
    def lock(self) -> str | None:
        value = self.config.get("lock")
        return str(value) if value else None


@dataclass
class TaskRecord:
    """A task's status and log, as ``/nodes/{node}/tasks`` reports them."""

    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str
    status: str = "running"  # running | stopped
    exitstatus: str | None = None
    endtime: int | None = None
    log: list[str] = field(default_factory=list)
    seq: int = 0  # file name, keeps the archive ordered


class StateStore:
    """Loads and saves the state directory.  Not thread-safe: the simulator's
    event loop is the only writer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("lxc", "tasks", "ct", "storage/local/template/cache"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    # credentials ---------------------------------------------------------
    def credentials(self) -> Credentials:
        path = self.root / "credentials.json"
        data = read_json(path)
        if data is None:
            creds = Credentials.generate()
            write_json(
                path,
                {
                    "user": creds.user,
                    "password": creds.password,
                    "token_name": creds.token_name,
                    "token_secret": creds.token_secret,
                    "signing_key": creds.signing_key.hex(),
                },
                mode=0o600,
            )
            return creds
        return Credentials(
            user=data["user"],
            password=data["password"],
            token_name=data["token_name"],
            token_secret=data["token_secret"],
            signing_key=bytes.fromhex(data["signing_key"]),
        )

    # containers ----------------------------------------------------------
    def load_containers(self) -> dict[int, ContainerRecord]:
        out: dict[int, ContainerRecord] = {}
        for path in sorted((self.root / "lxc").glob("*.json")):
            data = read_json(path)
            rec = ContainerRecord(
                vmid=int(data["vmid"]),
                config=data["config"],
                snapshots=data["snapshots"],
                pending=data.get("pending", {}),
            )
            out[rec.vmid] = rec
        return out

    def save_container(self, rec: ContainerRecord) -> None:
        write_json(self.root / "lxc" / f"{rec.vmid}.json", asdict(rec))

    def delete_container(self, vmid: int) -> None:
        (self.root / "lxc" / f"{vmid}.json").unlink(missing_ok=True)

    # tasks -----------------------------------------------------------------
    def load_tasks(self) -> list[TaskRecord]:
        tasks = []
        for path in (self.root / "tasks").glob("*.json"):
            tasks.append(TaskRecord(**read_json(path)))
        tasks.sort(key=lambda t: t.seq)
        return tasks

    def save_task(self, task: TaskRecord) -> None:
        write_json(self.root / "tasks" / f"{task.seq:08d}.json", asdict(task), durable=False)

    # small documents -------------------------------------------------------
    def load(self, name: str, default: Any) -> Any:
        return read_json(self.root / f"{name}.json", default)

    def save(self, name: str, data: Any) -> None:
        write_json(self.root / f"{name}.json", data)

    def container_dir(self, vmid: int) -> Path:
        return self.root / "ct" / str(vmid)

    @property
    def template_dir(self) -> Path:
        return self.root / "storage" / "local" / "template" / "cache"

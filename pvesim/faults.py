"""Fault injection: the failures a real Proxmox node produces, on demand.

Faults are registered through the simulator's admin endpoint (or ``pvesim
fault``) and consumed by the API layer, the task runner and the container
runtime.  Everything here is plain data and bookkeeping; the effects are
applied where the faults are consumed.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class HttpFault:
    """The next ``count`` requests matching ``path`` (a regex searched in the
    API path, e.g. ``/lxc$``) and ``method`` fail with ``status``."""

    path: str
    status: int = 500
    count: int = 1
    method: str | None = None
    message: str | None = None
    id: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return re.search(self.path, path) is not None


@dataclass
class TaskFault:
    """The next ``count`` tasks of ``type`` (optionally for ``vmid``) end in
    ``TASK ERROR: error``, take ``delay`` extra seconds and/or log
    ``warnings`` warnings (ending in ``WARNINGS: N``)."""

    type: str
    vmid: int | None = None
    error: str | None = None
    delay: float = 0.0
    warnings: int = 0
    count: int = 1
    id: int = 0

    def matches(self, task_type: str, task_id: str) -> bool:
        if self.type != task_type:
            return False
        return self.vmid is None or str(self.vmid) == task_id


@dataclass
class Faults:
    """All pending faults plus per-container timed faults."""

    http: list[HttpFault] = field(default_factory=list)
    tasks: list[TaskFault] = field(default_factory=list)
    # vmid -> extra seconds before the DHCP server answers that container
    dhcp_delay: dict[int, float] = field(default_factory=dict)
    _next_id: int = 1

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def add_http(self, fault: HttpFault) -> HttpFault:
        try:
            re.compile(fault.path)  # reject a bad regex at registration
        except re.error as exc:
            raise ValueError(f"path is not a valid regex: {exc}") from exc
        if not 100 <= fault.status <= 599:
            raise ValueError("status must be between 100 and 599")
        fault.id = self._id()
        self.http.append(fault)
        return fault

    def add_task(self, fault: TaskFault) -> TaskFault:
        if fault.error is None and fault.delay <= 0 and fault.warnings <= 0:
            raise ValueError("a task fault needs an error message, a delay or warnings")
        fault.id = self._id()
        self.tasks.append(fault)
        return fault

    def take_http(self, method: str, path: str) -> HttpFault | None:
        """Consume one matching HTTP fault, if any."""
        for fault in self.http:
            if fault.matches(method, path):
                fault.count -= 1
                if fault.count <= 0:
                    self.http.remove(fault)
                return fault
        return None

    def take_task(self, task_type: str, task_id: str) -> TaskFault | None:
        """Consume one matching task fault, if any."""
        for fault in self.tasks:
            if fault.matches(task_type, task_id):
                fault.count -= 1
                if fault.count <= 0:
                    self.tasks.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self.http.clear()
        self.tasks.clear()
        self.dhcp_delay.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "http": [asdict(f) for f in self.http],
            "tasks": [asdict(f) for f in self.tasks],
            "dhcp_delay": {str(k): v for k, v in self.dhcp_delay.items()},
        }


class Deadline:
    """A point in monotonic time; ``remaining`` is never negative."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    @property
    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

"""The typed context every phase receives.  Phases never read the
environment or build clients themselves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from provisioner.backoff import Backoff
from provisioner.config import Settings
from provisioner.db import session_scope
from provisioner.errors import PermanentError
from provisioner.events import EventPublisher
from provisioner.models import Container
from provisioner.ownership import prove
from provisioner.phases import PROVISION, Plan
from provisioner.pve.client import PveClient
from provisioner.pve.types import Owned
from provisioner.secrets.box import SecretBox
from provisioner.secrets.vault import container_ssh_private_key
from provisioner.ssh.session import SshSession, connect
from provisioner.templates.model import Template

# refused connects cost a millisecond: poll briskly for the first seconds of a boot
SSH_BACKOFF = Backoff(base=0.1, factor=1.1, cap=2.0, jitter=0.2)

P = ParamSpec("P")
T = TypeVar("T")


async def off_loop(call: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking call, the PVE client's above all, in a worker thread.

    The phases run under asyncio: a PVE request or task wait made on the
    event loop would hold up everything else on it (the SSH session's
    traffic and keepalives).  The calls still run one after another, in the
    order they are awaited; whatever ``call`` raises is raised here as it is.
    """
    return await asyncio.to_thread(call, *args, **kwargs)


@dataclass
class Context:
    """One run of one container's pipeline."""

    settings: Settings
    factory: sessionmaker[Session]
    redis: Redis
    box: SecretBox
    container_id: str
    template: Template
    pve: PveClient
    events: EventPublisher
    variables: dict[str, Any]
    on_progress: Callable[[str, int], None] | None = None
    operation_id: str | None = None  # the Operation row of an action with parameters
    params: dict[str, Any] = field(default_factory=dict)  # its parameters
    phase: str = "create"
    plan: Plan = PROVISION  # the container's (a sandbox imports before it finalizes)
    scripts_uploaded: bool = False  # by the deploy phase of this run
    _ssh: SshSession | None = field(default=None, repr=False)

    def container(self) -> Container:
        """A fresh, detached copy of the container row."""
        with self.factory() as session:
            ct = session.get(Container, self.container_id)
            if ct is None:
                raise LookupError(f"container {self.container_id} is gone")
            session.expunge(ct)
            return ct

    def update(self, **values: Any) -> None:
        """Write fields of the container row now (checkpoints)."""
        with session_scope(self.factory) as session:
            ct = session.get(Container, self.container_id)
            assert ct is not None
            for key, value in values.items():
                setattr(ct, key, value)

    def percent(self, fraction: float) -> int:
        return self.plan.overall_percent(self.phase, fraction)

    def step(self, message: str, fraction: float = 0.0) -> None:
        pct = self.percent(fraction)
        self.events.publish("step", message, phase=self.phase, percent=pct)
        if self.on_progress:
            self.on_progress(self.phase, pct)

    def log(self, message: str, *, stream: str | None = None, script: str | None = None) -> None:
        self.events.publish("log", message, phase=self.phase, stream=stream, script=script)

    def warn(self, message: str) -> None:
        self.events.publish("warning", message, phase=self.phase)

    def read_vmid(self) -> int:
        """The container's vmid, read from the database now.

        Raises:
            LookupError: the container has no vmid yet (or no record any more).
        """
        vmid = self.container().vmid
        if vmid is None:
            raise LookupError("the container has no vmid yet")
        return vmid

    def owned(self) -> Owned:
        """The ownership guard: proof, read now, that the record's CT is ours.
        Every PVE write to an existing CT takes one.  Blocking (it asks the
        node): a phase calls it through :func:`off_loop`.

        Raises:
            NotOurs: the CT is gone from the node or carries another marker.
            PveTransientError, PvePermanentError: the node could not tell.
        """
        return prove(self.pve, self.container_id, self.read_vmid())

    def disown(self) -> None:
        """Mark the record as owning no container: forget the vmid and
        everything learnt from that CT, so a retry starts from create."""
        self.update(vmid=None, ip=None, ssh_host_key=None, ssh_host_key_fingerprint=None,
                    services=[], finished_phases=[], finished_scripts=[],
                    current_phase=None)  # fmt: skip

    async def ssh(self) -> SshSession:
        """One SSH session per run, pinned to the host key seen first."""
        if self._ssh is not None:
            return self._ssh
        ct = self.container()
        if not ct.ip:
            raise LookupError("the container has no address yet")
        key = container_ssh_private_key(self.box, ct)
        assert key is not None

        def waiting(attempt: Any) -> None:
            if attempt.number in (1, 5) or attempt.number % 20 == 0:
                why = f": {attempt.error}" if attempt.error else ""
                self.log(f"waiting for SSH on {ct.ip}{why}")

        # sshd comes up about a second after start: poll briskly at first
        session = await connect(ct.ip, private_key=key, known_host_key=ct.ssh_host_key,
                                deadline=self.settings.ssh_connect_timeout, on_attempt=waiting,
                                backoff=SSH_BACKOFF)  # fmt: skip
        if ct.ssh_host_key is None:
            self.update(ssh_host_key=session.host_key,
                        ssh_host_key_fingerprint=session.host_key_fingerprint)  # fmt: skip
        self._ssh = session
        return session

    async def ssh_to(self, other: Container) -> SshSession:
        """A session to another record's container (a sync's peer), with
        that record's key and pinned host key; the caller closes it.

        Raises:
            PermanentError: the record has no address or pinned host key.
        """
        key = container_ssh_private_key(self.box, other)
        if not other.ip or key is None or other.ssh_host_key is None:
            raise PermanentError(f"{other.hostname} has no address or pinned SSH host key yet")
        return await connect(other.ip, private_key=key, known_host_key=other.ssh_host_key,
                             deadline=self.settings.ssh_connect_timeout, backoff=SSH_BACKOFF)  # fmt: skip

    async def close(self) -> None:
        """Close the SSH session (also after it broke: the next use reconnects)."""
        if self._ssh is not None:
            ssh, self._ssh = self._ssh, None
            with contextlib.suppress(OSError):  # already gone with the connection
                await ssh.close()

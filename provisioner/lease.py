"""The per-container run lease: only its holder runs a container's pipeline.

A lease is a row (container, holder, expiry).  Taking it succeeds when there
is none, when it expired, or when the caller already holds it; the holder
renews it while it works; a worker that dies simply stops renewing, and once
the lease expires the run can be taken over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from provisioner.db import session_scope
from provisioner.models import Lease, utcnow

log = logging.getLogger(__name__)


def make_holder() -> str:
    """A holder name that says who holds it: ``host:pid:random``."""
    return f"{process_prefix(os.getpid())}{uuid.uuid4().hex[:8]}"


def process_prefix(pid: int) -> str:
    """What every holder name of process ``pid`` on this host starts with."""
    return f"{socket.gethostname()}:{pid}:"


def acquire(factory: sessionmaker[Session], container_id: str, holder: str,
            duration: float) -> bool:  # fmt: skip
    """Take the lease; False if someone else holds an unexpired one."""
    now = utcnow()
    try:
        with session_scope(factory) as session:
            lease = session.get(Lease, container_id, with_for_update=True)
            if lease is None:
                session.add(Lease(container_id=container_id, holder=holder, acquired_at=now,
                                  expires_at=now + timedelta(seconds=duration)))  # fmt: skip
                return True
            if lease.holder != holder and not lease.expired(now):
                return False
            if lease.holder != holder:
                log.info("lease of %s taken over from %s (expired)", container_id, lease.holder)
                lease.acquired_at = now
            lease.holder = holder
            lease.expires_at = now + timedelta(seconds=duration)
            return True
    except IntegrityError:  # someone inserted it between our read and our insert
        return False


@dataclass(frozen=True)
class Takeover:
    """A lease taken from a holder that is gone: who it was, and when it
    last showed a sign of life (its last renewal)."""

    holder: str
    last_renewed: datetime


def take_over(factory: sessionmaker[Session], container_id: str, holder: str, duration: float,
              *, dead_prefix: str | None = None) -> Takeover | None:  # fmt: skip
    """Take the lease of a run whose holder is gone, to hand the run on.

    The holder is gone when its lease expired, or when its name starts with
    ``dead_prefix`` (:func:`process_prefix` of a work horse its worker saw
    die: no need to wait for the expiry).

    Returns:
        Who held it and when it last renewed; None if a live holder has it
        or nobody does (nothing to hand on).
    """
    now = utcnow()
    try:
        with session_scope(factory) as session:
            lease = session.get(Lease, container_id, with_for_update=True)
            dead = dead_prefix is not None and lease is not None and (
                lease.holder.startswith(dead_prefix))  # fmt: skip
            if lease is None or not (lease.expired(now) or dead):
                return None
            # renew() sets the expiry one duration ahead, so this was the last renewal
            gone = Takeover(lease.holder, lease.expires_at - timedelta(seconds=duration))
            log.info("lease of %s taken over from %s", container_id, lease.holder)
            lease.holder, lease.acquired_at = holder, now
            lease.expires_at = now + timedelta(seconds=duration)
            return gone
    except IntegrityError:
        return None


def renew(factory: sessionmaker[Session], container_id: str, holder: str,
          duration: float) -> bool:  # fmt: skip
    """Extend our lease; False if it is no longer ours."""
    with session_scope(factory) as session:
        lease = session.get(Lease, container_id, with_for_update=True)
        if lease is None or lease.holder != holder:
            return False
        lease.expires_at = utcnow() + timedelta(seconds=duration)
        return True


def held(factory: sessionmaker[Session], container_id: str) -> bool:
    """Whether someone holds an unexpired lease of the container (a run is alive)."""
    with factory() as session:
        lease = session.get(Lease, container_id)
        return lease is not None and not lease.expired()


def release(factory: sessionmaker[Session], container_id: str, holder: str) -> None:
    """Give the lease back (only if it is ours)."""
    with session_scope(factory) as session:
        session.execute(delete(Lease).where(Lease.container_id == container_id,
                                            Lease.holder == holder))  # fmt: skip


class LeaseKeeper:
    """Renews a held lease in the background; ``lost`` is set if it could not."""

    def __init__(self, factory: sessionmaker[Session], container_id: str, holder: str,
                 duration: float, interval: float) -> None:  # fmt: skip
        self.factory = factory
        self.container_id = container_id
        self.holder = holder
        self.duration = duration
        self.interval = interval
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"lease-{container_id[:8]}")  # fmt: skip

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                ok = renew(self.factory, self.container_id, self.holder, self.duration)
            except Exception:  # a database hiccup: try again at the next tick
                log.warning("renewing the lease of %s failed", self.container_id, exc_info=True)
                continue
            if not ok:
                log.error("lost the lease of %s", self.container_id)
                self.lost.set()
                return

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

"""Sandbox expiry (the rules are ``provisioner.sandboxes``): what RQ's cron
scheduler has done every ``PROVISIONER_SANDBOX_EXPIRY_INTERVAL`` seconds
(``pipeline.expiry``), and what ``sandbox expire`` does at once.

A round looks at every live sandbox: ``PROVISIONER_SANDBOX_WARN_BEFORE``
seconds before its expiry it gets an ``expiring`` warning on its stream
(once; an extension lets it come again), and at its expiry an ``expired``
one and a queued ``destroy``; each is also sent to the webhooks that want
it (``provisioner.webhook_store.notify``).  Each is noted in the sandbox's row, so two
schedulers or a round run twice do it once.  The events are published
holding the container's lease; while a run holds it the warning waits for
the next round (the destroy is queued anyway and runs after that run).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from provisioner import lease
from provisioner.config import Settings
from provisioner.db import session_scope
from provisioner.events import EventPublisher
from provisioner.models import Container, Sandbox
from provisioner.queue import ActionPending, enqueue_action
from provisioner.sandbox_requests import GONE
from provisioner.sandboxes import due, format_duration
from provisioner.webhook_store import notify_or_warn

log = logging.getLogger(__name__)


def sweep(settings: Settings, factory: sessionmaker[Session], redis: Redis, now: datetime,
          only: Iterable[str] | None = None) -> tuple[int, int]:  # fmt: skip
    """Warn and expire what is due at ``now`` (of the containers ``only``,
    if given); the (warned, expired) counts."""
    warn_before = timedelta(seconds=settings.sandbox_warn_before)
    query = (
        select(Container.id, Container.hostname, Sandbox.client, Sandbox.expires_at,
               Sandbox.warned_at)
        .join(Sandbox, Sandbox.container_id == Container.id)
        .where(Container.lifecycle.not_in(GONE), Sandbox.expired_at.is_(None))
    )  # fmt: skip
    if only is not None:
        query = query.where(Container.id.in_(list(only)))
    with factory() as session:
        rows = session.execute(query).all()
    warned = expired = 0
    for cid, hostname, client, expires_at, warned_at in rows:
        decision = due(expires_at, warned_at is not None, now, warn_before)
        if decision.action == "warn":
            message = (f"expiring: sandbox {hostname} of client {client} expires at "
                       f"{expires_at:%Y-%m-%d %H:%M} UTC (in {format_duration(decision.seconds_left)}); "
                       f"extend it: provisioner sandbox extend {hostname} --by 7d")  # fmt: skip
            if _publish(settings, factory, redis, cid, message):
                _note(factory, cid, warned_at=now)
                notify_or_warn(factory, redis, settings, cid, "expiring", message)
                warned += 1
        elif decision.action == "expire":
            _note(factory, cid, expired_at=now)
            message = (f"expired: sandbox {hostname} of client {client} expired at "
                       f"{expires_at:%Y-%m-%d %H:%M} UTC; destroying it")  # fmt: skip
            _publish(settings, factory, redis, cid, message)
            notify_or_warn(factory, redis, settings, cid, "expired", message)
            with contextlib.suppress(ActionPending):  # a destroy is on its way already
                enqueue_action(redis, settings, cid, "destroy",
                               functools.partial(lease.held, factory, cid))  # fmt: skip
            log.info("sandbox %s (%s) expired: destroy queued", hostname, cid)
            expired += 1
    return warned, expired


def _publish(settings: Settings, factory: sessionmaker[Session], redis: Redis, cid: str,
             message: str) -> bool:  # fmt: skip
    """A warning on the container's stream, holding its lease; False while a
    run holds it."""
    holder = lease.make_holder()
    if not lease.acquire(factory, cid, holder, settings.lease_duration):
        return False
    try:
        with EventPublisher(redis, factory, cid) as events:
            events.publish("warning", message)
    finally:
        lease.release(factory, cid, holder)
    return True


def _note(factory: sessionmaker[Session], cid: str, **values: datetime) -> None:
    with session_scope(factory) as session:
        sandbox = session.get(Sandbox, cid)
        if sandbox is not None:
            for key, value in values.items():
                setattr(sandbox, key, value)


def expire_now(settings: Settings, factory: sessionmaker[Session], redis: Redis, cid: str,
               now: datetime) -> None:  # fmt: skip
    """End a live sandbox at once (``sandbox expire``): its expiry becomes
    ``now`` and it is expired as a round would.

    Raises:
        InvalidRequest: ``id: ...`` not a live sandbox.
    """
    from provisioner.errors import ConfigError, InvalidRequest

    with session_scope(factory) as session:
        ct = session.get(Container, cid)
        if ct is None or ct.sandbox is None:
            raise InvalidRequest([ConfigError(f"id: {cid} is not a sandbox")])
        if ct.lifecycle in GONE or ct.sandbox.expired_at is not None:
            raise InvalidRequest([ConfigError(f"id: sandbox {ct.hostname} has expired "
                                              f"already")])  # fmt: skip
        ct.sandbox.expires_at = min(ct.sandbox.expires_at, now)
    sweep(settings, factory, redis, now, only=[cid])

"""Webhooks, stored: adding, listing and removing hooks, the delivery log,
and :func:`notify`, which turns a container's event into one delivery per
hook that wants it, each sent by a job of its own on the webhooks queue
(``provisioner.webhook_delivery``).  The CLI, the web app and the worker
share it; the pure rules are ``provisioner.webhooks``.

A hook's signing secret is encrypted at rest (``provisioner.secrets.vault``)
and shown once, when it is made; a job carries only a delivery's id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from provisioner.config import Settings
from provisioner.db import session_scope
from provisioner.errors import ConfigError, PermanentError
from provisioner.models import (
    Container,
    DeliveryStatus,
    Node,
    Webhook,
    WebhookDelivery,
    new_container_id,
    utcnow,
)
from provisioner.secrets.box import SecretBox, SecretError
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import (
    container_root_password,
    container_ssh_private_key,
    set_webhook_secret,
    variable_aad,
)
from provisioner.stored_request import StoredRequest
from provisioner.webhooks import (
    EVENTS,
    PING,
    ContainerFacts,
    HookView,
    check_events,
    check_owner,
    check_secret,
    check_url,
    container_payload,
    generate_secret,
    matching,
    ping_payload,
)

log = logging.getLogger(__name__)

DELIVERY_JOB = "provisioner.webhook_delivery.deliver"
DELIVERY_JOB_PREFIX = "webhook-"
MAX_HOOKS_PER_OWNER = 50


class WebhookNotFound(PermanentError):
    """No webhook with that id, or none the caller may see."""


def webhook_queue_name(settings: Settings) -> str:
    """The deliveries' queue: ``<queue_name>-webhooks``."""
    return f"{settings.queue_name}-webhooks"


def webhook_queue(redis: Redis, settings: Settings) -> Queue:
    return Queue(webhook_queue_name(settings), connection=redis)


# -- hooks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Whose hooks a caller sees and manages: an administrator (or the CLI)
    every hook; anyone else the hooks whose owner they are."""

    user: str | None = None  # None: everything (the CLI, an administrator)

    def sees(self, hook: Webhook) -> bool:
        return self.user is None or hook.owner == self.user


EVERYTHING = Scope()


def add_webhook(session: Session, box: SecretBox, url: str, *, owner: str | None = None,
                events: Iterable[str] | None = None,
                secret: str | None = None) -> tuple[Webhook, str | None]:  # fmt: skip
    """Store a hook (flushed, not committed).

    Args:
        owner: whose containers' events it gets; None: every container's.
        events: a subset of ``EVENTS`` (all of them when None or empty).
        secret: the signing secret; None: generate one.

    Returns:
        The row and the generated secret, to be shown once (None when given).

    Raises:
        ConfigError: ``"url: ..."``, ``"events: ..."``, ``"owner: ..."`` or
            ``"secret: ..."``; nothing is stored.
    """
    url = check_url(url)
    wanted = check_events(events)
    owner = check_owner(owner)
    given = check_secret(secret) if secret is not None else None
    count = len(session.scalars(select(Webhook.id).where(
        Webhook.owner.is_(None) if owner is None else Webhook.owner == owner)).all())  # fmt: skip
    if count >= MAX_HOOKS_PER_OWNER:
        raise ConfigError(f"owner: {owner or 'global'} has {count} webhooks already, the most "
                          "there may be; remove one first")  # fmt: skip
    hook = Webhook(owner=owner, url=url, events=wanted, active=True, secret_ciphertext="")
    session.add(hook)
    session.flush()  # the id binds the ciphertext to its row
    plain = given or generate_secret()
    set_webhook_secret(box, hook, plain)
    session.flush()
    return hook, None if given else plain


def list_webhooks(session: Session, scope: Scope = EVERYTHING) -> list[Webhook]:
    """The hooks the scope sees, by id."""
    query = select(Webhook).order_by(Webhook.id)
    if scope.user is not None:
        query = query.where(Webhook.owner == scope.user)
    return list(session.scalars(query))


def get_webhook(session: Session, hook_id: int, scope: Scope = EVERYTHING) -> Webhook:
    """One hook the scope sees.

    Raises:
        WebhookNotFound: none with that id, or not the caller's.
    """
    hook = session.get(Webhook, hook_id)
    if hook is None or not scope.sees(hook):
        raise WebhookNotFound(f"no webhook {hook_id}")
    return hook


def remove_webhook(session: Session, hook_id: int, scope: Scope = EVERYTHING) -> None:
    """Remove a hook and its delivery log (flushed, not committed); a
    delivery's job that runs later finds nothing to send.

    Raises:
        WebhookNotFound: none with that id, or not the caller's.
    """
    hook = get_webhook(session, hook_id, scope)
    # the log goes with it (the database cascades; SQLite's needs foreign keys on)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
    session.delete(hook)
    session.flush()


def list_deliveries(session: Session, scope: Scope = EVERYTHING, *, webhook_id: int | None = None,
                    container_id: str | None = None,
                    limit: int = 100) -> list[WebhookDelivery]:  # fmt: skip
    """The newest deliveries first, of the hooks the scope sees."""
    query = (select(WebhookDelivery).join(Webhook, WebhookDelivery.webhook_id == Webhook.id)
             .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(limit))  # fmt: skip
    if scope.user is not None:
        query = query.where(Webhook.owner == scope.user)
    if webhook_id is not None:
        query = query.where(WebhookDelivery.webhook_id == webhook_id)
    if container_id is not None:
        query = query.where(WebhookDelivery.container_id == container_id)
    return list(session.scalars(query))


# -- deliveries -------------------------------------------------------------------------


def enqueue_delivery(redis: Redis, settings: Settings, delivery_id: str) -> str:
    """Queue the job that sends one delivery, with RQ's retries at the
    settings' intervals.  The job carries the delivery's id only.

    Raises:
        RedisError: Redis is away (the delivery stays pending).
    """
    intervals = list(settings.webhook_retry_intervals)
    job = webhook_queue(redis, settings).enqueue(
        DELIVERY_JOB, delivery_id,
        job_id=f"{DELIVERY_JOB_PREFIX}{delivery_id}",
        retry=Retry(max=len(intervals), interval=intervals),
        job_timeout=int(2 * settings.webhook_timeout) + 30,
        result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600,
        description=f"webhook delivery {delivery_id}",
    )  # fmt: skip
    return str(job.id)


def _enqueue_all(redis: Redis, settings: Settings, delivery_ids: list[str]) -> None:
    """Queue each delivery; a Redis failure leaves it pending, with a warning."""
    for delivery_id in delivery_ids:
        try:
            enqueue_delivery(redis, settings, delivery_id)
        except RedisError as exc:
            log.warning("webhook delivery %s not queued (Redis: %s); it stays pending",
                        delivery_id, exc)  # fmt: skip


def _container_secrets(box: SecretBox, ct: Container) -> list[str | None]:
    """The container's own secrets, scrubbed from a payload's message."""
    try:
        found = [container_root_password(box, ct), container_ssh_private_key(box, ct)]
        stored = StoredRequest.from_dict(ct.request)
        found += [box.decrypt(token, variable_aad(ct.id, name))
                  for name, token in stored.secret_variables.items()]  # fmt: skip
        return found
    except (SecretError, PermanentError) as exc:  # the redactor's patterns still apply
        log.warning("container %s: its secrets could not be read to scrub a webhook "
                    "message: %s", ct.id, exc)  # fmt: skip
        return []


def notify(factory: sessionmaker[Session], redis: Redis, settings: Settings, container_id: str,
           event: str, message: str | None = None, *, box: SecretBox | None = None,
           occurred_at: datetime | None = None) -> list[str]:  # fmt: skip
    """Tell the hooks that want it about a container's event: one delivery
    per matching hook (global hooks, and the container owner's), stored,
    then queued.  A delivery Redis does not take stays pending (logged).

    Args:
        container_id: the container the event is about.
        event: ``ready``, ``error``, ``expiring`` or ``expired``.
        message: what happened, in a sentence (the terminal event's message);
            redacted and scrubbed of the container's secrets.
        box: the secret box (to scrub the container's secrets); default: the settings'.
        occurred_at: when it happened (default: now).

    Returns:
        The ids of the deliveries made (none when no hook wants the event).

    Raises:
        ValueError: an unknown event.
        LookupError: no such container.
        SQLAlchemyError: the database failed (nothing is queued).
    """
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r} (known: {', '.join(EVENTS)})")
    occurred = occurred_at or utcnow()
    with session_scope(factory) as session:
        row = session.execute(select(Container, Node.name).join(Node, Container.node_id == Node.id)
                              .where(Container.id == container_id)).one_or_none()  # fmt: skip
        if row is None:
            raise LookupError(f"no container {container_id}")
        ct, node_name = row
        hooks = [HookView(h.id, h.owner, tuple(h.events), h.active)
                 for h in session.scalars(select(Webhook).where(Webhook.active.is_(True)))]  # fmt: skip
        targets = matching(hooks, event, ct.owner)
        if not targets:
            return []
        facts = ContainerFacts(id=ct.id, hostname=ct.hostname, template=ct.template,
                               lifecycle=str(ct.lifecycle), ip=ct.ip,
                               environment=ct.environment, owner=ct.owner, node=node_name)  # fmt: skip
        known: list[str | None] = []
        if message:
            box = box or load_secret_box(settings.secret_key, settings.secret_key_file)
            known = _container_secrets(box, ct)
        ids = []
        for hook in targets:
            delivery = WebhookDelivery(id=new_container_id(), webhook_id=hook.id,
                                       container_id=ct.id, event=event,
                                       status=DeliveryStatus.PENDING, attempts=0, history=[],
                                       created_at=occurred, next_attempt_at=occurred)  # fmt: skip
            delivery.payload = container_payload(delivery.id, event, occurred, facts, message,
                                                 settings.links_base, known)  # fmt: skip
            session.add(delivery)
            ids.append(delivery.id)
    _enqueue_all(redis, settings, ids)
    return ids


def notify_or_warn(factory: sessionmaker[Session], redis: Redis, settings: Settings,
                   container_id: str, event: str, message: str | None = None, *,
                   box: SecretBox | None = None) -> None:  # fmt: skip
    """``notify`` for a caller that must go on whatever happens to the
    notification (a run that ended, the expiry round): a delivery that
    cannot be stored or queued is a warning in the log, with its cause."""
    try:
        notify(factory, redis, settings, container_id, event, message, box=box)
    except Exception as exc:  # logged: the caller's own outcome stands
        log.warning("container %s: the %s webhooks were not queued: %s", container_id, event,
                    exc)  # fmt: skip


def send_test(session: Session, redis: Redis, settings: Settings, hook: Webhook) -> WebhookDelivery:
    """A ``ping`` delivery to one hook (committed, then queued).

    Raises:
        RedisError: Redis is away; the delivery is stored, pending.
    """
    now = utcnow()
    delivery = WebhookDelivery(id=new_container_id(), webhook_id=hook.id, container_id=None,
                               event=PING, status=DeliveryStatus.PENDING, attempts=0, history=[],
                               created_at=now, next_attempt_at=now)  # fmt: skip
    delivery.payload = ping_payload(delivery.id, now, hook.id, settings.links_base)
    session.add(delivery)
    session.commit()
    enqueue_delivery(redis, settings, delivery.id)
    return delivery


def requeue_stalled(factory: sessionmaker[Session], redis: Redis, settings: Settings,
                    grace: float = 60.0) -> list[str]:  # fmt: skip
    """Queue again the pending deliveries that have no job (Redis was away
    when they were made, or lost its data) and are due for ``grace``
    seconds: what a worker's recovery pass does now and then."""
    due = utcnow() - timedelta(seconds=grace)
    with factory() as session:
        ids = list(session.scalars(select(WebhookDelivery.id).where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at < due).limit(500)))  # fmt: skip
    queue = webhook_queue(redis, settings)
    missing = [i for i in ids if queue.fetch_job(f"{DELIVERY_JOB_PREFIX}{i}") is None]
    _enqueue_all(redis, settings, missing)
    return missing

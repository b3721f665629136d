"""The database models (SQLAlchemy 2.0, typed).

Secrets (Proxmox credentials, root passwords, generated SSH private keys)
live only in ``*_ciphertext`` columns as ``v1:<key id>:<data>`` tokens made
by ``provisioner.secrets.box``; the request JSON never holds one.  Timestamps are timezone-aware UTC on every
backend.  Schema changes go through an Alembic migration in
``provisioner/migrations/versions``.
"""

from __future__ import annotations

import enum
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.ext.mutable import MutableDict, MutableList
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints, so later migrations can drop or alter them on both
# backends (SQLite batch mode needs the names too).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def new_container_id() -> str:
    """Return a fresh container id (a UUID4 string)."""
    return str(uuid.uuid4())


# What may be a container id in a URL (a uuid, or a prefix of one): anything
# else is "not found" without a query.
CONTAINER_ID = re.compile(r"[0-9a-fA-F-]{1,36}")


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive time is ambiguous; refusing it catches the bug early.
            raise ValueError(f"naive datetime {value!r}: use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AuthKind(enum.StrEnum):
    """How the provisioner authenticates to a Proxmox node."""

    TOKEN = "token"
    PASSWORD = "password"


class Lifecycle(enum.StrEnum):
    """A container's lifecycle (see docs/architecture.md)."""

    PENDING = "pending"
    CREATING = "creating"
    READY = "ready"
    ERROR = "error"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"


class FailurePolicy(enum.StrEnum):
    """What to do with a container whose provisioning failed."""

    KEEP = "keep"
    DESTROY = "destroy"


def _enum_column(enum_class: type[enum.Enum], name: str) -> Enum:
    # VARCHAR plus a named CHECK constraint instead of a native PostgreSQL
    # enum: adding a value later is one constraint change on both backends.
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative base of every model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Node(Base):
    """A Proxmox VE node the provisioner creates containers on."""

    __tablename__ = "nodes"
    __table_args__ = (
        CheckConstraint("auth_kind = 'password' OR token_name IS NOT NULL", name="token_has_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=8006)
    pve_node: Mapped[str] = mapped_column(String(64))  # the node's name inside PVE
    auth_kind: Mapped[AuthKind] = mapped_column(_enum_column(AuthKind, "auth_kind"))
    pve_user: Mapped[str] = mapped_column(String(128))  # user@realm
    token_name: Mapped[str | None] = mapped_column(String(128))  # the part after "!"
    secret_ciphertext: Mapped[str] = mapped_column(Text)  # token secret or password
    ca_file: Mapped[str | None] = mapped_column(String(1024))
    fingerprint: Mapped[str | None] = mapped_column(String(95))  # SHA-256, AB:CD:...
    tls_insecure: Mapped[bool] = mapped_column(Boolean, default=False)
    default_storage: Mapped[str | None] = mapped_column(String(64))
    default_bridge: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    # placement: the PVE cluster it belongs to (None: standalone), no new
    # containers while in maintenance, a cap of containers (None: none)
    cluster: Mapped[str | None] = mapped_column(String(64))
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    max_containers: Mapped[int | None] = mapped_column(Integer)

    containers: Mapped[list[Container]] = relationship(back_populates="node")

    @property
    def token_id(self) -> str | None:
        """The API token id as PVE writes it (``user@realm!name``), if any."""
        return f"{self.pve_user}!{self.token_name}" if self.token_name else None


class Container(Base):
    """One provisioning request and the container it became."""

    __tablename__ = "containers"
    __table_args__ = (
        Index(None, "node_id", "vmid"),
        Index(None, "lifecycle"),
        Index(None, "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_container_id)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="RESTRICT"))
    template: Mapped[str] = mapped_column(String(128))
    request: Mapped[dict[str, Any]] = mapped_column(MutableDict.as_mutable(JSON()), default=dict)
    root_password_ciphertext: Mapped[str | None] = mapped_column(Text)
    ssh_private_key_ciphertext: Mapped[str | None] = mapped_column(Text)
    ssh_public_key: Mapped[str | None] = mapped_column(Text)
    hostname: Mapped[str] = mapped_column(String(253))
    vmid: Mapped[int | None] = mapped_column(Integer)
    lifecycle: Mapped[Lifecycle] = mapped_column(
        _enum_column(Lifecycle, "lifecycle"), default=Lifecycle.PENDING
    )
    current_phase: Mapped[str | None] = mapped_column(String(16))
    finished_phases: Mapped[list[str]] = mapped_column(MutableList.as_mutable(JSON()), default=list)
    finished_scripts: Mapped[list[str]] = mapped_column(
        MutableList.as_mutable(JSON()), default=list
    )
    failure_policy: Mapped[FailurePolicy] = mapped_column(
        _enum_column(FailurePolicy, "failure_policy"), default=FailurePolicy.KEEP
    )
    ip: Mapped[str | None] = mapped_column(String(64))
    ssh_host_key: Mapped[str | None] = mapped_column(Text)  # pinned, "ssh-ed25519 AAAA..."
    ssh_host_key_fingerprint: Mapped[str | None] = mapped_column(String(128))
    services: Mapped[list[dict[str, Any]]] = mapped_column(
        MutableList.as_mutable(JSON()), default=list
    )
    error_message: Mapped[str | None] = mapped_column(Text)
    # phase, script, exit_code, last_lines, hint
    error_details: Mapped[dict[str, Any] | None] = mapped_column(MutableDict.as_mutable(JSON()))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_seq: Mapped[int] = mapped_column(Integer, default=1)  # seq of the next event
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # production, staging, development or another name; None: not given
    # (migration 0003 added it and the two below)
    environment: Mapped[str | None] = mapped_column(String(32))
    # the container this one was cloned from (None: not a clone, or its source was deleted)
    source_id: Mapped[str | None] = mapped_column(
        ForeignKey("containers.id", ondelete="SET NULL"), index=True
    )
    # a change in flight and its safety snapshot (provisioner.changes.SafeChange)
    safe_change: Mapped[dict[str, Any] | None] = mapped_column(
        MutableDict.as_mutable(JSON(none_as_null=True))
    )
    # the phases its runs go through (provisioner.phases.PLANS; migration 0004)
    plan: Mapped[str] = mapped_column(String(16), default="provision", server_default="provision")
    # who asked for it: the dashboard or API user, or the CLI's --owner (None: an operator)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    # an anti-affinity group: placement keeps its members on different nodes
    spread_group: Mapped[str | None] = mapped_column(String(64), index=True)

    node: Mapped[Node] = relationship(back_populates="containers")
    # passive_deletes: the database's ON DELETE CASCADE removes the events,
    # rather than the ORM loading thousands of log lines to delete them.
    events: Mapped[list[ContainerEvent]] = relationship(
        back_populates="container",
        order_by="ContainerEvent.seq",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    lease: Mapped[Lease | None] = relationship(
        back_populates="container", cascade="all, delete-orphan", passive_deletes=True
    )
    operations: Mapped[list[Operation]] = relationship(
        back_populates="container",
        order_by="Operation.created_at",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    sandbox: Mapped[Sandbox | None] = relationship(
        back_populates="container", cascade="all, delete-orphan", passive_deletes=True
    )


class ContainerEvent(Base):
    """One durable event of a container's stream (the contract in docs/architecture.md)."""

    __tablename__ = "container_events"
    # The unique constraint doubles as the index for replay
    # (WHERE container_id = ? AND seq > ? ORDER BY seq).
    __table_args__ = (UniqueConstraint("container_id", "seq"),)

    # Log lines add up: 64-bit on PostgreSQL; SQLite's INTEGER is already
    # 64-bit and only "INTEGER PRIMARY KEY" autoincrements.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    container_id: Mapped[str] = mapped_column(ForeignKey("containers.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(16))  # step|log|warning|complete|error
    phase: Mapped[str | None] = mapped_column(String(16))
    percent: Mapped[int | None] = mapped_column(SmallInteger)
    message: Mapped[str] = mapped_column(Text, default="")
    stream: Mapped[str | None] = mapped_column(String(8))  # stdout|stderr
    script: Mapped[str | None] = mapped_column(String(255))
    ts: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # how the run ended (provisioner.events.OUTCOMES), on terminal events;
    # last because migration 0002 added it
    outcome: Mapped[str | None] = mapped_column(String(16))

    container: Mapped[Container] = relationship(back_populates="events")


class Operation(Base):
    """One asked-for change of a container that carries parameters (a
    snapshot's name, the settings of a ``set``): the job carries the
    operation's id, never the parameters themselves (which hold no secret)."""

    __tablename__ = "operations"
    __table_args__ = (Index(None, "container_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_container_id)
    container_id: Mapped[str] = mapped_column(ForeignKey("containers.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(24))
    params: Mapped[dict[str, Any]] = mapped_column(MutableDict.as_mutable(JSON()), default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))  # as the run's terminal event
    message: Mapped[str | None] = mapped_column(Text)

    container: Mapped[Container] = relationship(back_populates="operations")


class DeliveryStatus(enum.StrEnum):
    """Where a webhook delivery stands."""

    PENDING = "pending"  # not sent yet, or a failed attempt will be retried
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # every attempt failed


class Webhook(Base):
    """A URL told about containers' events, with a body signed by its secret
    (``provisioner.webhooks``).  ``owner`` None: every container's events;
    else those of the containers with that owner."""

    __tablename__ = "webhooks"
    __table_args__ = (Index(None, "owner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2048))  # http(s), no credentials in it
    secret_ciphertext: Mapped[str] = mapped_column(Text)  # the signing secret
    events: Mapped[list[str]] = mapped_column(MutableList.as_mutable(JSON()), default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    deliveries: Mapped[list[WebhookDelivery]] = relationship(
        back_populates="webhook", cascade="all, delete-orphan", passive_deletes=True
    )


class WebhookDelivery(Base):
    """One event sent (or to be sent) to one webhook, and how its attempts went.

    The payload is stored as sent: it holds links and states, never a secret.
    ``history`` keeps every attempt: ``{"at", "status_code", "error"}``.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index(None, "webhook_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_container_id)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    container_id: Mapped[str | None] = mapped_column(
        ForeignKey("containers.id", ondelete="SET NULL"), index=True
    )
    event: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(MutableDict.as_mutable(JSON()), default=dict)
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum_column(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    history: Mapped[list[dict[str, Any]]] = mapped_column(
        MutableList.as_mutable(JSON()), default=list
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    webhook: Mapped[Webhook] = relationship(back_populates="deliveries")


class Sandbox(Base):
    """A client sandbox: a ``wordpress`` container holding a copy of the
    client's live site (``provisioner.sandboxes``).  The live site's
    Application Password and the sandbox's own (the import writes through
    it) are encrypted like every secret."""

    __tablename__ = "sandboxes"

    container_id: Mapped[str] = mapped_column(
        ForeignKey("containers.id", ondelete="CASCADE"), primary_key=True
    )
    client: Mapped[str] = mapped_column(String(40), index=True)
    source_url: Mapped[str] = mapped_column(String(2048))
    source_user: Mapped[str] = mapped_column(String(128))
    source_secret_ciphertext: Mapped[str] = mapped_column(Text)
    source_ca_file: Mapped[str | None] = mapped_column(String(1024))
    source_fingerprint: Mapped[str | None] = mapped_column(String(64))  # 64 hex digits
    target_secret_ciphertext: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    warned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # the expiring event
    expired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # its destroy queued
    # what the import found and did: counts, bytes, skipped items
    summary: Mapped[dict[str, Any]] = mapped_column(MutableDict.as_mutable(JSON()), default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    container: Mapped[Container] = relationship(back_populates="sandbox")


class SandboxItem(Base):
    """One item the import wrote: the source's id and the sandbox's, so a
    resumed import skips what is there (never a duplicate)."""

    __tablename__ = "sandbox_items"
    __table_args__ = (UniqueConstraint("container_id", "kind", "source_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    container_id: Mapped[str] = mapped_column(ForeignKey("containers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # user|category|tag|media|page|post
    source_id: Mapped[int] = mapped_column(Integer)
    target_id: Mapped[int] = mapped_column(Integer)


class Lease(Base):
    """The per-container run lease: only its holder runs the pipeline."""

    __tablename__ = "leases"

    container_id: Mapped[str] = mapped_column(
        ForeignKey("containers.id", ondelete="CASCADE"), primary_key=True
    )
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)

    container: Mapped[Container] = relationship(back_populates="lease")

    def expired(self, now: datetime | None = None) -> bool:
        """Return whether the lease has run out (at ``now``, default: now)."""
        return self.expires_at <= (now or utcnow())


class User(Base):
    """Someone who may log in to the dashboard and own API tokens."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    api_tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class ApiToken(Base):
    """An API token for the REST API; only its hash is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)  # looked up by hash
    prefix: Mapped[str] = mapped_column(String(16))  # shown to tell tokens apart
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)

    user: Mapped[User] = relationship(back_populates="api_tokens")

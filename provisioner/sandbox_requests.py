"""Client sandboxes asked for, listed, extended and expired: what the CLI
and the REST API share (the rules are ``provisioner.sandboxes``; the import
is the ``import`` phase, ``pipeline.wpimport``).

A request is checked whole before anything is stored (every problem names
its field), then the live site is asked, read only, whether it answers
with a REST API and takes the Application Password: a wrong password or a
site that is not WordPress is a clear error and nothing is stored.  The
password is encrypted into the sandbox's row in the same commit as its
container's, and the job carries only the container's id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioner.config import Settings
from provisioner.errors import ConfigError, InvalidRequest, PermanentError, TransientError
from provisioner.models import Container, Lifecycle, Sandbox, utcnow
from provisioner.phases import SANDBOX
from provisioner.requests import (
    CheckedRequest,
    ProvisionRequest,
    RequestedContainer,
    check_request,
    collector,
    request_container,
)
from provisioner.sandboxes import (
    Limits,
    check_app_password,
    check_client,
    check_fingerprint,
    check_limits,
    check_source_url,
    extended,
    parse_ttl,
    sandbox_hostname,
)
from provisioner.secrets.box import SecretBox
from provisioner.secrets.vault import set_sandbox_secret
from provisioner.wpapi import WpClient, WpError, WpSite, WpTrust

TEMPLATE = "wordpress"
GONE = (Lifecycle.DESTROYING, Lifecycle.DESTROYED)


@dataclass(frozen=True, kw_only=True)
class SandboxRequest:
    """A sandbox as asked for (``provisioner sandbox create``, ``POST
    /api/sandboxes``, the wizard's sandbox path)."""

    source_url: str
    client: str
    user: str
    app_password: str = field(repr=False)  # the live site's: a secret
    node: str
    ttl: str | int | None = None  # 7d, 12h...; None: the settings' default
    owner: str | None = None
    new: bool = False  # a second sandbox of the client, not the existing one
    ca_file: str | None = None
    fingerprint: str | None = None
    hostname: str | None = None  # default sandbox-<client>
    variables: dict[str, Any] = field(default_factory=dict)  # the wordpress template's


@dataclass(frozen=True)
class CheckedSandbox:
    """A request that passed every check (the live site not yet asked)."""

    req: SandboxRequest
    source_url: str
    app_password: str = field(repr=False)
    fingerprint: str | None
    ttl: timedelta
    provision: ProvisionRequest
    checked: CheckedRequest


@dataclass(frozen=True)
class RequestedSandbox:
    """The client's sandbox: an existing one (``existing``) or a new one
    queued (``requested``: its job, root password and generated secrets)."""

    container: Container
    existing: bool
    requested: RequestedContainer | None = None


def live_sandboxes(session: Session) -> Any:
    """A query of the sandboxes whose containers are not being destroyed."""
    return (select(Container).join(Sandbox, Sandbox.container_id == Container.id)
            .where(Container.lifecycle.not_in(GONE)))  # fmt: skip


def existing_sandbox(session: Session, client: str) -> Container | None:
    """The client's newest live sandbox, if any."""
    return session.scalars(live_sandboxes(session).where(Sandbox.client == client)
                           .order_by(Container.created_at.desc()).limit(1)).first()  # fmt: skip


def check_sandbox(session: Session, settings: Settings, req: SandboxRequest) -> CheckedSandbox:
    """Check every field (no network yet).

    Raises:
        InvalidRequest: every problem, each naming its field.
    """
    problems: list[ConfigError] = []
    attempt = collector(problems)
    source_url = attempt(lambda: check_source_url(req.source_url))
    client = attempt(lambda: check_client(req.client))
    if not req.user or len(req.user) > 60 or not req.user.isprintable():
        problems.append(ConfigError("user: the live site's user name (1-60 characters)"))
    password = attempt(lambda: check_app_password(req.app_password))
    fingerprint = attempt(lambda: check_fingerprint(req.fingerprint))
    if req.ca_file and req.fingerprint:
        problems.append(ConfigError("fingerprint: give a CA file or a fingerprint, not both"))
    if req.ca_file:
        try:
            with open(req.ca_file, "rb"):
                pass
        except OSError as exc:
            problems.append(ConfigError(f"ca_file: cannot read {req.ca_file}: {exc.strerror}"))
    ttl = attempt(lambda: parse_ttl(req.ttl if req.ttl not in (None, "") else settings.sandbox_ttl))
    taken = set(session.scalars(select(Container.hostname)
                                .where(Container.lifecycle.not_in(GONE))))  # fmt: skip
    # a bad client key is its own problem, not also the default hostname's
    hostname = req.hostname or sandbox_hostname(client or "client", taken)
    provision = ProvisionRequest(template=TEMPLATE, node=req.node, hostname=hostname,
                                 variables=dict(req.variables), owner=req.owner,
                                 plan=SANDBOX.name, environment="development")  # fmt: skip
    checked: CheckedRequest | None = None
    try:
        checked = check_request(session, settings, provision)
    except InvalidRequest as exc:
        problems.extend(exc.problems)
    if problems:
        raise InvalidRequest(problems)
    assert source_url is not None and password is not None and ttl is not None
    assert checked is not None
    return CheckedSandbox(req, source_url, password, fingerprint, ttl, provision, checked)


def check_limits_of(session: Session, settings: Settings, client: str, owner: str | None) -> None:
    """Raises: InvalidRequest: over the per-client or per-owner limit."""
    live = live_sandboxes(session).subquery()
    client_count = session.scalar(select(func.count()).select_from(live)
                                  .join(Sandbox, Sandbox.container_id == live.c.id)
                                  .where(Sandbox.client == client)) or 0  # fmt: skip
    owner_count = 0
    if owner:
        owner_count = session.scalar(select(func.count()).select_from(live)
                                     .where(live.c.owner == owner)) or 0  # fmt: skip
    try:
        check_limits(Limits(settings.sandbox_max_per_client, settings.sandbox_max_per_owner),
                     client, owner, client_count, owner_count)  # fmt: skip
    except ConfigError as exc:
        raise InvalidRequest([exc]) from None


def preflight(checked: CheckedSandbox, timeout: float = 15.0) -> dict[str, Any]:
    """Ask the live site, read only: it has WordPress's REST API and takes
    the Application Password.  Returns its index (name, url, ...).

    Raises:
        InvalidRequest: ``from: ...`` (unreachable, untrusted, no REST API)
            or ``app_password: ...`` (refused).
    """
    site = WpSite(checked.source_url, checked.req.user, checked.app_password,
                  WpTrust(ca_file=checked.req.ca_file, fingerprint=checked.fingerprint),
                  connect_timeout=min(timeout, 10.0), read_timeout=timeout)  # fmt: skip
    with WpClient(site) as wp:
        try:
            index = wp.index()
            wp.me()
        except (WpError, TransientError) as exc:
            # WordPress checks the credentials on every call, the index's too
            refused = isinstance(exc, WpError) and "refused the Application Password" in exc.message
            field_name = "app_password" if refused else "from"
            raise InvalidRequest([ConfigError(f"{field_name}: {_with_hint(exc)}")]) from None
    return index


def _with_hint(exc: PermanentError | TransientError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


def request_sandbox(session: Session, box: SecretBox, settings: Settings, redis: Redis,
                    req: SandboxRequest, *, check_source: bool = True) -> RequestedSandbox:  # fmt: skip
    """The client's existing sandbox (unless ``req.new``), or a new one:
    checked, the live site asked, stored with its encrypted password in one
    commit, and queued.

    Raises:
        InvalidRequest: every problem of the request, a limit reached, or
            the live site's refusal, each naming its field; nothing stored.
    """
    if not req.new:
        try:
            client = check_client(req.client)
        except ConfigError as exc:
            raise InvalidRequest([exc]) from None
        found = existing_sandbox(session, client)
        if found is not None:
            return RequestedSandbox(found, existing=True)
    checked = check_sandbox(session, settings, req)
    check_limits_of(session, settings, req.client, req.owner)
    if check_source:
        preflight(checked)
    now = utcnow()

    def attach(container: Container) -> None:
        sandbox = Sandbox(container_id=container.id, client=req.client,
                          source_url=checked.source_url, source_user=req.user,
                          source_ca_file=req.ca_file or None,
                          source_fingerprint=checked.fingerprint,
                          expires_at=now + checked.ttl, summary={})  # fmt: skip
        set_sandbox_secret(box, sandbox, "source", checked.app_password)
        session.add(sandbox)

    requested = request_container(session, box, settings, redis, checked.provision,
                                  checked.checked, attach=attach)  # fmt: skip
    return RequestedSandbox(requested.container, existing=False, requested=requested)


def extend_sandbox(session: Session, container: Container, by: str | int,
                   now: datetime | None = None) -> datetime:  # fmt: skip
    """Push a sandbox's expiry by ``by`` (from the later of now and its
    expiry); the expiring warning may come again.  Not committed.

    Raises:
        InvalidRequest: ``by: ...``; or not a live sandbox (``id: ...``).
    """
    sandbox = _live(container)
    try:
        delta = parse_ttl(by, "by")
    except ConfigError as exc:
        raise InvalidRequest([exc]) from None
    sandbox.expires_at = extended(sandbox.expires_at, now or utcnow(), delta)
    sandbox.warned_at = None
    return sandbox.expires_at


def _live(container: Container) -> Sandbox:
    if container.sandbox is None:
        raise InvalidRequest([ConfigError(f"id: {container.hostname} is not a sandbox")])
    if container.lifecycle in GONE:
        raise InvalidRequest([ConfigError(f"id: sandbox {container.hostname} is "
                                          f"{container.lifecycle.value} already")])  # fmt: skip
    return container.sandbox


def sandbox_json(container: Container, now: datetime | None = None) -> dict[str, Any]:
    """A sandbox as the CLI and the API show it (never a password)."""
    sb = container.sandbox
    assert sb is not None
    left = (sb.expires_at - (now or utcnow())).total_seconds()
    return {
        "id": container.id, "hostname": container.hostname, "client": sb.client,
        "owner": container.owner, "source_url": sb.source_url, "source_user": sb.source_user,
        "lifecycle": container.lifecycle.value, "ip": container.ip,
        "url": f"https://{container.ip}" if container.ip else None,
        "expires_at": sb.expires_at.isoformat(), "seconds_left": max(0, int(left)),
        "warned": sb.warned_at is not None, "created_at": sb.created_at.isoformat(),
        "imported": dict(sb.summary or {}),
    }  # fmt: skip


def list_sandboxes(session: Session, client: str | None = None, owner: str | None = None,
                   include_gone: bool = False) -> list[Container]:  # fmt: skip
    """Sandboxes, soonest expiry first."""
    query = select(Container).join(Sandbox, Sandbox.container_id == Container.id)
    if not include_gone:
        query = query.where(Container.lifecycle.not_in(GONE))
    if client:
        query = query.where(Sandbox.client == client)
    if owner:
        query = query.where(Container.owner == owner)
    return list(session.scalars(query.order_by(Sandbox.expires_at)))

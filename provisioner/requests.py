"""Turning "I want a container like this" into a stored, queued request.

Everything is validated before anything is written (``check_request``, which
reports every problem at once): the node exists, the template loads, the
variables resolve, and the PVE create parameters pass PVE's own schema.
Then ``store_request`` stores one ``Container`` row (its request as a
``StoredRequest``; secrets encrypted apart: the root password, the generated
SSH key, secret variables) and ``request_container`` commits it and enqueues
one job carrying only its id: the CLI's ``create`` and the REST API both end
there.  Whether the node has the storage and bridge asked for is
``provisioner.node_facts``'s question (it asks the node).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.changes import PROTECTED_ENVIRONMENT, check_environment
from provisioner.config import Settings
from provisioner.errors import ConfigError, InvalidRequest, gather
from provisioner.models import (
    AuthKind,
    Container,
    FailurePolicy,
    Lifecycle,
    Node,
    Operation,
    new_container_id,
)
from provisioner.placement import check_spread
from provisioner.queue import enqueue, enqueue_action
from provisioner.request_checks import check_action, check_snapshot_possible, check_vmid_free
from provisioner.secrets.box import SecretBox
from provisioner.secrets.generate import generate_password, generate_ssh_keypair
from provisioner.secrets.vault import (
    container_root_password,
    set_container_secrets,
    variable_aad,
)
from provisioner.stored_request import RequestSettings, StoredRequest
from provisioner.templates.loader import load_template
from provisioner.templates.model import Template
from provisioner.templates.params import (
    CreateRequest,
    NetworkConfig,
    NodeDefaults,
    build_create_params,
)
from provisioner.templates.surface import Surface
from provisioner.templates.variables import resolve_variables
from provisioner.webhooks import check_owner

T = TypeVar("T")
_PLACEHOLDER_MARKER = "00000000-0000-0000-0000-000000000000"  # a container id's length


@dataclass(frozen=True, kw_only=True)
class ProvisionRequest(RequestSettings):
    """What an operator asks for (the wizard, the CLI and the API fill it).

    Its ``RequestSettings`` are what is stored (``StoredRequest``); the root
    password never is (it is encrypted into its own column).
    """

    template: str
    node: str
    hostname: str
    root_password: str | None = field(default=None, repr=False)  # a secret
    variables: dict[str, Any] = field(default_factory=dict)
    failure_policy: str = "keep"
    environment: str | None = None  # production gets PVE's protection flag
    owner: str | None = None  # who asks (the API's user, the CLI's --owner)
    plan: str = "provision"  # the phases its runs go through (provisioner.phases.PLANS)
    spread: str | None = None  # an anti-affinity group: placement keeps members apart


def load_named_template(settings: Settings, name: str) -> Template:
    """A template from the configured directory, by name.

    Raises:
        ConfigError: unknown name or an invalid template.
    """
    path = settings.templates_dir / name
    if "/" in name or name.startswith(".") or not (path / "template.toml").is_file():
        raise ConfigError(f"template: no template named {name!r} in {settings.templates_dir}")
    return load_template(path)


def node_defaults(node: Node) -> NodeDefaults:
    """What a request without a storage or a bridge gets on ``node``."""
    return NodeDefaults(node=node.pve_node, storage=node.default_storage or "local-lvm",
                        bridge=node.default_bridge or "vmbr0")  # fmt: skip


def _create_request(asked: RequestSettings, hostname: str, keys: str | None,
                    marker: str, environment: str | None = None,
                    surface: Surface | None = None) -> CreateRequest:  # fmt: skip
    """The PVE-facing request of a request's settings; ``surface``: its create
    surface checked already (``check_surface``), else read from ``asked`` as
    stored (checked when it was submitted).

    Raises:
        InvalidRequest: a stored create surface option no longer passes.
    """
    if surface is None:
        surface = Surface.from_json(asked.settings_json(), None)
    network = NetworkConfig(ip=asked.ip, gateway=asked.gateway, bridge=asked.bridge,
                            vlan=surface.vlan, ip6=surface.ip6, gateway6=surface.gateway6,
                            firewall=surface.firewall)  # fmt: skip
    return CreateRequest(hostname=hostname, vmid=asked.vmid, cores=asked.cores,
                         memory=asked.memory, swap=asked.swap, disk=asked.disk,
                         network=network, storage=asked.storage, ssh_public_keys=keys,
                         marker=marker, surface=surface,
                         protection=environment == PROTECTED_ENVIRONMENT)  # fmt: skip


def check_surface(settings: Settings, asked: RequestSettings) -> Surface:
    """The create surface of a new request, checked (bind mounts against
    ``PROVISIONER_BIND_MOUNT_ALLOW``).

    Raises:
        InvalidRequest: every problem, each naming its field.
    """
    return Surface.from_json(asked.settings_json(), settings.bind_mount_allow)


def stored_request(container: Container) -> StoredRequest:
    """The request stored in a container row (no secrets inside).

    Raises:
        PermanentError: the row was written by a newer release.
    """
    return StoredRequest.from_dict(container.request)


def create_request_of(container: Container, node: Node) -> tuple[CreateRequest, NodeDefaults]:
    """The PVE-facing request stored in a container row (no secrets inside)."""
    stored = stored_request(container)
    keys = "\n".join(k for k in (container.ssh_public_key, stored.ssh_public_key) if k)
    request = _create_request(stored, container.hostname, keys or None, container.id,
                              container.environment)  # fmt: skip
    return request, node_defaults(node)


def stored_variables(box: SecretBox, container: Container) -> dict[str, Any]:
    """The resolved template variables of a request, secrets decrypted."""
    stored = stored_request(container)
    values = dict(stored.variables)
    for name, token in stored.secret_variables.items():
        values[name] = box.decrypt(token, variable_aad(container.id, name))
    return values


@dataclass(frozen=True)
class CheckedRequest:
    """A request that passed every check, with what the checks loaded."""

    node: Node
    template: Template
    variables: dict[str, Any]
    surface: Surface = field(default_factory=Surface)


def _find_node(session: Session, name: str) -> Node:
    """Raises: ConfigError: ``node: ...`` no such node."""
    node = session.scalars(select(Node).where(Node.name == name)).one_or_none()
    if node is None:
        raise ConfigError(f"node: no node named {name!r} (add it first)")
    return node


def _check_failure_policy(policy: str) -> None:
    """Raises: ConfigError: ``failure_policy: ...``."""
    if policy not in ("keep", "destroy"):
        raise ConfigError(f"failure_policy: must be 'keep' or 'destroy', got {policy!r}")


def collector(problems: list[ConfigError]) -> Callable[[Callable[[], T]], T | None]:
    """``attempt(check)``: ``check()``, or None with its ConfigError added to
    ``problems`` (every problem of a request is reported at once)."""

    def attempt(check: Callable[[], T]) -> T | None:
        return gather(problems, check)

    return attempt


ROOT_LOGIN = "root@pam"


def check_root_only(node: Node, template: Template, surface: Surface) -> None:
    """PVE's root-only create options (pve-container's
    ``check_ct_modify_config_perm``): bind mounts, and feature flags other
    than ``nesting`` (any flag on a privileged container), only for the user
    ``root@pam`` itself.  An API token, even root@pam's, signs in as
    ``root@pam!NAME`` and is refused with a 403 in the create: refused here
    first, naming the field.

    Raises:
        InvalidRequest: ``binds`` and/or ``features``, saying what the node needs.
    """
    if node.auth_kind == AuthKind.PASSWORD and node.pve_user == ROOT_LOGIN:
        return
    signs_in = (f"{node.pve_user}!{node.token_name} (an API token)"
                if node.auth_kind == AuthKind.TOKEN else node.pve_user)  # fmt: skip
    needs = (f"node {node.name} signs in as {signs_in}; register it with root@pam's password "
             "(provisioner nodes add --user root@pam --password-stdin) to use them")  # fmt: skip
    problems: list[ConfigError] = []
    if surface.binds:
        problems.append(ConfigError(f"binds: Proxmox VE allows bind mounts only to root@pam "
                                    f"signed in with its password; {needs}"))  # fmt: skip
    enabled = {name for name, on in {**vars(template.features), **surface.features}.items()
               if on}  # fmt: skip
    beyond = sorted(enabled - {"nesting"}) if template.unprivileged else sorted(enabled)
    if beyond:
        what = ("feature flags of a privileged container" if not template.unprivileged
                else "feature flags other than nesting")  # fmt: skip
        problems.append(ConfigError(f"features: Proxmox VE allows {what} ({', '.join(beyond)}) "
                                    f"only to root@pam signed in with its password; {needs}"))  # fmt: skip
    if problems:
        raise InvalidRequest(problems)


def check_request(session: Session, settings: Settings, req: ProvisionRequest) -> CheckedRequest:
    """Check a request without storing anything: the node exists, the
    template loads, the variables resolve and the PVE create parameters pass
    PVE's own schema (with the node's default storage and bridge).

    Raises:
        InvalidRequest: every problem found, each naming its field.
    """
    problems: list[ConfigError] = []
    attempt = collector(problems)

    node = attempt(lambda: _find_node(session, req.node))
    attempt(lambda: _check_failure_policy(req.failure_policy))
    attempt(lambda: check_environment(req.environment))
    attempt(lambda: check_owner(req.owner))
    attempt(lambda: check_spread(req.spread))
    template = attempt(lambda: load_named_template(settings, req.template))
    surface = attempt(lambda: check_surface(settings, req))
    variables: dict[str, Any] | None = None
    if template is not None:
        variables = attempt(lambda: resolve_variables(template, req.variables))
        if node is not None and surface is not None:
            request = _create_request(req, req.hostname, req.ssh_public_key,
                                      _PLACEHOLDER_MARKER, surface=surface)  # fmt: skip
            attempt(lambda: build_create_params(request, template, node_defaults(node)))
            attempt(lambda: check_root_only(node, template, surface))
    if problems:
        raise InvalidRequest(problems)
    assert node is not None and template is not None and variables is not None
    assert surface is not None
    return CheckedRequest(node, template, variables, surface)


def store_request(session: Session, box: SecretBox, req: ProvisionRequest,
                  checked: CheckedRequest, *, container_id: str | None = None,
                  placement: Mapping[str, str] | None = None) -> Container:  # fmt: skip
    """Store a checked request as a pending container (not committed): its
    secrets encrypted, a generated SSH key pair and root password (unless given).
    ``container_id``: the id placement reserved for it (else a new one);
    ``placement``: the placement's node and reasons (``Placed.to_json``).

    Raises:
        ConfigError: the create parameters fail PVE's schema with the
            generated values (not expected once checked).
    """
    node, template, variables = checked.node, checked.template, checked.variables
    container = Container(id=container_id or new_container_id(), node=node,
                          template=template.name, hostname=req.hostname,
                          lifecycle=Lifecycle.PENDING,
                          failure_policy=FailurePolicy(req.failure_policy),
                          environment=req.environment or None, owner=req.owner,
                          plan=req.plan, spread_group=req.spread or None)  # fmt: skip
    container.request = StoredRequest(
        # the asked-for settings only (never the root password), the surface as checked
        **{**req.settings_json(), **checked.surface.to_json()},
        variables={k: v for k, v in variables.items() if k not in template.secret_names},
        secret_variables={k: box.encrypt(str(v), variable_aad(container.id, k))
                          for k, v in variables.items() if k in template.secret_names},
        placement=dict(placement) if placement else None,
    ).to_dict()  # fmt: skip
    private_key, public_key = generate_ssh_keypair(f"lxc-provisioner@{req.hostname}")
    container.ssh_public_key = public_key
    password = req.root_password or generate_password()
    set_container_secrets(box, container, root_password=password, ssh_private_key=private_key)
    request, defaults = create_request_of(container, node)
    build_create_params(request, template, defaults)  # PVE's schema, before any API call
    session.add(container)
    session.flush()
    return container


def submit(
    session: Session, box: SecretBox, settings: Settings, req: ProvisionRequest
) -> Container:
    """Check a request and store it as a pending container (not committed).

    Raises:
        InvalidRequest: every problem, each naming its field; nothing is stored.
    """
    return store_request(session, box, req, check_request(session, settings, req))


@dataclass(frozen=True)
class RequestedContainer:
    """A request stored and (unless the queue was down) queued.

    Attributes:
        container: the stored row (committed).
        job_id: the queued job, or None when Redis was unavailable (the
            workers' recovery loop queues the pending row once it is back).
        root_password: the generated root password, to be shown once; None
            when the request gave one.
        queue_error: why the job could not be queued, or None.
    """

    container: Container
    job_id: str | None
    root_password: str | None = field(repr=False)  # a secret
    queue_error: str | None = None
    # secret variables given generated values, shown once: a create's that the
    # request left out, a clone's that the template regenerates
    generated_secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def queue_warning(self, *, with_cause: bool = False) -> str | None:
        """What to tell the operator when the job could not be queued."""
        if self.queue_error is None:
            return None
        cause = f" ({self.queue_error})" if with_cause else ""
        return f"the queue is unavailable{cause}; the request is stored and will run later"


def request_container(session: Session, box: SecretBox, settings: Settings, redis: Redis,
                      req: ProvisionRequest, checked: CheckedRequest,
                      attach: Callable[[Container], None] | None = None, *,
                      container_id: str | None = None,
                      placement: Mapping[str, str] | None = None) -> RequestedContainer:  # fmt: skip
    """Store a checked request as a pending container, commit it, and queue
    its run: what the CLI's ``create`` and ``POST /api/containers`` share
    (and a sandbox's, whose ``attach`` adds its row in the same commit).
    A Redis failure does not lose the request (see ``RequestedContainer``).

    Raises:
        ActionRefused: ``vmid: ...`` the vmid belongs to another container
            of the node; nothing is stored.
        ConfigError: the create parameters fail PVE's schema with the
            generated values; the session is rolled back.
    """
    check_vmid_free(session, req.node, req.vmid)
    try:
        container = store_request(session, box, req, checked, container_id=container_id,
                                  placement=placement)  # fmt: skip
        if attach is not None:
            attach(container)
    except ConfigError:
        session.rollback()
        raise
    generated = None if req.root_password else container_root_password(box, container)
    secrets = generated_secrets(checked.template, req.variables, checked.variables)
    session.commit()
    try:
        job_id: str | None = enqueue(redis, settings, container.id).id
    except RedisError as exc:
        return RequestedContainer(container, None, generated, queue_error=str(exc),
                                  generated_secrets=secrets)  # fmt: skip
    return RequestedContainer(container, job_id, generated, generated_secrets=secrets)


def generated_secrets(template: Template, given: Mapping[str, Any],
                      resolved: Mapping[str, Any]) -> dict[str, str]:  # fmt: skip
    """The secret variables a request left out, with the values generated for
    them (``resolve_variables``), in the template's order: shown once to
    whoever asked, e.g. the administrator password of a wordpress site."""
    return {name: str(resolved[name]) for name, var in template.variables.items()
            if var.secret and given.get(name) is None and name in resolved}  # fmt: skip


@dataclass(frozen=True)
class RequestedAction:
    """An action queued for a container: its job, and the seq its events follow."""

    job_id: str
    after: int
    operation_id: str | None = None


def request_action(session: Session, settings: Settings, redis: Redis, container: Container,
                   action: str, params: dict[str, Any] | None,
                   run_alive: Callable[[], bool]) -> RequestedAction:  # fmt: skip
    """Queue an action of a container, what the CLI and the REST API share:
    the lifecycle rule, then (for an action with parameters) its
    ``Operation`` row, committed before its job is queued, then the job.
    ``params`` were checked by the caller and hold no secret.

    Raises:
        ActionRefused: the lifecycle (or a record without a CT) forbids it.
        ActionPending: the same action is queued or running; nothing is stored.
        TransientError: the queue's lock could not be had; nothing is stored.
        RedisError: Redis is away; nothing is stored.
    """
    check_action(container, action)
    check_snapshot_possible(container, action, params)
    after = max(container.next_seq - 1, 0)
    operation = None
    if params is not None:
        operation = Operation(container_id=container.id, action=action, params=dict(params))
        session.add(operation)
    session.commit()
    try:
        job = enqueue_action(redis, settings, container.id, action, run_alive,
                             operation.id if operation is not None else None)  # fmt: skip
    except Exception:
        if operation is not None:
            session.delete(operation)
            session.commit()
        raise
    return RequestedAction(job.id, after, operation.id if operation is not None else None)


@dataclass(frozen=True, kw_only=True)
class CloneRequest:
    """A clone of a ready container with a fresh identity (``provisioner clone``).

    Attributes:
        hostname: the clone's hostname.
        environment: the clone's environment (``staging`` by default).
        full: a full copy (the default) or a linked clone (on the source's
            storage, from a snapshot: PVE's rule).
        ip, gateway, bridge: the clone's network (``dhcp`` by default; the
            source's bridge unless given).
        storage: where a full clone's disk goes (default: the source's).
        variables: template variables that differ from the source's (e.g.
            ``basic_auth=true`` for an nginx staging clone).
    """

    hostname: str
    environment: str | None = "staging"
    full: bool = True
    ip: str = "dhcp"
    gateway: str | None = None
    bridge: str | None = None
    storage: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)  # overrides of the source's
    owner: str | None = None  # the clone's owner (who asks), as for a create


def _check_clonable(source: Container) -> None:
    """What of the source's create surface a clone cannot take.

    Raises:
        ActionRefused: the source has bind mounts (Proxmox VE refuses to
            clone them: "unable to clone mountpoint 'mpN' (type bind)"), or
            a further interface with a static address (the clone would
            carry the same address).
    """
    from provisioner.request_checks import ActionRefused

    surface = Surface.from_json(stored_request(source).settings_json(), None)
    if surface.binds:
        paths = ", ".join(b.source for b in surface.binds)
        raise ActionRefused(f"{source.hostname} has bind mounts ({paths}): Proxmox VE cannot "
                            "clone a container with bind mounts; its data volumes it can")  # fmt: skip
    static = [f"eth{i}: {', '.join(n.static_addresses)}"
              for i, n in enumerate(surface.nics, 1) if n.static_addresses]  # fmt: skip
    if static:
        raise ActionRefused(f"{source.hostname} has further interfaces with static addresses "
                            f"({'; '.join(static)}): a clone would carry the same ones")  # fmt: skip


def clone_settings(stored: StoredRequest, req: CloneRequest) -> dict[str, Any]:
    """The settings a clone of ``stored`` asks for: the source's, with the
    clone's network on eth0 (a static IPv6 of the source's is not copied)."""
    static6 = stored.ip6 not in (None, "auto", "dhcp")
    return {**stored.settings_json(), "vmid": None, "ip": req.ip, "gateway": req.gateway,
            "bridge": req.bridge or stored.bridge, "storage": req.storage or stored.storage,
            "ip6": None if static6 else stored.ip6,
            "gateway6": None if static6 else stored.gateway6}  # fmt: skip


def check_clone(session: Session, settings: Settings, source: Container,
                req: CloneRequest) -> Template:  # fmt: skip
    """Check a clone request without storing anything.

    Raises:
        ActionRefused: the source is not a ready container that owns a CT.
        InvalidRequest: every problem of the request, each naming its field.
    """
    from provisioner.request_checks import ActionRefused, check_network

    if source.lifecycle != Lifecycle.READY or source.vmid is None:
        raise ActionRefused(f"only a ready container with a CT can be cloned; this one is "
                            f"{source.lifecycle.value}"
                            + ("" if source.vmid is not None else " and owns no CT"))  # fmt: skip
    _check_clonable(source)
    problems: list[ConfigError] = []
    attempt = collector(problems)

    attempt(lambda: check_environment(req.environment))
    attempt(lambda: check_owner(req.owner))
    attempt(lambda: check_network(req.ip, req.gateway))
    if not req.full and req.storage:
        problems.append(ConfigError("storage: a linked clone stays on the source's storage "
                                    "(Proxmox VE's rule); leave it out or clone in full"))  # fmt: skip
    template = attempt(lambda: load_named_template(settings, source.template))
    if template is not None:
        asked = RequestSettings(**clone_settings(stored_request(source), req))
        request = _create_request(asked, req.hostname, None, _PLACEHOLDER_MARKER)
        attempt(lambda: build_create_params(request, template, node_defaults(source.node)))
    if problems:
        raise InvalidRequest(problems)
    assert template is not None
    return template


def request_clone(session: Session, box: SecretBox, settings: Settings, redis: Redis,
                  source: Container, req: CloneRequest) -> RequestedContainer:  # fmt: skip
    """Store a clone of ``source`` as a pending container and queue its run.

    The clone keeps the source's template, resources and variables, with a
    fresh identity: its own SSH key pair, a new root password, and new
    values for the secret variables the template marks ``regenerate``
    (every secret re-encrypted for the new record).  Its create phase
    clones the source's CT from a fresh snapshot.

    Raises:
        ActionRefused: the source cannot be cloned now.
        InvalidRequest: every problem of the request, each naming its field.
    """
    from provisioner.templates.variables import generate_secret

    template = check_clone(session, settings, source, req)
    stored = stored_request(source)
    values = stored_variables(box, source)
    if req.variables:
        try:
            values = resolve_variables(template, {**values, **req.variables})
        except ConfigError as exc:
            raise InvalidRequest([exc]) from None
    regenerated: dict[str, str] = {}
    for var in template.variables.values():
        if var.secret and var.regenerate and var.name not in req.variables:
            values[var.name] = regenerated[var.name] = generate_secret(var.length)
    container = Container(id=new_container_id(), node=source.node, template=source.template,
                          hostname=req.hostname, lifecycle=Lifecycle.PENDING,
                          failure_policy=FailurePolicy.KEEP, environment=req.environment,
                          source_id=source.id, owner=req.owner)  # fmt: skip
    container.request = StoredRequest(
        **clone_settings(stored, req),
        variables={k: v for k, v in values.items() if k not in template.secret_names},
        secret_variables={k: box.encrypt(str(v), variable_aad(container.id, k))
                          for k, v in values.items() if k in template.secret_names},
        clone={"source": source.id, "full": req.full},
    ).to_dict()  # fmt: skip
    private_key, public_key = generate_ssh_keypair(f"lxc-provisioner@{req.hostname}")
    container.ssh_public_key = public_key
    password = generate_password()
    set_container_secrets(box, container, root_password=password, ssh_private_key=private_key)
    session.add(container)
    session.flush()
    cid = container.id
    session.commit()
    try:
        job_id: str | None = enqueue(redis, settings, cid).id
    except RedisError as exc:
        return RequestedContainer(container, None, password, queue_error=str(exc),
                                  generated_secrets=regenerated)  # fmt: skip
    return RequestedContainer(container, job_id, password, generated_secrets=regenerated)


def refresh_pair(session: Session, settings: Settings, clone: Container,
                 action: str) -> tuple[Container, Container]:  # fmt: skip
    """A sync or promote of ``clone``: (the container whose data is replaced,
    the one read), checked before anything is queued.

    Raises:
        ActionRefused: not a clone, its source gone or owning no CT, either
            busy (a run holds it), or the template has no data hooks.
    """
    from provisioner.models import Lease
    from provisioner.request_checks import ActionRefused

    if clone.source_id is None:
        raise ActionRefused(f"{clone.hostname} is not a clone: there is nothing to {action} "
                            "with")  # fmt: skip
    source = session.get(Container, clone.source_id)
    if source is None or source.lifecycle == Lifecycle.DESTROYED or source.vmid is None:
        raise ActionRefused(f"the source of {clone.hostname} is gone or owns no CT")
    template = load_named_template(settings, clone.template)
    if not template.hooks.syncable:
        raise ActionRefused(f"template {clone.template} has no export and import hooks: its "
                            f"data cannot be {'synced' if action == 'sync' else 'promoted'}")  # fmt: skip
    target, peer = (clone, source) if action == "sync" else (source, clone)
    for ct in (target, peer):
        held = session.get(Lease, ct.id)
        if held is not None and not held.expired():
            raise ActionRefused(f"{ct.hostname} is busy: a run holds it; try again when it ends")
    return target, peer

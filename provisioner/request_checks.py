"""The rules a container request and a container action must pass, before
anything is stored or queued.  The CLI applies them; they are the REST API's
rules in one place, without Flask: ``web/api_containers.py`` applies them
too (turning their errors into its responses).

Every failure is a :class:`~provisioner.errors.ConfigError` whose message
starts with the field it blames (``"ip: ..."``), or an
:class:`ActionRefused` naming the lifecycle that forbids the action.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.errors import ConfigError, PermanentError
from provisioner.models import Container, Lifecycle, Node
from provisioner.ssh.public_keys import first_bad_line
from provisioner.stored_request import StoredRequest
from provisioner.templates.surface import check_ip4

# Which lifecycles allow which action.
ACTIONS: dict[str, frozenset[Lifecycle]] = {
    "start": frozenset({Lifecycle.READY, Lifecycle.ERROR}),
    "stop": frozenset({Lifecycle.READY, Lifecycle.ERROR}),
    "reboot": frozenset({Lifecycle.READY, Lifecycle.ERROR}),
    "retry": frozenset({Lifecycle.ERROR}),
    "resync": frozenset({Lifecycle.READY, Lifecycle.ERROR}),
    "destroy": frozenset({Lifecycle.PENDING, Lifecycle.READY, Lifecycle.ERROR}),
    "snapshot": frozenset({Lifecycle.READY, Lifecycle.ERROR}),
    "rollback": frozenset({Lifecycle.READY, Lifecycle.ERROR}),
    "delete-snapshot": frozenset({Lifecycle.READY, Lifecycle.ERROR}),
    "set": frozenset({Lifecycle.READY, Lifecycle.ERROR}),
    "migrate": frozenset({Lifecycle.READY, Lifecycle.ERROR}),
    # a sync runs on the clone; a promote on the clone's source
    "sync": frozenset({Lifecycle.READY, Lifecycle.ERROR}),
    "promote": frozenset({Lifecycle.READY, Lifecycle.ERROR}),
}
POWER_ACTIONS = ("start", "stop", "reboot")
# the actions that need the record's CT (a record that owns none is refused)
CT_ACTIONS = (*POWER_ACTIONS, "resync", "snapshot", "rollback", "delete-snapshot", "set", "sync",
              "promote", "migrate")  # fmt: skip
MIN_ROOT_PASSWORD = 8  # PVE takes 5; the wizard, the API and the CLI all ask for 8
MAX_ROOT_PASSWORD = 256
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # nodes, storages, bridges
TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_SSH_KEYS_TEXT = 16384


# PVE's parameter names -> the request field a user would correct
_PVE_FIELDS = {
    "hostname": "hostname", "cores": "cores", "memory": "memory", "swap": "swap",
    "rootfs": "disk", "net0": "ip", "net0.ip": "ip", "net0.gw": "gateway",
    "net0.bridge": "bridge", "vmid": "vmid", "ssh-public-keys": "ssh_public_key",
    "password": "root_password", "net0.ip6": "ip6", "net0.gw6": "gateway6", "net0.tag": "vlan",
    "net0.firewall": "firewall",
}  # fmt: skip
_FIELD_PREFIX = re.compile(r"([a-z_][\w.\[\]-]*): ")
_PVE_NET = re.compile(r"net([1-9]\d*)(\.\w+)?")  # net1 is the request's nics[0]
_VARIABLE = re.compile(r"variable '([^']+)'")


def field_of(message: str) -> str | None:
    """The request field a ``ConfigError``'s message blames (``"field: ..."``,
    a template's variable, or a PVE create parameter), if any."""
    if message.startswith("template '"):
        m = _VARIABLE.search(message)
        return f"variables.{m.group(1)}" if m else "variables"
    if message.startswith("template has "):  # the template itself is broken
        return "template"
    rest = message.removeprefix("invalid container parameters: ")
    m = _FIELD_PREFIX.match(rest)
    if m is None:
        return None
    name = m.group(1)
    if name == "rootfs" and "storage" in rest[m.end() :].lower():
        return "storage"
    if (net := _PVE_NET.fullmatch(name)) is not None:
        return f"nics[{int(net.group(1)) - 1}]{net.group(2) or ''}"
    if re.fullmatch(r"mp\d+", name):
        return "mounts"
    return _PVE_FIELDS.get(name, name)


def first_per_field(problems: Iterable[ConfigError]) -> list[ConfigError]:
    """The problems without those of a field (or a part of one: ``variables.x``
    of ``variables``) already blamed by an earlier one: a refused field's
    placeholder value must not be blamed twice."""
    kept: list[ConfigError] = []
    blamed: list[str] = []
    for problem in problems:
        field = field_of(problem.message)
        if field is not None and any(field == b or field.startswith(f"{b}.") for b in blamed):
            continue
        if field is not None:
            blamed.append(field)
        kept.append(problem)
    return kept


class ActionRefused(PermanentError):
    """The container's lifecycle (or state) does not allow the action now."""


def check_network(ip: str, gateway: str | None) -> tuple[str, str | None]:
    """eth0's IPv4: ``dhcp`` (also for an empty ``ip``) or an address with
    its prefix length; a gateway only goes with a static address
    (``check_ip4``'s rules, a further interface's).

    Returns:
        The (ip, gateway) to store.

    Raises:
        ConfigError: ``ip: ...`` or ``gateway: ...``.
    """
    checked, gateway = check_ip4("", ip or "dhcp", gateway)
    assert checked is not None
    return checked, gateway


def check_ssh_public_keys(text: str | None) -> str | None:
    """OpenSSH public keys, one a line (blank lines allowed), each parsed
    (``provisioner.ssh.public_keys``): a key cut short or damaged is refused.

    Returns:
        The keys without surrounding blank space, or None if there are none.

    Raises:
        ConfigError: ``ssh_public_key: line N: ...`` naming the first bad
            line and why, never quoting it.
    """
    if text is None or not text.strip():
        return None
    if len(text) > MAX_SSH_KEYS_TEXT:
        raise ConfigError(f"ssh_public_key: at most {MAX_SSH_KEYS_TEXT} characters of keys")
    bad = first_bad_line(text)
    if bad is not None:
        number, why = bad
        raise ConfigError(f"ssh_public_key: line {number}: {why}")
    return text.strip()


def check_root_password(password: str) -> str:
    """A root password given by the user (never echoed in messages).

    Raises:
        ConfigError: ``root_password: ...`` too short, too long, or with
            control characters.
    """
    if len(password) < MIN_ROOT_PASSWORD:
        raise ConfigError(f"root_password: must be at least {MIN_ROOT_PASSWORD} characters long")
    if len(password) > MAX_ROOT_PASSWORD:
        raise ConfigError(f"root_password: may be at most {MAX_ROOT_PASSWORD} characters long")
    if _CONTROL.search(password):
        raise ConfigError("root_password: must not contain control characters")
    return password


def check_name(field: str, value: str | None) -> str | None:
    """A storage, bridge or node name: 1-64 letters, digits and ``_.-``.

    Raises:
        ConfigError: ``<field>: ...``.
    """
    if value is not None and not NAME.fullmatch(value):
        raise ConfigError(f"{field}: must be 1-64 letters, digits and '_.-', got {value!r}")
    return value


def check_vmid_free(session: Session, node: str, vmid: int | None) -> None:
    """A requested vmid must not belong to another (not destroyed) container
    of the node.

    Raises:
        ActionRefused: naming the container that has it.
    """
    if vmid is None:
        return
    taken = session.scalar(
        select(Container.id).join(Node, Container.node_id == Node.id)
        .where(Node.name == node, Container.vmid == vmid,
               Container.lifecycle != Lifecycle.DESTROYED).limit(1))  # fmt: skip
    if taken is not None:
        raise ActionRefused(f"vmid: {vmid} is already used by container {taken}")


def check_action(container: Container, action: str) -> None:
    """Whether ``action`` may be queued for the container now.

    Raises:
        ValueError: an unknown action.
        ActionRefused: the lifecycle does not allow it (naming the ones that
            do), or a power action or resync of a record that owns no CT.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    allowed = ACTIONS[action]
    if container.lifecycle not in allowed:
        names = ", ".join(sorted(lc.value for lc in allowed))
        raise ActionRefused(f"cannot {action} a container that is {container.lifecycle.value} "
                            f"(only when {names})")  # fmt: skip
    if action in CT_ACTIONS and container.vmid is None:
        raise ActionRefused(f"cannot {action}: this record owns no container in Proxmox VE "
                            "(retry creates one; destroy removes the record)")  # fmt: skip


# the actions whose run takes a snapshot: asked for, or a safe change's safety snapshot
SNAPSHOTTING = ("snapshot", "resync", "set", "sync", "promote")


def bind_mount_paths(container: Container) -> list[str]:
    """Where the container's bind mounts are mounted (its stored request)."""
    if not container.request:
        return []
    return [str(b.get("path")) for b in StoredRequest.from_dict(container.request).binds]


def check_snapshot_possible(container: Container, action: str,
                            params: dict[str, object] | None) -> None:  # fmt: skip
    """Proxmox VE cannot snapshot a container with a bind mount (pve-container's
    ``has_feature('snapshot')`` finds no storage behind a host path: "snapshot
    feature is not available"), so neither a snapshot nor a change that
    would roll back to its safety snapshot can run there.

    Raises:
        ActionRefused: naming the bind mounts and, for a change, the way on
            (``on_failure=keep``: the change runs without a safety snapshot).
    """
    binds = bind_mount_paths(container) if action in SNAPSHOTTING else []
    if not binds:
        return
    why = (f"Proxmox VE cannot snapshot a container with bind mounts "
           f"({', '.join(binds)})")  # fmt: skip
    if action == "snapshot":
        raise ActionRefused(f"cannot snapshot: {why}")
    if (params or {}).get("on_failure", "rollback") == "rollback":
        raise ActionRefused(f"cannot {action} with on_failure=rollback: {why}, so there would be "
                            "no safety snapshot to roll back to; ask with on_failure=keep "
                            f"(CLI: --on-failure keep) to {action} without one")  # fmt: skip

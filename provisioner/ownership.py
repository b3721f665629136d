"""The ownership guard: never act on a container that is not ours.

A record (``Container`` row) claims a CT by its node and vmid.  The claim
can go stale: the create failed and PVE gave the vmid to someone else, the
CT was destroyed behind our back and the id reused, a record restored from
an old backup.  So before any PVE write to an existing CT, :func:`prove`
reads the CT's config on the record's node and checks the marker written at
create (``lxc-provisioner-id: <record id>`` in its description).  Only then
does the caller get an :class:`Owned`, and every write method of the PVE
client (start, stop, destroy, snapshots, config, clone, ...) takes an
``Owned`` instead of a bare vmid: there is no other way to write to a CT.

A CT that is gone, or carries another marker, raises :class:`NotOurs`; the
caller then marks the record as owning no container.  The listing helpers at
the end tell the same story without writing anything, for the containers
list, ``provisioner ls`` and the API.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provisioner.errors import PermanentError, PvePermanentError
from provisioner.pve.types import Owned
from provisioner.templates.params import parse_marker

if TYPE_CHECKING:
    from provisioner.pve.client import PveClient
    from provisioner.pve.types import ContainerStatus

NO_CONTAINER_HINT = "destroy only removes the record; retry creates a new container"


class NotOurs(PermanentError):
    """The CT a record claims is gone or belongs to someone else.

    Attributes:
        node, vmid: the claim.
        other: the hostname of the CT that holds the vmid now, or None when
            there is no CT with that vmid on the node.
    """

    def __init__(self, node: str, vmid: int, other: str | None) -> None:
        self.node, self.vmid, self.other = node, vmid, other
        super().__init__(describe_loss(node, vmid, other), hint=NO_CONTAINER_HINT)

    @property
    def gone(self) -> bool:
        """No CT has the vmid on the node (rather than another one having it)."""
        return self.other is None


def describe_loss(node: str, vmid: int, other: str | None) -> str:
    """``CT 108 on node pve belongs to another container now (hostname b1);
    this record owns no container`` (or ``... no longer exists ...``)."""
    if other is None:
        return f"CT {vmid} no longer exists on node {node}; this record owns no container"
    return (f"CT {vmid} on node {node} belongs to another container now (hostname {other}); "
            "this record owns no container")  # fmt: skip


def judge(node: str, vmid: int, container_id: str, config: Mapping[str, Any] | None) -> Owned:
    """Decide a claim from the CT's config (None: no such CT on the node).

    Pure: :func:`prove` reads the config, this decides.

    Raises:
        NotOurs: no config, or its marker is not ``container_id``.
    """
    if config is None:
        raise NotOurs(node, vmid, None)
    if parse_marker(config.get("description")) != container_id:
        raise NotOurs(node, vmid, str(config.get("hostname") or f"CT{vmid}"))
    return Owned(node=node, vmid=vmid, container_id=container_id)


def read_config(pve: PveClient, vmid: int) -> dict[str, Any] | None:
    """The CT's config on the client's node, or None if it has no such CT.

    Raises:
        PveTransientError, PvePermanentError: the node could not tell.
    """
    try:
        return pve.get_config(vmid)
    except PvePermanentError as exc:
        # PVE: "Configuration file 'nodes/pve/lxc/108.conf' does not exist"
        # (also for a CT that lives on another node of the cluster)
        if "does not exist" in (exc.pve_message or ""):
            return None
        raise


def prove(pve: PveClient, container_id: str, vmid: int) -> Owned:
    """Prove that CT ``vmid`` on the client's node is record ``container_id``'s.

    One ``GET .../config``: the marker written at create must be this
    record's id, on this record's node (the client is bound to it).

    Raises:
        NotOurs: the CT is gone from the node or carries another marker.
        PveTransientError, PvePermanentError: the node could not tell.
    """
    return judge(pve.node, vmid, container_id, read_config(pve, vmid))


# -- the listing: who really holds a CT, without writing anything ----------------


@dataclass(frozen=True)
class Claim:
    """A record's claim as the listing sees it."""

    container_id: str
    hostname: str
    vmid: int


def claims_in_doubt(claims: Iterable[Claim],
                    listed: Mapping[int, ContainerStatus]) -> list[Claim]:  # fmt: skip
    """The claims a node's CT list (``GET /nodes/{node}/lxc``) cannot confirm.

    A claim is in doubt when the CT listed under its vmid has another name
    than the record's hostname, or when several records claim the same vmid
    (at most one of them holds it).  A missing CT is not in doubt: the list
    already says it does not exist.
    """
    claims = list(claims)
    count = Counter(c.vmid for c in claims)
    return [c for c in claims if c.vmid in listed and (
        count[c.vmid] > 1 or listed[c.vmid].name != c.hostname)]  # fmt: skip


def settle_claims(pve: PveClient, doubtful: Iterable[Claim]) -> dict[str, str]:
    """Read the config of each CT in doubt (once per vmid): record id -> why
    it does not hold its CT, for the claims that are not the record's."""
    configs: dict[int, dict[str, Any] | None] = {}
    lost: dict[str, str] = {}
    for claim in doubtful:
        if claim.vmid not in configs:
            configs[claim.vmid] = read_config(pve, claim.vmid)
        try:
            judge(pve.node, claim.vmid, claim.container_id, configs[claim.vmid])
        except NotOurs as exc:
            lost[claim.container_id] = exc.message
    return lost

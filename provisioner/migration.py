"""Moving a container to another node of its cluster: the rules (pure).

A container moves only within its Proxmox VE cluster (``nodes.cluster``, as
registration read it from ``/cluster/status``), to a registered node other
than its own that is not in maintenance.  ``auto`` asks placement for the
node (:mod:`provisioner.placing`).
"""

from __future__ import annotations

from provisioner.errors import ConfigError
from provisioner.models import Node


def check_target(source: Node, target: Node) -> None:
    """Whether a container on ``source`` may move to ``target``.

    Raises:
        ConfigError: ``to: ...`` naming why not.
    """
    if target.id == source.id:
        raise ConfigError(f"to: the container is on node {source.name} already")
    if not source.cluster or target.cluster != source.cluster:
        where = f"cluster {source.cluster}" if source.cluster else "no cluster (a standalone node)"
        raise ConfigError(f"to: node {target.name} is not in the cluster of node {source.name} "
                          f"({where}); a container moves only within its cluster")  # fmt: skip
    if target.maintenance:
        raise ConfigError(f"to: node {target.name} is in maintenance (provisioner nodes undrain "
                          f"{target.name} ends it)")  # fmt: skip

"""The part of PVE's permission model that even root@pam's API token meets.

pvesim has one user and one token with every privilege, so only the rules
that compare the user *name* with ``root@pam`` matter: an API token
authenticates as ``root@pam!NAME`` (pve-manager's PVE::HTTPServer: "the
token-ID `<user>@<realm>!<tokenname>` is the user for token based
authentication"), which is not ``root@pam``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pvesim.errors import PveError
from pvesim.guest import split_property_string
from pvesim.volumes import MountPoint, is_mount_key

ROOT = "root@pam"


def perm_error(what: str) -> PveError:
    """PVE::Exception::raise_perm_exc: 403 "Permission check failed (...)"."""
    return PveError(403, f"Permission check failed ({what})")


def check_ct_modify_config_perm(
    user: str,
    oldconf: dict[str, Any] | None,
    newconf: dict[str, Any],
    deletes: Iterable[str],
    unprivileged: bool,
) -> None:
    """pve-container's PVE::LXC::check_ct_modify_config_perm, the root-only
    rules: bind and device mount points, ``dev[n]``, the hookscript, and
    feature flags (any on a privileged CT; all but ``nesting`` otherwise).

    Raises:
        PveError: 403 as PVE words it.
    """
    if user == ROOT:
        return
    oldconf = oldconf or {}
    for opt, delete in [*((k, False) for k in newconf), *((k, True) for k in deletes)]:
        if is_mount_key(opt) and not delete:
            mp = MountPoint.parse(opt, str(newconf[opt]))
            if mp.kind != "volume":
                raise perm_error(f"mount point type {mp.kind} is only allowed for root@pam")
        elif opt.startswith("dev") and opt[3:].isdigit():
            raise perm_error("configuring device passthrough is only allowed for root@pam")
        elif opt == "features":
            if not unprivileged:
                raise perm_error(
                    "changing feature flags for privileged container is only allowed for root@pam"
                )
            new = {} if delete else split_property_string(str(newconf[opt]))
            old = split_property_string(str(oldconf.get(opt, "")))
            changed = {f for f in {*old, *new} if old.get(f, "") != new.get(f, "")}
            if changed - {"nesting"}:
                raise perm_error(
                    "changing feature flags (except nesting) is only allowed for root@pam"
                )
        elif opt == "hookscript":
            raise perm_error("changing the hookscript is only allowed for root@pam")

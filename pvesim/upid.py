"""UPIDs: PVE's unique task identifiers.

``UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{type}:{id}:{user}:``
(note the trailing colon).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UPID_RE = re.compile(
    r"^UPID:(?P<node>[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):(?P<pid>[0-9A-Fa-f]{8}):"
    r"(?P<pstart>[0-9A-Fa-f]{8,9}):(?P<starttime>[0-9A-Fa-f]{8}):(?P<type>[^:\s/]+):"
    r"(?P<id>[^:\s/]*):(?P<user>[^:\s/]+):$"
)


# PVE::AccessControl's $token_full_regex: (user@realm)!tokenid, with
# PVE::Auth::Plugin's $user_regex and $realm_regex (a token's name is a realm_regex)
_REALM = r"[A-Za-z][A-Za-z0-9\.\-_]+"
_TOKEN_FULL_RE = re.compile(rf"^((?:[^\s:/]+)@(?:{_REALM}))!({_REALM})$")


def split_tokenid(user: str) -> tuple[str, str] | None:
    """PVE::AccessControl::split_tokenid: ``root@pam!name`` is ``("root@pam",
    "name")``; a plain user id is None."""
    m = _TOKEN_FULL_RE.match(user)
    return (m[1], m[2]) if m else None


@dataclass(frozen=True)
class Upid:
    """A parsed UPID."""

    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str

    def __str__(self) -> str:
        return (
            f"UPID:{self.node}:{self.pid:08X}:{self.pstart:08X}:{self.starttime:08X}:"
            f"{self.type}:{self.id}:{self.user}:"
        )


def parse_upid(text: str) -> Upid:
    """Parse a UPID string.

    Raises:
        ValueError: if ``text`` is not a well-formed UPID.
    """
    m = _UPID_RE.match(text)
    if not m:
        raise ValueError(f"unable to parse worker upid '{text}'")
    return Upid(
        node=m["node"],
        pid=int(m["pid"], 16),
        pstart=int(m["pstart"], 16),
        starttime=int(m["starttime"], 16),
        type=m["type"],
        id=m["id"],
        user=m["user"],
    )

"""Client sandboxes: the rules (pure; no I/O).

A sandbox is a container of the ``wordpress`` template that holds a copy of
a client's live site, imported through the site's REST API.  It has a
client key (asking again for the same client returns the existing sandbox
unless a new one is asked for), an owner and an expiry.  The expiry
scheduler warns (``expiring``) ``warn_before`` seconds before and destroys
the sandbox at its expiry (``expired``).

The CLI and the REST API check a request with these rules before anything
is stored; every problem names its field (``"ttl: ..."``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from provisioner.errors import ConfigError
from provisioner.pve.parse import normalize_fingerprint

CLIENT_KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_TTL = re.compile(r"(?P<n>[0-9]{1,6})\s*(?P<unit>[smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MIN_TTL = timedelta(minutes=1)
MAX_TTL = timedelta(days=365)
MAX_APP_PASSWORD = 256  # WordPress's are 24 characters (spaces aside)


def check_client(key: str | None) -> str:
    """A client key: 1-40 lower-case letters, digits or '-'.

    Raises:
        ConfigError: ``client: ...``.
    """
    if not key or not CLIENT_KEY.fullmatch(key) or key.endswith("-"):
        raise ConfigError(f"client: 1-40 lower-case letters, digits or '-' (not at either end); "
                          f"got {key!r}")  # fmt: skip
    return key


def parse_ttl(text: str | int | float | None, field_name: str = "ttl") -> timedelta:
    """A time to live: ``90m``, ``12h``, ``7d``, ``2w``, ``1d12h`` or a
    number of seconds; between a minute and a year.

    Raises:
        ConfigError: ``ttl: ...``.
    """
    if isinstance(text, bool) or text is None:
        raise ConfigError(f"{field_name}: a duration such as 12h, 7d or 2w; got {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        spec = text.strip().lower()
        if spec.isdigit():
            seconds = float(spec)
        else:
            pos, seconds = 0, 0.0
            for m in _TTL.finditer(spec):
                if m.start() != pos:
                    break
                seconds += int(m["n"]) * _UNIT_SECONDS[m["unit"]]
                pos = m.end()
            if not spec or pos != len(spec):
                raise ConfigError(f"{field_name}: a duration such as 12h, 7d or 2w (units s, m, "
                                  f"h, d, w); got {text!r}")  # fmt: skip
    ttl = timedelta(seconds=seconds)
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise ConfigError(f"{field_name}: between 1m and 365d; got {text!r}")
    return ttl


def format_duration(seconds: float) -> str:
    """``3d 4h``, ``5h 12m``, ``12m``, ``40s``: the two largest units."""
    s = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size or (unit == "s" and not parts):
            parts.append(f"{s // size}{unit}")
            s %= size
        if len(parts) == 2:
            break
    return " ".join(p for p in parts if not p.startswith("0") or len(parts) == 1)


def check_source_url(url: str | None) -> str:
    """The live site's address: ``https://host[:port][/path]``, without
    credentials, query or fragment; returned without a trailing ``/``.

    Plain HTTP is refused: the Application Password would cross the
    network in the clear (and WordPress refuses it there anyway).

    Raises:
        ConfigError: ``from: ...``.
    """
    if not url:
        raise ConfigError("from: the live site's address (https://...) is required")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"from: not a URL ({exc})") from None
    if parts.scheme != "https":
        raise ConfigError(f"from: an https:// address (an Application Password is never sent "
                          f"over plain HTTP); got scheme {parts.scheme or 'none'!r}")  # fmt: skip
    if not parts.hostname:
        raise ConfigError("from: the address has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("from: the address must not carry credentials (give the user with "
                          "--user and the Application Password on stdin)")  # fmt: skip
    if parts.query or parts.fragment:
        raise ConfigError("from: the address must not have a query or a fragment")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"https://{netloc}{parts.path.rstrip('/')}"


def check_app_password(value: str | None) -> str:
    """An Application Password as WordPress shows it (spaces are ignored).

    Raises:
        ConfigError: ``app_password: ...`` (the value is never repeated).
    """
    if value is None:
        raise ConfigError("app_password: required")
    compact = "".join(value.split())
    if not compact:
        raise ConfigError("app_password: empty")
    if len(compact) > MAX_APP_PASSWORD or not compact.isprintable():
        raise ConfigError("app_password: not an Application Password (too long or not "
                          "printable)")  # fmt: skip
    return compact


def check_fingerprint(value: str | None) -> str | None:
    """A pinned certificate's SHA-256 fingerprint (``AB:CD:...``, plain hex
    or openssl's line) as 64 lower-case hex digits; None when not given.

    Raises:
        ConfigError: ``fingerprint: ...``.
    """
    if not value:
        return None
    try:
        return normalize_fingerprint(value)
    except ValueError as exc:
        raise ConfigError(f"fingerprint: {exc}") from None


def sandbox_hostname(client: str, taken: Iterable[str] = ()) -> str:
    """``sandbox-<client>``, or ``sandbox-<client>-2`` and so on when a name
    is taken (a second sandbox of the client, asked for with ``--new``)."""
    used = set(taken)
    base = f"sandbox-{client}"
    if base not in used:
        return base
    n = 2
    while f"{base}-{n}" in used:
        n += 1
    return f"{base}-{n}"


@dataclass(frozen=True)
class Limits:
    """At most ``per_client`` live sandboxes of one client and ``per_owner``
    of one owner (0: no limit)."""

    per_client: int
    per_owner: int


def check_limits(limits: Limits, client: str, owner: str | None, client_count: int,
                 owner_count: int) -> None:  # fmt: skip
    """Refuse a new sandbox over a limit.

    Raises:
        ConfigError: ``client: ...`` or ``owner: ...`` saying the limit.
    """
    if limits.per_client and client_count >= limits.per_client:
        raise ConfigError(f"client: {client} has {client_count} sandbox(es), the limit is "
                          f"{limits.per_client}; destroy or expire one first")  # fmt: skip
    if owner and limits.per_owner and owner_count >= limits.per_owner:
        raise ConfigError(f"owner: {owner} has {owner_count} sandbox(es), the limit is "
                          f"{limits.per_owner}; destroy or expire one first")  # fmt: skip


@dataclass(frozen=True)
class Due:
    """What the expiry scheduler does to a sandbox now: ``warn`` (the
    ``expiring`` event), ``expire`` (destroy it), or nothing (None)."""

    action: str | None
    seconds_left: float


def due(expires_at: datetime, warned: bool, now: datetime, warn_before: timedelta) -> Due:
    """The expiry scheduler's decision for one sandbox."""
    left = (expires_at - now).total_seconds()
    if left <= 0:
        return Due("expire", left)
    if not warned and left <= warn_before.total_seconds():
        return Due("warn", left)
    return Due(None, left)


def extended(expires_at: datetime, now: datetime, by: timedelta) -> datetime:
    """The new expiry after ``extend --by``: from the later of now and the
    current expiry (extending an overdue sandbox counts from now)."""
    return max(expires_at, now) + by

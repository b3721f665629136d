"""Webhooks, the pure part: which events there are, which hooks want an
event, the payload, the signature, the URL rules and the retry schedule.

A receiver gets ``POST <url>`` with a JSON body and three headers:

- ``X-Provisioner-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``, the
  HMAC of ``f"{t}."`` followed by the body's bytes, keyed with the hook's
  secret (``signature_header``; a receiver checks it with
  ``verify_signature``, refusing a ``t`` too far from its clock);
- ``X-Provisioner-Event``: ``ready``, ``error``, ``expiring``, ``expired``
  or ``ping``;
- ``X-Provisioner-Delivery``: the delivery's id (the same on every attempt:
  a receiver may drop repeats).

The payload carries states and links, never a secret: the terminal message
is redacted (``provisioner.logsafe``) and scrubbed of the container's own
secrets.  Storing hooks and sending deliveries is ``provisioner.webhook_store``
and ``provisioner.webhook_delivery``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from provisioner.errors import ConfigError
from provisioner.logsafe import REDACTED, redact

EVENTS = ("ready", "error", "expiring", "expired")  # what a hook may subscribe to
PING = "ping"  # a test delivery (``webhook test``): every hook takes it
SIGNATURE_HEADER = "X-Provisioner-Signature"
EVENT_HEADER = "X-Provisioner-Event"
DELIVERY_HEADER = "X-Provisioner-Delivery"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE = 300  # seconds a receiver accepts between t and its clock
SECRET_PREFIX = "whsec_"
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 256
MAX_URL_LENGTH = 2048
MAX_MESSAGE_LENGTH = 2000  # the terminal message in a payload, cut beyond
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")  # provisioner.users' rule


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + 43 URL-safe characters (256 bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


# -- input rules ------------------------------------------------------------------


def check_url(url: object, field: str = "url") -> str:
    """A webhook's URL: http or https, a host, no user or password in it.

    Raises:
        ConfigError: ``"<field>: ..."``; the message never repeats a password.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{field}: a URL is required (http:// or https://)")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ConfigError(f"{field}: may be at most {MAX_URL_LENGTH} characters long")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ConfigError(f"{field}: must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # a port that is not a number raises
    except ValueError as exc:
        raise ConfigError(f"{field}: not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(f"{field}: must start with http:// or https://")
    if "@" in parts.netloc:
        raise ConfigError(f"{field}: must not hold a user name or password (user:pass@); "
                          "the receiver checks the signature instead")  # fmt: skip
    if not parts.hostname:
        raise ConfigError(f"{field}: names no host")
    if parts.fragment:
        raise ConfigError(f"{field}: must not have a #fragment")
    return url


def check_events(events: Iterable[object] | None, field: str = "events") -> list[str]:
    """The events a hook subscribes to, in ``EVENTS``' order; all of them when none are given.

    Raises:
        ConfigError: an unknown event.
    """
    wanted = list(events or [])
    for event in wanted:
        if event not in EVENTS:
            raise ConfigError(f"{field}: unknown event {event!r} (known: {', '.join(EVENTS)})")
    return [e for e in EVENTS if e in wanted] if wanted else list(EVENTS)


def check_owner(owner: object, field: str = "owner") -> str | None:
    """An owner's name (a user name) or None.

    Raises:
        ConfigError: not a user name.
    """
    if owner is None:
        return None
    if not isinstance(owner, str) or not _USERNAME.fullmatch(owner):
        raise ConfigError(f"{field}: 1-64 characters: letters, digits and '_.@-', starting "
                          "with a letter or digit")  # fmt: skip
    return owner


def check_secret(secret: object, field: str = "secret") -> str:
    """A signing secret given by the user (never repeated in an error).

    Raises:
        ConfigError: too short, too long or not printable.
    """
    if not isinstance(secret, str) or len(secret.strip()) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{field}: must be at least {MIN_SECRET_LENGTH} characters long")
    secret = secret.strip()
    if len(secret) > MAX_SECRET_LENGTH:
        raise ConfigError(f"{field}: may be at most {MAX_SECRET_LENGTH} characters long")
    if not secret.isprintable():
        raise ConfigError(f"{field}: must be printable text")
    return secret


# -- who gets what ----------------------------------------------------------------


@dataclass(frozen=True)
class HookView:
    """What matching needs of a hook."""

    id: int
    owner: str | None
    events: tuple[str, ...]
    active: bool = True


def wants(hook: HookView, event: str, owner: str | None) -> bool:
    """Whether ``hook`` gets ``event`` of a container owned by ``owner``:
    an active hook subscribed to the event, global (no owner) or its owner's."""
    if not hook.active or event not in hook.events:
        return False
    return hook.owner is None or hook.owner == owner


def matching(hooks: Iterable[HookView], event: str, owner: str | None) -> list[HookView]:
    """The hooks that get ``event`` of a container owned by ``owner``, by id."""
    return sorted((h for h in hooks if wants(h, event, owner)), key=lambda h: h.id)


# -- the payload --------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerFacts:
    """What a payload tells of a container: states and names, no secret."""

    id: str
    hostname: str
    template: str
    lifecycle: str
    ip: str | None
    environment: str | None
    owner: str | None
    node: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "hostname": self.hostname, "template": self.template,
                "lifecycle": self.lifecycle, "ip": self.ip, "environment": self.environment,
                "owner": self.owner, "node": self.node}  # fmt: skip


def scrub(text: str, known_secrets: Iterable[str | None] = ()) -> str:
    """``text`` without a secret: the container's own secrets replaced, then
    the redactor's registry and patterns applied, then cut to length."""
    for value in sorted((s for s in known_secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    text = redact(text)
    if len(text) > MAX_MESSAGE_LENGTH:
        text = text[: MAX_MESSAGE_LENGTH - 1] + "…"
    return text


def iso_utc(moment: datetime) -> str:
    """``2026-12-06T12:03:04Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def container_payload(delivery_id: str, event: str, occurred_at: datetime,
                      container: ContainerFacts, message: str | None, links_base: str,
                      known_secrets: Iterable[str | None] = ()) -> dict[str, Any]:  # fmt: skip
    """The body of a container's event: ``{id, event, occurred_at, container,
    message, links}``.  ``message`` is scrubbed (``scrub``); ``links`` point
    at the API and the dashboard under ``links_base`` (the public URL)."""
    return {
        "id": delivery_id,
        "event": event,
        "occurred_at": iso_utc(occurred_at),
        "container": container.as_dict(),
        "message": scrub(message, known_secrets) if message else None,
        "links": {"api": f"{links_base}/api/containers/{container.id}",
                  "dashboard": f"{links_base}/containers/{container.id}"},
    }  # fmt: skip


def ping_payload(delivery_id: str, occurred_at: datetime, hook_id: int,
                 links_base: str) -> dict[str, Any]:  # fmt: skip
    """The body of a test delivery (``ping``): no container."""
    return {
        "id": delivery_id,
        "event": PING,
        "occurred_at": iso_utc(occurred_at),
        "container": None,
        "message": f"a test delivery to webhook {hook_id} from lxc-provisioner",
        "links": {"api": f"{links_base}/api/webhooks/{hook_id}/deliveries",
                  "dashboard": f"{links_base}/webhooks"},
    }  # fmt: skip


def encode_body(payload: dict[str, Any]) -> bytes:
    """The bytes sent (and signed): compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


# -- the signature --------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}."`` + ``body`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<timestamp>,v1=<signature>``."""
    return f"t={timestamp},{SIGNATURE_VERSION}={sign(secret, timestamp, body)}"


def signed_headers(secret: str, body: bytes, event: str, delivery_id: str,
                   timestamp: int | None = None) -> dict[str, str]:  # fmt: skip
    """The headers of one attempt (signed now, unless ``timestamp`` is given)."""
    t = int(time.time()) if timestamp is None else timestamp
    return {"Content-Type": "application/json", "User-Agent": "lxc-provisioner-webhook/1",
            SIGNATURE_HEADER: signature_header(secret, t, body), EVENT_HEADER: event,
            DELIVERY_HEADER: delivery_id}  # fmt: skip


def verify_signature(secret: str, body: bytes, header: str | None, *,
                     tolerance: float = DEFAULT_TOLERANCE, now: float | None = None) -> bool:  # fmt: skip
    """What a receiver does: whether ``header`` signs ``body`` with
    ``secret`` at a time within ``tolerance`` seconds of ``now``."""
    if not header:
        return False
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields.get("t", [""])[0])
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, given)
               for given in fields.get(SIGNATURE_VERSION, []))  # fmt: skip


# -- retries --------------------------------------------------------------------------


def attempts_allowed(intervals: tuple[int, ...]) -> int:
    """How many attempts a delivery gets: one more than the waits between them."""
    return len(intervals) + 1


def wait_after(intervals: tuple[int, ...], attempt: int) -> int | None:
    """The seconds before the attempt after failed attempt number ``attempt``
    (1-based), or None when that was the last."""
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    return intervals[attempt - 1] if attempt <= len(intervals) else None

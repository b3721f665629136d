"""PVE authentication: tickets, CSRF prevention tokens and API tokens.

Tickets look like PVE's (``PVE:user@realm:HEXTIME::SIGNATURE``) and live two
hours; the CSRF token is bound to the user and the ticket's time.  Both are
HMAC-signed with a key kept in the state directory, so they survive a restart
of the simulator just as a real node's survive a restart of pveproxy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

TICKET_LIFETIME = 7200


@dataclass(frozen=True)
class Credentials:
    """The simulator's one user and its API token."""

    user: str  # e.g. root@pam
    password: str
    token_name: str  # the part after '!'
    token_secret: str
    signing_key: bytes

    @property
    def token_id(self) -> str:
        return f"{self.user}!{self.token_name}"

    @classmethod
    def generate(cls, user: str = "root@pam", token_name: str = "pvesim") -> Credentials:
        """Fresh random credentials."""
        return cls(
            user=user,
            password=secrets.token_urlsafe(12),
            token_name=token_name,
            token_secret=_uuid4_like(),
            signing_key=secrets.token_bytes(32),
        )


def _uuid4_like() -> str:
    import uuid

    return str(uuid.uuid4())


def _sign(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode().rstrip("=")


class AuthError(Exception):
    """Authentication failed; the message is PVE's reason phrase."""


class Authenticator:
    """Checks passwords, issues and verifies tickets, verifies API tokens."""

    def __init__(self, creds: Credentials, clock: object = time.time) -> None:
        self.creds = creds
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock())  # type: ignore[operator]

    def login(self, username: str, password: str, realm: str | None = None) -> str:
        """Check a username/password and return the canonical user id.

        Raises:
            AuthError: on a wrong user, realm or password.
        """
        if "@" not in username and realm:
            username = f"{username}@{realm}"
        if not hmac.compare_digest(username, self.creds.user) or not hmac.compare_digest(
            password, self.creds.password
        ):
            raise AuthError("authentication failure")
        return username

    def issue_ticket(self, user: str) -> tuple[str, str]:
        """Return (ticket, CSRFPreventionToken) for ``user``."""
        stamp = f"{self._now():08X}"
        plain = f"PVE:{user}:{stamp}"
        ticket = f"{plain}::{_sign(self.creds.signing_key, plain)}"
        csrf = f"{stamp}:{_sign(self.creds.signing_key, f'{stamp}:{user}')}"
        return ticket, csrf

    def verify_ticket(self, ticket: str) -> tuple[str, str]:
        """Return (user, hex timestamp) of a valid, unexpired ticket.

        Raises:
            AuthError: if the ticket is malformed, forged or expired.
        """
        plain, sep, signature = ticket.partition("::")
        parts = plain.split(":")
        if not sep or len(parts) != 3 or parts[0] != "PVE":
            raise AuthError("invalid PVE ticket")
        if not hmac.compare_digest(_sign(self.creds.signing_key, plain), signature):
            raise AuthError("invalid PVE ticket")
        try:
            issued = int(parts[2], 16)
        except ValueError as exc:
            raise AuthError("invalid PVE ticket") from exc
        if not -300 <= self._now() - issued <= TICKET_LIFETIME:
            raise AuthError("permission denied - invalid PVE ticket")
        return parts[1], parts[2]

    def verify_csrf(self, token: str | None, user: str, stamp: str) -> bool:
        """True when ``token`` is the CSRF token for this ticket."""
        if not token:
            return False
        expected = f"{stamp}:{_sign(self.creds.signing_key, f'{stamp}:{user}')}"
        return hmac.compare_digest(token, expected)

    def verify_token(self, header_value: str) -> str:
        """Check ``PVEAPIToken=USER@REALM!NAME=SECRET`` (the part after the scheme).

        Returns:
            The token id (``user@realm!name``).

        Raises:
            AuthError: on an unknown token or a wrong secret.
        """
        token_id, sep, secret = header_value.partition("=")
        if not sep or "!" not in token_id:
            raise AuthError("invalid token value!")
        if not hmac.compare_digest(token_id, self.creds.token_id) or not hmac.compare_digest(
            secret, self.creds.token_secret
        ):
            raise AuthError("invalid token value!")
        return token_id

"""The transport under the Proxmox client: connection settings, TLS trust
and authentication (API token or ticket), on a proxmoxer HTTP session.

Trust is decided here and nowhere else: the system certificate store, a CA
file (the cluster's ``pve-root-ca.pem``), or the node certificate's pinned
SHA-256 fingerprint; no verification only when explicitly asked for.
Secrets stay out of ``repr``, logs, URLs and exception messages.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from dataclasses import dataclass, field

import requests
from proxmoxer.backends.https import ProxmoxHTTPAuthBase, ProxmoxHttpSession

from provisioner.errors import (
    ConfigError,
    NodeUnreachableError,
    PveApiError,
    PvePermanentError,
    PveTransientError,
)
from provisioner.pve.parse import (
    clean_errors,
    describe_failure,
    failure_hint,
    format_fingerprint,
    is_transient_failure,
    normalize_fingerprint,
    normalize_host,
    redact,
)
from provisioner.tls import TlsAdapter

log = logging.getLogger(__name__)

TICKET_LIFETIME = 7200.0
# renew well before PVE's 2 h expiry (PVE's own GUI renews far earlier still)
TICKET_RENEW_AFTER = 3600.0


def quiet_proxmoxer() -> None:
    """proxmoxer logs request bodies (passwords included) at INFO: keep it at WARNING."""
    for name in ("proxmoxer", "proxmoxer.core", "proxmoxer.backends.https"):
        logging.getLogger(name).setLevel(logging.WARNING)


quiet_proxmoxer()


@dataclass(frozen=True)
class TokenAuth:
    """An API token: ``token_id`` is ``user@realm!name``."""

    token_id: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        user, bang, name = self.token_id.partition("!")
        if not bang or "@" not in user or not name:
            raise ConfigError(f"API token id {self.token_id!r} is not of the form user@realm!name")
        if not self.secret:
            raise ConfigError(f"API token {self.token_id} has an empty secret")


@dataclass(frozen=True)
class PasswordAuth:
    """User and password, for ticket authentication (``user`` is ``name@realm``)."""

    user: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if "@" not in self.user:
            raise ConfigError(f"PVE user {self.user!r} needs its realm, e.g. root@pam")
        if not self.password:
            raise ConfigError(f"PVE user {self.user} has an empty password")


@dataclass(frozen=True)
class PveConnection:
    """How to reach and trust one PVE node.

    Exactly one trust mode applies: ``fingerprint`` (SHA-256 of the node's
    certificate, ``AA:BB:..`` or plain hex), ``ca_file``, ``insecure=True``,
    or, when none is set, the system certificate store.  ``cluster`` names
    the cluster for the vmid allocation lock (default: ``host:port``).
    """

    host: str
    node: str
    auth: TokenAuth | PasswordAuth
    port: int = 8006
    ca_file: str | None = None
    fingerprint: str | None = None
    insecure: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    cluster: str | None = None

    def __post_init__(self) -> None:
        modes = [m for m in ("ca_file", "fingerprint", "insecure") if getattr(self, m)]
        if len(modes) > 1:
            raise ConfigError(
                f"choose one TLS trust mode for {self.host}, not {' and '.join(modes)}"
            )
        if self.fingerprint:
            try:
                object.__setattr__(self, "fingerprint", normalize_fingerprint(self.fingerprint))
            except ValueError as exc:
                raise ConfigError(f"TLS fingerprint of {self.host}: {exc}") from exc
        try:
            object.__setattr__(self, "host", normalize_host(self.host))
        except ValueError as exc:
            raise ConfigError(f"PVE host: {exc}") from None
        if not 0 < self.port < 65536:
            raise ConfigError(f"PVE port {self.port} is out of range")

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}/api2/json"

    @property
    def cluster_id(self) -> str:
        """Identifies the cluster whose vmids one allocation lock serialises."""
        return self.cluster or f"{self.host}:{self.port}"

    @property
    def trust(self) -> str:
        """The trust mode in words, for messages."""
        if self.fingerprint:
            return f"pinned fingerprint {format_fingerprint(self.fingerprint)}"
        if self.ca_file:
            return f"CA file {self.ca_file}"
        return "no verification (insecure)" if self.insecure else "the system certificate store"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in messages."""
        if isinstance(self.auth, TokenAuth):
            return (self.auth.secret,)
        return (self.auth.password,)


class ApiTokenAuth(ProxmoxHTTPAuthBase):
    """``Authorization: PVEAPIToken=user@realm!name=secret``; no CSRF needed."""

    def __init__(self, token: TokenAuth, timeout: tuple[float, float]) -> None:
        super().__init__(timeout=timeout, verify_ssl=True)
        self._header = f"PVEAPIToken={token.token_id}={token.secret}"

    def __call__(self, req: requests.PreparedRequest) -> requests.PreparedRequest:
        req.headers["Authorization"] = self._header
        return req

    def __repr__(self) -> str:
        return "ApiTokenAuth(***)"


class TicketAuth(ProxmoxHTTPAuthBase):
    """Ticket authentication: logs in on first use, renews the ticket before
    it expires, and again when the node rejects it (``invalidate``).

    The login goes through the same session, so it is held to the same
    trust mode as every other call.
    """

    renew_after = TICKET_RENEW_AFTER

    def __init__(self, creds: PasswordAuth, connection: PveConnection,
                 session: requests.Session) -> None:  # fmt: skip
        timeout = (connection.connect_timeout, connection.read_timeout)
        super().__init__(timeout=timeout, verify_ssl=True)
        self._creds = creds
        self._connection = connection
        self._session = session
        self._lock = threading.Lock()
        self._ticket: str | None = None
        self._csrf = ""
        self._issued = 0.0  # monotonic time of the current ticket
        self.logins = 0

    def __repr__(self) -> str:
        return f"TicketAuth({self._creds.user})"

    def invalidate(self) -> None:
        """Forget the ticket: the next request logs in again."""
        with self._lock:
            self._ticket = None

    def __call__(self, req: requests.PreparedRequest) -> requests.PreparedRequest:
        with self._lock:
            if self._ticket is None or time.monotonic() - self._issued >= self.renew_after:
                self._login()
            ticket, csrf = self._ticket, self._csrf
        req.headers["Cookie"] = f"PVEAuthCookie={ticket}"
        if req.method != "GET":
            req.headers["CSRFPreventionToken"] = csrf
        return req

    def _login(self) -> None:
        conn = self._connection
        # a throwaway auth object, so this request does not come back here
        login_auth = ProxmoxHTTPAuthBase(timeout=self.timeout, verify_ssl=True)
        response = self._session.request(
            "POST",
            f"{conn.base_url}/access/ticket",
            data={"username": self._creds.user, "password": self._creds.password},
            auth=login_auth,
        )
        call = "POST /access/ticket"
        if response.status_code != 200:
            message = redact(response.reason or "", conn.secrets)
            errors = {}
            with contextlib.suppress(ValueError):
                errors = clean_errors(response.json().get("errors"))
            text = describe_failure(conn.node, f"{call} (login as {self._creds.user})",
                                    response.status_code, message, errors)  # fmt: skip
            if is_transient_failure(response.status_code, message):
                raise PveTransientError(text, status=response.status_code, pve_message=message)
            raise PvePermanentError(text, status=response.status_code, pve_message=message,
                                    errors=errors,
                                    hint=failure_hint(response.status_code, message))  # fmt: skip
        data = response.json()["data"]
        if data.get("NeedTFA"):
            raise PvePermanentError(
                f"{call} on node {conn.node}: {self._creds.user} needs two-factor authentication",
                hint="use an API token for the provisioner",
            )
        self._ticket = str(data["ticket"])
        self._csrf = str(data["CSRFPreventionToken"])
        self._issued = time.monotonic()
        self.logins += 1
        log.debug("PVE ticket for %s on %s obtained", self._creds.user, conn.host)


def build_session(connection: PveConnection) -> ProxmoxHttpSession:
    """A proxmoxer session with the connection's trust mode, auth and timeouts."""
    session = ProxmoxHttpSession()
    session.mount("https://", TlsAdapter(connection))
    session.headers["Connection"] = "keep-alive"
    session.headers["Accept"] = "application/json"
    session.trust_env = False  # no ~/.netrc or proxy env surprises for API calls
    timeout = (connection.connect_timeout, connection.read_timeout)
    if isinstance(connection.auth, TokenAuth):
        session.auth = ApiTokenAuth(connection.auth, timeout)
    else:
        session.auth = TicketAuth(connection.auth, connection, session)
    if connection.insecure:
        log.warning("TLS verification of PVE node %s is disabled (insecure=True)", connection.host)
    return session


# --- transport failures -----------------------------------------------------------
def tls_failure(c: PveConnection, call: str, exc: requests.exceptions.SSLError) -> PveApiError:
    """An untrusted certificate or a pin mismatch is permanent (with what to
    do); any other TLS trouble (a handshake cut short) is transient."""
    text = str(exc).lower()
    where = f"{call} on node {c.node} ({c.host}:{c.port})"
    if "fingerprints did not match" in text and c.fingerprint:
        return PvePermanentError(
            f"{where}: the node's TLS certificate does not match the pinned fingerprint",
            hint=f"expected {format_fingerprint(c.fingerprint)}; if the node's certificate "
            "was renewed on purpose, pin the new one (pvenode cert info)",
        )
    if "certificate verify failed" in text or "hostname mismatch" in text:
        return PvePermanentError(
            f"{where}: the node's TLS certificate is not trusted ({_short_ssl(text)})",
            hint=f"trusted via {c.trust}; give the cluster's CA file "
            "(/etc/pve/pve-root-ca.pem) or pin the certificate's SHA-256 fingerprint",
        )
    return PveTransientError(f"{where}: TLS handshake failed ({_short_ssl(text)})")


def network_failure(c: PveConnection, method: str, call: str, exc: Exception) -> PveTransientError:
    """Refused, reset, unreachable or timed out: transient; no connection
    at all is the node being unreachable."""
    where = f"{call} on node {c.node} ({c.host}:{c.port})"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return NodeUnreachableError(f"{where}: no connection within {c.connect_timeout:g}s")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        hint = None if method == "GET" else "the request may have been carried out anyway"
        return PveTransientError(f"{where}: no answer within {c.read_timeout:g}s", hint=hint)
    if isinstance(exc, requests.exceptions.ConnectionError) and not isinstance(
            exc, requests.exceptions.SSLError):  # fmt: skip
        return NodeUnreachableError(f"{where}: connection failed ({_short_reason(exc)})")
    return PveTransientError(f"{where}: connection failed ({_short_reason(exc)})")


def _short_reason(exc: BaseException) -> str:
    """``[Errno 111] Connection refused`` out of requests' nested message."""
    text = str(exc)
    m = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if m:
        return m[0].strip()
    m = re.search(r"(Read|Connect) timed out[^'\")]*", text)
    return m[0].strip() if m else exc.__class__.__name__


def _short_ssl(text: str) -> str:
    m = re.search(r"certificate verify failed: [^'\")(]+", text)
    return m[0].strip() if m else "SSL error"

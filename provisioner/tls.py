"""TLS trust for the HTTPS clients (a PVE node, a WordPress site), decided
in one place: the system certificate store, a CA file, or the peer
certificate's pinned SHA-256 fingerprint; no verification only when
explicitly asked for.
"""

from __future__ import annotations

import ssl
import warnings
from typing import Any, Protocol

import requests
import urllib3
from requests.adapters import HTTPAdapter

from provisioner.errors import ConfigError


class TlsTrust(Protocol):
    """How to trust a peer: ``fingerprint`` (64 lower-case hex digits, see
    ``provisioner.pve.parse.normalize_fingerprint``), ``ca_file``, or
    ``insecure``; none of them: the system store."""

    @property
    def ca_file(self) -> str | None: ...

    @property
    def fingerprint(self) -> str | None: ...

    @property
    def insecure(self) -> bool: ...


class TlsAdapter(HTTPAdapter):
    """Applies the trust mode to every HTTPS request it sends, whatever
    ``verify`` the session passes."""

    def __init__(self, connection: TlsTrust) -> None:
        self._tls: dict[str, Any]
        if connection.fingerprint:
            # urllib3 checks the peer certificate's digest after the handshake;
            # the chain is not verified: the pin is the trust anchor
            self._tls = {"cert_reqs": "CERT_NONE", "assert_fingerprint": connection.fingerprint}
        elif connection.insecure:
            self._tls = {"cert_reqs": "CERT_NONE"}
        else:
            try:
                # no cafile: the OS store (not certifi's bundle, which misses local CAs)
                context = ssl.create_default_context(cafile=connection.ca_file)
            except OSError as exc:
                raise ConfigError(f"cannot read CA file {connection.ca_file}: {exc}") from exc
            self._tls = {"cert_reqs": "CERT_REQUIRED", "ssl_context": context}
        self.insecure = connection.insecure
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:  # fmt: skip
        super().init_poolmanager(connections, maxsize, block, **{**pool_kwargs, **self._tls})

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        # drop what requests derived from ``verify``: our trust mode replaces it
        ours: dict[str, Any] = {
            k: v
            for k, v in pool_kwargs.items()
            if k not in ("cert_reqs", "ca_certs", "ca_cert_dir", "ssl_context")
        }
        return host_params, {**ours, **self._tls}

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Trust is configured per pool above; requests' own would add certifi."""

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if not self.insecure:
            return super().send(request, *args, **kwargs)
        with warnings.catch_warnings():
            # asked for explicitly and logged once when the client was built
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            return super().send(request, *args, **kwargs)

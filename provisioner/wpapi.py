"""A WordPress site's REST API over HTTPS with an Application Password.

The sandbox import reads the client's live site with a read-only client
(only GET; any other method is refused before it is sent) and writes the
sandbox through a read-write one.  TLS is verified (``provisioner.tls``):
the system store, a CA file or a pinned fingerprint.  The password goes in
the ``Authorization`` header only: never in a URL, a message or ``repr``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from provisioner.errors import ConfigError, PermanentError, TransientError
from provisioner.pve.parse import format_fingerprint
from provisioner.tls import TlsAdapter

log = logging.getLogger(__name__)

PER_PAGE = 100  # the REST API's maximum
CHUNK = 256 * 1024
# what a listing asks for: every state a copy should keep (trash is left)
ALL_STATUSES = "publish,future,draft,pending,private"


class WpError(PermanentError):
    """The site refused or does not have what was asked for."""


class MediaMissing(WpError):
    """A media file the content references answered 404."""


class MediaTooLarge(WpError):
    """A media file is over the size limit."""


@dataclass(frozen=True)
class WpTrust:
    """How to trust the site's certificate (one of them, or the system store)."""

    ca_file: str | None = None
    fingerprint: str | None = None  # 64 lower-case hex digits
    insecure: bool = False

    def describe(self) -> str:
        if self.fingerprint:
            return f"pinned fingerprint {format_fingerprint(self.fingerprint)}"
        if self.ca_file:
            return f"CA file {self.ca_file}"
        return "no verification (insecure)" if self.insecure else "the system certificate store"


@dataclass(frozen=True)
class WpSite:
    """Where a site is and who reads it."""

    base: str  # https://host[:port][/path], no trailing '/'
    user: str
    app_password: str = field(repr=False)
    trust: WpTrust = field(default_factory=WpTrust)
    read_only: bool = True
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


class WpClient:
    """Calls one site's REST API (``/wp-json/...``, or ``?rest_route=``
    for a site without pretty permalinks)."""

    def __init__(self, site: WpSite) -> None:
        self.site = site
        self.session = requests.Session()
        self.session.mount("https://", TlsAdapter(site.trust))
        self.session.auth = (site.user, site.app_password)
        self.session.headers["User-Agent"] = "lxc-provisioner sandbox import"
        self._pretty = True

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> WpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------

    def url(self, route: str, params: Mapping[str, Any] | None = None) -> str:
        """The address of a REST route (``/wp/v2/posts``)."""
        query = "&".join(f"{quote(str(k))}={quote(str(v), safe=',')}"
                         for k, v in (params or {}).items())  # fmt: skip
        if self._pretty:
            return f"{self.site.base}/wp-json{route}" + (f"?{query}" if query else "")
        return f"{self.site.base}/?rest_route={quote(route)}" + (f"&{query}" if query else "")

    def request(self, method: str, route: str, *, params: Mapping[str, Any] | None = None,
                body: Any = None, data: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> requests.Response:  # fmt: skip
        """One call; raises on any answer but 2xx.

        Raises:
            TransientError: the site could not be reached, timed out or
                answered 5xx/429.
            WpError: TLS trust failed, the credentials were refused, or the
                site answered another 4xx (its message is included).
        """
        if self.site.read_only and method != "GET":
            raise WpError(f"refused to {method} {route} on {self.site.base}: the client's site "
                          f"is only read")  # fmt: skip
        url = self.url(route, params)
        try:
            resp = self.session.request(
                method, url, json=body, data=data, headers=dict(headers or {}),
                timeout=(self.site.connect_timeout, self.site.read_timeout))  # fmt: skip
        except requests.exceptions.SSLError as exc:
            raise WpError(f"{self.site.base}: its TLS certificate is not trusted with "
                          f"{self.site.trust.describe()} ({_short(exc)})",
                          hint="give the CA that signed it (--ca-file) or pin its SHA-256 "
                               "fingerprint (--fingerprint)") from None  # fmt: skip
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise TransientError(f"cannot reach {self.site.base}: {_short(exc)}") from None
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TransientError(f"{self.site.base} answered {resp.status_code} to "
                                 f"{method} {route}")  # fmt: skip
        if resp.status_code in (401, 403):
            raise WpError(f"{self.site.base} refused the Application Password of user "
                          f"{self.site.user!r} ({resp.status_code}: {_wp_message(resp)})",
                          hint="check the user name and create a new Application Password "
                               "(Users > Profile > Application Passwords)")  # fmt: skip
        if resp.status_code >= 400:
            raise WpError(f"{self.site.base} answered {resp.status_code} to {method} {route}: "
                          f"{_wp_message(resp)}")  # fmt: skip
        return resp

    def get(self, route: str, **params: Any) -> Any:
        return _json(self.request("GET", route, params=params), route)

    # -- reading -------------------------------------------------------------------

    def index(self) -> dict[str, Any]:
        """The REST API's index (name, description, url, home, timezone).

        Raises:
            WpError: the site has no REST API (a 404 or an answer that is not
                WordPress's at ``/wp-json/`` and ``?rest_route=/``).
        """
        for pretty in (True, False):
            self._pretty = pretty
            try:
                found = self.get("/")
            except WpError as exc:
                if " 404 " not in exc.message and "not JSON" not in exc.message:
                    raise
                continue
            if isinstance(found, dict) and "namespaces" in found:
                if "wp/v2" not in found["namespaces"]:
                    raise WpError(f"{self.site.base}: its REST API has no wp/v2 routes "
                                  f"(a plugin disables them?)")  # fmt: skip
                return found
        self._pretty = True
        raise WpError(f"{self.site.base} has no WordPress REST API (neither /wp-json/ nor "
                      f"?rest_route=/ answered)",
                      hint="is it a WordPress site, and is the REST API enabled?")  # fmt: skip

    def me(self) -> dict[str, Any]:
        """The user the Application Password belongs to (``context=edit``:
        its roles and capabilities)."""
        found = self.get("/wp/v2/users/me", context="edit")
        if not isinstance(found, dict):
            raise WpError(f"{self.site.base}: /wp/v2/users/me did not answer an object")
        return found

    def pages(self, route: str, **params: Any) -> Iterator[tuple[list[dict[str, Any]], int]]:
        """Every item of a collection, a page of up to 100 at a time, with
        the collection's total (``X-WP-Total``)."""
        page = 1
        while True:
            resp = self.request("GET", route, params={**params, "per_page": PER_PAGE,
                                                      "page": page})  # fmt: skip
            items = _json(resp, route)
            if not isinstance(items, list):
                raise WpError(f"{self.site.base}: {route} did not answer a list")
            total = int(resp.headers.get("X-WP-Total", len(items)))
            yield items, total
            pages = int(resp.headers.get("X-WP-TotalPages", 1))
            if page >= pages or not items:
                return
            page += 1

    def collect(self, route: str, **params: Any) -> list[dict[str, Any]]:
        return [item for items, _ in self.pages(route, **params) for item in items]

    def download(
        self, url: str, limit: int, on_bytes: Callable[[int], None] | None = None
    ) -> bytes:
        """A file of the site (a media item), at most ``limit`` bytes.

        Raises:
            MediaMissing: 404.  MediaTooLarge: over ``limit``.
            WpError: the URL is not on the site.  TransientError: as ``request``.
        """
        if not _same_site(url, self.site.base):
            raise WpError(f"{url} is not on {self.site.base}: not downloaded")
        try:
            resp = self.session.get(url, stream=True, timeout=(self.site.connect_timeout,
                                                               self.site.read_timeout))  # fmt: skip
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise TransientError(f"cannot download {url}: {_short(exc)}") from None
        with resp:
            if resp.status_code == 404:
                raise MediaMissing(f"{url}: 404 not found")
            if resp.status_code >= 500:
                raise TransientError(f"{url}: {resp.status_code}")
            if resp.status_code >= 400:
                raise WpError(f"{url}: {resp.status_code}")
            declared = int(resp.headers.get("Content-Length") or 0)
            if declared > limit:
                raise MediaTooLarge(f"{url}: {declared} bytes, over the limit of {limit}")
            chunks, size = [], 0
            for chunk in resp.iter_content(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise MediaTooLarge(f"{url}: over the limit of {limit} bytes")
                chunks.append(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
            return b"".join(chunks)

    # -- writing (the sandbox) -------------------------------------------------------

    def create(self, route: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return _json(self.request("POST", route, body=dict(body)), route)

    def update(self, route: str, item_id: int, body: Mapping[str, Any]) -> dict[str, Any]:
        return _json(self.request("POST", f"{route}/{item_id}", body=dict(body)), route)

    def upload(self, filename: str, content_type: str, data: bytes,
               fields: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        """A new media item from a file's bytes, with ``fields`` (slug,
        title, date...) set by the same call (as query parameters: the
        body is the file)."""
        safe = filename.replace('"', "").replace("\\", "") or "file"
        resp = self.request("POST", "/wp/v2/media", params=fields, data=data, headers={
            "Content-Type": content_type or "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{safe}"'})  # fmt: skip
        return _json(resp, "/wp/v2/media")

    def delete(self, route: str, item_id: int) -> None:
        """Delete an item for good (``force``: media have no trash)."""
        self.request("DELETE", f"{route}/{item_id}", params={"force": "true"})

    def find_slug(self, route: str, slug: str, **params: Any) -> dict[str, Any] | None:
        """The item of ``route`` with ``slug`` (any status), or None."""
        found = self.get(route, slug=slug, context="edit", **params)
        return found[0] if isinstance(found, list) and found else None


def check_trust(ca_file: str | None, fingerprint: str | None) -> WpTrust:
    """One trust mode.

    Raises:
        ConfigError: both given (``fingerprint: ...``).
    """
    if ca_file and fingerprint:
        raise ConfigError("fingerprint: give a CA file or a fingerprint, not both")
    return WpTrust(ca_file=ca_file or None, fingerprint=fingerprint or None)


def _same_site(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def _json(resp: requests.Response, route: str) -> Any:
    try:
        return resp.json()
    except (json.JSONDecodeError, ValueError):
        raise WpError(f"{resp.url.split('?')[0]}: the answer to {route} is not JSON "
                      f"({resp.headers.get('Content-Type', 'no content type')})") from None  # fmt: skip


def _wp_message(resp: requests.Response) -> str:
    """WordPress's error message (``{"code": ..., "message": ...}``), short."""
    try:
        body = resp.json()
    except ValueError:
        return resp.reason or "no message"
    if isinstance(body, dict):
        return str(body.get("message") or body.get("code") or resp.reason)[:300]
    return resp.reason or "no message"


def _short(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Caused by ", "NewConnectionError(", "ConnectTimeoutError("):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()'\" ")[:200]

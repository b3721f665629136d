"""The app factory.

``create_app()`` builds the settings from the environment (what gunicorn
runs: ``gunicorn -k gthread --threads 16 'web.app:create_app()'``); tests pass
their own settings and Flask config.  The engine, the Redis client and the
secret box are made once per app; each request gets its own database
session on ``g`` (closed at teardown) and shares the thread-safe Redis pool.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, Response, current_app, g, request
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.middleware.proxy_fix import ProxyFix

from provisioner import db
from provisioner.config import Settings
from provisioner.errors import ConfigError
from provisioner.logsafe import setup_logging
from provisioner.node_facts import NodeFactsCache
from provisioner.secrets.box import SecretBox
from provisioner.secrets.keyfile import load_secret_box, parse_env_keys, read_key_file
from web.pve_pool import ClientPool

log = logging.getLogger(__name__)
EXTENSION = "provisioner"
_SESSION_KEY_DOMAIN = b"lxc-provisioner web session key v1"


class KeyFileWatch:
    """The secret box, loaded again when the key file changes (``provisioner
    keys rotate`` on a running system), looked at once a second at most.
    Keys from ``PROVISIONER_SECRET_KEY`` change only with a restart."""

    INTERVAL = 1.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()  # before reading: a change meanwhile is seen later
        self._box = load_secret_box(settings.secret_key, settings.secret_key_file)  # may create it
        self._signing = session_signing_keys(settings)
        self._checked = time.monotonic()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.settings.secret_key:
            return None
        try:
            st = os.stat(self.settings.secret_key_file)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @property
    def box(self) -> SecretBox:
        self._look()
        return self._box

    @property
    def signing_keys(self) -> list[bytes]:
        """The session cookies' signing keys (current first), which follow
        the key file too: every web process, restarted or not, signs alike."""
        self._look()
        return self._signing

    def _look(self) -> None:
        if self.settings.secret_key or time.monotonic() - self._checked < self.INTERVAL:
            return
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                try:  # never creating a file: a missing one keeps the keys we have
                    self._box = SecretBox(read_key_file(self.settings.secret_key_file))
                    self._signing = session_signing_keys(self.settings)
                    log.info("secret key file %s changed: keys loaded again (current %s)",
                             self.settings.secret_key_file, self._box.current_key_id)  # fmt: skip
                except (ConfigError, OSError) as exc:  # made unsafe, broken or removed
                    log.error("secret key file changed but cannot be loaded (the keys loaded "
                              "before stay in use): %s", exc)  # fmt: skip
                self._stamp = stamp  # looked at: again when it changes again


@dataclass
class WebResources:
    """What every request shares: made once per app, closed with it."""

    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    redis: Redis
    keys: KeyFileWatch
    pve: ClientPool
    node_facts: NodeFactsCache  # storages and bridges, for the checks at submit

    @property
    def box(self) -> SecretBox:
        return self.keys.box

    def close(self) -> None:
        self.pve.close()
        self.redis.close()
        self.engine.dispose()


def resources() -> WebResources:
    """The current app's shared resources."""
    res: WebResources = current_app.extensions[EXTENSION]
    return res


def get_db() -> Session:
    """This request's database session (opened on first use)."""
    if "db" not in g:
        g.db = resources().factory()
    session: Session = g.db
    return session


def get_redis() -> Redis:
    """The Redis client (thread-safe: a pool shared by the app's threads)."""
    if "redis" not in g:
        g.redis = resources().redis
    redis: Redis = g.redis
    return redis


def _close_db(exc: BaseException | None) -> None:
    session: Session | None = g.pop("db", None)
    g.pop("redis", None)
    if session is not None:
        session.close()  # rolls back whatever the request did not commit


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    # scripts and styles only from our static files (no inline code anywhere)
    response.headers.setdefault("Content-Security-Policy", CSP)
    if request.path.startswith("/api/"):
        # answers may hold a generated password (once) or live state: never cache them
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def session_signing_keys(settings: Settings) -> list[bytes]:
    """Keys for signing session cookies, derived from the secret keys.

    Every web process that shares the secret key signs alike (several
    processes or hosts behind a load balancer); the first is current, the
    others keep sessions valid while a secret key is being rotated.
    """
    if settings.secret_key:
        keys = parse_env_keys(settings.secret_key)
    else:
        keys = read_key_file(settings.secret_key_file)
    return [hmac.new(key, _SESSION_KEY_DOMAIN, hashlib.sha256).digest() for key in keys]


def stream_limit(threads: int) -> int:
    """How many of a process's threads event streams may hold: all but an
    eighth of them (at least 2, at most 16), kept for everything else."""
    return threads - min(16, max(2, threads // 8))


def create_app(
    settings: Settings | None = None, test_config: dict[str, Any] | None = None
) -> Flask:
    """Build the web app.

    Args:
        settings: defaults to ``Settings.from_env()``.
        test_config: Flask config overriding the defaults (``TESTING``,
            ``SESSION_COOKIE_SECURE``, ``LOGIN_MAX_FAILURES``, ...).

    Raises:
        ConfigError: bad settings, an unusable secret key, or a database
            that is not migrated to this release's schema.
    """
    settings = settings or Settings.from_env()
    setup_logging(settings.log_level)
    keys = KeyFileWatch(settings)
    db.require_current_schema(settings.database_url)

    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep our field order
    app.config.from_mapping(
        # sessions are signed with keys.signing_keys (web.auth.SessionInterface);
        # Flask wants a SECRET_KEY set all the same
        SECRET_KEY=keys.signing_keys[0],
        SESSION_COOKIE_NAME="provisioner_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.web_cookie_secure,  # it is also set on TLS requests
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        MAX_CONTENT_LENGTH=1024 * 1024,
        LOGIN_MAX_FAILURES=5,  # per username and address
        LOGIN_MAX_FAILURES_PER_USER=20,  # per username, from any address
        LOGIN_WINDOW_SECONDS=300,
        LOGIN_MAX_FAILURES_PER_IP=50,
        PROXY_FIX_HOPS=settings.web_proxy_hops,  # reverse proxies that set X-Forwarded-*
        PVE_CONNECT_TIMEOUT=3.0,
        PVE_READ_TIMEOUT=15.0,
        # flask-sock: pings keep idle streams open through proxies and find dead clients
        SOCK_SERVER_OPTIONS={"ping_interval": 25},
        # seconds an event stream's client may take nothing before it is dropped
        RELAY_STALL_TIMEOUT=60.0,
        # open event streams per process: each holds a thread, and the rest
        # must stay free for pages and API calls
        RELAY_MAX_STREAMS=stream_limit(settings.web_threads),
    )
    if test_config:
        app.config.update(test_config)
    # requests and event replays of many threads: room beyond the pool's 5
    engine = db.make_engine(settings.database_url, max_overflow=45)
    app.extensions[EXTENSION] = WebResources(
        settings=settings,
        engine=engine,
        factory=db.session_factory(engine),
        # every open event stream holds a connection while it blocks on a read:
        # the pool must not be smaller than the threads (redis-py caps it at 100)
        # and a hung Redis fails a request after socket_timeout instead of holding its thread
        redis=Redis.from_url(
            settings.redis_url,
            health_check_interval=30,
            max_connections=4096,
            socket_connect_timeout=5,
            socket_timeout=5,
        ),
        keys=keys,
        pve=ClientPool(),
        node_facts=NodeFactsCache(),
    )
    app.teardown_appcontext(_close_db)
    app.after_request(_security_headers)
    hops = int(app.config["PROXY_FIX_HOPS"])
    if hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )

    from web import api, auth, metrics, pages, relay

    auth.init_app(app)
    pages.init_app(app)
    api.init_app(app)
    relay.init_app(app)
    metrics.init_app(app)
    return app

"""The app factory: the web app's entry point, imported by nothing in web/.

``create_app()`` builds the settings from the environment (what gunicorn
runs: ``gunicorn -k gthread --threads 16 'web.app:create_app()'``); tests pass
their own settings and Flask config.  The engine, the Redis client and the
secret box are made once per app (``web.resources``); each request gets its
own database session on ``g`` (closed at teardown) and shares the
thread-safe Redis pool.  Every web tunable is a ``web_*`` field of the
settings (``PROVISIONER_WEB_*``), never Flask config of its own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from provisioner import db
from provisioner.config import Settings
from provisioner.logsafe import setup_logging
from provisioner.node_facts import NodeFactsCache
from provisioner.redis_url import redis_client
from web import (
    api,
    api_changes,
    api_containers,
    api_nodes,
    api_sandboxes,
    api_templates,
    api_webhooks,
    auth,
    metrics,
    openapi,
    pages,
    pages_progress,
    pages_sandboxes,
    pages_wizard,
    relay,
)
from web.pve_pool import ClientPool
from web.resources import EXTENSION, KeyFileWatch, WebResources, close_db

# The REST API's route modules: each puts its routes on api.bp when imported.
API_ROUTES = (api_containers, api_changes, api_nodes, api_sandboxes, api_templates, api_webhooks,
              openapi)  # fmt: skip

# The Flask config keys that were the web tunables before they became
# settings: a test_config naming one would silently change nothing.
_MOVED_TO_SETTINGS = {
    "LOGIN_MAX_FAILURES": "web_login_max_failures",
    "LOGIN_MAX_FAILURES_PER_USER": "web_login_max_failures_per_user",
    "LOGIN_MAX_FAILURES_PER_IP": "web_login_max_failures_per_ip",
    "LOGIN_WINDOW_SECONDS": "web_login_window",
    "PROXY_FIX_HOPS": "web_proxy_hops",
    "PVE_CONNECT_TIMEOUT": "web_pve_connect_timeout",
    "PVE_READ_TIMEOUT": "web_pve_read_timeout",
    "RELAY_STALL_TIMEOUT": "web_relay_stall_timeout",
    "RELAY_MAX_STREAMS": "web_relay_max_streams",
    "METRICS_CACHE_SECONDS": "web_metrics_max_age",
    "PERMANENT_SESSION_LIFETIME": "web_session_lifetime",
    "SOCK_SERVER_OPTIONS": "web_relay_ping_interval",
}

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


def create_app(
    settings: Settings | None = None, test_config: dict[str, Any] | None = None
) -> Flask:
    """Build the web app.

    Args:
        settings: defaults to ``Settings.from_env()``; the web tunables are
            its ``web_*`` fields (tests pass them with ``dataclasses.replace``).
        test_config: Flask config overriding the defaults (``TESTING``,
            ``SESSION_COOKIE_SECURE``, ...); a key now set by a web setting
            (``_MOVED_TO_SETTINGS``) is refused with a ValueError.

    Raises:
        ConfigError: bad settings, an unusable secret key, or a database
            that is not migrated to this release's schema.
        ValueError: ``test_config`` names a tunable that is a setting now.
    """
    moved = sorted(set(test_config or ()) & _MOVED_TO_SETTINGS.keys())
    if moved:
        raise ValueError(f"{', '.join(moved)}: pass the settings' "
                         f"{', '.join(_MOVED_TO_SETTINGS[k] for k in moved)} instead")  # fmt: skip
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
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.web_session_lifetime),
        MAX_CONTENT_LENGTH=1024 * 1024,
        # flask-sock: pings keep idle streams open through proxies and find dead clients
        SOCK_SERVER_OPTIONS={"ping_interval": settings.web_relay_ping_interval},
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
        redis=redis_client(
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
    app.teardown_appcontext(close_db)
    app.after_request(_security_headers)
    hops = settings.web_proxy_hops  # reverse proxies that set X-Forwarded-*
    if hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )

    auth.init_app(app)
    pages.init_app(app)
    pages_wizard.init_app(app)
    pages_progress.init_app(app)
    pages_sandboxes.init_app(app)
    api.init_app(app)
    relay.init_app(app)
    metrics.init_app(app)
    return app

"""Authentication: the login form, the session cookie, bearer API tokens.

One ``before_request`` hook guards everything: every page, API endpoint and
websocket needs a logged-in session or ``Authorization: Bearer <token>``;
only the login page and static files are open.  Unauthenticated API and
websocket requests get 401 JSON, pages a redirect to the login form.  The
same hook enforces CSRF on state-changing requests that are not
authenticated by a bearer token (the login form included).
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from provisioner import users
from provisioner.models import User
from web.csrf import csrf_failure, csrf_token, rotate_csrf_token
from web.ratelimit import LoginLimiter
from web.resources import EXTENSION, get_db, get_redis, resources

bp = Blueprint("auth", __name__)
OPEN_ENDPOINTS = frozenset({"auth.login", "static"})
JSON_PREFIXES = ("/api/", "/ws/")
_BEARER = "bearer "


class SessionInterface(SecureCookieSessionInterface):
    """Marks the cookie ``Secure`` when the request came over TLS (or always,
    with ``SESSION_COOKIE_SECURE``), and signs with the keys derived from
    the secret keys as they are now (a rotated key file included)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = app.extensions[EXTENSION].keys.signing_keys
        return URLSafeTimedSerializer(
            list(reversed(keys)),  # itsdangerous signs with the last, verifies with all
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={
                "key_derivation": self.key_derivation,
                "digest_method": self.digest_method,
            },
        )


MACHINE_PATHS = ("/metrics",)
# a logged-out session's id, kept until the cookie would have expired anyway
REVOKED_SESSION_KEY = "provisioner:session:revoked:{sid}"


def wants_json() -> bool:
    """Whether this request is for the API or a websocket (JSON errors)."""
    return request.path.startswith(JSON_PREFIXES) or request.path in ("/api", "/ws")


def current_user() -> User:
    """The authenticated user (every guarded view has one)."""
    user: User = g.user
    return user


def error_response(status: int, message: str, **extra: Any) -> Response:
    """A JSON error for the API and websockets; plain text for pages."""
    if wants_json():
        response = jsonify({"error": message, **extra})
    else:
        response = Response(message + "\n", mimetype="text/plain")
    response.status_code = status
    return response


def _bearer_user() -> User | bool | None:
    """The bearer token's user; False without the header; None if it is invalid."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith(_BEARER):
        return False
    return users.verify_api_token(get_db(), header[len(_BEARER) :].strip())


def _session_user() -> User | None:
    uid, sid = session.get("uid"), session.get("sid")
    if not isinstance(uid, int) or not isinstance(sid, str):
        return None
    user = get_db().get(User, uid)
    # a password change ends every session made with the old one, and a
    # logout ends its session even where a copy of the cookie survives
    if (user is None or session.get("stamp") != users.password_stamp(user)
            or get_redis().exists(REVOKED_SESSION_KEY.format(sid=sid))):  # fmt: skip
        session.clear()
        return None
    return user


def refuse_nul() -> BaseResponse | None:
    """No database takes NUL inside text (PostgreSQL refuses it): stop it at
    the door, for the path, the query and form fields of every route."""
    fields = [*request.args.items(multi=True)]
    if request.method not in ("GET", "HEAD") and request.mimetype in _FORMS:
        fields += request.form.items(multi=True)
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in fields):
        return error_response(400, "NUL characters are not allowed in the URL or a form field")
    return None


_FORMS = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def _unauthenticated() -> BaseResponse:
    # Pages redirect to the login form; the API, websockets and /metrics
    # (scrapers would follow a redirect and fail to parse HTML) say 401.
    if wants_json() or request.path in MACHINE_PATHS:
        response = error_response(
            401, "authentication required: log in, or send Authorization: Bearer <token>"
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="lxc-provisioner"'
        return response
    target = request.path + (f"?{request.query_string.decode()}" if request.query_string else "")
    return redirect(url_for("auth.login", next=target))


def authenticate() -> BaseResponse | None:
    """The guard run before every request (see the module docstring)."""
    g.auth = None
    bearer = _bearer_user()
    if bearer is None:
        return error_response(401, "invalid or revoked API token")
    if bearer is not False:
        assert isinstance(bearer, User)
        g.user, g.auth = bearer, "token"
        get_db().commit()  # last_used_at, and the end of the read transaction
        return None  # a bearer token cannot be forged by a browser: no CSRF check
    user = _session_user()
    if user is not None:
        g.user, g.auth = user, "session"
    elif request.endpoint not in OPEN_ENDPOINTS:
        return _unauthenticated()
    # End the read transaction: on SQLite every transaction holds the write
    # lock, and a view may spend seconds talking to a Proxmox node.
    get_db().commit()
    failure = csrf_failure()
    if failure is not None:
        if request.endpoint == "auth.login":  # a login form left open past its session
            return _login_page(400, "The form expired. Please log in again.",
                               request.form.get("username", "").strip())  # fmt: skip
        return error_response(400, failure)
    return None


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never an open redirect to another host."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and target.isprintable()
    ):  # no CR/LF, tabs or controls
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("pages.index")


def _limiter() -> LoginLimiter:
    settings = resources().settings
    return LoginLimiter(
        get_redis(),
        max_failures=settings.web_login_max_failures,
        max_per_user=settings.web_login_max_failures_per_user,
        max_per_address=settings.web_login_max_failures_per_ip,
        window=settings.web_login_window,
    )


def _login_page(status: int = 200, error: str | None = None, username: str = "") -> Response:
    body = render_template(
        "login.html", error=error, username=username, next=request.args.get("next", "")
    )
    return Response(body, status=status, mimetype="text/html")


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse:
    """The login form; a successful login starts a session."""
    if request.method == "GET":
        if _session_user() is not None:
            return redirect(_safe_next(request.args.get("next")))
        return _login_page()
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    address = request.remote_addr or "unknown"
    limiter = _limiter()
    attempt = limiter.attempt(username, address)  # counted before the check: no race
    if attempt.wait:
        response = _login_page(
            429, f"Too many failed logins. Try again in {attempt.wait} seconds.", username
        )
        response.headers["Retry-After"] = str(attempt.wait)
        return response
    user = users.get_user(get_db(), username) if username else None
    get_db().commit()  # end the transaction before the (slow) hash
    if not users.check_password(user, password) or user is None:
        return _login_page(401, "Invalid username or password.", username)
    limiter.succeeded(username, address, attempt)
    session.clear()  # nothing from before the login survives it
    session.permanent = True
    session["uid"] = user.id
    session["sid"] = secrets.token_urlsafe(16)
    session["stamp"] = users.password_stamp(user)
    rotate_csrf_token()
    return redirect(_safe_next(request.args.get("next")))


@bp.route("/logout", methods=["POST"])
def logout() -> BaseResponse:
    """End the session (POST with the CSRF token, so no page can log you out),
    here and in any copy of its cookie."""
    sid = session.get("sid")
    if isinstance(sid, str):
        lifetime = current_app.permanent_session_lifetime
        get_redis().set(REVOKED_SESSION_KEY.format(sid=sid), 1,
                        ex=int(lifetime.total_seconds()) + 60)  # fmt: skip
    session.clear()
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    app.session_interface = SessionInterface()
    app.before_request(refuse_nul)
    app.before_request(authenticate)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.register_blueprint(bp)

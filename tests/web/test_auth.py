"""The app factory, login, logout, sessions, CSRF, rate limiting, API tokens."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from provisioner import users
from provisioner.config import Settings
from tests.web.conftest import (
    PASSWORD,
    bearer,
    db_session,
    form_csrf,
    login,
    session_csrf,
)
from web.app import create_app
from web.ratelimit import LoginLimiter
from web.resources import get_db, get_redis


def _cookie_header(response: object) -> str:
    headers = response.headers.getlist("Set-Cookie")  # type: ignore[attr-defined]
    cookies = [h for h in headers if h.startswith("provisioner_session=")]
    assert cookies, headers
    return cookies[-1]


def test_factory_gives_each_request_its_own_session(app: Flask) -> None:
    with app.test_request_context("/"):
        session = get_db()
        assert get_db() is session
        assert get_redis().ping()
    with app.test_request_context("/"):
        assert get_db() is not session


def test_factory_reads_the_environment(settings: Settings, monkeypatch: object) -> None:
    for name, value in (("PROVISIONER_DATA_DIR", str(settings.data_dir)),
                        ("DATABASE_URL", settings.database_url),
                        ("REDIS_URL", settings.redis_url),
                        ("PROVISIONER_SECRET_KEY", settings.secret_key or "")):  # fmt: skip
        monkeypatch.setenv(name, value)  # type: ignore[attr-defined]
    app = create_app()
    try:
        assert app.extensions["provisioner"].settings.database_url == settings.database_url
        assert app.test_client().get("/login").status_code == 200
    finally:
        app.extensions["provisioner"].close()


def test_web_tunables_come_from_the_settings(settings: Settings, monkeypatch: object) -> None:
    """PROVISIONER_WEB_* variables reach the app: the session lifetime, the
    relay's pings and its stream limit (the others are read per request)."""
    for name, value in (("PROVISIONER_DATA_DIR", str(settings.data_dir)),
                        ("DATABASE_URL", settings.database_url),
                        ("REDIS_URL", settings.redis_url),
                        ("PROVISIONER_SECRET_KEY", settings.secret_key or ""),
                        ("PROVISIONER_WEB_SESSION_LIFETIME", "600"),
                        ("PROVISIONER_WEB_RELAY_PING_INTERVAL", "5"),
                        ("PROVISIONER_WEB_RELAY_MAX_STREAMS", "7"),
                        ("PROVISIONER_WEB_PVE_READ_TIMEOUT", "4.5")):  # fmt: skip
        monkeypatch.setenv(name, value)  # type: ignore[attr-defined]
    app = create_app()
    try:
        assert app.permanent_session_lifetime == timedelta(seconds=600)
        assert app.config["SOCK_SERVER_OPTIONS"] == {"ping_interval": 5.0}
        assert app.extensions["relay_slots"].limit == 7
        assert app.extensions["provisioner"].settings.web_pve_read_timeout == 4.5
    finally:
        app.extensions["provisioner"].close()


def test_tunables_given_as_flask_config_are_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="RELAY_MAX_STREAMS: pass the settings' "
                                         "web_relay_max_streams instead"):  # fmt: skip
        create_app(settings, {"TESTING": True, "RELAY_MAX_STREAMS": 2})


def test_login_sets_a_safe_cookie_and_logout_ends_it(client: FlaskClient, user: str) -> None:
    assert client.get("/").status_code == 302
    page = client.get("/login")
    assert page.status_code == 200 and 'name="csrf_token"' in page.text
    response = login(client)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = _cookie_header(response)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    home = client.get("/")
    assert home.status_code == 200 and "logged in as <strong>alice</strong>" in home.text
    assert client.get("/login").status_code == 302  # already logged in
    token = form_csrf(home.text)
    out = client.post("/logout", data={"csrf_token": token})
    assert out.status_code == 302 and out.headers["Location"] == "/login"
    assert client.get("/").status_code == 302
    assert client.get("/api/me").status_code == 401


def test_cookie_is_secure_over_tls(client: FlaskClient, user: str) -> None:
    page = client.get("/login", base_url="https://localhost")
    response = client.post("/login", base_url="https://localhost", data={
        "username": "alice", "password": PASSWORD, "csrf_token": form_csrf(page.text)})  # fmt: skip
    assert response.status_code == 302
    assert "Secure" in _cookie_header(response)


def test_cookie_secure_setting(settings: Settings, user: str) -> None:
    app = create_app(settings, {"TESTING": True, "SESSION_COOKIE_SECURE": True})
    try:
        client = app.test_client()
        assert "Secure" in _cookie_header(client.get("/login"))
    finally:
        app.extensions["provisioner"].close()


def test_bad_password_and_unknown_user(client: FlaskClient, user: str) -> None:
    wrong = login(client, password="not the password")
    assert wrong.status_code == 401 and "Invalid username or password" in wrong.text
    unknown = login(client, username="mallory")
    assert unknown.status_code == 401 and "Invalid username or password" in unknown.text
    assert client.get("/").status_code == 302


def test_login_is_rate_limited(client: FlaskClient, user: str) -> None:
    for _ in range(5):
        assert login(client, password="guess").status_code == 401
    blocked = login(client)  # even the right password, while blocked
    assert blocked.status_code == 429
    assert "Too many failed logins" in blocked.text
    assert 0 < int(blocked.headers["Retry-After"]) <= 300
    # another user from the same address is not blocked by alice's failures
    assert login(client, username="bob", password="guess").status_code == 401


def test_the_login_limits_are_settings(settings: Settings, user: str) -> None:
    strict = dataclasses.replace(settings, web_login_max_failures=2, web_login_window=30.0)
    app = create_app(strict, {"TESTING": True})
    try:
        client = app.test_client()
        for _ in range(2):
            assert login(client, password="guess").status_code == 401
        blocked = login(client)
        assert blocked.status_code == 429
        assert 0 < int(blocked.headers["Retry-After"]) <= 30
    finally:
        app.extensions["provisioner"].close()


def test_one_account_guessed_from_many_addresses_is_limited(client: FlaskClient,
                                                            user: str) -> None:  # fmt: skip
    def from_(n: int, password: str) -> int:
        address = {"REMOTE_ADDR": f"192.0.2.{n}"}
        form = client.get("/login", environ_base=address)
        return client.post("/login", environ_base=address, data={
            "username": "alice", "password": password,
            "csrf_token": form_csrf(form.text)}).status_code  # fmt: skip

    for n in range(20):  # 4 each from 5 addresses: under the per-address limit of 5
        assert from_(n // 4, "guess") == 401
    assert from_(7, PASSWORD) == 429  # the account's own limit, from a fresh address
    assert from_(7, "guess") == 429


def test_parallel_guesses_cannot_pass_the_limit(app: Flask) -> None:
    """The attempt is counted with the check, in one step: of many guesses
    at once, exactly the limit get through to the password check."""
    with app.app_context():
        limiter = LoginLimiter(get_redis(), max_failures=5, window=60)
        barrier = threading.Barrier(40)

        def guess(_: int) -> int:
            barrier.wait()
            return limiter.attempt("carol", "198.51.100.1").wait

        with ThreadPoolExecutor(40) as pool:
            waits = list(pool.map(guess, range(40)))
    assert waits.count(0) == 5 and all(0 < w <= 60 for w in waits if w)


def test_a_success_takes_its_attempt_back(app: Flask) -> None:
    with app.app_context():
        limiter = LoginLimiter(get_redis(), max_failures=3, max_per_user=3, window=60)
        for _ in range(10):
            attempt = limiter.attempt("dave", "198.51.100.2")
            assert attempt.wait == 0
            limiter.succeeded("dave", "198.51.100.2", attempt)


def test_successful_login_resets_the_failures(client: FlaskClient, user: str) -> None:
    for _ in range(4):
        assert login(client, password="guess").status_code == 401
    assert login(client).status_code == 302
    client.post("/logout", headers=session_csrf(client))
    for _ in range(4):
        assert login(client, password="guess").status_code == 401
    assert login(client).status_code == 302


def test_login_needs_csrf(client: FlaskClient, user: str) -> None:
    """Without the form's token nobody logs in; the form comes back, saying why."""
    client.get("/login")
    missing = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert missing.status_code == 400 and missing.mimetype == "text/html"
    assert "The form expired. Please log in again." in missing.text
    assert 'value="alice"' in missing.text and 'name="csrf_token"' in missing.text
    forged = client.post("/login", data={"username": "alice", "password": PASSWORD,
                                         "csrf_token": "forged"})  # fmt: skip
    assert forged.status_code == 400 and "The form expired" in forged.text
    assert client.get("/").status_code == 302


def test_logout_ends_every_copy_of_the_session(client: FlaskClient, app: Flask,
                                               user: str) -> None:  # fmt: skip
    assert login(client).status_code == 302
    stolen = client.get_cookie("provisioner_session")
    assert stolen is not None
    client.post("/logout", headers=session_csrf(client))
    thief = app.test_client()
    thief.set_cookie("provisioner_session", stolen.value)
    assert thief.get("/api/me").status_code == 401
    assert thief.get("/").status_code == 302
    assert login(client).status_code == 302 and client.get("/api/me").status_code == 200


def test_nul_characters_are_refused_everywhere(logged_in: FlaskClient, client: FlaskClient,
                                               app: Flask) -> None:  # fmt: skip
    for path in ("/containers/ab%00cd/progress", "/containers/ab%00cd", "/?q=a%00b",
                 "/templates/ng%00inx", "/api/containers/ab%00cd", "/?a=1&a=%00",
                 "/?%00=1"):  # fmt: skip
        response = logged_in.get(path)
        assert response.status_code == 400, path
        assert "NUL characters are not allowed" in response.text
    fresh = app.test_client()
    page = fresh.get("/login")
    bad = fresh.post("/login", data={"username": "ali\x00ce", "password": PASSWORD,
                                     "csrf_token": form_csrf(page.text)})  # fmt: skip
    assert bad.status_code == 400 and "NUL characters" in bad.text


def test_unknown_progress_page_is_a_dashboard_404(logged_in: FlaskClient) -> None:
    for path in ("/containers/0123abcd/progress", "/containers/not-an-id!/progress"):
        page = logged_in.get(path)
        assert page.status_code == 404 and "Container not found" in page.text
        assert "Back to containers" in page.text


def test_session_api_calls_need_csrf(logged_in: FlaskClient) -> None:
    body = {"template": "nginx", "node": "nope", "hostname": "x"}
    missing = logged_in.post("/api/containers", json=body)
    assert missing.status_code == 400 and "CSRF" in missing.json["error"]
    assert logged_in.post("/logout").status_code == 400  # logout needs it too
    with_header = logged_in.post("/api/containers", json=body, headers=session_csrf(logged_in))
    assert with_header.status_code == 400 and with_header.json["field"] == "node"
    assert logged_in.get("/api/me").json["auth"] == "session"


def test_bearer_tokens_need_no_csrf_and_can_be_revoked(client: FlaskClient, app: Flask,
                                                       token: str) -> None:  # fmt: skip
    me = client.get("/api/me", headers=bearer(token))
    assert me.status_code == 200 and me.json == {"username": "alice", "is_admin": True,
                                                 "auth": "token"}  # fmt: skip
    post = client.post("/api/containers", headers=bearer(token),
                       json={"template": "nginx", "node": "nope", "hostname": "x"})  # fmt: skip
    assert post.status_code == 400 and post.json["field"] == "node"
    bad = client.get("/api/me", headers=bearer(token[:-2] + "xx"))
    assert bad.status_code == 401 and bad.json["error"] == "invalid or revoked API token"
    assert client.get("/", headers=bearer(token)).status_code == 200  # pages accept tokens too
    with db_session(app) as session:
        users.revoke_token(session, "alice", "tests")
    assert client.get("/api/me", headers=bearer(token)).status_code == 401


def test_password_change_ends_sessions(logged_in: FlaskClient, app: Flask) -> None:
    assert logged_in.get("/api/me").status_code == 200
    with db_session(app) as session:
        users.set_password(session, "alice", "a brand new password")
    assert logged_in.get("/api/me").status_code == 401
    assert logged_in.get("/").status_code == 302


def test_login_redirects_only_within_the_site(client: FlaskClient, user: str) -> None:
    target = client.get("/api/me?x=1")
    assert target.status_code == 401
    page = client.get("/")
    assert page.headers["Location"] == "/login?next=/"
    for nxt, expected in (("/api/openapi.json", "/api/openapi.json"),
                          ("//evil.example/", "/"), ("https://evil.example/", "/"),
                          ("/\\evil.example", "/")):  # fmt: skip
        form = client.get(f"/login?next={nxt}")
        response = client.post(f"/login?next={nxt}", data={
            "username": "alice", "password": PASSWORD, "csrf_token": form_csrf(form.text)})  # fmt: skip
        assert response.headers["Location"] == expected, nxt
        client.post("/logout", headers=session_csrf(client))
    # a CR/LF (or any control) in next= is not a header to inject nor a 500
    for nxt in ("/%0d%0aSet-Cookie:%20x=1", "/%0a", "/a%09b"):
        form = client.get(f"/login?next={nxt}")
        response = client.post(f"/login?next={nxt}", data={
            "username": "alice", "password": PASSWORD, "csrf_token": form_csrf(form.text)})  # fmt: skip
        assert response.status_code == 302 and response.headers["Location"] == "/", nxt
        again = client.get(f"/login?next={nxt}")  # logged in already: straight on
        assert again.status_code == 302 and again.headers["Location"] == "/", nxt
        client.post("/logout", headers=session_csrf(client))


def test_a_csrf_token_of_any_text_is_a_400_not_a_500(client: FlaskClient, user: str) -> None:
    client.get("/login")
    form = client.post("/login", data={"username": "alice", "password": PASSWORD,
                                       "csrf_token": "é✓"})  # fmt: skip
    assert form.status_code == 400 and "The form expired" in form.text
    assert login(client).status_code == 302
    api = client.post("/api/containers", json={}, headers={"X-CSRF-Token": "\xe9t\xe9"})
    assert api.status_code == 400 and "CSRF token invalid" in api.json["error"]

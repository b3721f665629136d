"""Every rule of the app needs authentication, except the login page and
static files: API and websocket rules answer 401 JSON, /metrics 401, pages
redirect."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from web.auth import MACHINE_PATHS

OPEN = {"auth.login", "static"}
_ARG = re.compile(r"<(?:([a-z]+)(\(([^)]*)\))?:)?([a-z_]+)>")


def _example_url(rule: str) -> str:
    def value(m: re.Match[str]) -> str:
        converter, args = m.group(1), m.group(3)
        if converter == "any":
            return args.split(",")[0].strip().strip("'\"")
        return "1" if converter == "int" else "sample"

    return _ARG.sub(value, rule)


def test_every_rule_requires_authentication(app: Flask, client: FlaskClient) -> None:
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in OPEN:
            continue
        url = _example_url(rule.rule)
        assert "<" not in url, rule.rule
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            response = client.open(url, method=method)
            where = f"{method} {url} ({rule.endpoint})"
            if url.startswith(("/api/", "/ws/")):
                assert response.status_code == 401, where
                assert response.is_json and "authentication required" in response.json["error"]
            elif url in MACHINE_PATHS:  # scrapers: a 401, not a redirect to a form
                assert response.status_code == 401, where
                assert response.headers["WWW-Authenticate"].startswith("Bearer"), where
            else:
                assert response.status_code == 302, where
                assert response.headers["Location"].startswith("/login?next="), where
            checked += 1
    assert checked >= 20  # the walk really saw the app's routes


def test_websocket_rule_refuses_unauthenticated_upgrades(client: FlaskClient) -> None:
    response = client.get("/ws/containers/sample/events", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})  # fmt: skip
    assert response.status_code == 401


def test_unknown_paths_do_not_reveal_anything(client: FlaskClient) -> None:
    assert client.get("/api/no-such-thing").status_code == 401
    assert client.get("/no-such-page").status_code == 302


def test_open_endpoints_are_only_login_and_static(client: FlaskClient) -> None:
    assert client.get("/login").status_code == 200
    with client.get("/static/style.css") as response:  # closes the file it sends
        assert response.status_code == 200

"""The sandboxes page as the server renders it: the navigation, the new
sandbox form (the Application Password a password input in a POST form,
never a value), and what its script starts from.  The list, the countdown,
extend, destroy and the form's answers are the browser tests'
(tests/browser/test_sandboxes.py)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from provisioner import users
from tests.web.conftest import db_session, login
from web.pages_sandboxes import page_config


def config_of(html: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="sandboxes-config">(.*?)</script>',
                      html, re.S)  # fmt: skip
    assert match, html
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def test_the_page_config_names_the_nodes_and_the_default_ttl_as_a_duration() -> None:
    config = page_config(["pve1", "pve2"], True, 7 * 86400 + 12 * 3600, "2026-12-06T12:00:00.000Z")
    assert config == {"is_admin": True, "nodes": ["pve1", "pve2"],
                      "now": "2026-12-06T12:00:00.000Z", "default_ttl": "7d12h"}  # fmt: skip


def test_the_sandboxes_page_is_in_the_navigation_with_its_form(logged_in: FlaskClient) -> None:
    html = logged_in.get("/").text
    assert '<a href="/sandboxes" >Sandboxes</a>' in html
    response = logged_in.get("/sandboxes")
    assert response.status_code == 200
    html = response.text
    assert '<a href="/sandboxes" aria-current="page">Sandboxes</a>' in html
    config = config_of(html)
    assert config["nodes"] == ["offline"] and config["default_ttl"] == "7d"
    assert config["is_admin"] is True
    now = datetime.fromisoformat(config["now"])
    assert abs((datetime.now(UTC) - now).total_seconds()) < 60
    # the form posts (a script-less submit puts nothing in a URL); the password is never a value
    form = re.search(r'<form id="new-sandbox-form"[^>]*>', html)
    assert form and 'method="post"' in form.group(0)
    password = re.search(r'<input id="sb-app-password"[^>]*>', html)
    assert password and 'type="password"' in password.group(0)
    assert "value=" not in password.group(0)
    for name in ("from", "client", "user", "app_password", "ttl", "fingerprint", "node"):
        assert f'name="{name}"' in html, name
    # one node: chosen already, no empty choice
    assert '<option value="offline">offline</option>' in html and "Choose a node" not in html
    assert "You see the sandboxes you own" not in html  # an administrator sees all
    assert "/static/sandboxes.js" in html and "/static/sandboxes.css" in html


def test_a_user_who_is_not_an_administrator_is_told_they_see_their_own(
        app: Flask, client: FlaskClient) -> None:  # fmt: skip
    with db_session(app) as session:
        users.create_user(session, "bob", "a long enough password")
    assert login(client, "bob", "a long enough password").status_code == 302
    html = client.get("/sandboxes").text
    assert "You see the sandboxes you own." in html
    assert config_of(html)["is_admin"] is False


def test_the_page_needs_a_login(client: FlaskClient) -> None:
    response = client.get("/sandboxes")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")

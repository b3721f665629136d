"""Fixtures of the web app's tests: an app on a fresh database and the real
Redis (REDIS_URL), users, API tokens, a logged-in client; and, for the
end-to-end tests, the pipeline's stack (simulator, workers)."""

from __future__ import annotations

import base64
import os
import re
import secrets
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from sqlalchemy import func, select
from werkzeug.serving import BaseWSGIServer, make_server

from provisioner import db, users
from provisioner.config import Settings
from provisioner.db import session_scope
from provisioner.models import AuthKind, Container, Lifecycle, Node
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import set_node_secret
from tests.web.openapi_check import CheckedClient
from web.app import create_app
from web.ratelimit import KEY_PREFIX

PASSWORD = "correct horse battery"
OFFLINE_NODE = "offline"


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set (e.g. redis://127.0.0.1:6379/7)")
    return url


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_node(settings: Settings, name: str, host: str, port: int, secret: str = "s3cret-token",
             **columns: Any) -> None:  # fmt: skip
    box = load_secret_box(settings.secret_key, settings.secret_key_file)
    engine = db.make_engine(settings.database_url)
    try:
        with session_scope(db.session_factory(engine)) as session:
            node = Node(name=name, host=host, port=port, pve_node="pve", secret_ciphertext="",
                        auth_kind=AuthKind.TOKEN, pve_user="root@pam", token_name="web",
                        tls_insecure=True, **columns)  # fmt: skip
            set_node_secret(box, node, secret)
            session.add(node)
    finally:
        engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Iterator[Settings]:
    """Settings on a fresh, migrated SQLite database with one unreachable
    node ("offline"), the shipped templates and a queue of the test's own."""
    env = {
        "PROVISIONER_DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path}/provisioner.db",
        "REDIS_URL": redis_url,
        "PROVISIONER_SECRET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "PROVISIONER_QUEUE_NAME": f"web-test-{uuid.uuid4().hex[:8]}",
    }
    settings = Settings.from_env(environ=env)
    db.upgrade(settings.database_url)
    add_node(settings, OFFLINE_NODE, "127.0.0.1", closed_port())
    redis = Redis.from_url(redis_url)
    for key in redis.scan_iter(f"{KEY_PREFIX}*"):
        redis.delete(key)
    yield settings
    Queue(settings.queue_name, connection=redis).delete(delete_jobs=True)
    redis.close()


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings, {"TESTING": True})
    yield app
    app.extensions["provisioner"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """The test client; every /api/ answer is checked against the OpenAPI document."""
    app.test_client_class = CheckedClient
    return app.test_client()


def db_session(app: Flask) -> Any:
    return session_scope(app.extensions["provisioner"].factory)


@pytest.fixture
def user(app: Flask) -> str:
    """An admin user "alice" with PASSWORD."""
    with db_session(app) as session:
        users.create_user(session, "alice", PASSWORD, is_admin=True)
    return "alice"


@pytest.fixture
def token(app: Flask, user: str) -> str:
    """An API token of alice."""
    with db_session(app) as session:
        _, secret = users.create_api_token(session, user, "tests")
    return secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def form_csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def login(client: FlaskClient, username: str = "alice", password: str = PASSWORD,
          **kwargs: Any) -> Any:  # fmt: skip
    page = client.get("/login")
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": form_csrf(page.text)}, **kwargs)  # fmt: skip


@pytest.fixture
def logged_in(client: FlaskClient, user: str) -> FlaskClient:
    assert login(client).status_code == 302
    return client


def session_csrf(client: FlaskClient) -> dict[str, str]:
    """The X-CSRF-Token header of a logged-in client."""
    return {"X-CSRF-Token": client.get("/api/me").json["csrf_token"]}


def count_containers(app: Flask) -> int:
    with db_session(app) as session:
        return int(session.scalar(select(func.count()).select_from(Container)) or 0)


def add_container(app: Flask, node: str = OFFLINE_NODE, **columns: Any) -> str:
    """A container row (no PVE behind it) for tests of reads, actions and events."""
    with db_session(app) as session:
        node_row = session.scalars(select(Node).where(Node.name == node)).one()
        values = {"template": "nginx", "hostname": "row", "lifecycle": Lifecycle.PENDING,
                  "request": {}, **columns}  # fmt: skip
        ct = Container(node=node_row, **values)
        session.add(ct)
        session.flush()
        return ct.id


@dataclass
class LiveServer:
    """The app on a real threaded HTTP server (websockets need one)."""

    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@contextmanager
def serve(app: Flask) -> Iterator[LiveServer]:
    """Serve ``app`` on a free port with werkzeug's threaded server."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)  # fmt: skip
    thread.start()
    try:
        yield LiveServer(server, thread)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    with serve(app) as server:
        yield server


def add_sim_node(app: Flask, sim: dict[str, Any], name: str, port: int | None = None,
                  **columns: Any) -> None:  # fmt: skip
    """The simulator under another name (other defaults, or a closed port)."""
    res = app.extensions["provisioner"]
    host, sim_port = sim["url"].split("//")[1].split("/")[0].rsplit(":", 1)
    user, token_name = sim["token_id"].split("!")
    with db_session(app) as session:
        node = Node(name=name, host=host, port=port or int(sim_port), pve_node=sim["node"],
                    auth_kind=AuthKind.TOKEN, pve_user=user, token_name=token_name,
                    secret_ciphertext="", ca_file=sim["cafile"], **columns)  # fmt: skip
        set_node_secret(res.box, node, sim["token_secret"])
        session.add(node)

"""The REST API and the relay against the real stack: the simulator as a
node, Redis, a real worker provisioning the nginx template; on SQLite and
on PostgreSQL."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq.job import Job
from simple_websocket import ConnectionClosed

from tests.databases import BOTH
from tests.pipeline.conftest import NODE, Stack, admin_token, build_stack
from tests.web.conftest import LiveServer, bearer
from tests.web.wsclient import Client
from web.app import create_app

pytestmark = [pytest.mark.integration, BOTH]


@pytest.fixture(scope="module")
def web_stack(sim: dict[str, Any], redis_url: str, db_backend: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # fmt: skip
    stack = build_stack(sim, redis_url, tmp_path_factory.mktemp(f"web-stack-{db_backend}"),
                        backend=db_backend)  # fmt: skip
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def app(web_stack: Stack) -> Iterator[Flask]:
    app = create_app(web_stack.settings, {"TESTING": True})
    yield app
    app.extensions["provisioner"].close()


@pytest.fixture
def token(app: Flask) -> str:
    return admin_token(app.extensions["provisioner"].factory)


@pytest.fixture
def destroy_later(web_stack: Stack) -> Iterator[Callable[[str], str]]:
    """Containers to remove from PVE if a test leaves them behind."""
    made: list[str] = []
    yield lambda cid: (made.append(cid), cid)[1]
    web_stack.destroy_in_pve(made)


def test_nodes_against_the_simulator(app: Flask, client: FlaskClient, token: str,
                                     sim: dict[str, Any], web_stack: Stack) -> None:  # fmt: skip
    auth = bearer(token)
    listed = client.get("/api/nodes", headers=auth).json["nodes"]
    assert [(n["name"], n["pve_node"]) for n in listed] == [(NODE, sim["node"])]
    assert sim["token_secret"] not in json.dumps(listed)
    tested = client.post(f"/api/nodes/{NODE}/test", headers=auth)
    assert tested.status_code == 200 and tested.json["ok"] and tested.json["version"]["version"]
    storages = client.get(f"/api/nodes/{NODE}/storages", headers=auth).json["storages"]
    assert {"local", "local-lvm"} <= {s["name"] for s in storages}
    rootdir = client.get(f"/api/nodes/{NODE}/storages?content=rootdir", headers=auth).json
    assert [s["name"] for s in rootdir["storages"]] == ["local-lvm"]
    bridges = client.get(f"/api/nodes/{NODE}/bridges", headers=auth).json["bridges"]
    assert "vmbr0" in {b["name"] for b in bridges}
    templates = client.get(f"/api/nodes/{NODE}/templates", headers=auth).json["templates"]
    assert any(t["file"].startswith("debian-12-standard") for t in templates)
    resources = client.get(f"/api/nodes/{NODE}/resources", headers=auth).json
    assert resources["free_memory"] > 0 and resources["cpus"] >= 1

    host, port = sim["url"].split("//")[1].split("/")[0].rsplit(":", 1)
    base = {"host": host, "port": int(port), "token_id": sim["token_id"]}
    wrong_secret = client.post("/api/nodes", headers=auth, json={
        **base, "name": "bad", "token_secret": "wrong", "ca_file": sim["cafile"]})  # fmt: skip
    assert wrong_secret.status_code == 400 and wrong_secret.json["field"] == "token_secret"
    wrong_pin = client.post("/api/nodes", headers=auth, json={
        **base, "name": "bad", "token_secret": sim["token_secret"], "fingerprint": "ab" * 32})  # fmt: skip
    assert wrong_pin.status_code == 400 and wrong_pin.json["field"] == "fingerprint"
    pinned = client.post("/api/nodes", headers=auth, json={
        **base, "name": "pinned", "token_secret": sim["token_secret"],
        "fingerprint": sim["fingerprint"], "default_storage": "local-lvm"})  # fmt: skip
    assert pinned.status_code == 201, pinned.json
    assert pinned.json["pve_node"] == sim["node"] and pinned.json["version"]["version"]
    by_password = client.post("/api/nodes", headers=auth, json={
        "name": "by-password", "host": host, "port": int(port), "user": sim["user"],
        "password": sim["password"], "ca_file": sim["cafile"]})  # fmt: skip
    assert by_password.status_code == 201, by_password.json
    assert client.post("/api/nodes/by-password/test", headers=auth).json["ok"]
    for what in ("storages", "bridges", "resources", "templates"):
        assert client.get(f"/api/nodes/by-password/{what}", headers=auth).status_code == 200
    # one login for all of that: the process keeps its clients (and their ticket)
    pool = app.extensions["provisioner"].pve
    (clients,) = [idle for conn, idle in pool._idle.items()
                  if getattr(conn.auth, "user", None) == sim["user"]]  # fmt: skip
    assert [c._session.auth.logins for c in clients] == [1]
    assert sim["password"] not in client.get("/api/nodes", headers=auth).text
    for name in ("pinned", "by-password"):
        assert client.delete(f"/api/nodes/{name}", headers=auth).status_code == 204


def test_templates(client: FlaskClient, token: str) -> None:
    listed = client.get("/api/templates", headers=bearer(token)).json
    names = {t["name"] for t in listed["templates"]}
    assert {"debian-base", "nginx", "postgresql", "redis", "python-app"} <= names
    assert listed["invalid"] == []
    nginx = client.get("/api/templates/nginx", headers=bearer(token)).json
    title = next(v for v in nginx["variables"] if v["name"] == "site_title")
    assert title["default"] == "It works" and title["max_length"] == 120
    assert nginx["files"][0]["target"] == "/var/www/html/index.html"
    postgres = client.get("/api/templates/postgresql", headers=bearer(token)).json
    secrets_ = [v for v in postgres["variables"] if v["secret"]]
    assert secrets_ and all(v["default"] is None for v in secrets_)
    # the data hooks by kind; syncable in listings too
    assert postgres["hooks"] == {"clone": "clone.sh", "export": "export.sh", "import": "import.sh"}
    assert [v["name"] for v in postgres["variables"] if v["regenerate"]] == ["db_password"]
    assert {t["name"]: t["syncable"] for t in listed["templates"]}.items() >= {
        "debian-base": False, "nginx": True, "postgresql": True, "redis": True,
        "python-app": True,
    }.items()  # fmt: skip
    base = client.get("/api/templates/debian-base", headers=bearer(token)).json
    assert base["hooks"] == {} and base["syncable"] is False


def follow(server: LiveServer, path: str, token: str, timeout: float) -> list[dict[str, Any]]:
    """Every event of a websocket stream until the server closes it."""
    ws = Client.connect(f"{server.ws}{path}", headers=bearer(token))
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = ws.receive(timeout=5)
            if message is not None:
                got.append(json.loads(message))
    except ConnectionClosed:
        return got
    ws.close()
    raise AssertionError(f"no terminal event within {timeout}s: {got[-3:]}")


def wait_for(client: FlaskClient, token: str, cid: str, check: Callable[[dict[str, Any]], bool],
             timeout: float = 120) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/containers/{cid}", headers=bearer(token)).json
        if check(body):
            return body
        time.sleep(0.5)
    raise AssertionError(f"container {cid} never got there: {body}")


def node_containers(client: FlaskClient, token: str) -> int:
    """How many containers the node holds, as the list and the node's own
    page say (they must agree)."""
    listed = client.get("/api/nodes", headers=bearer(token)).json["nodes"]
    (node,) = [n for n in listed if n["name"] == NODE]
    one = client.get(f"/api/nodes/{NODE}", headers=bearer(token)).json
    assert node["containers"] == one["containers"], (node, one)
    return int(node["containers"])


@pytest.mark.timeout(600)
def test_container_lifecycle_through_the_api(
    client: FlaskClient, token: str, web_stack: Stack, live_server: LiveServer,
    destroy_later: Callable[[str], str], tmp_path: Path,
) -> None:  # fmt: skip
    auth = bearer(token)
    web_stack.start_workers(1)
    created = client.post("/api/containers", headers=auth, json={
        "template": "nginx", "node": NODE, "hostname": "web-api",
        "variables": {"site_title": "Hello from the API"}})  # fmt: skip
    assert created.status_code == 201, created.json
    cid = destroy_later(created.json["id"])
    password = created.json["root_password"]

    # the relay, live, with a real worker behind it
    events = follow(live_server, created.json["events_url"], token, timeout=540)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "complete", events[-5:]
    assert {e["phase"] for e in events if e["type"] == "step"} == {
        "create", "start", "deploy", "scripts", "finalize"}  # fmt: skip

    # the worker records the lifecycle right after the terminal event (as the
    # CLI and the progress view do, wait a moment for it)
    wait_for(client, token, cid, lambda c: c["lifecycle"] == "ready", timeout=30)
    ct = client.get(f"/api/containers/{cid}", headers=auth)
    assert ct.status_code == 200
    body = ct.json
    assert body["lifecycle"] == "ready" and body["ip"] and body["vmid"]
    assert body["pve"]["status"] == "running" and body["pve_error"] is None
    assert body["finished_phases"] == ["create", "start", "deploy", "scripts", "finalize"]
    assert password not in ct.text and "ciphertext" not in ct.text
    assert "PRIVATE KEY" not in ct.text
    listed = client.get("/api/containers", headers=auth).json["containers"]
    mine = next(c for c in listed if c["id"] == cid)
    assert mine["pve"]["status"] == "running"
    holding = node_containers(client, token)
    assert holding >= 1

    # stored events, paginated, are the ones the relay streamed
    paged: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.get(f"/api/containers/{cid}/events?after={after}&limit=7",
                          headers=auth).json  # fmt: skip
        paged += page["events"]
        after = page["next_after"]
        if not page["more"]:
            break
    assert [e["seq"] for e in paged] == [e["seq"] for e in events]
    assert paged == events
    log = client.get(f"/api/containers/{cid}/log", headers=auth)
    assert log.status_code == 200 and log.mimetype == "text/plain"
    stamped = [line for line in log.text.splitlines() if re.match(r"\d{4}-\d\d-\d\dT", line)]
    assert len(stamped) == len(events)
    assert "[complete] finalize 100%" in log.text and password not in log.text

    stop = client.post(f"/api/containers/{cid}/actions/stop", headers=auth)
    assert stop.status_code == 202 and stop.json["job_id"]
    wait_for(client, token, cid, lambda c: (c["pve"] or {}).get("status") == "stopped")
    start = client.post(f"/api/containers/{cid}/actions/start", headers=auth)
    assert start.status_code == 202
    wait_for(client, token, cid, lambda c: (c["pve"] or {}).get("status") == "running")
    # PVE says "running" a moment before the start job publishes its end
    job = Job.fetch(start.json["job_id"], connection=web_stack.redis)
    deadline = time.monotonic() + 60
    while not job.is_finished and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.is_finished
    reboot = client.post(f"/api/containers/{cid}/actions/reboot", headers=auth)
    assert reboot.status_code == 202, reboot.json
    rebooted = follow(live_server, reboot.json["events_url"], token, timeout=120)
    assert rebooted and (rebooted[-1]["type"], rebooted[-1]["outcome"]) == ("complete", "done")
    assert [e["seq"] for e in rebooted] == list(range(rebooted[0]["seq"], rebooted[-1]["seq"] + 1))
    assert client.get(f"/api/containers/{cid}", headers=auth).json["pve"]["status"] == "running"

    destroy = client.post(f"/api/containers/{cid}/actions/destroy", headers=auth)
    assert destroy.status_code == 202
    tail = follow(live_server, destroy.json["events_url"], token, timeout=180)
    assert tail and tail[-1]["type"] == "complete" and tail[-1]["message"] == "destroyed"
    gone = wait_for(client, token, cid, lambda c: c["lifecycle"] == "destroyed")
    assert gone["pve"] is None
    assert node_containers(client, token) == holding - 1  # its record stays, but it is gone
    default_listing = client.get("/api/containers", headers=auth).json["containers"]
    assert cid not in {c["id"] for c in default_listing}
    again = client.post(f"/api/containers/{cid}/actions/destroy", headers=auth)
    assert again.status_code == 409

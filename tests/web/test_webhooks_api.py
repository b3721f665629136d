"""``/api/webhooks``: who sees and adds which hooks, bad input naming its
field, the secret shown once, the delivery log and the test ping (queued,
not sent: tests/pipeline/test_webhooks_e2e.py sends for real); and the
owner of a container made through the API."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue

from provisioner import users
from provisioner.config import Settings
from provisioner.models import Webhook
from provisioner.webhook_store import DELIVERY_JOB, webhook_queue_name
from tests.web.conftest import OFFLINE_NODE, PASSWORD, bearer, db_session

HOOK = "https://hooks.example.net/lxc"


def user_token(app: Flask, name: str, *, admin: bool = False) -> dict[str, str]:
    with db_session(app) as session:
        users.create_user(session, name, PASSWORD, is_admin=admin)
        _, secret = users.create_api_token(session, name, "tests")
    return bearer(secret)


def add(client: FlaskClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/api/webhooks", json={"url": HOOK, **body}, headers=headers)


def test_an_admin_adds_a_global_hook_and_gets_its_secret_once(app: Flask, client: FlaskClient,
                                                              token: str) -> None:  # fmt: skip
    answer = add(client, bearer(token), owner=None, events=["error", "ready"])
    assert answer.status_code == 201, answer.json
    hook, secret = answer.json["webhook"], answer.json["secret"]
    assert hook["owner"] is None and hook["events"] == ["ready", "error"] and hook["url"] == HOOK
    assert secret.startswith("whsec_")
    listed = client.get("/api/webhooks", headers=bearer(token)).json["webhooks"]
    assert listed == [hook]
    assert secret not in client.get("/api/webhooks", headers=bearer(token)).text
    with db_session(app) as session:
        row = session.get(Webhook, hook["id"])
        assert row is not None and secret not in row.secret_ciphertext
    # without an owner it is the caller's; a given secret is not echoed
    mine = add(client, bearer(token), secret="my own secret of 16+ chars")
    assert mine.status_code == 201 and "secret" not in mine.json
    assert mine.json["webhook"]["owner"] == "alice"


def test_a_user_sees_and_manages_only_their_own(app: Flask, client: FlaskClient,
                                                token: str) -> None:  # fmt: skip
    bob = user_token(app, "bob")
    global_id = add(client, bearer(token), owner=None).json["webhook"]["id"]
    alices = add(client, bearer(token), owner="alice").json["webhook"]["id"]
    bobs = add(client, bob).json["webhook"]
    assert bobs["owner"] == "bob"
    assert [h["id"] for h in client.get("/api/webhooks", headers=bob).json["webhooks"]] == [
        bobs["id"]]  # fmt: skip
    all_ids = [h["id"] for h in client.get("/api/webhooks", headers=bearer(token)).json["webhooks"]]
    assert all_ids == [global_id, alices, bobs["id"]]
    for other in (global_id, alices):
        assert client.delete(f"/api/webhooks/{other}", headers=bob).status_code == 404
        assert client.get(f"/api/webhooks/{other}/deliveries", headers=bob).status_code == 404
        assert client.post(f"/api/webhooks/{other}/test", headers=bob).status_code == 404
    for owner in (None, "alice"):
        refused = add(client, bob, owner=owner)
        assert refused.status_code == 403 and refused.json["field"] == "owner"
    assert add(client, bob, owner="bob").status_code == 201
    assert client.delete(f"/api/webhooks/{bobs['id']}", headers=bob).status_code == 204
    assert client.delete(f"/api/webhooks/{bobs['id']}", headers=bob).status_code == 404


def test_bad_input_is_a_400_naming_every_field(client: FlaskClient, token: str) -> None:
    answer = client.post("/api/webhooks", headers=bearer(token), json={
        "url": "https://ops:hunter2secret@hooks.example/x", "events": ["ready", "done"],
        "owner": "no spaces allowed", "secret": "short", "colour": "blue"})  # fmt: skip
    assert answer.status_code == 400
    assert [e["field"] for e in answer.json["errors"]] == ["url", "events", "owner", "secret",
                                                           "colour"]  # fmt: skip
    assert answer.json["error"].startswith("url: must not hold a user name or password")
    assert "hunter2secret" not in answer.text
    for body, field in (({}, "url"), ({"url": "ftp://x/"}, "url"), ({"url": 5}, "url"),
                        ({"url": HOOK, "events": "ready"}, "events"),
                        ({"url": HOOK, "events": [1]}, "events")):  # fmt: skip
        refused = client.post("/api/webhooks", headers=bearer(token), json=body)
        assert refused.status_code == 400 and refused.json["field"] == field, (body, refused.json)
    assert client.get("/api/webhooks", headers=bearer(token)).json["webhooks"] == []
    assert client.delete("/api/webhooks/nope", headers=bearer(token)).status_code == 404
    bad = client.get("/api/webhooks/1/deliveries", headers=bearer(token))
    assert bad.status_code == 404


def test_a_test_ping_is_queued_and_logged(app: Flask, client: FlaskClient, token: str,
                                          settings: Settings, redis_url: str) -> None:  # fmt: skip
    hook_id = add(client, bearer(token)).json["webhook"]["id"]
    queue = Queue(webhook_queue_name(settings), connection=Redis.from_url(redis_url))
    try:
        answer = client.post(f"/api/webhooks/{hook_id}/test", headers=bearer(token))
        assert answer.status_code == 202
        delivery = answer.json["delivery"]
        assert delivery["event"] == "ping" and delivery["status"] == "pending"
        assert delivery["attempts"] == 0 and delivery["container_id"] is None
        (job,) = queue.get_jobs()
        assert job.func_name == DELIVERY_JOB and job.args == (delivery["id"],)
        log = client.get(f"/api/webhooks/{hook_id}/deliveries", headers=bearer(token)).json
        assert [d["id"] for d in log["deliveries"]] == [delivery["id"]]
        assert log["deliveries"][0]["payload"]["event"] == "ping"
        bad = client.get(f"/api/webhooks/{hook_id}/deliveries?container=zz!",
                         headers=bearer(token))  # fmt: skip
        assert bad.status_code == 400 and bad.json["field"] == "container"
        limit = client.get(f"/api/webhooks/{hook_id}/deliveries?limit=0", headers=bearer(token))
        assert limit.status_code == 400 and limit.json["field"] == "limit"
    finally:
        queue.delete(delete_jobs=True)


def test_a_container_asked_for_through_the_api_is_its_users(app: Flask, client: FlaskClient,
                                                            token: str) -> None:  # fmt: skip
    bob = user_token(app, "bob")
    answer = client.post("/api/containers", headers=bob, json={
        "template": "nginx", "node": OFFLINE_NODE, "hostname": "owned1"})  # fmt: skip
    assert answer.status_code == 201, answer.json
    assert answer.json["container"]["owner"] == "bob"
    shown = client.get(f"/api/containers/{answer.json['id']}?live=false", headers=bearer(token))
    assert shown.json["owner"] == "bob"
    refused = client.post("/api/containers", headers=bob, json={
        "template": "nginx", "node": OFFLINE_NODE, "hostname": "owned2", "owner": "alice"})  # fmt: skip
    assert refused.status_code == 400 and refused.json["field"] == "owner"  # not a field to give

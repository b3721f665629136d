"""Invalid input gets a 4xx JSON error naming the field, and nothing is
written: no container row, no job, no node."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from sqlalchemy import func, select

from provisioner import users
from provisioner.config import Settings
from provisioner.models import Lifecycle, Node
from tests.web.conftest import OFFLINE_NODE, add_container, bearer, count_containers, db_session

GOOD = {"template": "nginx", "node": OFFLINE_NODE, "hostname": "web1"}


def _queued(settings: Settings) -> int:
    redis = Redis.from_url(settings.redis_url)
    try:
        return len(Queue(settings.queue_name, connection=redis))
    finally:
        redis.close()


@pytest.mark.parametrize(("change", "field", "status"), [
    ({"template": None}, "template", 400),
    ({"node": 42}, "node", 400),  # left out: the only node (else "auto": placement)
    ({"hostname": None}, "hostname", 400),
    ({"hostname": 42}, "hostname", 400),
    ({"hostname": ""}, "hostname", 400),
    ({"hostname": "not a hostname!"}, "hostname", 400),
    ({"hostname": "x" * 300}, "hostname", 400),
    ({"template": ["nginx"]}, "template", 400),
    ({"template": "no-such-template"}, "template", 400),
    ({"template": "../nginx"}, "template", 400),
    ({"node": "no-such-node"}, "node", 400),
    ({"cores": "two"}, "cores", 400),
    ({"cores": True}, "cores", 400),
    ({"cores": 1.5}, "cores", 400),
    ({"cores": 0}, "cores", 400),
    ({"memory": -1}, "memory", 400),
    ({"disk": 0}, "disk", 400),
    ({"vmid": 5}, "vmid", 400),
    ({"vmid": "100"}, "vmid", 400),
    ({"ip": "300.1.1.1/24"}, "ip", 400),
    ({"ip": "198.18.0.10"}, "ip", 400),
    ({"ip": "somewhere"}, "ip", 400),
    ({"ip": 12}, "ip", 400),
    ({"gateway": "198.18.0.1"}, "gateway", 400),  # with dhcp
    ({"ip": "198.18.0.10/24", "gateway": "nope"}, "gateway", 400),
    ({"bridge": "vmbr0; rm -rf /"}, "bridge", 400),
    ({"storage": "bad storage"}, "storage", 400),
    ({"variables": ["a"]}, "variables", 400),
    ({"variables": {"site_title": ["a"]}}, "variables.site_title", 400),
    ({"variables": {"nope": "x"}}, "variables.nope", 400),
    ({"variables": {"site_title": ""}}, "variables.site_title", 400),
    ({"variables": {"server_name": "bad name!"}}, "variables.server_name", 400),
    ({"failure_policy": "explode"}, "failure_policy", 400),
    ({"ssh_public_key": "ssh-ed25519 AAAA"}, "ssh_public_key", 400),  # cut short
    ({"ssh_public_key": "ssh-ed25519"}, "ssh_public_key", 400),
    ({"root_password": "abc"}, "root_password", 400),
    ({"root_password": "seven77"}, "root_password", 400),  # the wizard's minimum too: 8
    ({"root_password": 12345}, "root_password", 400),
    ({"colour": "blue"}, "colour", 400),
])  # fmt: skip
def test_bad_container_requests(app: Flask, client: FlaskClient, token: str, settings: Settings,
                                change: dict[str, Any], field: str, status: int) -> None:  # fmt: skip
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    response = client.post("/api/containers", json=body, headers=bearer(token))
    assert response.status_code == status, response.json
    assert response.is_json and response.json["field"] == field, response.json
    assert response.json["error"]
    assert response.json["errors"] == [{"field": field, "message": response.json["error"]}]
    assert count_containers(app) == 0
    assert _queued(settings) == 0


def test_every_field_error_of_a_container_request_at_once(app: Flask, client: FlaskClient,
                                                          token: str, settings: Settings) -> None:  # fmt: skip
    response = client.post("/api/containers", headers=bearer(token), json={
        "template": "nginx", "node": OFFLINE_NODE, "hostname": "bad host!", "cores": "two",
        "memory": 1, "ip": "198.18.0.10/24", "gateway": "nope",
        "ssh_public_key": "ssh-ed25519 AAAA", "root_password": "short",
        "variables": {"nope": "x"}, "failure_policy": "explode", "colour": "blue"})  # fmt: skip
    assert response.status_code == 400, response.json
    errors = response.json["errors"]
    assert [e["field"] for e in errors] == [
        "gateway", "cores", "memory", "ssh_public_key", "root_password", "failure_policy",
        "variables.nope", "hostname", "colour"]  # fmt: skip
    assert (response.json["field"], response.json["error"]) == (errors[0]["field"],
                                                                errors[0]["message"])  # fmt: skip
    assert "unknown variable 'nope'" in errors[6]["message"]
    assert "short" not in str(errors[4]) and "AAAA" not in response.text
    assert count_containers(app) == 0 and _queued(settings) == 0
    # a body whose only fault is a placeholder's consequence is not blamed twice
    missing = client.post("/api/containers", headers=bearer(token), json={"cores": 0})
    assert [e["field"] for e in missing.json["errors"]] == ["template", "hostname", "cores"]


def test_bodies_that_are_not_json_objects(app: Flask, client: FlaskClient, token: str) -> None:
    for kwargs, status in (({"data": "template=nginx"}, 415),
                           ({"data": "{not json", "content_type": "application/json"}, 400),
                           ({"json": ["nginx"]}, 400),
                           ({"data": "null", "content_type": "application/json"}, 400)):  # fmt: skip
        response = client.post("/api/containers", headers=bearer(token), **kwargs)
        assert response.status_code == status, kwargs
        assert response.is_json and response.json["error"]
    assert count_containers(app) == 0


def test_taken_vmid_is_a_conflict(app: Flask, client: FlaskClient, token: str) -> None:
    add_container(app, vmid=150, lifecycle=Lifecycle.READY)
    response = client.post("/api/containers", json={**GOOD, "vmid": 150}, headers=bearer(token))
    assert response.status_code == 409 and response.json["field"] == "vmid"
    assert count_containers(app) == 1


def test_a_valid_request_is_stored_and_queued(app: Flask, client: FlaskClient, token: str,
                                              settings: Settings) -> None:  # fmt: skip
    """The control for the tests above: the same body, valid, is accepted."""
    response = client.post("/api/containers", headers=bearer(token), json={
        **GOOD, "ip": "198.18.0.10/24", "gateway": "198.18.0.1", "cores": 2,
        "variables": {"site_title": "Hi"}})  # fmt: skip
    assert response.status_code == 201, response.json
    body = response.json
    assert body["events_url"] == f"/ws/containers/{body['id']}/events"
    assert body["job_id"] and len(body["root_password"]) >= 12
    assert body["container"]["lifecycle"] == "pending"
    assert body["container"]["variables"]["site_title"] == "Hi"
    assert count_containers(app) == 1 and _queued(settings) == 1
    again = client.get(f"/api/containers/{body['id']}", headers=bearer(token)).json
    assert body["root_password"] not in str(again) and "root_password" not in again
    # the secret variable left out was generated: shown here, once
    generated = body["generated_secrets"]["basic_auth_password"]
    assert list(body["generated_secrets"]) == ["basic_auth_password"] and len(generated) == 20
    assert generated not in str(again) and "generated_secrets" not in again


def test_given_root_password_is_not_echoed(client: FlaskClient, token: str) -> None:
    response = client.post("/api/containers", headers=bearer(token),
                           json={**GOOD, "root_password": "my own password"})  # fmt: skip
    assert response.status_code == 201 and "root_password" not in response.json
    assert "my own password" not in response.text


def test_a_damaged_ssh_key_is_named_by_line_and_never_echoed(app: Flask, client: FlaskClient,
                                                             token: str) -> None:  # fmt: skip
    from provisioner.secrets.generate import generate_ssh_keypair

    _, good = generate_ssh_keypair("me@laptop")
    kind, blob, _ = good.split(" ")
    for damaged, why in ((f"{kind} {blob[:-7]}", "not valid base64"),
                         (f"ssh-rsa {blob} me@laptop", "does not belong to a key of type ssh-rsa"),
                         (f"{kind} {blob[:40]}", "cut short")):  # fmt: skip
        response = client.post("/api/containers", headers=bearer(token), json={
            **GOOD, "ssh_public_key": f"{good}\n\n{damaged}"})  # fmt: skip
        assert response.status_code == 400 and response.json["field"] == "ssh_public_key"
        assert response.json["error"].startswith("ssh_public_key line 3: ")
        assert why in response.json["error"], response.json
        assert blob[:40] not in response.text and "me@laptop" not in response.text
    assert count_containers(app) == 0


@pytest.mark.parametrize(("change", "field"), [
    ({"name": None}, "name"),
    ({"name": "bad name"}, "name"),
    ({"host": None}, "host"),
    ({"host": "https://pve:8006/"}, "host"),
    ({"host": "[::1"}, "host"),
    ({"host": "::::"}, "host"),
    ({"host": "pve1:8006"}, "host"),
    ({"host": "300.1.2.3"}, "host"),
    ({"host": "-pve.example"}, "host"),
    ({"port": 70000}, "port"),
    ({"port": "8006"}, "port"),
    ({"token_id": "no-bang"}, "token_id"),
    ({"token_secret": None}, "token_secret"),
    ({"token_id": None, "token_secret": None}, "token_id"),
    ({"user": "root@pam", "password": "x"}, "user"),
    ({"insecure": None, "fingerprint": "AB:CD"}, "fingerprint"),
    ({"insecure": None, "ca_file": "/no/such/ca.pem"}, "ca_file"),
    ({"insecure": None, "ca_file": "relative.pem"}, "ca_file"),
    ({"insecure": "yes"}, "insecure"),
    ({"insecure": True, "fingerprint": "ab" * 32}, "insecure"),
    ({"verify": False}, "pve_node"),
    ({"name": OFFLINE_NODE}, "name"),
    ({"pve_node": "pve"}, "host"),  # cannot connect: nothing listens there
    ({"extra": 1}, "extra"),
])  # fmt: skip
def test_bad_node_requests(app: Flask, client: FlaskClient, token: str, change: dict[str, Any],
                           field: str) -> None:  # fmt: skip
    good = {"name": "pve2", "host": "127.0.0.1", "port": 1, "token_id": "root@pam!web",
            "token_secret": "secret", "insecure": True}  # fmt: skip
    body = {k: v for k, v in {**good, **change}.items() if v is not None}
    response = client.post("/api/nodes", json=body, headers=bearer(token))
    assert 400 <= response.status_code < 500, response.json
    assert response.json["field"] == field, response.json
    assert response.json["errors"] == [{"field": field, "message": response.json["error"]}]
    with db_session(app) as session:
        assert session.scalar(select(func.count()).select_from(Node)) == 1  # only "offline"


def test_every_field_error_of_a_node_request_at_once(app: Flask, client: FlaskClient,
                                                     token: str) -> None:  # fmt: skip
    response = client.post("/api/nodes", headers=bearer(token), json={
        "name": "bad name", "host": "https://pve:8006/", "port": 70000, "token_id": "no-bang",
        "token_secret": "s3cret", "insecure": "yes", "default_bridge": "br 0",
        "extra": 1})  # fmt: skip
    assert response.status_code == 400, response.json
    assert [e["field"] for e in response.json["errors"]] == [
        "name", "host", "port", "token_id", "insecure", "default_bridge", "extra"]  # fmt: skip
    assert response.json["field"] == "name" and "s3cret" not in response.text
    with db_session(app) as session:
        assert session.scalar(select(func.count()).select_from(Node)) == 1


def test_node_without_verification_and_deletion(client: FlaskClient, token: str,
                                                app: Flask) -> None:  # fmt: skip
    body = {"name": "later", "host": "pve.example", "pve_node": "pve", "user": "root@pam",
            "password": "pw", "fingerprint": "ab" * 32, "verify": False}  # fmt: skip
    added = client.post("/api/nodes", json=body, headers=bearer(token))
    assert added.status_code == 201, added.json
    assert added.json["fingerprint"] == ":".join(["AB"] * 32)
    assert added.json["auth"] == "password" and "pw" not in added.text
    listed = client.get("/api/nodes", headers=bearer(token)).json["nodes"]
    assert [n["name"] for n in listed] == ["later", OFFLINE_NODE]
    assert client.delete("/api/nodes/later", headers=bearer(token)).status_code == 204
    assert client.get("/api/nodes/later", headers=bearer(token)).status_code == 404
    add_container(app)
    busy = client.delete(f"/api/nodes/{OFFLINE_NODE}", headers=bearer(token))
    assert busy.status_code == 409 and "container" in busy.json["error"]


def test_unreachable_node_is_a_502_not_a_500(client: FlaskClient, token: str) -> None:
    for path in ("test", "storages", "bridges", "templates", "resources"):
        method = client.post if path == "test" else client.get
        response = method(f"/api/nodes/{OFFLINE_NODE}/{path}", headers=bearer(token))
        assert response.status_code == 502, path
        assert "connection failed" in response.json["error"] and response.json["transient"]
    assert client.get("/api/nodes/nope/storages", headers=bearer(token)).status_code == 404


def test_unknown_objects_are_404(client: FlaskClient, token: str) -> None:
    for path in ("/api/containers/nope", "/api/containers/nope/events",
                 "/api/containers/nope/log", "/api/templates/nope", "/api/nodes/nope"):  # fmt: skip
        response = client.get(path, headers=bearer(token))
        assert response.status_code == 404 and response.is_json, path
    action = client.post("/api/containers/nope/actions/start", headers=bearer(token))
    assert action.status_code == 404
    unknown = client.post("/api/containers/nope/actions/explode", headers=bearer(token))
    assert unknown.status_code == 404 and unknown.is_json


def test_actions_follow_the_lifecycle(app: Flask, client: FlaskClient, token: str,
                                      settings: Settings) -> None:  # fmt: skip
    pending = add_container(app)
    for action in ("start", "stop", "reboot", "retry", "resync"):
        response = client.post(f"/api/containers/{pending}/actions/{action}",
                               headers=bearer(token))  # fmt: skip
        assert response.status_code == 409 and response.json["field"] == "action", action
    assert _queued(settings) == 0
    failed = add_container(app, lifecycle=Lifecycle.ERROR, vmid=120, next_seq=8)
    response = client.post(f"/api/containers/{failed}/actions/retry", headers=bearer(token))
    assert response.status_code == 202
    assert response.json["job_id"].startswith(f"retry-{failed}")
    assert response.json["events_url"] == f"/ws/containers/{failed}/events?after=7"
    assert _queued(settings) == 1
    # a double click: the same action queued already is a 409 naming its job
    again = client.post(f"/api/containers/{failed}/actions/retry", headers=bearer(token))
    assert again.status_code == 409 and again.json["field"] == "action"
    assert again.json["job_id"] == response.json["job_id"]
    assert again.json["error"] == (f"a retry of this container is queued already "
                                   f"(job {response.json['job_id']})")  # fmt: skip
    assert _queued(settings) == 1
    # another action may queue behind it
    destroy = client.post(f"/api/containers/{failed}/actions/destroy", headers=bearer(token))
    assert destroy.status_code == 202 and _queued(settings) == 2


def test_a_started_action_counts_only_while_its_run_is_alive(app: Flask, settings: Settings,
                                                             client: FlaskClient,
                                                             token: str) -> None:  # fmt: skip
    """A retry started by a worker that holds the lease is running: refused.
    The same started job with no live lease (its worker died) does not block."""
    from datetime import timedelta

    from provisioner.models import Lease, utcnow
    from provisioner.queue import provisioning_queue

    failed = add_container(app, lifecycle=Lifecycle.ERROR, vmid=121)
    first = client.post(f"/api/containers/{failed}/actions/retry", headers=bearer(token)).json
    res = app.extensions["provisioner"]
    queue = provisioning_queue(res.redis, settings)
    job = queue.fetch_job(first["job_id"])
    queue.remove(job.id)
    started = queue.started_job_registry  # entries are "job id:execution id"
    res.redis.zadd(started.key, {f"{job.id}:exec1": time.time() + 60})
    with db_session(app) as session:
        session.add(Lease(container_id=failed, holder="w1", acquired_at=utcnow(),
                          expires_at=utcnow() + timedelta(seconds=60)))  # fmt: skip
    running = client.post(f"/api/containers/{failed}/actions/retry", headers=bearer(token))
    assert running.status_code == 409 and "is running already" in running.json["error"]
    with db_session(app) as session:
        lease = session.get(Lease, failed)
        lease.expires_at = utcnow() - timedelta(seconds=1)
    # no lease, but started a moment ago: its work horse may not have taken it yet
    job.started_at = utcnow()
    job.save()
    young = client.post(f"/api/containers/{failed}/actions/retry", headers=bearer(token))
    assert young.status_code == 409 and "is running already" in young.json["error"]
    job.started_at = utcnow() - timedelta(seconds=settings.lease_duration + 1)
    job.save()
    after_crash = client.post(f"/api/containers/{failed}/actions/retry", headers=bearer(token))
    assert after_crash.status_code == 202, after_crash.json
    res.redis.zrem(started.key, f"{job.id}:exec1")


def test_bad_query_parameters(app: Flask, client: FlaskClient, token: str) -> None:
    cid = add_container(app)
    for query, field in (("after=-1", "after"), ("after=abc", "after"), ("limit=0", "limit"),
                         ("limit=100000", "limit")):  # fmt: skip
        response = client.get(f"/api/containers/{cid}/events?{query}", headers=bearer(token))
        assert response.status_code == 400 and response.json["field"] == field, query
    for query, field in (("lifecycle=sleeping", "lifecycle"), ("live=maybe", "live"),
                         ("limit=x", "limit")):  # fmt: skip
        response = client.get(f"/api/containers?{query}", headers=bearer(token))
        assert response.status_code == 400 and response.json["field"] == field, query


def test_listing_tolerates_an_unreachable_node(app: Flask, client: FlaskClient,
                                               token: str) -> None:  # fmt: skip
    ready = add_container(app, vmid=130, lifecycle=Lifecycle.READY, hostname="ready-one")
    pending = add_container(app, hostname="pending-one")
    response = client.get("/api/containers", headers=bearer(token))
    assert response.status_code == 200
    found = {c["id"]: c for c in response.json["containers"]}
    assert found[ready]["lifecycle"] == "ready" and found[ready]["pve"] is None
    assert "connection failed" in found[ready]["pve_error"]
    assert found[pending]["pve_error"] is None  # nothing to ask PVE about yet
    one = client.get(f"/api/containers/{ready}", headers=bearer(token)).json
    assert one["pve_error"] and one["hostname"] == "ready-one"
    quick = client.get("/api/containers?live=false", headers=bearer(token)).json["containers"]
    assert {c["id"] for c in quick} == {ready, pending} and "pve" not in quick[0]


def test_only_administrators_change_nodes(app: Flask, client: FlaskClient) -> None:
    with db_session(app) as session:
        users.create_user(session, "operator", "operator password")
        _, secret = users.create_api_token(session, "operator", "ops")
    body = {"name": "n2", "host": "pve.example", "pve_node": "pve", "user": "root@pam",
            "password": "pw", "insecure": True, "verify": False}  # fmt: skip
    added = client.post("/api/nodes", json=body, headers=bearer(secret))
    assert added.status_code == 403 and "administrators" in added.json["error"]
    removed = client.delete(f"/api/nodes/{OFFLINE_NODE}", headers=bearer(secret))
    assert removed.status_code == 403
    assert client.get("/api/nodes", headers=bearer(secret)).status_code == 200
    with db_session(app) as session:
        assert session.scalar(select(func.count()).select_from(Node)) == 1


def test_api_answers_are_never_cached(client: FlaskClient, token: str) -> None:
    response = client.get("/api/nodes", headers=bearer(token))
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


WEIRD: list[Any] = ["a\x00b", "\u202e\u0000", "x" * 20000, 2**70, -(2**70), 1e308, [], {},
                    {"a": {"b": [1]}}, True, None, "", " ", "../../etc/passwd", "ünïcödé"]  # fmt: skip


def test_bad_hosts_are_refused_even_unverified(app: Flask, client: FlaskClient,
                                               token: str) -> None:  # fmt: skip
    for host in ("[::1", "::::", "a b", "pve..example", "[pve]"):
        response = client.post("/api/nodes", headers=bearer(token), json={
            "name": "n", "host": host, "user": "root@pam", "password": "pw", "verify": False,
            "pve_node": "pve"})  # fmt: skip
        assert response.status_code == 400 and response.json["field"] == "host", host
    added = client.post("/api/nodes", headers=bearer(token), json={
        "name": "v6", "host": "[fd00::1]", "user": "root@pam", "password": "pw",
        "verify": False, "pve_node": "pve"})  # fmt: skip
    assert added.status_code == 201 and added.json["host"] == "fd00::1"


def test_deeply_nested_json_is_a_400(client: FlaskClient, token: str) -> None:
    for path in ("/api/containers", "/api/nodes"):
        response = client.post(path, data="[" * 100_000, headers={
            **bearer(token), "Content-Type": "application/json"})  # fmt: skip
        assert response.status_code == 400, path
        assert response.json["error"] == "the body is nested too deeply"


@pytest.mark.parametrize("field", ["template", "node", "hostname", "vmid", "cores", "memory",
                                   "swap", "disk", "ip", "gateway", "bridge", "storage",
                                   "ssh_public_key", "root_password", "variables",
                                   "failure_policy"])  # fmt: skip
def test_no_input_makes_a_500(app: Flask, client: FlaskClient, token: str, field: str) -> None:
    for value in WEIRD:
        body = {**GOOD, field: value}
        response = client.post("/api/containers", json=body, headers=bearer(token))
        assert response.status_code < 500, (field, value, response.json)
        if response.status_code >= 400:
            assert response.is_json and response.json["error"], (field, value)
        nodes = client.post("/api/nodes", headers=bearer(token), json={
            "name": "n", "host": "h", "user": "root@pam", "password": "pw", "verify": False,
            "pve_node": "pve", field if field != "node" else "name": value})  # fmt: skip
        assert nodes.status_code < 500, (field, value, nodes.json)


def test_no_path_or_query_makes_a_500(app: Flask, client: FlaskClient, token: str) -> None:
    cid = add_container(app)
    for path in ("/api/templates/a%00b", "/api/nodes/a%00b", "/api/nodes/a%00b/storages",
                 "/api/containers/a%00b", f"/api/containers/{cid}/events?after=1%00",
                 "/api/containers?node=a%00b", "/api/containers?template=%00",
                 f"/api/containers/{cid}/events?after=99999999999999999999999",
                 "/api/templates/..%2F..%2Fetc", "/ws/containers/a%00b/events"):  # fmt: skip
        response = client.get(path, headers=bearer(token))
        assert 400 <= response.status_code < 500, path
        assert response.is_json, path


def test_storage_content_is_checked_before_asking_the_node(client: FlaskClient,
                                                           token: str) -> None:  # fmt: skip
    bad = client.get(f"/api/nodes/{OFFLINE_NODE}/storages?content=bogus", headers=bearer(token))
    assert bad.status_code == 400 and bad.json["field"] == "content"
    assert bad.json["error"].startswith("content must be one of rootdir, images, vztmpl")
    # a good value gets as far as the node (which is down): 502, not 400
    down = client.get(f"/api/nodes/{OFFLINE_NODE}/storages?content=rootdir",
                      headers=bearer(token))  # fmt: skip
    assert down.status_code == 502


def test_a_node_added_twice_at_once_is_a_409(app: Flask, client: FlaskClient, token: str,
                                            settings: Settings,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The other request commits between our name check and our insert."""
    import web.api_nodes
    from tests.web.conftest import add_node

    original = web.api_nodes.set_node_secret

    def racing(*args: Any, **kwargs: Any) -> Any:
        add_node(settings, "twin", "127.0.0.1", 8006)
        return original(*args, **kwargs)

    monkeypatch.setattr(web.api_nodes, "set_node_secret", racing)
    response = client.post("/api/nodes", headers=bearer(token), json={
        "name": "twin", "host": "pve.example", "user": "root@pam", "password": "pw",
        "verify": False, "pve_node": "pve"})  # fmt: skip
    assert response.status_code == 409 and response.json["field"] == "name"
    assert client.get("/api/nodes/twin", headers=bearer(token)).json["host"] == "127.0.0.1"


def test_a_node_whose_stored_settings_no_longer_pass_does_not_break_the_list(
        app: Flask, client: FlaskClient, token: str, settings: Settings) -> None:  # fmt: skip
    from tests.web.conftest import add_node

    add_node(settings, "legacy", "1.2.3", 8006)  # a host an older release let through
    add_container(app, node="legacy", lifecycle=Lifecycle.READY, vmid=130, hostname="old")
    add_node(settings, "restored", "127.0.0.1", 8006)
    with db_session(app) as session:  # a secret no loaded key decrypts (a restored backup)
        node = session.scalars(select(Node).where(Node.name == "restored")).one()
        node.secret_ciphertext = "v1:0123456789ab:AAAA"
    add_container(app, node="restored", lifecycle=Lifecycle.READY, vmid=132, hostname="lost")
    fine = add_container(app, lifecycle=Lifecycle.READY, vmid=131, hostname="fine")
    listed = client.get("/api/containers", headers=bearer(token))
    assert listed.status_code == 200
    by_name = {c["hostname"]: c for c in listed.json["containers"]}
    assert "the node's settings are unusable" in by_name["old"]["pve_error"]
    assert "the node's settings are unusable" in by_name["lost"]["pve_error"]
    assert by_name["fine"]["id"] == fine and by_name["fine"]["pve_error"]  # offline, not broken


_CT = '{"template": "nginx", "node": "' + OFFLINE_NODE + '", "hostname": "w1", '


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/containers", _CT + '"root_password": "\\ud800abcdefgh"}', "root_password"),
    ("/api/containers", _CT + '"variables": {"site_title": "a\\udfffb"}}', "variables.site_title"),
    ("/api/containers", _CT + '"variables": {"\\ud800": "x"}}', "variables"),
    ("/api/containers", '{"\\ud800": 1}', None),
    ("/api/nodes", '{"name": "n", "host": "h", "user": "root@pam", "verify": false, '
     '"pve_node": "pve", "password": "pw\\ud800"}', "password"),
    ("/api/nodes", '{"name": "n", "host": "h", "user": "root@pam", "verify": false, '
     '"pve_node": "pve", "token_id": "root@pam!t", "token_secret": ["\\udc00"]}',
     "token_secret[0]"),
])  # fmt: skip
def test_lone_surrogates_are_a_400_and_change_nothing(app: Flask, client: FlaskClient,
                                                      token: str, settings: Settings, path: str,
                                                      body: str, field: str | None) -> None:  # fmt: skip
    response = client.post(path, data=body, headers={
        **bearer(token), "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 400, response.json
    assert "not valid Unicode text" in response.json["error"]
    assert response.json.get("field") == field
    assert count_containers(app) == 0 and _queued(settings) == 0
    with db_session(app) as session:
        assert session.scalar(select(func.count()).select_from(Node)) == 1


def test_a_method_not_allowed_says_which_are(client: FlaskClient, token: str) -> None:
    for method, path in (("TRACE", "/api/containers"), ("PUT", "/api/nodes"),
                         ("DELETE", "/api/templates")):  # fmt: skip
        response = client.open(path, method=method, headers=bearer(token))
        assert response.status_code == 405 and response.is_json, (method, path)
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert "GET" in allowed and method not in allowed, (method, path)

"""Webhooks stored and sent: the secret at rest, notify() and its matching,
a delivery's attempts and log (the receiver is a function standing in for
``requests.post``; the real HTTP path is tests/pipeline/test_webhooks_e2e.py)."""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from provisioner.config import Settings
from provisioner.db import session_scope
from provisioner.models import (
    AuthKind,
    Container,
    DeliveryStatus,
    Lifecycle,
    Node,
    Webhook,
    WebhookDelivery,
)
from provisioner.secrets.box import SecretBox
from provisioner.secrets.keyfile import parse_env_keys
from provisioner.secrets.vault import rotate_all, set_container_secrets, webhook_secret
from provisioner.webhook_delivery import DeliveryFailed, attempt
from provisioner.webhook_store import (
    DELIVERY_JOB,
    Scope,
    WebhookNotFound,
    add_webhook,
    get_webhook,
    list_deliveries,
    list_webhooks,
    notify,
    remove_webhook,
    requeue_stalled,
    send_test,
    webhook_queue,
)
from provisioner.webhooks import verify_signature

ROOT_PASSWORD = "Root-Pa55word-of-web1"
KEY = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(parse_env_keys(KEY))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    env = {"PROVISIONER_DATA_DIR": str(tmp_path), "PROVISIONER_SECRET_KEY": KEY,
           "PROVISIONER_PUBLIC_URL": "https://prov.example",
           "PROVISIONER_QUEUE_NAME": f"hooks-test-{uuid.uuid4().hex[:8]}",
           "PROVISIONER_WEBHOOK_RETRY_INTERVALS": "10,30"}  # fmt: skip
    return Settings.from_env(env)


def make_container(factory: sessionmaker[Session], box: SecretBox, owner: str | None) -> str:
    cid = str(uuid.uuid4())
    with session_scope(factory) as session:
        node = Node(name=f"n-{cid[:8]}", host="h", pve_node="pve", auth_kind=AuthKind.PASSWORD,
                    pve_user="root@pam", secret_ciphertext="x")  # fmt: skip
        ct = Container(id=cid, node=node, template="nginx", hostname="web1", request={},
                       lifecycle=Lifecycle.READY, ip="198.18.0.130", owner=owner)  # fmt: skip
        set_container_secrets(box, ct, root_password=ROOT_PASSWORD)
        session.add(ct)
    return cid


def hook(factory: sessionmaker[Session], box: SecretBox, url: str = "http://127.0.0.1:9/hook",
         **kw: Any) -> tuple[int, str]:  # fmt: skip
    with session_scope(factory) as session:
        row, secret = add_webhook(session, box, url, **kw)
        return row.id, secret or kw["secret"]


def down_redis() -> Redis:
    """A Redis nobody listens on (fails at once)."""
    return Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, socket_timeout=0.5,
                 retry=Retry(NoBackoff(), 0))  # fmt: skip


class Receiver:
    """Stands in for requests.post: answers with the next status (or raises)."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, url: str, *, data: bytes, headers: dict[str, str], **kw: Any) -> Any:
        self.calls.append({"url": url, "data": data, "headers": headers, **kw})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        response = requests.Response()
        response.status_code, response.reason = answer, "Because"
        response.raw = io.BytesIO(b"")
        return response


# -- hooks ------------------------------------------------------------------------------


def test_the_secret_is_encrypted_at_rest_and_shown_once(factory: sessionmaker[Session],
                                                        box: SecretBox) -> None:  # fmt: skip
    hook_id, secret = hook(factory, box, events=["ready"], owner="alice")
    with factory() as session:
        row = session.get(Webhook, hook_id)
        assert row is not None and secret not in row.secret_ciphertext
        assert row.secret_ciphertext.startswith("v1:")
        assert webhook_secret(box, row) == secret
        assert (row.owner, row.events, row.active) == ("alice", ["ready"], True)
    given_id, given = hook(factory, box, secret="a-secret-of-my-own-choice")
    with factory() as session:
        row = session.get(Webhook, given_id)
        assert row is not None and webhook_secret(box, row) == given
    with session_scope(factory) as session:
        assert rotate_all(session, box).current >= 2  # rotation knows webhook secrets


def test_scopes_see_their_own_hooks(factory: sessionmaker[Session], box: SecretBox) -> None:
    mine, _ = hook(factory, box, owner="alice")
    theirs, _ = hook(factory, box, owner="bob")
    everyone, _ = hook(factory, box)
    with factory() as session:
        assert [h.id for h in list_webhooks(session)] == [mine, theirs, everyone]
        assert [h.id for h in list_webhooks(session, Scope("alice"))] == [mine]
        with pytest.raises(WebhookNotFound):
            get_webhook(session, theirs, Scope("alice"))
        with pytest.raises(WebhookNotFound):
            get_webhook(session, everyone, Scope("alice"))
    with session_scope(factory) as session:
        with pytest.raises(WebhookNotFound):
            remove_webhook(session, theirs, Scope("alice"))
        remove_webhook(session, mine, Scope("alice"))
    with factory() as session:
        assert [h.id for h in list_webhooks(session)] == [theirs, everyone]


def test_bad_input_stores_nothing(factory: sessionmaker[Session], box: SecretBox) -> None:
    from provisioner.errors import ConfigError

    with session_scope(factory) as session:
        for kw, field in (({"url": "https://u:p@h/x"}, "url"),
                          ({"url": "http://h/", "events": ["done"]}, "events"),
                          ({"url": "http://h/", "owner": "no spaces"}, "owner"),
                          ({"url": "http://h/", "secret": "short"}, "secret")):  # fmt: skip
            with pytest.raises(ConfigError, match=f"^{field}: "):
                add_webhook(session, box, **kw)
    with factory() as session:
        assert list_webhooks(session) == []


# -- notify ------------------------------------------------------------------------------


def test_notify_makes_one_delivery_per_matching_hook_and_no_secret(
        factory: sessionmaker[Session], box: SecretBox, settings: Settings,
        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    cid = make_container(factory, box, owner="alice")
    everyone, _ = hook(factory, box)
    alices, _ = hook(factory, box, owner="alice", events=["ready"])
    hook(factory, box, owner="bob")  # not bob's container
    hook(factory, box, owner="alice", events=["error"])  # not this event
    with caplog.at_level(logging.WARNING, logger="provisioner.webhook_store"):
        ids = notify(factory, down_redis(), settings, cid, "ready",
                     f"CT 104 is ready at 198.18.0.130 (root password {ROOT_PASSWORD})", box=box)  # fmt: skip
    assert len(ids) == 2
    assert "stays pending" in caplog.text  # Redis was away: logged, not raised
    with factory() as session:
        rows = [session.get(WebhookDelivery, i) for i in ids]
        assert sorted(r.webhook_id for r in rows if r) == sorted([everyone, alices])
        for row in rows:
            assert row is not None and row.status == DeliveryStatus.PENDING and row.attempts == 0
            text = json.dumps(row.payload)
            assert ROOT_PASSWORD not in text
            assert row.payload["links"]["api"] == f"https://prov.example/api/containers/{cid}"
            assert row.payload["container"]["owner"] == "alice"
            assert row.payload["message"].startswith("CT 104 is ready at 198.18.0.130")
    # a container nobody owns: only the global hook
    other = make_container(factory, box, owner=None)
    assert len(notify(factory, down_redis(), settings, other, "ready", box=box)) == 1
    with pytest.raises(ValueError, match="unknown webhook event"):
        notify(factory, down_redis(), settings, cid, "done")
    with pytest.raises(LookupError):
        notify(factory, down_redis(), settings, str(uuid.uuid4()), "ready")


def test_notify_queues_one_job_carrying_only_the_delivery_id(
        factory: sessionmaker[Session], box: SecretBox, settings: Settings,
        redis: Redis) -> None:  # fmt: skip
    cid = make_container(factory, box, owner=None)
    _, secret = hook(factory, box)
    queue = webhook_queue(redis, settings)
    try:
        (delivery_id,) = notify(factory, redis, settings, cid, "error", "create failed", box=box)
        (job,) = queue.get_jobs()
        assert job.func_name == DELIVERY_JOB and job.args == (delivery_id,) and not job.kwargs
        assert job.id == f"webhook-{delivery_id}"
        assert job.retries_left == 2 and job.retry_intervals == [10, 30]
        assert secret not in json.dumps(job.to_dict(), default=str)
        # a pending delivery with its job is not queued twice by the recovery pass
        assert requeue_stalled(factory, redis, settings, grace=-60) == []
        queue.empty()
        assert requeue_stalled(factory, redis, settings, grace=-60) == [delivery_id]
        assert [j.args for j in queue.get_jobs()] == [(delivery_id,)]
    finally:
        queue.delete(delete_jobs=True)


# -- attempts ----------------------------------------------------------------------------


def test_an_attempt_signs_posts_and_logs_delivered(factory: sessionmaker[Session],
                                                   box: SecretBox, settings: Settings) -> None:  # fmt: skip
    cid = make_container(factory, box, owner=None)
    hook_id, secret = hook(factory, box, url="https://hooks.example/p/ath-token?x=1")
    (delivery_id,) = notify(factory, down_redis(), settings, cid, "ready", "ready", box=box)
    receiver = Receiver(204)
    result = attempt(factory, settings, box, delivery_id, wait=10, post=receiver)
    assert result == "delivered to https://hooks.example: HTTP 204 (attempt 1)"
    (call,) = receiver.calls
    assert call["url"] == "https://hooks.example/p/ath-token?x=1"
    assert call["allow_redirects"] is False and call["timeout"] == (10.0, 10.0)
    headers = call["headers"]
    assert verify_signature(secret, call["data"], headers["X-Provisioner-Signature"])
    assert headers["X-Provisioner-Event"] == "ready"
    assert headers["X-Provisioner-Delivery"] == delivery_id
    assert json.loads(call["data"])["id"] == delivery_id
    with factory() as session:
        d = session.get(WebhookDelivery, delivery_id)
        assert d is not None and d.status == DeliveryStatus.DELIVERED and d.attempts == 1
        assert d.last_status_code == 204 and d.last_error is None and d.delivered_at
        assert [h["status_code"] for h in d.history] == [204]
        assert [x.id for x in list_deliveries(session, webhook_id=hook_id)] == [delivery_id]
        assert [x.id for x in list_deliveries(session, container_id=cid)] == [delivery_id]
    # a delivered one is not sent again (a duplicate job)
    assert attempt(factory, settings, box, delivery_id, wait=None, post=Receiver()).startswith(
        "nothing to do"
    )


def test_failed_attempts_are_logged_retried_then_given_up(factory: sessionmaker[Session],
                                                          box: SecretBox, settings: Settings) -> None:  # fmt: skip
    cid = make_container(factory, box, owner=None)
    _, secret = hook(factory, box, url="http://127.0.0.1:9/secret-path")
    (delivery_id,) = notify(factory, down_redis(), settings, cid, "error", "failed", box=box)
    refused = requests.ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: "
        "/secret-path (Caused by NewConnectionError(': Failed to establish a new connection: "
        "[Errno 111] Connection refused'))")  # fmt: skip
    receiver = Receiver(500, refused, 404)
    with pytest.raises(DeliveryFailed) as first:
        attempt(factory, settings, box, delivery_id, wait=10, post=receiver)
    assert str(first.value).endswith("to http://127.0.0.1:9 failed: HTTP 500 Because; "
                                     "retrying in 10 s")  # fmt: skip
    with factory() as session:
        d = session.get(WebhookDelivery, delivery_id)
        assert d is not None and d.status == DeliveryStatus.PENDING and d.attempts == 1
        assert d.next_attempt_at is not None and d.last_status_code == 500
    with pytest.raises(DeliveryFailed) as second:
        attempt(factory, settings, box, delivery_id, wait=30, post=receiver)
    assert "connection failed: Connection refused; retrying in 30 s" in str(second.value)
    with pytest.raises(DeliveryFailed) as last:
        attempt(factory, settings, box, delivery_id, wait=None, post=receiver)
    assert str(last.value).endswith("HTTP 404 Because; giving up after 3 attempts")
    for exc in (first, second, last):
        assert secret not in str(exc.value) and "secret-path" not in str(exc.value)
    with factory() as session:
        d = session.get(WebhookDelivery, delivery_id)
        assert d is not None and d.status == DeliveryStatus.FAILED and d.attempts == 3
        assert d.next_attempt_at is None and d.delivered_at is None
        assert [(h["attempt"], h["status_code"], h["error"]) for h in d.history] == [
            (1, 500, "HTTP 500 Because"), (2, None, "connection failed: Connection refused"),
            (3, 404, "HTTP 404 Because")]  # fmt: skip
    assert len(receiver.calls) == 3
    assert all(verify_signature(secret, c["data"], c["headers"]["X-Provisioner-Signature"])
               for c in receiver.calls)  # each attempt signed anew  # fmt: skip


def test_a_redirect_is_not_followed_and_a_removed_hook_sends_nothing(
        factory: sessionmaker[Session], box: SecretBox, settings: Settings) -> None:  # fmt: skip
    cid = make_container(factory, box, owner=None)
    hook_id, _ = hook(factory, box)
    (delivery_id,) = notify(factory, down_redis(), settings, cid, "ready", None, box=box)
    with pytest.raises(DeliveryFailed, match=r"HTTP 302 Because \(redirects are not followed\)"):
        attempt(factory, settings, box, delivery_id, wait=10, post=Receiver(302))
    with session_scope(factory) as session:
        remove_webhook(session, hook_id)
    assert "is gone" in attempt(factory, settings, box, delivery_id, wait=None, post=Receiver())
    with factory() as session:
        assert session.scalars(select(WebhookDelivery)).all() == []


def test_a_ping_goes_to_one_hook(factory: sessionmaker[Session], box: SecretBox,
                                 settings: Settings) -> None:  # fmt: skip
    hook_id, secret = hook(factory, box)
    with factory() as session:
        row = session.get(Webhook, hook_id)
        assert row is not None
        with pytest.raises(RedisError):  # Redis away: stored, and the caller is told
            send_test(session, down_redis(), settings, row)
    with factory() as session:
        (d,) = session.scalars(select(WebhookDelivery)).all()
        assert d.event == "ping" and d.container_id is None and d.payload["container"] is None
        delivery_id = d.id
    receiver = Receiver(200)
    attempt(factory, settings, box, delivery_id, wait=10, post=receiver)
    assert receiver.calls[0]["headers"]["X-Provisioner-Event"] == "ping"
    assert verify_signature(secret, receiver.calls[0]["data"],
                            receiver.calls[0]["headers"]["X-Provisioner-Signature"])  # fmt: skip


def test_the_sandbox_expiry_round_sends_expiring_then_expired(
        factory: sessionmaker[Session], box: SecretBox, settings: Settings,
        redis: Redis) -> None:  # fmt: skip
    """The expiry round (``provisioner.sandbox_expiry.sweep``) tells the
    owner's hooks: ``expiring`` once, a day before; ``expired`` at the end."""
    from datetime import timedelta

    from provisioner.models import Sandbox, utcnow
    from provisioner.queue import provisioning_queue
    from provisioner.sandbox_expiry import sweep

    cid = make_container(factory, box, owner="alice")
    now = utcnow()
    with session_scope(factory) as session:
        session.add(Sandbox(container_id=cid, client="acme", source_url="https://acme.example",
                            source_user="u", source_secret_ciphertext="x",
                            expires_at=now + timedelta(hours=2), summary={}))  # fmt: skip
    hook(factory, box, owner="alice", events=["expiring", "expired"])
    hook(factory, box, owner="bob")
    queues = [webhook_queue(redis, settings), provisioning_queue(redis, settings)]
    try:
        assert sweep(settings, factory, redis, now) == (1, 0)
        assert sweep(settings, factory, redis, now) == (0, 0)  # warned once
        assert sweep(settings, factory, redis, now + timedelta(hours=3)) == (0, 1)
        with factory() as session:
            rows = list_deliveries(session, container_id=cid)
        assert [d.event for d in reversed(rows)] == ["expiring", "expired"]
        assert rows[1].payload["message"].startswith("expiring: sandbox web1 of client acme")
        assert rows[0].payload["message"].startswith("expired: sandbox web1 of client acme")
        assert {j.args for j in queues[0].get_jobs()} == {(d.id,) for d in rows}
    finally:
        for queue in queues:
            queue.delete(delete_jobs=True)

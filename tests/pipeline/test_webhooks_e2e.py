"""Webhooks end to end: real workers (`provisioner worker`), Redis, the
simulator's containers and a real HTTP receiver on 127.0.0.1 that checks
every signature with the hook's secret (tests/pipeline/receiver.py).

The workers get short retry waits (PROVISIONER_WEBHOOK_RETRY_INTERVALS=1,1,1)
so that a retried delivery is sent again within seconds by RQ's scheduler.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from provisioner.db import session_scope
from provisioner.models import Container, DeliveryStatus, Lifecycle, Node, WebhookDelivery
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import container_root_password
from provisioner.webhook_store import add_webhook, notify
from tests.pipeline.conftest import NODE, Stack
from tests.pipeline.receiver import Receiver, receiver
from tests.pvesim.helpers import admin, token_api

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SECRET = "whsec_e2e_receiver_secret_0123456789"
FAST_RETRIES = {"PROVISIONER_WEBHOOK_RETRY_INTERVALS": "1,1,1",
                "PROVISIONER_PUBLIC_URL": "https://provisioner.example"}  # fmt: skip


@pytest.fixture
def hooked(stack: Stack) -> Iterator[tuple[Stack, Receiver]]:
    """The stack with short retry waits, a receiver and one global hook to it
    (removed after the test, with the workers stopped)."""
    saved = dict(stack.env)
    stack.env.update(FAST_RETRIES)
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    with receiver() as got:
        got.secret = SECRET
        with session_scope(stack.factory) as session:
            hook, _ = add_webhook(session, box, got.url, secret=SECRET)
            hook_id = hook.id
        try:
            yield stack, got
        finally:
            stack.stop_workers()
            stack.env = saved
            from provisioner.webhook_store import remove_webhook

            with session_scope(stack.factory) as session:
                remove_webhook(session, hook_id)


def deliveries(stack: Stack, container_id: str | None = None) -> list[WebhookDelivery]:
    with stack.factory() as session:
        query = select(WebhookDelivery).order_by(WebhookDelivery.created_at)
        if container_id is not None:
            query = query.where(WebhookDelivery.container_id == container_id)
        rows = list(session.scalars(query))
        for row in rows:
            session.expunge(row)
        return rows


def settled(stack: Stack, delivery_id: str, timeout: float = 30) -> WebhookDelivery:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stack.factory() as session:
            row = session.get(WebhookDelivery, delivery_id)
            if row is not None and row.status != DeliveryStatus.PENDING:
                session.expunge(row)
                return row
        time.sleep(0.1)
    raise AssertionError(f"delivery {delivery_id} still pending; {stack.worker_logs()[-3000:]}")


def test_a_ready_container_is_delivered_once_signed(hooked: tuple[Stack, Receiver],
                                                    cleanup: Callable[[str], str]) -> None:  # fmt: skip
    stack, got = hooked
    stack.start_workers(1)
    cid = cleanup(stack.submit("lines", "hook-ready", variables={"count": 1}, owner="alice"))
    ct = stack.wait(cid, timeout=180)
    assert ct.lifecycle == Lifecycle.READY, (ct.error_message, stack.worker_logs()[-3000:])
    (request,) = got.wait_for(1, what="(the ready event)")
    assert request.signature_ok and request.event == "ready" and request.path == "/hook"
    payload = request.payload
    assert payload["container"] == {"id": cid, "hostname": "hook-ready", "template": "lines",
                                    "lifecycle": "ready", "ip": ct.ip, "environment": None,
                                    "owner": "alice", "node": NODE}  # fmt: skip
    assert payload["message"] == f"CT {ct.vmid} is ready at {ct.ip}"
    assert payload["links"]["api"] == f"https://provisioner.example/api/containers/{cid}"
    assert request.headers["X-Provisioner-Delivery"] == payload["id"]
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    root_password = container_root_password(box, ct)
    assert root_password and root_password not in request.body.decode()
    (logged,) = deliveries(stack, cid)
    logged = settled(stack, logged.id)
    assert logged.id == payload["id"] and logged.status == DeliveryStatus.DELIVERED
    assert (logged.attempts, logged.last_status_code, logged.last_error) == (1, 200, None)
    assert len(got.received) == 1  # once: no duplicate
    # the job carried the delivery's id only; the secret is in no log line
    assert SECRET not in stack.worker_logs()


def test_a_failing_receiver_gets_the_delivery_again_until_it_answers(
        hooked: tuple[Stack, Receiver]) -> None:  # fmt: skip
    """500, 500, then 200: three attempts in the log, then delivered (the
    expiry of sandboxes calls notify() as this test does)."""
    stack, got = hooked
    got.answers = [500, 500]
    with session_scope(stack.factory) as session:
        node = session.scalars(select(Node).where(Node.name == NODE)).one()
        ct = Container(node=node, template="lines", hostname="hook-expiring", request={},
                       lifecycle=Lifecycle.READY, owner="bob")  # fmt: skip
        session.add(ct)
        session.flush()
        cid = ct.id
    settings = stack.settings.__class__.from_env(environ=stack.env)
    stack.start_workers(1)
    (delivery_id,) = notify(stack.factory, stack.redis, settings, cid, "expiring",
                            "hook-expiring expires in 1 hour")  # fmt: skip
    requests = got.wait_for(3, timeout=60, what="(500, 500, 200)")
    assert [r.status for r in requests] == [500, 500, 200]
    assert all(r.signature_ok and r.event == "expiring" for r in requests)
    assert {r.headers["X-Provisioner-Delivery"] for r in requests} == {delivery_id}
    # every attempt signed anew, the body the same
    assert len({r.headers["X-Provisioner-Signature"] for r in requests}) >= 2
    assert len({r.body for r in requests}) == 1
    logged = settled(stack, delivery_id)
    assert logged.status == DeliveryStatus.DELIVERED and logged.attempts == 3
    assert [(h["attempt"], h["status_code"]) for h in logged.history] == [
        (1, 500), (2, 500), (3, 200)]  # fmt: skip
    assert logged.history[0]["error"] == "HTTP 500 Internal Server Error"


def test_a_failed_run_sends_its_error(hooked: tuple[Stack, Receiver],
                                      cleanup: Callable[[str], str]) -> None:  # fmt: skip
    stack, got = hooked
    taken = {int(c["vmid"]) for c in token_api(stack.sim).nodes(stack.sim["node"]).lxc.get()}
    vmid = random.choice(sorted(set(range(9200, 9300)) - taken))
    error = f"unable to create CT {vmid} - injected for the webhook test"
    admin(stack.sim, "task", {"type": "vzcreate", "vmid": vmid, "error": error})
    try:
        stack.start_workers(1)
        cid = cleanup(stack.submit("lines", "hook-error", vmid=vmid, variables={"count": 1}))
        ct = stack.wait(cid, timeout=120)
        assert ct.lifecycle == Lifecycle.ERROR, ct.error_message
        (request,) = got.wait_for(1, what="(the error event)")
    finally:
        admin(stack.sim, "faults", method="DELETE")
    assert request.signature_ok and request.event == "error"
    payload = request.payload
    assert payload["container"]["id"] == cid and payload["container"]["lifecycle"] == "error"
    assert payload["container"]["owner"] is None  # nobody's: the global hook hears it
    assert payload["message"].startswith("create failed:") and error in payload["message"]
    (logged,) = deliveries(stack, cid)
    assert settled(stack, logged.id).status == DeliveryStatus.DELIVERED
    assert json.loads(request.body)["id"] == logged.id

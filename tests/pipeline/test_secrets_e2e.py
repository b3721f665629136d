"""Secrets stay secret: provision with known secrets, then search the worker
logs, the events (database and Redis), the database file and every Redis key
for them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from provisioner.events import EventReader
from provisioner.models import Lifecycle
from tests.pipeline.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def redis_dump(stack: Stack) -> bytes:
    """Every value Redis holds, whatever its type."""
    out = []
    for key in stack.redis.scan_iter(count=1000):
        kind = stack.redis.type(key)
        if kind == b"string":
            out.append(stack.redis.get(key) or b"")
        elif kind == b"hash":
            out += [k + v for k, v in stack.redis.hgetall(key).items()]
        elif kind == b"list":
            out += stack.redis.lrange(key, 0, -1)
        elif kind == b"set":
            out += list(stack.redis.smembers(key))
        elif kind == b"zset":
            out += [m for m, _ in stack.redis.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            out += [b"".join(f.values()) for _i, f in stack.redis.xrange(key)]
    return b"\n".join(out)


def test_known_secrets_appear_nowhere(stack: Stack, cleanup: Callable[[str], str]) -> None:
    root_password = f"RootPw{uuid.uuid4().hex}"
    redis_password = f"RedisPw{uuid.uuid4().hex}"
    stack.start_workers(1)
    try:
        cid = cleanup(stack.submit("redis", "secret-e2e", root_password=root_password,
                                   variables={"redis_password": redis_password}))  # fmt: skip
        ct = stack.wait(cid, timeout=600)
    finally:
        stack.stop_workers()
    assert ct.lifecycle == Lifecycle.READY, ct.error_message
    secrets = {
        "root password": root_password.encode(),
        "template secret": redis_password.encode(),
        "PVE token secret": stack.sim["token_secret"].encode(),
        "SSH private key": b"OPENSSH PRIVATE KEY",
    }
    events = list(EventReader(stack.redis, stack.factory, cid).events(0, follow=False))
    places = {
        "worker logs": stack.worker_logs().encode(),
        "events": "\n".join(e.to_json() for e in events).encode(),
        "database file": b"".join(
            p.read_bytes() for p in Path(stack.settings.data_dir).glob("provisioner.db*")
        ),
        "redis": redis_dump(stack),
    }
    assert len(places["events"]) > 1000 and places["database file"] and places["redis"]
    for where, blob in places.items():
        for what, secret in secrets.items():
            assert secret not in blob, f"the {what} leaked into the {where}"

"""End to end: real workers, Redis, the simulator's containers; on SQLite
and on PostgreSQL."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest

from provisioner.events import EventReader
from provisioner.models import Lifecycle
from tests.databases import BOTH
from tests.pipeline.conftest import Stack
from tests.pipeline.test_resilience import assert_database_is_the_stream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600), BOTH]


def test_nginx_static_ip_to_ready(stack: Stack, cleanup: Callable[[str], str]) -> None:
    stack.start_workers(1)
    ip = stack.address(100)
    cid = cleanup(stack.submit("nginx", "web-e2e", ip=f"{ip}/24", gateway=stack.sim["gateway"],
                               variables={"site_title": "Hello from e2e"}))  # fmt: skip
    ct = stack.wait(cid)
    assert ct.lifecycle == Lifecycle.READY, (ct.error_message, stack.worker_logs()[-3000:])
    assert ct.ip == ip and ct.vmid and ct.ssh_host_key_fingerprint.startswith("SHA256:")
    assert ct.finished_phases == ["create", "start", "deploy", "scripts", "finalize"]
    assert any(s["port"] == 80 for s in ct.services)
    with urllib.request.urlopen(f"http://{ip}/", timeout=10) as resp:
        assert "Hello from e2e" in resp.read().decode()
    events = list(EventReader(stack.redis, stack.factory, cid).events(0, follow=False))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "complete" and events[-1].outcome == "ready"
    assert {e.phase for e in events if e.type == "step"} == {
        "create", "start", "deploy", "scripts", "finalize"}  # fmt: skip
    assert ct.next_seq == len(events) + 1
    assert_database_is_the_stream(stack, cid)

"""kill -9 of the worker in the middle of a promote, on a stack of its own
(a source and its clone made here), so no other test's state plays into it:
the run is handed on and the source ends promoted in full or as it was,
never half."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from provisioner.models import Lifecycle
from tests.pipeline.conftest import Stack
from tests.pipeline.test_changes import (  # noqa: F401 - the module's fixtures
    MADE,
    api,
    ct,
    env_stack,
    messages_after,
    rows,
    ssh_run,
    state,
    terminal_after,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def staging(env_stack: Stack, api: Callable[..., Any], ct: str) -> str:  # noqa: F811
    answer = api("POST", f"/containers/{ct}/clone", {"hostname": "crash-staging"})
    assert answer.status_code == 201, answer.json
    cid: str = answer.json["id"]
    MADE.append(cid)
    done = env_stack.wait(cid, timeout=300)
    assert done.lifecycle == Lifecycle.READY, done.error_message
    return cid


def test_a_worker_killed_mid_promote_never_leaves_the_source_half_promoted(
        env_stack: Stack, api: Callable[..., Any], ct: str, staging: str) -> None:  # noqa: F811  # fmt: skip
    stack = env_stack
    before, theirs = state(stack, ct), rows(stack, staging)
    ssh_run(stack, stack.container(ct), "touch /root/slow-import")
    answer = api("POST", f"/containers/{staging}/promote")
    assert answer.status_code == 202, answer.json
    after = int(answer.json["events_url"].partition("after=")[2] or 0)
    deadline = time.monotonic() + 60
    while not any("exporting" in m for _t, m in messages_after(stack, ct, after)):
        assert time.monotonic() < deadline, stack.worker_logs()[-3000:]
        time.sleep(0.1)
    stack.kill_worker(0)
    stack.workers.pop(0)
    ssh_run(stack, stack.container(ct), "rm -f /root/slow-import")
    stack.start_workers(1)
    end = terminal_after(stack, ct, after, timeout=300)
    stack.wait(ct)
    kinds = [t for t, _m in messages_after(stack, ct, after)]
    assert "recovering" in kinds, kinds
    # either promoted in full or as it was: never half
    if end.outcome == "done":
        assert rows(stack, ct)[: -0 or None] and rows(stack, ct)[-1] == theirs[-1]
    else:
        assert end.outcome == "rolled-back" and state(stack, ct) == before, end.message
    assert stack.container(ct).safe_change is None

"""The worker's command listener stops at once, against a real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from redis import Redis
from rq import Queue

from provisioner.worker import PUBSUB_WAIT, ProvisioningWorker


def _until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_stopping_does_not_wait_a_minute_for_the_pubsub_thread(redis: Redis) -> None:
    """The race RQ's worker loses now and then, forced: its pubsub thread
    reads the reply to UNSUBSCRIBE before it is told to stop, and waits for
    a new subscription (RQ's own: 60 s, which stopping waited out)."""
    worker = ProvisioningWorker([Queue(f"stop-{uuid.uuid4().hex[:8]}", connection=redis)],
                                connection=redis)  # fmt: skip
    worker.subscribe()
    pubsub, thread = worker.pubsub, worker.pubsub_thread
    assert pubsub is not None and thread is not None
    _until(lambda: pubsub.subscribed, "the worker never subscribed to its channel")
    pubsub.unsubscribe()
    _until(lambda: not pubsub.subscribed, "the pubsub thread never read the reply")
    began = time.monotonic()
    worker.unsubscribe()  # what the worker does when it stops
    took = time.monotonic() - began
    assert took < PUBSUB_WAIT + 1.5, f"stopping waited {took:.1f} s for the pubsub thread"
    thread.join(PUBSUB_WAIT + 1)
    assert not thread.is_alive()

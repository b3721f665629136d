"""The worker's command listener stops at once, against a real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
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


def test_the_retry_scheduler_queues_a_retry_once_its_wait_is_over(redis: Redis) -> None:
    """RQ's scheduler in a thread of the worker (no process of its own):
    a job scheduled for later is on its queue within a second of its time;
    a second scheduler of the same queues waits for the first one's lock and
    takes it over when the first stops."""
    from datetime import timedelta

    from provisioner.worker import RetryScheduler

    queue = Queue(f"retry-{uuid.uuid4().hex[:8]}", connection=redis)
    job = queue.enqueue_in(timedelta(seconds=1), "provisioner.webhook_delivery.deliver", "d-1")
    first = RetryScheduler([queue], redis, interval=0.2)
    second = RetryScheduler([queue], redis, interval=0.2)
    first.start()
    second.start()
    try:
        _until(lambda: job.id in queue.get_job_ids(), "the scheduled job was never queued", 10)
        assert queue.get_job_ids() == [job.id]
        # one of them holds the queue's lock, the other waits for it
        holders = [s.scheduler.acquired_locks for s in (first, second)]
        assert sorted(holders, key=len) == [set(), {queue.name}]
        # the holder stops (its worker does): the other takes over at once,
        # not after RQ's two minutes
        holder, other = (first, second) if first.scheduler.acquired_locks else (second, first)
        holder.stop()
        _until(lambda: other.scheduler.acquired_locks == {queue.name}, "no takeover", 5)
    finally:
        first.stop()
        second.stop()
        queue.delete(delete_jobs=True)
    assert not first._thread.is_alive() and not second._thread.is_alive()


def test_a_heartbeat_redis_does_not_take_is_skipped(redis: Redis,
                                                    caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """A Redis failing over (or restarting) while a work horse runs: the
    worker's heartbeat fails, and the worker goes on (RQ's quits, and its
    work horse with it)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from rq.executions import Execution
    from rq.job import Job
    from rq.utils import now

    queue = Queue(f"heartbeat-{uuid.uuid4().hex[:8]}", connection=redis)
    worker = ProvisioningWorker([queue], connection=redis)
    away = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    job = Job.create("provisioner.webhook_delivery.deliver", args=("d-1",), connection=away)
    job.started_at = now()
    worker.connection = away  # Redis goes away while the work horse runs
    try:
        worker.maintain_heartbeats(job, Execution("e-1", job.id, connection=away))
    finally:
        away.close()
    assert "heartbeat skipped, Redis does not answer (ConnectionError" in caplog.text

"""The RQ worker that ``provisioner worker`` runs.

RQ's worker listens for commands (shutdown, kill-horse, stop-job) on a pubsub
channel, in a thread that waits up to 60 s for a message.  To stop, RQ sends
UNSUBSCRIBE and then stops the thread, and since redis-py 8.2 stopping
waits for the thread to end.  When the thread reads the reply to
UNSUBSCRIBE before it is told to stop (the main thread lost the race for
the GIL), it loops and waits, no longer subscribed, its full 60 s for a
subscription that never comes: now and then an idle worker took a minute
to stop.  Here the thread waits at most a second at a time.

RQ's scheduler (which puts a job back on its queue when its ``Retry``
interval is over: webhook deliveries) runs in a thread of the worker,
:class:`RetryScheduler`, not in the process ``work(with_scheduler=True)``
would fork: a worker's only child stays its work horse, which is what the
work-horse-killed hook and the operators' ``kill`` rely on.

While a work horse runs, the worker writes a heartbeat to Redis now and
then; RQ's worker quits (and its work horse with it) when one fails.  A
Redis that fails over (Sentinel) or restarts is away for seconds: the
heartbeat is skipped then, and the run goes on.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from redis import Redis
from redis import exceptions as redis_errors
from rq import Queue, Worker
from rq.scheduler import RQScheduler

log = logging.getLogger(__name__)

PUBSUB_WAIT = 1.0  # seconds the pubsub thread waits at a time: what stopping may wait for it


class ProvisioningWorker(Worker):
    """RQ's worker, whose command listener stops within a second."""

    def subscribe(self) -> None:
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        # (RQ declares the attribute as None only)
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=PUBSUB_WAIT, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def maintain_heartbeats(self, job: Any, execution: Any) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            # the next tick tries again; the run must not end with the worker
            self.log.warning("Worker %s: heartbeat skipped, Redis does not answer (%s: %s)",
                             self.name, type(exc).__name__, exc)  # fmt: skip


class RetryScheduler:
    """RQ's scheduler for ``queues`` in a thread: every ``interval`` seconds
    it renews its lock (one scheduler per queue among all workers; another
    worker's takes over when this one stops) and queues the jobs whose
    retry wait is over."""

    def __init__(self, queues: list[Queue], connection: Redis, interval: float = 1.0) -> None:
        self.interval = interval
        self.scheduler = RQScheduler(queues, connection=connection, interval=1,
                                     logging_level=logging.getLogger().level)  # fmt: skip
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rq-scheduler")

    def _tick(self) -> None:
        # RQ tries again for a lock held elsewhere every 2 minutes only; a
        # stopped worker's lock is gone (or a dead one's expires) sooner
        if self.scheduler.should_reacquire_locks or not self.scheduler.acquired_locks:
            self.scheduler.acquire_locks()
        self.scheduler.heartbeat()
        if self.scheduler.acquired_locks:
            self.scheduler.enqueue_scheduled_jobs()

    def _run(self) -> None:
        registered = False
        while not self._stop.is_set():
            try:
                if not registered:
                    self.scheduler.register_birth()
                    registered = True
                self._tick()
            except Exception:  # Redis is away: try again next time
                log.warning("the retry scheduler's pass failed", exc_info=True)
            self._stop.wait(self.interval)
        try:
            self.scheduler.stop()  # its locks go: another worker's scheduler takes over
        except Exception:
            log.warning("the retry scheduler did not release its locks", exc_info=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

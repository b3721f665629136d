"""The RQ worker that ``provisioner worker`` runs.

RQ's worker listens for commands (shutdown, kill-horse, stop-job) on a pubsub
channel, in a thread that waits up to 60 s for a message.  To stop, RQ sends
UNSUBSCRIBE and then stops the thread, and since redis-py 8.2 stopping
waits for the thread to end.  When the thread reads the reply to
UNSUBSCRIBE before it is told to stop (the main thread lost the race for
the GIL), it loops and waits, no longer subscribed, its full 60 s for a
subscription that never comes: now and then an idle worker took a minute
to stop.  Here the thread waits at most a second at a time.
"""

from __future__ import annotations

from rq import Worker

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

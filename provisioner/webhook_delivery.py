"""The RQ job that sends one webhook delivery: ``deliver(delivery_id)``.

One attempt per run of the job: the stored payload is signed now (a fresh
``t``, so a retried delivery passes a receiver's tolerance), POSTed with
the settings' timeout and no redirects followed, and the attempt is
written to the delivery log (status code or error, when, how long).  A 2xx
answer delivers it; anything else fails the attempt, and the job raises so
that RQ retries it after the next of the settings' intervals (its
``Retry``); after the last attempt the delivery is ``failed``.

Neither the secret nor the URL's path is ever in a log line or an
exception: errors name the receiver by its origin (scheme, host, port).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from rq import get_current_job
from sqlalchemy.orm import Session, sessionmaker

from provisioner.config import Settings
from provisioner.db import make_engine, session_factory, session_scope
from provisioner.logsafe import redact, setup_logging
from provisioner.models import DeliveryStatus, WebhookDelivery, utcnow
from provisioner.secrets.box import SecretBox
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import webhook_secret
from provisioner.webhooks import encode_body, iso_utc, signed_headers

log = logging.getLogger(__name__)

MAX_HISTORY = 50  # attempts kept in a delivery's log (the settings allow at most 21)
Post = Callable[..., Any]  # requests.post's shape: tests may pass their own


class DeliveryFailed(Exception):
    """One attempt failed (RQ retries the job while it has retries left)."""


def origin(url: str) -> str:
    """``https://host:port``: how errors and logs name a receiver (a URL's
    path or query may hold a token of the receiver's)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def _connection_reason(exc: requests.RequestException) -> str:
    """``Connection refused``, ``Name or service not known``, ... from
    urllib3's nested message (which repeats the URL's path: not shown)."""
    text = str(exc)
    found = _ERRNO.search(text)
    if found:
        return found.group(0).split("] ", 1)[1].strip()
    if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification failed"
    return type(exc).__name__


def send(url: str, body: bytes, headers: dict[str, str], timeout: float,
         post: Post = requests.post) -> tuple[int | None, str | None]:  # fmt: skip
    """POST once: (the status code or None, the error or None when 2xx)."""
    try:
        response = post(url, data=body, headers=headers, timeout=(timeout, timeout),
                        allow_redirects=False, stream=True)  # fmt: skip
    except requests.Timeout:
        return None, f"timed out after {timeout:g} s"
    except requests.ConnectionError as exc:
        return None, f"connection failed: {_connection_reason(exc)}"
    except requests.RequestException as exc:
        return None, f"request failed: {type(exc).__name__}"
    code = int(response.status_code)
    reason = str(response.reason or "").strip()[:100]
    response.close()  # the body is not read: a receiver's answer is its status
    if 200 <= code < 300:
        return code, None
    status = redact(f"HTTP {code} {reason}".strip())
    if 300 <= code < 400:
        return code, f"{status} (redirects are not followed)"
    return code, status


def attempt(factory: sessionmaker[Session], settings: Settings, box: SecretBox,
            delivery_id: str, wait: int | None, post: Post = requests.post) -> str:  # fmt: skip
    """One attempt of a delivery, written to its log.

    Args:
        wait: seconds until RQ tries again if this attempt fails; None: this
            is the last attempt.

    Returns:
        What happened, in a line (the job's result).

    Raises:
        DeliveryFailed: the attempt failed (the message names the
            receiver's origin and the cause, never the secret).
    """
    with factory() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return f"nothing to do: delivery {delivery_id} is gone (its webhook was removed)"
        if delivery.status != DeliveryStatus.PENDING:
            return f"nothing to do: delivery {delivery_id} is {delivery.status.value}"
        hook = delivery.webhook
        url, event, active = hook.url, delivery.event, hook.active
        secret = webhook_secret(box, hook) if active else ""
        body = encode_body(dict(delivery.payload))
    code: int | None
    error: str | None
    if not active:
        code, error = None, "the webhook is disabled"
        wait = None
        elapsed = 0.0
    else:
        started = time.monotonic()
        code, error = send(url, body, signed_headers(secret, body, event, delivery_id),
                           settings.webhook_timeout, post)  # fmt: skip
        elapsed = time.monotonic() - started
    now = utcnow()
    with session_scope(factory) as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:  # removed meanwhile
            return f"delivery {delivery_id} was removed during its attempt"
        delivery.attempts += 1
        delivery.last_status_code, delivery.last_error = code, error
        delivery.history = [*delivery.history,
                            {"attempt": delivery.attempts, "at": iso_utc(now),
                             "status_code": code, "error": error,
                             "ms": round(elapsed * 1000)}][-MAX_HISTORY:]  # fmt: skip
        number = delivery.attempts
        if error is None:
            delivery.status, delivery.delivered_at = DeliveryStatus.DELIVERED, now
            delivery.next_attempt_at = None
        elif wait is None:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
        else:
            delivery.next_attempt_at = now + timedelta(seconds=wait)
    where = origin(url)
    if error is None:
        log.info("webhook delivery %s (%s) to %s: HTTP %s", delivery_id, event, where, code)
        return f"delivered to {where}: HTTP {code} (attempt {number})"
    then = f"retrying in {wait} s" if wait is not None else f"giving up after {number} attempts"
    raise DeliveryFailed(f"webhook delivery {delivery_id} ({event}) to {where} failed: "
                         f"{error}; {then}")  # fmt: skip


def _wait_after_this() -> int | None:
    """The retry interval RQ will use if this run fails, or None on the last attempt."""
    job = get_current_job()
    if job is None or not job.retries_left:
        return None
    return int(job.get_retry_interval())


def deliver(delivery_id: str) -> str:
    """The RQ entry point (``provisioner.webhook_delivery.deliver``)."""
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    engine = make_engine(settings.database_url)
    try:
        box = load_secret_box(settings.secret_key, settings.secret_key_file)
        return attempt(session_factory(engine), settings, box, delivery_id, _wait_after_this())
    finally:
        engine.dispose()

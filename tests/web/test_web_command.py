"""``provisioner web``: gunicorn (gthread) serving the app from the
environment, the relay included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from redis import Redis
from simple_websocket import ConnectionClosed

from provisioner.config import Settings
from provisioner.events import EventPublisher
from tests.conftest import ROOT
from tests.web.conftest import add_container, bearer, closed_port
from tests.web.wsclient import Client

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def served(settings: Settings, app: Flask, tmp_path: Path) -> Iterator[str]:
    """``provisioner web`` on a free port; its base URL."""
    port = closed_port()
    env = {**os.environ, "PROVISIONER_DATA_DIR": str(settings.data_dir),
           "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "PROVISIONER_SECRET_KEY": settings.secret_key or "",
           "PROVISIONER_QUEUE_NAME": settings.queue_name}  # fmt: skip
    log = open(tmp_path / "web.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(ROOT / ".venv/bin/provisioner"), "web", "--host", "127.0.0.1",
                             "--port", str(port), "--threads", "4"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/login", timeout=2) as response:
                    assert response.status == 200
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "web.log").read_text()) from None
                time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Using worker: gthread" in (tmp_path / "web.log").read_text()


def test_gunicorn_serves_the_api_and_the_relay(served: str, app: Flask, token: str) -> None:
    request = urllib.request.Request(f"{served}/api/me", headers=bearer(token))
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response)["username"] == "alice"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{served}/api/me", timeout=5)
    assert refused.value.code == 401
    refused.value.close()

    cid = add_container(app)
    res = app.extensions["provisioner"]
    redis = Redis.from_url(res.settings.redis_url)
    with EventPublisher(redis, res.factory, cid) as publisher:
        publisher.publish("step", "creating", phase="create", percent=5)
        ws_url = served.replace("http://", "ws://") + f"/ws/containers/{cid}/events"
        ws = Client.connect(ws_url, headers=bearer(token))
        first = ws.receive(timeout=10)
        assert first is not None and json.loads(first)["seq"] == 1
        publisher.publish("complete", "ready", phase="finalize", percent=100)
        last = ws.receive(timeout=10)
        assert last is not None and json.loads(last)["type"] == "complete"
        with pytest.raises(ConnectionClosed):
            ws.receive(timeout=10)
    redis.delete(f"provisioner:container:{cid}:stream")
    redis.close()

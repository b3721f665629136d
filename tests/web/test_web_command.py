"""``provisioner web``: gunicorn (gthread) serving the app from the
environment, the relay included."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from redis import Redis
from simple_websocket import ConnectionClosed

from cli.main import main
from provisioner.config import Settings
from provisioner.events import EventPublisher
from tests.certs import self_signed
from tests.conftest import ROOT
from tests.web.conftest import add_container, bearer, closed_port
from tests.web.wsclient import Client

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["http", "https"])
def served(request: pytest.FixtureRequest, settings: Settings, app: Flask,
           tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext | None]]:  # fmt: skip
    """``provisioner web`` on a free port, plain or with gunicorn serving TLS
    itself (GUNICORN_CMD_ARGS); its base URL and the client's TLS context."""
    port = closed_port()
    env = {**os.environ, "PROVISIONER_DATA_DIR": str(settings.data_dir),
           "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "PROVISIONER_SECRET_KEY": settings.secret_key or "",
           "PROVISIONER_QUEUE_NAME": settings.queue_name}  # fmt: skip
    context = None
    if request.param == "https":
        cert, key, context = self_signed(tmp_path)
        env["GUNICORN_CMD_ARGS"] = f"--certfile {cert} --keyfile {key}"
    log = open(tmp_path / "web.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(ROOT / ".venv/bin/provisioner"), "web", "--host", "127.0.0.1",
                             "--port", str(port), "--threads", "4"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    log.close()
    base = f"{request.param}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/login", timeout=2,
                                            context=context) as response:  # fmt: skip
                    assert response.status == 200
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "web.log").read_text()) from None
                time.sleep(0.2)
        yield base, context
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Using worker: gthread" in (tmp_path / "web.log").read_text()


def test_gunicorn_serves_the_api_and_the_relay(served: tuple[str, ssl.SSLContext | None],
                                               app: Flask, token: str) -> None:  # fmt: skip
    base, context = served
    request = urllib.request.Request(f"{base}/api/me", headers=bearer(token))
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        assert json.load(response)["username"] == "alice"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/api/me", timeout=5, context=context)
    assert refused.value.code == 401
    refused.value.close()

    cid = add_container(app)
    res = app.extensions["provisioner"]
    redis = Redis.from_url(res.settings.redis_url)
    with EventPublisher(redis, res.factory, cid) as publisher:
        publisher.publish("step", "creating", phase="create", percent=5)
        ws_url = base.replace("http", "ws", 1) + f"/ws/containers/{cid}/events"
        ws = Client.connect(ws_url, headers=bearer(token), ssl_context=context)
        first = ws.receive(timeout=10)
        assert first is not None and json.loads(first)["seq"] == 1
        publisher.publish("complete", "ready", phase="finalize", percent=100)
        last = ws.receive(timeout=10)
        assert last is not None and json.loads(last)["type"] == "complete"
        with pytest.raises(ConnectionClosed):
            ws.receive(timeout=10)
    redis.delete(f"provisioner:container:{cid}:stream")
    redis.close()


def test_an_unmigrated_database_is_one_line_before_gunicorn(settings: Settings,
                                                            tmp_path: Path) -> None:  # fmt: skip
    env = {**os.environ, "PROVISIONER_DATA_DIR": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path}/empty.db", "REDIS_URL": settings.redis_url,
           "PROVISIONER_SECRET_KEY": settings.secret_key or ""}  # fmt: skip
    for command in ("web", "worker"):
        done = subprocess.run([str(ROOT / ".venv/bin/provisioner"), command], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"error: database sqlite:///{tmp_path}/empty.db is at "
                                      "revision none, this release needs ")  # fmt: skip
        assert "run: provisioner db upgrade" in done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stdout == ""


def test_threads_must_leave_room_beside_the_stream_limit(tmp_path: Path) -> None:
    env = {"PROVISIONER_DATA_DIR": str(tmp_path), "PROVISIONER_WEB_RELAY_MAX_STREAMS": "10"}
    done = CliRunner().invoke(main, ["web", "--threads", "8"], env=env)
    assert done.exit_code == 2
    assert done.stderr == ("error: --threads 8 must be more than PROVISIONER_WEB_RELAY_MAX_STREAMS "
                           "(10): every open event stream holds a thread, and pages and the API "
                           "need some too\n")  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # refused before anything was made

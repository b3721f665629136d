"""The Procfile as a Procfile runner runs it (honcho, as the README says):
the web app answers and the worker serves the queue; Ctrl-C stops both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from redis import Redis
from rq import Worker

from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(120)


def test_honcho_runs_the_procfile(tmp_path: Path) -> None:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("REDIS_URL is not set (scripts/test starts a Redis)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = f"procfile-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PROVISIONER_DATA_DIR": str(tmp_path), "REDIS_URL": redis_url,
           "DATABASE_URL": f"sqlite:///{tmp_path}/provisioner.db",
           "PROVISIONER_QUEUE_NAME": queue, "PROVISIONER_WEB_PORT": str(port)}  # fmt: skip
    env.pop("PROVISIONER_SECRET_KEY", None)
    upgraded = subprocess.run([str(ROOT / ".venv/bin/provisioner"), "db", "upgrade"], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    honcho = subprocess.Popen([str(ROOT / ".venv/bin/honcho"), "start"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)  # fmt: skip
    redis = Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 60
        status = None
        while status is None:
            assert honcho.poll() is None, honcho.communicate()[0]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as r:
                    status = r.status
            except (urllib.error.URLError, OSError):  # refused, or slow to answer at first
                assert time.monotonic() < deadline, "the web app did not answer"
                time.sleep(0.3)
        assert status == 200
        while not [w for w in Worker.all(connection=redis) if queue in w.queue_names()]:
            assert time.monotonic() < deadline, "no worker serves the queue"
            time.sleep(0.3)
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGINT)
        out = honcho.communicate(timeout=60)[0]
        redis.close()
    assert "web.1" in out and "worker.1" in out and "scheduler.1" in out
    assert "Registered 'pipeline.expiry.expire_round'" in out  # RQ's cron scheduler
    assert "Listening on" in out and "Booting worker" in out  # rq's and gunicorn's lines

"""Runs ride out a Redis that stops answering or restarts, through real
workers, a real Redis of the test's own (paused with SIGSTOP, restarted
empty), the simulator and the websocket relay.

Every run ends ready; its events' seqs are contiguous; the database and the
Redis stream hold the same events; a websocket that followed the run got
every event once and was closed after the terminal one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from redis import Redis

from provisioner.events import Event, stream_key
from provisioner.models import ContainerEvent, Lifecycle
from tests.pipeline.conftest import Stack, admin_token, build_stack
from tests.pipeline.test_resilience import assert_event_stream
from tests.web.conftest import bearer, serve
from tests.web.wsclient import Client
from web.app import create_app

pytestmark = [pytest.mark.integration]
TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class OwnRedis:
    """A redis-server of the test's own, to pause and restart."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if Redis(port=self.port, socket_timeout=1).ping():
                    return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def pause(self, seconds: float) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self, down: float = 1.0) -> None:
        self.stop()
        time.sleep(down)
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = OwnRedis(port, tmp_path_factory.mktemp("redis"))
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def outage_stack(sim: dict[str, Any], own_redis: OwnRedis,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # fmt: skip
    stack = build_stack(sim, own_redis.url, tmp_path_factory.mktemp("outage"), [TEMPLATES])
    made: list[str] = []
    stack.made = made  # type: ignore[attr-defined]
    stack.start_workers(1)
    try:
        yield stack
    finally:
        stack.destroy_in_pve(made)


@pytest.fixture(scope="module")
def app(outage_stack: Stack) -> Iterator[Flask]:
    app = create_app(outage_stack.settings, {"TESTING": True})
    yield app
    app.extensions["provisioner"].close()


class Follower(threading.Thread):
    """A websocket client following a container's stream from seq 0,
    reconnecting with ``after=`` if the relay closes it early."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.events: list[dict[str, Any]] = []
        self.connections = 0
        self.closed_after_terminal = False
        self.errors: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            after = self.events[-1]["seq"] if self.events else 0
            ws = Client.connect(f"{self.url}?after={after}", headers=bearer(self.token))
            self.connections += 1
            try:
                while True:
                    message = ws.receive(timeout=60)
                    if message is None:
                        break
                    self.events.append(json.loads(message))
            except Exception as exc:  # the server closed it: done, or reconnect
                self.errors.append(repr(exc))
            finally:
                with contextlib.suppress(Exception):  # closed by the server already
                    ws.close()
            if self.events and self.events[-1]["type"] in ("complete", "error"):
                self.closed_after_terminal = True
                return


def db_events(stack: Stack, cid: str) -> list[dict[str, Any]]:
    with stack.factory() as session:
        rows = (session.query(ContainerEvent).filter_by(container_id=cid)
                .order_by(ContainerEvent.seq).all())  # fmt: skip
        return [Event.from_row(r).as_dict() for r in rows]


def stream_events(redis: Redis, cid: str) -> list[dict[str, Any]]:
    return [json.loads(fields[b"e"]) for _, fields in redis.xrange(stream_key(cid))]


def run_through(stack: Stack, own_redis: OwnRedis, app: Flask, template: str,
                variables: dict[str, Any], when: Callable[[list[dict[str, Any]]], bool],
                fault: Callable[[], None]) -> tuple[str, Follower, float]:  # fmt: skip
    """Provision, follow it over the relay, apply ``fault`` once ``when``
    holds for the events so far; returns (container id, follower, seconds)."""
    token = admin_token(stack.factory)
    started = time.monotonic()
    cid = stack.submit(template, f"outage-{uuid.uuid4().hex[:6]}", variables=variables)
    stack.made.append(cid)  # type: ignore[attr-defined]
    with serve(app) as server:
        follower = Follower(f"{server.ws}/ws/containers/{cid}/events", token)
        follower.start()
        deadline = time.monotonic() + 120
        while not when(db_events(stack, cid)):
            assert time.monotonic() < deadline, stack.worker_logs()[-3000:]
            time.sleep(0.05)
        fault()
        ct = stack.wait(cid, timeout=180)
        took = time.monotonic() - started
        follower.join(120)
    assert ct.lifecycle == Lifecycle.READY, (ct.error_message, stack.worker_logs()[-3000:])
    return cid, follower, took


def check_converged(stack: Stack, own_redis: OwnRedis, cid: str, follower: Follower) -> None:
    redis = Redis.from_url(own_redis.url)
    from provisioner.events import EventReader

    events = list(EventReader(redis, stack.factory, cid).events(0, follow=False))
    assert_event_stream(stack, cid, events)
    stored = db_events(stack, cid)
    deadline = time.monotonic() + 30  # the stream catches up once Redis is back
    while stream_events(redis, cid) != stored and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stream_events(redis, cid) == stored  # same seqs, same content
    assert [e["seq"] for e in follower.events] == list(range(1, len(stored) + 1))
    assert follower.events == stored
    assert follower.closed_after_terminal, (follower.errors, follower.events[-3:])


def in_phase(phase: str, lines: int = 0) -> Callable[[list[dict[str, Any]]], bool]:
    def check(events: list[dict[str, Any]]) -> bool:
        seen = [e for e in events if e.get("phase") == phase]
        return bool(seen) and sum(e["type"] == "log" for e in seen) >= lines

    return check


@pytest.mark.long
@pytest.mark.timeout(300)
def test_redis_paused_15_s_in_deploy(outage_stack: Stack, own_redis: OwnRedis, app: Flask) -> None:
    cid, follower, took = run_through(outage_stack, own_redis, app, "phases",
                                      {"deploy_mb": 60}, in_phase("deploy"),
                                      lambda: own_redis.pause(15))  # fmt: skip
    check_converged(outage_stack, own_redis, cid, follower)
    print(
        f"\nRedis paused 15 s in deploy: ready in {took:.1f} s, "
        f"{follower.connections} websocket connection(s)"
    )


@pytest.mark.timeout(300)
def test_redis_paused_15_s_in_scripts(outage_stack: Stack, own_redis: OwnRedis,
                                      app: Flask) -> None:  # fmt: skip
    cid, follower, took = run_through(outage_stack, own_redis, app, "lines",
                                      {"count": 4000, "pause_ms": 100}, in_phase("scripts", 200),
                                      lambda: own_redis.pause(15))  # fmt: skip
    check_converged(outage_stack, own_redis, cid, follower)
    print(
        f"\nRedis paused 15 s in scripts: ready in {took:.1f} s, "
        f"{follower.connections} websocket connection(s)"
    )


@pytest.mark.timeout(300)
def test_redis_restarted_mid_run(outage_stack: Stack, own_redis: OwnRedis, app: Flask) -> None:
    """Restarted empty (no persistence): the stream is refilled from the
    database, the workers and the relay reconnect."""
    cid, follower, took = run_through(outage_stack, own_redis, app, "lines",
                                      {"count": 4000, "pause_ms": 100}, in_phase("scripts", 200),
                                      lambda: own_redis.restart(2))  # fmt: skip
    check_converged(outage_stack, own_redis, cid, follower)
    print(
        f"\nRedis restarted in scripts: ready in {took:.1f} s, "
        f"{follower.connections} websocket connection(s)"
    )

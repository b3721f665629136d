"""The real stack for pipeline tests: a database (SQLite, or PostgreSQL for
the tests parametrised with ``tests.databases.BOTH``), the shared Redis and
simulator, real `provisioner worker` processes."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from provisioner import db, users
from provisioner.config import Settings
from provisioner.db import session_scope
from provisioner.models import AuthKind, Container, Lifecycle, Node
from provisioner.nodes import client_for
from provisioner.ownership import NotOurs, prove
from provisioner.pve.client import PveClient
from provisioner.queue import enqueue
from provisioner.redis_url import redis_client
from provisioner.requests import ProvisionRequest, submit
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import set_node_secret
from tests.conftest import ROOT
from tests.databases import drop_database, engine_for, new_database

NODE = "sim"


def destroy_ours(pve: PveClient, records: Iterable[tuple[str, int | None]]) -> None:
    """Destroy in PVE the CTs of these records (id, vmid) that are still theirs
    (through the ownership guard, as the product does)."""
    for cid, vmid in records:
        if vmid is None:
            continue
        try:
            owned = prove(pve, cid, vmid)
        except NotOurs:
            continue
        pve.wait_for_task(pve.destroy(owned, force=True, purge=True), timeout=120)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        kill_tree(int(child))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Stack:
    env: dict[str, str]
    settings: Settings
    sim: dict[str, Any]
    redis: Redis
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_dir: Path | None = None
    vmid_base: int = 0
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def factory(self) -> sessionmaker[Session]:
        """Sessions on the stack's database (one engine: ``engine_for``)."""
        if self._engine is None:
            self._engine = engine_for(self.settings.database_url)
        return db.session_factory(self._engine)

    def disconnect(self) -> None:
        """Close this process's connections to the database (a PostgreSQL
        database that is copied must have none)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def close(self) -> None:
        """Stop the workers, let go of Redis and drop the database (PostgreSQL)."""
        self.stop_workers()
        self.redis.close()
        self.disconnect()
        drop_database(self.settings.database_url)

    def address(self, host: int) -> str:
        return str(ipaddress.ip_network(self.sim["subnet"]).network_address + host)

    def submit(self, template: str, hostname: str, *, job_timeout: int | None = None,
               **kwargs: Any) -> str:  # fmt: skip
        box = load_secret_box(self.settings.secret_key, self.settings.secret_key_file)
        req = ProvisionRequest(template=template, node=NODE, hostname=hostname, **kwargs)
        with session_scope(self.factory) as session:
            cid = submit(session, box, self.settings, req).id
        enqueue(self.redis, self.settings, cid, job_timeout=job_timeout)
        return cid

    def enqueue(self, cid: str, action: str) -> None:
        enqueue(self.redis, self.settings, cid, action)

    def start_workers(self, n: int) -> None:
        assert self.log_dir is not None
        for i in range(n):
            log = open(self.log_dir / f"worker{len(self.workers)}.log", "ab")  # noqa: SIM115
            self.workers.append(subprocess.Popen(
                [str(ROOT / ".venv/bin/provisioner"), "worker", "--name",
                 f"test-{uuid.uuid4().hex[:6]}-{i}"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))  # fmt: skip
            log.close()

    def kill_worker(self, index: int = 0) -> None:
        """kill -9 a worker and its work horse (RQ puts the horse in a
        process group of its own, so the group kill alone misses it)."""
        proc = self.workers[index]
        kill_tree(proc.pid)
        proc.wait()

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                kill_tree(proc.pid)  # the work horse too
                proc.wait()
        self.workers.clear()

    def destroy_in_pve(self, cids: list[str]) -> None:
        """Stop the workers, then remove from PVE those of the containers it still has."""
        self.stop_workers()
        box = load_secret_box(self.settings.secret_key, self.settings.secret_key_file)
        with self.factory() as session:
            node = session.scalars(select(Node).where(Node.name == NODE)).one()
            with client_for(node, box) as pve:
                destroy_ours(pve, [(cid, ct.vmid) for cid in cids
                                   if (ct := session.get(Container, cid)) is not None])  # fmt: skip

    def container(self, cid: str) -> Container:
        with self.factory() as session:
            ct = session.get(Container, cid)
            assert ct is not None
            session.expunge(ct)
            return ct

    def wait(self, cid: str, states: tuple[Lifecycle, ...] = (Lifecycle.READY, Lifecycle.ERROR),
             timeout: float = 300) -> Container:  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ct = self.container(cid)
            if ct.lifecycle in states:
                return ct
            time.sleep(0.2)
        raise TimeoutError(f"{cid} still {self.container(cid).lifecycle} after {timeout}s; "
                           f"{self.worker_logs()[-3000:]}")  # fmt: skip

    def worker_logs(self) -> str:
        assert self.log_dir is not None
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


def admin_token(factory: Any, username: str = "ops") -> str:
    """A new API token of the admin ``username`` (created on first use)."""
    with session_scope(factory) as session:
        if users.get_user(session, username) is None:
            users.create_user(session, username, "ops password 123", is_admin=True)
        _, secret = users.create_api_token(session, username, f"t{time.monotonic_ns()}")
    return secret


def register_sim(factory: sessionmaker[Session], settings: Settings, sim: dict[str, Any]) -> None:
    """Register the simulator as node "sim" (token auth) in the database."""
    box = load_secret_box(settings.secret_key, settings.secret_key_file)
    user, token_name = sim["token_id"].split("!")
    host, port = sim["url"].split("//")[1].split("/")[0].rsplit(":", 1)
    with session_scope(factory) as session:
        node = Node(name=NODE, host=host, port=int(port), pve_node=sim["node"],
                    auth_kind=AuthKind.TOKEN, pve_user=user, token_name=token_name,
                    secret_ciphertext="", ca_file=sim["cafile"], default_storage="local-lvm",
                    default_bridge="vmbr0")  # fmt: skip
        set_node_secret(box, node, sim["token_secret"])
        session.add(node)


def build_stack(sim: dict[str, Any], redis_url: str, data: Path,
                extra_templates: list[Path] | None = None, backend: str = "sqlite") -> Stack:  # fmt: skip
    """A database of ``backend`` (tests/databases.py) migrated as
    ``provisioner db upgrade`` does, settings and the simulator registered as
    node "sim"; templates: the shipped ones plus every template dir in
    ``extra_templates``.  ``Stack.close`` ends it."""
    templates = data / "templates"
    shutil.copytree(ROOT / "templates_lxc", templates)
    for extra in extra_templates or []:
        for path in extra.iterdir():
            if (path / "template.toml").is_file():
                shutil.copytree(path, templates / path.name)
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    env = {
        **os.environ,
        "PROVISIONER_DATA_DIR": str(data),
        "PROVISIONER_TEMPLATES_DIR": str(templates),
        "DATABASE_URL": new_database(backend, data),
        "REDIS_URL": redis_url,
        "PROVISIONER_SECRET_KEY": key,
        "PROVISIONER_QUEUE_NAME": f"provisioning-test-{uuid.uuid4().hex[:8]}",
        "PROVISIONER_RETRY_BASE_DELAY": "0.5",
        "PROVISIONER_RETRY_MAX_DELAY": "2",
        "PROVISIONER_LEASE_DURATION": "6",
        "PROVISIONER_LEASE_RENEW_INTERVAL": "1",
        "PROVISIONER_SSH_CONNECT_TIMEOUT": "60",
        "PROVISIONER_IP_TIMEOUT": "60",
        "PROVISIONER_TASK_TIMEOUT": "120",
    }
    settings = Settings.from_env(environ=env)
    db.upgrade(settings.database_url)
    logs = data / "logs"
    logs.mkdir()
    stack = Stack(env=env, settings=settings, sim=sim, redis=redis_client(redis_url),
                  log_dir=logs)  # fmt: skip
    register_sim(stack.factory, settings, sim)
    return stack


@contextlib.contextmanager
def module_stack(sim: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, name: str,
                 made: list[str], templates: list[Path] | None = None,
                 env: dict[str, str] | None = None,
                 backend: str = "sqlite") -> Iterator[Stack]:  # fmt: skip
    """A stack of a module's own (its database of ``backend``, one worker,
    settings in ``env``); at the end the CTs of the records in ``made`` are
    destroyed."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("REDIS_URL is not set (scripts/test starts a Redis)")
    stack = build_stack(sim, redis_url, tmp_path_factory.mktemp(f"{name}-{backend}"), templates,
                        backend)  # fmt: skip
    stack.env.update(env or {})
    stack.start_workers(1)
    try:
        yield stack
    finally:
        stack.destroy_in_pve(made)
        stack.close()


@contextlib.contextmanager
def api_client(stack: Stack) -> Iterator[Callable[..., Any]]:
    """``call(method, path, body)``: the REST API of an app on the stack's
    settings (Flask's test client), as an administrator."""
    from flask import Flask
    from flask.testing import FlaskClient

    from tests.web.conftest import bearer
    from web.app import create_app

    app: Flask = create_app(stack.settings, {"TESTING": True})
    client: FlaskClient = app.test_client()
    auth = bearer(admin_token(app.extensions["provisioner"].factory))

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return client.open(f"/api{path}", method=method, json=body, headers=auth)

    try:
        yield call
    finally:
        app.extensions["provisioner"].close()


@contextlib.contextmanager
def per_backend(make: Callable[[str], Stack]) -> Iterator[Callable[[str], Stack]]:
    """A stack of each database backend, made by ``make`` on first use and
    closed at the end."""
    built: dict[str, Stack] = {}

    def of(backend: str) -> Stack:
        if backend not in built:
            built[backend] = make(backend)
        return built[backend]

    try:
        yield of
    finally:
        for made in built.values():
            made.close()


@pytest.fixture(scope="session")
def stacks(sim: dict[str, Any],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Stack]]:  # fmt: skip
    """The session's shared stack of each backend, built on first use."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("REDIS_URL is not set (scripts/test starts a Redis)")

    def make(backend: str) -> Stack:
        return build_stack(sim, redis_url, tmp_path_factory.mktemp(f"provisioner-{backend}"),
                           [Path(__file__).parent / "templates"], backend)  # fmt: skip

    with per_backend(make) as of:
        yield of


@pytest.fixture(scope="module")
def stack(stacks: Callable[[str], Stack], db_backend: str) -> Stack:
    """The shared stack on the module's database backend (``db_backend``)."""
    return stacks(db_backend)


@pytest.fixture()
def cleanup(stack: Stack) -> Iterator[Callable[[str], str]]:
    """Register containers to destroy in PVE after the test."""
    made: list[str] = []
    yield lambda cid: (made.append(cid), cid)[1]
    stack.stop_workers()  # a test's workers end with it

    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    with stack.factory() as session:
        node = session.query(Node).filter_by(name=NODE).one()
        with client_for(node, box) as pve:
            destroy_ours(pve, [(cid, session.get(Container, cid).vmid)  # type: ignore[union-attr]
                               for cid in made])  # fmt: skip

"""Fixtures of the CLI tests.

Fast tests run ``provisioner`` in-process through click's ``CliRunner``
against a fresh copy of a prepared data directory (database, the shipped and
the pipeline tests' templates, the simulator registered as node "sim"; the
database is SQLite, or a copy of a prepared PostgreSQL database for the
modules run on both with ``tests.databases.BOTH``), the shared Redis (a queue of their own) and, for node commands, the
shared simulator.  Integration tests run ``.venv/bin/provisioner`` as a
subprocess against the real stack of ``tests/pipeline/conftest.py``, with
real workers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from provisioner import db
from provisioner.config import Settings
from provisioner.db import session_scope
from provisioner.models import Container, Lifecycle, Node
from provisioner.secrets.box import SecretBox
from provisioner.secrets.keyfile import load_secret_box
from tests.conftest import ROOT
from tests.databases import drop_database, engine_for, pg_databases
from tests.pipeline.conftest import (  # noqa: F401 - the integration fixtures
    Stack,
    build_stack,
    cleanup,
    per_backend,
    stack,
    stacks,
)

PROVISIONER = str(ROOT / ".venv/bin/provisioner")
PIPELINE_TEMPLATES = ROOT / "tests/pipeline/templates"
_ENGINES: dict[str, Engine] = {}  # database URL -> the engine of the tests' own reads


@dataclass
class Cli:
    """One test's own provisioner installation: data dir, database, queue."""

    env: dict[str, str]
    settings: Settings
    sim: dict[str, Any]

    def __call__(self, *args: str, input: str | bytes | None = None, **env: str) -> Result:
        """Run ``provisioner ARGS`` in-process."""
        return CliRunner().invoke(_main(), list(args), input=input, env={**self.env, **env})

    @property
    def factory(self) -> sessionmaker[Session]:
        """Sessions on the database; every ``Cli`` of one database shares an
        engine, which the ``cli`` fixture disposes of."""
        url = self.settings.database_url
        if url not in _ENGINES:
            _ENGINES[url] = engine_for(url)
        return db.session_factory(_ENGINES[url])

    @property
    def box(self) -> SecretBox:
        return load_secret_box(self.settings.secret_key, self.settings.secret_key_file)

    def add_container(self, node: str = "sim", **columns: Any) -> str:
        """A container row with no PVE container behind it."""
        with session_scope(self.factory) as session:
            node_row = session.scalars(select(Node).where(Node.name == node)).one()
            values = {"template": "nginx", "hostname": "row", "lifecycle": Lifecycle.PENDING,
                      "request": {}, **columns}  # fmt: skip
            ct = Container(node=node_row, **values)
            session.add(ct)
            session.flush()
            return ct.id

    def container(self, cid: str) -> Container:
        with self.factory() as session:
            ct = session.get(Container, cid)
            assert ct is not None
            session.expunge(ct)
            return ct


def _main() -> Any:
    from cli.main import main

    return main


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No settings leak in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("PROVISIONER_") or name in ("DATABASE_URL", "TTY_COMPATIBLE",
                                                       "FORCE_COLOR"):  # fmt: skip
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def prepared(sim: dict[str, Any],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Stack]]:  # fmt: skip
    """A data directory of each database backend, made once on first use:
    migrated database, templates, node "sim"."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("REDIS_URL is not set (scripts/test starts a Redis)")

    def make(backend: str) -> Stack:
        made = build_stack(sim, redis_url, tmp_path_factory.mktemp(f"cli-prepared-{backend}"),
                           [PIPELINE_TEMPLATES], backend)  # fmt: skip
        made.disconnect()  # PostgreSQL copies a database nobody is connected to
        return made

    with per_backend(make) as of:
        yield of


@pytest.fixture
def cli(prepared: Callable[[str], Stack], db_backend: str, tmp_path: Path) -> Iterator[Cli]:
    """A copy of the prepared data directory (and database) with a queue of its own."""
    source = prepared(db_backend)
    data = tmp_path / "data"
    shutil.copytree(Path(source.env["PROVISIONER_DATA_DIR"]), data,
                    ignore=shutil.ignore_patterns("logs"))  # fmt: skip
    if db_backend == "postgresql":
        database_url = pg_databases().create(template=source.settings.database_url)
    else:
        database_url = f"sqlite:///{data}/provisioner.db"
    queue = f"provisioning-cli-{uuid.uuid4().hex[:8]}"
    env = {**source.env, "PROVISIONER_DATA_DIR": str(data),
           "PROVISIONER_TEMPLATES_DIR": str(data / "templates"),
           "DATABASE_URL": database_url, "PROVISIONER_QUEUE_NAME": queue,
           "HOME": str(tmp_path / "home")}  # fmt: skip
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR"):
        env.pop(name, None)
    made = Cli(env=env, settings=Settings.from_env(environ=env), sim=source.sim)
    yield made
    if (engine := _ENGINES.pop(database_url, None)) is not None:
        engine.dispose()
    drop_database(database_url)
    from redis import Redis

    with Redis.from_url(env["REDIS_URL"]) as redis:
        redis.delete(f"rq:queue:{queue}")


def run(target: Stack | Cli, *args: str, input: str | None = None, timeout: float = 280,
        **env: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run ``.venv/bin/provisioner ARGS`` as a subprocess with the stack's
    (or a ``Cli``'s) environment."""
    return subprocess.run([PROVISIONER, *args], env={**target.env, **env}, input=input,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip

"""Shared fixtures of the core library's tests: databases on SQLite and on
PostgreSQL (when TEST_DATABASE_URL names a server; scripts/test starts one)."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from provisioner import db
from provisioner.models import AuthKind, Container, Lifecycle, Node
from provisioner.secrets.box import SecretBox, generate_key
from tests.databases import BACKENDS
from tests.databases import pg_databases as shared_pg_databases


@pytest.fixture(scope="session")
def pg_databases() -> Callable[[], str]:
    """A factory of fresh, uniquely named PostgreSQL databases, all dropped
    when the session ends (tests/databases.py)."""
    return shared_pg_databases().create


@pytest.fixture(params=BACKENDS)
def new_db(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """A factory of empty databases of one backend (the parameter)."""
    if request.param == "postgresql":
        factory: Callable[[], str] = request.getfixturevalue("pg_databases")
        return factory
    counter = iter(range(1000))
    return lambda: f"sqlite:///{tmp_path}/db{next(counter)}/provisioner.db"


@pytest.fixture
def db_url(new_db: Callable[[], str]) -> str:
    """An empty database."""
    return new_db()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to the newest revision."""
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return db.session_factory(engine)


@pytest.fixture()
def redis() -> Iterator[Redis]:
    """The Redis scripts/test started (REDIS_URL)."""
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set (scripts/test starts a Redis)")
    client = Redis.from_url(url)
    yield client
    client.close()


def make_container(factory: sessionmaker[Session],
                   lifecycle: Lifecycle = Lifecycle.PENDING) -> str:  # fmt: skip
    """A container row (on a node of its own); returns its id."""
    cid = str(uuid.uuid4())
    with factory() as session:
        node = Node(name=f"n-{cid[:8]}", host="h", pve_node="pve", auth_kind=AuthKind.PASSWORD,
                    pve_user="root@pam", secret_ciphertext="x")  # fmt: skip
        session.add(node)
        session.flush()
        session.add(Container(id=cid, node_id=node.id, template="nginx", hostname="web",
                              lifecycle=lifecycle))  # fmt: skip
        session.commit()
    return cid


@pytest.fixture
def box() -> SecretBox:
    """A secret box with one fresh key."""
    text_key = generate_key()
    return SecretBox([base64.urlsafe_b64decode(text_key + "=" * (-len(text_key) % 4))])


@pytest.fixture
def node(factory: sessionmaker[Session]) -> str:
    """A node row named pve1 with default storage and bridge; its name."""
    with factory() as session:
        session.add(Node(name="pve1", host="h", pve_node="pve", auth_kind=AuthKind.PASSWORD,
                         pve_user="root@pam", secret_ciphertext="x",
                         default_storage="local-lvm", default_bridge="vmbr0"))  # fmt: skip
        session.commit()
    return "pve1"

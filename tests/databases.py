"""The tests' databases, in one place: SQLite in a data directory, or a
fresh PostgreSQL database of its own on the server ``TEST_DATABASE_URL``
names (``scripts/test`` starts one).

A stack (settings, migrations, workers, web app) asks :func:`new_database`
for the URL of its backend and migrates it through the product's own path
(``provisioner.db.upgrade``, what ``provisioner db upgrade`` runs).  A
PostgreSQL database gets a unique name and is dropped, with any connection
left to it, when the stack closes (:func:`drop_database`), or at the latest
when the session ends.

Tests choose the backend with the ``db_backend`` fixture (tests/conftest.py):
``sqlite`` unless a module or test parametrises it, as the PostgreSQL subset
does with :data:`BOTH`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from provisioner import db

BACKENDS = ("sqlite", "postgresql")
PG_URL_ENV = "TEST_DATABASE_URL"
# The PostgreSQL subset: a module's ``pytestmark`` (or a test's mark) that
# runs its tests on both backends; their ids end in [sqlite] / [postgresql].
BOTH = pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
# A module whose tests share one module-scoped stack in order, and run only
# some of them on PostgreSQL, marks each of its tests BOTH or SQLITE_ONLY:
# pytest then runs the [sqlite] ones, then the [postgresql] ones, each
# group in the file's order, on a stack of its backend.
SQLITE_ONLY = pytest.mark.parametrize("db_backend", BACKENDS[:1], indirect=True)


def pg_server_url() -> str:
    """The PostgreSQL server's URL (its maintenance database); skips the test
    when there is none."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"{PG_URL_ENV} is not set (scripts/test starts a PostgreSQL)")
    return url


class PgDatabases:
    """Creates uniquely named databases on one PostgreSQL server and drops them."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self._admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self._prefix = f"provisioner_test_{os.getpid()}_{secrets.token_hex(3)}"
        self._made: list[str] = []

    def create(self, template: str | None = None) -> str:
        """A new database (a copy of the database at URL ``template``, which
        nobody may be connected to); its URL."""
        name = f"{self._prefix}_{len(self._made)}"
        copy = f' TEMPLATE "{make_url(template).database}"' if template else ""
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copy}')
        self._made.append(name)
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        """Drop the database at ``url``, ending whatever is still connected to it."""
        name = make_url(url).database
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._made:
            self._made.remove(name)

    def close(self) -> None:
        """Drop every database still here."""
        for name in list(self._made):
            self.drop(make_url(self.server_url).set(database=name).render_as_string(False))
        self._admin.dispose()


_shared: PgDatabases | None = None


def pg_databases() -> PgDatabases:
    """The session's :class:`PgDatabases` (made on first use; tests/conftest.py
    closes it when the session ends)."""
    global _shared
    if _shared is None:
        _shared = PgDatabases(pg_server_url())
    return _shared


def close_pg_databases() -> None:
    global _shared
    if _shared is not None:
        _shared.close()
        _shared = None


def new_database(backend: str, data: Path) -> str:
    """The URL of an empty database of ``backend``: ``sqlite`` in ``data``,
    or a new PostgreSQL database (give it back with :func:`drop_database`)."""
    if backend == "sqlite":
        return f"sqlite:///{data}/provisioner.db"
    if backend != "postgresql":
        raise ValueError(f"unknown database backend {backend!r}: one of {BACKENDS}")
    return pg_databases().create()


def engine_for(url: str) -> Engine:
    """The engine a test process reads and writes a stack's database with.

    On SQLite every session opens its own connection and closes it at its
    end (no pool): the test process forks, copies database files and outlives
    many stacks, and a pooled SQLite connection kept across all that is what
    the product's processes never do.  PostgreSQL keeps a small pool (a
    server has a hundred connections for every stack).
    """
    return db.make_engine(url, pooled=make_url(url).get_backend_name() != "sqlite")


def drop_database(url: str) -> None:
    """Drop a PostgreSQL database of :func:`new_database` (a SQLite file
    goes with its temporary directory)."""
    if make_url(url).get_backend_name() == "postgresql":
        pg_databases().drop(url)

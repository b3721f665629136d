"""Database engines, sessions and migrations.

SQLite (the embedded default) and PostgreSQL (``postgresql+psycopg://``)
are supported.  On SQLite every connection runs in WAL mode with a busy
timeout and foreign keys on, and every transaction starts with
``BEGIN IMMEDIATE``, so several worker processes can write to one file
without "database is locked" errors.  Keep transactions short: on SQLite
one holds the write lock until it ends.  A ``BEGIN`` that waits out the busy
timeout logs which process holds the lock and waits once more.

Migrations live in ``provisioner/migrations`` and run programmatically
(:func:`upgrade`); no ``alembic.ini`` is needed.  A new revision is made
against an up-to-date database with::

    python -c 'from alembic import command; from provisioner.db import alembic_config; \\
        command.revision(alembic_config(URL), autogenerate=True, message="...")'
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, PoolProxiedConnection

from provisioner.config import Settings, redact_url
from provisioner.errors import ConfigError, PermanentError, TransientError

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000
log = logging.getLogger(__name__)
_READ_ONLY = "provisioner_read_only"  # an execution option: see read_only()
# Any constant will do: it only has to be the same in every process.
_PG_MIGRATION_LOCK = 0x6C7863  # "lxc"


def make_engine(url: str, *, foreign_keys: bool = True, echo: bool = False,
                max_overflow: int = 10, pooled: bool = True) -> Engine:  # fmt: skip
    """Create an engine for a SQLite or PostgreSQL URL.

    Args:
        url: ``sqlite:///PATH`` (the directory is created, mode 0700) or
            ``postgresql+psycopg://USER@HOST/DB``.
        foreign_keys: SQLite only; turned off for migrations alone, because
            rebuilding a table with them on would cascade deletes.
        echo: log every SQL statement (debugging).
        max_overflow: connections beyond the pool's 5 kept ones, for bursts
            (the web app has many threads).
        pooled: keep connections for reuse; False opens one per checkout
            and closes it when it is given back (``NullPool``), so nothing
            of this process stays connected between sessions.

    Returns:
        The engine.  Create it in the process that uses it (RQ forks a work
        horse per job); connections inherited across a fork are discarded.

    Raises:
        ConfigError: the URL is malformed or names an unsupported database.
    """
    sa_url = _parse_url(url)
    if sa_url.get_backend_name() == "sqlite":
        _ensure_sqlite_directory(sa_url)
        engine = create_engine(sa_url, echo=echo, **_pool_options(pooled, max_overflow))
        _configure_sqlite(engine, foreign_keys=foreign_keys)
    elif sa_url.get_backend_name() == "postgresql":
        engine = create_engine(sa_url, echo=echo, pool_pre_ping=True,
                               **_pool_options(pooled, max_overflow))  # fmt: skip
    else:
        raise ConfigError(f"unsupported database {redact_url(url)!r}: use SQLite or PostgreSQL")
    _discard_connections_after_fork(engine)
    if sa_url.get_backend_name() == "sqlite":
        _FORK_GATE.watch(engine)  # after the discard: a discarded checkout never counts
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory bound to ``engine``.

    Objects stay usable after commit (``expire_on_commit=False``): a phase
    keeps reading its container row after saving progress.
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


def read_only(session: Session) -> Session:
    """Make the session's transaction read-only: on SQLite it then takes no
    write lock (a long replay never holds up a worker's writes); on
    PostgreSQL it is ``READ ONLY``.  Call it before the session's first query.
    """
    options: dict[str, Any] = {_READ_ONLY: True}
    if session.get_bind().dialect.name == "postgresql":
        options["postgresql_readonly"] = True
    session.connection(execution_options=options)
    return session


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Open a session, commit when the block ends, roll back if it raises.

    Args:
        factory: from :func:`session_factory`.

    Yields:
        The session.

    Raises:
        Whatever the block or the commit raises, after rolling back.
    """
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    """Return an Alembic configuration for our migrations and ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # ConfigParser interpolation: a literal % must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """Return the newest migration's revision id."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(url: str) -> str | None:
    """Return the database's revision id, or None if it was never migrated.

    Raises:
        ConfigError: the URL is unusable.
        TransientError: the database cannot be reached.
    """
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except exc.OperationalError as e:
        raise _unreachable(url, e) from None
    finally:
        engine.dispose()


def require_current_schema(url: str) -> None:
    """Check that the database is migrated to this release's schema.

    Raises:
        ConfigError: it is not (with the command that fixes it).
        TransientError: the database cannot be reached.
    """
    current, head = current_revision(url), head_revision()
    if current != head:
        raise ConfigError(
            f"database {redact_url(url)} is at revision {current or 'none'}, "
            f"this release needs {head}",
            hint="run: provisioner db upgrade",
        )


def preflight(settings: Settings) -> None:
    """What a service checks before it serves: a usable secret key and a
    database at this release's schema (``provisioner web`` and ``worker``
    say so in one line, rather than failing every request or job).

    Raises:
        ConfigError: an unusable secret key, or an un-migrated database.
        TransientError: the database cannot be reached.
    """
    from provisioner.secrets.keyfile import load_secret_box

    load_secret_box(settings.secret_key, settings.secret_key_file)
    require_current_schema(settings.database_url)


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: the newest).

    Safe to run concurrently from several processes: SQLite serialises them
    with its write lock, PostgreSQL with an advisory lock.

    Raises:
        ConfigError: the URL is unusable.
        TransientError: the database cannot be reached.
        PermanentError: the database is at a revision this release does not
            know, or a migration left broken foreign keys behind.
    """
    engine = make_engine(url, foreign_keys=False)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
            config = alembic_config(url)
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            if conn.dialect.name == "sqlite":
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise PermanentError(
                        f"migrating {redact_url(url)} left {len(broken)} rows with broken "
                        f"foreign keys (first: {tuple(broken[0])}); rolled back"
                    )
    except exc.OperationalError as e:
        raise _unreachable(url, e) from None
    except CommandError as e:
        raise PermanentError(
            f"cannot migrate {redact_url(url)}: {e}",
            hint="is the database newer than this release?",
        ) from None
    finally:
        engine.dispose()


def _pool_options(pooled: bool, max_overflow: int) -> dict[str, Any]:
    return {"max_overflow": max_overflow} if pooled else {"poolclass": NullPool}


def _parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except exc.ArgumentError:
        raise ConfigError(f"malformed database URL {redact_url(url)!r}") from None


def _unreachable(url: str, error: exc.OperationalError) -> TransientError:
    # The driver's own message, first line only: SQLAlchemy's str() appends
    # the statement and its parameters.
    reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
    return TransientError(f"database {redact_url(url)} is unavailable: {reason}")


def _ensure_sqlite_directory(url: URL) -> None:
    path = url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    directory = Path(path).absolute().parent
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise ConfigError(
            f"cannot create the database directory {directory}: {e.strerror}",
            hint="set PROVISIONER_DATA_DIR or DATABASE_URL to a writable place",
        ) from None


def _configure_sqlite(engine: Engine, *, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module: it starts
        # transactions late (after a SELECT), so a read-then-write races.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        # Take the write lock up front: a deferred transaction that reads,
        # then writes after another process committed, fails at once with
        # SQLITE_BUSY instead of waiting for the busy timeout.  A read-only
        # one (read_only()) takes no lock: in WAL mode it reads a snapshot.
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN DEFERRED")
            return
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except exc.OperationalError as e:
            if "locked" not in str(e.orig) or not engine.url.database:
                raise
            # Nothing is written yet, so waiting once more is safe; who held
            # the lock that long is logged: a transaction that lasts is a bug.
            holders = sqlite_lock_holders(engine.url.database)
            log.warning("the database %s stayed locked for the busy timeout (%d s), waiting "
                        "once more; its write lock is held by %s", engine.url.database,
                        SQLITE_BUSY_TIMEOUT_MS // 1000,
                        "; ".join(holders) or "no process this one can see")  # fmt: skip
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_lock_holders(path: str, locks: Path = Path("/proc/locks")) -> list[str]:
    """Who holds a write lock on a SQLite database (its file or, in WAL
    mode, its ``-shm`` index, where SQLite takes the writer's lock), as
    ``pid N (command line)`` from Linux's ``/proc/locks``; other processes
    only, since a process's own locks are not the wait.  [] elsewhere."""
    wanted: dict[tuple[int, int, int], str] = {}
    for name in (path, f"{path}-shm"):
        try:
            st = os.stat(name)
        except OSError:
            continue
        wanted[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = name
    try:
        lines = locks.read_text().splitlines()
    except OSError:
        return []
    pids: dict[int, None] = {}
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 8:
            continue  # a waiter, not a holder
        _, kind, _, access, pid, where = fields[:6]
        major, minor, inode = where.split(":") if where.count(":") == 2 else ("", "", "")
        try:
            key = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if kind in ("POSIX", "OFDLCK") and access == "WRITE" and key in wanted and (
                int(pid) != os.getpid()):  # fmt: skip
            pids[int(pid)] = None
    return [f"pid {pid} ({_command_line(pid)})" for pid in pids]


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "gone"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200] or "?"


def _discard_connections_after_fork(engine: Engine) -> None:
    # SQLAlchemy's documented recipe: a pooled connection must never be used
    # by two processes, so a child process opens its own.
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def on_checkout(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        if record.info.get("pid") != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None  # type: ignore[misc]
            raise exc.DisconnectionError("connection was opened by another process")


class _ForkGate:
    """No fork while a SQLite connection is in use in this process.

    SQLite keeps a process's locks in memory it shares between the
    process's connections to a file.  A child forked while a thread held a
    transaction inherits that memory: its own new connections then find the
    write lock "held by another connection of this process" and wait out
    every busy timeout ("database is locked" in each job of an RQ work horse
    forked at that moment, while the worker's recovery thread wrote).  So a
    fork (``os.register_at_fork``) waits until no connection is checked
    out, and none is checked out until the fork is done.
    """

    WAIT = 30.0  # then fork anyway, saying so: the forking thread may hold one itself

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(before=self._before, after_in_parent=self._after_in_parent,
                            after_in_child=self._reset)  # fmt: skip

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._in_use = 0

    def watch(self, engine: Engine) -> None:
        event.listen(engine, "checkout", self._checkout)
        event.listen(engine, "checkin", self._checkin)

    def _checkout(self, *_: Any) -> None:
        with self._cond:
            self._in_use += 1

    def _checkin(self, *_: Any) -> None:
        with self._cond:
            self._in_use = max(self._in_use - 1, 0)
            if not self._in_use:
                self._cond.notify_all()

    def _before(self) -> None:
        self._cond.acquire()  # held through the fork: no checkout starts meanwhile
        deadline = time.monotonic() + self.WAIT
        while self._in_use and (left := deadline - time.monotonic()) > 0:
            self._cond.wait(left)
        if self._in_use:
            log.warning("forking while %d SQLite connection(s) of this process are in use: "
                        "the child may find the database locked", self._in_use)  # fmt: skip

    def _after_in_parent(self) -> None:
        self._cond.release()


_FORK_GATE = _ForkGate()

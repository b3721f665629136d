"""Models, migrations and engines, on SQLite and on PostgreSQL.

The PostgreSQL half runs when TEST_DATABASE_URL names a server (scripts/test
starts one); every test gets a fresh database, created and dropped here, so
runs never collide.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, delete, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from provisioner import db
from provisioner.errors import ConfigError, PermanentError, TransientError
from provisioner.models import (
    ApiToken,
    AuthKind,
    Base,
    Container,
    ContainerEvent,
    FailurePolicy,
    Lease,
    Lifecycle,
    Node,
    User,
)


def make_node(session: Session, name: str = "pve1") -> Node:
    node = Node(
        name=name,
        host="127.0.0.2",
        pve_node="pve",
        auth_kind=AuthKind.TOKEN,
        pve_user="root@pam",
        token_name="prov",
        secret_ciphertext="v1:kid:bm9kZQ",
    )
    session.add(node)
    session.flush()
    return node


def make_container(session: Session, node: Node, **kw: Any) -> Container:
    container = Container(node=node, template="debian-base", hostname="ct1", **kw)
    session.add(container)
    session.flush()
    return container


# -- migrations -----------------------------------------------------------


def test_upgrade_from_empty_creates_the_schema(db_url: str) -> None:
    assert db.current_revision(db_url) is None
    db.upgrade(db_url)
    assert db.current_revision(db_url) == db.head_revision() == "0006"
    db.upgrade(db_url)  # a second run changes nothing
    assert db.current_revision(db_url) == "0006"
    engine = db.make_engine(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def _schema(engine: Engine) -> dict[str, Any]:
    """Everything reflection tells about the model tables, comparable."""
    insp = inspect(engine)
    schema: dict[str, Any] = {}
    for table in sorted(Base.metadata.tables):
        schema[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)],
            "pk": insp.get_pk_constraint(table),
            "fks": sorted((fk["name"], fk["constrained_columns"], fk["referred_table"],
                           fk["referred_columns"], fk["options"])
                          for fk in insp.get_foreign_keys(table)),
            "uniques": sorted((u["name"], u["column_names"]) for u in insp.get_unique_constraints(table)),
            "indexes": sorted((i["name"], i["column_names"], i["unique"]) for i in insp.get_indexes(table)),
            "checks": sorted((c["name"], " ".join(c["sqltext"].split()))
                             for c in insp.get_check_constraints(table)),
        }  # fmt: skip
    return schema


def test_migrated_schema_matches_the_models(new_db: Callable[[], str]) -> None:
    migrated_url, reference_url = new_db(), new_db()
    db.upgrade(migrated_url)
    migrated, reference = db.make_engine(migrated_url), db.make_engine(reference_url)
    try:
        Base.metadata.create_all(reference)
        with migrated.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        # compare_metadata ignores CHECK constraints and ON DELETE; this does not.
        migrated_schema = _schema(migrated)
        assert migrated_schema == _schema(reference)
        checks = migrated_schema["containers"]["checks"]
        assert [name for name, _ in checks] == [
            "ck_containers_failure_policy",
            "ck_containers_lifecycle",
        ]
    finally:
        migrated.dispose()
        reference.dispose()


# (type, phase, message) of terminal events as pipeline/job.py words them -> the outcome
# migration 0002 gives them (what /metrics read from the wording before)
WORDED_OUTCOMES = [
    ("complete", "finalize", "CT 104 is ready at 198.18.0.130/24", "ready"),
    ("error", "scripts", "scripts failed: script 20-check.sh exited with 3 (fix it)", "error"),
    ("error", "create", "create failed: storage 'local' is full", "error"),
    ("complete", "create", "destroyed", "destroyed"),
    ("complete", "finalize", "destroyed the record only (CT 104 is gone from node pve1)",
     "destroyed"),
    ("complete", "finalize", "stop done", "done"),
    ("error", "finalize", "start failed: CT 104 is locked (wait, then retry)", "failed"),
    ("error", "scripts", "destroy failed: CT 104 is not ours", "failed"),
    ("error", "deploy", "resync failed: CT 104 is gone", "failed"),
    ("error", None, "internal error: boom", "failed"),
    ("error", "start", "Start failed: not the wording", "failed"),  # case matters
]  # fmt: skip


def test_migration_0002_gives_stored_terminal_events_their_outcome(db_url: str) -> None:
    db.upgrade(db_url, "0001")
    # the tables as revision 0001 has them (the models have moved on)
    nodes = sa.table("nodes", *(sa.column(n) for n in ("name", "host", "port", "pve_node",
                     "auth_kind", "pve_user", "token_name", "secret_ciphertext")),
                     sa.column("tls_insecure", sa.Boolean()),
                     *(sa.column(n, sa.DateTime(timezone=True))
                       for n in ("created_at", "updated_at")))  # fmt: skip
    containers = sa.table("containers", *(sa.column(n) for n in ("id", "node_id", "template",
                          "hostname", "lifecycle", "failure_policy", "attempts", "next_seq")),
                          *(sa.column(n, sa.JSON()) for n in ("request", "finished_phases",
                                                              "finished_scripts", "services")),
                          *(sa.column(n, sa.DateTime(timezone=True))
                            for n in ("created_at", "updated_at")))  # fmt: skip
    events = sa.table("container_events", *(sa.column(n) for n in ("container_id", "seq", "type",
                      "phase", "message")), sa.column("ts", sa.DateTime(timezone=True)))  # fmt: skip
    now = datetime.now(UTC)
    cid = "abcd0000-0000-4000-8000-000000000001"
    stored = [("step", "create", "creating", None), ("log", "create", "a line", None),
              *WORDED_OUTCOMES]  # fmt: skip
    engine = db.make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(nodes).values(
                name="pve1", host="127.0.0.2", port=8006, pve_node="pve", auth_kind="token",
                pve_user="root@pam", token_name="prov", secret_ciphertext="v1:kid:bm9kZQ",
                tls_insecure=False, created_at=now, updated_at=now))  # fmt: skip
            node_id = conn.scalar(sa.text("SELECT id FROM nodes"))
            conn.execute(sa.insert(containers).values(
                id=cid, node_id=node_id, template="debian-base", hostname="ct1",
                lifecycle="ready", failure_policy="keep", attempts=1, next_seq=len(stored) + 1,
                request={}, finished_phases=[], finished_scripts=[], services=[],
                created_at=now, updated_at=now))  # fmt: skip
            conn.execute(sa.insert(events), [
                {"container_id": cid, "seq": seq, "type": kind, "phase": phase,
                 "message": message, "ts": now}
                for seq, (kind, phase, message, _) in enumerate(stored, 1)])  # fmt: skip
    finally:
        engine.dispose()

    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    try:
        with engine.connect() as conn:
            outcomes = conn.scalars(sa.text(
                "SELECT outcome FROM container_events ORDER BY seq")).all()  # fmt: skip
    finally:
        engine.dispose()
    assert outcomes == [outcome for *_, outcome in stored]

    command.downgrade(db.alembic_config(db_url), "0001")  # and back: the column goes
    engine = db.make_engine(db_url)
    try:
        assert "outcome" not in {c["name"] for c in inspect(engine).get_columns("container_events")}
    finally:
        engine.dispose()
    db.upgrade(db_url)
    assert db.current_revision(db_url) == "0006"


def test_unknown_revision_in_database_is_a_permanent_error(db_url: str) -> None:
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'fffffff'"))
    engine.dispose()
    with pytest.raises(PermanentError, match="fffffff"):
        db.upgrade(db_url)


def test_unreachable_database_is_a_transient_error() -> None:
    url = "postgresql+psycopg://prov:hunter2@127.0.0.1:1/prov?connect_timeout=2"
    with pytest.raises(TransientError) as info:
        db.upgrade(url)
    assert "127.0.0.1:1" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("url", ["mysql://u:hunter2@h/db", "nonsense"])
def test_unsupported_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        db.make_engine(url)
    assert "hunter2" not in str(info.value)


# -- engines ----------------------------------------------------------------


def test_sqlite_runs_in_wal_mode_with_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/new/dir/p.db")  # creates the directory
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
    assert (tmp_path / "new/dir/p.db-wal").exists() or (tmp_path / "new/dir/p.db").exists()


def test_an_unpooled_engine_closes_each_connection_with_its_session(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/p.db", pooled=False)
    try:
        with engine.connect() as conn:  # still configured: WAL, BEGIN IMMEDIATE
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            first = conn.connection.dbapi_connection
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection is not first
        # The last connection closed: SQLite checkpointed and removed its WAL.
        assert not (tmp_path / "p.db-wal").exists()
    finally:
        engine.dispose()


def test_connections_are_not_reused_by_another_process(engine: Engine) -> None:
    with engine.connect() as conn:
        first = conn.connection.dbapi_connection
        conn.connection.info["pid"] = -1  # as if opened before a fork
    with engine.connect() as conn:
        assert conn.connection.dbapi_connection is not first
    with engine.connect() as conn:
        second = conn.connection.dbapi_connection
    with engine.connect() as conn:
        assert conn.connection.dbapi_connection is second  # pooling still works
    assert first is not None
    first.close()  # really ours: the pool left it alone, as it must after a fork


def _append_events(url: str, container_id: str, count: int, go: Any, errors: Any) -> None:
    """Child process: take the next seq and append an event, ``count`` times,
    each in its own transaction (the read-then-write pattern of the event
    publisher)."""
    engine = db.make_engine(url)
    factory = db.session_factory(engine)
    go.wait(30)
    try:
        for i in range(count):
            with db.session_scope(factory) as session:
                container = session.get(Container, container_id, with_for_update=True)
                assert container is not None
                seq = container.next_seq
                container.next_seq = seq + 1
                session.add(ContainerEvent(container_id=container_id, seq=seq, type="log",
                                           message=f"{os.getpid()} line {i}"))  # fmt: skip
    except Exception as exc:
        errors.put(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        engine.dispose()


def test_two_processes_write_concurrently(db_url: str, factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as session:
        container_id = make_container(session, make_node(session)).id
    ctx = multiprocessing.get_context("spawn")
    go, errors = ctx.Event(), ctx.Queue()
    count = 150
    procs = [
        ctx.Process(target=_append_events, args=(db_url, container_id, count, go, errors))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    go.set()
    for proc in procs:
        proc.join(90)
    assert errors.empty(), errors.get()
    assert [proc.exitcode for proc in procs] == [0, 0]
    with db.session_scope(factory) as session:
        seqs = session.scalars(
            select(ContainerEvent.seq).where(ContainerEvent.container_id == container_id)
        ).all()
        assert sorted(seqs) == list(range(1, 2 * count + 1))
        assert session.get(Container, container_id).next_seq == 2 * count + 1  # type: ignore[union-attr]


# -- models -----------------------------------------------------------------


def test_container_defaults_and_round_trip(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as session:
        node = make_node(session)
        container = make_container(
            session, node, request={"cores": 2, "features": ["nesting"]},
            root_password_ciphertext="v1:kid:cHc", services=[{"port": 22, "name": "sshd"}],
        )  # fmt: skip
        cid = container.id
    assert len(cid) == 36
    with db.session_scope(factory) as session:
        c = session.get(Container, cid)
        assert c is not None
        assert c.lifecycle is Lifecycle.PENDING
        assert c.failure_policy is FailurePolicy.KEEP
        assert (c.finished_phases, c.finished_scripts, c.attempts, c.next_seq) == ([], [], 0, 1)
        assert c.request == {"cores": 2, "features": ["nesting"]}
        assert c.root_password_ciphertext == "v1:kid:cHc"
        assert c.services == [{"port": 22, "name": "sshd"}]
        assert c.node.token_id == "root@pam!prov"
        assert c.node.secret_ciphertext == "v1:kid:bm9kZQ"
        assert c.created_at.tzinfo is UTC
        assert abs(datetime.now(UTC) - c.created_at) < timedelta(minutes=1)
        c.finished_phases.append("create")  # in-place changes are tracked
        c.lifecycle = Lifecycle.CREATING
        c.started_at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    with db.session_scope(factory) as session:
        c = session.get(Container, cid)
        assert c is not None
        assert c.finished_phases == ["create"]
        assert c.lifecycle is Lifecycle.CREATING
        assert c.started_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        assert c.updated_at >= c.created_at


def test_naive_datetimes_are_refused(factory: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="naive datetime"), db.session_scope(factory) as s:
        make_container(s, make_node(s), started_at=datetime(2026, 1, 1))


def test_event_seq_is_unique_per_container(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as session:
        node = make_node(session)
        first, second = make_container(session, node), make_container(session, node)
        session.add_all([
            ContainerEvent(container_id=first.id, seq=1, type="step", phase="create", percent=5),
            ContainerEvent(container_id=second.id, seq=1, type="step"),  # another container: fine
        ])  # fmt: skip
        first_id = first.id
    with pytest.raises(IntegrityError), db.session_scope(factory) as session:
        session.add(ContainerEvent(container_id=first_id, seq=1, type="log", message="dup"))
    with db.session_scope(factory) as session:
        assert session.scalar(select(ContainerEvent.type).where(ContainerEvent.seq == 1,
                              ContainerEvent.container_id == first_id)) == "step"  # fmt: skip


def test_deleting_a_container_deletes_its_events_and_lease(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as session:
        container = make_container(session, make_node(session))
        session.add(ContainerEvent(container_id=container.id, seq=1, type="step"))
        session.add(Lease(container_id=container.id, holder="worker-1",
                          expires_at=datetime.now(UTC) + timedelta(seconds=60)))  # fmt: skip
        cid = container.id
    with db.session_scope(factory) as session:
        # A bulk DELETE: the database's ON DELETE CASCADE does the work, not the ORM.
        session.execute(delete(Container).where(Container.id == cid))
    with db.session_scope(factory) as session:
        assert session.scalars(select(ContainerEvent)).all() == []
        assert session.scalars(select(Lease)).all() == []


def test_node_with_containers_cannot_be_deleted(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as session:
        make_container(session, make_node(session))
    with pytest.raises(IntegrityError), db.session_scope(factory) as session:
        session.execute(delete(Node))


def test_foreign_keys_are_enforced(factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), db.session_scope(factory) as session:
        session.add(ContainerEvent(container_id="no-such-container", seq=1, type="log"))


def test_lifecycle_is_checked_by_the_database(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as session:
        make_container(session, make_node(session))
    with pytest.raises(IntegrityError), db.session_scope(factory) as session:
        session.execute(text("UPDATE containers SET lifecycle = 'bogus'"))


def test_token_auth_needs_a_token_name(factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), db.session_scope(factory) as session:
        node = make_node(session)
        node.token_name = None
    with db.session_scope(factory) as session:
        node = make_node(session)
        node.auth_kind, node.token_name = AuthKind.PASSWORD, None
        assert node.token_id is None


def test_users_and_tokens(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as session:
        user = User(username="admin", password_hash="scrypt$...", is_admin=True)
        user.api_tokens.append(ApiToken(name="ci", token_hash="h1", prefix="prv_ab12"))
        session.add(user)
    with pytest.raises(IntegrityError), db.session_scope(factory) as session:
        session.add(User(username="admin", password_hash="x"))
    with pytest.raises(IntegrityError), db.session_scope(factory) as session:
        other = User(username="other", password_hash="x")
        other.api_tokens.append(ApiToken(name="ci", token_hash="h1", prefix="prv_cd34"))
        session.add(other)
    with db.session_scope(factory) as session:
        token = session.scalars(select(ApiToken)).one()
        assert (token.revoked, token.last_used_at, token.user.username) == (False, None, "admin")
        session.execute(delete(User))
    with db.session_scope(factory) as session:
        assert session.scalars(select(ApiToken)).all() == []


def test_lease_expiry(factory: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    lease = Lease(container_id="x", holder="w", expires_at=now + timedelta(seconds=5))
    assert not lease.expired(now)
    assert lease.expired(now + timedelta(seconds=5))


def test_session_scope_commits_or_rolls_back(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as session:
        make_node(session, "kept")
    with pytest.raises(RuntimeError), db.session_scope(factory) as session:
        make_node(session, "dropped")
        raise RuntimeError("boom")
    with db.session_scope(factory) as session:
        assert session.scalars(select(Node.name)).all() == ["kept"]


def lock_holder(path: Path, then: str) -> tuple[Engine, subprocess.Popen[str]]:
    """A database at ``path`` (one table) and another process holding its
    write lock (``BEGIN IMMEDIATE``) that runs ``then``, then waits for stdin."""
    engine = db.make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], "
         "isolation_level=None); c.execute('BEGIN IMMEDIATE'); print('held', flush=True); "
         f"{then}sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return engine, holder


def test_a_locked_sqlite_database_names_who_holds_its_write_lock(tmp_path: Path) -> None:
    # a busy timeout that runs out says which process held the writer's lock
    path = tmp_path / "held.db"
    engine, holder = lock_holder(path, "c.execute('INSERT INTO t VALUES (1)'); ")
    try:
        holders = db.sqlite_lock_holders(str(path))
        assert len(holders) == 1 and holders[0].startswith(f"pid {holder.pid} (")
        assert "BEGIN IMMEDIATE" in holders[0]
    finally:
        holder.communicate(timeout=10)
    engine.dispose()
    assert db.sqlite_lock_holders(str(path)) == []
    assert db.sqlite_lock_holders(str(tmp_path / "absent.db")) == []


def test_a_begin_that_waited_out_the_busy_timeout_waits_once_more(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 400)
    path = tmp_path / "slow.db"
    engine, holder = lock_holder(path, "time.sleep(0.6); c.execute('COMMIT'); ")
    try:
        with engine.begin() as conn:  # the first wait runs out, the second gets it
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    finally:
        holder.communicate(timeout=10)
        engine.dispose()
    assert f"its write lock is held by pid {holder.pid} (" in caplog.text


def test_a_child_forked_while_a_thread_writes_can_write(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # RQ forks a work horse per job while the worker's own threads (recovery)
    # use the database: a fork mid-transaction would leave the child's SQLite
    # believing its process holds the write lock, for good
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 1000)
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    writing = threading.Event()

    def write() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            writing.set()
            time.sleep(0.5)

    writer = threading.Thread(target=write)
    writer.start()
    writing.wait(5)
    started = time.monotonic()
    pid = os.fork()  # waits for the writer's commit
    if pid == 0:
        code = 1
        try:
            child = db.make_engine(url)
            with child.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (2)")
            code = 0
        finally:
            os._exit(code)
    waited = time.monotonic() - started
    writer.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert waited >= 0.3  # the fork waited for the transaction to end
    with engine.connect() as conn:
        assert sorted(conn.exec_driver_sql("SELECT x FROM t").scalars()) == [1, 2]
    engine.dispose()

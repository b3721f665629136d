"""``provisioner db upgrade`` through click's CliRunner."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import main


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No settings leak in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("PROVISIONER_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PROVISIONER_DATA_DIR", str(tmp_path / "data"))


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def test_db_upgrade_creates_the_default_sqlite_database(tmp_path: Path) -> None:
    db_file = tmp_path / "data" / "provisioner.db"
    result = run("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"database sqlite:///{db_file} upgraded from revision none to 0006\n"
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0006",)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"nodes", "containers", "container_events", "leases", "users"} <= tables

    again = run("db", "upgrade")
    assert again.exit_code == 0
    assert again.stdout == f"database sqlite:///{db_file} is up to date (revision 0006)\n"


def test_db_upgrade_uses_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "provisioner.toml"
    config.write_text(f'database_url = "sqlite:///{tmp_path}/from-file.db"\n')
    result = run("--config", str(config), "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-file.db").exists()


def test_bad_database_url_is_one_line_and_exit_2() -> None:
    result = run("db", "upgrade", DATABASE_URL="mysql://prov:hunter2@db/prov")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: DATABASE_URL must be a sqlite:///PATH or postgresql+psycopg://USER@HOST/DB URL,"
        " got 'mysql://prov:***@db/prov'\n"
    )
    assert "Traceback" not in result.output


def test_bad_setting_is_exit_2() -> None:
    result = run("db", "upgrade", PROVISIONER_JOB_TIMEOUT="abc")
    assert result.exit_code == 2
    assert result.stderr == "error: PROVISIONER_JOB_TIMEOUT must be a positive integer, got 'abc'\n"


def test_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    result = run("db", "upgrade", PROVISIONER_CONFIG=str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    assert result.stderr == f"error: config file {tmp_path / 'nope.toml'} does not exist\n"


def test_unreachable_database_is_exit_1() -> None:
    url = "postgresql+psycopg://prov:hunter2@127.0.0.1:1/prov?connect_timeout=2"
    result = run("db", "upgrade", DATABASE_URL=url)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: database postgresql+psycopg://prov:***@127.0.0.1:1/prov?connect_timeout=2 "
        "is unavailable: "
    )
    assert result.stderr.count("\n") == 1
    assert "hunter2" not in result.output


def test_help_works_with_a_broken_configuration() -> None:
    result = run("db", "--help", PROVISIONER_JOB_TIMEOUT="abc")
    assert result.exit_code == 0
    assert "upgrade" in result.stdout

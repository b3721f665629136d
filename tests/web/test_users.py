"""Users and API tokens (provisioner.users) and their CLI commands."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main
from provisioner import db, users
from provisioner.config import Settings, env_var
from provisioner.models import ApiToken, User, utcnow


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine(settings.database_url)
    yield db.session_factory(engine)
    engine.dispose()


def test_passwords_are_hashed_and_verified(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as s:
        users.create_user(s, "bob", "a long enough password")
    with factory() as s:
        stored = s.scalars(select(User)).one()
        assert stored.password_hash.startswith("scrypt:")
        assert "a long enough password" not in stored.password_hash
        assert users.verify_password(s, "bob", "a long enough password") is not None
        assert users.verify_password(s, "bob", "a long enough passworD") is None
        assert users.verify_password(s, "nobody", "a long enough password") is None


@pytest.mark.parametrize(("username", "password", "field"), [
    ("", "a long enough password", "username"),
    ("with space", "a long enough password", "username"),
    ("x" * 65, "a long enough password", "username"),
    ("carol", "short", "password"),
    ("carol", "x" * 5000, "password"),
])  # fmt: skip
def test_create_user_refuses(factory: sessionmaker[Session], username: str, password: str,
                             field: str) -> None:  # fmt: skip
    with factory() as s, pytest.raises(users.UserError) as err:
        users.create_user(s, username, password)
    assert err.value.field == field


def test_duplicate_user_and_password_change(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as s:
        user = users.create_user(s, "dave", "first password!")
        stamp = users.password_stamp(user)
    with factory() as s, pytest.raises(users.UserError, match="already exists"):
        users.create_user(s, "dave", "another password")
    with db.session_scope(factory) as s:
        changed = users.set_password(s, "dave", "second password!")
        assert users.password_stamp(changed) != stamp
    with factory() as s:
        assert users.verify_password(s, "dave", "first password!") is None
        assert users.verify_password(s, "dave", "second password!") is not None
        with pytest.raises(users.UserError, match="no user named"):
            users.set_password(s, "erin", "whatever password")


def test_api_tokens_store_only_a_hash(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as s:
        users.create_user(s, "frank", "frank's password")
        _row, token = users.create_api_token(s, "frank", "ci")
    assert token.startswith("lxcp_") and len(token) > 40
    with factory() as s:
        stored = s.scalars(select(ApiToken)).one()
        assert stored.prefix == token[:12] and stored.token_hash != token
        assert token not in (stored.token_hash, stored.prefix)
        assert stored.last_used_at is None
    with db.session_scope(factory) as s:
        assert users.verify_api_token(s, token).username == "frank"  # type: ignore[union-attr]
        assert users.verify_api_token(s, token + "x") is None
        assert users.verify_api_token(s, "not-a-token") is None
    with factory() as s:
        used = s.scalars(select(ApiToken)).one().last_used_at
        assert used is not None and utcnow() - used < timedelta(seconds=10)
    with db.session_scope(factory) as s:
        with pytest.raises(users.UserError, match="already has a token"):
            users.create_api_token(s, "frank", "ci")
        users.revoke_token(s, "frank", "ci")
    with factory() as s:
        assert users.verify_api_token(s, token) is None
        assert [t.revoked for t in users.list_tokens(s, "frank")] == [True]
        with pytest.raises(users.UserError, match="no token named"):
            users.revoke_token(s, "frank", "nope")


def _env(settings: Settings) -> dict[str, str]:
    return {env_var("database_url"): settings.database_url,
            env_var("data_dir"): str(settings.data_dir),
            env_var("secret_key"): settings.secret_key or "",
            env_var("redis_url"): settings.redis_url}  # fmt: skip


def test_cli_user_and_token_commands(settings: Settings, factory: sessionmaker[Session]) -> None:
    runner = CliRunner()
    env = _env(settings)
    added = runner.invoke(main, ["user", "add", "gina", "--admin", "--password-stdin"],
                          input="gina's password\n", env=env)  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "gina's password" not in added.output
    generated = runner.invoke(main, ["user", "add", "hank"], env=env)  # no terminal: generated
    assert generated.exit_code == 0, generated.output
    password = generated.stdout.split("password: ", 1)[1].split()[0]
    with factory() as s:
        assert users.verify_password(s, "gina", "gina's password").is_admin  # type: ignore[union-attr]
        hank = users.verify_password(s, "hank", password)
        assert hank is not None and not hank.is_admin
    again = runner.invoke(main, ["user", "add", "hank", "--generate"], env=env)
    assert again.exit_code == 5 and again.stderr == (
        "error: username: a user named 'hank' already exists\n"
    )
    weak = runner.invoke(main, ["user", "passwd", "hank", "--password-stdin"], input="short\n",
                         env=env)  # fmt: skip
    assert weak.exit_code == 2 and "at least" in weak.output
    changed = runner.invoke(main, ["user", "passwd", "hank", "--password-stdin"],
                            input="hank's new password\n", env=env)  # fmt: skip
    assert changed.exit_code == 0, changed.output
    with factory() as s:
        assert users.verify_password(s, "hank", "hank's new password") is not None

    created = runner.invoke(main, ["token", "create", "gina", "deploy"], env=env)
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    with db.session_scope(factory) as s:
        assert users.verify_api_token(s, secret).username == "gina"  # type: ignore[union-attr]
    listed = runner.invoke(main, ["token", "list", "gina"], env=env)
    assert "deploy" in listed.stdout and secret[:12] in listed.stdout
    assert secret not in listed.stdout
    revoked = runner.invoke(main, ["token", "revoke", "gina", "deploy"], env=env)
    assert revoked.exit_code == 0, revoked.output
    with db.session_scope(factory) as s:
        assert users.verify_api_token(s, secret) is None
    listed = runner.invoke(main, ["user", "list"], env=env)
    assert listed.stdout.split() == ["gina", "admin", "hank", "user"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["user", "add", "bad name", "--generate"], 2, "error: username: 1-64 characters"),
    (["user", "passwd", "nobody", "--generate"], 3, "error: username: no user named 'nobody'"),
    (["token", "create", "nobody", "ci"], 3, "error: username: no user named 'nobody'"),
    (["token", "create", "gina", "bad name!"], 2, "error: name: 1-64 characters"),
    (["token", "create", "gina", "ci"], 5, "error: name: user 'gina' already has a token named"),
    (["token", "revoke", "gina", "nope"], 3, "error: name: user 'gina' has no token named 'nope'"),
    (["token", "revoke", "nobody", "ci"], 3, "error: username: no user named 'nobody'"),
    (["token", "list", "nobody"], 3, "error: username: no user named 'nobody'"),
])  # fmt: skip
def test_cli_user_and_token_errors_are_one_line(settings: Settings, args: list[str], code: int,
                                                message: str) -> None:  # fmt: skip
    runner = CliRunner()
    env = _env(settings)
    assert runner.invoke(main, ["user", "add", "gina", "--generate"], env=env).exit_code == 0
    assert runner.invoke(main, ["token", "create", "gina", "ci"], env=env).exit_code == 0
    result = runner.invoke(main, args, env=env)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.output

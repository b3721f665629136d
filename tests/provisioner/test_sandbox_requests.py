"""Sandboxes asked for, listed and extended (``provisioner.sandbox_requests``),
on SQLite and PostgreSQL, the live site not asked (``check_source=False``:
tests/pipeline/test_sandboxes.py asks a real one).  The queue is away here:
the request is stored all the same (as any request)."""

from __future__ import annotations

import base64
import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from provisioner.config import Settings
from provisioner.errors import InvalidRequest
from provisioner.models import Container, Lifecycle, Node, Sandbox, utcnow
from provisioner.sandbox_requests import (
    SandboxRequest,
    extend_sandbox,
    list_sandboxes,
    request_sandbox,
    sandbox_json,
)
from provisioner.secrets.box import SecretBox, generate_key
from provisioner.secrets.vault import (
    rotate_all,
    sandbox_secret,
    set_node_secret,
    set_sandbox_secret,
)

PASSWORD = "abcd EFGH ijkl MNOP qrst UVWX"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url="sqlite://", sandbox_max_per_client=2,
                    sandbox_max_per_owner=3, secret_key_file=tmp_path / "secret.key",
                    queue_name="test-sandboxes")  # fmt: skip


@pytest.fixture
def away() -> Redis:
    return Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)


def ask(factory: sessionmaker[Session], box: SecretBox, settings: Settings, redis: Redis,
        req: SandboxRequest) -> tuple[str, bool]:  # fmt: skip
    with factory() as session:
        got = request_sandbox(session, box, settings, redis, req, check_source=False)
        return got.container.id, got.existing


def count(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(Container)) or 0)


def test_a_sandbox_is_stored_with_its_password_encrypted_and_found_again(
        factory: sessionmaker[Session], box: SecretBox, settings: Settings, node: str,
        away: Redis) -> None:  # fmt: skip
    req = SandboxRequest(source_url="https://acme.example/", client="acme", user="editor",
                         app_password=PASSWORD, node=node, ttl="2d", owner="ann")  # fmt: skip
    cid, existing = ask(factory, box, settings, away, req)
    assert not existing
    with factory() as session:
        ct = session.get(Container, cid)
        assert ct is not None and ct.sandbox is not None
        assert (ct.plan, ct.owner, ct.environment, ct.template, ct.hostname) == (
            "sandbox",
            "ann",
            "development",
            "wordpress",
            "sandbox-acme",
        )
        sb = ct.sandbox
        assert sb.source_url == "https://acme.example" and sb.source_user == "editor"
        assert "EFGH" not in sb.source_secret_ciphertext
        assert sandbox_secret(box, sb, "source") == PASSWORD.replace(" ", "")
        assert timedelta(days=2) - (sb.expires_at - sb.created_at) < timedelta(seconds=5)
        body = sandbox_json(ct)
        assert body["client"] == "acme" and PASSWORD.replace(" ", "") not in str(body)
    # asked again: the same one; --new: another, with the next name
    assert ask(factory, box, settings, away, req) == (cid, True)
    second, existing = ask(factory, box, settings, away, dataclasses.replace(req, new=True))
    assert not existing and second != cid
    with factory() as session:
        assert [c.hostname for c in list_sandboxes(session, client="acme")] == [
            "sandbox-acme", "sandbox-acme-2"]  # fmt: skip
        assert list_sandboxes(session, owner="bob") == []


def test_limits_per_client_and_per_owner(factory: sessionmaker[Session], box: SecretBox,
                                         settings: Settings, node: str, away: Redis) -> None:  # fmt: skip
    req = SandboxRequest(source_url="https://acme.example", client="acme", user="editor",
                         app_password=PASSWORD, node=node, owner="ann", new=True)  # fmt: skip
    ask(factory, box, settings, away, req)
    ask(factory, box, settings, away, req)
    before = count(factory)
    with pytest.raises(InvalidRequest, match=r"^client: acme has 2 sandbox\(es\), the limit is 2"):
        ask(factory, box, settings, away, req)
    ask(factory, box, settings, away, dataclasses.replace(req, client="beta"))
    with pytest.raises(InvalidRequest, match=r"^owner: ann has 3 sandbox\(es\), the limit is 3"):
        ask(factory, box, settings, away, dataclasses.replace(req, client="gamma"))
    assert count(factory) == before + 1
    # a destroyed one no longer counts
    with factory() as session:
        first = list_sandboxes(session, client="acme")[0]
        first.lifecycle = Lifecycle.DESTROYED
        session.commit()
    ask(factory, box, settings, away, req)


def test_every_problem_at_once_and_nothing_stored(factory: sessionmaker[Session],
                                                  box: SecretBox, settings: Settings,
                                                  node: str, away: Redis) -> None:  # fmt: skip
    bad = SandboxRequest(source_url="http://acme.example", client="acme", user="",
                         app_password="   ", node=node, ttl="9y", fingerprint="abc",
                         new=True)  # fmt: skip
    with pytest.raises(InvalidRequest) as caught:
        ask(factory, box, settings, away, bad)
    fields = [p.message.split(":", 1)[0] for p in caught.value.problems]
    assert fields == ["from", "user", "app_password", "fingerprint", "ttl"], caught.value.problems
    good = SandboxRequest(source_url="https://a.example", client="acme", user="u",
                          app_password=PASSWORD, node=node, new=True)  # fmt: skip
    with pytest.raises(InvalidRequest) as caught:
        ask(factory, box, settings, away, dataclasses.replace(good, client="No!"))
    assert [p.message.split(":", 1)[0] for p in caught.value.problems] == ["client"]
    with pytest.raises(InvalidRequest, match=r"^node: "):
        ask(factory, box, settings, away, SandboxRequest(
            source_url="https://a.example", client="acme", user="u", app_password=PASSWORD,
            node="nope", new=True))  # fmt: skip
    assert count(factory) == 0


def test_extend(factory: sessionmaker[Session], box: SecretBox, settings: Settings, node: str,
                away: Redis) -> None:  # fmt: skip
    cid, _ = ask(factory, box, settings, away, SandboxRequest(
        source_url="https://a.example", client="acme", user="u", app_password=PASSWORD,
        node=node, ttl="1h"))  # fmt: skip
    with factory() as session:
        ct = session.get(Container, cid)
        assert ct is not None and ct.sandbox is not None
        ct.sandbox.warned_at = utcnow()
        was = ct.sandbox.expires_at
        until = extend_sandbox(session, ct, "1d")
        assert until - was == timedelta(days=1) and ct.sandbox.warned_at is None
        with pytest.raises(InvalidRequest, match=r"^by: "):
            extend_sandbox(session, ct, "forever")
        ct.lifecycle = Lifecycle.DESTROYED
        with pytest.raises(InvalidRequest, match="destroyed already"):
            extend_sandbox(session, ct, "1d")
        plain = Container(node=ct.node, template="nginx", hostname="web")
        session.add(plain)
        session.flush()
        with pytest.raises(InvalidRequest, match="is not a sandbox"):
            extend_sandbox(session, plain, "1d")
        assert session.scalar(select(func.count()).select_from(Sandbox)) == 1


def raw_key() -> bytes:
    text_key = generate_key()
    return base64.urlsafe_b64decode(text_key + "=" * (-len(text_key) % 4))


def test_key_rotation_covers_both_application_passwords(
        factory: sessionmaker[Session], settings: Settings, node: str, away: Redis) -> None:  # fmt: skip
    old, new = raw_key(), raw_key()
    old_box = SecretBox([old])
    cid, _ = ask(factory, old_box, settings, away, SandboxRequest(
        source_url="https://a.example", client="acme", user="u", app_password=PASSWORD,
        node=node))  # fmt: skip
    with factory() as session:
        sb = session.get(Sandbox, cid)
        assert sb is not None
        set_sandbox_secret(old_box, sb, "target", "target-app-password")
        set_node_secret(old_box, session.scalars(select(Node)).one(), "token-secret")
        session.commit()
    with factory() as session:
        assert rotate_all(session, SecretBox([new, old])).reencrypted >= 3  # the root password too
        session.commit()
    only_new = SecretBox([new])
    with factory() as session:
        sb = session.get(Sandbox, cid)
        assert sb is not None
        assert sandbox_secret(only_new, sb, "source") == PASSWORD.replace(" ", "")
        assert sandbox_secret(only_new, sb, "target") == "target-app-password"

"""A running web app loads a key file that ``provisioner keys rotate`` changed."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from provisioner.config import Settings
from provisioner.secrets.keyfile import (
    add_key_to_file,
    load_secret_box,
    retire_key,
    set_current_key,
)
from web.app import create_app
from web.resources import KeyFileWatch


def test_the_app_follows_a_rotated_key_file(settings: Settings, tmp_path: Path) -> None:
    keyed = dataclasses.replace(settings, secret_key=None, secret_key_file=tmp_path / "k.key")
    app = create_app(keyed, {"TESTING": True})
    try:
        res = app.extensions["provisioner"]
        old = res.box.current_key_id
        new = add_key_to_file(keyed.secret_key_file, current=False)
        set_current_key(keyed.secret_key_file, new)
        deadline = time.monotonic() + KeyFileWatch.INTERVAL + 2
        while res.box.current_key_id != new:
            assert time.monotonic() < deadline, "the new key was not loaded"
            time.sleep(0.05)
        token = res.box.encrypt("a root password", aad="row")
        assert token.startswith(f"v1:{new}:")
        retire_key(keyed.secret_key_file, old)
        # what the app encrypts now, a worker (loading the file afresh) decrypts
        fresh = load_secret_box(None, keyed.secret_key_file)
        assert fresh.decrypt(token, aad="row") == "a root password"
    finally:
        app.extensions["provisioner"].close()


def test_a_broken_key_file_keeps_the_keys_loaded(settings: Settings, tmp_path: Path) -> None:
    keyed = dataclasses.replace(settings, secret_key=None, secret_key_file=tmp_path / "k.key")
    watch = KeyFileWatch(keyed)
    before = watch.box.current_key_id
    keyed.secret_key_file.chmod(0o644)  # unsafe: refused by load_secret_box
    keyed.secret_key_file.write_text("garbage\n")
    time.sleep(KeyFileWatch.INTERVAL + 0.1)
    assert watch.box.current_key_id == before
    # mended (a new key file): it is loaded at the next look
    keyed.secret_key_file.unlink()
    mended = load_secret_box(None, keyed.secret_key_file).current_key_id
    assert mended != before
    time.sleep(KeyFileWatch.INTERVAL + 0.1)
    assert watch.box.current_key_id == mended


def test_sessions_follow_the_key_file(settings: Settings, tmp_path: Path) -> None:
    """After a rotation every web process signs alike: the running one (it
    follows the file) and one started afterwards (it reads the file)."""
    from provisioner import users
    from tests.web.conftest import db_session, login

    keyed = dataclasses.replace(settings, secret_key=None, secret_key_file=tmp_path / "k.key")
    running = create_app(keyed, {"TESTING": True})
    fresh = None
    try:
        with db_session(running) as session:
            users.create_user(session, "alice", "correct horse battery")
        before = running.test_client()
        assert login(before).status_code == 302
        stale = before.get_cookie("provisioner_session")
        assert stale is not None
        old = running.extensions["provisioner"].box.current_key_id
        new = add_key_to_file(keyed.secret_key_file, current=False)
        set_current_key(keyed.secret_key_file, new)
        time.sleep(KeyFileWatch.INTERVAL + 0.1)
        # the old key still verifies; the answer's cookie is signed with the new one
        assert before.get("/api/me").status_code == 200
        retire_key(keyed.secret_key_file, old)
        time.sleep(KeyFileWatch.INTERVAL + 0.1)
        assert before.get("/api/me").status_code == 200  # a session in use moved along
        copy = running.test_client()
        copy.set_cookie("provisioner_session", stale.value)
        assert copy.get("/api/me").status_code == 401  # one signed with a retired key
        after = running.test_client()
        assert login(after).status_code == 302
        cookie = after.get_cookie("provisioner_session")
        assert cookie is not None
        fresh = create_app(keyed, {"TESTING": True})  # a process started after the rotation
        other = fresh.test_client()
        other.set_cookie("provisioner_session", cookie.value)
        assert other.get("/api/me").status_code == 200
    finally:
        running.extensions["provisioner"].close()
        if fresh is not None:
            fresh.extensions["provisioner"].close()

"""A running web app loads a key file that ``provisioner keys rotate`` changed."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from provisioner.config import Settings
from provisioner.secrets import add_key_to_file, load_secret_box, retire_key, set_current_key
from web.app import KeyFileWatch, create_app


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

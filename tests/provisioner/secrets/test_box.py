"""Secrets at rest: the AES-GCM box, key loading and rotation, generators."""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from provisioner.errors import ConfigError, PermanentError
from provisioner.logsafe import REDACTED, SecretRedactor, redact
from provisioner.secrets import box as secret_box
from provisioner.secrets import generate, keyfile

AAD = "node:pve1:token_secret"
PLAINTEXT = "7f3c2a9e-1111-2222-3333-444455556666"


def raw_key() -> bytes:
    return base64.urlsafe_b64decode(secret_box.generate_key())


@pytest.fixture
def old_key() -> bytes:
    return raw_key()


@pytest.fixture
def new_key() -> bytes:
    return raw_key()


def assert_no_secret(message: str, *secrets: str | bytes) -> None:
    for secret in secrets:
        if isinstance(secret, bytes):
            for form in (
                secret.hex(),
                base64.b64encode(secret).decode(),
                base64.urlsafe_b64encode(secret).decode(),
            ):
                assert form not in message
        else:
            assert secret not in message


# --- the box -----------------------------------------------------------------


def test_round_trip_and_token_format(old_key: bytes) -> None:
    box = secret_box.SecretBox([old_key], redactor=SecretRedactor())
    token = box.encrypt(PLAINTEXT, AAD)
    assert re.fullmatch(rf"v1:{secret_box.key_id(old_key)}:[A-Za-z0-9_-]+", token)
    assert PLAINTEXT not in token
    assert box.decrypt(token, AAD) == PLAINTEXT
    # A fresh nonce per message: the same secret never encrypts the same way twice.
    assert box.encrypt(PLAINTEXT, AAD) != token
    unicode_secret = "pässwörd ✓ with spaces"
    assert box.decrypt(box.encrypt(unicode_secret, AAD), AAD) == unicode_secret


def test_wrong_aad_is_refused_without_leaking(old_key: bytes) -> None:
    box = secret_box.SecretBox([old_key], redactor=SecretRedactor())
    token = box.encrypt(PLAINTEXT, "node:12:token_secret")
    for other in ("node:13:token_secret", "node:12:password", "container:12:token_secret"):
        with pytest.raises(
            secret_box.SecretError, match="altered or belongs to another field"
        ) as info:
            box.decrypt(token, other)
        assert other in str(info.value)
        assert_no_secret(str(info.value), PLAINTEXT, old_key)


@pytest.mark.parametrize("position", [3, 10, 25, -1])
def test_tampered_ciphertext_is_refused(old_key: bytes, position: int) -> None:
    box = secret_box.SecretBox([old_key], redactor=SecretRedactor())
    token = box.encrypt(PLAINTEXT, AAD)
    prefix, payload = token.rsplit(":", 1)
    blob = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    blob[position] ^= 0x01
    tampered = f"{prefix}:{base64.urlsafe_b64encode(bytes(blob)).decode().rstrip('=')}"
    with pytest.raises(secret_box.SecretError, match="altered"):
        box.decrypt(tampered, AAD)


@pytest.mark.parametrize(
    "token, message",
    [
        (PLAINTEXT, "not an encrypted secret"),  # a plaintext stored by mistake
        ("v1:abcd:AAAA", "not an encrypted secret"),
        ("v9:0123abcd:AAAA", "uses format 'v9'"),
        ("v1:{kid}:AAAA", "truncated"),
        ("v1:{kid}:%%%%", "not valid base64"),
    ],
)
def test_malformed_tokens_are_refused(old_key: bytes, token: str, message: str) -> None:
    box = secret_box.SecretBox([old_key], redactor=SecretRedactor())
    with pytest.raises(secret_box.SecretError, match=message) as info:
        box.decrypt(token.format(kid=secret_box.key_id(old_key)), AAD)
    assert_no_secret(str(info.value), PLAINTEXT, old_key)


def test_unknown_key_id_names_the_key_not_the_secret(old_key: bytes, new_key: bytes) -> None:
    token = secret_box.SecretBox([old_key], redactor=SecretRedactor()).encrypt(PLAINTEXT, AAD)
    box = secret_box.SecretBox([new_key], redactor=SecretRedactor())
    with pytest.raises(secret_box.SecretError) as info:
        box.decrypt(token, AAD)
    message = str(info.value)
    assert isinstance(info.value, PermanentError)
    assert secret_box.key_id(old_key) in message and secret_box.key_id(new_key) in message
    assert "PROVISIONER_SECRET_KEY" in message and AAD in message
    assert_no_secret(message, PLAINTEXT, old_key, new_key)


def test_rotation(old_key: bytes, new_key: bytes) -> None:
    old_box = secret_box.SecretBox([old_key], redactor=SecretRedactor())
    old_token = old_box.encrypt(PLAINTEXT, AAD)
    box = secret_box.SecretBox([new_key, old_key], redactor=SecretRedactor())
    assert box.current_key_id == secret_box.key_id(new_key)
    assert box.key_ids == [secret_box.key_id(new_key), secret_box.key_id(old_key)]

    assert box.decrypt(old_token, AAD) == PLAINTEXT
    assert box.needs_rotation(old_token)
    new_token = box.reencrypt(old_token, AAD)
    assert new_token.startswith(f"v1:{secret_box.key_id(new_key)}:")
    assert not box.needs_rotation(new_token)
    assert box.decrypt(new_token, AAD) == PLAINTEXT
    assert box.reencrypt(new_token, AAD) == new_token  # nothing to rewrite
    with pytest.raises(secret_box.SecretError):  # the old key cannot read the new ciphertext
        old_box.decrypt(new_token, AAD)
    with pytest.raises(secret_box.SecretError):  # reencrypt still checks the binding
        box.reencrypt(old_token, "node:other:token_secret")


def test_box_registers_plaintexts_with_its_redactor(old_key: bytes) -> None:
    writer, reader = SecretRedactor(), SecretRedactor()
    token = secret_box.SecretBox([old_key], redactor=writer).encrypt(PLAINTEXT, AAD)
    assert writer.redact(f"x {PLAINTEXT} y") == f"x {REDACTED} y"
    assert PLAINTEXT in reader.redact(PLAINTEXT)
    secret_box.SecretBox([old_key], redactor=reader).decrypt(token, AAD)
    assert reader.redact(PLAINTEXT) == REDACTED


def test_box_construction(old_key: bytes) -> None:
    box = secret_box.SecretBox([old_key, old_key], redactor=SecretRedactor())
    assert box.key_ids == [secret_box.key_id(old_key)]
    assert_no_secret(repr(box), old_key)
    with pytest.raises(ConfigError, match="32 bytes"):
        secret_box.SecretBox([b"short"])
    with pytest.raises(ConfigError, match="no secret key"):
        secret_box.SecretBox([])
    with pytest.raises(ValueError, match="aad"):
        box.encrypt(PLAINTEXT, "")


def test_field_aad() -> None:
    assert secret_box.field_aad("node", 12, "token_secret") == "node:12:token_secret"
    with pytest.raises(ValueError):
        secret_box.field_aad("no:de", 1, "x")
    with pytest.raises(ValueError):
        secret_box.field_aad("node", 1, "")


# --- loading keys ------------------------------------------------------------


def test_env_value_with_rotation_list(tmp_path: Path, old_key: bytes, new_key: bytes) -> None:
    key_file = tmp_path / "secret.key"
    standard = base64.b64encode(new_key).decode()
    urlsafe_unpadded = base64.urlsafe_b64encode(old_key).decode().rstrip("=")
    box = keyfile.load_secret_box(f" {standard} , {urlsafe_unpadded}", key_file)
    assert box.key_ids == [secret_box.key_id(new_key), secret_box.key_id(old_key)]
    assert not key_file.exists()  # the variable wins; no key file is created


@pytest.mark.parametrize(
    "value, message",
    [
        ("not base64 at all!", "entry 1 of 1 is not valid base64"),
        (base64.b64encode(b"k" * 16).decode(), "entry 1 of 1 decodes to 16 bytes"),
        ("{good},{short}", "entry 2 of 2 decodes to 16 bytes"),
        ("{good},,{good}", "entry 2 of 3 is empty"),
    ],
)
def test_bad_env_values_name_the_variable(tmp_path: Path, value: str, message: str) -> None:
    value = value.format(good=secret_box.generate_key(), short=base64.b64encode(b"k" * 16).decode())
    with pytest.raises(ConfigError, match=message) as info:
        keyfile.load_secret_box(value, tmp_path / "secret.key")
    assert "PROVISIONER_SECRET_KEY" in str(info.value)
    for entry in value.split(","):
        if entry:
            assert entry.strip() not in str(info.value)


def test_key_file_created_0600_on_first_use_and_reused(tmp_path: Path) -> None:
    key_file = tmp_path / "state" / "nested" / "secret.key"
    box = keyfile.load_secret_box(None, key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = box.encrypt(PLAINTEXT, AAD)
    again = keyfile.load_secret_box("  ", key_file)  # a blank variable counts as unset
    assert again.key_ids == box.key_ids
    assert again.decrypt(token, AAD) == PLAINTEXT
    assert [p.name for p in key_file.parent.iterdir()] == ["secret.key"]  # no temp file left


def test_key_file_creation_never_clobbers_a_concurrent_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "secret.key"
    first = keyfile.load_secret_box(None, key_file)
    # Another process checked for the file just before this one created it.
    monkeypatch.setattr(Path, "exists", lambda self: False)
    second = keyfile.load_secret_box(None, key_file)
    assert second.key_ids == first.key_ids


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_insecure_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "secret.key"
    keyfile.load_secret_box(None, key_file)
    key_file.chmod(mode)
    with pytest.raises(ConfigError, match="group or others") as info:
        keyfile.load_secret_box(None, key_file)
    assert f"chmod 600 {key_file}" in str(info.value)
    assert f"{mode:04o}" in str(info.value)


def test_bad_key_files(tmp_path: Path) -> None:
    key_file = tmp_path / "secret.key"
    key_file.write_text("# only a comment\n\n")
    key_file.chmod(0o600)
    with pytest.raises(ConfigError, match="holds no key"):
        keyfile.load_secret_box(None, key_file)
    key_file.write_text(f"{secret_box.generate_key()}\n\nnot-a-key\n")
    with pytest.raises(ConfigError, match="line 3 is not valid base64"):
        keyfile.load_secret_box(None, key_file)
    key_file.write_text(f"# keys\n{base64.b64encode(b'k' * 31).decode()}\n")
    with pytest.raises(ConfigError, match="line 2 decodes to 31 bytes"):
        keyfile.load_secret_box(None, key_file)
    with pytest.raises(ConfigError, match="not a regular file"):
        keyfile.read_key_file(tmp_path)
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(ConfigError, match="not a regular file"):
        keyfile.read_key_file(tmp_path / "fifo")
    with pytest.raises(ConfigError, match="cannot read"):
        keyfile.read_key_file(tmp_path / "missing")


def test_rotation_through_the_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "secret.key"
    old_box = keyfile.load_secret_box(None, key_file)
    old_id = old_box.current_key_id
    old_token = old_box.encrypt(PLAINTEXT, AAD)

    # Step 1: every process learns the new key, the old one still encrypts.
    new_id = keyfile.add_key_to_file(key_file, current=False)
    known = keyfile.load_secret_box(None, key_file)
    assert known.key_ids == [old_id, new_id]
    # Step 2: the new key encrypts; old ciphertexts stay readable.
    keyfile.set_current_key(key_file, new_id)
    box = keyfile.load_secret_box(None, key_file)
    assert box.key_ids == [new_id, old_id]
    assert box.decrypt(old_token, AAD) == PLAINTEXT
    assert known.decrypt(box.encrypt(PLAINTEXT, AAD), AAD) == PLAINTEXT
    # Step 3 and 4: re-encrypt, then retire the old key.
    new_token = box.reencrypt(old_token, AAD)
    with pytest.raises(ConfigError, match="current key"):
        keyfile.retire_key(key_file, new_id)
    keyfile.retire_key(key_file, old_id)
    final = keyfile.load_secret_box(None, key_file)
    assert final.key_ids == [new_id]
    assert final.decrypt(new_token, AAD) == PLAINTEXT
    with pytest.raises(secret_box.SecretError, match=old_id):
        final.decrypt(old_token, AAD)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="no key with id"):
        keyfile.set_current_key(key_file, "00000000")


def test_add_current_key_to_file(tmp_path: Path) -> None:
    key_file = tmp_path / "secret.key"
    old_id = keyfile.load_secret_box(None, key_file).current_key_id
    given = secret_box.generate_key()
    assert keyfile.add_key_to_file(key_file, given) == secret_box.key_id(
        base64.urlsafe_b64decode(given)
    )
    assert keyfile.load_secret_box(None, key_file).key_ids == [
        secret_box.key_id(base64.urlsafe_b64decode(given)),
        old_id,
    ]
    with pytest.raises(ConfigError, match="not valid base64"):
        keyfile.add_key_to_file(key_file, "!!!")


# --- generators --------------------------------------------------------------


def test_generate_key() -> None:
    keys = {secret_box.generate_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(base64.urlsafe_b64decode(k)) == 32 for k in keys)


def test_generate_password() -> None:
    passwords = [generate.generate_password() for _ in range(50)]
    assert len(set(passwords)) == 50
    for password in passwords:
        assert len(password) == 20
        assert set(password) <= set(generate.PASSWORD_ALPHABET)
        assert not set(password) & set("0O1lI")
        assert any(c.islower() for c in password) and any(c.isupper() for c in password)
        assert any(c.isdigit() for c in password)
        # (not "root password ...": a test elsewhere in the run registers that as a secret)
        assert redact(f"generated {password}!") == f"generated {REDACTED}!"
    assert len(generate.generate_password(32)) == 32
    with pytest.raises(ValueError):
        generate.generate_password(8)


def test_generate_ssh_keypair() -> None:
    private, public = generate.generate_ssh_keypair("ct-104")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    loaded = serialization.load_ssh_private_key(private.encode(), password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    assert public.startswith("ssh-ed25519 AAAA") and public.endswith(" ct-104")
    public_key = serialization.load_ssh_public_key(public.encode())
    assert isinstance(public_key, Ed25519PublicKey)
    assert public_key.public_bytes_raw() == loaded.public_key().public_bytes_raw()
    assert private not in redact(f"key:\n{private}")
    assert generate.generate_ssh_keypair()[0] != private
    assert os.linesep not in public

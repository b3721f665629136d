"""Secrets at rest: AES-256-GCM for credentials, SSH private keys, passwords.

A ciphertext is a self-describing string ``v1:<key id>:<base64url(nonce +
ciphertext + tag)>``.  The key id is a fingerprint of the key that made it,
so a box holding several keys (the current one encrypts, all of them
decrypt) knows which one to use, and rotation needs no downtime.  The
associated data binds every ciphertext to its place (``node:pve1:
token_secret``), so ciphertexts cannot be swapped between rows or columns.

Keys come from ``PROVISIONER_SECRET_KEY`` ("current,old1,old2") or from a
key file (one key a line, the first is current) created 0600 on first use.

Rotating without downtime, with a key file shared by every process:

1. ``add_key_to_file(path, current=False)``, restart everything: all
   processes now know the new key but still encrypt with the old one;
2. ``set_current_key(path, key_id)``, restart: new ciphertexts use the new key;
3. ``reencrypt`` every stored secret where ``needs_rotation`` says so;
4. ``retire_key(path, old_key_id)``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from provisioner.errors import ConfigError, PermanentError
from provisioner.logsafe import DEFAULT_REDACTOR, SecretRedactor

ENV_VAR = "PROVISIONER_SECRET_KEY"
FORMAT_VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
# Unambiguous: no 0/O/o, 1/l/I; letters and digits only, so the password
# survives shells, URLs and config files unquoted.
PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

_KEY_ID_DOMAIN = b"lxc-provisioner secret key id v1\x00"
_KEY_FILE_HEADER = (
    "# lxc-provisioner secret keys: the first key encrypts, every key decrypts.\n"
    "# Keep this file mode 0600 and back it up: without it stored secrets are lost.\n"
)
_GENERATE_HINT = "generate one with: python -c 'from provisioner.secrets import generate_key; print(generate_key())'"


class SecretError(PermanentError):
    """A stored secret cannot be decrypted (unknown key, tampering, wrong
    field); the message names the field and key id, never the secret."""


def generate_key() -> str:
    """Return a new random 256-bit key, URL-safe base64 encoded."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def key_id(key: bytes) -> str:
    """Return the short public fingerprint of a key (8 hex digits)."""
    return hashlib.sha256(_KEY_ID_DOMAIN + key).hexdigest()[:8]


def field_aad(kind: str, ident: object, field: str) -> str:
    """Build the associated data that binds a ciphertext to its place.

    Use an identifier known before the row is inserted (a uuid or a name).

    Args:
        kind: The kind of record, e.g. ``"node"``.
        ident: The record's stable identifier, e.g. ``"pve1"``.
        field: The column, e.g. ``"token_secret"``.

    Returns:
        E.g. ``"node:pve1:token_secret"``.

    Raises:
        ValueError: ``kind`` or ``field`` is empty or contains ``:``.
    """
    for part in (kind, field):
        if not part or ":" in part:  # keeps "kind:ident:field" unambiguous
            raise ValueError(f"AAD part {part!r} must be non-empty and contain no ':'")
    return f"{kind}:{ident}:{field}"


class SecretBox:
    """Encrypts with the current key, decrypts with any known key.

    Every plaintext that passes through the box is registered with the
    redactor, so it can never appear in logs.

    Args:
        keys: Raw 32-byte keys, the current one first.
        redactor: Where plaintexts are registered; the process-wide one by default.

    Raises:
        ConfigError: No key, a key of the wrong length, or two keys with the same id.
    """

    def __init__(self, keys: Sequence[bytes], *, redactor: SecretRedactor | None = None) -> None:
        material: dict[str, bytes] = {}  # insertion order keeps the current key first
        for key in keys:
            if len(key) != KEY_BYTES:
                raise ConfigError(f"secret keys must be {KEY_BYTES} bytes, got {len(key)}")
            if material.setdefault(key_id(key), key) != key:
                raise ConfigError(f"two different secret keys share the id {key_id(key)}")
        if not material:
            raise ConfigError("no secret key configured", hint=_GENERATE_HINT)
        self._keys = {kid: AESGCM(key) for kid, key in material.items()}
        self.current_key_id = key_id(keys[0])
        self._redactor = redactor or DEFAULT_REDACTOR

    def __repr__(self) -> str:
        return f"SecretBox(current={self.current_key_id!r}, keys={self.key_ids!r})"

    @property
    def key_ids(self) -> list[str]:
        """The ids of every known key, the current one first."""
        return list(self._keys)

    def encrypt(self, plaintext: str, aad: str) -> str:
        """Encrypt ``plaintext`` with the current key, bound to ``aad``.

        Args:
            plaintext: The secret.
            aad: Where it will be stored, e.g. ``"node:pve1:token_secret"``.

        Returns:
            A ``v1:<key id>:<data>`` token.

        Raises:
            ValueError: ``aad`` is empty.
        """
        if not aad:
            raise ValueError("encrypt() needs a non-empty aad naming the field")
        self._redactor.register(plaintext)
        kid = self.current_key_id
        nonce = secrets.token_bytes(NONCE_BYTES)  # random 96-bit nonce per message
        sealed = self._keys[kid].encrypt(nonce, plaintext.encode("utf-8"), _aad(kid, aad))
        payload = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{FORMAT_VERSION}:{kid}:{payload}"

    def decrypt(self, token: str, aad: str) -> str:
        """Decrypt a token made by :meth:`encrypt` for the same ``aad``.

        Args:
            token: The stored ``v1:<key id>:<data>`` string.
            aad: The field it was stored in.

        Returns:
            The plaintext, also registered with the redactor.

        Raises:
            SecretError: Not a token, an unsupported version, an unknown key
                id, or the token was altered or belongs to another field.
        """
        kid, blob = self._parse(token, f"the secret for {aad!r}")
        cipher = self._keys.get(kid)
        if cipher is None:
            raise SecretError(
                f"cannot decrypt the secret for {aad!r}: it was encrypted with key {kid}, "
                f"which is not among the loaded keys ({', '.join(self._keys)})",
                hint=f"add that key after the current one in {ENV_VAR} or the key file",
            )
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise SecretError(f"cannot decrypt the secret for {aad!r}: the ciphertext is truncated")
        try:
            data = cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(kid, aad))
            plaintext = data.decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            raise SecretError(
                f"cannot decrypt the secret for {aad!r} with key {kid}: the ciphertext was "
                "altered or belongs to another field"
            ) from None  # the cryptography error adds nothing and hides the cause
        self._redactor.register(plaintext)
        return plaintext

    def needs_rotation(self, token: str) -> bool:
        """Tell whether a token was made with a key other than the current one.

        Raises:
            SecretError: ``token`` is not a token this box can read.
        """
        kid, _ = self._parse(token, "the value")
        return kid != self.current_key_id

    def reencrypt(self, token: str, aad: str) -> str:
        """Decrypt with whichever key made ``token``, encrypt with the current key.

        Returns:
            The new token, or ``token`` itself (verified) if it already uses
            the current key, so callers only write rows that changed.

        Raises:
            SecretError: As :meth:`decrypt`.
        """
        plaintext = self.decrypt(token, aad)
        if not self.needs_rotation(token):
            return token
        return self.encrypt(plaintext, aad)

    @staticmethod
    def _parse(token: str, what: str) -> tuple[str, bytes]:
        parts = token.split(":", 2)
        # Never echo the value: it may be a plaintext secret stored by mistake.
        if len(parts) != 3 or len(parts[1]) != 8:
            raise SecretError(
                f"{what} is not an encrypted secret (expected '{FORMAT_VERSION}:<key id>:<data>')"
            )
        version, kid, payload = parts
        if version != FORMAT_VERSION:
            raise SecretError(
                f"{what} uses format {version[:8]!r}; this version reads {FORMAT_VERSION!r}"
            )
        try:
            padded = payload + "=" * (-len(payload) % 4)
            blob = base64.b64decode(padded, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise SecretError(f"{what} is not valid base64 (altered?)") from None
        return kid, blob


def _aad(kid: str, aad: str) -> bytes:
    # The version and key id are authenticated too, not just the field.
    return f"{FORMAT_VERSION}:{kid}:{aad}".encode()


def _decode_key(text: str, where: str) -> bytes:
    normalised = text.strip().replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where} is not valid base64", hint=_GENERATE_HINT) from None
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{where} decodes to {len(key)} bytes; AES-256-GCM needs {KEY_BYTES}",
            hint=_GENERATE_HINT,
        )
    return key


def parse_env_keys(env_value: str) -> list[bytes]:
    """Parse ``PROVISIONER_SECRET_KEY``: "current[,old1,old2...]".

    Raises:
        ConfigError: An entry is empty, not base64, or not 32 bytes; the
            message names ``PROVISIONER_SECRET_KEY`` and the entry, never the value.
    """
    entries = env_value.split(",")
    keys = []
    for number, entry in enumerate(entries, 1):
        where = f"{ENV_VAR} entry {number} of {len(entries)}"
        if not entry.strip():
            raise ConfigError(f"{where} is empty", hint="separate keys with single commas")
        keys.append(_decode_key(entry, where))
    return keys


def read_key_file(key_file: Path) -> list[bytes]:
    """Read the keys of a key file, the current one first.

    Raises:
        ConfigError: The file is missing, unreadable, not a regular file,
            accessible to group or others, holds no key, or a bad key.
    """
    try:
        # O_NONBLOCK: a FIFO in the key file's place must fail, not hang.
        fd = os.open(key_file, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"cannot read secret key file {key_file}: {exc}") from None
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(os.close, fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"secret key file {key_file} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"secret key file {key_file} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); refusing to use it",
                hint=f"run: chmod 600 {key_file}",
            )
        try:
            data = b"".join(iter(lambda: os.read(fd, 65536), b""))
            lines = data.decode("ascii").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read secret key file {key_file}: {exc}") from None
    keys = [
        _decode_key(line, f"secret key file {key_file} line {number}")
        for number, line in enumerate(lines, 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not keys:
        raise ConfigError(f"secret key file {key_file} holds no key", hint=_GENERATE_HINT)
    return keys


def _write_private(
    path: Path,
    keys: Sequence[bytes],
    publish: Callable[[str, Path], None],
    owner: tuple[int, int] | None = None,
) -> None:
    """Write keys to a temporary file next to ``path``, then publish it."""
    # mkstemp creates the file 0600, so the keys are never readable by others.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            os.fchown(fd, *owner)  # root rotating the service user's file
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(_KEY_FILE_HEADER)
            handle.writelines(base64.urlsafe_b64encode(k).decode("ascii") + "\n" for k in keys)
            handle.flush()
            os.fsync(handle.fileno())
        publish(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # losing the key file after a crash loses every secret
        finally:
            os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _link_if_absent(tmp: str, path: Path) -> None:
    # link() never overwrites: of two processes starting at once, the first
    # key file wins and the other process reads it.
    with contextlib.suppress(FileExistsError):
        os.link(tmp, path)


def load_secret_box(
    env_value: str | None, key_file: Path, *, redactor: SecretRedactor | None = None
) -> SecretBox:
    """Build the box from ``PROVISIONER_SECRET_KEY`` or from the key file.

    A non-blank ``env_value`` wins and the key file is not touched.
    Otherwise the key file is read, or created (mode 0600, atomically) with a
    new key on first use.

    Args:
        env_value: The value of ``PROVISIONER_SECRET_KEY``, or None.
        key_file: The key file to use when the variable is unset.
        redactor: Where plaintexts are registered; the process-wide one by default.

    Returns:
        The box.

    Raises:
        ConfigError: A bad variable, an insecure or bad key file, or a key
            file that cannot be created.
    """
    if env_value and env_value.strip():
        return SecretBox(parse_env_keys(env_value), redactor=redactor)
    if not key_file.exists():
        try:
            key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_private(key_file, [base64.urlsafe_b64decode(generate_key())], _link_if_absent)
        except OSError as exc:
            raise ConfigError(f"cannot create secret key file {key_file}: {exc}") from None
    return SecretBox(read_key_file(key_file), redactor=redactor)


@contextlib.contextmanager
def _locked(key_file: Path) -> Iterator[None]:
    # The key file itself is replaced, so lock a sibling: two concurrent
    # rotations must not drop each other's key.
    with open(key_file.with_name(key_file.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _rewrite(key_file: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    try:
        with _locked(key_file):
            keys = change(read_key_file(key_file))
            info = key_file.stat()
            _write_private(key_file, keys, os.replace, (info.st_uid, info.st_gid))
    except OSError as exc:
        raise ConfigError(f"cannot rewrite secret key file {key_file}: {exc}") from None


def add_key_to_file(key_file: Path, key: str | None = None, *, current: bool = True) -> str:
    """Add a key to an existing key file, keeping every other key.

    Args:
        key_file: The key file.
        key: The key (base64); a new random one by default.
        current: Make it the key that encrypts; False only makes it known,
            which is step one of a rotation across running processes.

    Returns:
        The added key's id.

    Raises:
        ConfigError: The key file or the key is bad.
    """
    raw = _decode_key(key or generate_key(), "the new key")
    kid = key_id(raw)

    def change(keys: list[bytes]) -> list[bytes]:
        others = [k for k in keys if k != raw]
        if current or not others:
            return [raw, *others]
        return [others[0], raw, *others[1:]]

    _rewrite(key_file, change)
    return kid


def set_current_key(key_file: Path, kid: str) -> None:
    """Make the key with id ``kid`` the one that encrypts.

    Raises:
        ConfigError: The key file is bad or holds no key with that id.
    """

    def change(keys: list[bytes]) -> list[bytes]:
        chosen = [k for k in keys if key_id(k) == kid]
        if not chosen:
            raise ConfigError(f"secret key file {key_file} holds no key with id {kid}")
        return [chosen[0], *(k for k in keys if key_id(k) != kid)]

    _rewrite(key_file, change)


def retire_key(key_file: Path, kid: str) -> None:
    """Remove an old key once nothing is encrypted with it any more.

    Raises:
        ConfigError: The key file is bad, has no such key, or ``kid`` is the
            current key.
    """

    def change(keys: list[bytes]) -> list[bytes]:
        if key_id(keys[0]) == kid:
            raise ConfigError(f"key {kid} is the current key; make another key current first")
        remaining = [k for k in keys if key_id(k) != kid]
        if len(remaining) == len(keys):
            raise ConfigError(f"secret key file {key_file} holds no key with id {kid}")
        return remaining

    _rewrite(key_file, change)


def generate_password(length: int = 20) -> str:
    """Return a random password from an unambiguous alphabet.

    It always holds a lower-case letter, an upper-case letter and a digit,
    and is registered with the process-wide redactor.

    Raises:
        ValueError: ``length`` is below 12.
    """
    if length < 12:
        raise ValueError("passwords shorter than 12 characters are too weak")
    while True:  # rejection sampling keeps the distribution uniform
        password = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))
        if (
            any(c.islower() for c in password)
            and any(c.isupper() for c in password)
            and any(c.isdigit() for c in password)
        ):
            DEFAULT_REDACTOR.register(password)
            return password


def generate_ssh_keypair(comment: str = "lxc-provisioner") -> tuple[str, str]:
    """Generate an ed25519 SSH key pair in OpenSSH formats.

    The private key is registered with the process-wide redactor.

    Args:
        comment: Appended to the public key line.

    Returns:
        ``(private key in OpenSSH PEM, public key line "ssh-ed25519 AAAA... comment")``.
    """
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    DEFAULT_REDACTOR.register(private)
    return private, f"{public.decode('ascii')} {comment}".rstrip()

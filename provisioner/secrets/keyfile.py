"""Where the secret box's keys come from, and how they rotate.

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
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from provisioner.errors import ConfigError
from provisioner.logsafe import SecretRedactor
from provisioner.secrets.box import (
    ENV_VAR,
    GENERATE_HINT,
    KEY_BYTES,
    SecretBox,
    generate_key,
    key_id,
)

_KEY_FILE_HEADER = (
    "# lxc-provisioner secret keys: the first key encrypts, every key decrypts.\n"
    "# Keep this file mode 0600 and back it up: without it stored secrets are lost.\n"
)


def _decode_key(text: str, where: str) -> bytes:
    normalised = text.strip().replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where} is not valid base64", hint=GENERATE_HINT) from None
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{where} decodes to {len(key)} bytes; AES-256-GCM needs {KEY_BYTES}",
            hint=GENERATE_HINT,
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
        raise ConfigError(f"secret key file {key_file} holds no key", hint=GENERATE_HINT)
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

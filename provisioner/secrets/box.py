"""The secret box: AES-256-GCM for credentials, SSH private keys, passwords.

A ciphertext is a self-describing string ``v1:<key id>:<base64url(nonce +
ciphertext + tag)>``.  The key id is a fingerprint of the key that made it,
so a box holding several keys (the current one encrypts, all of them
decrypt) knows which one to use, and rotation needs no downtime.  The
associated data binds every ciphertext to its place (``node:pve1:
token_secret``), so ciphertexts cannot be swapped between rows or columns.

Where the keys come from and how they rotate: :mod:`provisioner.secrets.keyfile`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from provisioner.errors import ConfigError, PermanentError
from provisioner.logsafe import DEFAULT_REDACTOR, SecretRedactor

ENV_VAR = "PROVISIONER_SECRET_KEY"
FORMAT_VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

_KEY_ID_DOMAIN = b"lxc-provisioner secret key id v1\x00"
GENERATE_HINT = "generate one with: python -c 'from provisioner.secrets.box import generate_key; print(generate_key())'"


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
            raise ConfigError("no secret key configured", hint=GENERATE_HINT)
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

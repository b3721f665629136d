"""OpenSSH public key lines (``<type> <base64 blob> [comment]``), parsed.

The blob is a run of length-prefixed fields (RFC 4253 6.6, RFC 5656,
OpenSSH's PROTOCOL.u2f): its first string repeats the key type, the rest
are that type's own fields.  A key cut short, pasted under another type or
with bytes to spare does not add up; refused here, it cannot end up in a
container's ``authorized_keys`` where it would silently let nobody in.

Messages never carry the key, its comment or an unknown type's text (a line
pasted by mistake may be a secret).  Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

_ED25519_BYTES = 32
_RSA_BITS = (1024, 16384)  # OpenSSH's own limits (SSH_RSA_MINIMUM_MODULUS_SIZE, ...)
_CURVES: dict[str, ec.EllipticCurve] = {
    "nistp256": ec.SECP256R1(), "nistp384": ec.SECP384R1(), "nistp521": ec.SECP521R1(),
}  # fmt: skip
KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class KeyProblem(ValueError):
    """Why a line is not a usable OpenSSH public key (never quoting it)."""


@dataclass(frozen=True)
class PublicKey:
    """A parsed public key line."""

    type: str
    blob: bytes
    comment: str = ""


class _Fields:
    """Reads the length-prefixed fields of a key blob."""

    def __init__(self, data: bytes, key_type: str) -> None:
        self.data = data
        self.at = 0
        self.key_type = key_type

    def string(self, what: str) -> bytes:
        """The next string.

        Raises:
            KeyProblem: the blob ends before it does.
        """
        if self.at + 4 > len(self.data):
            raise self.short(what)
        length = int.from_bytes(self.data[self.at : self.at + 4], "big")
        start = self.at + 4
        if start + length > len(self.data):
            raise self.short(what)
        self.at = start + length
        return self.data[start : self.at]

    def mpint(self, what: str) -> int:
        """The next multiple-precision integer (non-negative for a key).

        Raises:
            KeyProblem: cut short, or negative.
        """
        raw = self.string(what)
        if raw and raw[0] & 0x80:
            raise KeyProblem(f"the key's {what} is negative: the key data is damaged")
        return int.from_bytes(raw, "big")

    def short(self, what: str) -> KeyProblem:
        return KeyProblem(f"the key data is cut short (its {what} is missing or incomplete)")

    def end(self) -> None:
        """Raises: KeyProblem: bytes are left over after the key's fields."""
        if self.at != len(self.data):
            raise KeyProblem(f"the key data has {len(self.data) - self.at} bytes more than a key "
                             f"of type {self.key_type} holds: it is damaged")  # fmt: skip


def _ed25519(fields: _Fields) -> None:
    if len(fields.string("public key")) != _ED25519_BYTES:
        raise KeyProblem(f"the public key is not the {_ED25519_BYTES} bytes a key of type "
                         f"{fields.key_type} has: the key data is damaged")  # fmt: skip


def _rsa(fields: _Fields) -> None:
    e = fields.mpint("public exponent")
    n = fields.mpint("modulus")
    if e < 3 or e % 2 == 0:
        raise KeyProblem("the ssh-rsa key's public exponent is not an odd number of at least 3")
    low, high = _RSA_BITS
    if not low <= n.bit_length() <= high or n % 2 == 0:
        raise KeyProblem(f"the ssh-rsa key's modulus is {n.bit_length()} bits: OpenSSH takes "
                         f"{low} to {high}")  # fmt: skip


def _ecdsa(fields: _Fields, curve_name: str) -> None:
    if fields.string("curve name") != curve_name.encode():
        raise KeyProblem(f"the key data names another curve than {curve_name}: "
                         "the key is damaged or of another type")  # fmt: skip
    point = fields.string("public point")
    try:
        if not point or point[0] != 4:  # OpenSSH writes points uncompressed
            raise ValueError("not an uncompressed point")
        ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[curve_name], point)
    except ValueError:
        raise KeyProblem(f"the key's public point is not on curve {curve_name}: "
                         "the key data is damaged") from None  # fmt: skip


def _application(fields: _Fields) -> None:
    if b"\x00" in fields.string("application"):
        raise KeyProblem("the security key's application is not text: the key data is damaged")


def _check_fields(fields: _Fields) -> None:
    """The type's own fields, then nothing more.

    Raises:
        KeyProblem: a field is missing, malformed or followed by more bytes.
    """
    kind = fields.key_type
    if kind in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        _ed25519(fields)
    elif kind == "ssh-rsa":
        _rsa(fields)
    else:  # ecdsa-sha2-<curve> or sk-ecdsa-sha2-<curve>@openssh.com
        _ecdsa(fields, kind.removeprefix("sk-").removesuffix("@openssh.com").split("-")[-1])
    if kind.startswith("sk-"):
        _application(fields)
    fields.end()


def _known_type(kind: str) -> None:
    """Raises: KeyProblem: a type OpenSSH does not take as a plain public key."""
    if kind in KEY_TYPES:
        return
    if kind.endswith("-cert-v01@openssh.com"):
        raise KeyProblem("that is an SSH certificate: give the public key itself (the .pub file)")
    if kind == "ssh-dss":
        raise KeyProblem("DSA keys (ssh-dss) are disabled in OpenSSH: use an ed25519 key")
    raise KeyProblem(f"not an OpenSSH public key (<type> <base64 data> [comment], the type one "
                     f"of {', '.join(KEY_TYPES)})")  # fmt: skip


def parse_public_key(line: str) -> PublicKey:
    """One ``authorized_keys``-style line (no options before the type).

    Raises:
        KeyProblem: the line is not a whole, well-formed key of a type
            OpenSSH accepts; the message never quotes the line.
    """
    if "PRIVATE KEY" in line:
        raise KeyProblem("that is a private key: give the public key (the .pub file) and keep "
                         "the private one secret")  # fmt: skip
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise KeyProblem("not an OpenSSH public key (<type> <base64 data> [comment], e.g. "
                         "ssh-ed25519 AAAA... you@host)")  # fmt: skip
    kind, encoded = parts[0], parts[1]
    comment = parts[2] if len(parts) == 3 else ""
    _known_type(kind)
    if _CONTROL.search(comment):
        raise KeyProblem("the comment contains control characters")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise KeyProblem("the key data is not valid base64: it is damaged or cut short") from None
    fields = _Fields(blob, kind)
    if fields.string("key type") != kind.encode():
        raise KeyProblem(f"the key data does not belong to a key of type {kind}: it is "
                         "damaged, cut short or of another type")  # fmt: skip
    _check_fields(fields)
    return PublicKey(kind, blob, comment)


def first_bad_line(text: str) -> tuple[int, str] | None:
    """The first line of ``text`` (numbered from 1) that is neither blank
    nor a public key, and why; None when every line is fine."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            parse_public_key(line)
        except KeyProblem as exc:
            return number, str(exc)
    return None

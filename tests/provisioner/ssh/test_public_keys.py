"""Parsing OpenSSH public key lines (pure: no fixtures, no I/O)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from provisioner.errors import ConfigError
from provisioner.request_checks import check_ssh_public_keys
from provisioner.ssh.public_keys import KeyProblem, first_bad_line, parse_public_key


def _openssh(key: Any) -> str:
    public = key.public_key()
    return str(public.public_bytes(serialization.Encoding.OpenSSH,
                                   serialization.PublicFormat.OpenSSH).decode())  # fmt: skip


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _line(*fields: bytes, kind: str | None = None, comment: str = "me@host") -> str:
    """A key line whose blob is these fields (the first names the type)."""
    written = kind or fields[0].decode()
    return f"{written} {base64.b64encode(b''.join(_string(f) for f in fields)).decode()} {comment}"


ED25519 = _openssh(ed25519.Ed25519PrivateKey.generate())
RSA = _openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048))
P256 = ec.generate_private_key(ec.SECP256R1())
POINT = P256.public_key().public_bytes(serialization.Encoding.X962,
                                       serialization.PublicFormat.UncompressedPoint)  # fmt: skip
SK_ED25519 = _line(b"sk-ssh-ed25519@openssh.com", b"k" * 32, b"ssh:")
SK_ECDSA = _line(b"sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", POINT, b"ssh:")


def _blob(line: str) -> bytes:
    return base64.b64decode(line.split()[1])


@pytest.mark.parametrize("line", [
    ED25519, ED25519 + " a comment with spaces", ED25519.split(" ")[0] + "  " + ED25519.split()[1],
    RSA, _openssh(ec.generate_private_key(ec.SECP256R1())),
    _openssh(ec.generate_private_key(ec.SECP384R1())),
    _openssh(ec.generate_private_key(ec.SECP521R1())), SK_ED25519, SK_ECDSA,
])  # fmt: skip
def test_whole_keys_of_every_type_openssh_takes_pass(line: str) -> None:
    key = parse_public_key(line)
    assert key.type == line.split()[0] and key.blob == _blob(line)


def _encoded(blob: bytes, kind: str = "ssh-ed25519") -> str:
    return f"{kind} {base64.b64encode(blob).decode()}"


ED_BLOB = _blob(ED25519)
RSA_BLOB = _blob(RSA)
SMALL_RSA = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()


@pytest.mark.parametrize(("line", "why"), [
    ("ssh-ed25519 AAAA", "cut short"),  # the truncated key of the issue
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "cut short"),
    (_encoded(ED_BLOB[:-5]), "cut short"),
    (_encoded(ED_BLOB[:20]), "cut short"),
    (ED25519.split()[0] + " " + ED25519.split()[1][:-3], "not valid base64"),
    ("ssh-ed25519 AAAA!AAA", "not valid base64"),
    (_encoded(ED_BLOB + _string(b"x")), "bytes more than a key of type ssh-ed25519"),
    (_line(b"ssh-ed25519", b"k" * 31), "not the 32 bytes"),
    (_encoded(ED_BLOB, "ssh-rsa"), "does not belong to a key of type ssh-rsa"),
    (_encoded(RSA_BLOB, "ssh-ed25519"), "does not belong to a key of type ssh-ed25519"),
    (_encoded(RSA_BLOB[:-40], "ssh-rsa"), "cut short"),
    (_line(b"ssh-rsa", b"\x01\x00\x01"), "cut short"),
    (_line(b"ssh-rsa", b"\x01\x00\x01", b"\x05" * 64), "modulus is 507 bits"),
    (_line(b"ssh-rsa", b"\x01\x00\x00", b"\x05" * 256), "exponent"),
    (_line(b"ssh-rsa", b"\x01\x00\x01", b"\x85" * 256), "negative"),
    (_line(b"ecdsa-sha2-nistp256", b"nistp384", POINT), "another curve"),
    (_line(b"ecdsa-sha2-nistp256", b"nistp256", POINT[:-1] + bytes([POINT[-1] ^ 1])),
     "not on curve nistp256"),
    (_line(b"ecdsa-sha2-nistp256", b"nistp256",
           P256.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.CompressedPoint)),
     "not on curve"),
    (_line(b"ecdsa-sha2-nistp256", b"nistp256"), "cut short"),
    (_line(b"sk-ssh-ed25519@openssh.com", b"k" * 32), "cut short"),
    (_line(b"sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", POINT), "cut short"),
    (_line(b"sk-ssh-ed25519@openssh.com", b"k" * 32, b"ssh:\x00"), "application is not text"),
    (_line(b"ssh-ed25519-cert-v01@openssh.com", b"nonce"), "SSH certificate"),
    (_line(b"ssh-dss", b"p", b"q", b"g", b"y"), "DSA keys"),
    ("hunter2-is-my-password AAAA", "not an OpenSSH public key"),
    ("ssh-ed25519", "not an OpenSSH public key"),
    (ED25519 + " bell\x07", "control characters"),
    ("-----BEGIN OPENSSH PRIVATE KEY----- b3Blbg==", "private key"),
])  # fmt: skip
def test_bad_keys_are_refused_with_why_and_never_quoted(line: str, why: str) -> None:
    with pytest.raises(KeyProblem) as err:
        parse_public_key(line)
    assert why in str(err.value)
    for part in [*line.split()[1:], "hunter2"]:
        if len(part) > 6:
            assert part not in str(err.value)


def test_an_rsa_key_of_1024_bits_is_the_smallest_taken() -> None:
    line = SMALL_RSA.public_bytes(serialization.Encoding.OpenSSH,
                                  serialization.PublicFormat.OpenSSH).decode()  # fmt: skip
    assert parse_public_key(line).type == "ssh-rsa"


def test_the_first_bad_line_is_numbered_as_written() -> None:
    assert first_bad_line(f"\n{ED25519}\n\n{RSA}\n") is None
    number, why = first_bad_line(f"\n{ED25519}\n\nssh-ed25519 AAAA\n{RSA}") or (0, "")
    assert number == 4 and "cut short" in why


def test_check_ssh_public_keys_names_the_field_and_line() -> None:
    assert check_ssh_public_keys(f"  {ED25519}\n{SK_ECDSA}\n\n") == f"{ED25519}\n{SK_ECDSA}"
    assert check_ssh_public_keys(" \n ") is None and check_ssh_public_keys(None) is None
    with pytest.raises(ConfigError) as err:
        check_ssh_public_keys(f"{ED25519}\nssh-ed25519 AAAA")
    assert err.value.message.startswith("ssh_public_key: line 2: the key data is cut short")

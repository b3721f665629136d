"""Generated secrets: root passwords and SSH key pairs for new containers.

Each is registered with the process-wide redactor the moment it exists,
so it cannot reach a log line.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioner.logsafe import DEFAULT_REDACTOR

# Unambiguous: no 0/O/o, 1/l/I; letters and digits only, so the password
# survives shells, URLs and config files unquoted.
PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


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

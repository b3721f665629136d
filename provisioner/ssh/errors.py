"""How SSH failures map onto the provisioner's errors: the one place that
decides whether an SSH problem is transient (retry) or permanent (fail now).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncssh

from provisioner.errors import HostKeyMismatchError, SshPermanentError, SshTransientError

# Retrying cannot fix these at connect time: no common algorithm or protocol,
# a user name the server rejects outright.  (A refused key and a wrong host
# key are handled on their own, with their own messages.)
PERMANENT_CONNECT_ERRORS = (
    asyncssh.KeyExchangeFailed,
    asyncssh.ProtocolNotSupported,
    asyncssh.IllegalUserName,
    asyncssh.CompressionError,
)


def describe(exc: BaseException) -> str:
    """A short human reason for a connection failure."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"{exc.reason} ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def host_key_mismatch(
    where: str, pinned: asyncssh.SSHKey, presented: asyncssh.SSHKey | None
) -> HostKeyMismatchError:
    """The error for a host that presented another key than the pinned one."""
    shown = presented.get_fingerprint("sha256") if presented else "a key of another type"
    return HostKeyMismatchError(
        f"SSH host key of {where} does not match the pinned key: pinned "
        f"{pinned.get_fingerprint('sha256')}, presented {shown}",
        hint="if the container was re-created, forget its stored host key; "
        "otherwise something else answers on its address",
    )


@contextlib.contextmanager
def connection_errors(host: str, what: str) -> Iterator[None]:
    """Map a lost connection or a refused channel to SshTransientError.

    Raises:
        SshTransientError: naming the host and what was being done.
    """
    try:
        yield
    except (asyncssh.ChannelOpenError, asyncssh.DisconnectError, OSError) as exc:
        raise SshTransientError(f"connection to {host} lost while {what}: {describe(exc)}") from exc


@contextlib.contextmanager
def sftp_errors(host: str, path: str) -> Iterator[None]:
    """Map SFTP failures on one file: a lost connection is transient, a
    refusal by the server (permissions, space, not a directory) permanent.

    Raises:
        SshTransientError: the connection or channel went away.
        SshPermanentError: the server refused the operation.
    """
    try:
        yield
    except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection) as exc:
        raise SshTransientError(
            f"connection to {host} lost while writing {path}: {exc.reason}"
        ) from exc
    except asyncssh.SFTPError as exc:
        raise SshPermanentError(f"cannot write {path} on {host}: {exc.reason}") from exc
    except (asyncssh.ChannelOpenError, asyncssh.DisconnectError) as exc:
        raise SshTransientError(
            f"connection to {host} lost while writing {path}: {describe(exc)}"
        ) from exc

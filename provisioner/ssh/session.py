"""The SSH layer: every SSH action on a container goes through :class:`SshSession`.

:func:`connect` waits for a booting container's sshd (retrying with backoff
until a deadline) and pins or records its host key;
:meth:`SshSession.upload` deploys many files over the one connection;
:meth:`SshSession.run` runs a command and streams its output line by line;
:meth:`SshSession.start` starts one with its streams open, for streaming data
(:func:`provisioner.ssh.pipe.pipe`).

Helpers in this package, one concern each: ``errors`` (which SSH failures
are transient and which permanent), ``command`` (wrapping, receiving and
killing one command), ``transfer`` (moving file contents); and the pure
parts: ``lines`` (output lines), ``files`` (file specs, the remote probe,
the upload plan); the retry maths is :mod:`provisioner.backoff`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import posixpath
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self, TypeVar

import asyncssh

from provisioner.backoff import Backoff, sleep_before_next
from provisioner.errors import (
    CommandFailedError,
    ConfigError,
    SshPermanentError,
    SshTransientError,
)
from provisioner.ssh.command import (
    CommandOutput,
    LineCallback,
    command_label,
    kill_group_script,
    wrap_command,
)
from provisioner.ssh.errors import (
    PERMANENT_CONNECT_ERRORS,
    connection_errors,
    describe,
    host_key_mismatch,
)
from provisioner.ssh.files import (
    PROBE_SCRIPT,
    Action,
    FilePolicy,
    FileSpec,
    UploadResult,
    UploadStatus,
    parent_directories,
    parse_probe,
    plan_file,
    probe_input,
)
from provisioner.ssh.lines import OutputLine
from provisioner.ssh.process import RemoteProcess, StreamOutput
from provisioner.ssh.transfer import PendingFile, read_local, transfer

__all__ = [
    "ConnectAttempt",
    "FilePolicy",
    "FileSpec",
    "OutputLine",
    "RemoteProcess",
    "RunResult",
    "SshSession",
    "UploadResult",
    "UploadStatus",
    "connect",
]

_Key = TypeVar("_Key")
# The key types we ask for when no key is pinned, best first; with a pinned
# key asyncssh asks for that key's type only.
_HOST_KEY_ALGS = ["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256"]
# AES-GCM first: with AES-NI it is the fastest cipher cryptography offers.
_CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]
_EXEC_TIMEOUT = 120.0  # for the layer's own short commands


@dataclass(frozen=True)
class ConnectAttempt:
    """One try of :func:`connect`, as reported to ``on_attempt``.

    Attributes:
        number: 1 for the first attempt.
        error: why it failed, or None when it connected.
        retry_in: seconds until the next attempt; None when connected or
            when the deadline ends the retries.
    """

    number: int
    error: str | None
    retry_in: float | None


@dataclass(frozen=True)
class RunResult:
    """A finished remote command.

    Attributes:
        exit_status: the exit code; 128 + N when killed by signal N.
        tail: the last lines of output with their stream.
        duration: seconds from start to exit.
        exit_signal: the signal name ("KILL") if a signal ended it.
    """

    exit_status: int
    tail: list[OutputLine]
    duration: float
    exit_signal: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class _HostKeyRecorder(asyncssh.SSHClient):
    """Keeps the host key a server presented when it was not the pinned one."""

    def __init__(self) -> None:
        self.presented: asyncssh.SSHKey | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.presented = key
        return False


async def connect(
    host: str,
    *,
    private_key: str,
    known_host_key: str | None,
    username: str = "root",
    port: int = 22,
    deadline: float = 60.0,
    on_attempt: Callable[[ConnectAttempt], None] | None = None,
    attempt_timeout: float = 10.0,
    backoff: Backoff | None = None,
) -> SshSession:
    """Open an SSH session, retrying until sshd answers or the deadline passes.

    Refused, unreachable, timed-out and dropped connections (sshd still
    starting, a banner cut short) are retried with capped, jittered
    exponential backoff.

    Args:
        host: the container's address.
        private_key: the client key, an OpenSSH private key (PEM text).
        known_host_key: the pinned host key (``"ssh-ed25519 AAAA..."``), or
            None to accept the presented key; the caller then stores
            ``session.host_key``.
        username: the remote user.
        port: the remote port.
        deadline: seconds to keep trying.
        on_attempt: called after every attempt, e.g. to publish
            "waiting for SSH" events.
        attempt_timeout: the longest single attempt (TCP, handshake, login).
        backoff: the pause policy between attempts.

    Returns:
        The connected session.

    Raises:
        HostKeyMismatchError: the host presented another key than the pinned
            one (both fingerprints in the message; never retried).
        SshPermanentError: the key was refused, a key is unreadable, or no
            common algorithm exists.
        SshTransientError: the deadline passed; the message gives the last
            error.
    """
    client_key = _import_key(private_key, "private key", host, asyncssh.import_private_key)
    pinned = (
        _import_key(known_host_key, "pinned host key", host, asyncssh.import_public_key)
        if known_host_key is not None
        else None
    )
    policy = backoff or Backoff()
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    where = f"{username}@{host}:{port}"
    failures = 0

    def report(attempt: ConnectAttempt) -> None:
        if on_attempt is not None:
            on_attempt(attempt)

    while True:
        timeout = max(0.5, min(attempt_timeout, end - loop.time()))
        try:
            conn = await _open_connection(host, port, username, client_key, pinned, timeout)
        except (OSError, asyncssh.Error) as exc:
            failures += 1
            reason = describe(exc)
            remaining = end - loop.time()
            if remaining <= 0.05:
                report(ConnectAttempt(failures, reason, None))
                raise SshTransientError(
                    f"SSH to {where} not available after {deadline:g}s "
                    f"({failures} attempt{'s' if failures > 1 else ''}); last error: {reason}"
                ) from exc
            pause = sleep_before_next(policy, failures, random.random(), remaining)
            report(ConnectAttempt(failures, reason, pause))
            await asyncio.sleep(pause)
            continue
        report(ConnectAttempt(failures + 1, None, None))
        return SshSession(conn, host=host, port=port, username=username)


async def _open_connection(
    host: str, port: int, username: str, client_key: asyncssh.SSHKey,
    pinned: asyncssh.SSHKey | None, timeout: float,
) -> asyncssh.SSHClientConnection:  # fmt: skip
    """One connection attempt; raises our permanent errors, asyncssh's others."""
    where = f"{username}@{host}:{port}"
    recorder = _HostKeyRecorder()
    try:
        return await asyncssh.connect(
            host,
            port,
            config=[],  # hermetic: no ~/.ssh/config, agent or known_hosts
            username=username,
            client_factory=lambda: recorder,
            client_keys=[client_key],
            agent_path=None,
            preferred_auth="publickey",
            known_hosts=None if pinned is None else ([pinned], [], []),
            server_host_key_algs=_HOST_KEY_ALGS if pinned is None else (),
            x509_trusted_certs=None,
            encryption_algs=_CIPHERS,
            connect_timeout=timeout,
            keepalive_interval=15,
            keepalive_count_max=3,
        )
    except asyncssh.PermissionDenied as exc:
        raise SshPermanentError(
            f"SSH login {where} refused: {exc.reason}",
            hint="check that the container was given this key in ssh-public-keys",
        ) from exc
    except asyncssh.HostKeyNotVerifiable as exc:
        assert pinned is not None  # without a pinned key every key is accepted
        raise host_key_mismatch(where, pinned, recorder.presented) from exc
    except PERMANENT_CONNECT_ERRORS as exc:
        raise SshPermanentError(f"SSH to {where} failed: {exc.reason}") from exc


class SshSession:
    """One SSH connection to a container; the only way the provisioner uses SSH.

    Use as ``async with await connect(...) as session:`` or call
    :meth:`close`.

    Attributes:
        host: the address connected to.
        port: its port.
        username: the remote user.
        host_key: the server's host key as an OpenSSH public key line.
        host_key_fingerprint: its SHA-256 fingerprint (``SHA256:...``).
    """

    def __init__(
        self, conn: asyncssh.SSHClientConnection, *, host: str, port: int, username: str
    ) -> None:
        self._conn = conn
        self.host = host
        self.port = port
        self.username = username
        key = conn.get_server_host_key()
        if key is None:  # only with GSS key exchange, which we never offer
            raise SshPermanentError(f"SSH server {host} presented no host key")
        self.host_key = key.export_public_key("openssh").decode().strip()
        self.host_key_fingerprint = key.get_fingerprint("sha256")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.close()

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()
        await self._conn.wait_closed()

    # --- running commands --------------------------------------------------

    async def run(
        self,
        command: str,
        *,
        on_line: LineCallback | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        input: str | None = None,
        check: bool = False,
        name: str | None = None,
        tail_lines: int = 50,
    ) -> RunResult:
        """Run a shell command, streaming its output line by line.

        The command runs under the user's login shell in its own process
        group (sshd makes every session a session leader), so a timeout can
        kill it and all its children.

        Args:
            command: shell command text.
            on_line: called with ("stdout"|"stderr", line) for every line,
                in order per stream; a trailing partial line comes at EOF.
            timeout: seconds before the command's process group is sent
                SIGTERM, then SIGKILL two seconds later.
            env: variables exported to the command (sent on its stdin ahead
                of ``input``, so no value is on a command line).
            input: text for its stdin; stdin is closed either way.
            check: raise on a non-zero exit instead of returning it.
            name: how to call the command in errors (e.g. the script name);
                by default its first word, so its arguments (which may hold
                secrets) never reach a message.
            tail_lines: how many last lines the result and errors keep.

        Returns:
            Exit status, the output's tail and the duration.

        Raises:
            CommandFailedError: timed out (``timed_out=True``), or a non-zero
                exit with ``check=True``; carries the output's tail.
            SshTransientError: the connection dropped while it ran.
            ConfigError: an invalid environment variable name.
        """
        label = name or command_label(command)
        wrapped = wrap_command(command, env or {})
        loop = asyncio.get_running_loop()
        output = CommandOutput(on_line, tail_lines, loop)
        started = loop.time()
        with connection_errors(self.host, f"starting {label}"):
            chan, _ = await self._conn.create_session(lambda: output, wrapped.text, encoding=None)
        chan.write(wrapped.preamble)
        if input:
            chan.write(input.encode())
        chan.write_eof()
        try:
            await asyncio.wait_for(asyncio.shield(output.finished), timeout)
        except TimeoutError:
            await self._stop(chan, output)
            raise CommandFailedError(
                f"{label} on {self.host} timed out after {timeout:g}s and was killed",
                exit_status=None, output_tail=output.tail.texts(), timed_out=True,
            ) from None  # fmt: skip
        except asyncio.CancelledError:
            # Stop the remote side too; a dead connection must not turn the
            # cancellation into another error.
            with contextlib.suppress(SshTransientError):
                await asyncio.shield(self._stop(chan, output))
            raise
        duration = loop.time() - started
        if output.callback_error is not None:
            with contextlib.suppress(SshTransientError):  # the callback's error is the news
                await self._stop(chan, output)
            raise output.callback_error
        status = output.exit_status()
        if status is None:
            lost = output.closed.result()
            raise SshTransientError(
                f"connection to {self.host} lost while running {label}"
                + (f": {describe(lost)}" if lost else "")
            )
        result = RunResult(status, output.tail.lines(), duration, output.exit_signal)
        if check and status != 0:
            raise CommandFailedError(
                f"{label} on {self.host} exited with status {status}",
                exit_status=status, output_tail=output.tail.texts(),
            )  # fmt: skip
        return result

    async def start(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        on_line: LineCallback | None = None,
        raw_stdout: bool = False,
        stdin: bool = False,
        read_limit: int = 256 << 10,
        tail_lines: int = 50,
    ) -> RemoteProcess:
        """Start a shell command and return it running, its streams open.

        Wrapped as :meth:`run` wraps it (its own process group, ``env`` on
        its stdin ahead of anything else, so no value is on a command line).

        Args:
            command: shell command text.
            env: variables exported to the command.
            name: how errors call it (default: its first word).
            on_line: called with ("stdout"|"stderr", line) for each line of
                stderr, and of stdout unless ``raw_stdout``.
            raw_stdout: keep stdout as bytes, for :meth:`RemoteProcess.read`.
            stdin: keep stdin open for :meth:`RemoteProcess.write`; by
                default it ends right after the environment.
            read_limit: with ``raw_stdout``, how many unread bytes may wait
                here before the channel stops reading (back pressure).
            tail_lines: how many last lines the process keeps.

        Raises:
            SshTransientError: the connection dropped.
            ConfigError: an invalid environment variable name.
        """
        label = name or command_label(command)
        wrapped = wrap_command(command, env or {})
        output = StreamOutput(on_line, tail_lines, asyncio.get_running_loop(),
                              raw_stdout=raw_stdout, limit=read_limit)  # fmt: skip
        with connection_errors(self.host, f"starting {label}"):
            chan, _ = await self._conn.create_session(lambda: output, wrapped.text, encoding=None)
            chan.write(wrapped.preamble)
            if not stdin:
                chan.write_eof()
        return RemoteProcess(chan, output, host=self.host, label=label,
                             stop=functools.partial(self._stop, chan, output))  # fmt: skip

    async def _stop(self, chan: asyncssh.SSHClientChannel[bytes], output: CommandOutput) -> None:
        """Kill a running command's process group, then close its channel."""
        if output.closed.done():
            return
        with contextlib.suppress(TimeoutError):
            # The group id is the first thing the wrapper writes.
            await asyncio.wait_for(asyncio.shield(output.pgid), 2)
        if output.pgid.done():
            await self._exec(kill_group_script(output.pgid.result()), what="stopping a command",
                             timeout=30)  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(output.closed), 5)
        chan.close()

    async def _exec(self, script: str, *, what: str, input: str | None = None,
                    timeout: float = _EXEC_TIMEOUT) -> asyncssh.SSHCompletedProcess:  # fmt: skip
        """Run one of the layer's own short commands and collect its output."""
        with connection_errors(self.host, what):
            try:
                done = await self._conn.run(
                    script, input=input, check=False, timeout=timeout, errors="replace"
                )
            except asyncssh.TimeoutError as exc:
                raise SshTransientError(
                    f"{what} on {self.host} timed out after {timeout:g}s"
                ) from exc
        if done.exit_status is None and done.exit_signal is None:
            raise SshTransientError(f"connection to {self.host} lost while {what}")
        return done

    # --- uploading files ---------------------------------------------------

    async def upload(self, files: Sequence[FileSpec]) -> list[UploadResult]:
        """Put files on the container, atomically, skipping unchanged ones.

        One remote command creates the parent directories, resolves the
        owners and checksums every target.  Then each new content is written
        under a temporary name in its target's directory with its owner and
        mode already set: small files in one tar stream over one command
        (when the container has GNU tar), large ones over SFTP.  Only when
        all are written are they renamed into place (atomic per file), after
        a hard link has kept the old file for policy BACKUP.  Files whose
        content already matches are not sent; with REPLACE/BACKUP their
        owner and mode are still brought to the declared ones.

        Args:
            files: what to put where; target paths must be unique.

        Returns:
            One result per file, in the given order.

        Raises:
            ConfigError: duplicate targets, an unreadable local source, or a
                target that is a directory.
            SshPermanentError: the container cannot take the files (unknown
                owner, no space, permission denied, a parent is a file).
            SshTransientError: the connection dropped; no temporary file is
                left behind unless the drop prevented removing it.
        """
        if not files:
            return []
        seen: set[str] = set()
        for spec in files:
            if spec.path in seen:
                raise ConfigError(f"{spec.path} is declared twice in one upload")
            seen.add(spec.path)
        now = datetime.now(UTC)
        local = await read_local(list(files))
        owners = sorted({spec.owner for spec in files})
        paths = [spec.path for spec in files]
        probe = await self._exec(
            PROBE_SCRIPT, what="checking the target files",
            input=probe_input(parent_directories(paths), owners, paths),
        )  # fmt: skip
        stderr = str(probe.stderr or "").strip()
        if probe.exit_status != 0:
            problem = {3: "cannot create the target directories", 4: "unknown file owner"}.get(
                probe.exit_status or 0, "checking the target files failed"
            )
            raise SshPermanentError(f"{problem} on {self.host}: {stderr[-2000:]}")
        try:
            answer = parse_probe(owners, paths, str(probe.stdout or ""), stderr)
        except ValueError as exc:
            raise SshPermanentError(f"checking the target files on {self.host}: {exc}") from exc
        plans = [
            plan_file(spec, content.sha256, answer.files[spec.path])
            for spec, content in zip(files, local, strict=True)
        ]
        token = secrets.token_hex(6)  # temp names no earlier run can have left behind
        pending = [
            PendingFile(
                spec,
                plan.action,
                _temp_name(spec, plan.action, token, i),
                *answer.owners[spec.owner],
                content,
            )
            for i, (spec, plan, content) in enumerate(zip(files, plans, local, strict=True))
            if plan.action is not Action.LEAVE
        ]
        backups = (
            await transfer(self._conn, self.host, pending, use_tar=answer.gnu_tar, now=now)
            if pending
            else {}
        )
        return [
            UploadResult(spec.path, plan.status, c.sha256, c.size, backups.get(spec.path))
            for spec, plan, c in zip(files, plans, local, strict=True)
        ]


def _temp_name(spec: FileSpec, action: Action, token: str, index: int) -> str | None:
    """A hidden name in the target's own directory, so the rename is atomic."""
    if action not in (Action.WRITE, Action.WRITE_WITH_BACKUP):
        return None
    return posixpath.join(spec.directory, f".provisioner-tmp-{token}-{index}")


def _import_key(text: str, what: str, host: str, importer: Callable[[str], _Key]) -> _Key:
    try:
        return importer(text)
    except (asyncssh.KeyImportError, ValueError, TypeError) as exc:
        # The exception says what is wrong without echoing the key.
        raise SshPermanentError(f"the {what} for {host} cannot be read: {exc}") from None

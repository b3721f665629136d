"""One remote command: how it is wrapped, how its output is received line by
line, and how it is killed with its children.  Used by
:meth:`provisioner.ssh.session.SshSession.run`.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
from collections.abc import Callable, Mapping
from typing import NamedTuple

import asyncssh

from provisioner.errors import ConfigError
from provisioner.ssh.lines import LineSplitter, OutputTail, Stream

LineCallback = Callable[[Stream, str], None]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Written by the wrapper to stderr before the command starts, then swallowed.
_PGID_LINE = re.compile("\x1eprovisioner-pgid=([0-9]+)")
KILL_GRACE_SECONDS = 2.0


class WrappedCommand(NamedTuple):
    """What to send for one command: the text sshd runs, and the preamble
    to write on its stdin before anything else (the environment)."""

    text: str
    preamble: bytes


# Reads the preamble: a line with the size of the exports, then the exports.
# `read` takes its line byte by byte and `head -c` no more than it is asked
# for, so the command's own input (a data stream for an import) is untouched.
_READ_ENV = (
    'IFS= read -r _provisioner_env || { echo "provisioner: no environment on stdin" >&2; '
    "exit 125; }; "
    'case $_provisioner_env in 0) ;; *) eval "$(head -c "$_provisioner_env")";; esac; '
    "unset _provisioner_env; "
)


def wrap_command(command: str, env: Mapping[str, str]) -> WrappedCommand:
    """Report the process group id on stderr, read ``env`` from stdin, run
    the command.

    sshd starts every session's command as a session leader, so ``$$`` is the
    id of the process group the command and its children share.  The
    variables travel on the command's stdin, ahead of its own input: sshd
    accepts only LANG and LC_* through the protocol by default, and inside
    the command text they would be on the remote shell's command line, which
    every user of the container can read (``ps``).

    Raises:
        ConfigError: an invalid variable name or a NUL in a value.
    """
    exports = []
    for key, value in env.items():
        if not _ENV_NAME.fullmatch(key):
            raise ConfigError(f"invalid environment variable name {key!r}")
        if "\0" in value:
            raise ConfigError(f"environment variable {key} contains a NUL byte")
        exports.append(f"export {key}={shlex.quote(value)}\n")
    block = "".join(exports).encode()
    # eval, not a second shell: the login shell that sshd started runs the
    # command itself, as with plain `ssh host command` (one ~/.bashrc, and a
    # syntax error in the command still reaches us as its exit status).
    text = (
        "printf '\\036provisioner-pgid=%s\\n' \"$$\" >&2; "
        + _READ_ENV
        + f"eval {shlex.quote(command)}"
    )
    return WrappedCommand(text, b"%d\n" % len(block) + block)


def kill_group_script(pgid: int, grace: float = KILL_GRACE_SECONDS) -> str:
    """SIGTERM a process group, SIGKILL whatever is left after ``grace`` s."""
    group = f"-{int(pgid)}"
    steps = max(1, round(grace * 10))
    return (
        f"kill -TERM -- {group} 2>/dev/null || exit 0; i=0; "
        f"while [ $i -lt {steps} ] && kill -0 -- {group} 2>/dev/null; "
        f"do sleep 0.1; i=$((i+1)); done; kill -KILL -- {group} 2>/dev/null; exit 0"
    )


def command_label(command: str) -> str:
    """How errors name a command: its first word only (arguments may be secret)."""
    words = command.strip().split(maxsplit=1)
    return f"command '{words[0][:60]}'" if words else "empty command"


def signal_exit_status(name: str) -> int:
    """The shell's exit status for a death by signal ``name`` ("KILL" -> 137)."""
    try:
        return 128 + int(signal.Signals[f"SIG{name}"])
    except KeyError:
        return 128


class CommandOutput(asyncssh.SSHClientSession[bytes]):
    """Receives one command's output and hands it on line by line.

    Lines are delivered from asyncssh's data callback, so they come in the
    order the server sent them, stdout and stderr interleaved as received.
    """

    def __init__(
        self, on_line: LineCallback | None, tail_lines: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._on_line = on_line
        self._splitters: dict[Stream, LineSplitter] = {
            "stdout": LineSplitter(),
            "stderr": LineSplitter(),
        }
        self._flushed = False
        self.tail = OutputTail(tail_lines)
        self.pgid: asyncio.Future[int] = loop.create_future()
        # Result: the exception that ended the channel, or None.
        self.closed: asyncio.Future[Exception | None] = loop.create_future()
        # Done when the channel closed or on_line raised.
        self.finished: asyncio.Future[None] = loop.create_future()
        self.status: int | None = None
        self.exit_signal: str | None = None
        self.callback_error: Exception | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        stream: Stream = "stderr" if datatype == asyncssh.EXTENDED_DATA_STDERR else "stdout"
        for line in self._splitters[stream].feed(data):
            self._line(stream, line)

    def eof_received(self) -> bool:
        self._flush()
        return False

    def exit_status_received(self, status: int) -> None:
        self.status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        self._flush()
        if not self.closed.done():
            self.closed.set_result(exc)
        if not self.finished.done():
            self.finished.set_result(None)

    def exit_status(self) -> int | None:
        """The exit status, 128+N for signal N, None if the channel just died."""
        if self.status is not None:
            return self.status
        if self.exit_signal is not None:
            return signal_exit_status(self.exit_signal)
        return None

    def _flush(self) -> None:
        if self._flushed:
            return
        self._flushed = True
        for stream, splitter in self._splitters.items():
            for line in splitter.flush():
                self._line(stream, line)

    def _line(self, stream: Stream, line: str) -> None:
        # Not only the first stderr line: Debian's bash sources ~/.bashrc for
        # commands run by sshd, and that may print before the wrapper does.
        if stream == "stderr" and not self.pgid.done():
            match = _PGID_LINE.fullmatch(line)
            if match:
                self.pgid.set_result(int(match.group(1)))
                return
        self.tail.add(stream, line)
        if self._on_line is None or self.callback_error is not None:
            return
        try:
            self._on_line(stream, line)
        except Exception as exc:  # run() stops the command and re-raises it
            self.callback_error = exc
            if not self.finished.done():
                self.finished.set_result(None)

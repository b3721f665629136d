"""A remote command kept running with its streams open, for streaming data:
its stdout read as bytes with flow control, its stdin written with back
pressure, its stderr (and a text stdout) line by line as with
:meth:`~provisioner.ssh.session.SshSession.run`.

Started by :meth:`~provisioner.ssh.session.SshSession.start`;
:func:`provisioner.ssh.pipe.pipe` joins two of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

import asyncssh

from provisioner.ssh.command import CommandOutput, LineCallback
from provisioner.ssh.lines import OutputLine

__all__ = ["RemoteProcess", "StreamOutput"]


class StreamOutput(CommandOutput):
    """A :class:`~provisioner.ssh.command.CommandOutput` that can keep stdout
    as bytes (``raw_stdout``) instead of lines, and knows when the command
    exited and when its stdin takes more.

    Raw stdout waits in a buffer until read; once ``limit`` bytes wait, the
    channel stops reading, so the SSH window holds the rest on the remote
    side and the sender blocks: memory stays bounded (``limit`` plus two SSH
    windows at most) whatever reads slowly.
    """

    def __init__(
        self, on_line: LineCallback | None, tail_lines: int, loop: asyncio.AbstractEventLoop,
        *, raw_stdout: bool, limit: int,
    ) -> None:  # fmt: skip
        super().__init__(on_line, tail_lines, loop)
        self._raw = raw_stdout
        self._limit = max(1, limit)
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._resuming = False
        self._discarding = False
        self._chan: asyncssh.SSHClientChannel[bytes] | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.stdout_eof = False
        # Done when the exit status (or signal) arrived or the channel closed.
        self.exited: asyncio.Future[None] = loop.create_future()

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self._chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if not self._raw or datatype == asyncssh.EXTENDED_DATA_STDERR:
            super().data_received(data, datatype)
            return
        if self._discarding:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        self._readable.set()
        if self._buffered >= self._limit and not self._resuming:
            self._pause()

    def _pause(self) -> None:
        if not self._paused and self._chan is not None:
            self._paused = True
            self._chan.pause_reading()

    def _resume(self) -> None:
        if not self._paused or self._chan is None:
            return
        self._paused = False
        # Take all the channel holds, without pausing part-way: asyncssh
        # gives the whole window back at the first delivery, whatever is
        # still queued, so each partial resume would let the queue grow by
        # up to a window.
        self._resuming = True
        try:
            self._chan.resume_reading()
        finally:
            self._resuming = False
        if self._buffered >= self._limit:
            self._pause()

    def eof_received(self) -> bool:
        super().eof_received()
        self.stdout_eof = True
        self._readable.set()
        # Keep our half open: asyncssh would otherwise send EOF to the
        # command's stdin as soon as it closed its stdout, and an import that
        # redirects its stdout (exec >&2) would see its stream end early.
        return True

    def exit_status_received(self, status: int) -> None:
        super().exit_status_received(status)
        self._set_exited()

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        super().exit_signal_received(signal, core_dumped, msg, lang)
        self._set_exited()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._readable.set()
        self._writable.set()
        self._set_exited()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _set_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def discard_stdout(self) -> None:
        """Drop unread and further stdout and read on: a paused channel
        would never see the remote close it."""
        self._discarding = True
        self._chunks.clear()
        self._buffered = 0
        self._resume()

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of stdout; b"" at its end (or the channel's)."""
        while not self._chunks:
            if self.stdout_eof or self.closed.done():
                return b""
            self._readable.clear()
            await self._readable.wait()
        pieces: list[bytes] = []
        taken = 0
        while self._chunks and taken < size:
            chunk = self._chunks.popleft()
            if taken + len(chunk) > size:
                self._chunks.appendleft(chunk[size - taken :])
                chunk = chunk[: size - taken]
            pieces.append(chunk)
            taken += len(chunk)
        self._buffered -= taken
        if self._buffered < self._limit:
            self._resume()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def drain(self) -> None:
        """Wait until the channel's send buffer is low again.

        Raises:
            BrokenPipeError: the channel closed (the command ended).
        """
        await self._writable.wait()
        if self.closed.done():
            raise BrokenPipeError("the command's channel is closed")


class RemoteProcess:
    """A command started by :meth:`SshSession.start`, running.

    Attributes:
        host: the container's address.
        label: how errors name the command.
    """

    def __init__(
        self, chan: asyncssh.SSHClientChannel[bytes], output: StreamOutput, *, host: str,
        label: str, stop: Callable[[], Awaitable[None]],
    ) -> None:  # fmt: skip
        self._chan = chan
        self._output = output
        self._stop = stop
        self.host = host
        self.label = label

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of its stdout (``raw_stdout``); b"" at the end."""
        return await self._output.read(size)

    def write(self, data: bytes) -> None:
        """Queue ``data`` for its stdin; follow with :meth:`drain`.

        Raises:
            BrokenPipeError: its channel is no longer open for sending.
        """
        self._chan.write(data)

    async def drain(self) -> None:
        """Wait until what was written has mostly left (back pressure).

        Raises:
            BrokenPipeError: the command's channel closed.
        """
        await self._output.drain()

    def write_eof(self) -> None:
        """End its stdin.

        Raises:
            BrokenPipeError: its channel closed before.
        """
        if self._output.closed.done():
            raise BrokenPipeError("the command's channel is closed")
        self._chan.write_eof()

    async def wait_exit(self) -> int | None:
        """Wait until it exits; its status (128 + N for signal N), or None
        if the connection dropped first."""
        await asyncio.shield(self._output.exited)
        return self._output.exit_status()

    async def wait_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for its channel to close (all output
        delivered); True if it did."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._output.closed), timeout)
        return self._output.closed.done()

    def close(self) -> None:
        """Close its channel without killing anything (it has exited)."""
        self._chan.close()

    @property
    def lost_reason(self) -> Exception | None:
        """Why the channel closed without an exit status, if asyncssh said."""
        closed = self._output.closed
        return closed.result() if closed.done() else None

    def tail(self) -> list[OutputLine]:
        """The last lines of its output (stderr, and stdout unless raw)."""
        return self._output.tail.lines()

    def tail_texts(self) -> list[str]:
        """The same as text, stderr lines marked (for error details)."""
        return self._output.tail.texts()

    async def stop(self) -> None:
        """Kill its process group (TERM, then KILL) and close its channel;
        unread stdout is dropped.

        Raises:
            SshTransientError: the connection dropped while stopping it.
        """
        self._output.discard_stdout()
        await self._stop()

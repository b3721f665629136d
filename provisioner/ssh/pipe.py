"""Streaming one command's output into another's input across SSH sessions:
how a container's application data goes into another container (sync,
promote, clone), from a template's ``export`` hook to its ``import`` hook.

The data never rests here: one chunk at a time is read from the export's
stdout and written to the import's stdin, the next read waiting for the
write to drain; the export's channel stops reading while a chunk waits, so
its SSH window pushes back on the export itself.  The import gets EOF only
after the export exited 0: a stream cut short by a failure is never
presented to it as complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from provisioner.errors import CommandFailedError, SshTransientError
from provisioner.ssh.errors import describe
from provisioner.ssh.process import RemoteProcess
from provisioner.ssh.session import SshSession

__all__ = ["DEFAULT_CHUNK", "Side", "pipe"]

Side = Literal["export", "import"]
DEFAULT_CHUNK = 256 * 1024
_PROGRESS_INTERVAL = 0.25  # s between on_bytes calls while data flows
_CLOSE_GRACE = 5.0  # s for a channel to close after its command exited
_MESSAGE_LINES = 3  # last lines quoted in an error message


async def pipe(
    source: SshSession,
    export_cmd: str,
    target: SshSession,
    import_cmd: str,
    *,
    source_env: Mapping[str, str] | None = None,
    target_env: Mapping[str, str] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_stderr: Callable[[str, str], None] | None = None,
    timeout: float | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> int:
    """Run ``export_cmd`` on ``source`` and ``import_cmd`` on ``target``, the
    export's stdout streamed into the import's stdin as it arrives.

    Source and target may be the same session.  Memory stays bounded: a few
    chunks plus one SSH window, whatever the size of the stream.

    Args:
        source: where the export runs.
        export_cmd: shell command writing the stream on its stdout.
        target: where the import runs.
        import_cmd: shell command reading the stream on its stdin.
        source_env: variables for the export; sent on its stdin ahead of
            everything, never on a command line (see
            :func:`provisioner.ssh.command.wrap_command`).
        target_env: variables for the import, the same way.
        on_bytes: called with the bytes piped so far, at most about four
            times a second while data flows, and once at the end.
        on_stderr: called with ("export"|"import", line) for every stderr
            line of either side (the import's stdout is kept for errors only).
        timeout: seconds for the whole pipe; then both sides are killed.
        chunk: the most bytes read, written and held unread per side at once.

    Returns:
        The number of bytes piped.

    Raises:
        CommandFailedError: a side exited non-zero, ended before the stream
            did (the import), or timed out (``timed_out=True``); the message
            names the side and the host, with the side's last stderr lines.
            The other side is stopped (process group killed).
        SshTransientError: a connection dropped; the other side is stopped.
        ConfigError: an invalid environment variable name.
        Whatever ``on_bytes`` or ``on_stderr`` raise (both sides stopped).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 byte, got {chunk}")
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    run = _Pipe(on_bytes, on_stderr, timeout, deadline, chunk)
    export = await source.start(
        export_cmd, env=source_env, name="export", on_line=run.lines("export"),
        raw_stdout=True, read_limit=chunk,
    )  # fmt: skip
    processes = [export]
    try:
        importer = await target.start(import_cmd, env=target_env, name="import",
                                      on_line=run.lines("import"), stdin=True)  # fmt: skip
        processes.append(importer)
        return await run.run(export, importer)
    except BaseException:
        # Shielded: a cancelled pipe must still stop what it started.
        await asyncio.shield(_stop_all(processes))
        raise


async def _stop_all(processes: list[RemoteProcess]) -> None:
    async def stop(process: RemoteProcess) -> None:
        # The failure being raised is the news; a dead connection here is
        # part of it (a process on a dropped connection is gone anyway).
        with contextlib.suppress(SshTransientError):
            await process.stop()

    await asyncio.gather(*(stop(p) for p in processes))


class _Pipe:
    """One pipe's state: the byte count, progress and callback failures."""

    def __init__(
        self, on_bytes: Callable[[int], None] | None,
        on_stderr: Callable[[str, str], None] | None, timeout: float | None,
        deadline: float | None, chunk: int,
    ) -> None:  # fmt: skip
        self.on_bytes = on_bytes
        self.on_stderr = on_stderr
        self.timeout = timeout
        self.deadline = deadline
        self.chunk = chunk
        self.total = 0
        self.last_progress = time.monotonic()
        self.callback_failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def lines(self, side: Side) -> Callable[[str, str], None] | None:
        on_stderr = self.on_stderr
        if on_stderr is None:
            return None

        def on_line(stream: str, line: str) -> None:
            if stream != "stderr" or self.callback_failed.done():
                return
            try:
                on_stderr(side, line)
            except Exception as exc:  # run() stops both sides and raises it
                self.callback_failed.set_exception(exc)

        return on_line

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    async def run(self, export: RemoteProcess, importer: RemoteProcess) -> int:
        pump = asyncio.create_task(self.pump(export, importer))
        export_exit = asyncio.create_task(export.wait_exit())
        import_exit = asyncio.create_task(importer.wait_exit())
        tasks = (pump, export_exit, import_exit)
        try:
            # 1. The stream, until the export's stdout ends.
            watch: set[asyncio.Future[Any]] = {pump, export_exit, import_exit,
                                               self.callback_failed}  # fmt: skip
            while not pump.done():
                done, _ = await asyncio.wait(watch, timeout=self.remaining(),
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if not done:
                    raise self.timed_out("export" if not export_exit.done() else "import",
                                         export if not export_exit.done() else importer)  # fmt: skip
                if self.callback_failed.done():
                    self.callback_failed.result()  # raises the callback's error
                if import_exit.done() and not pump.done():
                    raise self.ended_early(importer, import_exit.result())
                if export_exit in done:
                    watch.discard(export_exit)
                    status = export_exit.result()
                    if status != 0:
                        raise self.failed("export", export, status)
            try:
                pump.result()
            except BrokenPipeError:
                # The import closed its channel before the stream ended.
                status = await self.wait("import", importer, import_exit)
                raise self.ended_early(importer, status) from None
            # 2. The export's stdout ended: only its exit status 0 makes the
            # stream complete, and only then does the import see its end.
            status = await self.wait("export", export, export_exit)
            if status != 0:
                raise self.failed("export", export, status)
            try:
                importer.write_eof()
            except BrokenPipeError:
                status = await self.wait("import", importer, import_exit)
                raise self.ended_early(importer, status) from None
            status = await self.wait("import", importer, import_exit)
            if status != 0:
                raise self.failed("import", importer, status)
            # 3. The last stderr lines arrive before the channels close.
            for process in (export, importer):
                if not await process.wait_closed(_CLOSE_GRACE):
                    process.close()  # a child kept its output open; it exited 0
            if self.callback_failed.done():
                self.callback_failed.result()
            if self.on_bytes is not None:
                self.on_bytes(self.total)
            return self.total
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.callback_failed.done():
                self.callback_failed.exception()  # retrieved: raised above, or superseded

    async def pump(self, export: RemoteProcess, importer: RemoteProcess) -> None:
        """Copy the export's stdout into the import's stdin, one chunk at a time."""
        while data := await export.read(self.chunk):
            importer.write(data)
            self.total += len(data)
            now = time.monotonic()
            if self.on_bytes is not None and now - self.last_progress >= _PROGRESS_INTERVAL:
                self.last_progress = now
                self.on_bytes(self.total)
            await importer.drain()

    async def wait(self, side: Side, process: RemoteProcess, exit_task: asyncio.Task[int | None]
                   ) -> int | None:  # fmt: skip
        """The exit status of a side, within the pipe's deadline."""
        watch: set[asyncio.Future[Any]] = {exit_task, self.callback_failed}
        done, _ = await asyncio.wait(watch, timeout=self.remaining(),
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if self.callback_failed.done():
            self.callback_failed.result()
        if exit_task not in done:
            raise self.timed_out(side, process)
        return exit_task.result()

    # --- errors -----------------------------------------------------------------------------

    def failed(self, side: Side, process: RemoteProcess, status: int | None) -> Exception:
        if status is None:
            lost = process.lost_reason
            return SshTransientError(
                f"connection to {process.host} lost while running the {side}"
                + (f": {describe(lost)}" if lost else "")
                + f" ({self.total} bytes piped)"
            )
        return CommandFailedError(
            f"{side} on {process.host} exited with {status}{_last_lines(process)}",
            exit_status=status, output_tail=process.tail_texts(),
        )  # fmt: skip

    def ended_early(self, importer: RemoteProcess, status: int | None) -> Exception:
        if status != 0:
            return self.failed("import", importer, status)
        return CommandFailedError(
            f"import on {importer.host} exited with 0 before the end of the stream "
            f"({self.total} bytes piped){_last_lines(importer)}",
            exit_status=0, output_tail=importer.tail_texts(),
        )  # fmt: skip

    def timed_out(self, side: Side, process: RemoteProcess) -> CommandFailedError:
        return CommandFailedError(
            f"{side} on {process.host} timed out after {self.timeout or 0:g}s and was killed "
            f"({self.total} bytes piped){_last_lines(process)}",
            exit_status=None, output_tail=process.tail_texts(), timed_out=True,
        )  # fmt: skip


def _last_lines(process: RemoteProcess) -> str:
    """The message's tail, ": a; b; c", from its last stderr lines (else any output)."""
    lines = process.tail()
    texts = [ln.text for ln in lines if ln.stream == "stderr" and ln.text.strip()] or [
        ln.text for ln in lines if ln.text.strip()
    ]
    if not texts:
        return ""
    quoted = "; ".join(t.strip() for t in texts[-_MESSAGE_LINES:])
    return f": {quoted[-500:]}"

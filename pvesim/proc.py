"""Running host commands from the simulator's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import shlex


class CommandError(RuntimeError):
    """A host command failed; the message carries its stderr."""

    def __init__(self, argv: list[str], code: int, stderr: str) -> None:
        self.argv = argv
        self.code = code
        self.stderr = stderr.strip()
        super().__init__(f"{shlex.join(argv)} exited {code}: {self.stderr}")


async def run(*argv: str, check: bool = True, input: bytes | None = None) -> str:
    """Run a command, return its stdout.

    Raises:
        CommandError: when ``check`` and the command exits non-zero.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate(input)
    except asyncio.CancelledError:  # e.g. the key pool's refill at shutdown: no orphan
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if check and proc.returncode != 0:
        raise CommandError(list(argv), proc.returncode or 0, err.decode(errors="replace"))
    return out.decode(errors="replace")

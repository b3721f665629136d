"""Turning a remote command's byte chunks into whole lines of text.

Pure: no asyncssh here.  The SSH layer feeds every chunk it receives for a
stream (stdout or stderr) into that stream's :class:`LineSplitter` and
publishes the complete lines it returns.
"""

from __future__ import annotations

import codecs
from collections import deque
from typing import Literal, NamedTuple

Stream = Literal["stdout", "stderr"]

#: A line longer than this is cut into pieces, so a progress bar redrawn with
#: ``\r`` forever cannot grow the buffer without bound.
MAX_LINE_CHARS = 64 * 1024


class OutputLine(NamedTuple):
    """One line of a command's output, without its line ending."""

    stream: Stream
    text: str


class LineSplitter:
    """Buffers partial lines across chunks; decodes UTF-8 with replacement.

    ``\\n`` ends a line and a ``\\r`` right before it is dropped, whether or
    not both arrive in the same chunk; a multibyte character split across
    chunks is decoded whole.
    """

    def __init__(self, max_line_chars: int = MAX_LINE_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial: list[str] = []
        self._partial_len = 0
        self._max = max_line_chars

    def feed(self, chunk: bytes) -> list[str]:
        """Add a chunk; return the lines it completed (possibly none)."""
        return self._split(self._decoder.decode(chunk))

    def flush(self) -> list[str]:
        """End of stream: return the last partial line, if there is one."""
        lines = self._split(self._decoder.decode(b"", final=True))
        if self._partial_len:
            lines.append(self._take().removesuffix("\r"))
        return lines

    def _split(self, text: str) -> list[str]:
        if not text:
            return []
        pieces = text.split("\n")
        lines: list[str] = []
        for piece in pieces[:-1]:
            self._append(piece, lines)
            lines.append(self._take().removesuffix("\r"))
        self._append(pieces[-1], lines)
        return lines

    def _append(self, text: str, lines: list[str]) -> None:
        # Joined once per line rather than concatenated per chunk: a line
        # that arrives byte by byte stays linear.
        while self._partial_len + len(text) > self._max:
            room = self._max - self._partial_len
            self._partial.append(text[:room])
            self._partial_len += room
            text = text[room:]
            lines.append(self._take())
        if text:
            self._partial.append(text)
            self._partial_len += len(text)

    def _take(self) -> str:
        line = "".join(self._partial)
        self._partial.clear()
        self._partial_len = 0
        return line


class OutputTail:
    """The last ``size`` lines of a command's output, both streams mixed."""

    def __init__(self, size: int) -> None:
        self._lines: deque[OutputLine] = deque(maxlen=size)

    def add(self, stream: Stream, text: str) -> None:
        self._lines.append(OutputLine(stream, text))

    def lines(self) -> list[OutputLine]:
        return list(self._lines)

    def texts(self) -> list[str]:
        """The lines as text, stderr lines marked, for error messages."""
        return [f"[stderr] {ln.text}" if ln.stream == "stderr" else ln.text for ln in self._lines]

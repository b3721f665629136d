"""How the CLI shows things: tables, key/value lists, JSON, event lines, and
a run as it happens (a progress bar per phase, the log lines around them).

Output that scripts consume goes to stdout (tables, JSON, ids, a run's
stdout lines); everything for the operator's eyes goes to stderr (progress,
warnings, errors), styled only when it is a terminal.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.text import Text

from provisioner.phases import PROVISION, Plan
from provisioner.views import log_line

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from provisioner.events import Event

_EVENT_STYLES = {"step": "cyan", "warning": "yellow", "recovering": "bold yellow", "complete": "bold green",
                 "error": "bold red"}  # fmt: skip
STDERR_STYLE = "red"


def stdout_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def short_id(container_id: str) -> str:
    """The first 8 characters of a container id, as listings show it."""
    return container_id[:8]


def human_bytes(n: int | None) -> str:
    """``1536`` -> ``1.5 KiB``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def echo_json(data: Any, *, lines: bool = False) -> None:
    """One JSON document on stdout: indented, or on one line (JSON Lines)."""
    text = json.dumps(data, separators=(",", ":")) if lines else json.dumps(data, indent=2)
    click.echo(text)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A table on stdout: boxed for a terminal, plain aligned columns otherwise
    (never wrapped or cut, so it greps and pipes well)."""
    rows = [list(r) for r in rows]
    out = stdout_console()
    if out.is_terminal:
        from rich import box
        from rich.table import Table

        table = Table(*headers, box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold")
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [list(headers), *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def print_fields(pairs: Iterable[tuple[str, str]]) -> None:
    """``key: value`` lines on stdout, the keys aligned."""
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        click.echo(f"{key + ':':<{width + 1}} {value}")


def print_event_line(console: Console, e: Event) -> None:
    """An event as a text-log line on stdout, styled when it is a terminal."""
    line = log_line(e)
    if not console.is_terminal:
        click.echo(line)
        return
    style = STDERR_STYLE if e.stream == "stderr" else _EVENT_STYLES.get(e.type, "")
    console.print(Text(line, style=style))


def echo_err(message: str) -> None:
    """One line on stderr."""
    click.echo(message, err=True)


def stdin_line(what: str) -> str:
    """The first line of stdin without its line ending.

    Raises:
        BadInput: stdin is not UTF-8 text (``what`` names the option).
    """
    return read_stdin(what, whole=False)


def read_stdin(what: str, *, whole: bool = True) -> str:
    """All of stdin (or its first line, without the line ending).

    Raises:
        BadInput: stdin is not UTF-8 text (``what`` names the option).
    """
    from cli.runtime import BadInput

    try:
        return sys.stdin.read() if whole else sys.stdin.readline().rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{what}: standard input is not UTF-8 text ({exc.reason} "
                       f"at byte {exc.start})") from None  # fmt: skip


class RunView:
    """Shows one run's events as they arrive.

    Modes: ``json`` (each event as one JSON line on stdout), ``text`` (each
    event as a text-log line on stdout, as ``provisioner logs`` prints them),
    ``live`` (stderr is a terminal: a progress bar per phase, or one for an
    action, with percent and elapsed time, the log lines above them) and
    ``plain`` (steps as lines on stderr).  In ``live`` and ``plain`` the
    lines of a script's stdout (and task logs) go to stdout unstyled, the
    lines of its stderr to stderr, styled on a terminal.

    Args:
        bars: the plan's phases (a provisioning run, one bar each), or one
            action name for a single bar (start, stop, destroy, ...).
        done: phases finished before this run (shown complete).
        mode: ``json`` or ``text``; by default ``live`` or ``plain``.
        plan: the container's phases (a sandbox's has ``import``).
    """

    def __init__(self, bars: Sequence[str], *, done: Iterable[str] = (),
                 mode: str | None = None, plan: Plan = PROVISION) -> None:  # fmt: skip
        self.err = stderr_console()
        self.out = stdout_console()
        self.mode = mode or ("live" if self.err.is_terminal else "plain")
        self.bars = list(bars)
        self.plan = plan
        self.per_phase = self.bars == list(plan.names)
        self._done = set(done)
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._current: str | None = None

    def __enter__(self) -> RunView:
        if self.mode == "live":
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.fields[name]:<9}", style="bold"), BarColumn(bar_width=30),
                TaskProgressColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}", style="dim"),
                console=self.err, redirect_stdout=False, redirect_stderr=False,
                refresh_per_second=8,
            )  # fmt: skip
            for name in self.bars:
                task = self._progress.add_task("", total=100, start=False, name=name)
                self._tasks[name] = task
                if name in self._done:  # a full bar, not the "waiting" pulse
                    self._progress.start_task(task)
                    self._progress.update(task, completed=100, description="done earlier")
            self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        if self._progress is not None:
            self._progress.stop()

    def note(self, message: str, style: str = "yellow") -> None:
        """A message for the operator on stderr (thread-safe)."""
        with self._lock:
            self._print_err(Text(message, style=style))

    def event(self, e: Event) -> None:
        """Show one event."""
        with self._lock:
            if self.mode == "json":
                echo_json(e.as_dict(), lines=True)
            elif self.mode == "text":
                print_event_line(self.out, e)
            elif e.type == "log":
                self._log_line(e)
            elif e.type in ("warning", "recovering"):
                self._print_err(Text(f"{e.type}: {e.message}", style="yellow"))
            elif self._progress is not None:
                self._advance(e)
            elif e.type == "step":
                percent = f" {e.percent}%" if e.percent is not None else ""
                echo_err(f"[{e.phase or '-'}{percent}] {e.message}")

    def _print_err(self, text: Text) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        elif self.err.is_terminal:
            self.err.print(text)
        else:
            echo_err(text.plain)

    def _log_line(self, e: Event) -> None:
        if e.stream == "stderr":
            self._print_err(Text.from_ansi(e.message, style=STDERR_STYLE))
        elif self._progress is not None and self.out.is_terminal:
            self._progress.console.print(Text.from_ansi(e.message))  # the same terminal
        else:
            click.echo(e.message)

    def _advance(self, e: Event) -> None:
        assert self._progress is not None
        name = (e.phase if e.phase in self._tasks else None) if self.per_phase else self.bars[0]
        if name is None:
            return
        task = self._tasks[name]
        if name != self._current:
            if self.per_phase:  # the phases before this one are over
                for earlier in self.bars[: self.bars.index(name)]:
                    self._finish(earlier)
            self._progress.start_task(task)
            self._current = name
        if e.type == "complete":
            for bar in self.bars:
                self._finish(bar)
            self._progress.update(task, description=e.message)
        elif e.type == "error":
            self._progress.update(task, description="[bold red]failed")
            self._progress.stop_task(task)
        else:
            update: dict[str, Any] = {"description": e.message.replace("[", r"\[")}
            if e.percent is not None and e.phase in self.plan.names:
                update["completed"] = self.plan.phase_percent(e.phase, e.percent)
            self._progress.update(task, **update)

    def _finish(self, name: str) -> None:
        assert self._progress is not None
        task = self._tasks[name]
        state = self._progress.tasks[task]
        if state.completed < 100:
            if not state.started:
                self._progress.start_task(task)
            self._progress.update(task, completed=100)

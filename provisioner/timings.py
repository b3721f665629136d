"""How long a run and each of its phases took, from its events.

The one model of phase durations, used by the progress view's ETA
(``web.eta``), ``/metrics`` (``web.metrics``) and ``provisioner demo``.

A run is a container's events up to and including a terminal event
(``complete``/``error``; the next run starts after it).  A phase lasts from
its first event to the first event of another phase; a phase visited
twice (a run handed on while in it) counts both stretches.  The last
phase ends at the run's last event: its terminal event, or the latest one
of a run still going.  Events without a phase move no boundary.  Log
lines may be left out: every phase starts with a step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.events import TERMINAL_TYPES
from provisioner.models import ContainerEvent
from provisioner.phases import ALL_PHASES


@dataclass(frozen=True)
class Mark:
    """The part of an event timing needs."""

    type: str
    phase: str | None
    ts: datetime
    outcome: str | None = None  # terminal events: how the run ended


@dataclass(frozen=True)
class RunTiming:
    """One finished run: how it ended, how long it took (first event to the
    terminal one) and the seconds spent in each phase it went through."""

    outcome: str | None
    seconds: float
    phases: dict[str, float]


def split_runs(marks: Iterable[Mark]) -> list[list[Mark]]:
    """A container's events (in ``seq`` order) cut after each terminal
    event; an unfinished tail is left out."""
    runs: list[list[Mark]] = []
    current: list[Mark] = []
    for mark in marks:
        current.append(mark)
        if mark.type in TERMINAL_TYPES:
            runs.append(current)
            current = []
    return runs


def last_run(marks: Sequence[Mark]) -> list[Mark]:
    """The latest run: the events after the terminal event that precedes it."""
    ends = [i for i, m in enumerate(marks) if m.type in TERMINAL_TYPES]
    if ends and ends[-1] != len(marks) - 1:
        return list(marks[ends[-1] + 1 :])  # a run still going
    if len(ends) >= 2:
        return list(marks[ends[-2] + 1 :])
    return list(marks)


def phase_durations(marks: Iterable[Mark]) -> dict[str, float]:
    """Seconds per phase, in pipeline order, for the phases the events show.

    A phase still running at the last event ends there.
    """
    seconds: dict[str, float] = {}
    current: Mark | None = None  # the first event of the phase running
    last: Mark | None = None
    for mark in marks:
        last = mark
        if mark.phase is None or mark.phase not in ALL_PHASES:
            continue
        if current is None:
            current = mark
        elif mark.phase != current.phase:
            assert current.phase is not None
            seconds[current.phase] = seconds.get(current.phase, 0.0) + _seconds(current.ts, mark.ts)
            current = mark
    if current is not None and current.phase is not None and last is not None:
        seconds[current.phase] = seconds.get(current.phase, 0.0) + _seconds(current.ts, last.ts)
    return {p: seconds[p] for p in ALL_PHASES if p in seconds}


def run_timing(run: Sequence[Mark]) -> RunTiming | None:
    """The outcome and durations of one run (its events up to and including
    the terminal one); None when it has not ended."""
    if not run or run[-1].type not in TERMINAL_TYPES:
        return None
    end = run[-1]
    return RunTiming(end.outcome, _seconds(run[0].ts, end.ts), phase_durations(run))


def phase_order(marks: Iterable[Mark]) -> list[str]:
    """The phases in the order the events entered them first."""
    return list(dict.fromkeys(m.phase for m in marks if m.phase in ALL_PHASES))


def run_phase_durations(session: Session, container_id: str) -> dict[str, float]:
    """Phase durations of a container's latest run (read from the database)."""
    rows = session.execute(
        select(ContainerEvent.type, ContainerEvent.phase, ContainerEvent.ts)
        .where(ContainerEvent.container_id == container_id, ContainerEvent.type != "log")
        .order_by(ContainerEvent.seq)
    )
    return phase_durations(last_run([Mark(t, p, ts) for t, p, ts in rows]))


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())

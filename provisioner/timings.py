"""How long each phase of a run took, from its events.

A phase starts at its first event and ends where the next phase (or the
terminal event) begins.  One run is the stretch from a ``step`` of phase
``create`` — or from a retry's first event — to its ``complete``/``error``;
``run_phase_durations`` takes the events of the container's *last* run, so a
retried container reports what its successful run took.

Shared by the progress view's ETA, ``/metrics`` and ``provisioner demo``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.events import PHASES, TERMINAL_TYPES
from provisioner.models import ContainerEvent


@dataclass(frozen=True)
class Mark:
    """The part of an event timing needs."""

    type: str
    phase: str | None
    ts: datetime


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
    starts: dict[str, datetime] = {}
    order: list[str] = []
    end: datetime | None = None
    for mark in marks:
        end = mark.ts
        if mark.phase is not None and mark.phase not in starts:
            starts[mark.phase] = mark.ts
            order.append(mark.phase)
    if end is None:
        return {}
    order.sort(key=PHASES.index)
    result: dict[str, float] = {}
    for i, phase in enumerate(order):
        stop = starts[order[i + 1]] if i + 1 < len(order) else end
        result[phase] = max(0.0, (stop - starts[phase]).total_seconds())
    return result


def run_phase_durations(session: Session, container_id: str) -> dict[str, float]:
    """Phase durations of a container's latest run (read from the database)."""
    rows = session.execute(
        select(ContainerEvent.type, ContainerEvent.phase, ContainerEvent.ts)
        .where(ContainerEvent.container_id == container_id, ContainerEvent.type != "log")
        .order_by(ContainerEvent.seq)
    )
    return phase_durations(last_run([Mark(t, p, ts) for t, p, ts in rows]))

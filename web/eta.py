"""How long a run of a template takes, from its past runs.

Pure logic: the caller reads the events (``web.pages_progress``); this
module turns one container's first run into phase durations, and many runs
into medians the progress view counts down from.  A median, not a mean: one
run that downloaded the OS template or waited on a slow mirror should not
move the estimate much.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import median
from typing import Any

PHASES = ("create", "start", "deploy", "scripts", "finalize")


@dataclass(frozen=True)
class Mark:
    """What the estimate needs of one event."""

    seq: int
    type: str
    phase: str | None
    ts: datetime


@dataclass(frozen=True)
class RunDurations:
    """Seconds spent in each phase of one clean run, and in all of it."""

    phases: dict[str, float]
    total: float


@dataclass(frozen=True)
class Estimate:
    """Median seconds per phase and in total over ``runs`` clean runs."""

    runs: int
    phases: dict[str, float]
    total: float

    def as_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "total": round(self.total, 1),
                "phases": {p: round(s, 1) for p, s in self.phases.items()}}  # fmt: skip


def run_durations(marks: Iterable[Mark]) -> RunDurations | None:
    """The phase durations of a container's first run, if it was clean.

    Clean: it went through the five phases in order and ended with
    ``complete``, no ``error`` before (a failed and retried run says more
    about the failure than about the template).  A phase lasts from its
    first event to the first event of the next one; ``finalize`` ends with
    the ``complete`` event.

    Args:
        marks: the container's events in ``seq`` order (log lines may be
            left out: every phase starts with a step).

    Returns:
        The durations, or None when the first run was not clean or has not
        ended.
    """
    first: dict[str, datetime] = {}
    start: datetime | None = None
    end: datetime | None = None
    for mark in marks:
        if start is None:
            start = mark.ts
        if mark.type == "error":
            return None
        if mark.phase is not None and mark.phase not in first:
            first[mark.phase] = mark.ts
        if mark.type == "complete":
            end = mark.ts
            break
    if start is None or end is None or set(first) != set(PHASES):
        return None
    starts = [first[p] for p in PHASES]
    if starts != sorted(starts):
        return None
    bounds = [*starts, end]
    phases = {p: (bounds[i + 1] - bounds[i]).total_seconds() for i, p in enumerate(PHASES)}
    return RunDurations(phases=phases, total=(end - start).total_seconds())


def estimate(runs: Sequence[RunDurations]) -> Estimate | None:
    """Medians over the runs; None without any run."""
    if not runs:
        return None
    return Estimate(runs=len(runs), total=median(r.total for r in runs),
                    phases={p: median(r.phases[p] for r in runs) for p in PHASES})  # fmt: skip

"""The five phases of a provisioning run: their order, their labels and
where each falls on the run's overall percent scale.

The one place that knows them: the pipeline turns a phase's progress into
the overall percent of its ``step`` events with it, the CLI turns that
percent back into a per-phase bar, the event model validates phase names
against it, the ETA, ``/metrics`` and the demo order their timings by it,
and the progress page gets it rendered into the page (``as_json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Phase:
    """One phase: its name (the events' ``phase``), its label for people,
    and the overall percent it starts (``low``) and ends (``high``) at."""

    name: str
    label: str
    low: int
    high: int


PHASE_LIST = (
    Phase("create", "Create", 0, 20),
    Phase("start", "Start", 20, 35),
    Phase("deploy", "Deploy files", 35, 50),
    Phase("scripts", "Run scripts", 50, 90),
    Phase("finalize", "Finalize", 90, 100),
)
PHASES = tuple(p.name for p in PHASE_LIST)  # in pipeline order
PHASE_RANGES = {p.name: (p.low, p.high) for p in PHASE_LIST}
PHASE_LABELS = {p.name: p.label for p in PHASE_LIST}


def overall_percent(phase: str, fraction: float) -> int:
    """The run's overall percent once ``fraction`` (0-1, clamped) of ``phase`` is done.

    Raises:
        KeyError: ``phase`` is not one of ``PHASES``.
    """
    low, high = PHASE_RANGES[phase]
    return int(low + (high - low) * max(0.0, min(1.0, fraction)))


def phase_percent(phase: str, overall: int) -> float:
    """Where a run's overall percent falls within one phase (0-100).

    Raises:
        KeyError: ``phase`` is not one of ``PHASES``.
    """
    low, high = PHASE_RANGES[phase]
    return max(0.0, min(100.0, (overall - low) * 100.0 / (high - low)))


def as_json() -> list[dict[str, Any]]:
    """The phases for the browser, in order."""
    return [{"name": p.name, "label": p.label, "percent": [p.low, p.high]} for p in PHASE_LIST]

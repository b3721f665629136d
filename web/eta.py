"""How long a run of a template takes, from its past runs.

Pure logic: the caller reads the events (``web.pages_progress``); the
phase durations of a container's first run come from the one timing model
(``provisioner.timings``), and this module keeps the clean runs and takes
the medians the progress view counts down from.  A median, not a mean: one
run that downloaded the OS template or waited on a slow mirror should not
move the estimate much.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

from provisioner.phases import PROVISION, Plan
from provisioner.timings import Mark, RunTiming, phase_order, run_timing, split_runs


@dataclass(frozen=True)
class Estimate:
    """Median seconds per phase and in total over ``runs`` clean runs."""

    runs: int
    phases: dict[str, float]
    total: float

    def as_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "total": round(self.total, 1),
                "phases": {p: round(s, 1) for p, s in self.phases.items()}}  # fmt: skip


def run_durations(marks: Iterable[Mark], plan: Plan = PROVISION) -> RunTiming | None:
    """The timing of a container's first run, if it was clean.

    Clean: it went through the plan's phases in order (the five, or a
    sandbox's six) and ended with ``complete``, no ``error`` before (a
    failed and retried run says more about the failure than about the
    template).

    Args:
        marks: the container's events in ``seq`` order (log lines may be
            left out: every phase starts with a step).
        plan: the phases the container's runs follow.

    Returns:
        The timing, or None when the first run was not clean or has not
        ended.
    """
    runs = split_runs(marks)
    if not runs or runs[0][-1].type != "complete" or phase_order(runs[0]) != list(plan.names):
        return None
    return run_timing(runs[0])


def estimate(runs: Sequence[RunTiming], plan: Plan = PROVISION) -> Estimate | None:
    """Medians over the runs (clean runs of ``plan``: each has its every
    phase); None without any run."""
    if not runs:
        return None
    return Estimate(runs=len(runs), total=median(r.seconds for r in runs),
                    phases={p: median(r.phases[p] for r in runs) for p in plan.names})  # fmt: skip

"""The phases of a provisioning run: their order, their labels and
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


@dataclass(frozen=True)
class Plan:
    """The phases one kind of container goes through, in order.

    ``provision`` is the five phases every container runs; a client
    sandbox (``provisioner.sandboxes``) runs ``import`` (the client's
    content, read from the live site) between its scripts and finalize, so
    it is never ready with half the content.
    """

    name: str
    phases: tuple[Phase, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.phases)

    def range(self, phase: str) -> tuple[int, int]:
        """Raises: KeyError: ``phase`` is not one of the plan's."""
        found = next((p for p in self.phases if p.name == phase), None)
        if found is None:
            raise KeyError(phase)
        return found.low, found.high

    def overall_percent(self, phase: str, fraction: float) -> int:
        """The run's overall percent once ``fraction`` (0-1, clamped) of ``phase`` is done.

        Raises:
            KeyError: ``phase`` is not one of the plan's.
        """
        low, high = self.range(phase)
        return int(low + (high - low) * max(0.0, min(1.0, fraction)))

    def phase_percent(self, phase: str, overall: int) -> float:
        """Where a run's overall percent falls within one phase (0-100).

        Raises:
            KeyError: ``phase`` is not one of the plan's.
        """
        low, high = self.range(phase)
        return max(0.0, min(100.0, (overall - low) * 100.0 / (high - low)))

    def as_json(self) -> list[dict[str, Any]]:
        """The phases for the browser, in order."""
        return [{"name": p.name, "label": p.label, "percent": [p.low, p.high]}
                for p in self.phases]  # fmt: skip


PROVISION = Plan("provision", PHASE_LIST)
SANDBOX = Plan("sandbox", (
    Phase("create", "Create", 0, 15),
    Phase("start", "Start", 15, 25),
    Phase("deploy", "Deploy files", 25, 30),
    Phase("scripts", "Run scripts", 30, 55),
    Phase("import", "Import content", 55, 95),
    Phase("finalize", "Finalize", 95, 100),
))  # fmt: skip
PLANS = {p.name: p for p in (PROVISION, SANDBOX)}
PHASES = PROVISION.names  # the phases every container runs, in pipeline order
# every phase of any plan, in the order they run (events are validated against it)
ALL_PHASES = SANDBOX.names
assert set(PROVISION.names) <= set(ALL_PHASES)
PHASE_RANGES = {p.name: (p.low, p.high) for p in PHASE_LIST}
PHASE_LABELS = {p.name: p.label for plan in PLANS.values() for p in plan.phases}


def plan_named(name: str | None) -> Plan:
    """A container's plan by the name it records (None: ``provision``).

    Raises:
        KeyError: no such plan.
    """
    return PLANS[name or PROVISION.name]


def overall_percent(phase: str, fraction: float, plan: Plan = PROVISION) -> int:
    """``plan.overall_percent`` (the five phases' by default)."""
    return plan.overall_percent(phase, fraction)


def phase_percent(phase: str, overall: int, plan: Plan = PROVISION) -> float:
    """``plan.phase_percent`` (the five phases' by default)."""
    return plan.phase_percent(phase, overall)


def as_json(plan: Plan = PROVISION) -> list[dict[str, Any]]:
    """The phases for the browser, in order."""
    return plan.as_json()

"""The phases, their order, labels and percent ranges (pure logic)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from provisioner.phases import (
    ALL_PHASES,
    PHASE_LABELS,
    PHASE_LIST,
    PHASE_RANGES,
    PHASES,
    PLANS,
    SANDBOX,
    as_json,
    overall_percent,
    phase_percent,
    plan_named,
)


def test_the_five_phases_cover_the_percent_scale_in_order() -> None:
    assert PHASES == ("create", "start", "deploy", "scripts", "finalize")
    assert PHASE_RANGES["create"][0] == 0 and PHASE_RANGES["finalize"][1] == 100
    for before, after in pairwise(PHASE_LIST):
        assert before.low < before.high == after.low
    assert PHASE_LABELS == {"create": "Create", "start": "Start", "deploy": "Deploy files",
                            "scripts": "Run scripts", "import": "Import content",
                            "finalize": "Finalize"}  # fmt: skip


def test_every_plan_covers_the_scale_and_keeps_the_common_order() -> None:
    for plan in PLANS.values():
        assert plan.phases[0].low == 0 and plan.phases[-1].high == 100
        for before, after in pairwise(plan.phases):
            assert before.low < before.high == after.low
        assert [p for p in ALL_PHASES if p in plan.names] == list(plan.names)
    assert SANDBOX.names == ("create", "start", "deploy", "scripts", "import", "finalize")
    assert plan_named(None).names == PHASES and plan_named("sandbox") is SANDBOX
    assert SANDBOX.overall_percent("import", 0.5) == 75
    assert SANDBOX.phase_percent("import", 75) == 50
    with pytest.raises(KeyError):
        SANDBOX.overall_percent("nope", 0.5)
    with pytest.raises(KeyError):
        plan_named("nope")


def test_overall_percent_and_back() -> None:
    assert overall_percent("create", 0) == 0 and overall_percent("create", 0.5) == 10
    assert overall_percent("scripts", 0.5) == 70 and overall_percent("finalize", 1) == 100
    assert overall_percent("start", -1) == 20 and overall_percent("start", 7) == 35  # clamped
    assert phase_percent("create", 0) == 0 and phase_percent("create", 10) == 50
    assert phase_percent("scripts", 70) == 50 and phase_percent("scripts", 95) == 100
    assert phase_percent("finalize", 20) == 0
    for phase in PHASES:
        assert phase_percent(phase, overall_percent(phase, 0.25)) == pytest.approx(25, abs=7)
    with pytest.raises(KeyError):
        overall_percent("nope", 0.5)


def test_the_browser_gets_them_in_order() -> None:
    assert as_json()[3] == {"name": "scripts", "label": "Run scripts", "percent": [50, 90]}
    assert [p["name"] for p in as_json()] == list(PHASES)

"""Phase durations from events (pure logic): the one model the ETA,
/metrics and the demo share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from provisioner.timings import (
    Mark,
    RunTiming,
    last_run,
    phase_durations,
    phase_order,
    run_timing,
    split_runs,
)

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def at(seconds: float, type_: str = "step", phase: str | None = None,
       outcome: str | None = None) -> Mark:  # fmt: skip
    return Mark(type_, phase, T0 + timedelta(seconds=seconds), outcome)


def test_each_phase_ends_where_the_next_begins() -> None:
    marks = [at(0, phase="create"), at(2, "log", "create"), at(3, phase="start"),
             at(7, phase="deploy"), at(8, phase="scripts"), at(20, phase="finalize"),
             at(21.5, "complete", "finalize")]  # fmt: skip
    assert phase_durations(marks) == {"create": 3, "start": 4, "deploy": 1, "scripts": 12,
                                      "finalize": 1.5}  # fmt: skip


def test_a_running_phase_ends_at_the_last_event() -> None:
    assert phase_durations([at(0, phase="create"), at(5, "log", "create")]) == {"create": 5}
    assert phase_durations([at(0, phase="create"), at(5, "warning")]) == {"create": 5}
    assert phase_durations([]) == {}
    assert phase_durations([at(0, "warning"), at(3, "warning")]) == {}


def test_a_phase_entered_twice_counts_both_stretches_in_pipeline_order() -> None:
    marks = [at(0, phase="scripts"), at(4, phase="finalize"), at(5, phase="scripts"),
             at(6, "warning"),  # no phase: moves no boundary
             at(9, phase="finalize"), at(10, "complete", "finalize")]  # fmt: skip
    durations = phase_durations(marks)
    assert durations == {"scripts": 8, "finalize": 2}
    assert list(durations) == ["scripts", "finalize"]
    assert phase_order([at(0, phase="start"), at(1, phase="create"), at(2, phase="start")]) == [
        "start", "create"]  # fmt: skip


def test_last_run_starts_after_the_previous_terminal_event() -> None:
    first = [at(0, phase="create"), at(1, phase="scripts"), at(4, "error", "scripts")]
    retry = [at(10, phase="scripts"), at(12, phase="finalize"), at(13, "complete", "finalize")]
    assert last_run(first + retry) == retry
    assert last_run(first) == first
    assert last_run(first + retry[:2]) == retry[:2]  # the retry is still going
    assert phase_durations(last_run(first + retry)) == {"scripts": 2, "finalize": 1}


def test_runs_are_cut_after_terminal_events_and_carry_their_outcome() -> None:
    failed = [at(0, phase="create"), at(3, phase="start"), at(4, phase="scripts"),
              at(10, "error", "scripts", "error")]  # fmt: skip
    retried = [at(3600, phase="scripts"), at(3602, phase="finalize"),
               at(3603, "complete", "finalize", "ready")]  # fmt: skip
    unfinished = [at(4000, phase="finalize")]
    runs = split_runs(failed + retried + unfinished)
    assert runs == [failed, retried]
    assert [run_timing(r) for r in runs] == [
        RunTiming("error", 10, {"create": 3, "start": 1, "scripts": 6}),
        RunTiming("ready", 3, {"scripts": 2, "finalize": 1}),
    ]
    assert run_timing(unfinished) is None and run_timing([]) is None
    # events stored before terminal events carried an outcome
    assert run_timing([at(0, phase="create"), at(2, "complete", "create")]) == RunTiming(
        None, 2, {"create": 2})  # fmt: skip

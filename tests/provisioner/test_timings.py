"""Phase durations from events (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from provisioner.timings import Mark, last_run, phase_durations

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def at(seconds: float, type_: str = "step", phase: str | None = None) -> Mark:
    return Mark(type_, phase, T0 + timedelta(seconds=seconds))


def test_each_phase_ends_where_the_next_begins() -> None:
    marks = [at(0, phase="create"), at(2, "log", "create"), at(3, phase="start"),
             at(7, phase="deploy"), at(8, phase="scripts"), at(20, phase="finalize"),
             at(21.5, "complete", "finalize")]  # fmt: skip
    assert phase_durations(marks) == {"create": 3, "start": 4, "deploy": 1, "scripts": 12,
                                      "finalize": 1.5}  # fmt: skip


def test_a_running_phase_ends_at_the_last_event() -> None:
    assert phase_durations([at(0, phase="create"), at(5, "log", "create")]) == {"create": 5}
    assert phase_durations([]) == {}


def test_last_run_starts_after_the_previous_terminal_event() -> None:
    first = [at(0, phase="create"), at(1, phase="scripts"), at(4, "error", "scripts")]
    retry = [at(10, phase="scripts"), at(12, phase="finalize"), at(13, "complete", "finalize")]
    assert last_run(first + retry) == retry
    assert last_run(first) == first
    assert last_run(first + retry[:2]) == retry[:2]  # the retry is still going
    assert phase_durations(last_run(first + retry)) == {"scripts": 2, "finalize": 1}

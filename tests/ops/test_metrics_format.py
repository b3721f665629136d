"""The exposition format and the run analysis, without fixtures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from provisioner.timings import Mark, split_runs
from tests.ops import promtext
from web.metrics import (
    Family,
    Histogram,
    escape_label,
    format_value,
    render,
    summarize_run,
)

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def ev(second: float, type: str = "step", phase: str | None = "create",
       outcome: str | None = None) -> Mark:  # fmt: skip
    """One event as the metrics read it (the terminal ones with their outcome)."""
    return Mark(type, phase, T0 + timedelta(seconds=second), outcome)


def test_values_and_escaping() -> None:
    assert [format_value(v) for v in (3, 2.0, 0.25, float("inf"), 1e-7)] == [
        "3", "2", "0.25", "+Inf", "1e-07"]  # fmt: skip
    assert format_value(float("nan")) == "NaN"
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_rendered_text_parses_strictly_and_with_prometheus_client() -> None:
    hist = Histogram((1.0, 5.0))
    for value in (0.5, 3, 3, 9):
        hist.observe(value)
    gauge = Family("demo_things", "gauge", "Things.\nSecond line with a \\ backslash.")
    gauge.add(2, state='we"ird\\one\nx')
    gauge.add(0.5, state="plain")
    counter = Family("demo_runs_total", "counter", "Runs.")
    counter.add(7, outcome="ready")
    histogram = Family("demo_seconds", "histogram", "Durations.")
    hist.add_to(histogram, phase="create")
    text = render([gauge, counter, histogram])

    strict = promtext.parse(text)
    assert strict["demo_things"].help == "Things.\nSecond line with a \\ backslash."
    assert strict["demo_things"].value(state='we"ird\\one\nx') == 2
    assert strict["demo_seconds"].value("demo_seconds_bucket", phase="create", le="1") == 1
    assert strict["demo_seconds"].value("demo_seconds_bucket", phase="create", le="5") == 3
    assert strict["demo_seconds"].value("demo_seconds_bucket", phase="create", le="+Inf") == 4
    assert strict["demo_seconds"].value("demo_seconds_sum", phase="create") == 15.5

    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert parsed["demo_runs"].type == "counter"  # the client drops _total from the family
    labels = {s.labels["state"]: s.value for s in parsed["demo_things"].samples}
    assert labels == {'we"ird\\one\nx': 2, "plain": 0.5}
    assert parsed["demo_seconds"].type == "histogram"


@pytest.mark.parametrize("bad", [
    "# TYPE x gauge\nx 1",  # no final newline
    "# TYPE x gauge\nx 1\n# TYPE x gauge\n",  # TYPE twice
    "x 1\n# TYPE x gauge\n",  # TYPE after the samples
    "# TYPE x gauge\nx{a=\"1\"} 1\n# TYPE y gauge\ny 1\nx{a=\"2\"} 1\n",  # lines apart
    "# TYPE x gauge\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n",  # duplicate
    "# TYPE x gauge\nx{a=\"un\"escaped\"} 1\n",
    "# TYPE x counter\nx -1\n",
    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n",
])  # fmt: skip
def test_the_strict_reader_refuses_what_prometheus_would(bad: str) -> None:
    with pytest.raises(promtext.FormatError):
        promtext.parse(bad)


def test_a_ready_run_spends_its_time_in_the_phases() -> None:
    events = [ev(0, phase="create"), ev(4, phase="create"), ev(5, phase="start"),
              ev(6, "warning", phase="start"), ev(8, phase="deploy"),
              ev(9, phase="scripts"), ev(19, phase="finalize"),
              ev(21, "complete", "finalize", "ready")]  # fmt: skip
    summary = summarize_run(events)
    assert summary is not None and summary.outcome == "ready" and summary.seconds == 21
    assert summary.phases == {"create": 5, "start": 3, "deploy": 1, "scripts": 10, "finalize": 2}


def test_runs_are_cut_at_terminal_events_and_only_provisioning_counts() -> None:
    events = [
        ev(0, phase="create"), ev(3, phase="start"), ev(4, phase="scripts"),
        ev(10, "error", "scripts", "error"),  # "scripts failed: ..."
        # an hour later: the retry resumes at scripts
        ev(3600, phase="scripts"), ev(3602, phase="finalize"),
        ev(3603, "complete", "finalize", "ready"),
        ev(4000, phase="finalize"), ev(4001, "complete", "finalize", "done"),  # a stop
        ev(4100, phase="finalize"),
        ev(4101, "error", "finalize", "failed"),  # "start failed: CT 104 is locked"
        ev(4200, phase="finalize"), ev(4203, "complete", "finalize", "destroyed"),
        ev(4300, phase="create"),  # unfinished
    ]  # fmt: skip
    runs = split_runs(events)
    assert [r[-1] for r in runs] == [events[seq - 1] for seq in (4, 7, 9, 11, 13)]
    summaries = [summarize_run(r) for r in runs]
    failed, retried = summaries[0], summaries[1]
    assert failed is not None and failed.outcome == "error" and failed.seconds == 10
    assert failed.phases == {"create": 3, "start": 1, "scripts": 6}
    assert retried is not None and retried.outcome == "ready" and retried.seconds == 3
    assert retried.phases == {"scripts": 2, "finalize": 1}
    assert summaries[2:] == [None, None, None]  # stop, a failed start, destroy


def test_a_failed_start_phase_is_a_provisioning_run() -> None:
    # "start failed: no address after 120 s"
    events = [ev(0, phase="create"), ev(2, phase="start"), ev(7, "error", "start", "error")]
    summary = summarize_run(events)
    assert summary is not None and summary.outcome == "error"
    assert summary.phases == {"create": 2, "start": 5}


def test_the_outcome_field_decides_not_the_wording() -> None:
    # a terminal event without an outcome (never written since migration 0002) counts nothing
    assert summarize_run([ev(0, phase="create"), ev(2, "complete", "finalize")]) is None
    assert summarize_run([ev(0, phase="finalize"), ev(1, "error", "finalize", "failed")]) is None

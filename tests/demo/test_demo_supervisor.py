"""The demo's restart limit and exit reasons (pure logic; the restarts
themselves are tested through the demo, tests/demo/test_demo.py)."""

from __future__ import annotations

from cli.demo_supervisor import RestartLimit, exit_reason


def test_at_most_burst_restarts_within_the_interval() -> None:
    limit = RestartLimit(burst=5, interval=60)
    assert [limit.take(t) for t in (0, 1, 2, 3, 4)] == [1, 2, 3, 4, 5]
    assert limit.take(59.9) is None  # a sixth within 60 s: give up
    assert limit.take(60) == 5  # the first has left the window
    assert limit.take(60.5) is None
    assert limit.take(200) == 1  # a quiet minute: the count starts again


def test_exit_reasons_read_like_systemd() -> None:
    assert exit_reason(-9) == "killed by SIGKILL"
    assert exit_reason(-15) == "killed by SIGTERM"
    assert exit_reason(1) == "exit status 1"
    assert exit_reason(0) == "exit status 0"
    assert exit_reason(-200) == "killed by signal 200"

"""Following a run: the view (plain, live bars, JSON Lines), the outcome as
exit status and one-line reason, and the rules the CLI shares with the
pipeline and the REST API.  The "worker" here is the test itself,
publishing events the way a job does."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator

import pytest
from redis import Redis
from rq.job import Job, JobStatus
from rq.results import Result

from cli.output import RunView
from provisioner.db import session_scope
from provisioner.events import Event, EventPublisher, latest_seq
from provisioner.models import Container, Lifecycle
from provisioner.phases import PHASES
from provisioner.queue import provisioning_queue
from tests.cli.conftest import Cli
from tests.cli.test_containers import one_line_error


def run_events(cid: str = "c") -> list[Event]:
    spec = [
        ("step", "allocating", "create", 2, None, None),
        ("log", "task line", "create", None, None, None),
        ("step", "starting", "start", 25, None, None),
        ("warning", "slow node - retrying", "start", None, None, None),
        ("step", "running 10-a.sh", "scripts", 60, None, None),
        ("log", "out line", "scripts", None, "stdout", "10-a.sh"),
        ("log", "err line", "scripts", None, "stderr", "10-a.sh"),
        ("complete", "CT 1 is ready at 198.18.0.9", "finalize", 100, None, None),
    ]
    return [Event(seq=i, container=cid, type=t, message=m, phase=p, percent=pc, stream=s,
                  script=sc) for i, (t, m, p, pc, s, sc) in enumerate(spec, 1)]  # fmt: skip


def test_plain_view_splits_stdout_and_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with RunView(PHASES) as view:
        assert view.mode == "plain"
        for e in run_events():
            view.event(e)
    out, err = capsys.readouterr()
    assert out.splitlines() == ["task line", "out line"]
    assert err.splitlines() == ["[create 2%] allocating", "[start 25%] starting",
                                "warning: slow node - retrying", "[scripts 60%] running 10-a.sh",
                                "err line"]  # fmt: skip


def test_live_view_has_a_bar_per_phase(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    view = RunView(PHASES, done=["create"])
    with view:
        assert view.mode == "live"
        progress = view._progress
        assert progress is not None
        tasks = {t.fields["name"]: t for t in progress.tasks}
        assert list(tasks) == list(PHASES)
        assert tasks["create"].completed == 100  # finished by an earlier attempt
        for e in run_events()[2:5]:
            view.event(e)
        assert tasks["start"].completed == 100  # a later phase began
        assert tasks["scripts"].completed == 25 and tasks["scripts"].started  # 60% of 50-90
        assert not tasks["finalize"].started
        for e in run_events()[5:]:
            view.event(e)
        assert all(t.completed == 100 for t in progress.tasks)
        assert tasks["scripts"].finished_time is not None  # elapsed stops with the phase
    err = capsys.readouterr().err
    for name in PHASES:
        assert name in err
    assert "100%" in err and "out line" in err and "err line" in err
    assert "warning: slow node - retrying" in err


def test_live_view_of_an_action_has_one_bar(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    with RunView(["stop"]) as view:
        view.event(Event(seq=1, container="c", type="step", message="stop CT 1",
                         phase="finalize", percent=95))  # fmt: skip
        assert view._progress is not None
        (task,) = view._progress.tasks
        assert task.completed == 50
        view.event(Event(seq=2, container="c", type="error", message="stop failed: locked",
                         phase="finalize"))  # fmt: skip
        assert task.completed == 50 and "failed" in str(task.description)
    assert "stop" in capsys.readouterr().err


def test_json_view_prints_the_events_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    events = run_events()
    with RunView(PHASES, mode="json") as view:
        for e in events:
            view.event(e)
    lines = capsys.readouterr().out.splitlines()
    assert [Event.from_json(line) for line in lines] == events


# -- the outcome ---------------------------------------------------------------------


def start_leased(job: Job, cli: Cli | None = None, cid: str = "") -> None:
    """Mark a job started, and with ``cli``, note (as ``pipeline.job.run``
    does once it holds the container's lease) the seq its events follow."""
    job.set_status(JobStatus.STARTED)
    if cli is not None:
        with Redis.from_url(cli.settings.redis_url) as redis:
            job.meta["leased_after"] = latest_seq(redis, cli.factory, cid)
        job.save_meta()


def take_queued(redis: Redis, cli: Cli) -> Job:
    """The one job queued for the test (waiting for it), taken off the queue."""
    queue = provisioning_queue(redis, cli.settings)
    deadline = time.monotonic() + 30
    while not queue.get_job_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    (job_id,) = queue.get_job_ids()
    job = Job.fetch(job_id, connection=redis)
    queue.remove(job_id)
    return job


def set_lifecycle(cli: Cli, cid: str, lifecycle: Lifecycle) -> None:
    with session_scope(cli.factory) as session:
        ct = session.get(Container, cid)
        assert ct is not None
        ct.lifecycle = lifecycle


def act_as_worker(cli: Cli, cid: str, events: list[tuple[str, str, dict[str, object]]],
                  details: dict[str, object] | None = None,
                  lifecycle: Lifecycle | None = None, pace: float = 0.05,
                  result: str | None = None) -> threading.Thread:  # fmt: skip
    """Once a job of the container is queued, take it off the queue, mark it
    started, publish ``events`` (recording ``details`` as the error first),
    record ``lifecycle``, and mark it finished: what a worker does, without
    running anything."""

    def work() -> None:
        with Redis.from_url(cli.settings.redis_url) as redis:
            job = take_queued(redis, cli)
            start_leased(job, cli, cid)
            if details is not None:
                with session_scope(cli.factory) as session:
                    ct = session.get(Container, cid)
                    assert ct is not None
                    ct.error_details = details
                    ct.error_message = f"{details['phase']} failed: {details['message']}"
            with EventPublisher(redis, cli.factory, cid) as publisher:
                for type_, message, extra in events:
                    time.sleep(pace)
                    publisher.publish(type_, message, **extra)  # type: ignore[arg-type]
            if lifecycle is not None:
                set_lifecycle(cli, cid, lifecycle)
            if result is not None:
                Result.create(job, Result.Type.SUCCESSFUL, ttl=600, return_value=result)
            job.set_status(JobStatus.FINISHED)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


FAILED: list[tuple[str, str, dict[str, object]]] = [
    ("step", "running 20-check.sh", {"phase": "scripts", "percent": 70}),
    ("log", "found it: failing on purpose", {"phase": "scripts", "stream": "stderr",
                                             "script": "20-check.sh"}),
    ("error", "scripts failed: script 20-check.sh failed with exit code 3",
     {"phase": "scripts"}),
]  # fmt: skip
DETAILS = {"phase": "scripts", "script": "20-check.sh", "exit_code": 3, "timed_out": False,
           "message": "script 20-check.sh failed with exit code 3",
           "hint": "fix the script or the container, then retry"}  # fmt: skip


@pytest.fixture
def failed(cli: Cli) -> Iterator[str]:
    yield cli.add_container(hostname="flaky", lifecycle=Lifecycle.ERROR, vmid=9170,
                            finished_phases=["create", "start", "deploy"])  # fmt: skip


def test_a_failed_run_exits_1_with_a_one_line_reason(cli: Cli, failed: str) -> None:
    worker = act_as_worker(cli, failed, FAILED, DETAILS)
    result = cli("retry", "flaky", "--follow", "--timeout", "60")
    worker.join(10)
    assert result.exit_code == 1, result.output
    assert one_line_error(result.stderr) == (
        f"error: flaky ({failed[:8]}) failed in phase scripts, script 20-check.sh, exit code 3: "
        "script 20-check.sh failed with exit code 3 (fix the script or the container, then "
        "retry)")  # fmt: skip
    assert "[scripts 70%] running 20-check.sh" in result.stderr
    assert "found it: failing on purpose" in result.stderr  # the run's stderr line


def test_a_failed_run_in_json_lines(cli: Cli, failed: str) -> None:
    worker = act_as_worker(cli, failed, FAILED, DETAILS)
    result = cli("retry", failed[:6], "--follow", "--json", "--timeout", "60")
    worker.join(10)
    assert result.exit_code == 1, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["type"] == "queued" and lines[0]["action"] == "retry"
    assert lines[0]["id"] == failed and lines[0]["after"] == 0
    assert [e["type"] for e in lines[1:-1]] == ["step", "log", "error"]
    assert [e["seq"] for e in lines[1:-1]] == [1, 2, 3]
    assert lines[-1]["type"] == "result" and lines[-1]["ok"] is False
    assert lines[-1]["container"]["error_details"]["exit_code"] == 3
    assert "exit code 3" in lines[-1]["error"]


def test_a_finished_action_exits_0(cli: Cli) -> None:
    cid = cli.add_container(hostname="powered", lifecycle=Lifecycle.READY, vmid=9170)
    worker = act_as_worker(cli, cid, [
        ("step", "stop CT 9170", {"phase": "finalize", "percent": 95}),
        ("complete", "stop done", {"phase": "finalize", "percent": 100})])  # fmt: skip
    result = cli("stop", "powered", "--follow", "--timeout", "60")
    worker.join(10)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == "stop done"
    # logs shows the action's events; the latest run ended well
    logged = cli("logs", "powered")
    assert logged.exit_code == 0 and logged.stdout.splitlines()[-1].endswith("stop done")


def test_logs_follow_streams_until_the_run_ends(cli: Cli) -> None:
    cid = cli.add_container(hostname="busy", lifecycle=Lifecycle.CREATING)

    def work() -> None:
        time.sleep(1)
        with Redis.from_url(cli.settings.redis_url) as redis, \
                EventPublisher(redis, cli.factory, cid) as publisher:  # fmt: skip
            publisher.publish("step", "going", phase="create", percent=1)
            publisher.publish("log", "a line", phase="scripts", stream="stdout", script="x.sh")
            publisher.publish("error", "scripts failed: nope", phase="scripts")

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    result = cli("logs", "busy", "--follow", "--timeout", "60")
    worker.join(10)
    assert result.exit_code == 1, result.output
    assert [line.split("] ", 1)[1] for line in result.stdout.splitlines()] == [
        "create 1%: going",
        "a line",
        "scripts: scripts failed: nope",
    ]
    assert one_line_error(result.stderr) == (
        f"error: the latest run of busy ({cid[:8]}) ended in error: scripts failed: nope")  # fmt: skip


def test_logs_follow_does_not_wait_after_the_end(cli: Cli) -> None:
    """The terminal event is stored before the worker records the lifecycle:
    a run that has ended is not waited for, whatever the lifecycle says."""
    cid = cli.add_container(hostname="ended", lifecycle=Lifecycle.CREATING)
    with Redis.from_url(cli.settings.redis_url) as redis, \
            EventPublisher(redis, cli.factory, cid) as publisher:  # fmt: skip
        publisher.publish("complete", "CT 1 is ready", phase="finalize", percent=100)
    result = cli("logs", "ended", "--follow", "--timeout", "30")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("[complete] finalize 100%: CT 1 is ready")


def test_a_job_that_ends_without_a_result_ends_the_wait(cli: Cli) -> None:
    """A job skipped (another worker held the lease) or lost publishes no
    terminal event: following stops once it is over and nothing else runs."""
    cli.add_container(hostname="skipped", lifecycle=Lifecycle.READY, vmid=9170)
    worker = act_as_worker(cli, cli.add_container(hostname="other"), [])  # no event at all
    result = cli("start", "skipped", "--follow", "--timeout", "60")
    worker.join(10)
    assert result.exit_code == 1, result.output
    assert re.fullmatch(r"error: the start job of [0-9a-f]{8} ended \(finished\) without a "
                        r"result: see the worker's log and provisioner logs [0-9a-f]{8} "
                        r"--follow", one_line_error(result.stderr))  # fmt: skip


def provision_then_destroy(cli: Cli, cid: str, lines: int, then: float) -> threading.Thread:
    """A provisioning prints ``lines`` lines and ends while the destroy's job
    (started by a second worker) waits for the lease; the destroy takes it
    at once, and ``then`` seconds later destroys."""

    def work() -> None:
        with Redis.from_url(cli.settings.redis_url) as redis:
            destroy = take_queued(redis, cli)
            start_leased(destroy)  # started, waiting for the lease
            with EventPublisher(redis, cli.factory, cid) as publisher:
                for i in range(lines):
                    publisher.publish("log", f"line {i}", phase="scripts", stream="stdout")
                publisher.publish("complete", "CT 1 is ready", phase="finalize", percent=100)
                start_leased(destroy, cli, cid)  # the provisioning gave the lease up
                time.sleep(then)
                publisher.publish("step", "destroying CT 1", phase="finalize", percent=93)
                publisher.publish("complete", "destroyed", phase="finalize", percent=100)
            set_lifecycle(cli, cid, Lifecycle.DESTROYED)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_an_earlier_runs_end_does_not_end_the_wait(cli: Cli) -> None:
    """Destroying a pending container: its provisioning runs first (the
    destroy's job waits for the lease, started on another worker); the
    destroy's own result is the one that counts."""
    cid = cli.add_container(hostname="early", lifecycle=Lifecycle.PENDING)

    worker = provision_then_destroy(cli, cid, lines=0, then=0.5)
    result = cli("destroy", "early", "--yes", "--follow", "--json", "--timeout", "60")
    worker.join(10)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e.get("message") for e in lines[1:-1]] == ["CT 1 is ready", "destroying CT 1",
                                                       "destroyed"]  # fmt: skip
    assert lines[-1]["type"] == "result" and lines[-1]["ok"] is True


def test_a_reader_far_behind_still_reaches_the_result(cli: Cli, failed: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A slow terminal or pipe (``| less``): the job has long finished while
    the reader is still seconds behind; the wait ends at the terminal event,
    not when the job does, and exit 0 needs the container to be ready."""
    shown = RunView.event

    def slow_event(self: RunView, event: Event) -> None:
        time.sleep(0.003)
        shown(self, event)

    monkeypatch.setattr(RunView, "event", slow_event)
    lines = [("log", f"line {i}", {"phase": "scripts", "stream": "stdout", "script": "x.sh"})
             for i in range(3000)]  # fmt: skip
    done = [("complete", "CT 9170 is ready at 198.18.0.9", {"phase": "finalize", "percent": 100})]
    # the job is over at once, the reader needs ~9 s (the reader looks at
    # whether to stop between reads of up to 1,000 events)
    worker = act_as_worker(cli, failed, [*lines, *done], lifecycle=Lifecycle.READY, pace=0)
    result = cli("retry", "flaky", "--follow", "--timeout", "60")
    worker.join(10)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"line {i}" for i in range(3000)]


def test_complete_without_ready_is_not_success(cli: Cli, failed: str) -> None:
    """Exit 0 means the container is ready, not merely that a complete event came."""
    worker = act_as_worker(
        cli,
        failed,
        [("complete", "CT 9170 is ready at 198.18.0.9", {"phase": "finalize", "percent": 100})],
    )
    result = cli("retry", "flaky", "--follow", "--timeout", "60")
    worker.join(10)
    assert result.exit_code == 1, result.output
    assert "reported completion but is error" in one_line_error(result.stderr)


def test_a_retry_settled_while_it_waited_is_not_a_failure(cli: Cli, failed: str) -> None:
    """Two retries queued one after the other: the first made it ready, the
    second has nothing to do; following it says so and exits 0."""
    worker = act_as_worker(cli, failed, [], lifecycle=Lifecycle.READY,
                           result="not needed: the container is ready")  # fmt: skip
    result = cli("retry", "flaky", "--follow", "--timeout", "60")
    worker.join(10)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == "retry not needed: the container is ready"


def test_a_second_identical_action_is_refused_while_queued(cli: Cli, failed: str) -> None:
    first = cli("retry", "flaky")
    assert first.exit_code == 0, first.output
    again = cli("retry", "flaky")
    assert again.exit_code == 5
    assert re.fullmatch(rf"error: a retry of this container is queued already \(job "
                        rf"retry-{failed}-[0-9a-f]{{8}}\)", one_line_error(again.stderr))  # fmt: skip


def test_an_earlier_end_read_late_is_still_the_earlier_ones(cli: Cli,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The follower is behind (a slow terminal): the provisioning's end is
    read only after the destroy took the lease; it is still not the destroy's."""
    cid = cli.add_container(hostname="late-end", lifecycle=Lifecycle.PENDING)
    shown = RunView.event

    def slow_event(self: RunView, event: Event) -> None:
        time.sleep(0.01)
        shown(self, event)

    monkeypatch.setattr(RunView, "event", slow_event)

    # ~3 s of lines for the follower; the destroy takes the lease at once
    worker = provision_then_destroy(cli, cid, lines=300, then=5)
    result = cli("destroy", "late-end", "--yes", "--follow", "--json", "--timeout", "60")
    worker.join(20)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-2]["message"] == "destroyed" and lines[-1]["ok"] is True

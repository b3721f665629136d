"""Following a run from the CLI: its events as they arrive, shown as
progress bars and log lines (or JSON Lines), and its outcome as the exit
status.

The events come from ``provisioner.events.EventReader``, like the
dashboard's: every event after a ``seq`` exactly once, in order, until the
run's terminal event (``complete`` or ``error``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text
from sqlalchemy import select

from cli.output import RunView, echo_json, short_id
from cli.runtime import CliFailure, GaveUp, Interrupted, Runtime
from provisioner.models import Container, ContainerEvent, Lifecycle
from provisioner.phases import plan_named

if TYPE_CHECKING:
    from provisioner.events import Event

PROVISIONING = ("provision", "retry", "resync")
QUEUE_WARNING_AFTER = 10.0  # seconds without an event before "is a worker running?"
_ACTIVE = (Lifecycle.PENDING, Lifecycle.CREATING, Lifecycle.DESTROYING)


# -- options -------------------------------------------------------------------------

_FOLLOW_HELP = ("Wait for the result: a progress bar per phase (on a terminal) and "
                "the log lines; the exit status says how the run ended.")  # fmt: skip
_JSON_HELP = ("Print JSON for scripts.  Without --follow: one object ({fields}).  With "
              "--follow: JSON Lines: first {{\"type\": \"{first}\", {fields}}}, then every "
              "event of the run as the event stream carries it ({{\"seq\", \"type\", "
              "\"phase\", \"percent\", \"message\", ...}}), last {{\"type\": \"result\", "
              "\"ok\", \"container\", \"error\"}}.")  # fmt: skip


def follow_options(first: str, fields: str) -> Callable[[Any], Any]:
    """--follow, --json and --timeout; ``first`` and ``fields`` describe the
    JSON object printed before the events."""

    def decorate(f: Any) -> Any:
        f = click.option("--timeout", type=click.FloatRange(min=1), default=None,
                         metavar="SECONDS", help="With --follow: give up waiting after "
                         "SECONDS (exit 6; the run goes on).")(f)  # fmt: skip
        f = click.option("--json", "as_json", is_flag=True,
                         help=_JSON_HELP.format(first=first, fields=fields))(f)  # fmt: skip
        return click.option("--follow", "-f", is_flag=True, help=_FOLLOW_HELP)(f)

    return decorate


# -- the run's state ---------------------------------------------------------------


def last_seq(rt: Runtime, cid: str) -> int:
    """The seq of the container's latest event (0: none)."""
    from provisioner.events import latest_seq

    return latest_seq(rt.redis, rt.factory, cid)


def run_active(rt: Runtime, cid: str) -> bool:
    """Whether a run of the container is under way or queued."""
    from provisioner.queue import container_jobs

    with rt.factory() as session:
        ct = session.get(Container, cid)
        if ct is not None and ct.lifecycle in _ACTIVE:
            return True
    return bool(container_jobs(rt.redis, rt.settings, cid))


def run_to_follow(rt: Runtime, cid: str, shown: int) -> bool:
    """Whether ``logs --follow`` has a run to wait for, its events having
    been shown up to seq ``shown``: one under way (its latest event is not a
    terminal one), one whose last events (the terminal one among them) came
    after those shown, or one queued after the last ended.

    A run records its lifecycle right after its terminal event, so the
    lifecycle alone would keep waiting for a run that has just ended.
    """
    from provisioner.events import TERMINAL_TYPES
    from provisioner.queue import container_jobs

    with rt.factory() as session:
        latest = session.execute(select(ContainerEvent.seq, ContainerEvent.type)
                                 .where(ContainerEvent.container_id == cid)
                                 .order_by(ContainerEvent.seq.desc()).limit(1)).first()  # fmt: skip
    if latest is not None and latest.seq > shown:
        return True  # the run ended (or went on) while the stored events were shown
    if latest is None or latest.type not in TERMINAL_TYPES:
        return run_active(rt, cid)
    return "queued" in container_jobs(rt.redis, rt.settings, cid).values()


def _runs_after(rt: Runtime, job_id: str) -> int | None:
    """The seq after which the container's events are the job's (it took
    the lease then: ``pipeline.job.run`` notes it in the job's meta), or
    None while it has not.  A job gone or ended without it: -1 (whatever
    ended last is all there is)."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        job = Job.fetch(job_id, connection=rt.redis)
    except NoSuchJobError:
        return -1
    after = job.meta.get("leased_after")
    if isinstance(after, int):
        return after
    return None if job.get_status() in ("queued", "started") else -1


def _job_status(rt: Runtime, job_id: str) -> str | None:
    """The RQ status of a job (``queued``, ``started``, ``finished``...), or
    None once RQ has forgotten it."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        status = Job.fetch(job_id, connection=rt.redis).get_status()
    except NoSuchJobError:
        return None
    return str(status.value) if status is not None else None


def _job_outcome(rt: Runtime, job_id: str) -> str:
    """What a finished job returned (``pipeline.job.run``'s one line), or ""."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        value = Job.fetch(job_id, connection=rt.redis).return_value()
    except NoSuchJobError:
        return ""
    return value if isinstance(value, str) else ""


def failure_reason(rt: Runtime, cid: str, action: str | None, event: Event) -> str:
    """One line: which container, phase, script and exit code, and what to do."""
    with rt.factory() as session:
        ct = session.get(Container, cid)
        assert ct is not None
        name = f"{ct.hostname} ({short_id(cid)})"
        details = dict(ct.error_details or {})
    if action is None:
        return f"the latest run of {name} ended in error: {event.message}"
    if action not in PROVISIONING or not details:
        return f"{name}: {event.message}"
    where = [f"phase {details.get('phase') or event.phase or '?'}"]
    if details.get("script"):
        where.append(f"script {details['script']}")
    if details.get("exit_code") is not None:
        where.append(f"exit code {details['exit_code']}")
    if details.get("timed_out"):
        where.append("timed out")
    reason = f"{name} failed in {', '.join(where)}: {details.get('message', event.message)}"
    if details.get("hint"):
        reason += f" ({details['hint']})"
    return reason


def _result(rt: Runtime, cid: str, settle: float = 10.0) -> dict[str, Any]:
    """The container after its run; waits up to ``settle`` seconds for the
    lifecycle the worker records right after the terminal event."""
    from provisioner.views import container_json

    deadline = time.monotonic() + settle
    while True:
        with rt.factory() as session:
            ct = session.get(Container, cid)
            assert ct is not None
            if ct.lifecycle not in _ACTIVE or time.monotonic() >= deadline:
                return container_json(ct, ct.node.name)
        time.sleep(0.1)


# -- following ---------------------------------------------------------------------


class Shown:
    """How far the reader has shown the stream (the seq of its latest event),
    shared with the job watch; ``seen`` is set at the first event."""

    def __init__(self, after: int) -> None:
        self.seq = after
        self.seen = threading.Event()

    def advance(self, seq: int) -> None:
        self.seq = seq
        self.seen.set()


class JobWatch(threading.Thread):
    """Watches the queued job while its events are followed: warns when no
    worker takes it, and stops the reading when the job ended without a
    terminal event (skipped, or killed with nothing left to recover it).

    "Without a terminal event" means the reader has shown everything stored
    and none of it ended the run: a reader behind a slow pipe (``| less``)
    still has the terminal event ahead of it, and must reach it.
    """

    def __init__(self, rt: Runtime, cid: str, job_id: str, view: RunView,
                 stop: threading.Event, shown: Shown) -> None:  # fmt: skip
        super().__init__(daemon=True, name="job-watch")
        self.rt, self.cid, self.job_id, self.view = rt, cid, job_id, view
        self.stop, self.shown = stop, shown
        self.ended: str | None = None  # the job's status when it ended without a result

    def run(self) -> None:
        from redis.exceptions import RedisError
        from sqlalchemy.exc import SQLAlchemyError

        started = time.monotonic()
        warned = False
        idle_checks = 0
        while not self.stop.wait(1.0):
            try:
                status = _job_status(self.rt, self.job_id)
                if status not in ("finished", "failed", "stopped", "canceled", None):
                    idle_checks = 0
                    waited = time.monotonic() - started
                    if status == "queued" and not self.shown.seen.is_set() and not warned and (
                            waited >= QUEUE_WARNING_AFTER):  # fmt: skip
                        warned = True
                        self.view.note(f"still queued after {waited:.0f}s: is a worker "
                                       "running? (provisioner worker)")  # fmt: skip
                    continue
                # the job is over; its terminal event, if any, arrives within a read
                idle_checks += 1
                if (idle_checks >= 3 and not run_active(self.rt, self.cid)
                        and last_seq(self.rt, self.cid) <= self.shown.seq):  # fmt: skip
                    self.ended = status or "gone"
                    self.stop.set()
                    return
            except (RedisError, SQLAlchemyError):
                continue  # a hint only: the reader reports trouble with Redis itself


def _read(rt: Runtime, cid: str, view: RunView, stop: threading.Event, shown: Shown,
          job_id: str | None) -> Event | None:  # fmt: skip
    """Show events after ``shown.seq`` until the run's terminal event
    (returned), or None when ``stop`` was set first."""
    from provisioner.events import EventReader

    while not stop.is_set():
        for event in EventReader(rt.redis, rt.factory, cid).events(shown.seq, stop=stop):
            view.event(event)
            shown.advance(event.seq)
            if event.terminal:
                # an event from before our job took the lease ends an earlier
                # run (a provisioning the action waited for): read on
                ours = _runs_after(rt, job_id) if job_id is not None else -1
                if ours is None or event.seq <= ours:
                    break
                return event
    return None


def follow_run(rt: Runtime, cid: str, action: str | None, *, after: int,
               job_id: str | None = None, as_json: bool = False, timeout: float | None = None,
               done: Iterable[str] = (), text_log: bool = False) -> None:  # fmt: skip
    """Show the run's events after ``after`` until its terminal event.

    Args:
        action: the queued action (``provision``, ``retry``, ``start``...),
            or None for whatever run is under way (``logs --follow``).
        job_id: the queued job, watched while following.
        as_json: JSON Lines on stdout, ending with a ``result`` object.
        timeout: seconds to wait at most.
        done: phases finished before this run.
        text_log: text-log lines, as ``provisioner logs`` prints them.

    Raises:
        CliFailure: the run ended in error or without a result (exit 1, the
            reason in one line), ``timeout`` ran out (exit 6), or Ctrl-C (130).
    """
    with rt.factory() as session:
        plan = plan_named(session.scalar(select(Container.plan).where(Container.id == cid)))
    bars = list(plan.names) if action in PROVISIONING else [action or "run"]
    mode = "json" if as_json else ("text" if text_log else None)
    view = RunView(bars, done=done, mode=mode, plan=plan)
    stop = threading.Event()
    shown = Shown(after)
    timer = threading.Timer(timeout, stop.set) if timeout else None
    watch = JobWatch(rt, cid, job_id, view, stop, shown) if job_id is not None else None
    try:
        with view:
            for thread in (timer, watch):
                if thread is not None:
                    thread.start()
            terminal = _read(rt, cid, view, stop, shown, job_id)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; the run goes on (follow it again: provisioner logs "
                          f"{short_id(cid)} --follow)") from None  # fmt: skip
    finally:
        stop.set()
        if timer is not None:
            timer.cancel()
    again = f"provisioner logs {short_id(cid)} --follow"
    if terminal is None and watch is not None and watch.ended is not None:
        outcome = _job_outcome(rt, watch.job_id)
        if outcome.startswith("not needed: "):  # queued behind a run that settled it
            state = _result(rt, cid)
            reached = {"retry": "ready", "destroy": "destroyed"}.get(action or "")
            if state["lifecycle"] == reached:
                note = f"{action} {outcome}"
                if as_json:
                    echo_json({"type": "result", "ok": True, "container": state, "note": note},
                              lines=True)  # fmt: skip
                else:
                    view.err.print(Text(note, style="bold green"))
                return
            raise CliFailure(f"the {action} of {short_id(cid)} was {outcome}")
        raise CliFailure(f"the {action} job of {short_id(cid)} ended ({watch.ended}) without "
                         f"a result: see the worker's log and {again}")  # fmt: skip
    if terminal is None:
        raise GaveUp(f"gave up after {timeout:g}s; the run goes on (follow it again: {again})")
    state = _result(rt, cid)
    ok = terminal.type == "complete"
    reason = None if ok else failure_reason(rt, cid, action, terminal)
    if ok and action in PROVISIONING and state["lifecycle"] != str(Lifecycle.READY):
        # exit 0 means ready: the terminal event alone is not the proof
        ok, reason = False, (f"{state['hostname']} ({short_id(cid)}) reported completion but "
                             f"is {state['lifecycle']}: see {again}")  # fmt: skip
    if as_json:
        result: dict[str, Any] = {"type": "result", "ok": ok, "container": state}
        if reason is not None:
            result["error"] = reason
        echo_json(result, lines=True)
    elif ok and not text_log:
        view.err.print(Text(_success(state, action, terminal), style="bold green"))
    if reason is not None:
        raise CliFailure(reason)


def _success(state: dict[str, Any], action: str | None, event: Event) -> str:
    if action not in PROVISIONING:
        return event.message
    return (f"ready: {state['hostname']} ({short_id(state['id'])}), CT {state['vmid']} on "
            f"node {state['node']} at {state['ip']}")  # fmt: skip

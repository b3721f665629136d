"""Failure paths end to end: real workers, Redis, the simulator's faults.

Each test injects one failure through the simulator's admin API (a failed
or slow task, a 5xx, a held lock, SSH refused or dropped) or through a
test-only template (tests/pipeline/templates: ``failing``, ``longrun``,
``sleepy``) and checks the outcome: the lifecycle, ``error_message`` and
``error_details``, the events (retry warnings, the final ``error``) and what
is left in PVE and in the container.

Faults that can name a container use a fixed vmid from 9100-9199 (free on
the simulator), so tests sharing a simulator do not trip over each other;
the ``POST .../lxc`` fault cannot, so it is injected right before submitting.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from provisioner.events import Event, EventReader
from provisioner.models import Container, Lifecycle
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import container_ssh_private_key
from tests.pipeline.conftest import Stack
from tests.pvesim.helpers import admin, token_api, wait_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_TAKEN: set[int] = set()  # vmids handed out in this session


# --- helpers -------------------------------------------------------------------


def pve_vmids(stack: Stack) -> set[int]:
    return {int(c["vmid"]) for c in token_api(stack.sim).nodes(stack.sim["node"]).lxc.get()}


def pve_hostnames(stack: Stack) -> list[str]:
    return [str(c.get("name")) for c in token_api(stack.sim).nodes(stack.sim["node"]).lxc.get()]


def free_vmid(stack: Stack) -> int:
    """A vmid in 9100-9199 that the simulator does not have (nor this session used)."""
    candidates = sorted(set(range(9100, 9200)) - pve_vmids(stack) - _TAKEN)
    assert candidates, "no free vmid in 9100-9199 on the simulator"
    vmid = random.choice(candidates)
    _TAKEN.add(vmid)
    return vmid


def wait_until(predicate: Callable[[], Any], what: str, stack: Stack, timeout: float = 120,
               poll: float = 0.1) -> Any:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what}: not within {timeout}s; {stack.worker_logs()[-3000:]}")


def all_events(stack: Stack, cid: str) -> list[Event]:
    """Every event so far, across runs (the reader stops at each terminal one)."""
    out: list[Event] = []
    while True:
        batch = list(EventReader(stack.redis, stack.factory, cid).events(
            out[-1].seq if out else 0, follow=False))  # fmt: skip
        if not batch:
            return out
        out += batch


def first_run_events(stack: Stack, cid: str) -> list[Event]:
    """Events up to the first terminal one, as a client replaying from 0 sees them."""
    return list(EventReader(stack.redis, stack.factory, cid).events(0, follow=False))


def log_lines(events: list[Event], script: str | None = None) -> list[str]:
    """Log messages; with ``script``, only the output lines that script streamed
    (a failed run also repeats the tail as plain log lines before its error)."""
    return [e.message for e in events
            if e.type == "log" and (script is None or e.script == script)]  # fmt: skip


def retry_warnings(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type == "warning" and "retrying in" in e.message]


def step_time(events: list[Event], startswith: str) -> float:
    """The time (epoch seconds) of the first step whose message starts so."""
    step = next((e for e in events if e.type == "step" and e.message.startswith(startswith)),
                None)  # fmt: skip
    assert step is not None, (startswith, [e.message for e in events if e.type == "step"])
    return datetime.fromisoformat(step.ts.replace("Z", "+00:00")).timestamp()


def details_of(ct: Container) -> dict[str, Any]:
    assert ct.error_details is not None, (ct.lifecycle, ct.error_message)
    return ct.error_details


def diagnose(stack: Stack, cid: str) -> str:
    """The outcome, the workers' log tail and the container's console tail (a
    container that died at boot says why there, e.g. the host's inotify limit)."""
    ct = stack.container(cid)
    console = ""
    if ct.vmid is not None and stack.sim.get("state_dir"):
        path = Path(stack.sim["state_dir"]) / "ct" / str(ct.vmid) / "console.log"
        if path.is_file():
            console = "\n".join(path.read_text(errors="replace").splitlines()[-8:])
    return (f"lifecycle={ct.lifecycle} error={ct.error_message!r} details={ct.error_details!r}\n"
            f"{stack.worker_logs()[-4000:]}\nconsole of CT {ct.vmid}:\n{console}")  # fmt: skip


def ssh_run(stack: Stack, cid: str, command: str) -> asyncssh.SSHCompletedProcess:
    """Run a command in the container as root with the container's own key."""
    ct = stack.container(cid)
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    key = container_ssh_private_key(box, ct)
    assert key is not None and ct.ip

    async def go() -> asyncssh.SSHCompletedProcess:
        async with asyncssh.connect(ct.ip, username="root", known_hosts=None, config=[],
                                    agent_path=None, connect_timeout=20,
                                    client_keys=[asyncssh.import_private_key(key)]) as conn:  # fmt: skip
            return await conn.run(command, check=False, timeout=30)

    return asyncio.run(go())


def wait_for_run(stack: Stack, cid: str, attempt: int, timeout: float = 240) -> Any:
    """Wait until run number ``attempt`` of the container has finished."""

    def done() -> Any:
        ct = stack.container(cid)
        finished = ct.lifecycle in (Lifecycle.READY, Lifecycle.ERROR)
        return ct if ct.attempts >= attempt and finished else None

    return wait_until(done, f"run {attempt} of {cid}", stack, timeout)


@pytest.fixture(autouse=True)
def isolated(stack: Stack, cleanup: Callable[[str], str]) -> Iterator[None]:
    """No faults before, workers stopped and faults cleared after (before the
    ``cleanup`` fixture destroys the test's containers)."""
    admin(stack.sim, "faults", method="DELETE")
    try:
        yield
    finally:
        stack.stop_workers()
        admin(stack.sim, "faults", method="DELETE")


# --- 1. the create task fails ----------------------------------------------------


def test_create_task_error_fails_the_create_phase(stack: Stack,
                                                  cleanup: Callable[[str], str]) -> None:  # fmt: skip
    vmid = free_vmid(stack)
    error = f"unable to create CT {vmid} - injected disk failure"
    admin(stack.sim, "task", {"type": "vzcreate", "vmid": vmid, "error": error})
    stack.start_workers(1)
    cid = cleanup(stack.submit("lines", "fail-create", vmid=vmid, variables={"count": 3}))
    ct = stack.wait(cid, timeout=120)
    assert ct.lifecycle == Lifecycle.ERROR, diagnose(stack, cid)
    assert ct.error_message and ct.error_message.startswith("create failed:"), ct.error_message
    assert error in ct.error_message
    details = details_of(ct)
    assert details["phase"] == "create" and error in details["message"], details
    # the task log's tail, down to PVE's own TASK ERROR line
    assert any("extracting archive" in line for line in details["last_lines"]), details
    assert details["last_lines"][-1] == f"TASK ERROR: {error}", details
    assert ct.finished_phases == [] and ct.attempts == 1
    # a task error is permanent: no retries
    events = first_run_events(stack, cid)
    assert not retry_warnings(events), [e.message for e in retry_warnings(events)]
    # the task log was streamed live as log events
    assert any(e.phase == "create" and "extracting archive" in e.message
               for e in events if e.type == "log")  # fmt: skip
    last = events[-1]
    assert last.type == "error" and last.phase == "create" and error in last.message, last
    assert last.outcome == "error"
    assert events == all_events(stack, cid)  # nothing after the error
    # PVE cleaned up the failed create: no container left behind
    assert vmid not in pve_vmids(stack)
    assert "fail-create" not in pve_hostnames(stack)


def test_the_job_timeout_during_a_pve_wait_ends_the_run_in_error(
        stack: Stack, cleanup: Callable[[str], str]) -> None:  # fmt: skip
    """RQ's job timeout goes off while the create task is awaited in a worker
    thread, outside the run's coroutine: the run still ends with its error
    event and the error lifecycle (not left "creating" for recovery)."""
    vmid = free_vmid(stack)
    admin(stack.sim, "task", {"type": "vzcreate", "vmid": vmid, "delay": 10})
    stack.start_workers(1)
    cid = cleanup(stack.submit("lines", "out-of-time", vmid=vmid, variables={"count": 3},
                               job_timeout=3))  # fmt: skip
    ct = stack.wait(cid, timeout=120)
    assert ct.lifecycle == Lifecycle.ERROR, diagnose(stack, cid)
    assert ct.error_message == ("create failed: the job ran out of time after 3 s "
                                "(the job timeout, PROVISIONER_JOB_TIMEOUT)")  # fmt: skip
    assert details_of(ct)["phase"] == "create"
    events = first_run_events(stack, cid)
    last = events[-1]
    assert last.type == "error" and last.outcome == "error" and last.phase == "create", last
    assert "ran out of time" in last.message and "retry resumes" in last.message, last
    assert events == all_events(stack, cid)  # one terminal event, nothing after it
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


# --- 2. transient 5xx ------------------------------------------------------------


@pytest.mark.parametrize("where", ["create", "start"])
def test_transient_http_errors_are_retried(stack: Stack, cleanup: Callable[[str], str],
                                           where: str) -> None:  # fmt: skip
    vmid = free_vmid(stack)
    hostname = f"transient-{where}"
    if where == "create":
        path, status = "/lxc$", 500
    else:
        path, status = f"/lxc/{vmid}/status/start$", 595
    stack.start_workers(1)
    admin(stack.sim, "http", {"path": path, "method": "POST", "status": status, "count": 2})
    cid = cleanup(stack.submit("lines", hostname, vmid=vmid, variables={"count": 3}))
    ct = stack.wait(cid, timeout=180)
    assert ct.lifecycle == Lifecycle.READY, diagnose(stack, cid)
    assert ct.error_message is None and ct.error_details is None
    assert admin(stack.sim, "faults", method="GET")["http"] == []  # both consumed
    events = all_events(stack, cid)
    if status == 595:  # the node cannot be reached: the run waits for it, said once
        (waiting,) = [e for e in events if e.type == "warning"]
        assert waiting.phase == where and "HTTP 595" in waiting.message, waiting
        assert "waiting up to 900s for node pve to answer" in waiting.message, waiting.message
        assert [e for e in events if e.type == "step" and "answers again" in e.message]
    else:
        warnings = retry_warnings(events)
        assert len(warnings) == 2, [e.message for e in events if e.type == "warning"]
        for n, warning in enumerate(warnings, start=2):
            assert warning.phase == where, warning
            assert f"HTTP {status}" in warning.message, warning.message
            assert f"(attempt {n} of " in warning.message, warning.message
    assert events[-1].type == "complete"
    assert not [e for e in events if e.type == "error"]
    assert ct.vmid == vmid
    # retrying the create never made a second container
    assert pve_hostnames(stack).count(hostname) == 1


# --- 3. a lock held during the start phase ---------------------------------------


def test_a_start_blocked_by_a_lock_is_retried(stack: Stack,
                                              cleanup: Callable[[str], str]) -> None:  # fmt: skip
    """A 'backup' lock appears between the start's POST and its task's lock
    check (PVE::API2::LXC::Status vm_start checks the lock inside the
    ``vzstart`` task): the task ends ``CT is locked (backup)``, a transient
    failure shown as a retry warning; the retried start phase waits for the
    lock to clear and the container ends ready."""
    vmid = free_vmid(stack)
    api = token_api(stack.sim)
    node = stack.sim["node"]
    # the delay runs before the task's work, so before its lock check
    admin(stack.sim, "task", {"type": "vzstart", "vmid": vmid, "delay": 3})
    stack.start_workers(1)
    cid = cleanup(stack.submit("lines", "lock-wait", vmid=vmid, variables={"count": 3}))
    wait_until(lambda: api.nodes(node).tasks.get(source="active", vmid=vmid, typefilter="vzstart"),
               "the start task running", stack)  # fmt: skip
    injected = time.time()
    admin(stack.sim, "lock", {"vmid": vmid, "lock": "backup", "seconds": 6})
    assert api.nodes(node).lxc(vmid).status.current.get().get("lock") == "backup"
    ct = stack.wait(cid, timeout=180)
    assert ct.lifecycle == Lifecycle.READY, diagnose(stack, cid)
    events = all_events(stack, cid)
    warnings = retry_warnings(events)
    assert len(warnings) == 1, [e.message for e in events if e.type == "warning"]
    assert warnings[0].phase == "start" and "CT is locked (backup)" in warnings[0].message
    failed = api.nodes(node).tasks.get(vmid=vmid, typefilter="vzstart", errors=1)
    assert [t["status"] for t in failed] == ["CT is locked (backup)"]
    # the start phase went on only once the lock was gone
    assert step_time(events, "waiting for the container's address") >= injected + 6 - 0.05
    assert events[-1].type == "complete"


def test_a_stop_blocked_by_a_lock_is_retried(stack: Stack,
                                             cleanup: Callable[[str], str]) -> None:  # fmt: skip
    """The stop action on a locked container: PVE::API2::LXC::Status
    vm_stop's task fails ``CT is locked (backup)`` (transient); the action
    retries it and the container ends stopped."""
    vmid = free_vmid(stack)
    api = token_api(stack.sim)
    node = stack.sim["node"]
    stack.start_workers(1)
    cid = cleanup(stack.submit("lines", "lock-stop", vmid=vmid, variables={"count": 1}))
    assert stack.wait(cid, timeout=180).lifecycle == Lifecycle.READY, diagnose(stack, cid)
    before = len(all_events(stack, cid))
    admin(stack.sim, "lock", {"vmid": vmid, "lock": "backup", "seconds": 3})
    stack.enqueue(cid, "stop")

    def ended() -> list[Event] | None:
        events = all_events(stack, cid)
        done = len(events) > before and events[-1].type in ("complete", "error")
        return events[before:] if done else None

    wait_until(ended, "the stop action ended", stack)
    events = ended() or []
    assert events[-1].type == "complete", [(e.type, e.message) for e in events]
    warnings = retry_warnings(events)
    assert warnings and all("CT is locked (backup)" in w.message for w in warnings), warnings
    assert api.nodes(node).lxc(vmid).status.current.get()["status"] == "stopped"


def test_config_file_lock_during_start_is_retried(stack: Stack,
                                                  cleanup: Callable[[str], str]) -> None:  # fmt: skip
    """The config file's flock is held for 18 s from the create's start: the
    create task takes 3-5 s, ``POST .../status/start`` then waits PVE's 10 s
    for the flock and fails with "can't lock file ... got timeout"
    (transient); the retried start gets the flock once it is free."""
    vmid = free_vmid(stack)
    admin(stack.sim, "task", {"type": "vzcreate", "vmid": vmid, "delay": 3})
    stack.start_workers(1)
    cid = cleanup(stack.submit("lines", "lock-retry", vmid=vmid, variables={"count": 3}))
    wait_until(lambda: vmid in pve_vmids(stack), "the container in PVE", stack)
    injected = time.time()
    admin(stack.sim, "lock", {"vmid": vmid, "kind": "file", "seconds": 18})
    ct = stack.wait(cid, timeout=180)
    assert ct.lifecycle == Lifecycle.READY, diagnose(stack, cid)
    events = all_events(stack, cid)
    warnings = retry_warnings(events)
    assert warnings, [e.message for e in events if e.type == "warning"]
    assert all(w.phase == "start" and "can't lock file" in w.message for w in warnings), warnings
    assert step_time(events, "waiting for the container's address") >= injected + 18 - 0.05
    assert events[-1].type == "complete"


# --- 4. SSH refused for a while ----------------------------------------------------


def test_ssh_refused_for_a_while_is_waited_out(stack: Stack,
                                               cleanup: Callable[[str], str]) -> None:  # fmt: skip
    vmid = free_vmid(stack)
    api = token_api(stack.sim)
    node = stack.sim["node"]
    # a slow create to set up a late DHCP lease for this container, and a
    # late lease to have the container running before the first SSH attempt
    admin(stack.sim, "task", {"type": "vzcreate", "vmid": vmid, "delay": 2})
    stack.start_workers(1)
    cid = cleanup(stack.submit("lines", "ssh-refuse", vmid=vmid, variables={"count": 3}))
    wait_until(lambda: vmid in pve_vmids(stack), "the container in PVE", stack)
    admin(stack.sim, "dhcp-delay", {"vmid": vmid, "seconds": 3})
    wait_until(lambda: api.nodes(node).lxc(vmid).status.current.get()["status"] == "running",
               "the container running", stack, poll=0.05)  # fmt: skip
    injected = time.time()
    admin(stack.sim, "ssh-refuse", {"vmid": vmid, "seconds": 8})
    # the fault must end by itself: port 22 answers again soon after 8 s (if
    # not, the simulator or the container is at fault, not the pipeline)
    ip = wait_until(lambda: stack.container(cid).ip, "the container's address", stack)
    try:
        wait_port(ip, 22, timeout=45)
    except TimeoutError:
        pytest.fail(f"SSH on {ip} still refused 45 s after an 8 s ssh-refuse fault\n"
                    f"{diagnose(stack, cid)}")  # fmt: skip
    ct = stack.wait(cid, timeout=120)
    assert ct.lifecycle == Lifecycle.READY, diagnose(stack, cid)
    events = all_events(stack, cid)
    # the pipeline was trying while SSH was refused and got through after it
    assert step_time(events, "address ") < injected + 8
    assert step_time(events, "SSH is up") >= injected + 8 - 0.05
    waits = [e for e in events if e.type == "log" and e.message.startswith("waiting for SSH")]
    # refused, or (on a loaded machine) a first attempt that timed out
    assert any("connection refused" in e.message or "timed out" in e.message
               for e in waits), [e.message for e in waits]  # fmt: skip
    assert not [e for e in events if e.type == "error"]
    assert events[-1].type == "complete"


# --- 5. SSH dropped while a script runs ---------------------------------------------


def drop_ssh_in_long_script(stack: Stack, cleanup: Callable[[str], str], hostname: str) -> str:
    """Provision ``longrun``, drop its SSH connections while 20-long.sh runs,
    wait for the outcome; returns the container id."""
    stack.start_workers(1)
    cid = cleanup(stack.submit("longrun", hostname))
    wait_until(lambda: "long script started" in log_lines(all_events(stack, cid)),
               "the long script running", stack, timeout=180, poll=0.2)  # fmt: skip
    vmid = stack.container(cid).vmid
    assert stack.container(cid).finished_scripts == ["10-first.sh"]
    dropped = admin(stack.sim, "ssh-drop", {"vmid": vmid})["dropped"]
    assert dropped >= 1
    stack.wait(cid, timeout=180)
    return cid


def test_ssh_dropped_mid_script_resumes_at_that_script(stack: Stack,
                                                       cleanup: Callable[[str], str]) -> None:  # fmt: skip
    cid = drop_ssh_in_long_script(stack, cleanup, "ssh-drop")
    ct = stack.container(cid)
    assert ct.lifecycle == Lifecycle.READY, diagnose(stack, cid)
    assert ct.finished_scripts == ["10-first.sh", "20-long.sh"]
    events = all_events(stack, cid)
    assert log_lines(events, "10-first.sh") == ["first script ran"]  # not re-run
    # re-run from its start
    assert log_lines(events, "20-long.sh") == [
        "long script started", "long script started", "long script done"]  # fmt: skip
    warnings = retry_warnings(events)
    assert len(warnings) == 1 and warnings[0].phase == "scripts", warnings
    assert "lost while running" in warnings[0].message, warnings[0].message
    assert any(e.type == "step" and e.message.startswith("10-first.sh already done")
               for e in events)  # fmt: skip
    assert not [e for e in events if e.type == "error"]
    assert events[-1].type == "complete"
    assert ct.attempts == 1  # retried inside the run, not a new run


# --- 6. a script exits non-zero; fix it, retry ---------------------------------------


def test_script_failure_then_fix_and_retry(stack: Stack, cleanup: Callable[[str], str]) -> None:
    stack.start_workers(1)
    cid = cleanup(stack.submit("failing", "fail-script"))
    ct = stack.wait(cid, timeout=180)
    assert ct.lifecycle == Lifecycle.ERROR, diagnose(stack, cid)
    details = details_of(ct)
    assert details["phase"] == "scripts", details
    assert details["script"] == "20-check.sh", details
    assert details["exit_code"] == 3 and details["timed_out"] is False, details
    assert "found /root/fail-now: failing on purpose" in details["last_lines"], details
    assert "checking /root/fail-now" in details["last_lines"], details
    assert "retry" in details["hint"] and "20-check.sh" in details["hint"], details
    assert ct.error_message and ct.error_message.startswith("scripts failed:"), ct.error_message
    assert "20-check.sh" in ct.error_message and "exit code 3" in ct.error_message
    assert ct.finished_phases == ["create", "start", "deploy"]
    assert ct.finished_scripts == ["10-mark.sh"]
    events = first_run_events(stack, cid)
    last = events[-1]
    assert last.type == "error" and last.phase == "scripts", last
    assert "20-check.sh" in last.message and "exit code 3" in last.message, last.message
    assert "retry" in last.message, last.message  # the hint reaches the client too
    assert any(e.type == "log" and e.stream == "stderr" and e.script == "20-check.sh"
               and "failing on purpose" in e.message for e in events)  # fmt: skip
    assert not retry_warnings(events)  # a script's exit code is permanent

    # fix the container, then retry: the run resumes at 20-check.sh
    fixed = ssh_run(stack, cid, "rm /root/fail-now && test -e /root/.marked")
    assert fixed.exit_status == 0, (fixed.stdout, fixed.stderr)
    stack.enqueue(cid, "retry")
    ct = wait_for_run(stack, cid, 2)
    assert ct.lifecycle == Lifecycle.READY, diagnose(stack, cid)
    assert ct.error_message is None and ct.error_details is None
    assert ct.finished_scripts == ["10-mark.sh", "20-check.sh"]
    events = all_events(stack, cid)
    assert log_lines(events, "10-mark.sh") == ["10-mark.sh ran"]  # not run again
    assert log_lines(events, "20-check.sh") == [
        "checking /root/fail-now", "found /root/fail-now: failing on purpose",
        "checking /root/fail-now", "check passed"]  # fmt: skip
    assert any(e.type == "step" and e.message.startswith("10-mark.sh already done")
               for e in events)  # fmt: skip
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "complete"


# --- 7. a script runs past its timeout -----------------------------------------------


def test_script_timeout_kills_the_script(stack: Stack, cleanup: Callable[[str], str]) -> None:
    stack.start_workers(1)
    cid = cleanup(stack.submit("sleepy", "fail-timeout"))
    ct = stack.wait(cid, timeout=180)
    assert ct.lifecycle == Lifecycle.ERROR, diagnose(stack, cid)
    details = details_of(ct)
    assert details["phase"] == "scripts" and details["script"] == "10-sleep.sh", details
    assert details["timed_out"] is True and details["exit_code"] is None, details
    assert "timed out" in details["message"], details
    assert "going to sleep" in details["last_lines"], details
    assert "timeout" in details["hint"], details
    assert ct.error_message and "10-sleep.sh" in ct.error_message
    assert "timed out" in ct.error_message
    events = first_run_events(stack, cid)
    assert events[-1].type == "error" and "timed out" in events[-1].message, events[-1]
    # killed at its 3 s timeout, not after the 60 s sleep
    started = step_time(events, "running 10-sleep.sh")
    ended = datetime.fromisoformat(events[-1].ts.replace("Z", "+00:00")).timestamp()
    assert 3 <= ended - started < 20, ended - started
    assert "woke up" not in log_lines(events)
    # and nothing of it is left running in the container
    ps = ssh_run(stack, cid, "ps -eo args=")
    assert ps.exit_status == 0, ps.stderr
    procs = str(ps.stdout).splitlines()
    assert not [p for p in procs if p.strip() == "sleep 60" or "10-sleep.sh" in p], procs


# --- 8. failure policy destroy -------------------------------------------------------


def test_failure_policy_destroy_removes_the_container(stack: Stack,
                                                      cleanup: Callable[[str], str]) -> None:  # fmt: skip
    stack.start_workers(1)
    cid = cleanup(stack.submit("failing", "fail-destroy", failure_policy="destroy"))
    ct = stack.wait(cid, states=(Lifecycle.READY, Lifecycle.DESTROYED), timeout=180)
    assert ct.lifecycle == Lifecycle.DESTROYED, diagnose(stack, cid)
    assert ct.vmid is not None and ct.vmid not in pve_vmids(stack)
    assert "fail-destroy" not in pve_hostnames(stack)
    # why it failed is kept
    assert details_of(ct)["script"] == "20-check.sh", ct.error_details
    assert details_of(ct)["exit_code"] == 3, ct.error_details
    assert ct.error_message and "20-check.sh" in ct.error_message
    events = first_run_events(stack, cid)
    assert events[-1].type == "error" and "20-check.sh" in events[-1].message, events[-1]


# --- known bugs, pinned (strict: they fail once fixed; then drop the marker) ----------


def test_error_event_states_the_hint_once(stack: Stack, cleanup: Callable[[str], str]) -> None:
    stack.start_workers(1)
    cid = cleanup(stack.submit("sleepy", "hint-once"))
    ct = stack.wait(cid, timeout=180)
    assert ct.lifecycle == Lifecycle.ERROR, diagnose(stack, cid)
    hint = details_of(ct)["hint"]
    last = first_run_events(stack, cid)[-1]
    assert last.type == "error" and hint in last.message, last
    assert last.message.count(hint) == 1, last.message


def test_lost_connection_names_the_script(stack: Stack, cleanup: Callable[[str], str]) -> None:
    cid = drop_ssh_in_long_script(stack, cleanup, "ssh-drop-name")
    assert stack.container(cid).lifecycle == Lifecycle.READY, diagnose(stack, cid)
    warnings = retry_warnings(all_events(stack, cid))
    assert warnings and "lost while running" in warnings[0].message, warnings
    assert "20-long.sh" in warnings[0].message, warnings[0].message

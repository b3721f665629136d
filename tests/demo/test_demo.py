"""The README's first command: `scripts/demo` brings everything up, prints
working credentials and stops cleanly on Ctrl-C; `scripts/demo --smoke`
provisions nginx through the CLI on a stack of its own."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from redis import Redis
from rq import Worker

from provisioner.phases import PHASES
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration]


def _env() -> dict[str, str]:
    """The environment of a new user: no Redis or database configured."""
    drop = {"REDIS_URL", "DATABASE_URL", "PROVISIONER_CONFIG", "PROVISIONER_DATA_DIR"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _leftover_pids(data: Path) -> list[int]:
    return [int(entry.split(" ", 1)[0]) for entry in _leftovers(data, with_pid=True)]


def _leftovers(data: Path, with_pid: bool = False) -> list[str]:
    """Processes still running with the demo's data directory on their command line."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(data) in cmdline:
                found.append(f"{proc.name} {cmdline}" if with_pid else cmdline)
    return found


@pytest.mark.timeout(900)
def test_demo_smoke_provisions_nginx_through_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    run = subprocess.run([str(ROOT / "scripts/demo"), "--smoke", "--data-dir", str(data)],
                         env=_env(), capture_output=True, text=True, timeout=880)  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out[-4000:] + run.stderr[-4000:]
    assert re.search(r"Dashboard\s+http://127\.0\.0\.1:\d+/", out)
    assert re.search(r"Log in as\s+admin / \S{12,}", out)
    assert re.search(r"smoke: nginx container demo-smoke-\w+ \(\w+\): ready, IP 198\.18\.", out)
    for phase in PHASES:
        assert re.search(rf"^  {phase}\s+\d+\.\d+ s$", out, re.M), phase
    assert "page      HTTP 200" in out and out.rstrip().endswith("smoke: ok")
    # --follow streamed the run: the phases' steps (stderr when not on a
    # terminal) and the scripts' output (stdout)
    assert "[finalize 100%] ready:" in run.stderr and "==> index page served" in out
    assert not _leftovers(data)


@pytest.mark.timeout(300)
def test_demo_serves_the_dashboard_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    proc = subprocess.Popen([str(ROOT / "scripts/demo"), "--port", "0",
                             "--data-dir", str(data), "--time-scale", "0"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C to stop." in line:
                break
        text = "".join(lines)
        url = re.search(r"Dashboard\s+(http://\S+)/", text)
        creds = re.search(r"Log in as\s+(\S+) / (\S+)", text)
        assert url and creds, text
        redis_url = re.search(r"Redis\s+(redis://\S+)", text)
        assert redis_url and re.search(r"Node\s+sim \(the simulator\), 2 workers", text), text
        with Redis.from_url(redis_url.group(1)) as redis:  # both workers serve the queue
            deadline = time.monotonic() + 30
            while len(Worker.all(connection=redis)) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            workers = Worker.all(connection=redis)
            assert len(workers) == 2 and all(w.queue_names() == [os.environ.get("PROVISIONER_QUEUE_NAME", "provisioning")]
                                             for w in workers), workers  # fmt: skip
        with requests.Session() as web:
            page = web.get(f"{url.group(1)}/login", timeout=10)
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert token
            login = web.post(f"{url.group(1)}/login", timeout=10, allow_redirects=False,
                             data={"username": creds.group(1), "password": creds.group(2),
                                   "csrf_token": token.group(1)})  # fmt: skip
            assert login.status_code == 302
            nodes = web.get(f"{url.group(1)}/api/nodes", timeout=10).json()["nodes"]
            assert [n["name"] for n in nodes] == ["sim"]
            tested = web.post(f"{url.group(1)}/api/nodes/sim/test", timeout=30,
                              headers={"X-CSRF-Token": web.get(f"{url.group(1)}/api/me").json()["csrf_token"]})  # fmt: skip
            assert tested.status_code == 200, tested.text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest = proc.communicate(timeout=200)[0]  # the demo's waves: 190 s at the most
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = proc.communicate()[0]
            for pid in _leftover_pids(data):  # the simulator removes its network on SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            logs = "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace")
                                                                .splitlines()[-15:])
                             for log in sorted((data / "logs").glob("*.log")))  # fmt: skip
            pytest.fail(f"the demo did not stop: {rest}\nstill running: {_leftovers(data)}\n{logs}")
    assert proc.returncode == 130, rest
    assert "demo: stopped" in rest
    deadline = time.monotonic() + 10
    while _leftovers(data) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _leftovers(data)


def test_bad_demo_options_are_one_line(tmp_path: Path) -> None:
    demo = [str(ROOT / ".venv/bin/provisioner"), "demo"]
    for args, code, message in (
        (["--host", "bogus.invalid"], 2,
         "error: --host: 'bogus.invalid' is neither an IP address nor a name this machine resolves"),
        (["--host", "192.0.2.1"], 2, "error: --host: cannot listen on 192.0.2.1"),
        (["--data-dir", "/proc/nope", "--port", "0"], 1,
         "error: cannot use /proc/nope as the demo's data directory"),
        (["--workers", "0"], 2, "Invalid value for '--workers'"),
    ):  # fmt: skip
        done = subprocess.run([*demo, *args], env=_env(), capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == code, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)


@pytest.mark.timeout(400)
def test_ctrl_c_lets_a_busy_worker_finish_and_again_stops_at_once(tmp_path: Path) -> None:
    """The first Ctrl-C waits for the worker's job; a second one does not."""
    data = tmp_path / "demo"
    cli = [str(ROOT / ".venv/bin/provisioner")]
    # the pipeline tests' templates: "lines" prints slowly for as long as asked
    env = {**_env(), "PROVISIONER_TEMPLATES_DIR": str(ROOT / "tests/pipeline/templates")}
    proc = subprocess.Popen([*cli, "demo", "--port", "0", "--data-dir", str(data),
                             "--time-scale", "0", "--workers", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    rest = ""
    try:
        for line in proc.stdout:
            rest += line
            if "Press Ctrl-C to stop." in line:
                break
        redis = re.search(r"Redis\s+(redis://\S+)", rest)
        assert redis, rest
        own = {**env, "PROVISIONER_DATA_DIR": str(data), "REDIS_URL": redis.group(1)}
        created = subprocess.run([*cli, "create", "-t", "lines", "-H", "busy", "--var",
                                  "count=100000", "--var", "pause_ms=1000"], env=own,
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
        assert created.returncode == 0, created.stderr
        deadline = time.monotonic() + 120
        while '"current_phase": "scripts"' not in subprocess.run(
                [*cli, "show", "busy", "--json"], env=own, capture_output=True,
                text=True).stdout:  # fmt: skip
            assert time.monotonic() < deadline, "the run never reached its script"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        for line in proc.stdout:
            rest += line
            if "is finishing its job" in line:
                break
        assert "demo: worker1 is finishing its job" in rest, rest
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest += proc.communicate(timeout=120)[0]
        assert time.monotonic() - began < 60, rest  # killed, not waited for
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest
    assert "demo: worker1 killed (asked to hurry)" in rest
    deadline = time.monotonic() + 10
    while _leftovers(data) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _leftovers(data)


def test_the_dashboard_address() -> None:
    from cli.demo import listen_address, url_host

    assert listen_address("127.0.0.1") == "127.0.0.1"
    assert listen_address("localhost") in ("127.0.0.1", "::1")  # a name is resolved
    assert (url_host("127.0.0.1"), url_host("::1")) == ("127.0.0.1", "[::1]")


class _Demo:
    """``scripts/demo`` running in the background; its console (stdout and
    stderr) read by a thread, so that a test can wait for a line."""

    def __init__(self, data: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.proc = subprocess.Popen([str(ROOT / "scripts/demo"), "--port", "0", "--data-dir",
                                      str(data), "--time-scale", "0", *args],
                                     env=env or _env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern, self.text, re.M)) is None:
            assert time.monotonic() < deadline and self.proc.poll() is None, (
                f"no {pattern!r} on the demo's console:\n{self.text}")  # fmt: skip
            time.sleep(0.1)
        return found

    def up(self) -> str:
        """Wait for the banner; the demo's Redis URL."""
        self.wait_for("Press Ctrl-C to stop.")
        return self.wait_for(r"Redis\s+(redis://\S+)").group(1)

    def stop(self) -> float:
        """Ctrl-C; the seconds until the demo exited."""
        began = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.wait()
        return time.monotonic() - began

    def wait(self) -> int:
        """Its exit status, once it exited and its console is read."""
        returncode = self.proc.wait(200)  # the demo's waves: 190 s at the most
        self._reader.join(10)
        return returncode

    def close(self) -> None:
        """Whatever a failed test left running: the demo, then what it started."""
        orphans = _demo_children(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        for pid in orphans + _leftover_pids(self.data):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # the simulator removes its network on SIGTERM


def _demo_children(demo_pid: int) -> list[int]:
    """The workers and the web app the demo started (its children)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == demo_pid:
                found.append(int(proc.name))
    return found


def _worker_pids(demo_pid: int) -> list[int]:
    found = []
    for pid in _demo_children(demo_pid):
        with contextlib.suppress(FileNotFoundError):  # it exited meanwhile
            if b"\0worker\0" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def _rq_workers(redis_url: str, count: int, timeout: float = 60) -> dict[str, int]:
    """RQ's workers once there are ``count`` of them: name -> pid."""
    with Redis.from_url(redis_url) as redis:
        deadline = time.monotonic() + timeout
        while True:
            workers = {w.name: w.pid for w in Worker.all(connection=redis)}
            if len(workers) == count or time.monotonic() > deadline:
                return workers
            time.sleep(0.2)


def _user_shell_env() -> dict[str, str]:
    """A new shell's environment: the CLI not on PATH, and settings that
    point elsewhere (sourcing the demo's env file must set or unset them)."""
    venv_bin = str(ROOT / ".venv/bin")
    path = ":".join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(":")
                    if p and Path(p).resolve() != Path(venv_bin).resolve())  # fmt: skip
    return {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
            "REDIS_URL": "redis://127.0.0.1:1/0", "PROVISIONER_DATA_DIR": "/nonexistent",
            "PROVISIONER_CONFIG": "/nonexistent/provisioner.toml"}  # fmt: skip


def _readme_cli_lines(data: Path) -> list[str]:
    """The README's lines that point the CLI at the running demo, aimed at
    this test's data directory."""
    from tests.test_readme_run import shell_blocks, shell_lines

    (block,) = [b for b in shell_blocks("The two commands") if "source " in b]
    return [line.replace(".state/demo", str(data)) for line in shell_lines(block)]


@pytest.mark.timeout(300)
def test_the_cli_reaches_the_running_demo_in_one_step(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    demo = _Demo(data)
    try:
        demo.up()
        env_file = demo.wait_for(r"CLI\s+source (\S+)\s").group(1)
        assert env_file == str(data / "env"), demo.text
        assert (os.stat(env_file).st_mode & 0o777) == 0o600
        password = demo.wait_for(r"Log in as\s+admin / (\S+)").group(1)
        assert password not in Path(env_file).read_text()
        # the README's lines, in a new shell that knows nothing of the demo
        lines = _readme_cli_lines(data)
        assert lines[0].startswith("source ") and any("provisioner nodes ls" in x for x in lines)
        shell = subprocess.run(["bash", "-c", "\n".join(["set -e", *lines, "provisioner ls"])],
                               env=_user_shell_env(), cwd=tmp_path, capture_output=True,
                               text=True, timeout=120)  # fmt: skip
        assert shell.returncode == 0, shell.stdout + shell.stderr
        assert re.search(r"^sim\s+127\.0\.0\.2:\d+\s.*\sonline\s", shell.stdout, re.M), shell.stdout
        assert re.search(r"^ID\s+HOSTNAME\s+LIFECYCLE", shell.stdout, re.M), shell.stdout
        assert demo.stop() < 5, demo.text
    finally:
        demo.close()
    assert demo.proc.returncode == 130, demo.text


@pytest.mark.timeout(300)
def test_a_killed_worker_is_restarted_and_serves_the_queue(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    demo = _Demo(data)
    try:
        redis_url = demo.up()
        before = _rq_workers(redis_url, 2)
        assert len(before) == 2, before
        name, pid = sorted(before.items())[0]
        index = name.rsplit("-", 1)[1]
        os.kill(pid, signal.SIGKILL)
        demo.wait_for(rf"^demo: worker{index} exited \(killed by SIGKILL\); "
                      r"restarted \(1 of 5 in 60 s\)$", timeout=30)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:  # the dead worker forgotten, the new one registered
            after = _rq_workers(redis_url, 2)
            new = set(after) - set(before)
            if (len(after), len(new)) == (2, 1) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(after) == 2 and len(new) == 1 and name not in after, (before, after)
        (new_name,) = new
        assert new_name.endswith(f"-{index}") and after[new_name] in _worker_pids(demo.proc.pid)
        with Redis.from_url(redis_url) as redis:
            (worker,) = [w for w in Worker.all(connection=redis) if w.name == new_name]
            assert worker.queue_names() == [os.environ.get("PROVISIONER_QUEUE_NAME",
                                                           "provisioning")]  # fmt: skip
        # the demo is still up: its dashboard answers
        url = demo.wait_for(r"Dashboard\s+(http://\S+)/").group(1)
        assert requests.get(f"{url}/login", timeout=10).status_code == 200
        assert demo.proc.poll() is None, demo.text
        assert demo.stop() < 5, demo.text
    finally:
        demo.close()
    assert demo.proc.returncode == 130, demo.text


@pytest.mark.timeout(300)
def test_a_worker_that_keeps_dying_stops_the_demo_after_5_restarts_in_60_s(
    tmp_path: Path,
) -> None:
    data = tmp_path / "demo"
    demo = _Demo(data, "--workers", "1")
    try:
        demo.up()
        killed: set[int] = set()
        deadline = time.monotonic() + 50  # six deaths well within the 60 s
        while demo.proc.poll() is None and len(killed) < 6:
            for pid in set(_worker_pids(demo.proc.pid)) - killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            assert time.monotonic() < deadline, demo.text
            time.sleep(0.05)
        demo.wait()
    finally:
        demo.close()
    text = demo.text
    for count in range(1, 6):
        assert f"demo: worker1 exited (killed by SIGKILL); restarted ({count} of 5 in 60 s)" in text
    assert demo.proc.returncode == 1, text
    assert ("error: worker1 exited (killed by SIGKILL) after 5 restarts in 60 s: not restarted "
            "again, stopping") in text  # fmt: skip
    deadline = time.monotonic() + 10
    while _leftovers(data) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _leftovers(data)


@pytest.mark.long
@pytest.mark.timeout(400)
def test_an_idle_demo_stops_in_under_5_s_every_time(tmp_path: Path) -> None:
    """Stopped at once, and after the workers have waited on their queue for
    a while: no stop waits for a worker (there is no job to finish)."""
    data = tmp_path / "demo"
    took: list[float] = []
    for after in (0.0, 3.0, 12.0):
        demo = _Demo(data, "--workers", "4")
        try:
            assert len(_rq_workers(demo.up(), 4)) == 4, demo.text
            time.sleep(after)
            took.append(demo.stop())
        finally:
            demo.close()
        print(f"idle demo, stopped {after:.0f} s after it was up: {took[-1]:.2f} s")
        assert demo.proc.returncode == 130, demo.text
        assert took[-1] < 5, (took, demo.text)
        slow = re.search(r"finishing its job|still stopping|took \d+\.\d s to stop", demo.text)
        assert slow is None, demo.text

"""The generated units under a real systemd: a Debian system (the
simulator's OS template) booted with systemd-nspawn installs them with
scripts/install-systemd, starts web and two workers with all their
sandboxing, and stopping a worker waits for its job."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import JobStatus

from tests.conftest import ROOT
from tests.ops import promtext

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
# Units of the template that must not run here: the system shares the host's
# network, so nothing of its own may configure it or listen on it.
MASKED = ("networking.service", "ssh.service", "sshd.service", "ssh.socket",
          "systemd-networkd.service", "systemd-resolved.service", "getty@.service",
          "console-getty.service", "apt-daily.timer", "apt-daily-upgrade.timer")  # fmt: skip


@dataclass
class Booted:
    nspawn: subprocess.Popen[bytes]
    init_pid: int
    console: Path
    root: Path  # its root file system, as the host sees it

    def sh(self, line: str, timeout: float = 120, check: bool = True) -> str:
        """A README line, run by bash in the checkout (as root: sudo asks nothing)."""
        return self.run("bash", "-c", f"cd {ROOT} && {line}", timeout=timeout, check=check)

    def run(self, *argv: str, timeout: float = 120, check: bool = True) -> str:
        """Run a command inside (all of PID 1's namespaces); its stdout."""
        done = subprocess.run(["nsenter", "-t", str(self.init_pid), "-a", *argv],
                              capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip
        if check:
            assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return done.stdout


def _base_rootfs() -> Path:
    from pvesim.templates import ensure_base, template_path

    tarball = template_path()
    if not tarball.exists():
        pytest.skip(f"no OS template at {tarball} (scripts/setup builds it)")
    return ensure_base(tarball)


def _interpreter_prefix() -> Path:
    """The installation the checkout's .venv links to."""
    return (ROOT / ".venv/bin/python").resolve().parent.parent


def _init_of(nspawn_pid: int) -> int | None:
    own = os.readlink(f"/proc/{nspawn_pid}/ns/pid")
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{child}/ns/pid") != own:
                return int(child)
    return None


@pytest.fixture
def booted(tmp_path: Path) -> Iterator[Booted]:
    if os.geteuid() != 0 or shutil.which("systemd-nspawn") is None:
        pytest.skip("booting a system needs root and systemd-nspawn (systemd-container)")
    base = _base_rootfs()
    upper, work, root = tmp_path / "upper", tmp_path / "work", tmp_path / "root"
    for d in (upper, work, root):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={base},upperdir={upper},workdir={work}", str(root)], check=True)  # fmt: skip
    nspawn = None
    try:
        prefix = _interpreter_prefix()
        for path in (ROOT, prefix):
            (root / path.relative_to("/")).mkdir(parents=True, exist_ok=True)
            for parent in (root / path.relative_to("/")).parents:  # e.g. pyenv under /root
                if parent.is_relative_to(root) and parent != root:
                    parent.chmod(parent.stat().st_mode | 0o011)
        for unit in MASKED:
            link = root / "etc/systemd/system" / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        console = tmp_path / "console.log"
        with console.open("wb") as out:
            nspawn = subprocess.Popen(
                ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet",
                 f"--directory={root}", f"--machine=provtest-{uuid.uuid4().hex[:6]}",
                 "--console=read-only", "--resolv-conf=off", "--timezone=off",
                 "--link-journal=no", f"--bind-ro={ROOT}", f"--bind-ro={prefix}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 30
        init_pid = None
        while init_pid is None:
            assert nspawn.poll() is None, console.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the system did not start"
            init_pid = _init_of(nspawn.pid)
            time.sleep(0.05)
        system = Booted(nspawn, init_pid, console, root)
        # wait until boot is over (degraded is fine: a container lacks some
        # hardware); right after the start systemctl cannot reach systemd yet
        deadline = time.monotonic() + 90
        while system.run("systemctl", "is-system-running", "--wait", check=False,
                         timeout=90).strip() not in ("running", "degraded"):  # fmt: skip
            assert time.monotonic() < deadline, console.read_text(errors="replace")[-2000:]
            time.sleep(0.5)
        yield system
    finally:
        if nspawn is not None:
            _poweroff(nspawn)
        for _ in range(50):
            if subprocess.run(["umount", str(root)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(root)], check=False)


def _poweroff(nspawn: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while nspawn.poll() is None and time.monotonic() < deadline:
        init = _init_of(nspawn.pid)
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGRTMIN + 4)  # systemd: power off
        with contextlib.suppress(subprocess.TimeoutExpired):
            nspawn.wait(1)
    if nspawn.poll() is None:
        os.killpg(nspawn.pid, signal.SIGKILL)
        nspawn.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readme_lines(heading: str) -> list[str]:
    from tests.test_readme_run import shell_blocks, shell_lines

    return [line for block in shell_blocks(heading) for line in shell_lines(block)]


def test_the_services_under_systemd(booted: Booted) -> None:
    """`Running as services`, line by line as the README gives them: install
    the units, set the environment file with sudoedit, enable four workers
    then four more, restart after an upgrade, read the journal; the CLI as
    the service user; then a stopping worker finishes its job."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("REDIS_URL is not set (scripts/test starts a Redis)")
    lines = readme_lines("Running as services")
    install, operate = lines[:2], lines[2:7]
    assert install == ["scripts/install-systemd --dry-run     # print everything, change nothing",
                       "sudo scripts/install-systemd"], install  # fmt: skip
    dry = booted.sh(install[0])
    assert "[Service]" in dry and not Path(booted.root / "etc/provisioner").exists()
    out = booted.sh(install[1])
    assert "created system user provisioner" in out
    assert "created: /etc/systemd/system/provisioner-worker@.service" in out
    assert "systemctl daemon-reload: done" in out  # it found systemd running
    if ROOT.is_relative_to("/tmp"):
        # A checkout in /tmp (a CI clone) is hidden from services by their
        # PrivateTmp, as the README warns: the test gives them the shared /tmp.
        for unit in ("provisioner-web.service", "provisioner-worker@.service",
                     "provisioner-migrate.service"):  # fmt: skip
            booted.run("sh", "-c", f"mkdir -p /etc/systemd/system/{unit}.d && printf "
                       f"'[Service]\\nPrivateTmp=no\\nReadWritePaths=/tmp\\n' > /etc/systemd/system/{unit}.d/ci.conf")  # fmt: skip
        booted.run("systemctl", "daemon-reload")
    queue_name, port = f"units-boot-{uuid.uuid4().hex[:8]}", _free_port()
    env = "/etc/provisioner/provisioner.env"
    # sudoedit with an "editor" that adds what an operator would type
    editor = booted.root / "usr/local/bin/add-settings"
    editor.write_text(f"#!/bin/sh\nprintf 'REDIS_URL={redis_url}\\nPROVISIONER_QUEUE_NAME="
                      f"{queue_name}\\nPROVISIONER_WEB_PORT={port}\\n' >> \"$1\"\n")  # fmt: skip
    editor.chmod(0o755)
    sudoedit, enable4, enable8, restart, journal_line = operate
    assert sudoedit.startswith("sudoedit /etc/provisioner/provisioner.env"), operate
    booted.sh(f"SUDO_EDITOR=/usr/local/bin/add-settings {sudoedit}")
    assert f"PROVISIONER_QUEUE_NAME={queue_name}" in booted.run("cat", env)
    assert booted.run("stat", "-c", "%a %U", env).split() == ["600", "root"]

    services = ["provisioner-migrate.service", "provisioner-web.service",
                *(f"provisioner-worker@{i}.service" for i in range(1, 9))]  # fmt: skip
    journal = lambda: booted.run("journalctl", "--no-pager", "-u", "provisioner-*", check=False)  # noqa: E731
    redis = Redis.from_url(redis_url)
    queue = Queue(queue_name, connection=redis)
    scrape_token: list[str] = []

    def idle_workers() -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={
            "Authorization": f"Bearer {scrape_token[0]}"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                families = promtext.parse(response.read().decode())
        except (urllib.error.URLError, ConnectionError):  # the web app is (re)starting
            return -1
        return int(families["provisioner_workers"].value(queue=queue_name, state="idle") or 0)

    def until(check: object, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            assert time.monotonic() < deadline, journal()
            time.sleep(0.5)

    try:
        booted.sh(enable4)
        states = booted.run("systemctl", "is-active", *services[:6], check=False).split()
        assert states == ["active"] * 6, journal()

        deadline = time.monotonic() + 60
        status = None
        while status is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                assert time.monotonic() < deadline, journal()
                time.sleep(0.3)
        assert status == 401
        # the CLI as the service user with the services' settings, as documented
        (first_admin,) = [line for line in readme_lines("Running as services")
                          if line.startswith("sudo provisioner ")]  # fmt: skip
        added = booted.sh(first_admin)  # no terminal: a generated password, shown once
        assert "user admin added (admin)" in added and "password: " in added
        scrape_token.append(booted.sh("sudo provisioner token create admin scrape").strip())
        # what it wrote is the services': the SQLite file stays theirs
        assert booted.run("stat", "-c", "%U", "/var/lib/provisioner/provisioner.db").strip() == (
            "provisioner"
        )
        until(lambda: idle_workers() == 4)

        booted.sh(enable8)  # four more
        until(lambda: idle_workers() == 8)
        booted.sh(enable8.split("#")[0].replace("enable --now", "disable --now"))  # and fewer
        until(lambda: idle_workers() == 4)

        main_pids = lambda: booted.run("systemctl", "show", "-p", "MainPID", *services[1:6])  # noqa: E731
        before = main_pids()
        booted.sh(restart)  # PartOf: the web app and the workers restart with the target
        after = main_pids().split()
        assert not set(before.split()) & set(after) and "MainPID=0" not in after, (before, after)
        states = booted.run("systemctl", "is-active", *services[1:6], check=False).split()
        assert states == ["active"] * 5, journal()
        until(lambda: idle_workers() == 4)
        followed = booted.sh(f"timeout 3 {journal_line}", check=False)
        assert "provisioner-worker[" in followed, followed[-2000:]
        assert "provisioner-web[" in followed, followed[-2000:]

        # stopping the workers lets a job finish (KillMode=mixed, SIGTERM, TimeoutStopSec)
        job = queue.enqueue("time.sleep", 8)
        until(lambda: job.get_status(refresh=True) == JobStatus.STARTED, 60)
        started = time.monotonic()
        booted.sh("systemctl stop provisioner-worker@{1..4}.service")
        assert time.monotonic() - started > 4  # it waited for the job
        assert job.get_status(refresh=True) == JobStatus.FINISHED, journal()
        for i in range(1, 5):
            shown = booted.run("systemctl", "show", "-p", "Result,ExecMainStatus",
                               f"provisioner-worker@{i}.service")  # fmt: skip
            assert "Result=success" in shown and "ExecMainStatus=0" in shown, journal()
        assert "warm shut down requested" in journal()

        booted.run("systemctl", "stop", "provisioner.target")  # PartOf: stops the web app too
        until(lambda: booted.run("systemctl", "is-active", "provisioner-web.service",
                                 check=False).strip() == "inactive", 40)  # fmt: skip
        shown = booted.run("systemctl", "show", "-p", "Result", "provisioner-web.service")
        assert "Result=success" in shown, journal()
    finally:
        queue.delete(delete_jobs=True)
        redis.close()

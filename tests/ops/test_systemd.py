"""scripts/install-systemd: units generated from the Procfile, checked by
systemd-analyze, the environment file, dry runs, and the units' commands
run the way systemd would run them."""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Worker

from provisioner.config import Settings, env_var
from tests.conftest import ROOT

SCRIPT = ROOT / "scripts/install-systemd"
UNITS = ("provisioner-web.service", "provisioner-worker@.service",
         "provisioner-scheduler@.service", "provisioner-migrate.service",
         "provisioner.target")  # fmt: skip
Unit = dict[str, list[tuple[str, str]]]


@dataclasses.dataclass
class Install:
    dest: Path
    env_file: Path
    data_dir: Path
    stdout: str

    def text(self, name: str) -> str:
        return (self.dest / name).read_text()

    def unit(self, name: str) -> Unit:
        return parse_unit(self.text(name))


def parse_unit(text: str) -> Unit:
    sections: Unit = {}
    current = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        sections[current].append((key, value))
    return sections


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, (section, key, found)
    return found[0]


def run_script(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr
    return done


def install(tmp_path: Path, *extra: str | Path) -> Install:
    dest, env_file, data = tmp_path / "units", tmp_path / "etc/provisioner.env", tmp_path / "data"
    done = run_script("--dest", dest, "--env-file", env_file, "--data-dir", data, "--no-user",
                      "--wrapper", tmp_path / "bin/provisioner", *extra)  # fmt: skip
    return Install(dest, env_file, data, done.stdout)


@pytest.fixture
def installed(tmp_path: Path) -> Install:
    return install(tmp_path)


def test_the_units_pass_systemd_analyze_verify(installed: Install) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing: apt-get install systemd")

    def verify(dest: Path) -> subprocess.CompletedProcess[str]:
        names = ["provisioner-web.service", "provisioner-worker@3.service",
                 "provisioner-migrate.service", "provisioner.target"]  # fmt: skip
        return subprocess.run([analyze, "verify", "--man=no", *(str(dest / n) for n in names)],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})  # fmt: skip

    done = verify(installed.dest)
    assert done.returncode == 0, done.stderr
    # unknown keys or bad values are only warnings: there must be none
    ours = [line for line in done.stderr.splitlines() if "provisioner" in line]
    assert ours == [], done.stderr

    # the check can fail: a unit whose program does not exist
    web = installed.dest / "provisioner-web.service"
    web.write_text(
        re.sub(r"(?m)^ExecStart=\S+", "ExecStart=/nonexistent/provisioner", web.read_text())
    )
    broken = verify(installed.dest)
    assert broken.returncode != 0 and "/nonexistent/provisioner" in broken.stderr


def test_one_unit_per_procfile_line_plus_the_target_and_the_migration(installed: Install) -> None:
    assert sorted(p.name for p in installed.dest.iterdir()) == sorted(UNITS)
    for name in UNITS:
        assert stat.S_IMODE((installed.dest / name).stat().st_mode) == 0o644
    procfile = {line.split(":", 1)[0]: line.split(":", 1)[1].strip()
                for line in (ROOT / "Procfile").read_text().splitlines()
                if line and not line.startswith("#")}  # fmt: skip
    assert procfile == {
        "web": ".venv/bin/provisioner web",
        "worker": ".venv/bin/provisioner worker",
    }
    venv = ROOT / ".venv/bin/provisioner"

    web = installed.unit("provisioner-web.service")
    worker = installed.unit("provisioner-worker@.service")
    for unit, command in ((web, "web"), (worker, "worker")):
        assert value(unit, "Service", "ExecStart") == f"{venv} {command}"
        assert value(unit, "Service", "WorkingDirectory") == str(ROOT)
        assert value(unit, "Service", "User") == value(unit, "Service", "Group") == "provisioner"
        assert value(unit, "Service", "EnvironmentFile") == str(installed.env_file)
        assert f"PROVISIONER_DATA_DIR={installed.data_dir}" in value(unit, "Service", "Environment")
        assert value(unit, "Service", "Restart") == "on-failure"
        assert value(unit, "Service", "RestartSec") == "5s"
        assert value(unit, "Unit", "StartLimitIntervalSec") == "0"
        assert value(unit, "Service", "KillSignal") == "SIGTERM"
        # SIGTERM to the main process only: RQ's work horse dies of it
        assert value(unit, "Service", "KillMode") == "mixed"
        assert value(unit, "Service", "NoNewPrivileges") == "yes"
        assert value(unit, "Service", "ProtectSystem") == "strict"
        assert value(unit, "Service", "ReadWritePaths") == str(installed.data_dir)
        assert value(unit, "Service", "PrivateTmp") == "yes"
        # this checkout's .venv links to an interpreter; in a home it stays readable
        in_home = any(str((ROOT / ".venv/bin/python").resolve()).startswith(h)
                      for h in ("/home/", "/root/"))  # fmt: skip
        assert value(unit, "Service", "ProtectHome") == ("read-only" if in_home else "yes")
        assert value(unit, "Unit", "PartOf") == "provisioner.target"
        assert "provisioner-migrate.service" in value(unit, "Unit", "After").split()
        assert "provisioner-migrate.service" in value(unit, "Unit", "Wants").split()
        assert value(unit, "Install", "WantedBy") == "provisioner.target"
    # long enough for a job to finish (PROVISIONER_JOB_TIMEOUT defaults to 3600 s)
    assert int(value(worker, "Service", "TimeoutStopSec")) == 3600 + 120
    assert "%i" in value(worker, "Unit", "Description")

    migrate = installed.unit("provisioner-migrate.service")
    assert value(migrate, "Service", "Type") == "oneshot"
    assert value(migrate, "Service", "RemainAfterExit") == "yes"
    assert value(migrate, "Service", "ExecStart") == f"{venv} db upgrade"
    assert "Install" not in migrate  # pulled in by the services, not enabled itself
    target = installed.unit("provisioner.target")
    assert value(target, "Install", "WantedBy") == "multi-user.target"

    out = installed.stdout
    assert "systemctl enable --now provisioner.target provisioner-web.service " \
           "provisioner-worker@{1..4}.service" in out  # fmt: skip
    assert "provisioner-worker@{5..8}" in out and "journalctl -u 'provisioner-*'" in out
    assert "not a systemd unit directory: no daemon-reload" in out


def test_the_environment_file_is_private_complete_and_never_overwritten(
    installed: Install, tmp_path: Path
) -> None:
    env = installed.env_file
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    text = env.read_text()
    for f in dataclasses.fields(Settings):
        if f.name != "config_file":
            assert re.search(rf"(?m)^#?{env_var(f.name)}=", text), f.name
    # what is set in it is a valid configuration
    settings = Settings.from_env(environ=_env_file_values(env))
    assert settings.data_dir == installed.data_dir
    assert settings.database_url == f"sqlite:///{installed.data_dir}/provisioner.db"

    env.write_text("REDIS_URL=redis://redis.example.net:6379/0\n")
    env.chmod(0o640)
    again = install(tmp_path)
    assert env.read_text() == "REDIS_URL=redis://redis.example.net:6379/0\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o640  # not even its mode is touched
    assert f"kept: {env} (never overwritten)" in again.stdout
    for name in UNITS:
        assert f"unchanged: {again.dest / name}" in again.stdout


def test_the_stop_timeout_follows_the_job_timeout(tmp_path: Path) -> None:
    env = tmp_path / "etc/provisioner.env"
    env.parent.mkdir()
    env.write_text("#PROVISIONER_JOB_TIMEOUT=60\nPROVISIONER_JOB_TIMEOUT=7200\n")
    unit = install(tmp_path).unit("provisioner-worker@.service")
    assert value(unit, "Service", "TimeoutStopSec") == str(7200 + 120)
    unit = install(tmp_path, "--stop-timeout", "900").unit("provisioner-worker@.service")
    assert value(unit, "Service", "TimeoutStopSec") == "900"


def test_restart_backs_off_where_systemd_can(tmp_path: Path) -> None:
    old = install(tmp_path, "--systemd-version", "252").unit("provisioner-worker@.service")
    assert values(old, "Service", "RestartSteps") == []
    new = install(tmp_path, "--systemd-version", "256").unit("provisioner-worker@.service")
    assert value(new, "Service", "RestartSteps") == "6"
    assert value(new, "Service", "RestartMaxDelaySec") == "5min"


@pytest.mark.parametrize("flag", ["--dry-run", "--print"])
def test_a_dry_run_changes_nothing(tmp_path: Path, flag: str) -> None:
    before = sorted(tmp_path.rglob("*"))
    done = run_script("--dest", tmp_path / "units", "--env-file", tmp_path / "etc/p.env",
                      "--user", f"nobody{uuid.uuid4().hex[:6]}", flag)  # fmt: skip
    assert sorted(tmp_path.rglob("*")) == before
    for name in UNITS:
        assert f"# ---- {tmp_path / 'units' / name} ----" in done.stdout
    assert f"{tmp_path / 'etc/p.env'} (would be created, mode 0600)" in done.stdout
    assert "# would create the user nobody" in done.stdout
    assert "ExecStart=" in done.stdout and "systemctl enable --now" in done.stdout


def test_a_custom_procfile(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("# comment\n\nweb: .venv/bin/provisioner web --port 9000\n"
                        "beat: provisioner worker --name 'a b'\n")  # fmt: skip
    done = install(tmp_path, "--procfile", procfile, "--user", "svc")
    beat = done.unit("provisioner-beat@.service")
    assert (
        value(beat, "Service", "ExecStart") == f'{ROOT}/.venv/bin/provisioner worker --name "a b"'
    )
    assert value(beat, "Service", "User") == "svc"
    web = done.unit("provisioner-web.service")
    assert value(web, "Service", "ExecStart").endswith("/provisioner web --port 9000")
    assert not (done.dest / "provisioner-worker@.service").exists()


@pytest.mark.parametrize(("procfile", "message"), [
    ("web: provisioner web | tee log\n", "Procfile:1: 'provisioner web | tee log' needs a shell"),
    ("web: a\nweb: b\n", "Procfile:2: process type 'web' is defined twice"),
    ("just a line\n", "Procfile:1: expected 'name: command'"),
    ("# nothing\n", "defines no process"),
    ("web: no-such-program-xyz\n", "'no-such-program-xyz' is neither in"),
])  # fmt: skip
def test_a_bad_procfile_is_one_clear_error(tmp_path: Path, procfile: str, message: str) -> None:
    path = tmp_path / "Procfile"
    path.write_text(procfile)
    done = run_script("--procfile", path, "--dest", tmp_path / "u", "--no-user", check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("install-systemd: error: ") and message in done.stderr
    assert not (tmp_path / "u").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a system user needs root")
def test_the_service_user_and_its_data_directory(tmp_path: Path) -> None:
    name = f"provtest{uuid.uuid4().hex[:6]}"
    data = tmp_path / "data"
    try:
        first = run_script("--dest", tmp_path / "units", "--env-file", tmp_path / "p.env",
                           "--data-dir", data, "--user", name, "--no-wrapper")  # fmt: skip
        entry = pwd.getpwnam(name)
        assert entry.pw_uid < 1000 and entry.pw_dir == str(data)  # a system user
        assert entry.pw_shell.endswith(("nologin", "false"))
        assert data.stat().st_uid == entry.pw_uid
        assert stat.S_IMODE(data.stat().st_mode) == 0o750
        assert f"created system user {name}" in first.stdout
        second = run_script("--dest", tmp_path / "units", "--env-file", tmp_path / "p.env",
                            "--data-dir", data, "--user", name, "--no-wrapper")  # fmt: skip
        assert "created system user" not in second.stdout
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
        subprocess.run(["groupdel", name], capture_output=True, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the wrapper is for root")
def test_sudo_provisioner_runs_the_cli_with_the_services_settings(tmp_path: Path) -> None:
    """The wrapper reads the environment file (no shell expansion: a `$` in a
    value stays), and runs the CLI as the service user (root here, for the test)."""
    done = install(tmp_path, "--user", "root")
    wrapper = tmp_path / "bin/provisioner"
    assert f"created: {wrapper}" in done.stdout and "sudo provisioner user add" in done.stdout
    assert stat.S_IMODE(wrapper.stat().st_mode) == 0o755
    with done.env_file.open("a") as f:
        f.write(f"DATABASE_URL=sqlite:///{tmp_path}/svc.db\nPROVISIONER_LOG_LEVEL='WARNING'\n")
    env = {"PATH": os.environ["PATH"], "HOME": "/root"}
    upgraded = subprocess.run([str(wrapper), "db", "upgrade"], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    assert (tmp_path / "svc.db").is_file()  # the environment file's database
    with done.env_file.open("a") as f:
        f.write("PROVISIONER_QUEUE_NAME=q$HOME\n")
    bad = subprocess.run([str(wrapper), "ls"], env=env, capture_output=True, text=True, timeout=60)
    assert "PROVISIONER_QUEUE_NAME may only contain" in bad.stderr and "q$HOME" in bad.stderr
    # a file there that is not ours is never replaced: nothing is written at all
    foreign = tmp_path / "other/provisioner"
    foreign.parent.mkdir()
    foreign.write_text("#!/bin/sh\necho another CLI\n")
    refused = run_script("--dest", tmp_path / "units2", "--env-file", tmp_path / "e2.env",
                         "--no-user", "--wrapper", foreign, check=False)  # fmt: skip
    assert refused.returncode == 2 and "was not made by install-systemd" in refused.stderr
    assert foreign.read_text().endswith("another CLI\n") and not (tmp_path / "units2").exists()
    again = install(tmp_path, "--user", "root")  # ours: updated in place
    assert f"unchanged: {wrapper}" in again.stdout
    shared = Path(tempfile.mkdtemp(prefix="wrapper-"))  # pytest's tmp is closed to others
    try:
        shared.chmod(0o755)
        shutil.copy2(wrapper, shared / "provisioner")
        as_nobody = subprocess.run(["runuser", "-u", "nobody", "--", str(shared / "provisioner"),
                                    "ls"], capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        shutil.rmtree(shared)
    assert as_nobody.returncode == 1
    assert as_nobody.stderr.startswith("provisioner: run it with sudo")


# -- the units' commands, run as systemd runs them ------------------------------


def _env_file_values(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#"))  # fmt: skip
    return {k.strip(): v.strip() for k, v in pairs}


def service_environment(unit: Unit, home: Path) -> dict[str, str]:
    """A service's environment: systemd's own few variables, then
    Environment=, then EnvironmentFile= (which wins)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "LANG": "C.UTF-8",
           "HOME": str(home)}  # fmt: skip
    for line in values(unit, "Service", "Environment"):
        env.update(word.split("=", 1) for word in shlex.split(line))  # type: ignore[misc]
    env.update(_env_file_values(Path(value(unit, "Service", "EnvironmentFile"))))
    return env


def start_service(install: Install, name: str, home: Path) -> subprocess.Popen[str]:
    unit = install.unit(name)
    return subprocess.Popen(shlex.split(value(unit, "Service", "ExecStart")),
                            cwd=value(unit, "Service", "WorkingDirectory"),
                            env=service_environment(unit, home), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip


def stop_service(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    assert proc.stdout is not None
    return rc, proc.stdout.read()


def test_the_units_commands_run_as_systemd_runs_them(tmp_path: Path) -> None:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("REDIS_URL is not set (scripts/test starts a Redis)")
    done = install(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = f"units-test-{uuid.uuid4().hex[:8]}"
    with done.env_file.open("a") as f:  # what an operator edits
        f.write(f"REDIS_URL={redis_url}\nPROVISIONER_QUEUE_NAME={queue}\n"
                f"PROVISIONER_WEB_PORT={port}\n")  # fmt: skip
    home = tmp_path / "home"
    home.mkdir()

    migrate = start_service(done, "provisioner-migrate.service", home)
    assert migrate.wait(120) == 0, migrate.stdout.read() if migrate.stdout else ""
    assert (done.data_dir / "provisioner.db").exists()
    if migrate.stdout:
        migrate.stdout.close()

    web = start_service(done, "provisioner-web.service", home)
    worker = start_service(done, "provisioner-worker@.service", home)
    redis = Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 90
        status = None
        while status is None and time.monotonic() < deadline:
            assert web.poll() is None, web.stdout.read() if web.stdout else ""
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                time.sleep(0.3)
        assert status == 401  # served, and guarded
        while not Worker.all(queue=Queue(queue, connection=redis)):
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
            assert time.monotonic() < deadline, "the worker did not register"
            time.sleep(0.2)
        rc, output = stop_service(worker, 60)
        assert rc == 0, output  # SIGTERM is a clean stop: Restart=on-failure leaves it
        assert not Worker.all(queue=Queue(queue, connection=redis))
        rc, output = stop_service(web, 30)
        assert rc == 0, output
    finally:
        for proc in (web, worker):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        redis.close()

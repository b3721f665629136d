"""Shared fixtures: the simulator the test command started (or one of our
own when pytest runs alone as root), PVE clients, SSH keys."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.databases import BACKENDS, close_pg_databases

ROOT = Path(__file__).resolve().parent.parent
# Set by scripts/test, which starts everything every test needs: there a
# skipped test is a failure, so a missing service never passes unseen.
NO_SKIP = "PROVISIONER_TESTS_NO_SKIP"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get(NO_SKIP) and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under scripts/test ({NO_SKIP} is set): {reason}"


@pytest.fixture(scope="module")
def db_backend(request: pytest.FixtureRequest) -> str:
    """The database backend of the stacks a test uses: ``sqlite``, or what
    the module's (or test's) ``tests.databases.BOTH`` mark gives."""
    backend: str = getattr(request, "param", "sqlite")
    assert backend in BACKENDS, backend
    return backend


@pytest.fixture(scope="session", autouse=True)
def _drop_pg_databases() -> Iterator[None]:
    """The PostgreSQL databases a stack left behind go when the session ends."""
    yield
    close_pg_databases()


def start_simulator(state_dir: Path, *extra: str, listen: str | None = None,
                    timeout: float = 120) -> tuple[subprocess.Popen[str], dict[str, Any]]:  # fmt: skip
    """Start ``pvesim serve`` and wait for its JSON line."""
    if listen is None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
            listen = f"127.0.0.2:{s.getsockname()[1]}"
    log = open(state_dir.parent / f"{state_dir.name}.log", "a")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/pvesim"), "serve", "--listen", listen, "--state-dir",
         str(state_dir), "--time-scale", "0", *extra],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    log.close()
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line or proc.poll() is not None:
            break
    if not line:
        proc.kill()
        proc.wait()
        raise RuntimeError(
            f"pvesim did not start: {(state_dir.parent / f'{state_dir.name}.log').read_text()[-2000:]}"
        )
    return proc, json.loads(line)


def stop_simulator(proc: subprocess.Popen[str]) -> int:
    proc.terminate()
    try:
        return proc.wait(60)
    finally:
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture(scope="session")
def sim() -> Iterator[dict[str, Any]]:
    """Connection info of a running simulator (url, cafile, token, ...)."""
    path = os.environ.get("PVESIM_INFO")
    if path:
        info = json.loads(Path(path).read_text())
        info["state_dir"] = os.environ.get("PVESIM_STATE_DIR", "")
        yield info
        return
    if os.geteuid() != 0:
        pytest.skip("the simulator needs root (run scripts/test)")
    with tempfile.TemporaryDirectory(prefix="pvesim-test-") as tmp:
        state = Path(tmp) / "state"
        proc, info = start_simulator(state)
        info["state_dir"] = str(state)
        try:
            yield info
        finally:
            stop_simulator(proc)

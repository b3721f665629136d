"""``pvesim serve`` as a process: refusals, readiness line, restart with the
same state, several simulators at once, cleanup after exit and after a crash.
Each test runs simulators of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, start_simulator, stop_simulator
from tests.pvesim.helpers import token_api, wait_port, wait_start_after_create, wait_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the simulator needs root")
PVESIM = str(ROOT / ".venv/bin/pvesim")


def host_state(index_tag: str) -> dict[str, Any]:
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout
    nat = subprocess.run(
        ["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True
    ).stdout
    return {
        "bridge": any(link["ifname"] == index_tag for link in links),
        "netns": [n.split()[0] for n in netns.splitlines() if n.startswith(f"{index_tag}-")],
        "rules": [r for r in (rules + nat).splitlines() if index_tag in r],
    }


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    result = subprocess.run([PVESIM, "serve", "--listen", "0.0.0.0:8006", "--state-dir",
                             str(tmp_path)], capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode != 0 and result.stdout == ""
    assert "loopback" in result.stderr and "0.0.0.0" in result.stderr


@needs_root
def test_needs_root_and_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PVESIM, "serve",
         "--listen", "127.0.0.2:18999", "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert "must run as root" in result.stderr
    assert "Traceback" not in result.stderr


@needs_root
def test_restart_keeps_state_and_cleans_up(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, info = start_simulator(state)
    tag = info["bridge"]
    try:
        assert set(info) >= {
            "url",
            "cafile",
            "node",
            "user",
            "password",
            "token_id",
            "token_secret",
        }
        assert Path(info["cafile"]).parent == state
        api = token_api(info)
        ip = str(info["gateway"]).rsplit(".", 1)[0] + ".20"
        upid = api.nodes("pve").lxc.post(vmid=300, ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                                         storage="local-lvm", hostname="keepme",
                                         net0=f"name=eth0,bridge=vmbr0,ip={ip}/24", start=1)  # fmt: skip
        assert wait_start_after_create(api, "pve", upid)["exitstatus"] == "OK"
        wait_port(ip, 22)
        before = host_state(tag)
        assert before["bridge"] and before["netns"] == [f"{tag}-300"] and before["rules"]
    finally:
        assert stop_simulator(proc) == 0
    # everything the simulator made on the host is gone, its containers too
    assert host_state(tag) == {"bridge": False, "netns": [], "rules": []}
    assert not processes_mentioning(str(state))

    proc, again = start_simulator(state)
    try:
        for key in ("password", "token_secret", "fingerprint", "subnet", "bridge"):
            assert again[key] == info[key], key
        api = token_api(again)
        config = api.nodes("pve").lxc(300).config.get()
        assert config["hostname"] == "keepme"
        assert api.nodes("pve").lxc(300).status.current.get()["status"] == "stopped"
        types = [t["type"] for t in api.nodes("pve").tasks.get(vmid=300)]
        assert "vzcreate" in types
        assert (
            wait_task(api, "pve", api.nodes("pve").lxc(300).status.start.post())["exitstatus"]
            == "OK"
        )
        wait_port(ip, 22)
    finally:
        assert stop_simulator(proc) == 0


@needs_root
def test_two_simulators_side_by_side(tmp_path: Path, sim: dict[str, Any]) -> None:
    proc_a, a = start_simulator(tmp_path / "a")
    try:
        proc_b, b = start_simulator(tmp_path / "b")
        try:
            bridges = {a["bridge"], b["bridge"], sim["bridge"]}
            subnets = {a["subnet"], b["subnet"], sim["subnet"]}
            assert len(bridges) == 3 and len(subnets) == 3
            assert token_api(a).version.get() == token_api(b).version.get()
        finally:
            stop_simulator(proc_b)
    finally:
        stop_simulator(proc_a)


@needs_root
def test_a_crashed_run_is_cleaned_up_at_the_next_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, info = start_simulator(state)
    api = token_api(info)
    ip = str(info["gateway"]).rsplit(".", 1)[0] + ".21"
    upid = api.nodes("pve").lxc.post(vmid=301, ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                                     storage="local-lvm", net0=f"name=eth0,bridge=vmbr0,ip={ip}/24",
                                     start=1)  # fmt: skip
    assert wait_start_after_create(api, "pve", upid)["exitstatus"] == "OK"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.stdout:
        proc.stdout.close()
    left_bridge = host_state(info["bridge"])["bridge"]  # left behind by the crash
    left_container = processes_mentioning(str(state / "ct/301"))  # its container still runs
    proc, again = start_simulator(state)  # (also the cleanup if the asserts fail)
    if not (left_bridge and left_container):
        stop_simulator(proc)
        pytest.fail(f"the crash left nothing behind? bridge={left_bridge} ct={left_container}")
    try:
        assert again["bridge"] == info["bridge"]
        assert not processes_mentioning(str(state / "ct/301"))
        api = token_api(again)
        assert api.nodes("pve").lxc(301).status.current.get()["status"] == "stopped"
        tasks = {t["upid"]: t for t in api.nodes("pve").tasks.get()}
        assert tasks  # the archive survived
        started = time.monotonic()
        assert (
            wait_task(api, "pve", api.nodes("pve").lxc(301).status.start.post())["exitstatus"]
            == "OK"
        )
        wait_port(ip, 22, timeout=60)
        assert time.monotonic() - started < 60
    finally:
        stop_simulator(proc)
    assert host_state(info["bridge"]) == {"bridge": False, "netns": [], "rules": []}

"""The harness's layout, without starting anything: what install-systemd
writes becomes the processes and environment the harness runs, and the
haproxy configuration it uses (and docs/scaling.md shows) is valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.multihost.balancer import haproxy_config
from tests.multihost.harness import install_host, read_env_file, unit_words


def test_a_host_runs_what_its_generated_units_run(tmp_path: Path) -> None:
    host = install_host(tmp_path / "host-a", "a", {"PROVISIONER_WEB_PORT": "8123",
                                                   "REDIS_URL": "'redis://127.0.0.1:1/0'"},
                        workers=2)  # fmt: skip
    cli = str(ROOT / ".venv/bin/provisioner")
    assert {s.unit: s.argv for s in host.services} == {
        "provisioner-scheduler@1.service": [cli, "scheduler"],
        "provisioner-web.service": [cli, "web"],
        "provisioner-worker@1.service": [cli, "worker"],
        "provisioner-worker@2.service": [cli, "worker"],
    }
    assert host.migrate is not None and host.migrate.argv == [cli, "db", "upgrade"]
    assert all(s.cwd == ROOT for s in host.services)
    # the unit's Environment= words, then the file (quotes dropped, as systemd does)
    assert host.env["PYTHONUNBUFFERED"] == "1"
    assert host.env["PROVISIONER_DATA_DIR"] == str(tmp_path / "host-a" / "data")
    assert host.env["REDIS_URL"] == "redis://127.0.0.1:1/0"
    assert host.env["PROVISIONER_WEB_PORT"] == "8123"
    assert host.web_port == 8123
    assert read_env_file(host.env_file)["PROVISIONER_WEB_PORT"] == "8123"


def test_unit_words_undo_systemd_quoting() -> None:
    assert unit_words('/x/provisioner web "a b%%c" d$$e') == ["/x/provisioner", "web", "a b%c",
                                                               "d$e"]  # fmt: skip


def test_the_haproxy_configuration_is_valid(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is missing (scripts/setup installs it)")
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(18000, {"a": 18001, "b": 18002}, tmp_path / "s.sock"))
    done = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stderr

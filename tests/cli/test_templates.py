"""``provisioner templates ls|show`` (``validate`` has its tests in
tests/provisioner/test_cli_templates.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.cli.conftest import Cli
from tests.cli.test_containers import one_line_error


def test_ls_lists_every_template(cli: Cli) -> None:
    result = cli("templates", "ls")
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert {"nginx", "debian-base", "postgresql", "redis", "python-app", "lines"} <= set(names)
    nginx = next(line for line in result.stdout.splitlines() if line.startswith("nginx "))
    assert "site_title, message, server_name" in nginx
    body = json.loads(cli("templates", "ls", "--json").stdout)
    assert body["invalid"] == []
    redis = next(t for t in body["templates"] if t["name"] == "redis")
    secret = next(v for v in redis["variables"] if v["name"] == "redis_password")
    assert secret["secret"] is True and secret["default"] is None


def test_show_has_variables_files_scripts_and_packages(cli: Cli) -> None:
    result = cli("templates", "show", "nginx")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "ostemplate:   debian-12-standard" in out
    assert "file:         /var/www/html/index.html 0644 root:root replace (rendered)" in out
    assert "script:       10-nginx-site.sh" in out and "packages apt: nginx" in out
    site_title = next(line for line in out.splitlines() if line.startswith("site_title"))
    assert "It works" in site_title and "length >= 1" in site_title
    body = json.loads(cli("templates", "show", "redis", "--json").stdout)
    assert body["health"] == {"type": "tcp", "port": 6379, "path": "/"}
    assert [s["name"] for s in body["scripts"]] == sorted(s["name"] for s in body["scripts"])
    shown = cli("templates", "show", "redis").stdout
    assert "(generated)" in next(r for r in shown.splitlines() if r.startswith("redis_password"))


def test_unknown_and_invalid_templates(cli: Cli) -> None:
    missing = cli("templates", "show", "nope")
    assert missing.exit_code == 3
    assert "no template named 'nope'" in one_line_error(missing.stderr)
    assert cli("templates", "show", "../nginx").exit_code == 3
    broken = Path(cli.env["PROVISIONER_TEMPLATES_DIR"]) / "broken"
    shutil.copytree(Path(cli.env["PROVISIONER_TEMPLATES_DIR"]) / "lines", broken)
    (broken / "template.toml").write_text((broken / "template.toml").read_text()
                                          .replace('name = "lines"', 'name = "broken"\nflavor = 1'))  # fmt: skip
    invalid = cli("templates", "show", "broken")
    assert invalid.exit_code == 2
    assert "template.toml:2: unknown key 'flavor'" in invalid.stderr
    assert one_line_error(invalid.stderr) == "error: template 'broken' is invalid: 1 problem(s)"
    listed = cli("templates", "ls")
    assert listed.exit_code == 0 and "broken" not in listed.stdout
    assert "warning: template broken is invalid (1 problem(s))" in listed.stderr
    assert json.loads(cli("templates", "ls", "--json").stdout)["invalid"][0]["name"] == "broken"
    created = cli("create", "-t", "broken", "-H", "x")
    assert created.exit_code == 2
    assert "--template: the template is invalid: " in one_line_error(created.stderr)
    assert "unknown key 'flavor'" in created.stderr

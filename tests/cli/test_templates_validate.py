"""``provisioner templates validate``."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cli.main import main


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_shipped_templates_validate(tmp_path: Path) -> None:
    code, out, err = run("templates", "validate", env={"PROVISIONER_DATA_DIR": str(tmp_path)})
    assert code == 0, err
    assert out.strip() == "6 template(s) OK"


def test_problems_are_listed_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "web"
    bad.mkdir()
    (bad / "template.toml").write_text('name = "web"\nflavor = 1\n')
    code, out, err = run("templates", "validate", str(tmp_path),
                         env={"PROVISIONER_DATA_DIR": str(tmp_path)})  # fmt: skip
    assert code == 1 and out == ""
    assert f"{bad / 'template.toml'}:2: unknown key 'flavor'" in err
    assert "description is required" in err
    assert err.strip().endswith("problem(s) in 1 template(s)")
    assert "Traceback" not in err


def test_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run("templates", "validate", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err


def test_a_missing_configured_directory_is_one_line(tmp_path: Path) -> None:
    env = {"PROVISIONER_DATA_DIR": str(tmp_path), "PROVISIONER_TEMPLATES_DIR": str(tmp_path / "x")}
    for command in (("templates", "validate"), ("templates", "ls")):
        code, out, err = run(*command, env=env)
        assert code == 2 and out == "", err
        assert err == (f"error: the templates directory {tmp_path / 'x'} does not exist or is "
                       "not a directory (PROVISIONER_TEMPLATES_DIR)\n")  # fmt: skip


def test_given_paths_need_no_configuration(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "templates_lxc" / "nginx"
    broken = {"PROVISIONER_DATA_DIR": str(tmp_path), "PROVISIONER_JOB_TIMEOUT": "abc"}
    code, out, err = run("templates", "validate", str(shipped), env=broken)
    assert (code, out) == (0, "1 template(s) OK\n"), err
    code, out, err = run("templates", "validate", env=broken)  # the configured directory
    assert (code, out) == (2, "")
    assert err == "error: PROVISIONER_JOB_TIMEOUT must be a positive integer, got 'abc'\n"

"""The data-hook contract of templates: the ``[hooks]`` table and ``hooks/``,
``regenerate`` on secret variables, the hooks' environment, and the hooks of
the shipped templates as files (their behaviour is tested end to end in
tests/pipeline/test_templates_e2e.py).

Pure: no simulator, no network.  Broken templates are written to tmp_path and
every problem is checked for its file, line and wording.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from provisioner.templates.loader import load_all, load_template, validate_tree
from provisioner.templates.model import HOOK_KINDS, Hooks, Problem, Script
from provisioner.templates.render import HOOK_ENV_NAMES, hook_env, script_env
from provisioner.templates.variables import resolve_variables
from provisioner.views import template_json, variable_json
from tests.provisioner.templates.test_templates import GOOD_TOML, SHIPPED, line_of, make_template

HOOK = "#!/bin/bash\nset -euo pipefail\necho hook >&2\n"

HOOKS_TOML = """
[hooks]
export = "export.sh"
import = "import.sh"
clone = "clone.sh"
timeout = 900
"""


def with_hooks(
    tmp_path: Path, toml: str = GOOD_TOML + HOOKS_TOML, hooks: dict[str, str | bytes] | None = None
) -> Path:
    """The good template plus ``[hooks]`` and the files under hooks/."""
    directory = make_template(tmp_path, toml=toml)
    files = {"export.sh": HOOK, "import.sh": HOOK, "clone.sh": HOOK} if hooks is None else hooks
    (directory / "hooks").mkdir()
    for name, content in files.items():
        path = directory / "hooks" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return directory


def only(problems: list[Problem], fragment: str) -> Problem:
    """The one problem containing ``fragment``; there must be no other."""
    assert len(problems) == 1 and fragment in problems[0].message, [str(p) for p in problems]
    return problems[0]


# --- a valid [hooks] table ----------------------------------------------------------------


def test_a_valid_hooks_table_loads(tmp_path: Path) -> None:
    directory = with_hooks(tmp_path)
    template = load_template(directory)
    hooks = template.hooks
    assert hooks.export == Script("export.sh", directory / "hooks/export.sh", 900)
    assert hooks.import_ == Script("import.sh", directory / "hooks/import.sh", 900)
    assert hooks.clone is not None and hooks.clone.timeout == 900
    assert hooks.rewrite is None and hooks.anonymise is None
    assert hooks.syncable
    assert hooks.get("import") is hooks.import_ and hooks.get("export") is hooks.export
    assert hooks.get("anonymise") is None
    assert list(hooks.declared()) == ["clone", "export", "import"]
    with pytest.raises(ValueError, match="no hook kind 'import_'"):
        hooks.get("import_")


def test_hooks_are_optional_and_default_to_a_600_s_timeout(tmp_path: Path) -> None:
    without = load_template(make_template(tmp_path / "a"))
    assert without.hooks == Hooks() and not without.hooks.syncable
    assert without.hooks.declared() == {}
    toml = GOOD_TOML + '\n[hooks]\nrewrite = "fix-urls.sh"\nanonymise = "scrub.sh"\n'
    template = load_template(
        with_hooks(tmp_path / "b", toml, {"fix-urls.sh": HOOK, "scrub.sh": HOOK})
    )
    assert template.hooks.rewrite is not None and template.hooks.rewrite.timeout == 600
    assert template.hooks.get("anonymise") == template.hooks.anonymise
    # rewrite and anonymise also serve a clone: no export/import needed
    assert not template.hooks.syncable


def test_hook_kinds_are_the_documented_ones() -> None:
    assert HOOK_KINDS == ("clone", "export", "import", "rewrite", "anonymise")


# --- problems, each with its file and line ------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "line_needle", "message"),
    [
        (
            "timeout = 900",
            'timeout = 900\ncolour = "x"',
            "colour",
            "unknown key 'hooks.colour' (allowed: clone, export, import, rewrite, anonymise, "
            "timeout)",
        ),
        (
            "timeout = 900",
            "timeout = 0",
            "timeout = 0",
            "hooks.timeout must be between 1 and 86400",
        ),
        (
            "timeout = 900",
            "timeout = 86401",
            "timeout = 86401",
            "hooks.timeout must be between 1 and 86400, got 86401",
        ),
        ('clone = "clone.sh"', "clone = 5", "clone = 5", "hooks.clone must be a string, got 5"),
        (
            'clone = "clone.sh"',
            'clone = "missing.sh"',
            "missing.sh",
            "hooks.clone names 'missing.sh', which is not in hooks/",
        ),
        (
            'clone = "clone.sh"',
            'clone = "../scripts/10-setup.sh"',
            "10-setup.sh",
            "hooks.clone must be the name of a file directly under hooks/ like 'clone.sh'",
        ),
        (
            'clone = "clone.sh"',
            'clone = "Clone.py"',
            "Clone.py",
            "hooks.clone must be the name of a file directly under hooks/",
        ),
        (
            'import = "import.sh"\n',
            "",
            'export = "export.sh"',
            "hooks.export needs hooks.import too: a template is either syncable (export and "
            "import) or not (neither)",
        ),
        (
            'export = "export.sh"\n',
            "",
            'import = "import.sh"',
            "hooks.import needs hooks.export too",
        ),
    ],
)
def test_hooks_table_problems_have_file_line_and_message(
    tmp_path: Path, old: str, new: str, line_needle: str, message: str
) -> None:
    toml = (GOOD_TOML + HOOKS_TOML).replace(old, new, 1)
    kept = {"export.sh": HOOK, "import.sh": HOOK, "clone.sh": HOOK}
    # a file whose declaration was removed would be undeclared: keep the test to one problem
    for name in list(kept):
        if f'"{name}"' not in toml:
            del kept[name]
    directory = with_hooks(tmp_path, toml, kept)
    problem = only(validate_tree(tmp_path), message)
    assert problem.file == str(directory / "template.toml")
    assert problem.line == line_of(toml, line_needle)
    assert str(problem) == f"{directory / 'template.toml'}:{problem.line}: {problem.message}"


def test_files_in_hooks_must_be_declared(tmp_path: Path) -> None:
    directory = with_hooks(
        tmp_path, hooks={"export.sh": HOOK, "import.sh": HOOK, "clone.sh": HOOK,
                         "stray.sh": HOOK, "lib/helpers.sh": HOOK},
    )  # fmt: skip
    problems = validate_tree(tmp_path)
    assert [str(p) for p in problems] == [
        f"{directory}/hooks/lib/helpers.sh: not declared in template.toml ([hooks])",
        f"{directory}/hooks/stray.sh: not declared in template.toml ([hooks])",
    ]


def test_a_hooks_dir_without_a_hooks_table_is_undeclared(tmp_path: Path) -> None:
    directory = with_hooks(tmp_path, GOOD_TOML, {"export.sh": HOOK})
    problem = only(validate_tree(tmp_path), "not declared in template.toml ([hooks])")
    assert (problem.file, problem.line) == (str(directory / "hooks/export.sh"), None)


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("echo no shebang\n", 1, "a hook must start with a shebang line such as '#!/bin/bash'"),
        (b"#!/bin/bash\n\xff\xfe\n", None, "a hook must be UTF-8 text"),
    ],
)
def test_hook_files_are_checked_like_scripts(
    tmp_path: Path, content: str | bytes, line: int | None, message: str
) -> None:
    directory = with_hooks(tmp_path, hooks={"export.sh": content, "import.sh": HOOK,
                                            "clone.sh": HOOK})  # fmt: skip
    problem = only(validate_tree(tmp_path), message)
    assert (problem.file, problem.line) == (str(directory / "hooks/export.sh"), line)


def test_a_hook_must_be_a_regular_file(tmp_path: Path) -> None:
    directory = with_hooks(tmp_path, hooks={"import.sh": HOOK, "clone.sh": HOOK})
    (directory / "hooks/export.sh").mkdir()
    problem = only(validate_tree(tmp_path), "a hook must be a regular file")
    assert problem.file == str(directory / "hooks/export.sh")


def test_hooks_must_be_a_table_and_a_directory(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace('tags = ["test"]', 'tags = ["test"]\nhooks = "export.sh"')
    directory = make_template(tmp_path, toml=toml)
    (directory / "hooks").write_text("not a directory\n")
    problems = validate_tree(tmp_path)
    assert {(p.file, p.line, p.message) for p in problems} == {
        (str(directory / "template.toml"), line_of(toml, 'hooks = "export.sh"'),
         "hooks must be a table, got 'export.sh'"),
        (str(directory / "hooks"), None, "hooks must be a directory of the scripts [hooks] names"),
    }  # fmt: skip


def test_every_hooks_problem_is_reported_at_once(tmp_path: Path) -> None:
    toml = GOOD_TOML + '\n[hooks]\nexport = "export.sh"\nrewrite = "gone.sh"\ntimeout = -1\n'
    directory = with_hooks(tmp_path, toml, {"export.sh": "no shebang\n", "extra.sh": HOOK})
    got = {(Path(p.file).name, p.line, p.message.split(":")[0]) for p in validate_tree(tmp_path)}
    assert got == {
        ("template.toml", line_of(toml, "export ="), "hooks.export needs hooks.import too"),
        ("template.toml", line_of(toml, "gone.sh"),
         "hooks.rewrite names 'gone.sh', which is not in hooks/"),
        ("template.toml", line_of(toml, "timeout = -1"),
         "hooks.timeout must be between 1 and 86400, got -1"),
        ("export.sh", 1, "a hook must start with a shebang line such as '#!/bin/bash'"),
        ("extra.sh", None, "not declared in template.toml ([hooks])"),
    }  # fmt: skip
    assert directory.name == "demo"


# --- regenerate ---------------------------------------------------------------------------


def test_regenerate_on_secret_variables(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace("length = 32", "length = 32\nregenerate = true").replace(
        'pattern = "[a-z][a-z0-9-]*"',
        'pattern = "[a-z][a-z0-9-]*"\nsecret = true\nregenerate = true',
    )
    template = load_template(make_template(tmp_path, toml=toml))
    assert template.variables["db_password"].regenerate
    assert template.variables["slug"].secret and template.variables["slug"].regenerate
    assert not template.variables["title"].regenerate
    assert variable_json(template.variables["db_password"])["regenerate"] is True
    assert variable_json(template.variables["title"])["regenerate"] is False


@pytest.mark.parametrize(
    ("old", "variable"),
    [('default = "Hello"', "title"), ("default = 8080", "port"), ('default = "plain"', "flavour")],
)
def test_regenerate_is_refused_on_a_variable_that_is_not_secret(
    tmp_path: Path, old: str, variable: str
) -> None:
    toml = GOOD_TOML.replace(old, f"{old}\nregenerate = true", 1)
    directory = make_template(tmp_path, toml=toml)
    problem = only(validate_tree(tmp_path), "regenerate only applies")
    assert str(problem) == (
        f"{directory}/template.toml:{line_of(toml, 'regenerate = true')}: "
        f"variables.{variable}.regenerate only applies to secret variables "
        '(type = "password" or secret = true): a clone gets a new value of a secret'
    )


def test_regenerate_must_be_a_boolean(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace("length = 32", 'length = 32\nregenerate = "yes"')
    make_template(tmp_path, toml=toml)
    problem = only(
        validate_tree(tmp_path), "variables.db_password.regenerate must be true or false"
    )
    assert problem.line == line_of(toml, 'regenerate = "yes"')


# --- the hooks' environment and the JSON --------------------------------------------------


def test_hook_env_is_the_scripts_env_plus_prov(tmp_path: Path) -> None:
    template = load_template(with_hooks(tmp_path))
    variables = resolve_variables(template, {"slug": "app"})
    env = hook_env(template, variables, hostname="staging-db", ip="10.0.0.7",
                   peer_hostname="prod-db", peer_ip="10.0.0.5", environment="staging")  # fmt: skip
    assert {k: v for k, v in env.items() if k.startswith("TPL_")} == script_env(template, variables)
    assert {k: env[k] for k in HOOK_ENV_NAMES} == {
        "PROV_HOSTNAME": "staging-db", "PROV_IP": "10.0.0.7", "PROV_PEER_HOSTNAME": "prod-db",
        "PROV_PEER_IP": "10.0.0.5", "PROV_ENVIRONMENT": "staging",
    }  # fmt: skip
    bare = hook_env(template, variables, hostname="h", ip="10.0.0.8")
    assert (bare["PROV_PEER_HOSTNAME"], bare["PROV_PEER_IP"], bare["PROV_ENVIRONMENT"]) == (
        "", "", ""
    )  # fmt: skip


def test_template_json_names_the_hooks(tmp_path: Path) -> None:
    template = load_template(with_hooks(tmp_path))
    listing = template_json(template)
    assert listing["syncable"] is True and "hooks" not in listing
    detail = template_json(template, detail=True)
    assert detail["hooks"] == {"clone": "clone.sh", "export": "export.sh", "import": "import.sh"}
    assert template.summary()["hooks"] == detail["hooks"]


# --- the shipped templates' hooks ---------------------------------------------------------


def test_shipped_syncable_templates_and_regenerated_secrets() -> None:
    templates = load_all(SHIPPED)
    declared = {name: set(t.hooks.declared()) for name, t in templates.items()}
    assert declared == {
        "debian-base": set(),
        "nginx": {"clone", "export", "import", "rewrite"},
        "postgresql": {"export", "import", "clone"},
        "redis": {"export", "import", "clone"},
        "python-app": {"export", "import"},
        "wordpress": {"clone", "export", "import", "rewrite", "anonymise"},
    }
    assert {n for n, t in templates.items() if t.hooks.syncable} == {
        "nginx", "postgresql", "redis", "python-app", "wordpress",
    }  # fmt: skip
    regenerated = {
        (n, v.name) for n, t in templates.items() for v in t.variables.values() if v.regenerate
    }
    assert regenerated == {("postgresql", "db_password"), ("redis", "redis_password"),
                           ("nginx", "basic_auth_password"), ("wordpress", "db_password")}  # fmt: skip


@pytest.mark.parametrize("name", ["nginx", "postgresql", "redis", "python-app", "wordpress"])
def test_shipped_hooks_are_strict_bash_and_keep_secrets_off_command_lines(name: str) -> None:
    template = load_template(SHIPPED / name)
    bash = shutil.which("bash")
    assert bash
    secrets = [v.env_name for v in template.variables.values() if v.secret]
    for kind, hook in template.hooks.declared().items():
        text = hook.path.read_text()
        assert text.startswith("#!/bin/bash\n"), hook.name
        assert "\nset -euo pipefail\n" in text, hook.name
        result = subprocess.run([bash, "-n", str(hook.path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{hook.name}: {result.stderr}"
        for secret in secrets:
            # only ever read from the environment: exported under another
            # name for a client (REDISCLI_AUTH, PGPASSWORD, MYSQL_PWD) or by
            # psql/perl, or written into SQL on a client's stdin by bash's
            # printf (a builtin: no process, no command line)
            for line in text.splitlines():
                if secret in line and not line.lstrip().startswith("#"):
                    assert line.lstrip().startswith("printf ") or any(ok in line for ok in (
                        f'REDISCLI_AUTH="${{{secret}}}"', f'PGPASSWORD="${{{secret}}}"',
                        f'MYSQL_PWD="${{{secret}}}"',
                        f"\\getenv db_password {secret}", f"$ENV{{{secret}}}",
                    )), f"{name}/{hook.name} ({kind}): {line}"  # fmt: skip

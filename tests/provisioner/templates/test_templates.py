"""Tests for the template loader, variables, sandboxed rendering and create parameters.

Pure: no simulator, no network.  Broken templates are written to tmp_path and
every problem is checked for its file, line and wording.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioner.errors import ConfigError, InvalidRequest
from provisioner.request_checks import field_of, first_per_field
from provisioner.ssh.files import FilePolicy, FileSpec
from provisioner.templates.loader import load_all, load_template, validate_tree
from provisioner.templates.model import (
    HealthKind,
    Problem,
    Template,
    TemplateError,
    TemplateFile,
)
from provisioner.templates.params import (
    CreateRequest,
    NetworkConfig,
    NodeDefaults,
    build_create_params,
    parse_marker,
)
from provisioner.templates.render import render_files, script_env
from provisioner.templates.toml import TomlLocator
from provisioner.templates.variables import SECRET_ALPHABET, resolve_variables, secret_values

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "templates_lxc"
SHIPPED_NAMES = {"debian-base", "nginx", "postgresql", "redis", "python-app", "wordpress"}

GOOD_TOML = """\
name = "demo"
description = "a test template"
tags = ["test"]
ostemplate = "debian-12-standard_12.7-1_amd64.tar.zst"

[resources]
memory = 256
disk = 2

[features]
nesting = true
keyctl = true

[variables.title]
type = "string"
default = "Hello"
max_length = 40

[variables.port]
type = "int"
default = 8080
min = 1024
max = 65535

[variables.debug]
type = "bool"
default = false

[variables.flavour]
type = "choice"
choices = ["plain", "fancy"]
default = "plain"

[variables.slug]
type = "string"
required = true
pattern = "[a-z][a-z0-9-]*"

[variables.db_password]
type = "password"
length = 32

[[files]]
source = "index.html.j2"
target = "/var/www/html/index.html"
mode = "0644"
owner = "root:www-data"
template = true

[[files]]
source = "logo.bin"
target = "/var/www/html/logo.bin"
mode = "0600"
policy = "default"

[scripts]
timeout = 120

[scripts.timeouts]
"20-app.sh" = 30

[health]
type = "http"
port = 80
path = "/healthz"
"""

INDEX_J2 = """\
<h1>{{ title }}</h1>
<p>port {{ port }}{% if debug %} (debug){% endif %}</p>
<p>{{ flavour }}/{{ slug }}</p>
"""

LOGO = bytes(range(256))  # not UTF-8: copied as is
SCRIPT = "#!/bin/bash\nset -euo pipefail\necho hi\n"


def make_template(
    root: Path,
    name: str = "demo",
    toml: str = GOOD_TOML,
    files: dict[str, str | bytes] | None = None,
    scripts: dict[str, str] | None = None,
    packages: dict[str, str] | None = None,
) -> Path:
    """Write a template directory; defaults give a valid template named 'demo'."""
    directory = root / name
    contents: dict[str, dict[str, str | bytes]] = {
        "files": {"index.html.j2": INDEX_J2, "logo.bin": LOGO} if files is None else files,
        "scripts": {"10-setup.sh": SCRIPT, "20-app.sh": SCRIPT} if scripts is None else {**scripts},
        "packages": {"base.apt": "# tools\ncurl\nhtop  # top\n"}
        if packages is None
        else {**packages},
    }
    for sub, entries in contents.items():
        for rel, content in entries.items():
            path = directory / sub / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "template.toml").write_text(toml.replace('name = "demo"', f'name = "{name}"'))
    return directory


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing needle."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} not in text"
    return hits[nth - 1]


def find(problems: list[Problem], fragment: str) -> Problem:
    matches = [p for p in problems if fragment in p.message]
    assert len(matches) == 1, f"{fragment!r} in {[str(p) for p in problems]}"
    return matches[0]


@pytest.fixture
def demo(tmp_path: Path) -> Template:
    return load_template(make_template(tmp_path))


# --- the shipped templates ------------------------------------------------------------------


def test_shipped_templates_have_no_problems() -> None:
    assert validate_tree(SHIPPED) == []
    templates = load_all(SHIPPED)
    assert set(templates) >= SHIPPED_NAMES
    for template in templates.values():
        variables = resolve_variables(template, {})
        assert len(render_files(template, variables)) == len(template.files)
        assert set(script_env(template, variables)) == {
            v.env_name for v in template.variables.values()
        }
        params = build_create_params(CreateRequest(hostname="ct1"), template, NodeDefaults())
        assert params["ostemplate"] == "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


@pytest.mark.parametrize("name", sorted(SHIPPED_NAMES))
def test_shipped_scripts_are_strict_bash(name: str) -> None:
    template = load_template(SHIPPED / name)
    assert template.scripts, "every shipped template provisions something"
    bash = shutil.which("bash")
    assert bash
    for script in template.scripts:
        text = script.path.read_text()
        assert text.startswith("#!/bin/bash\n"), script.name
        assert "\nset -euo pipefail\n" in text, script.name
        result = subprocess.run([bash, "-n", str(script.path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


def test_shipped_health_checks_and_secrets() -> None:
    templates = load_all(SHIPPED)
    health = {n: (t.health.kind.value, t.health.port) for n, t in templates.items() if t.health}
    assert health == {
        "nginx": ("http", 80),
        "postgresql": ("tcp", 5432),
        "redis": ("tcp", 6379),
        "python-app": ("http", 80),
        "wordpress": ("https", 443),
    }
    assert templates["postgresql"].secret_names == {"db_password"}
    assert templates["wordpress"].secret_names == {"admin_password", "db_password"}
    assert templates["redis"].secret_names == {"redis_password"}
    assert templates["python-app"].packages.pip_venv == "/opt/pyapp/venv"


# --- the loader on a valid template ----------------------------------------------------------


def test_valid_template_loads_with_every_section(demo: Template) -> None:
    assert demo.name == "demo"
    assert (demo.resources.cores, demo.resources.memory, demo.resources.disk) == (1, 256, 2)
    assert demo.features.as_pve() == "nesting=1,keyctl=1"
    assert list(demo.variables) == ["title", "port", "debug", "flavour", "slug", "db_password"]
    assert demo.variables["db_password"].secret
    assert [(s.name, s.timeout) for s in demo.scripts] == [("10-setup.sh", 120), ("20-app.sh", 30)]
    assert demo.packages.apt == ("curl", "htop")
    assert [(f.target, f.mode, f.policy) for f in demo.files] == [
        ("/var/www/html/index.html", 0o644, FilePolicy.REPLACE),
        ("/var/www/html/logo.bin", 0o600, FilePolicy.DEFAULT),
    ]
    assert demo.health is not None and demo.health.path == "/healthz"


def test_a_health_check_over_https_loads(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace(
        'type = "http"\nport = 80\npath = "/healthz"',
        'type = "https"\nport = 443\npath = "/wp-json/"\ncontains = \'"wp/v2"\'',
    )
    template = load_template(make_template(tmp_path, toml=toml))
    assert template.health is not None
    assert (template.health.kind, template.health.port, template.health.path,
            template.health.contains) == (HealthKind.HTTPS, 443, "/wp-json/", '"wp/v2"')  # fmt: skip


def test_scripts_run_in_numeric_order(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace('"20-app.sh" = 30', '"05-first.sh" = 30')
    scripts = {"90-last.sh": SCRIPT, "05-first.sh": SCRIPT, "10-setup.sh": SCRIPT}
    template = load_template(make_template(tmp_path, toml=toml, scripts=scripts))
    assert [s.name for s in template.scripts] == ["05-first.sh", "10-setup.sh", "90-last.sh"]


# --- the loader on broken templates ------------------------------------------------------


def broken(tmp_path: Path, old: str, new: str, **kwargs: object) -> tuple[list[Problem], str, Path]:
    """Validate a copy of the good template with one text replacement."""
    assert old in GOOD_TOML
    toml = GOOD_TOML.replace(old, new, 1)
    directory = make_template(tmp_path, toml=toml, **kwargs)  # type: ignore[arg-type]
    return validate_tree(tmp_path), toml, directory


@pytest.mark.parametrize(
    ("old", "new", "line_needle", "message"),
    [
        (
            'tags = ["test"]',
            'tags = ["test"]\ncolour = "blue"',
            "colour",
            "unknown key 'colour' (allowed: name, description",
        ),
        (
            'owner = "root:www-data"',
            'owner = "root:www-data"\nmodes = "0644"',
            "modes",
            "unknown key 'files[0].modes'",
        ),
        (
            'target = "/var/www/html/index.html"',
            'target = "etc/../x"',
            "etc/../x",
            "files[0].target must be an absolute path without '..', got 'etc/../x'",
        ),
        (
            'target = "/var/www/html/index.html"',
            'target = "/etc/../x"',
            "/etc/../x",
            "files[0].target must be an absolute path without '..', got '/etc/../x'",
        ),
        (
            'target = "/var/www/html/index.html"',
            'target = "/etc//x"',
            "/etc//x",
            "files[0].target must be a normalised absolute path",
        ),
        (
            'source = "logo.bin"',
            'source = "nope.bin"',
            "nope.bin",
            "files[1].source 'nope.bin' does not exist under files/",
        ),
        (
            'source = "logo.bin"',
            'source = "../template.toml"',
            "../template.toml",
            "files[1].source must be a path relative to files/ without '..'",
        ),
        (
            '"20-app.sh" = 30',
            '"30-missing.sh" = 30',
            "30-missing.sh",
            "scripts.timeouts names '30-missing.sh', which is not in scripts/",
        ),
        (
            "default = 8080",
            "default = 70000",
            "default = 70000",
            "variables.port.default must be at most 65535, got 70000",
        ),
        (
            'default = "Hello"',
            'default = "' + "x" * 41 + '"',
            "xxxxx",
            "variables.title.default may be at most 40 characters long",
        ),
        (
            'default = "plain"',
            'default = "odd"',
            'default = "odd"',
            "variables.flavour.default must be one of 'plain', 'fancy', got 'odd'",
        ),
        (
            "default = false",
            'default = "no"',
            'default = "no"',
            "variables.debug.default must be a boolean, got 'no'",
        ),
        (
            'type = "choice"',
            'type = "list"',
            'type = "list"',
            "variables.flavour.type must be one of string, int, bool, choice, password, got 'list'",
        ),
        (
            "length = 32",
            'length = 32\ndefault = "hunter22"',
            "hunter22",
            "variables.db_password is secret and cannot have a default",
        ),
        (
            'pattern = "[a-z][a-z0-9-]*"',
            'pattern = "[a-z"',
            "[a-z",
            "variables.slug.pattern is not a valid regular expression",
        ),
        (
            'mode = "0600"',
            'mode = "0986"',
            "0986",
            "files[1].mode must be an octal string like \"0644\", got '0986'",
        ),
        ('mode = "0600"', "mode = 600", "mode = 600", "files[1].mode must be a string, got 600"),
        (
            'owner = "root:www-data"',
            'owner = "root"',
            'owner = "root"',
            "files[0].owner must be \"user:group\" (names or numeric ids), got 'root'",
        ),
        (
            'policy = "default"',
            'policy = "merge"',
            "merge",
            "files[1].policy must be one of replace, default, backup, got 'merge'",
        ),
        ("memory = 256", "memory = 8", "memory = 8", "resources.memory must be at least 16, got 8"),
        ("keyctl = true", 'keyctl = "yes"', "keyctl", "features.keyctl must be true or false"),
        (
            'path = "/healthz"',
            'path = "/healthz"\ncontains = 5',
            "contains = 5",
            "health.contains must be a string, got 5",
        ),
        (
            'type = "http"',
            'type = "https2"',
            'type = "https2"',
            "health.type must be http, https or tcp, got 'https2'",
        ),
        (
            'type = "http"\nport = 80',
            'type = "tcp"\nport = 80',
            'path = "/healthz"',
            'health.path only applies to type = "http" or "https"',
        ),
        (
            'ostemplate = "debian-12-standard_12.7-1_amd64.tar.zst"',
            'ostemplate = "debian"',
            'ostemplate = "debian"',
            "ostemplate must be a volid like",
        ),
        (
            'name = "demo"\n',
            'name = "other"\n',
            'name = "other"',
            "name 'other' must match the directory name 'demo'",
        ),
    ],
)
def test_toml_problems_have_file_line_and_message(
    tmp_path: Path, old: str, new: str, line_needle: str, message: str
) -> None:
    problems, toml, directory = broken(tmp_path, old, new)
    problem = find(problems, message)
    assert problem.file == str(directory / "template.toml")
    assert problem.line == line_of(toml, line_needle)
    assert str(problem) == f"{directory / 'template.toml'}:{problem.line}: {problem.message}"
    # Only this problem (a bad source also leaves logo.bin undeclared).
    others = [p for p in problems if p is not problem and "not declared" not in p.message]
    assert others == [], [str(p) for p in others]


def test_the_briefs_example_message(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace('target = "/var/www/html/logo.bin"', 'target = "etc/../x"')
    make_template(tmp_path, toml=toml)
    (problem,) = validate_tree(tmp_path)
    assert str(problem) == (
        f"{tmp_path}/demo/template.toml:{line_of(toml, 'etc/../x')}: "
        "files[1].target must be an absolute path without '..', got 'etc/../x'"
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    toml = (
        GOOD_TOML.replace('tags = ["test"]', 'tags = ["test"]\nflavor = 1')
        .replace('target = "/var/www/html/logo.bin"', 'target = "relative/logo.bin"')
        .replace('mode = "0644"', 'mode = "rw-r--r--"')
        .replace("default = 8080", 'default = "8080"')
    )
    files: dict[str, str | bytes] = {
        "index.html.j2": "<h1>\n{{ title }\n</h1>\n",
        "logo.bin": LOGO,
        "stray.conf": "x",
    }
    scripts = {"10-setup.sh": SCRIPT, "20-app.sh": "echo no shebang\n", "setup.sh": SCRIPT}
    packages = {
        "base.apt": "curl\n# ok\nfoo bar\n",
        "tools.deb": "x\n",
        "req.pip": "--index-url http://x\n",
    }
    directory = make_template(tmp_path, toml=toml, files=files, scripts=scripts, packages=packages)
    problems = validate_tree(tmp_path)
    toml_file = str(directory / "template.toml")
    got = {(p.file, p.line, p.message) for p in problems}
    expected = {
        (toml_file, line_of(toml, "flavor = 1"), "unknown key 'flavor'"),
        (
            toml_file,
            line_of(toml, "relative/logo.bin"),
            "files[1].target must be an absolute path without '..'",
        ),
        (
            toml_file,
            line_of(toml, "rw-r--r--"),
            'files[0].mode must be an octal string like "0644"',
        ),
        (toml_file, line_of(toml, 'default = "8080"'), "variables.port.default must be an integer"),
        (str(directory / "files/index.html.j2"), 2, "Jinja2 syntax error"),
        (str(directory / "files/stray.conf"), None, "not declared in template.toml"),
        (str(directory / "scripts/20-app.sh"), 1, "a script must start with a shebang line"),
        (str(directory / "scripts/setup.sh"), None, "script names must look like NN-name.sh"),
        (
            str(directory / "packages/base.apt"),
            3,
            "not a valid apt package (one name per line), got 'foo bar'",
        ),
        (
            str(directory / "packages/tools.deb"),
            None,
            "package lists must be files named *.apt, *.pip or *.npm",
        ),
        (str(directory / "packages/req.pip"), 1, "not a valid pip package"),
    }
    for file, line, fragment in expected:
        assert any((p.file, p.line) == (file, line) and fragment in p.message for p in problems), (
            f"missing {file}:{line}: {fragment}\ngot: {sorted(map(str, problems))}"
        )
    assert len(got) == len(expected), sorted(map(str, problems))
    with pytest.raises(TemplateError) as exc:
        load_template(directory)
    assert isinstance(exc.value, ConfigError)
    assert exc.value.problems == problems
    assert f"has {len(expected)} problems" in str(exc.value)


def test_jinja_syntax_error_reports_its_line(tmp_path: Path) -> None:
    source = "<h1>{{ title }}</h1>\n<p>\n{% for x in %}\n</p>\n"
    make_template(tmp_path, files={"index.html.j2": source, "logo.bin": LOGO})
    (problem,) = validate_tree(tmp_path)
    assert problem.file == str(tmp_path / "demo/files/index.html.j2")
    assert problem.line == 3
    assert problem.message.startswith("Jinja2 syntax error: ")


def test_jinja_undeclared_variable_is_reported(tmp_path: Path) -> None:
    source = "{% for i in range(2) %}{{ i }}{% endfor %}\n{{ title }}\n{{ colour }}\n"
    make_template(tmp_path, files={"index.html.j2": source, "logo.bin": LOGO})
    (problem,) = validate_tree(tmp_path)
    assert (problem.line, problem.message) == (3, "uses 'colour', which is not a declared variable")


def test_toml_syntax_error_carries_its_line(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace("max_length = 40", "max_length = = 40")
    make_template(tmp_path, toml=toml)
    (problem,) = validate_tree(tmp_path)
    assert problem.line == line_of(toml, "max_length = = 40")
    assert problem.message.startswith("TOML syntax error: ")


def test_required_keys_and_missing_template_toml(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace('description = "a test template"\n', "")
    make_template(tmp_path, toml=toml)
    (tmp_path / "empty").mkdir()
    problems = validate_tree(tmp_path)
    assert find(problems, "description is required").line is None
    assert find(problems, "template.toml is missing").file == str(tmp_path / "empty")


def test_variable_needs_a_default_required_or_secret(tmp_path: Path) -> None:
    problems, toml, _ = broken(tmp_path, "required = true\n", "")
    assert find(problems, "variables.slug needs a default").line == line_of(
        toml, "[variables.slug]"
    )


def test_load_all_reports_problems_of_every_template(tmp_path: Path) -> None:
    make_template(tmp_path, name="one")
    make_template(tmp_path, name="two", toml=GOOD_TOML.replace('mode = "0600"', 'mode = "9"'))
    make_template(
        tmp_path, name="three", toml=GOOD_TOML.replace('owner = "root:www-data"', 'owner = "a b:c"')
    )
    with pytest.raises(TemplateError) as exc:
        load_all(tmp_path)
    assert sorted(Path(p.file).parent.name for p in exc.value.problems) == ["three", "two"]


def test_locator_follows_tables_and_arrays_of_tables() -> None:
    text = (
        'name = "x"\n'
        'note = """\nfake = 1\n"""\n'
        "[variables.a]\n"
        'type = "string"\n'
        "choices = [\n  'k = v',\n]\n"
        "[[files]]\n"
        'source = "a"\n'
        "[[files]]\n"
        "target = 'b'\n"
        "[scripts.timeouts]\n"
        '"10-a.sh" = 5\n'
    )
    loc = TomlLocator(text)
    assert loc.line("name") == 1
    assert loc.line("fake") is None
    assert loc.line("variables", "a", "type") == 6
    assert loc.line("variables", "a", "k") == 5  # inside an array: falls back to the table
    assert loc.line("files", 0, "source") == 11
    assert loc.line("files", 1, "target") == 13
    assert loc.line("files", 1, "mode") == 12
    assert loc.line("scripts", "timeouts", "10-a.sh") == 15


# --- variables ---------------------------------------------------------------------------


def test_resolve_variables_types_and_defaults(demo: Template) -> None:
    values = resolve_variables(
        demo, {"port": "9000", "debug": "yes", "flavour": "fancy", "slug": "my-app"}
    )
    assert values["title"] == "Hello"
    assert values["port"] == 9000
    assert values["debug"] is True
    assert values["flavour"] == "fancy"
    assert values["slug"] == "my-app"
    assert list(values) == list(demo.variables)
    assert resolve_variables(demo, {"slug": "a", "port": 1024, "debug": False})["port"] == 1024


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"slug": "a", "colour": "red"}, "unknown variable 'colour' (known: title, port"),
        ({}, "variable 'slug' is required"),
        ({"slug": "a", "port": "eighty"}, "variable 'port' must be an integer, got 'eighty'"),
        ({"slug": "a", "port": "80"}, "variable 'port' must be at least 1024, got 80"),
        ({"slug": "a", "debug": "maybe"}, "variable 'debug' must be a boolean"),
        ({"slug": "a", "flavour": "odd"}, "variable 'flavour' must be one of 'plain', 'fancy'"),
        (
            {"slug": "Not Valid"},
            "variable 'slug' must match the pattern '[a-z][a-z0-9-]*', got 'Not Valid'",
        ),
        ({"slug": "a", "title": "x" * 41}, "variable 'title' may be at most 40 characters long"),
        (
            {"slug": "a", "title": "one\nrequirepass x"},
            "variable 'title' must not contain control characters",
        ),
    ],
)
def test_resolve_variables_rejects_bad_values(
    demo: Template, given: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        resolve_variables(demo, given)
    assert str(exc.value).startswith("template 'demo': ")


def test_all_errors_are_reported_together(demo: Template) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_variables(demo, {"port": "x", "nope": "1"})
    text = str(exc.value)
    assert "'nope'" in text and "'port'" in text and "'slug' is required" in text


def test_generated_secrets_differ_and_use_a_safe_alphabet(demo: Template) -> None:
    first = resolve_variables(demo, {"slug": "a"})["db_password"]
    second = resolve_variables(demo, {"slug": "a"})["db_password"]
    assert isinstance(first, str) and isinstance(second, str)
    assert first != second
    for secret in (first, second):
        assert len(secret) == 32
        assert set(secret) <= set(SECRET_ALPHABET)
        assert re.fullmatch(r"[A-Za-z0-9]{32}", secret)


def test_given_secret_is_kept_and_never_echoed(demo: Template) -> None:
    values = resolve_variables(demo, {"slug": "a", "db_password": "correct horse battery"})
    assert values["db_password"] == "correct horse battery"
    assert secret_values(demo, values) == ["correct horse battery"]
    with pytest.raises(ConfigError) as exc:
        resolve_variables(demo, {"slug": "a", "db_password": "pw\x01withcontrol"})
    assert "db_password" in str(exc.value)
    assert "withcontrol" not in str(exc.value)


# --- rendering and the sandbox -----------------------------------------------------------


def test_render_files_bytes_modes_and_policies(demo: Template) -> None:
    values = resolve_variables(demo, {"slug": "shop", "debug": "true"})
    index, logo = render_files(demo, values)
    assert isinstance(index, FileSpec)  # what the SSH layer uploads, as it is
    assert index.path == "/var/www/html/index.html"
    assert index.content == b"<h1>Hello</h1>\n<p>port 8080 (debug)</p>\n<p>plain/shop</p>\n"
    assert (index.mode, index.owner, index.policy) == (0o644, "root:www-data", FilePolicy.REPLACE)
    assert logo.content == LOGO  # not a template: byte for byte
    assert (logo.mode, logo.owner, logo.policy) == (0o600, "root:root", FilePolicy.DEFAULT)
    assert logo.path == "/var/www/html/logo.bin"


def test_a_declared_file_becomes_the_upload_spec(tmp_path: Path) -> None:
    declared = TemplateFile("app.conf", tmp_path / "app.conf", "/etc/app/app.conf", 0o640,
                            "root:www-data", FilePolicy.BACKUP, template=True)  # fmt: skip
    assert declared.to_spec(b"x = 1\n") == FileSpec(
        "/etc/app/app.conf", b"x = 1\n", 0o640, "root:www-data", FilePolicy.BACKUP
    )
    # the SSH layer's own checks apply (here: a uid beyond 10 digits)
    too_big = TemplateFile("a", tmp_path / "a", "/etc/a", owner="12345678901:root")
    with pytest.raises(ConfigError, match="/etc/a: owner"):
        too_big.to_spec(b"")


@pytest.mark.parametrize("value", ["{{ 7*7 }}", "{% for %}", "{{ ''.__class__ }}", "{# x #}"])
def test_variable_values_are_never_evaluated(demo: Template, value: str) -> None:
    values = resolve_variables(demo, {"slug": "a", "title": value})
    index = render_files(demo, values)[0]
    assert index.content.decode().startswith(f"<h1>{value}</h1>\n")
    assert script_env(demo, values)["TPL_TITLE"] == value


@pytest.mark.parametrize(
    "expression",
    [
        "{{ title.__class__.__mro__ }}",
        "{{ lipsum.__globals__.os }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
        "{% set items = [] %}{{ items.append(1) }}",
    ],
)
def test_templates_cannot_reach_python_internals(tmp_path: Path, expression: str) -> None:
    source = f"<h1>{{{{ title }}}}</h1>\n{expression}\n"
    template = load_template(
        make_template(tmp_path, files={"index.html.j2": source, "logo.bin": LOGO})
    )
    values = resolve_variables(template, {"slug": "a"})
    with pytest.raises(ConfigError, match="refused by the template sandbox") as exc:
        render_files(template, values)
    assert "index.html.j2:2:" in str(exc.value)


def test_render_with_a_missing_variable_is_a_config_error(demo: Template) -> None:
    with pytest.raises(
        ConfigError, match=re.escape("index.html.j2:1: rendering failed: 'title' is undefined")
    ):
        render_files(demo, {"port": 1, "debug": False, "flavour": "x", "slug": "y"})


def test_script_env(demo: Template) -> None:
    values = resolve_variables(demo, {"slug": "shop"})
    env = script_env(demo, values)
    assert env == {
        "TPL_TITLE": "Hello",
        "TPL_PORT": "8080",
        "TPL_DEBUG": "false",
        "TPL_FLAVOUR": "plain",
        "TPL_SLUG": "shop",
        "TPL_DB_PASSWORD": values["db_password"],
    }
    with pytest.raises(ConfigError, match="no value for slug"):
        script_env(demo, {k: v for k, v in values.items() if k != "slug"})


# --- PVE create parameters ---------------------------------------------------------------

NODE = NodeDefaults(node="pve", storage="local-lvm", bridge="vmbr0", template_storage="local")


def test_create_params_dhcp_defaults(demo: Template) -> None:
    params = build_create_params(CreateRequest(hostname="web-1", marker="c0ffee"), demo, NODE)
    assert params == {
        "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        "hostname": "web-1",
        "cores": 1,
        "memory": 256,
        "swap": 512,
        "rootfs": "local-lvm:2",
        "net0": "name=eth0,bridge=vmbr0,ip=dhcp",
        "unprivileged": 1,
        "features": "nesting=1,keyctl=1",
        "tags": "provisioner;test",
        "description": "demo: a test template\n\nlxc-provisioner-id: c0ffee",
    }
    assert parse_marker(str(params["description"])) == "c0ffee"
    assert not any(isinstance(v, bool) for v in params.values())


def test_create_params_static_network_and_overrides(demo: Template) -> None:
    request = CreateRequest(
        hostname="db.example.com",
        vmid=140,
        cores=4,
        memory=2048,
        swap=0,
        disk=16,
        storage="fast",
        network=NetworkConfig(ip="198.18.0.10/24", gateway="198.18.0.1", bridge="vmbr1", vlan=20),
        ssh_public_keys="ssh-ed25519 AAAAC3Nza test@host",
        root_password="s3cret-pw",
        tags=("prod", "test"),
        description="customer database",
    )
    params = build_create_params(request, demo, NODE)
    assert params["net0"] == "name=eth0,bridge=vmbr1,ip=198.18.0.10/24,gw=198.18.0.1,tag=20"
    assert (params["vmid"], params["cores"], params["memory"], params["swap"]) == (140, 4, 2048, 0)
    assert params["rootfs"] == "fast:16"
    assert params["ssh-public-keys"] == "ssh-ed25519 AAAAC3Nza test@host"
    assert params["password"] == "s3cret-pw"
    assert params["tags"] == "provisioner;test;prod"
    assert params["description"] == "customer database"
    assert parse_marker(str(params["description"])) is None


def test_create_params_booleans_are_ints(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace("[resources]", "unprivileged = false\n\n[resources]").replace(
        "keyctl = true", "keyctl = false\nfuse = true"
    )
    template = load_template(make_template(tmp_path, toml=toml))
    params = build_create_params(CreateRequest(hostname="h"), template, NODE)
    assert params["unprivileged"] == 0 and type(params["unprivileged"]) is int
    assert params["features"] == "nesting=1,fuse=1"


def test_create_params_keep_a_full_volid(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace(
        'ostemplate = "debian-12-standard_12.7-1_amd64.tar.zst"',
        'ostemplate = "nas:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"',
    )
    template = load_template(make_template(tmp_path, toml=toml))
    params = build_create_params(CreateRequest(hostname="h"), template, NODE)
    assert params["ostemplate"] == "nas:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"hostname": "bad_host"},
            "hostname: invalid format - value does not look like a valid DNS name",
        ),
        ({"memory": 8}, "memory: value must have a minimum value of 16"),
        ({"cores": 0}, "cores: value must have a minimum value of 1"),
        (
            {"network": NetworkConfig(ip="198.18.0.10")},
            "net0.ip: invalid format - value does not look like a valid ipv4 network configuration",
        ),
        (
            {"network": NetworkConfig(ip="198.18.0.10/24", gateway="198.18.0")},
            "net0.gw: invalid format - value does not look like a valid IPv4 address",
        ),
        (
            {"network": NetworkConfig(gateway="198.18.0.1")},
            "net0: a gateway only applies to a static ip",
        ),
        ({"vmid": 42}, "vmid: invalid format - value does not look like a valid VM ID"),
        (
            {"storage": "bad storage"},
            "rootfs: storage ID 'bad storage' contains illegal characters",
        ),
        ({"tags": ("ok", "not ok!")}, "tags: invalid format - invalid characters in tag"),
        ({"disk": 0}, "rootfs: the disk size must be at least 1 GiB, got 0"),
    ],
)
def test_create_params_invalid_input_names_the_field(
    demo: Template, changes: dict[str, object], message: str
) -> None:
    request = CreateRequest(**{"hostname": "ok", **changes})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_create_params(request, demo, NODE)


def test_create_params_errors_never_contain_the_password(demo: Template) -> None:
    request = CreateRequest(hostname="bad_host", root_password="pw1")
    with pytest.raises(ConfigError) as exc:
        build_create_params(request, demo, NODE)
    text = str(exc.value)
    assert "password: value must be at least 5 characters long" in text
    assert "hostname: invalid format" in text
    assert "pw1" not in text


def test_create_params_give_a_problem_per_field(demo: Template) -> None:
    request = CreateRequest(hostname="bad_host", cores=0, memory=8)
    with pytest.raises(InvalidRequest) as exc:
        build_create_params(request, demo, NODE)
    assert [field_of(p.message) for p in exc.value.problems] == ["cores", "hostname", "memory"]
    assert exc.value.message.startswith("invalid container parameters: cores: ")  # all of them
    assert "hostname: invalid format" in exc.value.message


def test_invalid_request_flattens_and_keeps_every_problem() -> None:
    a, b, c = ConfigError("ip: bad"), ConfigError("gateway: bad"), ConfigError("node: none")
    err = InvalidRequest([a, InvalidRequest([b, c])])
    assert err.problems == [a, b, c] and err.message == "ip: bad; gateway: bad; node: none"
    assert InvalidRequest([a], "one message").message == "one message"
    with pytest.raises(ValueError):
        InvalidRequest([])


@pytest.mark.parametrize(("message", "field"), [
    ("ip: must be 'dhcp'", "ip"),
    ("ssh_public_key: line 2: cut short", "ssh_public_key"),
    ("invalid container parameters: net0.bridge: bad", "bridge"),
    ("invalid container parameters: rootfs: storage ID 'x y' contains illegal", "storage"),
    ("rootfs: the disk size must be at least 1 GiB, got 0", "disk"),
    ("template 'nginx': unknown variable 'nope' (known: a)", "variables.nope"),
    ("template has 2 problems:\n  x", "template"),
    ("something without a field", None),
])  # fmt: skip
def test_field_of_names_what_the_user_would_correct(message: str, field: str | None) -> None:
    assert field_of(message) == field


def test_first_per_field_blames_a_field_once() -> None:
    ip, ip2 = ConfigError("ip: bad"), ConfigError("invalid container parameters: net0.ip: bad")
    variables, variable = (
        ConfigError("variables: not an object"),
        ConfigError("template 'nginx': variable 'x' is required"),
    )
    loose = ConfigError("no field here")
    kept = first_per_field([ip, variables, loose, ip2, variable, loose])
    assert kept == [ip, variables, loose, loose]

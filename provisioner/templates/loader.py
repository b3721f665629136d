"""Loading and validating ``templates_lxc/<name>/``.

Validation is complete and collects every problem of a template (and of a
whole tree) before reporting, each with its file and line: the TOML keys are
located by :class:`~provisioner.templates.toml.TomlLocator`, scripts, package
lists and Jinja2 files by their own lines.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provisioner.templates import checks
from provisioner.templates.model import (
    HOOK_KINDS,
    PACKAGE_KINDS,
    Hooks,
    Packages,
    Problem,
    Script,
    Template,
    TemplateError,
)
from provisioner.templates.report import TEMPLATE_FILE
from provisioner.templates.sections import SectionReader
from provisioner.templates.toml import TomlLocator, toml_error_line

__all__ = ["load_all", "load_template", "validate_template", "validate_tree"]

_TOP_KEYS = (
    "name", "description", "tags", "ostemplate", "unprivileged", "resources", "features",
    "variables", "files", "scripts", "packages", "snapshot", "health", "hooks", "network",
    "mounts", "pool", "onboot", "startup",
)  # fmt: skip
_DEFAULT_SCRIPT_TIMEOUT = 600
_DEFAULT_HOOK_TIMEOUT = 600
HOOKS_DIR = "hooks"


class _Reader(SectionReader):
    """Reads one template directory, collecting problems instead of raising."""

    # --- the template --------------------------------------------------------------------

    def read(self) -> Template | None:
        """The template, or None if it could not be read at all; see ``problems``."""
        template = self._read()
        # Report file by file, top to bottom.
        self.problems.sort(key=lambda p: (p.file, p.line or 0))
        return template

    def _read(self) -> Template | None:
        toml_path = self.dir / TEMPLATE_FILE
        if not toml_path.is_file():
            self.at(self.dir, None, f"{TEMPLATE_FILE} is missing")
            return None
        text = toml_path.read_text(encoding="utf-8", errors="replace")
        self.locator = TomlLocator(text)
        scripts = self.read_scripts()
        packages = self.read_packages()
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line, message = toml_error_line(exc)
            self.at(self.toml_file, line, f"TOML syntax error: {message}")
            return None
        return self.read_toml(data, scripts, packages)

    def read_toml(
        self, data: dict[str, Any], scripts: dict[str, Path], packages: dict[str, list[str]]
    ) -> Template:
        self.unknown_keys(data, (), _TOP_KEYS)
        name = self.require(data, ("name",), str, self.dir.name)
        if not checks.is_template_name(name):
            self.key(("name",), f"name must be lowercase letters, digits and '-', got {name!r}")
        elif name != self.dir.name:
            self.key(("name",), f"name {name!r} must match the directory name {self.dir.name!r}")
        description = self.require(data, ("description",), str, "")
        tags = self.get(data, ("tags",), list, [])
        for i, tag in enumerate(tags):
            if not isinstance(tag, str) or not checks.is_pve_tag(tag):
                self.key(
                    ("tags",), f"tags[{i}] must be a PVE tag ([a-z0-9_][a-z0-9_+.-]*), got {tag!r}"
                )
        ostemplate = self.require(data, ("ostemplate",), str, "")
        if ostemplate and not checks.OSTEMPLATE_RE.match(ostemplate):
            self.key(
                ("ostemplate",),
                "ostemplate must be a volid like "
                f"'local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst' or its file name, got {ostemplate!r}",
            )
        variables = self.read_variables(self.table(data, ("variables",)))
        script_list, script_timeout = self.read_scripts_table(
            self.table(data, ("scripts",)), scripts
        )
        packages_table = self.table(data, ("packages",))
        pool, onboot, startup = self.read_boot(data)
        return Template(
            name=name,
            path=self.dir,
            description=description,
            ostemplate=ostemplate,
            tags=tuple(t for t in tags if isinstance(t, str)),
            unprivileged=self.get(data, ("unprivileged",), bool, True),
            resources=self.read_resources(self.table(data, ("resources",))),
            features=self.read_features(self.table(data, ("features",))),
            network=self.read_network(self.table(data, ("network",))),
            mounts=self.read_mounts(data),
            pool=pool,
            onboot=onboot,
            startup=startup,
            variables=variables,
            files=self.read_files(self.get(data, ("files",), list, []), variables),
            scripts=script_list,
            script_timeout=script_timeout,
            packages=self.read_packages_table(packages_table, packages),
            snapshot=self.read_snapshot(data),
            health=self.read_health(data),
            hooks=self.read_hooks(self.table(data, ("hooks",))),
        )

    # --- scripts and packages ---------------------------------------------------------------

    def read_scripts(self) -> dict[str, Path]:
        scripts_dir = self.dir / "scripts"
        found: dict[str, Path] = {}
        if not scripts_dir.is_dir():
            return found
        for path in sorted(scripts_dir.iterdir()):
            if not checks.SCRIPT_NAME_RE.match(path.name):
                self.at(
                    path,
                    None,
                    "script names must look like NN-name.sh (two digits, '-', a lowercase name, '.sh')",
                )
                continue
            problem = _script_problem(path, "a script")
            if problem:
                self.at(path, *problem)
            found[path.name] = path
        return found

    def read_scripts_table(
        self, table: dict[str, Any], scripts: dict[str, Path]
    ) -> tuple[tuple[Script, ...], int]:
        self.unknown_keys(table, ("scripts",), ("timeout", "timeouts"))
        default = self.bounded_int(table, ("scripts", "timeout"), _DEFAULT_SCRIPT_TIMEOUT, 1, 86400)
        timeouts = self.table(table, ("scripts", "timeouts"))
        for name in timeouts:
            if name not in scripts:
                self.key(
                    ("scripts", "timeouts", name),
                    f"scripts.timeouts names {name!r}, which is not in scripts/",
                )
        ordered = sorted(scripts.items(), key=lambda item: (int(item[0][:2]), item[0]))
        return tuple(
            Script(
                name,
                path,
                self.bounded_int(timeouts, ("scripts", "timeouts", name), default, 1, 86400),
            )
            for name, path in ordered
        ), default

    # --- data hooks ----------------------------------------------------------------------

    def read_hooks(self, table: dict[str, Any]) -> Hooks:
        """``[hooks]``: each kind names a bash script directly under hooks/,
        checked like the scripts; every file there must be declared."""
        hooks_dir = self.dir / HOOKS_DIR
        self.unknown_keys(table, ("hooks",), (*HOOK_KINDS, "timeout"))
        timeout = self.bounded_int(table, ("hooks", "timeout"), _DEFAULT_HOOK_TIMEOUT, 1, 86400)
        declared: set[str] = set()
        found: dict[str, Script] = {}
        for kind in HOOK_KINDS:
            name = self.opt(table, ("hooks", kind), str)
            if name is None:
                continue
            declared.add(name)  # even if broken: one mistake, one problem
            if not checks.HOOK_NAME_RE.match(name):
                self.key(
                    ("hooks", kind),
                    f"hooks.{kind} must be the name of a file directly under hooks/ like "
                    f"'{kind}.sh' (lowercase letters, digits, '.', '_', '-'; ending in .sh), "
                    f"got {name!r}",
                )
                continue
            path = hooks_dir / name
            if not path.exists():
                self.key(("hooks", kind), f"hooks.{kind} names {name!r}, which is not in hooks/")
                continue
            problem = _script_problem(path, "a hook")
            if problem:
                self.at(path, *problem)
            found[kind] = Script(name, path, timeout)
        for present, missing in (("export", "import"), ("import", "export")):
            if present in table and missing not in table:
                self.key(
                    ("hooks", present),
                    f"hooks.{present} needs hooks.{missing} too: a template is either "
                    "syncable (export and import) or not (neither)",
                )
        self.undeclared_hooks(hooks_dir, declared)
        return Hooks(
            clone=found.get("clone"),
            export=found.get("export"),
            import_=found.get("import"),
            rewrite=found.get("rewrite"),
            anonymise=found.get("anonymise"),
        )

    def undeclared_hooks(self, hooks_dir: Path, declared: set[str]) -> None:
        if hooks_dir.exists() and not hooks_dir.is_dir():
            self.at(hooks_dir, None, "hooks must be a directory of the scripts [hooks] names")
            return
        if not hooks_dir.is_dir():
            return
        for path in sorted(p for p in hooks_dir.rglob("*") if not p.is_dir()):
            if path.relative_to(hooks_dir).as_posix() not in declared:
                self.at(path, None, f"not declared in {TEMPLATE_FILE} ([hooks])")

    # --- packages ----------------------------------------------------------------------------

    def read_packages(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {kind: [] for kind in PACKAGE_KINDS}
        packages_dir = self.dir / "packages"
        if not packages_dir.is_dir():
            return found
        for path in sorted(packages_dir.iterdir()):
            kind = path.suffix.lstrip(".")
            if kind not in PACKAGE_KINDS or not path.is_file():
                self.at(path, None, "package lists must be files named *.apt, *.pip or *.npm")
                continue
            names, problems = checks.package_lines(
                kind, path.read_text(encoding="utf-8", errors="replace")
            )
            found[kind].extend(names)
            for line, message in problems:
                self.at(path, line, message)
        return found

    def read_packages_table(self, table: dict[str, Any], found: dict[str, list[str]]) -> Packages:
        self.unknown_keys(table, ("packages",), ("pip_venv",))
        venv = self.opt(table, ("packages", "pip_venv"), str)
        if venv is not None and (why := checks.check_absolute_path(venv)):
            self.key(("packages", "pip_venv"), f"packages.pip_venv {why}, got {venv!r}")
            venv = None
        return Packages(
            apt=tuple(found["apt"]), pip=tuple(found["pip"]), npm=tuple(found["npm"]), pip_venv=venv
        )


def _script_problem(path: Path, what: str) -> tuple[int | None, str] | None:
    # A well-named script with bad content still counts as present, so
    # scripts.timeouts does not report it a second time.
    if not path.is_file():
        return None, f"{what} must be a regular file"
    try:
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    except UnicodeDecodeError:
        return None, f"{what} must be UTF-8 text"
    if not first.startswith("#!"):
        return 1, f"{what} must start with a shebang line such as '#!/bin/bash'"
    return None


def validate_template(path: str | Path) -> list[Problem]:
    """Every problem of one template directory (empty if it is valid)."""
    reader = _Reader(Path(path))
    reader.read()
    return reader.problems


def load_template(path: str | Path) -> Template:
    """Load and fully validate one template directory.

    Args:
        path: the template's directory (``templates_lxc/nginx``).

    Raises:
        TemplateError: (a ConfigError) listing every problem with file and line.
    """
    reader = _Reader(Path(path))
    template = reader.read()
    if reader.problems or template is None:
        raise TemplateError(reader.problems, subject=f"template {Path(path).name!r}")
    return template


def _template_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _walk(
    root: str | Path, on_template: Callable[[_Reader, Template | None], None]
) -> list[Problem]:
    root = Path(root)
    if not root.is_dir():
        return [Problem(str(root), None, "template directory does not exist")]
    problems: list[Problem] = []
    for directory in _template_dirs(root):
        reader = _Reader(directory)
        template = reader.read()
        problems.extend(reader.problems)
        on_template(reader, template)
    return problems


def validate_tree(root: str | Path) -> list[Problem]:
    """Every problem of every template under ``root`` (one directory each)."""
    return _walk(root, lambda _reader, _template: None)


def load_all(root: str | Path) -> dict[str, Template]:
    """Load every template under ``root``, keyed by name.

    Raises:
        TemplateError: listing every problem of every template, if any.
    """
    templates: dict[str, Template] = {}

    def keep(reader: _Reader, template: Template | None) -> None:
        if template is not None and not reader.problems:
            templates[template.name] = template

    problems = _walk(root, keep)
    if problems:
        raise TemplateError(problems, subject=f"templates in {root}")
    return templates

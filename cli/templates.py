"""``provisioner templates``: the container templates (``validate``, ``ls``,
``show``), read from the configured templates directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.output import echo_json, print_fields, print_table
from cli.runtime import EXIT_FAILURE, BadInput, NotFound, Runtime, pass_runtime
from provisioner.errors import ConfigError
from provisioner.views import template_json, template_listing


@click.group("templates")
def templates() -> None:
    """Container templates."""


def templates_dir(rt: Runtime) -> Path:
    """The configured templates directory, which must exist."""
    root = rt.settings.templates_dir
    if not root.is_dir():
        raise BadInput(f"the templates directory {root} does not exist or is not a directory "
                       "(PROVISIONER_TEMPLATES_DIR)")  # fmt: skip
    return root


@templates.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@pass_runtime
def templates_validate(rt: Runtime, paths: tuple[Path, ...]) -> None:
    """Check templates completely; every problem with file and line.

    PATHS are template directories or directories of templates (default: the
    configured templates directory).  Exits 1 when anything is wrong.
    """
    from provisioner.templates.loader import validate_template, validate_tree

    roots = list(paths) or [templates_dir(rt)]  # given paths need no configuration
    problems = []
    checked = 0
    for root in roots:
        if (root / "template.toml").exists():
            problems += validate_template(root)
            checked += 1
        else:
            problems += validate_tree(root)
            checked += sum(1 for p in root.iterdir() if (p / "template.toml").exists())
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {checked} template(s)", err=True)
        click.get_current_context().exit(EXIT_FAILURE)
    click.echo(f"{checked} template(s) OK")


@templates.command("ls")
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"templates": [...], "invalid": [...]}.'
)
@pass_runtime
def templates_ls(rt: Runtime, as_json: bool) -> None:
    """List the templates of the configured directory (broken ones apart)."""
    found, invalid = template_listing(templates_dir(rt))
    if as_json:
        echo_json({"templates": found, "invalid": invalid})
        return
    print_table(("NAME", "CORES", "MEMORY", "DISK", "VARIABLES", "DESCRIPTION"), [
        (t["name"], str(t["resources"]["cores"]), f"{t['resources']['memory']} MiB",
         f"{t['resources']['disk']} GiB", ", ".join(v["name"] for v in t["variables"]) or "-",
         t["description"]) for t in found])  # fmt: skip
    for bad in invalid:
        click.echo(f"warning: template {bad['name']} is invalid ({len(bad['problems'])} "
                   "problem(s)): provisioner templates validate", err=True)  # fmt: skip


@templates.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the template as JSON.")
@pass_runtime
def templates_show(rt: Runtime, name: str, as_json: bool) -> None:
    """A template's variables, resources, files, scripts, data hooks and packages."""
    from provisioner.request_checks import TEMPLATE_NAME
    from provisioner.requests import load_named_template
    from provisioner.templates.model import TemplateError

    settings = rt.settings
    if not TEMPLATE_NAME.fullmatch(name):
        raise NotFound(f"no template named {name!r} in {settings.templates_dir}")
    try:
        t = template_json(load_named_template(settings, name), detail=True)
    except TemplateError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise BadInput(f"template {name!r} is invalid: {len(exc.problems)} problem(s)") from None
    except ConfigError as exc:
        raise NotFound(exc.message.removeprefix("template: ")) from None
    if as_json:
        echo_json(t)
        return
    r = t["resources"]
    features = ", ".join(k for k, v in t["features"].items() if v) or "none"
    print_fields([
        ("name", t["name"]), ("description", t["description"]),
        ("tags", ", ".join(t["tags"]) or "-"), ("ostemplate", t["ostemplate"]),
        ("unprivileged", "yes" if t["unprivileged"] else "no"),
        ("resources", f"{r['cores']} cores, {r['memory']} MiB memory, {r['swap']} MiB swap, "
                      f"{r['disk']} GiB disk"), ("features", features),
        *(("file", f"{f['target']} {f['mode']} {f['owner']} {f['policy']}"
           f"{' (rendered)' if f['template'] else ''}") for f in t["files"]),
        *(("script", f"{s['name']} (timeout {s['timeout']}s)") for s in t["scripts"]),
        ("hooks", ", ".join(f"{kind} {script}" for kind, script in t["hooks"].items())
         + (" (syncable)" if t["syncable"] else "") or "-"),
        *((f"packages {kind}", " ".join(names)) for kind, names in t["packages"].items() if names),
        ("snapshot", t["snapshot"] or "-"),
        ("health", f"{t['health']['type']} port {t['health']['port']}" if t["health"] else "-"),
        *([("network", " ".join(k if v is True else f"{k}={v}"
                                for k, v in t["network"].items() if v))]
          if any(t["network"].values()) else []),
        *(("volume", f"{m['path']} {m['size']} GiB" + ("" if m["backup"] else " (no backup)"))
          for m in t["mounts"]),
        *((key, {True: "yes", False: "no"}.get(value, str(value)))
          for key, value in t["boot"].items() if value is not None),
    ])  # fmt: skip
    if t["variables"]:
        click.echo("")
        print_table(("VARIABLE", "TYPE", "DEFAULT", "RULES", "DESCRIPTION"), [
            (v["name"], v["type"] + (" (secret, new in a clone)" if v["regenerate"] else
                                     " (secret)" if v["secret"] else ""),
             "(generated)" if v["secret"] else ("-" if v["default"] is None else str(v["default"])),
             _rules(v), v["description"]) for v in t["variables"]])  # fmt: skip
        click.echo(f"set them with: provisioner create -t {name} --var NAME=VALUE ...")


def _rules(v: dict[str, Any]) -> str:
    rules = ["required"] if v["required"] else []
    if v["choices"]:
        rules.append("one of " + "|".join(v["choices"]))
    for key, text in (("min", ">="), ("max", "<="), ("min_length", "length >="),
                      ("max_length", "length <=")):  # fmt: skip
        if v[key] is not None:
            rules.append(f"{text} {v[key]}")
    if v["pattern"]:
        rules.append(f"matches {v['pattern']}")
    return ", ".join(rules) or "-"


COMMANDS: list[click.Command] = [templates]

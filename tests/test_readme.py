"""The documentation is true: the README and the pages under docs/.

Every `provisioner ...` line they show names commands and options that
exist (parsed by the CLI itself), and so does every `pvesim ...` and
`bench/...` line; every setting and every command is documented; every
`scripts/...`, file, directory and module they name exists; every link
resolves, and no page names a path outside the repository.  What the
commands do is run by tests/test_readme_run.py, the tests of each part and
`scripts/demo --smoke`."""

from __future__ import annotations

import dataclasses
import importlib
import re
import shlex
import textwrap
from pathlib import Path

import click
import pytest

from cli.main import main
from provisioner.config import Settings, env_var
from pvesim.cli import main as pvesim_main
from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = {path: path.read_text() for path in [README, *sorted((ROOT / "docs").glob("*.md"))]}
FENCED = re.compile(r"^ *```.*?^ *```", re.M | re.S)


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def section(heading: str) -> str:
    """The text under ``heading`` (any level) up to the next heading, in
    whichever document has it: exactly one may."""
    found = []
    for text in DOCS.values():
        m = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, re.M | re.S)
        if m:
            found.append(m.group(1))
    assert len(found) == 1, f"{len(found)} sections {heading!r} in README.md and docs/"
    return found[0]


def sh_blocks(text: str) -> list[str]:
    """The ```sh blocks of a text, dedented (a block may sit in a list)."""
    return [textwrap.dedent(block) for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def shell_lines(block: str) -> list[str]:
    """A block's commands, continuation lines joined."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def all_shell_lines() -> list[str]:
    return [line for text in DOCS.values() for block in sh_blocks(text)
            for line in shell_lines(block)]  # fmt: skip


def _commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at |, &&, ;), comments and
    redirections dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    redirect = False
    for token in lexer:
        if redirect:
            redirect = False
        elif token and set(token) <= set("<>"):
            redirect = True  # the next word is the file
        elif token and set(token) <= set("|&;"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def _tool_commands(tool: str) -> list[list[str]]:
    """The arguments of every ``tool`` command of the shell blocks (also
    after sudo, with a path, or inside ``sh -c '... exec tool ...'``)."""
    found = []
    for line in all_shell_lines():
        for words in _commands(line):
            if words[0] == "sudo":
                words = words[1:]
            if not words:
                continue
            if words[0] == tool or words[0].endswith(f"/bin/{tool}"):
                found.append(words[1:])
            elif words[0] == "sh" and f"{tool} " in line and "-c" in words:
                script = words[words.index("-c") + 1]
                found.extend(w[1:] for w in _commands(script.split("exec ", 1)[-1])
                             if w[0].endswith(f"/bin/{tool}") or w[0] == tool)  # fmt: skip
    return found


COMMANDS = _tool_commands("provisioner")


def _leaves(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    ctx = click.Context(group)
    out: list[tuple[str, ...]] = []
    for sub in group.list_commands(ctx):
        command = group.get_command(ctx, sub)
        assert command is not None
        if isinstance(command, click.Group):
            out.extend(_leaves(command, (*path, sub)))
        else:
            out.append((*path, sub))
    return out


def _resolve(group: click.Group, words: list[str]) -> tuple[click.Command, list[str]]:
    """The command the leading words name, and the words left for it."""
    command: click.Command = group
    rest = list(words)
    ctx = click.Context(group)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"no command {rest[0]!r} in: {' '.join(words)}"
        command, rest = sub, rest[1:]
    return command, rest


# -- the commands shown -----------------------------------------------------------


def test_the_docs_show_the_cli() -> None:
    assert len(COMMANDS) >= 20
    used = {args[0] for args in COMMANDS}
    assert {"create", "ls", "show", "logs", "retry", "destroy", "nodes", "templates", "user",
            "token", "keys"} <= used  # fmt: skip


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_each_provisioner_command_parses(args: list[str]) -> None:
    command: click.Command = main
    ctx = main.make_context("provisioner", [], resilient_parsing=True)
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"no command {rest[0]!r} in: provisioner {' '.join(args)}"
        command, rest = sub, rest[1:]
        ctx = command.make_context(command.name or "", [], parent=ctx, resilient_parsing=True)
    # unknown options, extra arguments and missing required ones fail; a
    # value may be refused (the examples name the reader's files and hosts)
    try:
        command.make_context(command.name or "", rest, parent=ctx.parent)
    except click.MissingParameter:
        raise
    except click.BadParameter:
        pass


@pytest.mark.parametrize("args", [["create", "--bogus", "1"], ["nodes", "frob"],
                                  ["ls", "extra"], ["create", "-H", "x"]])  # fmt: skip
def test_the_check_catches_stale_commands(args: list[str]) -> None:
    with pytest.raises((click.UsageError, AssertionError)):
        test_each_provisioner_command_parses(args)


def test_each_pvesim_command_names_real_options() -> None:
    """`pvesim` lines name real commands and options (the fault examples
    write alternatives as `[--a | --b]` and `list|clear`: no full parse)."""
    lines = [(line, words[1:]) for line in all_shell_lines() for words in _commands(line)
             if words[words[0] == "sudo"].endswith("pvesim")]  # fmt: skip
    assert len(lines) >= 10
    for line, words in lines:
        args = words[1:] if words[0].endswith("pvesim") else words  # after sudo
        command, _ = _resolve(pvesim_main, args)
        assert not isinstance(command, click.Group), line
        known = {opt for p in command.params for opt in p.opts}
        unknown = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", line)) - known
        assert not unknown, f"{line}: no option {sorted(unknown)}"


def test_each_bench_command_names_real_options() -> None:
    lines = [line for line in all_shell_lines() if "bench/" in line]
    named = {m for line in lines for m in re.findall(r"bench/(\w+\.py)", line)}
    assert named == {p.name for p in (ROOT / "bench").glob("*.py")}, (
        "every benchmark, how to run it"
    )
    for line in lines:
        (script,) = re.findall(r"bench/\w+\.py", line)
        source = (ROOT / script).read_text()
        known = set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", source))
        unknown = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", line)) - known - {"--help"}
        assert not unknown, f"{line}: no option {sorted(unknown)}"


def test_the_scripts_it_names_exist() -> None:
    text = "\n".join(DOCS.values())
    named = set(re.findall(r"(?<![\w/.])scripts/([a-z][\w-]*)", text))
    assert {"demo", "test", "setup", "install-systemd"} <= named
    for script in named:
        path = ROOT / "scripts" / script
        assert path.is_file() and path.stat().st_mode & 0o111, path
    assert (ROOT / "Procfile").is_file() and (ROOT / ".ci" / "run").is_file()
    assert (ROOT / "docs" / "progress.png").is_file()
    assert "](docs/progress.png)" in DOCS[README]


# -- what is documented -----------------------------------------------------------

# Variables read outside Settings, by the CLI and the simulator.
OTHER_VARIABLES = {"PROVISIONER_CONFIG", "PROVISIONER_DEBUG", "PVESIM_CACHE_DIR"}
# Variables of the test and bench harness (docs/development.md, docs/benchmarks.md).
HARNESS_VARIABLES = {"PROVISIONER_TESTS_NO_SKIP", "PVESIM_INFO", "PVESIM_STATE_DIR"}


def settings_variables() -> set[str]:
    return {env_var(f.name) for f in dataclasses.fields(Settings) if f.name != "config_file"}


def test_every_setting_is_documented_in_the_configuration_page() -> None:
    page = DOCS[ROOT / "docs/configuration.md"]
    rows = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", page, re.M))
    missing = (settings_variables() | OTHER_VARIABLES) - rows
    assert not missing, f"not in docs/configuration.md's table: {sorted(missing)}"
    stale = rows - settings_variables() - OTHER_VARIABLES
    assert not stale, f"docs/configuration.md documents what does not exist: {sorted(stale)}"


def test_no_page_names_an_unknown_variable() -> None:
    known = settings_variables() | OTHER_VARIABLES | HARNESS_VARIABLES
    for path, text in DOCS.items():
        for var in set(re.findall(r"\b(?:PROVISIONER|PVESIM)_[A-Z0-9_]*", text)):
            if var.endswith("_"):  # a family: PROVISIONER_RETRY_*
                assert any(k.startswith(var) for k in known), f"{name(path)}: {var}*"
            else:
                assert var in known, f"{name(path)} names {var}, which nothing reads"


def test_every_command_is_in_the_reference() -> None:
    page = DOCS[ROOT / "docs/cli.md"]
    for path in _leaves(main):
        assert f"`provisioner {' '.join(path)}`" in page, f"provisioner {' '.join(path)}"
    page = DOCS[ROOT / "docs/pvesim.md"]
    for path in _leaves(pvesim_main):
        assert f"`pvesim {' '.join(path)}`" in page, f"pvesim {' '.join(path)}"


# -- what the pages name ----------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", FENCED.sub("", text), re.M)}


def _links() -> list[tuple[Path, str]]:
    return [(path, target) for path, text in DOCS.items()
            for target in LINK.findall(FENCED.sub("", text))]  # fmt: skip


def test_every_link_resolves_inside_the_repository() -> None:
    links = _links()
    assert len(links) >= 30
    for path, target in links:
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.is_relative_to(ROOT), f"{name(path)} links outside the repository: {target}"
        assert dest.exists(), f"{name(path)}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(dest.read_text()), f"{name(path)}: no heading #{anchor}"


def test_the_readme_links_every_page() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for p, t in _links() if p == README}
    for page in DOCS:
        assert page == README or page in linked, f"the README does not link {name(page)}"


def test_no_page_names_a_path_outside_the_repository() -> None:
    for path, text in DOCS.items():
        for outside in (r"(?<!\.)\.\./", "/work/", "/tmp/dev", "DESIGN.md", "STYLE.md", "shared/"):
            assert not re.search(outside, text), (
                f"{name(path)} names {outside!r}, outside the repository"
            )


TOP = ("provisioner", "cli", "pipeline", "web", "pvesim", "tests", "bench", "scripts", "docs",
       "templates_lxc")  # fmt: skip
CODE = re.compile(r"`([^`\n]+)`")


def _code_spans() -> list[tuple[Path, str]]:
    return [(path, span) for path, text in DOCS.items()
            for span in CODE.findall(FENCED.sub("", text))]  # fmt: skip


def test_the_paths_it_names_exist() -> None:
    """`provisioner/pve/client.py`, `tests/demo/test_demo.py`: a page that
    names a moved or removed file fails here."""
    checked = 0
    for path, span in _code_spans():
        if not re.fullmatch(rf"(?:{'|'.join(TOP)})/[\w./-]*", span) or "..." in span:
            continue
        if re.search(r"[A-Z]{2}", span):  # a placeholder: a template's scripts/NN-name.sh
            continue
        assert (ROOT / span).exists(), f"{name(path)} names {span}, which does not exist"
        checked += 1
    assert checked >= 40


def test_the_modules_it_names_exist() -> None:
    """`provisioner.events.EventReader`, `pipeline.job.run`: modules and
    their attributes, as named."""
    checked = 0
    for path, span in _code_spans():
        if not re.fullmatch(r"(?:provisioner|cli|pipeline|web|pvesim)(?:\.\w+)+", span):
            continue
        if span.rsplit(".", 1)[1] in ("py", "json", "target", "service"):  # files, units
            continue
        parts = span.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj: object = importlib.import_module(".".join(parts[:i]))
            except ModuleNotFoundError:
                continue
            for attr in parts[i:]:
                assert hasattr(obj, attr), f"{name(path)} names {span}: no {attr}"
                obj = getattr(obj, attr)
            break
        else:
            raise AssertionError(f"{name(path)} names {span}, which does not exist")
        checked += 1
    assert checked >= 10

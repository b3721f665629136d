"""The README's commands are real: every `provisioner ...` line names
commands and options that exist (parsed by the CLI itself), and every
`scripts/...` it mentions is there and executable.  What they do is run by
the tests of each part and by `scripts/demo --smoke`."""

from __future__ import annotations

import re
import shlex

import click
import pytest

from cli.main import main
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _shell_lines() -> list[str]:
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        lines.extend(block.replace("\\\n", " ").splitlines())
    return [line for line in lines if line.strip()]


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


def _provisioner_commands() -> list[list[str]]:
    found = []
    for line in _shell_lines():
        for words in _commands(line):
            if words[0] == "provisioner" or words[0].endswith("/bin/provisioner"):
                found.append(words[1:])
            elif words[:2] == ["sudo", "provisioner"]:
                found.append(words[2:])
            elif words[0] in ("sh", "sudo") and "provisioner " in line and "-c" in words:
                script = words[words.index("-c") + 1]
                found.extend(w[1:] for w in _commands(script.split("exec ", 1)[-1])
                             if w[0].endswith("/bin/provisioner") or w[0] == "provisioner")  # fmt: skip
    return found


COMMANDS = _provisioner_commands()


def test_the_readme_shows_the_cli() -> None:
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


def test_the_scripts_it_names_exist() -> None:
    named = set(re.findall(r"(?<![\w/.])scripts/([a-z][\w-]*)", README))
    assert {"demo", "test", "setup", "install-systemd"} <= named
    for name in named:
        path = ROOT / "scripts" / name
        assert path.is_file() and path.stat().st_mode & 0o111, path
    assert (ROOT / "Procfile").is_file() and (ROOT / ".ci" / "run").is_file()
    assert (ROOT / "docs" / "progress.png").is_file()

"""Phase 4, run scripts: install the template's packages, then run its
scripts in order, every output line streamed as a log event, each with its
timeout.  Every finished step is recorded, so a retry resumes at the script
that failed."""

from __future__ import annotations

import shlex

from pipeline.clone import source_of
from pipeline.context import Context
from provisioner.errors import CommandFailedError
from provisioner.ssh.files import FilePolicy, FileSpec
from provisioner.stored_request import StoredRequest
from provisioner.templates.model import Template
from provisioner.templates.render import hook_env, script_env

SCRIPT_DIR = "/var/lib/lxc-provisioner/scripts"
HOOK_DIR = "/var/lib/lxc-provisioner/hooks"  # the template's hooks (deploy uploads them)
PACKAGES_STEP = "packages"


def package_commands(ctx: Context) -> list[str]:
    """Shell commands installing the template's packages (apt, pip, npm)."""
    pkgs = ctx.template.packages
    commands = []
    if pkgs.apt:
        commands.append(
            "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && "
            "apt-get install -y -q --no-install-recommends " + shlex.join(pkgs.apt))  # fmt: skip
    if pkgs.pip:
        if pkgs.pip_venv:
            venv = shlex.quote(pkgs.pip_venv)
            commands.append(f"test -x {venv}/bin/pip || python3 -m venv {venv}; "
                            f"{venv}/bin/pip install -q " + shlex.join(pkgs.pip))  # fmt: skip
        else:
            commands.append("python3 -m pip install -q --break-system-packages "
                            + shlex.join(pkgs.pip))  # fmt: skip
    if pkgs.npm:
        commands.append("npm install -g --no-fund --no-audit " + shlex.join(pkgs.npm))
    return commands


def script_specs(ctx: Context) -> list[FileSpec]:
    """The template's scripts and hooks as files for the container (uploaded
    with the deploy phase's files)."""
    return [FileSpec(path=f"{SCRIPT_DIR}/{s.name}", content=s.path.read_bytes(), mode=0o700,
                     owner="root:root", policy=FilePolicy.REPLACE)
            for s in ctx.template.scripts] + hook_specs(ctx.template)  # fmt: skip


def hook_specs(template: Template) -> list[FileSpec]:
    """The template's data hooks as files for the container (``HOOK_DIR``)."""
    return [FileSpec(path=f"{HOOK_DIR}/{h.name}", content=h.path.read_bytes(), mode=0o700,
                     owner="root:root", policy=FilePolicy.REPLACE)
            for h in template.hooks.declared().values()]  # fmt: skip


async def _run_step(ctx: Context, name: str, command: str, timeout: float,
                    env: dict[str, str]) -> None:  # fmt: skip
    session = await ctx.ssh()

    def on_line(stream: str, line: str) -> None:
        ctx.log(line, stream=stream, script=name)

    result = await session.run(command, on_line=on_line, timeout=timeout, env=env, name=name)
    if result.exit_status != 0:
        tail = [line for _stream, line in result.tail][-20:]
        raise CommandFailedError(
            f"script {name} failed with exit code {result.exit_status}",
            exit_status=result.exit_status, output_tail=tail,
            hint=f"fix the script or the container, then retry: the run resumes at {name}",
        )  # fmt: skip


def _clone_steps(ctx: Context) -> list[tuple[str, str, float]]:
    """A clone has the source's packages and its scripts' results: it runs
    only the template's ``clone`` hook, if there is one."""
    hook = ctx.template.hooks.clone
    if hook is None:
        return []
    return [(f"hooks/{hook.name}", f"cd /root && exec bash {HOOK_DIR}/{hook.name}",
             float(hook.timeout))]  # fmt: skip


def _clone_env(ctx: Context) -> dict[str, str]:
    """The clone hook's environment: the variables and PROV_* (its source the peer)."""
    ct, source = ctx.container(), source_of(ctx)
    return hook_env(ctx.template, ctx.variables, hostname=ct.hostname, ip=ct.ip or "",
                    peer_hostname=source.hostname, peer_ip=source.ip or "",
                    environment=ct.environment or "")  # fmt: skip


async def run(ctx: Context) -> None:
    done = set(ctx.container().finished_scripts)
    env = script_env(ctx.template, ctx.variables)
    if StoredRequest.from_dict(ctx.container().request).clone is not None:
        hooks = _clone_steps(ctx)
        await _run_steps(ctx, hooks, done, _clone_env(ctx) if hooks else env)
        return
    steps: list[tuple[str, str, float]] = []
    commands = package_commands(ctx)
    if commands:
        steps.append((PACKAGES_STEP, " && ".join(f"( {c} )" for c in commands),
                      float(ctx.template.script_timeout)))  # fmt: skip
    if not ctx.scripts_uploaded:
        # resuming in this phase: the template's scripts may have been fixed
        # since; identical ones are skipped by checksum
        await (await ctx.ssh()).upload(script_specs(ctx))
    for script in sorted(ctx.template.scripts, key=lambda s: (s.order, s.name)):
        steps.append((script.name, f"cd /root && exec bash {SCRIPT_DIR}/{script.name}",
                      float(script.timeout)))  # fmt: skip
    await _run_steps(ctx, steps, done, env)


async def _run_steps(ctx: Context, steps: list[tuple[str, str, float]], done: set[str],
                     env: dict[str, str]) -> None:  # fmt: skip
    total = len(steps) or 1
    for index, (name, command, timeout) in enumerate(steps):
        if name in done:
            ctx.step(f"{name} already done (earlier attempt)", (index + 1) / total)
            continue
        ctx.step(f"running {name}" if name != PACKAGES_STEP else "installing packages",
                 index / total)  # fmt: skip
        try:
            await _run_step(ctx, name, command, timeout, env)
        except CommandFailedError as exc:
            if exc.timed_out:
                raise CommandFailedError(
                    f"script {name} timed out after {timeout:.0f}s and was killed",
                    exit_status=None, output_tail=exc.output_tail, timed_out=True,
                    hint="raise the script's timeout in template.toml or make it faster",
                ) from exc  # fmt: skip
            raise
        ctx.update(finished_scripts=[*ctx.container().finished_scripts, name])
        ctx.step(f"{name} finished", (index + 1) / total)
    if not steps:
        ctx.step("no packages or scripts", 1.0)

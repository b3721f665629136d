"""A container's history and what can be done to it: ``logs`` and the
actions ``start``, ``stop``, ``reboot``, ``destroy``, ``retry``, ``resync``.

An action is allowed by the container's lifecycle as in the REST API
(``provisioner.request_checks.ACTIONS``), then queued; ``--follow`` waits
for its result.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy import select

from cli.containers import find_container, label
from cli.follow import follow_options
from cli.output import echo_err, echo_json, print_event_line, short_id, stdout_console
from cli.runtime import BadInput, CliFailure, Conflict, Runtime, pass_runtime
from provisioner.events import MAX_SEQ
from provisioner.models import Container, ContainerEvent
from provisioner.request_checks import ACTIONS, ActionRefused, check_action

if TYPE_CHECKING:
    from provisioner.events import Event


# -- logs --------------------------------------------------------------------------


def _stored_events(rt: Runtime, cid: str, after: int) -> Iterator[Event]:
    """Every stored event after ``after``, across runs (the reader stops at
    each terminal event)."""
    from provisioner.events import EventReader

    last = after
    while True:
        batch = 0
        for event in EventReader(rt.redis, rt.factory, cid).events(last, follow=False):
            yield event
            last = event.seq
            batch += 1
        if not batch:
            return


def _last_terminal(rt: Runtime, cid: str) -> tuple[str, str] | None:
    from provisioner.events import TERMINAL_TYPES

    with rt.factory() as session:
        row = session.execute(
            select(ContainerEvent.type, ContainerEvent.message)
            .where(ContainerEvent.container_id == cid, ContainerEvent.type.in_(TERMINAL_TYPES))
            .order_by(ContainerEvent.seq.desc()).limit(1)).first()  # fmt: skip
    return (row[0], row[1]) if row else None


@click.command("logs")
@click.argument("ref", metavar="ID")
@click.option("--follow", "-f", is_flag=True,
              help="Then stream live events until the current run ends.")  # fmt: skip
@click.option("--after", type=click.IntRange(min=0, max=MAX_SEQ), default=0, metavar="SEQ",
              help="Only events after this seq.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line (JSON Lines).")
@click.option("--timeout", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
              help="With --follow: give up after SECONDS (exit 6).")  # fmt: skip
@pass_runtime
def logs(rt: Runtime, ref: str, follow: bool, after: int, as_json: bool,
         timeout: float | None) -> None:  # fmt: skip
    """A container's events, one a line (timestamp, source, message).

    Exits 1 when the latest run ended in error.
    """
    from cli.follow import follow_run, run_to_follow

    with rt.factory() as session:
        ct = find_container(session, ref)
        cid, name = ct.id, label(ct)
    console = stdout_console()
    last = after
    for event in _stored_events(rt, cid, after):
        if as_json:
            echo_json(event.as_dict(), lines=True)
        else:
            print_event_line(console, event)
        last = event.seq
    if follow and run_to_follow(rt, cid, last):
        follow_run(rt, cid, None, after=last, as_json=as_json, timeout=timeout, text_log=True)
        return
    ended = _last_terminal(rt, cid)
    if ended is not None and ended[0] == "error":
        raise CliFailure(f"the latest run of {name} ended in error: {ended[1]}")


# -- actions -----------------------------------------------------------------------


def _confirm_destroy(ct: Container, yes: bool) -> None:
    if yes:
        return
    where = f"CT {ct.vmid} on node {ct.node.name}" if ct.vmid else f"on node {ct.node.name}"
    if not sys.stdin.isatty():
        raise BadInput(f"destroying {label(ct)} {where} needs confirmation: pass --yes")
    if not click.confirm(f"Destroy {label(ct)} {where}? It is deleted from Proxmox VE",
                         default=False, err=True):  # fmt: skip
        raise CliFailure(f"{label(ct)} was not destroyed")


def queue_action(rt: Runtime, ref: str, action: str, *, follow: bool, as_json: bool,
                 timeout: float | None, params: dict[str, Any] | None = None,
                 confirm: Callable[[Container], None] | None = None) -> None:  # fmt: skip
    """Queue ``action`` of the container ``ref`` (its parameters, if any, as an
    operation), print what was queued and, with ``follow``, follow its run.

    Raises:
        Conflict: the lifecycle forbids it, or it is queued or running already.
    """
    from cli.follow import follow_run
    from provisioner import lease
    from provisioner.queue import ActionPending
    from provisioner.requests import request_action

    with rt.factory() as session:
        ct = find_container(session, ref)
        try:
            check_action(ct, action)
        except ActionRefused as exc:
            raise Conflict(f"{label(ct)}: {exc.message}") from None
        if confirm is not None:
            confirm(ct)
        cid, name = ct.id, label(ct)
        done = [p for p in ct.finished_phases or []
                if action == "retry" or p in ("create", "start")]  # fmt: skip
        try:
            queued_action = request_action(session, rt.settings, rt.redis, ct, action, params,
                                           lambda: lease.held(rt.factory, cid))  # fmt: skip
        except ActionPending as exc:
            raise Conflict(str(exc)) from None
    after, job_id = queued_action.after, queued_action.job_id
    queued = {"type": "queued", "action": action, "id": cid, "job_id": job_id,
              "after": after}  # fmt: skip
    if as_json:
        echo_json(queued if follow else {k: v for k, v in queued.items() if k != "type"},
                  lines=follow)  # fmt: skip
    elif follow:
        echo_err(f"{action} of {name} queued")
    else:
        echo_err(f"{action} of {name} queued (job {job_id}); follow it: "
                 f"provisioner logs {short_id(cid)} --follow")  # fmt: skip
    if follow:
        follow_run(rt, cid, action, after=after, job_id=job_id, as_json=as_json,
                   timeout=timeout, done=done)  # fmt: skip


ON_FAILURE_HELP = ("What a failed change does: roll back to the safety snapshot taken "
                   "before it (rollback, the default) or keep the container as the failure "
                   "left it (keep).")  # fmt: skip


def _action_command(action: str, summary: str) -> click.Command:
    @click.command(action, help=f"{summary}\n\nID: an id, a unique id prefix, or a hostname. "
                   f"Allowed when the container is "
                   f"{' or '.join(sorted(lc.value for lc in ACTIONS[action]))}.")  # fmt: skip
    @click.argument("ref", metavar="ID")
    @follow_options("queued", '"action", "id", "job_id", "after"')
    @pass_runtime
    def command(rt: Runtime, ref: str, follow: bool, as_json: bool, timeout: float | None,
                yes: bool = False, on_failure: str | None = None) -> None:  # fmt: skip
        confirm = (lambda ct: _confirm_destroy(ct, yes)) if action == "destroy" else None
        params = {"on_failure": on_failure or "rollback"} if action == "resync" else None
        queue_action(rt, ref, action, follow=follow, as_json=as_json, timeout=timeout,
                     params=params, confirm=confirm)  # fmt: skip

    if action == "destroy":
        command = click.option("--yes", "-y", is_flag=True,
                               help="Do not ask for confirmation.")(command)  # fmt: skip
    if action == "resync":
        command = click.option("--on-failure", type=click.Choice(["rollback", "keep"]),
                               default="rollback", show_default=True,
                               help=ON_FAILURE_HELP)(command)  # fmt: skip
    return command


ACTION_COMMANDS = [
    _action_command("start", "Start a container."),
    _action_command("stop", "Stop a container (hard stop)."),
    _action_command("reboot", "Reboot a container."),
    _action_command("destroy", "Destroy a container in Proxmox VE (asks first unless --yes)."),
    _action_command("retry", "Run a failed provisioning again; it resumes where it failed."),
    _action_command(
        "resync",
        "Deploy the template's files and run its scripts again, safely: "
        "a snapshot first, and on failure (the health check included) "
        "a rollback to it.",
    ),
]
COMMANDS: list[click.Command] = [logs, *ACTION_COMMANDS]

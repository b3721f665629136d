"""``provisioner webhook``: signed notifications of containers' events.

A hook gets ``ready``, ``error``, ``expiring`` and ``expired`` (or the ones
it asks for) of every container (no ``--owner``), or of the containers its
owner asked for.  Its signing secret is generated and printed once, or read
from stdin (``--secret-stdin``); it is encrypted at rest and never printed
again.  The CLI manages every hook; the REST API and the dashboard show a
user their own.
"""

from __future__ import annotations

import time

import click

from cli.output import echo_err, echo_json, print_table, short_id, stdin_line
from cli.runtime import BadInput, GaveUp, NotFound, Runtime, pass_runtime
from provisioner.errors import ConfigError
from provisioner.webhooks import EVENTS

_TEST_WAIT = 20.0  # seconds `webhook test` waits for the ping's first attempt


@click.group("webhook")
def webhook() -> None:
    """Signed webhooks: containers' events POSTed to your URLs.

    \b
    Examples:
      provisioner webhook add https://hooks.example.net/lxc --event ready --event error
      printf '%s\\n' "$SECRET" | provisioner webhook add https://ci.example/hook \\
          --owner alice --secret-stdin
      provisioner webhook test 1
      provisioner webhook deliveries --webhook 1
    """


def _refusal(exc: ConfigError) -> BadInput:
    """``url: ...`` -> ``URL: ...``, ``events: ...`` -> ``--event: ...``, ..."""
    field, sep, rest = exc.message.partition(": ")
    option = {"url": "URL", "events": "--event", "owner": "--owner",
              "secret": "--secret-stdin"}.get(field)  # fmt: skip
    return BadInput(f"{option}: {rest}" if sep and option else exc.message)


@webhook.command("add")
@click.argument("url")
@click.option("--owner", metavar="USER",
              help="Only the events of the containers USER asked for (default: every "
                   "container's).")  # fmt: skip
@click.option("--event", "events", multiple=True, type=click.Choice(EVENTS),
              help="An event to send (repeatable; default: all of them).")  # fmt: skip
@click.option("--secret-stdin", is_flag=True,
              help="Read the signing secret from stdin's first line (default: generate one "
                   "and print it once).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the hook (and a generated secret).")
@pass_runtime
def webhook_add(rt: Runtime, url: str, owner: str | None, events: tuple[str, ...],
                secret_stdin: bool, as_json: bool) -> None:  # fmt: skip
    """Add a webhook for URL (http:// or https://, no user:password in it).

    Prints its id; a generated secret is printed once (stdout, after the id),
    to verify the X-Provisioner-Signature header of every delivery.
    """
    from provisioner.db import session_scope
    from provisioner.views import webhook_json
    from provisioner.webhook_store import add_webhook

    rt.settings  # noqa: B018  # a broken configuration is refused before stdin is read
    secret = stdin_line("--secret-stdin") if secret_stdin else None
    try:
        with session_scope(rt.factory) as session:
            hook, generated = add_webhook(session, rt.box, url, owner=owner, events=events,
                                          secret=secret)  # fmt: skip
            shown = webhook_json(hook)
    except ConfigError as exc:
        raise _refusal(exc) from None
    if as_json:
        echo_json({"webhook": shown, **({"secret": generated} if generated else {})})
        return
    click.echo(shown["id"])
    whose = f"containers of {owner}" if owner else "every container"
    echo_err(f"webhook {shown['id']} added: {', '.join(shown['events'])} of {whose} to "
             f"{shown['url']}")  # fmt: skip
    if generated:
        click.echo(generated)
        echo_err("(the signing secret above is shown once: store it now)")


@webhook.command("ls")
@click.option("--json", "as_json", is_flag=True, help='Print {"webhooks": [...]} as JSON.')
@pass_runtime
def webhook_ls(rt: Runtime, as_json: bool) -> None:
    """List the webhooks (never their secrets)."""
    from provisioner.views import webhook_json
    from provisioner.webhook_store import list_webhooks

    with rt.factory() as session:
        hooks = [webhook_json(h) for h in list_webhooks(session)]
    if as_json:
        echo_json({"webhooks": hooks})
        return
    print_table(["ID", "OWNER", "EVENTS", "URL", "CREATED"],
                [[str(h["id"]), h["owner"] or "(all)", ",".join(h["events"]), h["url"],
                  h["created_at"][:19]] for h in hooks])  # fmt: skip


@webhook.command("rm")
@click.argument("hook_id", metavar="ID", type=int)
@pass_runtime
def webhook_rm(rt: Runtime, hook_id: int) -> None:
    """Remove a webhook and its delivery log."""
    from provisioner.db import session_scope
    from provisioner.webhook_store import WebhookNotFound, remove_webhook

    try:
        with session_scope(rt.factory) as session:
            remove_webhook(session, hook_id)
    except WebhookNotFound as exc:
        raise NotFound(exc.message) from None
    click.echo(f"webhook {hook_id} removed")


@webhook.command("deliveries")
@click.option("--webhook", "hook_id", type=int, metavar="ID", help="Only this webhook's.")
@click.option("--container", "ref", metavar="CONTAINER",
              help="Only this container's (id, id prefix or hostname).")  # fmt: skip
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help='Print {"deliveries": [...]} as JSON.')
@pass_runtime
def webhook_deliveries(rt: Runtime, hook_id: int | None, ref: str | None, limit: int,
                       as_json: bool) -> None:  # fmt: skip
    """The delivery log, newest first: status, attempts, last answer or error."""
    from cli.containers import find_container
    from provisioner.views import delivery_json
    from provisioner.webhook_store import WebhookNotFound, get_webhook, list_deliveries

    with rt.factory() as session:
        if hook_id is not None:
            try:
                get_webhook(session, hook_id)
            except WebhookNotFound as exc:
                raise NotFound(exc.message) from None
        container_id = find_container(session, ref).id if ref else None
        found = [delivery_json(d, payload=as_json) for d in list_deliveries(
            session, webhook_id=hook_id, container_id=container_id, limit=limit)]  # fmt: skip
    if as_json:
        echo_json({"deliveries": found})
        return
    print_table(["DELIVERY", "HOOK", "EVENT", "CONTAINER", "STATUS", "ATTEMPTS", "LAST", "AT"],
                [[short_id(d["id"]), str(d["webhook_id"]), d["event"],
                  short_id(d["container_id"]) if d["container_id"] else "-", d["status"],
                  str(d["attempts"]), _last(d), d["created_at"][:19]] for d in found])  # fmt: skip


def _last(d: dict[str, object]) -> str:
    """The last attempt's answer or error, or when the next one is due."""
    if d["attempts"] == 0:
        return "not sent yet"
    text = str(d["last_error"] or f"HTTP {d['last_status_code']}")
    if d["status"] == "pending" and d["next_attempt_at"]:
        text += f"; next at {str(d['next_attempt_at'])[11:19]}"
    return text


@webhook.command("test")
@click.argument("hook_id", metavar="ID", type=int)
@click.option("--wait", type=click.FloatRange(0, 600), default=_TEST_WAIT, show_default=True,
              help="Seconds to wait for the first attempt (0: queue it and return).")  # fmt: skip
@pass_runtime
def webhook_test(rt: Runtime, hook_id: int, wait: float) -> None:
    """Send a ``ping`` to a webhook (a worker sends it) and wait for its
    first attempt: exit 0 when delivered, 1 when the attempt failed (it is
    retried as any delivery), 6 when no worker took it in time."""
    from cli.runtime import CliFailure
    from provisioner.models import DeliveryStatus, WebhookDelivery
    from provisioner.webhook_store import WebhookNotFound, get_webhook, send_test

    with rt.factory() as session:
        try:
            hook = get_webhook(session, hook_id)
        except WebhookNotFound as exc:
            raise NotFound(exc.message) from None
        delivery_id = send_test(session, rt.redis, rt.settings, hook).id
    echo_err(f"ping queued as delivery {delivery_id}")
    deadline = time.monotonic() + wait
    while wait:
        with rt.factory() as session:
            d = session.get(WebhookDelivery, delivery_id)
            if d is None:
                raise NotFound(f"delivery {delivery_id} is gone (its webhook was removed)")
            if d.status == DeliveryStatus.DELIVERED:
                click.echo(f"delivered: HTTP {d.last_status_code}")
                return
            if d.attempts:
                raise CliFailure(f"the ping failed: {d.last_error}"
                                 + ("; it is retried" if d.status == DeliveryStatus.PENDING
                                    else ""))  # fmt: skip
        if time.monotonic() >= deadline:
            raise GaveUp(f"no worker sent the ping within {wait:g} s (is `provisioner worker` "
                         "running?); it stays queued")  # fmt: skip
        time.sleep(0.2)


COMMANDS: list[click.Command] = [webhook]

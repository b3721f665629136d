"""``provisioner keys``: the keys that encrypt stored secrets, and rotating them.

Keys come from ``PROVISIONER_SECRET_KEY`` ("current,old...") or from the key
file (``provisioner.secrets.keyfile``).  ``keys rotate`` with a key file does the
whole flow: add a new key, make it current, re-encrypt every stored secret,
retire the old keys once nothing uses them.  The environment cannot be
rewritten from here, so with ``PROVISIONER_SECRET_KEY`` the operator puts
the new key first (``keys generate`` makes one) and ``keys rotate``
re-encrypts.  Key material is printed only by ``keys generate``, once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from cli.output import echo_err, echo_json, print_table
from cli.runtime import BadInput, CliFailure, Conflict, Runtime, pass_runtime
from provisioner.models import Container, Node, Webhook
from provisioner.stored_request import StoredRequest

if TYPE_CHECKING:
    from provisioner.secrets.box import SecretBox

ENV_VAR = (
    "PROVISIONER_SECRET_KEY"  # provisioner.secrets.box.ENV_VAR, without importing cryptography
)
KEY_PICKUP_SECONDS = 2.0  # web.resources.KeyFileWatch looks at the key file once a second


def _tokens(session: Session) -> Iterator[str]:
    """Every stored ciphertext: node secrets, root passwords, SSH keys, the
    secret template variables of requests, and webhook signing secrets."""
    for node in session.scalars(select(Node)):
        yield node.secret_ciphertext
    for ct in session.scalars(select(Container)):
        yield from (t for t in (ct.root_password_ciphertext, ct.ssh_private_key_ciphertext) if t)
        yield from StoredRequest.from_dict(ct.request).secret_variables.values()
    yield from session.scalars(select(Webhook.secret_ciphertext))


def key_usage(session: Session) -> Counter[str]:
    """How many stored secrets each key id encrypts."""
    return Counter(t.split(":", 2)[1] if t.count(":") >= 2 else "?" for t in _tokens(session))


def reencrypt_everything(rt: Runtime, box: SecretBox) -> tuple[int, int]:
    """Re-encrypt every stored secret with ``box``'s current key, in one
    transaction.  Returns (re-encrypted, already current)."""
    from provisioner.secrets.vault import rotate_all

    with rt.factory() as session:
        report = rotate_all(session, box)
        session.commit()
    return report.reencrypted, report.current


def _check_readable(rt: Runtime, box: SecretBox) -> Counter[str]:
    with rt.factory() as session:
        usage = key_usage(session)
    unknown = sorted(k for k in usage if k not in box.key_ids)
    if unknown:
        raise CliFailure(f"{sum(usage[k] for k in unknown)} stored secret(s) use key(s) "
                         f"{', '.join(unknown)}, which are not loaded; add them after the "
                         "current key first (nothing was changed)")  # fmt: skip
    return usage


@click.group("keys")
def keys() -> None:
    """The keys that encrypt stored secrets."""


@keys.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_runtime
def keys_ls(rt: Runtime, as_json: bool) -> None:
    """The key ids (never the keys), the current one first, and how many
    stored secrets each encrypts."""
    box = rt.box
    with rt.factory() as session:
        usage = key_usage(session)
    source = ENV_VAR if rt.settings.secret_key else f"key file {rt.settings.secret_key_file}"
    rows = [{"id": k, "current": k == box.current_key_id, "secrets": usage.get(k, 0)}
            for k in box.key_ids]  # fmt: skip
    unknown = {k: n for k, n in usage.items() if k not in box.key_ids}
    if as_json:
        echo_json({"source": source, "keys": rows, "unknown": unknown})
        return
    echo_err(f"keys from {source}")
    print_table(("KEY", "CURRENT", "SECRETS"),
                [(str(r["id"]), "yes" if r["current"] else "", str(r["secrets"])) for r in rows])  # fmt: skip
    for kid, count in sorted(unknown.items()):
        echo_err(f"warning: {count} stored secret(s) use key {kid}, which is not loaded: "
                 "they cannot be decrypted")  # fmt: skip


@keys.command("generate")
def keys_generate() -> None:
    """Print a new random key, once, for PROVISIONER_SECRET_KEY.

    \b
    Then: PROVISIONER_SECRET_KEY=<new>,<current>, restart the web app and the
    workers, run `provisioner keys rotate`, and finally drop the old key.
    """
    from provisioner.secrets.box import generate_key

    click.echo(generate_key())
    echo_err(f"shown once: put it first in {ENV_VAR} (new,old), restart everything, then "
             "run: provisioner keys rotate")  # fmt: skip


@keys.command("rotate")
@click.option("--keep-old", is_flag=True,
              help="Key file: keep the old key(s) in the file (retire them later with "
                   "`keys retire`), for processes not restarted yet.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print what changed as JSON.")
@pass_runtime
def keys_rotate(rt: Runtime, keep_old: bool, as_json: bool) -> None:
    """Re-encrypt every stored secret with a new key.

    \b
    Key file: adds a new key, makes it current, re-encrypts every secret,
    retires the old key(s).  PROVISIONER_SECRET_KEY: put the new key first
    (provisioner keys generate) and restart, then this re-encrypts with it;
    drop the old key(s) from the variable afterwards, and restart.  With a
    key file nothing needs a restart: web apps load a changed key file
    within a second, workers with their next job.
    """
    from provisioner.secrets.keyfile import (
        add_key_to_file,
        load_secret_box,
        retire_key,
        set_current_key,
    )

    settings = rt.settings
    result: dict[str, Any] = {}
    if settings.secret_key:
        box = rt.box
        if len(box.key_ids) < 2:
            raise BadInput(f"{ENV_VAR} holds one key: put a new one first ({ENV_VAR}=<new>,"
                           "<current>; make one with: provisioner keys generate), restart "
                           "the web app and the workers, then run keys rotate again")  # fmt: skip
        _check_readable(rt, box)
        changed, same = reencrypt_everything(rt, box)
        with rt.factory() as session:
            usage = key_usage(session)
        unused = [k for k in box.key_ids[1:] if not usage.get(k)]
        result = {"source": ENV_VAR, "current": box.current_key_id, "reencrypted": changed,
                  "already_current": same, "retired": [], "unused": unused}  # fmt: skip
        lines = [f"re-encrypted {changed} secret(s) with key {box.current_key_id} "
                 f"({same} already used it)"]  # fmt: skip
        if unused:
            lines.append(f"key(s) {', '.join(unused)} no longer used: remove them from "
                         f"{ENV_VAR} (keep its first entry), then restart")  # fmt: skip
    else:
        path = settings.secret_key_file
        old = load_secret_box(None, path)  # creates the file on first use
        _check_readable(rt, old)
        new_id = add_key_to_file(path, current=False)
        set_current_key(path, new_id)
        # running web apps look at the key file once a second and workers load
        # it for each job: give them the new key before the old one goes
        time.sleep(KEY_PICKUP_SECONDS)
        box = load_secret_box(None, path)
        changed, same = reencrypt_everything(rt, box)
        with rt.factory() as session:
            usage = key_usage(session)
        retired = []
        if not keep_old:
            for kid in old.key_ids:
                if kid != new_id and not usage.get(kid):
                    retire_key(path, kid)
                    retired.append(kid)
        kept = [k for k in old.key_ids if k not in retired and k != new_id]
        result = {"source": "key file", "key_file": str(path), "current": new_id,
                  "previous": old.current_key_id, "reencrypted": changed,
                  "already_current": same, "retired": retired, "kept": kept}  # fmt: skip
        lines = [f"key file {path}: new key {new_id} is current",
                 f"re-encrypted {changed} secret(s) with key {new_id} ({same} already used it)"]  # fmt: skip
        if retired:
            lines.append(f"retired key(s) {', '.join(retired)}")
        if kept:
            lines.append(
                f"kept key(s) {', '.join(kept)} (retire later: provisioner keys retire ID)"
            )
    if as_json:
        echo_json(result)
    else:
        for line in lines:
            click.echo(line)
    if settings.secret_key:
        echo_err("restart the web app and the workers once the old key is out of "
                 f"{ENV_VAR}")  # fmt: skip
    else:
        echo_err("running web apps have loaded the new key; workers load it for each job "
                 "(other hosts with a copy of the key file: copy it again)")  # fmt: skip


@keys.command("retire")
@click.argument("key_id")
@pass_runtime
def keys_retire(rt: Runtime, key_id: str) -> None:
    """Remove an old key from the key file, once no stored secret uses it."""
    from provisioner.secrets.keyfile import retire_key

    if rt.settings.secret_key:
        raise BadInput(f"the keys come from {ENV_VAR}: remove the key from the variable itself")
    box = rt.box
    if key_id not in box.key_ids:
        raise BadInput(f"the key file holds no key {key_id!r} (keys: {', '.join(box.key_ids)})")
    if key_id == box.current_key_id:
        raise BadInput(f"key {key_id} is the current key; rotate to a new key first")
    with rt.factory() as session:
        used = key_usage(session).get(key_id, 0)
    if used:
        raise Conflict(f"{used} stored secret(s) still use key {key_id}: run provisioner keys "
                       "rotate first")  # fmt: skip
    retire_key(rt.settings.secret_key_file, key_id)
    click.echo(f"retired key {key_id}")


COMMANDS: list[click.Command] = [keys]

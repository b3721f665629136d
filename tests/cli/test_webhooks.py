"""``provisioner webhook`` in-process: add (the secret printed once, or read
from stdin), ls, rm, deliveries, test, their refusals and exit codes; and
``create --owner`` (no worker runs here: tests/pipeline/test_webhooks_e2e.py
sends for real)."""

from __future__ import annotations

import json

from redis import Redis

from provisioner.models import Webhook
from provisioner.secrets.vault import webhook_secret
from provisioner.webhook_store import notify, webhook_queue
from tests.cli.conftest import Cli
from tests.cli.test_containers import one_line_error

URL = "https://hooks.example.net/lxc"


def test_add_prints_the_id_then_the_secret_once(cli: Cli) -> None:
    result = cli("webhook", "add", URL, "--event", "ready", "--event", "error")
    assert result.exit_code == 0, result.output
    hook_id, secret = result.stdout.split()
    assert secret.startswith("whsec_") and "shown once" in result.stderr
    with cli.factory() as session:
        row = session.get(Webhook, int(hook_id))
        assert row is not None and webhook_secret(cli.box, row) == secret
        assert (row.owner, row.events) == (None, ["ready", "error"])
    listed = cli("webhook", "ls")
    assert listed.exit_code == 0 and URL in listed.stdout and "(all)" in listed.stdout
    as_json = json.loads(cli("webhook", "ls", "--json").stdout)
    assert as_json["webhooks"][0]["events"] == ["ready", "error"]
    for args in (("webhook", "ls"), ("webhook", "ls", "--json"), ("webhook", "deliveries")):
        assert secret not in cli(*args).output


def test_add_with_a_secret_from_stdin_and_an_owner(cli: Cli) -> None:
    result = cli("webhook", "add", URL, "--owner", "alice", "--secret-stdin", "--json",
                 input="my own secret of sixteen+\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert "secret" not in body and body["webhook"]["owner"] == "alice"
    assert body["webhook"]["events"] == ["ready", "error", "expiring", "expired"]
    with cli.factory() as session:
        row = session.get(Webhook, body["webhook"]["id"])
        assert row is not None and webhook_secret(cli.box, row) == "my own secret of sixteen+"


def test_bad_input_is_exit_2_naming_the_option(cli: Cli) -> None:
    for args, input_, expected in (
        (("https://ops:hunter2pass@h.example/x",), None, "URL: must not hold a user name"),
        (("ftp://h.example/x",), None, "URL: must start with http:// or https://"),
        ((URL, "--owner", "two words"), None, "--owner: 1-64 characters"),
        ((URL, "--secret-stdin"), "short\n", "--secret-stdin: must be at least 16"),
    ):  # fmt: skip
        result = cli("webhook", "add", *args, input=input_)
        assert result.exit_code == 2, (args, result.output)
        assert one_line_error(result.stderr).startswith(f"error: {expected}"), result.stderr
        assert "hunter2pass" not in result.output
    unknown = cli("webhook", "add", URL, "--event", "done")
    assert unknown.exit_code == 2 and "'done' is not one of" in unknown.stderr
    assert cli("webhook", "ls", "--json").stdout.count('"id"') == 0  # nothing stored


def test_rm_and_deliveries_of_an_unknown_hook_are_exit_3(cli: Cli) -> None:
    assert cli("webhook", "rm", "99").exit_code == 3
    assert cli("webhook", "deliveries", "--webhook", "99").exit_code == 3
    assert cli("webhook", "test", "99").exit_code == 3
    hook_id = cli("webhook", "add", URL).stdout.split()[0]
    removed = cli("webhook", "rm", hook_id)
    assert removed.exit_code == 0 and removed.stdout == f"webhook {hook_id} removed\n"
    assert cli("webhook", "rm", hook_id).exit_code == 3


def test_deliveries_list_what_notify_made(cli: Cli) -> None:
    hook_id = cli("webhook", "add", URL, "--owner", "alice").stdout.split()[0]
    cid = cli.add_container(hostname="owned", owner="alice")
    other = cli.add_container(hostname="unowned")
    with Redis.from_url(cli.settings.redis_url) as redis:
        try:
            (delivery_id,) = notify(cli.factory, redis, cli.settings, cid, "expiring", "soon")
            assert notify(cli.factory, redis, cli.settings, other, "expiring") == []
        finally:
            webhook_queue(redis, cli.settings).delete(delete_jobs=True)
    listed = cli("webhook", "deliveries", "--webhook", hook_id)
    assert listed.exit_code == 0, listed.output
    assert delivery_id[:8] in listed.stdout and "expiring" in listed.stdout
    assert "not sent yet" in listed.stdout and "pending" in listed.stdout
    by_container = json.loads(cli("webhook", "deliveries", "--container", "owned", "--json").stdout)
    assert [d["id"] for d in by_container["deliveries"]] == [delivery_id]
    assert by_container["deliveries"][0]["payload"]["container"]["owner"] == "alice"
    assert json.loads(cli("webhook", "deliveries", "--container", "unowned",
                          "--json").stdout) == {"deliveries": []}  # fmt: skip


def test_a_test_ping_with_no_worker_gives_up_with_exit_6(cli: Cli) -> None:
    hook_id = cli("webhook", "add", URL).stdout.split()[0]
    with Redis.from_url(cli.settings.redis_url) as redis:
        try:
            result = cli("webhook", "test", hook_id, "--wait", "0.5")
            assert result.exit_code == 6, result.output
            assert "no worker sent the ping within 0.5 s" in result.stderr
            (job,) = webhook_queue(redis, cli.settings).get_jobs()
            assert job.args[0] in result.stderr  # "ping queued as delivery <id>"
        finally:
            webhook_queue(redis, cli.settings).delete(delete_jobs=True)


def test_create_takes_an_owner(cli: Cli) -> None:
    result = cli("create", "-t", "nginx", "--node", "sim", "-H", "owned-web", "--owner", "alice")
    assert result.exit_code == 0, result.output
    assert cli.container(result.stdout.strip()).owner == "alice"
    shown = json.loads(cli("show", result.stdout.strip(), "--json", "--no-live").stdout)
    assert shown["owner"] == "alice"
    refused = cli("create", "-t", "nginx", "--node", "sim", "-H", "x2", "--owner", "a b")
    assert refused.exit_code == 2 and "--owner: 1-64 characters" in refused.stderr

"""Container commands in-process: create, ls, show, logs and the actions,
their validation and their exit codes (no worker runs here: what they
store and queue is checked directly)."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis
from sqlalchemy import select

from provisioner.events import EventPublisher
from provisioner.models import Container, Lifecycle
from provisioner.queue import provisioning_queue
from provisioner.requests import stored_variables
from provisioner.secrets.generate import generate_ssh_keypair
from provisioner.secrets.vault import container_root_password
from tests.cli.conftest import Cli


def queued_jobs(cli: Cli) -> list[tuple[str, str]]:
    """(container id, action) of every job waiting in the test's queue."""
    with Redis.from_url(cli.settings.redis_url) as redis:
        queue = provisioning_queue(redis, cli.settings)
        return [(j.args[0], j.args[1]) for j in queue.get_jobs()]


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


# -- create --------------------------------------------------------------------------


def test_create_stores_queues_and_shows_the_password_once(cli: Cli) -> None:
    result = cli("create", "--template", "nginx", "--node", "sim", "--hostname", "web-a",
                 "--cores", "2", "--memory", "768", "--var", "site_title=Hello there")  # fmt: skip
    assert result.exit_code == 0, result.output
    cid = result.stdout.strip()
    ct = cli.container(cid)
    assert (ct.hostname, ct.template, ct.lifecycle) == ("web-a", "nginx", Lifecycle.PENDING)
    assert ct.request["cores"] == 2 and ct.request["memory"] == 768
    assert ct.request["variables"]["site_title"] == "Hello there"
    assert queued_jobs(cli) == [(cid, "provision")]
    password = container_root_password(cli.box, ct)
    assert password and f"root password (shown once, store it now): {password}" in result.stderr
    assert password not in result.stdout
    assert f"provisioner logs {cid[:8]} --follow" in result.stderr
    # never again: not in show, ls or logs
    for args in (("show", cid, "--json", "--no-live"), ("ls", "--json", "--no-live"),
                 ("show", cid, "--no-live"), ("logs", cid)):  # fmt: skip
        again = cli(*args)
        assert again.exit_code == 0, again.output
        assert password not in again.output


def test_create_json_carries_everything_a_script_needs(cli: Cli, tmp_path: Path) -> None:
    _, public = generate_ssh_keypair("operator@test")
    key_file = tmp_path / "id.pub"
    key_file.write_text(public + "\n")
    net = ipaddress.ip_network(cli.sim["subnet"])  # the node checks it is on its bridge
    ip, gateway = f"{net.network_address + 171}/{net.prefixlen}", cli.sim["gateway"]
    result = cli("create", "-t", "lines", "-H", "json-a", "--ip", ip,
                 "--gateway", gateway, "--ssh-key", str(key_file), "--vmid", "9177",
                 "--on-failure", "destroy", "--var", "count=7", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert set(body) == {"id", "job_id", "container", "root_password"}
    c = body["container"]
    assert c["request"]["ip"] == ip and c["request"]["gateway"] == gateway
    assert c["request"]["ssh_public_key"] == public and c["request"]["vmid"] == 9177
    assert c["variables"] == {"count": 7, "pause_ms": 0, "fail_marker": ""}
    assert c["failure_policy"] == "destroy" and c["lifecycle"] == "pending"
    assert body["root_password"] == container_root_password(cli.box, cli.container(body["id"]))
    assert body["job_id"].startswith(f"provision-{body['id']}")
    assert "root password" not in result.stderr  # in the JSON only


def test_password_from_stdin_is_stored_and_never_printed(cli: Cli) -> None:
    result = cli("create", "-t", "nginx", "-H", "pw-a", "--password-stdin",
                 input="Correct-Horse-7\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Correct-Horse-7" not in result.output and "root password" not in result.output
    ct = cli.container(result.stdout.strip())
    assert container_root_password(cli.box, ct) == "Correct-Horse-7"
    # the secret variable the request left out was generated: shown this once
    generated = stored_variables(cli.box, ct)["basic_auth_password"]
    assert f"basic_auth_password, generated (shown once, store it now): {generated}\n" in (
        result.stderr)  # fmt: skip
    assert generated not in result.stdout


def test_ssh_key_from_stdin_and_text(cli: Cli) -> None:
    _, first = generate_ssh_keypair("one")
    _, second = generate_ssh_keypair("two")
    result = cli("create", "-t", "nginx", "-H", "keys-a", "--ssh-key", "-", "--ssh-key-text",
                 second, input=first + "\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert cli.container(result.stdout.strip()).request["ssh_public_key"] == f"{first}\n{second}"


def test_typed_variables_and_secret_variables(cli: Cli) -> None:
    result = cli("create", "-t", "redis", "-H", "redis-a", "--var", "maxmemory_mb=128",
                 "--var", "appendonly=yes", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["container"]["variables"]["maxmemory_mb"] == 128
    assert body["container"]["variables"]["appendonly"] is True
    assert body["container"]["secret_variables"] == ["redis_password"]
    generated = stored_variables(cli.box, cli.container(body["id"]))["redis_password"]
    # a generated secret variable is shown once, here, and never by show
    assert generated and body["generated_secrets"] == {"redis_password": generated}
    assert result.output.count(generated) == 1
    shown = cli("show", body["id"], "--json")
    assert shown.exit_code == 0 and generated not in shown.output


def test_variables_from_a_file_keep_secrets_off_the_command_line(cli: Cli,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    secret = "s3cret-from-a-file"
    var_file = tmp_path / "redis.vars"
    var_file.write_text(f"# redis\n\nredis_password={secret}\nmaxmemory_mb=64\n")
    result = cli("create", "-t", "redis", "-H", "redis-f", "--var-file", str(var_file),
                 "--var", "appendonly=yes", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["container"]["variables"]["maxmemory_mb"] == 64
    assert stored_variables(cli.box, cli.container(body["id"]))["redis_password"] == secret
    assert secret not in result.output
    piped = cli("create", "-t", "redis", "-H", "redis-g", "--var-file", "-", "--json",
                input=f"redis_password={secret}-2\r\n")  # fmt: skip
    assert piped.exit_code == 0, piped.output
    stored = stored_variables(cli.box, cli.container(json.loads(piped.stdout)["id"]))
    assert stored["redis_password"] == f"{secret}-2"
    # a bad line is named, never echoed (it may be a secret); a variable given twice is refused
    for text, message in (
        (f"maxmemory_mb=64\n{secret}\n", "--var-file line 2: expected KEY=VALUE"),
        ("appendonly=no\n", "--var-file line 1: 'appendonly' given twice"),
    ):
        bad = cli("create", "-t", "redis", "-H", "redis-h", "--var", "appendonly=yes",
                  "--var-file", "-", input=text)  # fmt: skip
        assert bad.exit_code == 2 and one_line_error(bad.stderr) == f"error: {message}"
        assert secret not in bad.output
    missing = cli("create", "-t", "redis", "-H", "redis-h", "--var-file", str(tmp_path / "no"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_every_problem_of_create_is_on_its_one_line(cli: Cli) -> None:
    result = cli("create", "-t", "nginx", "-H", "bad_host!", "--ip", "198.18.0.300/24",
                 "--bridge", "-x", "--ssh-key-text", "ssh-ed25519 AAAA", "--var", "nope=1")  # fmt: skip
    assert result.exit_code == 2, result.output
    line = one_line_error(result.stderr)
    parts = line.removeprefix("error: ").split("; ")
    assert [p.split(":")[0] for p in parts[:3]] == ["--ip", "--bridge", "--ssh-key"], line
    assert "unknown variable 'nope'" in line and "hostname: invalid format" in line
    assert "(check --hostname)" in line
    with cli.factory() as session:
        assert session.scalars(select(Container)).all() == []


def test_create_checks_the_storage_bridge_and_address_on_the_node(cli: Cli) -> None:
    net = ipaddress.ip_network(cli.sim["subnet"])
    for args, message in (
        (("--bridge", "vmbr9"), "--bridge: node sim has no bridge 'vmbr9'; its bridges: vmbr0"),
        (("--storage", "local"), "--storage: storage 'local' on node sim cannot hold containers "
                                 "(no 'rootdir' content); storages that can: local-lvm"),
        (("--storage", "nope"), "--storage: node sim has no storage 'nope'"),
        (("--ip", "192.0.2.10/24"), f"--ip: 192.0.2.10 is not in the subnet {net} of bridge "
                                    "vmbr0 on node sim"),
        (("--ip", f"{net.broadcast_address}/{net.prefixlen}"), "is the broadcast address"),
    ):  # fmt: skip
        result = cli("create", "-t", "nginx", "-H", "facts", *args)
        assert result.exit_code == 2, result.output
        assert message in one_line_error(result.stderr), result.stderr
    both = cli("create", "-t", "nginx", "-H", "facts", "--storage", "local", "--bridge", "vmbr9")
    assert both.exit_code == 2
    assert re.search(r"--storage: .*; --bridge: ", one_line_error(both.stderr)), both.stderr
    with cli.factory() as session:
        assert session.scalars(select(Container)).all() == []
    fine = cli("create", "-t", "nginx", "-H", "facts", "--storage", "local-lvm", "--bridge",
               "vmbr0", "--ip", f"{net.network_address + 172}/{net.prefixlen}")  # fmt: skip
    assert fine.exit_code == 0, fine.output


def test_create_leaves_an_unreachable_node_to_the_create_phase(cli: Cli) -> None:
    from provisioner.db import session_scope
    from provisioner.models import Node

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])
    with session_scope(cli.factory) as session:
        session.scalars(select(Node).where(Node.name == "sim")).one().port = closed
    result = cli("create", "-t", "nginx", "-H", "down", "--bridge", "vmbr9")
    assert result.exit_code == 0, result.output
    assert cli.container(result.stdout.strip()).request["bridge"] == "vmbr9"


@pytest.mark.parametrize(("args", "message"), [
    (("-t", "no-such-template", "-H", "x"), "no template named 'no-such-template'"),
    (("-t", "../etc", "-H", "x"), "--template: no template named '../etc'"),
    (("-t", "nginx", "-H", "x", "--ip", "198.18.0.300/24"), "--ip: must be 'dhcp' or an IPv4"),
    (("-t", "nginx", "-H", "x", "--ip", "198.18.0.170"), "--ip: must be 'dhcp' or an IPv4"),
    (("-t", "nginx", "-H", "x", "--gateway", "198.18.0.1"), "--gateway: only applies to a static"),
    (("-t", "nginx", "-H", "x", "--ip", "198.18.0.170/24", "--gateway", "nope"),
     "--gateway: must be an IPv4 address"),
    (("-t", "nginx", "-H", "x", "--node", "nope"), "--node: no node named 'nope' (known: sim)"),
    (("-t", "nginx", "-H", "bad_host!"), "hostname: invalid format"),
    (("-t", "nginx", "-H", "x", "--var", "nope=1"), "unknown variable 'nope'"),
    (("-t", "lines", "-H", "x", "--var", "count=many"), "variable 'count' must be an integer"),
    (("-t", "lines", "-H", "x", "--var", "count=0"), "variable 'count' must be at least 1"),
    (("-t", "nginx", "-H", "x", "--var", "site_title"), "--var: expected KEY=VALUE"),
    (("-t", "nginx", "-H", "x", "--var", "site_title=a", "--var", "site_title=b"),
     "--var: 'site_title' given twice"),
    (("-t", "nginx", "-H", "x", "--ssh-key-text", "not a key"),
     "--ssh-key: line 1: not an OpenSSH public key"),
    (("-t", "nginx", "-H", "x", "--ssh-key-text", "ssh-ed25519 AAAA"),
     "--ssh-key: line 1: the key data is cut short"),
    (("-t", "nginx", "-H", "x", "--storage", "bad/storage"), "--storage: must be 1-64"),
    (("-t", "nginx", "-H", "x", "--bridge", "-x"), "--bridge: must be 1-64"),
    (("-t", "nginx", "-H", "x", "--password-stdin", "--ssh-key", "-"),
     "only one of --password-stdin, --ssh-key - may read stdin"),
    (("-t", "nginx", "-H", "x", "--var-file", "-", "--ssh-key", "-"),
     "only one of --ssh-key -, --var-file - may read stdin"),
])  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_stores_nothing(cli: Cli, args: tuple[str, ...],
                                                         message: str) -> None:  # fmt: skip
    result = cli("create", *args, input="\n")
    assert result.exit_code == 2, result.output
    assert message in one_line_error(result.stderr)
    assert result.stdout == ""
    with cli.factory() as session:
        assert session.scalars(select(Container)).all() == []
    assert queued_jobs(cli) == []


@pytest.mark.parametrize(("args", "message"), [
    (("--vmid", "42"), "42 is not in the range 100<=x<=999999999"),
    (("--cores", "0"), "0 is not in the range"),
    (("--on-failure", "explode"), "'explode' is not one of 'keep', 'destroy'"),
    (("--ssh-key", "/no/such/key.pub"), "does not exist"),
    ((), "Missing option '--hostname'"),
])  # fmt: skip
def test_usage_errors_are_exit_2(cli: Cli, args: tuple[str, ...], message: str) -> None:
    hostname = ("-H", "u") if args else ()
    result = cli("create", "-t", "nginx", *hostname, *args)
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_a_short_root_password_is_refused(cli: Cli) -> None:
    result = cli("create", "-t", "nginx", "-H", "x", "--password-stdin", input="abc\n")
    assert result.exit_code == 2
    assert "--password-stdin: must be at least 8 characters long" in one_line_error(result.stderr)
    assert "abc" not in result.stderr.replace("characters", "")


def test_a_vmid_in_use_is_a_conflict(cli: Cli) -> None:
    cli.add_container(hostname="taken", vmid=9171, lifecycle=Lifecycle.READY)
    result = cli("create", "-t", "nginx", "-H", "x", "--vmid", "9171")
    assert result.exit_code == 5
    assert "--vmid: 9171 is already used by container" in one_line_error(result.stderr)


def test_the_only_node_is_the_default_and_with_several_it_is_placed(cli: Cli) -> None:
    assert cli("create", "-t", "nginx", "-H", "only-node").exit_code == 0
    secret = cli.sim["token_secret"]
    added = cli("nodes", "add", "other", "--host", "127.0.0.1", "--port", "9",
                "--pve-node", "pve", "--token-id", "a@pve!b", "--token-secret-stdin",
                "--no-test", input=secret + "\n")  # fmt: skip
    assert added.exit_code == 0, added.output
    result = cli("create", "-t", "nginx", "-H", "two-nodes", "--spread", "web")
    assert result.exit_code == 0, result.output
    assert "placed on sim: " in result.stderr
    assert "other skipped: unreachable (" in result.stderr
    shown = cli("show", result.stdout.strip())
    assert re.search(r"placement:\s+placed on sim: ", shown.stdout), shown.stdout
    assert re.search(r"spread group:\s+web\n", shown.stdout)
    refused = cli("create", "-t", "nginx", "-H", "two-nodes-2", "--spread", "web")
    assert refused.exit_code == 2
    assert one_line_error(refused.stderr).startswith("error: --node: no node fits; other skipped: "
                                                     "unreachable (")  # fmt: skip
    assert "every node that fits holds a member of spread group 'web': sim (1)" in refused.stderr
    placing = cli("create", "-t", "nginx", "-H", "auto-no-redis", "--node", "auto",
                  REDIS_URL="redis://127.0.0.1:1/0")  # fmt: skip
    assert placing.exit_code == 4
    assert "--node auto: placement needs Redis" in one_line_error(placing.stderr)


def test_unreachable_redis_keeps_the_request(cli: Cli) -> None:
    result = cli("create", "-t", "nginx", "-H", "no-redis", REDIS_URL="redis://127.0.0.1:1/0")
    assert result.exit_code == 0, result.output
    assert "warning: the queue is unavailable" in result.stderr
    assert cli.container(result.stdout.strip()).lifecycle == Lifecycle.PENDING
    followed = cli("create", "-t", "nginx", "-H", "no-redis-2", "--follow",
                   REDIS_URL="redis://127.0.0.1:1/0")  # fmt: skip
    assert followed.exit_code == 4
    assert one_line_error(followed.stderr).startswith(
        "error: cannot follow no-redis-2 (")  # fmt: skip
    assert "the queue is unavailable" in followed.stderr
    assert "root password (shown once, store it now): " in followed.stderr
    # the history is read from the database while Redis is away (it has none yet)
    logs = cli("logs", "no-redis-2", REDIS_URL="redis://127.0.0.1:1/0")
    assert logs.exit_code == 0 and logs.stdout == "", logs.output


def test_follow_without_a_worker_warns_and_gives_up(cli: Cli,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr("cli.follow.QUEUE_WARNING_AFTER", 0.5)
    result = cli("create", "-t", "nginx", "-H", "lonely", "--follow", "--timeout", "3")
    assert result.exit_code == 6, result.output
    assert re.search(r"still queued after \ds: is a worker running\? \(provisioner worker\)",
                     result.stderr), result.stderr  # fmt: skip
    assert "error: gave up after 3s; the run goes on (follow it again: provisioner logs" in (
        result.stderr)  # fmt: skip


# -- finding containers ----------------------------------------------------------------


def test_ids_prefixes_and_hostnames(cli: Cli) -> None:
    a = cli.add_container(id="abcd1111-0000-4000-8000-000000000001", hostname="alpha")
    cli.add_container(id="abcd2222-0000-4000-8000-000000000002", hostname="beta")
    cli.add_container(hostname="twin")
    cli.add_container(hostname="twin")
    old = cli.add_container(hostname="gamma", lifecycle=Lifecycle.DESTROYED)
    new = cli.add_container(hostname="gamma")

    def shown(ref: str) -> str:
        result = cli("show", ref, "--json", "--no-live")
        assert result.exit_code == 0, result.output
        return str(json.loads(result.stdout)["id"])

    assert shown(a) == a
    assert shown("abcd1") == a and shown("ABCD1111") == a
    assert shown("alpha") == a
    assert shown("gamma") == new  # the destroyed one only when it is the only one
    assert shown(old) == old
    ambiguous = cli("show", "abcd")
    assert ambiguous.exit_code == 2
    assert (
        "'abcd' is ambiguous: it matches 2 containers: abcd1111 (alpha, pending), "
        "abcd2222 (beta, pending); give more of the id" in one_line_error(ambiguous.stderr)
    )
    assert cli("show", "twin").exit_code == 2
    missing = cli("show", "nothing-like-this")
    assert missing.exit_code == 3
    assert "no container matches 'nothing-like-this'" in one_line_error(missing.stderr)
    assert cli("logs", "zzzz").exit_code == 3
    assert cli("start", "zzzz").exit_code == 3


# -- ls and show -----------------------------------------------------------------------


def test_ls_table_filters_and_json(cli: Cli) -> None:
    a = cli.add_container(hostname="ls-a", vmid=9172, ip="198.18.0.172",
                          lifecycle=Lifecycle.READY, template="lines")  # fmt: skip
    cli.add_container(hostname="ls-b", lifecycle=Lifecycle.ERROR)
    cli.add_container(hostname="ls-gone", lifecycle=Lifecycle.DESTROYED)
    result = cli("ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "HOSTNAME", "LIFECYCLE", "STATUS", "NODE", "TEMPLATE",
                                "VMID", "IP"]  # fmt: skip
    row = re.split(r"\s{2,}", next(line for line in lines if "ls-a" in line).strip())
    # live status from the simulator: it has no CT 9172, so the record owns none
    assert row == [a[:8], "ls-a", "ready", "no container", "sim", "lines", "-", "198.18.0.172"]
    assert not any("ls-gone" in line for line in lines)
    assert any("ls-gone" in line for line in cli("ls", "--all", "--no-live").stdout.splitlines())
    errors = cli("ls", "--lifecycle", "error", "--json", "--no-live")
    assert [c["hostname"] for c in json.loads(errors.stdout)["containers"]] == ["ls-b"]
    by_template = json.loads(cli("ls", "-t", "lines", "--json").stdout)["containers"]
    assert [c["hostname"] for c in by_template] == ["ls-a"]
    assert by_template[0]["pve"] is None and by_template[0]["owns_container"] is False
    assert by_template[0]["pve_error"] == (
        "CT 9172 no longer exists on node pve; this record owns no container"
    )
    assert cli("ls", "--lifecycle", "sleeping").exit_code == 2
    unknown = cli("ls", "--node", "nope")
    assert unknown.exit_code == 3
    assert (
        one_line_error(unknown.stderr)
        == "error: --node: no node named 'nope' (provisioner nodes ls)"
    )


def test_show_has_the_error_details(cli: Cli) -> None:
    cid = cli.add_container(
        hostname="broken", lifecycle=Lifecycle.ERROR, vmid=9173,
        error_message="scripts failed: script 20-check.sh failed with exit code 3",
        error_details={"phase": "scripts", "script": "20-check.sh", "exit_code": 3,
                       "message": "script 20-check.sh failed with exit code 3",
                       "last_lines": ["found /etc/motd: failing on purpose"],
                       "hint": "fix the script or the container, then retry"},
        request={"ip": "dhcp", "variables": {"count": 3}, "secret_variables": {"k": "v1:x:y"}})  # fmt: skip
    result = cli("show", "broken", "--no-live")
    assert result.exit_code == 0, result.output
    fields = [line.split(":", 1) for line in result.stdout.splitlines()]
    shown = {k.strip(): v.strip() for k, v in fields}
    assert shown["lifecycle"] == "error"
    assert shown["error"] == "scripts failed: script 20-check.sh failed with exit code 3"
    assert shown["error phase"] == "scripts" and shown["error script"] == "20-check.sh"
    assert shown["error exit code"] == "3"
    assert shown["error output"] == "found /etc/motd: failing on purpose"
    assert shown["error hint"] == "fix the script or the container, then retry"
    assert shown["var count"] == "3" and shown["var k"] == "(secret)"
    body = json.loads(cli("show", cid, "--json").stdout)
    assert body["error_details"]["exit_code"] == 3
    assert (
        body["pve_error"] == "CT 9173 no longer exists on node pve; this record owns no container"
    )
    assert body["owns_container"] is False
    assert "v1:x:y" not in cli("show", cid, "--json").stdout


def test_an_unreachable_node_does_not_fail_the_listing(cli: Cli) -> None:
    added = cli("nodes", "add", "dead", "--host", "127.0.0.1", "--port", "9", "--pve-node",
                "pve", "--token-id", "a@pve!b", "--token-secret-stdin", "--no-test",
                input="secret\n")  # fmt: skip
    assert added.exit_code == 0, added.output
    cli.add_container(node="dead", hostname="on-dead", vmid=9174, lifecycle=Lifecycle.READY)
    result = cli("ls")
    assert result.exit_code == 0, result.output
    assert "unreachable" in next(line for line in result.stdout.splitlines() if "on-dead" in line)
    body = json.loads(cli("show", "on-dead", "--json").stdout)
    assert "connection failed" in body["pve_error"]


# -- logs ------------------------------------------------------------------------------


def publish(cli: Cli, cid: str, *events: tuple[str, str, dict[str, str | int]]) -> None:
    with Redis.from_url(cli.settings.redis_url) as redis, \
            EventPublisher(redis, cli.factory, cid) as publisher:  # fmt: skip
        for type_, message, extra in events:
            publisher.publish(type_, message, **extra)  # type: ignore[arg-type]


def test_logs_prints_every_run_and_says_how_the_last_ended(cli: Cli) -> None:
    cid = cli.add_container(hostname="logged", lifecycle=Lifecycle.ERROR)
    publish(cli, cid,
            ("step", "creating", {"phase": "create", "percent": 5}),
            ("log", "hello out", {"phase": "scripts", "stream": "stdout", "script": "10-a.sh"}),
            ("log", "hello err", {"phase": "scripts", "stream": "stderr", "script": "10-a.sh"}),
            ("error", "scripts failed: boom", {"phase": "scripts"}))  # fmt: skip
    result = cli("logs", "logged")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].endswith("[step] create 5%: creating")
    assert lines[1].endswith("[stdout 10-a.sh] hello out")
    assert lines[2].endswith("[stderr 10-a.sh] hello err")
    assert lines[3].endswith("[error] scripts: scripts failed: boom")
    assert one_line_error(result.stderr) == (
        "error: the latest run of logged (" + cid[:8] + ") ended in error: scripts failed: boom"
    )
    # a retry that succeeded: the whole history, exit 0
    publish(cli, cid, ("step", "again", {"phase": "scripts", "percent": 60}),
            ("complete", "CT 1 is ready", {"phase": "finalize", "percent": 100}))  # fmt: skip
    again = cli("logs", cid)
    assert again.exit_code == 0 and len(again.stdout.splitlines()) == 6
    after = cli("logs", cid, "--after", "4", "--json")
    assert [json.loads(line)["seq"] for line in after.stdout.splitlines()] == [5, 6]
    assert json.loads(after.stdout.splitlines()[-1])["type"] == "complete"
    # nothing is running: --follow ends at once
    followed = cli("logs", cid, "--follow", "--after", "6")
    assert followed.exit_code == 0 and followed.stdout == ""


# -- actions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "lifecycle", "allowed"), [
    ("start", Lifecycle.PENDING, "error, ready"),
    ("stop", Lifecycle.CREATING, "error, ready"),
    ("reboot", Lifecycle.DESTROYED, "error, ready"),
    ("retry", Lifecycle.READY, "error"),
    ("resync", Lifecycle.PENDING, "error, ready"),
    ("destroy", Lifecycle.DESTROYING, "error, pending, ready"),
])  # fmt: skip
def test_actions_follow_the_lifecycle_rules(cli: Cli, action: str, lifecycle: Lifecycle,
                                            allowed: str) -> None:  # fmt: skip
    cli.add_container(hostname="act", lifecycle=lifecycle, vmid=9175)
    result = cli(action, "act", "--yes") if action == "destroy" else cli(action, "act")
    assert result.exit_code == 5, result.output
    assert one_line_error(result.stderr).endswith(
        f"cannot {action} a container that is {lifecycle.value} (only when {allowed})"
    )
    assert queued_jobs(cli) == []


def test_power_actions_need_a_pve_container(cli: Cli) -> None:
    cli.add_container(hostname="never", lifecycle=Lifecycle.ERROR)
    result = cli("start", "never")
    assert result.exit_code == 5
    assert "cannot start: this record owns no container in Proxmox VE" in one_line_error(
        result.stderr
    )


def test_allowed_actions_are_queued(cli: Cli) -> None:
    cid = cli.add_container(hostname="act-ok", lifecycle=Lifecycle.ERROR, vmid=9176)
    for action in ("start", "stop", "reboot", "resync"):
        result = cli(action, "act-ok")
        assert result.exit_code == 0, result.output
        assert f"{action} of act-ok ({cid[:8]}) queued" in result.stderr
    result = cli("retry", "act-ok", "--json")
    body = json.loads(result.stdout)
    assert body["action"] == "retry" and body["id"] == cid and body["job_id"]
    assert [a for _, a in queued_jobs(cli)] == ["start", "stop", "reboot", "resync", "retry"]
    again = cli("stop", "act-ok")  # queued already: once is enough
    assert again.exit_code == 5 and "a stop of this container is queued already" in again.stderr


def test_destroy_asks_first(cli: Cli) -> None:
    cid = cli.add_container(hostname="doomed", lifecycle=Lifecycle.READY, vmid=9178)
    refused = cli("destroy", "doomed")
    assert refused.exit_code == 2
    assert "needs confirmation: pass --yes" in one_line_error(refused.stderr)
    assert queued_jobs(cli) == []
    done = cli("destroy", "doomed", "--yes")
    assert done.exit_code == 0, done.output
    assert queued_jobs(cli) == [(cid, "destroy")]


def test_help_lists_the_exit_codes(cli: Cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for line in ("0    ok", "1    the run ended in error", "2    bad usage", "3    no such",
                 "4    a Proxmox node or Redis is unreachable", "5    not allowed",
                 "6    --timeout", "130  interrupted"):  # fmt: skip
        assert line in result.stdout
    create_help = cli("create", "--help").stdout
    assert "JSON Lines" in create_help and "--follow" in create_help


@pytest.mark.parametrize(("args", "message"), [
    (("create", "-t", "nginx", "-H", "x", "--ssh-key", "-"),
     "--ssh-key -: standard input is not UTF-8 text"),
    (("create", "-t", "nginx", "-H", "x", "--password-stdin"),
     "--password-stdin: standard input is not UTF-8 text"),
    (("user", "add", "bytes", "--password-stdin"),
     "--password-stdin: standard input is not UTF-8 text"),
])  # fmt: skip
def test_stdin_that_is_not_text_is_one_line_exit_2(cli: Cli, args: tuple[str, ...],
                                                   message: str) -> None:  # fmt: skip
    result = cli(*args, input=b"\xff\xfe not text\n")
    assert result.exit_code == 2, result.output
    assert one_line_error(result.stderr).startswith(f"error: {message}")
    assert "Traceback" not in result.output
    with cli.factory() as session:
        assert session.scalars(select(Container)).all() == []


def test_a_seq_beyond_any_run_is_a_usage_error(cli: Cli) -> None:
    cli.add_container(hostname="far")
    result = cli("logs", "far", "--after", str(2**31))
    assert result.exit_code == 2 and "is not in the range 0<=x<=2147483647" in result.stderr
    assert cli("logs", "far", "--after", str(2**31 - 1)).exit_code == 0


def test_a_bug_is_one_line_and_its_traceback_is_on_request() -> None:
    from cli.main import ProvisionerGroup

    group = ProvisionerGroup("p")

    @group.command("boom")
    def boom() -> None:
        raise ZeroDivisionError("division by zero")

    result = CliRunner().invoke(group, ["boom"], env={"PROVISIONER_DEBUG": ""})
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: internal error: ZeroDivisionError: division by zero (set PROVISIONER_DEBUG=1 "
        "for the traceback, and please report it)"]  # fmt: skip
    debug = CliRunner().invoke(group, ["boom"], env={"PROVISIONER_DEBUG": "1"})
    assert isinstance(debug.exception, ZeroDivisionError)


def test_migrate_and_drain_refuse_what_cannot_be_done_and_mark_maintenance(cli: Cli) -> None:
    """A standalone node: nowhere to move to (the cluster e2e tests in
    tests/pipeline/test_cluster_e2e.py move for real)."""
    cid = cli.add_container(hostname="stays", vmid=9301, lifecycle=Lifecycle.READY)
    same = cli("migrate", cid, "--to", "sim")
    assert same.exit_code == 2 and "--to: the container is on node sim already" in same.stderr
    unknown = cli("migrate", cid, "--to", "nowhere")
    assert unknown.exit_code == 2 and "--to: no node named 'nowhere'" in unknown.stderr
    auto = cli("migrate", cid, "--to", "auto")
    assert auto.exit_code == 2
    assert "--to: node sim is in no cluster: there is nowhere to move to" in auto.stderr
    drained = cli("nodes", "drain", "sim")
    assert drained.exit_code == 5 and "sim is in no cluster" in drained.stderr
    marked = cli("nodes", "drain", "sim", "--no-move")
    assert marked.exit_code == 0 and "node sim is in maintenance" in marked.stdout
    listed = cli("nodes", "ls")
    assert "online, maintenance" in listed.stdout, listed.output
    usage = cli("nodes", "usage")
    assert usage.exit_code == 0, usage.output
    (row,) = [line for line in usage.stdout.splitlines() if line.startswith("sim ")]
    assert "online, maintenance" in row and "local-lvm" in row and "% of" in row, row
    (item,) = [n for n in json.loads(cli("nodes", "usage", "--json").stdout)["nodes"]
               if n["name"] == "sim"]  # fmt: skip
    assert item["name"] == "sim" and item["maintenance"] and item["status"] == "online"
    assert item["memory_total"] > 0 and item["cpus"] > 0 and item["disk_total"] > 0, item
    refused = cli("create", "-t", "nginx", "-H", "while-drained", "--node", "auto")
    assert refused.exit_code == 2 and "sim skipped: maintenance" in refused.stderr
    assert cli("nodes", "undrain", "sim").exit_code == 0
    assert "maintenance" not in cli("nodes", "ls").stdout

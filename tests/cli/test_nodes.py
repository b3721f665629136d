"""``provisioner nodes`` against the shared simulator: add (token or
password, CA file or fingerprint), ls, test, rm, and every way they refuse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from provisioner.models import Container, Lifecycle, Node
from provisioner.nodes import client_for
from provisioner.secrets.vault import node_secret
from tests.cli.conftest import Cli
from tests.cli.test_containers import one_line_error
from tests.pvesim.helpers import host_port


def add_args(sim: dict[str, Any], name: str = "sim2", *extra: str) -> list[str]:
    host, port = host_port(sim)
    return ["nodes", "add", name, "--host", host, "--port", str(port), *extra]


def token(sim: dict[str, Any]) -> list[str]:
    return ["--token-id", sim["token_id"], "--token-secret-stdin"]


def stored(cli: Cli, name: str) -> Node:
    with cli.factory() as session:
        node = session.scalars(select(Node).where(Node.name == name)).one()
        session.expunge(node)
        return node


def test_add_with_a_token_and_ca_file_then_ls_test_rm(cli: Cli) -> None:
    sim = cli.sim
    result = cli(*add_args(sim), *token(sim), "--ca-file", sim["cafile"],
                 "--default-storage", "local", "--default-bridge", "vmbr0",
                 input=sim["token_secret"] + "\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"node sim2 added: {host_port(sim)[0]}:")
    assert f"PVE node {sim['node']}" in result.stdout  # discovered
    assert sim["token_secret"] not in result.output
    node = stored(cli, "sim2")
    assert node.pve_node == sim["node"] and node.token_id == sim["token_id"]
    assert node.secret_ciphertext.startswith("v1:")
    assert node_secret(cli.box, node) == sim["token_secret"]
    assert (node.default_storage, node.default_bridge) == ("local", "vmbr0")

    listed = cli("nodes", "ls")
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if line.startswith("sim2 ")).split()
    assert row[2:7] == [sim["node"], sim["token_id"], "ca-file", "0", "online"]
    as_json = json.loads(cli("nodes", "ls", "--json").stdout)
    sim2 = next(n for n in as_json["nodes"] if n["name"] == "sim2")
    assert sim2["live"]["online"] is True and sim2["live"]["cpus"] >= 1
    assert sim2["live"]["free_memory"] > 0 and sim2["live_error"] is None
    assert sim["token_secret"] not in cli("nodes", "ls", "--json").stdout

    tested = cli("nodes", "test", "sim2")
    assert tested.exit_code == 0, tested.output
    assert tested.stdout.startswith("node sim2: ok, PVE ")
    assert f"node {sim['node']} online" in tested.stdout
    assert json.loads(cli("nodes", "test", "sim2", "--json").stdout)["ok"] is True

    removed = cli("nodes", "rm", "sim2")
    assert removed.exit_code == 0 and removed.stdout == "node sim2 removed\n"
    assert cli("nodes", "test", "sim2").exit_code == 3


def test_add_with_a_password_and_a_pinned_fingerprint(cli: Cli) -> None:
    sim = cli.sim
    result = cli(*add_args(sim, "pinned"), "--user", sim["user"], "--password-stdin",
                 "--fingerprint", sim["fingerprint"].lower().replace(":", ""),
                 "--pve-node", sim["node"], "--json", input=sim["password"] + "\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["auth"] == "password" and body["fingerprint"] == sim["fingerprint"]
    assert body["version"]["version"] and sim["password"] not in result.output
    assert cli("nodes", "test", "pinned").exit_code == 0


WRONG_PIN = ":".join(["AB"] * 32)


@pytest.mark.parametrize(("extra", "stdin", "code", "message"), [
    (["--token-id", "root@pam!pvesim"], None, 2,
     "missing secret: pass --token-secret-stdin and write the token secret to stdin"),
    (["--token-id", "root@pam!pvesim", "--token-secret-stdin"], "\n", 2,
     "missing secret: --token-secret-stdin read an empty line"),
    (["--user", "root@pam"], None, 2, "missing secret: pass --password-stdin"),
    (["--token-id", "root-pvesim", "--token-secret-stdin"], "x\n", 2,
     "--token-id: API token id 'root-pvesim' is not of the form user@realm!name"),
    (["--user", "root", "--password-stdin"], "x\n", 2, "--user: PVE user 'root' needs its realm"),
    (["--token-id", "a@pam!b", "--user", "root@pam"], "x\n", 2,
     "give either --token-id or --user, not both"),
    ([], None, 2, "--token-id (an API token: user@realm!name) or --user is required"),
    (["--token-id", "a@pam!b", "--password-stdin"], "x\n", 2, "--password-stdin goes with --user"),
    (["--token-id", "a@pam!b", "--token-secret-stdin", "--fingerprint", "12:34"], "x\n", 2,
     "--fingerprint: the fingerprint must be a SHA-256 digest (32 bytes), got 2 bytes"),
    (["--token-id", "a@pam!b", "--token-secret-stdin", "--fingerprint", "zz" * 32], "x\n", 2,
     "--fingerprint: the fingerprint must be hex digits"),
    (["--token-id", "a@pam!b", "--token-secret-stdin", "--fingerprint", WRONG_PIN,
      "--insecure"], "x\n", 2, "choose one TLS trust mode, not --fingerprint and --insecure"),
    (["--token-id", "a@pam!b", "--token-secret-stdin", "--no-test"], "x\n", 2,
     "--pve-node is required with --no-test"),
    (["--token-id", "a@pam!b", "--token-secret-stdin", "--default-bridge", "br/0"], "x\n", 2,
     "--default-bridge: must be 1-64 letters"),
])  # fmt: skip
def test_add_refuses_bad_input(cli: Cli, extra: list[str], stdin: str | None, code: int,
                               message: str) -> None:  # fmt: skip
    result = cli(*add_args(cli.sim, "bad"), *extra, input=stdin)
    assert result.exit_code == code, result.output
    assert message in one_line_error(result.stderr)
    with cli.factory() as session:
        assert session.scalars(select(Node).where(Node.name == "bad")).first() is None


@pytest.mark.parametrize(("extra", "secret", "message"), [
    (["--fingerprint", WRONG_PIN], None,
     "the node's TLS certificate does not match the pinned fingerprint"),
    ([], None, "the node's TLS certificate is not trusted"),  # the system store lacks its CA
    (["--ca-file", "CAFILE"], "wrong-secret", "401"),
])  # fmt: skip
def test_add_tests_the_connection(cli: Cli, extra: list[str], secret: str | None,
                                  message: str) -> None:  # fmt: skip
    sim = cli.sim
    extra = [sim["cafile"] if e == "CAFILE" else e for e in extra]
    result = cli(*add_args(sim, "untrusted"), *token(sim), *extra,
                 input=(secret or sim["token_secret"]) + "\n")  # fmt: skip
    assert result.exit_code == 4, result.output
    line = one_line_error(result.stderr)
    assert line.startswith("error: cannot use node 'untrusted': ") and message in line
    assert sim["token_secret"] not in result.output


def test_add_refuses_an_unreachable_host_a_duplicate_and_an_unknown_pve_node(cli: Cli) -> None:
    sim = cli.sim
    down = cli("nodes", "add", "down", "--host", "127.0.0.1", "--port", "9", *token(sim),
               input="x\n")  # fmt: skip
    assert down.exit_code == 4 and "connection failed" in one_line_error(down.stderr)
    duplicate = cli(*add_args(sim, "sim"), *token(sim), input="x\n")
    assert duplicate.exit_code == 5
    assert "a node named 'sim' already exists" in one_line_error(duplicate.stderr)
    wrong = cli(*add_args(sim, "wrong"), *token(sim), "--ca-file", sim["cafile"], "--pve-node",
                "elsewhere", input=sim["token_secret"] + "\n")  # fmt: skip
    assert wrong.exit_code == 2
    assert f"--pve-node: 'elsewhere' is not in the cluster (it has {sim['node']})" in (
        one_line_error(wrong.stderr))  # fmt: skip


def test_test_reports_a_refused_token(cli: Cli) -> None:
    sim = cli.sim
    added = cli(*add_args(sim, "stale"), *token(sim), "--ca-file", sim["cafile"], "--pve-node",
                sim["node"], "--no-test", input="not-the-secret\n")  # fmt: skip
    assert added.exit_code == 0 and "not tested" in added.stdout
    result = cli("nodes", "test", "stale")
    assert result.exit_code == 4
    line = one_line_error(result.stderr)
    assert line.startswith("error: node stale: ") and "401" in line
    assert "not-the-secret" not in result.output
    listed = cli("nodes", "ls")
    assert listed.exit_code == 0
    assert next(r for r in listed.stdout.splitlines() if r.startswith("stale")).split()[6] == (
        "unreachable")  # fmt: skip
    assert "warning: node stale: " in listed.stderr
    missing = cli("nodes", "test", "nope")
    assert missing.exit_code == 3
    assert "no node named 'nope' (known: sim, stale)" in one_line_error(missing.stderr)


def test_rm_force_refuses_while_a_run_is_under_way(cli: Cli) -> None:
    cli.add_container(hostname="busy", lifecycle=Lifecycle.CREATING, vmid=9178)
    refused = cli("nodes", "rm", "sim", "--force")
    assert refused.exit_code == 5
    assert one_line_error(refused.stderr) == (
        "error: node 'sim' has 1 container(s) being created or destroyed: wait for their runs "
        "to end (provisioner ls --node sim)")  # fmt: skip
    with cli.factory() as session:
        assert len(session.scalars(select(Container)).all()) == 1


def test_rm_refuses_while_containers_reference_the_node(cli: Cli) -> None:
    cli.add_container(hostname="kept-a", lifecycle=Lifecycle.READY, vmid=9179)
    cli.add_container(hostname="kept-b", lifecycle=Lifecycle.DESTROYED)
    refused = cli("nodes", "rm", "sim")
    assert refused.exit_code == 5
    assert ("node 'sim' still has 2 container record(s), 1 not destroyed: destroy them first"
            in one_line_error(refused.stderr))  # fmt: skip
    assert "--force" in refused.stderr
    forced = cli("nodes", "rm", "sim", "--force")
    assert forced.exit_code == 0, forced.output
    assert "with 2 container record(s); their PVE containers were left alone" in forced.stdout
    with cli.factory() as session:
        assert session.scalars(select(Container)).all() == []
        assert session.scalars(select(Node)).all() == []


def test_nodes_of_the_stored_kind_connect(cli: Cli) -> None:
    """What ``nodes add`` stores is what the worker uses (provisioner.nodes)."""
    sim = cli.sim
    assert cli(*add_args(sim, "viaworker"), *token(sim), "--ca-file", sim["cafile"],
               input=sim["token_secret"] + "\n").exit_code == 0  # fmt: skip
    with client_for(stored(cli, "viaworker"), cli.box) as client:
        assert client.version()["version"]

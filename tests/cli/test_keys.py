"""``provisioner keys``: rotation with a key file and with
PROVISIONER_SECRET_KEY; afterwards every stored secret still decrypts
(with the new key alone) and the node still answers.  On SQLite and on
PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import Result
from sqlalchemy import select

from provisioner.models import Lifecycle, Node
from provisioner.requests import stored_variables
from provisioner.secrets.box import generate_key, key_id
from provisioner.secrets.keyfile import load_secret_box, parse_env_keys
from provisioner.secrets.vault import (
    container_root_password,
    container_ssh_private_key,
    node_secret,
)
from tests.cli.conftest import Cli
from tests.cli.test_containers import one_line_error
from tests.databases import BOTH

pytestmark = BOTH


def keyed_by_file(cli: Cli, tmp_path: Path) -> tuple[Cli, Path]:
    """The same installation with its key moved from the environment into a key file."""
    key_file = tmp_path / "keys" / "secret.key"
    key_file.parent.mkdir()
    key_file.write_text(cli.env["PROVISIONER_SECRET_KEY"] + "\n")
    key_file.chmod(0o600)
    env = {**cli.env, "PROVISIONER_SECRET_KEY_FILE": str(key_file)}
    del env["PROVISIONER_SECRET_KEY"]
    from provisioner.config import Settings

    return Cli(env=env, settings=Settings.from_env(environ=env), sim=cli.sim), key_file


def make_secrets(cli: Cli) -> tuple[str, str]:
    """A container with a root password given on stdin and a generated secret
    variable; returns (its id, the password)."""
    result = cli("create", "-t", "redis", "-H", "keyed", "--password-stdin", "--json",
                 input="Root-Pass-1234\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["id"], "Root-Pass-1234"


def everything_decrypts(cli: Cli, key: str, cid: str, password: str, redis_password: str,
                        ssh_key: str | None) -> None:  # fmt: skip
    """Every secret decrypts with ``key`` alone, to what it was."""
    box = load_secret_box(key, Path("/nonexistent"))
    with cli.factory() as session:
        node = session.scalars(select(Node).where(Node.name == "sim")).one()
        assert node_secret(box, node) == cli.sim["token_secret"]
    ct = cli.container(cid)
    assert container_root_password(box, ct) == password
    assert container_ssh_private_key(box, ct) == ssh_key
    assert stored_variables(box, ct)["redis_password"] == redis_password


def file_keys(key_file: Path) -> list[str]:
    return [line for line in key_file.read_text().splitlines() if not line.startswith("#")]


def test_rotate_with_a_key_file(cli: Cli, tmp_path: Path) -> None:
    cli, key_file = keyed_by_file(cli, tmp_path)
    cid, password = make_secrets(cli)
    before = cli.container(cid)
    redis_password = stored_variables(cli.box, before)["redis_password"]
    ssh_key = container_ssh_private_key(cli.box, before)
    old_id = cli.box.current_key_id

    listed = cli("keys", "ls", "--json")
    assert json.loads(listed.stdout)["keys"] == [{"id": old_id, "current": True, "secrets": 4}]

    result = cli("keys", "rotate")
    assert result.exit_code == 0, result.output
    (new_key,) = file_keys(key_file)  # the old key is retired
    new_id = key_id(parse_env_keys(new_key)[0])
    assert new_id != old_id
    assert result.stdout.splitlines() == [
        f"key file {key_file}: new key {new_id} is current",
        f"re-encrypted 4 secret(s) with key {new_id} (0 already used it)",
        f"retired key(s) {old_id}",
    ]
    assert "running web apps have loaded the new key" in result.stderr
    assert new_key not in result.output and cli.env.get("PROVISIONER_SECRET_KEY") is None
    assert key_file.stat().st_mode & 0o777 == 0o600
    everything_decrypts(cli, new_key, cid, password, redis_password, ssh_key)
    # the node's secret, decrypted by the CLI with the new key, still logs in
    assert cli("nodes", "test", "sim").exit_code == 0
    assert json.loads(cli("keys", "ls", "--json").stdout)["keys"] == [
        {"id": new_id, "current": True, "secrets": 4}
    ]


def test_rotate_keep_old_then_retire(cli: Cli, tmp_path: Path) -> None:
    cli, key_file = keyed_by_file(cli, tmp_path)
    old_id = cli.box.current_key_id
    result = cli("keys", "rotate", "--keep-old", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["kept"] == [old_id] and body["retired"] == [] and body["reencrypted"] == 1
    assert len(file_keys(key_file)) == 2
    current = cli("keys", "retire", body["current"])
    assert current.exit_code == 2 and "is the current key" in one_line_error(current.stderr)
    unknown = cli("keys", "retire", "00000000")
    assert unknown.exit_code == 2 and "holds no key '00000000'" in unknown.stderr
    retired = cli("keys", "retire", old_id)
    assert retired.exit_code == 0 and retired.stdout == f"retired key {old_id}\n"
    assert len(file_keys(key_file)) == 1


def test_retire_refuses_a_key_still_in_use(cli: Cli, tmp_path: Path) -> None:
    cli, key_file = keyed_by_file(cli, tmp_path)
    old_id = cli.box.current_key_id
    from provisioner.secrets.keyfile import add_key_to_file

    add_key_to_file(key_file)  # a new current key, nothing re-encrypted yet
    result = cli("keys", "retire", old_id)
    assert result.exit_code == 5
    assert f"1 stored secret(s) still use key {old_id}: run provisioner keys rotate first" in (
        one_line_error(result.stderr))  # fmt: skip


def test_rotate_with_the_environment_variable(cli: Cli) -> None:
    cid, password = make_secrets(cli)
    ct = cli.container(cid)
    redis_password = stored_variables(cli.box, ct)["redis_password"]
    ssh_key = container_ssh_private_key(cli.box, ct)
    old = cli.env["PROVISIONER_SECRET_KEY"]

    single = cli("keys", "rotate")
    assert single.exit_code == 2
    assert "PROVISIONER_SECRET_KEY holds one key: put a new one first" in (
        one_line_error(single.stderr))  # fmt: skip

    generated = cli("keys", "generate")
    assert generated.exit_code == 0
    new = generated.stdout.strip()
    assert len(parse_env_keys(new)) == 1 and "shown once" in generated.stderr

    both = f"{new},{old}"
    result: Result = cli("keys", "rotate", PROVISIONER_SECRET_KEY=both)
    assert result.exit_code == 0, result.output
    new_id, old_id = (key_id(k) for k in parse_env_keys(both))
    assert result.stdout.splitlines() == [
        f"re-encrypted 4 secret(s) with key {new_id} (0 already used it)",
        f"key(s) {old_id} no longer used: remove them from PROVISIONER_SECRET_KEY (keep its "
        "first entry), then restart",
    ]
    assert new not in result.output and old not in result.output
    everything_decrypts(cli, new, cid, password, redis_password, ssh_key)
    assert cli("nodes", "test", "sim", PROVISIONER_SECRET_KEY=new).exit_code == 0
    again = cli("keys", "rotate", "--json", PROVISIONER_SECRET_KEY=both)
    assert json.loads(again.stdout)["reencrypted"] == 0
    retire = cli("keys", "retire", old_id, PROVISIONER_SECRET_KEY=both)
    assert retire.exit_code == 2 and "remove the key from the variable itself" in retire.stderr


def test_rotate_refuses_when_a_secret_uses_an_unknown_key(cli: Cli, tmp_path: Path) -> None:
    cli, key_file = keyed_by_file(cli, tmp_path)
    before = key_file.read_text()
    other = generate_key()
    cli2_env = {"PROVISIONER_SECRET_KEY": other}
    # a node stored with a key this installation does not have
    added = cli("nodes", "add", "foreign", "--host", "127.0.0.1", "--port", "9", "--pve-node",
                "pve", "--token-id", "a@pve!b", "--token-secret-stdin", "--no-test",
                input="s3cret\n", **cli2_env)  # fmt: skip
    assert added.exit_code == 0, added.output
    result = cli("keys", "rotate")
    assert result.exit_code == 1
    assert (
        f"1 stored secret(s) use key(s) {key_id(parse_env_keys(other)[0])}, which are not "
        "loaded" in one_line_error(result.stderr)
    )
    assert key_file.read_text() == before  # nothing was changed
    listed = cli("keys", "ls")
    assert "cannot be decrypted" in listed.stderr
    # the listings still work; the node says why it has no live status
    cli.add_container(node="foreign", hostname="abroad", vmid=9170, lifecycle=Lifecycle.READY)
    nodes = cli("nodes", "ls")
    assert nodes.exit_code == 0 and "warning: node foreign: cannot decrypt the secret" in (
        nodes.stderr)  # fmt: skip
    containers = json.loads(cli("ls", "--json").stdout)["containers"]
    assert containers[0]["pve_error"].startswith("cannot decrypt the secret")
    tested = cli("nodes", "test", "foreign")
    assert tested.exit_code == 1 and "cannot decrypt the secret" in one_line_error(tested.stderr)

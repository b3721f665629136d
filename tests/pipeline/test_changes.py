"""Day-two changes through the real stack (REST API, CLI subprocesses, Redis,
a real worker, the simulator): snapshots taken, listed, rolled back to and
removed; a resync that fails its health check rolled back automatically
(checksums of the deployed files and a database row the same before and
after); ``keep``; ``set`` in place; protection; and the ownership guard
before every new action.

One container of the ``stateful`` test template serves the module, in
order: each test leaves it ready for the next.  The tests run on SQLite,
then those marked ``BOTH`` on PostgreSQL (a stack and a container of each):
a resync rolled back, snapshot create, rollback and delete, set, a clone,
the guard in front of every change.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from provisioner.db import session_scope
from provisioner.models import Container, ContainerEvent, Lifecycle
from provisioner.requests import request_action
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import container_root_password, container_ssh_private_key
from tests.cli.conftest import run
from tests.databases import BOTH, SQLITE_ONLY
from tests.pipeline.conftest import NODE, Stack, api_client, module_stack
from tests.pipeline.test_ownership import pve_client, tasks_on
from tests.pipeline.test_templates_e2e import ssh_run
from tests.pvesim.helpers import admin, token_api

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
TEMPLATES = Path(__file__).parent / "templates"
MADE: list[str] = []
STATE = ("sha256sum /srv/app/health.txt /etc/app/app.ini; "
         "python3 -c \"import sqlite3; print(sqlite3.connect('/var/lib/app/app.db')"
         ".execute('SELECT id, body FROM notes ORDER BY id').fetchall())\"")  # fmt: skip


@pytest.fixture(scope="module")
def env_stack(sim: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
              db_backend: str) -> Iterator[Stack]:  # fmt: skip
    with module_stack(sim, tmp_path_factory, "changes", MADE, [TEMPLATES],
                      {"PROVISIONER_AUTO_SNAPSHOTS_KEEP": "1"}, db_backend) as stack:  # fmt: skip
        yield stack


@pytest.fixture(scope="module")
def api(env_stack: Stack) -> Iterator[Callable[..., Any]]:
    with api_client(env_stack) as call:
        yield call


@pytest.fixture(scope="module")
def ct(env_stack: Stack, api: Callable[..., Any]) -> str:
    """The module's container, ready."""
    answer = api("POST", "/containers", {"template": "stateful", "node": NODE,
                                         "hostname": "stateful-1"})  # fmt: skip
    assert answer.status_code == 201, answer.json
    cid: str = answer.json["id"]
    MADE.append(cid)
    done = env_stack.wait(cid, timeout=400)
    assert done.lifecycle == Lifecycle.READY, (done.error_message, env_stack.worker_logs()[-3000:])
    return cid


def terminal_after(stack: Stack, cid: str, after: int, timeout: float = 240) -> ContainerEvent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stack.factory() as session:
            row = (session.query(ContainerEvent)
                   .filter(ContainerEvent.container_id == cid, ContainerEvent.seq > after,
                           ContainerEvent.type.in_(("complete", "error")))
                   .order_by(ContainerEvent.seq).first())  # fmt: skip
            if row is not None:
                session.expunge(row)
                return row
        time.sleep(0.2)
    raise TimeoutError(f"no terminal event after {after}: {stack.worker_logs()[-3000:]}")


def messages_after(stack: Stack, cid: str, after: int) -> list[tuple[str, str]]:
    with stack.factory() as session:
        rows = (session.query(ContainerEvent)
                .filter(ContainerEvent.container_id == cid, ContainerEvent.seq > after)
                .order_by(ContainerEvent.seq).all())  # fmt: skip
        return [(r.type, r.message) for r in rows]


def act(stack: Stack, api: Callable[..., Any], method: str, path: str,
        body: dict[str, Any] | None = None) -> ContainerEvent:  # fmt: skip
    answer = api(method, path, body)
    assert answer.status_code == 202, answer.json
    after = int(answer.json["events_url"].partition("after=")[2] or 0)
    return terminal_after(stack, answer.json["container"], after)


def state(stack: Stack, cid: str) -> str:
    return ssh_run(stack, stack.container(cid), STATE)


def template_dir(stack: Stack) -> Path:
    return stack.settings.templates_dir / "stateful"


def break_template(stack: Stack) -> None:
    """The next resync deploys a health page that fails the check, after a
    script that writes to the database."""
    (template_dir(stack) / "files/health.txt.j2").write_text("failing\n")
    script = template_dir(stack) / "scripts/20-write.sh"
    script.write_text("#!/bin/bash\nset -e\npython3 -c \"import sqlite3; "
                      "db = sqlite3.connect('/var/lib/app/app.db'); "
                      "db.execute(\\\"INSERT INTO notes (body) VALUES ('resync was here')\\\"); "
                      "db.commit()\"\n")  # fmt: skip
    script.chmod(0o755)


def mend_template(stack: Stack) -> None:
    (template_dir(stack) / "files/health.txt.j2").write_text("{{ health_word }}\n")
    (template_dir(stack) / "scripts/20-write.sh").unlink(missing_ok=True)


def snapshot_names(api: Callable[..., Any], cid: str) -> list[str]:
    answer = api("GET", f"/containers/{cid}/snapshots")
    assert answer.status_code == 200, answer.json
    return [s["name"] for s in answer.json["snapshots"]]


# -- safe change -------------------------------------------------------------------


@BOTH
def test_a_resync_that_fails_its_health_check_is_rolled_back(
        env_stack: Stack, api: Callable[..., Any], ct: str) -> None:  # fmt: skip
    stack = env_stack
    before = state(stack, ct)
    assert "first note" in before and "resync was here" not in before
    vmid = stack.container(ct).vmid
    break_template(stack)
    try:
        started = time.monotonic()
        answer = api("POST", f"/containers/{ct}/actions/resync", {})
        assert answer.status_code == 202, answer.json
        after = int(answer.json["events_url"].partition("after=")[2] or 0)
        end = terminal_after(stack, ct, after)
        took = time.monotonic() - started
    finally:
        mend_template(stack)
    assert end.type == "error" and end.outcome == "rolled-back", end.message
    assert (
        "health check failed" in end.message
        and "rolled back to the safety snapshot 'auto-resync-" in end.message
    )
    seen = messages_after(stack, ct, after)
    assert any(t == "step" and m.startswith("taking snapshot 'auto-resync-") for t, m in seen)
    assert any(t == "warning" and "rolling back to the safety snapshot" in m for t, m in seen)
    assert any(t == "step" and "is as it was before the resync" in m for t, m in seen)
    record = stack.wait(ct)  # the lifecycle follows the terminal event
    assert record.lifecycle == Lifecycle.READY and record.safe_change is None
    assert record.vmid == vmid and record.error_message is None
    assert state(stack, ct) == before  # files and the row as they were
    assert [n for n in snapshot_names(api, ct) if n.startswith("auto-resync-")]
    print(f"\nautomatic rollback: resync -> rolled back in {took:.1f}s")


@SQLITE_ONLY
def test_keep_leaves_the_failure_and_a_user_rollback_restores(
        env_stack: Stack, api: Callable[..., Any], ct: str) -> None:  # fmt: skip
    stack = env_stack
    before = state(stack, ct)
    break_template(stack)
    try:
        end = act(stack, api, "POST", f"/containers/{ct}/actions/resync", {"on_failure": "keep"})
    finally:
        mend_template(stack)
    assert end.type == "error" and end.outcome == "error", end.message
    assert stack.wait(ct).lifecycle == Lifecycle.ERROR
    broken = state(stack, ct)
    assert broken != before and "resync was here" in broken
    autos = [n for n in snapshot_names(api, ct) if n.startswith("auto-resync-")]
    assert len(autos) == 2  # the kept failure does not prune
    # the user rolls back to the snapshot taken before the failed resync
    answer = api("POST", f"/containers/{ct}/snapshots/{autos[-1]}/rollback")
    assert answer.status_code == 202, answer.json
    assert "loses everything written to the container since then" in answer.json["loses"]
    after = int(answer.json["events_url"].partition("after=")[2] or 0)
    end = terminal_after(stack, ct, after)
    assert (end.type, end.outcome) == ("complete", "done"), end.message
    assert state(stack, ct) == before
    # a resync that works clears the error and prunes to the newest safety snapshot
    end = act(stack, api, "POST", f"/containers/{ct}/actions/resync")
    assert (end.type, end.outcome) == ("complete", "ready"), end.message
    assert stack.wait(ct).lifecycle == Lifecycle.READY
    autos_now = [n for n in snapshot_names(api, ct) if n.startswith("auto-")]
    assert len(autos_now) == 1 and autos_now[0] not in autos  # PROVISIONER_AUTO_SNAPSHOTS_KEEP=1


# -- snapshots from the CLI ----------------------------------------------------------


@BOTH
def test_snapshots_from_the_cli(env_stack: Stack, api: Callable[..., Any], ct: str) -> None:
    stack = env_stack
    made = run(stack, "snapshot", "create", ct, "before-upgrade", "-d", "a known good state",
               "--follow")  # fmt: skip
    assert made.returncode == 0, made.stderr
    listed = run(stack, "snapshot", "ls", ct, "--json")
    assert listed.returncode == 0, listed.stderr
    snaps = {s["name"]: s for s in json.loads(listed.stdout)["snapshots"]}
    assert snaps["before-upgrade"]["description"] == "a known good state"
    assert snaps["before-upgrade"]["automatic"] is False and snaps["before-upgrade"]["taken_at"]
    table = run(stack, "snapshot", "ls", ct)
    assert "before-upgrade" in table.stdout and "a known good state" in table.stdout

    again = run(stack, "snapshot", "create", ct, "before-upgrade", "--follow")
    assert again.returncode == 1 and "already has a snapshot 'before-upgrade'" in again.stderr
    bad = run(stack, "snapshot", "create", ct, "1bad name")
    assert bad.returncode == 2 and bad.stderr.startswith("error: name: ")
    reserved = run(stack, "snapshot", "create", ct, "current")
    assert reserved.returncode == 2 and "reserved" in reserved.stderr
    unknown = run(stack, "snapshot", "rollback", ct, "nope", "--yes")
    assert unknown.returncode == 2 and "has no snapshot 'nope'" in unknown.stderr
    unasked = run(stack, "snapshot", "rollback", ct, "before-upgrade")  # no tty, no --yes
    assert unasked.returncode == 2 and "loses everything written" in unasked.stderr
    assert "pass --yes" in unasked.stderr

    ssh_run(stack, stack.container(ct), "echo later > /srv/app/later.txt")
    back = run(stack, "snapshot", "rollback", ct, "before-upgrade", "--yes", "--follow")
    assert back.returncode == 0, back.stderr
    assert ssh_run(stack, stack.container(ct), "ls /srv/app").split() == ["health.txt"]
    gone = run(stack, "snapshot", "rm", ct, "before-upgrade", "--follow")
    assert gone.returncode == 0, gone.stderr
    assert "before-upgrade" not in snapshot_names(api, ct)


# -- set -------------------------------------------------------------------------------


@BOTH
def test_set_changes_in_place(env_stack: Stack, api: Callable[..., Any], ct: str) -> None:
    stack = env_stack
    record = stack.container(ct)
    before = state(stack, ct)
    # refused before anything is queued, naming the field
    for body, field in [({"disk": 2}, "disk"), ({"disk": 1}, "disk"), ({"memory": 8}, "memory"),
                        ({"cores": 0}, "cores"), ({"colour": "red"}, "colour"),
                        ({"tags": ["no spaces"]}, "tags"), ({}, "settings"),
                        ({"on_failure": "maybe"}, "on_failure")]:  # fmt: skip
        refused = api("PATCH", f"/containers/{ct}", body)
        assert refused.status_code == 400 and refused.json["field"] == field, (body, refused.json)
    shrink = run(stack, "set", ct, "--disk", "1")
    assert shrink.returncode == 2 and shrink.stderr.startswith("error: disk: 1 GiB is smaller")

    end = act(stack, api, "PATCH", f"/containers/{ct}",
              {"cores": 2, "memory": 384, "swap": 64, "disk": 3, "tags": ["web", "blue"],
               "onboot": True, "description": "the shop's staging site"})  # fmt: skip
    assert (end.type, end.outcome) == ("complete", "done"), end.message
    config = pve_client(stack).get_config(record.vmid or 0)
    assert (config["cores"], config["memory"], config["swap"]) == (2, 384, 64)
    assert "size=3G" in config["rootfs"] and config["onboot"] == 1
    assert config["tags"] == "blue;provisioner;web"  # PVE stores tags sorted (get_unique_tags)
    assert config["description"].startswith("the shop's staging site\n")
    assert f"lxc-provisioner-id: {ct}" in config["description"]  # still ours
    after_set = stack.container(ct)
    assert after_set.vmid == record.vmid and after_set.request["disk"] == 3
    assert state(stack, ct) == before  # not recreated: the data is there
    again = run(stack, "set", ct, "--disk", "3")
    assert again.returncode == 2 and "the same as the disk now" in again.stderr
    # what PVE cannot hot-plug into the running CT waits for its next start
    # (vmconfig_hotplug_pending); set says so in a warning and its result
    lxc = token_api(stack.sim).nodes(stack.sim["node"]).lxc(record.vmid)
    lxc.config.put(searchdomain="example.org")
    try:
        end = act(stack, api, "PATCH", f"/containers/{ct}", {"onboot": False})
        assert (end.type, end.outcome) == ("complete", "done"), end.message
        assert end.message.endswith("; pending until the next restart: searchdomain=example.org")
    finally:
        lxc.config.put(revert="searchdomain")


@SQLITE_ONLY
def test_protection_refuses_destroy_and_rollback(
        env_stack: Stack, api: Callable[..., Any], ct: str) -> None:  # fmt: skip
    stack = env_stack
    done = run(stack, "set", ct, "--protect", "--follow")
    assert done.returncode == 0, done.stderr
    listed = api("GET", f"/containers/{ct}/snapshots").json
    assert listed["protected"] is True
    name = listed["snapshots"][-1]["name"]
    refused = api("POST", f"/containers/{ct}/snapshots/{name}/rollback")
    assert refused.status_code == 409 and refused.json["field"] == "protection"
    cli_refused = run(stack, "snapshot", "rollback", ct, name, "--yes")
    assert cli_refused.returncode == 5 and "is protected" in cli_refused.stderr
    end = act(stack, api, "POST", f"/containers/{ct}/actions/destroy")
    assert end.type == "error" and "is protected" in end.message and "--unprotect" in end.message
    assert pve_client(stack).exists(stack.container(ct).vmid or 0)
    assert stack.wait(ct).lifecycle == Lifecycle.ERROR  # a failed destroy, as always
    done = run(stack, "set", ct, "--unprotect", "--follow")
    assert done.returncode == 0, done.stderr
    end = act(stack, api, "POST", f"/containers/{ct}/actions/resync")
    assert (end.type, end.outcome) == ("complete", "ready"), end.message


# -- clone ---------------------------------------------------------------------------------


def machine_id(stack: Stack, cid: str) -> str:
    return ssh_run(stack, stack.container(cid), "cat /etc/machine-id").strip()


@BOTH
def test_a_clone_has_the_data_and_a_fresh_identity(
        env_stack: Stack, api: Callable[..., Any], ct: str) -> None:  # fmt: skip
    stack = env_stack
    source = stack.container(ct)
    source_state, source_mid = state(stack, ct), machine_id(stack, ct)
    made = run(stack, "clone", ct, "--env", "staging", "-H", "stateful-staging", "--follow",
               "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr + stack.worker_logs()[-3000:]
    first = json.loads(made.stdout.splitlines()[0])
    cid, password = first["id"], first["root_password"]
    MADE.append(cid)
    clone = stack.container(cid)
    assert clone.lifecycle == Lifecycle.READY and clone.vmid not in (None, source.vmid)
    assert (clone.environment, clone.source_id, clone.hostname) == (
        "staging",
        ct,
        "stateful-staging",
    )
    assert state(stack, cid) == source_state  # the source's files and database row
    # a fresh identity
    assert machine_id(stack, cid) != source_mid and len(machine_id(stack, cid)) == 32
    assert clone.ssh_host_key != source.ssh_host_key and clone.ip != source.ip
    pve = pve_client(stack)
    mac = lambda vmid: pve.get_config(vmid)["net0"].partition("hwaddr=")[2][:17]  # noqa: E731
    assert mac(clone.vmid or 0) != mac(source.vmid or 0)
    assert pve.get_config(clone.vmid or 0)["hostname"] == "stateful-staging"
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    assert password == container_root_password(box, clone) != container_root_password(box, source)
    shadow = ssh_run(stack, clone, "grep '^root:' /etc/shadow")
    assert shadow != ssh_run(stack, source, "grep '^root:' /etc/shadow")
    # the source's key no longer opens the clone
    source_key = container_ssh_private_key(box, source)
    assert source_key is not None

    async def login_with_the_sources_key() -> None:
        async with asyncssh.connect(clone.ip, username="root", known_hosts=None, config=[],
                                    client_keys=[asyncssh.import_private_key(source_key)],
                                    connect_timeout=20):  # fmt: skip
            pass

    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(login_with_the_sources_key())
    # the full clone dropped the source's snapshot; no secret in any event
    deadline = time.monotonic() + 30  # removed after the copy, not waited for
    while [n for n in snapshot_names(api, ct) if n.startswith("clone-")]:
        assert time.monotonic() < deadline, snapshot_names(api, ct)
        time.sleep(0.2)
    texts = " ".join(m for _t, m in messages_after(stack, cid, 0))
    assert password not in texts and (container_root_password(box, source) or "x") not in texts
    assert "giving the clone its own identity" in texts


@SQLITE_ONLY
def test_a_linked_clone_from_the_api(env_stack: Stack, api: Callable[..., Any], ct: str) -> None:
    stack = env_stack
    refused = api("POST", f"/containers/{ct}/clone", {"hostname": "x", "full": False,
                                                      "storage": "local-lvm"})  # fmt: skip
    assert refused.status_code == 400 and refused.json["field"] == "storage", refused.json
    bad = api("POST", f"/containers/{ct}/clone", {"hostname": "ok-name", "environment": "Prod!"})
    assert bad.status_code == 400 and bad.json["field"] == "environment", bad.json
    answer = api("POST", f"/containers/{ct}/clone", {"hostname": "stateful-dev", "full": False,
                                                     "environment": "development"})  # fmt: skip
    assert answer.status_code == 201, answer.json
    cid = answer.json["id"]
    MADE.append(cid)
    done = stack.wait(cid, timeout=300)
    assert done.lifecycle == Lifecycle.READY, done.error_message
    assert state(stack, cid) == state(stack, ct)
    kept = [n for n in snapshot_names(api, ct) if n.startswith("clone-")]
    assert kept == [f"clone-{cid[:8]}"]  # a linked clone keeps what it was made from
    listed = api("GET", f"/containers/{cid}").json
    assert listed["environment"] == "development"


@SQLITE_ONLY
def test_a_worker_killed_mid_clone_leaves_one_clone(
        env_stack: Stack, api: Callable[..., Any], ct: str) -> None:  # fmt: skip
    """kill -9 of the worker while PVE copies: the run is handed on, finds its
    clone by the marker, and never makes a second one."""
    stack = env_stack
    admin(stack.sim, "task", {"type": "vzclone", "delay": 6, "count": 1})
    answer = api("POST", f"/containers/{ct}/clone", {"hostname": "stateful-killed"})
    assert answer.status_code == 201, answer.json
    cid = answer.json["id"]
    MADE.append(cid)
    deadline = time.monotonic() + 60
    while not any(m.startswith("cloning CT") for _t, m in messages_after(stack, cid, 0)):
        assert time.monotonic() < deadline, stack.worker_logs()[-3000:]
        time.sleep(0.1)
    stack.kill_worker(0)
    stack.workers.pop(0)
    stack.start_workers(1)
    done = stack.wait(cid, timeout=300)
    assert done.lifecycle == Lifecycle.READY, (done.error_message, stack.worker_logs()[-3000:])
    named = [c for c in pve_client(stack).containers() if c.name == "stateful-killed"]
    assert [c.vmid for c in named] == [done.vmid]  # one clone, the record's
    kinds = [t for t, _m in messages_after(stack, cid, 0)]
    assert "recovering" in kinds and kinds[-1] == "complete"
    assert state(stack, cid) == state(stack, ct)


# -- sync and promote ------------------------------------------------------------------


def by_hostname(stack: Stack, hostname: str) -> str:
    with stack.factory() as session:
        row = session.query(Container).filter_by(hostname=hostname).one()
        return str(row.id)


def rows(stack: Stack, cid: str) -> list[str]:
    out = ssh_run(stack, stack.container(cid), "python3 -c \"import sqlite3; [print(r[0]) for r in "
                  "sqlite3.connect('/var/lib/app/app.db').execute('SELECT body FROM notes "
                  "ORDER BY id')]\"")  # fmt: skip
    return out.splitlines()


def sql(stack: Stack, cid: str, body: str) -> None:
    ssh_run(stack, stack.container(cid), "python3 -c \"import sqlite3; db = sqlite3.connect("
            f"'/var/lib/app/app.db'); db.execute(\\\"INSERT INTO notes (body) VALUES ('{body}')"
            "\\\"); db.commit()\"")  # fmt: skip


@SQLITE_ONLY
def test_sync_refreshes_a_clone_and_promote_applies_it(
        env_stack: Stack, api: Callable[..., Any], ct: str) -> None:  # fmt: skip
    stack = env_stack
    staging = by_hostname(stack, "stateful-staging")
    refused = api("POST", f"/containers/{ct}/sync")
    assert refused.status_code == 409 and "is not a clone" in refused.json["error"]
    sql(stack, ct, "production order 42")
    sql(stack, staging, "a staging edit")
    done = run(stack, "sync", staging, "--follow")
    assert done.returncode == 0, done.stderr + stack.worker_logs()[-3000:]
    synced = rows(stack, staging)
    assert "production order 42" in synced and "a staging edit" not in synced
    assert "home: http://stateful-staging/" in synced  # rewritten for the clone
    assert "email: [anonymised]" in synced and "email: alice@example.com" not in synced
    assert rows(stack, ct)[-1] == "production order 42"  # the source only read
    text = " ".join(m for _t, m in messages_after(stack, staging, 0))
    assert "running the rewrite hook" in text and "running the anonymise hook" in text
    assert "imported " in text and "taking snapshot 'auto-sync-" in text

    # promote: the source gets the clone's data, rewritten for it
    sql(stack, staging, "approved change")
    unasked = run(stack, "promote", staging)
    assert unasked.returncode == 2 and "pass --yes" in unasked.stderr
    answer = api("POST", f"/containers/{staging}/promote")
    assert answer.status_code == 202 and answer.json["container"] == ct, answer.json
    end = terminal_after(stack, ct, int(answer.json["events_url"].partition("after=")[2] or 0))
    assert (end.type, end.outcome) == ("complete", "done"), end.message
    promoted = rows(stack, ct)
    assert promoted[-1] == "approved change" and "home: http://stateful-1/" in promoted

    # a promote whose import fails leaves the source as it was
    before = state(stack, ct)
    ssh_run(stack, stack.container(ct), "touch /root/fail-import")
    sql(stack, staging, "never promoted")
    answer = api("POST", f"/containers/{staging}/promote", {"on_failure": "rollback"})
    assert answer.status_code == 202, answer.json
    end = terminal_after(stack, ct, int(answer.json["events_url"].partition("after=")[2] or 0))
    assert (end.type, end.outcome) == ("error", "rolled-back"), end.message
    assert "import on" in end.message and "exited with 4" in end.message
    stack.wait(ct)
    assert state(stack, ct) == before and stack.container(ct).lifecycle == Lifecycle.READY
    ssh_run(stack, stack.container(ct), "rm -f /root/fail-import")


# -- the ownership guard ------------------------------------------------------------------


@BOTH
def test_the_guard_stops_every_change_on_a_ct_that_is_not_the_records(
        env_stack: Stack, api: Callable[..., Any], ct: str) -> None:  # fmt: skip
    """Records that claim the module's CT (a stale database): every change
    is queued, and stopped by the guard in the worker; nothing reaches the CT."""
    stack = env_stack
    vmid = stack.container(ct).vmid
    assert vmid is not None
    pve = pve_client(stack)
    before, digest = tasks_on(stack, vmid), pve.get_config(vmid)["digest"]
    changes: list[tuple[str, dict[str, Any]]] = [("snapshot", {"name": "sneaky", "description": None}),
               ("rollback", {"name": "sneaky"}), ("delete-snapshot", {"name": "sneaky"}),
               ("set", {"cores": 3, "on_failure": "rollback", "restart": False}),
               ("resync", {"on_failure": "rollback"})]  # fmt: skip
    for action, params in changes:
        with session_scope(stack.factory) as session:
            real = session.get(Container, ct)
            assert real is not None
            stale = Container(node_id=real.node_id, template="stateful", hostname=f"stale-{action}",
                              vmid=vmid, lifecycle=Lifecycle.READY, request=dict(real.request),
                              finished_phases=list(real.finished_phases))  # fmt: skip
            session.add(stale)
            session.flush()
            sid = stale.id
        MADE.append(sid)
        with stack.factory() as session:
            row = session.get(Container, sid)
            assert row is not None
            queued = request_action(session, stack.settings, stack.redis, row, action, params,
                                    lambda: False)  # fmt: skip
        end = terminal_after(stack, sid, queued.after)
        assert (end.type, end.outcome) == ("error", "failed"), (action, end.message)
        assert "belongs to another container now" in end.message, end.message
        # the record follows its terminal event a moment later (PostgreSQL's
        # timing showed it)
        lost = stack.wait(sid, (Lifecycle.ERROR,), timeout=30)
        assert lost.vmid is None and lost.lifecycle == Lifecycle.ERROR
        # and a record that owns no CT is refused before anything is queued
        refused = api("PATCH", f"/containers/{sid}", {"cores": 2})
        assert refused.status_code == 409 and "owns no container" in refused.json["error"]
    # a clone of a record whose claim is stale: the source is proven first
    with session_scope(stack.factory) as session:
        real = session.get(Container, ct)
        assert real is not None
        stale = Container(node_id=real.node_id, template="stateful", hostname="stale-source",
                          vmid=vmid, lifecycle=Lifecycle.READY, request=dict(real.request))  # fmt: skip
        session.add(stale)
        session.flush()
        sid = stale.id
    MADE.append(sid)
    answer = api("POST", f"/containers/{sid}/clone", {"hostname": "never-made"})
    assert answer.status_code == 201, answer.json
    MADE.append(answer.json["id"])
    failed = stack.wait(answer.json["id"], timeout=120)
    assert failed.lifecycle == Lifecycle.ERROR and failed.vmid is None
    assert "the source stale-source: CT" in (failed.error_message or ""), failed.error_message
    assert "belongs to another container now" in (failed.error_message or "")
    assert tasks_on(stack, vmid) == before  # not one task on the CT
    assert pve.get_config(vmid)["digest"] == digest

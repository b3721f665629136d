"""End to end, template by template: every shipped template provisioned by
real workers into the simulator's containers, its service checked from the
host independently of the pipeline's own health check; the data hooks of the
syncable ones (export, change, import: the data is back), piped over SSH;
DHCP with a late lease; a static address; the events contract of a full
run."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import ipaddress
import json
import re
import shlex
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import Any

import asyncssh
import psycopg
import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from provisioner.events import EVENT_TYPES, STREAMS, Event, EventReader, stream_key
from provisioner.models import Container, Lifecycle, Node
from provisioner.phases import PHASES
from provisioner.requests import CloneRequest, request_clone, stored_variables
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import container_ssh_private_key
from provisioner.ssh.pipe import pipe
from provisioner.ssh.session import FileSpec, SshSession, connect
from provisioner.templates.loader import load_template
from provisioner.templates.model import Template
from provisioner.templates.render import hook_env
from tests.pipeline.conftest import NODE, Stack, destroy_ours
from tests.pipeline.pinned_https import Pinned, last_fingerprint, tiny_png
from tests.pvesim.helpers import admin, token_api

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ALL_PHASES = ["create", "start", "deploy", "scripts", "finalize"]
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WORKERS = 3
FLEET_TIMEOUT = 780.0

# template -> (static host number, below the DHCP pool, variables); the
# slowest first, so that it starts at once
FLEET: dict[str, tuple[int, dict[str, Any]]] = {
    "wordpress": (117, {"site_title": "Fleet WordPress"}),
    "debian-base": (110, {"timezone": "Europe/Berlin", "motd": "fleet motd marker"}),
    "nginx": (111, {"site_title": "Fleet nginx title", "message": "served by the fleet"}),
    "postgresql": (112, {"db_name": "fleetdb", "db_user": "fleetuser"}),
    "redis": (113, {"maxmemory_mb": 64}),
    "python-app": (114, {"app_title": "Fleet notes"}),
}


# helpers ---------------------------------------------------------------------


def ensure_workers(stack: Stack, n: int) -> None:
    """At least ``n`` live workers (the stack is shared by the session)."""
    alive = sum(proc.poll() is None for proc in stack.workers)
    if alive < n:
        stack.start_workers(n - alive)


def destroy_all(stack: Stack, cids: list[str]) -> None:
    """What the ``cleanup`` fixture does, for the module-scoped fleet."""
    from provisioner.nodes import client_for

    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    with stack.factory() as session:
        node = session.query(Node).filter_by(name=NODE).one()
        with client_for(node, box) as pve:
            destroy_ours(pve, [(cid, ct.vmid) for cid in cids
                               if (ct := session.get(Container, cid)) is not None])  # fmt: skip


def all_events(stack: Stack, cid: str, timeout: float = 60) -> list[Event]:
    """Every event of a finished run, up to and including the terminal one.

    Follows the stream: the lifecycle turns ``ready`` a moment before the
    ``complete`` event is published.
    """
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        reader = EventReader(stack.redis, stack.factory, cid)
        return list(reader.events(0, block_ms=250, stop=stop, follow=True))
    finally:
        timer.cancel()


def ts(event: Event) -> float:
    return datetime.fromisoformat(event.ts.replace("Z", "+00:00")).timestamp()


def secret_box(stack: Stack) -> Any:
    return load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)


def variables_of(stack: Stack, ct: Container) -> dict[str, Any]:
    return stored_variables(secret_box(stack), ct)


def ssh_run(stack: Stack, ct: Container, command: str) -> str:
    """Run a command in the container over SSH as root with the container's
    own generated key, pinned to the host key the pipeline recorded."""
    key = container_ssh_private_key(secret_box(stack), ct)
    assert key and ct.ip and ct.ssh_host_key

    async def go() -> str:
        known = asyncssh.import_known_hosts(f"{ct.ip} {ct.ssh_host_key}\n")
        async with asyncssh.connect(ct.ip, username="root", known_hosts=known,
                                    client_keys=[asyncssh.import_private_key(key)],
                                    connect_timeout=20) as conn:  # fmt: skip
            result = await conn.run(command, check=True, timeout=60)
            return str(result.stdout)

    return asyncio.run(go())


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(errors="replace")


def redis_client(ip: str, password: str | None) -> redis_lib.Redis:
    """No retries: redis-py retries authentication errors with backoff."""
    return redis_lib.Redis(host=ip, port=6379, password=password, socket_timeout=10,
                           retry=Retry(NoBackoff(), 0))  # fmt: skip


def describe(stack: Stack, ct: Container) -> str:
    """What went wrong: the error, the container's console in the simulator
    (when its state directory is known) and the workers' log."""
    console = ""
    state_dir = stack.sim.get("state_dir")
    if state_dir and ct.vmid is not None:
        path = Path(state_dir) / "ct" / str(ct.vmid) / "console.log"
        with contextlib.suppress(OSError):
            console = "\n".join(path.read_text(errors="replace").splitlines()[-30:])
    return (f"{ct.template} {ct.id}: lifecycle={ct.lifecycle} error={ct.error_message!r} "
            f"details={ct.error_details!r}\nconsole of CT {ct.vmid}:\n{console}\n"
            f"workers:\n{stack.worker_logs()[-4000:]}")  # fmt: skip


def assert_ready(stack: Stack, ct: Container) -> None:
    assert ct.lifecycle == Lifecycle.READY, describe(stack, ct)
    assert ct.finished_phases == ALL_PHASES, describe(stack, ct)
    assert ct.ip and ct.vmid, describe(stack, ct)
    assert (ct.ssh_host_key_fingerprint or "").startswith("SHA256:"), describe(stack, ct)


def wait_for_vmid(stack: Stack, cid: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ct = stack.container(cid)
        if ct.vmid is not None:
            return ct.vmid
        if ct.lifecycle == Lifecycle.ERROR:
            raise AssertionError(describe(stack, ct))
        time.sleep(0.05)
    raise TimeoutError(f"{cid} got no vmid in {timeout}s; {stack.worker_logs()[-3000:]}")


# 1. every shipped template ------------------------------------------------------


@dataclass
class Fleet:
    cids: dict[str, str]
    containers: dict[str, Container]
    seconds: dict[str, float]  # first event to complete, per template


@pytest.fixture(scope="module")
def fleet(stack: Stack) -> Iterator[Fleet]:
    """All shipped templates provisioned at once by a few workers."""
    cids: dict[str, str] = {}
    try:
        for template, (host, variables) in FLEET.items():
            cids[template] = stack.submit(
                template, f"tpl-{template}", ip=f"{stack.address(host)}/24",
                gateway=stack.sim["gateway"], variables=variables)  # fmt: skip
        ensure_workers(stack, WORKERS)
        deadline = time.monotonic() + FLEET_TIMEOUT
        containers = {t: stack.wait(cid, timeout=max(1.0, deadline - time.monotonic()))
                      for t, cid in cids.items()}  # fmt: skip
        seconds: dict[str, float] = {}
        for template, cid in cids.items():
            events = all_events(stack, cid, timeout=30)
            if events and events[-1].type == "complete":
                seconds[template] = round(ts(events[-1]) - ts(events[0]), 1)
        print(f"\nper-template provisioning seconds ({WORKERS} workers): {seconds}")
        yield Fleet(cids=cids, containers=containers, seconds=seconds)
    finally:
        destroy_all(stack, list(cids.values()))


def fleet_member(stack: Stack, fleet: Fleet, template: str) -> Container:
    ct = fleet.containers[template]
    assert_ready(stack, ct)
    assert ct.ip == stack.address(FLEET[template][0])
    assert ct.template == template
    return ct


def test_fleet_every_shipped_template_is_covered(stack: Stack) -> None:
    shipped = {p.name for p in stack.settings.templates_dir.iterdir()
               if (p / "template.toml").is_file()}  # fmt: skip
    from tests.conftest import ROOT

    repo = {p.name for p in (ROOT / "templates_lxc").iterdir() if (p / "template.toml").is_file()}
    assert repo <= shipped
    assert set(FLEET) == repo, "a shipped template is not provisioned by this file"


def test_fleet_nginx_serves_its_page(stack: Stack, fleet: Fleet) -> None:
    ct = fleet_member(stack, fleet, "nginx")
    status, body = http_get(f"http://{ct.ip}/")
    assert status == 200
    assert "<h1>Fleet nginx title</h1>" in body
    assert "served by the fleet" in body
    status, body = http_get(f"http://{ct.ip}/healthz")
    assert (status, body.strip()) == (200, "ok")
    assert http_get(f"http://{ct.ip}/no-such-page")[0] == 404
    assert any(s["port"] == 80 and s["proto"] == "tcp" for s in ct.services), ct.services


def test_fleet_postgresql_accepts_the_generated_password(stack: Stack, fleet: Fleet) -> None:
    ct = fleet_member(stack, fleet, "postgresql")
    variables = variables_of(stack, ct)
    assert variables["db_name"] == "fleetdb" and variables["db_user"] == "fleetuser"
    password = variables["db_password"]
    assert isinstance(password, str) and len(password) == 32
    # the secret is not stored in clear in the request
    assert "db_password" not in ct.request["variables"]
    assert password not in json.dumps(ct.request)
    with psycopg.connect(host=ct.ip, port=5432, dbname="fleetdb", user="fleetuser",
                         password=password, connect_timeout=10) as conn:  # fmt: skip
        row = conn.execute("SELECT 1, current_user, current_database()").fetchone()
        assert row == (1, "fleetuser", "fleetdb")
        (owner,) = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'fleetdb'"
        ).fetchone() or (None,)
        assert owner == "fleetuser"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=ct.ip, port=5432, dbname="fleetdb", user="fleetuser",
                        password=password + "x", connect_timeout=10).close()  # fmt: skip
    assert any(s["port"] == 5432 for s in ct.services), ct.services


def test_fleet_postgresql_baseline_snapshot(stack: Stack, fleet: Fleet) -> None:
    ct = fleet_member(stack, fleet, "postgresql")
    snaps = token_api(stack.sim).nodes(stack.sim["node"]).lxc(ct.vmid).snapshot.get()
    assert "provisioned" in {s["name"] for s in snaps}, snaps


def test_fleet_redis_answers_ping_with_auth(stack: Stack, fleet: Fleet) -> None:
    ct = fleet_member(stack, fleet, "redis")
    password = variables_of(stack, ct)["redis_password"]
    assert isinstance(password, str) and len(password) == 32
    assert "redis_password" not in ct.request["variables"]
    with contextlib.closing(redis_client(ct.ip, password)) as client:
        assert client.ping() is True
        assert client.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
        client.set("fleet-key", "fleet-value")
        assert client.get("fleet-key") == b"fleet-value"
    for wrong in (None, "not-the-password"):
        with (contextlib.closing(redis_client(ct.ip, wrong)) as client,
              pytest.raises(redis_lib.AuthenticationError)):  # fmt: skip
            client.ping()


def test_fleet_python_app_answers_http(stack: Stack, fleet: Fleet) -> None:
    ct = fleet_member(stack, fleet, "python-app")
    status, body = http_get(f"http://{ct.ip}/healthz")
    assert status == 200 and body.startswith("ok notes="), body
    status, body = http_get(f"http://{ct.ip}/")
    assert status == 200 and "<h1>Fleet notes</h1>" in body, body
    # the database behind it works: add a note, see it on the page
    data = urllib.parse.urlencode({"body": "note from the e2e test"}).encode()
    req = urllib.request.Request(f"http://{ct.ip}/notes", data=data, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:  # follows the 303
        assert resp.status == 200
        assert "note from the e2e test" in resp.read().decode()
    status, body = http_get(f"http://{ct.ip}/healthz")
    assert status == 200 and body.strip() != "ok notes=0", body
    ports = {s["port"] for s in ct.services}
    assert {80, 8000} <= ports, ct.services


def test_fleet_debian_base_is_ready_with_services(stack: Stack, fleet: Fleet) -> None:
    ct = fleet_member(stack, fleet, "debian-base")
    assert ct.finished_scripts == ["packages", "10-updates.sh", "20-timezone-locale.sh"]
    sshd = [s for s in ct.services if s["port"] == 22 and s["proto"] == "tcp"]
    assert sshd and all(s["process"] == "sshd" for s in sshd), ct.services
    out = ssh_run(stack, ct, "cat /etc/timezone; cat /etc/motd; dpkg-query -W -f='${Status}' htop")
    assert "Europe/Berlin" in out
    assert "fleet motd marker" in out
    assert "install ok installed" in out


def test_fleet_timings(fleet: Fleet) -> None:
    """Every template finished with a complete event; the timings are printed."""
    assert set(fleet.seconds) == set(FLEET), fleet.seconds


# 2. the data hooks of the syncable templates -------------------------------------

HOOK_DIR = "/var/lib/lxc-provisioner/hooks"
HOOK_TIMEOUT = 300.0


@dataclass
class Hooks:
    """A container's data hooks, uploaded and run over one SSH session as the
    contract says (docs/templates.md, "Data hooks"): as root, with TPL_* and
    PROV_*; streams go through pipe(), the container being both ends."""

    session: SshSession
    template: Template
    env: dict[str, str]
    lines: list[tuple[str, str]] = field(default_factory=list)

    def command(self, kind: str) -> str:
        script = self.template.hooks.get(kind)
        assert script is not None, f"{self.template.name} has no {kind} hook"
        return f"cd /root && exec bash {HOOK_DIR}/{script.name}"

    def note(self, side: str, line: str) -> None:
        self.lines.append((side, line))

    async def export_to(self, path: str) -> int:
        """The export hook's stream into a file of the container."""
        return await pipe(self.session, self.command("export"), self.session, f"cat > {path}",
                          source_env=self.env, on_stderr=self.note, timeout=HOOK_TIMEOUT)  # fmt: skip

    async def import_from(self, path: str) -> int:
        """A file of the container into the import hook."""
        return await pipe(self.session, f"cat {path}", self.session, self.command("import"),
                          target_env=self.env, on_stderr=self.note, timeout=HOOK_TIMEOUT)  # fmt: skip

    async def export_into_import(self) -> int:
        """The export hook piped straight into the import hook."""
        return await pipe(self.session, self.command("export"), self.session,
                          self.command("import"), source_env=self.env, target_env=self.env,
                          on_stderr=self.note, timeout=HOOK_TIMEOUT)  # fmt: skip

    async def run(self, kind: str, **env: str) -> None:
        """A hook that takes no stream (clone, rewrite), ``env`` overriding."""
        result = await self.session.run(
            self.command(kind), env={**self.env, **env}, timeout=HOOK_TIMEOUT, name=kind,
            on_line=lambda stream, line: self.note(kind, line),
        )  # fmt: skip
        assert result.ok, (kind, result.exit_status, self.lines[-20:])

    async def sh(self, command: str) -> str:
        lines: list[str] = []
        await self.session.run(command, check=True, on_line=lambda stream, line:
                               lines.append(line) if stream == "stdout" else None)  # fmt: skip
        return "\n".join(lines)


@contextlib.asynccontextmanager
async def hooks_of(stack: Stack, ct: Container) -> AsyncIterator[Hooks]:
    template = load_template(stack.settings.templates_dir / ct.template)
    key = container_ssh_private_key(secret_box(stack), ct)
    assert key and ct.ip and ct.ssh_host_key
    env = hook_env(template, variables_of(stack, ct), hostname=ct.hostname, ip=ct.ip,
                   environment="test")  # fmt: skip
    async with await connect(ct.ip, private_key=key, known_host_key=ct.ssh_host_key,
                             deadline=30) as session:  # fmt: skip
        await session.upload([FileSpec(f"{HOOK_DIR}/{s.name}", s.path.read_bytes(), 0o700)
                              for s in template.hooks.declared().values()])  # fmt: skip
        hooks = Hooks(session, template, env)
        try:
            yield hooks
        except BaseException:
            print("hook output:\n" + "\n".join(f"[{s}] {line}" for s, line in hooks.lines[-40:]))
            raise


def pg_connect(ct: Container, password: str) -> psycopg.Connection[Any]:
    return psycopg.connect(host=ct.ip, port=5432, dbname="fleetdb", user="fleetuser",
                           password=password, connect_timeout=10, autocommit=True)  # fmt: skip


def pg_rows(ct: Container, password: str) -> list[str]:
    with pg_connect(ct, password) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM e2e_items ORDER BY id").fetchall()]


def test_fleet_hooks_postgresql_round_trip_and_clone(stack: Stack, fleet: Fleet) -> None:
    ct = fleet_member(stack, fleet, "postgresql")
    password = variables_of(stack, ct)["db_password"]
    with pg_connect(ct, password) as conn:
        conn.execute("CREATE TABLE e2e_items (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO e2e_items (name) VALUES ('exported one'), ('exported two')")

    async def scenario() -> None:
        async with hooks_of(stack, ct) as hooks:
            assert await hooks.export_to("/root/e2e-postgresql.dump") > 0
            assert (await hooks.sh("head -c 5 /root/e2e-postgresql.dump")) == "PGDMP"
            with pg_connect(ct, password) as conn:
                conn.execute("INSERT INTO e2e_items (name) VALUES ('after the export')")
                conn.execute("CREATE TABLE e2e_later (x int)")
            await hooks.import_from("/root/e2e-postgresql.dump")
            assert pg_rows(ct, password) == ["exported one", "exported two"]
            with pg_connect(ct, password) as conn:
                assert conn.execute("SELECT to_regclass('e2e_later')").fetchone() == (None,)
                owners = conn.execute(
                    "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class "
                    "WHERE relname LIKE 'e2e_items%'").fetchall()  # fmt: skip
                assert owners == [("fleetuser",)]
                (db_owner,) = conn.execute(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'fleetdb'"
                ).fetchone() or (None,)
                assert db_owner == "fleetuser"
                # the role owns what was restored: it writes, the sequence goes on
                row = conn.execute("INSERT INTO e2e_items (name) VALUES ('written after') "
                                   "RETURNING id").fetchone()  # fmt: skip
                assert row == (3,)
                conn.execute("DELETE FROM e2e_items WHERE id = 3")
            # idempotent: the same stream again, then the export piped straight in
            await hooks.import_from("/root/e2e-postgresql.dump")
            assert pg_rows(ct, password) == ["exported one", "exported two"]
            assert await hooks.export_into_import() > 0
            assert pg_rows(ct, password) == ["exported one", "exported two"]
            leftovers = await hooks.sh("runuser -u postgres -- psql -XAt -c "
                                       "\"SELECT datname FROM pg_database ORDER BY 1\"")  # fmt: skip
            assert leftovers.split() == ["fleetdb", "postgres", "template0", "template1"]

            # clone: a regenerated password is applied (and the original put back)
            new = "Cl0ne" + "x" * 27
            await hooks.run("clone", TPL_DB_PASSWORD=new)
            try:
                assert pg_rows(ct, new) == ["exported one", "exported two"]
                with pytest.raises(psycopg.OperationalError, match="password authentication"):
                    pg_connect(ct, password).close()
            finally:
                await hooks.run("clone")
            assert pg_rows(ct, password) == ["exported one", "exported two"]
            assert new not in "\n".join(line for _, line in hooks.lines)
            assert password not in "\n".join(line for _, line in hooks.lines)

    asyncio.run(scenario())


def redis_data(ct: Container, password: str) -> dict[bytes, object]:
    """Every key with its type and value."""
    with contextlib.closing(redis_client(ct.ip, password)) as client:
        read = {b"string": client.get, b"hash": client.hgetall,
                b"list": lambda key: client.lrange(key, 0, -1)}  # fmt: skip
        return {key: (kind, read[kind](key)) for key in client.keys("*")
                if (kind := client.type(key)) in read}  # fmt: skip


def test_fleet_hooks_redis_round_trip_and_clone(stack: Stack, fleet: Fleet) -> None:
    ct = fleet_member(stack, fleet, "redis")
    password = variables_of(stack, ct)["redis_password"]
    with contextlib.closing(redis_client(ct.ip, password)) as client:
        client.set("e2e:kept", "exported value")
        client.set("e2e:changed", "before")
        client.hset("e2e:hash", mapping={"a": "1", "b": "2"})
        client.rpush("e2e:list", *[str(i) for i in range(1000)])
    exported = redis_data(ct, password)
    assert len(exported) >= 4

    async def scenario() -> None:
        async with hooks_of(stack, ct) as hooks:
            assert await hooks.export_to("/root/e2e-redis.rdb") > 0
            assert (await hooks.sh("head -c 5 /root/e2e-redis.rdb")) == "REDIS"
            with contextlib.closing(redis_client(ct.ip, password)) as client:
                client.set("e2e:changed", "after the export")
                client.delete("e2e:kept")
                client.set("e2e:new", "not in the stream")
            await hooks.import_from("/root/e2e-redis.rdb")
            assert redis_data(ct, password) == exported
            with contextlib.closing(redis_client(ct.ip, password)) as client:
                assert client.get("e2e:changed") == b"before"
                assert client.llen("e2e:list") == 1000
                assert client.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
            # idempotent: the same stream again, then the export piped straight in
            await hooks.import_from("/root/e2e-redis.rdb")
            assert redis_data(ct, password) == exported
            assert await hooks.export_into_import() > 0
            assert redis_data(ct, password) == exported
            assert (await hooks.sh("stat -c %U:%G /var/lib/redis/dump.rdb")) == "redis:redis"

            # clone: the regenerated requirepass is applied (and the original put back)
            new = "Cl0ne" + "x" * 27
            await hooks.run("clone", TPL_REDIS_PASSWORD=new)
            try:
                with contextlib.closing(redis_client(ct.ip, new)) as client:
                    assert client.get("e2e:kept") == b"exported value"
                with (contextlib.closing(redis_client(ct.ip, password)) as client,
                      pytest.raises(redis_lib.AuthenticationError)):  # fmt: skip
                    client.ping()
            finally:
                await hooks.run("clone")
            with contextlib.closing(redis_client(ct.ip, password)) as client:
                assert client.ping() is True
            assert new not in "\n".join(line for _, line in hooks.lines)

    asyncio.run(scenario())


def test_fleet_hooks_nginx_round_trip_and_rewrite(stack: Stack, fleet: Fleet) -> None:
    ct = fleet_member(stack, fleet, "nginx")
    checksums = "cd /var/www/html && find . -type f -exec sha256sum {} + | sort -k 2"
    page = ("<a href='http://prod-web.example.org/'>prod-web</a> at 198.51.100.7:8080, "
            "not 198.51.100.70 nor prod-webshop\n")  # fmt: skip

    async def scenario() -> None:
        async with hooks_of(stack, ct) as hooks:
            await hooks.sh(f"printf %s {shlex.quote(page)} > /var/www/html/e2e.html && "
                           "mkdir -p /var/www/html/assets && echo 'body {}' > "
                           "/var/www/html/assets/site.css")  # fmt: skip
            exported = await hooks.sh(checksums)
            assert await hooks.export_to("/root/e2e-nginx.tar") > 0
            await hooks.sh("echo '<h1>edited</h1>' > /var/www/html/index.html && "
                           "rm -r /var/www/html/assets && echo new > /var/www/html/new.txt")  # fmt: skip
            assert "<h1>edited</h1>" in http_get(f"http://{ct.ip}/")[1]
            await hooks.import_from("/root/e2e-nginx.tar")
            assert await hooks.sh(checksums) == exported
            status, body = http_get(f"http://{ct.ip}/")
            assert status == 200 and "<h1>Fleet nginx title</h1>" in body
            assert http_get(f"http://{ct.ip}/new.txt")[0] == 404
            assert http_get(f"http://{ct.ip}/assets/site.css") == (200, "body {}\n")
            await hooks.import_from("/root/e2e-nginx.tar")
            assert await hooks.export_into_import() > 0
            assert await hooks.sh(checksums) == exported
            assert await hooks.sh("ls -a /var/www") == ".\n..\nhtml"  # nothing left beside it

            # rewrite: the peer's name and address become ours, whole names only
            await hooks.run("rewrite", PROV_PEER_HOSTNAME="prod-web",
                            PROV_PEER_IP="198.51.100.7")  # fmt: skip
            assert http_get(f"http://{ct.ip}/e2e.html")[1] == (
                f"<a href='http://{ct.hostname}.example.org/'>{ct.hostname}</a> at {ct.ip}:8080, "
                "not 198.51.100.70 nor prod-webshop\n"
            )
            assert "<h1>Fleet nginx title</h1>" in http_get(f"http://{ct.ip}/")[1]

    asyncio.run(scenario())


def test_fleet_hooks_python_app_round_trip(stack: Stack, fleet: Fleet) -> None:
    ct = fleet_member(stack, fleet, "python-app")

    def add_note(body: str) -> None:
        data = urllib.parse.urlencode({"body": body}).encode()
        req = urllib.request.Request(f"http://{ct.ip}/notes", data=data, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    def notes() -> list[str]:
        status, body = http_get(f"http://{ct.ip}/")
        assert status == 200, body
        return re.findall(r"<li>(.*?) <small>", body)

    add_note("exported note")
    exported = notes()
    assert exported and exported[0] == "exported note"

    async def scenario() -> None:
        async with hooks_of(stack, ct) as hooks:
            assert await hooks.export_to("/root/e2e-pyapp.tar") > 0
            assert "./app.db" in await hooks.sh("tar -tf /root/e2e-pyapp.tar")
            add_note("after the export")
            assert notes()[0] == "after the export"
            await hooks.import_from("/root/e2e-pyapp.tar")
            assert notes() == exported
            await hooks.import_from("/root/e2e-pyapp.tar")
            assert notes() == exported
            # the app owns the imported database: it writes to it
            add_note("written after the import")
            assert notes() == ["written after the import", *exported]
            assert await hooks.export_into_import() > 0
            assert notes() == ["written after the import", *exported]
            assert await hooks.sh("stat -c %U:%G:%a /var/lib/pyapp") == "pyapp:pyapp:750"
            assert await hooks.sh("ls -a /var/lib | grep pyapp") == "pyapp"  # no leftovers

    asyncio.run(scenario())


# 2b. wordpress: HTTPS pinned, Application Passwords, a staging clone ------------------

WP_TITLE = "Fleet WordPress"
WP_LIB = "/usr/local/lib/wp-provisioner"


def wp_php_command(code: str) -> str:
    """A command running PHP in a wordpress container with WordPress loaded
    (the template's bootstrap), as the web server's user."""
    php = f"require '{WP_LIB}/bootstrap.php'; {code}"
    return f"cd / && runuser -u www-data -- php -d display_errors=stderr -r {shlex.quote(php)}"


def wp_php(stack: Stack, ct: Container, code: str) -> str:
    """The stdout of ``code`` run by :func:`wp_php_command` over SSH."""
    return ssh_run(stack, ct, wp_php_command(code)).strip()


def wp_site(stack: Stack, ct: Container, auth: str | None = None) -> Pinned:
    """HTTPS to the container pinned to the certificate fingerprint its run
    printed (the scripts', or for a clone the clone hook's)."""
    fingerprint = last_fingerprint(e.message for e in all_events(stack, ct.id, timeout=30)
                                   if e.type == "log")  # fmt: skip
    assert fingerprint, f"{ct.hostname}: no certificate fingerprint in its log"
    assert ct.ip
    return Pinned(ct.ip, fingerprint, auth)


def wp_app_password(stack: Stack, ct: Container, label: str) -> str:
    """An Application Password of the administrator, made by the template's helper."""
    password = ssh_run(stack, ct, f"wp-app-password admin {shlex.quote(label)}").strip()
    assert re.fullmatch(r"[A-Za-z0-9]{24}", password), "the helper printed more than a password"
    return password


def test_fleet_wordpress_rest_api_over_pinned_https(stack: Stack, fleet: Fleet) -> None:
    ct = fleet_member(stack, fleet, "wordpress")
    site = wp_site(stack, ct)
    assert ssh_run(stack, ct, "cat /etc/ssl/wordpress/fingerprint").strip() == site.fingerprint
    status, index = site.json("GET", "/wp-json/")
    assert status == 200, index
    assert (index["name"], index["url"]) == (WP_TITLE, f"https://{ct.ip}")
    assert "wp/v2" in index["namespaces"]
    assert index["authentication"]["application-passwords"]["endpoints"], index["authentication"]
    with pytest.raises(ssl.SSLError, match="not the pinned one"):
        Pinned(str(ct.ip), "00:" * 31 + "00").json("GET", "/wp-json/")
    plain = http.client.HTTPConnection(str(ct.ip), 80, timeout=10)
    try:
        plain.request("GET", "/wp-json/?x=1")
        answer = plain.getresponse()
        assert (answer.status, answer.getheader("Location")) == (
            301, f"https://{ct.ip}/wp-json/?x=1")  # fmt: skip
    finally:
        plain.close()
    assert {80, 443} <= {s["port"] for s in ct.services}, ct.services

    # an Application Password made in the container authenticates REST calls
    admin = Pinned(site.ip, site.fingerprint, f"admin:{wp_app_password(stack, ct, 'e2e-fleet')}")
    status, me = admin.json("GET", "/wp-json/wp/v2/users/me?context=edit")
    assert status == 200, me
    assert me["username"] == "admin" and "administrator" in me["roles"]
    wrong = Pinned(site.ip, site.fingerprint, "admin:" + "x" * 24)
    assert wrong.json("GET", "/wp-json/wp/v2/users/me")[0] == 401
    status, post = admin.json("POST", "/wp-json/wp/v2/posts",
                              {"title": "Posted over REST", "content": "<p>hello</p>",
                               "status": "publish"})  # fmt: skip
    assert status == 201, post
    status, found = site.json("GET", f"/wp-json/wp/v2/posts?slug={post['slug']}")
    assert status == 200 and [p["id"] for p in found] == [post["id"]], found
    assert found[0]["link"] == f"https://{ct.ip}/{post['slug']}/"

    # the generated administrator password logs in (and a wrong one does not)
    secret = variables_of(stack, ct)["admin_password"]

    def login(password: str) -> tuple[int, dict[str, str]]:
        form = urllib.parse.urlencode({"log": "admin", "pwd": password, "testcookie": "1"})
        status, headers, _ = site.request("POST", "/wp-login.php", form.encode(), {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": "wordpress_test_cookie=WP%20Cookie%20check"})  # fmt: skip
        return status, headers

    status, headers = login(secret)
    assert status == 302 and headers["location"] == f"https://{ct.ip}/wp-admin/", headers
    assert login(secret + "x")[0] == 200
    texts = " ".join(e.message for e in all_events(stack, ct.id, timeout=30))
    for value in (secret, variables_of(stack, ct)["db_password"]):
        assert value not in texts


def test_fleet_wordpress_staging_clone_rewrites_its_urls(stack: Stack, fleet: Fleet) -> None:
    """A staging clone of a site: the post, the media and a serialized option
    name the clone's URL; the database password is new; the source's
    Application Password works on the copy; then on the clone: the anonymise
    hook, and the export and import hooks round trip."""
    source = fleet_member(stack, fleet, "wordpress")
    src_ip = str(source.ip)
    site = wp_site(stack, source)
    admin = Pinned(site.ip, site.fingerprint, f"admin:{wp_app_password(stack, source, 'e2e')}")
    content = (f'<p><a href="https://{src_ip}/sample-page/">sample</a> '
               f'<img src="http://{src_ip}/wp-content/uploads/e2e.png"> '
               f"https://{src_ip}9/ stays</p>")  # fmt: skip
    status, post = admin.json(
        "POST",
        "/wp-json/wp/v2/posts",
        {"title": "Cloned post", "content": content, "status": "publish"},
    )
    assert status == 201, post
    png = tiny_png()
    status, _, body = admin.request(
        "POST",
        "/wp-json/wp/v2/media",
        png,
        {"Content-Type": "image/png", "Content-Disposition": 'attachment; filename="e2e.png"'},
    )
    media = json.loads(body)
    assert status == 201, media
    assert media["source_url"].startswith(f"https://{src_ip}/wp-content/uploads/")
    made = json.loads(wp_php(stack, source, (
        "update_option('e2e_links', ['home' => home_url('/page/'), "
        "'list' => [site_url('/a'), 'kept'], 'count' => 3, 'obj' => (object) ['u' => home_url()],"
        " 'nested' => serialize(['deep' => home_url('/d')])]);"
        "$u = wp_insert_user(['user_login' => 'jane', 'user_pass' => wp_generate_password(),"
        " 'user_email' => 'jane@corp.example', 'display_name' => 'Jane Doe',"
        " 'first_name' => 'Jane', 'last_name' => 'Doe']);"
        f"$c = wp_insert_comment(['comment_post_ID' => {post['id']}, 'comment_author' => 'Joe',"
        " 'comment_author_email' => 'joe@home.example', 'comment_author_IP' => '203.0.113.9',"
        " 'comment_content' => 'hi', 'comment_approved' => 1]);"
        "echo json_encode(['user' => $u, 'comment' => $c]);")))  # fmt: skip

    box = secret_box(stack)
    with stack.factory() as session:
        src = session.get(Container, source.id)
        assert src is not None
        requested = request_clone(session, box, stack.settings, stack.redis, src,
                                  CloneRequest(hostname="tpl-wordpress-staging"))  # fmt: skip
    cid = requested.container.id
    try:
        ensure_workers(stack, 1)
        clone = stack.wait(cid, timeout=400)
        assert_ready(stack, clone)
        ip = str(clone.ip)
        new_db = requested.generated_secrets["db_password"]
        old_db = variables_of(stack, source)["db_password"]
        assert new_db != old_db and variables_of(stack, clone)["db_password"] == new_db
        copy = wp_site(stack, clone)
        assert copy.fingerprint != site.fingerprint  # its own certificate
        assert copy.json("GET", "/wp-json/")[1]["url"] == f"https://{ip}"
        # the source's Application Password came with the data
        staged = Pinned(ip, copy.fingerprint, admin.auth)
        status, found = staged.json("GET", f"/wp-json/wp/v2/posts?slug={post['slug']}"
                                           "&context=edit")  # fmt: skip
        assert status == 200 and len(found) == 1, found
        raw = found[0]["content"]["raw"]
        assert src_ip + "/" not in raw.replace(f"{src_ip}9/", ""), raw
        assert f'href="https://{ip}/sample-page/"' in raw
        assert f'src="https://{ip}/wp-content/uploads/e2e.png"' in raw
        assert f"https://{src_ip}9/ stays" in raw  # another address, untouched
        assert found[0]["link"] == f"https://{ip}/{post['slug']}/"
        status, moved = staged.json("GET", f"/wp-json/wp/v2/media/{media['id']}")
        assert moved["source_url"] == media["source_url"].replace(src_ip, ip, 1)
        path = urllib.parse.urlsplit(moved["source_url"]).path
        assert copy.request("GET", path)[::2] == (200, png)
        # the serialized option: unserialized, changed and serialized again
        # (an object's properties and a serialized string inside one too)
        links = {"home": f"https://{ip}/page/", "list": [f"https://{ip}/a", "kept"], "count": 3,
                 "obj": {"u": f"https://{ip}"}, "nested": {"deep": f"https://{ip}/d"}}  # fmt: skip
        read = ("$v = get_option('e2e_links'); $v['nested'] = unserialize($v['nested']);"
                " echo json_encode($v);")  # fmt: skip
        assert json.loads(wp_php(stack, clone, read)) == links
        stored = wp_php(stack, clone, "global $wpdb; echo $wpdb->get_var(\"SELECT option_value "
                        "FROM {$wpdb->options} WHERE option_name = 'e2e_links'\");")  # fmt: skip
        assert f's:{len(links["home"])}:"{links["home"]}";' in stored and src_ip not in stored
        # the source is as it was
        assert json.loads(wp_php(stack, source, read)) == json.loads(
            json.dumps(links).replace(ip, src_ip))  # fmt: skip
        assert site.json("GET", "/wp-json/")[1]["url"] == f"https://{src_ip}"

        async def on_the_clone() -> None:
            async with hooks_of(stack, clone) as hooks:
                # the clone's database takes the new password only
                check = "MYSQL_PWD=\"$E2E_PW\" mariadb -u wordpress -N -e 'SELECT 1' wordpress"
                assert (await hooks.session.run(check, env={"E2E_PW": new_db})).ok
                assert not (await hooks.session.run(check, env={"E2E_PW": old_db})).ok
                await hooks.run("anonymise", PROV_PEER_IP=src_ip)
                uid, cmt = made["user"], made["comment"]
                people = json.loads(await hooks.sh(wp_php_command(
                    f"$u = get_userdata({uid}); $c = get_comment({cmt});"
                    " $a = get_user_by('login', 'admin');"
                    " echo json_encode([$u->user_login, $u->user_email, $u->display_name,"
                    " $u->first_name, $c->comment_author, $c->comment_author_email,"
                    " $c->comment_author_IP, $a->user_email]);")))  # fmt: skip
                assert people == [f"user{uid}", f"user{uid}@example.invalid", f"User {uid}", "",
                                  f"Commenter {cmt}", f"commenter{cmt}@example.invalid", "",
                                  "admin@example.com"]  # fmt: skip
                # export, a change, import: the change is gone, the media is back
                assert await hooks.export_to("/root/e2e-wordpress.tar") > 0
                listing = (await hooks.sh("tar -tf /root/e2e-wordpress.tar")).split()
                assert "database.sql" in listing and any(
                    n.startswith("uploads/") and n.endswith("e2e.png") for n in listing
                )
                status, later = staged.json(
                    "POST",
                    "/wp-json/wp/v2/posts",
                    {"title": "After the export", "status": "publish"},
                )
                assert status == 201, later
                await hooks.sh("rm -rf /var/lib/wordpress/wp-content/uploads/*")
                await hooks.import_from("/root/e2e-wordpress.tar")
                assert staged.json("GET", f"/wp-json/wp/v2/posts/{later['id']}")[0] == 404
                assert staged.json("GET", f"/wp-json/wp/v2/posts/{post['id']}")[0] == 200
                assert copy.request("GET", path)[::2] == (200, png)
                await hooks.import_from("/root/e2e-wordpress.tar")  # idempotent
                assert staged.json("GET", f"/wp-json/wp/v2/posts/{post['id']}")[0] == 200
                leftovers = await hooks.sh(
                    "mariadb -N -e 'SHOW DATABASES'; ls -A /var/lib/wordpress"
                )
                assert leftovers.split() == ["information_schema", "mysql", "performance_schema",
                                             "sys", "wordpress", "wp-content"], leftovers  # fmt: skip
                lines = "\n".join(line for _, line in hooks.lines)
                assert new_db not in lines and old_db not in lines

        asyncio.run(on_the_clone())
        texts = " ".join(e.message for e in all_events(stack, cid, timeout=30))
        assert new_db not in texts
    finally:
        destroy_all(stack, [cid])


# 3. DHCP with a late lease ------------------------------------------------------


def test_fleet_clones_of_the_databases_get_new_passwords(stack: Stack, fleet: Fleet) -> None:
    """Staging clones of postgresql and redis: the data is there, the clone
    hook applied the regenerated password (the source's no longer opens the
    clone), and the source still takes its own."""
    box = secret_box(stack)
    made: dict[str, str] = {}
    try:
        for template in ("postgresql", "redis"):
            source = fleet_member(stack, fleet, template)
            with stack.factory() as session:
                src = session.get(Container, source.id)
                assert src is not None
                made[template] = request_clone(session, box, stack.settings, stack.redis, src,
                                               CloneRequest(hostname=f"tpl-{template}-staging")
                                               ).container.id  # fmt: skip
        ensure_workers(stack, 2)
        pg_src, rd_src = fleet.containers["postgresql"], fleet.containers["redis"]
        pg, rd = (stack.wait(made[t], timeout=300) for t in ("postgresql", "redis"))
        assert_ready(stack, pg)
        assert_ready(stack, rd)
        new_pg, old_pg = (
            variables_of(stack, pg)["db_password"],
            variables_of(stack, pg_src)["db_password"],
        )
        assert new_pg != old_pg
        with psycopg.connect(host=pg.ip, port=5432, dbname="fleetdb", user="fleetuser",
                             password=new_pg, connect_timeout=10) as conn:  # fmt: skip
            assert conn.execute("SELECT current_database()").fetchone() == ("fleetdb",)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host=pg.ip, port=5432, dbname="fleetdb", user="fleetuser",
                            password=old_pg, connect_timeout=10).close()  # fmt: skip
        with psycopg.connect(host=pg_src.ip, port=5432, dbname="fleetdb", user="fleetuser",
                             password=old_pg, connect_timeout=10) as conn:  # fmt: skip
            assert conn.execute("SELECT 1").fetchone() == (1,)
        new_rd, old_rd = (
            variables_of(stack, rd)["redis_password"],
            variables_of(stack, rd_src)["redis_password"],
        )
        assert new_rd != old_rd
        with contextlib.closing(redis_client(rd.ip, new_rd)) as client:
            assert client.ping() is True
        with (contextlib.closing(redis_client(rd.ip, old_rd)) as client,
              pytest.raises(redis_lib.AuthenticationError)):  # fmt: skip
            client.ping()
        with contextlib.closing(redis_client(rd_src.ip, old_rd)) as client:
            assert client.ping() is True
    finally:
        destroy_all(stack, list(made.values()))


def test_fleet_nginx_staging_clone_behind_basic_auth(stack: Stack, fleet: Fleet) -> None:
    """A staging clone of the nginx site with basic auth on: the page asks for
    the credentials shown once, /healthz stays open, the source is unchanged;
    and the clone is a real copy (the page, its own address)."""
    source = fleet_member(stack, fleet, "nginx")
    box = secret_box(stack)
    with stack.factory() as session:
        src = session.get(Container, source.id)
        assert src is not None
        requested = request_clone(session, box, stack.settings, stack.redis, src,
                                  CloneRequest(hostname="tpl-nginx-staging",
                                               variables={"basic_auth": "true"}))  # fmt: skip
    cid = requested.container.id
    try:
        ensure_workers(stack, 1)
        clone = stack.wait(cid, timeout=300)
        assert_ready(stack, clone)
        secret = requested.generated_secrets["basic_auth_password"]
        assert secret and secret != variables_of(stack, source)["basic_auth_password"]
        assert http_get(f"http://{clone.ip}/")[0] == 401
        assert http_get(f"http://{clone.ip}/healthz") == (200, "ok\n")
        auth = base64.b64encode(f"staging:{secret}".encode()).decode()
        request = urllib.request.Request(f"http://{clone.ip}/",
                                         headers={"Authorization": f"Basic {auth}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200 and "<h1>Fleet nginx title</h1>" in resp.read().decode()
        assert http_get(f"http://{source.ip}/")[0] == 200  # the source stays open
        texts = " ".join(e.message for e in all_events(stack, cid, timeout=30))
        assert secret not in texts
    finally:
        destroy_all(stack, [cid])


def test_dhcp_late_lease_is_waited_for(stack: Stack, cleanup: Callable[[str], str]) -> None:
    ensure_workers(stack, 1)
    delay = 6.0
    cid = cleanup(stack.submit("nginx", "dhcp-late", ip="dhcp",
                               variables={"site_title": "late lease"}))  # fmt: skip
    vmid = wait_for_vmid(stack, cid)
    # hold the start task briefly so the delay is in place before the
    # container's first DHCP packet, whatever the create task's speed
    admin(stack.sim, "task", {"type": "vzstart", "vmid": vmid, "delay": 2})
    admin(stack.sim, "dhcp-delay", {"vmid": vmid, "seconds": delay})
    current = token_api(stack.sim).nodes(stack.sim["node"]).lxc(vmid).status.current.get()
    assert current["status"] == "stopped", "the container started before the faults were set"
    ct = stack.wait(cid, timeout=600)
    assert_ready(stack, ct)

    subnet = ipaddress.ip_network(stack.sim["subnet"])
    hosts = list(subnet.hosts())
    assert ipaddress.ip_address(ct.ip) in hosts[len(hosts) // 2 :], (ct.ip, subnet)
    net0 = token_api(stack.sim).nodes(stack.sim["node"]).lxc(vmid).config.get()["net0"]
    assert "ip=dhcp" in net0, net0
    status, body = http_get(f"http://{ct.ip}/")
    assert status == 200 and "late lease" in body

    events = all_events(stack, cid)
    assert events[-1].type == "complete", events[-1]
    start_steps = [e for e in events if e.type == "step" and e.phase == "start"]
    messages = [e.message for e in start_steps]
    waiting = [e for e in start_steps if e.message == "waiting for the container's address"]
    got = [e for e in start_steps if e.message.startswith(f"address {ct.ip}")]
    assert waiting and got, messages
    assert start_steps.index(waiting[0]) < start_steps.index(got[0]), messages
    # the 2 s task hold is before the address wait: this is the DHCP delay alone
    address_wait = ts(got[0]) - ts(waiting[0])
    start_phase = ts(start_steps[-1]) - ts(start_steps[0])
    print(f"\nDHCP: address wait {address_wait:.1f}s, start phase {start_phase:.1f}s")
    assert address_wait >= delay - 2.0, (address_wait, messages)
    assert start_phase >= delay - 1.0, (start_phase, messages)
    # the wait ended with the lease, well before the pipeline's IP timeout (60 s)
    assert address_wait < 30, (address_wait, messages)


# 4. a static address ---------------------------------------------------------


def test_static_ip_is_recorded_configured_and_used(stack: Stack,
                                                   cleanup: Callable[[str], str]) -> None:  # fmt: skip
    ensure_workers(stack, 1)
    ip = stack.address(115)
    cid = cleanup(stack.submit("nginx", "static-ip", ip=f"{ip}/24", gateway=stack.sim["gateway"]))
    ct = stack.wait(cid, timeout=600)
    assert_ready(stack, ct)
    assert ct.ip == ip

    config = token_api(stack.sim).nodes(stack.sim["node"]).lxc(ct.vmid).config.get()
    assert f"ip={ip}/24" in config["net0"], config["net0"]
    assert f"gw={stack.sim['gateway']}" in config["net0"], config["net0"]

    out = ssh_run(stack, ct, "ip -4 -o addr show dev eth0 scope global; ip -4 route show default")
    assert f"inet {ip}/24" in out, out
    assert f"default via {stack.sim['gateway']}" in out, out
    with socket.create_connection((ip, 22), timeout=10) as sock:
        assert sock.recv(64).startswith(b"SSH-2.0-")


# 5. the events contract ------------------------------------------------------


def test_events_contract_of_a_full_run(stack: Stack, cleanup: Callable[[str], str]) -> None:
    ensure_workers(stack, 1)
    ip = stack.address(116)
    cid = cleanup(stack.submit("nginx", "events-contract", ip=f"{ip}/24",
                               gateway=stack.sim["gateway"]))  # fmt: skip
    ct = stack.wait(cid, timeout=600)
    assert_ready(stack, ct)
    events = all_events(stack, cid)

    # what was stored equals what went over the wire (the Redis stream)
    raw: Any = stack.redis.xrange(stream_key(cid), min="-", max="+")
    wire = [json.loads(fields[b"e"]) for _id, fields in raw]
    assert [w["seq"] for w in wire] == [e.seq for e in events]
    assert wire == [e.as_dict() for e in events]

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    for payload in wire:
        assert {"seq", "container", "type", "message", "ts"} <= payload.keys(), payload
        assert set(payload) <= {"seq", "container", "type", "phase", "percent", "message",
                                "stream", "script", "outcome", "ts"}, payload  # fmt: skip
        assert ("outcome" in payload) == (payload["type"] in ("complete", "error")), payload
        assert payload["container"] == cid
        assert payload["type"] in EVENT_TYPES
        assert isinstance(payload["message"], str)
        assert TS_RE.match(payload["ts"]), payload
        assert payload.get("phase") in PHASES, payload
        if payload["type"] == "step":
            assert isinstance(payload.get("percent"), int), payload
            assert 0 <= payload["percent"] <= 100
        if "stream" in payload:
            assert payload["type"] == "log" and payload["stream"] in STREAMS, payload
            assert payload.get("script"), payload
    assert [ts(e) for e in events] == sorted(ts(e) for e in events)

    steps = [e for e in events if e.type in ("step", "complete")]
    percents = [e.percent for e in steps]
    assert percents == sorted(percents), percents  # type: ignore[type-var]
    # the phases' steps come in order, each phase in one block
    phase_order = [phase for phase, _ in groupby(e.phase for e in steps)]
    assert phase_order == ALL_PHASES, phase_order

    assert events[-1].type == "complete" and events[-1].percent == 100
    assert sum(e.terminal for e in events) == 1
    assert not [e for e in events if e.type in ("error", "warning")], [
        e for e in events if e.type in ("error", "warning")]  # fmt: skip

    lines = [e for e in events if e.type == "log" and e.stream is not None]
    scripts = {e.script for e in lines}
    assert {"packages", "10-nginx-site.sh", "20-verify.sh"} <= scripts, scripts
    stdout = [e for e in lines if e.stream == "stdout"]
    stderr = [e for e in lines if e.stream == "stderr"]
    assert any(e.script == "10-nginx-site.sh" and e.message == "==> checking the configuration"
               for e in stdout), [e.message for e in stdout]  # fmt: skip
    # nginx -t reports on stderr
    assert any(e.script == "10-nginx-site.sh" and "syntax is ok" in e.message
               for e in stderr), [(e.script, e.message) for e in stderr]  # fmt: skip
    assert all(e.phase == "scripts" for e in lines)
    # every line is a line: no embedded newlines
    assert not [e for e in lines if "\n" in e.message]

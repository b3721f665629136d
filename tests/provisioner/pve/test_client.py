"""The Proxmox client against the simulator: auth and TLS trust modes,
error mapping (with injected faults), tasks, vmid allocation (including 50
concurrent allocations from 4 processes), IP resolution, templates and the
container lifecycle.  vmids 5000-5999, static addresses .41-.49."""

from __future__ import annotations

import ipaddress
import json
import logging
import multiprocessing
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
import redis

from provisioner.errors import (
    PvePermanentError,
    PveTransientError,
    TaskFailedError,
    TaskLockedError,
    TransientError,
)
from provisioner.pve.client import PveClient
from provisioner.pve.http import PasswordAuth, PveConnection, TicketAuth, TokenAuth
from provisioner.pve.parse import global_ipv4
from provisioner.pve.types import Owned
from provisioner.pve.vmid import lock_key
from tests.pvesim.helpers import admin, host_port

pytestmark = pytest.mark.integration
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


# --- helpers and fixtures ------------------------------------------------------------
def connection(sim: dict[str, Any], **overrides: Any) -> PveConnection:
    host, port = host_port(sim)
    settings: dict[str, Any] = {"host": host, "port": port, "node": sim["node"],
                                "auth": TokenAuth(sim["token_id"], sim["token_secret"]),
                                "ca_file": sim["cafile"], **overrides}  # fmt: skip
    return PveConnection(**settings)


def host_ip(sim: dict[str, Any], n: int) -> str:
    assert 41 <= n <= 49, "this file's static addresses are .41-.49"
    return str(ipaddress.ip_network(sim["subnet"]).network_address + n)


def tiny(vmid: int, hostname: str | None = None, **extra: Any) -> dict[str, Any]:
    """The smallest create: no network, default rootfs."""
    return {"vmid": vmid, "ostemplate": TEMPLATE, "storage": "local-lvm",
            "hostname": hostname or f"pvetest-{vmid}", "unprivileged": True, **extra}  # fmt: skip


def own(client: PveClient, vmid: int) -> Owned:
    """The proof the client's write methods take (these tests make their CTs
    themselves, without the marker the ownership guard reads)."""
    return Owned(client.node, vmid, "test_pve")


def clear_faults(sim: dict[str, Any]) -> None:
    admin(sim, "faults", method="DELETE")


def destroy_ct(client: PveClient, sim: dict[str, Any], vmid: int) -> None:
    """Stop and delete a container if it exists, waiting for every task."""
    clear_faults(sim)
    if not client.exists(vmid):
        return
    status = client.wait_unlocked(vmid, timeout=40)
    if status.running:
        client.wait_for_task(client.stop(own(client, vmid)), timeout=60)
    client.wait_for_task(client.destroy(own(client, vmid)), timeout=60)


def secrets_of(sim: dict[str, Any]) -> tuple[str, str]:
    return sim["token_secret"], sim["password"]


def assert_no_secret(sim: dict[str, Any], exc: BaseException) -> None:
    for text in (str(exc), repr(exc), str(getattr(exc, "hint", "")), repr(exc.__dict__)):
        for secret in secrets_of(sim):
            assert secret not in text


@pytest.fixture(scope="module")
def client(sim: dict[str, Any]) -> Iterator[PveClient]:
    with PveClient(connection(sim)) as c:
        yield c


@pytest.fixture(autouse=True)
def no_faults(sim: dict[str, Any]) -> Iterator[None]:
    clear_faults(sim)
    yield
    clear_faults(sim)


@pytest.fixture
def disposable(sim: dict[str, Any], client: PveClient) -> Iterator[Callable[[int], int]]:
    """Register vmids; each is destroyed (if it exists) before use and after the test."""
    vmids: list[int] = []

    def register(vmid: int) -> int:
        if vmid not in vmids:
            destroy_ct(client, sim, vmid)
            vmids.append(vmid)
        return vmid

    yield register
    errors = []
    for vmid in vmids:
        try:
            destroy_ct(client, sim, vmid)
        except Exception as exc:  # clean up the others, then report
            errors.append(f"{vmid}: {exc!r}")
    assert not errors, errors


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(REDIS_URL)
    try:
        r.ping()
    except redis.ConnectionError:
        if "REDIS_URL" in os.environ:
            raise
        pytest.skip(f"no Redis at {REDIS_URL} (scripts/test sets REDIS_URL)")
    yield r
    r.close()


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A lock namespace of this test alone (the dev Redis is shared)."""
    prefix = f"test-pve-{uuid.uuid4().hex[:12]}"
    yield prefix
    for key in redis_client.scan_iter(f"{prefix}:*"):
        redis_client.delete(key)


# --- authentication ----------------------------------------------------------------------
def test_token_auth_with_ca_file(client: PveClient, sim: dict[str, Any]) -> None:
    assert client.version()["release"] == "9.1"
    nodes = {n.name: n for n in client.nodes()}
    node = nodes[sim["node"]]
    assert node.online and node.max_cpu >= 1 and 0 < node.free_memory <= node.memory_total
    assert 0 <= node.free_cpu <= node.max_cpu


def ticket_client(sim: dict[str, Any]) -> tuple[PveClient, TicketAuth]:
    c = PveClient(connection(sim, auth=PasswordAuth(sim["user"], sim["password"])))
    auth = c._session.auth
    assert isinstance(auth, TicketAuth)
    return c, auth


def test_ticket_auth_logs_in_once_and_sends_csrf(sim: dict[str, Any]) -> None:
    c, auth = ticket_client(sim)
    with c:
        assert auth.logins == 0  # nothing happens before the first call
        assert c.version()["release"] == "9.1"
        assert c.next_vmid() >= 100
        # a POST needs the CSRF token: without it PVE answers 401, with it we
        # reach parameter validation
        with pytest.raises(PvePermanentError) as info:
            c.create_container({"vmid": 5000})
        assert info.value.status == 400
        assert info.value.errors["ostemplate"] == "property is missing and it is not optional"
        assert auth.logins == 1


def forge_expired_ticket(sim: dict[str, Any]) -> tuple[str, str]:
    """A correctly signed ticket issued 2 h 5 min ago, as the node would see it."""
    from pvesim.auth import Authenticator, Credentials

    path = Path(sim.get("state_dir") or "/nonexistent") / "credentials.json"
    if not path.exists():
        pytest.skip("the simulator's state dir is unknown (set PVESIM_STATE_DIR)")
    raw = json.loads(path.read_text())
    creds = Credentials(user=raw["user"], password=raw["password"], token_name=raw["token_name"],
                        token_secret=raw["token_secret"],
                        signing_key=bytes.fromhex(raw["signing_key"]))  # fmt: skip
    return Authenticator(creds, clock=lambda: time.time() - 7500).issue_ticket(raw["user"])


def test_expired_ticket_is_renewed(sim: dict[str, Any]) -> None:
    c, auth = ticket_client(sim)
    with c:
        assert c.version()
        expired, csrf = forge_expired_ticket(sim)
        auth._ticket, auth._csrf = expired, csrf  # what a client holds after 2 h of sleep
        assert c.next_vmid() >= 100  # rejected with 401, logged in again, retried
        assert auth.logins == 2 and auth._ticket != expired
        with pytest.raises(PvePermanentError) as info:  # and POSTs work with the new CSRF token
            c.create_container({"vmid": 5000})
        assert info.value.status == 400


def test_old_ticket_is_renewed_before_it_expires(sim: dict[str, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    c, auth = ticket_client(sim)
    with c:
        assert c.version()
        auth._issued -= auth.renew_after + 1  # an hour has passed
        # renewed before use: the node never sees the old ticket rejected
        monkeypatch.setattr(auth, "invalidate", lambda: pytest.fail("got a 401"))
        assert c.version()
        assert auth.logins == 2 and auth._issued > time.monotonic() - 10


def test_wrong_password_is_permanent(sim: dict[str, Any]) -> None:
    wrong = "Wrong-" + sim["password"]
    with (
        PveClient(connection(sim, auth=PasswordAuth(sim["user"], wrong))) as c,
        pytest.raises(PvePermanentError) as info,
    ):
        c.version()
    assert info.value.status == 401
    assert "login as root@pam" in str(info.value) and "password" in str(info.value.hint)
    assert wrong not in str(info.value)
    assert_no_secret(sim, info.value)


def test_wrong_token_is_permanent(sim: dict[str, Any]) -> None:
    bad = TokenAuth(sim["token_id"], "00000000-0000-0000-0000-000000000000")
    with PveClient(connection(sim, auth=bad)) as c, pytest.raises(PvePermanentError) as info:
        c.version()
    assert info.value.status == 401 and "API token" in str(info.value.hint)
    assert "00000000-0000" not in str(info.value)
    assert_no_secret(sim, info.value)


# --- TLS trust ------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["colons", "plain-lowercase"])
def test_pinned_fingerprint_is_trusted(sim: dict[str, Any], form: str) -> None:
    pin = sim["fingerprint"] if form == "colons" else sim["fingerprint"].replace(":", "").lower()
    with PveClient(connection(sim, ca_file=None, fingerprint=pin)) as c:
        assert c.version()["release"] == "9.1"
        assert c.next_vmid() >= 100


def test_wrong_fingerprint_is_permanent_and_leaks_nothing(sim: dict[str, Any]) -> None:
    wrong = "AB:" * 31 + "AB"
    with (
        PveClient(connection(sim, ca_file=None, fingerprint=wrong)) as c,
        pytest.raises(PvePermanentError) as info,
    ):
        c.version()
    exc = info.value
    assert "does not match the pinned fingerprint" in str(exc)
    assert wrong in str(exc.hint)
    assert exc.__suppress_context__  # requests' exception (which holds the request) is not shown
    assert_no_secret(sim, exc)


def test_system_store_does_not_trust_the_node(sim: dict[str, Any]) -> None:
    with PveClient(connection(sim, ca_file=None)) as c, pytest.raises(PvePermanentError) as info:
        c.version()
    assert "TLS certificate is not trusted" in str(info.value)
    assert "system certificate store" in str(info.value.hint)
    assert_no_secret(sim, info.value)


def test_insecure_only_when_asked_for(
    sim: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="provisioner.pve.http"):
        c = PveClient(connection(sim, ca_file=None, insecure=True))
    with c:
        assert c.version()["release"] == "9.1"
    assert "TLS verification of PVE node" in caplog.text


def test_unreachable_node_is_transient(sim: dict[str, Any]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    with PveClient(connection(sim, port=port)) as c, pytest.raises(PveTransientError) as info:
        c.version()
    assert "connection failed" in str(info.value) and "Connection refused" in str(info.value)


# --- error mapping ---------------------------------------------------------------------------
def test_validation_errors_are_permanent_with_parameter_errors(client: PveClient) -> None:
    with pytest.raises(PvePermanentError) as info:
        client.create_container({"vmid": 5001, "ostemplate": TEMPLATE, "memory": "lots",
                                 "net0": "name=eth0,bridge=vmbr0,ip=300.1.1.1/24",
                                 "unprivileged": True, "start": False})  # fmt: skip
    exc = info.value
    assert exc.status == 400 and exc.pve_message == "Parameter verification failed."
    # booleans went as 0/1: only the really bad parameters are reported
    assert set(exc.errors) == {"memory", "net0"}
    assert "type check ('integer') failed" in exc.errors["memory"]
    assert str(exc).startswith("POST /nodes/pve/lxc on node pve failed (HTTP 400)")
    assert not client.exists(5001)


def test_handler_failure_that_cannot_clear_is_permanent(client: PveClient) -> None:
    with pytest.raises(PvePermanentError) as info:
        client.status(5998)
    assert info.value.status == 500 and "does not exist" in str(info.value.pve_message)
    assert not client.exists(5998)


@pytest.mark.parametrize("status", [500, 595])
def test_server_errors_are_transient(sim: dict[str, Any], client: PveClient, status: int) -> None:
    admin(sim, "http", {"path": "/cluster/nextid$", "status": status, "count": 1})
    with pytest.raises(PveTransientError) as info:
        client.next_vmid()
    assert info.value.status == status and "GET /cluster/nextid" in str(info.value)
    assert client.next_vmid() >= 100  # the fault was used up


@pytest.mark.timeout(90)
def test_locked_container_is_transient(sim: dict[str, Any], client: PveClient,
                                       disposable: Callable[[int], int]) -> None:  # fmt: skip
    vmid = disposable(5002)
    client.wait_for_task(client.create_container(tiny(vmid)))
    admin(sim, "lock", {"vmid": vmid, "lock": "backup", "seconds": 3})
    # the start's task checks the lock (PVE::API2::LXC::Status vm_start)
    with pytest.raises(TaskLockedError) as locked:
        client.wait_for_task(client.start(own(client, vmid)))
    assert locked.value.transient and locked.value.exitstatus == "CT is locked (backup)"
    assert "lock" in str(locked.value.hint)
    # a config update checks it before any task (update_vm)
    with pytest.raises(PveTransientError) as info:
        client.put_config(own(client, vmid), {"description": "while locked"})
    assert info.value.pve_message == "CT is locked (backup)"
    assert "lock" in str(info.value.hint)
    assert client.wait_unlocked(vmid, timeout=30, poll=0.2).lock is None
    client.put_config(own(client, vmid), {"description": "after the lock"})
    assert client.get_config(vmid)["description"] == "after the lock\n"  # a comment line


@pytest.mark.timeout(60)
def test_file_lock_timeout_is_transient(sim: dict[str, Any], client: PveClient,
                                        disposable: Callable[[int], int]) -> None:  # fmt: skip
    vmid = disposable(5003)
    client.wait_for_task(client.create_container(tiny(vmid)))
    admin(sim, "lock", {"vmid": vmid, "kind": "file", "seconds": 12})
    with pytest.raises(PveTransientError) as info:
        client.put_config(own(client, vmid), {"description": "file-locked"})
    assert "can't lock file" in str(info.value.pve_message)


# --- tasks --------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_task_log_is_streamed_exactly_once(sim: dict[str, Any], client: PveClient,
                                           disposable: Callable[[int], int]) -> None:  # fmt: skip
    vmid = disposable(5004)
    # a delay keeps the log empty ("no content") for the first polls
    admin(sim, "task", {"type": "vzcreate", "vmid": vmid, "delay": 1})
    lines: list[str] = []
    result = client.wait_for_task(client.create_container(tiny(vmid)), poll=0.1,
                                  on_log=lines.append)  # fmt: skip
    assert result.clean and result.exitstatus == "OK" and result.warnings == 0
    assert lines == client.task_log(result.upid)
    assert lines[0].startswith("extracting archive") and lines[-1] == "TASK OK"
    assert "no content" not in lines


@pytest.mark.timeout(60)
def test_task_error_raises_with_the_log_tail(sim: dict[str, Any], client: PveClient,
                                             disposable: Callable[[int], int]) -> None:  # fmt: skip
    vmid = disposable(5005)
    message = f"unable to create CT {vmid} - disk quota exceeded (test)"
    admin(sim, "task", {"type": "vzcreate", "vmid": vmid, "error": message})
    upid = client.create_container(tiny(vmid))
    with pytest.raises(TaskFailedError) as info:
        client.wait_for_task(upid)
    exc = info.value
    assert (exc.upid, exc.exitstatus, exc.transient) == (upid, message, False)
    assert str(exc) == f"task vzcreate of CT {vmid} on node pve failed: {message}"
    assert exc.log_tail[-1] == f"TASK ERROR: {message}"
    assert exc.log_tail[0].startswith("extracting archive")
    assert not client.exists(vmid)  # a failed create removes itself


@pytest.mark.timeout(60)
def test_task_timeout_is_transient(sim: dict[str, Any], client: PveClient,
                                   disposable: Callable[[int], int]) -> None:  # fmt: skip
    vmid = disposable(5006)
    admin(sim, "task", {"type": "vzcreate", "vmid": vmid, "delay": 4})
    upid = client.create_container(tiny(vmid))
    started = time.monotonic()
    with pytest.raises(PveTransientError) as info:
        client.wait_for_task(upid, timeout=1)
    assert 1 <= time.monotonic() - started < 3
    assert f"task vzcreate of CT {vmid} on node pve still running after 1s" in str(info.value)
    assert client.wait_for_task(upid, timeout=60).clean  # it kept running


@pytest.mark.timeout(60)
def test_brief_400_after_the_start_is_tolerated(sim: dict[str, Any], client: PveClient,
                                                disposable: Callable[[int], int]) -> None:  # fmt: skip
    vmid = disposable(5007)
    upid = client.create_container(tiny(vmid))
    admin(sim, "http", {"path": "/tasks/.*/status$", "status": 400, "count": 2})
    assert client.wait_for_task(upid).clean
    assert admin(sim, "faults", method="GET")["http"] == []  # both 400s were answered


# --- vmid allocation ---------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_user_chosen_vmid(client: PveClient, redis_client: redis.Redis, key_prefix: str,
                          disposable: Callable[[int], int]) -> None:  # fmt: skip
    vmid = disposable(5010)
    calls: list[int] = []

    def create(v: int) -> str:
        calls.append(v)
        return client.create_container(tiny(v))

    got = client.allocate_vmid(vmid, create, redis=redis_client, key_prefix=key_prefix)
    assert (got.vmid, got.attempts, calls) == (vmid, 1, [vmid])
    client.wait_for_task(got.result)
    with pytest.raises(PvePermanentError, match="already exists"):
        client.allocate_vmid(vmid, create, redis=redis_client, key_prefix=key_prefix)
    assert calls == [vmid, vmid]  # a user's vmid is never swapped for another
    assert not redis_client.exists(lock_key(client, key_prefix))  # released after a failure too


@pytest.mark.timeout(90)
def test_nextid_allocation(client: PveClient, redis_client: redis.Redis, key_prefix: str,
                           disposable: Callable[[int], int]) -> None:  # fmt: skip
    def create(v: int) -> str:
        disposable(v)
        return client.create_container(tiny(v, hostname="pvetest-nextid"))

    expected = client.next_vmid()
    got = client.allocate_vmid(None, create, redis=redis_client, key_prefix=key_prefix)
    assert (got.vmid, got.attempts) == (expected, 1)
    client.wait_for_task(got.result)
    assert client.get_config(got.vmid)["hostname"] == "pvetest-nextid"
    assert client.next_vmid() != got.vmid


@pytest.mark.timeout(90)
def test_nextid_race_is_retried_with_a_fresh_id(client: PveClient, redis_client: redis.Redis,
                                                key_prefix: str,
                                                disposable: Callable[[int], int]) -> None:  # fmt: skip
    offered: list[int] = []

    def create(v: int) -> str:
        offered.append(v)
        disposable(v)
        if len(offered) == 1:
            # someone who does not take our lock (the GUI, another tool) wins the race
            client.wait_for_task(client.create_container(tiny(v, hostname="pvetest-other")))
        return client.create_container(tiny(v, hostname="pvetest-ours"))

    got = client.allocate_vmid(None, create, redis=redis_client, key_prefix=key_prefix)
    assert got.attempts == 2 and len(offered) == 2 and got.vmid == offered[1] != offered[0]
    client.wait_for_task(got.result)
    assert client.get_config(offered[0])["hostname"] == "pvetest-other"
    assert client.get_config(got.vmid)["hostname"] == "pvetest-ours"


def test_lock_held_elsewhere_is_transient(client: PveClient, redis_client: redis.Redis,
                                          key_prefix: str) -> None:  # fmt: skip
    redis_client.set(lock_key(client, key_prefix), "another-worker", ex=30)
    with pytest.raises(TransientError, match=r"still busy after 0\.3s"):
        client.allocate_vmid(None, lambda v: pytest.fail("must not create"), redis=redis_client,
                             key_prefix=key_prefix, wait_timeout=0.3)  # fmt: skip


def alloc_worker(conn: PveConnection, redis_url: str, key_prefix: str, hostnames: list[str],
                 barrier: Barrier, out: Any) -> None:  # fmt: skip
    """One process of the concurrency proof (also used by bench/vmid_alloc.py):
    one thread per hostname, all released at once, each allocating a vmid and
    creating a tiny container.  Puts a list of result dicts on ``out``."""
    r = redis.Redis.from_url(redis_url)
    go = threading.Event()
    results: list[dict[str, Any]] = []

    def one(hostname: str) -> None:
        c = PveClient(conn)
        c.version()  # connect before the start line: measure allocation only
        ready.release()
        go.wait()
        started = time.monotonic()
        try:
            got = c.allocate_vmid(None, lambda v: c.create_container(tiny(v, hostname)), redis=r,
                                  key_prefix=key_prefix, wait_timeout=300)  # fmt: skip
            ended = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
            results.append({"hostname": hostname, "vmid": got.vmid, "upid": got.result,
                            "attempts": got.attempts, "lock_wait": got.lock_wait,
                            "started": started, "ended": ended, "latency": ended - started})  # fmt: skip
        except Exception as exc:
            results.append({"hostname": hostname, "error": repr(exc)})
        finally:
            c.close()

    ready = threading.Semaphore(0)
    threads = [threading.Thread(target=one, args=(h,)) for h in hostnames]
    for t in threads:
        t.start()
    for _ in threads:
        ready.acquire()
    barrier.wait(timeout=120)  # every process ready: start together
    go.set()
    for t in threads:
        t.join()
    out.put(results)


def run_concurrent_allocations(conn: PveConnection, redis_url: str, key_prefix: str,
                               hostnames: list[str], processes: int) -> list[dict[str, Any]]:  # fmt: skip
    """Spread ``hostnames`` over ``processes`` processes; gather the results."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    shares = [hostnames[i::processes] for i in range(processes)]
    procs = [ctx.Process(target=alloc_worker, args=(conn, redis_url, key_prefix, share, barrier, out))
             for share in shares]  # fmt: skip
    for p in procs:
        p.start()
    results: list[dict[str, Any]] = []
    try:
        for _ in procs:
            results.extend(out.get(timeout=600))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    return results


def destroy_by_prefix(client: PveClient, sim: dict[str, Any], prefix: str) -> int:
    """Destroy every container whose name starts with ``prefix`` (in parallel tasks)."""
    clear_faults(sim)
    ours = [c for c in client.containers() if c.name.startswith(prefix)]
    upids = []
    for ct in ours:
        client.wait_unlocked(ct.vmid, timeout=60, poll=0.2)
        upids.append(client.destroy(own(client, ct.vmid), force=True))
    for upid in upids:
        client.wait_for_task(upid, timeout=120)
    return len(ours)


@pytest.mark.long
@pytest.mark.timeout(600)
def test_50_concurrent_allocations_from_4_processes_never_collide(
    sim: dict[str, Any], client: PveClient, redis_client: redis.Redis, key_prefix: str
) -> None:
    prefix = f"alloc-{uuid.uuid4().hex[:6]}"
    hostnames = [f"{prefix}-{i:02d}" for i in range(50)]
    try:
        results = run_concurrent_allocations(connection(sim), REDIS_URL, key_prefix,
                                             hostnames, processes=4)  # fmt: skip
        errors = [r for r in results if "error" in r]
        assert not errors, errors
        assert sorted(r["hostname"] for r in results) == hostnames
        vmids = [r["vmid"] for r in results]
        assert len(set(vmids)) == 50, "two allocations got the same vmid"
        # serialised by the lock, nobody even had to retry
        assert [r for r in results if r["attempts"] != 1] == []
        for r in results:
            assert client.wait_for_task(r["upid"], timeout=300).clean
        # each container is the one its allocator created
        owners = {c.vmid: c.name for c in client.containers()}
        assert {r["vmid"]: r["hostname"] for r in results} == {v: owners[v] for v in vmids}
    finally:
        destroy_by_prefix(client, sim, prefix)
    assert not [c for c in client.containers() if c.name.startswith(prefix)]


def wait_booted(client: PveClient, vmid: int, timeout: float = 60) -> str | None:
    """Wait until the container's own network scripts have configured eth0
    (systemd is up by then, so it also handles a clean shutdown)."""
    deadline = time.monotonic() + timeout
    while (seen := global_ipv4(client.interfaces(vmid))) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return seen


# --- IP addresses ---------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_static_ip(sim: dict[str, Any], client: PveClient,
                   disposable: Callable[[int], int]) -> None:  # fmt: skip
    vmid, ip = disposable(5020), host_ip(sim, 41)
    net0 = f"name=eth0,bridge=vmbr0,ip={ip}/24,gw={sim['gateway']}"
    client.wait_for_task(client.create_container(tiny(vmid, net0=net0)))
    assert client.resolve_container_ip(vmid, net0) == ip  # straight from net0
    client.wait_for_task(client.start(own(client, vmid)))
    assert wait_booted(client, vmid) == ip  # and the container agrees


@pytest.mark.timeout(120)
def test_dhcp_ip_after_a_late_lease(sim: dict[str, Any], client: PveClient,
                                    disposable: Callable[[int], int]) -> None:  # fmt: skip
    vmid = disposable(5021)
    net0 = "name=eth0,bridge=vmbr0,ip=dhcp"
    client.wait_for_task(client.create_container(tiny(vmid, net0=net0)))
    admin(sim, "dhcp-delay", {"vmid": vmid, "seconds": 4})
    started = time.monotonic()
    client.wait_for_task(client.start(own(client, vmid)))
    with pytest.raises(PveTransientError) as info:
        client.resolve_container_ip(vmid, net0, timeout=1, poll=0.2)
    assert f"CT {vmid} on node pve: no IPv4 address on eth0 after 1s (DHCP lease)" in str(
        info.value
    )
    ip = client.resolve_container_ip(vmid, net0, timeout=60, poll=0.2)
    assert time.monotonic() - started >= 3.5
    subnet = ipaddress.ip_network(sim["subnet"])
    assert ipaddress.ip_address(ip) in subnet
    assert int(ipaddress.ip_address(ip)) - int(subnet.network_address) >= 128  # the DHCP pool


# --- templates ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_ensure_template_downloads_a_missing_one(sim: dict[str, Any], client: PveClient) -> None:
    if not sim.get("state_dir"):
        pytest.skip("the simulator's state dir is unknown (set PVESIM_STATE_DIR)")
    cache = Path(sim["state_dir"]) / "storage/local/template/cache"
    name = TEMPLATE.split("/", 1)[1]
    keep = cache / f".{name}.keep"
    assert client.ensure_template("local", TEMPLATE) is False  # present: nothing to do
    shutil.move(cache / name, keep)
    try:
        assert TEMPLATE not in [t.volid for t in client.templates("local")]
        with pytest.raises(PvePermanentError, match="does not support templates"):
            client.ensure_template("local-lvm", name)
        lines: list[str] = []
        assert client.ensure_template("local", TEMPLATE, on_log=lines.append) is True
        assert lines[-1] == "TASK OK"
        assert TEMPLATE in [t.volid for t in client.templates("local")]
        assert client.ensure_template("local", name) is False
    finally:
        if not (cache / name).exists():
            shutil.move(keep, cache / name)
        keep.unlink(missing_ok=True)


def test_storages_and_bridges(client: PveClient) -> None:
    rootdir = client.storages(content="rootdir")
    assert [s.name for s in rootdir] == ["local-lvm"] and rootdir[0].avail > 0
    assert {s.name for s in client.storages()} == {"local", "local-lvm"}
    assert "vmbr0" in [b.name for b in client.bridges()]


# --- the container lifecycle ---------------------------------------------------------------
@pytest.mark.timeout(300)
def test_lifecycle(sim: dict[str, Any], client: PveClient,
                   disposable: Callable[[int], int]) -> None:  # fmt: skip
    vmid, clone_id, ip = disposable(5030), disposable(5031), host_ip(sim, 42)
    net0 = f"name=eth0,bridge=vmbr0,ip={ip}/24,gw={sim['gateway']}"
    client.wait_for_task(client.create_container(tiny(vmid, net0=net0, memory=256,
                                                      features={"nesting": True})))  # fmt: skip
    config = client.get_config(vmid)
    assert (config["memory"], config["features"], config["unprivileged"]) == (256, "nesting=1", 1)
    client.put_config(own(client, vmid), {"description": "made by test_pve", "onboot": False})
    client.put_config(own(client, vmid), {}, delete=["onboot"])
    config = client.get_config(vmid)
    assert config["description"] == "made by test_pve\n" and "onboot" not in config

    client.wait_for_task(client.start(own(client, vmid)))
    status = client.status(vmid)
    assert status.running and status.vmid == vmid and status.name == f"pvetest-{vmid}"
    assert vmid in [c.vmid for c in client.containers() if c.running]
    client.wait_for_task(client.stop(own(client, vmid)))
    assert not client.status(vmid).running
    client.wait_for_task(client.start(own(client, vmid)))

    client.wait_for_task(client.snapshot_create(own(client, vmid), "base", description="first"))
    assert [(s.name, s.description) for s in client.snapshots(vmid)] == [("base", "first")]
    client.put_config(own(client, vmid), {"description": "changed"})
    client.wait_for_task(client.snapshot_rollback(own(client, vmid), "base", start=True))
    # the rest of the config comes back; the description stays as it is now, as in
    # PVE (pve-guest-common's __snapshot_copy_config skips it)
    assert client.get_config(vmid)["description"] == "changed\n"
    assert client.status(vmid).running
    client.wait_for_task(client.snapshot_delete(own(client, vmid), "base"))
    assert client.snapshots(vmid) == []

    assert wait_booted(client, vmid) == ip
    client.wait_for_task(client.reboot(own(client, vmid)), timeout=120)
    assert client.status(vmid).running
    assert wait_booted(client, vmid) == ip
    client.wait_for_task(
        client.shutdown(own(client, vmid), timeout=30, force_stop=True), timeout=120
    )
    assert not client.status(vmid).running

    client.wait_for_task(client.clone(own(client, vmid), clone_id, hostname=f"pvetest-{clone_id}"))
    assert client.get_config(clone_id)["hostname"] == f"pvetest-{clone_id}"
    client.wait_for_task(client.destroy(own(client, clone_id)))
    assert not client.exists(clone_id)

    client.wait_for_task(client.start(own(client, vmid)))
    with pytest.raises(PvePermanentError, match="container is running"):
        client.destroy(own(client, vmid))
    client.wait_for_task(client.destroy(own(client, vmid), force=True))
    assert not client.exists(vmid)

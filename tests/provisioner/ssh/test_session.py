"""The SSH layer against real sshd in simulator containers: connecting while
a container boots or refuses, host key pinning, uploads, streaming runs,
timeouts and dropped connections.  Shared simulator; vmids 6000-6999,
static addresses .91-.99 of its subnet."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from proxmoxer import ResourceException

from provisioner.errors import (
    CommandFailedError,
    ConfigError,
    HostKeyMismatchError,
    SshPermanentError,
    SshTransientError,
)
from provisioner.ssh.session import (
    ConnectAttempt,
    FilePolicy,
    FileSpec,
    SshSession,
    UploadStatus,
    connect,
)
from tests.pvesim.helpers import admin, token_api, wait_task

pytestmark = pytest.mark.integration
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
MAIN_VMID, BOOT_VMID = 6000, 6001


@dataclass(frozen=True)
class Ct:
    vmid: int
    ip: str
    private_key: str
    host_key: str


def addr(sim: dict[str, Any], host: int) -> str:
    return str(ipaddress.ip_network(sim["subnet"]).network_address + host)


def create_ct(api: Any, sim: dict[str, Any], vmid: int, ip: str, public_key: str) -> None:
    destroy_ct(api, vmid)  # a leftover of an interrupted run
    upid = api.nodes(sim["node"]).lxc.post(
        vmid=vmid, ostemplate=TEMPLATE, storage="local-lvm", hostname=f"ct{vmid}",
        net0=f"name=eth0,bridge=vmbr0,ip={ip}/24,gw={sim['gateway']}",
        **{"ssh-public-keys": public_key},
    )  # fmt: skip
    assert wait_task(api, sim["node"], upid)["exitstatus"] == "OK"


def start_ct(api: Any, sim: dict[str, Any], vmid: int) -> None:
    upid = api.nodes(sim["node"]).lxc(vmid).status.start.post()
    assert wait_task(api, sim["node"], upid)["exitstatus"] == "OK"


def destroy_ct(api: Any, vmid: int) -> None:
    try:
        ct = api.nodes("pve").lxc(vmid)
        if ct.status.current.get()["status"] == "running":
            wait_task(api, "pve", ct.status.stop.post())
        wait_task(api, "pve", ct.delete())
    except ResourceException:
        pass  # does not exist (any more)


@pytest.fixture(scope="module")
def api(sim: dict[str, Any]) -> Any:
    return token_api(sim)


@pytest.fixture(scope="module")
def client_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture(scope="module")
def ct(sim: dict[str, Any], api: Any, client_key: asyncssh.SSHKey) -> Iterator[Ct]:
    """One running container for the module; its host key recorded at first contact."""
    ip = addr(sim, 91)
    create_ct(api, sim, MAIN_VMID, ip, client_key.export_public_key().decode())
    try:
        start_ct(api, sim, MAIN_VMID)
        private = client_key.export_private_key().decode()

        async def first_contact() -> str:
            async with await connect(ip, private_key=private, known_host_key=None,
                                     deadline=60) as session:  # fmt: skip
                return session.host_key

        yield Ct(MAIN_VMID, ip, private, asyncio.run(first_contact()))
    finally:
        destroy_ct(api, MAIN_VMID)


async def open_session(ct: Ct, **kwargs: Any) -> SshSession:
    kwargs.setdefault("known_host_key", ct.host_key)
    kwargs.setdefault("deadline", 30)
    return await connect(ct.ip, private_key=ct.private_key, **kwargs)


async def sh(session: SshSession, command: str) -> str:
    """Run a helper command that must succeed; return its stdout."""
    lines: list[str] = []
    await session.run(command, check=True,
                      on_line=lambda stream, line: lines.append(line) if stream == "stdout" else None)  # fmt: skip
    return "\n".join(lines)


def scratch_dir() -> str:
    return f"/srv/ssh-test-{secrets.token_hex(4)}"


# --- connecting -------------------------------------------------------------


@pytest.mark.timeout(120)
def test_connect_retries_while_the_container_boots(
    sim: dict[str, Any], api: Any, client_key: asyncssh.SSHKey
) -> None:
    ip = addr(sim, 92)
    create_ct(api, sim, BOOT_VMID, ip, client_key.export_public_key().decode())
    attempts: list[ConnectAttempt] = []

    async def scenario() -> tuple[str, float]:
        started = time.monotonic()
        # Connecting before the container even starts: timed out, unreachable
        # or refused until its sshd answers (short attempts, or one attempt's
        # SYN retransmits could span the whole boot).
        pending = asyncio.create_task(connect(
            ip, private_key=client_key.export_private_key().decode(), known_host_key=None,
            deadline=90, attempt_timeout=0.5, on_attempt=attempts.append,
        ))  # fmt: skip
        await asyncio.sleep(0.5)
        await asyncio.to_thread(start_ct, api, sim, BOOT_VMID)
        async with await pending as session:
            return await sh(session, "hostname"), time.monotonic() - started

    try:
        hostname, took = asyncio.run(scenario())
    finally:
        destroy_ct(api, BOOT_VMID)
    assert hostname == f"ct{BOOT_VMID}"
    failed, last = attempts[:-1], attempts[-1]
    assert failed, "the first attempt cannot have found sshd up before the start"
    assert all(a.error and a.retry_in is not None for a in failed)
    assert [a.number for a in attempts] == list(range(1, len(attempts) + 1))
    assert last.error is None and last.retry_in is None
    assert took < 60


@pytest.mark.timeout(60)
def test_connect_waits_out_a_refusing_sshd(sim: dict[str, Any], ct: Ct) -> None:
    attempts: list[ConnectAttempt] = []

    async def scenario() -> float:
        admin(sim, "ssh-refuse", {"vmid": ct.vmid, "seconds": 3})
        started = time.monotonic()
        async with await open_session(ct, on_attempt=attempts.append) as session:
            assert await sh(session, "echo up") == "up"
        return time.monotonic() - started

    took = asyncio.run(scenario())
    assert 2 <= took < 10
    assert len(attempts) >= 3
    assert all(a.error == "connection refused" for a in attempts[:-1])
    # capped, jittered backoff: no pause above the 2 s cap
    assert max(a.retry_in or 0 for a in attempts) <= 2.0


@pytest.mark.timeout(60)
def test_connect_gives_up_at_the_deadline_naming_the_last_error(
    sim: dict[str, Any], ct: Ct
) -> None:
    async def scenario() -> None:
        admin(sim, "ssh-refuse", {"vmid": ct.vmid, "seconds": 4})
        started = time.monotonic()
        with pytest.raises(SshTransientError, match="last error: connection refused") as err:
            await open_session(ct, deadline=1.5)
        assert 1.4 <= time.monotonic() - started < 3
        assert err.value.transient
        # the refusal ends by itself; the container is reachable again
        async with await open_session(ct, deadline=30) as session:
            await sh(session, "true")

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_host_key_pinning(ct: Ct) -> None:
    async def scenario() -> None:
        # first contact: the key is accepted and exposed for storing
        async with await open_session(ct, known_host_key=None) as first:
            on_disk = await sh(first, "cat /etc/ssh/ssh_host_ed25519_key.pub")
            fingerprint = first.host_key_fingerprint
        assert first.host_key == ct.host_key
        assert first.host_key.split() == on_disk.split()[:2]  # the container's real key
        assert re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", fingerprint)
        key = asyncssh.import_public_key(first.host_key)
        assert key.get_fingerprint("sha256") == fingerprint
        # reconnect with the stored key
        async with await open_session(ct) as again:
            assert again.host_key_fingerprint == fingerprint
        # a different pinned key: refused at once, no retry loop
        impostor = asyncssh.generate_private_key("ssh-ed25519")
        attempts: list[ConnectAttempt] = []
        started = time.monotonic()
        with pytest.raises(HostKeyMismatchError) as err:
            await open_session(ct, deadline=30, on_attempt=attempts.append,
                               known_host_key=impostor.export_public_key().decode())  # fmt: skip
        assert time.monotonic() - started < 3 and attempts == []
        message = str(err.value)
        assert fingerprint in message and impostor.get_fingerprint("sha256") in message
        assert not err.value.transient
        # a pinned key of another type: the server cannot prove it, same error
        rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
        with pytest.raises(HostKeyMismatchError, match=re.escape(rsa.get_fingerprint("sha256"))):
            await open_session(ct, known_host_key=rsa.export_public_key().decode())

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_refused_client_key_is_permanent(ct: Ct) -> None:
    async def scenario() -> None:
        stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
        started = time.monotonic()
        with pytest.raises(SshPermanentError, match="refused") as err:
            await connect(ct.ip, private_key=stranger, known_host_key=ct.host_key, deadline=30)
        assert time.monotonic() - started < 5 and not err.value.transient
        with pytest.raises(SshPermanentError, match=r"private key .* cannot be read") as bad:
            await connect(ct.ip, private_key="-----BEGIN nonsense", known_host_key=None)
        assert "nonsense" not in str(bad.value)  # key material never echoed

    asyncio.run(scenario())


# --- uploading --------------------------------------------------------------


@pytest.mark.timeout(60)
def test_upload_policies(ct: Ct) -> None:
    async def scenario() -> None:
        d = scratch_dir()
        async with await open_session(ct) as session:
            await sh(session, f"mkdir -p {d} && cd {d} && for f in replace default backup; "
                              "do printf old > $f; done && chmod 0600 backup && chown daemon backup")  # fmt: skip
            results = await session.upload([
                FileSpec(f"{d}/replace", b"new", policy=FilePolicy.REPLACE),
                FileSpec(f"{d}/default", b"new", policy=FilePolicy.DEFAULT),
                FileSpec(f"{d}/backup", b"new", policy=FilePolicy.BACKUP),
                FileSpec(f"{d}/fresh-default", b"new", policy=FilePolicy.DEFAULT),
                FileSpec(f"{d}/fresh-backup", b"new", policy=FilePolicy.BACKUP),
            ])  # fmt: skip
            assert [r.status for r in results] == [
                UploadStatus.UPLOADED, UploadStatus.SKIPPED_EXISTS, UploadStatus.BACKED_UP,
                UploadStatus.UPLOADED, UploadStatus.UPLOADED,
            ]  # fmt: skip
            assert [r.backup is not None for r in results] == [False, False, True, False, False]
            backup = results[2].backup
            assert backup is not None
            match = re.fullmatch(re.escape(f"{d}/backup.bak-") + r"(\d{8}T\d{6}Z)", backup)
            assert match, backup
            stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
            contents = await sh(session, f"cd {d} && for f in replace default backup "
                                         "fresh-default fresh-backup; do cat $f; echo; done")  # fmt: skip
            assert contents.split("\n") == ["new", "old", "new", "new", "new"]
            # the backup is the old file itself: content, mode and owner kept
            assert await sh(session, f"stat -c '%a %U' {backup}; cat {backup}") == "600 daemon\nold"
            # same content again: nothing to back up or replace
            again = await session.upload(
                [FileSpec(f"{d}/backup", b"new", policy=FilePolicy.BACKUP)]
            )
            assert again[0].status == UploadStatus.SKIPPED_SAME and again[0].backup is None
            # a second change within the same second gets its own backup name
            for content in (b"v2", b"v3"):
                changed = await session.upload(
                    [FileSpec(f"{d}/backup", content, policy=FilePolicy.BACKUP)]
                )
                assert changed[0].status == UploadStatus.BACKED_UP
            names = await sh(session, f"ls {d} | grep -c '^backup.bak-'")
            assert names == "3"

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_second_upload_skips_matching_files(ct: Ct) -> None:
    async def scenario() -> None:
        d = scratch_dir()
        big = secrets.token_bytes(600_000)  # the SFTP path
        files = [FileSpec(f"{d}/f{i}", f"file {i}\n".encode()) for i in range(5)]
        files.append(FileSpec(f"{d}/big", big))
        async with await open_session(ct) as session:
            first = await session.upload(files)
            assert {r.status for r in first} == {UploadStatus.UPLOADED}
            assert first[-1].sha256 == hashlib.sha256(big).hexdigest()
            assert first[-1].size == len(big)
            inodes = await sh(session, f"stat -c '%i %Y' {d}/*")
            second = await session.upload(files)
            assert {r.status for r in second} == {UploadStatus.SKIPPED_SAME}
            assert await sh(session, f"stat -c '%i %Y' {d}/*") == inodes  # not rewritten
            await sh(session, f"echo changed > {d}/f3")
            third = await session.upload(files)
            assert [r.path for r in third if r.status == UploadStatus.UPLOADED] == [f"{d}/f3"]
            assert await sh(session, f"cat {d}/f3") == "file 3"

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_modes_and_owners_as_declared(ct: Ct, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(secrets.token_bytes(400_000))
    small_local = tmp_path / "small.txt"
    small_local.write_bytes(b"from a local file\n")

    async def scenario() -> None:
        d = scratch_dir()
        declared = [
            (f"{d}/secret", b"s3cret", 0o600, "root:root"),
            (f"{d}/group-read", b"g", 0o640, "root:daemon"),
            (f"{d}/setuid", b"#!/bin/sh\n", 0o4755, "root:root"),
            (f"{d}/www/index.html", b"<h1>hi</h1>", 0o644, "www-data:www-data"),
            (f"{d}/numeric", b"n", 0o600, "1234:4321"),
            (f"{d}/deep/er/big.bin", local, 0o2750, "root:adm"),  # SFTP path, setgid
            (f"{d}/from-path", small_local, 0o444, "nobody:nogroup"),
            (f"{d}/empty", b"", 0o1777, "root:root"),
        ]
        files = [FileSpec(p, c, m, o) for p, c, m, o in declared]
        async with await open_session(ct) as session:
            await session.upload(files)
            stats = await sh(session, "stat -c '%n %a %U:%G' " + " ".join(p for p, *_ in declared))
            expected = {
                "root:root": "root:root", "root:daemon": "root:daemon", "1234:4321": "UNKNOWN:UNKNOWN",
                "www-data:www-data": "www-data:www-data", "root:adm": "root:adm",
                "nobody:nogroup": "nobody:nogroup",
            }  # fmt: skip
            for line, (path, _, mode, owner) in zip(stats.split("\n"), declared, strict=True):
                assert line == f"{path} {mode:o} {expected[owner]}"
            sums = await sh(session, f"sha256sum {d}/deep/er/big.bin {d}/from-path | cut -c1-64")
            assert sums.split("\n") == [
                hashlib.sha256(local.read_bytes()).hexdigest(),
                hashlib.sha256(small_local.read_bytes()).hexdigest(),
            ]
            # drifted mode and owner are brought back even though the content matches
            await sh(session, f"chmod 0666 {d}/secret && chown daemon {d}/secret")
            again = await session.upload(files)
            assert {r.status for r in again} == {UploadStatus.SKIPPED_SAME}
            assert await sh(session, f"stat -c '%a %U' {d}/secret") == "600 root"
            # an owner the container does not know is a permanent error
            with pytest.raises(SshPermanentError, match="unknown user nosuchuser"):
                await session.upload([FileSpec(f"{d}/x", b"x", owner="nosuchuser:root")])

    asyncio.run(scenario())


@pytest.mark.timeout(90)
def test_uploads_are_atomic_and_leave_no_temp_files(ct: Ct) -> None:
    """A reader that checksums the targets in a loop only ever sees a whole
    old or a whole new file, never a partial or missing one."""

    async def scenario() -> None:
        d = scratch_dir()
        versions = {
            "small": [secrets.token_bytes(2_000) for _ in range(2)],  # tar path
            "big": [secrets.token_bytes(1_500_000) for _ in range(2)],  # SFTP path
        }
        allowed = {hashlib.sha256(v).hexdigest() for vs in versions.values() for v in vs}
        async with await open_session(ct) as session:

            def files(n: int) -> list[FileSpec]:
                return [FileSpec(f"{d}/{name}", vs[n % 2]) for name, vs in versions.items()]

            await session.upload(files(0))
            seen: list[str] = []
            reader = asyncio.create_task(session.run(
                f"while [ ! -e {d}/stop ]; do sha256sum {d}/small {d}/big 2>&1; done",
                on_line=lambda stream, line: seen.append(line), timeout=60,
            ))  # fmt: skip
            for n in range(1, 13):
                await session.upload(files(n))
            await sh(session, f"touch {d}/stop")
            assert (await reader).exit_status == 0
            assert len(seen) > 20
            assert {line[:64] for line in seen} <= allowed, [
                line for line in seen if line[:64] not in allowed
            ][:3]
            assert await sh(session, f"find {d} -name '.provisioner-tmp-*' | wc -l") == "0"
            # a refused upload leaves nothing behind either
            await sh(session, f"mkdir {d}/a-dir")
            with pytest.raises(ConfigError, match="is a directory"):
                await session.upload([*files(0), FileSpec(f"{d}/a-dir", b"x")])
            assert await sh(session, f"find {d} -name '.provisioner-tmp-*' | wc -l") == "0"

    asyncio.run(scenario())


@pytest.mark.timeout(90)
def test_500_small_files_in_one_go(ct: Ct) -> None:
    async def scenario() -> None:
        d = scratch_dir()
        files = [
            FileSpec(f"{d}/dir{i % 25}/sub/file-{i}.conf", f"setting_{i} = {i * 7}\n".encode(),
                     0o640, "root:daemon")
            for i in range(500)
        ]  # fmt: skip
        async with await open_session(ct) as session:
            channels = count_channels(session)
            started = time.monotonic()
            results = await session.upload(files)
            took = time.monotonic() - started
            assert [r.status for r in results] == [UploadStatus.UPLOADED] * 500
            # one probe command, one tar stream, one SFTP session: not one per file
            assert channels() == 3
            assert took < 15
            listing = await sh(session, f"cd {d} && find . -type f | sort | xargs sha256sum")
            remote = {line[66:]: line[:64] for line in listing.split("\n")}
            local = {
                "./" + f.path.removeprefix(f"{d}/"): hashlib.sha256(f.content).hexdigest()
                for f in files
                if isinstance(f.content, bytes)
            }
            assert remote == local
            before = channels()
            assert {r.status for r in await session.upload(files)} == {UploadStatus.SKIPPED_SAME}
            assert channels() - before == 2  # the probe, then one SFTP session for the stats

    asyncio.run(scenario())


def count_channels(session: SshSession) -> Callable[[], int]:
    """Count the SSH channels a session opens from now on."""
    conn = session._conn
    opened = [0]
    original = conn.create_session

    async def counting(*args: Any, **kwargs: Any) -> Any:
        opened[0] += 1
        return await original(*args, **kwargs)

    conn.create_session = counting  # type: ignore[method-assign]
    return lambda: opened[0]


# --- running commands -------------------------------------------------------


@pytest.mark.timeout(60)
def test_stdout_and_stderr_lines_stream_in_order(ct: Ct) -> None:
    async def scenario() -> None:
        lines: list[tuple[str, str, float]] = []
        async with await open_session(ct) as session:
            result = await session.run(
                "for i in 1 2 3; do echo out$i; sleep 0.2; echo err$i >&2; sleep 0.2; done",
                on_line=lambda stream, line: lines.append((stream, line, time.monotonic())),
            )
        assert [(s, t) for s, t, _ in lines] == [
            ("stdout", "out1"), ("stderr", "err1"), ("stdout", "out2"),
            ("stderr", "err2"), ("stdout", "out3"), ("stderr", "err3"),
        ]  # fmt: skip
        # streamed as they came, not delivered at the end
        assert lines[-1][2] - lines[0][2] >= 0.8
        assert [(ln.stream, ln.text) for ln in result.tail] == [(s, t) for s, t, _ in lines]
        assert result.exit_status == 0 and result.duration >= 1.2

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_line_printed_in_pieces_arrives_whole(ct: Ct) -> None:
    async def scenario() -> None:
        lines: list[tuple[str, str]] = []
        async with await open_session(ct) as session:
            await session.run(
                "printf 'first '; sleep 0.3; printf 'second '; sleep 0.3; printf 'end\\n'; "
                "printf 'crlf\\r\\n'; printf '\\303'; sleep 0.3; printf '\\251t\\303\\251\\n'; "
                "printf 'err no newline' >&2; printf 'no newline'",
                on_line=lambda stream, line: lines.append((stream, line)),
            )  # fmt: skip
        assert lines[:3] == [("stdout", "first second end"), ("stdout", "crlf"),
                             ("stdout", "été")]  # fmt: skip
        assert sorted(lines[3:]) == [("stderr", "err no newline"), ("stdout", "no newline")]

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_5000_lines_arrive_exactly_once_in_order(ct: Ct) -> None:
    async def scenario() -> None:
        delivered: list[tuple[str, str]] = []
        async with await open_session(ct) as session:
            result = await session.run(
                "i=1; while [ $i -le 5000 ]; do echo \"line $i\"; echo \"err $i\" >&2; "
                "i=$((i+1)); done",
                on_line=lambda stream, line: delivered.append((stream, line)), tail_lines=50,
            )  # fmt: skip
        # Each stream in order; how the two interleave is up to sshd's reads.
        assert [t for s, t in delivered if s == "stdout"] == [f"line {i}" for i in range(1, 5001)]
        assert [t for s, t in delivered if s == "stderr"] == [f"err {i}" for i in range(1, 5001)]
        assert [(ln.stream, ln.text) for ln in result.tail] == delivered[-50:]


@pytest.mark.timeout(60)
def test_exit_codes_env_and_input(ct: Ct) -> None:
    async def scenario() -> None:
        async with await open_session(ct) as session:
            assert (await session.run("true")).ok
            failed = await session.run("echo about to fail; exit 42")
            assert failed.exit_status == 42 and not failed.ok
            with pytest.raises(CommandFailedError) as err:
                await session.run("echo doing; echo oops >&2; exit 3", check=True,
                                  name="20-app.sh")  # fmt: skip
            assert err.value.exit_status == 3 and not err.value.timed_out
            assert sorted(err.value.output_tail) == ["[stderr] oops", "doing"]
            assert "20-app.sh" in str(err.value) and "exited with status 3" in str(err.value)
            killed = await session.run("kill -KILL $$")
            assert (killed.exit_status, killed.exit_signal) == (137, "KILL")
            env = {"GREETING": 'it\'s "quoted" $HOME `x`', "EMPTY": ""}
            out = await sh(session, 'printf "%s|%s\\n" "$GREETING" "$EMPTY"; cat')
            assert out == "|"  # nothing leaks in without env
            lines: list[str] = []
            await session.run('printf "%s|%s\\n" "$GREETING" "${EMPTY-unset}"; cat', env=env,
                              input="line one\nline two\n",
                              on_line=lambda stream, line: lines.append(line))  # fmt: skip
            assert lines == [f"{env['GREETING']}|", "line one", "line two"]

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_timeout_kills_the_command_and_its_children(ct: Ct) -> None:
    async def scenario() -> None:
        marker = f"/tmp/marker-{secrets.token_hex(4)}"
        async with await open_session(ct) as session:
            started = time.monotonic()
            with pytest.raises(CommandFailedError) as err:
                # Children that ignore SIGTERM: only the SIGKILL that follows stops them.
                await session.run(
                    f"trap '' TERM; sleep 301 & echo started; "
                    f"while :; do date +%s%N > {marker}; sleep 0.1; done",
                    timeout=1.5,
                )
            took = time.monotonic() - started
            assert err.value.timed_out and err.value.exit_status is None
            assert err.value.output_tail == ["started"]
            assert "timed out after 1.5s" in str(err.value)
            assert 1.5 <= took < 8
            # nothing of it runs any more: no sleep, the marker stands still
            ps = await session.run("pgrep -f 'sleep [3]01'")  # [3]: not this shell's own line
            assert ps.exit_status == 1, ps.tail
            first = await sh(session, f"cat {marker}")
            await asyncio.sleep(0.5)
            assert await sh(session, f"cat {marker}") == first

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_login_shell_noise_does_not_hide_the_process_group(ct: Ct) -> None:
    """Debian's bash sources ~/.bashrc for sshd's commands; whatever it prints
    comes first and must neither break the timeout kill nor be lost."""

    async def scenario() -> None:
        async with await open_session(ct) as session:
            await sh(session, "cp -p /root/.bashrc /root/.bashrc.orig && "
                              "sed -i '1i echo bashrc-noise >&2' /root/.bashrc")  # fmt: skip
            try:
                lines: list[tuple[str, str]] = []
                with pytest.raises(CommandFailedError) as err:
                    await session.run("sleep 303 & echo started; wait", timeout=1,
                                      on_line=lambda s, line: lines.append((s, line)))  # fmt: skip
                assert err.value.timed_out
                assert sorted(lines) == [("stderr", "bashrc-noise"), ("stdout", "started")]
                assert (await session.run("pgrep -f 'sleep [3]03'")).exit_status == 1
            finally:
                await sh(session, "mv /root/.bashrc.orig /root/.bashrc")

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_failing_line_callback_stops_the_command(ct: Ct) -> None:
    async def scenario() -> None:
        def explode(stream: str, line: str) -> None:
            if line == "3":
                raise RuntimeError("event store down")

        async with await open_session(ct) as session:
            with pytest.raises(RuntimeError, match="event store down"):
                await session.run("for i in $(seq 100); do echo $i; sleep 0.05; done; "
                                  "touch /tmp/should-not-exist", on_line=explode)  # fmt: skip
            await asyncio.sleep(0.5)
            assert (await session.run("test -e /tmp/should-not-exist")).exit_status == 1

    asyncio.run(scenario())


@pytest.mark.timeout(90)
def test_a_dropped_connection_mid_command_is_transient(sim: dict[str, Any], ct: Ct) -> None:
    async def scenario() -> None:
        async with await open_session(ct) as session:
            started = asyncio.Event()
            task = asyncio.create_task(session.run(
                "echo started; sleep 60",
                on_line=lambda stream, line: started.set(), timeout=80,
            ))  # fmt: skip
            await asyncio.wait_for(started.wait(), 20)
            dropped = await asyncio.to_thread(admin, sim, "ssh-drop", {"vmid": ct.vmid})
            assert dropped["dropped"] >= 1
            t0 = time.monotonic()
            with pytest.raises(SshTransientError, match="lost while running") as err:
                await task
            assert time.monotonic() - t0 < 10 and err.value.transient
        async with await open_session(ct) as again:  # sshd itself is fine
            assert await sh(again, "echo back") == "back"

    asyncio.run(scenario())

"""pipe(): one command's stdout streamed into another's stdin over real sshd in
a simulator container: bytes intact and memory bounded, failures named by
side with the other side stopped, stderr lines, progress, timeouts, dropped
connections, and environment values that never reach a command line.
Shared simulator; vmid 6002, static address .93 of its subnet."""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import asyncssh
import pytest

from provisioner.errors import CommandFailedError, SshTransientError
from provisioner.ssh.pipe import pipe
from provisioner.ssh.session import SshSession, connect
from tests.provisioner.ssh.test_session import (
    Ct,
    addr,
    create_ct,
    destroy_ct,
    open_session,
    sh,
    start_ct,
)
from tests.pvesim.helpers import admin, token_api

pytestmark = pytest.mark.integration
VMID = 6002
MIB = 1 << 20
SIZE = 50 * MIB
SOURCE = "/root/pipe-source.bin"


@pytest.fixture(scope="module")
def ct(sim: dict[str, Any]) -> Iterator[Ct]:
    """One running container for the module, with 50 MiB of random data."""
    api = token_api(sim)
    key = asyncssh.generate_private_key("ssh-ed25519")
    ip = addr(sim, 93)
    create_ct(api, sim, VMID, ip, key.export_public_key().decode())
    try:
        start_ct(api, sim, VMID)
        private = key.export_private_key().decode()

        async def first_contact() -> str:
            async with await connect(ip, private_key=private, known_host_key=None,
                                     deadline=60) as session:  # fmt: skip
                await sh(session, f"head -c {SIZE} /dev/urandom > {SOURCE}")
                return session.host_key

        yield Ct(VMID, ip, private, asyncio.run(first_contact()))
    finally:
        destroy_ct(api, VMID)


async def sha256(session: SshSession, path: str) -> str:
    return (await sh(session, f"sha256sum {path}")).split()[0]


async def running(session: SshSession, pattern: str) -> bool:
    """Whether a process matches (write the pattern as 'x[y]z' so that the
    check's own command line does not)."""
    return (await session.run(f"pgrep -f '{pattern}'")).exit_status == 0


# --- the stream ---------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_50_mib_arrive_intact_with_bounded_memory(ct: Ct) -> None:
    async def scenario() -> None:
        async with await open_session(ct) as source, await open_session(ct) as target:
            expected = await sha256(source, SOURCE)
            progress: list[tuple[float, int]] = []
            lines: list[tuple[str, str]] = []
            tracemalloc.start()
            try:
                started = time.monotonic()
                piped = await pipe(
                    source, f"cat {SOURCE}", target, "sha256sum >&2",
                    on_bytes=lambda n: progress.append((time.monotonic(), n)),
                    on_stderr=lambda side, line: lines.append((side, line)),
                )  # fmt: skip
                took = time.monotonic() - started
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert piped == SIZE
            assert lines == [("import", f"{expected}  -")]
            # progress: growing, the whole count last, about 4 a second at most
            counts = [n for _, n in progress]
            assert counts == sorted(counts) and counts[-1] == SIZE
            # (the last call, at the end, may come sooner after the one before)
            gaps = [b - a for (a, _), (b, _) in itertools.pairwise(progress[:-1])]
            assert all(gap >= 0.24 for gap in gaps), gaps
            assert len(progress) <= took * 4 + 2, (len(progress), took)
            # bounded: a few chunks and the SSH windows, never the stream
            print(f"\npipe 50 MiB with tracemalloc: {took:.2f}s, peak {peak / MIB:.1f} MiB")
            assert peak < 16 * MIB, f"peak of traced memory {peak / MIB:.1f} MiB"

            # the same session on both sides, untraced: the throughput
            started = time.monotonic()
            piped = await pipe(source, f"cat {SOURCE}", source, "cat > /root/pipe-copy.bin")
            took = time.monotonic() - started
            assert piped == SIZE
            assert await sha256(source, "/root/pipe-copy.bin") == expected
            print(f"pipe 50 MiB, one session: {took:.2f}s, {SIZE / MIB / took:.0f} MiB/s")
            await sh(source, "rm -f /root/pipe-copy.bin")

    asyncio.run(scenario())


@pytest.mark.timeout(120)
def test_a_slow_import_holds_the_export_back(ct: Ct) -> None:
    """Memory stays bounded when the import reads slower than the export
    writes: the unread bytes wait in the SSH windows, not here."""

    async def scenario() -> None:
        async with await open_session(ct) as source, await open_session(ct) as target:
            expected = await sha256(source, SOURCE)
            # 1 MiB every 50 ms at most: about 3 s for the whole 50 MiB
            slow = ("while :; do n=$(head -c 1048576 | tee -a /root/pipe-slow.bin | wc -c); "
                    '[ "$n" -eq 0 ] && break; sleep 0.05; done')  # fmt: skip
            await sh(target, "rm -f /root/pipe-slow.bin")
            tracemalloc.start()
            try:
                started = time.monotonic()
                piped = await pipe(source, f"cat {SOURCE}", target, slow)
                took = time.monotonic() - started
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert piped == SIZE and took >= 2.5
            assert await sha256(target, "/root/pipe-slow.bin") == expected
            print(f"\npipe 50 MiB into a slow import: {took:.2f}s, peak {peak / MIB:.1f} MiB")
            assert peak < 16 * MIB, f"peak of traced memory {peak / MIB:.1f} MiB"
            await sh(target, "rm -f /root/pipe-slow.bin")

    asyncio.run(scenario())


@pytest.mark.timeout(120)
def test_a_slow_reader_holds_the_remote_back(ct: Ct) -> None:
    """SshSession.start's raw stdout read slowly: what waits unread stays
    within a few windows.  (asyncssh credits a whole window back at each
    resumed delivery, even with data still queued: resuming part-way let
    43 MiB of this stream pile up here.)"""

    async def scenario() -> None:
        async with await open_session(ct) as session:
            process = await session.start(f"cat {SOURCE}", raw_stdout=True, read_limit=256 << 10)
            tracemalloc.start()
            try:
                total = 0
                while data := await process.read(256 << 10):
                    total += len(data)
                    await asyncio.sleep(0.01)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert total == SIZE
            assert await process.wait_exit() == 0
            print(f"\nslow reader of 50 MiB: peak {peak / MIB:.1f} MiB")
            assert peak < 12 * MIB, f"peak of traced memory {peak / MIB:.1f} MiB"

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_empty_stream_and_small_chunks(ct: Ct) -> None:
    async def scenario() -> None:
        async with await open_session(ct) as session:
            counts: list[int] = []
            assert await pipe(session, "true", session, "wc -c >&2", on_bytes=counts.append) == 0
            assert counts == [0]
            lines: list[str] = []
            piped = await pipe(session, "seq 1 20000", session, "tail -n 1 >&2", chunk=7,
                               on_stderr=lambda side, line: lines.append(line))  # fmt: skip
            assert piped == len("".join(f"{i}\n" for i in range(1, 20001)))
            assert lines == ["20000"]
            with pytest.raises(ValueError, match="chunk"):
                await pipe(session, "true", session, "true", chunk=0)

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_stderr_lines_of_both_sides_reach_on_stderr(ct: Ct) -> None:
    async def scenario() -> None:
        async with await open_session(ct) as session:
            lines: list[tuple[str, str]] = []
            await pipe(
                session, "echo e1 >&2; printf 'data\\n'; echo e2 >&2",
                session, "cat > /dev/null; echo i1 >&2; echo 'on stdout, not stderr'; echo i2 >&2",
                on_stderr=lambda side, line: lines.append((side, line)),
            )  # fmt: skip
            assert [t for s, t in lines if s == "export"] == ["e1", "e2"]
            assert [t for s, t in lines if s == "import"] == ["i1", "i2"]

    asyncio.run(scenario())


# --- failures -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_failing_export_is_named_and_the_import_never_sees_the_end(ct: Ct) -> None:
    marker = f"/root/pipe-imported-{secrets.token_hex(4)}"

    async def scenario() -> None:
        async with await open_session(ct) as session:
            with pytest.raises(CommandFailedError) as err:
                await pipe(
                    session, "head -c 100000 /dev/zero; echo 'boom one' >&2; echo 'boom two' >&2; "
                    "exit 3",
                    session, f"cat > /dev/null && touch {marker}; sleep 30",
                )  # fmt: skip
            assert str(err.value) == f"export on {ct.ip} exited with 3: boom one; boom two"
            assert err.value.exit_status == 3 and not err.value.timed_out
            assert err.value.output_tail == ["[stderr] boom one", "[stderr] boom two"]
            # the import was stopped without an end of stream
            assert not await running(session, "sleep [3]0")
            assert (await session.run(f"test -e {marker}")).exit_status == 1

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_failing_import_is_named_and_the_export_is_stopped(ct: Ct) -> None:
    async def scenario() -> None:
        async with await open_session(ct) as source, await open_session(ct) as target:
            started = time.monotonic()
            with pytest.raises(CommandFailedError) as err:
                await pipe(source, "cat /dev/zero", target,
                           "head -c 3000000 > /dev/null; echo 'no space left' >&2; exit 4")  # fmt: skip
            assert time.monotonic() - started < 10
            assert str(err.value) == f"import on {ct.ip} exited with 4: no space left"
            assert err.value.exit_status == 4
            assert not await running(source, "cat /dev/[z]ero")

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_an_import_that_ends_before_the_stream_fails(ct: Ct) -> None:
    async def scenario() -> None:
        async with await open_session(ct) as session:
            with pytest.raises(CommandFailedError) as err:
                await pipe(session, f"cat {SOURCE}", session, "head -c 1000 > /dev/null")
            assert re.fullmatch(
                rf"import on {re.escape(ct.ip)} exited with 0 before the end of the stream "
                r"\(\d+ bytes piped\)", str(err.value)), str(err.value)  # fmt: skip
            assert not await running(session, f"cat {SOURCE[:-1]}[n]")

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_timeout_kills_both_sides(ct: Ct) -> None:
    async def scenario() -> None:
        async with await open_session(ct) as session:
            started = time.monotonic()
            with pytest.raises(CommandFailedError) as err:
                await pipe(session, "echo waiting >&2; sleep 301", session, "cat; sleep 302",
                           timeout=1.5)  # fmt: skip
            assert 1.5 <= time.monotonic() - started < 10
            assert err.value.timed_out and err.value.exit_status is None
            assert str(err.value) == (
                f"export on {ct.ip} timed out after 1.5s and was killed (0 bytes piped): waiting"
            )
            assert not await running(session, "sleep 30[12]")

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_failing_callback_stops_both_sides(ct: Ct) -> None:
    async def scenario() -> None:
        def explode(side: str, line: str) -> None:
            raise RuntimeError(f"event store down at {side}: {line}")

        async with await open_session(ct) as session:
            with pytest.raises(RuntimeError, match="event store down at export: hello"):
                await pipe(session, "echo hello >&2; cat /dev/zero", session,
                           "cat > /dev/null", on_stderr=explode)  # fmt: skip
            assert not await running(session, "cat /dev/[z]ero")

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_cancelling_the_pipe_stops_both_sides(ct: Ct) -> None:
    async def scenario() -> None:
        async with await open_session(ct) as session:
            flowing = asyncio.Event()
            task = asyncio.create_task(pipe(session, "cat /dev/zero", session,
                                            "cat > /dev/null; sleep 303",
                                            on_bytes=lambda n: flowing.set()))  # fmt: skip
            await asyncio.wait_for(flowing.wait(), 20)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not await running(session, "cat /dev/[z]ero")
            assert not await running(session, "sleep 30[3]")

    asyncio.run(scenario())


@pytest.mark.timeout(90)
def test_a_dropped_connection_is_transient(sim: dict[str, Any], ct: Ct) -> None:
    async def scenario() -> None:
        async with await open_session(ct) as source, await open_session(ct) as target:
            task = asyncio.create_task(pipe(source, "cat /dev/zero", target,
                                            "while :; do head -c 65536 > /dev/null; sleep 0.1; done"))  # fmt: skip
            await asyncio.sleep(1)
            dropped = await asyncio.to_thread(admin, sim, "ssh-drop", {"vmid": ct.vmid})
            assert dropped["dropped"] >= 1
            started = time.monotonic()
            with pytest.raises(SshTransientError, match=r"lost while running the (ex|im)port"):
                await task
            assert time.monotonic() - started < 10
        async with await open_session(ct) as again:
            assert not await running(again, "cat /dev/[z]ero")

    asyncio.run(scenario())


# --- the environment ----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_env_values_reach_the_commands_but_no_command_line(ct: Ct) -> None:
    token = secrets.token_hex(12)

    async def scenario() -> None:
        async with await open_session(ct) as session, await open_session(ct) as watcher:
            lines: list[tuple[str, str]] = []
            seen: list[str] = []

            async def look() -> None:
                await asyncio.sleep(1)
                # as an unprivileged user of the container would
                await watcher.run("runuser -u nobody -- ps -eo args", on_line=lambda s, line:
                                  seen.append(line))  # fmt: skip

            # and SshSession.run, whose mechanism it is
            ran = asyncio.create_task(session.run('sleep 2; test "${#RUN_SECRET}" = 24',
                                                  env={"RUN_SECRET": token}))  # fmt: skip
            await asyncio.gather(
                pipe(session, 'sleep 2; printf %s "$EXPORT_SECRET"', session,
                     'read -r got; test "$got" = "$IMPORT_SECRET" && echo same >&2',
                     source_env={"EXPORT_SECRET": token}, target_env={"IMPORT_SECRET": token},
                     on_stderr=lambda side, line: lines.append((side, line))),
                look(),
            )  # fmt: skip
            assert (await ran).exit_status == 0  # it saw the 24 characters
            assert lines == [("import", "same")]
            assert any("sleep 2" in line for line in seen), seen  # the commands were running
            assert not [line for line in seen if token in line]

    asyncio.run(scenario())

"""How fast does SshSession.upload put files on a container?

Measures, against a simulator container, uploading (a) 500 small files and
(b) one 50 MB file through ``SshSession.upload`` on an open session, and
compares both with ``scp -r`` of the same files in the same run: once as
people run it (a new connection each time) and once over a persisted
connection (``ControlMaster``), which leaves only the transfer.  Also shows
the small files through SFTP alone (without the tar stream the upload uses
for small files) and a re-upload where every checksum matches.  Every run
writes to a fresh directory; the variants take turns round by round, so load
from elsewhere on the machine skews none of them alone.  Medians over the
runs, p99 when there are at least 20 of them, the max otherwise.

    sudo .venv/bin/python bench/ssh_upload.py [--runs 5] [--small-runs 20]

Starts its own simulator in a temporary state dir (needs root and the cached
template; scripts/setup builds it).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provisioner.ssh import transfer as ssh_transfer
from provisioner.ssh.session import FileSpec, SshSession, connect
from tests.conftest import start_simulator, stop_simulator
from tests.pvesim.helpers import token_api, wait_task

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
VMID = 700
SMALL_FILES = 500
BIG_SIZE = 50 << 20


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    tail = f"p99 {pct(values, 0.99):.3f}s" if len(values) >= 20 else f"max {max(values):.3f}s"
    return f"median {statistics.median(values):.3f}s  {tail}  min {min(values):.3f}s"


def make_files(root: Path) -> tuple[list[Path], Path]:
    """500 small files of 100 B to 4 KiB in 20 directories, and one of 50 MB."""
    rng = random.Random(42)
    small = []
    for i in range(SMALL_FILES):
        path = root / "small" / f"dir{i % 20:02d}" / f"file-{i:03d}.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(100, 4096)))
        small.append(path)
    big = root / "big" / "blob.bin"
    big.parent.mkdir(parents=True)
    big.write_bytes(os.urandom(BIG_SIZE))
    return small, big


def specs(local_root: Path, files: list[Path], target: str) -> list[FileSpec]:
    return [
        FileSpec(f"{target}/{p.relative_to(local_root).as_posix()}", p, 0o644, "root:root")
        for p in files
    ]


@dataclass
class Variant:
    name: str
    runs: int
    action: Callable[[], Awaitable[Any]]
    before: Callable[[], Awaitable[Any]] | None = None  # untimed, e.g. a fresh target
    times: list[float] = field(default_factory=list)


async def measure(variants: list[Variant]) -> None:
    """Round-robin: each round runs every variant once, in a rotating order, so
    load from elsewhere on the machine hits all of them alike."""
    for round_no in range(max(v.runs for v in variants)):
        shift = round_no % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            if round_no >= variant.runs:
                continue
            if variant.before:
                await variant.before()
            t0 = time.perf_counter()
            await variant.action()
            variant.times.append(time.perf_counter() - t0)


def scp_command(key: Path, control: Path | None) -> list[str]:
    cmd = ["scp", "-q", "-r", "-i", str(key), "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]  # fmt: skip
    if control:
        cmd += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}",
                "-o", "ControlPersist=120"]  # fmt: skip
    return cmd


async def bench(ip: str, key: asyncssh.SSHKey, work: Path, runs: int,
                small_runs: int) -> dict[str, list[float]]:  # fmt: skip
    small, big = make_files(work / "src")
    src = work / "src"
    key_file = work / "id_ed25519"
    key_file.write_bytes(key.export_private_key())
    key_file.chmod(0o600)
    control = work / "cm.sock"
    private = key.export_private_key().decode()
    session: SshSession = await connect(ip, private_key=private, known_host_key=None, deadline=60)
    async with session:

        async def fresh() -> None:
            await session.run("rm -rf /srv/bench && mkdir -p /srv/bench", check=True)

        async def scp(paths: str, use_control: bool) -> None:
            cmd = [*scp_command(key_file, control if use_control else None), *paths.split(),
                   f"root@{ip}:/srv/bench/"]  # fmt: skip
            done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr

        async def verify(files: list[FileSpec]) -> None:
            listing = await session.run(
                "sha256sum " + " ".join(f.path for f in files), check=True, tail_lines=len(files)
            )
            remote = {ln.text[66:]: ln.text[:64] for ln in listing.tail if ln.stream == "stdout"}
            for f in files:
                assert isinstance(f.content, Path)
                local = hashlib.sha256(f.content.read_bytes()).hexdigest()
                assert remote[f.path] == local, f.path

        small_specs = specs(src, small, "/srv/bench")
        big_specs = specs(src, [big], "/srv/bench")
        # warm-up and a correctness check: page cache, SFTP, scp's first login
        for files in (small_specs, big_specs):
            await fresh()
            await session.upload(files)
            await verify(files)
        await scp(str(src / "small"), True)

        async def upload_sftp_only() -> None:
            limit = ssh_transfer.TAR_MAX_FILE_SIZE
            ssh_transfer.TAR_MAX_FILE_SIZE = -1  # every file through SFTP
            try:
                await session.upload(small_specs)
            finally:
                ssh_transfer.TAR_MAX_FILE_SIZE = limit

        small_dir, big_file = str(src / "small"), str(big)
        variants = [
            Variant("small: SshSession.upload", small_runs,
                    lambda: session.upload(small_specs), fresh),
            Variant("small: re-upload, all checksums match", small_runs,
                    lambda: session.upload(small_specs),
                    lambda: session.upload(small_specs)),  # before: make them match
            Variant("small: upload via SFTP only", small_runs, upload_sftp_only, fresh),
            Variant("small: scp -r, new connection", small_runs,
                    lambda: scp(small_dir, False), fresh),
            Variant("small: scp -r, persisted conn.", small_runs,
                    lambda: scp(small_dir, True), fresh),
            Variant("50 MB: SshSession.upload", runs, lambda: session.upload(big_specs), fresh),
            Variant("50 MB: scp, new connection", runs, lambda: scp(big_file, False), fresh),
            Variant("50 MB: scp, persisted conn.", runs, lambda: scp(big_file, True), fresh),
        ]  # fmt: skip
        await measure(variants)
        results = {v.name: v.times for v in variants}
        subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={control}", f"root@{ip}"],
                       capture_output=True, check=False)  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of the 50 MB file")
    parser.add_argument("--small-runs", type=int, default=20, help="runs of the 500 files")
    args = parser.parse_args()
    key = asyncssh.generate_private_key("ssh-ed25519")
    with tempfile.TemporaryDirectory(prefix="ssh-upload-bench-") as tmp:
        proc, info = start_simulator(Path(tmp) / "state")
        try:
            api = token_api(info)
            ip = str(ipaddress.ip_network(info["subnet"]).network_address + 20)
            upid = api.nodes(info["node"]).lxc.post(
                vmid=VMID, ostemplate=TEMPLATE, storage="local-lvm", start=1,
                net0=f"name=eth0,bridge=vmbr0,ip={ip}/24,gw={info['gateway']}",
                **{"ssh-public-keys": key.export_public_key().decode()},
            )  # fmt: skip
            assert wait_task(api, info["node"], upid, 60)["exitstatus"] == "OK"
            results = asyncio.run(bench(ip, key, Path(tmp), args.runs, args.small_runs))
        finally:
            stop_simulator(proc)
    print(f"SSH upload to a pvesim container: {SMALL_FILES} files of 0.1-4 KiB "
          f"({args.small_runs} runs), one 50 MB file ({args.runs} runs)")  # fmt: skip
    for name, values in results.items():
        extra = ""
        if name.startswith("50 MB"):
            extra = f"  {BIG_SIZE / statistics.median(values) / 1e6:.0f} MB/s"
        print(f"  {name:40s} {summary(values)}{extra}")
    med = {name: statistics.median(values) for name, values in results.items()}
    for kind in ("small", "50 MB"):
        ours = med[f"{kind}: SshSession.upload"]
        for how in ("new connection", "persisted conn."):
            scp_name = next(n for n in med if n.startswith(f"{kind}: scp") and n.endswith(how))
            print(f"  ratio {kind} upload / scp ({how}): {ours / med[scp_name]:.2f}")
    print(f"  ratio small upload / SFTP-only upload: "
          f"{med['small: SshSession.upload'] / med['small: upload via SFTP only']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

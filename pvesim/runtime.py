"""The container runtime: an overlay root filesystem and systemd-nspawn.

Each container directory (``state/ct/<vmid>/``) holds:

    base        the path of the unpacked template it was made from
    upper/      the overlay's upper layer: everything the container changed
    work/       overlayfs' work directory
    rootfs/     the mount point of the merged root
    console.log what the container printed on its console
    nspawn.pid  the nspawn process of a running container

nspawn runs with ``--register=no --keep-unit`` (no systemd on the host), in
the container's own network namespace, with systemd as PID 1.  Processes in
the container cannot see or change the host's files, processes or network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from pvesim.proc import CommandError, run

log = logging.getLogger(__name__)


async def copy_tree(src: Path, dest: Path) -> None:
    """``cp -a`` (keeps owners, modes, overlay whiteouts), replacing ``dest``."""
    if dest.exists():
        await asyncio.to_thread(shutil.rmtree, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    await run("cp", "-a", "--reflink=auto", str(src), str(dest))


def is_mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mounts") as fh:
        return any(line.split()[1] == target for line in fh)


@dataclass
class ContainerFs:
    """The files of one container."""

    root: Path

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.root / "nspawn.pid"

    def base(self) -> Path:
        return Path((self.root / "base").read_text().strip())

    def create(self, base: Path) -> None:
        for sub in ("upper", "work", "rootfs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "base").write_text(f"{base}\n")

    async def mount(self) -> Path:
        if not is_mounted(self.rootfs):
            opts = f"lowerdir={self.base()},upperdir={self.upper},workdir={self.root / 'work'}"
            await run("mount", "-t", "overlay", "overlay", "-o", opts, str(self.rootfs))
        return self.rootfs

    async def unmount(self) -> None:
        for _ in range(50):
            if not is_mounted(self.rootfs):
                return
            try:
                await run("umount", str(self.rootfs))
            except CommandError:
                await asyncio.sleep(0.1)
        await run("umount", "-l", str(self.rootfs))

    async def remove(self) -> None:
        await self.unmount()
        await asyncio.to_thread(shutil.rmtree, self.root, True)

    async def copy_upper_to(self, dest: Path) -> None:
        """Copy the upper layer (a snapshot or a full clone of this root)."""
        await copy_tree(self.upper, dest)

    async def replace_upper_from(self, src: Path) -> None:
        await self.unmount()
        await asyncio.to_thread(shutil.rmtree, self.root / "work", True)
        (self.root / "work").mkdir()
        await copy_tree(src, self.upper)

    def disk_used(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.upper):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
        return total


@dataclass(frozen=True)
class Bind:
    """A host directory mounted into the container at boot (a mount point)."""

    source: Path
    target: str
    read_only: bool = False

    def nspawn_arg(self) -> str:
        def esc(p: str) -> str:
            return p.replace("\\", "\\\\").replace(":", "\\:")

        opt = "--bind-ro" if self.read_only else "--bind"
        return f"{opt}={esc(str(self.source))}:{esc(self.target)}:norbind"


@dataclass
class RunningContainer:
    """A booted container: its nspawn process and its PID 1."""

    vmid: int
    process: asyncio.subprocess.Process
    init_pid: int
    netns: str
    started: float = field(default_factory=time.time)
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def uptime(self) -> int:
        return int(time.time() - self.started)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _container_init(nspawn_pid: int) -> int | None:
    """nspawn's child in a new PID namespace: the container's PID 1.

    Right after the start nspawn's first child is a short-lived helper still
    in our namespace; it is not the one to signal later.
    """
    try:
        own = os.readlink(f"/proc/{nspawn_pid}/ns/pid")
    except OSError:
        return None
    for child in _children(nspawn_pid):
        try:
            if os.readlink(f"/proc/{child}/ns/pid") != own:
                return child
        except OSError:
            continue
    return None


async def boot(
    fs: ContainerFs,
    vmid: int,
    hostname: str,
    netns: str,
    machine: str,
    binds: list[Bind] | None = None,
) -> RunningContainer:
    """Start systemd in the container; return once its PID 1 runs.

    Raises:
        RuntimeError: if nspawn exits before the container's init is up,
            with the last lines it printed.
    """
    await fs.mount()
    console = open(fs.console_log, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = await asyncio.create_subprocess_exec(
            "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet",
            f"--directory={fs.rootfs}", f"--machine={machine}", f"--hostname={hostname}",
            f"--network-namespace-path=/run/netns/{netns}", "--console=read-only",
            "--resolv-conf=off", "--timezone=off", "--link-journal=no",
            # its own network namespace: ifupdown and dhclient configure eth0
            "--capability=CAP_NET_ADMIN",
            *(b.nspawn_arg() for b in binds or []),
            stdin=asyncio.subprocess.DEVNULL, stdout=console, stderr=console,
            start_new_session=True,
        )  # fmt: skip
    finally:
        console.close()
    fs.pidfile.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            break
        init_pid = _container_init(proc.pid)
        if init_pid:
            return RunningContainer(vmid=vmid, process=proc, init_pid=init_pid, netns=netns)
        await asyncio.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()
    fs.pidfile.unlink(missing_ok=True)
    tail = fs.console_log.read_text(errors="replace").splitlines()[-5:]
    raise RuntimeError(f"startup for container '{vmid}' failed: {' / '.join(tail)}")


async def kill(ct: RunningContainer) -> None:
    """Hard stop: killing PID 1 of the namespace ends every process in it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(ct.init_pid, signal.SIGKILL)
    try:
        await asyncio.wait_for(ct.process.wait(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            ct.process.kill()
        await ct.process.wait()


async def poweroff(ct: RunningContainer, timeout: float) -> bool:
    """Clean shutdown through systemd; False if it did not finish in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            # systemd as PID 1: SIGRTMIN+4 means "poweroff".  Sent again until
            # it takes: right after boot systemd may not handle it yet.
            os.kill(ct.init_pid, signal.SIGRTMIN + 4)
        try:
            await asyncio.wait_for(ct.process.wait(), min(0.5, deadline - time.monotonic()))
            return True
        except TimeoutError:
            continue
    return ct.process.returncode is not None


def kill_stale(fs: ContainerFs) -> None:
    """Kill an nspawn left behind by a simulator that died."""
    try:
        pid = int(fs.pidfile.read_text())
    except (OSError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        cmdline = ""
    if "systemd-nspawn" in cmdline and str(fs.rootfs) in cmdline:
        for child in _children(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)
    fs.pidfile.unlink(missing_ok=True)


def namespace_usage(init_pid: int) -> tuple[int, float]:
    """(resident memory bytes, cpu seconds) of all processes in the container."""
    try:
        pidns = os.readlink(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return 0, 0.0
    rss = 0
    cpu_ticks = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/pid") != pidns:
                continue
            rss += int(Path(f"/proc/{entry.name}/statm").read_text().split()[1]) * page
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            cpu_ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return rss, cpu_ticks / os.sysconf("SC_CLK_TCK")


async def drop_ssh_connections(init_pid: int) -> int:
    """Kill the container's SSH session processes (not the listener)."""
    out = await run(
        "nsenter", f"--target={init_pid}", "--mount", "--pid", "--",
        "pkill", "-KILL", "-e", "-f", "^sshd: [^/]", check=False,
    )  # fmt: skip
    return sum(1 for line in out.splitlines() if "killed" in line)

"""The demo's processes: started, restarted when a worker dies (within a
limit, like systemd's ``Restart=`` with ``StartLimitBurst=`` and
``StartLimitIntervalSec=``), and stopped newest first, in waves.

A worker killed mid-run loses nothing: its run holds the container's lease,
and once the lease runs out a worker (the restarted one, or another)
enqueues the run again, which resumes from its checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from provisioner.errors import ProvisionError

WORKER_GRACE = 120.0  # seconds a stopping worker may take to finish its job


@dataclass
class RestartLimit:
    """At most ``burst`` restarts within any ``interval`` seconds."""

    burst: int = 5
    interval: float = 60.0
    _times: deque[float] = field(default_factory=deque)

    def take(self, now: float) -> int | None:
        """Count a restart at ``now`` (monotonic seconds).

        Returns:
            How many restarts the last ``interval`` seconds hold with this
            one, or None when that would exceed ``burst`` (nothing counted).
        """
        while self._times and now - self._times[0] >= self.interval:
            self._times.popleft()
        if len(self._times) >= self.burst:
            return None
        self._times.append(now)
        return len(self._times)


def exit_reason(returncode: int) -> str:
    """How a process ended, for a person: ``killed by SIGKILL``, ``exit status 1``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


@dataclass
class Process:
    """One process the demo runs; ``argv`` makes its command line for each
    start (a restarted worker needs a new name)."""

    name: str
    argv: Callable[[], list[str]]
    env: dict[str, str]
    popen: subprocess.Popen[bytes]
    restarts: RestartLimit | None = None  # None: its death stops the demo
    # what the process is doing when it is slow to stop ("finishing its job
    # ..."), or None when it does not know
    doing: Callable[[], str | None] | None = None
    forget: Callable[[], None] | None = None  # tidy up after its death, before a restart


@dataclass
class Supervisor:
    """The processes the demo started; stopped newest first."""

    logs: Path
    procs: list[Process] = field(default_factory=list)

    def start(self, name: str, argv: list[str] | Callable[[], list[str]], env: dict[str, str],
              stdout: IO[bytes] | None = None, restarts: RestartLimit | None = None,
              doing: Callable[[], str | None] | None = None,
              forget: Callable[[], None] | None = None) -> Process:  # fmt: skip
        """Start a process, its stderr (and stdout, unless given) appended to
        ``logs/<name>.log``; with ``restarts``, :meth:`supervise` restarts it
        when it dies."""
        make = argv if callable(argv) else (lambda: list(argv))
        proc = Process(name, make, env, self._spawn(name, make(), env, stdout), restarts, doing,
                       forget)  # fmt: skip
        self.procs.append(proc)
        return proc

    def _spawn(self, name: str, argv: list[str], env: dict[str, str],
               stdout: IO[bytes] | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            return subprocess.Popen(argv, env=env, stdout=stdout or log, stderr=log,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def dead(self) -> str | None:
        """The name of a process that exited, if any."""
        for proc in self.procs:
            if proc.popen.poll() is not None:
                return proc.name
        return None

    def supervise(self) -> None:
        """Restart every restartable process that died, saying so.

        Raises:
            ProvisionError: a process without restarts died, or one died
                more often than its restart limit allows (with its log's tail).
        """
        for proc in self.procs:
            returncode = proc.popen.poll()
            if returncode is None:
                continue
            reason = exit_reason(returncode)
            limit = proc.restarts
            if limit is None:
                raise ProvisionError(f"{proc.name} exited ({reason}):\n{self.log_tail(proc.name)}")
            count = limit.take(time.monotonic())
            if count is None:
                raise ProvisionError(
                    f"{proc.name} exited ({reason}) after {limit.burst} restarts in "
                    f"{limit.interval:.0f} s: not restarted again, stopping:\n"
                    f"{self.log_tail(proc.name)}"
                )  # fmt: skip
            if proc.forget is not None:
                proc.forget()
            proc.popen = self._spawn(proc.name, proc.argv(), proc.env)
            click.echo(f"demo: {proc.name} exited ({reason}); restarted ({count} of "
                       f"{limit.burst} in {limit.interval:.0f} s)", err=True)  # fmt: skip

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop_all(self) -> None:
        """SIGTERM, newest first, in waves: the web app and the workers
        together (a worker finishes its current job, which needs the rest,
        for up to WORKER_GRACE seconds), then the simulator (it halts its
        containers), then Redis.  A process still running after its wave's
        grace is killed and named.  Ctrl-C (or SIGTERM) again while stopping
        kills the workers and the web app at once; nothing is lost by it: an
        interrupted run resumes when the demo starts again (its lease runs
        out).  The simulator always gets its clean stop: killed, it would
        leave its containers running."""
        STOP.stopping = True  # from here on Ctrl-C hurries, it no longer interrupts
        waves: list[tuple[float, list[Process]]] = [
            (WORKER_GRACE, [p for p in self.procs if p.name not in ("pvesim", "redis")]),
            (60.0, [p for p in self.procs if p.name == "pvesim"]),
            (10.0, [p for p in self.procs if p.name == "redis"]),
        ]
        said_hurry = False
        for index, (grace, wave) in enumerate(waves):
            hurried = index == 0  # only the first wave may be cut short
            began = time.monotonic()
            for proc in reversed(wave):
                if proc.popen.poll() is None:
                    proc.popen.send_signal(signal.SIGTERM)
            for proc in reversed(wave):
                told = False
                while proc.popen.poll() is None:
                    waited = time.monotonic() - began
                    if STOP.hurry and not said_hurry:
                        said_hurry = True
                        click.echo("demo: hurrying: the workers are stopped now; the simulator "
                                   "still stops its containers cleanly", err=True)  # fmt: skip
                    if (STOP.hurry and hurried) or waited >= grace:
                        why = (
                            "asked to hurry" if waited < grace else f"not stopped in {grace:.0f} s"
                        )
                        click.echo(f"demo: {proc.name} killed ({why})", err=True)
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.popen.pid, signal.SIGKILL)
                        proc.popen.wait()
                        break
                    if waited > 3 and not told and proc.doing is not None:
                        told = True
                        click.echo(f"demo: {proc.name} {proc.doing() or 'is still stopping'} (up "
                                   f"to {grace:.0f} s; Ctrl-C again to stop it now)", err=True)  # fmt: skip
                    time.sleep(0.1)
                took = time.monotonic() - began
                if took > 5:
                    click.echo(f"demo: {proc.name} took {took:.1f} s to stop", err=True)
        self.procs.clear()


@dataclass
class _Stop:
    """What Ctrl-C (SIGINT) and SIGTERM do: the first interrupts the demo;
    once it is stopping, another one hurries the workers (the simulator
    still stops cleanly: killed, it would leave its containers running)."""

    stopping: bool = False
    hurry: bool = False

    def signal(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt
        self.hurry = True  # said by the stopping loop: no printing in a handler


STOP = _Stop()

"""A PostgreSQL server of a test's or bench's own (and scripts/test's:
``python -m tests.postgres start DIR``): Debian's newest ``initdb``/``pg_ctl``
run as the postgres user, trust authentication, a free loopback port, its
socket in its directory, no fsync.  It can be restarted (``pg_ctl restart -m fast``) as a
fault.  Needs root (to become postgres)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def pg_bin() -> Path:
    """The newest installed PostgreSQL's bin directory.

    Raises:
        RuntimeError: no PostgreSQL is installed (scripts/setup installs it).
    """
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)  # fmt: skip
    if not found:
        raise RuntimeError("no PostgreSQL in /usr/lib/postgresql: run scripts/setup")
    return found[-1]


@dataclass
class PostgresServer:
    """A running server: ``url`` is its ``postgres`` database as the
    superuser ``postgres`` (no password: trust on loopback)."""

    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str, timeout: float = 90) -> None:
        # output to a file, not a pipe: a server started by pg_ctl would hold
        # a pipe open, and reading it would wait for the server's end
        with open(self.root / "pg_ctl.log", "ab") as out:
            done = subprocess.run(["runuser", "-u", "postgres", "--", str(pg_bin() / "pg_ctl"),
                                   "-D", str(self.data), *args], stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                  check=False)  # fmt: skip
        if done.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl {args[-1]} failed (status {done.returncode}): {log}")

    def start(self) -> None:
        self._ctl("-l", str(self.root / "server.log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c max_connections=300", "start")  # fmt: skip

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, the server
        is back when it returns."""
        self._ctl("-l", str(self.root / "server.log"), "-w", "-t", "60", "-m", "fast", "restart")

    def stop(self) -> None:
        self._ctl("-w", "-m", "fast", "stop")


def start_postgres(root: Path) -> PostgresServer:
    """initdb in ``root`` (created, owned by postgres) and start the server
    on a free port.

    Raises:
        RuntimeError: initdb or the start failed (with their output).
    """
    root.mkdir(parents=True)
    # the postgres user must reach its directory: open the way down to it
    for parent in [*reversed(root.parents), root]:
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            os.chmod(parent, parent.stat().st_mode | 0o711)
    shutil.chown(root, "postgres", "postgres")
    os.chmod(root, 0o700)
    done = subprocess.run(["runuser", "-u", "postgres", "--", str(pg_bin() / "initdb"),
                           "-D", str(root / "data"), "--auth=trust", "-U", "postgres"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = PostgresServer(root, port)
    server.start()
    return server


def main(argv: list[str]) -> int:
    """``python -m tests.postgres start DIR`` (prints the URL) or ``stop DIR``:
    scripts/test's PostgreSQL."""
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.postgres start|stop DIR", file=sys.stderr)
        return 2
    root = Path(argv[1])
    try:
        if argv[0] == "start":
            print(start_postgres(root).url)
        else:
            PostgresServer(root, 0).stop()
    except RuntimeError as exc:
        print(f"tests.postgres: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

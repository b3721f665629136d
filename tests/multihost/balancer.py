"""haproxy in front of the hosts' web processes (tests/multihost/harness.py):
its configuration, which docs/scaling.md shows, a process of the harness's
own in the foreground, and what its stats socket says about the backends."""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def haproxy_config(port: int, backends: dict[str, int], stats_socket: Path) -> str:
    """The load balancer's configuration (docs/scaling.md shows it): plain
    round robin over the web processes (sessions are signed cookies: no
    stickiness), websockets passed through (haproxy tunnels an upgraded
    connection; ``timeout tunnel`` lets a stream live an hour), a
    connection refused by a dead backend retried on the other one, and a
    backend that stops answering taken out within two seconds."""
    servers = "".join(f"    server {name} 127.0.0.1:{p} check inter 1s fall 2 rise 2\n"
                      for name, p in backends.items())  # fmt: skip
    return f"""\
global
    maxconn 4096
    log stdout format raw local0 info
    stats socket {stats_socket} mode 600 level admin

defaults
    mode http
    log global
    option httplog
    option forwardfor
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout client-fin 5s

frontend provisioner
    bind 127.0.0.1:{port}
    default_backend web

backend web
    balance roundrobin
    option http-server-close
    option httpchk GET /login
    http-check expect status 200
{servers}"""


@dataclass
class Balancer:
    """haproxy in front of the web processes."""

    port: int
    config: Path
    stats_socket: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats_socket))
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def current_sessions(self) -> dict[str, int]:
        """Open connections per backend server (a websocket stream is one;
        plain requests close theirs: http-server-close)."""
        rows = csv.DictReader(io.StringIO(self.command("show stat").lstrip("# ")))
        return {r["svname"]: int(r["scur"] or 0) for r in rows
                if r["pxname"] == "web" and r["svname"] not in ("FRONTEND", "BACKEND")}  # fmt: skip

    def status(self) -> dict[str, str]:
        """Each backend server's health as haproxy sees it (UP, DOWN, ...)."""
        rows = csv.DictReader(io.StringIO(self.command("show stat").lstrip("# ")))
        return {r["svname"]: r["status"] for r in rows
                if r["pxname"] == "web" and r["svname"] not in ("FRONTEND", "BACKEND")}  # fmt: skip

    def set_state(self, server: str, state: str) -> None:
        """Take a backend server out of rotation (``maint``; its open
        connections stay) or put it back (``ready``)."""
        answer = self.command(f"set server web/{server} state {state}").strip()
        if answer:
            raise RuntimeError(f"haproxy: set server web/{server} state {state}: {answer}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_balancer(work: Path, backends: dict[str, int]) -> Balancer:
    """haproxy in the foreground on a free loopback port.

    Raises:
        RuntimeError: haproxy is missing (scripts/setup installs it) or refused its config.
    """
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        raise RuntimeError("haproxy is not installed: run scripts/setup")
    port, config, sock = free_port(), work / "haproxy.cfg", work / "haproxy.sock"
    config.write_text(haproxy_config(port, backends, sock))
    check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True,
                           text=True, timeout=30, check=False)  # fmt: skip
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refused {config}: {check.stdout}{check.stderr}")
    with open(work / "haproxy.log", "ab") as log:
        proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    balancer = Balancer(port, config, sock, proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy exited: {(work / 'haproxy.log').read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            balancer.current_sessions()
            return balancer
        time.sleep(0.1)
    balancer.stop()
    raise RuntimeError("haproxy's stats socket never answered")

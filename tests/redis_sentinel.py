"""A Redis Sentinel group of the test's own: a master, a replica and three
sentinels (quorum 2) on free loopback ports, real processes (Debian's
``redis-sentinel``, else ``redis-server --sentinel``).

    group = start_sentinel_group(tmp_path)
    try:
        settings = replace(settings, redis_url=group.url)
        old = group.kill_master()             # kill -9
        new = group.wait_failover(old)        # a sentinel promoted the replica
    finally:
        group.stop()

Failover is quick: a master that does not answer for a second is down, and
the replica takes over within a few seconds.  The group kills only the
processes it started, by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

DOWN_AFTER_MS = 1000  # a master silent this long is subjectively down
FAILOVER_TIMEOUT_MS = 3000
QUORUM = 2


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _sentinel_argv(conf: Path) -> list[str]:
    binary = shutil.which("redis-sentinel")
    if binary:
        return [binary, str(conf)]
    return ["redis-server", str(conf), "--sentinel"]


@dataclass
class SentinelGroup:
    """A running master, replica and three sentinels (see the module doc)."""

    master_name: str
    url: str  # redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/<master_name>/0
    workdir: Path
    sentinel_ports: list[int]
    servers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)  # port -> redis
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _ask(self, port: int) -> tuple[str, int] | None:
        try:
            with Redis(host="127.0.0.1", port=port, socket_timeout=1,
                       socket_connect_timeout=1) as s:  # fmt: skip
                reply = s.sentinel_get_master_addr_by_name(self.master_name)
        except RedisError:
            return None
        if not reply:
            return None
        host, master_port = reply
        return (host.decode() if isinstance(host, bytes) else str(host)), int(master_port)

    def master_port(self) -> int:
        """The master's port as the sentinels report it (the majority's answer)."""
        answers = [a for a in (self._ask(p) for p in self.sentinel_ports) if a is not None]
        if not answers:
            raise RuntimeError("no sentinel answers")
        ports = [port for _host, port in answers]
        return max(set(ports), key=ports.count)

    def kill_master(self) -> int:
        """kill -9 the current master's redis-server; returns its port."""
        port = self.master_port()
        proc = self.servers.get(port)
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"the master on port {port} is not one of ours or already dead")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return port

    def wait_failover(self, old_port: int, timeout: float = 60) -> int:
        """Wait until a quorum of sentinels names a new master that says it
        is one; returns its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = [a[1] for a in (self._ask(p) for p in self.sentinel_ports) if a is not None]
            new = [p for p in ports if p != old_port]
            if len(new) >= QUORUM and len(set(new)) == 1 and self._role(new[0]) == "master":
                return new[0]
            time.sleep(0.1)
        raise TimeoutError(f"no failover from port {old_port} within {timeout:g} s "
                           f"(logs in {self.workdir})")  # fmt: skip

    def cut_replication(self) -> list[int]:
        """Freeze every replica (SIGSTOP) and drop its link on the master:
        what the master takes from now on no replica has, as when
        asynchronous replication loses the newest writes at a failover.
        :meth:`resume_replicas` lets them run again.  Returns their ports."""
        master = self.master_port()
        replicas = [p for p, proc in self.servers.items() if p != master and proc.poll() is None]
        for port in replicas:
            os.kill(self.servers[port].pid, signal.SIGSTOP)
        with Redis(port=master, socket_timeout=2) as r:
            r.execute_command("CLIENT", "KILL", "TYPE", "replica")
        return replicas

    def resume_replicas(self) -> None:
        """Undo :meth:`cut_replication`'s SIGSTOP."""
        for proc in self.servers.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)

    def restart(self, port: int) -> None:
        """Start again a redis-server the group killed, as a replica of the
        current master (the sentinels would make it one anyway)."""
        proc = self.servers.get(port)
        if proc is not None and proc.poll() is None:
            raise RuntimeError(f"the redis-server on port {port} still runs")
        self.servers[port] = _start_server(self.workdir, port, replica_of=self.master_port())

    def _role(self, port: int) -> str | None:
        try:
            with Redis(host="127.0.0.1", port=port, socket_timeout=1,
                       socket_connect_timeout=1) as r:  # fmt: skip
                role = r.execute_command("ROLE")[0]
        except RedisError:
            return None
        return role.decode() if isinstance(role, bytes) else str(role)

    def stop(self) -> None:
        """Stop every process the group started (by PID)."""
        for proc in [*self.sentinels, *self.servers.values()]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a frozen replica (cut_replication)
                proc.terminate()
        for proc in [*self.sentinels, *self.servers.values()]:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _start_server(
    workdir: Path, port: int, replica_of: int | None = None
) -> subprocess.Popen[bytes]:
    data = workdir / f"redis-{port}"
    data.mkdir(exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(data), "--logfile", str(data / "redis.log")]  # fmt: skip
    if replica_of is not None:
        argv += ["--replicaof", "127.0.0.1", str(replica_of)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(check: object, what: str, timeout: float, workdir: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except RedisError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} within {timeout:g} s (logs in {workdir})")


def start_sentinel_group(workdir: Path, master_name: str = "provisioner") -> SentinelGroup:
    """Start a master, a replica of it and three sentinels watching them,
    and wait until the replica is in sync and every sentinel knows the
    others (a failover can happen from then on).

    Raises:
        TimeoutError: the group did not come up (its logs are in ``workdir``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    master, replica, *sentinel_ports = _free_ports(5)
    hosts = ",".join(f"127.0.0.1:{p}" for p in sentinel_ports)
    group = SentinelGroup(master_name=master_name,
                          url=f"redis+sentinel://{hosts}/{master_name}/0",
                          workdir=workdir, sentinel_ports=sentinel_ports)  # fmt: skip
    try:
        group.servers[master] = _start_server(workdir, master)
        group.servers[replica] = _start_server(workdir, replica, replica_of=master)
        for port in sentinel_ports:
            conf = workdir / f"sentinel-{port}.conf"  # the sentinel rewrites it: its own file
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {workdir}\n"
                f"logfile {workdir / f'sentinel-{port}.log'}\n"
                f"sentinel monitor {master_name} 127.0.0.1 {master} {QUORUM}\n"
                f"sentinel down-after-milliseconds {master_name} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {master_name} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {master_name} 1\n"
            )  # fmt: skip
            group.sentinels.append(subprocess.Popen(
                _sentinel_argv(conf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip

        def replica_in_sync() -> bool:
            with Redis(port=replica, socket_timeout=1, socket_connect_timeout=1) as r:
                info = r.info("replication")
            return info.get("master_link_status") == "up"

        def sentinels_ready() -> bool:
            for port in sentinel_ports:
                with Redis(port=port, socket_timeout=1, socket_connect_timeout=1) as s:
                    state = s.sentinel_master(master_name)
                if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                    return False
            return True

        _wait(replica_in_sync, "the replica did not sync with the master", 20, workdir)
        _wait(sentinels_ready, "the sentinels did not find each other and the replica", 30,
              workdir)  # fmt: skip
    except BaseException:
        group.stop()
        raise
    return group

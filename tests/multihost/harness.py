"""Several hosts on one machine, for real.

Each host is laid out by ``scripts/install-systemd`` itself (``--dest`` a
unit directory of its own, its own environment file and data directory,
no user, no wrapper); the harness then edits the environment file as an
operator would and runs what the generated units run (``ExecStart=`` with
``Environment=``, ``EnvironmentFile=`` and ``WorkingDirectory=``) as plain
processes: the migration first, then the web process, N workers and the
scheduler.  The hosts share one PostgreSQL, one Redis (plain, or a master
with a replica behind Sentinel), the simulator (node "sim") and the
templates; haproxy balances the web processes on a free loopback port,
websockets included.  Processes are handled by PID only.

    with start_cluster(work, sim, redis_url, postgres) as cluster:
        cid = cluster.client.submit("lines", "web-1", variables={"count": 100})
        cluster.hosts["a"].kill()          # kill -9 every process of host A

Needs root (PostgreSQL runs as postgres), haproxy, and a simulator.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from provisioner.config import Settings
from provisioner.models import Container, Node
from provisioner.nodes import client_for
from provisioner.redis_url import redis_client
from provisioner.secrets.keyfile import load_secret_box
from tests.conftest import ROOT
from tests.multihost.balancer import Balancer, free_port, start_balancer
from tests.pipeline.conftest import NODE, Stack, destroy_ours, register_sim
from tests.postgres import PostgresServer

INSTALL = ROOT / "scripts" / "install-systemd"
TEMPLATES = [ROOT / "templates_lxc", ROOT / "tests" / "pipeline" / "templates"]
MIGRATE_UNIT = "provisioner-migrate.service"
WEB_UNIT = "provisioner-web.service"


# -- what systemd would read ------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """An ``EnvironmentFile=``'s settings: KEY=value lines, no shell
    expansion, quotes around a whole value dropped (the rules of the
    ``provisioner`` wrapper install-systemd writes)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith(("#", ";")):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            env[key.strip()] = value
    return env


def unit_settings(text: str) -> dict[str, list[str]]:
    """The ``[Service]`` keys of a unit file, each with its values in order."""
    section, found = "", {}
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def unit_words(value: str) -> list[str]:
    """A unit line's words, quotes and ``%%``/``$$`` escapes undone."""
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(value)]


@dataclass
class Service:
    """One unit instance run as a plain process."""

    unit: str  # provisioner-worker@1.service
    argv: list[str]
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def descendants(pid: int) -> list[int]:
    """``pid``'s live descendants, children first (RQ's work horses sit in
    process groups of their own: a group kill would miss them)."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [p for c in children for p in (c, *descendants(c))]


@dataclass
class Host:
    """One host's layout and its running services."""

    name: str
    root: Path
    env_file: Path
    data_dir: Path
    web_port: int
    env: dict[str, str]
    services: list[Service] = field(default_factory=list)
    migrate: Service | None = None  # provisioner-migrate.service: a one-shot step

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def service(self, unit: str) -> Service:
        return next(s for s in self.services if s.unit == unit)

    @property
    def web(self) -> Service:
        return self.service(WEB_UNIT)

    @property
    def workers(self) -> list[Service]:
        return [s for s in self.services if s.unit.startswith("provisioner-worker@")]

    def start(self, unit: str | None = None) -> None:
        """Start every service not running (or only ``unit``), as systemd's
        ``Restart=`` would."""
        self.log_dir.mkdir(exist_ok=True)
        for svc in self.services:
            if svc.alive or (unit is not None and svc.unit != unit):
                continue
            with open(self.log_dir / f"{svc.unit}.log", "ab") as log:
                svc.proc = subprocess.Popen(svc.argv, cwd=svc.cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def horses(self) -> list[int]:
        """The work horses of this host's workers (one per run in progress)."""
        return [p for w in self.workers if w.alive
                for p in descendants(w.proc.pid)]  # type: ignore[union-attr]  # fmt: skip

    def pids(self) -> list[int]:
        """Every live process of the host: its services and their descendants."""
        return [p for s in self.services if s.alive
                for p in (s.proc.pid, *descendants(s.proc.pid))]  # type: ignore[union-attr]  # fmt: skip

    def kill(self, unit: str | None = None) -> list[int]:
        """kill -9 every process of the host (or of one ``unit``), as when the
        machine dies: frozen first, so that none forks or hands anything on
        while the others die.  Returns the pids killed."""
        services = [s for s in self.services if s.alive and unit in (None, s.unit)]
        killed: list[int] = []
        for _ in range(5):  # a process forked between the look and the kill
            pids = [p for s in services if s.proc is not None
                    for p in (s.proc.pid, *descendants(s.proc.pid)) if p not in killed]  # fmt: skip
            if not pids:
                break
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            killed += pids
        for svc in services:
            assert svc.proc is not None
            svc.proc.wait(30)
        return killed

    def stop(self) -> None:
        """SIGTERM, then whatever is left gets SIGKILL."""
        for svc in self.services:
            if svc.alive:
                svc.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + 20
        for svc in self.services:
            if svc.proc is None:
                continue
            try:
                svc.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(svc.unit)

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {self.name}/{p.name}\n{p.read_text(errors='replace')[-tail:]}"
                         for p in sorted(self.log_dir.glob("*.log")))  # fmt: skip


def install_host(root: Path, name: str, settings: dict[str, str], workers: int) -> Host:
    """Lay out a host with ``scripts/install-systemd`` and write ``settings``
    into its environment file (appended, as an operator edits it)."""
    root.mkdir(parents=True)
    units, env_file, data_dir = root / "units", root / "provisioner.env", root / "data"
    data_dir.mkdir()
    done = subprocess.run([str(INSTALL), "--dest", str(units), "--env-file", str(env_file),
                           "--data-dir", str(data_dir), "--no-user", "--no-wrapper"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"install-systemd for host {name}: {done.stderr.strip()}")
    with env_file.open("a") as f:
        f.write(f"\n# host {name}, written by tests/multihost/harness.py\n")
        f.writelines(f"{k}={v}\n" for k, v in settings.items())
    host = Host(name, root, env_file, data_dir, int(settings["PROVISIONER_WEB_PORT"]), {})
    for path in sorted(units.glob("*.service")):
        unit = unit_settings(path.read_text())
        # what systemd gives a service: a plain environment, the unit's
        # Environment= words, then the EnvironmentFile=
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": str(data_dir), "LANG": "C.UTF-8"}  # fmt: skip
        for value in unit.get("Environment", []):
            env.update(w.split("=", 1) for w in unit_words(value))  # type: ignore[misc]
        for value in unit.get("EnvironmentFile", []):
            env.update(read_env_file(Path(value.lstrip("-"))))
        host.env = env  # the same for every unit
        argv, cwd = unit_words(unit["ExecStart"][0]), Path(unit["WorkingDirectory"][0])
        if path.name == MIGRATE_UNIT:
            host.migrate = Service(path.name, argv, cwd)
        elif "@." in path.name:  # a template unit: instances 1..N (workers), else one
            count = workers if path.name.startswith("provisioner-worker@") else 1
            host.services += [Service(path.name.replace("@.", f"@{i}."), argv, cwd)
                              for i in range(1, count + 1)]  # fmt: skip
        else:
            host.services.append(Service(path.name, argv, cwd))
    assert host.migrate is not None, f"install-systemd wrote no {MIGRATE_UNIT}"
    return host


def migrate_together(hosts: list[Host]) -> None:
    """Every host's migrate unit at once, as they boot together (the schema
    upgrade takes a PostgreSQL advisory lock).

    Raises:
        RuntimeError: one failed (with its output).
    """
    procs = [(h, subprocess.Popen(h.migrate.argv, cwd=h.migrate.cwd, env=h.env,  # type: ignore[union-attr]
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
             for h in hosts]  # fmt: skip
    failed = []
    for host, proc in procs:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            failed.append(f"host {host.name}: {MIGRATE_UNIT} failed: {out[-2000:]}")
    if failed:
        raise RuntimeError("\n".join(failed))


# -- the cluster ----------------------------------------------------------------------


@dataclass
class Cluster:
    work: Path
    sim: dict[str, Any]
    postgres: PostgresServer
    redis_url: str
    hosts: dict[str, Host]
    balancer: Balancer
    client: Stack  # submits and inspects: Stack's helpers on the shared settings
    sentinel: Any = None  # a tests.redis_sentinel.SentinelGroup when Redis is behind Sentinel

    def host_of_pid(self, pid: int) -> Host | None:
        return next((h for h in self.hosts.values() if pid in h.pids()), None)

    def logs(self) -> str:
        return "\n".join(h.logs() for h in self.hosts.values())

    def wait_web(self, timeout: float = 60) -> None:
        """Until every running web process answers and haproxy sees them up."""
        deadline = time.monotonic() + timeout
        for host in self.hosts.values():
            if not host.web.alive:
                continue
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{host.web_port}/login",
                                    timeout=2).status_code == 200:  # fmt: skip
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline or not host.web.alive:
                    raise RuntimeError(f"host {host.name}'s web process does not answer: "
                                       f"{host.logs()}")  # fmt: skip
                time.sleep(0.2)
        while time.monotonic() < deadline:
            up = self.balancer.status()
            if all(up.get(n, "").startswith("UP") for n, h in self.hosts.items() if h.web.alive):
                return
            time.sleep(0.2)
        raise RuntimeError(f"haproxy does not see the web processes up: {self.balancer.status()}")


def shared_settings(work: Path, database_url: str, redis_url: str,
                    lease: tuple[float, float]) -> dict[str, str]:  # fmt: skip
    """What every host's environment file says alike (docs/scaling.md)."""
    templates = work / "templates"
    for source in TEMPLATES:
        for path in source.iterdir():
            if (path / "template.toml").is_file():
                shutil.copytree(path, templates / path.name)
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PROVISIONER_SECRET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "PROVISIONER_QUEUE_NAME": f"provisioning-multihost-{uuid.uuid4().hex[:8]}",
        "PROVISIONER_TEMPLATES_DIR": str(templates),
        "PROVISIONER_LEASE_DURATION": str(lease[0]),
        "PROVISIONER_LEASE_RENEW_INTERVAL": str(lease[1]),
        "PROVISIONER_RETRY_BASE_DELAY": "0.5",
        "PROVISIONER_RETRY_MAX_DELAY": "2",
        "PROVISIONER_SSH_CONNECT_TIMEOUT": "60",
        "PROVISIONER_IP_TIMEOUT": "60",
        "PROVISIONER_TASK_TIMEOUT": "120",
        "PROVISIONER_WEB_PROXY_HOPS": "1",
        "PROVISIONER_WEB_THREADS": "32",
    }


@contextlib.contextmanager
def start_cluster(work: Path, sim: dict[str, Any], redis_url: str, postgres: PostgresServer,
                  *, hosts: tuple[str, ...] = ("a", "b"), workers: int = 2,
                  lease: tuple[float, float] = (6, 1), sentinel: Any = None) -> Iterator[Cluster]:  # fmt: skip
    """Hosts laid out and started, haproxy in front of their web processes,
    the simulator registered as node "sim"; everything stopped at the end.

    ``redis_url`` may be a ``redis+sentinel://`` URL (then pass its
    ``sentinel`` group, which the caller starts and stops).  ``lease``:
    (PROVISIONER_LEASE_DURATION, PROVISIONER_LEASE_RENEW_INTERVAL); short
    ones hand a dead host's runs on sooner.
    """
    common = shared_settings(work, postgres.url, redis_url, lease)
    ports = {name: free_port() for name in hosts}
    balancer = start_balancer(work, ports)
    common["PROVISIONER_PUBLIC_URL"] = balancer.url
    started: list[Host] = []
    client: Stack | None = None
    try:
        for name in hosts:
            started.append(install_host(work / f"host-{name}", name,
                                        {**common, "PROVISIONER_WEB_HOST": "127.0.0.1",
                                         "PROVISIONER_WEB_PORT": str(ports[name])}, workers))  # fmt: skip
        migrate_together(started)
        settings = Settings.from_env(environ={**started[0].env})
        client = Stack(env=started[0].env, settings=settings, sim=sim,
                       redis=redis_client(settings.redis_url), log_dir=work / "client")  # fmt: skip
        register_sim(client.factory, settings, sim)
        for host in started:
            host.start()
        cluster = Cluster(work, sim, postgres, redis_url, {h.name: h for h in started},
                          balancer, client, sentinel)  # fmt: skip
        cluster.wait_web()
        yield cluster
    finally:
        for host in started:
            host.stop()
        balancer.stop()
        if client is not None:
            client.redis.close()
            client.disconnect()


def destroy_all(cluster: Cluster) -> None:
    """Remove from the simulator every container the cluster's database
    knows (through the ownership guard); call it once the hosts are stopped."""
    box = load_secret_box(cluster.client.settings.secret_key,
                          cluster.client.settings.secret_key_file)  # fmt: skip
    with cluster.client.factory() as session:
        node = session.scalars(select(Node).where(Node.name == NODE)).one()
        with client_for(node, box) as pve:
            destroy_ours(pve, [(ct.id, ct.vmid) for ct in session.scalars(select(Container))])

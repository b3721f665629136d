"""``provisioner demo``: the whole product on one machine, in one command.

Starts, in this order: a Redis of its own (unless ``REDIS_URL`` is set or
``--redis-url`` given), the Proxmox simulator (``pvesim serve``), the
database (SQLite in the data directory unless ``DATABASE_URL`` is set),
the simulator registered as node ``sim``, an ``admin`` user with a freshly
generated password, the workers and the web app.  Then it writes
``env`` in the data directory (``source`` it to point the CLI at the demo),
prints the dashboard's address and the credentials and waits, restarting a
worker that dies (at most 5 times a minute); Ctrl-C stops everything,
newest first (``cli/demo_supervisor.py``).

``--smoke`` does the same without waiting: it provisions one container from
the ``nginx`` template through the CLI (``provisioner create --follow``),
checks that its page answers, prints the timings, destroys it and exits.

Everything lives in the data directory (default ``.state/demo`` in the
checkout): a second run reuses the simulator's containers, the database and
the secret key.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import click
import requests
from redis import Redis
from redis.exceptions import RedisError
from rq import Worker
from rq.worker import WorkerStatus
from sqlalchemy import select

from cli.demo_supervisor import STOP, RestartLimit, Supervisor
from cli.runtime import BadInput
from provisioner import db, users
from provisioner.config import CONFIG_ENV, Settings, env_var, redact_url
from provisioner.db import session_scope
from provisioner.errors import ProvisionError
from provisioner.models import AuthKind, Container, Lifecycle, Node
from provisioner.redis_url import redis_client
from provisioner.secrets.generate import generate_password
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import set_node_secret
from provisioner.timings import run_phase_durations

ROOT = Path(__file__).resolve().parent.parent
NODE = "sim"
ADMIN = "admin"
ENV_FILE = "env"  # in the data directory: `source` it to point the CLI at the demo
_BIN = Path(sys.executable).parent


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(_family(host)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_free(host: str, port: int) -> bool:
    with socket.socket(_family(host)) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def listen_address(host: str) -> str:
    """The address the dashboard listens on: ``host`` if it is an IP
    address, else what the name resolves to (``localhost``).

    Raises:
        BadInput: the name does not resolve, or the address is not one of ours.
    """
    try:
        address = str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
    except (socket.gaierror, UnicodeError):
        raise BadInput(f"--host: {host!r} is neither an IP address nor a name this machine "
                       "resolves") from None  # fmt: skip
    try:
        _free_port(address)
    except OSError as exc:
        raise BadInput(f"--host: cannot listen on {host}: {exc.strerror} (is it an address of "
                       "this machine?)") from None  # fmt: skip
    return address


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _wait(what: str, check: Any, sup: Supervisor, name: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if sup.dead() == name:
            raise ProvisionError(f"{what} exited at start:\n{sup.log_tail(name)}")
        time.sleep(0.1)
    raise ProvisionError(f"{what} did not become ready in {timeout:.0f}s:\n{sup.log_tail(name)}")


def _start_redis(sup: Supervisor, data: Path, env: dict[str, str]) -> str:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise ProvisionError("redis-server is not installed (scripts/setup installs it)")
    port = _free_port()
    sup.start("redis", [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", str(data)], env)  # fmt: skip

    def ping() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    _wait("redis-server", ping, sup, "redis", 20)
    return f"redis://127.0.0.1:{port}/0"


def _start_simulator(sup: Supervisor, data: Path, env: dict[str, str],
                     time_scale: float) -> dict[str, Any]:  # fmt: skip
    if os.geteuid() != 0:
        raise ProvisionError("the simulator needs root (network namespaces, systemd-nspawn): "
                             "run the demo as root")  # fmt: skip
    info = data / "pvesim.json"
    info.unlink(missing_ok=True)
    port = _free_port("127.0.0.2")
    with open(info, "wb") as out:
        sup.start("pvesim", [str(_BIN / "pvesim"), "serve", "--listen", f"127.0.0.2:{port}",
                             "--state-dir", str(data / "pvesim"), "--time-scale", str(time_scale)],
                  env, stdout=out)  # fmt: skip

    def ready() -> dict[str, Any] | None:
        text = info.read_text() if info.exists() else ""
        return json.loads(text) if text.endswith("\n") else None

    sim: dict[str, Any] = _wait("the simulator", ready, sup, "pvesim", 180)
    return sim


def _register_node(settings: Settings, sim: dict[str, Any]) -> None:
    """Add (or refresh, on a later run) the simulator as node "sim"."""
    box = load_secret_box(settings.secret_key, settings.secret_key_file)
    user, token_name = sim["token_id"].split("!")
    host, port = sim["url"].split("//")[1].split("/")[0].rsplit(":", 1)
    engine = db.make_engine(settings.database_url)
    try:
        with session_scope(db.session_factory(engine)) as session:
            node = session.scalars(select(Node).where(Node.name == NODE)).one_or_none()
            if node is None:
                node = Node(name=NODE, secret_ciphertext="")
                session.add(node)
            node.host, node.port, node.pve_node = host, int(port), sim["node"]
            node.auth_kind, node.pve_user, node.token_name = AuthKind.TOKEN, user, token_name
            node.ca_file, node.fingerprint, node.tls_insecure = sim["cafile"], None, False
            node.default_storage, node.default_bridge = "local-lvm", "vmbr0"
            session.flush()
            set_node_secret(box, node, sim["token_secret"])
    finally:
        engine.dispose()


def _admin_password(settings: Settings) -> str:
    """A new password for "admin" (created on the first run)."""
    password = generate_password()
    engine = db.make_engine(settings.database_url)
    try:
        with session_scope(db.session_factory(engine)) as session:
            if users.get_user(session, ADMIN) is None:
                users.create_user(session, ADMIN, password, is_admin=True)
            else:
                users.set_password(session, ADMIN, password)
    finally:
        engine.dispose()
    return password


@dataclass
class _Worker:
    """One of the demo's RQ workers.  Each start has a new name: RQ keeps
    a killed worker's name registered for minutes, and refuses a second
    worker of that name."""

    index: int
    redis_url: str
    name: str = ""

    def argv(self) -> list[str]:
        self.name = f"demo-{secrets.token_hex(3)}-{self.index}"
        return [str(_BIN / "provisioner"), "worker", "--name", self.name]

    def _registered(self, redis: Redis) -> Worker | None:
        found = Worker.find_by_key(Worker.redis_worker_namespace_prefix + self.name,
                                   connection=redis)  # fmt: skip
        return found if isinstance(found, Worker) else None

    def doing(self) -> str:
        """Why it is not stopped yet, as RQ sees it."""
        try:
            with redis_client(self.redis_url, socket_timeout=2) as redis:
                worker = self._registered(redis)
                busy = worker is not None and worker.get_state() == WorkerStatus.BUSY
                job = worker.get_current_job_id() if worker is not None and busy else None
        except RedisError as exc:
            return f"is stopping (Redis cannot tell whether it runs a job: {exc})"
        if not busy:
            return "has no job, yet is still stopping"
        return f"is finishing its job {job}" if job else "is finishing its job"

    def forget(self) -> None:
        """Tell RQ that this worker died, so that ``rq info`` no longer lists it."""
        try:
            with redis_client(self.redis_url, socket_timeout=5) as redis:
                worker = self._registered(redis)
                if worker is not None:
                    worker.register_death()
        except RedisError as exc:  # RQ forgets it by itself within minutes
            click.echo(f"demo: cannot tell RQ that {self.name} died: {exc}", err=True)


def write_env_file(path: Path, env: dict[str, str], settings: Settings) -> None:
    """Write the shell lines that point the CLI at this demo: ``.venv/bin``
    on PATH, and the settings of its services (the Redis port changes with
    each start).  A setting the services do not get is unset, so that the
    caller's shell cannot point the CLI elsewhere.  Mode 0600: a secret key
    or a URL with a password, when the demo was given one, is in it (the
    CLI needs them to read what the services wrote)."""
    resolved = {"PROVISIONER_DATA_DIR": str(settings.data_dir),
                "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
                "PROVISIONER_TEMPLATES_DIR": str(settings.templates_dir)}  # fmt: skip
    lines = [
        f"# The CLI of the demo started at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
        f"`source {path}`, then `provisioner ls`.",
        "# Rewritten by each start of the demo.",
        f'export PATH={shlex.quote(str(_BIN))}:"$PATH"',
    ]
    unset = [CONFIG_ENV]
    for f in fields(Settings):
        if f.name == "config_file":
            continue
        name = env_var(f.name)
        value = resolved.get(name) or env.get(name, "").strip()
        if value:
            lines.append(f"export {name}={shlex.quote(value)}")
        else:
            unset.append(name)
    lines.append(f"unset {' '.join(unset)}")
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)  # an older file of another mode
    os.replace(tmp, path)


@contextlib.contextmanager
def _stack(data: Path, host: str, port: int, workers: int, time_scale: float,
           redis_url: str | None) -> Iterator[tuple[Supervisor, dict[str, str], str, str]]:  # fmt: skip
    """Start everything; yield (supervisor, env, dashboard URL, admin password)."""
    try:
        data.mkdir(parents=True, exist_ok=True)
        os.chmod(data, 0o700)
        (data / "logs").mkdir(exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"cannot use {data} as the demo's data directory: "
                             f"{exc.strerror}") from None  # fmt: skip
    sup = Supervisor(data / "logs")
    env = {k: v for k, v in os.environ.items() if k != "PROVISIONER_CONFIG"}
    env["PROVISIONER_DATA_DIR"] = str(data)
    env.setdefault("DATABASE_URL", f"sqlite:///{data}/provisioner.db")
    env["PYTHONUNBUFFERED"] = "1"
    try:
        redis_url = redis_url or env.get("REDIS_URL")
        env["REDIS_URL"] = redis_url or _start_redis(sup, data, env)
        sim = _start_simulator(sup, data, env, time_scale)
        settings = Settings.from_env(environ=env)
        db.upgrade(settings.database_url)
        _register_node(settings, sim)
        password = _admin_password(settings)
        for i in range(workers):
            worker = _Worker(i + 1, env["REDIS_URL"])
            sup.start(f"worker{i + 1}", worker.argv, env, restarts=RestartLimit(burst=5,
                      interval=60), doing=worker.doing, forget=worker.forget)  # fmt: skip
        sup.start(
            "web", [str(_BIN / "provisioner"), "web", "--host", host, "--port", str(port)], env
        )
        url = f"http://{url_host(host)}:{port}"

        def answers() -> bool:
            try:
                return requests.get(f"{url}/login", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        _wait("the web app", answers, sup, "web", 60)
        write_env_file(data / ENV_FILE, env, settings)
        yield sup, env, url, password
    finally:
        sup.stop_all()


def _smoke(env: dict[str, str], template: str) -> int:
    """Provision one container through the CLI, check it, time it, destroy it."""
    hostname = f"demo-smoke-{secrets.token_hex(2)}"
    started = time.monotonic()
    cli = str(_BIN / "provisioner")
    create = subprocess.run([cli, "create", "--template", template, "--node", NODE, "--hostname",
                             hostname, "--on-failure", "keep", "--follow"], env=env)  # fmt: skip
    total = time.monotonic() - started
    settings = Settings.from_env(environ=env)
    engine = db.make_engine(settings.database_url)
    try:
        with db.session_factory(engine)() as session:
            ct = session.scalars(select(Container).where(Container.hostname == hostname)).first()
            if ct is None:
                click.echo(f"smoke: FAILED: `provisioner create` made no container ({create.returncode})", err=True)  # fmt: skip
                return 1
            cid, ip, lifecycle = ct.id, ct.ip, ct.lifecycle
            phases = run_phase_durations(session, cid)
    finally:
        engine.dispose()
    ok = create.returncode == 0 and lifecycle == Lifecycle.READY
    page = ""
    if ok and ip:
        try:
            answer = requests.get(f"http://{ip.split('/')[0]}/", timeout=10)
            page = f"HTTP {answer.status_code}, {len(answer.content)} bytes"
            ok = answer.status_code == 200
        except requests.RequestException as exc:
            page, ok = f"no answer: {exc}", False
    click.echo("")
    click.echo(f"smoke: {template} container {hostname} ({cid[:8]}): {lifecycle}, IP {ip}")
    for phase, seconds in phases.items():
        click.echo(f"  {phase:<9} {seconds:6.2f} s")
    click.echo(f"  {'total':<9} {total:6.2f} s (submit to ready, through the CLI)")
    click.echo(f"  page      {page or 'not checked'}")
    destroyed = subprocess.run([cli, "destroy", cid, "--yes", "--follow"], env=env,
                               stdout=subprocess.DEVNULL)  # fmt: skip
    if destroyed.returncode != 0:
        click.echo("smoke: destroying the container failed", err=True)
        ok = False
    click.echo(f"smoke: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


@click.command("demo")
@click.option("--smoke", is_flag=True, help="Provision one nginx container, check it, exit.")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address the dashboard listens on."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Dashboard port (a free one when it is taken; 0: any free one).")  # fmt: skip
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the demo keeps its state [default: .state/demo in the checkout].")  # fmt: skip
@click.option("--time-scale", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="The simulator's task durations (1: like a real node, 0: instant).")  # fmt: skip
@click.option("--redis-url", default=None, help="Use this Redis instead of starting one.")
@click.option("--template", default="nginx", show_default=True, help="What --smoke provisions.")
def demo_cmd(smoke: bool, host: str, port: int, workers: int, data_dir: Path | None,
             time_scale: float, redis_url: str | None, template: str) -> None:  # fmt: skip
    """Run everything on this machine: Redis, the simulator, workers, dashboard."""
    # Ctrl-C and SIGTERM stop everything cleanly; SIGINT explicitly too: a
    # shell starts background jobs with it ignored, and Python keeps that
    STOP.stopping = STOP.hurry = False
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, STOP.signal)
    try:
        _demo(smoke, host, port, workers, data_dir, time_scale, redis_url, template)
    except KeyboardInterrupt:
        click.echo("\ndemo: stopped", err=True)
        sys.exit(130)


def _demo(smoke: bool, host: str, port: int, workers: int, data_dir: Path | None,
          time_scale: float, redis_url: str | None, template: str) -> None:  # fmt: skip
    began = time.monotonic()
    data = (data_dir or ROOT / ".state" / "demo").resolve()
    host = listen_address(host)
    if port == 0 or not _port_free(host, port):
        chosen = _free_port(host)
        if port:
            click.echo(f"demo: port {port} is taken, using {chosen}", err=True)
        port = chosen
    with _stack(data, host, port, workers, time_scale, redis_url) as (sup, env, url, password):
        up = time.monotonic() - began
        click.echo("")
        click.echo(f"  Dashboard   {url}/")
        click.echo(f"  Log in as   {ADMIN} / {password}")
        click.echo(f"  Node        {NODE} (the simulator), {workers} workers")
        click.echo(f"  Redis       {redact_url(env['REDIS_URL'])}")
        click.echo(f"  State       {data} (logs in {data / 'logs'})")
        click.echo(f"  CLI         source {data / ENV_FILE}   (then: provisioner ls)")
        click.echo(f"  Up in       {up:.1f} s")
        click.echo("")
        if smoke:
            sys.exit(_smoke(env, template))
        click.echo("Press Ctrl-C to stop.")
        while True:
            sup.supervise()
            time.sleep(0.5)


COMMANDS = [demo_cmd]

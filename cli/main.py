"""The ``provisioner`` command line.

Commands get the settings, the database and Redis from the invocation's
``Runtime`` (``@pass_runtime``), which loads the settings on first use
(``--help`` works with a broken configuration), and report failures as one line on stderr, ``error: ...``,
with the exit status of ``EXIT_CODES_HELP``: 2 for bad input and bad
configuration, 3 for something that does not exist, 4 for an unreachable
node or Redis, 5 for a state that forbids the operation, 1 for a failed run
and anything else the provisioner raised on purpose, and for database
errors.  Anything else is a bug: one line too, ``error: internal error:
...``, exit 1; with ``PROVISIONER_DEBUG=1`` it keeps its traceback.

The container, node, key and webhook commands live in ``cli.containers``,
``cli.nodes``, ``cli.keys`` and ``cli.webhooks``; ``main`` gathers them.  Another command is
one more ``main.add_command``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from sqlalchemy import exc as sa_exc

from cli import actions as cli_actions
from cli import changes as cli_changes
from cli import containers as cli_containers
from cli import create as cli_create
from cli import demo
from cli import keys as cli_keys
from cli import nodes as cli_nodes
from cli import sandboxes as cli_sandboxes
from cli import templates as cli_templates
from cli import webhooks as cli_webhooks
from cli.runtime import (
    EXIT_CODES_HELP,
    EXIT_CONFLICT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    BadInput,
    Runtime,
    one_line,
    pass_runtime,
    runtime,
)
from provisioner.config import redact_url
from provisioner.errors import ConfigError, ProvisionError, PveApiError
from provisioner.request_checks import ActionRefused
from provisioner.users import UserError

__all__ = ["EXIT_CONFIG", "EXIT_FAILURE", "ProvisionerGroup", "main"]

EXIT_CONFIG = EXIT_USAGE  # click's status for usage errors too
_USER_ERROR_EXIT = {"invalid": EXIT_USAGE, "missing": EXIT_NOT_FOUND, "exists": EXIT_CONFLICT}
DEBUG_VARIABLE = "PROVISIONER_DEBUG"  # set: a bug shows its traceback
# SQLite's and PostgreSQL's words for a table that is not there
_MISSING_TABLE = re.compile(r"no such table|relation \S+ does not exist")


class ProvisionerGroup(click.Group):
    """A group that turns our errors into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            self._fail(ctx, str(exc), EXIT_CONFIG)
        except ActionRefused as exc:
            self._fail(ctx, str(exc), EXIT_CONFLICT)
        except UserError as exc:
            self._fail(ctx, str(exc), _USER_ERROR_EXIT[exc.kind])
        except PveApiError as exc:
            self._fail(ctx, str(exc), EXIT_UNREACHABLE)
        except ProvisionError as exc:
            self._fail(ctx, str(exc), EXIT_FAILURE)
        except sa_exc.SQLAlchemyError as exc:
            # First line only: the rest lists the statement and its parameters.
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if _MISSING_TABLE.search(detail):
                detail += " (is the database set up? run: provisioner db upgrade)"
            self._fail(ctx, f"database: {detail}", EXIT_FAILURE)
        except KeyboardInterrupt:
            self._fail(ctx, "interrupted", EXIT_INTERRUPTED)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: usage errors, our CliFailures, ctx.exit()
        except UnicodeDecodeError as exc:  # a file or stream of bytes that is not text
            self._fail(ctx, f"input is not UTF-8 text: {exc}", EXIT_USAGE)
        except Exception as exc:
            # redis is imported only by commands that use it
            redis_errors = sys.modules.get("redis.exceptions")
            if redis_errors is not None and isinstance(exc, redis_errors.RedisError):
                settings = runtime(ctx).loaded_settings
                where = redact_url(settings.redis_url) if settings else "Redis"
                self._fail(ctx, f"redis {where}: {exc}", EXIT_UNREACHABLE)
            if os.environ.get(DEBUG_VARIABLE):
                raise
            # a bug: still one line (no secret-bearing locals on a terminal), the
            # traceback on request
            self._fail(ctx, f"internal error: {type(exc).__name__}: {exc} "
                       f"(set {DEBUG_VARIABLE}=1 for the traceback, and please report it)",
                       EXIT_FAILURE)  # fmt: skip

    @staticmethod
    def _fail(ctx: click.Context, message: str, code: int) -> NoReturn:
        click.echo(f"error: {one_line(message)}", err=True)
        ctx.exit(code)


@click.group(cls=ProvisionerGroup, epilog=EXIT_CODES_HELP)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML settings file (default: $PROVISIONER_CONFIG).",
)
@click.version_option(package_name="lxc-provisioner")
def main(config_file: Path | None) -> None:
    """Provision LXC containers on Proxmox VE.

    \b
    Settings come from PROVISIONER_* variables, DATABASE_URL, REDIS_URL and
    the --config file.  Containers are named by id, a unique id prefix, or
    hostname.  Quick start:
      provisioner db upgrade
      echo "$SECRET" | provisioner nodes add pve1 --host pve1.lan \\
          --token-id 'root@pam!prov' --token-secret-stdin --fingerprint AA:BB:...
      provisioner create -t nginx -H web1 --follow
    """


for _module in (cli_create, cli_containers, cli_actions, cli_changes, cli_nodes, cli_keys,
                cli_templates, cli_sandboxes, cli_webhooks, demo):  # fmt: skip
    for _command in _module.COMMANDS:
        main.add_command(_command)


@main.group()
def db() -> None:
    """Manage the database."""


@db.command("upgrade")
@pass_runtime
def db_upgrade(rt: Runtime) -> None:
    """Create or migrate the database schema to the newest revision."""
    from provisioner import db as database  # imports SQLAlchemy and Alembic: only when needed

    url = rt.settings.database_url
    before = database.current_revision(url)
    database.upgrade(url)
    after = database.current_revision(url)
    where = redact_url(url)
    if before == after:
        click.echo(f"database {where} is up to date (revision {after})")
    else:
        click.echo(f"database {where} upgraded from revision {before or 'none'} to {after}")


@main.command("worker")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--name", default=None, help="Worker name (default: RQ's).")
@pass_runtime
def worker_cmd(rt: Runtime, burst: bool, name: str | None) -> None:
    """Run an RQ worker on the provisioning queue, then the webhooks queue
    (what the Procfile runs).

    SIGTERM lets the current job finish, then exits; a second one aborts it.
    The worker also re-enqueues runs whose worker died once their lease ran
    out, and runs RQ's scheduler (in a thread), which puts a webhook
    delivery's retry back on its queue when its wait is over.
    """
    import functools

    from provisioner.db import make_engine, preflight, session_factory
    from provisioner.logsafe import setup_logging
    from provisioner.queue import provisioning_queue
    from provisioner.recovery import RecoveryLoop, on_work_horse_killed
    from provisioner.redis_url import redis_client
    from provisioner.webhook_store import webhook_queue
    from provisioner.worker import ProvisioningWorker, RetryScheduler

    settings = rt.settings
    preflight(settings)  # refuse jobs that could only fail: one line now, not one per job
    setup_logging(settings.log_level)
    # imported once here, inherited by every forked work horse instead of
    # being imported again for each job
    import pipeline.job  # noqa: F401
    import provisioner.webhook_delivery  # noqa: F401

    redis = redis_client(settings.redis_url)  # RQ's: it sets its own long timeouts
    # recovery's own client: short timeouts, a stalled Redis holds it up briefly
    quick = redis_client(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    factory = session_factory(make_engine(settings.database_url))
    recovery = RecoveryLoop(factory, quick, settings)
    recovery.start()
    retries = RetryScheduler([webhook_queue(redis, settings)], redis)
    retries.start()
    try:
        # a work horse that dies is handed on at once, not after its lease
        killed = functools.partial(on_work_horse_killed, factory, quick, settings)
        # provisioning first: a worker takes a delivery when no run waits
        queues = [provisioning_queue(redis, settings), webhook_queue(redis, settings)]
        worker = ProvisioningWorker(queues, connection=redis, name=name,
                                    work_horse_killed_handler=lambda job, pid,
                                    status, _usage: killed(job, pid, status))  # fmt: skip
        worker.work(burst=burst, logging_level=settings.log_level)
    finally:
        retries.stop()
        recovery.stop()


@main.command("scheduler")
@click.option("--name", help="The scheduler's name in Redis (default: host:pid:random).")
@pass_runtime
def scheduler_cmd(rt: Runtime, name: str | None) -> None:
    """Run RQ's cron scheduler (what the Procfile's scheduler runs): it
    queues the sandbox expiry round every PROVISIONER_SANDBOX_EXPIRY_INTERVAL
    seconds for the workers.  One is enough; a second does no harm (a round
    does what is due once).  SIGTERM stops it.
    """
    from rq.cron import CronScheduler

    from pipeline.expiry import expire_round
    from provisioner.db import preflight
    from provisioner.logsafe import setup_logging
    from provisioner.redis_url import redis_client

    settings = rt.settings
    preflight(settings)
    setup_logging(settings.log_level)
    redis = redis_client(settings.redis_url)
    cron = CronScheduler(connection=redis, logging_level=settings.log_level, name=name or "")
    cron.register(expire_round, queue_name=settings.queue_name,
                  interval=settings.sandbox_expiry_interval, job_timeout=300,
                  name="sandbox-expiry")  # fmt: skip
    cron.start()


# -- users and API tokens -------------------------------------------------------


def _read_new_password(password_stdin: bool, generate: bool) -> tuple[str, bool]:
    """The new password and whether it was generated (and must be shown).

    ``--password-stdin`` reads the first line of stdin; ``--generate``, or no
    terminal to prompt on, makes one; otherwise the user is prompted twice.
    """
    import sys

    from cli.output import stdin_line
    from provisioner.secrets.generate import generate_password

    if password_stdin and generate:
        raise click.UsageError("--password-stdin and --generate exclude each other")
    if password_stdin:
        return stdin_line("--password-stdin"), False
    if generate or not sys.stdin.isatty():
        return generate_password(20), True
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password, False


def _password_options(f: Any) -> Any:
    f = click.option("--generate", is_flag=True, help="Generate a password and print it once.")(f)
    return click.option(
        "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
    )(f)


@main.group()
def user() -> None:
    """Dashboard and API users."""


@user.command("add")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@_password_options
@pass_runtime
def user_add(rt: Runtime, username: str, admin: bool, password_stdin: bool, generate: bool) -> None:
    """Add a user.  Without --password-stdin the password is prompted for, or
    generated (and printed once) when there is no terminal."""
    from provisioner import users
    from provisioner.db import session_scope

    password, generated = _read_new_password(password_stdin, generate)
    with session_scope(rt.factory) as session:
        users.create_user(session, username, password, is_admin=admin)
    click.echo(f"user {username} added{' (admin)' if admin else ''}")
    if generated:
        click.echo(f"password: {password}")
        click.echo("(shown once: store it now)", err=True)


@user.command("passwd")
@click.argument("username")
@_password_options
@pass_runtime
def user_passwd(rt: Runtime, username: str, password_stdin: bool, generate: bool) -> None:
    """Set a user's password; their dashboard sessions end."""
    from provisioner import users
    from provisioner.db import session_scope

    password, generated = _read_new_password(password_stdin, generate)
    with session_scope(rt.factory) as session:
        users.set_password(session, username, password)
    click.echo(f"password of {username} changed")
    if generated:
        click.echo(f"password: {password}")
        click.echo("(shown once: store it now)", err=True)


@user.command("list")
@pass_runtime
def user_list(rt: Runtime) -> None:
    """List the users."""
    from sqlalchemy import select

    from provisioner.models import User

    with rt.factory() as session:
        for u in session.scalars(select(User).order_by(User.username)):
            click.echo(f"{u.username}\t{'admin' if u.is_admin else 'user'}")


@main.group()
def token() -> None:
    """API tokens for the REST API (Authorization: Bearer <token>)."""


@token.command("create")
@click.argument("username")
@click.argument("name")
@pass_runtime
def token_create(rt: Runtime, username: str, name: str) -> None:
    """Create an API token NAME for USERNAME and print it (once)."""
    from provisioner import users
    from provisioner.db import session_scope

    with session_scope(rt.factory) as session:
        _, secret = users.create_api_token(session, username, name)
    click.echo(secret)
    click.echo(f"token {name!r} of {username} created (shown once: store it now)", err=True)


@token.command("revoke")
@click.argument("username")
@click.argument("name")
@pass_runtime
def token_revoke(rt: Runtime, username: str, name: str) -> None:
    """Revoke USERNAME's API token NAME."""
    from provisioner import users
    from provisioner.db import session_scope

    with session_scope(rt.factory) as session:
        users.revoke_token(session, username, name)
    click.echo(f"token {name!r} of {username} revoked")


@token.command("list")
@click.argument("username")
@pass_runtime
def token_list(rt: Runtime, username: str) -> None:
    """List USERNAME's tokens (name, prefix, created, last used, state)."""
    from provisioner import users

    with rt.factory() as session:
        for t in users.list_tokens(session, username):
            used = t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "never"
            state = "revoked" if t.revoked else "active"
            created = t.created_at.isoformat(timespec="seconds")
            click.echo(f"{t.name}\t{t.prefix}...\t{created}\t{used}\t{state}")


# -- the web app ------------------------------------------------------------------


@main.command("web")
@click.option("--host", default=None, help="Address to bind (default: PROVISIONER_WEB_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port (default: PROVISIONER_WEB_PORT).")  # fmt: skip
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="gunicorn worker processes (default: PROVISIONER_WEB_WORKERS, 1).")  # fmt: skip
@click.option("--threads", type=click.IntRange(4, 1024), default=None,
              help="Threads per worker: each open event stream holds one (default: "
                   "PROVISIONER_WEB_THREADS, 128).")  # fmt: skip
@pass_runtime
def web_cmd(
    rt: Runtime,
    host: str | None,
    port: int | None,
    workers: int | None,
    threads: int | None,
) -> None:
    """Serve the web app (dashboard, REST API, event relay) with gunicorn."""
    import os
    import sys

    from provisioner.db import preflight

    # fail here, with one line, on a bad configuration, an unusable key or an
    # un-migrated database: in gunicorn's worker it would be a traceback
    settings = rt.settings
    threads = threads or settings.web_threads
    if settings.web_relay_max_streams is not None and settings.web_relay_max_streams >= threads:
        raise BadInput(f"--threads {threads} must be more than PROVISIONER_WEB_RELAY_MAX_STREAMS "
                       f"({settings.web_relay_max_streams}): every open event stream holds a "
                       "thread, and pages and the API need some too")  # fmt: skip
    preflight(settings)
    os.environ["PROVISIONER_WEB_THREADS"] = str(threads)  # the app sizes its stream limit
    bind_host = host or settings.web_host
    bind = f"[{bind_host}]:{port or settings.web_port}" if ":" in bind_host else (
        f"{bind_host}:{port or settings.web_port}")  # fmt: skip
    if settings.config_file is not None:
        os.environ["PROVISIONER_CONFIG"] = str(settings.config_file)
    argv = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread",
            "--threads", str(threads), "--workers", str(workers or settings.web_workers),
            "--bind", bind,
            "--graceful-timeout", "10", "--access-logfile", "-",
            "web.app:create_app()"]  # fmt: skip
    if _gunicorn_version() >= (25, 1):
        # one control socket per user by default: a second instance would take it over
        argv.insert(-1, "--no-control-socket")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def _gunicorn_version() -> tuple[int, ...]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("gunicorn")
    except PackageNotFoundError:
        raise ProvisionError("gunicorn is not installed: pip install gunicorn") from None
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())

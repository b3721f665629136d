"""The ``provisioner`` command line.

Commands load the settings themselves (``--help`` works with a broken
configuration) and report failures as one line on stderr: exit status 2 for
bad configuration, 1 for anything else the provisioner raised on purpose
and for database errors.  Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click
from sqlalchemy import exc as sa_exc

from provisioner.config import Settings, redact_url
from provisioner.errors import ConfigError, ProvisionError

EXIT_FAILURE = 1
EXIT_CONFIG = 2  # also click's status for usage errors


class ProvisionerGroup(click.Group):
    """A group that turns our errors into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_CONFIG)
        except ProvisionError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_FAILURE)
        except sa_exc.SQLAlchemyError as exc:
            # First line only: the rest lists the statement and its parameters.
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            click.echo(f"error: database: {detail}", err=True)
            ctx.exit(EXIT_FAILURE)


def load_settings(ctx: click.Context) -> Settings:
    """Return the settings for this invocation, built once from the
    environment and the ``--config`` file.

    Raises:
        ConfigError: the configuration is invalid.
    """
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        config_file: Path | None = root.params.get("config_file")
        root.obj = Settings.from_env(toml_path=config_file)
    return root.obj


@click.group(cls=ProvisionerGroup)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML settings file (default: $PROVISIONER_CONFIG).",
)
@click.version_option(package_name="lxc-provisioner")
def main(config_file: Path | None) -> None:
    """Provision LXC containers on Proxmox VE."""


@main.group()
def db() -> None:
    """Manage the database."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or migrate the database schema to the newest revision."""
    from provisioner import db as database  # imports SQLAlchemy and Alembic: only when needed

    url = load_settings(ctx).database_url
    before = database.current_revision(url)
    database.upgrade(url)
    after = database.current_revision(url)
    where = redact_url(url)
    if before == after:
        click.echo(f"database {where} is up to date (revision {after})")
    else:
        click.echo(f"database {where} upgraded from revision {before or 'none'} to {after}")


@main.group()
def templates() -> None:
    """Container templates."""


@templates.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.pass_context
def templates_validate(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Check templates completely; every problem with file and line.

    PATHS are template directories or directories of templates (default: the
    configured templates directory).  Exits 1 when anything is wrong.
    """
    from provisioner.templates import validate_template, validate_tree

    roots = list(paths) or [load_settings(ctx).templates_dir]
    problems = []
    checked = 0
    for root in roots:
        if (root / "template.toml").exists():
            problems += validate_template(root)
            checked += 1
        else:
            problems += validate_tree(root)
            checked += sum(1 for p in root.iterdir() if (p / "template.toml").exists())
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {checked} template(s)", err=True)
        ctx.exit(EXIT_FAILURE)
    click.echo(f"{checked} template(s) OK")


@main.command("worker")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--name", default=None, help="Worker name (default: RQ's).")
@click.pass_context
def worker_cmd(ctx: click.Context, burst: bool, name: str | None) -> None:
    """Run an RQ worker on the provisioning queue (what the Procfile runs).

    SIGTERM lets the current job finish, then exits; a second one aborts it.
    The worker also re-enqueues runs whose worker died once their lease ran out.
    """
    from redis import Redis
    from rq import Worker

    from provisioner.db import make_engine, session_factory
    from provisioner.logsafe import setup_logging
    from provisioner.queue import provisioning_queue
    from provisioner.recovery import RecoveryLoop

    settings = load_settings(ctx)
    setup_logging(settings.log_level)
    # imported once here, inherited by every forked work horse instead of
    # being imported again for each job
    importlib.import_module("pipeline.job")
    redis = Redis.from_url(settings.redis_url)
    factory = session_factory(make_engine(settings.database_url))
    recovery = RecoveryLoop(
        factory, redis, settings, interval=max(1.0, settings.lease_duration / 2)
    )
    recovery.start()
    try:
        worker = Worker([provisioning_queue(redis, settings)], connection=redis, name=name)
        worker.work(burst=burst, logging_level=settings.log_level)
    finally:
        recovery.stop()

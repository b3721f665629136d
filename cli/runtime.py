"""What every ``provisioner`` command shares: its exit codes, its errors,
the settings, and the database, Redis and secret box of one invocation.

The CLI works on the database and Redis directly through the core library,
like the worker.  A command gets them in one way: ``@pass_runtime`` hands it
the invocation's :class:`Runtime`.  Everything in it, the settings included,
is made on first use and closed when the command ends, so ``--help`` works
with a broken configuration and commands that need nothing stay fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from provisioner.config import Settings

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from provisioner.secrets.box import SecretBox

EXIT_OK = 0
EXIT_FAILURE = 1  # a run ended in error; an operation or the database failed
EXIT_USAGE = 2  # bad usage, bad input, bad configuration (click's usage status too)
EXIT_NOT_FOUND = 3
EXIT_UNREACHABLE = 4  # a PVE node or Redis: unreachable, TLS refused, auth refused
EXIT_CONFLICT = 5  # the state forbids it: lifecycle, still in use, already exists
EXIT_TIMEOUT = 6  # --timeout ran out while following; the run goes on
EXIT_INTERRUPTED = 130
_RUNTIME_KEY = "provisioner.runtime"  # in the root context's meta

EXIT_CODES_HELP = f"""\b
Exit codes:
  {EXIT_OK}    ok (with --follow: the container is ready, the action done)
  {EXIT_FAILURE}    the run ended in error, or the operation or the database failed
  {EXIT_USAGE}    bad usage, bad input or bad configuration
  {EXIT_NOT_FOUND}    no such container, node or template
  {EXIT_UNREACHABLE}    a Proxmox node or Redis is unreachable, or refused TLS or the login
  {EXIT_CONFLICT}    not allowed in the current state (lifecycle, still in use, exists)
  {EXIT_TIMEOUT}    --timeout ran out while following (the run goes on)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C; a queued run goes on)
"""


class CliFailure(click.ClickException):
    """A failure to report as one line, ``error: ...``, with an exit code."""

    exit_code = EXIT_FAILURE

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {one_line(self.format_message())}", err=True)


def one_line(text: str) -> str:
    """A multi-line message (a template's problems, a PVE error) as one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    joined = lines[0] if lines else ""
    for line in lines[1:]:
        joined += (" " if joined.endswith(":") else "; ") + line
    return joined


class BadInput(CliFailure):
    exit_code = EXIT_USAGE


class NotFound(CliFailure):
    exit_code = EXIT_NOT_FOUND


class Unreachable(CliFailure):
    exit_code = EXIT_UNREACHABLE


class Conflict(CliFailure):
    exit_code = EXIT_CONFLICT


class GaveUp(CliFailure):
    exit_code = EXIT_TIMEOUT


class Interrupted(CliFailure):
    exit_code = EXIT_INTERRUPTED


class Runtime:
    """The settings, database, Redis and secret box of one invocation, each
    made on first use."""

    def __init__(self, config_file: Path | None = None) -> None:
        self.config_file = config_file  # --config; None: $PROVISIONER_CONFIG or no file

    @cached_property
    def settings(self) -> Settings:
        """The settings, built once from the environment and the config file.

        Raises:
            ConfigError: the configuration is invalid (and again on the next use).
        """
        return Settings.from_env(toml_path=self.config_file)

    @property
    def loaded_settings(self) -> Settings | None:
        """The settings if they were built already (nothing is loaded here)."""
        settings: Settings | None = self.__dict__.get("settings")
        return settings

    @cached_property
    def engine(self) -> Engine:
        from provisioner.db import make_engine

        return make_engine(self.settings.database_url)

    @cached_property
    def factory(self) -> sessionmaker[Session]:
        from provisioner.db import session_factory

        return session_factory(self.engine)

    @cached_property
    def redis(self) -> Redis:
        from provisioner.redis_url import redis_client

        return redis_client(self.settings.redis_url, socket_connect_timeout=5,
                            health_check_interval=30)  # fmt: skip

    @cached_property
    def box(self) -> SecretBox:
        from provisioner.secrets.keyfile import load_secret_box

        return load_secret_box(self.settings.secret_key, self.settings.secret_key_file)

    def close(self) -> None:
        if "redis" in self.__dict__:
            self.redis.close()
        if "engine" in self.__dict__:
            self.engine.dispose()


def runtime(ctx: click.Context) -> Runtime:
    """The invocation's :class:`Runtime` (its settings from the root's
    ``--config``), closed when the command ends."""
    root = ctx.find_root()
    found = root.meta.get(_RUNTIME_KEY)
    if not isinstance(found, Runtime):
        found = Runtime(root.params.get("config_file"))
        root.meta[_RUNTIME_KEY] = found
        root.call_on_close(found.close)
    return found


def pass_runtime(f: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: call the command with the invocation's Runtime first (the
    one way a command reaches the settings, the database, Redis, the keys)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(runtime(click.get_current_context()), *args, **kwargs)

    return wrapper

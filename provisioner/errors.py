"""The provisioner's one error hierarchy.

Only the adapters (the Proxmox client, the SSH layer) decide whether a
failure is transient (worth retrying with backoff) or permanent (fail now,
with a message that says what to do).  Messages name the container, the
phase and the cause, and never carry a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar, overload

T = TypeVar("T")


class ProvisionError(Exception):
    """Base class of every error the provisioner raises on purpose."""

    transient = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class TransientError(ProvisionError):
    """Worth retrying: network trouble, 5xx and 595-599 from PVE, lock
    timeouts, SSH not up yet, a task that did not finish in time."""

    transient = True


class PermanentError(ProvisionError):
    """Retrying will not help: validation, 4xx, a task's TASK ERROR (but a
    lock's: ``TaskLockedError``), a script's non-zero exit, a host key
    mismatch."""


class ConfigError(PermanentError):
    """Bad settings or a bad template; names the setting or file and line."""


class InvalidRequest(ConfigError):
    """Every problem found in one request (each a ``ConfigError`` naming its
    field, ``"field: ..."``), so that all of them can be reported at once.

    Its own message joins them (or is ``message`` when given).
    """

    problems: list[ConfigError]

    def __init__(self, problems: Sequence[ConfigError], message: str | None = None) -> None:
        flat = [q for p in problems for q in (p.problems if isinstance(p, InvalidRequest) else [p])]
        if not flat:
            raise ValueError("an InvalidRequest needs at least one problem")
        super().__init__(message or "; ".join(p.message for p in flat))
        self.problems = flat


@overload
def gather(problems: list[ConfigError], check: Callable[[], T]) -> T | None: ...
@overload
def gather(problems: list[ConfigError], check: Callable[[], T], fallback: T) -> T: ...
def gather(problems: list[ConfigError], check: Callable[[], T],
           fallback: T | None = None) -> T | None:  # fmt: skip
    """``check()``, or ``fallback`` with its problem (an ``InvalidRequest``'s
    problems) added to ``problems``: every problem of a request is found
    before it is refused."""
    try:
        return check()
    except InvalidRequest as exc:
        problems.extend(exc.problems)
    except ConfigError as exc:
        problems.append(exc)
    return fallback


class PveApiError(ProvisionError):
    """Mixin data for errors from the PVE API: status code and PVE's message."""

    def __init__(self, message: str, *, status: int | None = None,
                 pve_message: str | None = None, errors: dict[str, str] | None = None,
                 hint: str | None = None) -> None:  # fmt: skip
        super().__init__(message, hint=hint)
        self.status = status
        self.pve_message = pve_message
        self.errors = errors or {}


class PveTransientError(PveApiError, TransientError):
    """A PVE call that may succeed when retried."""


class NodeUnreachableError(PveTransientError):
    """The node cannot be reached at all: the connection is refused or times
    out, or a cluster node answers 595 for it (its proxy cannot reach it).
    A run waits for the node (``PROVISIONER_NODE_WAIT``) rather than
    spending its retries."""


class PvePermanentError(PveApiError, PermanentError):
    """A PVE call that will fail the same way again."""


class TaskFailedError(PermanentError):
    """A PVE task ended in ``TASK ERROR``; carries the last lines of its log."""

    def __init__(self, message: str, *, upid: str, exitstatus: str,
                 log_tail: list[str] | None = None, hint: str | None = None) -> None:  # fmt: skip
        super().__init__(message, hint=hint)
        self.upid = upid
        self.exitstatus = exitstatus
        self.log_tail = log_tail or []


class TaskLockedError(TaskFailedError, TransientError):
    """A task that failed on another holder's lock: PVE's start, stop and
    shutdown check the config lock inside their task (``TASK ERROR: CT is
    locked (backup)``, or the config file's flock timing out), so unlike
    other task errors it is worth retrying once the lock is gone."""

    transient = True


class SshError(ProvisionError):
    """Base for SSH failures (see the transient/permanent subclasses)."""


class SshTransientError(SshError, TransientError):
    """SSH not reachable yet, connection dropped, timed out."""


class SshPermanentError(SshError, PermanentError):
    """Authentication refused, host key mismatch, a file that cannot be written."""


class HostKeyMismatchError(SshPermanentError):
    """The container presented a different host key than the one pinned."""


class CommandFailedError(PermanentError):
    """A remote command exited non-zero (or was killed by its timeout)."""

    def __init__(self, message: str, *, exit_status: int | None, output_tail: list[str],
                 timed_out: bool = False, hint: str | None = None) -> None:  # fmt: skip
        super().__init__(message, hint=hint)
        self.exit_status = exit_status
        self.output_tail = output_tail
        self.timed_out = timed_out

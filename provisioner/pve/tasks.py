"""PVE tasks: waiting for one to stop and streaming its log.

A task's status answers 400 for a moment right after it starts, its log
reads as one ``no content`` line until it writes something, and a stopped
task ends in ``OK``, ``WARNINGS: N`` (success) or the error text.  An
error that is another holder's lock (PVE's start, stop and shutdown check
the config lock inside their task) is transient.  Every call goes through
the client's one request method.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from provisioner.errors import (
    PvePermanentError,
    PveTransientError,
    TaskFailedError,
    TaskLockedError,
)
from provisioner.pve.parse import (
    Upid,
    failure_hint,
    is_lock_failure,
    parse_exitstatus,
    parse_upid,
)
from provisioner.pve.types import PveCalls, TaskResult

log = logging.getLogger(__name__)

# right after a task starts, its status can answer 400 for a moment
TASK_STARTUP_GRACE = 5.0
# a task's node unreachable this long while we wait for it: give up
TASK_UNREACHABLE_LIMIT = 60.0
LOG_TAIL_LINES = 20
LOG_PAGE = 500


def _task(upid: str) -> tuple[Upid, str]:
    """The parsed UPID and its API path."""
    try:
        task = parse_upid(upid)
    except ValueError as exc:
        raise PvePermanentError(str(exc)) from None
    return task, f"/nodes/{quote(task.node)}/tasks/{quote(task.text, safe=':@!=')}"


def wait_for_task(client: PveCalls, upid: str, timeout: float = 600.0, poll: float = 1.0,
                  on_log: Callable[[str], None] | None = None) -> TaskResult:  # fmt: skip
    """Poll a task until it stops (see ``PveClient.wait_for_task``)."""
    task, base = _task(upid)
    reader = TaskLogReader(client, base, on_log)
    started = time.monotonic()
    deadline = started + timeout
    delay = min(0.05, poll)  # fast first polls: most tasks are short
    unreachable_since: float | None = None
    while True:
        status: dict[str, Any] | None = None
        try:
            status = client._request("GET", f"{base}/status")
            unreachable_since = None
        except PvePermanentError as exc:
            if exc.status != 400 or time.monotonic() - started > TASK_STARTUP_GRACE:
                raise
        except PveTransientError as exc:
            # the task runs on regardless: ride out a blip of the API
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > TASK_UNREACHABLE_LIMIT:
                raise
            log.info("polling %s: %s", task.describe(), exc)
        stopped = status is not None and status.get("status") == "stopped"
        if on_log is not None and status is not None:
            if stopped:
                reader.finish()
            else:
                reader.read_new(final=False, tolerate=True)
        if stopped:
            break
        now = time.monotonic()
        if now >= deadline:
            raise PveTransientError(
                f"{task.describe()} still running after {timeout:g}s",
                hint="it keeps running on the node; wait for it again or check its log",
            )
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, poll)
    assert status is not None
    exitstatus = str(status.get("exitstatus", ""))
    succeeded, warnings = parse_exitstatus(exitstatus)
    if on_log is None and (warnings or not succeeded):
        reader.read_new(final=True, tolerate=True)
    if succeeded:
        if warnings:
            log.warning("%s finished with %d warning(s): %s", task.describe(), warnings,
                        "; ".join(reader.warnings) or exitstatus)  # fmt: skip
        return TaskResult(upid=task.text, exitstatus=exitstatus, warnings=warnings,
                          warning_lines=tuple(reader.warnings))  # fmt: skip
    if is_lock_failure(exitstatus):  # PVE's power tasks check the lock in the task
        raise TaskLockedError(f"{task.describe()} failed: {exitstatus}", upid=task.text,
                              exitstatus=exitstatus, log_tail=list(reader.tail),
                              hint=failure_hint(500, exitstatus))  # fmt: skip
    raise TaskFailedError(f"{task.describe()} failed: {exitstatus}", upid=task.text,
                          exitstatus=exitstatus, log_tail=list(reader.tail))  # fmt: skip


def read_task_log(client: PveCalls, upid: str) -> list[str]:
    """Every line of a task's log, paged."""
    _, base = _task(upid)
    reader = TaskLogReader(client, base, None, keep=None)
    reader.read_new(final=True, tolerate=False)
    return list(reader.tail)


class TaskLogReader:
    """Reads a task's log incrementally: each line once, in order."""

    def __init__(self, client: PveCalls, base: str, on_log: Callable[[str], None] | None,
                 keep: int | None = LOG_TAIL_LINES) -> None:  # fmt: skip
        self._client = client
        self._base = base
        self._on_log = on_log
        self.delivered = 0  # PVE numbers lines from 1; start= skips that many
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self.warnings: list[str] = []

    def read_new(self, *, final: bool, tolerate: bool) -> None:
        """Fetch and hand on the lines after the last one delivered.

        ``tolerate``: a transient failure just leaves them for the next call.
        """
        while True:
            try:
                page = self._client._request("GET", f"{self._base}/log",
                                             {"start": self.delivered, "limit": LOG_PAGE})  # fmt: skip
            except PveTransientError:
                if tolerate:
                    return
                raise
            page = list(page or [])
            # an empty log reads as one "no content" line: not a line of the task
            if (self.delivered == 0 and len(page) == 1 and page[0].get("t") == "no content"
                    and not final):  # fmt: skip
                return
            for entry in page:
                n = int(entry.get("n", self.delivered + 1))
                if n <= self.delivered:
                    continue
                self.delivered = n
                self._deliver(str(entry.get("t", "")))
            if len(page) < LOG_PAGE:
                return

    def finish(self) -> None:
        """The rest of a stopped task's log; a blip does not lose lines."""
        give_up = time.monotonic() + TASK_UNREACHABLE_LIMIT
        while True:
            try:
                self.read_new(final=True, tolerate=False)
                return
            except PveTransientError as exc:
                if time.monotonic() > give_up:
                    raise
                log.info("reading a task log: %s", exc)
                time.sleep(1.0)

    def _deliver(self, line: str) -> None:
        self.tail.append(line)
        if line.startswith("WARN"):
            self.warnings.append(line)
        if self._on_log is not None:
            self._on_log(line)

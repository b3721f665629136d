"""PVE tasks: UPIDs, status, logs, and durations scaled by ``--time-scale``."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pvesim.faults import Faults
from pvesim.state import StateStore, TaskRecord
from pvesim.upid import Upid, split_tokenid

# realistic task durations in seconds, multiplied by --time-scale
DURATIONS = {"vzcreate": 4.0, "vzstart": 1.5, "vzstop": 1.0, "vzshutdown": 2.0,
             "vzreboot": 3.0, "vzdestroy": 1.5, "vzclone": 4.0, "vzclone-linked": 0.5,
             "vzsnapshot": 1.0,
             "vzdelsnapshot": 0.5, "vzrollback": 1.5, "vztemplate": 0.5, "download": 3.0, "resize": 1.0}  # fmt: skip

log = logging.getLogger(__name__)


class TaskFailed(Exception):
    """Raised inside a task body: the task ends with ``TASK ERROR: <message>``."""


class Task:
    """A running task handed to its body: log lines, warnings, scaled sleeps."""

    def __init__(self, record: TaskRecord, manager: TaskManager) -> None:
        self.record = record
        self._manager = manager
        self.warnings = 0

    @property
    def upid(self) -> str:
        return self.record.upid

    def log(self, line: str) -> None:
        for part in str(line).splitlines() or [""]:
            self.record.log.append(part)

    def warn(self, message: str) -> None:
        self.warnings += 1
        self.log(f"WARN: {message}")

    async def sleep(self, seconds: float) -> None:
        """Simulated work time, scaled (0 = none)."""
        await self._manager.sleep(seconds)


TaskBody = Callable[[Task], Awaitable[None]]


class TaskManager:
    """Starts tasks in the background and keeps their records."""

    def __init__(self, store: StateStore, node: str, faults: Faults, time_scale: float) -> None:
        self.store = store
        self.node = node
        self.faults = faults
        self.time_scale = time_scale
        self.tasks: dict[str, TaskRecord] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        loaded = store.load_tasks()
        for rec in loaded:
            if rec.status == "running":  # the simulator died under it
                rec.status, rec.exitstatus = "stopped", "unexpected status"
                rec.endtime = rec.endtime or rec.starttime
                rec.log.append("TASK ERROR: unexpected status")
                store.save_task(rec)
            self.tasks[rec.upid] = rec
        self._seq = itertools.count(max((t.seq for t in loaded), default=0) + 1)
        self._pid = itertools.count(os.getpid() * 16 % 0x7FFFFF + 1)

    async def sleep(self, seconds: float) -> None:
        if self.time_scale > 0 and seconds > 0:
            await asyncio.sleep(seconds * self.time_scale)

    def start(self, task_type: str, task_id: str, user: str, body: TaskBody,
              on_error: Callable[[], Awaitable[None]] | None = None,
              error_prefix: str = "") -> str:  # fmt: skip
        """Start ``body`` as a task and return its UPID at once.

        ``on_error`` runs (inside the task) when the body fails, before the
        task is marked stopped: e.g. a failed create removes its config.
        ``error_prefix`` starts the task's error, as PVE's ``die "clone
        failed: $err"`` around a task's work does.
        """
        pid = next(self._pid)
        now = int(time.time())
        upid = Upid(self.node, pid, int(time.monotonic() * 100) & 0xFFFFFFFF, now, task_type,
                    task_id, user)  # fmt: skip
        record = TaskRecord(upid=str(upid), node=self.node, pid=pid, pstart=upid.pstart,
                            starttime=now, type=task_type, id=task_id, user=user,
                            seq=next(self._seq))  # fmt: skip
        self.tasks[record.upid] = record
        self.store.save_task(record)
        task = Task(record, self)
        self._running[record.upid] = asyncio.create_task(
            self._run(task, body, on_error, error_prefix)
        )
        return record.upid

    async def _run(self, task: Task, body: TaskBody,
                   on_error: Callable[[], Awaitable[None]] | None,
                   error_prefix: str = "") -> None:  # fmt: skip
        rec = task.record
        fault = self.faults.take_task(rec.type, rec.id)
        error: str | None = None
        try:
            if fault and fault.delay:
                await asyncio.sleep(fault.delay)
            await body(task)
            for i in range(fault.warnings if fault else 0):
                task.warn(f"injected warning {i + 1} (pvesim)")
            if fault and fault.error:
                raise TaskFailed(fault.error)
        except TaskFailed as exc:
            error = str(exc)
        except asyncio.CancelledError:
            error = "received interrupt"
        except Exception as exc:  # a bug or a host failure: report it as PVE would
            log.exception("task %s failed", rec.upid)
            error = str(exc) or exc.__class__.__name__
        if error is not None and on_error is not None:
            try:
                await on_error()
            except Exception:
                log.exception("cleanup after failed task %s failed", rec.upid)
        rec.status = "stopped"
        rec.endtime = int(time.time())
        if error is not None:
            error = task_error_text(error_prefix + (error if error.strip() else "unknown error"))
            rec.exitstatus = error
            rec.log.append(f"TASK ERROR: {error}")
        elif task.warnings:
            rec.exitstatus = f"WARNINGS: {task.warnings}"
            rec.log.append(f"TASK WARNINGS: {task.warnings}")
        else:
            rec.exitstatus = "OK"
            rec.log.append("TASK OK")
        self.store.save_task(rec)
        self._running.pop(rec.upid, None)

    def stop(self, upid: str) -> bool:
        running = self._running.get(upid)
        if running is None:
            return False
        running.cancel()
        return True

    async def wait(self, upid: str) -> TaskRecord:
        running = self._running.get(upid)
        if running is not None:
            await asyncio.shield(running)
        return self.tasks[upid]

    async def shutdown(self) -> None:
        for running in list(self._running.values()):
            running.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)


def task_error_text(err: str) -> str:
    """PVE::RESTEnvironment::fork_worker: ``chomp $err; $err =~ s/\\n/ /mg``
    - an error of several lines is one line, its lines joined by spaces, in
    both the ``TASK ERROR:`` log line and the exit status."""
    return err.removesuffix("\n").replace("\n", " ")


def dump_log(lines: list[str], start: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """PVE::Tools::dump_logfile as read_task_log calls it: lines numbered
    from 1, the first ``start`` skipped, then ``limit`` of them - all of them
    for ``limit=0`` (``read_until_end``).  The count (the ``total``) is every
    line of the log; a ``start`` past the end gives no lines; an empty log
    reads as one ``no content`` line."""
    out: list[dict[str, Any]] = []
    read_until_end = limit == 0
    count = 0
    for text in lines:
        count += 1
        if count - 1 < start:
            continue
        if not read_until_end:
            if limit <= 0:
                continue
            limit -= 1
        out.append({"n": count, "t": text})
    if not count:  # "HACK: ExtJS store.guaranteeRange() does not like empty array"
        count = 1
        out.append({"n": 1, "t": "no content"})
    return count, out


def task_fields(rec: TaskRecord) -> dict[str, Any]:
    """The UPID's fields as PVE::Tools::upid_decode gives them, with
    PVE::API2::Tasks' ``$convert_token_task``: a token's task has ``user``
    and ``tokenid`` apart (``root@pam`` and ``name`` for ``root@pam!name``)."""
    out: dict[str, Any] = {"upid": rec.upid, "node": rec.node, "pid": rec.pid,
                           "pstart": rec.pstart, "starttime": rec.starttime, "type": rec.type,
                           "id": rec.id, "user": rec.user}  # fmt: skip
    split = split_tokenid(rec.user)
    if split is not None:
        out["user"], out["tokenid"] = split
    return out


def task_status(rec: TaskRecord) -> dict[str, Any]:
    """PVE::API2::Tasks read_task_status: the UPID's fields, ``status``
    (running/stopped) and, once stopped, ``exitstatus`` (no endtime)."""
    out = task_fields(rec)
    out["status"] = rec.status
    if rec.status == "stopped":
        out["exitstatus"] = rec.exitstatus
    return out


def _status_type(status: str | None) -> str:
    """PVE::UPID::normalize_status_type."""
    if not status:
        return "unknown"
    if status == "OK":
        return "ok"
    if re.fullmatch(r"WARNINGS: \d+", status):
        return "warning"
    if status == "unexpected status":
        return "unknown"
    return "error"


def list_tasks(
    records: list[TaskRecord], params: dict[str, Any]
) -> tuple[int, list[dict[str, Any]]]:
    """PVE::API2::Tasks node_tasks: the active tasks (``source`` active or
    all; status ``RUNNING``), then the archive newest first, filtered; the
    count (the ``total``) is every task the filters let through, of which
    ``start`` are skipped and ``limit`` listed (``limit=0``: none).
    ``errors`` drops only the OK ones (warnings and unknown stay); a
    ``statusfilter`` (without ``errors``) keeps the status types it lists;
    ``userfilter`` is a case-insensitive substring of the user (a token's
    user part)."""
    start, limit = int(params.get("start") or 0), int(params.get("limit", 50))
    source = params.get("source") or "archive"
    types = {"ok": True, "warning": True, "error": True, "unknown": True}
    if params.get("statusfilter") is not None and not params.get("errors"):
        types = dict.fromkeys(types, False)
        for word in re.split(r"[,;\s]+", str(params["statusfilter"])):
            if word:
                types[word.lower()] = True
    elif params.get("errors"):
        types["ok"] = False
    userfilter = str(params.get("userfilter") or "").lower()
    since, until = params.get("since"), params.get("until")
    count = 0
    out: list[dict[str, Any]] = []

    def take(entry: dict[str, Any]) -> bool:
        nonlocal count, limit
        if (
            (userfilter and userfilter not in entry["user"].lower())
            or (params.get("typefilter") and entry["type"] != params["typefilter"])
            or (params.get("vmid") and entry["id"] != str(params["vmid"]))
            or (since is not None and entry["starttime"] < int(since))
            or (until is not None and entry["starttime"] > int(until))
            or not types.get(_status_type(entry.get("status")))
        ):
            return False
        count += 1
        if count - 1 < start or limit <= 0:
            return False
        out.append(entry)
        limit -= 1
        return True

    newest_first = list(reversed(records))
    if source in ("active", "all"):
        for rec in newest_first:
            if rec.status == "running":
                # read_active_workers' entries carry ``saved``; a running one
                # has no status, so node_tasks gives it 'RUNNING'
                entry = task_fields(rec)
                entry["saved"] = "0"
                if take(entry):
                    entry["status"] = "RUNNING"
    if source != "active":
        for rec in newest_first:
            if rec.status == "stopped":
                entry = task_fields(rec)
                entry["endtime"], entry["status"] = rec.endtime, rec.exitstatus
                take(entry)
    return count, out

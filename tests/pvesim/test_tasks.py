"""Task logs, lists and status as PVE's code gives them: pure logic, without
a running simulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pvesim.faults import Faults
from pvesim.state import StateStore, TaskRecord
from pvesim.tasks import Task, TaskFailed, TaskManager, dump_log, list_tasks, task_status
from pvesim.upid import parse_upid, split_tokenid

LINES = ["one", "two", "three"]


@pytest.mark.parametrize(
    ("start", "limit", "numbers"),
    [
        (0, 50, [1, 2, 3]),  # the default limit
        (0, 0, [1, 2, 3]),  # limit 0: read_until_end
        (0, 2, [1, 2]),
        (1, 1, [2]),
        (2, 0, [3]),
        (3, 5, []),  # start at the end: nothing, not "no content"
        (9, 0, []),
    ],
)
def test_log_pages_as_dump_logfile(start: int, limit: int, numbers: list[int]) -> None:
    """PVE::Tools::dump_logfile_by_filehandle (read_task_log's reader): ``next
    if $count++ < $start``, then ``$limit`` lines unless ``read_until_end``
    (``$limit == 0``); the count - the ``total`` - is every line."""
    total, lines = dump_log(LINES, start, limit)
    assert total == 3
    assert [e["n"] for e in lines] == numbers
    assert [e["t"] for e in lines] == [LINES[n - 1] for n in numbers]


@pytest.mark.parametrize(("start", "limit"), [(0, 50), (0, 0), (4, 1)])
def test_an_empty_log_reads_as_no_content(start: int, limit: int) -> None:
    """dump_logfile_by_filehandle's "HACK: ExtJS store.guaranteeRange()":
    an empty file is one ``no content`` line numbered 1, whatever ``start``."""
    assert dump_log([], start, limit) == (1, [{"n": 1, "t": "no content"}])


@pytest.mark.parametrize(
    ("user", "split"),
    [
        ("root@pam!pvesim", ("root@pam", "pvesim")),
        ("user@some.realm!tok-1_x", ("user@some.realm", "tok-1_x")),
        ("root@pam", None),
        ("root@pam!x", None),  # a token name is a realm_regex: two characters at least
    ],
)
def test_split_tokenid(user: str, split: tuple[str, str] | None) -> None:
    """PVE::AccessControl::split_tokenid with $token_full_regex."""
    assert split_tokenid(user) == split


def _record(seq: int, user: str, status: str = "stopped", exitstatus: str | None = "OK",
            task_type: str = "vzstart", vmid: str = "100") -> TaskRecord:  # fmt: skip
    upid = f"UPID:pve:0000000{seq}:00000001:6000000{seq}:{task_type}:{vmid}:{user}:"
    return TaskRecord(upid=upid, node="pve", pid=seq, pstart=1, starttime=0x60000000 + seq,
                      type=task_type, id=vmid, user=user, status=status,
                      exitstatus=exitstatus if status == "stopped" else None,
                      endtime=0x60000000 + seq + 1 if status == "stopped" else None, seq=seq)  # fmt: skip


def test_a_tokens_task_shows_user_and_tokenid_apart() -> None:
    """PVE::API2::Tasks read_task_status and node_tasks: ``$convert_token_task``
    splits the UPID's ``root@pam!name`` into ``user`` and ``tokenid``; a
    user's own task has no tokenid.  read_task_status has no endtime."""
    token = _record(1, "root@pam!pvesim")
    status = task_status(token)
    assert (status["user"], status["tokenid"]) == ("root@pam", "pvesim")
    assert status["status"] == "stopped" and status["exitstatus"] == "OK"
    assert "endtime" not in status
    assert set(status) == {"upid", "node", "pid", "pstart", "starttime", "type", "id", "user",
                           "tokenid", "status", "exitstatus"}  # fmt: skip
    _, entries = list_tasks([token, _record(2, "root@pam")], {})
    assert [(e["user"], e.get("tokenid")) for e in entries] == [
        ("root@pam", None), ("root@pam", "pvesim")]  # fmt: skip
    assert entries[1]["endtime"] == token.endtime and entries[1]["status"] == "OK"
    assert parse_upid(entries[1]["upid"]).user == "root@pam!pvesim"  # the UPID is unchanged


def test_task_list_paging_filters_and_total() -> None:
    """PVE::API2::Tasks node_tasks: the archive newest first; ``total`` counts
    every task the filters let through (``$count++`` before start and
    limit); ``limit=0`` lists none; ``errors`` drops only the OK ones;
    ``userfilter`` is a case-insensitive match on the user part."""
    recs = [_record(1, "root@pam", exitstatus="OK"),
            _record(2, "root@pam!pvesim", exitstatus="WARNINGS: 2"),
            _record(3, "root@pam", exitstatus="boom", task_type="vzcreate", vmid="101"),
            _record(4, "root@pam", status="running")]  # fmt: skip
    total, entries = list_tasks(recs, {})
    assert total == 3 and [e["pid"] for e in entries] == [3, 2, 1]
    assert list_tasks(recs, {"limit": 0}) == (3, [])
    total, entries = list_tasks(recs, {"start": 1, "limit": 1})
    assert total == 3 and [e["pid"] for e in entries] == [2]
    total, entries = list_tasks(recs, {"errors": 1})
    assert total == 2 and [e["pid"] for e in entries] == [3, 2]
    assert [e["pid"] for e in list_tasks(recs, {"statusfilter": "ok,error"})[1]] == [3, 1]
    assert [e["pid"] for e in list_tasks(recs, {"vmid": 101})[1]] == [3]
    assert [e["pid"] for e in list_tasks(recs, {"typefilter": "vzstart"})[1]] == [2, 1]
    assert [e["pid"] for e in list_tasks(recs, {"userfilter": "ROOT@PAM"})[1]] == [3, 2, 1]
    assert list_tasks(recs, {"userfilter": "pvesim"}) == (0, [])  # the token is not the user


def test_active_tasks_read_running() -> None:
    """node_tasks with ``source`` active or all: a task of the active list
    without a status reads ``RUNNING`` (and carries read_active_workers'
    ``saved``), before the archive's."""
    recs = [_record(1, "root@pam"), _record(2, "root@pam", status="running")]
    total, entries = list_tasks(recs, {"source": "active"})
    assert total == 1 and entries[0]["status"] == "RUNNING" and entries[0]["saved"] == "0"
    assert "endtime" not in entries[0]
    total, entries = list_tasks(recs, {"source": "all"})
    assert total == 2 and [e["status"] for e in entries] == ["RUNNING", "OK"]


def test_an_error_of_several_lines_is_joined_with_spaces(tmp_path: Path) -> None:
    """PVE::RESTEnvironment::fork_worker: ``chomp $err; $err =~ s/\\n/ /mg``,
    then ``TASK ERROR: $err`` - one line in the log and the exit status."""

    async def run() -> TaskRecord:
        manager = TaskManager(StateStore(tmp_path), "pve", Faults(), 0)

        async def body(task: Task) -> None:
            task.log("working")
            raise TaskFailed("first line\nsecond line\n")

        upid = manager.start("vzstart", "100", "root@pam", body, error_prefix="start failed: ")
        return await manager.wait(upid)

    rec = asyncio.run(run())
    assert rec.exitstatus == "start failed: first line second line"
    assert rec.log == ["working", "TASK ERROR: start failed: first line second line"]

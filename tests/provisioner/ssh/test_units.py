"""The SSH layer's pure parts: line splitting, backoff maths, file specs,
backup names, the upload plan and the remote probe's parsing.  No sshd."""

from __future__ import annotations

import hashlib
import random
import shlex
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from provisioner.backoff import Backoff, sleep_before_next
from provisioner.errors import ConfigError
from provisioner.ssh.command import (
    command_label,
    kill_group_script,
    signal_exit_status,
    wrap_command,
)
from provisioner.ssh.files import (
    PROBE_SCRIPT,
    Action,
    FilePolicy,
    FileSpec,
    RemoteFile,
    RemoteKind,
    UploadStatus,
    backup_path,
    parent_directories,
    parse_owner,
    parse_probe,
    plan_file,
    probe_input,
)
from provisioner.ssh.lines import LineSplitter, OutputTail

# --- line splitting ---------------------------------------------------------


def split_all(chunks: list[bytes], **kwargs: int) -> list[str]:
    splitter = LineSplitter(**kwargs)
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    return lines + splitter.flush()


def test_whole_lines_in_one_chunk() -> None:
    assert split_all([b"one\ntwo\n"]) == ["one", "two"]


def test_a_line_split_across_chunks_comes_out_once_and_whole() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == []
    assert splitter.feed(b"lo wor") == []
    assert splitter.feed(b"ld\nnext") == ["hello world"]
    assert splitter.flush() == ["next"]


def test_crlf_is_one_line_ending_even_split_between_chunks() -> None:
    assert split_all([b"a\r\nb\r", b"\nc\r\n"]) == ["a", "b", "c"]


def test_a_lone_carriage_return_stays_in_the_line() -> None:
    assert split_all([b"50%\r100%\n"]) == ["50%\r100%"]


def test_no_trailing_newline_flushes_the_last_partial_line() -> None:
    assert split_all([b"first\nlast"]) == ["first", "last"]
    assert split_all([b"last\r"]) == ["last"]


def test_empty_lines_are_kept_and_nothing_is_invented_at_eof() -> None:
    assert split_all([b"\n\na\n"]) == ["", "", "a"]
    assert split_all([b""]) == []
    assert split_all([]) == []


def test_multibyte_utf8_split_across_chunks_decodes_whole() -> None:
    data = "grüße €uro 🚀\n".encode()
    # every possible cut, including inside each multibyte sequence
    for cut in range(1, len(data)):
        assert split_all([data[:cut], data[cut:]]) == ["grüße €uro 🚀"], cut
    assert split_all([bytes([b]) for b in data]) == ["grüße €uro 🚀"]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert split_all([b"bad \xff\xfe byte\n"]) == ["bad \ufffd\ufffd byte"]
    # a truncated sequence at EOF too
    assert split_all([b"cut \xe2\x82"]) == ["cut \ufffd"]


def test_an_endless_line_is_cut_at_the_limit() -> None:
    lines = split_all([b"x" * 10, b"x" * 15, b"\n"], max_line_chars=8)
    assert lines == ["x" * 8, "x" * 8, "x" * 8, "x"]
    assert "".join(lines) == "x" * 25


def test_many_chunks_keep_order() -> None:
    text = "".join(f"line {i}\n" for i in range(5000)).encode()
    rng = random.Random(7)
    chunks, at = [], 0
    while at < len(text):
        step = rng.randint(1, 300)
        chunks.append(text[at : at + step])
        at += step
    assert split_all(chunks) == [f"line {i}" for i in range(5000)]


def test_output_tail_keeps_the_last_lines_and_marks_stderr() -> None:
    tail = OutputTail(3)
    for i in range(5):
        tail.add("stdout" if i % 2 else "stderr", f"l{i}")
    assert [line.text for line in tail.lines()] == ["l2", "l3", "l4"]
    assert tail.texts() == ["[stderr] l2", "l3", "[stderr] l4"]


# --- backoff ----------------------------------------------------------------


def test_backoff_grows_exponentially_then_caps() -> None:
    policy = Backoff(base=0.5, factor=2, cap=3, jitter=0)
    assert [policy.delay(n, 0.0) for n in range(1, 7)] == [0.5, 1, 2, 3, 3, 3]


def test_backoff_jitter_stays_within_its_fraction() -> None:
    policy = Backoff(base=1, factor=2, cap=10, jitter=0.5)
    assert policy.delay(3, 0.0) == 4
    assert policy.delay(3, 0.999999) == pytest.approx(2, abs=1e-5)
    rng = random.Random(1)
    for failures in range(1, 40):
        delay = policy.delay(failures, rng.random())
        full = min(10, 2 ** (failures - 1))
        assert full / 2 <= delay <= full


def test_backoff_survives_huge_attempt_counts() -> None:
    assert Backoff(cap=5, jitter=0).delay(10_000, 0.0) == 5


def test_backoff_never_sleeps_past_the_deadline() -> None:
    policy = Backoff(base=1, cap=8, jitter=0)
    assert sleep_before_next(policy, 4, 0.0, remaining=100) == 8
    assert sleep_before_next(policy, 4, 0.0, remaining=1.5) == 1.5
    assert sleep_before_next(policy, 4, 0.0, remaining=-1) == 0


@pytest.mark.parametrize(
    "kwargs", [{"base": 0}, {"factor": 0.5}, {"base": 2, "cap": 1}, {"jitter": 1.5}]
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_backoff_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Backoff().delay(0, 0.5)
    with pytest.raises(ValueError):
        Backoff().delay(1, 1.0)


# --- file specs -------------------------------------------------------------


def test_a_valid_spec_and_its_defaults() -> None:
    spec = FileSpec("/etc/app/app.conf", b"x")
    assert (spec.mode, spec.owner, spec.policy) == (0o644, "root:root", FilePolicy.REPLACE)
    assert spec.directory == "/etc/app"
    FileSpec("/opt/bin/tool", Path("/nonexistent/is/fine/until/upload"), 0o4755, "0:0")
    FileSpec("/home/u/.ssh/authorized_keys", b"", 0o600, "www-data:www-data", FilePolicy.BACKUP)
    FileSpec("/x", b"", 0o644, "machine$:_grp.1")


@pytest.mark.parametrize(
    "path",
    ["etc/x", "", "/", "/etc/", "/etc/../x", "/etc/./x", "//etc/x", "/etc//x",
     "/etc/a\nb", "/etc/a\tb", "/etc/a\\b", "/etc/\x7f", "/" + "n" * 256],
)  # fmt: skip
def test_bad_target_paths_are_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="target path"):
        FileSpec(path, b"x")


@pytest.mark.parametrize(
    "owner", ["root", "root:", ":root", "a:b:c", "ro ot:root", "root:wh@eel", "-x:root",
              "1abc:root", "a" * 33 + ":root", ""],
)  # fmt: skip
def test_bad_owners_are_refused(owner: str) -> None:
    with pytest.raises(ConfigError, match="owner"):
        FileSpec("/etc/x", b"x", owner=owner)


def test_parse_owner_splits_names_and_ids() -> None:
    assert parse_owner("www-data:adm") == ("www-data", "adm")
    assert parse_owner("1000:1000") == ("1000", "1000")


@pytest.mark.parametrize("mode", [-1, 0o10000, True, "0644", 6.4])
def test_bad_modes_are_refused(mode: object) -> None:
    with pytest.raises(ConfigError, match="mode"):
        FileSpec("/etc/x", b"x", mode=mode)  # type: ignore[arg-type]


def test_content_must_be_bytes_or_a_path() -> None:
    with pytest.raises(ConfigError, match="bytes or a local Path"):
        FileSpec("/etc/x", "text is ambiguous")  # type: ignore[arg-type]


def test_policy_must_be_the_enum() -> None:
    with pytest.raises(ConfigError, match="policy"):
        FileSpec("/etc/x", b"x", policy="replace")  # type: ignore[arg-type]
    assert FilePolicy("backup") is FilePolicy.BACKUP


def test_backup_policy_needs_room_for_the_suffix() -> None:
    FileSpec("/" + "n" * 255, b"x")
    with pytest.raises(ConfigError, match="too long"):
        FileSpec("/" + "n" * 240, b"x", policy=FilePolicy.BACKUP)


# --- backup names -----------------------------------------------------------


def test_backup_names_carry_a_utc_timestamp() -> None:
    when = datetime(2026, 11, 23, 10, 32, 39, 999_000, tzinfo=UTC)
    assert (
        backup_path("/etc/nginx/nginx.conf", when) == "/etc/nginx/nginx.conf.bak-20261123T103239Z"
    )
    assert backup_path("/etc/x", when, 2) == "/etc/x.bak-20261123T103239Z-2"


def test_backup_names_convert_local_time_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    when = datetime(2026, 1, 1, 0, 30, tzinfo=cet)
    assert backup_path("/x", when) == "/x.bak-20251231T233000Z"
    assert backup_path("/x", datetime(2026, 1, 1, 0, 30)) == "/x.bak-20260101T003000Z"


def test_backup_names_sort_in_time_order() -> None:
    base = datetime(2026, 3, 9, 23, 59, 58, tzinfo=UTC)
    names = [backup_path("/x", base + timedelta(seconds=s)) for s in range(5)]
    assert names == sorted(names)


# --- the upload plan --------------------------------------------------------

SHA = "a" * 64
OTHER = "b" * 64


@pytest.mark.parametrize(
    ("policy", "remote", "action", "status"),
    [
        (FilePolicy.REPLACE, RemoteFile(RemoteKind.MISSING), Action.WRITE, UploadStatus.UPLOADED),
        (FilePolicy.DEFAULT, RemoteFile(RemoteKind.MISSING), Action.WRITE, UploadStatus.UPLOADED),
        (FilePolicy.BACKUP, RemoteFile(RemoteKind.MISSING), Action.WRITE, UploadStatus.UPLOADED),
        (FilePolicy.REPLACE, RemoteFile(RemoteKind.FILE, SHA), Action.SET_ATTRS, UploadStatus.SKIPPED_SAME),
        (FilePolicy.BACKUP, RemoteFile(RemoteKind.FILE, SHA), Action.SET_ATTRS, UploadStatus.SKIPPED_SAME),
        (FilePolicy.DEFAULT, RemoteFile(RemoteKind.FILE, SHA), Action.LEAVE, UploadStatus.SKIPPED_SAME),
        (FilePolicy.REPLACE, RemoteFile(RemoteKind.FILE, OTHER), Action.WRITE, UploadStatus.UPLOADED),
        (FilePolicy.DEFAULT, RemoteFile(RemoteKind.FILE, OTHER), Action.LEAVE, UploadStatus.SKIPPED_EXISTS),
        (FilePolicy.BACKUP, RemoteFile(RemoteKind.FILE, OTHER), Action.WRITE_WITH_BACKUP, UploadStatus.BACKED_UP),
        (FilePolicy.DEFAULT, RemoteFile(RemoteKind.DIRECTORY), Action.LEAVE, UploadStatus.SKIPPED_EXISTS),
        (FilePolicy.REPLACE, RemoteFile(RemoteKind.OTHER), Action.WRITE, UploadStatus.UPLOADED),
    ],
)  # fmt: skip
def test_plan_per_policy(
    policy: FilePolicy, remote: RemoteFile, action: Action, status: UploadStatus
) -> None:
    plan = plan_file(FileSpec("/etc/x", b"x", policy=policy), SHA, remote)
    assert (plan.action, plan.status) == (action, status)


def test_a_directory_in_the_way_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        plan_file(FileSpec("/etc/x", b"x"), SHA, RemoteFile(RemoteKind.DIRECTORY))


def test_status_strings_are_the_documented_ones() -> None:
    assert [s.value for s in UploadStatus] == [
        "uploaded", "skipped-same", "skipped-exists", "backed-up+uploaded",
    ]  # fmt: skip


def test_parent_directories_keeps_only_the_deepest() -> None:
    paths = ["/a/f", "/a/c/f", "/a-b/f", "/a/c/d/f", "/top", "/x/y/f", "/x/f"]
    assert parent_directories(paths) == ["/a/c/d", "/a-b", "/x/y"]
    assert parent_directories(["/etc/f"]) == ["/etc"]
    assert parent_directories(["/f"]) == []


# --- the remote probe -------------------------------------------------------


def test_probe_input_sections() -> None:
    assert probe_input(["/d1", "/d2"], ["root:root"], ["/d1/a", "/d2/b"]) == (
        "/d1\n/d2\n\nroot:root\n\n/d1/a\n/d2/b\n"
    )
    assert probe_input([], ["root:root"], ["/a"]) == "\nroot:root\n\n/a\n"


def test_parse_probe_reads_owners_hashes_and_odd_files() -> None:
    paths = ["/etc/a b", "/etc/missing", "/etc/dir", "/etc/fifo"]
    stdout = f"T gnu\nO 0 0 0\nO 1 33 4\n{SHA}  /etc/a b\n"
    answer = parse_probe(["root:root", "www-data:adm"], paths, stdout, "D /etc/dir\nX /etc/fifo\n")
    assert answer.owners == {"root:root": (0, 0), "www-data:adm": (33, 4)}
    assert answer.gnu_tar
    assert answer.files == {
        "/etc/a b": RemoteFile(RemoteKind.FILE, SHA),
        "/etc/missing": RemoteFile(RemoteKind.MISSING),
        "/etc/dir": RemoteFile(RemoteKind.DIRECTORY),
        "/etc/fifo": RemoteFile(RemoteKind.OTHER),
    }


def test_parse_probe_refuses_what_the_script_cannot_have_said() -> None:
    with pytest.raises(ValueError, match="unexpected"):
        parse_probe(["root:root"], ["/a"], "O 0 0 0\nsurprise\n", "")
    with pytest.raises(ValueError, match="owners"):
        parse_probe(["root:root", "a:b"], ["/a"], "O 0 0 0\n", "")


def run_probe(
    root: Path, dirs: list[str], owners: list[str], paths: list[str]
) -> subprocess.CompletedProcess[str]:
    """The probe script run by the local /bin/sh (dash on Debian, as in containers)."""
    return subprocess.run(
        ["/bin/sh", "-c", PROBE_SCRIPT], input=probe_input(dirs, owners, paths),
        capture_output=True, text=True, timeout=30, cwd=root,
    )  # fmt: skip


def test_probe_script_works_in_a_posix_shell(tmp_path: Path) -> None:
    (tmp_path / "same").write_bytes(b"hello\n")
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    (tmp_path / "odd\u2028näme").write_bytes(b"")
    paths = [
        str(tmp_path / n) for n in ("same", "sub dir", "link", "new/deep/file", "odd\u2028näme")
    ]
    done = run_probe(tmp_path, [str(tmp_path / "new/deep")], ["root:root", "0:65534"], paths)
    assert done.returncode == 0, done.stderr
    answer = parse_probe(["root:root", "0:65534"], paths, done.stdout, done.stderr)
    assert answer.owners == {"root:root": (0, 0), "0:65534": (0, 65534)}
    assert answer.files[paths[0]].sha256 == (
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    )
    assert [answer.files[p].kind for p in paths[1:]] == [
        RemoteKind.DIRECTORY, RemoteKind.OTHER, RemoteKind.MISSING, RemoteKind.FILE,
    ]  # fmt: skip
    assert answer.files[paths[4]].sha256 == hashlib.sha256(b"").hexdigest()
    assert (tmp_path / "new/deep").is_dir()


def test_probe_script_reports_an_unknown_owner(tmp_path: Path) -> None:
    done = run_probe(tmp_path, [], ["nosuchuser-xyz:root"], [str(tmp_path / "f")])
    assert done.returncode == 4
    assert "unknown user nosuchuser-xyz" in done.stderr


# --- command wrapping -------------------------------------------------------


def test_wrapped_command_reports_its_group_and_exports_env(tmp_path: Path) -> None:
    env = {"GREETING": 'it\'s a "test" $HOME', "LINES_": "one\ntwo\n", "EMPTY": "", "U": "ü"}
    wrapped = wrap_command("printf '%s|' \"$GREETING\" $'x' \"$LINES_\" \"$EMPTY\" \"$U\"; "
                           "echo; cat; exit 7", env)  # fmt: skip
    # The values travel on stdin, ahead of the command's own input.
    assert all(value not in wrapped.text for value in env.values() if value)
    done = subprocess.run(["bash", "-c", wrapped.text], capture_output=True,
                          input=wrapped.preamble + b"own input\n\x00\xff",
                          env={"SHELL": "/bin/bash", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 7
    assert (
        done.stdout == 'it\'s a "test" $HOME|x|one\ntwo\n||ü|\n'.encode() + b"own input\n\x00\xff"
    )
    first = done.stderr.decode().split("\n")[0]  # not splitlines(): \x1e is a line break to it
    assert first.startswith("\x1eprovisioner-pgid=") and first.split("=")[1].isdigit()


def test_wrapped_command_without_env_keeps_its_input_whole() -> None:
    wrapped = wrap_command('wc -c; echo "${_provisioner_env-unset}"', {})
    assert wrapped.preamble == b"0\n"
    done = subprocess.run(["sh", "-c", wrapped.text], capture_output=True,
                          input=wrapped.preamble + b"12345")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [b"5", b"unset"]


@pytest.mark.parametrize("name", ["1X", "A-B", "", "A B", "A=B"])
def test_invalid_env_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="environment"):
        wrap_command("true", {name: "v"})


def test_kill_script_targets_the_group() -> None:
    script = kill_group_script(4242, grace=1.0)
    assert "kill -TERM -- -4242" in script and "kill -KILL -- -4242" in script
    assert "-lt 10 " in script
    assert shlex.split(script)  # well-formed shell words


def test_labels_never_show_arguments() -> None:
    assert command_label("mysql -p's3cret' -e 'x'") == "command 'mysql'"
    assert command_label("   ") == "empty command"


def test_signal_exit_status_follows_the_shell_convention() -> None:
    assert signal_exit_status("KILL") == 137
    assert signal_exit_status("TERM") == 143
    assert signal_exit_status("NOPE") == 128

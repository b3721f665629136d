"""Files to deploy over SSH: their declaration, validation and the upload plan.

:class:`FileSpec` and :class:`FilePolicy` are the one description of a file
to put on a container: a template's ``[[files]]`` entry
(:class:`provisioner.templates.model.TemplateFile`) converts into a FileSpec
once rendered, the pipeline's scripts are FileSpecs too.

Pure: no asyncssh here.  :class:`provisioner.ssh.session.SshSession.upload` probes
the remote side with :data:`PROBE_SCRIPT` (one command for every file),
reads the answer with :func:`parse_probe`, decides per file with
:func:`plan_file` and then transfers only what is needed.
"""

from __future__ import annotations

import enum
import itertools
import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from provisioner.errors import ConfigError

# A user or group as useradd/groupadd accept it, or a numeric id.
_ID_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10}")
# Control characters and backslashes would break the line-based probe (and
# sha256sum escapes names containing them); no sane target path has them.
_BAD_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_NAME_MAX = 255  # bytes per path component on Linux file systems
BACKUP_STAMP_FORMAT: Final = "%Y%m%dT%H%M%SZ"
# ".bak-" + stamp + room for a "-NN" collision suffix
_BACKUP_SUFFIX_MAX = len(".bak-") + len("20260101T000000Z") + 3


class FilePolicy(enum.StrEnum):
    """What to do when the target file already exists with other content.

    Templates declare it per file (``policy = "backup"`` in ``template.toml``).
    """

    REPLACE = "replace"  # overwrite it
    DEFAULT = "default"  # leave it alone: the file is only a default
    # keep the old one as <path>.bak-<UTC stamp>[-N] (a hard link, see
    # backup_path), then overwrite
    BACKUP = "backup"


class UploadStatus(enum.StrEnum):
    """What :meth:`SshSession.upload` did with one file."""

    UPLOADED = "uploaded"
    SKIPPED_SAME = "skipped-same"  # the remote file already has this content
    SKIPPED_EXISTS = "skipped-exists"  # policy DEFAULT and a file is there
    BACKED_UP = "backed-up+uploaded"


@dataclass(frozen=True)
class FileSpec:
    """One file to put on a container.

    Attributes:
        path: absolute, normalised target path.
        content: the bytes to write, or a local file to read them from.
        mode: permission bits (e.g. ``0o640``; setuid/setgid/sticky allowed).
        owner: ``"user:group"``, names or numeric ids.
        policy: what to do with an existing, different file.

    Raises:
        ConfigError: on any invalid field (the message names the path).
    """

    path: str
    content: bytes | Path
    mode: int = 0o644
    owner: str = "root:root"
    policy: FilePolicy = FilePolicy.REPLACE

    def __post_init__(self) -> None:
        validate_target_path(self.path)
        if not isinstance(self.content, bytes | Path):
            raise ConfigError(
                f"{self.path}: content must be bytes or a local Path, not "
                f"{type(self.content).__name__}"
            )
        if isinstance(self.mode, bool) or not isinstance(self.mode, int):
            raise ConfigError(f"{self.path}: mode must be an int such as 0o644, not {self.mode!r}")
        if not 0 <= self.mode <= 0o7777:
            raise ConfigError(f"{self.path}: mode {self.mode:#o} is outside 0o0000-0o7777")
        parse_owner(self.owner, self.path)
        if not isinstance(self.policy, FilePolicy):
            raise ConfigError(f"{self.path}: policy must be a FilePolicy, not {self.policy!r}")
        name = posixpath.basename(self.path).encode()
        if self.policy is FilePolicy.BACKUP and len(name) + _BACKUP_SUFFIX_MAX > _NAME_MAX:
            raise ConfigError(f"{self.path}: file name too long to keep a timestamped backup")

    @property
    def directory(self) -> str:
        return posixpath.dirname(self.path)


def validate_target_path(path: str) -> None:
    """Check that a target path is absolute, normalised and printable.

    Raises:
        ConfigError: naming the path and the problem.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"target path {path!r} must be absolute")
    if _BAD_PATH_CHARS.search(path):
        raise ConfigError(f"target path {path!r} contains a control character or backslash")
    if path == "/" or path.endswith("/"):
        raise ConfigError(f"target path {path!r} names a directory, not a file")
    if posixpath.normpath(path) != path or path.startswith("//"):
        raise ConfigError(f"target path {path!r} is not normalised (no '..', '.', or '//')")
    if any(len(part.encode()) > _NAME_MAX for part in path.split("/")):
        raise ConfigError(f"target path {path!r} has a component longer than {_NAME_MAX} bytes")


def parse_owner(owner: str, path: str = "") -> tuple[str, str]:
    """Split ``"user:group"`` into its two parts.

    Raises:
        ConfigError: not exactly two valid names or numeric ids.
    """
    where = f"{path}: " if path else ""
    if not isinstance(owner, str) or owner.count(":") != 1:
        raise ConfigError(f"{where}owner {owner!r} must be 'user:group'")
    user, group = owner.split(":")
    for part in (user, group):
        if not _ID_NAME.fullmatch(part):
            raise ConfigError(f"{where}owner {owner!r}: {part!r} is not a valid user or group")
    return user, group


def backup_path(path: str, when: datetime, collision: int = 0) -> str:
    """The name the old file keeps: ``<path>.bak-20261123T103239Z``.

    Args:
        path: the target path.
        when: the moment of the upload (converted to UTC; naive means UTC).
        collision: 0 for the plain name, n > 0 for the n-th alternative when
            a backup of that second already exists (``...Z-1``).
    """
    utc = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    name = f"{path}.bak-{utc.strftime(BACKUP_STAMP_FORMAT)}"
    return f"{name}-{collision}" if collision else name


# --- the remote probe ------------------------------------------------------


class RemoteKind(enum.Enum):
    MISSING = "missing"
    FILE = "file"
    DIRECTORY = "directory"
    OTHER = "other"  # symlink to nowhere, fifo, socket, device


@dataclass(frozen=True)
class RemoteFile:
    kind: RemoteKind
    sha256: str | None = None


# Reads three blank-line-separated sections on stdin: directories to create,
# owners to resolve, target paths to checksum.  Answers "T gnu" if GNU tar is
# there, "O <index> <uid> <gid>" per owner, then sha256sum's lines on stdout;
# "D <path>"/"X <path>" on stderr for targets that exist but are no regular
# file.  One command, a handful of processes, whatever the number of files.
PROBE_SCRIPT: Final = r"""set -f
case $(tar --version 2>/dev/null) in *"GNU tar"*) echo "T gnu" ;; esac
set --
while IFS= read -r line && [ -n "$line" ]; do set -- "$@" "$line"; done
if [ $# -gt 0 ]; then mkdir -p -- "$@" || exit 3; fi
i=0
while IFS= read -r line && [ -n "$line" ]; do
  u=${line%%:*}; g=${line#*:}
  case $u in *[!0-9]*) uid=$(getent passwd "$u" | cut -d: -f3) ;; *) uid=$u ;; esac
  case $g in *[!0-9]*) gid=$(getent group "$g" | cut -d: -f3) ;; *) gid=$g ;; esac
  [ -n "$uid" ] || { printf 'unknown user %s\n' "$u" >&2; exit 4; }
  [ -n "$gid" ] || { printf 'unknown group %s\n' "$g" >&2; exit 4; }
  printf 'O %s %s %s\n' "$i" "$uid" "$gid"
  i=$((i+1))
done
while IFS= read -r p; do
  if [ -f "$p" ]; then printf '%s\0' "$p"
  elif [ -d "$p" ]; then printf 'D %s\n' "$p" >&2
  elif [ -e "$p" ] || [ -h "$p" ]; then printf 'X %s\n' "$p" >&2
  fi
done | xargs -0 -r sha256sum --
"""


def probe_input(directories: list[str], owners: list[str], paths: list[str]) -> str:
    """The stdin of :data:`PROBE_SCRIPT` (names are validated: no newlines)."""
    return "".join(
        "\n".join(section) + ("\n" if section else "") + "\n" for section in (directories, owners)
    ) + "".join(f"{p}\n" for p in paths)


@dataclass(frozen=True)
class ProbeAnswer:
    owners: dict[str, tuple[int, int]]  # "user:group" -> (uid, gid)
    files: dict[str, RemoteFile]
    gnu_tar: bool = False


def parse_probe(owners: list[str], paths: list[str], stdout: str, stderr: str) -> ProbeAnswer:
    """Read the answer of :data:`PROBE_SCRIPT` (after a zero exit status).

    Raises:
        ValueError: output that the script cannot have produced.
    """
    ids: dict[str, tuple[int, int]] = {}
    files = {p: RemoteFile(RemoteKind.MISSING) for p in paths}
    gnu_tar = False
    # split("\n"), not splitlines(): that also splits on \x85 and \u2028,
    # which a file name may contain.
    for line in stdout.split("\n"):
        if not line:
            continue
        if line == "T gnu":
            gnu_tar = True
        elif line.startswith("O "):
            _, index, uid, gid = line.split(" ")
            ids[owners[int(index)]] = (int(uid), int(gid))
        elif len(line) > 66 and line[64:66] == "  " and line[66:] in files:
            files[line[66:]] = RemoteFile(RemoteKind.FILE, line[:64])
        else:
            raise ValueError(f"unexpected probe output: {line[:200]!r}")
    for line in stderr.split("\n"):
        tag, _, path = line.partition(" ")
        if tag in ("D", "X") and path in files:
            kind = RemoteKind.DIRECTORY if tag == "D" else RemoteKind.OTHER
            files[path] = RemoteFile(kind)
    if set(ids) != set(owners):
        raise ValueError(f"probe resolved owners {sorted(ids)}, asked for {sorted(owners)}")
    return ProbeAnswer(ids, files, gnu_tar)


class Action(enum.Enum):
    WRITE = "write"  # new content via a temp file and a rename
    WRITE_WITH_BACKUP = "write-with-backup"
    SET_ATTRS = "set-attrs"  # content already right: converge mode and owner
    LEAVE = "leave"


@dataclass(frozen=True)
class FilePlan:
    action: Action
    status: UploadStatus


def plan_file(spec: FileSpec, local_sha256: str, remote: RemoteFile) -> FilePlan:
    """Decide what to do with one file.

    A file whose checksum matches is not sent again; with policy REPLACE or
    BACKUP its mode and owner are still brought to the declared ones, with
    DEFAULT an existing file is never touched.

    Raises:
        ConfigError: the target is a directory and the policy wants to write.
    """
    if remote.kind is RemoteKind.MISSING:
        return FilePlan(Action.WRITE, UploadStatus.UPLOADED)
    if remote.kind is RemoteKind.FILE and remote.sha256 == local_sha256:
        action = Action.LEAVE if spec.policy is FilePolicy.DEFAULT else Action.SET_ATTRS
        return FilePlan(action, UploadStatus.SKIPPED_SAME)
    if spec.policy is FilePolicy.DEFAULT:
        return FilePlan(Action.LEAVE, UploadStatus.SKIPPED_EXISTS)
    if remote.kind is RemoteKind.DIRECTORY:
        raise ConfigError(f"{spec.path} is a directory on the container; cannot put a file there")
    if spec.policy is FilePolicy.BACKUP:
        return FilePlan(Action.WRITE_WITH_BACKUP, UploadStatus.BACKED_UP)
    return FilePlan(Action.WRITE, UploadStatus.UPLOADED)


@dataclass(frozen=True)
class UploadResult:
    """The outcome for one :class:`FileSpec`.

    Attributes:
        path: the target path.
        status: what was done.
        sha256: hex checksum of the declared content.
        size: its size in bytes.
        backup: where the old file was kept (status BACKED_UP only).
    """

    path: str
    status: UploadStatus
    sha256: str
    size: int
    backup: str | None = None


def parent_directories(paths: list[str]) -> list[str]:
    """The parents to ``mkdir -p``: the deepest only, since -p makes the rest."""
    # Sorted by components, a directory's descendants follow it directly
    # ("/a", "/a/c", "/a-b"), which a plain string sort does not give.
    parents = sorted({posixpath.dirname(p) for p in paths} - {"/"}, key=lambda d: d.split("/"))
    return [d for d, after in itertools.pairwise([*parents, ""]) if not after.startswith(d + "/")]

"""What a loaded container template is: plain, immutable data.

The loader (:mod:`provisioner.templates.loader`) builds these from
``templates_lxc/<name>/``; nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.errors import ConfigError
from provisioner.ssh.files import FilePolicy, FileSpec
from provisioner.templates.mounts import MountPoint
from provisioner.templates.surface import Startup, features_pve

__all__ = [
    "HOOK_KINDS",
    "PACKAGE_KINDS",
    "Features",
    "HealthCheck",
    "HealthKind",
    "Hooks",
    "NetworkDefaults",
    "Packages",
    "Problem",
    "Resources",
    "Script",
    "Snapshot",
    "Template",
    "TemplateError",
    "TemplateFile",
    "Variable",
    "VariableType",
]

PACKAGE_KINDS = ("apt", "pip", "npm")
#: The data hooks a template may declare in ``[hooks]``, in the order they
#: are listed (docs/templates.md, "Data hooks", says when each runs).
HOOK_KINDS = ("clone", "export", "import", "rewrite", "anonymise")
VariableValue = str | int | bool


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a template, located as precisely as we can."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class TemplateError(ConfigError):
    """A template (or a tree of them) failed validation; carries every problem."""

    def __init__(self, problems: list[Problem], *, subject: str = "template") -> None:
        count = len(problems)
        lines = "\n".join(f"  {p}" for p in problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{subject} has {count} {noun}:\n{lines}")
        self.problems = problems


class VariableType(enum.StrEnum):
    STRING = "string"
    INT = "int"
    BOOL = "bool"
    CHOICE = "choice"
    PASSWORD = "password"


class HealthKind(enum.StrEnum):
    HTTP = "http"
    HTTPS = "https"
    TCP = "tcp"


@dataclass(frozen=True)
class Variable:
    """A typed, validated template variable.

    ``secret`` variables (all ``password`` ones) never have a default: when
    not given they are generated with ``length`` characters.  ``regenerate``
    (secret ones only): a clone of the container gets a new value.
    """

    name: str
    type: VariableType
    description: str = ""
    default: VariableValue | None = None
    required: bool = False
    secret: bool = False
    multiline: bool = False
    pattern: str | None = None
    min: int | None = None
    max: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    length: int = 24
    regenerate: bool = False

    @property
    def env_name(self) -> str:
        """The name scripts see it under: ``TPL_`` + the upper-cased name."""
        return f"TPL_{self.name.upper()}"


@dataclass(frozen=True)
class TemplateFile:
    """One ``[[files]]`` entry: ``source`` under ``files/`` to absolute ``target``.

    The declaration only; :meth:`to_spec` turns it, with its final content,
    into the :class:`~provisioner.ssh.files.FileSpec` the SSH layer uploads.
    """

    source: str
    source_path: Path
    target: str
    mode: int = 0o644
    owner: str = "root:root"
    policy: FilePolicy = FilePolicy.REPLACE
    template: bool = False

    def to_spec(self, content: bytes) -> FileSpec:
        """The file to upload, with ``content`` (rendered if ``template``).

        Raises:
            ConfigError: a field the SSH layer refuses (the message names the target).
        """
        return FileSpec(self.target, content, self.mode, self.owner, self.policy)


@dataclass(frozen=True)
class Script:
    """``scripts/NN-name.sh`` (or a hook, ``hooks/<name>.sh``) with its
    timeout in seconds."""

    name: str
    path: Path
    timeout: int

    @property
    def order(self) -> int:
        """The NN of ``scripts/NN-name.sh`` (hooks have none)."""
        return int(self.name.split("-", 1)[0])


@dataclass(frozen=True)
class Hooks:
    """The data hooks of ``[hooks]``: scripts under ``hooks/`` that move and
    adapt the application's data between containers (sync, promote, clone).

    ``import_`` is the ``import`` hook (``import`` is a keyword).  A template
    is syncable when it has both ``export`` and ``import``; the loader
    refuses one without the other.
    """

    clone: Script | None = None
    export: Script | None = None
    import_: Script | None = None
    rewrite: Script | None = None
    anonymise: Script | None = None

    @property
    def syncable(self) -> bool:
        """Whether data can be piped into a container of this template."""
        return self.export is not None and self.import_ is not None

    def get(self, kind: str) -> Script | None:
        """The hook of ``kind`` (one of :data:`HOOK_KINDS`), None if not declared.

        Raises:
            ValueError: ``kind`` is not a hook kind.
        """
        if kind not in HOOK_KINDS:
            raise ValueError(f"no hook kind {kind!r} (kinds: {', '.join(HOOK_KINDS)})")
        script: Script | None = getattr(self, "import_" if kind == "import" else kind)
        return script

    def declared(self) -> dict[str, Script]:
        """The declared hooks by kind, in :data:`HOOK_KINDS` order."""
        return {kind: script for kind in HOOK_KINDS if (script := self.get(kind)) is not None}


@dataclass(frozen=True)
class Resources:
    cores: int = 1
    memory: int = 512  # MiB
    swap: int = 512  # MiB
    disk: int = 4  # GiB


@dataclass(frozen=True)
class Features:
    nesting: bool = False
    keyctl: bool = False
    fuse: bool = False
    mknod: bool = False

    def as_pve(self) -> str | None:
        """PVE's ``features`` property string of the enabled flags, or None."""
        return features_pve(vars(self), {})


@dataclass(frozen=True)
class NetworkDefaults:
    """``[network]``: defaults of the container's network a request may override.

    Attributes:
        ip6: net0's IPv6: None (none), ``auto`` (SLAAC), ``dhcp`` (a static
            address is the request's: a template is shared).
        firewall: PVE's firewall flag on net0.
        nameserver, searchdomain: DNS (space-separated); None: the node's.
    """

    ip6: str | None = None
    firewall: bool = False
    nameserver: str | None = None
    searchdomain: str | None = None


@dataclass(frozen=True)
class Packages:
    """Packages by kind, in file order (files sorted by name).

    ``pip_venv``: if set, pip packages go into a virtualenv at that path
    (Debian 12's system Python refuses global pip installs, PEP 668).
    """

    apt: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    npm: tuple[str, ...] = ()
    pip_venv: str | None = None

    def __bool__(self) -> bool:
        return bool(self.apt or self.pip or self.npm)


@dataclass(frozen=True)
class Snapshot:
    """A baseline snapshot taken after provisioning."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class HealthCheck:
    """How an end-to-end test (or the finalize phase) knows the service is up.

    ``http``: GET ``http://<ip>:<port><path>`` answers ``expect_status`` and
    (if set) its body contains ``contains``; ``https``: the same over TLS,
    the certificate not verified (a container's own, self-signed: the check
    says the service answers, not who it is); ``tcp``: the port accepts.
    """

    kind: HealthKind
    port: int
    path: str = "/"
    expect_status: int = 200
    contains: str | None = None
    timeout: int = 60


@dataclass(frozen=True)
class Template:
    """A validated template from ``templates_lxc/<name>/``."""

    name: str
    path: Path
    description: str
    ostemplate: str
    tags: tuple[str, ...] = ()
    unprivileged: bool = True
    resources: Resources = field(default_factory=Resources)
    features: Features = field(default_factory=Features)
    network: NetworkDefaults = field(default_factory=NetworkDefaults)
    mounts: tuple[MountPoint, ...] = ()
    pool: str | None = None
    onboot: bool | None = None
    startup: Startup | None = None
    variables: Mapping[str, Variable] = field(default_factory=dict)
    files: tuple[TemplateFile, ...] = ()
    scripts: tuple[Script, ...] = ()
    script_timeout: int = 600
    packages: Packages = field(default_factory=Packages)
    snapshot: Snapshot | None = None
    health: HealthCheck | None = None
    hooks: Hooks = field(default_factory=Hooks)

    @property
    def secret_names(self) -> frozenset[str]:
        """Names of the variables whose values must never be logged."""
        return frozenset(v.name for v in self.variables.values() if v.secret)

    def summary(self) -> dict[str, object]:
        """A JSON-friendly description for listings (no secret values)."""
        return {
            "name": self.name,
            "description": self.description,
            "tags": list(self.tags),
            "ostemplate": self.ostemplate,
            "unprivileged": self.unprivileged,
            "resources": vars(self.resources).copy(),
            "features": vars(self.features).copy(),
            "variables": [
                {
                    "name": v.name,
                    "type": str(v.type),
                    "description": v.description,
                    "required": v.required,
                    "secret": v.secret,
                    "default": v.default,
                    "choices": list(v.choices),
                    "regenerate": v.regenerate,
                }
                for v in self.variables.values()
            ],
            "scripts": [s.name for s in self.scripts],
            "hooks": {kind: s.name for kind, s in self.hooks.declared().items()},
            "snapshot": self.snapshot.name if self.snapshot else None,
            "health": (
                {"kind": str(self.health.kind), "port": self.health.port, "path": self.health.path}
                if self.health
                else None
            ),
        }

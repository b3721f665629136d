"""Validating the tables of ``template.toml``: resources, features,
variables, files, snapshot and health check.

Each reader returns the typed value and records problems on the report; it
never raises for a bad template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provisioner.errors import ConfigError
from provisioner.ssh.files import FilePolicy
from provisioner.templates import checks
from provisioner.templates.model import (
    Features,
    HealthCheck,
    HealthKind,
    NetworkDefaults,
    Resources,
    Snapshot,
    TemplateFile,
    Variable,
    VariableType,
)
from provisioner.templates.mounts import MAX_MOUNTS, MountPoint, check_mount_paths
from provisioner.templates.render import check_jinja_source
from provisioner.templates.report import TEMPLATE_FILE, TemplateReport
from provisioner.templates.surface import (
    FEATURE_NAMES,
    Startup,
    check_nameserver,
    check_pool,
    check_searchdomain,
)
from provisioner.templates.toml import KeyPath
from provisioner.templates.variables import check_value

__all__ = ["SectionReader"]

_RESOURCE_BOUNDS = {"cores": (1, 8192), "memory": (16, None), "swap": (0, None), "disk": (1, None)}
_FEATURES = FEATURE_NAMES
_NETWORK_KEYS = ("ip6", "firewall", "nameserver", "searchdomain")
# regenerate is common so that a non-secret variable gets the message that
# explains it rather than "unknown key".
_VARIABLE_COMMON = ("type", "description", "default", "required", "regenerate")
_VARIABLE_KEYS: dict[VariableType, tuple[str, ...]] = {
    VariableType.STRING: ("pattern", "min_length", "max_length", "multiline", "secret", "length"),
    VariableType.PASSWORD: ("pattern", "min_length", "max_length", "secret", "length"),
    VariableType.INT: ("min", "max"),
    VariableType.BOOL: (),
    VariableType.CHOICE: ("choices",),
}
_FILE_KEYS = ("source", "target", "mode", "owner", "policy", "template")
_HEALTH_KEYS = ("type", "port", "path", "expect_status", "contains", "timeout")
_HTTP_ONLY = ("path", "expect_status", "contains")


class SectionReader(TemplateReport):
    """Readers for the tables of template.toml (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.declared_variables: set[str] = set()

    def read_resources(self, table: dict[str, Any]) -> Resources:
        self.unknown_keys(table, ("resources",), tuple(_RESOURCE_BOUNDS))
        defaults = Resources()
        values = {
            key: self.bounded_int(table, ("resources", key), getattr(defaults, key), low, high)
            for key, (low, high) in _RESOURCE_BOUNDS.items()
        }
        return Resources(**values)

    def read_features(self, table: dict[str, Any]) -> Features:
        self.unknown_keys(table, ("features",), _FEATURES)
        return Features(**{k: self.get(table, ("features", k), bool, False) for k in _FEATURES})

    # --- network, mount points, boot ----------------------------------------------------------

    def read_network(self, table: dict[str, Any]) -> NetworkDefaults:
        self.unknown_keys(table, ("network",), _NETWORK_KEYS)
        ip6 = self.get(table, ("network", "ip6"), str, "") or None
        if ip6 not in (None, "auto", "dhcp"):
            self.key(("network", "ip6"), f"network.ip6 must be 'auto' (SLAAC) or 'dhcp' (a static "
                     f"address belongs to a request), got {ip6!r}")  # fmt: skip
            ip6 = None
        dns = {}
        for key, check in (("nameserver", check_nameserver), ("searchdomain", check_searchdomain)):
            try:
                dns[key] = check(self.get(table, ("network", key), str, "") or None)
            except ConfigError as exc:
                self.key(("network", key), f"network.{exc.message}")
        return NetworkDefaults(ip6=ip6, firewall=self.get(table, ("network", "firewall"), bool,
                                                          False), **dns)  # fmt: skip

    def read_mounts(self, data: dict[str, Any]) -> tuple[MountPoint, ...]:
        entries = self.get(data, ("mounts",), list, [])
        if len(entries) > MAX_MOUNTS:
            self.key(("mounts",), f"mounts: at most {MAX_MOUNTS} volumes, got {len(entries)}")
        mounts: list[MountPoint] = []
        for i, entry in enumerate(entries[:MAX_MOUNTS]):
            try:
                mounts.append(MountPoint.from_dict(f"mounts[{i}]", entry))
            except ConfigError as exc:
                self.key(("mounts",), exc.message)
        try:
            check_mount_paths(mounts, ())
        except ConfigError as exc:
            self.key(("mounts",), exc.message)
        return tuple(mounts)

    def read_boot(self, data: dict[str, Any]) -> tuple[str | None, bool | None, Startup | None]:
        """``pool``, ``onboot`` and ``startup`` (top-level keys)."""
        pool, startup = None, None
        try:
            pool = check_pool(self.get(data, ("pool",), str, "") or None)
        except ConfigError as exc:
            self.key(("pool",), exc.message)
        try:
            startup = Startup.parse(self.get(data, ("startup",), str, "") or None)
        except ConfigError as exc:
            self.key(("startup",), exc.message)
        onboot = self.get(data, ("onboot",), bool, False) if "onboot" in data else None
        return pool, onboot, startup

    # --- variables -----------------------------------------------------------------------

    def read_variables(self, table: dict[str, Any]) -> dict[str, Variable]:
        variables: dict[str, Variable] = {}
        # Names count as declared even if their spec is broken: one mistake, one problem.
        self.declared_variables = set(table)
        for name, spec in table.items():
            path: KeyPath = ("variables", name)
            if not checks.is_variable_name(name):
                self.key(
                    path,
                    f"variable name {name!r} must be lowercase letters, digits and '_', starting with a letter",
                )
                continue
            if not isinstance(spec, dict):
                self.key(path, f"variables.{name} must be a table")
                continue
            var = self.read_variable(name, spec, path)
            if var is not None:
                variables[name] = var
        return variables

    def read_variable(self, name: str, spec: dict[str, Any], path: KeyPath) -> Variable | None:
        type_text = self.require(spec, (*path, "type"), str, "")
        try:
            vtype = VariableType(type_text)
        except ValueError:
            if type_text:
                allowed = ", ".join(t.value for t in VariableType)
                self.key(
                    (*path, "type"),
                    f"variables.{name}.type must be one of {allowed}, got {type_text!r}",
                )
            return None
        self.unknown_keys(spec, path, _VARIABLE_COMMON + _VARIABLE_KEYS[vtype])
        secret = self.get(spec, (*path, "secret"), bool, vtype is VariableType.PASSWORD)
        if vtype is VariableType.PASSWORD and not secret:
            self.key((*path, "secret"), f"variables.{name}: a password is always secret")
            secret = True
        ints = {
            k: self.opt(spec, (*path, k), int) for k in ("min", "max", "min_length", "max_length")
        }
        choices = self.read_choices(spec, path, vtype)
        var = Variable(
            name=name,
            type=vtype,
            description=self.get(spec, (*path, "description"), str, ""),
            required=self.get(spec, (*path, "required"), bool, False),
            secret=secret,
            multiline=self.get(spec, (*path, "multiline"), bool, False),
            pattern=self.read_pattern(spec, path),
            choices=choices,
            length=self.bounded_int(spec, (*path, "length"), 24, 8, 256),
            regenerate=self.read_regenerate(spec, path, secret),
            **ints,
        )
        for low, high in (("min", "max"), ("min_length", "max_length")):
            lo, hi = ints[low], ints[high]
            if lo is not None and hi is not None and lo > hi:
                self.key(
                    (*path, low), f"variables.{name}.{low} ({lo}) is greater than {high} ({hi})"
                )
        if secret and not (var.min_length or 0) <= var.length <= (var.max_length or var.length):
            self.key(
                (*path, "length"),
                f"variables.{name}.length ({var.length}) is outside min_length/max_length",
            )
        return self.read_default(var, spec, path)

    def read_regenerate(self, spec: dict[str, Any], path: KeyPath, secret: bool) -> bool:
        regenerate = self.get(spec, (*path, "regenerate"), bool, False)
        if regenerate and not secret:
            self.key(
                (*path, "regenerate"),
                f"{self.label(path)}.regenerate only applies to secret variables "
                '(type = "password" or secret = true): a clone gets a new value of a secret',
            )
            return False
        return regenerate

    def read_choices(
        self, spec: dict[str, Any], path: KeyPath, vtype: VariableType
    ) -> tuple[str, ...]:
        if vtype is not VariableType.CHOICE:
            return ()
        choices = self.require(spec, (*path, "choices"), list, [])
        if (
            not choices
            or not all(isinstance(c, str) for c in choices)
            or len(set(choices)) != len(choices)
        ):
            self.key(
                (*path, "choices"),
                f"{self.label(path)}.choices must be a non-empty list of distinct strings",
            )
            return tuple(c for c in choices if isinstance(c, str))
        return tuple(choices)

    def read_pattern(self, spec: dict[str, Any], path: KeyPath) -> str | None:
        pattern = self.opt(spec, (*path, "pattern"), str)
        if pattern is None:
            return None
        try:
            re.compile(pattern)
        except re.error as exc:
            self.key(
                (*path, "pattern"),
                f"{self.label(path)}.pattern is not a valid regular expression: {exc}",
            )
            return None
        return pattern

    def read_default(self, var: Variable, spec: dict[str, Any], path: KeyPath) -> Variable:
        where = f"variables.{var.name}"
        if "default" not in spec:
            if not (var.required or var.secret):
                self.key(path, f"{where} needs a default, required = true or secret = true")
            return var
        default = spec["default"]
        if var.secret:
            self.key(
                (*path, "default"),
                f"{where} is secret and cannot have a default (it is generated when not given)",
            )
            return var
        if var.required:
            self.key((*path, "default"), f"{where} has a default, so it cannot be required")
        problem = check_value(var, default)
        if problem:
            self.key((*path, "default"), f"{where}.default {problem}")
            return var
        return Variable(**{**vars(var), "default": default})

    # --- files ---------------------------------------------------------------------------

    def read_files(
        self, entries: list[Any], variables: Mapping[str, Variable]
    ) -> tuple[TemplateFile, ...]:
        files_dir = self.dir / "files"
        specs: list[TemplateFile] = []
        targets: dict[str, int] = {}
        for i, entry in enumerate(entries):
            path: KeyPath = ("files", i)
            if not isinstance(entry, dict):
                self.key(path, f"files[{i}] must be a table ([[files]])")
                continue
            self.unknown_keys(entry, path, _FILE_KEYS)
            spec = self.read_file_entry(i, entry, files_dir, path)
            if spec is None:
                continue
            if spec.target in targets:
                self.key(
                    (*path, "target"),
                    f"files[{i}].target {spec.target!r} is already the target of files[{targets[spec.target]}]",
                )
            targets.setdefault(spec.target, i)
            if spec.template:
                self.check_jinja(spec, self.declared_variables | set(variables))
            specs.append(spec)
        self.undeclared_files(files_dir, {s.source for s in specs} | _declared_sources(entries))
        return tuple(specs)

    def read_file_entry(
        self, i: int, entry: dict[str, Any], files_dir: Path, path: KeyPath
    ) -> TemplateFile | None:
        ok = True
        source = self.require(entry, (*path, "source"), str, "")
        target = self.require(entry, (*path, "target"), str, "")
        if source:
            why = checks.check_relative_source(source)
            if why:
                self.key((*path, "source"), f"files[{i}].source {why}, got {source!r}")
                ok = False
            elif not _inside(files_dir, files_dir / source) or not (files_dir / source).is_file():
                self.key(
                    (*path, "source"), f"files[{i}].source {source!r} does not exist under files/"
                )
                ok = False
        if target:
            why = checks.check_absolute_path(target)
            if why:
                self.key((*path, "target"), f"files[{i}].target {why}, got {target!r}")
                ok = False
        mode_text = self.get(entry, (*path, "mode"), str, "0644")
        mode = checks.parse_mode(mode_text)
        if mode is None:
            self.key(
                (*path, "mode"),
                f'files[{i}].mode must be an octal string like "0644", got {entry.get("mode")!r}',
            )
        owner = self.get(entry, (*path, "owner"), str, "root:root")
        if not checks.check_owner(owner):
            self.key(
                (*path, "owner"),
                f'files[{i}].owner must be "user:group" (names or numeric ids), got {owner!r}',
            )
        policy_text = self.get(entry, (*path, "policy"), str, "replace")
        try:
            policy = FilePolicy(policy_text)
        except ValueError:
            allowed = ", ".join(p.value for p in FilePolicy)
            self.key(
                (*path, "policy"),
                f"files[{i}].policy must be one of {allowed}, got {policy_text!r}",
            )
            policy = FilePolicy.REPLACE
        is_template = self.get(entry, (*path, "template"), bool, False)
        if not (ok and source and target):
            return None
        return TemplateFile(
            source=source,
            source_path=files_dir / source,
            target=target,
            mode=mode if mode is not None else 0o644,
            owner=owner,
            policy=policy,
            template=is_template,
        )

    def check_jinja(self, spec: TemplateFile, variables: set[str]) -> None:
        try:
            text = spec.source_path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            self.at(spec.source_path, None, "a template (template = true) must be UTF-8 text")
            return
        for line, message in check_jinja_source(text, variables):
            self.at(spec.source_path, line, message)

    def undeclared_files(self, files_dir: Path, declared: set[str]) -> None:
        if not files_dir.is_dir():
            return
        for path in sorted(p for p in files_dir.rglob("*") if p.is_file()):
            if path.relative_to(files_dir).as_posix() not in declared:
                self.at(path, None, f"not declared in {TEMPLATE_FILE} ([[files]] source)")

    def read_snapshot(self, data: dict[str, Any]) -> Snapshot | None:
        if "snapshot" not in data:
            return None
        table = self.table(data, ("snapshot",))
        self.unknown_keys(table, ("snapshot",), ("name", "description"))
        name = self.require(table, ("snapshot", "name"), str, "")
        if name and not checks.is_pve_configid(name):
            self.key(
                ("snapshot", "name"),
                f"snapshot.name must be a PVE snapshot name ([a-z][a-z0-9_-]+), got {name!r}",
            )
            return None
        description = self.get(table, ("snapshot", "description"), str, "")
        return Snapshot(name, description) if name else None

    def read_health(self, data: dict[str, Any]) -> HealthCheck | None:
        if "health" not in data:
            return None
        table = self.table(data, ("health",))
        self.unknown_keys(table, ("health",), _HEALTH_KEYS)
        kind_text = self.require(table, ("health", "type"), str, "")
        port = self.bounded_int(table, ("health", "port"), 0, 1, 65535)
        if "port" not in table:
            self.key(("health",), "health.port is required")
        try:
            kind = HealthKind(kind_text)
        except ValueError:
            if kind_text:
                self.key(
                    ("health", "type"), f"health.type must be http, https or tcp, got {kind_text!r}"
                )
            return None
        if kind is HealthKind.TCP:
            for key in _HTTP_ONLY:
                if key in table:
                    self.key(
                        ("health", key), f'health.{key} only applies to type = "http" or "https"'
                    )
        path = self.get(table, ("health", "path"), str, "/")
        if not path.startswith("/"):
            self.key(("health", "path"), f"health.path must start with '/', got {path!r}")
        check = HealthCheck(
            kind=kind,
            port=port,
            path=path,
            expect_status=self.bounded_int(table, ("health", "expect_status"), 200, 100, 599),
            contains=self.opt(table, ("health", "contains"), str),
            timeout=self.bounded_int(table, ("health", "timeout"), 60, 1, 3600),
        )
        return check if port else None


def _declared_sources(entries: list[Any]) -> set[str]:
    # Count even invalid entries as declared, so one mistake is reported once.
    return {
        e["source"] for e in entries if isinstance(e, dict) and isinstance(e.get("source"), str)
    }


def _inside(base: Path, path: Path) -> bool:
    # Symlinks must not lead out of files/.
    return path.resolve().is_relative_to(base.resolve())

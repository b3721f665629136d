"""What PVE's config file and create_vm make of a container's settings.

Pure helpers shared by ``node.py`` (create) and ``lxcops.py`` (config):
descriptions as the config file stores them, create_vm's defaults, and the
OS type PVE::LXC::Setup detects in the unpacked template.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pvesim.tasks import TaskFailed

# PVE::LXC::Setup's $plugins and $plugin_alias: os-release IDs it knows
_OS_PLUGINS = {"alpine", "archlinux", "centos", "debian", "devuan", "fedora", "gentoo",
               "openeuler", "opensuse", "ubuntu", "nixos", "unmanaged"}  # fmt: skip
_OS_ALIASES = {"opensuse-leap": "opensuse", "opensuse-tumbleweed": "opensuse",
               "opensuse-slowroll": "opensuse", "openEuler": "openeuler", "arch": "archlinux",
               "sles": "opensuse", "rocky": "centos", "almalinux": "centos"}  # fmt: skip
# autodetect_type's fallback checks, in its order
_OS_FILES = (("etc/debian_version", "debian"), ("etc/devuan_version", "devuan"),
             ("etc/SuSE-brand", "opensuse"), ("etc/SuSE-release", "opensuse"),
             ("etc/fedora-release", "fedora"), ("etc/centos-release", "centos"),
             ("etc/redhat-release", "centos"), ("etc/arch-release", "archlinux"),
             ("etc/alpine-release", "alpine"), ("etc/gentoo-release", "gentoo"),
             ("nix/store", "nixos"), ("etc/openEuler-release", "openeuler"))  # fmt: skip


def stored_description(text: str) -> str | None:
    """A description as ``GET .../config`` returns it after PVE stored it.

    PVE::LXC::Config::write_pct_config writes it as ``#`` comment lines
    (``split(/\\n/, $descr)``: Perl drops trailing empty fields) and
    parse_pct_config reads each line back as ``decode_text($1) . "\\n"``;
    encode_text/decode_text round-trip, so only the newlines change: every
    line ends with one, trailing empty lines are gone, and a description
    without lines is no description (None)."""
    lines = text.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    return "".join(f"{line}\n" for line in lines) or None


def store_description(config: dict[str, Any]) -> None:
    """``config``'s description as the config file keeps it (see
    :func:`stored_description`); an empty one is dropped."""
    if "description" in config:
        stored = stored_description(str(config["description"]))
        if stored is None:
            del config["description"]
        else:
            config["description"] = stored


def create_defaults(config: dict[str, Any], params: dict[str, Any]) -> None:
    """What create_vm writes before its task: ``unprivileged`` is extracted
    from the parameters (it is read-only for update_pct_config), defaults to
    1 without ``restore`` and is written only when true
    (``$conf->{unprivileged} = 1 if $unprivileged``); the description as the
    config file stores it."""
    config.pop("unprivileged", None)
    if params.get("unprivileged") is None or params["unprivileged"] in (True, 1, "1"):
        config["unprivileged"] = 1
    store_description(config)


def _os_release(root: Path) -> dict[str, str]:
    """PVE::LXC::Setup::get_ct_os_release: /etc/os-release, else
    /usr/lib/os-release, as KEY=value pairs (quotes removed)."""
    for name in ("etc/os-release", "usr/lib/os-release"):
        path = root / name
        if path.is_file():
            out = {}
            for line in path.read_text(errors="replace").splitlines():
                m = re.fullmatch(r"\s*([A-Z0-9_]+)=(['\"]?)(.*)\2\s*", line)
                if m:
                    out[m.group(1)] = m.group(3)
            return out
    return {}


def detect_ostype(root: Path, config: dict[str, Any]) -> list[str]:
    """PVE::LXC::Setup->new at create: the OS type is detected from the
    unpacked root (autodetect_type: os-release's ID, then marker files) and
    the plugin for it stores its own name as ``ostype`` (each
    PVE::LXC::Setup::*::new sets ``$conf->{ostype}``), over a given one,
    with a warning when they differ; a given ``unmanaged`` is kept.  Returns
    the task log's warnings."""
    given = config.get("ostype")
    if given == "unmanaged":
        return []
    warnings: list[str] = []
    ident = _os_release(root).get("ID")
    detected = None
    if ident:
        detected = ident if ident in _OS_PLUGINS else _OS_ALIASES.get(ident)
        if detected is None:
            warnings.append(f"unknown ID '{ident}' in /etc/os-release file, "
                            "trying fallback detection")  # fmt: skip
    if detected is None:
        lsb = root / "etc/lsb-release"
        if lsb.is_file() and re.search(r"^DISTRIB_ID=Ubuntu$",
                                       lsb.read_text(errors="replace"), re.M | re.I):  # fmt: skip
            detected = "ubuntu"
    if detected is None:
        detected = next((t for f, t in _OS_FILES if (root / f).exists()), None)
    if detected is None and (root / "etc/os-release").is_file():
        raise TaskFailed("unable to detect OS distribution")
    if detected is None:
        detected = "unmanaged"
        warnings.append("/etc/os-release file not found and autodetection failed, "
                        "falling back to 'unmanaged'")  # fmt: skip
    if given and given != detected:
        warnings.append(f"got unexpected ostype ({detected} != {given})")
    config["ostype"] = detected
    return warnings


def finish_create(config: dict[str, Any], vmid: int) -> None:
    """create_vm's "set some defaults" at the end of its task."""
    if not config.get("hostname"):
        config["hostname"] = f"CT{vmid}"
    if not config.get("memory"):
        config["memory"] = 512
    config.setdefault("swap", 512)

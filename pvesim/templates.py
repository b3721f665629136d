"""OS templates: building the Debian 12 standard template and caching its
unpacked root filesystem.

``pvesim build-template`` runs debootstrap against the host's own Debian
mirror (read from its apt sources), trims the result the way PVE's standard
templates are trimmed (no SSH host keys, an empty machine-id, empty apt
lists) and packs it as ``debian-12-standard_12.7-1_amd64.tar.zst``.  The
tarball is cached outside the repository (``/var/cache/pvesim`` or
``$PVESIM_CACHE_DIR``); every simulator serves it from its ``local`` storage
and from ``aplinfo``.

Creating a container never unpacks the tarball again: it is unpacked once
into ``bases/`` and each container's root is an overlay over that base.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pvesim.network import apt_mirror_hosts

log = logging.getLogger(__name__)

STANDARD_TEMPLATE = "debian-12-standard_12.7-1_amd64.tar.zst"
SUITE = "bookworm"
PACKAGES = (
    "systemd,systemd-sysv,dbus,openssh-server,ifupdown,isc-dhcp-client,python3,"
    "ca-certificates,locales,iproute2,iptables,procps,iputils-ping,curl,netbase,less,"
    "sudo,apt-utils,gnupg,nano"
)


def cache_dir() -> Path:
    """Where templates and unpacked bases live (outside the repository)."""
    return Path(os.environ.get("PVESIM_CACHE_DIR", "/var/cache/pvesim"))


def template_path(name: str = STANDARD_TEMPLATE) -> Path:
    return cache_dir() / "templates" / name


@dataclass(frozen=True)
class ApplianceInfo:
    """One entry of ``GET /nodes/{node}/aplinfo``."""

    template: str
    package: str
    version: str
    os: str
    headline: str
    sha512sum: str
    size: int

    def as_api(self) -> dict[str, object]:
        return {
            "template": self.template,
            "package": self.package,
            "version": self.version,
            "os": self.os,
            "type": "lxc",
            "section": "system",
            "headline": self.headline,
            "description": "Debian 12 Bookworm (standard), built by pvesim with debootstrap.",
            "source": "pvesim build-template",
            "location": f"file://{template_path(self.template)}",
            "infopage": "https://www.debian.org/",
            "maintainer": "pvesim",
            "architecture": "amd64",
            "sha512sum": self.sha512sum,
            "manageurl": "",
        }


def available_appliances() -> list[ApplianceInfo]:
    """The templates this machine's cache holds (what aplinfo can download)."""
    out = []
    for path in sorted((cache_dir() / "templates").glob("*.tar.zst")):
        package, _, rest = path.name.partition("_")
        version = rest.split("_")[0]
        out.append(
            ApplianceInfo(
                template=path.name,
                package=package,
                version=version,
                os="-".join(package.split("-")[:2]),
                headline="Debian 12 Bookworm (standard)",
                sha512sum=_cached_sha512(path),
                size=path.stat().st_size,
            )
        )
    return out


def _cached_sha512(path: Path) -> str:
    stamp = path.with_suffix(path.suffix + ".sha512")
    key = f"{path.stat().st_size}:{path.stat().st_mtime_ns}"
    if stamp.exists():
        saved_key, _, digest = stamp.read_text().partition(" ")
        if saved_key == key:
            return digest.strip()
    h = hashlib.sha512()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    stamp.write_text(f"{key} {h.hexdigest()}\n")
    return h.hexdigest()


def host_mirror() -> str:
    """The Debian mirror URL the host's apt uses."""
    for host in apt_mirror_hosts():
        if "security" not in host:
            return f"http://{host}/debian"
    return "http://deb.debian.org/debian"


def _host_apt_config() -> str:
    """apt settings the host needs for its mirror, carried into the template
    (e.g. a snapshot mirror whose Release files are past Valid-Until)."""
    lines = []
    out = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith(("Acquire::Check-Valid-Until ", "Acquire::Check-Date ")):
            lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def _extra_host_cas(rootfs: Path) -> list[str]:
    """CA certificates the host trusts that the template's bundle lacks, so
    HTTPS to the package registries works from containers as from the host."""
    host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    guest_bundle = rootfs / "etc/ssl/certs/ca-certificates.crt"
    if not host_bundle.exists() or not guest_bundle.exists():
        return []

    def split(text: str) -> list[str]:
        marker = "-----END CERTIFICATE-----"
        return [c.strip() + "\n" + marker + "\n" for c in text.split(marker) if "BEGIN" in c]

    known = set(split(guest_bundle.read_text()))
    return [c for c in split(host_bundle.read_text()) if c not in known]


def build_template(force: bool = False, mirror: str | None = None) -> Path:
    """Build the standard template with debootstrap (about a minute).

    Returns:
        The path of the cached tarball.

    Raises:
        RuntimeError: if debootstrap or packing fails (with its output tail).
    """
    target = template_path()
    if target.exists() and not force:
        return target
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    target.parent.mkdir(parents=True, exist_ok=True)
    mirror = mirror or host_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(rootfs),
               mirror]  # fmt: skip
        log.info("running %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise RuntimeError(f"debootstrap failed ({proc.returncode}):\n{tail}")
        _trim(rootfs, mirror)
        packed = Path(tmp) / target.name
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-I", "zstd -T0 -3", "-C", str(rootfs),
             "-cpf", str(packed), "."],
            check=True,
        )  # fmt: skip
        os.replace(packed, target)
    log.info("template %s built in %.1fs", target.name, time.monotonic() - started)
    return target


def _trim(rootfs: Path, mirror: str) -> None:
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    security = mirror.replace("/debian", "/debian-security")
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirror} {SUITE} main contrib\n"
        f"deb {mirror} {SUITE}-updates main contrib\n"
        f"deb {security} {SUITE}-security main contrib\n"
    )
    apt_conf = _host_apt_config()
    if apt_conf:
        (rootfs / "etc/apt/apt.conf.d/99pvesim-host").write_text(apt_conf)
    extra = _extra_host_cas(rootfs)
    if extra:
        local = rootfs / "usr/local/share/ca-certificates"
        local.mkdir(parents=True, exist_ok=True)
        for i, pem in enumerate(extra):
            (local / f"pvesim-host-{i}.crt").write_text(pem)
        subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True,
                       capture_output=True)  # fmt: skip
    (rootfs / "etc/network/interfaces").write_text("auto lo\niface lo inet loopback\n")
    (rootfs / "etc/default/locale").write_text("LANG=C.UTF-8\n")
    # dhclient's default retry schedule (first retry after ~10 s) would stretch
    # a simulated late lease far past the configured delay
    with (rootfs / "etc/dhcp/dhclient.conf").open("a") as fh:
        fh.write(
            "\n# pvesim: retry quickly so simulated lease delays stay accurate\n"
            "initial-interval 1;\nbackoff-cutoff 2;\n"
        )
    # Timers that start apt at random moments make package installs flaky.
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        link = rootfs / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    subprocess.run(["chroot", str(rootfs), "apt-get", "clean"], check=True)
    lists = rootfs / "var/lib/apt/lists"
    for item in lists.iterdir():
        if item.is_file():
            item.unlink()


def ensure_base(tarball: Path) -> Path:
    """Unpack ``tarball`` once into the base cache and return its directory."""
    st = tarball.stat()
    digest = hashlib.sha1(f"{tarball.name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    base = cache_dir() / "bases" / f"{tarball.name.split('.tar')[0]}-{digest[:12]}"
    if base.exists():
        return base
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base.parent, prefix=".unpack-"))
    try:
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-I", "zstd", "-C", str(tmp), "-xpf",
             str(tarball)],
            check=True, capture_output=True,
        )  # fmt: skip
        os.replace(tmp, base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return base

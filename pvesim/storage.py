"""Storages (``local`` for templates, ``local-lvm`` for container disks),
their content listings, and template downloads (aplinfo, download-url).

Both storages are backed by the state directory's filesystem, so the space
they report is real.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import shutil
import socket
import ssl
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

from pvesim import templates, volumes
from pvesim.errors import PveError
from pvesim.guest import size_to_bytes, split_property_string
from pvesim.state import ContainerRecord
from pvesim.storage_specs import STORAGES, StorageSpec, get_spec, storage_cfg
from pvesim.tasks import DURATIONS, Task, TaskFailed

if TYPE_CHECKING:
    from pvesim.node import Node


def _space(node: Node) -> tuple[int, int, int]:
    st = os.statvfs(node.store.root)
    total = st.f_blocks * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    return total, total - st.f_bfree * st.f_frsize, avail


def storage_entry(node: Node, spec: StorageSpec) -> dict[str, Any]:
    total, used, avail = _space(node)
    return {
        "storage": spec.name, "type": spec.type, "content": ",".join(sorted(spec.content)),
        "active": 1, "enabled": 1, "shared": 0, "total": total, "used": used, "avail": avail,
        "used_fraction": round(used / total, 6) if total else 0,
    }  # fmt: skip


def list_storages(node: Node, params: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    wanted = set(str(params.get("content", "")).replace(";", ",").split(",")) - {""}
    for spec in STORAGES.values():
        if params.get("storage") and params["storage"] != spec.name:
            continue
        if wanted and not wanted & set(spec.content):
            continue
        out.append(storage_entry(node, spec))
    return out


def storage_config(spec: StorageSpec) -> dict[str, Any]:
    """pve-storage PVE::API2::Storage::Config's ``$api_storage_config``: the
    storage.cfg section with ``storage``, the file's ``digest`` and the
    content list encoded again (encode_value: the content types joined by
    commas - in hash order on PVE, sorted here)."""
    out: dict[str, Any] = {k: v for k, v in spec.options}
    out.update({"storage": spec.name, "type": spec.type, "content": ",".join(sorted(spec.content)),
                "digest": hashlib.sha1(storage_cfg().encode()).hexdigest()})  # fmt: skip
    return out


def datacenter_storages(storage_type: str | None) -> list[dict[str, Any]]:
    """``GET /storage`` - PVE::API2::Storage::Config index: every storage of
    the datacenter's storage.cfg, only those of ``type`` if given (PVE lists
    them in hash order; sorted by name here)."""
    return [storage_config(spec) for name, spec in sorted(STORAGES.items())
            if not storage_type or spec.type == storage_type]  # fmt: skip


def read_storage(name: str) -> dict[str, Any]:
    """``GET /storage/{storage}`` - PVE::API2::Storage::Config read: one
    storage's section (``storage 'x' does not exist`` for another name)."""
    return storage_config(get_spec(name))


def volume_has_feature(feature: str, volid: str, snapname: str | None = None) -> bool:
    """PVE::Storage::volume_has_feature for pvesim's volumes: a path (a bind
    or device mount) has none; an LVM-thin volume has LvmThinPlugin's
    features for ``snap`` (with a snapshot name), ``base`` (a ``base-``
    volume) or ``current``."""
    if volid.startswith("/"):
        return False
    storage, _, volname = volid.partition(":")
    spec = get_spec(storage)
    if spec.type != "lvmthin":
        return False
    features = {"snapshot": {"current"}, "clone": {"base", "snap"}, "template": {"current"},
                "copy": {"base", "current", "snap"}, "sparseinit": {"base", "current"},
                "rename": {"current"}}  # fmt: skip
    key = "snap" if snapname else "base" if volname.startswith("base-") else "current"
    return key in features.get(feature, set())


def storage_status(node: Node, name: str) -> dict[str, Any]:
    entry = storage_entry(node, get_spec(name))
    entry.pop("storage")
    return entry


def list_content(node: Node, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    spec = get_spec(name)
    content = params.get("content")
    vmid = params.get("vmid")
    out: list[dict[str, Any]] = []
    if "vztmpl" in spec.content and content in (None, "vztmpl"):
        for path in sorted(node.store.template_dir.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            st = path.stat()
            fmt = "t" + path.name.rsplit(".", 1)[-1]  # tzst, tgz, ... as PVE reports it
            out.append({"volid": f"{name}:vztmpl/{path.name}", "content": "vztmpl",
                        "format": fmt, "size": st.st_size, "ctime": int(st.st_mtime)})  # fmt: skip
    if "rootdir" in spec.content and content in (None, "rootdir", "images"):
        for ct_vmid, rec in sorted(node.containers.items()):
            if vmid is not None and int(vmid) != ct_vmid:
                continue
            rootfs = split_property_string(str(rec.config.get("rootfs", "")), "volume")
            if not rootfs.get("volume", "").startswith(f"{name}:"):
                continue
            out.append({"volid": rootfs["volume"], "content": "rootdir", "format": "raw",
                        "vmid": ct_vmid, "size": size_to_bytes(rootfs.get("size", "4G")),
                        "used": node.fs(ct_vmid).disk_used(), "ctime": int(node.started_at)})  # fmt: skip
        # mount point volumes and unused disks (rootfs is listed above)
        for volid in sorted(set(volumes.owned_volumes(node.store.root, vmid) if vmid is not None
                                else _all_volumes(node))):  # fmt: skip
            if not volid.startswith(f"{name}:"):
                continue
            owner = int(volid.split(":", 1)[1].split("-")[1])
            sizes = {volumes.MountPoint.parse(k, str(v)).volume:
                     split_property_string(str(v), "volume").get("size", "0")
                     for k, v in node.containers.get(owner, ContainerRecord(owner, {})).config.items()
                     if volumes.is_mount_key(k)}  # fmt: skip
            path = volumes.volume_dir(node.store.root, volid)
            out.append({"volid": volid, "content": "rootdir", "format": "raw", "vmid": owner,
                        "size": size_to_bytes(sizes.get(volid, "0")),
                        "used": volumes.disk_used(node.store.root, volid),
                        "ctime": int(path.stat().st_ctime)})  # fmt: skip
    return out


def _all_volumes(node: Node) -> list[str]:
    return [v for vmid in node.containers for v in volumes.owned_volumes(node.store.root, vmid)]


def aplinfo() -> list[dict[str, Any]]:
    return [a.as_api() for a in templates.available_appliances()]


async def aplinfo_download(node: Node, params: dict[str, Any], user: str) -> str:
    storage, template = str(params["storage"]), str(params["template"])
    spec = get_spec(storage)
    if "vztmpl" not in spec.content:
        raise PveError(500, f"storage '{storage}' does not support templates")
    source = next((a for a in templates.available_appliances() if a.template == template), None)
    if source is None:
        raise PveError(400, "Parameter verification failed.", {"template": "no such template"})

    async def body(task: Task) -> None:
        src = templates.template_path(template)
        task.log(f"starting template download from: file://{src}")
        task.log(f"target file: /var/lib/vz/template/cache/{template}")
        await task.sleep(DURATIONS["download"])
        await asyncio.to_thread(_copy, src, node.store.template_dir / template)
        task.log(f"{source.size >> 20} MiB downloaded")
        task.log("calculating checksum...OK, checksum verified")
        task.log(f"download of '{src}' to '/var/lib/vz/template/cache/{template}' finished")

    return node.tasks.start("download", template, user, body)


def _copy(src: os.PathLike[str], dest: os.PathLike[str]) -> None:
    tmp = f"{os.fspath(dest)}.tmp_dwnl.{os.getpid()}"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _loopback_only(url: str) -> None:
    host = urllib.parse.urlparse(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as exc:
        raise TaskFailed(f"unable to resolve '{host}': {exc}") from exc
    for info in infos:
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            raise TaskFailed(f"pvesim downloads only from loopback addresses; '{host}' is not one")


async def download_url(node: Node, storage: str, params: dict[str, Any], user: str) -> str:
    spec = get_spec(storage)
    content = str(params["content"])
    if content != "vztmpl" or content not in spec.content:
        raise PveError(500, f"storage '{storage}' does not support content type '{content}'")
    filename = str(params["filename"])
    if "/" in filename or filename.startswith("."):
        raise PveError(400, "Parameter verification failed.", {"filename": "invalid filename"})
    url = str(params["url"])
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise PveError(400, "Parameter verification failed.", {"url": "invalid URL"})
    verify = params.get("verify-certificates", True)
    algorithm, checksum = params.get("checksum-algorithm"), params.get("checksum")

    def fetch() -> int:
        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        dest = node.store.template_dir / filename
        tmp = dest.with_name(f"{filename}.tmp_dwnl.{os.getpid()}")
        digest = hashlib.new(str(algorithm)) if algorithm else None
        size = 0
        try:
            with urllib.request.urlopen(url, timeout=30, context=ctx) as resp, tmp.open("wb") as fh:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    fh.write(chunk)
                    size += len(chunk)
                    if digest:
                        digest.update(chunk)
            if digest and digest.hexdigest() != str(checksum).lower():
                raise TaskFailed(
                    f"checksum mismatch: got '{digest.hexdigest()}' != expect '{checksum}'"
                )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return size

    async def body(task: Task) -> None:
        task.log(f"downloading {url} to /var/lib/vz/template/cache/{filename}")
        _loopback_only(url)
        try:
            size = await asyncio.to_thread(fetch)
        except OSError as exc:
            raise TaskFailed(f"download failed: {exc}") from exc
        task.log(f"download finished: {size} bytes")

    return node.tasks.start("download", storage, user, body)

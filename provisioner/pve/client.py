"""The Proxmox VE client: the one choke point for every PVE call.

Every request goes through ``PveClient._request`` (over proxmoxer), which
encodes booleans as 0/1, drops ``None``, applies the connection's timeouts
and trust mode, and maps every failure to our error hierarchy: transient
(network, 5xx, 595-599, config locks) or permanent (4xx, "already exists",
TLS verification).  On top of it: tasks (``wait_for_task``), vmid
allocation, IP resolution, listings and container operations.

Pure parsing lives in ``parse`` and ``types``, connection, TLS,
auth and transport failures in ``http``, task polling in ``tasks``,
vmid allocation in ``vmid`` (all in this package).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import requests
from proxmoxer.backends.https import JsonSerializer
from proxmoxer.core import ProxmoxResource, ResourceException

from provisioner.errors import (
    ConfigError,
    NodeUnreachableError,
    PveApiError,
    PvePermanentError,
    PveTransientError,
)
from provisioner.pve.http import (
    PveConnection,
    TicketAuth,
    build_session,
    network_failure,
    quiet_proxmoxer,
    tls_failure,
)
from provisioner.pve.parse import (
    clean_errors,
    describe_failure,
    encode_params,
    failure_hint,
    global_ipv4,
    is_transient_failure,
    parse_net,
    redact,
)
from provisioner.pve.tasks import read_task_log, wait_for_task
from provisioner.pve.types import (
    BridgeInfo,
    ContainerStatus,
    NodeInfo,
    Owned,
    SnapshotInfo,
    StorageInfo,
    TaskResult,
    TemplateInfo,
)
from provisioner.pve.vmid import VmidAllocation, allocate_vmid

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)
T = TypeVar("T")

# request parameters whose values are secrets (kept out of messages)
_SECRET_PARAMS = ("password",)


def _segment(value: object) -> str:
    return quote(str(value), safe=":@!=")


class PveClient:
    """A client bound to one node of a PVE cluster.

    Not thread-safe (one ``requests`` session): give each thread its own.
    Building it makes no request; ticket auth logs in on the first call.
    """

    def __init__(self, connection: PveConnection) -> None:
        quiet_proxmoxer()
        self.connection = connection
        self.node = connection.node
        self._session = build_session(connection)
        self._root = ProxmoxResource(base_url=connection.base_url, session=self._session,
                                     serializer=JsonSerializer())  # fmt: skip

    def __repr__(self) -> str:
        c = self.connection
        return f"PveClient({c.host}:{c.port}, node={c.node})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PveClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    # --- the choke point ---------------------------------------------------
    def _request(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """One API call; returns ``data`` of PVE's envelope.

        Raises:
            PveTransientError: network trouble, 5xx/595-599, config locks.
            PvePermanentError: 4xx, permanent handler failures, TLS trust failures.
        """
        data = encode_params(params)
        call = f"{method} {path}"
        secrets = (*self.connection.secrets, *(str(data[k]) for k in _SECRET_PARAMS if k in data))
        resource = self._root(path.strip("/"))
        for attempt in (1, 2):
            try:
                log.debug("PVE %s", call)
                # proxmoxer sends GET/DELETE arguments as query, POST/PUT as form
                return getattr(resource, method.lower())(**data)
            except ResourceException as exc:
                status = int(exc.status_code)
                auth = self._session.auth
                if status == 401 and attempt == 1 and isinstance(auth, TicketAuth):
                    # expired or revoked ticket (e.g. the node restarted): log in again once
                    log.info("PVE ticket rejected by %s; logging in again", self.connection.host)
                    auth.invalidate()
                    continue
                message = redact(str(exc.content or exc.status_message or ""), secrets)
                errors = {k: redact(v, secrets) for k, v in clean_errors(exc.errors).items()}
                raise self._api_error(path, call, status, message, errors) from None
            except requests.exceptions.SSLError as exc:
                raise tls_failure(self.connection, call, exc) from None
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:  # fmt: skip
                raise network_failure(self.connection, method, call, exc) from None
            except requests.RequestException as exc:
                raise PvePermanentError(
                    f"{call} on node {self.node} failed: {exc.__class__.__name__}"
                ) from None
        raise AssertionError("unreachable")

    def _api_error(self, path: str, call: str, status: int, message: str,
                   errors: dict[str, str]) -> PveApiError:  # fmt: skip
        m = re.match(r"/nodes/([^/]+)", path)
        text = describe_failure(m[1] if m else self.node, call, status, message, errors)
        cls: type[PveApiError] = PveTransientError if is_transient_failure(status, message) \
            else PvePermanentError  # fmt: skip
        if status == 595:  # a cluster node's proxy cannot reach the node the call is for
            cls = NodeUnreachableError
        return cls(text, status=status, pve_message=message, errors=errors,
                   hint=failure_hint(status, message))  # fmt: skip

    def _node_path(self, *parts: object) -> str:
        return "/nodes/" + "/".join(_segment(p) for p in (self.node, *parts))

    def _lxc(self, vmid: int, *parts: object) -> str:
        return self._node_path("lxc", int(vmid), *parts)

    # --- tasks ---------------------------------------------------------------
    def wait_for_task(self, upid: str, timeout: float = 600.0, poll: float = 1.0,
                      on_log: Callable[[str], None] | None = None) -> TaskResult:  # fmt: skip
        """Wait until a task stops.

        Args:
            upid: the task id a call returned (the task may run on another node).
            timeout: seconds to wait before giving up (the task keeps running).
            poll: the longest pause between status polls (they start faster).
            on_log: called with each new task log line, exactly once, in order.

        Returns:
            The result; ``WARNINGS: N`` counts as success, with the warnings.

        Raises:
            TaskFailedError: the task ended in ``TASK ERROR`` (with the log tail).
            TaskLockedError: (a transient TaskFailedError) it failed on a lock.
            PveTransientError: still running at the timeout, or the node unreachable.
            PvePermanentError: not a UPID, or its status cannot be read.
        """
        return wait_for_task(self, upid, timeout, poll, on_log)

    def task_log(self, upid: str) -> list[str]:
        """Every line of a task's log.

        Raises:
            PveTransientError, PvePermanentError: as for any call.
        """
        return read_task_log(self, upid)

    # --- vmids ---------------------------------------------------------------
    def next_vmid(self) -> int:
        """``/cluster/nextid``: the first free vmid now (it reserves nothing)."""
        return int(self._request("GET", "/cluster/nextid"))

    def allocate_vmid(self, requested: int | None, create: Callable[[int], T], *, redis: Redis,
                      key_prefix: str = "provisioner", lock_timeout: float = 120.0,
                      wait_timeout: float = 120.0, attempts: int = 5) -> VmidAllocation[T]:  # fmt: skip
        """Pick a vmid (``requested``, or ``/cluster/nextid``) and run
        ``create(vmid)`` (which POSTs the container) under the cluster's Redis
        lock, so nextid + create is atomic across workers and hosts; on
        "already exists" nextid is asked again (up to ``attempts`` times).

        See ``provisioner.pve.vmid.allocate_vmid`` for the options.

        Raises:
            PvePermanentError: the requested vmid exists, or create failed so.
            TransientError: Redis or the lock unavailable, or create failed so.
        """
        return allocate_vmid(self, redis, requested, create, key_prefix=key_prefix,
                             lock_timeout=lock_timeout, wait_timeout=wait_timeout,
                             attempts=attempts)  # fmt: skip

    # --- IP addresses ----------------------------------------------------------
    def interfaces(self, vmid: int) -> list[dict[str, Any]]:
        """A running container's interfaces and addresses (PVE >= 8.1)."""
        return list(self._request("GET", self._lxc(vmid, "interfaces")) or [])

    def resolve_container_ip(self, vmid: int, net0: str, timeout: float = 120.0,
                             poll: float = 1.0) -> str:  # fmt: skip
        """The container's IPv4 address: the static ``ip=`` of ``net0``, or
        (DHCP, manual) the first global IPv4 of its interface, polled.

        Raises:
            ConfigError: ``net0`` is malformed.
            PveTransientError: no usable address within ``timeout`` seconds.
            PvePermanentError: the container does not exist or is not running.
        """
        try:
            spec = parse_net(net0)
        except ValueError as exc:
            raise ConfigError(f"CT {vmid}: {exc}") from None
        if spec.static_ipv4:
            return spec.static_ipv4
        deadline = time.monotonic() + timeout
        delay = min(0.2, poll)
        last = f"{spec.name} has no IPv4 address yet"
        while True:
            try:
                address = global_ipv4(self.interfaces(vmid), spec.name)
                if address:
                    return address
                last = f"{spec.name} has no global IPv4 address yet"
            except PveTransientError as exc:
                last = str(exc)
            now = time.monotonic()
            if now >= deadline:
                how = "DHCP lease" if spec.is_dhcp else f"ip={spec.ip or 'unset'}"
                raise PveTransientError(
                    f"CT {vmid} on node {self.node}: no IPv4 address on {spec.name} after "
                    f"{timeout:g}s ({how}); {last}",
                    hint=f"check the DHCP server on bridge {spec.bridge or '?'}, "
                    "or give the container a static ip= in net0",
                )
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, poll)

    # --- node, storage, network ---------------------------------------------
    def version(self) -> dict[str, Any]:
        return dict(self._request("GET", "/version"))

    def nodes(self) -> list[NodeInfo]:
        """The cluster's nodes with their free CPU and memory."""
        return [NodeInfo.from_api(n) for n in self._request("GET", "/nodes")]

    def cluster_status(self) -> list[dict[str, Any]]:
        """``GET /cluster/status``: a ``cluster`` entry (name, quorate, ...)
        when the node is in a cluster, and a ``node`` entry per node (name,
        ip, online, local)."""
        return [dict(e) for e in self._request("GET", "/cluster/status") or []]

    def cluster_name(self) -> str | None:
        """The node's PVE cluster, or None for a standalone node."""
        return next((str(e["name"]) for e in self.cluster_status()
                     if e.get("type") == "cluster" and e.get("name")), None)  # fmt: skip

    def cluster_resources(self) -> list[dict[str, Any]]:
        """Every node, guest and storage of the cluster with its usage
        (``GET /cluster/resources``), as placement reads it."""
        return [dict(r) for r in self._request("GET", "/cluster/resources") or []]

    def storages(self, content: str | None = None) -> list[StorageInfo]:
        """This node's storages, optionally only those holding ``content``."""
        found = self._request("GET", self._node_path("storage"), {"content": content})
        return [StorageInfo.from_api(s) for s in found]

    def bridges(self) -> list[BridgeInfo]:
        """Bridges on this node (Linux, OVS and SDN vnets)."""
        found = self._request("GET", self._node_path("network"), {"type": "any_bridge"})
        return [BridgeInfo.from_api(b) for b in found]

    def pools(self) -> list[str]:
        """The cluster's resource pools this login may see (``GET /pools``
        lists those it has ``Pool.Audit`` on)."""
        return [str(p["poolid"]) for p in self._request("GET", "/pools") or []]

    def templates(self, storage: str) -> list[TemplateInfo]:
        """OS templates (``vztmpl``) on ``storage``."""
        found = self._request("GET", self._node_path("storage", storage, "content"),
                              {"content": "vztmpl"})  # fmt: skip
        return [TemplateInfo.from_api(t) for t in found]

    def ensure_template(self, storage: str, volid: str, *, timeout: float = 900.0,
                        on_log: Callable[[str], None] | None = None) -> bool:  # fmt: skip
        """Make sure an OS template is on ``storage``; download it via
        aplinfo (and wait for the download) when it is missing.

        Args:
            storage: a storage with ``vztmpl`` content, e.g. ``local``.
            volid: ``local:vztmpl/<file>`` or just the file name.

        Returns:
            True when it had to be downloaded.

        Raises:
            TaskFailedError: the download failed.
            PvePermanentError: unknown template or storage, or still missing.
        """
        filename = volid.split(":", 1)[-1].removeprefix("vztmpl/")
        wanted = f"{storage}:vztmpl/{filename}"
        if any(t.volid == wanted for t in self.templates(storage)):
            return False
        log.info("template %s missing on node %s; downloading it", wanted, self.node)
        upid = self._request("POST", self._node_path("aplinfo"),
                             {"storage": storage, "template": filename})  # fmt: skip
        self.wait_for_task(str(upid), timeout=timeout, on_log=on_log)
        if not any(t.volid == wanted for t in self.templates(storage)):
            raise PvePermanentError(f"template {wanted} still missing on node {self.node} "
                                    "after its download finished")  # fmt: skip
        return True

    # --- containers ------------------------------------------------------------
    def containers(self) -> list[ContainerStatus]:
        return [ContainerStatus.from_api(c) for c in self._request("GET", self._node_path("lxc"))]

    def create_container(self, params: Mapping[str, Any]) -> str:
        """``POST /nodes/{node}/lxc`` (``vmid`` among the params); returns the UPID."""
        return str(self._request("POST", self._node_path("lxc"), params))

    def status(self, vmid: int) -> ContainerStatus:
        return ContainerStatus.from_api(self._request("GET", self._lxc(vmid, "status", "current")),
                                        vmid)  # fmt: skip

    def exists(self, vmid: int) -> bool:
        """Whether the container exists on this node."""
        try:
            self.status(vmid)
        except PvePermanentError as exc:
            if "does not exist" in (exc.pve_message or ""):
                return False
            raise
        return True

    def wait_unlocked(self, vmid: int, timeout: float = 60.0, poll: float = 0.5) -> ContainerStatus:
        """Wait until the container's config lock (create, snapshot, ...) clears.

        Raises:
            PveTransientError: still locked after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            current = self.status(vmid)
            if not current.lock:
                return current
            if time.monotonic() >= deadline:
                raise PveTransientError(f"CT {vmid} on node {self.node} still locked "
                                        f"({current.lock}) after {timeout:g}s")  # fmt: skip
            time.sleep(poll)

    # --- writes to an existing CT: only with proof that it is ours ----------
    def _owned(self, ct: Owned, *parts: object) -> str:
        """The CT's path, once ``ct`` is proof for this client's node."""
        if ct.node != self.node:
            raise PvePermanentError(f"CT {ct.vmid} was proven on node {ct.node}, "
                                    f"not on node {self.node}")  # fmt: skip
        return self._lxc(ct.vmid, *parts)

    def start(self, ct: Owned) -> str:
        return str(self._request("POST", self._owned(ct, "status", "start")))

    def stop(self, ct: Owned) -> str:
        """Hard stop; see ``shutdown`` for a clean one."""
        return str(self._request("POST", self._owned(ct, "status", "stop")))

    def shutdown(self, ct: Owned, timeout: int | None = None, force_stop: bool = False) -> str:
        return str(self._request("POST", self._owned(ct, "status", "shutdown"),
                                 {"timeout": timeout, "forceStop": force_stop or None}))  # fmt: skip

    def reboot(self, ct: Owned, timeout: int | None = None) -> str:
        return str(self._request("POST", self._owned(ct, "status", "reboot"),
                                 {"timeout": timeout}))  # fmt: skip

    def destroy(self, ct: Owned, *, force: bool = False, purge: bool = True,
                destroy_unreferenced_disks: bool = True) -> str:  # fmt: skip
        """Delete the container (``force`` also stops a running one); returns the UPID."""
        return str(self._request("DELETE", self._owned(ct), {
            "force": force or None, "purge": purge,
            "destroy-unreferenced-disks": destroy_unreferenced_disks,
        }))  # fmt: skip

    def clone(self, ct: Owned, newid: int, *, hostname: str | None = None,
              full: bool | None = None, storage: str | None = None,
              snapname: str | None = None, description: str | None = None) -> str:  # fmt: skip
        return str(self._request("POST", self._owned(ct, "clone"), {
            "newid": newid, "hostname": hostname, "full": full, "storage": storage,
            "snapname": snapname, "description": description,
        }))  # fmt: skip

    def migrate(self, ct: Owned, target: str, *, restart: bool = False,
                timeout: int | None = None, target_storage: str | None = None) -> str:  # fmt: skip
        """Move the container to node ``target`` of this node's cluster; a
        running one in restart mode (shut down, moved, started there).
        Returns the UPID of the ``vzmigrate`` task (on this node)."""
        return str(self._request("POST", self._owned(ct, "migrate"), {
            "target": target, "restart": restart or None, "timeout": timeout,
            "target-storage": target_storage,
        }))  # fmt: skip

    def snapshots(self, vmid: int) -> list[SnapshotInfo]:
        found = self._request("GET", self._lxc(vmid, "snapshot"))
        return [SnapshotInfo.from_api(s) for s in found if s.get("name") != "current"]

    def snapshot_create(self, ct: Owned, name: str, description: str | None = None) -> str:
        return str(self._request("POST", self._owned(ct, "snapshot"),
                                 {"snapname": name, "description": description}))  # fmt: skip

    def snapshot_delete(self, ct: Owned, name: str, force: bool = False) -> str:
        return str(self._request("DELETE", self._owned(ct, "snapshot", name),
                                 {"force": force or None}))  # fmt: skip

    def snapshot_rollback(self, ct: Owned, name: str, start: bool | None = None) -> str:
        return str(self._request("POST", self._owned(ct, "snapshot", name, "rollback"),
                                 {"start": start}))  # fmt: skip

    def get_config(self, vmid: int) -> dict[str, Any]:
        return dict(self._request("GET", self._lxc(vmid, "config")))

    def pending(self, vmid: int) -> list[dict[str, Any]]:
        """``GET .../pending``: each config key with its ``value`` and, where
        a change waits for the next restart, its ``pending`` value (or
        ``delete``)."""
        return [dict(e) for e in self._request("GET", self._lxc(vmid, "pending")) or []]

    def resize(self, ct: Owned, disk: str, size: str, *, digest: str | None = None) -> str:
        """Grow a volume (``size`` as PVE takes it: ``12G``, ``+2G``); returns the UPID."""
        return str(self._request("PUT", self._owned(ct, "resize"),
                                 {"disk": disk, "size": size, "digest": digest}))  # fmt: skip

    def put_config(self, ct: Owned, params: Mapping[str, Any], *,
                   delete: Iterable[str] | None = None, digest: str | None = None) -> None:  # fmt: skip
        """Update the config (``delete`` removes keys; ``digest`` guards
        against concurrent changes)."""
        body = {**params, "delete": ",".join(delete) if delete else None, "digest": digest}
        self._request("PUT", self._owned(ct, "config"), body)

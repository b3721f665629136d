"""The simulated node: containers, their lifecycle tasks, locks and leases.

API handlers call the public methods here with validated parameters; each
either returns data or raises ``PveError`` with PVE's status and wording.
Long operations return a UPID and do their work in a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from provisioner.pve.schema import format_property_string, load_api_schema
from pvesim import ctconfig, network, perms, runtime, templates, volumes
from pvesim.auth import Authenticator
from pvesim.dhcp import DhcpServer, Lease
from pvesim.dhcp6 import Dhcp6Server
from pvesim.errors import PveError, param_error
from pvesim.faults import Faults
from pvesim.guest import (
    HostKeyPool,
    NetConfig,
    apply_create_config,
    apply_start_config,
    size_to_bytes,
    split_property_string,
)
from pvesim.network import SimNetwork
from pvesim.pools import Pools
from pvesim.ra import RouterAdvertiser
from pvesim.runtime import ContainerFs, RunningContainer
from pvesim.state import ContainerRecord, StateStore
from pvesim.storage_specs import STORAGES
from pvesim.tasks import DURATIONS, Task, TaskFailed, TaskManager
from pvesim.volumes import MountPoint

log = logging.getLogger(__name__)

API_BRIDGE = "vmbr0"
ROOTDIR_STORAGE = "local-lvm"
FILE_LOCK_TIMEOUT = 10.0
# create-only parameters that never land in the config
_CREATE_ONLY = {"vmid", "node", "ostemplate", "storage", "password", "ssh-public-keys", "start",
                "restore", "force", "unique", "pool", "ignore-unpack-errors", "bwlimit"}  # fmt: skip


def net_keys(config: dict[str, Any]) -> list[str]:
    return sorted((k for k in config if k.startswith("net") and k[3:].isdigit()),
                  key=lambda k: int(k[3:]))  # fmt: skip


def parse_nets(config: dict[str, Any]) -> list[NetConfig]:
    return [NetConfig.parse(int(k[3:]), str(config[k])) for k in net_keys(config)]


def format_net(values: dict[str, str]) -> str:
    """A ``net[n]`` value written the way PVE writes it (name first, sorted)."""
    fmt = load_api_schema().param_schema("POST", "/nodes/{node}/lxc", "net0")
    assert fmt is not None
    return format_property_string(values, fmt=fmt["format"])


def unique_tags(value: str) -> str:
    """PVE::GuestHelpers::get_unique_tags with the default tag style (no
    ``tag-style`` in datacenter.cfg): split on ``,``/``;``/spaces, sorted
    case-insensitively, lower-cased, duplicates dropped, joined with ``;``."""
    tags = [t for t in re.split(r"[,;\s\0]+", value) if t]
    seen: list[str] = []
    for tag in sorted(tags, key=str.lower):
        if tag.lower() not in seen:
            seen.append(tag.lower())
    return ";".join(seen)


def normalize_config(config: dict[str, Any]) -> None:
    """What PVE::LXC::Config::update_pct_config rewrites as it stores a value."""
    if "tags" in config:
        config["tags"] = unique_tags(str(config["tags"]))


def random_hwaddr() -> str:
    # Proxmox's own OUI, as PVE >= 8 uses for generated addresses
    return "BC:24:11:" + ":".join(f"{b:02X}" for b in secrets.token_bytes(3))


def config_value(value: Any) -> Any:
    """Config files hold booleans as 0/1."""
    return int(value) if isinstance(value, bool) else value


def config_digest(config: dict[str, Any]) -> str:
    text = "".join(f"{k}: {config[k]}\n" for k in sorted(config))
    return hashlib.sha1(text.encode()).hexdigest()


async def _nothing_pending(vmid: int) -> list[str]:
    return []


class Node:
    """One simulated PVE node and everything on it."""

    def __init__(self, state_dir: Path, name: str, net: SimNetwork, time_scale: float = 1.0,
                 dhcp_delay: float = 0.0) -> None:  # fmt: skip
        self.name = name
        self.net = net
        self.store = StateStore(state_dir)
        self.faults = Faults()
        self.tasks = TaskManager(self.store, name, self.faults, time_scale)
        self.time_scale = time_scale
        self.dhcp_delay = dhcp_delay
        self.containers: dict[int, ContainerRecord] = self.store.load_containers()
        self.running: dict[int, RunningContainer] = {}
        self.leases: dict[str, str] = self.store.load("leases", {})
        self._file_locks: dict[int, asyncio.Lock] = {}
        self._timers: dict[asyncio.Task[None], Any] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._disk_cache: dict[int, tuple[float, int]] = {}
        # the volumes loop-mounted for a running container, unmounted when it stops
        self._volume_mounts: dict[int, list[str]] = {}
        self._dhcp: DhcpServer | None = None
        self._dhcp6: Dhcp6Server | None = None
        self._ra: RouterAdvertiser | None = None
        self.started_at = time.time()
        self.auth = Authenticator(self.store.credentials())
        self.pools = Pools(self.store)
        self.host_keys = HostKeyPool(state_dir / "keypool")
        self.ssl_fingerprint = ""
        # applies a CT's pending config changes (lxcops.apply_pending, set by
        # the server: lxcops builds on this module); returns the warnings
        self.apply_pending: Callable[[int], Awaitable[list[str]]] = _nothing_pending
        # False on a cluster's further nodes (pvesim.cluster): one bridge and DHCP for all
        self.owns_network = True

    # lifecycle of the simulator itself -----------------------------------
    async def startup(self) -> None:
        """Clean up after a crashed run, then bring up the network."""
        for vmid in list(self.containers):
            fs = self.fs(vmid)
            runtime.kill_stale(fs)
            await fs.unmount()
            rec = self.containers[vmid]
            if rec.lock in ("create", "destroyed"):  # half-made or half-removed
                await self._forget(vmid)
        # the loop mounts of volumes whose containers were running
        await volumes.unmount_all(self.store.root)
        if self.owns_network:
            await self._network_up()
        self._publish_standard_template()
        self.host_keys.refill()
        if any(str(rec.config.get("onboot", "0")) == "1" for rec in self.containers.values()):
            self.tasks.start("startall", "", "root@pam", self._start_all)

    async def _network_up(self) -> None:
        await network.setup_network(self.net)
        self.store.save("network", {"index": self.net.index, "subnet": str(self.net.subnet)})
        self._dhcp = DhcpServer(self.net.bridge, str(self.net.gateway), self._lease_for,
                                delay_for=self._delay_for, on_lease=self._on_lease)  # fmt: skip
        await self._dhcp.start()
        self._dhcp6 = Dhcp6Server(self.net.bridge, self._address6_for)
        await self._dhcp6.start()
        self._ra = RouterAdvertiser(self.net.bridge, self.net.subnet6, self._wants_ra)
        await self._ra.start()

    async def _start_all(self, task: Task) -> None:
        """What pve-guests does at node boot (pve-manager's Nodes::startall):
        the ``onboot`` containers by ``startup`` order (none: last), then vmid,
        each in a ``vzstart`` task, waiting ``up`` seconds after it; a group of
        one order finishes before the next starts."""
        groups: dict[int, list[tuple[int, int | None]]] = {}
        for vmid, rec in self.containers.items():
            if str(rec.config.get("onboot", "0")) != "1":
                continue
            startup = split_property_string(str(rec.config.get("startup", "")), "order")
            order = int(startup["order"]) if "order" in startup else 2**63 - 1  # LONG_MAX
            groups.setdefault(order, []).append(
                (vmid, int(startup["up"]) if "up" in startup else None)
            )
        for order in sorted(groups):
            upids = []
            for vmid, up in sorted(groups[order]):
                if vmid in self.running:
                    continue
                task.log(f"Starting CT {vmid}")
                try:
                    upids.append(await self.start(vmid, "root@pam"))
                except PveError as exc:
                    task.warn(f"Starting CT {vmid} failed: {exc.message}")
                    continue
                if up:
                    task.log(f"Waiting for {up} seconds (startup delay)")
                    await task.sleep(up)
            for upid in upids:
                record = await self.tasks.wait(upid)
                if record.exitstatus != "OK":
                    task.warn(f"Starting CT {upid.split(':')[6]} failed: {record.exitstatus}")

    async def shutdown(self) -> None:
        """Stop every container, the DHCP server and remove the network."""
        await self.tasks.shutdown()
        for timer in list(self._timers):
            timer.cancel()
        self._timers.clear()
        await asyncio.gather(*(self._halt(vmid) for vmid in list(self.running)),
                             return_exceptions=True)  # fmt: skip
        await volumes.unmount_all(self.store.root)
        if self._dhcp is not None:
            await self._dhcp.stop()
        if self._dhcp6 is not None:
            await self._dhcp6.stop()
        if self._ra is not None:
            await self._ra.stop()
        await self.host_keys.close()
        if self.owns_network:
            await network.cleanup_network(self.net.index)

    def _publish_standard_template(self) -> None:
        src = templates.template_path()
        dest = self.store.template_dir / src.name
        if src.exists() and not dest.exists():
            try:
                dest.hardlink_to(src)
            except OSError:
                dest.symlink_to(src)

    def later(self, seconds: float, action: Any) -> None:
        """Run ``action()`` (a coroutine function) after ``seconds``; used to
        end timed faults (held locks, refused SSH)."""

        async def runner() -> None:
            await asyncio.sleep(seconds)
            self._timers.pop(timer, None)
            await action()

        timer = asyncio.create_task(runner())
        self._timers[timer] = action

    async def end_timed_faults(self) -> None:
        """End every held lock and SSH refusal now."""
        pending, self._timers = self._timers, {}
        for timer, action in pending.items():
            timer.cancel()
            await action()

    # helpers -------------------------------------------------------------
    def fs(self, vmid: int) -> ContainerFs:
        return ContainerFs(self.store.container_dir(vmid))

    def get(self, vmid: int) -> ContainerRecord:
        rec = self.containers.get(vmid)
        if rec is None:
            raise PveError(
                500, f"Configuration file 'nodes/{self.name}/lxc/{vmid}.conf' does not exist"
            )
        return rec

    def check_lock(self, rec: ContainerRecord) -> None:
        if rec.lock:
            raise PveError(500, f"CT is locked ({rec.lock})")

    @contextlib.asynccontextmanager
    async def config_lock(self, vmid: int, task: Task | None = None) -> AsyncIterator[None]:
        """PVE's flock on the config file (PVE::LXC::Config config_file_lock:
        ``/run/lock/lxc/pve-config-VMID.lock``), with lock_config's 10 s
        timeout (PVE::Tools lock_file_full: "can't lock file '...' - got
        timeout").  In a ``task`` a busy lock logs lock_file_full's "trying to
        acquire lock..." (and " OK" once it has it), as a worker's STDERR
        lands in its task log."""
        lock = await self._take_file_lock(vmid, task)
        try:
            yield
        finally:
            lock.release()

    async def _take_file_lock(self, vmid: int, task: Task | None = None) -> asyncio.Lock:
        """Acquire the config flock (see ``config_lock``); the caller releases it."""
        lock = self._file_locks.setdefault(vmid, asyncio.Lock())
        waited = lock.locked()
        if waited and task is not None:
            task.log("trying to acquire lock...")
        try:
            await asyncio.wait_for(lock.acquire(), FILE_LOCK_TIMEOUT)
        except TimeoutError:
            raise PveError(
                500, f"can't lock file '/run/lock/lxc/pve-config-{vmid}.lock' - got timeout"
            ) from None
        if waited and task is not None:
            task.log(" OK")
        return lock

    @contextlib.asynccontextmanager
    async def task_config_lock(self, task: Task, vmid: int) -> AsyncIterator[ContainerRecord]:
        """A worker's ``PVE::LXC::Config->lock_config`` then ``load_config``:
        a busy flock or a missing config ends the task with PVE's message."""
        try:
            async with self.config_lock(vmid, task):
                yield self.get(vmid)
        except PveError as exc:
            raise TaskFailed(exc.message) from None

    def save(self, rec: ContainerRecord) -> None:
        self.containers[rec.vmid] = rec
        self.store.save_container(rec)

    def set_lock(self, rec: ContainerRecord, lock: str | None) -> None:
        if lock:
            rec.config["lock"] = lock
        else:
            rec.config.pop("lock", None)
        self.save(rec)

    async def _forget(self, vmid: int) -> None:
        nets = self._nets_of(vmid)  # before the record goes: its leases go with it
        await self.fs(vmid).remove()
        self.containers.pop(vmid, None)
        self.store.delete_container(vmid)
        for net in nets:
            if net.hwaddr:
                self.leases.pop(net.hwaddr.lower(), None)
        self.store.save("leases", self.leases)

    def _nets_of(self, vmid: int) -> list[NetConfig]:
        rec = self.containers.get(vmid)
        return parse_nets(rec.config) if rec else []

    def _check_static_ips(self, nets: list[NetConfig]) -> None:
        """Static addresses must lie in the simulator's subnets (IPv4 and the
        IPv6 ULA), since it routes nothing else."""
        for net in nets:
            iface = net.static_interface
            if iface is None:
                continue
            if iface.ip not in self.net.subnet or iface.ip in (
                self.net.subnet.network_address, self.net.subnet.broadcast_address,
                self.net.gateway,
            ):  # fmt: skip
                raise TaskFailed(
                    f"net{net.index}: address {net.ip} is not usable on this simulator: "
                    f"{API_BRIDGE} serves {self.net.subnet} (gateway {self.net.gateway}) and "
                    "pvesim routes nothing outside its own subnet"
                )
            if net.gw and ipaddress.ip_address(net.gw) not in self.net.subnet:
                raise TaskFailed(f"net{net.index}: gateway {net.gw} is outside {self.net.subnet}")
        sub6 = self.net.subnet6
        for net in nets:
            iface6 = net.static_interface6
            if iface6 is not None and (iface6.ip not in sub6 or iface6.ip in (
                sub6.network_address, self.net.gateway6,
            )):  # fmt: skip
                raise TaskFailed(
                    f"net{net.index}: address {net.ip6} is not usable on this simulator: "
                    f"{API_BRIDGE} serves {sub6} (gateway {self.net.gateway6}) and "
                    "pvesim routes nothing outside its own subnet"
                )
            if net.gw6:
                gw6 = ipaddress.IPv6Address(net.gw6)
                if gw6 not in sub6 and not gw6.is_link_local:
                    raise TaskFailed(f"net{net.index}: gateway {net.gw6} is outside {sub6}")

    # DHCP ------------------------------------------------------------------
    def _vmid_for_mac(self, mac: str) -> tuple[int, NetConfig] | None:
        for vmid in self.running:
            for net in self._nets_of(vmid):
                if net.hwaddr and net.hwaddr.lower() == mac and net.is_dhcp:
                    return vmid, net
        return None

    def _lease_for(self, mac: str) -> Lease | None:
        found = self._vmid_for_mac(mac)
        if found is None:
            return None
        ip = self.leases.get(mac)
        if ip is None:
            self._prune_leases()
            used = set(self.leases.values())
            for vmid in self.containers:
                for net in self._nets_of(vmid):
                    if net.static_interface:
                        used.add(str(net.static_interface.ip))
            free = [a for a in self.net.dhcp_pool() if str(a) not in used]
            if not free:
                return None
            ip = str(free[0])
            self.leases[mac] = ip
            self.store.save("leases", self.leases)
        rec = self.containers[found[0]]
        return Lease(ip=ip, prefix_len=self.net.subnet.prefixlen, router=str(self.net.gateway),
                     dns=[], lease_time=3600, hostname=str(rec.config.get("hostname", "")))  # fmt: skip

    def _address6_for(self, mac: str) -> str | None:
        """DHCPv6 for a running container's ``ip6=dhcp`` interface: an address
        of the IPv6 subnet fixed by the MAC (::d:XXXX:XXXX from its last three
        bytes), so it stays the same across restarts."""
        for vmid in self.running:
            for net in self._nets_of(vmid):
                if net.hwaddr and net.hwaddr.lower() == mac and net.ip6 == "dhcp":
                    low = int(mac.replace(":", "")[6:], 16)
                    return str(self.net.subnet6.network_address + (0xD << 32) + low)
        return None

    def _wants_ra(self, mac: str) -> bool:
        """Router advertisements go to running ``ip6=auto`` interfaces only."""
        return any(net.hwaddr and net.hwaddr.lower() == mac and net.ip6 == "auto"
                   for vmid in self.running for net in self._nets_of(vmid))  # fmt: skip

    def _prune_leases(self) -> None:
        """Drop the leases of MAC addresses no container has any more."""
        macs = {net.hwaddr.lower() for vmid in self.containers for net in self._nets_of(vmid)
                if net.hwaddr}  # fmt: skip
        stale = [mac for mac in self.leases if mac not in macs]
        for mac in stale:
            del self.leases[mac]
        if stale:
            self.store.save("leases", self.leases)

    def _delay_for(self, mac: str) -> float:
        found = self._vmid_for_mac(mac)
        extra = self.faults.dhcp_delay.get(found[0], 0.0) if found else 0.0
        return self.dhcp_delay + extra

    def _on_lease(self, mac: str, ip: str) -> None:
        log.info("DHCP lease %s -> %s", mac, ip)

    # create ----------------------------------------------------------------
    def _check_storage(self, storage: str, content: str) -> None:
        spec = STORAGES.get(storage)
        if spec is None:
            raise PveError(500, f"storage '{storage}' does not exist")
        if content not in spec.content:
            what = {"rootdir": "container directories", "vztmpl": "templates"}[content]
            raise PveError(500, f"storage '{storage}' does not support {what}")

    def template_file(self, volid: str) -> Path:
        storage, _, rest = volid.partition(":")
        if not rest.startswith("vztmpl/"):
            raise PveError(500, f"volume '{volid}' does not exist")
        self._check_storage(storage, "vztmpl")
        path = self.store.template_dir / rest.removeprefix("vztmpl/")
        if "/" in rest.removeprefix("vztmpl/") or not path.exists():
            raise PveError(500, f"volume '{volid}' does not exist")
        return path

    def _create_mount_params(self, params: dict[str, Any], user: str) -> dict[str, MountPoint]:
        """pve-container's create_vm before its task: a bare size in ``rootfs``
        or ``mp[n]`` is a size on ``storage``; mount points need a rootfs; every
        volume's storage must exist and hold container directories (a
        parameter error on ``storage``); without any, ``storage:4`` (4 GiB)."""
        storage = str(params.get("storage", "local"))
        mps = {k: MountPoint.parse(k, volumes.with_default_storage(str(v), storage))
               for k, v in params.items() if volumes.is_mount_key(k)}  # fmt: skip
        if mps and "rootfs" not in mps:
            raise PveError(500, "mount points configured, but 'rootfs' not set - aborting")
        for mp in mps.values():
            if mp.storage is not None:
                self._check_rootdir_storage(mp.storage)
            elif user != perms.ROOT:
                raise PveError(500, "Only root can pass arbitrary filesystem paths.")
        if not mps:
            self._check_rootdir_storage(storage)
            mps["rootfs"] = MountPoint.parse("rootfs", f"{storage}:4")  # "defaults to 4GB"
        return mps

    def _check_rootdir_storage(self, storage: str) -> None:
        """create_vm's check_and_activate_storage."""
        spec = STORAGES.get(storage)
        if spec is None:
            raise PveError(500, f"storage '{storage}' does not exist")
        if "rootdir" not in spec.content:
            raise param_error(
                {"storage": f"storage '{storage}' does not support container directories"}
            )

    async def _allocate_disks(self, vmid: int, mps: dict[str, MountPoint]) -> dict[str, str]:
        """PVE::LXC::create_disks: each ``STORAGE:SIZE_GB`` becomes a new volume
        (rootfs first, so it gets disk-0), its size written in the config as
        ``size=``; bind mounts and existing volumes are written as given.  A
        mount point's volume is an ext4 image of that size (volumes.allocate)."""
        out: dict[str, str] = {}
        made: list[str] = []
        try:
            for key in volumes.mount_keys(mps):
                mp = mps[key]
                new = mp.new_size_gb
                if new is None:
                    out[key] = mp.format()
                    continue
                volid = volumes.free_disk_name(self.store.root, new[0], vmid, made)
                size_kb = int(new[1] * 1024) * 1024
                if key != "rootfs":
                    await volumes.allocate(self.store.root, volid, size_kb * 1024)
                made.append(volid)
                out[key] = MountPoint(key, volid, mp.options).format(size=str(size_kb * 1024))
        except Exception:
            for volid in made:
                await volumes.free(self.store.root, volid)
            raise
        return out

    async def create(self, params: dict[str, Any], user: str) -> str:
        vmid = int(params["vmid"])
        pool = str(params["pool"]) if params.get("pool") else None
        if pool:
            self.pools.check_exists(pool)
        if vmid in self.containers:
            raise PveError(500, f"CT {vmid} already exists on node '{self.name}'")
        # create_vm's order: pool, permissions, the template, then the storages
        perms.check_ct_modify_config_perm(user, None, params, [],
                                          bool(params.get("unprivileged", True)))  # fmt: skip
        tarball = self.template_file(str(params["ostemplate"]))
        mps = self._create_mount_params(params, user)
        # create_vm's worker holds the config flock for its whole run
        # (lock_config($vmid, $code)): taken here, handed to the task, so a
        # start posted meanwhile waits for it ("trying to acquire lock...")
        flock = await self._take_file_lock(vmid)
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                flock.release()

        try:
            if vmid in self.containers:
                raise PveError(500, f"CT {vmid} already exists on node '{self.name}'")
            config: dict[str, Any] = {k: config_value(v) for k, v in params.items()
                                      if k not in _CREATE_ONLY
                                      and not volumes.is_mount_key(k)}  # fmt: skip
            normalize_config(config)
            config.update(await self._allocate_disks(vmid, mps))
            config.setdefault("hostname", f"CT{vmid}")
            config.setdefault("arch", "amd64")
            ctconfig.create_defaults(config, params)
            for key in net_keys(config):
                kv = split_property_string(str(config[key]))
                if "hwaddr" not in kv:
                    kv["hwaddr"] = random_hwaddr()
                kv.setdefault("type", "veth")
                config[key] = format_net(kv)
            config["lock"] = "create"
            rec = ContainerRecord(vmid=vmid, config=config)
            self.save(rec)
        except BaseException:
            release()
            raise
        made = {key for key, mp in mps.items() if mp.new_size_gb is not None}
        password = params.get("password")
        keys = params.get("ssh-public-keys")
        start_after = bool(params.get("start"))

        async def body(task: Task) -> None:
            self._check_given_volumes(vmid, config, made)
            task.log(f"extracting archive '/var/lib/vz/template/cache/{tarball.name}'")
            started = time.monotonic()
            base = await asyncio.to_thread(templates.ensure_base, tarball)
            fs = self.fs(vmid)
            fs.create(base)
            await task.sleep(DURATIONS["vzcreate"])
            size = tarball.stat().st_size
            task.log(f"Total bytes read: {size} ({size >> 20}MiB, "
                     f"{size / max(time.monotonic() - started, 0.001) / (1 << 20):.0f}MiB/s)")  # fmt: skip
            task.log("Detected OS distribution 'debian'")
            self._check_static_ips(parse_nets(config))
            root = await fs.mount()
            try:
                for line in ctconfig.detect_ostype(root, config):
                    task.log(line)  # Setup->new warns
                lines = await apply_create_config(root, str(config["hostname"]),
                                                  password and str(password),
                                                  keys and str(keys), self.host_keys)  # fmt: skip
            finally:
                await fs.unmount()
            for line in lines:
                task.log(line)
            ctconfig.finish_create(config, vmid)
            self.set_lock(rec, None)
            if pool:
                self.pools.add_vm(vmid, pool)
            release()
            if start_after:
                starter = asyncio.create_task(self._start_after_create(task.upid, vmid, user))
                self._watchers.add(starter)
                starter.add_done_callback(self._watchers.discard)

        async def failed() -> None:
            # create_vm's error path (still under the flock) destroys the
            # disks it made (destroy_disks) and the config
            try:
                for volid in volumes.referenced_volumes(config):
                    if volid.split(":", 1)[-1].startswith(f"vm-{vmid}-"):
                        await volumes.free(self.store.root, volid)
                await self._forget(vmid)
            finally:
                release()

        return self.tasks.start("vzcreate", str(vmid), user, body, on_error=failed)

    def _check_given_volumes(self, vmid: int, config: dict[str, Any], made: set[str]) -> None:
        """create_vm's worker: create_disks keeps a volume that is not
        ``STORAGE:SIZE_IN_GiB`` (``$NEW_DISK_RE``, so ``local-lvm:8G`` too) as
        an existing volume; mount_all's activate_volumes then fails on one
        that does not exist (LvmThinPlugin's activate_lv: "no such logical
        volume pve/8G"; a dir storage's parse_volname: "unable to parse
        directory volume name '8G'"), and the task ends "unable to create
        CT N - ..." (the CT and the disks it made are removed).  ``made``:
        the mount point keys create_disks allocated."""
        rootfs_volumes = {str(rec.config.get("rootfs", "")).split(",", 1)[0]
                          for rec in self.containers.values() if rec.vmid != vmid}  # fmt: skip
        for key in volumes.mount_keys(config):
            mp = MountPoint.parse(key, str(config[key]))
            if mp.kind != "volume" or key in made:
                continue
            if mp.volume in rootfs_volumes or self._volume_exists(mp.volume):
                continue
            spec = STORAGES.get(str(mp.storage))
            if spec is not None and spec.type == "lvmthin":
                problem = f"no such logical volume {spec.vgname}/{mp.volname}"
            elif re.fullmatch(r"\d+/\S+", mp.volname):
                problem = f"volume '{mp.volume}' does not exist"
            else:
                problem = f"unable to parse directory volume name '{mp.volname}'"
            raise TaskFailed(f"unable to create CT {vmid} - {problem}")

    def _volume_exists(self, volume: str) -> bool:
        try:
            return volumes.volume_dir(self.store.root, volume).is_dir()
        except ValueError:
            return False

    async def _start_after_create(self, create_upid: str, vmid: int, user: str) -> None:
        """create_vm's worker calls ``PVE::API2::LXC::Status->vm_start`` once
        the CT is made: a separate ``vzstart`` task, while the ``vzcreate``
        task ends OK; a failed start keeps the container."""
        record = await self.tasks.wait(create_upid)
        status = record.exitstatus or ""
        if not (status == "OK" or status.startswith("WARNINGS")):
            return
        try:
            await self.start(vmid, user)
        except PveError as exc:
            log.warning("start after creating CT %d: %s", vmid, exc.message)

    # start/stop --------------------------------------------------------------
    @staticmethod
    def _check_skiplock(user: str, skiplock: bool) -> None:
        """vm_start / vm_stop: ``raise_param_exc({ skiplock => "Only root may
        use this option." })`` unless the user is root@pam (a token is not)."""
        if skiplock and user != perms.ROOT:
            raise param_error({"skiplock": "Only root may use this option."})

    def _check_power_lock(self, rec: ContainerRecord, skiplock: bool) -> None:
        """In the task, vm_start / vm_stop: ``check_lock`` unless skiplock or
        the lock is ``mounted`` (``has_lock($conf, 'mounted')``)."""
        if rec.lock and rec.lock != "mounted" and not skiplock:
            raise TaskFailed(f"CT is locked ({rec.lock})")

    async def start(self, vmid: int, user: str, skiplock: bool = False) -> str:
        """PVE::API2::LXC::Status vm_start: before the task only the skiplock
        permission and "CT N already running"; the ``vzstart`` task then takes
        the config flock (lock_config), loads the config (a missing CT fails
        the task: "Configuration file ... does not exist"), refuses a
        template and checks the lock (``CT is locked (backup)``)."""
        self._check_skiplock(user, skiplock)
        if vmid in self.running:
            raise PveError(500, f"CT {vmid} already running")

        async def body(task: Task) -> None:
            async with self.task_config_lock(task, vmid) as rec:
                if str(rec.config.get("template", "0")) == "1":
                    raise TaskFailed("you can't start a CT if it's a template")
                self._check_power_lock(rec, skiplock)
                await self._start_body(task, vmid)

        return self.tasks.start("vzstart", str(vmid), user, body)

    async def _start_body(self, task: Task, vmid: int) -> None:
        # PVE::API2::LXC::Status vm_start, in the task: first of all
        if str(self.get(vmid).config.get("template", "")) == "1":
            raise TaskFailed("you can't start a CT if it's a template")
        if vmid in self.running:
            raise TaskFailed(f"CT {vmid} already running")
        for line in await self.apply_pending(vmid):  # vm_start applies them
            task.log(line)
        rec = self.get(vmid)
        nets = parse_nets(rec.config)
        for net in nets:
            if net.bridge != API_BRIDGE:
                raise TaskFailed(f"bridge '{net.bridge}' does not exist")
        self._check_static_ips(nets)
        binds = self._mount_binds(task, vmid, rec.config)
        await task.sleep(DURATIONS["vzstart"])
        fs = self.fs(vmid)
        ns = self.net.netns(vmid)
        for net in nets:
            if net.hwaddr and self._dhcp is not None:
                self._dhcp.forget(net.hwaddr.lower())  # a new boot waits for its lease again
        mounted = self._volume_mounts.setdefault(vmid, [])
        try:
            # each volume's file system is loop-mounted, then bind-mounted in
            for mp in volumes.mount_points(rec.config):
                if mp.kind == "volume" and mp.volume not in mounted:
                    await volumes.mount(self.store.root, mp.volume)
                    mounted.append(mp.volume)
            await network.create_container_link(self.net, vmid, nets)
            root = await fs.mount()
            apply_start_config(root, {**rec.config, "vmid": vmid}, nets, self.net.egress)
            ct = await runtime.boot(fs, vmid, str(rec.config.get("hostname", f"CT{vmid}")), ns,
                                    machine=f"{self.net.tag}-{vmid}", binds=binds)  # fmt: skip
        except Exception:
            await network.delete_container_link(self.net, vmid)
            await fs.unmount()
            await self._unmount_volumes(vmid)
            raise
        self.running[vmid] = ct
        watcher = asyncio.create_task(self._watch(ct))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    def _mount_binds(self, task: Task, vmid: int, config: dict[str, Any]) -> list[runtime.Bind]:
        """The ``mp[n]`` to mount at boot, in PVE's order (by path), as
        PVE::LXC::__mountpoint_mount checks them in the pre-start hook: a bind
        mount's host directory must exist ("directory '...' does not exist")
        and the start then fails as vm_start reports a failed hook."""
        binds = []
        for mp in volumes.mount_points(config):
            if mp.kind == "volume":
                src = volumes.mount_dir(self.store.root, mp.volume)
                exists = volumes.image_path(self.store.root, mp.volume).is_file()
                problem = None if exists else f"volume '{mp.volume}' does not exist"
            elif mp.kind == "bind":
                src = Path(mp.volume)
                problem = None if src.is_dir() else f"directory '{mp.volume}' does not exist"
            else:
                src, problem = Path(mp.volume), "pvesim does not pass devices into containers"
            if problem:
                task.log(f"lxc-start: {vmid}: ../src/lxc/conf.c: run_buffer: {problem}")
                raise TaskFailed(f"startup for container '{vmid}' failed")
            binds.append(runtime.Bind(src, mp.path, mp.read_only))
        return binds

    async def _watch(self, ct: RunningContainer) -> None:
        """When a container's nspawn ends (halted inside, killed), tidy up."""
        await ct.process.wait()
        if self.running.get(ct.vmid) is ct:
            del self.running[ct.vmid]
        self.fs(ct.vmid).pidfile.unlink(missing_ok=True)
        await network.delete_container_link(self.net, ct.vmid)
        if ct.vmid in self.containers:
            await self.fs(ct.vmid).unmount()
        await self._unmount_volumes(ct.vmid)
        for line in await self.apply_pending(ct.vmid):  # as the poststop hook does
            log.warning("CT %d: %s", ct.vmid, line)
        ct.exited.set()

    async def _unmount_volumes(self, vmid: int) -> None:
        for volid in self._volume_mounts.pop(vmid, []):
            try:
                await volumes.unmount(self.store.root, volid)
            except Exception:
                log.exception("unmounting volume %s of CT %d", volid, vmid)

    async def _halt(self, vmid: int) -> None:
        ct = self.running.get(vmid)
        if ct is None:
            return
        await runtime.kill(ct)
        await ct.exited.wait()

    def _running_or_fail(self, vmid: int) -> RunningContainer:
        ct = self.running.get(vmid)
        if ct is None:
            raise PveError(500, f"CT {vmid} not running")
        return ct

    async def stop(self, vmid: int, user: str, skiplock: bool = False) -> str:
        """PVE::API2::LXC::Status vm_stop: "CT N not running" before the task
        (a missing CT too: check_running needs no config); the ``vzstop``
        task takes the flock, loads the config and checks the lock as
        vm_start does, then kills the container."""
        self._check_skiplock(user, skiplock)
        self._running_or_fail(vmid)

        async def body(task: Task) -> None:
            async with self.task_config_lock(task, vmid) as rec:
                self._check_power_lock(rec, skiplock)
                await task.sleep(DURATIONS["vzstop"])
                await self._halt(vmid)

        return self.tasks.start("vzstop", str(vmid), user, body)

    async def shutdown_ct(self, vmid: int, user: str, timeout: int, force_stop: bool) -> str:
        """PVE::API2::LXC::Status vm_shutdown: "CT N not running" before the
        task; the ``vzshutdown`` task takes the flock, loads the config and
        always checks the lock (no skiplock, no exception for ``mounted``)."""
        self._running_or_fail(vmid)

        async def body(task: Task) -> None:
            async with self.task_config_lock(task, vmid) as rec:
                if rec.lock:
                    raise TaskFailed(f"CT is locked ({rec.lock})")
                await self._clean_halt(task, vmid, timeout, force_stop)

        return self.tasks.start("vzshutdown", str(vmid), user, body)

    async def _clean_halt(self, task: Task, vmid: int, timeout: int, force_stop: bool) -> None:
        ct = self.running.get(vmid)
        if ct is None:
            return
        await task.sleep(DURATIONS["vzshutdown"])
        if not await runtime.poweroff(ct, timeout):
            if not force_stop:
                raise TaskFailed("container did not shut down within the timeout")
            task.log("shutdown timed out, stopping the container")
            await runtime.kill(ct)
        await ct.exited.wait()

    async def reboot(self, vmid: int, user: str, timeout: int) -> str:
        """PVE::API2::LXC::Status vm_reboot: "VM N not running" before the
        task; the ``vzreboot`` task (PVE::LXC::vm_reboot) takes the flock,
        ends at once if the CT is no longer running, else stops it (killing
        it after ``timeout``) and starts it.  It never checks the lock."""
        if vmid not in self.running:
            raise PveError(500, f"VM {vmid} not running")

        async def body(task: Task) -> None:
            async with self.task_config_lock(task, vmid):
                if vmid not in self.running:
                    return
                await self._clean_halt(task, vmid, timeout, True)
                self.get(vmid)  # load_config
                await self._start_body(task, vmid)

        return self.tasks.start("vzreboot", str(vmid), user, body)

    # destroy -----------------------------------------------------------------
    async def destroy(self, vmid: int, user: str, force: bool) -> str:
        async with self.config_lock(vmid):
            rec = self.get(vmid)
            # PVE checks protection first (AbstractConfig::check_protection)
            if str(rec.config.get("protection", "0")) == "1":
                raise PveError(500, f"can't remove CT {vmid} - protection mode enabled")
            self.check_lock(rec)
            if vmid in self.running and not force:
                raise PveError(500, f"unable to destroy CT {vmid} - container is running")
            self.set_lock(rec, "destroyed")

        async def body(task: Task) -> None:
            await task.sleep(DURATIONS["vzdestroy"])
            await self._halt(vmid)
            task.log(f'Logical volume "vm-{vmid}-disk-0" successfully removed.')
            # destroy_lxc_container frees every volume the CT owns (its mount
            # points and unused disks); bind mounts are the host's and stay
            for volid in volumes.owned_volumes(self.store.root, vmid):
                await volumes.free(self.store.root, volid)
                task.log(f'Logical volume "{volid.split(":", 1)[1]}" successfully removed.')
            self.pools.remove_vm(vmid)  # remove_vm_access
            await self._forget(vmid)

        async def failed() -> None:
            self.set_lock(rec, None)

        return self.tasks.start("vzdestroy", str(vmid), user, body, on_error=failed)

    # inspection --------------------------------------------------------------
    def status(self, vmid: int) -> dict[str, Any]:
        rec = self.get(vmid)
        cfg = rec.config
        ct = self.running.get(vmid)
        mem, cpu_seconds = runtime.namespace_usage(ct.init_pid) if ct else (0, 0.0)
        rootfs = split_property_string(str(cfg.get("rootfs", "")), "volume")
        out: dict[str, Any] = {
            "vmid": vmid,
            "name": cfg.get("hostname", f"CT{vmid}"),
            "status": "running" if ct else "stopped",
            "type": "lxc",
            "cpus": int(cfg.get("cores", 1)),
            "maxmem": int(cfg.get("memory", 512)) << 20,
            "maxswap": int(cfg.get("swap", 512)) << 20,
            "maxdisk": size_to_bytes(rootfs.get("size", "4G")),
            "mem": mem,
            "swap": 0,
            "disk": self._disk_used(vmid) if ct else 0,
            "cpu": round(cpu_seconds / max(ct.uptime, 1) / max(int(cfg.get("cores", 1)), 1), 4)
            if ct else 0,
            "uptime": ct.uptime if ct else 0,
            "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
            "ha": {"managed": 0},
            "template": int(cfg.get("template", 0)),
        }  # fmt: skip
        if ct:
            out["pid"] = ct.init_pid
        if rec.lock:
            out["lock"] = rec.lock
        if cfg.get("tags"):
            out["tags"] = cfg["tags"]
        return out

    def _disk_used(self, vmid: int) -> int:
        """Walking the upper layer costs; status polls may come often."""
        now = time.monotonic()
        cached = self._disk_cache.get(vmid)
        if cached is None or now - cached[0] > 10:
            cached = (now, self.fs(vmid).disk_used())
            self._disk_cache[vmid] = cached
        return cached[1]

    async def interfaces(self, vmid: int) -> list[dict[str, Any]] | None:
        """pve-container's PVE::LXC::get_interfaces: ``ip --json a`` in the
        container's network namespace; nothing (``null``) when no container
        process is found - stopped, or no such CT.  ``inet``/``inet6`` hold
        the last address of their family, as PVE's loop leaves them."""
        ct = self.running.get(vmid)
        if ct is None:
            return None
        out = []
        for link in await network.netns_addresses(ct.netns):
            entry: dict[str, Any] = {"name": link["ifname"]}
            addrs = []
            for a in link.get("addr_info", []):
                entry[a["family"]] = f"{a['local']}/{a['prefixlen']}"
                addrs.append({"ip-address-type": a["family"], "ip-address": a["local"],
                              "prefix": a["prefixlen"]})  # fmt: skip
            hwaddr = link.get("address", "00:00:00:00:00:00")
            entry.update({"ip-addresses": addrs, "hardware-address": hwaddr, "hwaddr": hwaddr})
            out.append(entry)
        return out

    # faults that act on containers ------------------------------------------
    async def hold_lock(self, vmid: int, lock: str, seconds: float) -> None:
        rec = self.get(vmid)
        self.set_lock(rec, lock)

        async def release() -> None:
            if vmid in self.containers and self.containers[vmid].lock == lock:
                self.set_lock(self.containers[vmid], None)

        self.later(seconds, release)

    async def hold_file_lock(self, vmid: int, seconds: float) -> None:
        lock = self._file_locks.setdefault(vmid, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), FILE_LOCK_TIMEOUT)
        except TimeoutError:
            raise PveError(409, f"the config file lock of CT {vmid} is busy") from None

        async def release() -> None:
            if lock.locked():
                lock.release()

        self.later(seconds, release)

    async def refuse_ssh(self, vmid: int, seconds: float) -> None:
        ct = self._running_or_fail(vmid)
        await network.set_ssh_refused(ct.netns, True)

        async def restore() -> None:
            if self.running.get(vmid) is ct:
                await network.set_ssh_refused(ct.netns, False)

        self.later(seconds, restore)

    async def drop_ssh(self, vmid: int) -> int:
        ct = self._running_or_fail(vmid)
        return await runtime.drop_ssh_connections(ct.init_pid)

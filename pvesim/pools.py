"""Resource pools (``/pools``), as pve-manager's PVE::API2::Pool keeps them
in user.cfg: a pool has a comment, guests and storages; a guest is in at
most one pool.  Kept in ``STATE_DIR/pools.json``."""

from __future__ import annotations

import re
from typing import Any

from pvesim.errors import PveError
from pvesim.perms import perm_error
from pvesim.state import StateStore


class Pools:
    """The node's pools; every change is written at once."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.pools: dict[str, dict[str, Any]] = store.load("pools", {})

    def _save(self) -> None:
        self.store.save("pools", self.pools)

    def _get(self, poolid: str) -> dict[str, Any]:
        pool = self.pools.get(poolid)
        if pool is None:
            raise PveError(500, f"pool '{poolid}' does not exist")
        return pool

    def check_exists(self, poolid: str) -> None:
        """PVE::RPCEnvironment::check_pool_exist: a 403, not a 500."""
        if poolid not in self.pools:
            raise perm_error(f"pool '{poolid}' does not exist")

    def pool_of(self, vmid: int) -> str | None:
        return next((p for p, cfg in self.pools.items() if vmid in cfg["vms"]), None)

    def add_vm(self, vmid: int, poolid: str) -> None:
        """PVE::AccessControl::add_vm_to_pool (a no-op if the pool is gone)."""
        if poolid in self.pools:
            self.remove_vm(vmid)
            self.pools[poolid]["vms"] = sorted({*self.pools[poolid]["vms"], vmid})
            self._save()

    def remove_vm(self, vmid: int) -> None:
        """remove_vm_from_pool, as a destroy does (remove_vm_access)."""
        for cfg in self.pools.values():
            if vmid in cfg["vms"]:
                cfg["vms"].remove(vmid)
                self._save()

    def index(self) -> list[dict[str, Any]]:
        return [{"poolid": p, **({"comment": c["comment"]} if "comment" in c else {})}
                for p, c in sorted(self.pools.items())]  # fmt: skip

    def create(self, poolid: str, comment: str | None) -> None:
        if poolid in self.pools:
            raise PveError(500, f"pool '{poolid}' already exists")
        if "/" in poolid:
            parent = poolid.rsplit("/", 1)[0]
            if parent not in self.pools:
                raise PveError(500, f"parent '{parent}' of pool '{poolid}' does not exist")
        if not re.match(r"[A-Za-z]", poolid.rsplit("/", 1)[-1]):
            raise PveError(500, "pool name must start with a letter")
        self.pools[poolid] = {"vms": [], "storage": [],
                              **({"comment": comment} if comment else {})}  # fmt: skip
        self._save()

    def update(self, poolid: str, params: dict[str, Any]) -> None:
        """update_pool: ``comment``; ``vms``/``storage`` added, or removed
        with ``delete=1``; a guest of another pool moves only with ``allow-move``."""
        pool = self._get(poolid)
        delete = bool(params.get("delete"))
        if params.get("comment") is not None:
            pool["comment"] = str(params["comment"])
        for text in re.split(r"[,;\s]+", str(params.get("vms") or "")):
            if not text:
                continue
            vmid = int(text)
            if delete:
                if vmid not in pool["vms"]:
                    raise PveError(500, f"VM {vmid} is not a pool member")
                pool["vms"].remove(vmid)
                continue
            if vmid in pool["vms"]:
                raise PveError(500, f"VM {vmid} is already a pool member")
            other = self.pool_of(vmid)
            if other is not None:
                if not params.get("allow-move"):
                    raise PveError(500, f"VM {vmid} belongs already to pool '{other}' and "
                                   "'allow-move' is not set")  # fmt: skip
                self.pools[other]["vms"].remove(vmid)
            pool["vms"] = sorted({*pool["vms"], vmid})
        for storage in re.split(r"[,;\s]+", str(params.get("storage") or "")):
            if not storage:
                continue
            if delete:
                if storage not in pool["storage"]:
                    raise PveError(500, f"Storage '{storage}' is not a pool member")
                pool["storage"].remove(storage)
            elif storage in pool["storage"]:
                raise PveError(500, f"Storage '{storage}' is already a pool member")
            else:
                pool["storage"] = sorted({*pool["storage"], storage})
        self._save()

    def delete(self, poolid: str) -> None:
        pool = self._get(poolid)
        for sub in self.pools:
            if sub.startswith(f"{poolid}/"):
                raise PveError(500, f"pool '{poolid}' is not empty (contains pool '{sub}')")
        if pool["vms"]:
            raise PveError(500, f"pool '{poolid}' is not empty (contains VM {pool['vms'][0]})")
        if pool["storage"]:
            raise PveError(
                500, f"pool '{poolid}' is not empty (contains storage '{pool['storage'][0]}')"
            )
        del self.pools[poolid]
        self._save()

    def read(self, poolid: str, kind: str | None, guests: list[dict[str, Any]],
             storages: list[dict[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
        """GET /pools?poolid=: the pool with its members (as /cluster/resources
        lists them), filtered by ``type``."""
        pool = self._get(poolid)
        members = [g for g in guests if g["vmid"] in pool["vms"] and kind in (None, g["type"])]
        if kind in (None, "storage"):
            members += [s for s in storages if s["storage"] in pool["storage"]]
        entry: dict[str, Any] = {"members": members}
        if "comment" in pool:
            entry["comment"] = pool["comment"]
        entry["poolid"] = poolid
        return [entry]

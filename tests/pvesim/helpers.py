"""Small helpers for driving the simulator from tests."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.request
from typing import Any
from urllib.parse import urlparse

from proxmoxer import ProxmoxAPI


def host_port(sim: dict[str, Any]) -> tuple[str, int]:
    u = urlparse(sim["url"])
    assert u.hostname and u.port
    return u.hostname, u.port


def token_api(sim: dict[str, Any], timeout: int = 30) -> Any:
    host, port = host_port(sim)
    user, token_name = sim["token_id"].split("!")
    return ProxmoxAPI(host, port=port, user=user, token_name=token_name,
                      token_value=sim["token_secret"], verify_ssl=sim["cafile"],
                      timeout=timeout)  # fmt: skip


def ticket_api(sim: dict[str, Any], timeout: int = 30) -> Any:
    host, port = host_port(sim)
    return ProxmoxAPI(host, port=port, user=sim["user"], password=sim["password"],
                      verify_ssl=sim["cafile"], timeout=timeout)  # fmt: skip


def wait_task(api: Any, node: str, upid: str, timeout: float = 120) -> dict[str, Any]:
    """Poll a task until it stops; return its final status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.nodes(node).tasks(upid).status.get()
        if status["status"] == "stopped":
            return dict(status)
        time.sleep(0.05)
    raise TimeoutError(f"task {upid} still running after {timeout}s")


def wait_start_after_create(api: Any, node: str, create_upid: str,
                            timeout: float = 120) -> dict[str, Any]:  # fmt: skip
    """The ``vzstart`` task a ``start=1`` create launches once its own task
    has ended OK (PVE::API2::LXC create_vm calls Status->vm_start); waits for
    it to stop and returns its status."""
    create = wait_task(api, node, create_upid, timeout)
    assert create["exitstatus"] == "OK", create
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [t for t in api.nodes(node).tasks.get(source="all", vmid=create["id"],
                                                      typefilter="vzstart",
                                                      since=create["starttime"])
                 if t["upid"] != create_upid]  # fmt: skip
        if found:
            return wait_task(api, node, found[0]["upid"], timeout)
        time.sleep(0.05)
    raise TimeoutError(f"no vzstart task after {create_upid}")


def task_log(api: Any, node: str, upid: str) -> list[str]:
    return [e["t"] for e in api.nodes(node).tasks(upid).log.get(limit=10000)]


def raw(sim: dict[str, Any], method: str, path: str, *, headers: dict[str, str] | None = None,
        data: bytes | None = None, base: str | None = None) -> tuple[int, str, dict[str, Any]]:  # fmt: skip
    """One HTTPS request without any client library: (status, reason, json body)."""
    ctx = ssl.create_default_context(cafile=sim["cafile"])
    req = urllib.request.Request((base or sim["url"]) + path, method=method, data=data,
                                 headers=headers or {})  # fmt: skip
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return resp.status, resp.reason, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, exc.reason, json.loads(body) if body else {}


def token_header(sim: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"PVEAPIToken={sim['token_id']}={sim['token_secret']}"}


def admin(sim: dict[str, Any], action: str, body: dict[str, Any] | None = None,
          method: str = "POST") -> Any:  # fmt: skip
    status, reason, data = raw(
        sim, method, f"/{action}", base=sim["admin_url"],
        headers={**token_header(sim), "Content-Type": "application/json"},
        data=json.dumps(body or {}).encode() if method == "POST" else None,
    )  # fmt: skip
    assert status == 200, (status, reason, data)
    return data["data"]


def wait_port(host: str, port: int, timeout: float = 60) -> float:
    """Wait until a TCP port accepts; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with socket.create_connection((host, port), timeout=1):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} not reachable after {timeout}s")

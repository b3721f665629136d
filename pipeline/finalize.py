"""Phase 5, finalize: discover listening services, check the template's
health check answers, take the optional baseline snapshot, record it all."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

from pipeline.context import Context, off_loop
from provisioner.errors import PermanentError
from provisioner.templates.model import HealthCheck, HealthKind

_USERS_RE = re.compile(r'\("([^"]+)",pid=(\d+)')


def parse_listening(output: str) -> list[dict[str, Any]]:
    """``ss -Htulnp`` lines -> [{proto, address, port, process}].

    With one protocol ``ss`` drops the Netid column: a UDP socket is then
    told by its state, ``UNCONN``.
    """
    services = []
    seen = set()
    for line in output.splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        proto = "udp" if parts[0].startswith("udp") or parts[0] == "UNCONN" else "tcp"
        local = parts[4] if parts[0] in ("tcp", "udp") else parts[3]
        address, _, port = local.rpartition(":")
        if not port.isdigit():
            continue
        match = _USERS_RE.search(line)
        process = match.group(1) if match else ""
        key = (proto, address.strip("[]"), int(port), process)
        if key in seen:
            continue
        seen.add(key)
        services.append({"proto": proto, "address": address.strip("[]"), "port": int(port),
                         "process": process})  # fmt: skip
    services.sort(key=lambda s: (s["port"], s["proto"], s["address"]))
    return services


def _unverified_tls() -> ssl.SSLContext:
    """TLS for an ``https`` check: the container's own certificate, made in
    it and self-signed, is not verified (the check says the service answers
    over TLS, not who it is; it sends nothing secret)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _probe(ip: str, check: HealthCheck) -> str | None:
    """None when healthy, else why not."""
    if check.kind == HealthKind.TCP:
        import socket

        try:
            with socket.create_connection((ip, check.port), timeout=3):
                return None
        except OSError as exc:
            return f"TCP {ip}:{check.port}: {exc}"
    scheme = "https" if check.kind == HealthKind.HTTPS else "http"
    url = f"{scheme}://{ip}:{check.port}{check.path}"
    try:
        with urllib.request.urlopen(url, timeout=5, context=_unverified_tls()) as resp:
            body = resp.read(65536).decode(errors="replace")
            status = resp.status
    except urllib.error.HTTPError as exc:
        status, body = exc.code, ""
    except OSError as exc:
        return f"GET {url}: {exc}"
    if status != check.expect_status:
        return f"GET {url} answered {status}, expected {check.expect_status}"
    if check.contains and check.contains not in body:
        return f"GET {url} does not contain {check.contains!r}"
    return None


async def health_check(ctx: Context, ip: str, check: HealthCheck) -> None:
    deadline = time.monotonic() + check.timeout
    while True:
        problem = await asyncio.to_thread(_probe, ip, check)
        if problem is None:
            return
        if time.monotonic() >= deadline:
            raise PermanentError(f"health check failed: {problem}",
                                 hint="look at the scripts' output above and the service's logs")  # fmt: skip
        await asyncio.sleep(0.5)


async def run(ctx: Context) -> None:
    ct = ctx.container()
    assert ct.ip is not None
    session = await ctx.ssh()
    ctx.step("discovering listening services", 0.2)
    lines: list[str] = []
    await session.run("ss -Htulnp", on_line=lambda _stream, line: lines.append(line))
    services = parse_listening("\n".join(lines))
    for svc in services:
        ctx.log(f"listening: {svc['proto']} {svc['address']}:{svc['port']} {svc['process']}")
    ctx.update(services=services)
    check = ctx.template.health
    if check is not None:
        ctx.step(f"health check: {check.kind.value} port {check.port}", 0.5)
        await health_check(ctx, ct.ip, check)
    snap = ctx.template.snapshot
    if snap is not None:
        snapshots = await off_loop(ctx.pve.snapshots, ct.vmid or ctx.read_vmid())
        if snap.name not in {s.name for s in snapshots}:
            ctx.step(f"taking the baseline snapshot '{snap.name}'", 0.8)
            owned = await off_loop(ctx.owned)
            upid = await off_loop(ctx.pve.snapshot_create, owned, snap.name,
                                  snap.description or None)  # fmt: skip
            await off_loop(ctx.pve.wait_for_task, upid, timeout=ctx.settings.task_timeout,
                           poll=0.25)  # fmt: skip
    ctx.step(f"ready: {ct.ip}, host key {ct.ssh_host_key_fingerprint}", 1.0)

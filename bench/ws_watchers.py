"""Websocket watchers: many clients following one container's log through the relay.

N websocket clients (aiohttp, spread over --processes processes) follow
``/ws/containers/<id>/events`` of one container, served by a real
``provisioner web`` (gunicorn gthread), while a real ``provisioner worker``
provisions it with the ``lines`` test template printing --lines lines.  All
watchers are connected before the job is queued; with --late K, K of them
connect only once half the lines are published and replay the rest.

Reports, per watcher: events and lines received, gaps, duplicates, order,
and a SHA-256 of every message compared with the stream read directly from
Redis (so "no watcher missed a line" is proven, not sampled); overall:
delivery latency from publish to receipt (p50/p99/max), lines/s per watcher
and in aggregate, time to the first and last line, the largest socket
backlogs (unread by the watchers / unsent by the web: which side is behind),
the CPU seconds of each process, and two baselines measured in the same
invocation: an EventReader on Redis in this process (every run), and a run
with 1 watcher alone, with ratios against it.  Latency is the receipt time
(``time.time()``) minus the event's own ``ts``: the same machine's clock, but
``ts`` has millisecond resolution and is truncated, so a latency reads
0 to 1 ms high.

    source /tmp/dev/env.sh  # optional: a running simulator and Redis
    .venv/bin/python bench/ws_watchers.py [--watchers 200] [--lines 20000] [--pause-ms 0]
        [--processes 2] [--late 0] [--web-workers 1] [--redis-pool N] [--no-baseline]

Each open stream holds one of the web's Redis connections while it blocks
on a read; the app sizes its pool for that (redis-py's default of 100 made
streams beyond the 100th fail), and --redis-pool overrides it through the
web's REDIS_URL.  Two watcher processes are plenty for the relay as it is
now, but they are the larger CPU cost: aiohttp's parsing plus the checks
here take ~15-25 us per message, the relay a few.

Uses PVESIM_INFO and REDIS_URL if set, else starts its own simulator (needs
root) and Redis.  Destroys its containers and stops what it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from array import array
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from bench.pipeline_overhead import start_redis
from provisioner import users
from provisioner.db import session_scope
from provisioner.events import EventReader
from provisioner.models import Container, ContainerEvent, Lifecycle, Node
from provisioner.nodes import client_for
from provisioner.queue import enqueue
from provisioner.requests import ProvisionRequest, submit
from provisioner.secrets.keyfile import load_secret_box
from tests.conftest import ROOT, start_simulator, stop_simulator
from tests.pipeline.conftest import NODE, Stack, build_stack

TEMPLATES = ROOT / "tests/pipeline/templates"
SCRIPT = "10-print.sh"  # the lines template's script printing "line 1" .. "line N"
CONNECT_CONCURRENCY = 20  # handshakes in flight per process


def pct(values: Any, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU of a process, its reaped children and its live descendants."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    user, system = (
        (int(fields[11]) + int(fields[13])) / tick,
        (int(fields[12]) + int(fields[14])) / tick,
    )
    for child in children:
        cu, cs = cpu_seconds(int(child))
        user, system = user + cu, system + cs
    return user, system


# -- the watchers (child processes) ------------------------------------------------


@dataclass
class Watch:
    """What one watcher saw; latencies in ms, of events published after it connected."""

    index: int
    late: bool
    connected_at: float = 0.0
    events: int = 0
    lines: int = 0
    bad_lines: int = 0  # a line out of sequence ("line k" after "line j", k != j + 1)
    gaps: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    last_seq: int = 0
    terminal: str = ""
    close_code: int | None = None
    digest: str = ""
    first_line: tuple[float, float] = (0.0, 0.0)  # (published, received)
    last_line: tuple[float, float] = (0.0, 0.0)
    caught_up_at: float = 0.0  # late watchers: receipt of the newest seq at connect time
    done_at: float = 0.0
    error: str = ""
    latencies: array = field(default_factory=lambda: array("f"))


async def follow(ws: Any, w: Watch, catchup: dict[str, int]) -> None:
    """Read until the server closes the stream, checking every message."""
    import aiohttp

    digest = hashlib.sha256()
    seen: set[int] = set()
    prev_seq = prev_line = 0
    ts_text, published = "", 0.0
    try:
        while True:
            msg = await ws.receive()
            now = time.time()
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type == aiohttp.WSMsgType.ERROR:
                    w.error = f"{type(msg.data).__name__}: {msg.data}"
                break
            digest.update(msg.data.encode() + b"\n")
            event = json.loads(msg.data)
            if event["ts"] != ts_text:  # many events share one millisecond
                ts_text = event["ts"]
                published = datetime.fromisoformat(ts_text).timestamp()
            seq = event["seq"]
            w.events += 1
            w.duplicates += seq in seen
            w.out_of_order += seq < prev_seq
            seen.add(seq)
            prev_seq = seq
            if published >= w.connected_at - 0.001:
                w.latencies.append((now - published) * 1000)
            if w.late and not w.caught_up_at and seq >= catchup.get("seq", 1 << 62):
                w.caught_up_at = now
            if event.get("script") == SCRIPT and event.get("stream") == "stdout":
                w.lines += 1
                number = int(event["message"].removeprefix("line "))
                w.bad_lines += number != prev_line + 1
                prev_line = number
                if number == 1:
                    w.first_line = (published, now)
                w.last_line = (published, now)
            if event["type"] in ("complete", "error"):
                w.terminal = event["type"]
    finally:  # a watcher stopped by --timeout still reports what it saw
        w.done_at = time.time()
        w.close_code = ws.close_code
        w.digest = digest.hexdigest()
        w.last_seq = max(seen, default=0)
        w.gaps = w.last_seq - len(seen)


async def watch(session: Any, url: str, headers: dict[str, str], w: Watch, gate: asyncio.Event,
                limit: asyncio.Semaphore, connected: asyncio.Queue, catchup: dict[str, int],
                timeout: float, compress: int) -> Watch:  # fmt: skip
    import aiohttp

    await gate.wait()
    try:
        async with limit:
            ws = await session.ws_connect(url, headers=headers, compress=compress,
                                          max_msg_size=0, autoping=True)  # fmt: skip
        w.connected_at = time.time()
        connected.put_nowait(w.index)
        async with ws:
            await asyncio.wait_for(follow(ws, w, catchup), timeout)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        w.error = f"{type(exc).__name__}: {exc}"  # reported with the watcher's figures
        if not w.connected_at:
            connected.put_nowait(w.index)
    return w


async def watch_all(conn: Connection, url: str, token: str, plan: list[tuple[int, bool]],
                    timeout: float, compress: int) -> None:  # fmt: skip
    import aiohttp

    loop = asyncio.get_running_loop()
    headers = {"Authorization": f"Bearer {token}"}
    now_gate, late_gate = asyncio.Event(), asyncio.Event()
    now_gate.set()
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connected: asyncio.Queue[int] = asyncio.Queue()
    catchup: dict[str, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(watch(
            session, url, headers, Watch(index, late), late_gate if late else now_gate, limit,
            connected, catchup, timeout, compress)) for index, late in plan]  # fmt: skip
        for _ in range(sum(not late for _i, late in plan)):
            await connected.get()
        conn.send(("connected",))
        if any(late for _i, late in plan):
            message = await loop.run_in_executor(None, conn.recv)
            if message[0] == "late":
                catchup["seq"] = message[1]
            late_gate.set()
        watches = await asyncio.gather(*tasks)
    times = os.times()
    conn.send(("done", watches, times.user + times.system))


def child_main(conn: Connection, url: str, token: str, plan: list[tuple[int, bool]],
               timeout: float, compress: int, nice: int) -> None:  # fmt: skip
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    if nice:
        # The watchers stand for browsers on machines of their own: on this
        # box, the web's hundreds of threads would otherwise starve them, and
        # the backlog would pile up unread in their sockets.
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    asyncio.run(watch_all(conn, url, token, plan, timeout, compress))


def socket_backlog(port: int) -> tuple[int, int]:
    """Bytes queued on the loopback connections to ``port``: unread by the
    clients, and waiting in the server's send buffers."""
    unread = unsent = 0
    with contextlib.suppress(OSError), open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
            tx, rx = (int(q, 16) for q in fields[4].split(":"))
            if remote == port:
                unread += rx
            elif local == port:
                unsent += tx
    return unread, unsent


class BacklogSampler(threading.Thread):
    """The largest socket backlogs seen, sampled every second during a run."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.max_unread = self.max_unsent = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            unread, unsent = socket_backlog(self.port)
            self.max_unread = max(self.max_unread, unread)
            self.max_unsent = max(self.max_unsent, unsent)


# -- the stack ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_web(stack: Stack, threads: int, workers: int, log: Path,
              redis_pool: int) -> tuple[subprocess.Popen[bytes], str]:  # fmt: skip
    port = free_port()
    env = dict(stack.env)
    if redis_pool:  # redis-py reads pool options from the URL's query
        sep = "&" if "?" in env["REDIS_URL"] else "?"
        env["REDIS_URL"] += f"{sep}max_connections={redis_pool}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(ROOT / ".venv/bin/provisioner"), "web", "--host", "127.0.0.1",
                                 "--port", str(port), "--threads", str(threads),
                                 "--workers", str(workers)],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/login", timeout=2):
                return proc, base
        except OSError:  # URLError, refused, timed out: not up yet
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"provisioner web did not start:\n{log.read_text()}") from None
            time.sleep(0.2)


def stop_web(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def make_token(factory: Any) -> str:
    with session_scope(factory) as session:
        users.create_user(session, "bench", uuid.uuid4().hex + "Aa1!", is_admin=True)
        _row, token = users.create_api_token(session, "bench", "ws-watchers")
    return token


def destroy(stack: Stack, factory: Any, cid: str) -> None:
    """Remove the container from PVE, and its keys from the (maybe shared) Redis."""
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    with factory() as session:
        node = session.query(Node).filter_by(name=NODE).one()
        ct = session.get(Container, cid)
        vmid = ct.vmid if ct else None
        pve = client_for(node, box)
        if vmid is not None and pve.exists(vmid):
            pve.wait_for_task(pve.destroy(vmid, force=True, purge=True), timeout=120)
    for key in stack.redis.scan_iter(match=f"*{cid}*", count=1000):
        stack.redis.delete(key)


def remove_queue_keys(stack: Stack) -> None:
    for key in stack.redis.scan_iter(match=f"*{stack.settings.queue_name}*", count=1000):
        stack.redis.delete(key)


# -- one run -----------------------------------------------------------------------


@dataclass
class Run:
    watchers: int
    late: int
    processes: int
    enqueued_at: float = 0.0
    watches: list[Watch] = field(default_factory=list)
    direct: Watch = field(default_factory=lambda: Watch(-1, False))
    reference: str = ""  # SHA-256 of the stream as read from Redis
    db_digest: str = ""  # ... and as replayed from the database afterwards
    db_last_seq: int = 0
    lifecycle: str = ""
    lost: int = 0  # watchers whose process did not report within the timeout
    backlog: tuple[int, int] = (0, 0)  # max bytes unread by the watchers, unsent by the web
    connect_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # user, and "<name> sys"
    load: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
    relay_path: tuple[float, float, int] = (0.0, 0.0, 0)  # see relay_path_cost()


def read_direct(stack: Stack, factory: Any, cid: str, run: Run, half: int,
                on_half: Any) -> None:  # fmt: skip
    """The baseline without the relay: EventReader on Redis, in this process."""
    w = run.direct
    w.connected_at = time.time()
    digest = hashlib.sha256()
    for event in EventReader(stack.redis, factory, cid).events(0, block_ms=1000):
        now = time.time()
        digest.update(event.to_json().encode() + b"\n")
        published = datetime.fromisoformat(event.ts).timestamp()
        w.latencies.append((now - published) * 1000)
        w.events += 1
        w.last_seq = event.seq
        if event.script == SCRIPT and event.stream == "stdout":
            w.lines += 1
            if w.lines == 1:
                w.first_line = (published, now)
            w.last_line = (published, now)
            if w.lines == half:
                on_half(event.seq)
        if event.terminal:
            w.terminal = event.type
            break
    w.done_at = time.time()
    run.reference = digest.hexdigest()


def relay_path_cost(stack: Stack, factory: Any, cid: str) -> tuple[float, float, int]:
    """CPU per message of the relay's own work on this run's stream, in this
    process, no sockets: as it was (decode each event, encode it again, frame
    it with wsproto, one send each) and as it is (the stored JSON framed in
    one buffer per Redis read).  Returns (before us, now us, messages)."""
    from wsproto.frame_protocol import FrameProtocol

    from web.frames import text_frames

    reader = EventReader(stack.redis, factory, cid)
    started = time.process_time()
    framer, count = FrameProtocol(client=False, extensions=[]), 0
    for event in reader.events(0, follow=False):
        framer.send_data(event.to_json(), fin=True)
        count += 1
    before = time.process_time() - started
    started = time.process_time()
    for batch in reader.batches(0, follow=False):
        text_frames(raw.payload for raw in batch)
    now = time.process_time() - started
    return before / max(count, 1) * 1e6, now / max(count, 1) * 1e6, count


def one_run(stack: Stack, factory: Any, pids: dict[str, int], url_base: str, token: str,
            args: argparse.Namespace, watchers: int, processes: int, late: int) -> Run:  # fmt: skip
    run = Run(watchers, late, processes)
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    req = ProvisionRequest(template="lines", node=NODE, hostname=f"wsw{uuid.uuid4().hex[:6]}",
                           variables={"count": args.lines, "pause_ms": args.pause_ms})  # fmt: skip
    with session_scope(factory) as session:
        cid = submit(session, box, stack.settings, req).id
    children: list[tuple[Any, Connection]] = []
    try:
        url = url_base.replace("http://", "ws://") + f"/ws/containers/{cid}/events?after=0"
        plans: list[list[tuple[int, bool]]] = [[] for _ in range(processes)]
        for i in range(watchers):  # the late ones spread over the processes too
            plans[i % processes].append((i, i >= watchers - late))
        ctx = mp.get_context("spawn")
        t0 = time.monotonic()
        for plan in plans:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=child_main, daemon=True,
                               args=(child_end, url, token, plan, args.timeout,
                                     15 if args.deflate else 0, args.watcher_nice))  # fmt: skip
            proc.start()
            children.append((proc, parent_end))
        for _proc, pipe in children:
            if not pipe.poll(120):
                raise RuntimeError("watchers did not connect within 120 s")
            assert pipe.recv() == ("connected",)
        run.connect_s = time.monotonic() - t0
        if run.connect_s > 50:
            print(f"warning: connecting took {run.connect_s:.0f}s; a worker may have recovered "
                  "the pending container before it was queued")  # fmt: skip

        late_pipes = [pipe for (_p, pipe), plan in zip(children, plans, strict=True)
                      if any(is_late for _i, is_late in plan)]  # fmt: skip

        def on_half(seq: int) -> None:  # from the direct reader's thread
            while late_pipes:
                late_pipes.pop().send(("late", seq))

        direct = threading.Thread(target=read_direct, daemon=True,
                                  args=(stack, factory, cid, run, args.lines // 2,
                                        on_half))  # fmt: skip
        direct.start()
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        sampler = BacklogSampler(int(url_base.rsplit(":", 1)[1]))
        sampler.start()
        run.load = (os.getloadavg(), ())
        run.enqueued_at = time.time()
        enqueue(stack.redis, stack.settings, cid)
        pending = {pipe: i for i, (_proc, pipe) in enumerate(children)}
        child_cpu: list[float] = []
        deadline = time.monotonic() + args.timeout + 60
        while pending and time.monotonic() < deadline:
            if not direct.is_alive():
                on_half(0)  # the run ended before half the lines: let the late ones go
            for pipe in wait(list(pending), timeout=5):
                try:
                    message = pipe.recv()
                except EOFError:  # the process died: its watchers count as lost
                    message = ("died",)
                if message[0] == "done":
                    run.watches.extend(message[1])
                    child_cpu.append(message[2])
                children[pending.pop(pipe)][0].join(10)
        run.lost = sum(len(plans[i]) for i in pending.values())
        sampler.done.set()
        run.backlog = (sampler.max_unread, sampler.max_unsent)
        for name, pid in pids.items():
            user, system = cpu_seconds(pid)
            run.cpu[name] = user - cpu0[name][0]
            run.cpu[f"{name} sys"] = system - cpu0[name][1]
        run.cpu.update({f"watchers{i} u+s": c for i, c in enumerate(child_cpu)})
        run.load = (run.load[0], os.getloadavg())
        direct.join(args.timeout)
        ct = stack.wait(cid, timeout=120)
        run.lifecycle = Lifecycle(ct.lifecycle).value
        if ct.lifecycle != Lifecycle.READY:
            run.lifecycle += f" ({ct.error_message})"
        with factory() as session:
            run.db_last_seq = session.scalar(select(func.max(ContainerEvent.seq)).where(
                ContainerEvent.container_id == cid)) or 0  # fmt: skip
        digest = hashlib.sha256()
        for event in EventReader(stack.redis, factory, cid).events(0, follow=False):
            digest.update(event.to_json().encode() + b"\n")
        run.db_digest = digest.hexdigest()
        run.relay_path = relay_path_cost(stack, factory, cid)
    finally:
        for proc, _pipe in children:
            if proc.is_alive():
                proc.terminate()
        destroy(stack, factory, cid)
    run.watches.sort(key=lambda w: w.index)
    return run


# -- the report --------------------------------------------------------------------


def summarize(name: str, run: Run, lines: int,
              base: dict[str, float] | None) -> dict[str, float]:  # fmt: skip
    ws = run.watches
    ok = [w for w in ws if not w.error and w.digest == run.reference and w.lines == lines
          and not (w.gaps or w.duplicates or w.out_of_order or w.bad_lines)
          and w.last_seq == run.db_last_seq and w.terminal == "complete"]  # fmt: skip
    lat = array("f")
    for w in ws:
        lat.extend(w.latencies)
    d = run.direct
    pub_first, pub_last = d.first_line[0], d.last_line[0]
    pub_rate = lines / max(pub_last - pub_first, 1e-3)
    rates = [w.lines / max(w.last_line[1] - w.first_line[1], 1e-3) for w in ws if w.lines]
    first_recv = min((w.first_line[1] for w in ws if w.lines), default=0.0)
    last_recv = max((w.last_line[1] for w in ws if w.lines), default=0.0)
    aggregate = sum(w.lines for w in ws) / max(last_recv - first_recv, 1e-3)
    first_lag = [w.first_line[1] - w.first_line[0] for w in ws if w.lines and not w.late]
    last_lag = [w.last_line[1] - w.last_line[0] for w in ws if w.lines]
    figures = {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "max": max(lat, default=0.0),
               "rate": statistics.median(rates) if rates else 0.0, "aggregate": aggregate,
               "last_lag": pct(last_lag, 0.5)}  # fmt: skip
    load0, load1 = run.load
    print(f"\n{name}: {run.watchers} watcher(s) ({run.late} late), {run.processes} process(es), "
          f"{lines} lines; {run.db_last_seq} events; container {run.lifecycle}")  # fmt: skip
    print(f"  load average {load0[0]:.2f} {load0[1]:.2f} at start, {load1[0]:.2f} {load1[1]:.2f} "
          f"at end (1 and 5 min, 2 cores); all connected in {run.connect_s:.1f}s")  # fmt: skip
    print(f"  integrity   : {len(ok)}/{run.watchers} watchers got all {lines} lines and "
          f"{run.db_last_seq} events exactly once, in order, byte-identical to the Redis "
          f"stream (sha256 {run.reference[:12]}); database replay "
          f"{'identical' if run.db_digest == run.reference else 'DIFFERS'}")  # fmt: skip
    if d.lines != lines:
        print(f"  note        : the stream itself holds {d.lines} lines, not {lines}: the "
              "worker retried the script (see the container's events)")  # fmt: skip
    if run.lost:
        print(f"    {run.lost} watchers did not finish within --timeout: their process was stopped")
    failed = [w for w in ws if w not in ok]
    for w in failed[:10]:
        print(f"    watcher {w.index}{' (late)' if w.late else ''}: {w.events} events, "
              f"{w.lines} lines, last seq {w.last_seq}, gaps {w.gaps}, dups {w.duplicates}, "
              f"out of order {w.out_of_order}, bad lines {w.bad_lines}, terminal "
              f"{w.terminal or '-'}, close {w.close_code}, digest "
              f"{'ok' if w.digest == run.reference else 'differs'} {w.error}")  # fmt: skip
    if len(failed) > 10:
        codes = sorted({str(w.close_code) for w in failed})
        print(f"    ... and {len(failed) - 10} more (close codes: {', '.join(codes)})")
    if not d.lines:
        print("  published   : no lines: the run failed")
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "rate": 0.0, "aggregate": 0.0}
    print(f"  published   : lines {pub_first - run.enqueued_at:6.1f}s .. "
          f"{pub_last - run.enqueued_at:6.1f}s after enqueue, {pub_rate:7.0f} lines/s")  # fmt: skip
    print(f"  direct Redis: latency p50 {pct(d.latencies, 0.5):7.1f} ms  "
          f"p99 {pct(d.latencies, 0.99):7.1f} ms  max {max(d.latencies, default=0):7.1f} ms")  # fmt: skip
    print(f"  watchers    : latency p50 {figures['p50']:7.1f} ms  p99 {figures['p99']:7.1f} ms  "
          f"max {figures['max']:7.1f} ms  ({len(lat)} receipts)")  # fmt: skip
    print(f"  lines/s     : per watcher median {figures['rate']:7.0f} (min {min(rates, default=0):.0f}"
          f", max {max(rates, default=0):.0f}), aggregate {aggregate:9.0f}")  # fmt: skip
    if first_lag:
        print(f"  first line  : received {pct(first_lag, 0.5):6.2f}s (median) / "
              f"{max(first_lag):6.2f}s (max) after its publish")  # fmt: skip
    print(f"  last line   : received {pct(last_lag, 0.5):6.2f}s (median) / "
          f"{max(last_lag, default=0):6.2f}s (max) after its publish; all closed "
          f"{max((w.done_at for w in ws), default=0) - pub_last:6.2f}s after it")  # fmt: skip
    print(f"  backlog     : at most {run.backlog[0] / 1e6:.1f} MB unread in the watchers' "
          f"sockets, {run.backlog[1] / 1e6:.1f} MB in the web's send buffers (sampled 1/s)")  # fmt: skip
    late = [w for w in ws if w.late and w.caught_up_at]
    if late:
        catch = [w.caught_up_at - w.connected_at for w in late]
        print(f"  late        : {len(late)} replayed and caught up with the stream in "
              f"{pct(catch, 0.5):.2f}s (median) / {max(catch):.2f}s (max) after connecting")  # fmt: skip
    cpu = "  ".join(f"{k} {v:.1f}" for k, v in run.cpu.items())
    web_cpu = run.cpu.get("web", 0.0) + run.cpu.get("web sys", 0.0)
    print(f"  CPU seconds : {cpu}; the web's per delivered message: "
          f"{web_cpu / max(len(lat), 1) * 1e6:.0f} us")  # fmt: skip
    before, now, count = run.relay_path
    if count:
        print(f"  relay path  : {now:.1f} us per message in this process ({count} messages, no "
              f"sockets), {before:.1f} us as it was (decode, encode, a wsproto frame each): "
              f"x{before / max(now, 1e-3):.1f}")  # fmt: skip
    if base:
        print(f"  vs baseline : latency p50 x{figures['p50'] / max(base['p50'], 1e-3):.1f}  "
              f"p99 x{figures['p99'] / max(base['p99'], 1e-3):.1f}  lines/s per watcher "
              f"x{figures['rate'] / max(base['rate'], 1e-3):.2f}  aggregate "
              f"x{figures['aggregate'] / max(base['aggregate'], 1e-3):.1f}")  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2, help="watcher processes")
    parser.add_argument("--pause-ms", type=int, default=0, metavar="MS",
                        help="the script pauses MS after every 100 lines (0: as fast as it "
                             "can; 50: about 2,000 lines/s, a chatty build)")  # fmt: skip
    parser.add_argument("--late", type=int, default=0,
                        help="watchers connecting once half the lines are out")  # fmt: skip
    parser.add_argument("--web-workers", type=int, default=1, help="gunicorn processes")
    parser.add_argument("--deflate", action="store_true",
                        help="offer permessage-deflate, as browsers do")  # fmt: skip
    parser.add_argument("--redis-pool", type=int, default=0, metavar="N",
                        help="the web's Redis pool size (?max_connections=N in its REDIS_URL; "
                             "default: the app's own)")  # fmt: skip
    parser.add_argument("--watcher-nice", type=int, default=-10,
                        help="priority of the watcher processes (root; 0: unchanged)")  # fmt: skip
    parser.add_argument("--no-baseline", action="store_true", help="skip the 1-watcher run")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    args = parser.parse_args()
    if not 0 <= args.late <= args.watchers or args.processes < 1:
        parser.error("need 0 <= --late <= --watchers and --processes >= 1")
    runs: list[tuple[str, Run]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        work = Path(tmp)
        started: list[Any] = []
        try:
            redis_url = os.environ.get("REDIS_URL")
            if not redis_url:
                redis_proc, redis_url = start_redis(work)
                started.append(lambda: (redis_proc.terminate(), redis_proc.wait()))
            if os.environ.get("PVESIM_INFO"):
                info = json.loads(Path(os.environ["PVESIM_INFO"]).read_text())
            else:
                sim_proc, info = start_simulator(work / "sim")
                started.append(lambda: stop_simulator(sim_proc))
            stack = build_stack(info, redis_url, work / "data", [TEMPLATES])
            # production's lease (60 s): with the tests' 6 s, a worker "recovers" the
            # pending container while the watchers are still connecting
            for name in ("PROVISIONER_LEASE_DURATION", "PROVISIONER_LEASE_RENEW_INTERVAL"):
                stack.env.pop(name)
            started.append(lambda: remove_queue_keys(stack))
            factory = stack.factory
            token = make_token(factory)
            web, base_url = start_web(stack, threads=max(16, args.watchers + 16),
                                      workers=args.web_workers, log=work / "web.log",
                                      redis_pool=args.redis_pool)  # fmt: skip
            started.append(lambda: stop_web(web))
            stack.start_workers(1)
            started.append(stack.stop_workers)
            time.sleep(2)  # the worker is up and waiting, as in production
            pids = {"web": web.pid, "worker": stack.workers[0].pid}
            redis_pid = stack.redis.info("server").get("process_id")
            if redis_pid:
                pids["redis"] = int(redis_pid)
            if not args.no_baseline:
                runs.append(("baseline", one_run(stack, factory, pids, base_url, token, args,
                                                 1, 1, 0)))  # fmt: skip
            runs.append(("watchers", one_run(stack, factory, pids, base_url, token, args,
                                             args.watchers, args.processes, args.late)))  # fmt: skip
        finally:
            for stop in reversed(started):
                with contextlib.suppress(Exception):
                    stop()
            if any(w.error or w.terminal != "complete" for _n, run in runs for w in run.watches):
                kept = Path(tempfile.gettempdir()) / f"ws_watchers-{os.getpid()}-web.log"
                with contextlib.suppress(OSError):
                    kept.write_bytes((work / "web.log").read_bytes())
                    print(f"some watchers failed: the web log is kept in {kept}")
    pace = f", a {args.pause_ms} ms pause every 100" if args.pause_ms else ", unpaced"
    print(f"websocket watchers: 'lines' template, {args.lines} lines{pace}; latency = receipt "
          f"time.time() - event ts (ms resolution, truncated: reads 0-1 ms high)")  # fmt: skip
    base = None
    for name, run in runs:
        figures = summarize(name, run, args.lines, base)
        base = base or figures


if __name__ == "__main__":
    main()

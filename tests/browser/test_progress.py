"""The progress view in a real browser against the real stack: the stepper,
percent and ETA, the live log (complete, in order, once each, across a
reload and a dropped websocket), the per-script filter, autoscroll, the
download, and the error view's Retry and Destroy.

The ``lines`` test template prints ``count`` lines from 10-print.sh (about
500 a second through the whole pipeline), so a run of a few thousand lines
leaves seconds to reload the page or drop its socket while they stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from provisioner.db import session_scope
from provisioner.models import Container, ContainerEvent, Lifecycle, Node, utcnow
from tests.browser.conftest import Dashboard, login, shot, start_web, stop_web
from tests.pipeline.test_failures import ssh_run

pytestmark = [pytest.mark.timeout(300)]

RUN_MS = 240_000  # a whole run, in Playwright's milliseconds
PHASES = ["create", "start", "deploy", "scripts", "finalize"]

# Remembers every websocket the page opens, so a test can drop one.
RECORD_SOCKETS = """
window.__sockets = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) { super(...args); window.__sockets.push(this); }
};
"""

AT_BOTTOM = """() => { const c = document.querySelector('#console');
  return c.scrollHeight - c.scrollTop - c.clientHeight <= 24; }"""

ROWS_JS = """els => els.map(e => ({
  seq: Number(e.dataset.seq), type: e.dataset.type, script: e.dataset.script || null,
  stream: e.dataset.stream || null, text: e.lastChild.textContent}))"""


def console_rows(page: Any) -> list[dict[str, Any]]:
    """The console's event lines as the page shows them."""
    rows: list[dict[str, Any]] = page.eval_on_selector_all("#console .line", ROWS_JS)
    return rows


def printed(rows: list[dict[str, Any]], script: str = "10-print.sh") -> list[str]:
    return [r["text"] for r in rows if r["script"] == script and r["stream"] == "stdout"]


def count_lines(page: Any, selector: str = '#console .line[data-script="10-print.sh"]') -> int:
    n: int = page.eval_on_selector_all(selector, "els => els.length")
    return n


def wait_lines(page: Any, at_least: int, timeout: float = RUN_MS) -> None:
    """Until the console shows at least this many lines of 10-print.sh."""
    page.wait_for_function(
        """n => document.querySelectorAll('#console .line[data-script="10-print.sh"]').length >= n""",
        arg=at_least, timeout=timeout)  # fmt: skip


def wait_rows(page: Any, n: int) -> None:
    """Until the console shows exactly ``n`` event lines."""
    page.wait_for_function("n => document.querySelectorAll('#console .line').length === n", arg=n)


def wait_settled(page: Any, dash: Dashboard, cid: str, lifecycle: str) -> int:
    """Until the view says ``lifecycle`` and shows every stored event; the last seq."""
    page.wait_for_selector(f"#progress[data-lifecycle={lifecycle}]", timeout=RUN_MS)
    last = dash.stack.container(cid).next_seq - 1
    page.wait_for_function(
        "n => { const l = document.querySelector('#console .line:last-child');"
        " return l && Number(l.dataset.seq) === n; }", arg=last)  # fmt: skip
    return last


def assert_complete_log(page: Any, last_seq: int, count: int) -> None:
    """Every event exactly once, in order, and the script's lines 1..count."""
    rows = console_rows(page)
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(1, last_seq + 1)), _seq_problem(seqs, last_seq)
    assert printed(rows) == [f"line {i}" for i in range(1, count + 1)]


def _seq_problem(seqs: list[int], last: int) -> str:
    dups = sorted({s for s in seqs if seqs.count(s) > 1})[:10]
    missing = sorted(set(range(1, last + 1)) - set(seqs))[:10]
    return f"{len(seqs)} lines, last {last}: duplicates {dups}, missing {missing}"


def stepper(page: Any) -> list[str]:
    states: list[str] = page.eval_on_selector_all("#stepper .stage",
                                                  "els => els.map(e => e.dataset.state)")  # fmt: skip
    return states


@pytest.fixture(scope="module")
def finished(dash: Dashboard) -> Iterator[str]:
    """A finished clean run of ``lines`` (300 lines)."""
    cid = dash.stack.submit("lines", "pg-done", variables={"count": 300})
    ct = dash.stack.wait(cid)
    assert ct.lifecycle == Lifecycle.READY, (ct.error_message, dash.stack.worker_logs()[-3000:])
    yield cid


# --- a run watched from the start ---------------------------------------------------


def test_a_run_watched_from_the_start_ends_ready_with_every_line(page: Any,
                                                                 dash: Dashboard) -> None:  # fmt: skip
    cid = dash.stack.submit("lines", "pg-watch", variables={"count": 3000, "pause_ms": 100})
    page.goto(f"/containers/{cid}/progress")
    assert page.get_attribute("#progress", "data-lifecycle") in ("pending", "creating")
    wait_lines(page, 1000)
    assert page.get_attribute("#progress", "data-lifecycle") == "creating"
    assert page.get_attribute("#connection", "data-state") == "live"
    assert stepper(page) == ["done", "done", "done", "active", "pending"]
    assert page.get_attribute("#stepper .stage[data-phase=scripts]", "aria-current") == "step"
    assert 50 <= int(page.get_attribute("#progress", "data-percent")) < 90
    shot(page, "progress-running")

    last = wait_settled(page, dash, cid, "ready")
    assert_complete_log(page, last, 3000)
    assert stepper(page) == ["done"] * 5
    assert page.inner_text("#percent") == "100%"
    assert page.get_attribute("#percent-bar", "aria-valuenow") == "100"
    for phase in PHASES:  # each phase says how long it took
        assert re.fullmatch(r"(\d+h )?(\d+m )?\d+s",
                            page.inner_text(f".stage[data-phase={phase}] .stage-time")), phase  # fmt: skip
    assert re.fullmatch(r"\d+s|\d+m \d+s", page.inner_text("#elapsed"))

    # the outcome: address, SSH command with a copy button, services
    ct = dash.stack.container(cid)
    assert page.inner_text("#success [data-field=ip]") == ct.ip
    assert page.inner_text("#ssh-command") == f"ssh root@{ct.ip}"
    ports = page.eval_on_selector_all("#services tbody tr td:first-child",
                                      "els => els.map(e => Number(e.textContent))")  # fmt: skip
    assert 22 in ports and sorted(ports) == sorted(s["port"] for s in ct.services)
    assert page.get_attribute("#connection", "data-state") == "finished"
    assert page.title().startswith("✔ pg-watch")
    shot(page, "progress")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#copy-ssh")
    assert page.evaluate("navigator.clipboard.readText()") == f"ssh root@{ct.ip}"


# --- resuming: a reload, a dropped socket -------------------------------------------------


def test_a_reload_while_lines_stream_ends_with_each_line_once(page: Any,
                                                               dash: Dashboard) -> None:  # fmt: skip
    cid = dash.stack.submit("lines", "pg-reload", variables={"count": 3000, "pause_ms": 100})
    page.goto(f"/containers/{cid}/progress")
    wait_lines(page, 300)
    page.reload()
    wait_lines(page, 1)
    assert dash.stack.container(cid).lifecycle == Lifecycle.CREATING  # still streaming
    last = wait_settled(page, dash, cid, "ready")
    assert_complete_log(page, last, 3000)
    assert stepper(page) == ["done"] * 5


def test_a_dropped_websocket_reconnects_and_resumes_without_gap_or_duplicate(
        page: Any, dash: Dashboard) -> None:  # fmt: skip
    page.add_init_script(RECORD_SOCKETS)
    cid = dash.stack.submit("lines", "pg-drop", variables={"count": 3000, "pause_ms": 100})
    page.goto(f"/containers/{cid}/progress")
    wait_lines(page, 200)

    # the client's socket goes away in the middle of the lines
    page.evaluate("window.__sockets.at(-1).close()")
    page.wait_for_selector("#connection[data-state=reconnecting]")
    page.wait_for_selector("#connection[data-state=live]")
    seen = count_lines(page)
    assert seen < 3000, "the lines ended before the drop: the test proves nothing"

    # the network goes away: no connection until it is back
    page.context.set_offline(True)
    page.wait_for_selector("#connection[data-state=reconnecting]")
    assert "Offline" in page.inner_text("#connection")
    shot(page, "progress-reconnecting")
    page.wait_for_timeout(1500)  # tries and fails to reconnect meanwhile
    page.context.set_offline(False)

    last = wait_settled(page, dash, cid, "ready")
    assert_complete_log(page, last, 3000)
    urls = page.evaluate("window.__sockets.map(s => s.url)")
    afters = [int(re.search(r"after=(\d+)", u).group(1)) for u in urls]  # type: ignore[union-attr]
    assert afters[0] == 0 and afters[1] > 0 and len(afters) >= 3, urls  # resumed, not replayed


def test_without_websockets_the_view_polls_and_still_gets_every_line(page: Any,
                                                                      dash: Dashboard) -> None:  # fmt: skip
    """A proxy that passes HTTP but no websocket: the view finds out (the
    stream's URL answers a plain request with 426), says so, and follows the
    run through the REST API instead, every line once, in order."""
    # the socket never reaches the server: like a proxy dropping the upgrade
    page.route_web_socket(re.compile(r"/ws/containers/"), lambda ws: ws.close())
    cid = dash.stack.submit("lines", "pg-poll", variables={"count": 2000, "pause_ms": 100})
    page.goto(f"/containers/{cid}/progress")
    page.wait_for_selector("#connection[data-state=polling]", timeout=30_000)
    assert "proxy" in page.get_attribute("#connection", "title")
    wait_lines(page, 100)
    shot(page, "progress-polling")
    last = wait_settled(page, dash, cid, "ready")
    assert_complete_log(page, last, 2000)
    assert page.get_attribute("#connection", "data-state") == "finished"


def test_when_every_stream_is_taken_the_view_polls(browser: Any, dash: Dashboard) -> None:
    """A web process whose streams hold all the threads they may (4 threads:
    2 streams) refuses a third with 503; the view asks why, says so, and
    follows the run through the REST API: every line, once, in order."""
    from tests.pipeline.conftest import admin_token
    from tests.web.wsclient import Client

    web, url = start_web(dash.stack, threads=4)
    with session_scope(dash.stack.factory) as session:
        node = session.scalars(select(Node).where(Node.name == dash.node)).one()
        idle = Container(
            node=node, template="lines", hostname="idle", request={}, lifecycle=Lifecycle.READY
        )  # no events: its streams stay open
        session.add(idle)
        session.flush()
        idle_id = idle.id
    token = admin_token(dash.stack.factory)
    ws_url = url.replace("http", "ws", 1) + f"/ws/containers/{idle_id}/events"
    held = [Client.connect(ws_url, headers={"Authorization": f"Bearer {token}"})
            for _ in range(2)]  # fmt: skip
    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 860})
    try:
        context.set_default_timeout(20_000)
        page = context.new_page()
        login(page)
        cid = dash.stack.submit("lines", "pg-full", variables={"count": 1500, "pause_ms": 100})
        page.goto(f"/containers/{cid}/progress")
        page.wait_for_selector("#connection[data-state=polling]", timeout=30_000)
        assert "as many live streams" in page.get_attribute("#connection", "title")
        last = wait_settled(page, dash, cid, "ready")
        assert_complete_log(page, last, 1500)
    finally:
        context.close()
        for ws in held:
            ws.close()
        stop_web(web)


# --- the console: filter, autoscroll, download ------------------------------------------------


def test_the_script_filter_shows_one_scripts_lines(page: Any, dash: Dashboard,
                                                   finished: str) -> None:  # fmt: skip
    page.goto(f"/containers/{finished}/progress")
    last = wait_settled(page, dash, finished, "ready")
    options = page.eval_on_selector_all("#log-filter option", "els => els.map(e => e.value)")
    assert options == ["", "10-print.sh", "20-check.sh"]

    page.select_option("#log-filter", "10-print.sh")
    wait_rows(page, 301)
    rows = console_rows(page)
    assert {r["script"] for r in rows} == {"10-print.sh"}
    assert printed(rows) == [f"line {i}" for i in range(1, 301)]
    assert [r["text"] for r in rows if r["stream"] == "stderr"] == ["to stderr"]

    page.select_option("#log-filter", "20-check.sh")
    wait_rows(page, 1)
    assert [(r["script"], r["text"]) for r in console_rows(page)] == [
        ("20-check.sh", "check passed")
    ]

    page.select_option("#log-filter", "")
    wait_rows(page, last)
    assert [r["seq"] for r in console_rows(page)] == list(range(1, last + 1))


def test_autoscroll_pauses_when_scrolled_up_and_resumes_at_the_bottom(page: Any,
                                                                      dash: Dashboard) -> None:  # fmt: skip
    cid = dash.stack.submit("lines", "pg-scroll", variables={"count": 6000, "pause_ms": 150})
    page.goto(f"/containers/{cid}/progress")
    wait_lines(page, 300)
    assert page.get_attribute("#console", "data-autoscroll") == "on"
    assert page.is_hidden("#follow")

    # the reader scrolls up with the mouse wheel: the view stays where they are
    page.hover("#console")
    page.mouse.wheel(0, -400)
    page.wait_for_selector("#console[data-autoscroll=off]")
    wait_lines(page, count_lines(page) + 100)  # the wheel's scrolling has ended
    top = page.eval_on_selector("#console", "el => el.scrollTop")
    wait_lines(page, count_lines(page) + 300)
    assert page.eval_on_selector("#console", "el => el.scrollTop") == top
    page.wait_for_selector("#follow:has-text('new')")

    page.eval_on_selector("#console", "el => { el.scrollTop = el.scrollHeight; }")
    page.wait_for_selector("#console[data-autoscroll=on]")
    assert page.is_hidden("#follow")
    seen = count_lines(page)
    assert seen < 6000, "the lines ended too early: the test proves nothing"
    wait_lines(page, seen + 300)
    page.wait_for_function(AT_BOTTOM)

    # a resize moves the view without the reader: following goes on
    page.set_viewport_size({"width": 1280, "height": 1400})
    page.set_viewport_size({"width": 1280, "height": 860})
    wait_lines(page, count_lines(page) + 100)
    assert page.get_attribute("#console", "data-autoscroll") == "on"
    page.wait_for_function(AT_BOTTOM)
    # the Follow button, like scrolling down to the bottom, follows again
    page.hover("#console")  # the resizes may have moved it from under the mouse
    page.mouse.wheel(0, -400)
    page.wait_for_selector("#console[data-autoscroll=off]")
    page.click("#follow")
    page.wait_for_selector("#console[data-autoscroll=on]")
    wait_settled(page, dash, cid, "ready")


def test_download_gives_the_whole_log(page: Any, dash: Dashboard, finished: str) -> None:
    page.goto(f"/containers/{finished}/progress")
    last = wait_settled(page, dash, finished, "ready")
    page.select_option("#log-filter", "20-check.sh")  # the download ignores the filter
    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == f"pg-done-{finished[:8]}.log"
    text = Path(download.path()).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) == last
    assert [line.split("] ", 1)[1] for line in lines if "[stdout 10-print.sh]" in line] == [
        f"line {i}" for i in range(1, 301)]  # fmt: skip
    # the same text as the server's log
    assert text == page.request.get(f"/api/containers/{finished}/log").text()


# --- ETA --------------------------------------------------------------------------------------


def test_the_eta_comes_from_earlier_runs_of_the_template(page: Any, dash: Dashboard,
                                                         finished: str) -> None:  # fmt: skip
    cid = dash.stack.submit("lines", "pg-eta", variables={"count": 20})
    page.goto(f"/containers/{cid}/progress")
    eta = page.locator("#eta")
    assert int(eta.get_attribute("data-runs") or 0) >= 1
    assert re.fullmatch(r"ETA (~(\d+m )?\d+s|any moment)", eta.inner_text()), eta.inner_text()
    assert "successful run" in (eta.get_attribute("title") or "")
    # pending phases say how long they usually take
    assert re.fullmatch(r"~\d+s|~\d+m \d+s|\d+s|\d+m \d+s",
                        page.inner_text(".stage[data-phase=scripts] .stage-time"))  # fmt: skip
    wait_settled(page, dash, cid, "ready")
    assert re.fullmatch(r"typically (\d+m )?\d+s", eta.inner_text()), eta.inner_text()


# --- failure: retry, destroy --------------------------------------------------------------------


def test_an_error_shows_what_failed_and_retry_goes_live_in_the_same_view(page: Any,
                                                                          dash: Dashboard) -> None:  # fmt: skip
    cid = dash.stack.submit("failing", "pg-fail")
    page.goto(f"/containers/{cid}/progress")
    wait_settled(page, dash, cid, "error")
    failure = page.locator("#failure")
    assert failure.locator("[data-field=phase]").inner_text() == "Run scripts"
    assert failure.locator("[data-field=script]").inner_text() == "20-check.sh"
    assert failure.locator("[data-field=exit-code]").inner_text() == "3"
    tail = failure.locator("[data-field=last-lines]").inner_text()
    assert "found /root/fail-now: failing on purpose" in tail
    assert "retry" in failure.locator("[data-field=hint]").inner_text()
    assert stepper(page) == ["done", "done", "done", "failed", "pending"]
    assert page.get_attribute("#percent-bar", "data-state") == "error"
    assert page.title().startswith("✖ pg-fail")
    stderr = page.eval_on_selector_all('#console .line.stderr[data-script="20-check.sh"]',
                                       "els => els.map(e => e.lastChild.textContent)")  # fmt: skip
    assert stderr == ["found /root/fail-now: failing on purpose"]
    shot(page, "progress-error")

    # fix the cause, then retry from the view: it goes live again and ends ready
    with ThreadPoolExecutor(1) as pool:  # Playwright's event loop runs in this thread
        fixed = pool.submit(ssh_run, dash.stack, cid, "rm /root/fail-now").result()
    assert fixed.exit_status == 0, fixed.stderr
    url = page.url
    page.click("#retry")
    page.wait_for_selector("#failure", state="detached")
    last = wait_settled(page, dash, cid, "ready")
    assert page.url == url
    assert stepper(page) == ["done"] * 5
    assert page.inner_text("#percent") == "100%"
    rows = console_rows(page)
    assert [r["seq"] for r in rows] == list(range(1, last + 1)), _seq_problem(
        [r["seq"] for r in rows], last)  # fmt: skip
    assert [r["text"] for r in rows if r["script"] == "20-check.sh"] == [
        "checking /root/fail-now", "found /root/fail-now: failing on purpose",
        "checking /root/fail-now", "check passed"]  # fmt: skip
    assert page.text_content("#console .sep") == "retry · attempt 2"
    assert page.is_visible("#success")
    assert page.is_visible("#attempt") and page.inner_text("#attempt b") == "2"
    page.eval_on_selector("#console .sep", "el => el.scrollIntoView({block: 'center'})")
    shot(page, "progress-retried")


def test_destroy_from_the_error_view_asks_first_then_follows_it(page: Any,
                                                                 dash: Dashboard) -> None:  # fmt: skip
    cid = dash.stack.submit("failing", "pg-destroy")
    page.goto(f"/containers/{cid}/progress")
    wait_settled(page, dash, cid, "error")
    vmid = dash.stack.container(cid).vmid

    page.click("#destroy")
    dialog = page.locator("dialog.confirm")
    assert f"CT {vmid}" in dialog.inner_text()
    dialog.locator("button", has_text="Cancel").click()
    page.wait_for_selector("dialog.confirm", state="detached")
    assert dash.stack.container(cid).lifecycle == Lifecycle.ERROR  # nothing happened

    page.click("#destroy")
    page.locator("dialog.confirm button", has_text="Destroy").click()
    page.wait_for_selector("#progress[data-lifecycle=destroying]")
    wait_settled(page, dash, cid, "destroyed")
    assert "was destroyed" in page.inner_text("#outcome")
    assert dash.stack.container(cid).lifecycle == Lifecycle.DESTROYED
    steps = page.eval_on_selector_all(
        "#console .line.step", "els => els.map(e => e.lastChild.textContent)"
    )
    assert f"destroying CT {vmid}" in steps and steps[-1] == "destroyed"
    assert stepper(page) == ["done", "done", "done", "failed", "pending"]  # the run as it was
    shot(page, "progress-destroyed")


# --- a big log ----------------------------------------------------------------------------------

LONGEST_TASK = """
window.__longest = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longest = Math.max(window.__longest, e.duration);
}).observe({ type: "longtask", buffered: true });
"""


def stored_run(dash: Dashboard, hostname: str, lines: int) -> tuple[str, int]:
    """A finished run with ``lines`` log lines, written straight into the
    database (a real one prints about 500 lines a second); its id and last seq."""
    start = utcnow() - timedelta(minutes=5)
    with session_scope(dash.stack.factory) as session:
        node = session.scalars(select(Node).where(Node.name == dash.node)).one()
        ct = Container(node=node, template="synthetic", hostname=hostname, request={},
                       lifecycle=Lifecycle.READY, ip="198.18.0.169", started_at=start,
                       finished_at=start + timedelta(seconds=90))  # fmt: skip
        session.add(ct)
        session.flush()
        rows: list[dict[str, Any]] = []

        def add(type_: str, phase: str, message: str, **extra: Any) -> None:
            ts = start + timedelta(milliseconds=10 * len(rows))
            rows.append({"container_id": ct.id, "seq": len(rows) + 1, "type": type_,
                         "phase": phase, "message": message, "ts": ts, **extra})  # fmt: skip

        for phase in PHASES[:3]:
            add("step", phase, f"{phase} step", percent=10)
        add("step", "scripts", "running 10-print.sh", percent=50)
        for i in range(1, lines + 1):
            add("log", "scripts", f"line {i}", stream="stdout", script="10-print.sh")
        add("step", "finalize", "discovering listening services", percent=92)
        add("complete", "finalize", "CT 0 is ready", percent=100)
        session.execute(insert(ContainerEvent), rows)
        ct.next_seq = len(rows) + 1
        return ct.id, len(rows)


@pytest.mark.long
def test_a_big_log_replays_without_freezing_and_keeps_every_line_for_the_download(
        page: Any, dash: Dashboard) -> None:  # fmt: skip
    cid, last = stored_run(dash, "pg-big", 30_000)
    page.add_init_script(LONGEST_TASK)
    page.goto(f"/containers/{cid}/progress")
    page.wait_for_selector("#connection[data-state=finished]", timeout=RUN_MS)
    page.wait_for_selector("#progress[data-lifecycle=ready] #success")
    page.wait_for_function(
        "n => Number(document.querySelector('#console .line:last-child')?.dataset.seq) === n",
        arg=last)  # fmt: skip
    # drawing in batches keeps every task short; the bound is loose because
    # the machine running the tests may be busy with much else
    longest = page.evaluate("window.__longest")
    assert longest < 1500, f"the page froze for {longest:.0f} ms"
    # the console keeps the newest lines, consecutive; the rest is in the download
    seqs = [r["seq"] for r in console_rows(page)]
    assert seqs == list(range(last - len(seqs) + 1, last + 1)) and len(seqs) == 10_000
    hidden = last - 10_000
    assert page.inner_text("#console-trimmed").startswith(f"{hidden:,} earlier lines")
    with page.expect_download() as info:
        page.click("#download")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    assert [line.split("] ", 1)[1] for line in text.splitlines() if "[stdout " in line] == [
        f"line {i}" for i in range(1, 30_001)]  # fmt: skip


@pytest.mark.long
def test_a_killed_work_horse_shows_recovering_then_goes_on(page: Any, dash: Dashboard) -> None:
    """The worker running the run loses its work horse (kill -9): the view
    says Recovering, why and since when, instead of Live and an ETA; then
    the run goes on to ready with every line."""
    import os
    import signal

    from tests.pipeline.test_resilience import children

    count = 3000
    cid = dash.stack.submit("lines", "pg-recover", variables={"count": count, "pause_ms": 100})
    page.goto(f"/containers/{cid}/progress")
    wait_lines(page, 300)
    horse = next(h for w in dash.stack.workers for h in children(w.pid))
    os.kill(horse, signal.SIGKILL)
    page.wait_for_selector('#connection[data-state="recovering"]', timeout=20_000)
    step = page.locator("#current-step").text_content() or ""
    assert re.fullmatch(
        rf"Recovering: the worker process running this \(pid {horse}\) was killed "
        r"\(signal 9\) at \d\d:\d\d:\d\d UTC; resuming it \(attempt 2\)",
        step,
    ), step
    assert page.locator("#eta").text_content() in ("resuming…", "")
    assert page.locator("#console .line.recovering").count() == 1
    shot(page, "progress-recovering")
    last = wait_settled(page, dash, cid, "ready")
    rows = console_rows(page)
    assert [r["seq"] for r in rows] == list(range(1, last + 1))
    reruns = [i for i, r in enumerate(rows) if r["type"] == "recovering"]
    assert len(reruns) == 1
    assert printed(rows[reruns[0] :]) == [f"line {i}" for i in range(1, count + 1)]
    assert page.locator("#connection").get_attribute("data-state") == "finished"

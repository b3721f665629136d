"""The containers list and the container detail page in a real browser.

The containers are real: submitted to the stack, provisioned by the workers
on the simulator.  ``ready_ct`` (the test template ``lines``) and ``failed_ct`` (the test
template ``failing``: 20-check.sh exits 3 on the first run) are made once
for the module.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from typing import Any

import pytest
from playwright.sync_api import expect

from provisioner.models import Lifecycle
from provisioner.nodes import client_for
from provisioner.secrets.keyfile import load_secret_box
from tests.browser.conftest import Dashboard, shot
from tests.pvesim.helpers import admin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LIVE = 20_000  # ms: a few polls of the list
ETH1_HOST = 118  # below the simulator's DHCP pool, apart from other suites' static addresses


@pytest.fixture(scope="module")
def ready_ct(dash: Dashboard) -> str:
    cid = dash.stack.submit("lines", "list-ready", variables={"count": 20})
    assert dash.stack.wait(cid).lifecycle == Lifecycle.READY, dash.stack.container(
        cid
    ).error_message
    return cid


@pytest.fixture(scope="module")
def failed_ct(dash: Dashboard) -> str:
    cid = dash.stack.submit("failing", "list-failing")
    assert dash.stack.wait(cid).lifecycle == Lifecycle.ERROR
    return cid


def row(page: Any, cid: str) -> Any:
    return page.locator(f'#containers-table tr[data-id="{cid}"]')


def status_of(page: Any, cid: str) -> Any:
    return row(page, cid).locator("td.status .badge")


def pve_exists(dash: Dashboard, vmid: int) -> bool:
    box = load_secret_box(dash.stack.settings.secret_key, dash.stack.settings.secret_key_file)
    from provisioner.models import Node

    with dash.stack.factory() as session:
        node = session.query(Node).filter_by(name=dash.node).one()
        with client_for(node, box) as pve:
            return bool(pve.exists(vmid))


def confirm(page: Any, label: str) -> None:
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name=label).click()
    expect(dialog).to_have_count(0)


def test_the_list_shows_every_state_and_refreshes_live(
    page: Any, dash: Dashboard, ready_ct: str, failed_ct: str
) -> None:
    page.goto("/")
    expect(status_of(page, ready_ct)).to_have_text("running")
    expect(status_of(page, failed_ct)).to_have_text("error")
    ready = row(page, ready_ct)
    expect(ready.locator("a.name")).to_have_text("list-ready")
    expect(ready.locator("a.name")).to_have_attribute("href", f"/containers/{ready_ct}")
    expect(ready.locator("td.ip")).to_have_text(re.compile(r"\d+\.\d+\.\d+\.\d+"))
    expect(ready).to_contain_text("lines")
    expect(ready).to_contain_text(dash.node)
    # a failed container links to its progress view, and says which phase failed
    failed = row(page, failed_ct)
    expect(failed.locator("a.name")).to_have_attribute("href", f"/containers/{failed_ct}/progress")
    expect(failed.locator("td.status .sub")).to_have_text("scripts failed")
    expect(failed.locator('button[data-action="retry"]')).to_be_visible()

    # a container submitted now shows up, then turns running, without a reload
    page.evaluate("window.__same_page = true")
    # its script takes about 8 s (100 lines, then a second's pause, 8 times)
    cid = dash.stack.submit("lines", "list-live", variables={"count": 800, "pause_ms": 1000})
    # the row appears without a reload, creating, with a link to its progress
    expect(status_of(page, cid)).to_have_text("creating", timeout=LIVE)
    expect(row(page, cid).locator("a.name")).to_have_attribute(
        "href", f"/containers/{cid}/progress"
    )
    shot(page, "containers-list-creating")
    expect(status_of(page, cid)).to_have_text("running", timeout=120_000)
    assert page.evaluate("window.__same_page") is True
    expect(row(page, cid).locator("a.name")).to_have_attribute("href", f"/containers/{cid}")
    expect(page.locator("#summary")).to_contain_text("running")
    shot(page, "containers-list")


HIDE = """(hidden) => {
    Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
    document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_the_list_stops_polling_while_the_tab_is_hidden(page: Any, ready_ct: str) -> None:
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/api/containers") else None)
    page.goto("/")
    expect(status_of(page, ready_ct)).to_be_visible()
    page.evaluate(HIDE, True)
    page.wait_for_timeout(500)  # a poll already under way may finish
    before = len(polls)
    page.wait_for_timeout(7000)  # more than two polling intervals: nothing may happen
    assert len(polls) == before, "the list kept polling while the tab was hidden"
    # shown again: it refreshes at once
    with page.expect_request(lambda r: r.url.endswith("/api/containers"), timeout=2000):
        page.evaluate(HIDE, False)


def test_stop_and_start_from_the_list(page: Any, ready_ct: str) -> None:
    page.goto("/")
    expect(status_of(page, ready_ct)).to_have_text("running")
    row(page, ready_ct).locator('button[data-action="stop"]').click()
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_contain_text("Stop list-ready?")
    # cancelling does nothing
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    expect(status_of(page, ready_ct)).to_have_text("running")

    row(page, ready_ct).locator('button[data-action="stop"]').click()
    shot(page, "containers-confirm-stop")
    confirm(page, "Stop")
    expect(status_of(page, ready_ct)).to_have_text("stopped", timeout=60_000)
    expect(row(page, ready_ct).locator('button[data-action="stop"]')).to_have_count(0)

    row(page, ready_ct).locator('button[data-action="start"]').click()
    confirm(page, "Start")
    expect(status_of(page, ready_ct)).to_have_text("running", timeout=60_000)


def test_the_more_menu_holds_the_other_actions(page: Any, ready_ct: str) -> None:
    page.goto("/")
    menu = row(page, ready_ct).locator("details.menu")
    menu.locator("summary").click()
    items = menu.locator(".menu-items")
    expect(items).to_be_visible()
    expect(items.locator('[data-action="reboot"]')).to_be_visible()
    expect(items.locator('[data-action="resync"]')).to_be_visible()
    expect(items.locator('[data-action="destroy"]')).to_be_visible()
    shot(page, "containers-menu")
    page.keyboard.press("Escape")
    expect(items).to_be_hidden()


def test_a_refused_action_is_a_toast_with_the_api_message(page: Any, ready_ct: str) -> None:
    page.goto("/")
    expect(status_of(page, ready_ct)).to_have_text(re.compile("running|stopped"))
    # the API refuses what the page would not offer: forge the request
    # whichever power button the row offers (an earlier test may have stopped it)
    action = "stop" if row(page, ready_ct).locator('button[data-action="stop"]').count() else (
        "start")  # fmt: skip
    page.route(re.compile(rf".*/actions/{action}$"), lambda route: route.fulfill(
        status=409, content_type="application/json",
        body=f'{{"error": "cannot {action} a container that is creating (only when error, '
             'ready)", "field": "action"}'))  # fmt: skip
    row(page, ready_ct).locator(f'button[data-action="{action}"]').click()
    confirm(page, action.capitalize())
    toast = page.locator("#toasts .toast-error")
    expect(toast).to_contain_text(f"cannot {action} a container that is creating")


def test_the_empty_list_points_to_the_wizard(page: Any) -> None:
    page.route(re.compile(r".*/api/containers$"), lambda route: route.fulfill(
        status=200, content_type="application/json", body='{"containers": []}'))  # fmt: skip
    page.goto("/")
    empty = page.locator("#empty")
    expect(empty).to_be_visible()
    expect(empty).to_contain_text("No containers yet")
    expect(page.locator("#list")).to_be_hidden()
    empty.get_by_role("link", name="New container").click()
    page.wait_for_url("**/containers/new")
    page.go_back()
    expect(page.locator("#empty")).to_be_visible()
    shot(page, "containers-empty")


def test_the_filter_narrows_the_list(page: Any, ready_ct: str, failed_ct: str) -> None:
    page.goto("/")
    expect(row(page, failed_ct)).to_be_visible()
    page.fill("#filter", "list-fail")
    expect(row(page, failed_ct)).to_be_visible()
    expect(row(page, ready_ct)).to_be_hidden()
    page.fill("#filter", "")
    page.select_option("#status-filter", "error")
    expect(row(page, failed_ct)).to_be_visible()
    expect(row(page, ready_ct)).to_be_hidden()
    page.fill("#filter", "no-such-container")
    expect(page.locator("#no-match")).to_be_visible()


# Records, after each change of the page, what the list's summary says and
# what its rows' badges say and look like (a MutationObserver's callback runs
# once a render is complete).
RECORD_STATES = """() => {
    window.__states = [];
    const take = () => window.__states.push({
        summary: document.getElementById("summary").textContent,
        badges: [...document.querySelectorAll("#containers-table tbody td.status .badge")].map(
            (b) => ({id: b.closest("tr").dataset.id, text: b.textContent.trim(), cls: b.className})),
    });
    new MutationObserver(take).observe(document.body,
        {childList: true, subtree: true, characterData: true});
    take();
}"""


def summary_counts(summary: str) -> Counter[str]:
    """ "3 containers · 2 running · 1 destroying" -> {running: 2, destroying: 1}"""
    counts: Counter[str] = Counter()
    for part in summary.split(" · ")[1:]:
        number, state = part.split(" ", 1)
        counts[state] = int(number)
    return counts


def test_during_a_destroy_the_summary_and_the_badges_agree(page: Any, dash: Dashboard) -> None:
    cid = dash.stack.submit("lines", "list-destroying", variables={"count": 20})
    ct = dash.stack.wait(cid)
    assert ct.lifecycle == Lifecycle.READY and ct.vmid is not None, ct.error_message
    # the destroy task waits 8 s before it halts the container (PVE says
    # "running", with the lock "destroyed", meanwhile)
    admin(dash.stack.sim, "task", {"type": "vzdestroy", "vmid": ct.vmid, "delay": 8})
    try:
        page.goto("/")
        expect(status_of(page, cid)).to_have_text("running")
        page.evaluate(RECORD_STATES)
        menu = row(page, cid).locator("details.menu")
        menu.locator("summary").click()
        menu.locator('[data-action="destroy"]').click()
        confirm(page, "Destroy")
        # asked for, then under way: one state, one look, counted by the summary
        expect(status_of(page, cid)).to_have_text("destroying")
        expect(status_of(page, cid)).to_have_class("badge badge-destroying")
        expect(page.locator("#summary")).to_contain_text("1 destroying")
        dash.stack.wait(cid, (Lifecycle.DESTROYING,), timeout=60)
        expect(status_of(page, cid)).to_have_class("badge badge-destroying")
        expect(page.locator("#summary")).to_contain_text("1 destroying")
        shot(page, "containers-list-destroying")
        expect(row(page, cid)).to_have_count(0, timeout=60_000)  # destroyed: off the list
    finally:
        admin(dash.stack.sim, "faults", method="DELETE")
    records = page.evaluate("window.__states")
    looks: dict[str, set[str]] = {}
    seen = set()
    for record in records:
        shown = Counter(b["text"] for b in record["badges"])
        assert shown == summary_counts(record["summary"]), record
        for badge in record["badges"]:
            looks.setdefault(badge["text"], set()).add(badge["cls"])
            if badge["id"] == cid:
                seen.add(badge["text"])
    assert seen == {"running", "destroying"}, seen
    assert all(len(classes) == 1 for classes in looks.values()), looks


def test_the_detail_page_shows_overview_timeline_and_log(
    page: Any, dash: Dashboard, ready_ct: str
) -> None:
    ct = dash.stack.container(ready_ct)
    page.goto("/")
    row(page, ready_ct).locator("a.name").click()
    page.wait_for_url(f"**/containers/{ready_ct}")
    expect(page.locator("h1")).to_contain_text("list-ready")
    expect(page.locator("#status-badge")).to_have_text(re.compile("running|stopped"))
    expect(page.locator("#ssh-command")).to_have_text(f"ssh root@{ct.ip}")
    expect(page.locator("#details")).to_contain_text(str(ct.vmid))
    expect(page.locator("#details")).to_contain_text("lines")
    expect(page.locator("#live-badge")).to_be_visible()
    expect(page.locator("#resources")).to_contain_text("Cores")
    expect(page.locator("#times")).to_contain_text("Requested")
    expect(page.locator("#progress-link")).to_have_attribute(
        "href", f"/containers/{ready_ct}/progress"
    )
    shot(page, "container-overview")

    page.get_by_role("tab", name=re.compile("Timeline")).click()
    timeline = page.locator("#timeline")
    for phase in ("create", "start", "deploy", "scripts", "finalize"):
        expect(timeline.locator(f'li.timeline-phase[data-phase="{phase}"]').first).to_be_visible()
    expect(timeline.locator("li.timeline-complete").first).to_contain_text("is ready at")
    expect(timeline.locator('li[data-type="log"]')).to_have_count(0)  # log lines are in the log tab
    assert page.url.endswith("#timeline")
    shot(page, "container-timeline")

    page.get_by_role("tab", name="Full log").click()
    console = page.locator("#log")
    expect(console.locator(".line.stdout").first).to_be_visible()
    expect(console.locator(".line.complete").first).to_contain_text("is ready at")
    expect(page.locator("#log-download")).to_have_attribute(
        "href", f"/api/containers/{ready_ct}/log"
    )
    expect(console.locator(".line.stderr")).to_contain_text("to stderr")
    shot(page, "container-log")
    page.select_option("#log-stream", "events")
    expect(console.locator(".line.stdout")).to_have_count(0)
    expect(console.locator(".line.step").first).to_be_visible()
    # the tab survives a reload
    page.reload()
    expect(page.locator("#panel-log")).to_be_visible()


def test_the_detail_page_of_a_failed_container_explains_the_error(
    page: Any, failed_ct: str
) -> None:
    page.goto(f"/containers/{failed_ct}")
    details = page.locator(".error-details")
    expect(details).to_contain_text("failed in the scripts phase")
    expect(details).to_contain_text("20-check.sh")
    expect(details).to_contain_text("Exit code")
    expect(details.locator(".last-lines")).to_contain_text("found /root/fail-now")
    expect(page.locator('#ct-actions button[data-action="retry"]')).to_be_visible()
    shot(page, "container-error")

    page.get_by_role("tab", name="Full log").click()
    stderr = page.locator("#log .line.stderr")
    expect(stderr.first).to_contain_text("found /root/fail-now: failing on purpose")
    page.select_option("#log-stream", "stderr")
    expect(page.locator("#log .line.stdout")).to_have_count(0)
    page.select_option("#log-stream", "")
    page.select_option("#log-script", "10-mark.sh")
    expect(page.locator("#log .line").first).to_contain_text("10-mark.sh ran")
    expect(page.locator("#log .line.stderr")).to_have_count(0)
    shot(page, "container-error-log")


def test_the_detail_page_follows_a_run_then_destroys_the_container(
    page: Any, dash: Dashboard
) -> None:
    """The run followed live; the overview lists the create surface asked
    for (IPv6, a further interface on a VLAN, a volume, DNS, tags, start on
    boot); the destroy takes the container with its volume."""
    prefix = ipaddress.ip_network(dash.stack.sim["subnet"]).prefixlen
    eth1 = f"{dash.stack.address(ETH1_HOST)}/{prefix}"
    # enough lines that the run is still going when the page opens
    cid = dash.stack.submit("lines", "detail-destroy", variables={"count": 8000}, ip6="auto",
                            nics=[{"ip": eth1, "vlan": 20, "firewall": True}],
                            mounts=[{"path": "/data", "size": 1, "backup": False}],
                            searchdomain="example.test", tags=["browser"], onboot=False)  # fmt: skip
    page.goto(f"/containers/{cid}#timeline")
    page.evaluate("window.__same_page = true")
    expect(page.locator("#status-badge")).to_have_text(re.compile("pending|creating"))
    expect(page.locator("#progress-link")).to_have_class(re.compile("primary"))
    # the run goes on: the badge and the timeline follow it without a reload
    expect(page.locator("#status-badge")).to_have_text("running", timeout=120_000)
    expect(page.locator("#timeline li.timeline-complete")).to_contain_text("is ready at")
    assert page.evaluate("window.__same_page") is True
    ct = dash.stack.container(cid)
    assert ct.lifecycle == Lifecycle.READY and ct.vmid is not None
    assert pve_exists(dash, ct.vmid)
    page.get_by_role("tab", name="Overview").click()
    details = page.locator("#details")
    for term, text in (("eth0", "IPv6 auto"), ("eth1", f"node's bridge, {eth1}, VLAN 20, firewall"),
                       ("Volume", "/data · 1 GiB · not backed up"), ("DNS", "example.test"),
                       ("Tags", "browser"), ("Start on boot", "no")):  # fmt: skip
        value = details.locator("dt", has_text=term).locator("xpath=following-sibling::dd[1]")
        expect(value).to_have_text(text)
    shot(page, "container-create-surface")

    page.locator('#ct-actions button[data-action="destroy"]').click()
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_contain_text("cannot be undone")
    shot(page, "container-confirm-destroy")
    confirm(page, "Destroy")
    expect(page.locator("#status-badge")).to_have_text("destroyed", timeout=60_000)
    expect(page.locator("#ct-notices")).to_contain_text("Destroyed")
    expect(page.locator("#ct-actions button")).to_have_count(0)
    expect(page.locator("#timeline li.timeline-run").last).to_contain_text("Destroy")
    assert not pve_exists(dash, ct.vmid)
    page.get_by_role("tab", name="Overview").click()
    shot(page, "container-destroyed")
    # gone from the list
    page.goto("/")
    expect(page.locator("#loading")).to_be_hidden()
    expect(row(page, cid)).to_have_count(0)


def test_an_unknown_container_is_a_404_page(page: Any, dash: Dashboard) -> None:
    response = page.goto("/containers/00000000-0000-0000-0000-000000000000")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Container not found")
    expect(page.locator("header .who")).to_be_visible()  # the dashboard's layout
    shot(page, "container-404")
    page.get_by_role("link", name="Back to containers").click()
    page.wait_for_url(f"{dash.url}/")


@pytest.mark.parametrize("width", [1024, 760])
def test_the_pages_fit_narrower_windows(
    page: Any, ready_ct: str, failed_ct: str, width: int
) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    for path, ready in (("/", f'tr[data-id="{ready_ct}"] .badge'),
                        (f"/containers/{failed_ct}", "#live-badge, .error-details"),
                        ("/templates", ".template-card"), ("/nodes", ".node-status")):  # fmt: skip
        page.goto(path)
        expect(page.locator(ready).first).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than a {width}px window"
    page.goto("/")
    expect(row(page, ready_ct)).to_be_visible()
    shot(page, f"containers-list-{width}")
    page.goto(f"/containers/{ready_ct}")
    expect(page.locator("#live-badge")).to_be_visible()
    shot(page, f"container-{width}")


def test_a_record_whose_ct_is_someone_elses_shows_no_container(
        page: Any, dash: Dashboard, ready_ct: str) -> None:  # fmt: skip
    """A record left claiming another record's CT (an old database): the
    list and the detail page say it owns no container and why; only destroy
    is offered, and it removes the record without touching the CT."""
    from provisioner.db import session_scope
    from provisioner.requests import ProvisionRequest, submit

    holder = dash.stack.container(ready_ct)
    box = load_secret_box(dash.stack.settings.secret_key, dash.stack.settings.secret_key_file)
    with session_scope(dash.stack.factory) as session:
        stale = submit(session, box, dash.stack.settings, ProvisionRequest(
            template="lines", node=dash.node, hostname="list-stale"))  # fmt: skip
        stale.vmid, stale.lifecycle, stale.ip = holder.vmid, Lifecycle.READY, "198.18.255.2"
        stale.finished_phases = ["create", "start", "deploy", "scripts", "finalize"]
        cid = stale.id
    why = f"CT {holder.vmid} on node {dash.stack.sim['node']} belongs to another container now " \
          f"(hostname {holder.hostname}); this record owns no container"  # fmt: skip
    page.goto("/")
    expect(row(page, cid).locator("td.col-vmid")).to_have_text("no container")
    expect(status_of(page, cid)).to_have_attribute("title", f"this record owns no container: {why}")
    expect(row(page, ready_ct).locator("td.col-vmid")).to_have_text(str(holder.vmid))
    shot(page, "containers-list-no-container")

    page.goto(f"/containers/{cid}")
    expect(page.locator("#no-container")).to_contain_text(why)
    expect(page.locator("#vmid-none")).to_have_text("none: this record owns no container")
    actions = page.locator("#ct-actions button")
    expect(actions).to_have_count(1)
    expect(actions).to_have_attribute("data-action", "destroy")
    shot(page, "container-no-container")
    actions.click()
    expect(page.locator("dialog.confirm")).to_contain_text("only the record is removed")
    confirm(page, "Destroy")
    assert dash.stack.wait(cid, (Lifecycle.DESTROYED,), timeout=60).vmid is None
    assert pve_exists(dash, holder.vmid)  # the holder's CT is untouched
    assert dash.stack.container(ready_ct).lifecycle == Lifecycle.READY

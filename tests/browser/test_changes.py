"""Day-two changes from the container page in a real browser: the Snapshots
tab (list, take, roll back, remove), the Settings tab (change in place,
refusals next to their fields, protection), the resync's on-failure choice,
and what the header and the notices say about a change.

``change_ct`` (the test template ``lines``) is made once for the module and
serves the tests in order; each leaves it ready and unprotected.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from playwright.sync_api import expect

from provisioner.db import session_scope
from provisioner.models import Container, Lifecycle
from tests.browser.conftest import Dashboard, shot
from tests.pipeline.test_ownership import pve_client
from tests.pipeline.test_templates_e2e import ssh_run
from tests.pvesim.helpers import admin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RUN = 90_000  # ms: a change's run, start to terminal event


@pytest.fixture(scope="module")
def change_ct(dash: Dashboard) -> str:
    cid = dash.stack.submit("lines", "changes-ui", variables={"count": 20})
    ct = dash.stack.wait(cid)
    assert ct.lifecycle == Lifecycle.READY, ct.error_message
    return cid


def in_ct(dash: Dashboard, cid: str, command: str) -> str:
    """A command in the CT over SSH (in a thread of its own: Playwright's
    sync API holds this thread's event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(ssh_run, dash.stack, dash.stack.container(cid), command).result()


def open_tab(page: Any, cid: str, tab: str) -> None:
    page.goto(f"/containers/{cid}")
    expect(page.locator("#live-badge")).to_be_visible()
    page.get_by_role("tab", name=re.compile(tab)).click()
    assert page.url.endswith(f"#{tab.lower()}")


def snapshot_row(page: Any, name: str) -> Any:
    return page.locator(f'#snapshots-table tr[data-name="{name}"]')


def dialog(page: Any) -> Any:
    box = page.locator("dialog.confirm")
    expect(box).to_be_visible()
    return box


def confirm(page: Any, label: str) -> None:
    box = dialog(page)
    box.get_by_role("button", name=label).click()
    expect(box).to_have_count(0)


def wait_change(page: Any) -> None:
    """The change asked for has run: its notice went, a toast said how it ended."""
    expect(page.locator("#change-notice")).to_have_count(0, timeout=RUN)


def pve_config(dash: Dashboard, cid: str) -> dict[str, Any]:
    vmid = dash.stack.container(cid).vmid
    assert vmid is not None
    with pve_client(dash.stack) as pve:
        return dict(pve.get_config(vmid))


def api_get(page: Any, path: str) -> Any:
    answer = page.request.get(path)
    assert answer.ok, answer.text()
    return answer.json()


def test_snapshots_are_taken_listed_rolled_back_to_and_removed(
        page: Any, dash: Dashboard, change_ct: str) -> None:  # fmt: skip
    open_tab(page, change_ct, "Snapshots")
    expect(page.locator("#snapshots-empty")).to_be_visible()
    expect(page.locator("#snapshot-name")).to_have_attribute(
        "placeholder", re.compile(r"^snap-\d{8}-\d{6}$")
    )

    # refused by the API: the error is shown next to the field, nothing is queued
    page.fill("#snapshot-name", "current")
    page.get_by_role("button", name="Take snapshot").click()
    expect(page.locator("#snapshot-name-error")).to_contain_text(
        "'current' is reserved by Proxmox VE"
    )
    expect(page.locator("#snapshot-name")).to_have_attribute("aria-invalid", "true")
    page.fill("#snapshot-name", "1-bad name")
    page.get_by_role("button", name="Take snapshot").click()
    expect(page.locator("#snapshot-name-error")).to_contain_text("starting with a letter")

    # a snapshot with a name and a description
    page.fill("#snapshot-name", "known-good")
    page.fill("#snapshot-description", "a known good state")
    page.get_by_role("button", name="Take snapshot").click()
    expect(page.locator("#snapshot-name-error")).to_be_empty()
    notice = page.locator("#change-notice")
    expect(notice).to_contain_text("Taking snapshot 'known-good'")
    expect(page.locator("#snapshot-submit")).to_be_disabled()  # one change at a time
    wait_change(page)
    expect(page.locator("#toasts .toast-ok").last).to_contain_text("snapshot 'known-good' taken")
    row = snapshot_row(page, "known-good")
    expect(row).to_be_visible()
    expect(row).to_contain_text("a known good state")
    expect(row.locator("time")).to_have_text(re.compile(r"^\d+[smhd] ago$"))
    expect(row.locator("time")).to_have_attribute("title", re.compile(r"\d{2}:\d{2}:\d{2}"))
    expect(row.locator(".badge")).to_have_count(0)  # not an automatic one
    expect(page.locator("#snapshots-count")).to_have_text("1")
    expect(page.locator("#snapshot-name")).to_have_value("")  # the form is ready for the next

    # one without a name gets the default
    page.get_by_role("button", name="Take snapshot").click()
    wait_change(page)
    expect(page.locator("#snapshots-table tbody tr")).to_have_count(2)
    expect(page.locator("#snapshots-table tbody tr").first).to_have_attribute(
        "data-name", re.compile(r"^snap-\d{8}-\d{6}$"))  # fmt: skip
    shot(page, "container-snapshots")

    # something written after the snapshot, then lost by rolling back to it
    in_ct(dash, change_ct, "echo later > /root/written-later.txt")
    row.get_by_role("button", name="Roll back to known-good").click()
    box = dialog(page)
    expect(box).to_contain_text("Roll changes-ui back to 'known-good'?")
    loses = box.locator(".rollback-loses")
    expect(loses).to_contain_text("Rolling back to 'known-good'")
    expect(loses).to_contain_text("loses everything written to the container since then: files, "
                                  "databases, packages, and its configuration")  # fmt: skip
    expect(loses).to_contain_text("The container is stopped for the rollback and started again.")
    shot(page, "container-confirm-rollback")
    # cancelling does nothing
    box.get_by_role("button", name="Cancel").click()
    expect(page.locator("#change-notice")).to_have_count(0)

    row.get_by_role("button", name="Roll back to known-good").click()
    confirm(page, "Roll back")
    expect(page.locator("#change-notice")).to_contain_text("Rolling back to 'known-good'")
    wait_change(page)
    expect(page.locator("#toasts .toast-ok").last).to_contain_text(
        "rolled back to snapshot 'known-good'")  # fmt: skip
    expect(page.locator("#change-outcome")).to_have_count(0)
    assert "written-later" not in in_ct(dash, change_ct, "ls /root")
    ct = dash.stack.container(change_ct)
    assert ct.lifecycle == Lifecycle.READY
    # the run is a run of its own in the timeline
    page.get_by_role("tab", name=re.compile("Timeline")).click()
    expect(page.locator('#timeline li.timeline-run[data-kind="rollback"]')).to_contain_text(
        "Rollback"
    )
    expect(page.locator('#timeline li.timeline-run[data-kind="snapshot"]').first).to_contain_text(
        "Snapshot")  # fmt: skip

    # removed, after a confirmation
    page.get_by_role("tab", name=re.compile("Snapshots")).click()
    snapshot_row(page, "known-good").get_by_role("button", name="Remove known-good").click()
    expect(dialog(page)).to_contain_text("can no longer be rolled back to it")
    confirm(page, "Remove")
    wait_change(page)
    expect(snapshot_row(page, "known-good")).to_have_count(0)
    names = [
        s["name"] for s in api_get(page, f"/api/containers/{change_ct}/snapshots")["snapshots"]
    ]
    assert "known-good" not in names and len(names) == 1


def test_a_resync_asks_what_to_do_on_failure_and_leaves_a_safety_snapshot(
        page: Any, change_ct: str) -> None:  # fmt: skip
    open_tab(page, change_ct, "Snapshots")
    page.locator('#ct-actions button[data-action="resync"]').click()
    box = dialog(page)
    expect(box).to_contain_text("If the resync fails")
    expect(box.get_by_label("Roll back to the safety snapshot")).to_be_checked()
    expect(box.get_by_label("Keep the container as the failure left it")).not_to_be_checked()
    shot(page, "container-confirm-resync")
    with page.expect_request(lambda r: r.url.endswith("/actions/resync")) as asked:
        confirm(page, "Resync")
    assert asked.value.post_data_json == {"on_failure": "rollback"}
    expect(page.locator("#toasts .toast-ok").last).to_contain_text("is ready at", timeout=RUN)
    expect(page.locator("#status-badge")).to_have_text("running")
    auto = page.locator("#snapshots-table tbody tr").first
    expect(auto).to_have_attribute("data-name", re.compile(r"^auto-resync-\d{8}-\d{6}$"))
    expect(auto.locator(".badge")).to_have_text("automatic")


def test_settings_refuse_a_shrink_and_change_cores_and_memory(
        page: Any, dash: Dashboard, change_ct: str) -> None:  # fmt: skip
    open_tab(page, change_ct, "Settings")
    # the current values, from the record (here: the template's defaults)
    expect(page.locator("#set-cores")).to_have_value("1")
    expect(page.locator("#set-memory")).to_have_value("256")
    expect(page.locator("#set-disk-now")).to_contain_text("Now: 2 GiB")
    expect(page.locator("#set-disk")).to_have_attribute("min", "3")
    expect(page.locator("#set-protection")).to_be_enabled()  # its state is known
    expect(page.locator("#set-protection")).not_to_be_checked()

    # a disk never shrinks: refused next to the field, before any question
    page.fill("#set-disk", "1")
    page.get_by_role("button", name="Review and apply…").click()
    disk_error = page.locator("#set-disk").locator("xpath=..").locator(".field-error")
    expect(disk_error).to_contain_text("1 GiB is smaller than the disk now (2 GiB)")
    expect(page.locator("#set-disk")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("dialog.confirm")).to_have_count(0)

    # what the API refuses is shown next to every field it names
    page.fill("#set-disk", "")
    page.fill("#set-memory", "8")
    page.fill("#set-cores", "9000")
    page.get_by_role("button", name="Review and apply…").click()
    confirm(page, "Apply")
    memory_error = page.locator("#set-memory").locator("xpath=..").locator(".field-error")
    cores_error = page.locator("#set-cores").locator("xpath=..").locator(".field-error")
    expect(memory_error).to_contain_text("memory must be between 16 and")
    expect(cores_error).to_contain_text("cores must be between 1 and 8192")
    expect(disk_error).to_be_empty()
    expect(page.locator("#change-notice")).to_have_count(0)  # nothing queued

    # nothing to change: said, not asked
    page.get_by_role("button", name="Reset").click()
    expect(page.locator("#set-memory")).to_have_value("256")
    page.get_by_role("button", name="Review and apply…").click()
    expect(page.locator("#settings-error")).to_contain_text("Nothing to change")
    expect(page.locator("dialog.confirm")).to_have_count(0)

    # cores and memory: the confirmation lists the changes
    page.fill("#set-cores", "2")
    page.fill("#set-memory", "384")
    page.get_by_role("button", name="Review and apply…").click()
    box = dialog(page)
    expect(box).to_contain_text("Change changes-ui?")
    changes = box.locator("dl.change-list")
    expect(changes).to_contain_text("Cores")
    expect(changes).to_contain_text("1 → 2")
    expect(changes).to_contain_text("256 MiB → 384 MiB")
    expect(changes).not_to_contain_text("Swap")
    expect(box).to_contain_text("A safety snapshot is taken first; if the change fails, the "
                                "container is rolled back to it.")  # fmt: skip
    shot(page, "container-confirm-settings")
    with page.expect_request(lambda r: r.method == "PATCH") as asked:
        confirm(page, "Apply")
    assert asked.value.post_data_json == {"cores": 2, "memory": 384, "on_failure": "rollback"}
    expect(page.locator("#change-notice")).to_contain_text("Changing the settings")
    wait_change(page)
    expect(page.locator("#toasts .toast-ok").last).to_contain_text("changed cores, memory")
    # the form shows the new values; the API and PVE have them
    expect(page.locator("#set-cores")).to_have_value("2")
    expect(page.locator("#set-memory")).to_have_value("384")
    expect(page.locator("#set-cores-now")).to_have_text("Now: 2")
    record = api_get(page, f"/api/containers/{change_ct}")
    assert (record["request"]["cores"], record["request"]["memory"]) == (2, 384)
    assert record["change_in_flight"] is None
    config = pve_config(dash, change_ct)
    assert (config["cores"], config["memory"]) == (2, 384)
    page.get_by_role("tab", name="Overview").click()
    expect(page.locator("#resources")).to_contain_text("384 MiB")
    shot(page, "container-settings-done")


def test_protection_disables_rollback_and_shows_in_the_header(
        page: Any, dash: Dashboard, change_ct: str) -> None:  # fmt: skip
    open_tab(page, change_ct, "Settings")
    expect(page.locator("#protected-badge")).to_have_count(0)
    page.get_by_label("Protected").check()
    page.get_by_label("Restart afterwards").check()
    page.get_by_role("button", name="Review and apply…").click()
    box = dialog(page)
    expect(box.locator("dl.change-list")).to_contain_text("Protection")
    expect(box.locator("dl.change-list")).to_contain_text("Restart")
    expect(box).to_contain_text("Nothing else about the container changes.")
    confirm(page, "Apply")
    wait_change(page)
    expect(page.locator("#protected-badge")).to_have_text("protected")
    assert str(pve_config(dash, change_ct)["protection"]) == "1"

    page.get_by_role("tab", name=re.compile("Snapshots")).click()
    expect(page.locator("#snapshots-protected")).to_be_visible()
    rollback = page.locator('#snapshots-table button[data-op="rollback"]').first
    expect(rollback).to_be_disabled()
    expect(rollback).to_have_attribute("aria-describedby", "snapshots-protected")
    expect(rollback).to_have_attribute("title", re.compile("protected"))
    shot(page, "container-snapshots-protected")
    # the notice's link goes to the settings, where protection is turned off again
    page.locator("#snapshots-protected").get_by_role("link", name="Settings").click()
    expect(page.locator("#panel-settings")).to_be_visible()
    expect(page.locator("#set-protection")).to_be_checked()
    page.get_by_label("Protected").uncheck()
    page.get_by_role("button", name="Review and apply…").click()
    expect(dialog(page).locator("dl.change-list")).to_contain_text("off")
    confirm(page, "Apply")
    wait_change(page)
    expect(page.locator("#protected-badge")).to_have_count(0)
    page.get_by_role("tab", name=re.compile("Snapshots")).click()
    expect(page.locator('#snapshots-table button[data-op="rollback"]').first).to_be_enabled()
    expect(page.locator("#snapshots-protected")).to_be_hidden()


def test_a_change_that_fails_is_rolled_back_and_said_so(
        page: Any, dash: Dashboard, change_ct: str) -> None:  # fmt: skip
    vmid = dash.stack.container(change_ct).vmid
    admin(dash.stack.sim, "task", {"type": "resize", "vmid": vmid, "error": "disk on fire"})
    try:
        open_tab(page, change_ct, "Settings")
        page.fill("#set-disk", "4")
        page.fill("#set-swap", "128")
        page.get_by_role("button", name="Review and apply…").click()
        expect(dialog(page).locator("dl.change-list")).to_contain_text(
            "2 GiB → 4 GiB (it cannot be shrunk again)")  # fmt: skip
        confirm(page, "Apply")
        outcome = page.locator("#change-outcome")
        expect(outcome).to_contain_text("The change of settings failed and was rolled back.",
                                        timeout=RUN)  # fmt: skip
        expect(outcome).to_contain_text("disk on fire")
        expect(outcome).to_contain_text("rolled back to the safety snapshot 'auto-set-")
        expect(outcome).to_have_class(re.compile("notice-warn"))
        shot(page, "container-change-rolled-back")
    finally:
        admin(dash.stack.sim, "faults", method="DELETE")
    # as it was: the swap too, in PVE and in the record (the form did not take the values)
    config = pve_config(dash, change_ct)
    assert config["swap"] == 512 and "size=2G" in config["rootfs"], config
    expect(page.locator("#set-swap")).to_have_value("128")
    page.get_by_role("button", name="Reset").click()
    expect(page.locator("#set-swap")).to_have_value("512")
    expect(page.locator("#set-disk-now")).to_contain_text("Now: 2 GiB")


def test_a_change_that_fails_is_said_in_a_notice(page: Any, change_ct: str) -> None:
    """The run refuses what the API could not know (a name taken since):
    the page says so until dismissed."""
    open_tab(page, change_ct, "Snapshots")
    name = page.locator("#snapshots-table tbody tr").first.get_attribute("data-name")
    assert name
    # the API takes a name the node has: the run refuses it
    page.fill("#snapshot-name", name)
    page.get_by_role("button", name="Take snapshot").click()
    outcome = page.locator("#change-outcome")
    expect(outcome).to_contain_text("Snapshot failed.", timeout=RUN)
    expect(outcome).to_contain_text(f"already has a snapshot '{name}'")
    expect(page.locator("#toasts .toast-error").last).to_contain_text("Snapshot failed")
    outcome.get_by_role("button", name="Dismiss").click()
    expect(outcome).to_have_count(0)


@pytest.fixture
def shown_record(dash: Dashboard, change_ct: str) -> Iterator[str]:
    """A record with an environment and a change in flight (no job: the
    page only shows them)."""
    from provisioner.requests import ProvisionRequest, submit
    from provisioner.secrets.keyfile import load_secret_box

    box = load_secret_box(dash.stack.settings.secret_key, dash.stack.settings.secret_key_file)
    with session_scope(dash.stack.factory) as session:
        record = submit(session, box, dash.stack.settings, ProvisionRequest(
            template="lines", node=dash.node, hostname="changes-shown"))  # fmt: skip
        record.lifecycle, record.current_phase = Lifecycle.CREATING, "deploy"
        record.environment = "staging"
        record.safe_change = {"action": "resync", "snapshot": "auto-resync-20261206-081500",
                              "on_failure": "keep", "lifecycle": "ready"}  # fmt: skip
        cid = record.id
    yield cid
    with session_scope(dash.stack.factory) as session:
        row = session.get(Container, cid)
        assert row is not None
        row.lifecycle, row.safe_change = Lifecycle.DESTROYED, None


def test_the_header_and_notices_show_the_environment_and_a_change_in_flight(
        page: Any, shown_record: str) -> None:  # fmt: skip
    page.goto(f"/containers/{shown_record}")
    expect(page.locator("#environment-tag")).to_have_text("environment: staging")
    flight = page.locator("#change-in-flight")
    expect(flight).to_contain_text("A resync is under way; its safety snapshot is "
                                   "auto-resync-20261206-081500")  # fmt: skip
    expect(flight).to_contain_text("kept as the failure leaves it")
    expect(page.locator("#ct-notices")).to_contain_text("Resyncing: deploy.")
    page.get_by_role("tab", name=re.compile("Snapshots")).click()
    expect(page.locator("#snapshots-unavailable")).to_contain_text("once it is ready")
    expect(page.locator("#card-snapshots")).to_be_hidden()
    page.get_by_role("tab", name="Settings").click()
    expect(page.locator("#settings-unavailable")).to_contain_text("once it is ready")
    shot(page, "container-change-in-flight")

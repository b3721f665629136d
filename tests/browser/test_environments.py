"""Environments and clones from the dashboard in a real browser: the
container page's Environment tab (its environment, its source, its clones;
clone with a field error and the root password shown once; sync and
promote, each confirmed, queued and followed to its outcome, a promote on
the source's events), the containers list, which shows a clone right under
its source, and the wizard's environment.

``env_source`` (the test template ``lines``: no data hooks) is made once for
the module; ``env_clone`` is the clone of it the first test makes through
the page (made here when that test did not run).  ``app_pair`` is a source
and its staging clone of the test template ``stateful``, whose data hooks
export and import a SQLite database.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from provisioner.models import Container, Lifecycle
from provisioner.requests import CloneRequest, request_clone
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import container_root_password
from tests.browser.conftest import Dashboard, shot
from tests.browser.test_wizard import (
    choose_node,
    choose_template,
    next_step,
    read_password_once,
    step,
)
from tests.pipeline.test_templates_e2e import ssh_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RUN = 120_000  # ms: a clone's or a change's run, start to terminal event
CLONE = "env-src-staging"


@pytest.fixture(scope="module")
def env_source(dash: Dashboard) -> str:
    cid = dash.stack.submit("lines", "env-src", variables={"count": 5})
    ct = dash.stack.wait(cid)
    assert ct.lifecycle == Lifecycle.READY, ct.error_message
    return cid


@pytest.fixture(scope="module")
def env_clone(dash: Dashboard, env_source: str) -> str:
    with dash.stack.factory() as session:
        cid = session.scalars(select(Container.id).where(
            Container.source_id == env_source, Container.hostname == CLONE)).first()  # fmt: skip
    if cid is None:
        box = load_secret_box(dash.stack.settings.secret_key, dash.stack.settings.secret_key_file)
        with dash.stack.factory() as session:
            source = session.get(Container, env_source)
            assert source is not None
            cid = request_clone(session, box, dash.stack.settings, dash.stack.redis, source,
                                CloneRequest(hostname=CLONE)).container.id  # fmt: skip
    ct = dash.stack.wait(cid)
    assert ct.lifecycle == Lifecycle.READY, ct.error_message
    return cid


@pytest.fixture(scope="module")
def app_pair(dash: Dashboard) -> tuple[str, str]:
    """A stateful source (env-app) and its staging clone (env-app-staging), ready."""
    source = dash.stack.submit("stateful", "env-app")
    ct = dash.stack.wait(source)
    assert ct.lifecycle == Lifecycle.READY, ct.error_message
    box = load_secret_box(dash.stack.settings.secret_key, dash.stack.settings.secret_key_file)
    with dash.stack.factory() as session:
        row = session.get(Container, source)
        assert row is not None
        clone = request_clone(session, box, dash.stack.settings, dash.stack.redis, row,
                              CloneRequest(hostname="env-app-staging")).container.id  # fmt: skip
    ct = dash.stack.wait(clone)
    assert ct.lifecycle == Lifecycle.READY, ct.error_message
    return source, clone


def in_ct(dash: Dashboard, cid: str, command: str) -> str:
    """A command in the CT over SSH (in a thread of its own: Playwright's
    sync API holds this thread's event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(ssh_run, dash.stack, dash.stack.container(cid), command).result()


def notes(dash: Dashboard, cid: str) -> list[str]:
    """The rows of the stateful template's database."""
    return in_ct(dash, cid, "python3 -c \"import sqlite3; [print(r[0]) for r in sqlite3.connect("
                 "'/var/lib/app/app.db').execute('SELECT body FROM notes ORDER BY id')]\""
                 ).splitlines()  # fmt: skip


def add_note(dash: Dashboard, cid: str, body: str) -> None:
    in_ct(dash, cid, "python3 -c \"import sqlite3; db = sqlite3.connect('/var/lib/app/app.db'); "
          f"db.execute(\\\"INSERT INTO notes (body) VALUES ('{body}')\\\"); db.commit()\"")  # fmt: skip


def wait_change(page: Any) -> None:
    """The change asked for has run: its notice went, a message said how it ended."""
    expect(page.locator("#change-notice")).to_have_count(0, timeout=RUN)


def open_tab(page: Any, cid: str) -> None:
    page.goto(f"/containers/{cid}")
    expect(page.locator("#live-badge")).to_be_visible()
    page.get_by_role("tab", name=re.compile("Environment")).click()
    assert page.url.endswith("#environment")


def dialog(page: Any) -> Any:
    box = page.locator("dialog.confirm")
    expect(box).to_be_visible()
    return box


def list_row(page: Any, cid: str) -> Any:
    return page.locator(f'#containers-table tr[data-id="{cid}"]')


def test_a_clone_from_the_page_shows_its_password_once_and_sits_under_its_source(
        page: Any, dash: Dashboard, env_source: str) -> None:  # fmt: skip
    open_tab(page, env_source)
    expect(page.locator("#environment-badge")).to_have_text("none")
    expect(page.locator("#environment-source")).to_have_text("not a clone")
    expect(page.locator("#clones-empty")).to_be_visible()
    expect(page.locator("#sync-open")).to_have_count(0)  # not a clone: nothing to sync from
    shot(page, "container-environment-source")

    page.get_by_role("button", name="Clone…").click()
    box = page.locator("#clone-dialog")
    expect(box).to_be_visible()
    expect(box.get_by_label("Environment")).to_have_value("staging")
    expect(box.get_by_label("Full copy")).to_be_checked()
    expect(box.get_by_label("DHCP")).to_be_checked()
    expect(box.get_by_label("Address with prefix length")).to_be_hidden()
    # production says what it brings
    box.get_by_label("Environment").fill("production")
    expect(box.locator("#clone-production-note")).to_be_visible()
    box.get_by_label("Environment").fill("staging")
    expect(box.locator("#clone-production-note")).to_be_hidden()

    # refused by the API: said next to each field, the dialog stays
    box.get_by_label("Hostname").fill("bad_name!")
    box.get_by_label("Environment").fill("Prod!")
    box.get_by_role("button", name="Clone", exact=True).click()
    hostname_error = box.locator("#clone-hostname").locator("xpath=..").locator(".field-error")
    environment_error = (
        box.locator("#clone-environment").locator("xpath=..").locator(".field-error")
    )
    expect(hostname_error).to_contain_text("hostname")
    expect(environment_error).to_contain_text("lower-case letters")
    expect(box.locator("#clone-hostname")).to_have_attribute("aria-invalid", "true")
    expect(box.locator("#clone-environment")).to_have_attribute("aria-invalid", "true")
    shot(page, "container-clone-field-errors")
    with dash.stack.factory() as session:  # nothing stored
        assert not session.scalars(select(Container).where(Container.source_id == env_source)).all()

    # a static address is asked for with its gateway
    box.get_by_label("Static address").check()
    expect(box.get_by_label("Address with prefix length")).to_be_visible()
    box.get_by_label("DHCP").check()

    box.get_by_label("Hostname").fill(CLONE)
    box.get_by_label("Environment").fill("staging")
    with page.expect_request(lambda r: r.url.endswith("/clone")) as asked:
        box.get_by_role("button", name="Clone", exact=True).click()
    assert asked.value.post_data_json == {"hostname": CLONE, "full": True, "ip": "dhcp",
                                          "environment": "staging"}  # fmt: skip
    created = page.locator("#clone-created")
    expect(created).to_be_visible()
    expect(page.locator("#clone-dialog")).to_have_count(0)
    expect(created).to_contain_text(f"The root password of {CLONE} is shown this once")
    href = page.locator("#clone-page-link").get_attribute("href")
    assert href is not None
    cid = href.rsplit("/", 1)[1]
    expect(page.locator("#clone-progress-link")).to_have_attribute(
        "href", f"/containers/{cid}/progress")  # fmt: skip
    shot(page, "container-clone-password")
    password = read_password_once(page)  # copied; Escape does not lose it
    expect(created).to_have_count(0)
    assert password not in page.content()  # shown once: gone from the page
    box_key = load_secret_box(dash.stack.settings.secret_key, dash.stack.settings.secret_key_file)
    assert container_root_password(box_key, dash.stack.container(cid)) == password

    # listed under Clones at once, with its environment
    clone_row = page.locator(f'#clones-table tr[data-id="{cid}"]')
    expect(clone_row).to_contain_text(CLONE)
    expect(clone_row.locator(".tag.env")).to_have_text("environment: staging")
    expect(page.locator("#clones-count")).to_have_text("1")
    record = page.request.get(f"/api/containers/{cid}").json()
    assert record["source_id"] == env_source and record["environment"] == "staging"
    assert "root_password" not in record
    expect(clone_row.locator(".badge")).to_have_text("ready", timeout=RUN)
    shot(page, "container-environment-clones")

    # the list: the clone right under its source, indented, with its environment
    page.goto("/")
    source_row, row = list_row(page, env_source), list_row(page, cid)
    expect(row).to_have_class(re.compile("clone-row"))
    expect(row).to_have_attribute("data-source", env_source)
    expect(row.locator("td.hostname .tag.env")).to_have_text("environment: staging")
    expect(row.locator("td.hostname")).to_contain_text("clone of env-src")
    expect(source_row.locator("xpath=following-sibling::tr[1]")).to_have_attribute("data-id", cid)
    expect(row.locator("td.status .badge")).to_have_text("running")
    shot(page, "containers-grouped")
    # filtered out, the source leaves its clone on its own
    page.fill("#filter", CLONE)
    expect(source_row).to_be_hidden()
    expect(row).to_be_visible()
    expect(row).not_to_have_class(re.compile("clone-row"))
    expect(row.locator("td.hostname .clone-mark")).to_have_count(0)
    page.fill("#filter", "staging")  # the environment is filtered on too
    expect(row).to_be_visible()
    page.fill("#filter", "")
    expect(row).to_have_class(re.compile("clone-row"))

    # the clone's Environment tab links back to its source
    row.locator("a.name").click()
    page.wait_for_url(f"**/containers/{cid}")
    page.get_by_role("tab", name=re.compile("Environment")).click()
    expect(page.locator("#environment-badge")).to_have_text("environment: staging")
    source_link = page.locator("#source-link")
    expect(source_link).to_have_text("env-src")
    expect(source_link).to_have_attribute("href", f"/containers/{env_source}")
    expect(page.get_by_role("button", name="Sync from env-src")).to_be_enabled()
    expect(page.get_by_role("button", name="Promote to env-src")).to_be_enabled()
    expect(page.locator("#environment-tag")).to_have_text("environment: staging")  # the header
    shot(page, "container-environment-clone")
    source_link.click()
    page.wait_for_url(f"**/containers/{env_source}")


def test_the_wizard_takes_an_environment(page: Any, dash: Dashboard) -> None:
    page.goto("/containers/new")
    choose_template(page, "lines")
    next_step(page)
    choose_node(page, dash)
    next_step(page)
    network = step(page, "network")
    page.fill("#hostname", "env-wizard")
    expect(page.locator("#environment")).to_have_value("")  # none unless chosen
    expect(network.locator("#environment-help")).to_contain_text("protection flag")
    page.select_option("#environment", "development")
    for _ in range(4):  # resources -> access -> variables -> review
        next_step(page)
    review = step(page, "review")
    expect(review.locator('[data-review="network"]')).to_contain_text("development")
    with page.expect_request(lambda r: r.url.endswith("/api/containers")) as asked:
        next_step(page)
    assert asked.value.post_data_json["environment"] == "development"
    read_password_once(page)
    page.wait_for_url(re.compile(r".*/containers/[0-9a-f-]+/progress$"))
    cid = page.url.rsplit("/", 2)[1]
    assert dash.stack.container(cid).environment == "development"


def test_sync_and_promote_are_confirmed_queued_and_followed_to_their_end(
        page: Any, dash: Dashboard, app_pair: tuple[str, str]) -> None:  # fmt: skip
    source, clone = app_pair
    add_note(dash, source, "production order 42")
    add_note(dash, clone, "a staging edit")

    # sync: the clone's data replaced by the source's
    open_tab(page, clone)
    page.get_by_role("button", name="Sync from env-app").click()
    box = dialog(page)
    expect(box).to_contain_text("Sync env-app-staging from env-app?")
    expect(box.locator(".sync-replaces")).to_contain_text(
        "The data of env-app-staging is replaced by env-app's.")  # fmt: skip
    expect(box).to_contain_text("A safety snapshot of env-app-staging is taken first.")
    expect(box.get_by_label("Anonymise the copied data")).to_be_checked()  # staging
    expect(box.get_by_label("Roll back to the safety snapshot")).to_be_checked()
    shot(page, "container-confirm-sync")
    box.get_by_role("button", name="Cancel").click()  # cancelling does nothing
    expect(page.locator("dialog.confirm")).to_have_count(0)
    expect(page.locator("#change-notice")).to_have_count(0)

    page.get_by_role("button", name="Sync from env-app").click()
    with page.expect_request(lambda r: r.url.endswith("/sync")) as asked:
        dialog(page).get_by_role("button", name="Sync", exact=True).click()
    assert asked.value.post_data_json == {"on_failure": "rollback", "anonymise": True}
    expect(page.locator("#change-notice")).to_contain_text("Syncing from env-app")
    wait_change(page)
    expect(page.locator("#toasts .toast-ok").last).to_contain_text("synced from env-app")
    expect(page.locator("#change-outcome")).to_have_count(0)
    synced = notes(dash, clone)
    assert "production order 42" in synced and "a staging edit" not in synced
    assert "email: [anonymised]" in synced and "home: http://env-app-staging/" in synced
    page.get_by_role("tab", name=re.compile("Timeline")).click()
    expect(page.locator('#timeline li.timeline-run[data-kind="sync"]')).to_contain_text("Sync")

    # promote: the source's data replaced by the clone's, after the source's hostname is typed
    add_note(dash, clone, "approved change")
    page.get_by_role("tab", name=re.compile("Environment")).click()
    page.get_by_role("button", name="Promote to env-app").click()
    box = dialog(page)
    expect(box).to_contain_text("Promote env-app-staging to env-app?")
    expect(box.locator(".promote-replaces")).to_contain_text(
        "The data of env-app is replaced by env-app-staging's.")  # fmt: skip
    expect(box).to_contain_text("A safety snapshot of env-app is taken first; if anything "
                                "fails, env-app is rolled back to it.")  # fmt: skip
    go = box.get_by_role("button", name="Promote to env-app")
    expect(go).to_be_disabled()
    typed = box.get_by_label("Type env-app to confirm")
    expect(typed).to_be_focused()
    typed.fill("env-app-staging")
    expect(go).to_be_disabled()
    typed.fill("env-app")
    expect(go).to_be_enabled()
    shot(page, "container-confirm-promote")
    with page.expect_request(lambda r: r.url.endswith("/promote")) as asked:
        go.click()
    assert asked.value.post_data_json == {"on_failure": "rollback"}
    notice = page.locator("#change-notice")
    expect(notice).to_contain_text("Promoting to env-app")
    expect(notice.locator("#change-other-link")).to_have_attribute("href", f"/containers/{source}")
    expect(notice.get_by_role("link", name="live progress view")).to_have_attribute(
        "href", f"/containers/{source}/progress")  # fmt: skip
    wait_change(page)
    expect(page.locator("#toasts .toast-ok").last).to_contain_text(
        "env-app: promoted from env-app-staging")  # fmt: skip
    promoted = notes(dash, source)
    assert promoted[-1] == "approved change" and "home: http://env-app/" in promoted
    assert dash.stack.wait(source).lifecycle == Lifecycle.READY

    # a promote that fails leaves the source as it was, and the page says so
    in_ct(dash, source, "touch /root/fail-import")
    try:
        add_note(dash, clone, "never promoted")
        page.get_by_role("button", name="Promote to env-app").click()
        box = dialog(page)
        box.get_by_label("Type env-app to confirm").fill("env-app")
        box.get_by_label("Type env-app to confirm").press("Enter")  # Enter confirms, once typed
        expect(box).to_have_count(0)
        outcome = page.locator("#change-outcome")
        expect(outcome).to_contain_text("The promotion failed and was rolled back.", timeout=RUN)
        expect(outcome).to_contain_text("exited with 4")
        expect(outcome).to_have_class(re.compile("notice-warn"))
        expect(outcome.get_by_role("link", name="timeline of env-app")).to_have_attribute(
            "href", f"/containers/{source}#timeline")  # fmt: skip
        shot(page, "container-promote-rolled-back")
    finally:
        in_ct(dash, source, "rm -f /root/fail-import")
    assert notes(dash, source) == promoted
    assert dash.stack.wait(source).lifecycle == Lifecycle.READY


def test_a_template_without_data_hooks_is_refused_with_the_reason(
        page: Any, env_clone: str) -> None:  # fmt: skip
    open_tab(page, env_clone)
    page.get_by_role("button", name="Sync from env-src").click()
    box = dialog(page)
    box.get_by_label("Keep the clone as the failure left it").check()
    with page.expect_request(lambda r: r.url.endswith("/sync")) as asked:
        box.get_by_role("button", name="Sync", exact=True).click()
    assert asked.value.post_data_json == {"on_failure": "keep", "anonymise": True}
    refused = page.locator("#environment-error")
    expect(refused).to_contain_text("Sync refused.")
    expect(refused).to_contain_text("template lines has no export and import hooks")
    expect(page.locator("#toasts .toast-error").last).to_contain_text("Sync refused")
    expect(page.locator("#change-notice")).to_have_count(0)  # nothing queued

    page.get_by_role("button", name="Promote to env-src").click()
    box = dialog(page)
    box.get_by_label("Type env-src to confirm").fill("env-src")
    box.get_by_role("button", name="Promote to env-src").click()
    expect(refused).to_contain_text("Promote refused.")
    expect(refused).to_contain_text("its data cannot be promoted")
    shot(page, "container-environment-refused")

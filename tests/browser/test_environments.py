"""Environments and clones from the dashboard in a real browser: the
container page's Environment tab (its environment, its source, its clones;
clone with a field error and the root password shown once; sync and
promote, each confirmed, queued and followed to its outcome), and the
containers list, which shows a clone right under its source.

``env_source`` (the test template ``lines``) is made once for the module;
``env_clone`` is the clone of it the first test makes through the page (made
here when that test did not run) and serves the tests after it.
"""

from __future__ import annotations

import re
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

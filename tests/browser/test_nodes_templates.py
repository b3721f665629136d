"""The templates pages and the nodes page in a real browser, against the
real stack (the simulator is the node "sim")."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from provisioner import users
from provisioner.db import session_scope
from provisioner.models import Container, Lifecycle, Node
from tests.browser.conftest import Dashboard, login, shot

pytestmark = [pytest.mark.integration]


def node_card(page: Any, name: str) -> Any:
    return page.locator(f'article.node-card[data-node="{name}"]')


def sim_address(dash: Dashboard) -> tuple[str, int]:
    parts = urlsplit(dash.stack.sim["url"])
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def open_add_form(page: Any) -> Any:
    page.goto("/nodes")
    page.get_by_role("button", name="Add node").first.click()
    form = page.locator("#add-node-form")
    expect(form).to_be_visible()
    return form


def fill_sim(form: Any, dash: Dashboard, name: str) -> None:
    host, port = sim_address(dash)
    form.locator('[name="name"]').fill(name)
    form.locator('[name="host"]').fill(host)
    form.locator('[name="port"]').fill(str(port))
    form.locator('[name="token_id"]').fill(dash.stack.sim["token_id"])
    form.locator('[name="token_secret"]').fill(dash.stack.sim["token_secret"])
    form.locator('[name="fingerprint"]').fill(dash.stack.sim["fingerprint"])


def field_error(form: Any, name: str) -> Any:
    return (
        form.locator(f'[name="{name}"]')
        .locator("xpath=ancestor::div[contains(@class,'field')][1]")
        .locator(".field-error")
    )


# --- templates -----------------------------------------------------------------------


def test_the_templates_page_shows_every_template_as_a_card(page: Any) -> None:
    page.goto("/templates")
    cards = page.locator(".template-card")
    for name in ("debian-base", "nginx", "postgresql", "python-app", "redis", "failing"):
        expect(page.locator(f'.template-card[data-name="{name}"]')).to_be_visible()
    pg = page.locator('.template-card[data-name="postgresql"]')
    expect(pg).to_contain_text("PostgreSQL 15")
    expect(pg.locator(".tag", has_text="database")).to_be_visible()
    expect(pg.locator("dl.resources")).to_contain_text("1 GiB")  # 1024 MiB of memory
    expect(pg.locator("dl.resources")).to_contain_text("8 GiB")
    shot(page, "templates")

    # filter by tag, then by text
    page.locator('.tag-filter .chip[data-tag="database"]').click()
    expect(pg).to_be_visible()
    expect(page.locator('.template-card[data-name="nginx"]')).to_be_hidden()
    page.locator('.tag-filter .chip[data-tag=""]').click()
    page.fill("#template-filter", "notes app")
    expect(page.locator('.template-card[data-name="python-app"]')).to_be_visible()
    expect(cards.filter(has_not_text="notes app").first).to_be_hidden()
    page.fill("#template-filter", "nothing like this")
    expect(page.locator("#no-template-match")).to_be_visible()


def test_a_template_page_shows_variables_files_and_scripts(page: Any, dash: Dashboard) -> None:
    page.goto("/templates")
    page.locator('.template-card[data-name="postgresql"]').get_by_role(
        "link", name="Details"
    ).click()
    page.wait_for_url("**/templates/postgresql")
    expect(page.locator("h1")).to_have_text("postgresql")
    secret = page.locator('tr[data-variable="db_password"]')
    expect(secret).to_contain_text("password")
    expect(secret).to_contain_text("secret")
    expect(secret.locator("td.default")).to_contain_text("generated (32 characters)")
    expect(page.locator('tr[data-variable="max_connections"] td.default')).to_have_text("50")
    expect(page.locator('tr[data-variable="max_connections"] td.rules')).to_contain_text("≥ 10")
    expect(page.locator('tr[data-variable="db_name"] td.rules')).to_contain_text("[a-z_][a-z0-9_]*")
    expect(page.locator("#files")).to_contain_text("/etc/provisioner/postgresql/pg_hba.rules")
    expect(page.locator("#scripts li")).to_have_count(3)
    expect(page.locator("#scripts")).to_contain_text("10-configure.sh")
    expect(page.locator("#packages")).to_contain_text("postgresql-client")
    shot(page, "template")
    page.get_by_role("link", name="Create from this template").click()
    page.wait_for_url("**/containers/new?template=postgresql")


def test_a_template_with_variables_required_and_choices(page: Any) -> None:
    page.goto("/templates/debian-base")
    expect(page.locator('tr[data-variable="upgrade"] td.default')).to_have_text("true")
    expect(page.locator('tr[data-variable="timezone"]')).to_contain_text("Time zone")
    expect(page.locator("#create-from-template")).to_have_attribute(
        "href", "/containers/new?template=debian-base"
    )


def test_a_broken_template_is_listed_apart_with_its_problems(page: Any, dash: Dashboard) -> None:
    broken = dash.stack.settings.templates_dir / "broken-example"
    broken.mkdir()
    try:
        (broken / "template.toml").write_text(
            'name = "broken-example"\n[resources]\ncores = "many"\n'
        )
        page.goto("/templates")
        notice = page.locator("#invalid-templates")
        expect(notice).to_contain_text("broken-example")
        expect(notice).to_contain_text("cores")
        expect(page.locator('.template-card[data-name="broken-example"]')).to_have_count(0)
        response = page.goto("/templates/broken-example")
        assert response is not None and response.status == 422
        expect(page.locator(".notice-error")).to_contain_text("cannot be used until it is fixed")
        expect(page.locator(".notice-error")).to_contain_text("cores")
        shot(page, "template-invalid")
    finally:
        (broken / "template.toml").unlink()
        broken.rmdir()


def test_an_unknown_template_is_a_404_page(page: Any, dash: Dashboard) -> None:
    response = page.goto("/templates/no-such-template")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Template not found")
    page.get_by_role("link", name="Back to templates").click()
    page.wait_for_url(f"{dash.url}/templates")


# --- nodes ---------------------------------------------------------------------------------


def test_the_nodes_page_shows_the_node_its_resources_and_tests_it(
    page: Any, dash: Dashboard
) -> None:
    page.goto("/nodes")
    card = node_card(page, dash.node)
    expect(card.locator(".node-status")).to_have_text("online")
    expect(card.locator(".node-version")).to_contain_text("PVE")
    expect(card.locator('[data-resource="cpu"]')).to_contain_text(re.compile(r"of \d+ cores free"))
    expect(card.locator('[data-resource="memory"]')).to_contain_text("free")
    expect(card.locator('tr[data-storage="local-lvm"]')).to_be_visible()
    expect(card.locator('tr[data-storage="local-lvm"]')).to_contain_text("default")
    expect(card.locator(".node-bridges .tag").first).to_be_visible()
    expect(card).to_contain_text("root@pam!pvesim")
    expect(card).not_to_contain_text(dash.stack.sim["token_secret"])
    # the cluster usage: one row per node, with bars
    row = page.locator(f'#cluster-usage-rows tr[data-node="{dash.node}"]')
    expect(row.locator(".cluster-status")).to_have_text("online")
    expect(row.locator(".meter")).to_have_count(3)
    expect(row).to_contain_text(re.compile(r"% of \d+ cores"))
    expect(row).to_contain_text("committed of")
    expect(row).to_contain_text(re.compile(r"local-lvm: .* free of"))
    expect(row).to_contain_text("running of")
    shot(page, "nodes")

    card.get_by_role("button", name="Test connection").click()
    expect(page.locator("#toasts .toast-ok")).to_contain_text(f"{dash.node}: connection OK")


def test_the_nodes_page_counts_the_containers_that_exist(page: Any, dash: Dashboard) -> None:
    """A destroyed container keeps its record, but is no longer on the node."""
    cid = dash.stack.submit("failing", "node-count")
    assert dash.stack.wait(cid).lifecycle == Lifecycle.ERROR
    dash.stack.enqueue(cid, "destroy")
    assert dash.stack.wait(cid, (Lifecycle.DESTROYED,)).lifecycle == Lifecycle.DESTROYED
    with dash.stack.factory() as session:
        node_id = session.scalars(select(Node.id).where(Node.name == dash.node)).one()
        lifecycles = list(session.scalars(select(Container.lifecycle)
                                          .where(Container.node_id == node_id)))  # fmt: skip
    existing = sum(lc != Lifecycle.DESTROYED for lc in lifecycles)
    assert existing < len(lifecycles)
    page.goto("/nodes")
    count = node_card(page, dash.node).locator(
        "xpath=.//dt[normalize-space()='Containers']/following-sibling::dd[1]")  # fmt: skip
    expect(count).to_have_text(str(existing))


def test_adding_a_node_with_bad_fields_shows_inline_errors(page: Any, dash: Dashboard) -> None:
    form = open_add_form(page)
    # nothing filled in: the API names the first missing field
    form.get_by_role("button", name="Connect and add").click()
    expect(field_error(form, "name")).to_have_text("name must not be empty")
    expect(form.locator('[name="name"]')).to_have_attribute("aria-invalid", "true")

    fill_sim(form, dash, "sim-bad")
    form.locator('[name="token_id"]').fill("no-realm-token")
    form.get_by_role("button", name="Connect and add").click()
    expect(field_error(form, "token_id")).to_contain_text("not of the form user@realm!name")
    expect(form.locator('[name="token_id"]')).to_have_attribute("aria-invalid", "true")
    expect(form.locator('[name="name"]')).not_to_have_attribute("aria-invalid", "true")
    shot(page, "nodes-add-error")
    # typing in the field clears its error
    form.locator('[name="token_id"]').fill(dash.stack.sim["token_id"])
    expect(field_error(form, "token_id")).to_have_text("")

    form.locator('[name="fingerprint"]').fill("zz:not:a:fingerprint")
    form.get_by_role("button", name="Connect and add").click()
    expect(field_error(form, "fingerprint")).to_contain_text("fingerprint")

    # a well-formed but wrong secret: the node refuses it
    form.locator('[name="fingerprint"]').fill(dash.stack.sim["fingerprint"])
    form.locator('[name="token_secret"]').fill("00000000-0000-0000-0000-000000000000")
    form.get_by_role("button", name="Connect and add").click()
    expect(field_error(form, "token_secret")).to_contain_text("cannot use the node")

    # the same name as an existing node
    fill_sim(form, dash, dash.node)
    form.get_by_role("button", name="Connect and add").click()
    expect(field_error(form, "name")).to_contain_text("already exists")
    expect(node_card(page, "sim-bad")).to_have_count(0)


def test_add_the_simulator_again_then_remove_it(page: Any, dash: Dashboard) -> None:
    form = open_add_form(page)
    fill_sim(form, dash, "sim-again")
    form.locator('[name="default_bridge"]').fill(dash.stack.sim["bridge"])
    shot(page, "nodes-add-form")
    form.get_by_role("button", name="Connect and add").click()
    card = node_card(page, "sim-again")
    expect(card.locator(".node-status")).to_have_text("online", timeout=30_000)
    expect(page.locator("#add-node")).to_be_hidden()
    expect(page.locator("#toasts .toast-ok")).to_contain_text("sim-again added")
    expect(card).to_contain_text(dash.stack.sim["bridge"])
    expect(card.locator('[data-resource="memory"]')).to_contain_text("free")
    page.reload()  # stored for real
    expect(node_card(page, "sim-again")).to_be_visible()
    expect(node_card(page, "sim-again")).to_contain_text("standalone")

    # maintenance: a standalone node's containers stay; placement skips it
    node_card(page, "sim-again").get_by_role("button", name="Drain…").click()
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_contain_text("it is in no cluster, so its containers stay where they are")
    dialog.get_by_role("button", name="Maintenance only").click()
    expect(node_card(page, "sim-again").locator(".node-maintenance")).to_have_text("maintenance")
    expect(page.locator("#toasts .toast-ok").last).to_contain_text("sim-again is in maintenance")
    expect(page.locator('#cluster-usage-rows tr[data-node="sim-again"]')).to_contain_text(
        "maintenance"
    )
    node_card(page, "sim-again").get_by_role("button", name="End maintenance").click()
    expect(node_card(page, "sim-again").locator(".node-maintenance")).to_have_count(0)
    expect(node_card(page, "sim-again").get_by_role("button", name="Drain…")).to_be_visible()

    node_card(page, "sim-again").get_by_role("button", name="Remove").click()
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_contain_text("Remove sim-again?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(node_card(page, "sim-again")).to_be_visible()
    node_card(page, "sim-again").get_by_role("button", name="Remove").click()
    page.locator("dialog.confirm").get_by_role("button", name="Remove").click()
    expect(node_card(page, "sim-again")).to_have_count(0)
    expect(page.locator("#toasts .toast-ok").last).to_contain_text("sim-again removed")
    page.reload()
    expect(node_card(page, dash.node)).to_be_visible()
    expect(node_card(page, "sim-again")).to_have_count(0)


def test_a_node_with_containers_cannot_be_removed(page: Any, dash: Dashboard) -> None:
    # "sim" holds the containers of other tests, or one submitted now
    if not dash.container_ids():
        dash.stack.submit("failing", "node-holder")
    page.goto("/nodes")
    node_card(page, dash.node).get_by_role("button", name="Remove").click()
    page.locator("dialog.confirm").get_by_role("button", name="Remove").click()
    expect(page.locator("#toasts .toast-error")).to_contain_text("still has")
    expect(node_card(page, dash.node)).to_be_visible()


def test_a_user_who_is_not_an_administrator_cannot_add_or_remove_nodes(
    anon_page: Any, dash: Dashboard
) -> None:
    with session_scope(dash.stack.factory) as session:
        if users.get_user(session, "viewer") is None:
            users.create_user(session, "viewer", "viewer password 123", is_admin=False)
    login(anon_page, "viewer", "viewer password 123")
    anon_page.goto("/nodes")
    card = node_card(anon_page, dash.node)
    expect(card.locator(".node-status")).to_have_text("online")
    expect(anon_page.get_by_role("button", name="Add node")).to_have_count(0)
    expect(card.get_by_role("button", name="Remove")).to_have_count(0)
    card.get_by_role("button", name="Test connection").click()
    expect(anon_page.locator("#toasts .toast-ok")).to_contain_text("connection OK")


def test_a_wrong_password_is_shown_on_the_login_page(anon_page: Any) -> None:
    anon_page.goto("/login")
    anon_page.fill("input[name=username]", "admin")
    anon_page.fill("input[name=password]", "not the password")
    anon_page.click("button[type=submit]")
    expect(anon_page.locator(".login-card [role=alert]")).to_have_text(
        "Invalid username or password."
    )
    expect(anon_page.locator("input[name=username]")).to_have_value("admin")
    shot(anon_page, "login-error")

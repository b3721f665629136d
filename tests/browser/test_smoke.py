"""The browser harness itself: log in, land on the containers list, log out."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import ADMIN, login, shot


def test_login_lands_on_the_dashboard_and_logout_leaves(anon_page: Any) -> None:
    anon_page.goto("/")
    assert "/login" in anon_page.url
    shot(anon_page, "login")
    login(anon_page)
    assert anon_page.locator("header .who").inner_text() == ADMIN
    anon_page.click("form.logout button")
    anon_page.wait_for_url("**/login**")

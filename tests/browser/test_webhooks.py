"""The Webhooks page in a real browser, against the real stack: add a hook
(a refusal next to its field, then the secret shown once), test it (a real
receiver on 127.0.0.1 checks the signature with that secret), read the
delivery log, remove it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Dashboard, shot
from tests.pipeline.receiver import receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_add_test_read_the_log_and_remove_a_webhook(page: Any, dash: Dashboard) -> None:
    with receiver() as got:
        page.goto("/webhooks")
        expect(page.locator("#hooks-empty")).to_be_visible()
        page.get_by_role("button", name="Add webhook").first.click()
        form = page.locator("#add-hook-form")
        form.locator('[name="url"]').fill("http://ops:hunter2@127.0.0.1/x")
        form.locator('[name="owner"]').fill("")  # an administrator's: every container
        form.get_by_role("button", name="Add webhook").click()
        error = form.locator('[name="url"]').locator(
            "xpath=ancestor::div[contains(@class,'field')][1]").locator(".field-error")  # fmt: skip
        expect(error).to_contain_text("must not hold a user name or password")
        expect(error).not_to_contain_text("hunter2")

        form.locator('[name="url"]').fill(got.url)
        form.locator('input[name="events"][value="expiring"]').uncheck()
        form.get_by_role("button", name="Add webhook").click()
        secret_box = page.locator("#new-secret-value")
        expect(secret_box).to_have_text(re.compile(r"^whsec_[\w-]{40,}$"))
        got.secret = secret_box.text_content() or ""
        row = page.locator("#hooks tbody tr").first
        expect(row).to_contain_text(got.url)
        expect(row).to_contain_text("every container")
        expect(row.locator(".tag", has_text="expiring")).to_have_count(0)
        page.get_by_role("button", name="I have stored it").click()
        expect(page.locator("#new-secret")).to_be_hidden()

        row.get_by_role("button", name="Test").click()
        delivery = page.locator("#deliveries tbody tr[data-delivery]").first
        expect(delivery).to_have_attribute("data-status", "delivered", timeout=30_000)
        expect(delivery.locator(".delivery-status")).to_have_text("delivered")
        expect(delivery.locator(".attempts")).to_have_text("1")
        expect(delivery.locator(".last-answer")).to_have_text("HTTP 200")
        (request,) = got.wait_for(1)
        assert request.signature_ok and request.event == "ping"
        assert request.headers["X-Provisioner-Delivery"] == delivery.get_attribute("data-delivery")
        shot(page, "webhooks")

        row.get_by_role("button", name="Remove").click()
        page.locator("dialog.confirm").get_by_role("button", name="Remove").click()
        expect(page.locator("#hooks-empty")).to_be_visible()
        expect(page.locator("#deliveries-section")).to_be_hidden()

"""The Sandboxes page and a sandbox's progress view in a real browser.

One module fixture seeds the database directly (no live WordPress site
needed): four sandboxes as ``POST /api/sandboxes`` would have stored them
(a container of plan "sandbox" and its sandbox row; three of the admin's,
one of bob's), and a finished sandbox run written as its events; the
progress test writes a run in its import phase itself (``import_under_way``).  The seeded containers are of the shipped
``debian-base`` template: the destroy a Destroy queues loads the
container's template, and no page here depends on which one it is.
The stack's workers run that destroy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, insert, select

from provisioner import lease, users
from provisioner.db import session_scope
from provisioner.models import Container, ContainerEvent, Lifecycle, Node, Sandbox, utcnow
from provisioner.requests import ProvisionRequest, submit
from provisioner.secrets.keyfile import load_secret_box
from tests.browser.conftest import Dashboard, login, shot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BOB_PASSWORD = "bob's long enough password"
CAROL_PASSWORD = "carol's long enough password"
HOLDER = "browser-tests-sandbox-run"  # holds the run in its import, so no worker takes it over
SUMMARY = {"posts": 100, "pages": 20, "media": 50, "categories": 12, "tags": 30, "users": 3,
           "bytes": 12_582_912, "skipped": ["media #77 (used by post hello): 404 on the live site"],
           "permalink_structure": "/%postname%/"}  # fmt: skip
PROGRESS = "42/171 items, 3.1/12.0 MiB, about 40s left"
IMPORTED = "imported 100 posts, 20 pages, 50 media, 12 categories, 30 tags, 3 users; 1 skipped"
LABELS = ["Create", "Start", "Deploy files", "Run scripts", "Import content", "Finalize"]


@dataclass
class Seeded:
    ids: dict[str, str]  # hostname -> container id
    done_run: str  # a finished sandbox run


def _sandbox(dash: Dashboard, session: Any, hostname: str, client: str, owner: str,
             expires_at: datetime, ip: str, **sandbox: Any) -> str:  # fmt: skip
    box = load_secret_box(dash.stack.settings.secret_key, dash.stack.settings.secret_key_file)
    ct = submit(session, box, dash.stack.settings,
                ProvisionRequest(template="debian-base", node=dash.node, hostname=hostname,
                                 owner=owner, plan="sandbox", environment="development"))  # fmt: skip
    ct.lifecycle, ct.ip = Lifecycle.READY, ip
    session.add(Sandbox(container_id=ct.id, client=client, source_url=f"https://{client}.example",
                        source_user="editor", source_secret_ciphertext="not read here",
                        expires_at=expires_at, summary={}, **sandbox))  # fmt: skip
    session.flush()
    return ct.id


def _run(session: Any, node: Node, hostname: str, template: str, lifecycle: Lifecycle,
         start: datetime, steps: list[tuple[str, str, str, int]]) -> str:  # fmt: skip
    """A sandbox run written as its events: (type, phase, message, percent), 2 s apart."""
    ct = Container(node=node, template=template, hostname=hostname, request={}, plan="sandbox",
                   lifecycle=lifecycle, ip="192.0.2.90", started_at=start,
                   finished_at=start + timedelta(seconds=2 * len(steps))
                   if lifecycle == Lifecycle.READY else None)  # fmt: skip
    session.add(ct)
    session.flush()
    rows = [{"container_id": ct.id, "seq": i, "type": type_, "phase": phase, "message": message,
             "percent": percent, "ts": start + timedelta(seconds=2 * i)}
            for i, (type_, phase, message, percent) in enumerate(steps, 1)]  # fmt: skip
    session.execute(insert(ContainerEvent), rows)
    ct.next_seq = len(rows) + 1
    return ct.id


IMPORT_STEPS = [
    ("step", "create", "allocating a vmid", 1),
    ("step", "start", "starting CT 0", 16),
    ("step", "deploy", "deploying 3 files", 26),
    ("step", "scripts", "running 40-wordpress.sh", 31),
    ("step", "import", "reading https://acme.example", 55),
    ("step", "import", "reading posts: 100/100", 55),
    ("step", "import", PROGRESS, 70),
]


@pytest.fixture(scope="module")
def seeded(dash: Dashboard) -> Iterator[Seeded]:
    now = utcnow()
    with session_scope(dash.stack.factory) as session:
        users.create_user(session, "bob", BOB_PASSWORD)
        users.create_user(session, "carol", CAROL_PASSWORD)
        ids = {
            "sandbox-acme": _sandbox(dash, session, "sandbox-acme", "acme", "admin",
                                     now + timedelta(days=3), "192.0.2.11"),
            "sandbox-beta": _sandbox(dash, session, "sandbox-beta", "beta", "admin",
                                     now + timedelta(minutes=10), "192.0.2.12", warned_at=now),
            "sandbox-gamma": _sandbox(dash, session, "sandbox-gamma", "gamma", "admin",
                                      now + timedelta(days=5), "192.0.2.13"),
            "sandbox-delta": _sandbox(dash, session, "sandbox-delta", "delta", "bob",
                                      now + timedelta(days=6), "192.0.2.14"),
        }  # fmt: skip
        acme = session.get(Sandbox, ids["sandbox-acme"])
        assert acme is not None
        acme.summary = dict(SUMMARY)
        node = session.scalars(select(Node).where(Node.name == dash.node)).one()
        done_run = _run(session, node, "sbx-done", "debian-base", Lifecycle.READY,
                        now - timedelta(minutes=10),
                        [*IMPORT_STEPS, ("step", "import", IMPORTED, 95),
                         ("step", "finalize", "running the health check", 96),
                         ("complete", "finalize", "CT 0 is ready at 192.0.2.90", 100)])  # fmt: skip
    yield Seeded(ids=ids, done_run=done_run)


@contextmanager
def import_under_way(dash: Dashboard) -> Iterator[str]:
    """A sandbox run in its import, its last event (the import's progress)
    now, so that "about 40s left" counts from here (written when a test
    needs it: a worker's stream repair may copy events into Redis as they
    are).  Its lease is held, so no worker takes the run over; afterwards
    it is settled (error) and let go."""
    now = utcnow()
    with session_scope(dash.stack.factory) as session:
        node = session.scalars(select(Node).where(Node.name == dash.node)).one()
        cid = _run(session, node, "sbx-live", "wp-no-history", Lifecycle.CREATING,
                   now - timedelta(seconds=2 * len(IMPORT_STEPS)), IMPORT_STEPS)  # fmt: skip
    assert lease.acquire(dash.stack.factory, cid, HOLDER, 3600)
    try:
        yield cid
    finally:
        with session_scope(dash.stack.factory) as session:
            row = session.get(Container, cid)
            assert row is not None
            row.lifecycle = Lifecycle.ERROR
        lease.release(dash.stack.factory, cid, HOLDER)


def posted(response: Any) -> bool:
    """The form's request (not the list's polls)."""
    return bool(response.request.method == "POST" and response.url.endswith("/api/sandboxes"))


def row(page: Any, hostname: str) -> Any:
    return page.locator(f'#sandboxes-table tr[data-hostname="{hostname}"]')


def sandbox_row(dash: Dashboard, cid: str) -> Sandbox:
    with dash.stack.factory() as session:
        found = session.get(Sandbox, cid)
        assert found is not None
        session.expunge(found)
        return found


def test_the_list_shows_each_sandbox_soonest_expiry_first_and_counts_down(
        page: Any, dash: Dashboard, seeded: Seeded) -> None:  # fmt: skip
    page.goto("/")
    page.get_by_role("link", name="Sandboxes").click()
    page.wait_for_url("**/sandboxes")
    expect(page.locator('nav a[aria-current="page"]')).to_have_text("Sandboxes")
    hostnames = page.locator("#sandboxes-table tbody tr")
    expect(hostnames).to_have_count(4)
    order = [tr.get_attribute("data-hostname") for tr in hostnames.all()]
    assert order == ["sandbox-beta", "sandbox-acme", "sandbox-gamma", "sandbox-delta"]

    acme = row(page, "sandbox-acme")
    link = acme.locator("td.hostname a.name")
    expect(link).to_have_text("sandbox-acme")
    expect(link).to_have_attribute("href", f"/containers/{seeded.ids['sandbox-acme']}")
    expect(acme.locator("td.client")).to_have_text("acme")
    expect(acme.locator("td.owner")).to_have_text("admin")
    expect(acme.locator("td.source a")).to_have_attribute("href", "https://acme.example")
    expect(acme.locator("td.source")).to_contain_text("as editor")
    expect(acme.locator("td.status .badge")).to_have_text("ready")
    expect(acme.locator("td.hostname .site-link")).to_have_attribute("href", "https://192.0.2.11")
    imported = acme.locator("td.imported")
    expect(imported).to_contain_text("100 posts · 20 pages · 50 media")
    expect(imported).to_contain_text("12 categories · 30 tags · 3 authors · 12 MiB")
    expect(imported.locator(".skipped")).to_have_text("1 skipped")
    expect(imported.locator(".skipped")).to_have_attribute("title", SUMMARY["skipped"][0])
    expect(row(page, "sandbox-gamma").locator("td.imported")).to_have_text("nothing recorded")
    expect(acme.locator("[data-role=countdown]")).to_have_text(re.compile(r"^2d 23h$"))
    expect(acme.locator("[data-role=countdown]")).to_have_attribute("data-state", "ok")

    # ten minutes, warned: it ticks every second, in the warning colour, marked expiring
    beta = row(page, "sandbox-beta")
    countdown = beta.locator("[data-role=countdown]")
    expect(countdown).to_have_text(re.compile(r"^9m \d\ds$"))
    expect(countdown).to_have_attribute("data-state", "soon")
    expect(countdown).to_have_attribute("role", "timer")
    expect(beta.locator(".expiring-tag")).to_have_text("expiring")
    first = countdown.text_content()
    page.wait_for_function("([el, t]) => el.textContent !== t",
                           arg=[countdown.element_handle(), first], timeout=3000)  # fmt: skip
    shot(page, "sandboxes-list")


def test_a_user_sees_only_their_own_and_an_empty_state_explains(
        browser: Any, dash: Dashboard, seeded: Seeded) -> None:  # fmt: skip
    for username, password in (("bob", BOB_PASSWORD), ("carol", CAROL_PASSWORD)):
        context = browser.new_context(base_url=dash.url, viewport={"width": 1280, "height": 860})
        try:
            context.set_default_timeout(20_000)
            page = context.new_page()
            login(page, username, password)
            page.goto("/sandboxes")
            expect(page.locator("#sandbox-summary")).to_contain_text(
                "You see the sandboxes you own."
            )
            if username == "bob":
                rows = page.locator("#sandboxes-table tbody tr")
                expect(rows).to_have_count(1)
                expect(rows).to_have_attribute("data-hostname", "sandbox-delta")
                continue
            empty = page.locator("#sandboxes-empty")
            expect(empty).to_be_visible()
            expect(empty).to_contain_text("A sandbox is a WordPress container holding a copy")
            expect(empty).to_contain_text("Application Password")
            expect(page.locator("#sandbox-list")).to_be_hidden()
            shot(page, "sandboxes-empty")
            empty.get_by_role("button", name="New sandbox").click()
            expect(page.locator("#new-sandbox")).to_be_visible()
            expect(page.locator("#sb-from")).to_be_focused()
        finally:
            context.close()


def test_extend_moves_the_expiry(page: Any, dash: Dashboard, seeded: Seeded) -> None:
    cid = seeded.ids["sandbox-acme"]
    before = sandbox_row(dash, cid).expires_at
    page.goto("/sandboxes")
    acme = row(page, "sandbox-acme")
    acme.get_by_role("button", name="Extend sandbox-acme").click()
    dialog = page.locator("#extend-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text("Extend sandbox-acme")
    # the API's refusal is shown next to the field, and the dialog stays
    page.fill("#extend-by", "soon")
    dialog.get_by_role("button", name="Extend").click()
    expect(page.locator("#extend-by")).to_have_attribute("aria-invalid", "true")
    expect(dialog.locator(".field-error")).to_contain_text("by: a duration such as 12h, 7d or 2w")
    assert sandbox_row(dash, cid).expires_at == before
    shot(page, "sandboxes-extend-error")
    page.fill("#extend-by", "2d")
    with page.expect_response(lambda r: r.url.endswith(f"/api/sandboxes/{cid}/extend")) as info:
        dialog.get_by_role("button", name="Extend").click()
    assert info.value.status == 200
    expect(dialog).to_have_count(0)
    after = sandbox_row(dash, cid).expires_at
    assert abs((after - before) - timedelta(days=2)) < timedelta(seconds=1)
    expect(acme.locator("[data-role=countdown]")).to_have_text(re.compile(r"^4d 23h$"))
    expect(page.locator("#toasts")).to_contain_text("sandbox-acme now expires")


def test_destroy_expires_the_sandbox_and_its_destroy_runs(
        page: Any, dash: Dashboard, seeded: Seeded) -> None:  # fmt: skip
    cid = seeded.ids["sandbox-gamma"]
    page.goto("/sandboxes")
    gamma = row(page, "sandbox-gamma")
    gamma.get_by_role("button", name="Destroy sandbox-gamma").click()
    dialog = page.locator("dialog.confirm")
    expect(dialog.locator("h2")).to_have_text("Destroy sandbox-gamma?")
    expect(dialog).to_contain_text(
        "The sandbox of client gamma (the copy of https://gamma.example)"
    )
    expect(dialog).to_contain_text("The live site is not touched")
    shot(page, "sandboxes-destroy-confirm")
    with page.expect_response(lambda r: r.url.endswith(f"/api/sandboxes/{cid}/expire")) as info:
        dialog.get_by_role("button", name="Destroy sandbox").click()
    assert info.value.status == 202
    assert info.value.json() == {"id": cid, "expired": True}
    assert sandbox_row(dash, cid).expired_at is not None
    with dash.stack.factory() as session:
        messages = list(session.scalars(select(ContainerEvent.message)
                                        .where(ContainerEvent.container_id == cid)))  # fmt: skip
    assert any(m.startswith("expired: sandbox sandbox-gamma of client gamma") for m in messages)
    # the stack's workers run the destroy it queued (no CT: the record alone)
    assert dash.stack.wait(cid, (Lifecycle.DESTROYED,), timeout=60).lifecycle == Lifecycle.DESTROYED
    # an ended sandbox leaves the list at the page's next poll (each second while
    # its destroy runs; a loaded machine answers the list more slowly)...
    expect(gamma).to_have_count(0, timeout=15_000)
    page.check("#show-ended")  # ...unless asked for
    expect(gamma.locator("td.status .badge")).to_have_text("destroyed")
    expect(gamma.get_by_role("button", name="Destroy sandbox-gamma")).to_be_disabled()
    expect(gamma.locator("[data-role=countdown]")).to_have_text("ended")


def test_the_new_sandbox_form_shows_the_apis_answers_and_stores_nothing(
        page: Any, dash: Dashboard, seeded: Seeded) -> None:  # fmt: skip
    def counts() -> tuple[int, int]:
        with dash.stack.factory() as session:
            return (session.scalar(select(func.count()).select_from(Sandbox)) or 0,
                    session.scalar(select(func.count()).select_from(Container)) or 0)  # fmt: skip

    before = counts()
    secret = "abcd efgh ijkl mnop qrst uvwx"
    page.goto("/containers/new")  # the wizard's way to a sandbox: the form, open
    page.get_by_role("link", name="Make a sandbox").click()
    page.wait_for_url("**/sandboxes#new")
    expect(page.locator("#new-sandbox")).to_be_visible()
    expect(page.locator("#sb-from")).to_be_focused()
    expect(page.locator("#sb-node")).to_have_value(dash.node)  # the one node, chosen
    page.fill("#sb-from", "http://acme-live.example")
    page.fill("#sb-client", "newclient")
    page.fill("#sb-user", "editor")
    page.fill("#sb-app-password", secret)
    with page.expect_response(posted) as info:
        page.click("#new-sandbox-submit")
    assert info.value.status == 400 and info.value.json()["field"] == "from"
    field = page.locator("#sb-from")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_be_focused()
    expect(page.locator("#sb-from ~ .field-error")).to_contain_text(
        "from: an https:// address (an Application Password is never sent over plain HTTP)"
    )
    assert counts() == before
    assert secret not in page.url and "app_password" not in page.url
    assert secret not in page.content()  # a password input's value is no attribute
    shot(page, "sandboxes-new-error")

    # the client has a sandbox: said, linked, and a second one offered
    page.fill("#sb-from", "https://acme.example")
    expect(field).not_to_have_attribute("aria-invalid", "true")
    page.fill("#sb-client", "acme")
    with page.expect_response(posted) as info:
        page.click("#new-sandbox-submit")
    assert info.value.status == 200 and info.value.json()["existing"] is True
    notice = page.locator("#new-sandbox-existing")
    expect(notice).to_contain_text("Client acme has a sandbox already")
    expect(notice.locator("#existing-link")).to_have_attribute(
        "href", f"/containers/{seeded.ids['sandbox-acme']}"
    )
    expect(notice.get_by_role("button", name="Make a second sandbox of acme")).to_be_visible()
    assert counts() == before
    page.click("#new-sandbox-cancel")
    expect(page.locator("#new-sandbox")).to_be_hidden()
    assert page.input_value("#sb-app-password") == ""


def test_a_sandbox_progress_view_shows_the_import_as_its_own_phase(
        page: Any, dash: Dashboard, seeded: Seeded) -> None:  # fmt: skip
    page.goto(f"/containers/{seeded.done_run}/progress")
    page.wait_for_selector("#progress[data-lifecycle=ready] #success")
    stages = page.locator("#stepper .stage")
    expect(stages).to_have_count(6)
    expect(stages.locator(".stage-label")).to_have_text(LABELS)
    imp = page.locator('.stage[data-phase="import"]')
    expect(imp).to_have_attribute("data-state", "done")
    expect(imp.locator("[data-role=detail]")).to_have_text(IMPORTED)
    expect(imp.locator("[data-role=time]")).to_have_text("8s")  # its four steps, 2 s apart
    progress_lines = page.locator('#console .line[data-type="step"]', has_text=PROGRESS)
    expect(progress_lines).to_have_count(1)
    expect(page.locator("#console .phase-tag", has_text="import")).to_have_count(4)
    # the stepper keeps one row for six phases
    tops = page.eval_on_selector_all("#stepper .stage", "els => els.map(e => e.offsetTop)")
    assert len(set(tops)) == 1, tops
    shot(page, "progress-sandbox-ready")

    with import_under_way(dash) as live_run:
        page.goto(f"/containers/{live_run}/progress")
        imp = page.locator('.stage[data-phase="import"]')
        expect(imp).to_have_attribute("data-state", "active")
        expect(imp).to_have_attribute("aria-current", "step")
        expect(imp.locator("[data-role=detail]")).to_have_text(PROGRESS)
        scripts, finalize = (
            page.locator(f'.stage[data-phase="{p}"]') for p in ("scripts", "finalize")
        )
        expect(scripts).to_have_attribute("data-state", "done")
        expect(finalize).to_have_attribute("data-state", "pending")
        expect(page.locator("#current-step")).to_have_text(PROGRESS)
        expect(page.locator("#percent")).to_have_text("70%")
        # no earlier sandbox of its template: the import's own estimate, counting down
        eta = page.locator("#eta")
        expect(eta).to_have_text(re.compile(r"^Import content: ~(3\d|40)s left$"))
        first = eta.text_content()
        page.wait_for_function("([el, t]) => el.textContent !== t",
                               arg=[eta.element_handle(), first], timeout=3000)  # fmt: skip
        shot(page, "progress-sandbox-import")

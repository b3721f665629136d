"""The creation wizard in a real browser, against the real stack.

Two templates go through every step end to end (nginx on DHCP; debian-base
with a static address and a pasted SSH key) and are provisioned by the
workers on the simulator.  The other tests stop before anything is made:
inline validation, a request the API refuses naming a field, and
``?template=`` preselection.  Every step is photographed (build/screenshots/).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from playwright.sync_api import expect
from sqlalchemy import delete

from provisioner.errors import PveApiError
from provisioner.models import AuthKind, Container, Lifecycle, Node, new_container_id
from provisioner.nodes import client_for
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import container_root_password, set_node_secret
from tests.browser.conftest import Dashboard, doc_shot, shot
from tests.web.conftest import closed_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# The static addresses these tests may use (host numbers in the simulator's subnet,
# below its DHCP pool, the upper half, and apart from other suites' addresses).
STATIC_HOSTS = range(120, 128)
# A VMID no simulator allocates in a test run; held by a row, never by a container.
HELD_VMID = 990150
PROGRESS_URL = re.compile(r".*/containers/([0-9a-f-]+)/progress$")


def public_key(comment: str) -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{raw.decode()} {comment}"


def container_count(page: Any) -> int:
    response = page.request.get("/api/containers?live=false&include_destroyed=true")
    assert response.ok, response.text()
    return len(response.json()["containers"])


def free_static_address(dash: Dashboard) -> ipaddress.IPv4Address:
    """The first address of ours that no existing container holds (static or
    leased: the simulator's DHCP server never hands out a static address in use)."""
    subnet = ipaddress.ip_network(dash.stack.sim["subnet"])
    leases_file = Path(dash.stack.sim.get("state_dir") or "/nonexistent") / "leases.json"
    leases = json.loads(leases_file.read_text()) if leases_file.is_file() else {}
    taken: set[str] = set()
    box = load_secret_box(dash.stack.settings.secret_key, dash.stack.settings.secret_key_file)
    with dash.stack.factory() as session:
        node = session.query(Node).filter_by(name=dash.node).one()
        with client_for(node, box) as pve:
            for ct in pve.containers():
                with contextlib.suppress(PveApiError):  # destroyed meanwhile by another test
                    net0 = str(pve.get_config(ct.vmid).get("net0", ""))
                    taken |= set(re.findall(r"ip=([0-9.]+)/", net0))
                    mac = re.search(r"hwaddr=([0-9A-Fa-f:]+)", net0)
                    if mac and mac.group(1).lower() in leases:
                        taken.add(leases[mac.group(1).lower()])
    for host in STATIC_HOSTS:
        address = subnet.network_address + host
        if str(address) not in taken:
            return address
    pytest.fail(f"every address of {subnet} hosts {STATIC_HOSTS} is in use: {sorted(taken)}")


def snap(page: Any, name: str) -> None:
    """A screenshot from the top of the page (a scrolled full-page shot paints
    the sticky top bar across the middle)."""
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, name)


def step(page: Any, name: str) -> Any:
    """The step section, asserted to be the visible one."""
    section = page.locator(f'section.step[data-step="{name}"]')
    expect(section).to_be_visible()
    expect(page.locator(f'#stepper li[data-step="{name}"]')).to_have_class(
        re.compile(r"\bcurrent\b")
    )
    return section


def error_of(page: Any, field: str) -> Any:
    return page.locator(f'[data-error-for="{field}"]')


def next_step(page: Any) -> None:
    page.click("#next")


def choose_template(page: Any, name: str) -> None:
    step(page, "template")
    page.click(f'.choice-card[data-template="{name}"]')
    expect(page.locator(f'input[name=template][value="{name}"]')).to_be_checked()


def choose_node(page: Any, dash: Dashboard) -> None:
    step(page, "node")
    card = page.locator(f'.choice-card[data-node="{dash.node}"]')
    card.click()
    expect(card.locator(".node-stats .meter")).to_have_count(2)  # free CPU and memory arrived
    expect(page.locator("#storage")).to_be_enabled()
    expect(page.locator("#bridge")).to_be_enabled()


def read_password_once(page: Any) -> str:
    """The one-time dialog: its password, copied, then dismissed."""
    dialog = page.locator("dialog.password-dialog")
    expect(dialog).to_be_visible()
    password = dialog.locator("#root-password").inner_text()
    assert len(password) >= 16, password
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    dialog.locator("#copy-password").click()
    expect(page.locator("#toasts .toast-ok")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == password
    page.keyboard.press("Escape")  # does not lose it by accident
    expect(dialog).to_be_visible()
    dialog.locator("#password-saved").click()
    return password


@pytest.fixture
def console(page: Any) -> list[str]:
    messages: list[str] = []
    page.on("console", lambda msg: messages.append(msg.text))
    return messages


@pytest.fixture
def held_vmid(dash: Dashboard) -> Iterator[int]:
    """A container row (failed, never created in PVE) that holds HELD_VMID."""
    with dash.stack.factory() as session:
        node = session.query(Node).filter_by(name=dash.node).one()
        row = Container(id=new_container_id(), node=node, template="debian-base",
                        hostname="vmid-holder", lifecycle=Lifecycle.ERROR, vmid=HELD_VMID,
                        request={})  # fmt: skip
        session.add(row)
        session.commit()
        cid = row.id
    try:
        yield HELD_VMID
    finally:
        with dash.stack.factory() as session:
            held = session.get(Container, cid)
            assert held is not None
            session.delete(held)
            session.commit()


@pytest.mark.timeout(600)  # a real run on a machine shared with other tests
def test_nginx_on_dhcp_end_to_end(page: Any, dash: Dashboard, console: list[str]) -> None:
    before = container_count(page)
    page.goto("/containers/new")
    expect(page.locator(".choice-card[data-template]").first).to_be_visible()
    choose_template(page, "nginx")
    snap(page, "wizard-1-template")
    next_step(page)

    choose_node(page, dash)
    expect(page.locator("#storage")).to_have_value("local-lvm")
    expect(page.locator("#storage option:checked")).to_contain_text("free")
    snap(page, "wizard-2-node")
    next_step(page)

    step(page, "network")
    page.fill("#hostname", "wiz-nginx")
    expect(page.locator("input[name=ipmode][value=dhcp]")).to_be_checked()
    snap(page, "wizard-3-network-dhcp")
    page.press("#hostname", "Enter")  # Enter = Next

    step(page, "resources")
    for field, default in (("cores", "1"), ("memory", "512"), ("swap", "256"), ("disk", "4")):
        expect(page.locator(f"#{field}")).to_have_value(default)  # nginx's defaults
    page.fill("#memory", "640")
    page.fill("#disk", "5")
    page.click("#advanced > summary")
    page.check("input[name=failure_policy][value=destroy]")
    snap(page, "wizard-4-resources")
    next_step(page)

    step(page, "access")
    expect(page.locator("input[name=pwmode][value=generate]")).to_be_checked()
    snap(page, "wizard-5-access-empty")
    next_step(page)

    variables = step(page, "variables")
    expect(variables.locator('[data-field="variables.site_title"]')).to_have_value("It works")
    page.fill('[data-field="variables.site_title"]', "Made by the wizard")
    page.fill('[data-field="variables.message"]', "line one\nline two")
    snap(page, "wizard-6-variables")
    next_step(page)

    review = step(page, "review")
    expect(review.locator('[data-review="network"]')).to_contain_text("wiz-nginx")
    expect(review.locator('[data-review="network"]')).to_contain_text("DHCP")
    expect(review.locator('[data-review="resources"]')).to_contain_text("640 MiB")
    expect(review.locator('[data-review="resources"]')).to_contain_text("destroy the container")
    expect(review.locator('[data-review="variables"]')).to_contain_text("Made by the wizard")
    expect(review.locator('[data-review="access"]')).to_contain_text("generated, shown once")
    expect(page.locator("#next")).to_have_text("Create container")
    snap(page, "wizard-7-review")
    next_step(page)

    dialog = page.locator("dialog.password-dialog")
    expect(dialog).to_be_visible()
    snap(page, "wizard-8-password")
    password = read_password_once(page)
    page.wait_for_url(PROGRESS_URL)
    match = PROGRESS_URL.match(page.url)
    assert match is not None
    cid = match.group(1)
    assert password not in page.url
    expect(page.locator("dialog.password-dialog")).to_have_count(0)
    stored = page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert password not in stored
    assert not any(password in m for m in console), "the password reached the console"
    assert container_count(page) == before + 1

    box = load_secret_box(dash.stack.settings.secret_key, dash.stack.settings.secret_key_file)
    ct = dash.stack.wait(cid, timeout=480)
    assert ct.lifecycle == Lifecycle.READY, ct.error_message
    assert container_root_password(box, ct) == password
    assert (ct.template, ct.hostname, str(ct.failure_policy)) == ("nginx", "wiz-nginx", "destroy")
    assert ct.request["ip"] == "dhcp"
    assert (ct.request["cores"], ct.request["memory"], ct.request["swap"], ct.request["disk"]) == (
        1, 640, 256, 5)  # fmt: skip
    assert (ct.request["storage"], ct.request["bridge"]) == ("local-lvm", "vmbr0")
    assert ct.request["variables"]["site_title"] == "Made by the wizard"
    assert ct.request["variables"]["message"] == "line one\nline two"
    assert ipaddress.ip_address(ct.ip or "") in ipaddress.ip_network(dash.stack.sim["subnet"])
    # the progress view the wizard led to ends on the outcome: address, SSH, services
    assert_success_shown(page, ct)
    ports = page.eval_on_selector_all("#services tbody tr td:first-child",
                                      "els => els.map(e => Number(e.textContent))")  # fmt: skip
    assert 80 in ports  # nginx
    doc_shot(page, "progress")  # the README's picture: a real template coming to life


def assert_success_shown(page: Any, ct: Any) -> None:
    page.wait_for_selector("#progress[data-lifecycle=ready]", timeout=60_000)
    expect(page.locator("#success [data-field=ip]")).to_have_text(ct.ip)
    expect(page.locator("#ssh-command")).to_have_text(f"ssh root@{ct.ip}")
    expect(page.locator("#stepper .stage[data-state=done]")).to_have_count(5)


@pytest.mark.timeout(600)
def test_debian_with_a_static_address_and_a_pasted_key(page: Any, dash: Dashboard) -> None:
    address = free_static_address(dash)
    subnet = ipaddress.ip_network(dash.stack.sim["subnet"])
    gateway = dash.stack.sim["gateway"]
    key = public_key("wizard@browser-test")
    page.goto("/containers/new")
    choose_template(page, "debian-base")
    page.keyboard.press("Enter")
    choose_node(page, dash)
    next_step(page)

    step(page, "network")
    page.fill("#hostname", "wiz-debian")
    page.check("input[name=ipmode][value=static]")
    expect(page.locator("#bridge-net")).to_contain_text(str(subnet))
    page.fill("#ip", f"{address}/{subnet.prefixlen}")
    page.fill("#gateway", gateway)
    snap(page, "wizard-3-network-static")
    next_step(page)

    step(page, "resources")
    page.fill("#cores", "2")
    page.fill("#memory", "768")
    next_step(page)

    step(page, "access")
    page.fill("#ssh_public_key", key)
    expect(page.locator("#key-list li")).to_have_count(1)
    expect(page.locator("#key-list")).to_contain_text("wizard@browser-test")
    snap(page, "wizard-5-access-key")
    next_step(page)

    step(page, "variables")
    page.fill('[data-field="variables.timezone"]', "Europe/Berlin")
    page.uncheck('[data-field="variables.upgrade"]')
    next_step(page)

    review = step(page, "review")
    expect(review.locator('[data-review="network"]')).to_contain_text(
        f"{address}/{subnet.prefixlen}"
    )
    expect(review.locator('[data-review="network"]')).to_contain_text(gateway)
    expect(review.locator('[data-review="access"]')).to_contain_text("ssh-ed25519")
    expect(review.locator('[data-review="variables"]')).to_contain_text("Europe/Berlin")
    snap(page, "wizard-7-review-static")
    page.keyboard.press("Enter")  # Enter on the review creates

    read_password_once(page)
    page.wait_for_url(PROGRESS_URL)
    match = PROGRESS_URL.match(page.url)
    assert match is not None
    ct = dash.stack.wait(match.group(1), timeout=480)
    assert ct.lifecycle == Lifecycle.READY, ct.error_message
    assert ct.ip == str(address)
    assert ct.request["ip"] == f"{address}/{subnet.prefixlen}"
    assert ct.request["gateway"] == gateway
    assert (ct.request["cores"], ct.request["memory"]) == (2, 768)
    assert ct.request["ssh_public_key"] == key
    assert ct.request["variables"]["timezone"] == "Europe/Berlin"
    assert ct.request["variables"]["upgrade"] is False
    assert_success_shown(page, ct)


def test_inline_validation_blocks_next_and_creates_nothing(page: Any, dash: Dashboard) -> None:
    before = container_count(page)
    page.goto("/containers/new")
    step(page, "template")
    next_step(page)  # nothing chosen
    expect(error_of(page, "template")).to_have_text("Choose a template to continue")
    step(page, "template")
    choose_template(page, "debian-base")
    expect(error_of(page, "template")).to_be_empty()
    next_step(page)
    choose_node(page, dash)
    next_step(page)

    step(page, "network")
    hostname = page.locator("#hostname")
    for bad, message in (
        ("", "Enter a hostname"),
        ("web_01", "cannot contain underscores"),
        ("web 01", "cannot contain spaces"),
        ("-web", "starts or ends with a hyphen"),
        ("web..example", "empty part"),
    ):
        hostname.fill(bad)
        page.keyboard.press("Enter")
        expect(error_of(page, "hostname")).to_contain_text(message)
        expect(hostname).to_have_attribute("aria-invalid", "true")
        step(page, "network")
    snap(page, "wizard-error-hostname")
    hostname.fill("wiz-invalid")
    expect(error_of(page, "hostname")).to_be_empty()  # fixed as you type
    expect(hostname).not_to_have_attribute("aria-invalid", "true")

    page.check("input[name=ipmode][value=static]")
    ip = page.locator("#ip")
    gateway = page.locator("#gateway")
    for address, gw, field, message in (
        ("", "", "ip", "Enter the static address with its prefix length"),
        ("198.18.0.150", "", "ip", "needs its prefix length: 198.18.0.150/24"),
        ("198.18.0.300/24", "", "ip", "“198.18.0.300” is not an IPv4 address"),
        ("198.18.0.150/33", "", "ip", "must be a number from 1 to 32"),
        ("198.18.0.0/24", "", "ip", "is the network address of 198.18.0.0/24"),
        ("198.18.0.150/24", "10.0.0.1", "gateway", "not in the container's network 198.18.0.0/24"),
        ("198.18.0.150/24", "198.18.0.150", "gateway", "cannot be the container's own address"),
        ("198.18.0.150/24", "gateway", "gateway", "is not an IPv4 address"),
    ):
        ip.fill(address)
        gateway.fill(gw)
        next_step(page)
        expect(error_of(page, field)).to_contain_text(message)
        step(page, "network")
    snap(page, "wizard-error-network")
    gateway.fill("198.18.0.1")
    next_step(page)

    step(page, "resources")
    for field, bad, message in (
        ("cores", "0", "CPU cores must be at least 1"),
        ("memory", "8", "Memory must be at least 16 MiB"),
        ("disk", "", "Enter root disk"),
        ("disk", "200000", "Root disk may be at most 131072 GiB"),
        ("swap", "1.5", "Swap must be a whole number"),
    ):
        page.fill(f"#{field}", bad)
        next_step(page)
        expect(error_of(page, field)).to_contain_text(message)
        step(page, "resources")
        page.click("#reset-resources")  # back to the template's defaults
        expect(error_of(page, field)).to_be_empty()
    page.click("#advanced > summary")
    page.fill("#vmid", "42")
    next_step(page)
    expect(error_of(page, "vmid")).to_contain_text("VMID must be at least 100")
    snap(page, "wizard-error-resources")
    page.fill("#vmid", "")
    next_step(page)

    step(page, "access")
    key = public_key("me@laptop")
    kind, blob, _comment = key.split(" ")
    for bad, message in (
        ("hello world", "not an OpenSSH public key"),
        (f"{kind} {blob[:-10]} cut", "damaged or cut short"),
        (f"ssh-rsa {blob} wrong-type", "damaged or cut short"),
        (f"{key}\nssh-ed25519", "line 2: not an OpenSSH public key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----",
         "That is a private key"),
    ):  # fmt: skip
        page.fill("#ssh_public_key", bad)
        next_step(page)
        expect(error_of(page, "ssh_public_key")).to_contain_text(message)
        step(page, "access")
    snap(page, "wizard-error-access")
    page.fill("#ssh_public_key", "")
    page.set_input_files("#ssh-file", files=[
        {"name": "huge.pub", "mimeType": "text/plain", "buffer": b"x" * 20000}])  # fmt: skip
    expect(error_of(page, "ssh_public_key")).to_contain_text("huge.pub is 20 KiB")
    page.set_input_files("#ssh-file", files=[
        {"name": "id_ed25519.pub", "mimeType": "text/plain", "buffer": f"{key}\n".encode()}])  # fmt: skip
    expect(page.locator("#ssh_public_key")).to_have_value(key)
    expect(error_of(page, "ssh_public_key")).to_be_empty()
    expect(page.locator("#key-list li")).to_have_count(1)
    page.check("input[name=pwmode][value=custom]")
    page.fill("#root_password", "short")
    next_step(page)
    expect(error_of(page, "root_password")).to_contain_text("at least 8 characters")
    page.fill("#root_password", "a long enough password")
    page.fill("#root_password_confirm", "something else")
    next_step(page)
    expect(error_of(page, "root_password_confirm")).to_have_text("The two passwords differ")
    page.fill("#root_password_confirm", "a long enough password")
    next_step(page)

    step(page, "variables")
    page.fill('[data-field="variables.timezone"]', "Not a zone!")
    page.fill('[data-field="variables.locale"]', "english")
    next_step(page)
    expect(error_of(page, "variables.timezone")).to_contain_text("Timezone must match")
    expect(error_of(page, "variables.locale")).to_contain_text("Locale must match")
    snap(page, "wizard-error-variables")

    # Back and forth keeps what was typed, the stepper included.
    page.click('#stepper [data-goto="network"]')
    step(page, "network")
    expect(page.locator("#hostname")).to_have_value("wiz-invalid")
    expect(page.locator("#ip")).to_have_value("198.18.0.150/24")
    page.click("#back")
    step(page, "node")
    page.click('#stepper [data-goto="access"]')
    step(page, "access")
    expect(page.locator("#ssh_public_key")).to_have_value(key)
    expect(page.locator("#root_password")).to_have_value("a long enough password")
    next_step(page)
    step(page, "variables")
    expect(page.locator('[data-field="variables.locale"]')).to_have_value("english")
    assert container_count(page) == before


def test_a_refused_field_brings_the_user_back_to_it(page: Any, dash: Dashboard,
                                                    held_vmid: int) -> None:  # fmt: skip
    before = container_count(page)
    page.goto("/containers/new?template=nginx")
    choose_node(page, dash)
    next_step(page)
    step(page, "network")
    page.fill("#hostname", "wiz-refused")
    next_step(page)
    step(page, "resources")
    page.click("#advanced > summary")
    page.fill("#vmid", str(held_vmid))
    for _ in range(3):  # resources -> access -> variables -> review
        next_step(page)
    step(page, "review")
    expect(page.locator('[data-review="resources"]')).to_contain_text(str(held_vmid))
    next_step(page)

    step(page, "resources")  # back where the VMID is
    expect(page.locator("#advanced")).to_have_attribute("open", "")
    expect(error_of(page, "vmid")).to_contain_text(f"vmid {held_vmid} is already used")
    expect(page.locator("#vmid")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#vmid")).to_be_focused()
    expect(page.locator("dialog.password-dialog")).to_have_count(0)
    snap(page, "wizard-error-server-vmid")
    assert container_count(page) == before

    # The other choices survived the round trip.
    page.click('#stepper [data-goto="network"]')
    expect(page.locator("#hostname")).to_have_value("wiz-refused")


def test_template_query_preselects_and_unknown_one_is_said(page: Any) -> None:
    page.goto("/containers/new?template=nginx")
    step(page, "node")
    expect(page.locator('#stepper li[data-step="template"]')).to_have_class(re.compile(r"\bdone\b"))
    expect(page.locator('#stepper li[data-step="template"] .step-sub')).to_have_text("nginx")
    page.click("#back")
    step(page, "template")
    expect(page.locator("input[name=template][value=nginx]")).to_be_checked()
    expect(page.locator('.choice-card[data-template="nginx"]')).to_contain_text("web")

    page.goto("/containers/new?template=no-such-template")
    step(page, "template")
    expect(page.locator("#preselect-missing")).to_contain_text(
        "no template named “no-such-template”"
    )
    expect(page.locator("input[name=template]:checked")).to_have_count(0)


def test_variables_and_resources_follow_the_template(page: Any, dash: Dashboard) -> None:
    page.goto("/containers/new?template=redis")
    choose_node(page, dash)
    next_step(page)
    page.fill("#hostname", "wiz-vars")
    next_step(page)
    step(page, "resources")
    expect(page.locator("#memory")).to_have_value("512")
    page.fill("#cores", "2")  # the user's own choice survives a change of template
    next_step(page)
    next_step(page)

    variables = step(page, "variables")
    secret = variables.locator('[data-field="variables.redis_password"]')
    expect(secret).to_have_attribute("type", "password")
    expect(secret).to_have_attribute("placeholder", "generated: 32 random characters")
    expect(variables.locator('[data-field="variables.maxmemory_policy"]')).to_have_value(
        "allkeys-lru"
    )
    expect(variables.locator('[data-field="variables.appendonly"]')).not_to_be_checked()
    page.fill('[data-field="variables.maxmemory_mb"]', "4")
    page.fill('[data-field="variables.redis_password"]', "short")
    page.select_option('[data-field="variables.maxmemory_policy"]', "allkeys-lfu")
    next_step(page)
    expect(error_of(page, "variables.maxmemory_mb")).to_have_text("Maxmemory mb must be at least 8")
    expect(error_of(page, "variables.redis_password")).to_contain_text("at least 16 characters")
    snap(page, "wizard-6-variables-redis")

    page.click('#stepper [data-goto="template"]')
    choose_template(page, "postgresql")
    page.click('#stepper [data-goto="resources"]')
    step(page, "resources")
    expect(page.locator("#cores")).to_have_value("2")
    expect(page.locator("#memory")).to_have_value("1024")  # postgresql's default
    expect(page.locator("#disk")).to_have_value("8")
    expect(page.locator("#resource-defaults")).to_contain_text("Defaults of postgresql")
    page.click('#stepper [data-goto="variables"]')
    step(page, "variables")
    expect(page.locator('[data-field="variables.db_name"]')).to_have_value("app")
    expect(page.locator('[data-field="variables.maxmemory_mb"]')).to_have_count(0)

    page.click('#stepper [data-goto="template"]')
    choose_template(page, "redis")
    page.click('#stepper [data-goto="variables"]')
    step(page, "variables")  # what was typed for redis is back
    expect(page.locator('[data-field="variables.maxmemory_mb"]')).to_have_value("4")
    expect(page.locator('[data-field="variables.maxmemory_policy"]')).to_have_value("allkeys-lfu")


@pytest.mark.timeout(600)
def test_the_advanced_options_post_the_apis_body(page: Any, dash: Dashboard) -> None:
    """Interfaces, IPv6, VLAN, a volume and a feature flag: a refused field
    (an interface's VLAN) brings the user back to it; the fixed request posts
    the API's body (captured here, answered with a refusal: nothing is made)."""
    before = container_count(page)
    page.goto("/containers/new?template=nginx")
    choose_node(page, dash)
    next_step(page)
    step(page, "network")
    page.fill("#hostname", "wiz-advanced")
    page.click("#advanced-network > summary")
    page.fill("#ip6", "auto")
    page.fill("#vlan", "20")
    page.check("#firewall")
    page.click("#add-nic")
    nic_bridge = page.locator('[data-field="nics[0].bridge"]')  # the node's bridges to choose
    expect(nic_bridge.locator("option").first).to_have_text("The node's default")
    expect(nic_bridge.locator('option[value="vmbr0"]')).to_have_count(1)
    nic_bridge.select_option("vmbr0")
    page.fill('[data-field="nics[0].ip6"]', "auto")
    page.fill('[data-field="nics[0].vlan"]', "5000")
    next_step(page)
    step(page, "resources")
    page.click("#advanced > summary")
    page.click("#add-mount")
    page.fill('[data-field="mounts[0].path"]', "/data")
    page.fill('[data-field="mounts[0].size"]', "2")
    page.select_option("#feature-fuse", "1")
    for _ in range(3):  # resources -> access -> variables -> review
        next_step(page)
    step(page, "review")
    expect(page.locator('[data-review="network"]')).to_contain_text("VLAN tag")
    expect(page.locator('[data-review="resources"]')).to_contain_text("/data (2 GiB)")
    next_step(page)

    step(page, "network")  # the server refused the interface's VLAN tag
    expect(page.locator("#advanced-network")).to_have_attribute("open", "")
    expect(error_of(page, "nics[0].vlan")).to_contain_text("must be a VLAN tag from 1 to 4094")
    expect(page.locator('[data-field="nics[0].vlan"]')).to_be_focused()
    snap(page, "wizard-error-server-nic-vlan")
    assert container_count(page) == before

    page.fill('[data-field="nics[0].vlan"]', "30")
    posted: list[Any] = []

    def refuse(route: Any) -> None:
        posted.append(route.request.post_data_json)
        route.fulfill(status=400, json={"error": "pool stop here", "field": "pool",
                                        "errors": [{"field": "pool", "message": "pool stop here"}]})  # fmt: skip

    page.route("**/api/containers", refuse)
    page.click('#stepper [data-goto="review"]')
    step(page, "review")
    next_step(page)
    step(page, "resources")
    expect(error_of(page, "pool")).to_contain_text("pool stop here")
    assert len(posted) == 1
    body = posted[0]
    assert (body["ip6"], body["vlan"], body["firewall"]) == ("auto", 20, True)
    assert body["nics"] == [{"bridge": "vmbr0", "ip6": "auto", "vlan": 30, "firewall": False,
                             "ip": None}]  # fmt: skip
    assert body["mounts"] == [{"path": "/data", "size": 2, "backup": True}]
    assert body["features"] == {"fuse": True}
    assert "binds" not in body and "onboot" not in body


@pytest.fixture
def down_node(dash: Dashboard) -> Iterator[str]:
    """A second node, registered with the simulator's login on a port where
    nothing answers: the wizard then offers automatic placement."""
    sim = dash.stack.sim
    box = load_secret_box(dash.stack.settings.secret_key, dash.stack.settings.secret_key_file)
    user, token_name = sim["token_id"].split("!")
    with dash.stack.factory() as session:
        node = Node(name="wiz-down", host="127.0.0.1", port=closed_port(), pve_node=sim["node"],
                    auth_kind=AuthKind.TOKEN, pve_user=user, token_name=token_name,
                    secret_ciphertext="", ca_file=sim["cafile"])  # fmt: skip
        set_node_secret(box, node, sim["token_secret"])
        session.add(node)
        session.commit()
    yield "wiz-down"
    with dash.stack.factory() as session:
        session.execute(delete(Node).where(Node.name == "wiz-down"))
        session.commit()


def test_with_several_nodes_the_wizard_places_automatically(page: Any, dash: Dashboard,
                                                           down_node: str) -> None:  # fmt: skip
    """ "Automatic (recommended)" is offered and chosen; the node's default
    storage and bridge follow; the review says where it would go now and
    why; the request posts node "auto" without a storage or a bridge."""
    page.goto("/containers/new?template=nginx")
    step(page, "node")
    auto = page.locator('.choice-card[data-node="auto"]')
    expect(auto).to_contain_text("Automatic (recommended)")
    expect(auto.locator("input")).to_be_checked()
    expect(page.locator("#storage")).to_be_disabled()
    expect(page.locator("#storage")).to_have_text("The chosen node's default")
    next_step(page)
    step(page, "network")
    page.fill("#hostname", "wiz-auto")
    for _ in range(4):  # network -> resources -> access -> variables -> review
        next_step(page)
    step(page, "review")
    choice = page.locator("#auto-choice")
    expect(choice).to_contain_text(dash.node)
    expect(choice).to_contain_text(f"{down_node} skipped: unreachable")
    snap(page, "wizard-review-automatic")
    posted: list[Any] = []

    def refuse(route: Any) -> None:
        posted.append(route.request.post_data_json)
        route.fulfill(status=400, json={"error": "node: no node fits", "field": "node",
                                        "errors": [{"field": "node", "message": "node: no node fits"}]})  # fmt: skip

    page.route("**/api/containers", refuse)
    next_step(page)
    step(page, "node")
    expect(error_of(page, "node")).to_contain_text("no node fits")
    assert len(posted) == 1
    assert posted[0]["node"] == "auto" and "storage" not in posted[0] and "bridge" not in posted[0]

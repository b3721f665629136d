"""The dashboard in a real browser (Debian's chromium driven by Playwright)
against the real stack: the simulator as node "sim", Redis, two
`provisioner worker` processes and the web app served by gunicorn
(`provisioner web`).

Every test gets a logged-in page; uncaught JavaScript errors fail it.
`shot(page, name)` saves a full-page screenshot to build/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from provisioner import users
from provisioner.db import session_scope
from provisioner.models import Container, Node
from provisioner.nodes import client_for
from provisioner.secrets.keyfile import load_secret_box
from tests.conftest import ROOT
from tests.pipeline.conftest import NODE, Stack, build_stack, destroy_ours, kill_tree

pytestmark = [pytest.mark.integration]

CHROMIUM = os.environ.get("PROVISIONER_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "build" / "screenshots"
ADMIN = "admin"
ADMIN_PASSWORD = "browser tests password"
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",  # no update checks, no phoning home
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--metrics-recording-only",
]


@dataclass
class Dashboard:
    """The running stack and the web app's address."""

    stack: Stack
    url: str
    web: subprocess.Popen[bytes]

    @property
    def node(self) -> str:
        return NODE

    def container_ids(self) -> list[str]:
        with self.stack.factory() as session:
            return list(session.scalars(select(Container.id).order_by(Container.created_at)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the web app exited: {log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the web app did not answer at {url}: {log.read_text()[-3000:]}")


@pytest.fixture(scope="package")  # its containers go before the other suites run
def dash(sim: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("REDIS_URL is not set (scripts/test starts a Redis)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/setup installs Debian's chromium)")
    stack = build_stack(sim, redis_url, tmp_path_factory.mktemp("dashboard"),
                        [ROOT / "tests" / "pipeline" / "templates"])  # fmt: skip
    with session_scope(stack.factory) as session:
        users.create_user(session, ADMIN, ADMIN_PASSWORD, is_admin=True)
    web, url = start_web(stack, threads=64)
    try:
        stack.start_workers(2)
        yield Dashboard(stack=stack, url=url, web=web)
    finally:
        stop_web(web)
        stack.stop_workers()
        _destroy_all(stack)
        stack.redis.close()


def start_web(stack: Stack, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    """``provisioner web`` (one gunicorn process) on the stack; it and its URL."""
    port = _free_port()
    assert stack.log_dir is not None
    log = stack.log_dir / f"web-{port}.log"
    with open(log, "ab") as out:
        web = subprocess.Popen([str(ROOT / ".venv/bin/provisioner"), "web", "--host", "127.0.0.1",
                                "--port", str(port), "--workers", "1", "--threads", str(threads)],
                               env=stack.env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/login", web, log)
    except BaseException:
        stop_web(web)
        raise
    return web, url


def stop_web(web: subprocess.Popen[bytes]) -> None:
    web.terminate()
    try:
        web.wait(15)
    except subprocess.TimeoutExpired:
        kill_tree(web.pid)
        web.wait()


def _destroy_all(stack: Stack) -> None:
    """Remove every container the tests made from the simulator."""
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    with stack.factory() as session:
        node = session.scalars(select(Node).where(Node.name == NODE)).one()
        with client_for(node, box) as pve:
            destroy_ours(pve, [(ct.id, ct.vmid) for ct in session.scalars(select(Container))])


@pytest.fixture(scope="module")
def browser(dash: Dashboard) -> Iterator[Any]:
    """Chromium, per module: Playwright's sync API runs an event loop in this
    thread while it is open, and tests after the browser's use asyncio.run()."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def login(page: Any, username: str = ADMIN, password: str = ADMIN_PASSWORD) -> None:
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


@pytest.fixture
def anon_page(browser: Any, dash: Dashboard) -> Iterator[Any]:
    """A fresh browser context, not logged in; uncaught script errors and
    anything the Content-Security-Policy refused fail the test."""
    context = browser.new_context(base_url=dash.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if (
        msg.type == "error" and "Content Security Policy" in msg.text) else None)  # fmt: skip
    yield page
    context.close()
    assert not errors, f"uncaught script errors or CSP refusals: {errors}"


@pytest.fixture
def page(anon_page: Any) -> Any:
    """A logged-in page (as the admin)."""
    login(anon_page)
    return anon_page


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot in build/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # animations "disabled": transitions jump to their end, so nothing is caught half-way
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path


def doc_shot(page: Any, name: str) -> None:
    """A screenshot for the README (docs/), refreshed when the tests run."""
    path = shot(page, name)
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copyfile(path, docs / path.name)

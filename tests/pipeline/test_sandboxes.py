"""Client sandboxes end to end, on a stack of their own.

The client's live site is a container of the ``wordpress`` template, seeded
through its REST API (100 posts, 20 pages in a hierarchy, 50 media images of
about 290 KB with featured images, categories, tags, two authors), plus one
image over the media size limit and one whose file is gone from the disk.
A sandbox asked for through the CLI (the lines of docs/sandboxes.md), with
its worker killed (-9) in the middle of the import, must match the live
site through both REST APIs: counts, slugs, dates, authors' names, term
relations, featured images byte for byte, parent pages, settings; the two
broken images are warnings naming them.  Bad input is refused, naming the
field, and stores nothing.  Then the expiry: the expiring warning, the
expiry, the destroy.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from provisioner.models import Container, ContainerEvent, Lifecycle, Sandbox, SandboxItem, utcnow
from provisioner.sandbox_expiry import sweep
from provisioner.secrets.keyfile import load_secret_box
from provisioner.webhook_store import add_webhook
from provisioner.wpapi import WpClient, WpSite, WpTrust
from tests.conftest import ROOT
from tests.pipeline.conftest import NODE, Stack, api_client, module_stack
from tests.pipeline.receiver import Receiver, receiver
from tests.pipeline.test_failures import ssh_run
from tests.pipeline.wpsite import Seeded, compare, png, seed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

MADE: list[str] = []
MEDIA_LIMIT = 600_000  # the huge image (about 750 KB) is over it
DOCS = ROOT / "docs/sandboxes.md"


@pytest.fixture(scope="module")
def sb_stack(sim: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with module_stack(
        sim,
        tmp_path_factory,
        "sandboxes",
        MADE,
        env={"PROVISIONER_SANDBOX_MEDIA_MAX_BYTES": str(MEDIA_LIMIT)},
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def api(sb_stack: Stack) -> Iterator[Callable[..., Any]]:
    with api_client(sb_stack) as call:
        yield call


@dataclass
class Live:
    cid: str
    base: str
    password: str
    fingerprint: str
    seeded: Seeded
    broken: str  # the media whose file is gone
    huge: str  # the media over the limit

    def client(self) -> WpClient:
        return WpClient(WpSite(self.base, "admin", self.password,
                               WpTrust(fingerprint=self.fingerprint.replace(":", "").lower())))  # fmt: skip


def out(stack: Stack, cid: str, command: str) -> str:
    done = ssh_run(stack, cid, command)
    assert done.exit_status == 0, (command, done.stdout, done.stderr)
    return str(done.stdout).strip()


def app_password(stack: Stack, cid: str, label: str) -> str:
    return out(stack, cid, f"wp-app-password admin {label}")


def fingerprint_of(stack: Stack, cid: str) -> str:
    line = out(
        stack, cid, "openssl x509 -in /etc/ssl/wordpress/cert.pem -noout -fingerprint -sha256"
    )
    return line.split("=", 1)[1]


@pytest.fixture(scope="module")
def live(sb_stack: Stack, api: Callable[..., Any]) -> Live:
    """The client's live site, provisioned and seeded."""
    answer = api("POST", "/containers", {"template": "wordpress", "node": NODE,
                                         "hostname": "acme-live"})  # fmt: skip
    assert answer.status_code == 201, answer.json
    cid: str = answer.json["id"]
    MADE.append(cid)
    ct = sb_stack.wait(cid, timeout=900)
    assert ct.lifecycle == Lifecycle.READY, (ct.error_message, sb_stack.worker_logs()[-3000:])
    base = f"https://{ct.ip}"
    password, pin = app_password(sb_stack, cid, "seed"), fingerprint_of(sb_stack, cid)
    writer = WpClient(WpSite(base, "admin", password, WpTrust(fingerprint=pin.replace(":", "").lower()),
                             read_only=False))  # fmt: skip
    with writer:
        seeded = seed(writer, base, extra_media=[("huge", png(500, 500, 999)),
                                                 ("broken", png(200, 200, 998))])  # fmt: skip
    # the broken image's file is gone from the disk: the site lists it, its URL answers 404
    path = urlsplit(seeded.media["broken"]["source_url"]).path
    out(sb_stack, cid, f"rm /var/lib/wordpress{path} || rm /usr/share/wordpress{path}")
    return Live(cid, base, password, pin, seeded, "broken", "huge")


def sandbox_lines(live: Live) -> list[str]:
    """docs/sandboxes.md's lines, for this live site."""
    text = DOCS.read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None
    lines = [line for line in block.group(1).replace("\\\n", " ").splitlines() if line.strip()]
    return [" ".join(line.split()).replace("https://acme.example", live.base)
            .replace("--user editor", f"--user admin --fingerprint {live.fingerprint}")
            for line in lines]  # fmt: skip


def cli(stack: Stack, line: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    assert line.startswith("provisioner ")
    args = line.split()[1:]
    if "<" in args:
        args = args[: args.index("<")]
    return subprocess.run([str(ROOT / ".venv/bin/provisioner"), *args], env=stack.env,
                          input=stdin, capture_output=True, text=True, timeout=900)  # fmt: skip


def containers(stack: Stack) -> int:
    with stack.factory() as session:
        return int(session.scalar(select(func.count()).select_from(Container)) or 0)


def test_bad_input_is_refused_naming_the_field(sb_stack: Stack, api: Callable[..., Any],
                                                live: Live) -> None:  # fmt: skip
    before = containers(sb_stack)
    good = {"from": live.base, "client": "acme", "user": "admin", "app_password": live.password,
            "fingerprint": live.fingerprint}  # fmt: skip
    sim_site = sb_stack.sim["url"].removesuffix("/api2/json")  # HTTPS, and not WordPress
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({**good, "app_password": "zzzz zzzz zzzz zzzz zzzz zzzz"}, "app_password",
         "refused the Application Password"),
        ({**good, "from": "https://127.0.0.1:9"}, "from", "cannot reach"),
        ({**good, "from": live.base.replace("https", "http")}, "from", "https://"),
        ({**good, "fingerprint": "00" * 32}, "from", "not trusted"),
        ({**good, "ttl": "7x"}, "ttl", "duration"),
        ({**good, "client": "Acme!"}, "client", "lower-case"),
    ]  # fmt: skip
    cases.append(({**good, "from": sim_site, "fingerprint": sb_stack.sim["fingerprint"]},
                  "from", "no WordPress REST API"))  # fmt: skip
    for body, field, words in cases:
        answer = api("POST", "/sandboxes", body)
        assert answer.status_code == 400, (body, answer.json)
        assert answer.json["field"] == field and words in answer.json["error"], answer.json
        assert "zzzz" not in json.dumps(answer.json) and live.password not in json.dumps(
            answer.json
        )
    refused = cli(sb_stack, f"provisioner sandbox create --from {live.base} --client acme "
                            f"--user admin --app-password-stdin --fingerprint {live.fingerprint}",
                  stdin="wrong wrong wrong wrong\n")  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert (
        refused.stderr.startswith("error: --app-password-stdin: ") and "wrong" not in refused.stderr
    )
    assert containers(sb_stack) == before  # nothing stored


def test_a_sandbox_matches_the_live_site_after_a_worker_killed_mid_import(
        sb_stack: Stack, api: Callable[..., Any], live: Live) -> None:  # fmt: skip
    stack = sb_stack
    with receiver() as hook_receiver:
        _sandbox_life(stack, live, hook_receiver)


def _sandbox_life(stack: Stack, live: Live, hooks: Receiver) -> None:
    box = load_secret_box(stack.settings.secret_key, stack.settings.secret_key_file)
    with stack.factory() as session:
        _hook, secret = add_webhook(session, box, hooks.url,
                                    events=["ready", "expiring", "expired"])  # fmt: skip
        session.commit()
    assert secret is not None
    hooks.secret = secret
    create, listing, extend, expire = sandbox_lines(live)
    made = cli(stack, create.replace(" --follow", ""), stdin=live.password + "\n")
    assert made.returncode == 0, made.stderr
    cid = made.stdout.strip()
    MADE.append(cid)
    assert "admin_password (shown once" in made.stderr or "root password" in made.stderr
    # kill -9 the worker once the import has written some items, then a new worker
    deadline = time.monotonic() + 900
    while True:
        with stack.factory() as session:
            written = session.scalar(select(func.count()).select_from(SandboxItem)
                                     .where(SandboxItem.container_id == cid)) or 0  # fmt: skip
        if written >= 30:
            break
        assert stack.container(cid).lifecycle != Lifecycle.ERROR, stack.container(cid).error_message
        assert time.monotonic() < deadline, stack.worker_logs()[-3000:]
        time.sleep(0.2)
    stack.kill_worker(0)
    stack.workers.pop(0)
    stack.start_workers(1)
    ct = stack.wait(cid, timeout=900)
    assert ct.lifecycle == Lifecycle.READY, (ct.error_message, stack.worker_logs()[-3000:])
    with stack.factory() as session:
        events = session.scalars(select(ContainerEvent).where(ContainerEvent.container_id == cid)
                                 .order_by(ContainerEvent.seq)).all()  # fmt: skip
        messages = [(e.type, e.phase, e.message) for e in events]
        sandbox = session.get(Sandbox, cid)
        assert sandbox is not None
        summary = dict(sandbox.summary)
    assert any(t == "recovering" for t, _p, _m in messages), messages[-20:]
    phases = [p for _t, p, _m in messages if p]
    assert "import" in phases and phases.index("import") > phases.index("scripts")
    assert any(re.search(r"\d+/\d+ items, [\d.]+/[\d.]+ MiB", m) for t, p, m in messages
               if t == "step" and p == "import")  # fmt: skip
    warnings = [m for t, _p, m in messages if t == "warning"]
    assert any("'huge'" in w and "over the limit" in w for w in warnings), warnings
    assert any("'broken'" in w and "404" in w for w in warnings), warnings
    assert len(summary["skipped"]) == 2
    # never a secret in an event
    assert not any(live.password in m for _t, _p, m in messages)
    # the copy, through both REST APIs
    target_pw = app_password(stack, cid, "compare")
    sandbox_site = WpClient(WpSite(f"https://{ct.ip}", "admin", target_pw,
                                   WpTrust(fingerprint=fingerprint_of(stack, cid).replace(":", "").lower())))  # fmt: skip
    with live.client() as source, sandbox_site:
        counts = compare(source, sandbox_site, skipped_media={live.broken, live.huge})
    assert counts["/wp/v2/posts"] >= 100 and counts["/wp/v2/pages"] >= 20
    # only referenced media were copied: 50, not the three nobody uses
    assert counts["media"] == 50, counts
    with stack.factory() as session:  # and none twice
        rows = session.execute(select(SandboxItem.kind, SandboxItem.source_id)
                               .where(SandboxItem.container_id == cid)).all()  # fmt: skip
    assert len(rows) == len(set(rows))
    # asked again for the client: the same sandbox
    again = cli(stack, create.replace(" --follow", ""), stdin=live.password + "\n")
    assert again.returncode == 0 and again.stdout.strip() == cid, again.stderr
    assert "has sandbox" in again.stderr
    # ls, extend
    listed = cli(stack, listing + " --json")
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout) if r["id"] == cid]
    assert (
        row["client"] == "acme"
        and row["lifecycle"] == "ready"
        and live.password not in listed.stdout
    )
    extended = cli(stack, extend)
    assert extended.returncode == 0 and "now expires at" in extended.stderr, extended.stderr

    # the expiry: warned once, then expired and destroyed
    with stack.factory() as session:
        row_ = session.get(Sandbox, cid)
        assert row_ is not None
        row_.expires_at = utcnow() + timedelta(seconds=3000)  # within the day's warning
        session.commit()
    assert sweep(stack.settings, stack.factory, stack.redis, utcnow()) == (1, 0)
    assert sweep(stack.settings, stack.factory, stack.redis, utcnow()) == (0, 0)  # once
    ended = cli(stack, expire)
    assert ended.returncode == 0, ended.stderr
    done = stack.wait(cid, states=(Lifecycle.DESTROYED, Lifecycle.ERROR), timeout=300)
    assert done.lifecycle == Lifecycle.DESTROYED, done.error_message
    with stack.factory() as session:
        texts = [m for (m,) in session.execute(select(ContainerEvent.message).where(
            ContainerEvent.container_id == cid, ContainerEvent.type == "warning"))]  # fmt: skip
    assert any(t.startswith("expiring: sandbox sandbox-acme") for t in texts), texts
    assert any(t.startswith("expired: sandbox sandbox-acme") for t in texts), texts
    # the signed webhooks: ready, expiring, expired, each with a valid signature and no secret
    got = hooks.wait_for(3, timeout=120, what="(ready, expiring, expired)")
    assert [r.event for r in got] == ["ready", "expiring", "expired"], [r.event for r in got]
    for r in got:
        assert r.signature_ok and r.payload["container"]["id"] == cid, r.payload
        assert live.password.encode() not in r.body and target_pw.encode() not in r.body


def test_the_docs_lines_are_the_ones_run() -> None:
    lines = sandbox_lines(Live("", "https://x", "", "AB", Seeded("https://x"), "", ""))
    assert [line.split()[:3] for line in lines] == [
        ["provisioner", "sandbox", "create"], ["provisioner", "sandbox", "ls"],
        ["provisioner", "sandbox", "extend"], ["provisioner", "sandbox", "expire"]]  # fmt: skip
    assert "--fingerprint AB" in lines[0] and "https://x" in lines[0]

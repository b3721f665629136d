"""The pure part of webhooks: the signature, the payload, who gets what,
the retry schedule and the URL rules (no database, no Redis, no network)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from provisioner.config import Settings
from provisioner.errors import ConfigError
from provisioner.logsafe import REDACTED
from provisioner.secrets.generate import generate_password, generate_ssh_keypair
from provisioner.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    EVENTS,
    SIGNATURE_HEADER,
    ContainerFacts,
    HookView,
    attempts_allowed,
    check_events,
    check_owner,
    check_secret,
    check_url,
    container_payload,
    encode_body,
    generate_secret,
    matching,
    ping_payload,
    sign,
    signature_header,
    signed_headers,
    verify_signature,
    wait_after,
    wants,
)

# a known vector, computed apart from this code:
#   printf '1700000000.{"event":"ping"}' | openssl dgst -sha256 -hmac whsec_known_vector_secret
VECTOR_SECRET = "whsec_known_vector_secret"
VECTOR_BODY = b'{"event":"ping"}'
VECTOR_HEX = "ffd36048e5093762570ae00847a1e344beed1c335876c4eedaecb1b947515659"
FACTS = ContainerFacts(id="3f2a9c1e-0000-4000-8000-000000000001", hostname="web1",
                       template="nginx", lifecycle="ready", ip="198.18.0.130",
                       environment="staging", owner="alice", node="pve1")  # fmt: skip
WHEN = datetime(2026, 12, 6, 12, 3, 4, tzinfo=UTC)


# -- the signature --------------------------------------------------------------------


def test_the_signature_matches_a_known_vector() -> None:
    assert sign(VECTOR_SECRET, 1700000000, VECTOR_BODY) == VECTOR_HEX
    assert (
        signature_header(VECTOR_SECRET, 1700000000, VECTOR_BODY) == f"t=1700000000,v1={VECTOR_HEX}"
    )


def test_a_receiver_verifies_within_the_tolerance_only() -> None:
    header = signature_header(VECTOR_SECRET, 1700000000, VECTOR_BODY)
    assert verify_signature(VECTOR_SECRET, VECTOR_BODY, header, now=1700000000 + 299)
    assert verify_signature(VECTOR_SECRET, VECTOR_BODY, header, now=1700000000 - 299)
    assert not verify_signature(VECTOR_SECRET, VECTOR_BODY, header, now=1700000000 + 301)
    assert not verify_signature(VECTOR_SECRET, VECTOR_BODY + b" ", header, now=1700000000)
    assert not verify_signature("whsec_another_secret_xx", VECTOR_BODY, header, now=1700000000)
    assert not verify_signature(VECTOR_SECRET, VECTOR_BODY, None, now=1700000000)
    assert not verify_signature(VECTOR_SECRET, VECTOR_BODY, "t=x,v1=00", now=1700000000)
    # the timestamp is signed: moving it breaks the signature
    moved = header.replace("t=1700000000", "t=1700000100")
    assert not verify_signature(VECTOR_SECRET, VECTOR_BODY, moved, now=1700000100)
    # several v1 values (a receiver rotating secrets may get either): one must match
    both = f"t=1700000000,v1={'0' * 64},v1={VECTOR_HEX}"
    assert verify_signature(VECTOR_SECRET, VECTOR_BODY, both, now=1700000000)


def test_the_headers_of_an_attempt() -> None:
    headers = signed_headers(VECTOR_SECRET, VECTOR_BODY, "ready", "d-1", timestamp=1700000000)
    assert headers[SIGNATURE_HEADER] == f"t=1700000000,v1={VECTOR_HEX}"
    assert headers[EVENT_HEADER] == "ready" and headers[DELIVERY_HEADER] == "d-1"
    assert headers["Content-Type"] == "application/json"
    assert VECTOR_SECRET not in json.dumps(headers)


def test_generated_secrets_are_long_and_new() -> None:
    a, b = generate_secret(), generate_secret()
    assert a != b and a.startswith("whsec_") and len(a) >= 48
    assert check_secret(a) == a


# -- the payload ------------------------------------------------------------------------


def test_a_payload_carries_links_and_states_never_a_secret() -> None:
    root_password = generate_password()
    private_key, _public = generate_ssh_keypair("test")
    db_password = generate_password(32)
    message = (f"scripts failed: script 20-app.sh exited with 3: echo {root_password}; "
               f"DB_PASSWORD={db_password} {private_key} Authorization: Bearer abcdefgh12345678 "
               f"connecting to postgresql://app:{db_password}@db/app")  # fmt: skip
    payload = container_payload("d-1", "error", WHEN, FACTS, message, "https://prov.example",
                                [root_password, private_key, db_password])  # fmt: skip
    body = encode_body(payload).decode()
    key_lines = [line for line in private_key.splitlines() if "-----" not in line]
    for secret in (root_password, db_password, "abcdefgh12345678", *key_lines):
        assert secret not in body
    assert REDACTED in body
    assert set(payload) == {"id", "event", "occurred_at", "container", "message", "links"}
    assert payload["container"] == {
        "id": FACTS.id, "hostname": "web1", "template": "nginx", "lifecycle": "ready",
        "ip": "198.18.0.130", "environment": "staging", "owner": "alice", "node": "pve1"}  # fmt: skip
    assert payload["links"] == {"api": f"https://prov.example/api/containers/{FACTS.id}",
                                "dashboard": f"https://prov.example/containers/{FACTS.id}"}  # fmt: skip
    assert payload["occurred_at"] == "2026-12-06T12:03:04Z"
    assert payload["message"].startswith("scripts failed: script 20-app.sh exited with 3")
    assert not any(k in body.lower() for k in ('"password"', '"secret"', '"token"', '"key"'))


def test_a_long_message_is_cut_and_an_empty_one_is_null() -> None:
    payload = container_payload("d", "ready", WHEN, FACTS, "x" * 5000, "http://h:1")
    assert len(payload["message"]) == 2000 and payload["message"].endswith("…")
    assert container_payload("d", "ready", WHEN, FACTS, None, "http://h:1")["message"] is None


def test_a_ping_names_no_container() -> None:
    payload = ping_payload("d-2", WHEN, 7, "http://127.0.0.1:8000")
    assert payload["event"] == "ping" and payload["container"] is None
    assert payload["links"]["api"] == "http://127.0.0.1:8000/api/webhooks/7/deliveries"


def test_links_use_the_public_url_or_the_web_address(tmp_path: object) -> None:
    env = {"HOME": "/nonexistent", "PROVISIONER_DATA_DIR": "/nonexistent"}
    assert Settings.from_env(env).links_base == "http://127.0.0.1:8000"
    public = Settings.from_env({**env, "PROVISIONER_PUBLIC_URL": "https://p.example/prov/"})
    assert public.links_base == "https://p.example/prov"
    with pytest.raises(ConfigError, match="PROVISIONER_PUBLIC_URL must not hold a user"):
        Settings.from_env({**env, "PROVISIONER_PUBLIC_URL": "https://u:pw@p.example"})


# -- who gets what ------------------------------------------------------------------------

HOOKS = [
    HookView(1, None, EVENTS),  # global, every event
    HookView(2, "alice", ("ready",)),
    HookView(3, "bob", EVENTS),
    HookView(4, "alice", ("error", "expired")),
    HookView(5, None, EVENTS, active=False),
]


@pytest.mark.parametrize(("event", "owner", "ids"), [
    ("ready", "alice", [1, 2]),
    ("error", "alice", [1, 4]),
    ("ready", "bob", [1, 3]),
    ("expiring", "carol", [1]),
    ("ready", None, [1]),  # a container nobody owns: global hooks only
    ("expired", "alice", [1, 4]),
])  # fmt: skip
def test_hooks_match_by_owner_and_event(event: str, owner: str | None, ids: list[int]) -> None:
    assert [h.id for h in matching(reversed(HOOKS), event, owner)] == ids


def test_an_inactive_hook_gets_nothing() -> None:
    assert not wants(HOOKS[4], "ready", None)


# -- retries --------------------------------------------------------------------------------


def test_the_backoff_schedule() -> None:
    intervals = Settings.from_env({"HOME": "/nonexistent"}).webhook_retry_intervals
    assert intervals == (10, 30, 120, 600, 1800)
    assert attempts_allowed(intervals) == 6
    assert [wait_after(intervals, n) for n in range(1, 7)] == [10, 30, 120, 600, 1800, None]
    with pytest.raises(ValueError):
        wait_after(intervals, 0)


def test_rq_waits_as_the_schedule_says() -> None:
    """RQ picks a retry's wait by the retries left (``Job.get_retry_interval``):
    the same waits, in the same order."""
    from redis import Redis
    from rq.job import Job

    intervals = (10, 30, 120)
    job = Job(connection=Redis(port=1))  # never connects: nothing is read or written
    job.retry_intervals = list(intervals)
    for attempt, retries_left in enumerate(range(len(intervals), 0, -1), 1):
        job.retries_left = retries_left
        assert job.get_retry_interval() == wait_after(intervals, attempt)


@pytest.mark.parametrize(("value", "parsed"), [
    ("10,30,2m,10m,30m", (10, 30, 120, 600, 1800)), ("1", (1,)), ("1h, 5s", (3600, 5)),
])  # fmt: skip
def test_intervals_setting(value: str, parsed: tuple[int, ...]) -> None:
    env = {"HOME": "/nonexistent", "PROVISIONER_WEBHOOK_RETRY_INTERVALS": value}
    assert Settings.from_env(env).webhook_retry_intervals == parsed


@pytest.mark.parametrize("value", ["0", "ten", "1,,2", "-5", "1d"])
def test_bad_intervals_are_refused_naming_the_variable(value: str) -> None:
    env = {"HOME": "/nonexistent", "PROVISIONER_WEBHOOK_RETRY_INTERVALS": value}
    with pytest.raises(ConfigError, match="PROVISIONER_WEBHOOK_RETRY_INTERVALS"):
        Settings.from_env(env)


# -- input rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "https://hooks.example.net/lxc?team=ops",
    "HTTPS://Example.COM", "http://[::1]:9000/",
])  # fmt: skip
def test_good_urls(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.com/x", "must start with http:// or https://"),
    ("example.com/hook", "must start with http:// or https://"),
    ("javascript:alert(1)", "must start with http:// or https://"),
    ("http://", "names no host"),
    ("http://host:notaport/", "not a valid URL"),
    ("http://exa mple.com/", "spaces or control characters"),
    ("https://h.example/#frag", "#fragment"),
    ("", "a URL is required"),
    ("http://x/" + "a" * 2050, "at most 2048"),
])  # fmt: skip
def test_bad_urls_are_refused_naming_the_field(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^url: .*{reason}"):
        check_url(url)


@pytest.mark.parametrize("url", ["https://user:hunter2secret@hooks.example/x",
                                 "http://user@hooks.example/x", "http://:pw@h/"])  # fmt: skip
def test_credentials_in_a_url_are_refused_and_never_repeated(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_url(url, "url")
    assert info.value.message.startswith("url: must not hold a user name or password")
    assert "hunter2secret" not in str(info.value) and "pw" not in str(info.value).split(":", 1)[1]


def test_events_owner_and_secret_rules() -> None:
    assert check_events(None) == list(EVENTS) and check_events([]) == list(EVENTS)
    assert check_events(["expired", "ready"]) == ["ready", "expired"]  # in EVENTS' order
    with pytest.raises(ConfigError, match=r"^events: unknown event 'done'"):
        check_events(["ready", "done"])
    assert check_owner(None) is None and check_owner("alice@corp") == "alice@corp"
    with pytest.raises(ConfigError, match=r"^owner: "):
        check_owner("not a name")
    with pytest.raises(ConfigError, match=r"^secret: must be at least 16") as info:
        check_secret("short-secret")
    assert "short-secret" not in str(info.value)


def test_a_receiver_can_verify_with_the_standard_library_alone() -> None:
    """What docs/webhooks.md shows a receiver doing, by hand."""
    body = encode_body(ping_payload("d-3", WHEN, 1, "http://h:1"))
    header = signed_headers(VECTOR_SECRET, body, "ping", "d-3", timestamp=1700000000)[
        SIGNATURE_HEADER
    ]
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(VECTOR_SECRET.encode(), f"{parts['t']}.".encode() + body,
                        hashlib.sha256).hexdigest()  # fmt: skip
    assert hmac.compare_digest(expected, parts["v1"])

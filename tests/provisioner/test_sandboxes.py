"""The sandbox rules (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from provisioner.errors import ConfigError
from provisioner.sandboxes import (
    Limits,
    check_app_password,
    check_client,
    check_fingerprint,
    check_limits,
    check_source_url,
    due,
    extended,
    format_duration,
    parse_ttl,
    sandbox_hostname,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 7 * 86400), ("12h", 43200), ("90m", 5400), ("2w", 14 * 86400), ("1d12h", 129600),
    ("3600", 3600), (" 8H ", 28800), (600, 600),
])  # fmt: skip
def test_ttl(text: str | int, seconds: int) -> None:
    assert parse_ttl(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7", "7x", "d7", "1d 2h", "-1d", "366d", "30s", None, True,
                                  "1d12", "12h7"])  # fmt: skip
def test_bad_ttl_names_the_field(text: object) -> None:
    with pytest.raises(ConfigError, match=r"^ttl: "):
        parse_ttl(text)  # type: ignore[arg-type]


def test_format_duration() -> None:
    assert format_duration(3 * 86400 + 4 * 3600 + 5) == "3d 4h"
    assert format_duration(5 * 3600 + 12 * 60) == "5h 12m"
    assert format_duration(720) == "12m"
    assert format_duration(40) == "40s"
    assert format_duration(-5) == "0s"
    assert format_duration(86400) == "1d"


@pytest.mark.parametrize("key", ["acme", "a", "acme-2", "x" * 40])
def test_client_keys(key: str) -> None:
    assert check_client(key) == key


@pytest.mark.parametrize("key", ["", None, "Acme", "-acme", "acme-", "a_b", "x" * 41, "a b"])
def test_bad_client_keys(key: str | None) -> None:
    with pytest.raises(ConfigError, match=r"^client: "):
        check_client(key)


def test_source_url() -> None:
    assert check_source_url("https://Site.Example/") == "https://site.example"
    assert check_source_url("https://site.example:8443/blog/") == "https://site.example:8443/blog"
    assert check_source_url("https://[fd00::1]/") == "https://[fd00::1]"
    for bad, why in [("http://site.example", "https://"), ("https://u:p@site.example", "credentials"),
                     ("https://site.example/?a=1", "query"), ("", "required"), ("https://", "host"),
                     ("https://site.example:99999", "not a URL")]:  # fmt: skip
        with pytest.raises(ConfigError, match=f"^from: .*{why}"):
            check_source_url(bad)


def test_app_password_is_never_repeated() -> None:
    assert check_app_password("abcd EFGH ijkl MNOP qrst UVWX") == "abcdEFGHijklMNOPqrstUVWX"
    for bad in (None, "   ", "x" * 300, "abc\x00def"):
        with pytest.raises(ConfigError, match=r"^app_password: ") as caught:
            check_app_password(bad)
        assert "x" * 20 not in str(caught.value) and "abc" not in str(caught.value)


def test_fingerprint() -> None:
    hexa = "ab" * 32
    assert check_fingerprint(hexa.upper()) == hexa
    assert check_fingerprint(":".join(["AB"] * 32)) == hexa
    assert check_fingerprint(None) is None and check_fingerprint("") is None
    with pytest.raises(ConfigError, match=r"^fingerprint: "):
        check_fingerprint("ab" * 20)


def test_hostnames() -> None:
    assert sandbox_hostname("acme") == "sandbox-acme"
    assert sandbox_hostname("acme", ["sandbox-acme"]) == "sandbox-acme-2"
    assert sandbox_hostname("acme", ["sandbox-acme", "sandbox-acme-2"]) == "sandbox-acme-3"


def test_limits() -> None:
    check_limits(Limits(2, 3), "acme", "ann", 1, 2)
    check_limits(Limits(0, 0), "acme", "ann", 50, 50)
    check_limits(Limits(2, 3), "acme", None, 1, 99)  # no owner: no owner limit
    with pytest.raises(ConfigError, match=r"^client: acme has 2 sandbox"):
        check_limits(Limits(2, 3), "acme", "ann", 2, 0)
    with pytest.raises(ConfigError, match=r"^owner: ann has 3 sandbox"):
        check_limits(Limits(2, 3), "acme", "ann", 0, 3)


def test_due() -> None:
    warn = timedelta(hours=1)
    assert due(NOW + timedelta(hours=2), False, NOW, warn).action is None
    assert due(NOW + timedelta(minutes=30), False, NOW, warn).action == "warn"
    assert due(NOW + timedelta(minutes=30), True, NOW, warn).action is None
    assert due(NOW, True, NOW, warn).action == "expire"
    assert due(NOW - timedelta(seconds=1), False, NOW, warn).action == "expire"


def test_extend_counts_from_the_later_of_now_and_the_expiry() -> None:
    day = timedelta(days=1)
    assert extended(NOW + day, NOW, day) == NOW + 2 * day
    assert extended(NOW - day, NOW, day) == NOW + day

"""REDIS_URL's forms: parsing and refusing Sentinel URLs (pure, no Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from redis.sentinel import SentinelConnectionPool

from cli.main import main
from provisioner.config import Settings, redact_url
from provisioner.errors import ConfigError
from provisioner.redis_url import (
    SentinelTarget,
    check_redis_url,
    is_sentinel_url,
    master_address,
    parse_sentinel_url,
    redis_client,
)
from provisioner.rq_config import rq_settings

FORM = "redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]"


def test_parse_a_full_sentinel_url() -> None:
    url = ("redis+sentinel://app:p%40ss@10.0.0.1:26380,[::1]:26381,sentinel-c:26382/main-redis/3"
           "?sentinel_username=watch&sentinel_password=s3cret")  # fmt: skip
    target = parse_sentinel_url(url)
    assert target == SentinelTarget(
        sentinels=(("10.0.0.1", 26380), ("::1", 26381), ("sentinel-c", 26382)),
        master_name="main-redis", db=3, username="app", password="p@ss",
        sentinel_username="watch", sentinel_password="s3cret", ssl=False,
    )  # fmt: skip
    assert "p@ss" not in repr(target) and "s3cret" not in repr(target)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://h:1/m", SentinelTarget((("h", 1),), "m")),
        ("redis+sentinel://:pw@h:1/m/", SentinelTarget((("h", 1),), "m", password="pw")),
        ("redis+sentinel://u@h:1/m/0", SentinelTarget((("h", 1),), "m", username="u")),
        ("rediss+sentinel://h:1,h:2/m/15", SentinelTarget((("h", 1), ("h", 2)), "m", 15, ssl=True)),
        ("REDIS+SENTINEL://h:1/m", SentinelTarget((("h", 1),), "m")),
    ],
)
def test_parse_short_forms(url: str, expected: SentinelTarget) -> None:
    assert parse_sentinel_url(url) == expected
    assert is_sentinel_url(url)


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://:pw@h/1", "unix:///run/r.sock"])
def test_plain_urls_stay_plain(url: str) -> None:
    assert not is_sentinel_url(url)
    check_redis_url(url)
    client = redis_client(url, socket_timeout=1)
    try:
        assert not isinstance(client.connection_pool, SentinelConnectionPool)
        assert master_address(client) is None
    finally:
        client.close()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://h:1", "the master name is missing after the hosts"),
        ("redis+sentinel://h:1/", "the master name is missing after the hosts"),
        ("redis+sentinel://h/m", "sentinel 'h' must be HOST:PORT with a TCP port 1-65535"),
        ("redis+sentinel://h:0/m", "sentinel 'h:0' must be HOST:PORT with a TCP port 1-65535"),
        ("redis+sentinel://h:70000/m", "sentinel 'h:70000' must be HOST:PORT with a TCP port 1-65535"),
        ("redis+sentinel://h:1,,h:2/m", "the sentinel list has an empty entry"),
        ("redis+sentinel://:26379/m", "sentinel ':26379' has no host"),
        ("redis+sentinel://h:1/m/x", "the path must be /MASTER_NAME or /MASTER_NAME/DB with a numeric DB"),
        ("redis+sentinel://h:1/m/0/1", "the path must be /MASTER_NAME or /MASTER_NAME/DB with a numeric DB"),
        ("redis+sentinel://h:1/m m", "the master name may only hold letters, digits and '_.:-', got 'm m'"),
        ("redis+sentinel://h:1/m?db=2", "unknown query parameter 'db': only sentinel_username and "
                                        "sentinel_password are known"),
    ],
)  # fmt: skip
def test_malformed_sentinel_urls_are_refused_naming_redis_url(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"REDIS_URL": url, "HOME": "/nonexistent"})
    assert str(err.value) == f"REDIS_URL must be a Sentinel URL {FORM}: {problem}, got {url!r}"


def test_the_passwords_of_a_refused_url_are_masked() -> None:
    url = "redis+sentinel://app:hunter2@h:1/m/x?sentinel_password=sesame"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"REDIS_URL": url, "HOME": "/nonexistent"})
    assert "hunter2" not in str(err.value) and "sesame" not in str(err.value)
    assert str(err.value).endswith(", got 'redis+sentinel://app:***@h:1/m/x?sentinel_password=***'")


def test_the_passwords_of_a_good_url_never_show_in_the_settings() -> None:
    url = "redis+sentinel://:hunter2@h:1,h:2/m/0?sentinel_password=sesame"
    settings = Settings.from_env({"REDIS_URL": url, "HOME": "/nonexistent"})
    assert settings.redis_url == url
    assert "hunter2" not in repr(settings) and "sesame" not in repr(settings)
    assert "redis_url='redis+sentinel://:***@h:1,h:2/m/0?sentinel_password=***'" in repr(settings)


def test_redact_url_masks_query_passwords() -> None:
    assert redact_url("redis://h/0?password=x&db=1") == "redis://h/0?password=***&db=1"
    assert redact_url("redis://h/0?db=1") == "redis://h/0?db=1"


def test_the_cli_refuses_a_malformed_sentinel_url_with_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["ls"],
        env={"REDIS_URL": "redis+sentinel://:hunter2@h:1", "HOME": str(tmp_path),
             "PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_CONFIG": "",
             "DATABASE_URL": ""},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: REDIS_URL must be a Sentinel URL {FORM}: the master name is missing after the "
        "hosts, got 'redis+sentinel://:***@h:1'\n"
    )


def test_a_sentinel_client_follows_the_master_with_the_callers_options() -> None:
    client = redis_client("redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/svc/4?sentinel_password=sp",
                          socket_timeout=1.5, socket_connect_timeout=0.5, health_check_interval=10)  # fmt: skip
    try:
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "svc"
        kwargs = pool.connection_kwargs
        assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"],
                kwargs["health_check_interval"]) == (4, "pw", 1.5, 10)  # fmt: skip
        sentinels = pool.sentinel_manager.sentinels
        assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
        first = sentinels[0].connection_pool.connection_kwargs
        assert (first["password"], first["socket_connect_timeout"]) == ("sp", 0.5)
        assert master_address(client) is None  # not connected yet
    finally:
        client.close()


def test_rq_settings_for_rqs_command_line() -> None:
    assert rq_settings("redis://h:6379/2") == {"REDIS_URL": "redis://h:6379/2"}
    got = rq_settings("redis+sentinel://:pw@h1:1,h2:2/svc/3?sentinel_password=sp")
    assert got == {"SENTINEL": {
        "INSTANCES": [("h1", 1), ("h2", 2)], "MASTER_NAME": "svc", "DB": 3, "USERNAME": None,
        "PASSWORD": "pw", "SOCKET_TIMEOUT": 5.0, "SSL": False,
        "SENTINEL_KWARGS": {"socket_timeout": 5.0, "ssl": False, "password": "sp"},
    }}  # fmt: skip


def test_the_sentinels_are_never_waited_for_long() -> None:
    """RQ's client sets no timeout: the sentinels still get one."""
    client = redis_client("redis+sentinel://127.0.0.1:1/svc")
    try:
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        sentinel = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
        assert (sentinel["socket_timeout"], sentinel["socket_connect_timeout"]) == (5.0, 5.0)
        assert pool.connection_kwargs.get("socket_timeout") is None  # RQ sets the master's
    finally:
        client.close()

"""Settings: defaults, environment, TOML, validation messages, masking."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from provisioner.config import Settings, default_data_dir, env_var, redact_url, stream_limit
from provisioner.errors import ConfigError

HOME = "/home/op"


def settings(toml_path: Path | None = None, /, **env: str) -> Settings:
    return Settings.from_env({"HOME": HOME, **env}, toml_path=toml_path)


@pytest.fixture(autouse=True)
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # The data dir default depends on the uid; tests run as root under scripts/test.
    monkeypatch.setattr("os.geteuid", lambda: 1000)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "provisioner.toml"
    path.write_text(text)
    return path


def test_defaults_work_out_of_the_box() -> None:
    s = settings()
    data = Path(HOME, ".local/share/lxc-provisioner")
    assert s.data_dir == data
    assert s.database_url == f"sqlite:///{data}/provisioner.db"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.secret_key is None
    assert s.secret_key_file == data / "secret.key"
    assert s.queue_name == "provisioning"
    assert s.job_timeout == 3600
    assert (s.retry_max_attempts, s.retry_base_delay, s.retry_max_delay) == (5, 2.0, 60.0)
    assert (s.lease_duration, s.lease_renew_interval) == (15.0, 3.0)
    assert s.lease_renew_interval < s.lease_duration
    assert s.log_level == "INFO"
    assert (s.web_host, s.web_port) == ("127.0.0.1", 8000)
    assert s.config_file is None


def test_root_uses_var_lib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    s = settings()
    assert s.data_dir == Path("/var/lib/lxc-provisioner")
    assert s.database_url == "sqlite:////var/lib/lxc-provisioner/provisioner.db"


def test_xdg_data_home_is_respected() -> None:
    assert default_data_dir({"HOME": HOME, "XDG_DATA_HOME": "/xdg"}) == Path("/xdg/lxc-provisioner")


def test_data_dir_moves_the_database_and_key_file() -> None:
    s = settings(PROVISIONER_DATA_DIR="/srv/prov")
    assert s.database_url == "sqlite:////srv/prov/provisioner.db"
    assert s.secret_key_file == Path("/srv/prov/secret.key")


def test_environment_sets_every_kind_of_value() -> None:
    s = settings(
        DATABASE_URL="postgresql+psycopg://prov@db/prov",
        REDIS_URL="redis://cache:6380/2",
        PROVISIONER_SECRET_KEY="k" * 44,
        PROVISIONER_SECRET_KEY_FILE="/etc/prov/key",
        PROVISIONER_QUEUE_NAME="prov-high",
        PROVISIONER_JOB_TIMEOUT=" 7200 ",
        PROVISIONER_RETRY_MAX_ATTEMPTS="3",
        PROVISIONER_RETRY_BASE_DELAY="0.5",
        PROVISIONER_RETRY_MAX_DELAY="30",
        PROVISIONER_LEASE_DURATION="2",
        PROVISIONER_LEASE_RENEW_INTERVAL="0.5",
        PROVISIONER_SSH_CONNECT_TIMEOUT="5",
        PROVISIONER_IP_TIMEOUT="6",
        PROVISIONER_TASK_TIMEOUT="7.5",
        PROVISIONER_LOG_LEVEL="debug",
        PROVISIONER_WEB_HOST="0.0.0.0",
        PROVISIONER_WEB_PORT="8080",
    )
    assert s.database_url == "postgresql+psycopg://prov@db/prov"
    assert s.redis_url == "redis://cache:6380/2"
    assert s.secret_key == "k" * 44
    assert s.secret_key_file == Path("/etc/prov/key")
    assert s.queue_name == "prov-high"
    assert s.job_timeout == 7200
    assert (s.retry_max_attempts, s.retry_base_delay, s.retry_max_delay) == (3, 0.5, 30.0)
    assert (s.lease_duration, s.lease_renew_interval) == (2.0, 0.5)
    assert (s.ssh_connect_timeout, s.ip_timeout, s.task_timeout) == (5.0, 6.0, 7.5)
    assert s.log_level == "DEBUG"
    assert (s.web_host, s.web_port) == ("0.0.0.0", 8080)


def test_every_field_but_config_file_has_a_variable() -> None:
    names = {f.name for f in dataclasses.fields(Settings)} - {"config_file"}
    env = {
        env_var(n): v
        for n, v in {
            "data_dir": "/d",
            "database_url": "sqlite:////x.db",
            "redis_url": "redis://r/1",
            "secret_key": "s",
            "secret_key_file": "/k",
            "queue_name": "q",
            "log_level": "ERROR",
            "web_host": "h",
            "web_cookie_secure": "yes",
            "spread_strict": "no",
            "public_url": "https://provisioner.example",
            "bind_mount_allow": "/srv/shared:/mnt/data",
        }.items()
    }
    numeric = names - {n for n in names if env_var(n) in env}
    env.update({env_var(n): "9" for n in numeric})
    env[env_var("lease_renew_interval")] = "1"
    env[env_var("web_relay_max_streams")] = "4"  # fewer than the 9 threads
    s = settings(**env)
    defaults = settings()
    assert all(getattr(s, n) != getattr(defaults, n) for n in names)


def test_plain_postgresql_urls_use_psycopg3() -> None:
    assert settings(DATABASE_URL="postgresql://u@h/d").database_url == "postgresql+psycopg://u@h/d"
    assert settings(DATABASE_URL="postgres://u@h/d").database_url == "postgresql+psycopg://u@h/d"


def test_empty_variables_count_as_unset() -> None:
    assert settings(PROVISIONER_JOB_TIMEOUT="", REDIS_URL=" ") == settings()


def test_toml_file_and_env_precedence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'job_timeout = 120\nlog_level = "warning"\nretry_base_delay = 1\n'
        'redis_url = "redis://file:6379/0"\ndata_dir = "state"\n',
    )
    s = settings(path, PROVISIONER_JOB_TIMEOUT="300")
    assert s.job_timeout == 300  # the environment wins
    assert s.log_level == "WARNING"
    assert s.retry_base_delay == 1.0
    assert s.redis_url == "redis://file:6379/0"
    assert s.data_dir == tmp_path / "state"  # relative to the file
    assert s.database_url == f"sqlite:///{tmp_path}/state/provisioner.db"
    assert s.config_file == path


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "web_port = 9000\n")
    assert settings(PROVISIONER_CONFIG=str(path)).web_port == 9000
    assert settings(PROVISIONER_CONFIG=str(path)).config_file == path


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "job_timout = 5\n")
    with pytest.raises(ConfigError) as info:
        settings(path)
    assert info.value.message == f"unknown setting 'job_timout' in {path}"
    assert "job_timeout" in (info.value.hint or "")


def test_bad_value_in_file_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "lease_duration = -1\n")
    with pytest.raises(ConfigError) as info:
        settings(path)
    assert str(info.value) == (
        f"lease_duration in {path} must be a positive number of seconds, got -1"
    )


def test_tables_in_file_are_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'web'"):
        settings(write(tmp_path, "[web]\nport = 1\n"))


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "job_timeout = = 3\n")
    with pytest.raises(ConfigError, match=rf"config file {path} is not valid TOML: .*line 1"):
        settings(path)
    with pytest.raises(ConfigError, match=r"config file /nonexistent.toml does not exist"):
        settings(PROVISIONER_CONFIG="/nonexistent.toml")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROVISIONER_JOB_TIMEOUT": "abc"}, "PROVISIONER_JOB_TIMEOUT must be a positive integer, got 'abc'"),
        ({"PROVISIONER_JOB_TIMEOUT": "0"}, "PROVISIONER_JOB_TIMEOUT must be a positive integer, got '0'"),
        ({"PROVISIONER_JOB_TIMEOUT": "1.5"}, "PROVISIONER_JOB_TIMEOUT must be a positive integer, got '1.5'"),
        ({"PROVISIONER_RETRY_MAX_ATTEMPTS": "-2"}, "PROVISIONER_RETRY_MAX_ATTEMPTS must be a positive integer, got '-2'"),
        ({"PROVISIONER_RETRY_BASE_DELAY": "soon"}, "PROVISIONER_RETRY_BASE_DELAY must be a positive number of seconds, got 'soon'"),
        ({"PROVISIONER_LEASE_DURATION": "nan"}, "PROVISIONER_LEASE_DURATION must be a positive number of seconds, got 'nan'"),
        ({"PROVISIONER_TASK_TIMEOUT": "inf"}, "PROVISIONER_TASK_TIMEOUT must be a positive number of seconds, got 'inf'"),
        ({"PROVISIONER_IP_TIMEOUT": "0"}, "PROVISIONER_IP_TIMEOUT must be a positive number of seconds, got '0'"),
        ({"PROVISIONER_WEB_PORT": "70000"}, "PROVISIONER_WEB_PORT must be a TCP port (1-65535), got '70000'"),
        ({"PROVISIONER_LOG_LEVEL": "loud"}, "PROVISIONER_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'"),
        ({"PROVISIONER_QUEUE_NAME": "a queue"}, "PROVISIONER_QUEUE_NAME may only contain letters, digits and '_.:-', got 'a queue'"),
        ({"DATABASE_URL": "mysql://u:hunter2@db/x"}, "DATABASE_URL must be a sqlite:///PATH or postgresql+psycopg://USER@HOST/DB URL, got 'mysql://u:***@db/x'"),
        ({"DATABASE_URL": "provisioner.db"}, "DATABASE_URL must be a sqlite:///PATH or postgresql+psycopg://USER@HOST/DB URL, got 'provisioner.db'"),
        ({"REDIS_URL": "http://u:hunter2@r"}, "REDIS_URL must be a redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel:// URL, got 'http://u:***@r'"),
        ({"PROVISIONER_RETRY_BASE_DELAY": "90"}, "PROVISIONER_RETRY_BASE_DELAY (90) must not exceed the default PROVISIONER_RETRY_MAX_DELAY (60)"),
        ({"PROVISIONER_LEASE_RENEW_INTERVAL": "60"}, "PROVISIONER_LEASE_RENEW_INTERVAL (60) must be shorter than the default PROVISIONER_LEASE_DURATION (15), or leases expire while their holder is alive"),
        ({"PROVISIONER_WEB_LOGIN_MAX_FAILURES": "0"}, "PROVISIONER_WEB_LOGIN_MAX_FAILURES must be a positive integer, got '0'"),
        ({"PROVISIONER_WEB_LOGIN_MAX_FAILURES_PER_IP": "many"}, "PROVISIONER_WEB_LOGIN_MAX_FAILURES_PER_IP must be a positive integer, got 'many'"),
        ({"PROVISIONER_WEB_LOGIN_WINDOW": "-5"}, "PROVISIONER_WEB_LOGIN_WINDOW must be a positive number of seconds, got '-5'"),
        ({"PROVISIONER_WEB_SESSION_LIFETIME": "12h"}, "PROVISIONER_WEB_SESSION_LIFETIME must be a positive number of seconds, got '12h'"),
        ({"PROVISIONER_WEB_PVE_CONNECT_TIMEOUT": "0"}, "PROVISIONER_WEB_PVE_CONNECT_TIMEOUT must be a positive number of seconds, got '0'"),
        ({"PROVISIONER_WEB_PVE_READ_TIMEOUT": "inf"}, "PROVISIONER_WEB_PVE_READ_TIMEOUT must be a positive number of seconds, got 'inf'"),
        ({"PROVISIONER_WEB_RELAY_PING_INTERVAL": "never"}, "PROVISIONER_WEB_RELAY_PING_INTERVAL must be a positive number of seconds, got 'never'"),
        ({"PROVISIONER_WEB_RELAY_STALL_TIMEOUT": "0"}, "PROVISIONER_WEB_RELAY_STALL_TIMEOUT must be a positive number of seconds, got '0'"),
        ({"PROVISIONER_WEB_RELAY_MAX_STREAMS": "0"}, "PROVISIONER_WEB_RELAY_MAX_STREAMS must be a positive integer, got '0'"),
        ({"PROVISIONER_WEB_RELAY_MAX_STREAMS": "5000"}, "PROVISIONER_WEB_RELAY_MAX_STREAMS must be between 1 and 1023, got '5000'"),
        ({"PROVISIONER_WEB_METRICS_MAX_AGE": "-1"}, "PROVISIONER_WEB_METRICS_MAX_AGE must be 0 or a positive number of seconds, got '-1'"),
        ({"PROVISIONER_WEB_METRICS_MAX_AGE": "nan"}, "PROVISIONER_WEB_METRICS_MAX_AGE must be 0 or a positive number of seconds, got 'nan'"),
        ({"PROVISIONER_WEB_RELAY_MAX_STREAMS": "128"}, "PROVISIONER_WEB_RELAY_MAX_STREAMS (128) must be fewer than the default PROVISIONER_WEB_THREADS (128): every open event stream holds a thread, and pages and the API need some too"),
        ({"PROVISIONER_WEB_RELAY_MAX_STREAMS": "16", "PROVISIONER_WEB_THREADS": "16"}, "PROVISIONER_WEB_RELAY_MAX_STREAMS (16) must be fewer than PROVISIONER_WEB_THREADS (16): every open event stream holds a thread, and pages and the API need some too"),
    ],
)  # fmt: skip
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**env)
    assert str(info.value) == message


def test_booleans_are_not_integers_in_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"web_port in .* must be a positive integer, got True"):
        settings(write(tmp_path, "web_port = true\n"))


def test_secrets_are_masked_in_repr_and_errors(tmp_path: Path) -> None:
    s = settings(
        PROVISIONER_SECRET_KEY="topsecretkey",
        DATABASE_URL="postgresql+psycopg://prov:dbpass@db/prov",
        REDIS_URL="redis://:redispass@cache:6379/0",
    )
    for text in (repr(s), str(s)):
        assert "topsecretkey" not in text
        assert "dbpass" not in text
        assert "redispass" not in text
        assert "secret_key='***'" in text
        assert "postgresql+psycopg://prov:***@db/prov" in text
    with pytest.raises(ConfigError) as info:
        settings(write(tmp_path, "secret_key = 12345\n"))
    assert "12345" not in str(info.value)


def test_repr_shows_unset_secret_as_none() -> None:
    assert "secret_key=None" in repr(settings())


def test_redact_url() -> None:
    assert redact_url("postgresql+psycopg://u:p@h:5432/d") == "postgresql+psycopg://u:***@h:5432/d"
    assert redact_url("redis://:p@h/0") == "redis://:***@h/0"
    assert redact_url("sqlite:////x/y.db") == "sqlite:////x/y.db"
    assert redact_url("redis://u@h/0") == "redis://u@h/0"


def test_settings_are_frozen() -> None:
    s = settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.job_timeout = 1  # type: ignore[misc]


def test_web_settings() -> None:
    s = settings(PROVISIONER_WEB_THREADS="64", PROVISIONER_WEB_WORKERS="2",
                 PROVISIONER_WEB_PROXY_HOPS="1", PROVISIONER_WEB_COOKIE_SECURE="on")  # fmt: skip
    assert (s.web_threads, s.web_workers, s.web_proxy_hops, s.web_cookie_secure) == (64, 2, 1, True)
    defaults = settings()
    assert (defaults.web_threads, defaults.web_workers, defaults.web_proxy_hops,
            defaults.web_cookie_secure) == (128, 1, 0, False)  # fmt: skip
    for name, value, message in (
        ("PROVISIONER_WEB_THREADS", "2", "between 4 and 1024"),
        ("PROVISIONER_WEB_WORKERS", "0", "must be a positive integer"),
        ("PROVISIONER_WEB_PROXY_HOPS", "-1", "a whole number (0 or more)"),
        ("PROVISIONER_WEB_COOKIE_SECURE", "maybe", "must be true or false"),
    ):
        with pytest.raises(ConfigError, match=name) as err:
            settings(**{name: value})
        assert message in str(err.value)


def test_web_tunables_defaults() -> None:
    s = settings()
    assert s.web_session_lifetime == 12 * 3600
    assert (s.web_login_max_failures, s.web_login_max_failures_per_user,
            s.web_login_max_failures_per_ip, s.web_login_window) == (5, 20, 50, 300.0)  # fmt: skip
    assert (s.web_pve_connect_timeout, s.web_pve_read_timeout) == (3.0, 15.0)
    assert (s.web_relay_ping_interval, s.web_relay_stall_timeout) == (25.0, 60.0)
    assert s.web_relay_max_streams is None
    assert s.relay_stream_limit == stream_limit(128) == 112  # an eighth of the threads kept
    assert s.web_metrics_max_age == 5.0


def test_web_tunables_from_the_environment() -> None:
    s = settings(
        PROVISIONER_WEB_SESSION_LIFETIME="3600",
        PROVISIONER_WEB_LOGIN_MAX_FAILURES="3",
        PROVISIONER_WEB_LOGIN_MAX_FAILURES_PER_USER="10",
        PROVISIONER_WEB_LOGIN_MAX_FAILURES_PER_IP="30",
        PROVISIONER_WEB_LOGIN_WINDOW="60",
        PROVISIONER_WEB_PVE_CONNECT_TIMEOUT="1.5",
        PROVISIONER_WEB_PVE_READ_TIMEOUT="30",
        PROVISIONER_WEB_RELAY_PING_INTERVAL="10",
        PROVISIONER_WEB_RELAY_STALL_TIMEOUT="120",
        PROVISIONER_WEB_RELAY_MAX_STREAMS="100",
        PROVISIONER_WEB_METRICS_MAX_AGE="0",
    )
    assert s.web_session_lifetime == 3600.0
    assert (s.web_login_max_failures, s.web_login_max_failures_per_user,
            s.web_login_max_failures_per_ip, s.web_login_window) == (3, 10, 30, 60.0)  # fmt: skip
    assert (s.web_pve_connect_timeout, s.web_pve_read_timeout) == (1.5, 30.0)
    assert (s.web_relay_ping_interval, s.web_relay_stall_timeout) == (10.0, 120.0)
    assert s.web_relay_max_streams == s.relay_stream_limit == 100
    assert s.web_metrics_max_age == 0.0  # rebuilt at every scrape


def test_web_tunables_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "web_login_window = 90\nweb_relay_max_streams = 20\n"
                           "web_threads = 32\nweb_metrics_max_age = 2.5\n")  # fmt: skip
    s = settings(path, PROVISIONER_WEB_LOGIN_WINDOW="45")
    assert s.web_login_window == 45.0  # the environment wins
    assert (s.web_relay_max_streams, s.web_threads, s.web_metrics_max_age) == (20, 32, 2.5)
    assert settings(write(tmp_path, "web_threads = 32\n")).relay_stream_limit == 28


def test_bad_web_tunable_in_the_file_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "web_metrics_max_age = false\n")  # a boolean is not 0
    with pytest.raises(ConfigError) as info:
        settings(path)
    assert str(info.value) == (
        f"web_metrics_max_age in {path} must be 0 or a positive number of seconds, got False"
    )

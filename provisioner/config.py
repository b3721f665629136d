"""Settings: one frozen dataclass, built once from the environment and an
optional TOML file.

Every setting has a default that works for the demo.  A TOML file (flat keys
named like the fields below) may override the defaults, and environment
variables override the file.  Empty environment variables count as unset, so
``FOO=`` lines in a systemd ``EnvironmentFile`` do no harm.

| field | environment variable | default |
|---|---|---|
| data_dir | PROVISIONER_DATA_DIR | ~/.local/share/lxc-provisioner (root: /var/lib/lxc-provisioner) |
| database_url | DATABASE_URL | sqlite:///<data_dir>/provisioner.db |
| redis_url | REDIS_URL | redis://127.0.0.1:6379/0 |
| secret_key | PROVISIONER_SECRET_KEY | unset (the key file is used) |
| secret_key_file | PROVISIONER_SECRET_KEY_FILE | <data_dir>/secret.key |
| templates_dir | PROVISIONER_TEMPLATES_DIR | the shipped templates_lxc/ |
| ... | PROVISIONER_<FIELD> | see the dataclass |
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from provisioner.errors import ConfigError
from provisioner.redis_url import RedisUrlError, check_redis_url

CONFIG_ENV = "PROVISIONER_CONFIG"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MASK = "***"
# The templates that ship with the product, beside the packages.
SHIPPED_TEMPLATES = Path(__file__).resolve().parent.parent / "templates_lxc"
# Fields whose values never appear in repr(), str() or error messages.
_SECRET_FIELDS = frozenset({"secret_key"})
# Fields that are URLs which may carry a password.
_URL_FIELDS = frozenset({"database_url", "redis_url"})
# a URL's query parameters holding a secret (redis+sentinel's sentinel_password)
_QUERY_SECRET = re.compile(r"((?:^|&)[^=&]*password=)[^&]*", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    """Everything the worker, the web app and the CLI need to know.

    Durations are in seconds.  Build it with :meth:`from_env`; tests may
    construct it directly or use :func:`dataclasses.replace`.
    """

    data_dir: Path
    database_url: str
    secret_key_file: Path
    templates_dir: Path = field(default_factory=lambda: SHIPPED_TEMPLATES)
    redis_url: str = "redis://127.0.0.1:6379/0"
    secret_key: str | None = None
    queue_name: str = "provisioning"
    job_timeout: int = 3600
    retry_max_attempts: int = 5  # total attempts of a transient failure, the first included
    retry_base_delay: float = 2.0
    retry_max_delay: float = 60.0
    # a dead worker's run is handed on within lease_duration + one renew
    # interval; five renewals per lease ride out a busy database
    lease_duration: float = 15.0
    lease_renew_interval: float = 3.0
    ssh_connect_timeout: float = 180.0  # until SSH answers after start
    ip_timeout: float = 120.0  # until DHCP gives the container an address
    task_timeout: float = 600.0  # until a PVE task stops
    node_wait: float = 900.0  # a run waits this long for an unreachable node, then fails
    # the safety snapshots (auto-*) a container keeps after changes that worked
    auto_snapshots_keep: int = 3
    # client sandboxes (docs/sandboxes.md): their life, limits (0: none) and import
    sandbox_ttl: float = 7 * 86400.0  # when a request gives no --ttl
    sandbox_warn_before: float = 86400.0  # the expiring event comes this long before
    sandbox_max_per_client: int = 3  # live sandboxes of one client
    sandbox_max_per_owner: int = 10  # live sandboxes of one owner
    sandbox_media_max_bytes: int = 64 * 1024 * 1024  # a larger media file is skipped, warned
    sandbox_expiry_interval: int = 60  # seconds between the scheduler's expiry rounds
    log_level: str = "INFO"
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    web_workers: int = 1  # gunicorn processes
    web_threads: int = 128  # per process; each open event stream holds one
    web_proxy_hops: int = 0  # reverse proxies in front that set X-Forwarded-For/-Proto/-Host
    web_cookie_secure: bool = False  # always mark the session cookie Secure (TLS requests do)
    web_session_lifetime: float = 43200.0  # a dashboard login lasts 12 hours
    # failed logins counted within the window: per username and address, per
    # username from anywhere, per address for any username
    web_login_max_failures: int = 5
    web_login_max_failures_per_user: int = 20
    web_login_max_failures_per_ip: int = 50
    web_login_window: float = 300.0
    # the web app's PVE calls (live status, storages, checks at submit) answer a
    # browser: short, unlike the worker's
    web_pve_connect_timeout: float = 3.0
    web_pve_read_timeout: float = 15.0
    web_relay_ping_interval: float = 25.0  # keeps idle event streams open through proxies
    web_relay_stall_timeout: float = 60.0  # a client that takes nothing this long is dropped
    # open event streams per process; None: all but an eighth of web_threads
    # (at least 2, at most 16 kept for pages and the API), see relay_stream_limit
    web_relay_max_streams: int | None = None
    web_metrics_max_age: float = 5.0  # /metrics is rebuilt at most this often (0: every scrape)
    # the dashboard's address as people and webhook receivers reach it (links
    # in webhook payloads); None: http://web_host:web_port
    public_url: str | None = None
    # the waits between a webhook delivery's attempts (seconds): one more
    # attempt than waits; 10 s, 30 s, 2 min, 10 min, 30 min
    webhook_retry_intervals: tuple[int, ...] = (10, 30, 120, 600, 1800)
    webhook_timeout: float = 10.0  # one attempt: connecting, and waiting for the answer
    # host path prefixes a container may bind-mount (docs/configuration.md); empty: none
    bind_mount_allow: tuple[str, ...] = ()
    # when every node that fits holds a member of a request's spread group:
    # refuse the request (True) or place it where the group has the fewest (False)
    spread_strict: bool = True
    config_file: Path | None = None  # the TOML file the settings came from, if any

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value is not None:
                parts.append(f"{f.name}={_MASK!r}")
            elif f.name in _URL_FIELDS:
                parts.append(f"{f.name}={redact_url(value)!r}")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    __str__ = __repr__

    @property
    def relay_stream_limit(self) -> int:
        """How many event streams a web process may hold at once."""
        return self.web_relay_max_streams or stream_limit(self.web_threads)

    @property
    def links_base(self) -> str:
        """Where links to the dashboard and the API start (no trailing slash)."""
        if self.public_url:
            return self.public_url
        host = f"[{self.web_host}]" if ":" in self.web_host else self.web_host
        return f"http://{host}:{self.web_port}"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] = os.environ, toml_path: str | Path | None = None
    ) -> Settings:
        """Build the settings from environment variables and a TOML file.

        Args:
            environ: the environment to read (``os.environ`` by default).
            toml_path: a TOML file; defaults to ``$PROVISIONER_CONFIG``, and
                without either no file is read.

        Returns:
            The validated settings.

        Raises:
            ConfigError: a value is malformed or out of range (naming the
                variable or the key and file), the file cannot be read or
                parsed, or it holds an unknown key.
        """
        if toml_path is None and environ.get(CONFIG_ENV):
            toml_path = environ[CONFIG_ENV]
        config_file = Path(toml_path).expanduser().absolute() if toml_path else None
        raw: dict[str, tuple[object, str]] = {}  # field -> (value, where it came from)
        from_file: set[str] = set()
        if config_file is not None:
            for key, value in _read_toml(config_file).items():
                raw[key] = (value, f"{key} in {config_file}")
                from_file.add(key)
        for name in _PARSERS:
            env_name = env_var(name)
            if environ.get(env_name, "").strip():
                raw[name] = (environ[env_name], env_name)
                from_file.discard(name)

        values: dict[str, Any] = {name: _PARSERS[name](v, w) for name, (v, w) in raw.items()}
        for name in ("data_dir", "secret_key_file", "templates_dir"):
            # Relative paths in the file are relative to the file, not to
            # whatever directory the service happens to start in.
            if name in from_file and config_file and not values[name].is_absolute():
                values[name] = config_file.parent / values[name]
            elif name in values:
                values[name] = values[name].absolute()
        data_dir: Path = values.setdefault("data_dir", default_data_dir(environ))
        values.setdefault("database_url", f"sqlite:///{data_dir / 'provisioner.db'}")
        values.setdefault("secret_key_file", data_dir / "secret.key")
        settings = cls(config_file=config_file, **values)
        _check_consistency(settings, raw)
        return settings


def stream_limit(threads: int) -> int:
    """The default event stream limit of a web process: all but an eighth
    of its threads (at least 2, at most 16), kept for everything else."""
    return threads - min(16, max(2, threads // 8))


def env_var(field_name: str) -> str:
    """Return the environment variable that sets a field (``DATABASE_URL``,
    ``REDIS_URL``, otherwise ``PROVISIONER_<FIELD>``)."""
    if field_name in ("database_url", "redis_url"):
        return field_name.upper()
    return f"PROVISIONER_{field_name.upper()}"


def default_data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Return the default data directory: ``/var/lib/lxc-provisioner`` for
    root, else ``$XDG_DATA_HOME/lxc-provisioner`` (``~/.local/share/...``)."""
    if os.geteuid() == 0:
        return Path("/var/lib/lxc-provisioner")
    if environ.get("XDG_DATA_HOME"):
        return Path(environ["XDG_DATA_HOME"]).absolute() / "lxc-provisioner"
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    return home / ".local" / "share" / "lxc-provisioner"


def redact_url(url: str) -> str:
    """Return ``url`` with its passwords (if any) replaced by ``***``: the
    user part's and a query's ``...password=`` (``sentinel_password``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK  # unparseable: better to show nothing than a secret
    if parts.query:
        query = _QUERY_SECRET.sub(rf"\g<1>{_MASK}", parts.query)
        parts = parts._replace(query=query)
        url = urlunsplit(parts)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{_MASK}@{host}"))


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for key in data:
        if key not in _PARSERS:
            raise ConfigError(
                f"unknown setting {key!r} in {path}",
                hint=f"known settings: {', '.join(sorted(_PARSERS))}",
            )
    return data


def _check_consistency(s: Settings, raw: Mapping[str, tuple[object, str]]) -> None:
    def describe(name: str) -> str:
        value = f"({getattr(s, name):g})"
        return f"{raw[name][1]} {value}" if name in raw else f"the default {env_var(name)} {value}"

    if s.retry_base_delay > s.retry_max_delay:
        raise ConfigError(
            f"{describe('retry_base_delay')} must not exceed {describe('retry_max_delay')}"
        )
    if s.lease_renew_interval >= s.lease_duration:
        raise ConfigError(
            f"{describe('lease_renew_interval')} must be shorter than "
            f"{describe('lease_duration')}, or leases expire while their holder is alive"
        )
    if s.web_relay_max_streams is not None and s.web_relay_max_streams >= s.web_threads:
        raise ConfigError(
            f"{describe('web_relay_max_streams')} must be fewer than {describe('web_threads')}: "
            "every open event stream holds a thread, and pages and the API need some too"
        )


# -- parsers: (raw value, where it came from) -> typed value, or ConfigError --


def _positive_int(value: object, where: str) -> int:
    parsed: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        parsed = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\+?\d+\s*", value):
        parsed = int(value)
    if parsed is None or parsed <= 0:
        raise ConfigError(f"{where} must be a positive integer, got {value!r}")
    return parsed


def _number(value: object) -> float | None:
    """A finite number from TOML or a variable, else None (booleans are not numbers)."""
    parsed: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        parsed = float(value)
    elif isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            parsed = None
    return parsed if parsed is not None and math.isfinite(parsed) else None


def _positive_number(value: object, where: str) -> float:
    parsed = _number(value)
    if parsed is None or parsed <= 0:
        raise ConfigError(f"{where} must be a positive number of seconds, got {value!r}")
    return parsed


def _seconds_or_zero(value: object, where: str) -> float:
    parsed = _number(value)
    if parsed is None or parsed < 0:
        raise ConfigError(f"{where} must be 0 or a positive number of seconds, got {value!r}")
    return parsed


def _count(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\+?\d+\s*", value):
        return int(value)
    raise ConfigError(f"{where} must be a whole number (0 or more), got {value!r}")


def _bounded(low: int, high: int) -> Callable[[object, str], int]:
    def parse(value: object, where: str) -> int:
        number = _positive_int(value, where)
        if not low <= number <= high:
            raise ConfigError(f"{where} must be between {low} and {high}, got {value!r}")
        return number

    return parse


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{where} must be true or false (1/0, yes/no, on/off), got {value!r}")


def _port(value: object, where: str) -> int:
    port = _positive_int(value, where)
    if port > 65535:
        raise ConfigError(f"{where} must be a TCP port (1-65535), got {value!r}")
    return port


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
    return value.strip()


def _secret(value: object, where: str) -> str:
    # Never echo the value: it is a secret even when it is malformed.
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string")
    return value.strip()


def _path(value: object, where: str) -> Path:
    return Path(_text(value, where)).expanduser()


def _queue_name(value: object, where: str) -> str:
    name = _text(value, where)
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
        raise ConfigError(f"{where} may only contain letters, digits and '_.:-', got {value!r}")
    return name


def _log_level(value: object, where: str) -> str:
    level = _text(value, where).upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{where} must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _database_url(value: object, where: str) -> str:
    url = _text(value, where)
    scheme, sep, rest = url.partition("://")
    # psycopg 3 is the PostgreSQL driver we ship; plain postgresql:// would
    # make SQLAlchemy look for psycopg2.
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    if sep and scheme == "postgresql+psycopg" and rest:
        return url
    if sep and scheme == "sqlite":
        return url
    raise ConfigError(
        f"{where} must be a sqlite:///PATH or postgresql+psycopg://USER@HOST/DB URL, "
        f"got {redact_url(url)!r}"
    )


def _redis_url(value: object, where: str) -> str:
    url = _text(value, where)
    try:
        check_redis_url(url)
    except RedisUrlError as exc:
        raise ConfigError(f"{where} {exc}, got {redact_url(url)!r}") from None
    return url


def _public_url(value: object, where: str) -> str:
    url = _text(value, where).rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # a bad port raises
    except ValueError:
        raise ConfigError(f"{where} must be an http:// or https:// URL, got {value!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where} must be an http:// or https:// URL, got {value!r}")
    if "@" in parts.netloc:
        raise ConfigError(f"{where} must not hold a user or password, got {redact_url(url)!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where} must have no query or fragment, got {value!r}")
    return url


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def _intervals(value: object, where: str) -> tuple[int, ...]:
    """``10,30,2m,10m,30m`` (or a TOML list of seconds): whole seconds, 1 or more each."""
    items = value if isinstance(value, list) else str(value).split(",")
    parsed: list[int] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            seconds: int | None = item
        else:
            match = re.fullmatch(r"\s*(\d+)\s*([smh]?)\s*", str(item))
            seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)] if match else None
        if seconds is None or seconds < 1:
            raise ConfigError(f"{where} must be a comma-separated list of waits (whole seconds, "
                              f"or with s, m or h: 10,30,2m), got {value!r}")  # fmt: skip
        parsed.append(seconds)
    if not parsed or len(parsed) > 20:
        raise ConfigError(f"{where} must list 1 to 20 waits, got {value!r}")
    return tuple(parsed)


def _path_prefixes(value: object, where: str) -> tuple[str, ...]:
    """``/srv/shared:/mnt/data`` (or commas, or a TOML list): absolute host
    directories, normalised; ``/`` alone is refused (the whole host)."""
    items = value if isinstance(value, list) else re.split(r"[:,]", str(value))
    prefixes: list[str] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if not text.startswith("/") or ".." in text.split("/"):
            raise ConfigError(f"{where} must list absolute host paths without '..' (separated by "
                              f"':' or ','), got {text!r}")  # fmt: skip
        normal = posixpath.normpath(text)
        if normal in ("/", "//"):
            raise ConfigError(f"{where} must not allow '/' (the whole host); list directories")
        prefixes.append(normal)
    return tuple(dict.fromkeys(prefixes))


_PARSERS: dict[str, Callable[[object, str], Any]] = {
    "data_dir": _path,
    "database_url": _database_url,
    "redis_url": _redis_url,
    "secret_key": _secret,
    "secret_key_file": _path,
    "templates_dir": _path,
    "queue_name": _queue_name,
    "job_timeout": _positive_int,
    "retry_max_attempts": _positive_int,
    "retry_base_delay": _positive_number,
    "retry_max_delay": _positive_number,
    "lease_duration": _positive_number,
    "lease_renew_interval": _positive_number,
    "ssh_connect_timeout": _positive_number,
    "ip_timeout": _positive_number,
    "task_timeout": _positive_number,
    "node_wait": _positive_number,
    "auto_snapshots_keep": _count,
    "sandbox_ttl": _positive_number,
    "sandbox_warn_before": _seconds_or_zero,
    "sandbox_max_per_client": _count,
    "sandbox_max_per_owner": _count,
    "sandbox_media_max_bytes": _positive_int,
    "sandbox_expiry_interval": _bounded(1, 86400),
    "log_level": _log_level,
    "web_host": _text,
    "web_port": _port,
    "web_workers": _bounded(1, 64),
    "web_threads": _bounded(4, 1024),
    "web_proxy_hops": _count,
    "web_cookie_secure": _flag,
    "web_session_lifetime": _positive_number,
    "web_login_max_failures": _positive_int,
    "web_login_max_failures_per_user": _positive_int,
    "web_login_max_failures_per_ip": _positive_int,
    "web_login_window": _positive_number,
    "web_pve_connect_timeout": _positive_number,
    "web_pve_read_timeout": _positive_number,
    "web_relay_ping_interval": _positive_number,
    "web_relay_stall_timeout": _positive_number,
    "web_relay_max_streams": _bounded(1, 1023),
    "web_metrics_max_age": _seconds_or_zero,
    "public_url": _public_url,
    "webhook_retry_intervals": _intervals,
    "webhook_timeout": _positive_number,
    "bind_mount_allow": _path_prefixes,
    "spread_strict": _flag,
}

"""Redis clients from ``REDIS_URL``: the one place every process makes them.

``REDIS_URL`` names either one Redis (``redis://``, ``rediss://``,
``unix://``: redis-py's ``from_url``) or a Sentinel service::

    redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]
                     [?sentinel_username=U&sentinel_password=P]

The hosts are the sentinels; ``USER``/``PASSWORD`` are the master's (and
replicas') ``requirepass``/ACL user, ``sentinel_username`` and
``sentinel_password`` the sentinels' own (most setups give them none).
``rediss+sentinel://`` talks TLS to the sentinels and the master.  A
Sentinel client asks the sentinels where the master is whenever it opens a
connection, and drops connections to a master that was demoted, so every
client follows a failover by itself: a command fails for the seconds the
failover takes (``RedisError``), and the next one reaches the new master.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:  # redis is imported by the commands that use it only (cli/main.py)
    from redis import Redis

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
PLAIN_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_QUERY = ("sentinel_username", "sentinel_password")
SENTINEL_TIMEOUT = 5.0  # seconds, for a client that sets no timeout of its own
_MASTER_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


SENTINEL_FORM = "redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]"


class RedisUrlError(ValueError):
    """A malformed ``REDIS_URL``; the message (which follows the setting's
    name: "REDIS_URL must be ...") never holds a password."""


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False

    def __repr__(self) -> str:  # never the passwords
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"SentinelTarget({hosts}/{self.master_name}/{self.db}, ssl={self.ssl})"


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names a Sentinel service (``redis+sentinel://``)."""
    return url.partition("://")[0].lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse a ``redis+sentinel://`` URL (see the module doc).

    Raises:
        RedisUrlError: the URL is malformed (the message says how, never
            showing a password).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise RedisUrlError(f"a Sentinel URL starts with {' or '.join(SENTINEL_SCHEMES)}://")
    netloc, _, path = rest.partition("/")
    path, _, query = path.partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None  # USER@ alone: as redis-py reads it
    sentinels = tuple(_host_port(item) for item in hosts.split(","))
    path = path.rstrip("/")  # .../MASTER_NAME/ as .../MASTER_NAME
    parts = [unquote(p) for p in path.split("/")] if path else []
    if not parts or not parts[0]:
        raise RedisUrlError("the master name is missing after the hosts")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise RedisUrlError("the path must be /MASTER_NAME or /MASTER_NAME/DB with a numeric DB")
    if not _MASTER_NAME.fullmatch(parts[0]):
        raise RedisUrlError(f"the master name may only hold letters, digits and '_.:-', "
                            f"got {parts[0]!r}")  # fmt: skip
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in SENTINEL_QUERY:
            known = " and ".join(SENTINEL_QUERY)
            raise RedisUrlError(f"unknown query parameter {key!r}: only {known} are known")
        options[key] = value
    return SentinelTarget(
        sentinels=sentinels, master_name=parts[0], db=int(parts[1]) if len(parts) == 2 else 0,
        username=username, password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        ssl=scheme.lower() == "rediss+sentinel",
    )  # fmt: skip


def _host_port(item: str) -> tuple[str, int]:
    host, colon, port = item.strip().rpartition(":")
    if not colon:
        host, port = port, ""
    host = host.strip("[]")
    if not host:
        raise RedisUrlError(
            "the sentinel list has an empty entry"
            if not item.strip()
            else f"sentinel {item!r} has no host"
        )
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise RedisUrlError(f"sentinel {item!r} must be HOST:PORT with a TCP port 1-65535")
    return host, int(port)


def check_redis_url(url: str) -> None:
    """Refuse a ``REDIS_URL`` no client could be made from.

    Raises:
        RedisUrlError: what is wrong, as "must be ..." (never showing a password).
    """
    scheme = url.partition("://")[0].lower()
    if scheme in SENTINEL_SCHEMES:
        try:
            parse_sentinel_url(url)
        except RedisUrlError as exc:
            raise RedisUrlError(f"must be a Sentinel URL {SENTINEL_FORM}: {exc}") from None
    elif urlsplit(url).scheme not in PLAIN_SCHEMES:
        raise RedisUrlError(
            "must be a redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel:// URL"
        )


@functools.cache
def _sentinel_redis_class() -> type[Redis]:
    from redis import Redis

    class SentinelRedis(Redis):
        """A client of a Sentinel service's master; closing it also closes
        its connections to the sentinels."""

        sentinel: Any = None

        def close(self) -> None:
            try:
                super().close()
            finally:
                if self.sentinel is not None:
                    self.sentinel.close()

    return SentinelRedis


def redis_client(url: str, **options: Any) -> Redis:
    """A Redis client for ``REDIS_URL``, with the caller's connection options
    (timeouts, ``retry``, ``health_check_interval``, ``max_connections``...).

    For a Sentinel URL the client follows the master: the sentinels are asked
    with the same connect and socket timeouts.

    Raises:
        RedisUrlError: the URL is malformed (Settings validated it already).
    """
    from redis import Redis
    from redis.sentinel import Sentinel

    if not is_sentinel_url(url):
        return Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    # a sentinel answers at once or is down: never wait long for one, even
    # for a client without timeouts of its own (RQ's)
    sentinel_kwargs: dict[str, Any] = {
        name: options.get(name) or SENTINEL_TIMEOUT
        for name in ("socket_timeout", "socket_connect_timeout")
    }
    sentinel_kwargs["ssl"] = target.ssl
    if target.sentinel_username:
        sentinel_kwargs["username"] = target.sentinel_username
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    client: Any = sentinel.master_for(
        target.master_name, redis_class=_sentinel_redis_class(), db=target.db, username=target.username,
        password=target.password, ssl=target.ssl, **options,
    )  # fmt: skip
    client.sentinel = sentinel
    return client


def master_address(redis: Redis) -> tuple[str, int] | None:
    """Where a Sentinel client's connections go now (None: not a Sentinel
    client, or it has not connected yet)."""
    from redis.sentinel import SentinelConnectionPool

    pool = redis.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        address = pool.master_address
        return (str(address[0]), int(address[1])) if address else None
    return None

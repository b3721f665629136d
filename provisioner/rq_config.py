"""RQ's own command line, on the Redis that ``REDIS_URL`` names, a Sentinel
service too: ``rq info -c provisioner.rq_config provisioning``.

RQ's ``--url`` takes a plain Redis URL only; its ``-c MODULE`` reads a
``SENTINEL`` dict (or ``REDIS_URL``) from a module, which this is.  The
settings are read as every process reads them (``REDIS_URL``, or
``redis_url`` in ``PROVISIONER_CONFIG``'s file).
"""

from __future__ import annotations

from typing import Any

from provisioner.config import Settings
from provisioner.redis_url import is_sentinel_url, parse_sentinel_url

SOCKET_TIMEOUT = 5.0  # a command line waits this long for an answer


def rq_settings(redis_url: str) -> dict[str, Any]:
    """What RQ's ``get_redis_from_config`` reads for ``redis_url``:
    ``{"SENTINEL": {...}}`` for a Sentinel service, else ``{"REDIS_URL": url}``."""
    if not is_sentinel_url(redis_url):
        return {"REDIS_URL": redis_url}
    target = parse_sentinel_url(redis_url)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT, "ssl": target.ssl}
    if target.sentinel_username:
        sentinel_kwargs["username"] = target.sentinel_username
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    return {"SENTINEL": {
        "INSTANCES": list(target.sentinels), "MASTER_NAME": target.master_name,
        "DB": target.db, "USERNAME": target.username, "PASSWORD": target.password,
        "SOCKET_TIMEOUT": SOCKET_TIMEOUT, "SSL": target.ssl, "SENTINEL_KWARGS": sentinel_kwargs,
    }}  # fmt: skip


globals().update(rq_settings(Settings.from_env().redis_url))

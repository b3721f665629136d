"""What the web app's requests share, and how a request reaches it.

``web.app.create_app`` makes one :class:`WebResources` per app (the
settings, the engine, the Redis client, the secret keys, the PVE client
pool) and keeps it in ``app.extensions``; the blueprints reach it through
:func:`resources`, :func:`get_db` and :func:`get_redis`.  Each request gets
its own database session on ``g`` (closed at teardown) and shares the
thread-safe Redis pool.  Nothing here imports a blueprint, so every web
module can import this one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass

from flask import current_app, g
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from provisioner.config import Settings
from provisioner.errors import ConfigError
from provisioner.node_facts import NodeFactsCache
from provisioner.secrets.box import SecretBox
from provisioner.secrets.keyfile import load_secret_box, parse_env_keys, read_key_file
from web.pve_pool import ClientPool

log = logging.getLogger(__name__)
EXTENSION = "provisioner"
_SESSION_KEY_DOMAIN = b"lxc-provisioner web session key v1"


class KeyFileWatch:
    """The secret box, loaded again when the key file changes (``provisioner
    keys rotate`` on a running system), looked at once a second at most.
    Keys from ``PROVISIONER_SECRET_KEY`` change only with a restart."""

    INTERVAL = 1.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()  # before reading: a change meanwhile is seen later
        self._box = load_secret_box(settings.secret_key, settings.secret_key_file)  # may create it
        self._signing = session_signing_keys(settings)
        self._checked = time.monotonic()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.settings.secret_key:
            return None
        try:
            st = os.stat(self.settings.secret_key_file)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @property
    def box(self) -> SecretBox:
        self._look()
        return self._box

    @property
    def signing_keys(self) -> list[bytes]:
        """The session cookies' signing keys (current first), which follow
        the key file too: every web process, restarted or not, signs alike."""
        self._look()
        return self._signing

    def _look(self) -> None:
        if self.settings.secret_key or time.monotonic() - self._checked < self.INTERVAL:
            return
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                try:  # never creating a file: a missing one keeps the keys we have
                    self._box = SecretBox(read_key_file(self.settings.secret_key_file))
                    self._signing = session_signing_keys(self.settings)
                    log.info("secret key file %s changed: keys loaded again (current %s)",
                             self.settings.secret_key_file, self._box.current_key_id)  # fmt: skip
                except (ConfigError, OSError) as exc:  # made unsafe, broken or removed
                    log.error("secret key file changed but cannot be loaded (the keys loaded "
                              "before stay in use): %s", exc)  # fmt: skip
                self._stamp = stamp  # looked at: again when it changes again


def session_signing_keys(settings: Settings) -> list[bytes]:
    """Keys for signing session cookies, derived from the secret keys.

    Every web process that shares the secret key signs alike (several
    processes or hosts behind a load balancer); the first is current, the
    others keep sessions valid while a secret key is being rotated.
    """
    if settings.secret_key:
        keys = parse_env_keys(settings.secret_key)
    else:
        keys = read_key_file(settings.secret_key_file)
    return [hmac.new(key, _SESSION_KEY_DOMAIN, hashlib.sha256).digest() for key in keys]


@dataclass
class WebResources:
    """What every request shares: made once per app, closed with it."""

    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    redis: Redis
    keys: KeyFileWatch
    pve: ClientPool
    node_facts: NodeFactsCache  # storages and bridges, for the checks at submit

    @property
    def box(self) -> SecretBox:
        return self.keys.box

    def close(self) -> None:
        self.pve.close()
        self.redis.close()
        self.engine.dispose()


def resources() -> WebResources:
    """The current app's shared resources."""
    res: WebResources = current_app.extensions[EXTENSION]
    return res


def get_db() -> Session:
    """This request's database session (opened on first use)."""
    if "db" not in g:
        g.db = resources().factory()
    session: Session = g.db
    return session


def get_redis() -> Redis:
    """The Redis client (thread-safe: a pool shared by the app's threads)."""
    if "redis" not in g:
        g.redis = resources().redis
    redis: Redis = g.redis
    return redis


def close_db(exc: BaseException | None) -> None:
    """Teardown: close the request's database session (rolling back whatever
    it did not commit)."""
    session: Session | None = g.pop("db", None)
    g.pop("redis", None)
    if session is not None:
        session.close()

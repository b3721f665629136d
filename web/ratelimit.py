"""Login rate limiting: a sliding window of failures in Redis.

Failures are counted per username and client address (an attacker guessing
one account) and per address alone with a higher limit (one address trying
many accounts).  A sorted set per key holds the failure times; it expires
with the window, so nothing is left behind.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from dataclasses import dataclass

from redis import Redis

KEY_PREFIX = "provisioner:login-failures:"


def _key(*parts: str) -> str:
    # hashed: usernames are user input and need not be readable in Redis
    return KEY_PREFIX + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class LoginLimiter:
    """``max_failures`` per username+address and ``max_per_address`` per
    address within ``window`` seconds."""

    redis: Redis
    max_failures: int = 5
    max_per_address: int = 50
    window: float = 300.0

    def _limits(self, username: str, address: str) -> list[tuple[str, int]]:
        return [
            (_key("user", username.lower(), address), self.max_failures),
            (_key("addr", address), self.max_per_address),
        ]

    def retry_after(self, username: str, address: str) -> int:
        """Seconds until another attempt is allowed; 0 if it is allowed now."""
        now = time.time()
        wait = 0.0
        for key, limit in self._limits(username, address):
            self.redis.zremrangebyscore(key, 0, now - self.window)
            if int(self.redis.zcard(key)) >= limit:
                # the oldest failure that still counts decides when one frees up
                oldest = self.redis.zrange(key, -limit, -limit, withscores=True)
                since = float(oldest[0][1]) if oldest else now
                wait = max(wait, since + self.window - now)
        return math.ceil(wait) if wait > 0 else 0

    def record_failure(self, username: str, address: str) -> None:
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        for key, _limit in self._limits(username, address):
            pipe.zadd(key, {uuid.uuid4().hex: now})
            pipe.zremrangebyscore(key, 0, now - self.window)
            pipe.expire(key, math.ceil(self.window))
        pipe.execute()

    def reset(self, username: str, address: str) -> None:
        """Forget the username's failures from this address (after a success)."""
        self.redis.delete(self._limits(username, address)[0][0])

"""Login rate limiting: a sliding window of attempts in Redis.

Attempts are counted per username and client address (an attacker guessing
one account from one place), per username alone with a higher limit (one
account guessed from many addresses) and per address alone (one address
trying many accounts).  A sorted set per key holds the attempt times; it
expires with the window, so nothing is left behind.

An attempt is checked and counted in one atomic step *before* the password
is checked, so parallel guesses cannot all slip in under the limit; a
successful login takes its own attempt back and clears the user+address
count.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from dataclasses import dataclass

from redis import Redis

KEY_PREFIX = "provisioner:login-failures:"

# KEYS: the sorted sets; ARGV: now, window, member, then one limit per key.
# Prunes old entries; if any key is at its limit answers the seconds until
# its oldest counted entry leaves the window (and counts nothing), else adds
# the member to every key and answers 0.
_ATTEMPT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 + i])
  redis.call('ZREMRANGEBYSCORE', key, 0, now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, -limit, -limit, 'WITHSCORES')
    local since = now
    if oldest[2] then since = tonumber(oldest[2]) end
    -- callers pass their own clock: one that read it a moment before the
    -- oldest entry was counted must not wait longer than the window
    local left = math.min(window, since + window - now)
    if left > wait then wait = left end
  end
end
if wait > 0 then return tostring(wait) end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('EXPIRE', key, math.ceil(window))
end
return '0'
"""


def _key(*parts: str) -> str:
    # hashed: usernames are user input and need not be readable in Redis
    return KEY_PREFIX + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Attempt:
    """One counted login attempt: ``wait`` > 0 means it was refused."""

    wait: int
    member: str


@dataclass(frozen=True)
class LoginLimiter:
    """``max_failures`` per username+address, ``max_per_user`` per username
    and ``max_per_address`` per address within ``window`` seconds."""

    redis: Redis
    max_failures: int = 5
    max_per_user: int = 20
    max_per_address: int = 50
    window: float = 300.0

    def _limits(self, username: str, address: str) -> list[tuple[str, int]]:
        name = username.lower()
        return [
            (_key("user", name, address), self.max_failures),
            (_key("account", name), self.max_per_user),
            (_key("addr", address), self.max_per_address),
        ]

    def attempt(self, username: str, address: str) -> Attempt:
        """Count an attempt, unless a limit is reached: then nothing is
        counted and ``wait`` says how many seconds until one frees up."""
        limits = self._limits(username, address)
        member = uuid.uuid4().hex
        # a Script runs by its SHA (EVALSHA), sending the text only when Redis lacks it
        answer = self.redis.register_script(_ATTEMPT)(
            keys=[k for k, _ in limits],
            args=[repr(time.time()), repr(self.window), member, *[n for _, n in limits]],
        )
        wait = float(answer.decode() if isinstance(answer, bytes) else answer)
        return Attempt(wait=math.ceil(wait) if wait > 0 else 0, member=member)

    def succeeded(self, username: str, address: str, attempt: Attempt) -> None:
        """A login worked: its attempt does not count, nor do this
        username's earlier failures from this address."""
        limits = self._limits(username, address)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(limits[0][0])
        for key, _limit in limits[1:]:
            pipe.zrem(key, attempt.member)
        pipe.execute()

"""Backoff maths for reconnecting to a container's sshd.

Pure: the caller supplies the random number, so the maths is testable.
"""

from __future__ import annotations

from dataclasses import dataclass

# 2.0 ** 64 already dwarfs any cap; stops float overflow on long waits.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with a cap and jitter.

    Attributes:
        base: the delay after the first failure, in seconds.
        factor: growth per failure.
        cap: the longest delay, in seconds.
        jitter: the fraction of each delay that is randomised away (0 = none,
            0.5 = between half and all of it), so workers that lost SSH at
            the same moment do not reconnect in lockstep.
    """

    base: float = 0.2
    factor: float = 2.0
    cap: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.cap < self.base:
            raise ValueError(f"invalid backoff: {self}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must lie in [0, 1], not {self.jitter}")

    def delay(self, failures: int, rand: float) -> float:
        """The pause after the ``failures``-th failed attempt.

        Args:
            failures: how many attempts failed so far (1 for the first).
            rand: a random number in [0, 1).

        Returns:
            Seconds to wait: ``min(cap, base * factor**(failures-1))`` less up
            to ``jitter`` of it.

        Raises:
            ValueError: ``failures`` < 1 or ``rand`` outside [0, 1).
        """
        if failures < 1:
            raise ValueError(f"failures must be >= 1, not {failures}")
        if not 0 <= rand < 1:
            raise ValueError(f"rand must lie in [0, 1), not {rand}")
        exponent = min(failures - 1, _MAX_EXPONENT)
        full = min(self.cap, self.base * self.factor**exponent)
        return full * (1 - self.jitter * rand)


def sleep_before_next(backoff: Backoff, failures: int, rand: float, remaining: float) -> float:
    """How long to pause before the next attempt, never past the deadline.

    Args:
        backoff: the policy.
        failures: attempts failed so far (>= 1).
        rand: a random number in [0, 1).
        remaining: seconds left until the deadline.

    Returns:
        The pause, between 0 and ``remaining``.
    """
    return max(0.0, min(backoff.delay(failures, rand), remaining))

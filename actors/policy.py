"""Restart policy: pure decisions about when a crashed child comes back.

Invariants:
- nothing here touches the event loop or the wall clock; time is passed in as ``now``
  (a monotonic reading, e.g. ``loop.time()``), randomness as an ``random.Random``;
- a child's budget counts only failures inside the sliding period, so a child that crashes
  once a day is never quarantined, while one that crashes ``max_restarts + 1`` times within
  ``period_s`` is;
- the backoff delay never exceeds ``backoff_max_s`` and is never negative.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class RestartType(enum.Enum):
    """When a child that exited is started again (Erlang/OTP's restart types)."""

    PERMANENT = "permanent"  # always, whatever the exit reason
    TRANSIENT = "transient"  # only after an abnormal exit (an exception)
    TEMPORARY = "temporary"  # never; the child is removed when it exits


class OnExhausted(enum.Enum):
    """What happens to a child whose restart budget is spent."""

    QUARANTINE = "quarantine"  # park it; siblings keep running (account actors)
    ESCALATE = "escalate"  # shut the supervisor down and raise to its owner (infrastructure)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Per-child restart budget and backoff shape."""

    max_restarts: int = 5
    period_s: float = 60.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        if self.period_s <= 0:
            raise ValueError("period_s must be > 0")
        if not 0 <= self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 <= backoff_initial_s <= backoff_max_s")
        if self.backoff_multiplier < 1:
            raise ValueError("backoff_multiplier must be >= 1")

    def should_restart(self, restart_type: RestartType, *, crashed: bool) -> bool:
        """Whether an exit of this kind is followed by a restart at all."""
        if restart_type is RestartType.PERMANENT:
            return True
        if restart_type is RestartType.TRANSIENT:
            return crashed
        return False

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Delay before restart number ``attempt`` (1-based): capped exponential, equal jitter.

        Half of the delay is fixed so restarts keep spreading out; the other half is random so
        children that crashed together do not come back together.
        """
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        exponent = min(attempt - 1, 64)  # keeps the power finite
        ceiling = min(
            self.backoff_max_s, self.backoff_initial_s * self.backoff_multiplier**exponent
        )
        half = ceiling / 2
        return half + rng.uniform(0, half)


@dataclass(slots=True)
class RestartBudget:
    """The failures of one child inside the sliding period.

    Stores nothing until the first failure, since most children never crash.
    """

    failures: list[float] | None = None

    def record_failure(self, now: float, policy: RestartPolicy) -> int | None:
        """Record a failure at ``now``; the restart attempt number, or None when exhausted."""
        horizon = now - policy.period_s
        recent = [t for t in self.failures or () if t > horizon]
        recent.append(now)
        self.failures = recent
        if len(recent) > policy.max_restarts:
            return None
        return len(recent)

    def reset(self) -> None:
        """Forget all failures (e.g. after an operator releases a quarantined child)."""
        self.failures = None

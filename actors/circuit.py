"""Restart circuit: pure state machine that pauses restarts when many children fail together.

When a shared dependency (PostgreSQL, a provider) is down, every child crashes for the same
reason; restarting them all burns every child's budget and quarantines healthy accounts.

Invariants:
- CLOSED: failures are counted in a sliding window; the circuit opens when the count reaches
  ``max(min_failures, failure_ratio * population)``;
- OPEN: restarts are held, and held failures are not charged to any child's budget; after
  ``cooldown`` the circuit goes HALF_OPEN;
- HALF_OPEN: up to ``probes`` held children are restarted; the first probe that starts closes
  the circuit, a probe that fails reopens it with the cooldown doubled (up to the maximum);
- no I/O, no clock: ``now`` is passed in by the caller.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class CircuitState(enum.Enum):
    """Where the circuit stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    """Thresholds and timings of the restart circuit."""

    window_s: float = 30.0
    min_failures: int = 10
    failure_ratio: float = 0.2
    cooldown_s: float = 5.0
    max_cooldown_s: float = 120.0
    probes: int = 2
    release_spread_s: float = 2.0  # held children come back spread over this long

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.cooldown_s <= 0 or self.max_cooldown_s < self.cooldown_s:
            raise ValueError("need window_s > 0 and 0 < cooldown_s <= max_cooldown_s")
        if self.min_failures < 1 or self.probes < 1:
            raise ValueError("min_failures and probes must be >= 1")
        if not 0 < self.failure_ratio <= 1:
            raise ValueError("failure_ratio must be in (0, 1]")

    def threshold(self, population: int) -> int:
        """Failures inside the window that open the circuit for this many children."""
        return max(self.min_failures, int(self.failure_ratio * population + 0.999999))


@dataclass(slots=True)
class Circuit:
    """The circuit's state; every transition is a method taking ``now``."""

    policy: CircuitPolicy = field(default_factory=CircuitPolicy)
    state: CircuitState = CircuitState.CLOSED
    opened_at: float = 0.0
    cooldown_s: float = 0.0
    times_opened: int = 0
    _failures: deque[float] = field(default_factory=deque)

    @property
    def holding(self) -> bool:
        """Whether a crashed child must wait instead of restarting."""
        return self.state is not CircuitState.CLOSED

    @property
    def half_open_at(self) -> float:
        """When an open circuit lets its first probes through."""
        return self.opened_at + self.cooldown_s

    def record_failure(self, now: float, population: int) -> bool:
        """Count one child failure; True when this failure opened the circuit."""
        if self.state is not CircuitState.CLOSED:
            return False
        failures = self._failures
        failures.append(now)
        horizon = now - self.policy.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        if len(failures) < self.policy.threshold(population):
            return False
        self._open(now, self.policy.cooldown_s)
        return True

    def half_open(self, now: float) -> bool:
        """Move OPEN to HALF_OPEN once the cooldown is over; True if it moved."""
        if self.state is CircuitState.OPEN and now >= self.half_open_at:
            self.state = CircuitState.HALF_OPEN
            return True
        return False

    def probe_succeeded(self) -> bool:
        """A probe started; True when this closed the circuit."""
        if self.state is not CircuitState.HALF_OPEN:
            return False
        self.state = CircuitState.CLOSED
        self._failures.clear()
        return True

    def probe_failed(self, now: float) -> None:
        """A probe failed: reopen with a longer cooldown."""
        if self.state is CircuitState.HALF_OPEN:
            self._open(now, min(self.cooldown_s * 2, self.policy.max_cooldown_s))

    def _open(self, now: float, cooldown_s: float) -> None:
        self.state = CircuitState.OPEN
        self.opened_at = now
        self.cooldown_s = cooldown_s
        self.times_opened += 1
        self._failures.clear()

"""One replica's view of one shard lease, claim jitter and start-up pacing. Pure: no I/O.

Time is a monotonic reading passed in as ``now`` or ``at``; randomness is a ``random.Random``.
An ``at`` of a claim or renewal is read just *before* the command is sent: Redis starts the TTL
when it runs the command, later, so ``at + ttl`` never overstates the lease's expiry.

States: STANDBY (not held) -> CLAIMING (SET NX in flight) -> OWNED (actors run) -> RELEASING
(actors stop, in-flight work commits, then the lease is deleted) -> STANDBY. OWNED or RELEASING
become LOST when the renewal is refused, a write meets a newer epoch, or the lease was not
renewed in time; LOST returns to STANDBY once the shard's actors have stopped.

Invariants (default policy; the fractions are settings of ``LeasePolicy``):
- a renewal is due ``ttl / 3`` after the last successful one, or ``ttl / 20`` after a failed try;
- ``must_stop`` turns true ``ttl / 3`` before the earliest moment Redis can expire the lease
  (``ttl`` less 1% for clock drift), so actors stop before another replica can claim it;
- renewals always fall due before ``must_stop`` (checked when the policy is built);
- a late event (a renewal reply after LOST, a release after STANDBY) changes nothing: each event
  returns False unless it applied, so a stale reply cannot bring a lost lease back;
- the renewal time never goes backwards (replies may arrive out of order);
- ``StartPacer`` starts at most ``burst`` actors at once, then ``rate_per_s`` per second.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field


class LeaseState(enum.Enum):
    """Where this replica stands with one shard's lease."""

    STANDBY = "standby"  # not held, not claiming
    CLAIMING = "claiming"  # a claim (SET NX PX) is in flight
    OWNED = "owned"  # held and renewed; the shard's actors run
    RELEASING = "releasing"  # still held and renewed while actors stop and work commits
    LOST = "lost"  # may be someone else's: stop the actors now


class LossReason(enum.Enum):
    """Why an owned lease was lost (for logs and the monitor)."""

    REFUSED = "refused"  # the renewal script found the lease gone or someone else's
    EPOCH = "epoch"  # a write met a newer epoch: another replica took the shard
    OVERDUE = "overdue"  # not renewed in time (e.g. Redis unreachable)


_HOLDING = (LeaseState.OWNED, LeaseState.RELEASING)


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    """Lease timings, as fractions of the TTL so that they scale with it."""

    ttl_s: float = 10.0
    renew_fraction: float = 1 / 3  # renew this far into the TTL
    stop_margin_fraction: float = 1 / 3  # stop actors this far before the earliest expiry
    clock_drift: float = 0.01  # our clock may run this much slower than Redis's
    retry_fraction: float = 0.05  # retry a failed renewal after this much of the TTL
    claim_jitter_fraction: float = 0.02  # claims of orphaned shards spread over this much

    def __post_init__(self) -> None:
        if self.ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        if not 0 <= self.clock_drift < 1:
            raise ValueError("clock_drift must be in [0, 1)")
        if self.retry_fraction <= 0 or self.stop_margin_fraction < 0:
            raise ValueError("need retry_fraction > 0 and stop_margin_fraction >= 0")
        if self.claim_jitter_fraction < 0:
            raise ValueError("claim_jitter_fraction must be >= 0")
        if not 0 < self.renew_fraction < self.stop_after_s / self.ttl_s:
            raise ValueError("renewals must fall due before actors must stop")

    @property
    def renew_after_s(self) -> float:
        """Seconds from a successful renewal to the next one."""
        return self.ttl_s * self.renew_fraction

    @property
    def retry_after_s(self) -> float:
        """Seconds from a failed renewal to the next try."""
        return self.ttl_s * self.retry_fraction

    @property
    def expires_after_s(self) -> float:
        """Seconds, on our clock, from a renewal to the earliest moment Redis can expire it."""
        return self.ttl_s * (1 - self.clock_drift)

    @property
    def stop_after_s(self) -> float:
        """Seconds from the last successful renewal to the moment actors must stop."""
        return self.expires_after_s - self.ttl_s * self.stop_margin_fraction

    def claim_delay_s(self, rng: random.Random) -> float:
        """Random delay before claiming an orphaned shard, so survivors do not claim in step."""
        return rng.uniform(0, self.ttl_s * self.claim_jitter_fraction)


@dataclass(slots=True)
class ShardLease:
    """This replica's lease on one shard; every event returns True when it applied."""

    shard: int
    policy: LeasePolicy = field(default_factory=LeasePolicy)
    state: LeaseState = LeaseState.STANDBY
    renewed_at: float | None = None  # send time of the last successful claim or renewal
    retry_at: float | None = None  # set after a failed renewal until one succeeds
    lost_reason: LossReason | None = None

    @property
    def holding(self) -> bool:
        """Whether this replica holds the lease (owned or releasing) as far as it knows."""
        return self.state in _HOLDING

    def renew_at(self) -> float | None:
        """When the next renewal is due, or None when the lease is not held."""
        if not self.holding or self.renewed_at is None:
            return None
        if self.retry_at is not None:
            return self.retry_at
        return self.renewed_at + self.policy.renew_after_s

    def stop_at(self) -> float | None:
        """When the actors must stop unless renewed first, or None when the lease is not held."""
        if not self.holding or self.renewed_at is None:
            return None
        return self.renewed_at + self.policy.stop_after_s

    def renew_due(self, now: float) -> bool:
        """Whether a renewal should be sent now."""
        due = self.renew_at()
        return due is not None and now >= due

    def must_stop(self, now: float) -> bool:
        """Whether the shard's actors must stop now (lost, or not renewed in time)."""
        if self.state is LeaseState.LOST:
            return True
        stop = self.stop_at()
        return stop is not None and now >= stop

    def next_deadline(self) -> float | None:
        """When a scheduler must look at this lease again; None when no time is involved."""
        renew, stop = self.renew_at(), self.stop_at()
        if renew is None or stop is None:
            return None
        return min(renew, stop)

    def start_claim(self) -> bool:
        """STANDBY -> CLAIMING: a claim is about to be sent."""
        return self._move(LeaseState.STANDBY, LeaseState.CLAIMING)

    def claimed(self, at: float) -> bool:
        """CLAIMING -> OWNED: the claim sent at ``at`` set the lease."""
        if not self._move(LeaseState.CLAIMING, LeaseState.OWNED):
            return False
        self.renewed_at, self.retry_at, self.lost_reason = at, None, None
        return True

    def claim_failed(self) -> bool:
        """CLAIMING -> STANDBY: another replica holds the lease, or the claim errored."""
        return self._move(LeaseState.CLAIMING, LeaseState.STANDBY)

    def renewed(self, at: float) -> bool:
        """The renewal sent at ``at`` extended the lease."""
        if not self.holding or self.renewed_at is None:
            return False
        self.renewed_at = max(self.renewed_at, at)
        self.retry_at = None
        return True

    def renewal_failed(self, at: float) -> bool:
        """The renewal sent at ``at`` got no answer (e.g. Redis unreachable): retry soon."""
        if not self.holding:
            return False
        self.retry_at = at + self.policy.retry_after_s
        return True

    def renewal_refused(self) -> bool:
        """The renewal script found the lease gone or someone else's: LOST."""
        return self._lose(LossReason.REFUSED)

    def epoch_refused(self) -> bool:
        """A write met a newer epoch (StaleEpoch): another replica took the shard, LOST."""
        return self._lose(LossReason.EPOCH)

    def expire_if_overdue(self, now: float) -> bool:
        """LOST when the renewal is overdue at ``now``; True when this call moved it."""
        return self.must_stop(now) and self._lose(LossReason.OVERDUE)

    def release_requested(self) -> bool:
        """OWNED -> RELEASING: the shard moves away; renewals go on while actors stop."""
        return self._move(LeaseState.OWNED, LeaseState.RELEASING)

    def released(self) -> bool:
        """RELEASING -> STANDBY: the actors stopped and the lease was deleted."""
        if not self._move(LeaseState.RELEASING, LeaseState.STANDBY):
            return False
        self.renewed_at = self.retry_at = None
        return True

    def stopped(self) -> bool:
        """LOST -> STANDBY: the actors of the lost shard have stopped."""
        if not self._move(LeaseState.LOST, LeaseState.STANDBY):
            return False
        self.renewed_at = self.retry_at = None
        return True

    def _move(self, source: LeaseState, destination: LeaseState) -> bool:
        if self.state is not source:
            return False
        self.state = destination
        return True

    def _lose(self, reason: LossReason) -> bool:
        if not self.holding:
            return False
        self.state = LeaseState.LOST
        self.lost_reason = reason
        return True


@dataclass(slots=True)
class StartPacer:
    """Spaces actor start-ups after a takeover: ``burst`` at once, then ``rate_per_s``.

    A virtual-schedule token bucket (GCRA): one float of state, no refill loop.
    """

    rate_per_s: float
    burst: int = 1
    _next_slot: float | None = None  # when the start after the last reserved one is free

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError("need rate_per_s > 0 and burst >= 1")

    def take(self, now: float) -> float:
        """Reserve one start-up; the delay (seconds from ``now``) to wait before it."""
        interval = 1 / self.rate_per_s
        slot = now if self._next_slot is None else max(self._next_slot, now)
        # Up to burst - 1 intervals of credit: a pacer idle long enough starts a burst at once.
        start = max(now, slot - (self.burst - 1) * interval)
        self._next_slot = slot + interval
        return start - now

"""Shard lease state machine, claim jitter and start-up pacing (pure; time is passed in)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from cluster.lease_state import (
    LeasePolicy,
    LeaseState,
    LossReason,
    ShardLease,
    StartPacer,
)

TTL = 10.0


def state_of(lease: ShardLease) -> LeaseState:
    """Read through a call: mypy would otherwise keep narrowing ``lease.state`` across events."""
    return lease.state


def owned(at: float = 100.0, policy: LeasePolicy | None = None) -> ShardLease:
    lease = ShardLease(7, policy or LeasePolicy(ttl_s=TTL))
    assert lease.start_claim()
    assert lease.claimed(at)
    return lease


def test_default_policy_timings() -> None:
    policy = LeasePolicy()
    assert policy.ttl_s == 10.0
    assert policy.renew_after_s == pytest.approx(10 / 3)
    assert policy.retry_after_s == pytest.approx(0.5)
    assert policy.expires_after_s == pytest.approx(9.9)
    assert policy.stop_after_s == pytest.approx(9.9 - 10 / 3)
    # Between the due renewal and the stop there is room for several retries.
    retries = (policy.stop_after_s - policy.renew_after_s) / policy.retry_after_s
    assert retries > 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl_s": 0},
        {"clock_drift": 1.0},
        {"clock_drift": -0.1},
        {"retry_fraction": 0},
        {"claim_jitter_fraction": -1},
        {"stop_margin_fraction": -0.1},
        {"renew_fraction": 0},
        {"renew_fraction": 0.7},  # would fall due after actors must stop
        {"stop_margin_fraction": 0.7},
    ],
)
def test_policy_rejects_unsafe_timings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LeasePolicy(**kwargs)


def test_claim_own_renew_release_cycle() -> None:
    lease = ShardLease(3)
    assert state_of(lease) is LeaseState.STANDBY and not lease.holding
    assert lease.next_deadline() is None and not lease.must_stop(1e9)
    assert lease.start_claim() and state_of(lease) is LeaseState.CLAIMING
    assert lease.next_deadline() is None
    assert lease.claimed(100.0) and state_of(lease) is LeaseState.OWNED and lease.holding
    renew_at = 100.0 + TTL / 3
    assert lease.next_deadline() == pytest.approx(renew_at)
    assert not lease.renew_due(renew_at - 0.001)
    assert lease.renew_due(renew_at)
    assert lease.renewed(renew_at)
    assert lease.next_deadline() == pytest.approx(renew_at + TTL / 3)
    assert lease.release_requested() and state_of(lease) is LeaseState.RELEASING
    # Still held while actors stop: renewals go on, and the stop deadline still applies.
    assert lease.renew_due(renew_at + TTL / 3)
    assert lease.must_stop(renew_at + lease.policy.stop_after_s)
    assert lease.released() and state_of(lease) is LeaseState.STANDBY
    assert lease.renewed_at is None and lease.next_deadline() is None


def test_claim_refused_returns_to_standby() -> None:
    lease = ShardLease(1)
    assert lease.start_claim()
    assert lease.claim_failed()
    assert state_of(lease) is LeaseState.STANDBY and lease.renewed_at is None


def test_actors_stop_before_the_lease_can_expire() -> None:
    lease = owned(at=50.0)
    stop_at = lease.stop_at()
    assert stop_at is not None
    assert not lease.must_stop(stop_at - 0.001)
    assert lease.must_stop(stop_at)
    # A whole third of the TTL is left to stop before even a fast Redis clock expires it.
    earliest_expiry = 50.0 + TTL * (1 - lease.policy.clock_drift)
    assert earliest_expiry - stop_at == pytest.approx(TTL / 3)
    assert earliest_expiry < 50.0 + TTL


def test_failed_renewals_retry_soon_then_the_lease_is_lost_when_overdue() -> None:
    lease = owned(at=0.0)
    policy = lease.policy
    now = policy.renew_after_s
    tries = 0
    while not lease.must_stop(now):
        assert lease.renew_due(now)
        assert lease.renewal_failed(now)
        tries += 1
        assert lease.renew_at() == pytest.approx(now + policy.retry_after_s)
        deadline = lease.next_deadline()
        assert deadline is not None
        now = deadline
    assert tries == 7  # at 3.33 s, then every 0.5 s until the stop at 6.57 s
    assert now == pytest.approx(policy.stop_after_s)
    assert state_of(lease) is LeaseState.OWNED  # the query alone moves nothing
    assert lease.expire_if_overdue(now)
    assert state_of(lease) is LeaseState.LOST and lease.lost_reason is LossReason.OVERDUE
    assert not lease.expire_if_overdue(now)  # already lost
    # A renewal reply arriving now (sent before) must not revive it.
    assert not lease.renewed(now - 0.1)
    assert lease.must_stop(now) and lease.next_deadline() is None


def test_a_late_success_after_failures_resets_the_cadence() -> None:
    lease = owned(at=0.0)
    lease.renewal_failed(3.4)
    assert lease.renewed(3.9)
    assert lease.retry_at is None
    assert lease.renew_at() == pytest.approx(3.9 + TTL / 3)
    assert lease.stop_at() == pytest.approx(3.9 + lease.policy.stop_after_s)


def test_renewal_time_never_goes_backwards() -> None:
    lease = owned(at=0.0)
    assert lease.renewed(5.0)
    assert lease.renewed(3.5)  # an older renewal's reply arriving late
    assert lease.renewed_at == 5.0


def test_next_deadline_is_the_stop_when_a_retry_would_come_too_late() -> None:
    lease = owned(at=0.0)
    lease.renewal_failed(6.3)  # retry at 6.8, after the stop at 6.57
    assert lease.next_deadline() == pytest.approx(lease.policy.stop_after_s)


@pytest.mark.parametrize(
    ("lose", "reason"),
    [
        (ShardLease.renewal_refused, LossReason.REFUSED),
        (ShardLease.epoch_refused, LossReason.EPOCH),
    ],
)
@pytest.mark.parametrize("releasing", [False, True])
def test_refusals_lose_the_lease_at_once(
    lose: Callable[[ShardLease], bool], reason: LossReason, releasing: bool
) -> None:
    lease = owned(at=0.0)
    if releasing:
        assert lease.release_requested()
    assert lose(lease)
    assert state_of(lease) is LeaseState.LOST and lease.lost_reason is reason
    assert lease.must_stop(0.0)  # well before any deadline
    assert not lease.released()  # a lost lease is not released, its actors stop
    assert lease.stopped() and state_of(lease) is LeaseState.STANDBY


def test_replica_resumes_by_itself_when_redis_returns() -> None:
    lease = owned(at=0.0)
    now = lease.policy.renew_after_s
    while not lease.expire_if_overdue(now):  # Redis unreachable
        lease.renewal_failed(now)
        deadline = lease.next_deadline()
        assert deadline is not None
        now = deadline
    assert lease.stopped()
    assert lease.start_claim() and lease.claimed(now + 20.0)  # Redis is back
    assert state_of(lease) is LeaseState.OWNED and lease.lost_reason is None
    assert not lease.must_stop(now + 20.0)


EVENTS: dict[str, Callable[[ShardLease], bool]] = {
    "start_claim": ShardLease.start_claim,
    "claimed": lambda lease: lease.claimed(1.0),
    "claim_failed": ShardLease.claim_failed,
    "renewed": lambda lease: lease.renewed(1.0),
    "renewal_failed": lambda lease: lease.renewal_failed(1.0),
    "renewal_refused": ShardLease.renewal_refused,
    "epoch_refused": ShardLease.epoch_refused,
    "release_requested": ShardLease.release_requested,
    "released": ShardLease.released,
    "stopped": ShardLease.stopped,
}

APPLIES = {
    LeaseState.STANDBY: {"start_claim"},
    LeaseState.CLAIMING: {"claimed", "claim_failed"},
    LeaseState.OWNED: {
        "renewed",
        "renewal_failed",
        "renewal_refused",
        "epoch_refused",
        "release_requested",
    },
    LeaseState.RELEASING: {
        "renewed",
        "renewal_failed",
        "renewal_refused",
        "epoch_refused",
        "released",
    },
    LeaseState.LOST: {"stopped"},
}


def lease_in(state: LeaseState) -> ShardLease:
    lease = ShardLease(0)
    if state is LeaseState.CLAIMING:
        lease.start_claim()
    elif state is not LeaseState.STANDBY:
        lease = owned(at=0.0)
        if state is LeaseState.RELEASING:
            lease.release_requested()
        elif state is LeaseState.LOST:
            lease.epoch_refused()
    assert lease.state is state
    return lease


@pytest.mark.parametrize("state", list(LeaseState))
@pytest.mark.parametrize("event", sorted(EVENTS))
def test_events_outside_their_state_change_nothing(state: LeaseState, event: str) -> None:
    lease = lease_in(state)
    before = (lease.state, lease.renewed_at, lease.retry_at, lease.lost_reason)
    applied = EVENTS[event](lease)
    assert applied is (event in APPLIES[state])
    if not applied:
        assert (lease.state, lease.renewed_at, lease.retry_at, lease.lost_reason) == before


def test_claim_delay_is_jittered_within_a_fiftieth_of_the_ttl() -> None:
    policy = LeasePolicy()
    rng = random.Random(17)
    delays = [policy.claim_delay_s(rng) for _ in range(500)]
    assert all(0 <= d <= 0.2 for d in delays)
    assert max(delays) - min(delays) > 0.18  # really spread
    again = random.Random(17)
    assert [policy.claim_delay_s(again) for _ in range(5)] == delays[:5]  # seeded: repeatable
    assert LeasePolicy(claim_jitter_fraction=0).claim_delay_s(rng) == 0


def test_pacer_starts_a_burst_at_once_then_spaces_the_rest() -> None:
    pacer = StartPacer(rate_per_s=10, burst=3)
    delays = [pacer.take(0.0) for _ in range(6)]
    assert delays == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2, 0.3])
    # Asked later, the wait shrinks by the time that passed.
    assert pacer.take(0.25) == pytest.approx(0.4 - 0.25)


def test_pacer_recovers_its_burst_when_idle() -> None:
    pacer = StartPacer(rate_per_s=2, burst=2)
    assert [pacer.take(0.0) for _ in range(4)] == pytest.approx([0.0, 0.0, 0.5, 1.0])
    assert [pacer.take(100.0) for _ in range(3)] == pytest.approx([0.0, 0.0, 0.5])


def test_pacer_never_exceeds_its_rate_over_any_window() -> None:
    rng = random.Random(8)
    pacer = StartPacer(rate_per_s=5, burst=4)
    now = 0.0
    starts: list[float] = []
    for _ in range(2000):
        now += rng.expovariate(20)  # asked four times faster than it allows
        delay = pacer.take(now)
        assert delay >= 0
        starts.append(now + delay)
    assert starts == sorted(starts)
    for i, start in enumerate(starts):
        window = [s for s in starts[i : i + 40] if s < start + 2.0]
        assert len(window) <= 4 + 5 * 2.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_pacer_rejects_bad_settings(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        StartPacer(rate, burst)

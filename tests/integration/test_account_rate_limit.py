"""The account actor draws every provider call from a shared budget in Redis, and shares a
provider's Retry-After with every replica (real Redis, Postgres and the Google emulator)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from actors.account.context import RateGate
from actors.account.messages import Changed
from cluster.rate_limit import BucketSpec, TokenBucket
from cluster.throttle_witness import Budget, ThrottleWitness
from metrics import events as metrics
from tests.integration import test_account_actor
from tests.integration.test_account_actor import World, create, email_of, wait_for

world = test_account_actor.world  # the fixture, shared (pytest finds it by this name)


def own(bucket: TokenBucket) -> Budget:
    """``bucket`` as one account's own budget (Graph's per mailbox): a Retry-After blocks it."""
    return Budget(bucket, None, quorum=1, base_s=1.0)


async def test_a_spent_budget_defers_the_sync_instead_of_calling(
    world: World, redis: Redis
) -> None:
    # One request (the calendar list), then nothing for a long while: no page can be fetched.
    bucket = TokenBucket(redis, "google-test", BucketSpec(rate_per_s=0.001, burst=1))

    def gate(provider: str, _account_id: str) -> RateGate | None:
        return own(bucket) if provider == "google" else None

    assert world.ctx is not None
    world.ctx = replace(world.ctx, rate_gate=gate, rate_wait_max_s=0.0)
    account_id, calendar_id = await world.add_account("google")
    cell = await world.start(account_id)

    async def deferred() -> bool:
        return (cell.status or "").startswith("retry in") and "throttled" in (cell.status or "")

    await wait_for(deferred, "the actor to defer on the spent budget")
    assert not await world.synced(account_id, calendar_id)
    assert cell.restarts == 0  # throttling is not a crash


async def test_a_providers_retry_after_blocks_every_replica(world: World, redis: Redis) -> None:
    spec = BucketSpec(rate_per_s=100, burst=100)
    mine, other_replica = TokenBucket(redis, "g2", spec), TokenBucket(redis, "g2", spec)

    def gate(provider: str, _account_id: str) -> RateGate | None:
        return own(mine) if provider == "google" else None

    assert world.ctx is not None
    world.ctx = replace(world.ctx, rate_gate=gate)
    world.google.control.add_fault("rate_limit_429", path="*events*", count=1, retry_after="30")
    account_id, _ = await world.add_account("google")
    await world.start(account_id)

    async def blocked() -> bool:
        return await other_replica.try_acquire() > 20  # another replica must wait ~30 s too

    await wait_for(blocked, "the Retry-After to reach the shared budget")


async def test_a_retry_after_of_a_year_is_cut_to_our_bounds(world: World, redis: Redis) -> None:
    # Before: one answer asking for 31,536,000 s blocked the budget of every account on every
    # replica for a year. Now the shared penalty is at most rate_penalty_max_s, and the
    # account's own retry at most retry_after_max_s; both cuts are counted.
    spec = BucketSpec(rate_per_s=100, burst=100)
    mine, other_replica = TokenBucket(redis, "g3", spec), TokenBucket(redis, "g3", spec)

    def gate(provider: str, _account_id: str) -> RateGate | None:
        return own(mine) if provider == "google" else None

    assert world.ctx is not None
    world.ctx = replace(world.ctx, rate_gate=gate, rate_penalty_max_s=2.0, retry_after_max_s=9.0)
    clamped = metrics.retry_after_clamped.labels("google", "budget")
    retries = metrics.retry_after_clamped.labels("google", "retry")
    before = (clamped._value.get(), retries._value.get())
    world.google.control.add_fault(
        "rate_limit_429", path="*events*", count=1, retry_after="31536000"
    )
    account_id, _ = await world.add_account("google")
    cell = await world.start(account_id)

    async def deferred() -> bool:
        return (cell.status or "").startswith("retry in")

    await wait_for(deferred, "the actor to defer on the 429")
    wait_s = await other_replica.try_acquire()
    # The shared budget: blocked for the bound (Redis's clock runs on a little), not a year.
    assert 0 < wait_s < 3.0
    assert cell.deadlines is not None
    poll_in_s = cell.deadlines["poll"] - asyncio.get_running_loop().time()
    assert poll_in_s <= 9.0  # the account's retry: the bound, not a year
    assert (clamped._value.get(), retries._value.get()) == (before[0] + 1, before[1] + 1)


async def test_a_throttled_account_backs_off_while_notifications_keep_coming(
    world: World,
) -> None:
    # Before: the actor logged "retry in 5-29 s", yet each notification started a sync at
    # once: 13 refused calls in 6 s. Google's per-user limit answers 403 userRateLimitExceeded
    # without Retry-After and asks for exponential backoff.
    assert world.ctx is not None
    world.ctx = replace(world.ctx, retry_initial_s=1.0, retry_max_s=2.0)
    account_id, calendar_id = await world.add_account("google")
    await world.start(account_id)
    await world.wait_synced(account_id, calendar_id)
    control = world.google.control
    email = email_of(control, "google")
    control.set_user_quota(email, 3, window_s=2.0)
    start = datetime.now(UTC) + timedelta(days=1)
    for i in range(40):  # an edit and its notification every 0.1 s for 4 s
        create("google", control, email, f"edit {i}", start + timedelta(hours=i))
        world.supervisor.post_nowait(account_id, Changed(calendar_id))
        await asyncio.sleep(0.1)  # the pace of the edits, not a wait for an outcome

    async def converged() -> bool:
        mine = await world.events(account_id)
        return mine == await world.provider_view("google", account_id, calendar_id)

    # The comparison's own calls must not be refused, nor judged: the actor's came before.
    cutoff = time.monotonic()
    control.set_user_quota(email, None)
    await wait_for(converged, "the account to converge")
    calls = [c for c in control.calls(email) if c.at < cutoff]
    refused = [c for c in calls if c.refused]
    assert refused, "the quota never refused a call: the test proves nothing"
    for call in refused:
        later = [c.at for c in calls if c.at > call.at]
        # The next call waits for the backoff (its jitter's floor: half the initial delay).
        assert not later or later[0] - call.at >= 0.5 - 0.05, (call, later[:3])


async def test_one_throttled_account_leaves_the_shared_budget_alone(
    world: World, redis: Redis
) -> None:
    spec = BucketSpec(rate_per_s=100, burst=100)
    mine, other_replica = TokenBucket(redis, "g4", spec), TokenBucket(redis, "g4", spec)
    shared = Budget(mine, ThrottleWitness(redis, "g4", 60.0), quorum=3, base_s=10.0)

    def gate(provider: str, _account_id: str) -> RateGate | None:
        return shared if provider == "google" else None

    assert world.ctx is not None
    world.ctx = replace(world.ctx, rate_gate=gate)
    throttled_id, _ = await world.add_account("google")
    world.google.control.add_fault("rate_limit_429", path="*events*", count=1)
    cell = await world.start(throttled_id)

    async def deferred() -> bool:
        return (cell.status or "").startswith("retry in")

    await wait_for(deferred, "the throttled account to back off")
    assert await other_replica.try_acquire() == 0.0  # the others' budget is untouched
    # Three distinct accounts throttled within the window: now everyone slows down.
    assert await shared.throttled("b", None) is None
    assert await shared.throttled("c", None) == 10.0
    assert await other_replica.try_acquire() > 5.0

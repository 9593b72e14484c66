"""The account actor draws every provider call from a shared budget in Redis, and shares a
provider's Retry-After with every replica (real Redis, Postgres and the Google emulator)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from redis.asyncio import Redis

from actors.account.context import RateGate
from cluster.rate_limit import BucketSpec, TokenBucket
from metrics import events as metrics
from tests.integration import test_account_actor
from tests.integration.test_account_actor import World, wait_for

world = test_account_actor.world  # the fixture, shared (pytest finds it by this name)


async def test_a_spent_budget_defers_the_sync_instead_of_calling(
    world: World, redis: Redis
) -> None:
    # One request (the calendar list), then nothing for a long while: no page can be fetched.
    bucket = TokenBucket(redis, "google-test", BucketSpec(rate_per_s=0.001, burst=1))

    def gate(provider: str, _account_id: str) -> RateGate | None:
        return bucket if provider == "google" else None

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
        return mine if provider == "google" else None

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
        return mine if provider == "google" else None

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

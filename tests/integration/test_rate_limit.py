"""Token buckets: the refill arithmetic without Redis, then the Lua edge against a real Redis.

Times are real (Redis TIME is the bucket's clock, so no fake loop clock applies); rates are high
and waits short to keep the whole file well under two seconds.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cluster.keys import bucket_key
from cluster.rate_limit import (
    BucketSpec,
    RateLimited,
    RateLimiterUnavailable,
    TokenBucket,
    refill,
    wait_for,
)
from sandbox.embedded import EmbeddedRedis, Services

# ---------------------------------------------------------------------------------------------
# Pure part


def test_spec_validation() -> None:
    assert BucketSpec(rate_per_s=2.5, burst=3) == BucketSpec(2.5, 3)
    assert BucketSpec(rate_per_s=1, burst=1).rate_per_s == 1
    for rate in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="rate_per_s"):
            BucketSpec(rate_per_s=rate, burst=1)
    with pytest.raises(ValueError, match="burst"):
        BucketSpec(rate_per_s=1.0, burst=0)
    with pytest.raises(TypeError, match="burst"):
        BucketSpec(rate_per_s=1.0, burst=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="burst"):
        BucketSpec(rate_per_s=1.0, burst=True)
    with pytest.raises(TypeError, match="rate_per_s"):
        BucketSpec(rate_per_s="1", burst=1)  # type: ignore[arg-type]


def test_per_period_matches_provider_quotas() -> None:
    google_project = BucketSpec.per_period(10_000, 60)
    assert google_project.rate_per_s == pytest.approx(166.6667, rel=1e-4)
    assert google_project.burst == 10_000
    graph_mailbox = BucketSpec.per_period(10_000, 600, burst=100)
    assert graph_mailbox.rate_per_s == pytest.approx(16.6667, rel=1e-4)
    assert graph_mailbox.burst == 100
    with pytest.raises(ValueError, match="period_s"):
        BucketSpec.per_period(10, 0)


def test_refill_adds_rate_times_elapsed_capped_at_burst() -> None:
    spec = BucketSpec(rate_per_s=10.0, burst=5)
    assert refill(0.0, 0.0, spec) == 0.0
    assert refill(0.0, 0.25, spec) == pytest.approx(2.5)
    assert refill(1.5, 0.1, spec) == pytest.approx(2.5)
    assert refill(0.0, 10.0, spec) == 5.0
    assert refill(4.9, 1.0, spec) == 5.0
    # A clock stepping back refills nothing and takes nothing.
    assert refill(2.0, -3.0, spec) == 2.0


def test_wait_for_is_the_deficit_over_the_rate() -> None:
    spec = BucketSpec(rate_per_s=50.0, burst=10)
    assert wait_for(3.0, 2, spec) == 0.0
    assert wait_for(2.0, 2, spec) == 0.0
    assert wait_for(0.0, 1, spec) == pytest.approx(0.02)
    assert wait_for(0.5, 3, spec) == pytest.approx(0.05)
    # The wait is exactly what refill needs to reach the wanted tokens.
    assert refill(0.5, wait_for(0.5, 3, spec), spec) == pytest.approx(3.0)


def test_bucket_key_carries_a_hash_tag() -> None:
    assert bucket_key("google") == "iw:{ratelimit:google}"
    assert bucket_key("google:user:abc") == "iw:{ratelimit:google:user:abc}"
    for bad in ("", "a{b", "a}b"):
        with pytest.raises(ValueError, match="bucket name"):
            bucket_key(bad)


# ---------------------------------------------------------------------------------------------
# Redis edge


async def drain(bucket: TokenBucket) -> int:
    """Take tokens one by one until refused; return how many were granted."""
    granted = 0
    while await bucket.try_acquire() == 0.0:
        granted += 1
    return granted


async def test_burst_is_granted_then_refused_with_a_sensible_wait(redis: Redis) -> None:
    bucket = TokenBucket(redis, "google", BucketSpec(rate_per_s=10.0, burst=5))
    for _ in range(5):
        assert await bucket.try_acquire() == 0.0
    wait = await bucket.try_acquire()
    # One token at 10/s: at most 100 ms away (less if a few ms passed since the burst).
    assert 0.05 < wait <= 0.1
    wait_three = await bucket.try_acquire(3)
    assert 0.25 < wait_three <= 0.3
    state = await redis.hgetall("iw:{ratelimit:google}")
    assert set(state) == {b"tokens", b"updated_ms", b"blocked_until_ms"}
    assert float(state[b"tokens"]) < 1.0
    # Idle buckets vanish: the key lives until it would be full again, plus a margin.
    ttl_ms = await redis.pttl("iw:{ratelimit:google}")
    assert 500 < ttl_ms <= 500 + 1000


async def test_refused_request_takes_nothing(redis: Redis) -> None:
    bucket = TokenBucket(redis, "graph", BucketSpec(rate_per_s=1.0, burst=5))
    assert await bucket.try_acquire(3) == 0.0
    assert await bucket.try_acquire(3) > 0.0  # 2 left: refused
    assert await bucket.try_acquire(2) == 0.0  # ... and those 2 are still there
    assert await bucket.try_acquire() > 0.0


async def test_refill_over_real_elapsed_time(redis: Redis) -> None:
    bucket = TokenBucket(redis, "refill", BucketSpec(rate_per_s=50.0, burst=5))
    assert await bucket.try_acquire(5) == 0.0
    wait = await bucket.try_acquire()
    assert 0.0 < wait <= 0.02
    await asyncio.sleep(0.12)  # 6 tokens' worth at 50/s, capped at 5
    assert await bucket.try_acquire(5) == 0.0
    # Capped at burst: a sixth token was not saved up, so five more need ~100 ms again.
    assert await bucket.try_acquire(5) > 0.08


async def test_acquire_sleeps_for_the_wait_and_respects_max_wait(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What acquire sleeps is recorded, not timed: a loaded machine cannot make this flaky.
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(delay: float) -> None:
        slept.append(delay)
        await real_sleep(delay)

    monkeypatch.setattr(asyncio, "sleep", recorded)  # what cluster.rate_limit calls
    bucket = TokenBucket(redis, "acq", BucketSpec(rate_per_s=50.0, burst=5))
    await bucket.acquire(5, max_wait_s=0.0)
    assert slept == []  # the burst was there
    await bucket.acquire(1, max_wait_s=1.0)  # one token refills in 20 ms
    assert slept and all(0 < delay <= 0.02 for delay in slept)

    slept.clear()
    with pytest.raises(RateLimited) as caught:
        await bucket.acquire(5, max_wait_s=0.01)  # needs ~100 ms
    assert slept == []  # refused up front, no sleep
    assert 0.05 < caught.value.wait_s <= 0.1
    assert caught.value.name == "acq"
    assert "acq" in str(caught.value)

    with pytest.raises(ValueError, match="max_wait_s"):
        await bucket.acquire(1, max_wait_s=-1.0)
    with pytest.raises(ValueError, match="tokens"):
        await bucket.try_acquire(0)
    with pytest.raises(ValueError, match="tokens"):
        await bucket.try_acquire(6)  # more than burst could never be granted


async def test_concurrent_acquirers_never_exceed_burst_plus_rate_times_elapsed(
    redis: Redis, services: Services
) -> None:
    spec = BucketSpec(rate_per_s=50.0, burst=10)
    other = Redis.from_url(services.redis_url)  # a second replica
    try:
        replicas = [TokenBucket(redis, "shared", spec), TokenBucket(other, "shared", spec)]
        grants = 0

        async def worker(index: int) -> None:
            nonlocal grants
            bucket = replicas[index % 2]
            for _ in range(10):
                if await bucket.try_acquire() == 0.0:
                    grants += 1
                await asyncio.sleep(0.005)

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(20)))
        elapsed = time.monotonic() - started
    finally:
        await other.aclose()
    # 200 tries over ~60 ms: the bound binds, and the first burst was all granted.
    assert grants <= spec.burst + spec.rate_per_s * elapsed
    assert grants >= spec.burst
    assert grants < 200


async def test_contended_acquire_waits_its_turn(redis: Redis) -> None:
    spec = BucketSpec(rate_per_s=100.0, burst=5)
    bucket = TokenBucket(redis, "turns", spec)
    started = time.monotonic()
    await asyncio.gather(*(bucket.acquire(max_wait_s=1.0) for _ in range(20)))
    elapsed = time.monotonic() - started
    # 5 from the burst, 15 more at 100/s: at least 150 ms; all granted well within max_wait_s.
    assert 0.14 <= elapsed < 1.0


async def test_many_waiters_ask_redis_about_once_per_grant(redis: Redis) -> None:
    """Thousands of actors waiting on one budget must not poll Redis at the refill interval:
    waiters of one bucket object queue locally, and only the first re-asks."""
    spec = BucketSpec(rate_per_s=100.0, burst=1)
    bucket = TokenBucket(redis, "crowd", spec)
    await bucket.acquire(max_wait_s=1.0)  # spend the burst (and load the script)

    async def script_calls() -> int:
        stats = await redis.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha",))

    before = await script_calls()
    await asyncio.gather(*(bucket.acquire(max_wait_s=2.0) for _ in range(50)))
    calls = await script_calls() - before
    # 50 first asks, then about one re-ask per grant (50) plus a few refusals.
    assert calls < 200, calls


async def test_penalize_blocks_every_holder_until_it_passes(
    redis: Redis, services: Services
) -> None:
    spec = BucketSpec(rate_per_s=50.0, burst=5)
    other = Redis.from_url(services.redis_url)  # a second replica
    try:
        a = TokenBucket(redis, "google", spec)
        b = TokenBucket(other, "google", spec)
        assert await a.try_acquire() == 0.0
        await a.penalize(0.15)
        # Both replicas are blocked, full bucket or not: the block, then one token's refill.
        for bucket in (a, b):
            wait = await bucket.try_acquire()
            assert 0.1 < wait <= 0.15 + 0.02
        # A shorter penalty does not shorten the block in place.
        await b.penalize(0.01)
        assert await a.try_acquire() > 0.1
        # Nobody gets through early...
        with pytest.raises(RateLimited):
            await b.acquire(max_wait_s=0.05)
        # ... and once it has passed, traffic resumes at the rate, not with a burst.
        started = time.monotonic()
        await b.acquire(max_wait_s=0.5)
        assert time.monotonic() - started < 0.25
        assert await a.try_acquire(5) > 0.05
        with pytest.raises(ValueError, match="seconds"):
            await a.penalize(math.inf)
    finally:
        await other.aclose()


async def test_two_replicas_share_one_budget(redis: Redis, services: Services) -> None:
    spec = BucketSpec(rate_per_s=1.0, burst=5)
    other = Redis.from_url(services.redis_url)  # a second replica
    try:
        a = TokenBucket(redis, "google:user:acc-1", spec)
        b = TokenBucket(other, "google:user:acc-1", spec)
        unrelated = TokenBucket(other, "google:user:acc-2", spec)
        assert await a.try_acquire(3) == 0.0
        assert await b.try_acquire(3) > 0.0
        assert await b.try_acquire(2) == 0.0
        assert await a.try_acquire() > 0.0
        # Another account's bucket is another budget.
        assert await drain(unrelated) == 5
    finally:
        await other.aclose()


async def test_expired_bucket_reads_as_full(redis: Redis) -> None:
    bucket = TokenBucket(redis, "expiry", BucketSpec(rate_per_s=1.0, burst=3))
    assert await drain(bucket) == 3
    await redis.delete(bucket.key)  # what PEXPIRE does once the bucket would be full anyway
    assert await drain(bucket) == 3


async def test_redis_down_raises_a_clear_transient_error() -> None:
    with tempfile.TemporaryDirectory(prefix="iw-rl-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis").start()
        client = Redis.from_url(server.url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            bucket = TokenBucket(client, "google", BucketSpec(rate_per_s=10.0, burst=2))
            assert await bucket.try_acquire() == 0.0
            server.kill()
            started = time.monotonic()
            with pytest.raises(RateLimiterUnavailable, match="Redis unavailable") as caught:
                await bucket.try_acquire()
            assert isinstance(caught.value.__cause__, RedisError | OSError)
            with pytest.raises(RateLimiterUnavailable):
                await bucket.acquire(max_wait_s=1.0)
            with pytest.raises(RateLimiterUnavailable):
                await bucket.penalize(1.0)
            assert time.monotonic() - started < 1.0
        finally:
            await client.aclose()
            server.stop()

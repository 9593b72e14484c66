"""Shard leases and membership against the real Redis: only the holder renews or releases, a
restarted replica is a new holder, lapsed heartbeats leave the membership, and an unreachable
Redis is reported as such (the caller then stops its shards)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from cluster.keys import MEMBERS_KEY, lease_key
from cluster.leases import LeaseStore, LeaseStoreUnavailable


async def until(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 5.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_only_the_holder_renews_and_releases(redis: Redis) -> None:
    a = LeaseStore(redis, "replica-a", ttl_s=10)
    b = LeaseStore(redis, "replica-b", ttl_s=10)
    assert await a.try_claim(7)
    assert not await b.try_claim(7)
    assert await a.owners([7, 8]) == {7: "replica-a", 8: None}
    assert await b.try_claim_many([7, 8, 9]) == {7: False, 8: True, 9: True}
    assert await a.owners([7, 8, 9]) == {7: "replica-a", 8: "replica-b", 9: "replica-b"}
    assert await b.release(8) and await b.release(9)
    assert await a.renew([7, 8]) == {7: True, 8: False}
    assert await b.renew([7]) == {7: False}
    assert not await b.release(7)
    assert await redis.get(lease_key(7)) == a.holder.encode()
    assert await a.release(7)
    assert await b.try_claim(7)
    assert await b.owners([7]) == {7: "replica-b"}


async def test_renew_extends_the_expiry(redis: Redis) -> None:
    store = LeaseStore(redis, "replica-a", ttl_s=10)
    assert await store.try_claim(1)
    await redis.pexpire(lease_key(1), 500)
    assert await store.renew([1]) == {1: True}
    assert 9_000 < await redis.pttl(lease_key(1)) <= 10_000


async def test_a_restarted_replica_cannot_renew_its_former_lease(redis: Redis) -> None:
    before = LeaseStore(redis, "replica-a", ttl_s=10)
    after = LeaseStore(redis, "replica-a", ttl_s=10)
    assert await before.try_claim(3)
    assert await after.renew([3]) == {3: False}
    assert not await after.release(3)
    assert await after.owners([3]) == {3: "replica-a"}  # the same replica id, another holder


async def test_an_unrenewed_lease_expires_and_is_claimable(redis: Redis) -> None:
    a = LeaseStore(redis, "replica-a", ttl_s=0.1)
    b = LeaseStore(redis, "replica-b", ttl_s=10)
    assert await a.try_claim(5)

    async def taken() -> bool:
        return await b.try_claim(5)

    await until(taken, "the lapsed lease to be claimable")
    assert await a.renew([5]) == {5: False}


async def test_membership_follows_heartbeats(redis: Redis) -> None:
    a = LeaseStore(redis, "replica-a", ttl_s=10)
    b = LeaseStore(redis, "replica-b", ttl_s=0.1)
    assert (await b.heartbeat()).next_lapse_s is None  # alone
    seen = await a.heartbeat()
    assert seen.members == ["replica-a", "replica-b"]
    assert seen.next_lapse_s is not None and seen.next_lapse_s <= 0.1  # b's, not a's own 10 s

    async def b_lapsed() -> bool:
        return (await a.heartbeat()).members == ["replica-a"]

    await until(b_lapsed, "replica-b's heartbeat to lapse")
    await a.leave()
    assert await redis.zcard(MEMBERS_KEY) == 0


def test_a_replica_id_with_the_separator_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot contain"):
        LeaseStore(Redis(), "a/b", ttl_s=1)


async def test_unreachable_redis_is_reported() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    store = LeaseStore(client, "replica-a", ttl_s=1)
    try:
        with pytest.raises(LeaseStoreUnavailable):
            await store.renew([1])
        with pytest.raises(LeaseStoreUnavailable):
            await store.heartbeat()
        with pytest.raises(LeaseStoreUnavailable):
            await store.try_claim(1)
    finally:
        await client.aclose()

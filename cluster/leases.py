"""Shard leases and replica membership in Redis: the I/O edge (timing lives in lease_state).

Layout (docs/shards.md):
- ``iw:{shard:<n>}:lease``: a string holding the holder token, with a PX expiry; it shares its
  hash tag with the shard's notification stream, so both live in one Redis Cluster slot;
- ``iw:{members}``: a sorted set of replica ids scored by the Redis time (ms) at which each
  replica's heartbeat lapses.

Invariants:
- a lease is taken only if absent (``SET NX PX``); it is renewed and released only by scripts
  that first compare the holder token, so a replica never extends or deletes a lease it lost;
- the holder token is ``<replica id>/<random nonce>``: a restarted replica with the same id is a
  different holder and cannot renew what its former incarnation held;
- membership is judged by Redis ``TIME`` inside a script, never by a replica's own clock;
- Redis being unreachable raises ``LeaseStoreUnavailable``: the caller must stop its shards,
  since it can no longer renew them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from cluster.keys import MEMBERS_KEY, lease_key

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.MasterDownError,
    OSError,
)

# KEYS[1] lease; ARGV[1] holder, ARGV[2] ttl ms. 1 if extended, 0 if no longer ours (also the
# maintenance lease's).
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] lease; ARGV[1] holder. 1 if deleted, 0 if it was not ours.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] members; ARGV[1] replica id, ARGV[2] ttl ms. Refresh this replica's heartbeat, drop
# lapsed ones, and return the Redis time (ms) then the live members with their lapse times,
# all judged by the Redis clock.
_HEARTBEAT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
local reply = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
table.insert(reply, 1, tostring(now_ms))
return reply
"""


@dataclass(frozen=True, slots=True)
class Membership:
    """The live replicas after a heartbeat, and when the next other one lapses."""

    members: list[str]  # sorted, this replica included
    next_lapse_s: float | None  # seconds until another member lapses unless it beats again


class LeaseStoreUnavailable(Exception):
    """Redis could not be reached: leases cannot be renewed, so shards must stop."""


def replica_of(holder: str) -> str:
    """The replica id part of a holder token."""
    return holder.rsplit("/", 1)[0]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LeaseStore:
    """One replica's view of the leases and the membership; every call is one round trip."""

    def __init__(self, redis: Redis, replica_id: str, *, ttl_s: float) -> None:
        if "/" in replica_id:
            raise ValueError(f"a replica id cannot contain '/': {replica_id!r}")
        self.redis = redis
        self.replica_id = replica_id
        self.holder = f"{replica_id}/{secrets.token_hex(8)}"
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self._renew = redis.register_script(RENEW_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)
        self._heartbeat = redis.register_script(_HEARTBEAT)

    async def heartbeat(self) -> Membership:
        """Announce this replica for one TTL; the live members and the next lapse among them."""
        reply = await self._guard(
            self._heartbeat(keys=[MEMBERS_KEY], args=[self.replica_id, self.ttl_ms])
        )
        now_ms = int(_text(reply[0]))
        members: list[str] = []
        lapses: list[float] = []
        for name, score in zip(reply[1::2], reply[2::2], strict=True):
            member = _text(name)
            members.append(member)
            if member != self.replica_id:
                lapses.append(max(0.0, (float(_text(score)) - now_ms) / 1000))
        return Membership(sorted(members), min(lapses, default=None))

    async def leave(self) -> None:
        """Withdraw from the membership at once (clean shutdown)."""
        await self._guard(self.redis.zrem(MEMBERS_KEY, self.replica_id))

    async def try_claim(self, shard: int) -> bool:
        """Take ``shard``'s lease if nobody holds it."""
        return (await self.try_claim_many([shard]))[shard]

    async def try_claim_many(self, shards: Sequence[int]) -> dict[int, bool]:
        """Take each lease nobody holds, in one pipelined round trip; True where taken."""
        if not shards:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.set(lease_key(shard), self.holder, nx=True, px=self.ttl_ms)
            replies = await self._guard(pipe.execute())
        return {shard: bool(r) for shard, r in zip(shards, replies, strict=True)}

    async def renew(self, shards: Iterable[int]) -> dict[int, bool]:
        """Extend each lease still ours by one TTL; False for a lease lost (taken or expired)."""
        ordered = list(shards)
        if not ordered:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in ordered:
                await self._renew(
                    keys=[lease_key(shard)], args=[self.holder, self.ttl_ms], client=pipe
                )
            replies = await self._guard(pipe.execute())
        return {shard: bool(r) for shard, r in zip(ordered, replies, strict=True)}

    async def release(self, shard: int) -> bool:
        """Give ``shard`` up if still ours; False if it was not (already lost)."""
        reply = await self._guard(self._release(keys=[lease_key(shard)], args=[self.holder]))
        return bool(reply)

    async def owners(self, shards: Sequence[int]) -> dict[int, str | None]:
        """The replica holding each shard's lease, or None where it is free.

        One MGET: a pipeline of single GETs costs the client far more to pack and parse, and
        the keeper reads every lease often. (On Redis Cluster the keys span slots: a cluster
        client splits the read by slot, e.g. redis-py's ``mget_nonatomic``.)"""
        if not shards:
            return {}
        replies = await self._guard(self.redis.mget([lease_key(shard) for shard in shards]))
        return {
            shard: None if reply is None else replica_of(_text(reply))
            for shard, reply in zip(shards, replies, strict=True)
        }

    async def _guard(self, call: Any) -> Any:
        try:
            return await call
        except _UNAVAILABLE as error:
            raise LeaseStoreUnavailable(f"Redis unreachable: {error}") from error

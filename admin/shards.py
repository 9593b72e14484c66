"""The shards overview: lease holders and their time left (Redis), fencing epochs and account
counts (Postgres), and the live replicas. Read only; never touches a lease."""

from __future__ import annotations

from redis.asyncio import Redis

from admin.context import Call, Deps
from admin.models import MemberOut, ShardOut, ShardsOverview
from cluster.keys import MEMBERS_KEY, lease_key
from cluster.leases import replica_of
from store.db import Queryable


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_leases(redis: Redis, shard_count: int) -> list[tuple[str | None, int | None]]:
    """Per shard: the holding replica and its lease's milliseconds left (None where free)."""
    keys = [lease_key(shard) for shard in range(shard_count)]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.mget(keys)
        for key in keys:
            pipe.pttl(key)
        replies = await pipe.execute()
    holders, ttls = replies[0], replies[1:]
    leases: list[tuple[str | None, int | None]] = []
    for holder, ttl in zip(holders, ttls, strict=True):
        if holder is None:
            leases.append((None, None))
        else:
            leases.append((replica_of(_text(holder)), int(ttl) if int(ttl) >= 0 else None))
    return leases


async def read_members(redis: Redis) -> list[MemberOut]:
    """The replicas whose heartbeat has not lapsed, by the Redis clock."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.zrange(MEMBERS_KEY, 0, -1, withscores=True)
        now, members = await pipe.execute()
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    return [
        MemberOut(replica_id=_text(name), lapses_in_ms=int(score) - now_ms)
        for name, score in members
        if score > now_ms
    ]


async def read_shard_rows(
    conn: Queryable,
) -> tuple[dict[int, tuple[int, str | None]], dict[int, int]]:
    """Epoch and owner per taken shard, and the account count per shard."""
    epochs = {
        int(r["shard"]): (int(r["epoch"]), r["owner"])
        for r in await conn.fetch("SELECT shard, epoch, owner FROM shard_epochs")
    }
    counts = {
        int(r["shard"]): int(r["n"])
        for r in await conn.fetch("SELECT shard, count(*) AS n FROM accounts GROUP BY shard")
    }
    return epochs, counts


async def shards_overview(deps: Deps, _call: Call) -> ShardsOverview:
    """``GET /shards``."""
    count = deps.settings.shard_count
    leases = await read_leases(deps.redis, count)
    members = await read_members(deps.redis)
    epochs, counts = await read_shard_rows(deps.pool)
    shards = []
    for shard, (holder, ttl) in enumerate(leases):
        epoch, owner = epochs.get(shard, (None, None))
        shards.append(
            ShardOut(
                shard=shard,
                holder=holder,
                lease_ms_left=ttl,
                epoch=epoch,
                epoch_owner=owner,
                accounts=counts.get(shard, 0),
            )
        )
    return ShardsOverview(shard_count=count, members=members, shards=shards)

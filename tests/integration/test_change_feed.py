"""The change-feed relay against real Postgres and Redis: order, fields, at-least-once, lock."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime
from typing import cast

from redis.asyncio import Redis

from cluster.change_relay import publish_pending, run_relay, xadd_changes
from store.change_feed import (
    RELAY_LOCK_NAMESPACE,
    ChangeItem,
    ChangeKind,
    ChangeRow,
    fetch_pending,
    record_changes,
)
from store.db import PgPool, transaction

STREAM = "iw:changes"
ACCOUNT = uuid.UUID("00000000-0000-4000-8000-00000000000a")


async def _record(pool: PgPool, n: int, *, start: int = 0) -> list[ChangeRow]:
    kinds: tuple[ChangeKind, ...] = ("created", "updated", "deleted")
    items: list[ChangeItem] = [
        (
            f"e{i}",
            kinds[i % 3],
            None if i % 2 else f'"v{i}"',
            "deleted_at_provider" if kinds[i % 3] == "deleted" else None,
        )
        for i in range(start, start + n)
    ]
    async with transaction(pool) as conn:
        return await record_changes(conn, ACCOUNT, "cal", items, origin="provider")


def _decode(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in fields.items()}


async def _stream(redis: Redis) -> list[dict[str, str]]:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(STREAM))
    return [_decode(fields) for _, fields in entries]


async def _read(redis: Redis, count: int) -> list[dict[str, str]]:
    """Block on XREAD until ``count`` entries arrived (a consumer, no polling)."""
    got: list[dict[str, str]] = []
    last = b"0"
    async with asyncio.timeout(10):
        while len(got) < count:
            reply = await redis.xread({STREAM: last}, block=5000)
            for _, entries in cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], reply
            ):
                for entry_id, fields in entries:
                    last = entry_id
                    got.append(_decode(fields))
    return got


async def _unpublished(pool: PgPool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM changes WHERE published_at IS NULL"))


async def test_record_changes_numbers_in_given_order(pool: PgPool) -> None:
    rows = await _record(pool, 5)
    assert [r.event_id for r in rows] == ["e0", "e1", "e2", "e3", "e4"]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    async with transaction(pool) as conn:
        assert await record_changes(conn, ACCOUNT, "cal", [], origin="outbox") == []


async def test_publishes_in_id_order_with_documented_fields(pool: PgPool, redis: Redis) -> None:
    rows = await _record(pool, 7)
    assert await publish_pending(pool, redis, batch=3) == 7
    entries = await _stream(redis)
    assert [int(e["change_id"]) for e in entries] == [r.id for r in rows]
    first = entries[0]
    assert set(first) == {
        "change_id",
        "account_id",
        "calendar_id",
        "event_id",
        "kind",
        "origin",
        "etag",
        "created_at",
        "reason",
    }
    assert (first["account_id"], first["calendar_id"], first["event_id"]) == (
        str(ACCOUNT),
        "cal",
        "e0",
    )
    assert (first["kind"], first["origin"], first["etag"]) == ("created", "provider", '"v0"')
    assert entries[1]["etag"] == ""  # unknown etag
    assert (first["reason"], entries[2]["reason"]) == ("", "deleted_at_provider")
    assert datetime.fromisoformat(first["created_at"]).utcoffset() is not None
    assert await _unpublished(pool) == 0
    assert await publish_pending(pool, redis) == 0
    assert len(await _stream(redis)) == 7


async def test_crash_between_xadd_and_mark_republishes(pool: PgPool, redis: Redis) -> None:
    await _record(pool, 4)
    # A relay that dies after its XADD but before marking the rows published.
    async with pool.acquire() as conn:
        await xadd_changes(redis, STREAM, await fetch_pending(conn, 500))
    assert await _unpublished(pool) == 4
    await _record(pool, 2, start=4)
    assert await publish_pending(pool, redis) == 6

    entries = await _stream(redis)
    assert len(entries) == 10  # the first four twice: at least once
    seen: set[str] = set()
    applied: list[str] = []
    for entry in entries:  # a consumer deduplicating by change_id
        if entry["change_id"] not in seen:
            seen.add(entry["change_id"])
            applied.append(entry["event_id"])
    assert applied == [f"e{i}" for i in range(6)]
    assert await _unpublished(pool) == 0


async def test_relay_skips_while_another_holds_the_lock(pool: PgPool, redis: Redis) -> None:
    await _record(pool, 3)
    async with pool.acquire() as other:
        locked = await other.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", RELAY_LOCK_NAMESPACE
        )
        assert locked
        assert await publish_pending(pool, redis) == 0
        assert await _stream(redis) == []
        await other.execute(
            "SELECT pg_advisory_unlock($1, hashtext(current_schema()))", RELAY_LOCK_NAMESPACE
        )
    assert await publish_pending(pool, redis) == 3


async def test_concurrent_relays_never_interleave(pool: PgPool, redis: Redis) -> None:
    rows = await _record(pool, 300)
    counts = await asyncio.gather(*(publish_pending(pool, redis, batch=20) for _ in range(4)))
    # A relay that lost the race returns 0; no change is published twice or out of order.
    assert sum(counts) == 300
    entries = await _stream(redis)
    assert [int(e["change_id"]) for e in entries] == [r.id for r in rows]


async def test_run_relay_publishes_until_cancelled(pool: PgPool, redis: Redis) -> None:
    relay = asyncio.create_task(run_relay(pool, redis, interval_s=0.01))
    try:
        await _record(pool, 5)
        assert len(await _read(redis, 5)) == 5
        await _record(pool, 1, start=5)
        assert len(await _read(redis, 6)) == 6
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
    assert relay.cancelled()
    assert [e["event_id"] for e in await _stream(redis)] == [f"e{i}" for i in range(6)]

"""The change-feed relay: publishes committed ``changes`` rows to the changes stream in Redis.

Contract (at-least-once, deduplicate by ``change_id``): see ``store.change_feed``. The relay reads
unpublished rows in id order under a transaction-level advisory lock (one relay at a time per
schema), XADDs them, and only then marks them published; a crash in between republishes them.
The stream (``cluster.keys.CHANGES_STREAM``) is not trimmed here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from cluster.keys import CHANGES_STREAM
from store.change_feed import RELAY_LOCK_NAMESPACE, ChangeRow, fetch_pending, mark_published
from store.db import PgPool


def stream_fields(change: ChangeRow) -> dict[str, str]:
    """The stream entry of one change (see the module docstring)."""
    return {
        "change_id": str(change.id),
        "account_id": str(change.account_id),
        "calendar_id": change.calendar_id,
        "event_id": change.event_id,
        "kind": change.kind,
        "origin": change.origin,
        "etag": change.etag or "",
        "created_at": change.created_at.astimezone(UTC).isoformat(),
        "reason": change.reason or "",  # why a deleted event left the store
    }


async def xadd_changes(redis: Redis, stream: str, changes: Sequence[ChangeRow]) -> None:
    """XADD the changes in order, in one round trip (no MULTI: order is all we need)."""
    async with redis.pipeline(transaction=False) as pipe:
        for change in changes:
            fields: dict[FieldT, EncodableT] = {k: v for k, v in stream_fields(change).items()}
            pipe.xadd(stream, fields)
        await pipe.execute()


async def publish_pending(
    pool: PgPool, redis: Redis, *, stream: str = CHANGES_STREAM, batch: int = 500
) -> int:
    """Publish every unpublished change; the number published (0 if another relay runs)."""
    total = 0
    async with pool.acquire() as conn:
        while True:
            async with conn.transaction():
                locked = await conn.fetchval(
                    "SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))",
                    RELAY_LOCK_NAMESPACE,
                )
                if not locked:
                    return total
                pending = await fetch_pending(conn, batch)
                if pending:
                    await xadd_changes(redis, stream, pending)
                    # A crash here republishes this batch next run (at-least-once, see above).
                    await mark_published(conn, [c.id for c in pending])
            total += len(pending)
            if len(pending) < batch:
                return total


async def run_relay(
    pool: PgPool,
    redis: Redis,
    *,
    stream: str = CHANGES_STREAM,
    interval_s: float = 0.5,
    batch: int = 500,
) -> None:
    """Publish pending changes every ``interval_s`` until cancelled; errors propagate."""
    while True:
        await publish_pending(pool, redis, stream=stream, batch=batch)
        await asyncio.sleep(interval_s)

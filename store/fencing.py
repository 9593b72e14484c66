"""Shard fencing: epochs that make a former owner's late writes fail instead of landing.

A replica takes a shard with ``take_shard``, which bumps ``shard_epochs.epoch`` and returns the
new value. Every actor write then runs inside ``fenced_transaction(pool, shard, epoch)``, whose
first statement is ``SELECT epoch ... FOR SHARE``: the transaction proceeds only while the epoch
it holds is still the current one.

Why FOR SHARE (not a plain read, not FOR UPDATE):
- A taker's ``UPDATE`` needs the row exclusively, so it waits until every in-flight fenced
  transaction on that shard has committed or rolled back; once it commits, every later fenced
  transaction reads the new epoch (the lock read sees the latest committed row, not a snapshot)
  and raises ``StaleEpoch``. No write of the old owner can commit after the new epoch exists.
- Share locks do not conflict with each other, so the owner's actors write concurrently.

Invariants:
- Epochs only grow; a shard's first take returns 1.
- A ``StaleEpoch`` transaction is rolled back before the caller's block runs: it writes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from store.db import PgPool, PgPoolConnection, Queryable


class StaleEpoch(Exception):
    """The shard was taken by another owner since this epoch was issued."""

    def __init__(self, shard: int, held: int, current: int | None) -> None:
        super().__init__(f"shard {shard}: epoch {held} is stale (current: {current})")
        self.shard = shard
        self.held = held
        self.current = current


async def take_shard(conn: Queryable, shard: int, owner: str) -> int:
    """Become the owner of ``shard``; return the new epoch (1 on the first take)."""
    await conn.execute(
        "INSERT INTO shard_epochs (shard) VALUES ($1) ON CONFLICT (shard) DO NOTHING", shard
    )
    epoch = await conn.fetchval(
        "UPDATE shard_epochs SET epoch = epoch + 1, owner = $2, taken_at = now()"
        " WHERE shard = $1 RETURNING epoch",
        shard,
        owner,
    )
    return int(epoch)


async def take_shards(conn: Queryable, shards: Sequence[int], owner: str) -> dict[int, int]:
    """Become the owner of every shard of ``shards`` in one statement; their new epochs."""
    if not shards:
        return {}
    ordered = sorted(set(shards))
    await conn.execute(
        "INSERT INTO shard_epochs (shard) SELECT unnest($1::int[]) ON CONFLICT (shard) DO NOTHING",
        ordered,
    )
    rows = await conn.fetch(
        "UPDATE shard_epochs SET epoch = epoch + 1, owner = $2, taken_at = now()"
        " WHERE shard = ANY($1::int[]) RETURNING shard, epoch",
        ordered,
        owner,
    )
    return {int(row["shard"]): int(row["epoch"]) for row in rows}


async def current_epoch(conn: Queryable, shard: int) -> int | None:
    """The shard's epoch now, or None if it was never taken (no lock taken)."""
    epoch = await conn.fetchval("SELECT epoch FROM shard_epochs WHERE shard = $1", shard)
    return None if epoch is None else int(epoch)


# Fault injection for split-brain tests (``IW_FAULT_HOLD_FILE``): awaited before every epoch
# check, so a write prepared under an old ownership can be held while the shard is taken over.
# None in production.
_hold_before_check: Callable[[], Awaitable[None]] | None = None


def install_fault_hold(hold: Callable[[], Awaitable[None]] | None) -> None:
    """Install (or remove, with None) the hold awaited before every fenced write's check."""
    global _hold_before_check  # noqa: PLW0603 - one process-wide test hook, off by default
    _hold_before_check = hold


@asynccontextmanager
async def fenced_transaction(
    pool: PgPool, shard: int, epoch: int
) -> AsyncIterator[PgPoolConnection]:
    """A transaction holding ``shard``'s epoch row FOR SHARE; StaleEpoch unless it is ``epoch``."""
    if _hold_before_check is not None:
        await _hold_before_check()
    async with pool.acquire() as conn, conn.transaction():
        current = await conn.fetchval(
            "SELECT epoch FROM shard_epochs WHERE shard = $1 FOR SHARE", shard
        )
        if current != epoch:
            # Raising inside the transaction block rolls it back.
            raise StaleEpoch(shard, epoch, None if current is None else int(current))
        yield conn

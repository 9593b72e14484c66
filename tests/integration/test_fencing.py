"""Shard fencing against a real database: epochs, stale writers, and the FOR SHARE handshake."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

import pytest

from sandbox.faults import hold_while_exists
from store.db import PgPool
from store.fencing import (
    StaleEpoch,
    current_epoch,
    fenced_transaction,
    install_fault_hold,
    take_shard,
    take_shards,
)


async def _marker_count(pool: PgPool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM shard_epochs WHERE shard >= 100"))


async def _wait_until_blocked_on_lock(pool: PgPool, pid: int) -> None:
    """Poll pg_stat_activity until backend ``pid`` waits on a heavyweight lock."""
    async with asyncio.timeout(10):
        while True:
            wait = await pool.fetchval(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
            )
            if wait == "Lock":
                return
            await asyncio.sleep(0.01)


async def test_take_shard_increments_the_epoch(pool: PgPool) -> None:
    assert await current_epoch(pool, 3) is None
    assert await take_shard(pool, 3, "replica-a") == 1
    assert await take_shard(pool, 3, "replica-b") == 2
    assert await take_shard(pool, 4, "replica-b") == 1
    row = await pool.fetchrow("SELECT epoch, owner, taken_at FROM shard_epochs WHERE shard = 3")
    assert row is not None
    assert (row["epoch"], row["owner"]) == (2, "replica-b")
    assert row["taken_at"] is not None


async def test_take_shards_takes_many_in_one_statement(pool: PgPool) -> None:
    assert await take_shard(pool, 11, "replica-a") == 1
    assert await take_shards(pool, [12, 11, 13], "replica-b") == {11: 2, 12: 1, 13: 1}
    assert await take_shards(pool, [], "replica-b") == {}
    owners = await pool.fetch("SELECT shard, owner FROM shard_epochs WHERE shard >= 11")
    assert {r["shard"]: r["owner"] for r in owners} == dict.fromkeys([11, 12, 13], "replica-b")


async def test_current_epoch_commits(pool: PgPool) -> None:
    epoch = await take_shard(pool, 0, "a")
    async with fenced_transaction(pool, 0, epoch) as conn:
        await conn.execute("INSERT INTO shard_epochs (shard) VALUES (100)")
    assert await _marker_count(pool) == 1


async def test_stale_epoch_raises_and_writes_nothing(pool: PgPool) -> None:
    old = await take_shard(pool, 0, "a")
    await take_shard(pool, 0, "b")
    ran = False
    with pytest.raises(StaleEpoch) as caught:
        async with fenced_transaction(pool, 0, old) as conn:
            ran = True
            await conn.execute("INSERT INTO shard_epochs (shard) VALUES (100)")
    assert not ran
    assert (caught.value.held, caught.value.current) == (1, 2)
    assert await _marker_count(pool) == 0


async def test_never_taken_shard_is_stale(pool: PgPool) -> None:
    with pytest.raises(StaleEpoch):
        async with fenced_transaction(pool, 9, 1):
            pass


async def test_error_in_block_rolls_back(pool: PgPool) -> None:
    epoch = await take_shard(pool, 0, "a")
    with pytest.raises(RuntimeError):
        async with fenced_transaction(pool, 0, epoch) as conn:
            await conn.execute("INSERT INTO shard_epochs (shard) VALUES (100)")
            raise RuntimeError("boom")
    assert await _marker_count(pool) == 0


async def test_taker_waits_for_in_flight_fenced_write(pool: PgPool) -> None:
    epoch = await take_shard(pool, 0, "a")
    async with pool.acquire() as taker:
        taker_pid = taker.get_server_pid()
        async with fenced_transaction(pool, 0, epoch) as conn:
            take = asyncio.create_task(take_shard(taker, 0, "b"))
            # The taker's UPDATE queues behind our FOR SHARE lock instead of overtaking us.
            await _wait_until_blocked_on_lock(pool, taker_pid)
            assert not take.done()
            await conn.execute("INSERT INTO shard_epochs (shard) VALUES (100)")
        # Our commit releases the lock; the taker then gets the next epoch.
        assert await asyncio.wait_for(take, 10) == epoch + 1
    assert await _marker_count(pool) == 1
    with pytest.raises(StaleEpoch):
        async with fenced_transaction(pool, 0, epoch):
            pass
    async with fenced_transaction(pool, 0, epoch + 1):
        pass


async def test_fenced_writers_share_the_epoch_row(pool: PgPool) -> None:
    epoch = await take_shard(pool, 0, "a")
    async with fenced_transaction(pool, 0, epoch) as first:
        # A second writer of the same owner is not blocked by the first (share locks).
        async with asyncio.timeout(10), fenced_transaction(pool, 0, epoch) as second:
            await second.execute("INSERT INTO shard_epochs (shard) VALUES (101)")
        await first.execute("INSERT INTO shard_epochs (shard) VALUES (100)")
    assert await _marker_count(pool) == 2


async def test_a_write_held_across_a_takeover_is_refused(pool: PgPool, tmp_path: Path) -> None:
    """Split brain in one process: a write prepared under the old epoch is held before its check
    (the ``IW_FAULT_HOLD_FILE`` hook) while another owner takes the shard; released, it is
    refused and writes nothing."""
    epoch = await take_shard(pool, 7, "old-owner")
    hold = tmp_path / "hold"
    hold.touch()
    install_fault_hold(partial(hold_while_exists, hold))
    try:

        async def late_write() -> None:
            async with fenced_transaction(pool, 7, epoch) as conn:
                await conn.execute("UPDATE shard_epochs SET owner = 'late' WHERE shard = 7")

        writer = asyncio.create_task(late_write(), name="held-writer")
        await asyncio.sleep(0.2)
        assert not writer.done()  # held before its check, holding no lock
        install_fault_hold(None)  # the taker's own writes are not held
        assert await take_shard(pool, 7, "new-owner") == epoch + 1
        hold.unlink()
        with pytest.raises(StaleEpoch):
            await writer
    finally:
        install_fault_hold(None)
    assert await pool.fetchval("SELECT owner FROM shard_epochs WHERE shard = 7") == "new-owner"

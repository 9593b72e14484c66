"""The outbox's daily cleanup: its schedule (pure) and its runs against a real database."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
import structlog

from outbox import client
from outbox.model import ItemState
from store import outbox as store
from store.accounts import Account, create_account
from store.db import PgPool, create_pool
from supervisor.outbox_maintenance import (
    DAY_S,
    CleanupSchedule,
    cleanup_once,
    run_outbox_maintenance,
)
from tests.conftest import SCHEMA
from tests.test_cli import free_port

RETENTION = timedelta(days=30)
SCHEDULE = CleanupSchedule(first_after_s=60, jitter_s=0, retry_after_s=300)


class Stop(Exception):
    """Ends the loop under test from its fake sleep."""


@pytest.fixture
async def account(pool: PgPool) -> Account:
    return await create_account(pool, provider="google", external_user_id="u1", shard_count=8)


async def _items(pool: PgPool, account: Account, count: int) -> list[int]:
    return [
        await client.enqueue_cancel(
            pool,
            account.id,
            workspace_id="w1",
            source_type="task",
            source_id=f"t{n}",
            event_type="BLOCKER_DEADLINE",
            version=1,
        )
        for n in range(count)
    ]


async def _age(pool: PgPool, ids: list[int], days: int) -> None:
    await pool.execute(
        "UPDATE outbox SET done_at = now() - make_interval(days => $2),"
        " created_at = now() - make_interval(days => $2 + 1) WHERE id = ANY($1::bigint[])",
        ids,
        days,
    )


def test_schedule_first_soon_then_daily_and_sooner_after_a_failure() -> None:
    schedule = CleanupSchedule(first_after_s=60, every_s=DAY_S, jitter_s=300, retry_after_s=600)
    rng = random.Random(7)
    first = schedule.next_delay_s(runs=0, failed=False, rng=rng)
    daily = schedule.next_delay_s(runs=1, failed=False, rng=rng)
    retry = schedule.next_delay_s(runs=3, failed=True, rng=rng)
    assert 60 <= first <= 360
    assert DAY_S <= daily <= DAY_S + 300
    assert 600 <= retry <= 900
    assert CleanupSchedule(jitter_s=0).next_delay_s(runs=0, failed=True, rng=rng) == 60
    with pytest.raises(ValueError, match="runs"):
        schedule.next_delay_s(runs=-1, failed=False, rng=rng)
    with pytest.raises(ValueError, match="positive"):
        CleanupSchedule(every_s=0)


async def test_cleanup_removes_only_old_finished_items(pool: PgPool, account: Account) -> None:
    ids = await _items(pool, account, 7)
    old_done, old_skipped, recent_done, old_dead, old_pending = (
        ids[:2],
        ids[2:4],
        ids[4],
        ids[5],
        ids[6],
    )
    await store.mark_done(pool, [*old_done, recent_done])
    await store.mark_skipped(pool, old_skipped, "stale")
    await store.dead_letter(pool, old_dead, attempts=10, error="gone for good")
    await _age(pool, [*old_done, *old_skipped], days=31)
    await _age(pool, [recent_done], days=29)
    # Dead letters and pending items have no done_at; old ones stay however old they are.
    await pool.execute(
        "UPDATE outbox SET created_at = now() - interval '400 days' WHERE id = ANY($1::bigint[])",
        [old_dead, old_pending],
    )
    with structlog.testing.capture_logs() as logs:
        assert await cleanup_once(pool, RETENTION) == 4
    assert logs == [
        {"event": "outbox cleanup", "log_level": "info", "removed": 4, "retention_days": 30.0}
    ]
    left = await pool.fetch("SELECT id, state FROM outbox ORDER BY id")
    assert [(r["id"], r["state"]) for r in left] == [
        (recent_done, ItemState.DONE.value),
        (old_dead, ItemState.DEAD_LETTER.value),
        (old_pending, ItemState.PENDING.value),
    ]
    assert await cleanup_once(pool, RETENTION) == 0  # again: nothing left to do


async def test_replicas_cleaning_at_once_delete_each_row_once(
    pool: PgPool, account: Account
) -> None:
    ids = await _items(pool, account, 12)
    await store.mark_done(pool, ids)
    await _age(pool, ids, days=40)
    removed = await asyncio.gather(*(cleanup_once(pool, RETENTION) for _ in range(3)))
    assert sum(removed) == 12
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


def _stop_after(count: int, delays: list[float]) -> Callable[[float], Awaitable[None]]:
    """A fake sleep that records each delay and ends the loop at the ``count``-th."""

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == count:
            raise Stop

    return sleep


async def test_loop_runs_soon_after_start_then_daily(pool: PgPool, account: Account) -> None:
    ids = await _items(pool, account, 2)
    await store.mark_done(pool, ids)
    await _age(pool, ids, days=31)
    delays: list[float] = []
    with structlog.testing.capture_logs() as logs, pytest.raises(Stop):
        await run_outbox_maintenance(
            pool, RETENTION, schedule=SCHEDULE, sleep=_stop_after(3, delays)
        )
    assert delays == [60, DAY_S, DAY_S]
    assert [(entry["event"], entry["removed"]) for entry in logs] == [
        ("outbox cleanup", 2),
        ("outbox cleanup", 0),
    ]


async def test_loop_retries_sooner_while_the_database_is_unreachable() -> None:
    # A real pool on a port where nothing listens: every run meets a refused connection.
    unreachable = await create_pool(
        f"postgresql://iw@127.0.0.1:{free_port()}/iw", SCHEMA, min_size=0
    )
    delays: list[float] = []
    try:
        with structlog.testing.capture_logs() as logs, pytest.raises(Stop):
            await run_outbox_maintenance(
                unreachable, RETENTION, schedule=SCHEDULE, sleep=_stop_after(3, delays)
            )
    finally:
        await unreachable.close()
    assert delays == [60, 300, 300]
    assert [entry["event"] for entry in logs] == ["outbox cleanup failed; trying again later"] * 2


async def test_loop_refuses_a_nonpositive_retention(pool: PgPool) -> None:
    with pytest.raises(ValueError, match="retention"):
        await run_outbox_maintenance(pool, timedelta(0))

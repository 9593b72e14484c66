"""Calendar reconciliation and round bookkeeping against a real database."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from providers.models import CalendarInfo, SyncWindow
from store.accounts import create_account
from store.calendars import (
    CalendarDiff,
    get_calendar_state,
    list_calendar_states,
    reconcile_calendars,
    reset_sync_state,
    start_full_round,
)
from store.db import PgPool, transaction

WINDOW = SyncWindow(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


@pytest.fixture
async def account_id(pool: PgPool) -> UUID:
    account = await create_account(pool, provider="google", external_user_id="u", shard_count=4)
    return account.id


def _cal(cal_id: str, name: str, *, primary: bool = False, synced: bool = True) -> CalendarInfo:
    return CalendarInfo(id=cal_id, name=name, primary=primary, time_zone="UTC", synced=synced)


async def _reconcile(pool: PgPool, account_id: UUID, listed: list[CalendarInfo]) -> CalendarDiff:
    async with transaction(pool) as conn:
        return await reconcile_calendars(conn, account_id, listed)


async def test_reconcile_adds_renames_removes_and_restores(pool: PgPool, account_id: UUID) -> None:
    diff = await _reconcile(pool, account_id, [_cal("primary", "Me", primary=True), _cal("b", "B")])
    assert diff == CalendarDiff(added=("primary", "b"))
    states = await list_calendar_states(pool, account_id)
    assert [(s.id, s.name, s.is_primary, s.removed_at) for s in states] == [
        ("b", "B", False, None),
        ("primary", "Me", True, None),
    ]

    unchanged = await _reconcile(
        pool, account_id, [_cal("primary", "Me", primary=True), _cal("b", "B")]
    )
    assert not unchanged

    diff = await _reconcile(
        pool, account_id, [_cal("primary", "Me", primary=True), _cal("b", "Bee", synced=False)]
    )
    assert diff == CalendarDiff(renamed=("b",), changed=("b",))
    b = await get_calendar_state(pool, account_id, "b")
    assert b is not None
    assert (b.name, b.sync_enabled) == ("Bee", False)

    diff = await _reconcile(pool, account_id, [_cal("primary", "Me", primary=True)])
    assert diff == CalendarDiff(removed=("b",))
    b = await get_calendar_state(pool, account_id, "b")
    assert b is not None and b.removed_at is not None  # kept, only marked
    live = await list_calendar_states(pool, account_id, include_removed=False)
    assert [s.id for s in live] == ["primary"]
    assert not await _reconcile(pool, account_id, [_cal("primary", "Me", primary=True)])

    diff = await _reconcile(pool, account_id, [_cal("primary", "Me", primary=True), _cal("b", "B")])
    assert diff == CalendarDiff(restored=("b",), renamed=("b",), changed=("b",))
    b = await get_calendar_state(pool, account_id, "b")
    assert b is not None
    assert (b.name, b.removed_at, b.sync_enabled) == ("B", None, True)


async def test_restored_calendar_forgets_its_sync_state(pool: PgPool, account_id: UUID) -> None:
    await _reconcile(pool, account_id, [_cal("a", "A")])
    await pool.execute("UPDATE calendars SET delta_token = 'tok' WHERE id = 'a'")
    await _reconcile(pool, account_id, [])
    diff = await _reconcile(pool, account_id, [_cal("a", "A")])
    assert diff == CalendarDiff(restored=("a",))
    a = await get_calendar_state(pool, account_id, "a")
    assert a is not None
    assert (a.delta_token, a.sync_cursor, a.full_round) == (None, None, False)


async def test_rename_keeps_the_delta_token(pool: PgPool, account_id: UUID) -> None:
    await _reconcile(pool, account_id, [_cal("a", "A")])
    await pool.execute("UPDATE calendars SET delta_token = 'tok' WHERE id = 'a'")
    assert await _reconcile(pool, account_id, [_cal("a", "A2")]) == CalendarDiff(renamed=("a",))
    a = await get_calendar_state(pool, account_id, "a")
    assert a is not None and a.delta_token == "tok"


async def test_start_full_round_and_reset(pool: PgPool, account_id: UUID) -> None:
    await _reconcile(pool, account_id, [_cal("a", "A")])
    await pool.execute("UPDATE calendars SET delta_token = 'tok', sync_cursor = 'cur'")
    assert await start_full_round(pool, account_id, "a", WINDOW) == 1
    a = await get_calendar_state(pool, account_id, "a")
    assert a is not None
    assert (a.round, a.full_round, a.delta_token, a.sync_cursor) == (1, True, None, None)
    assert (a.window_start, a.window_end) == (WINDOW.start, WINDOW.end)
    assert await start_full_round(pool, account_id, "a", WINDOW) == 2

    assert await reset_sync_state(pool, account_id, "a")
    a = await get_calendar_state(pool, account_id, "a")
    assert a is not None
    assert (a.round, a.full_round, a.delta_token) == (2, False, None)
    assert not await reset_sync_state(pool, account_id, "missing")
    with pytest.raises(LookupError):
        await start_full_round(pool, account_id, "missing", WINDOW)

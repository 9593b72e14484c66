"""Applying sync pages against a real database: idempotence, changes, mark-and-sweep."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery

from providers.models import (
    CalendarInfo,
    Event,
    EventRemoval,
    EventStatus,
    EventTiming,
    SetAside,
    SyncPage,
    SyncWindow,
)
from store.accounts import create_account
from store.calendars import get_calendar_state, reconcile_calendars, start_full_round
from store.change_feed import ChangeRow
from store.db import PgPool
from store.events import ITEM_REFUSALS, RoundMismatch, apply_sync_page, export_events
from store.fencing import fenced_transaction, take_shard
from store.set_aside import list_set_aside

SHARD = 0
T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
WINDOW = SyncWindow(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


class Sync:
    """One account with calendars "a" and "b" on a shard this test owns."""

    def __init__(self, pool: PgPool, account_id: UUID, epoch: int) -> None:
        self.pool = pool
        self.account_id = account_id
        self.epoch = epoch

    async def apply(
        self, page: SyncPage, calendar_id: str = "a", *, one_by_one: bool = False
    ) -> list[ChangeRow]:
        async with fenced_transaction(self.pool, SHARD, self.epoch) as conn:
            return await apply_sync_page(
                conn, self.account_id, calendar_id, page, one_by_one=one_by_one
            )

    async def start_full(self, calendar_id: str = "a") -> int:
        async with fenced_transaction(self.pool, SHARD, self.epoch) as conn:
            return await start_full_round(conn, self.account_id, calendar_id, WINDOW)

    async def changes(self) -> list[tuple[str, str, str]]:
        rows = await self.pool.fetch("SELECT calendar_id, event_id, kind FROM changes ORDER BY id")
        return [(r["calendar_id"], r["event_id"], r["kind"]) for r in rows]

    async def updated_at(self) -> dict[str, datetime]:
        rows = await self.pool.fetch("SELECT id, updated_at FROM events")
        return {r["id"]: r["updated_at"] for r in rows}

    async def titles(self, calendar_id: str = "a") -> dict[str, str | None]:
        rows = await self.pool.fetch(
            "SELECT id, title FROM events WHERE calendar_id = $1 ORDER BY id", calendar_id
        )
        return {r["id"]: r["title"] for r in rows}


@pytest.fixture
async def sync(pool: PgPool) -> Sync:
    account = await create_account(pool, provider="google", external_user_id="u", shard_count=1)
    listed = [CalendarInfo("a", "A", primary=True), CalendarInfo("b", "B", primary=False)]
    await reconcile_calendars(pool, account.id, listed)
    return Sync(pool, account.id, await take_shard(pool, SHARD, "test"))


def ev(
    event_id: str,
    title: str = "meeting",
    *,
    calendar_id: str = "a",
    etag: str | None = None,
    all_day: bool = False,
    raw: dict[str, Any] | None = None,
) -> Event:
    n = sum(map(ord, event_id)) % 50
    if all_day:
        timing = EventTiming(True, start_date=date(2026, 3, 1 + n % 20), end_date=date(2026, 3, 22))
    else:
        start = T0 + timedelta(hours=n)
        timing = EventTiming(False, start_at=start, end_at=start + timedelta(minutes=30))
    return Event(
        id=event_id,
        calendar_id=calendar_id,
        status=EventStatus.CONFIRMED,
        timing=timing,
        title=title,
        etag=etag or f'"{event_id}-1"',
        raw=raw or {"id": event_id},
    )


def page(
    upserts: list[Event],
    removals: Sequence[str] = (),
    *,
    cursor: str | None = None,
    token: str | None = None,
    full: bool = False,
    calendar_id: str = "a",
) -> SyncPage:
    return SyncPage(
        upserts=tuple(upserts),
        removals=tuple(EventRemoval(i, calendar_id) for i in removals),
        next_cursor=cursor,
        delta_token=token,
        full_sync=full,
    )


def kinds(changes: list[ChangeRow]) -> list[tuple[str, str]]:
    return [(c.event_id, c.kind) for c in changes]


async def _full_sync(sync: Sync, events: list[Event], token: str = "d1") -> list[ChangeRow]:
    await sync.start_full()
    return await sync.apply(page(events, token=token, full=True))


async def test_full_round_over_two_pages_stores_cursor_then_token(sync: Sync) -> None:
    assert await sync.start_full() == 1
    first = await sync.apply(page([ev("e1"), ev("e2")], cursor="c1", full=True))
    assert kinds(first) == [("e1", "created"), ("e2", "created")]
    state = await get_calendar_state(sync.pool, sync.account_id, "a")
    assert state is not None
    assert (state.sync_cursor, state.delta_token, state.full_round) == ("c1", None, True)
    assert state.last_synced_at is None

    second = await sync.apply(page([ev("e3")], ["gone"], token="d1", full=True))
    assert kinds(second) == [("e3", "created")]
    state = await get_calendar_state(sync.pool, sync.account_id, "a")
    assert state is not None
    assert (state.sync_cursor, state.delta_token, state.full_round) == (None, "d1", False)
    assert state.last_synced_at is not None
    assert [c.id for c in first + second] == sorted(c.id for c in first + second)
    assert all(c.origin == "provider" and c.etag for c in first + second)


async def test_crash_after_first_page_resumes_from_cursor(sync: Sync) -> None:
    def first(cal: str) -> SyncPage:
        return page([ev("e1", calendar_id=cal), ev("e2", calendar_id=cal)], cursor="c1", full=True)

    def second(cal: str) -> SyncPage:
        upserts = [ev("e3", calendar_id=cal), ev("e2", "renamed", etag='"e2-2"', calendar_id=cal)]
        return page(upserts, token="d1", full=True, calendar_id=cal)

    # Reference: calendar "b" syncs without a crash.
    await sync.start_full("b")
    await sync.apply(first("b"), "b")
    await sync.apply(second("b"), "b")

    await sync.start_full()
    await sync.apply(first("a"))
    with pytest.raises(RuntimeError):
        async with fenced_transaction(sync.pool, SHARD, sync.epoch) as conn:
            await apply_sync_page(conn, sync.account_id, "a", second("a"))
            raise RuntimeError("crash before commit")
    state = await get_calendar_state(sync.pool, sync.account_id, "a")
    assert state is not None and state.sync_cursor == "c1"  # where the restarted actor resumes
    await sync.apply(second("a"))

    exported = await export_events(sync.pool, sync.account_id)
    by_calendar = {
        c: [_without_calendar(e) for e in exported if e["calendar_id"] == c] for c in "ab"
    }
    assert by_calendar["a"] == by_calendar["b"]
    changes = await sync.changes()
    assert [(e, k) for c, e, k in changes if c == "a"] == [
        (e, k) for c, e, k in changes if c == "b"
    ]
    assert [(e, k) for c, e, k in changes if c == "a"] == [
        ("e1", "created"),
        ("e2", "created"),
        ("e3", "created"),
        ("e2", "updated"),
    ]


def _without_calendar(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "calendar_id"}


async def test_reapplying_a_page_records_nothing(sync: Sync) -> None:
    await sync.start_full()
    full = page([ev("e1"), ev("e2")], cursor="c1", full=True)
    assert len(await sync.apply(full)) == 2
    assert await sync.apply(full) == []
    await sync.apply(page([], token="d1", full=True))
    delta = page([ev("e1", "new title", etag='"e1-2"'), ev("e3")], ["e2"], token="d2")
    assert kinds(await sync.apply(delta)) == [
        ("e1", "updated"),
        ("e3", "created"),
        ("e2", "deleted"),
    ]
    assert await sync.apply(delta) == []
    assert len(await sync.changes()) == 5


async def test_changed_title_gives_one_update_and_identical_none(sync: Sync) -> None:
    await _full_sync(sync, [ev("e1"), ev("e2")])
    before = await sync.pool.fetchval("SELECT updated_at FROM events WHERE id = 'e2'")
    changes = await sync.apply(page([ev("e1", "moved", etag='"e1-2"'), ev("e2")], token="d2"))
    assert kinds(changes) == [("e1", "updated")]
    assert changes[0].etag == '"e1-2"'
    assert (await sync.titles())["e1"] == "moved"
    # An identical row is not rewritten: its updated_at stays.
    assert await sync.pool.fetchval("SELECT updated_at FROM events WHERE id = 'e2'") == before


async def test_etag_or_raw_alone_counts_as_an_update(sync: Sync) -> None:
    await _full_sync(sync, [ev("e1"), ev("e2")])
    changes = await sync.apply(
        page([ev("e1", etag='"e1-9"'), ev("e2", raw={"id": "e2", "x": 1})], token="d2")
    )
    assert kinds(changes) == [("e1", "updated"), ("e2", "updated")]


async def test_an_upsert_outside_the_window_is_a_removal(sync: Sync) -> None:
    # Google's incremental sync is never windowed: an event moved a year ahead comes back as
    # an upsert, and must leave Postgres as a full round over the window would leave it.
    await _full_sync(sync, [ev("e1"), ev("e2"), ev("e3", all_day=True)])
    far = WINDOW.end + timedelta(days=30)
    moved = EventTiming(False, start_at=far, end_at=far + timedelta(hours=1))
    gone = Event("e1", "a", EventStatus.CONFIRMED, moved, title="later", etag='"e1-2"')
    days = EventTiming(True, start_date=date(2025, 12, 1), end_date=date(2025, 12, 2))
    before = Event("e3", "a", EventStatus.CONFIRMED, days, title="earlier", etag='"e3-2"')
    new = Event("e4", "a", EventStatus.CONFIRMED, moved, title="never stored")
    changes = await sync.apply(
        page([gone, ev("e2", "kept", etag='"e2-2"'), before, new], token="d2")
    )
    assert kinds(changes) == [("e2", "updated"), ("e1", "deleted"), ("e3", "deleted")]
    assert [c.reason for c in changes] == [None, "left_window", "left_window"]
    assert await sync.titles() == {"e2": "kept"}


async def test_removals_delete_present_and_ignore_absent(sync: Sync) -> None:
    await _full_sync(sync, [ev("e1")])
    changes = await sync.apply(page([], ["absent", "e1", "e1"], token="d2"))
    assert kinds(changes) == [("e1", "deleted")]
    assert changes[0].etag == '"e1-1"' and changes[0].reason == "deleted_at_provider"
    assert await sync.apply(page([], ["absent"], token="d3")) == []
    assert await sync.titles() == {}


async def test_second_full_round_sweeps_only_unseen_events(sync: Sync) -> None:
    await _full_sync(sync, [ev("e1"), ev("e2"), ev("e3"), ev("e4")])
    await sync.apply(page([ev("e5")], token="d2"))  # created by an incremental sync
    stamps = await sync.updated_at()

    assert await sync.start_full() == 2
    assert await sync.apply(page([ev("e1"), ev("e5")], cursor="c1", full=True)) == []
    assert len(await sync.titles()) == 5  # nothing wiped while the round runs
    last = await sync.apply(page([ev("e3", "changed", etag='"e3-2"')], token="d3", full=True))
    assert kinds(last) == [("e3", "updated"), ("e2", "deleted"), ("e4", "deleted")]
    assert [c.reason for c in last[1:]] == ["deleted_at_provider", "deleted_at_provider"]
    assert await sync.titles() == {"e1": "meeting", "e3": "changed", "e5": "meeting"}
    after = await sync.updated_at()
    assert after["e1"] == stamps["e1"] and after["e5"] == stamps["e5"]
    assert await sync.pool.fetchval("SELECT array_agg(DISTINCT seen_round) FROM events") == [2]


async def test_a_sweep_after_the_window_moved_says_the_event_left_it(sync: Sync) -> None:
    await _full_sync(sync, [ev("e1"), ev("e2")])  # e1 and e2 lie on 2026-03-01
    moved = SyncWindow(datetime(2026, 6, 1, tzinfo=UTC), datetime(2027, 6, 1, tzinfo=UTC))
    async with fenced_transaction(sync.pool, SHARD, sync.epoch) as conn:
        await start_full_round(conn, sync.account_id, "a", moved)
    begin = moved.start + timedelta(days=1)
    later = EventTiming(False, start_at=begin, end_at=begin + timedelta(hours=1))
    fresh = Event("e9", "a", EventStatus.CONFIRMED, later, title="new", etag='"e9-1"')
    changes = await sync.apply(page([fresh], token="d9", full=True))
    removed = {c.event_id: c.reason for c in changes if c.kind == "deleted"}
    assert removed == {"e1": "left_window", "e2": "left_window"}


async def test_sweep_stays_within_its_calendar(sync: Sync) -> None:
    await _full_sync(sync, [ev("e1")])
    await sync.start_full("b")
    await sync.apply(page([ev("x", calendar_id="b")], token="db", full=True, calendar_id="b"), "b")
    assert kinds(await _full_sync(sync, [])) == [("e1", "deleted")]
    assert await sync.titles("b") == {"x": "meeting"}


async def test_page_must_match_the_round(sync: Sync) -> None:
    with pytest.raises(RoundMismatch):
        await sync.apply(page([ev("e1")], token="d1", full=True))
    await sync.start_full()
    with pytest.raises(RoundMismatch):
        await sync.apply(page([ev("e1")], token="d1"))
    with pytest.raises(ValueError, match="belongs to"):
        await sync.apply(page([ev("e1", calendar_id="b")], token="d1", full=True))
    with pytest.raises(LookupError):
        await sync.apply(page([], token="d1"), "missing")
    assert await sync.changes() == []


async def test_duplicate_ids_in_a_page_keep_the_last(sync: Sync) -> None:
    changes = await _full_sync(sync, [ev("e1", "first"), ev("e1", "second")])
    assert kinds(changes) == [("e1", "created")]
    assert await sync.titles() == {"e1": "second"}


async def test_all_day_and_timed_rows(sync: Sync) -> None:
    await _full_sync(sync, [ev("day", all_day=True), ev("timed")])
    rows = {
        r["id"]: r
        for r in await sync.pool.fetch(
            "SELECT id, all_day, start_date, end_date, start_at, end_at FROM events"
        )
    }
    assert rows["day"]["all_day"] and rows["day"]["start_at"] is None
    assert rows["day"]["end_date"] == date(2026, 3, 22)
    assert not rows["timed"]["all_day"] and rows["timed"]["start_date"] is None
    assert rows["timed"]["start_at"].tzinfo is not None
    exported = {e["id"]: e for e in await export_events(sync.pool, sync.account_id)}
    assert exported["day"]["start"] == rows["day"]["start_date"].isoformat()
    assert exported["day"]["end"] == "2026-03-22"
    assert exported["timed"]["start"].endswith("Z")
    assert set(exported["timed"]) == {
        "calendar_id",
        "id",
        "status",
        "all_day",
        "start",
        "end",
        "title",
    }
    with pytest.raises(asyncpg.CheckViolationError):
        await sync.pool.execute(
            "INSERT INTO events (account_id, calendar_id, id, status, all_day, start_at, end_at)"
            " VALUES ($1, 'a', 'bad', 'confirmed', true, now(), now())",
            sync.account_id,
        )


async def test_export_leaves_out_removed_calendars(sync: Sync) -> None:
    await _full_sync(sync, [ev("e1")])
    await reconcile_calendars(sync.pool, sync.account_id, [CalendarInfo("b", "B", primary=False)])
    assert await export_events(sync.pool, sync.account_id) == []
    assert await sync.titles() == {"e1": "meeting"}  # kept until purged


async def test_large_page_is_a_few_statements_not_one_per_event(sync: Sync) -> None:
    await _full_sync(sync, [ev(f"old{i}") for i in range(100)])
    await sync.start_full()
    events = [ev(f"e{i:05}") for i in range(5000)]
    queries: list[str] = []

    def log(record: LoggedQuery) -> None:
        queries.append(record.query)

    async with fenced_transaction(sync.pool, SHARD, sync.epoch) as conn:
        with conn.query_logger(log):
            changes = await apply_sync_page(
                conn, sync.account_id, "a", page(events, ["old0", "old1"], token="d", full=True)
            )
            await asyncio.sleep(0)  # loggers run via call_soon
    # Lock calendar, look for existing ids, COPY (all new; not a logged query), their changes,
    # removals, sweep, continuation, the other changes: independent of page size.
    assert len(queries) == 7, queries
    assert not any(q.startswith("INSERT INTO events") for q in queries)
    assert len(changes) == 5100
    assert kinds(changes)[:1] == [("e00000", "created")]
    assert kinds(changes)[-1] == ("old99", "deleted")
    assert [c.id for c in changes] == sorted(c.id for c in changes)
    assert len(await sync.titles()) == 5000


async def test_a_page_mixing_new_and_stored_events_is_one_upsert(sync: Sync) -> None:
    await _full_sync(sync, [ev(f"e{i:05}") for i in range(100)])
    await sync.start_full()
    events = [ev(f"e{i:05}", title="renamed" if i % 2 else "meeting") for i in range(200)]
    queries: list[str] = []

    def log(record: LoggedQuery) -> None:
        queries.append(record.query)

    async with fenced_transaction(sync.pool, SHARD, sync.epoch) as conn:
        with conn.query_logger(log):
            changes = await apply_sync_page(
                conn, sync.account_id, "a", page(events, [], token="d", full=True)
            )
            await asyncio.sleep(0)
    # Lock, look for existing ids, upsert with its changes, sweep, continuation (asyncpg's own
    # type introspection left out).
    ours = [
        q
        for q in queries
        if q.startswith(("SELECT account_id", "SELECT EXISTS", "WITH input", "DELETE", "UPDATE"))
    ]
    assert len(ours) == 5, queries
    created = [c.event_id for c in changes if c.kind == "created"]
    updated = [c.event_id for c in changes if c.kind == "updated"]
    assert created == [f"e{i:05}" for i in range(100, 200)]
    assert updated == [f"e{i:05}" for i in range(1, 100, 2)]  # only real differences


# --- items set aside ------------------------------------------------------------------------


async def test_an_item_postgres_refuses_is_set_aside_and_the_page_goes_on(sync: Sync) -> None:
    # The parsers clean provider text; this page bypasses them, as any value Postgres refuses
    # would: that item alone is set aside, the rest of the page and its token are stored.
    bad = ev("bad", "nul\x00here")
    page = SyncPage((ev("x"), bad, ev("y")), (), delta_token="t1")
    with pytest.raises(ITEM_REFUSALS):  # the fast path pays no savepoint: the page fails...
        await sync.apply(page)
    assert await sync.titles() == {}
    await sync.apply(page, one_by_one=True)  # ...and is committed again item by item
    assert await sync.titles() == {"x": "meeting", "y": "meeting"}
    state = await get_calendar_state(sync.pool, sync.account_id, "a")
    assert state is not None and state.delta_token == "t1" and state.set_aside == 1
    (row,) = await list_set_aside(sync.pool, sync.account_id)
    assert (row.item_id, row.attempts) == ("bad", 1)
    assert row.reason == "not storable: CharacterNotInRepertoireError"
    # Set aside again, then stored once it is clean: the row goes, the count follows.
    await sync.apply(SyncPage((bad,), (), delta_token="t2"), one_by_one=True)
    (row,) = await list_set_aside(sync.pool, sync.account_id)
    assert row.attempts == 2
    await sync.apply(SyncPage((ev("bad", "clean"),), (), delta_token="t3"))
    assert await list_set_aside(sync.pool, sync.account_id) == []
    state = await get_calendar_state(sync.pool, sync.account_id, "a")
    assert state is not None and state.set_aside == 0
    assert (await sync.titles())["bad"] == "clean"


async def test_an_item_read_aside_is_cleared_when_the_provider_deletes_it(sync: Sync) -> None:
    aside = SetAside("gone", "event.start is not a JSON object", {"id": "gone", "start": "?"})
    nameless = SetAside(None, "event.id is missing", {"summary": "no id"})
    await sync.apply(SyncPage((ev("x"),), (), delta_token="t1", set_aside=(aside, nameless)))
    keys = {row.item_id for row in await list_set_aside(sync.pool, sync.account_id)}
    assert "gone" in keys and any(key.startswith("sha256:") for key in keys)
    removal = EventRemoval(id="gone", calendar_id="a", definite=True)
    await sync.apply(SyncPage((), (removal,), delta_token="t2"))
    keys = {row.item_id for row in await list_set_aside(sync.pool, sync.account_id)}
    assert "gone" not in keys and len(keys) == 1
    state = await get_calendar_state(sync.pool, sync.account_id, "a")
    assert state is not None and state.set_aside == 1

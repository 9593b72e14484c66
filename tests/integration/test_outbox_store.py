"""The outbox SQL edge against a real, migrated database: reads, transitions, NOTIFY, cleanup."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest
import structlog

from outbox.model import EventContent, ItemState, Operation, SourceKey
from providers.models import EventTiming
from store import outbox
from store.accounts import Account, create_account
from store.bindings import begin_create
from store.change_feed import record_changes
from store.db import PgPool, Queryable, transaction
from store.migrate import migrate
from tests.conftest import SCHEMA

FAR = datetime(2100, 1, 1, tzinfo=UTC)
ALL_DAY = EventContent(
    title="Deadline",
    timing=EventTiming(all_day=True, start_date=date(2025, 3, 3), end_date=date(2025, 3, 4)),
    description="ship it",
)
TIMED = EventContent(
    title="Review",
    timing=EventTiming(
        all_day=False,
        start_at=datetime(2025, 3, 3, 9, 30, tzinfo=UTC),
        end_at=datetime(2025, 3, 3, 10, 0, tzinfo=UTC),
        time_zone="Europe/Paris",
    ),
)


def _source(source_id: str = "s1") -> SourceKey:
    return SourceKey("w1", "task", source_id, "BLOCKER_DEADLINE")


@pytest.fixture
async def account(pool: PgPool) -> Account:
    return await create_account(pool, provider="google", external_user_id="u1", shard_count=64)


async def _upsert(
    conn: Queryable, account: Account, source_id: str = "s1", version: int = 1
) -> int:
    return await outbox.enqueue_upsert(
        conn, account.id, _source(source_id), "primary", version=version, content=ALL_DAY
    )


async def test_items_read_back_as_written(pool: PgPool, account: Account) -> None:
    upsert_all_day = await _upsert(pool, account)
    upsert_timed = await outbox.enqueue_upsert(
        pool, account.id, _source("s2"), "cal-2", version=7, content=TIMED
    )
    cancel = await outbox.enqueue_cancel(pool, account.id, _source("s3"), "primary", version=3)
    rebuild = await outbox.enqueue_rebuild(pool, account.id, "w1", "primary")

    items = await outbox.due_items(pool, account.id, now=FAR, limit=10)
    assert [i.id for i in items] == [upsert_all_day, upsert_timed, cancel, rebuild]
    first, timed, cancelled, rebuilt = items
    assert (first.operation, first.source, first.content, first.version) == (
        Operation.UPSERT_EVENT,
        _source(),
        ALL_DAY,
        1,
    )
    assert (timed.calendar_id, timed.content, timed.version) == ("cal-2", TIMED, 7)
    assert (cancelled.operation, cancelled.source, cancelled.content) == (
        Operation.CANCEL_EVENT,
        _source("s3"),
        None,
    )
    assert (rebuilt.operation, rebuilt.source, rebuilt.workspace_id) == (
        Operation.REBUILD_ALL,
        None,
        "w1",
    )
    assert all(i.state is ItemState.PENDING and i.attempts == 0 for i in items)
    assert all(i.created_at is not None and i.next_attempt_at is not None for i in items)
    assert await outbox.get_item(pool, cancel) == cancelled
    assert await outbox.get_item(pool, 10**9) is None


async def test_due_items_filters_by_account_time_and_state(pool: PgPool, account: Account) -> None:
    other = await create_account(pool, provider="microsoft", external_user_id="u2", shard_count=64)
    ids = [await _upsert(pool, account, f"s{n}") for n in range(4)]
    await _upsert(pool, other)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await outbox.schedule_retry(pool, ids[1], attempts=1, next_attempt_at=later, error="503")
    assert await outbox.mark_done(pool, [ids[2]]) == 1

    now = datetime.now(UTC) + timedelta(minutes=1)
    assert [i.id for i in await outbox.due_items(pool, account.id, now=now, limit=10)] == [
        ids[0],
        ids[3],
    ]
    assert [i.id for i in await outbox.due_items(pool, account.id, now=now, limit=1)] == [ids[0]]
    due_later = await outbox.due_items(pool, account.id, now=later, limit=10)
    assert [i.id for i in due_later] == [ids[0], ids[1], ids[3]]
    assert (due_later[1].attempts, due_later[1].last_error) == (1, "503")

    assert await outbox.mark_done(pool, [ids[0], ids[3]]) == 2
    assert await outbox.next_due_at(pool, account.id) == later
    assert await outbox.next_due_at(pool, UUID(int=1)) is None
    assert await outbox.accounts_with_due_items(
        pool, [account.id, other.id, UUID(int=1)], now=now
    ) == {other.id}
    assert await outbox.accounts_with_due_items(pool, [account.id], now=later) == {account.id}


async def test_inherited_says_what_an_earlier_incarnation_left(
    pool: PgPool, account: Account
) -> None:
    now = datetime.now(UTC) + timedelta(seconds=5)  # an item inserted now is due by then
    assert await outbox.inherited(pool, account.id, now=now) == outbox.Inherited(
        False, False, False
    )
    item = await _upsert(pool, account)
    assert await outbox.inherited(pool, account.id, now=now) == outbox.Inherited(False, True, False)
    later = now + timedelta(hours=1)
    assert await outbox.schedule_retry(pool, item, attempts=1, next_attempt_at=later, error="503")
    assert await outbox.inherited(pool, account.id, now=now) == outbox.Inherited(False, False, True)
    await begin_create(pool, account.id, _source("s2"), "primary")
    assert (await outbox.inherited(pool, account.id, now=now)).unknown_creates


async def test_checks_refuse_malformed_requests(pool: PgPool, account: Account) -> None:
    insert = (
        "INSERT INTO outbox (account_id, operation, workspace_id, source_type, source_id,"
        " event_type, title, all_day, start_date, end_date, start_at, end_at)"
        " VALUES ($1, $2, 'w1', $3, 's1', 'T', $4, $5, $6, $7, $8, $9)"
    )
    day, next_day = date(2025, 1, 1), date(2025, 1, 2)
    at = datetime(2025, 1, 1, 9, tzinfo=UTC)
    refused: list[tuple[object, ...]] = [
        ("UPSERT_EVENT", "task", "t", None, None, None, None, None),  # no timing
        ("UPSERT_EVENT", "task", "t", True, day, None, None, None),  # all-day without end
        ("UPSERT_EVENT", "task", "t", True, next_day, day, None, None),  # ends before start
        ("UPSERT_EVENT", "task", "t", False, day, next_day, None, None),  # timed without times
        ("UPSERT_EVENT", "task", "t", False, None, None, at, at - timedelta(1)),
        ("UPSERT_EVENT", "task", "t", None, day, next_day, at, at),  # all_day unknown
        ("UPSERT_EVENT", "task", None, True, day, next_day, None, None),  # no title
        ("CANCEL_EVENT", None, None, None, None, None, None, None),  # no source
    ]
    for row in refused:
        with pytest.raises(asyncpg.CheckViolationError):
            await pool.execute(insert, account.id, *row)
    # An operation the account's kind does not declare (outbox_operations).
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        unknown = ("DELETE_EVENT", "task", "t", None, None, None, None, None)
        await pool.execute(insert, account.id, *unknown)
    # What an application may write directly: a timed upsert with an empty range, a bare rebuild.
    await pool.execute(insert, account.id, "UPSERT_EVENT", "task", "t", False, None, None, at, at)
    await pool.execute(
        "INSERT INTO outbox (account_id, operation, workspace_id) VALUES ($1, 'REBUILD_ALL', 'w')",
        account.id,
    )
    items = await outbox.due_items(pool, account.id, now=FAR, limit=10)
    assert [i.operation for i in items] == [Operation.UPSERT_EVENT, Operation.REBUILD_ALL]
    assert items[1].calendar_id == "primary"


async def test_insert_notifies_the_account_id(
    pool: PgPool, account: Account, database_url: str
) -> None:
    listener = await asyncpg.connect(database_url)
    got: list[UUID] = []
    arrived = asyncio.Event()

    def on_account(account_id: UUID) -> None:
        got.append(account_id)
        arrived.set()

    try:
        remove = await outbox.listen_outbox(listener, on_account)
        async with transaction(pool) as conn:  # a bulk insert: one notification at commit
            for n in range(3):
                await _upsert(conn, account, f"s{n}")
        async with asyncio.timeout(5):
            await arrived.wait()
        # A round trip on the listener's connection delivers anything still queued before it.
        await listener.execute("SELECT 1")
        assert got == [account.id]

        await remove()
        await _upsert(pool, account, "s9")
        await listener.execute("SELECT 1")
        assert got == [account.id]
    finally:
        await listener.close()


async def test_malformed_notification_is_ignored(database_url: str) -> None:
    listener = await asyncpg.connect(database_url)
    got: list[UUID] = []
    arrived = asyncio.Event()
    good = UUID(int=7)

    def on_account(account_id: UUID) -> None:
        got.append(account_id)
        arrived.set()

    try:
        await outbox.listen_outbox(listener, on_account)
        with structlog.testing.capture_logs() as logs:
            await listener.execute("SELECT pg_notify('iw_outbox', 'not-a-uuid')")
            await listener.execute(f"SELECT pg_notify('iw_outbox', '{good}')")
            async with asyncio.timeout(5):
                await arrived.wait()
        assert got == [good]
        assert [entry["event"] for entry in logs] == ["ignoring malformed outbox notification"]
    finally:
        await listener.close()


async def test_retry_dead_letter_and_replay(pool: PgPool, account: Account) -> None:
    ids = [await _upsert(pool, account, f"s{n}") for n in range(3)]
    a, b, c = ids
    assert await outbox.dead_letter(pool, a, attempts=5, error="x" * 5000)
    assert await outbox.dead_letter(pool, b, attempts=5, error="gone")
    assert not await outbox.dead_letter(pool, a, attempts=6, error="again")  # not pending
    assert not await outbox.schedule_retry(pool, a, attempts=6, next_attempt_at=FAR, error="")
    assert await outbox.mark_done(pool, [a]) == 0  # a dead letter is not done by a late call

    letters = await outbox.dead_letters(pool, limit=10)
    assert [i.id for i in letters] == [a, b]
    assert letters[0].state is ItemState.DEAD_LETTER
    assert letters[0].attempts == 5
    assert letters[0].last_error is not None
    assert len(letters[0].last_error) == outbox.MAX_ERROR_CHARS
    assert [i.id for i in await outbox.dead_letters(pool, limit=10, after_id=a)] == [b]
    assert [i.id for i in await outbox.dead_letters(pool, limit=1)] == [a]
    assert await outbox.dead_letters(pool, limit=10, account_id=UUID(int=1)) == []
    assert [i.id for i in await outbox.due_items(pool, account.id, now=FAR, limit=10)] == [c]

    assert await outbox.replay(pool, [a, c]) == 1  # c is pending, not a dead letter
    replayed = await outbox.get_item(pool, a)
    assert replayed is not None
    assert (replayed.state, replayed.attempts, replayed.last_error) == (
        ItemState.PENDING,
        0,
        "x" * (outbox.MAX_ERROR_CHARS - 1) + "…",
    )
    assert await outbox.replay_all(pool) == 1
    assert await outbox.replay_all(pool) == 0
    due = await outbox.due_items(pool, account.id, now=FAR, limit=10)
    assert [i.id for i in due] == ids
    assert due[1].last_error == "gone"


async def test_replay_wakes_the_actor(pool: PgPool, account: Account, database_url: str) -> None:
    item = await _upsert(pool, account)
    await outbox.dead_letter(pool, item, attempts=3, error="boom")
    listener = await asyncpg.connect(database_url)
    arrived = asyncio.Event()
    try:
        await outbox.listen_outbox(listener, lambda account_id: arrived.set())
        assert await outbox.replay_all(pool, account.id) == 1
        async with asyncio.timeout(5):
            await arrived.wait()
    finally:
        await listener.close()


async def test_skip_and_status(pool: PgPool, account: Account) -> None:
    empty = await outbox.status(pool)
    assert empty.counts == dict.fromkeys(ItemState, 0)
    assert (empty.oldest_pending_at, empty.oldest_pending_age) == (None, None)

    ids = [await _upsert(pool, account, f"s{n}") for n in range(5)]
    assert await outbox.mark_skipped(pool, [ids[1], ids[2]], "stale: version 3 applied") == 2
    assert await outbox.mark_done(pool, [ids[3]]) == 1
    await outbox.dead_letter(pool, ids[4], attempts=9, error="no")
    skipped = await outbox.get_item(pool, ids[1])
    assert skipped is not None
    assert (skipped.state, skipped.last_error) == (ItemState.SKIPPED, "stale: version 3 applied")

    await pool.execute(
        "UPDATE outbox SET created_at = now() - interval '1 hour' WHERE id = $1", ids[0]
    )
    report = await outbox.status(pool)
    assert report.counts == {
        ItemState.PENDING: 1,
        ItemState.DONE: 1,
        ItemState.SKIPPED: 2,
        ItemState.DEAD_LETTER: 1,
    }
    assert report.oldest_pending_age is not None
    assert timedelta(hours=1) <= report.oldest_pending_age < timedelta(hours=1, minutes=1)
    assert report.oldest_pending_at is not None
    assert (await outbox.status(pool, UUID(int=1))).counts == dict.fromkeys(ItemState, 0)


async def test_cleanup_deletes_old_finished_items_in_batches(
    pool: PgPool, account: Account
) -> None:
    ids = [await _upsert(pool, account, f"s{n}") for n in range(8)]
    old_done, old_skipped, recent_done = ids[:3], ids[3:5], ids[5]
    pending, dead = ids[6], ids[7]
    await outbox.mark_done(pool, [*old_done, recent_done])
    await outbox.mark_skipped(pool, old_skipped, "stale")
    await outbox.dead_letter(pool, dead, attempts=1, error="x")
    await pool.execute(
        "UPDATE outbox SET done_at = now() - interval '31 days', created_at = now() - interval"
        " '40 days' WHERE id = ANY($1::bigint[]) OR id = $2",
        [*old_done, *old_skipped],
        dead,
    )
    assert await outbox.cleanup_done(pool, older_than=timedelta(days=30), batch=2) == 5
    left = await pool.fetch("SELECT id FROM outbox ORDER BY id")
    assert [r["id"] for r in left] == [recent_done, pending, dead]
    assert await outbox.cleanup_done(pool) == 0


async def test_account_removal_takes_its_items(pool: PgPool, account: Account) -> None:
    await _upsert(pool, account)
    await pool.execute("DELETE FROM accounts WHERE id = $1", account.id)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_change_feed_origin_is_outbox(pool: PgPool) -> None:
    async with transaction(pool) as conn:
        rows = await record_changes(
            conn, UUID(int=3), "cal", [("e1", "created", None, None)], origin="outbox"
        )
    assert rows[0].origin == "outbox"
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO changes (account_id, calendar_id, event_id, kind, origin)"
            " VALUES ($1, 'cal', 'e2', 'created', 'outbound')",
            UUID(int=3),
        )


async def test_migration_renames_outbound_changes(empty_database_url: str, tmp_path: Path) -> None:
    before = tmp_path / "before"
    before.mkdir()
    packaged = resources.files("store.migrations")
    for name in ("0001_accounts.sql", "0002_sync_state.sql", "0003_events_start_index.sql"):
        (before / name).write_text(packaged.joinpath(name).read_text())
    assert await migrate(empty_database_url, SCHEMA, source=before) == [1, 2, 3]
    conn = await asyncpg.connect(empty_database_url)
    try:
        insert = (
            f"INSERT INTO {SCHEMA}.changes (account_id, calendar_id, event_id, kind, origin)"
            " VALUES ($1, 'cal', $2, 'updated', $3)"
        )
        await conn.execute(insert, UUID(int=4), "e1", "outbound")
        await conn.execute(insert, UUID(int=4), "e2", "provider")
        assert 4 in await migrate(empty_database_url, SCHEMA)
        rows = await conn.fetch(f"SELECT event_id, origin FROM {SCHEMA}.changes ORDER BY id")
        assert [(r["event_id"], r["origin"]) for r in rows] == [
            ("e1", "outbox"),
            ("e2", "provider"),
        ]
    finally:
        await conn.close()

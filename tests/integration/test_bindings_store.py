"""The event_bindings SQL edge against a real, migrated database: lifecycle, lookups, content."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from uuid import UUID

import asyncpg
import orjson
import pytest

from outbox.model import BindingState, EventContent, SourceKey
from providers.models import EventTiming
from store import bindings
from store.accounts import Account, create_account
from store.db import PgPool

ALL_DAY = EventContent(
    title="Deadline",
    timing=EventTiming(all_day=True, start_date=date(2025, 3, 3), end_date=date(2025, 3, 5)),
)
TIMED = EventContent(
    title="Review «v2»",
    timing=EventTiming(
        all_day=False,
        start_at=datetime(2025, 3, 3, 9, 30, 15, 250, tzinfo=UTC),
        end_at=datetime(2025, 3, 3, 10, 0, tzinfo=UTC),
        time_zone="America/New_York",
    ),
    description="line 1\nline 2",
)


def _source(source_id: str = "s1", event_type: str = "BLOCKER_DEADLINE") -> SourceKey:
    return SourceKey("w1", "task", source_id, event_type)


@pytest.fixture
async def account(pool: PgPool) -> Account:
    return await create_account(pool, provider="google", external_user_id="u1", shard_count=64)


async def test_lifecycle(pool: PgPool, account: Account) -> None:
    created = await bindings.begin_create(pool, account.id, _source(), "primary")
    assert (created.state, created.generation, created.provider_event_id) == (
        BindingState.CREATING,
        0,
        None,
    )
    assert (created.source, created.calendar_id, created.applied_version, created.content) == (
        _source(),
        "primary",
        None,
        None,
    )
    # A create whose outcome was lost is retried under the same binding and generation.
    assert await bindings.begin_create(pool, account.id, _source(), "primary") == created

    live = await bindings.record_write(
        pool, created.id, provider_event_id="ev1", etag='"1"', applied_version=4, content=TIMED
    )
    assert (live.id, live.state, live.provider_event_id, live.etag) == (
        created.id,
        BindingState.LIVE,
        "ev1",
        '"1"',
    )
    assert (live.applied_version, live.content, live.generation) == (4, TIMED, 0)
    assert await bindings.get_binding(pool, account.id, _source()) == live
    assert await bindings.begin_create(pool, account.id, _source(), "primary") == live

    deleted = await bindings.mark_deleted(pool, live.id)
    assert deleted.state is BindingState.DELETED
    # Kept, so the echo of our own delete is still recognized.
    assert deleted.provider_event_id == "ev1"
    assert await bindings.binding_for_event(pool, account.id, "primary", "ev1") == deleted
    assert await bindings.begin_create(pool, account.id, _source(), "primary") == deleted

    recreating = await bindings.bump_generation(pool, deleted.id)
    assert (recreating.id, recreating.generation, recreating.state) == (
        created.id,
        1,
        BindingState.CREATING,
    )
    assert (recreating.provider_event_id, recreating.etag) == (None, None)
    # The last applied content stays: REBUILD_ALL recreates from it.
    assert (recreating.applied_version, recreating.content) == (4, TIMED)
    assert await bindings.binding_for_event(pool, account.id, "primary", "ev1") is None

    moved = await bindings.bump_generation(pool, created.id, calendar_id="work")
    assert (moved.generation, moved.calendar_id) == (2, "work")

    assert await bindings.delete_binding(pool, created.id)
    assert not await bindings.delete_binding(pool, created.id)
    assert await bindings.get_binding(pool, account.id, _source()) is None


async def test_missing_binding_raises(pool: PgPool) -> None:
    with pytest.raises(LookupError):
        await bindings.mark_deleted(pool, UUID(int=1))
    with pytest.raises(LookupError):
        await bindings.bump_generation(pool, UUID(int=1))
    with pytest.raises(LookupError):
        await bindings.record_write(
            pool, UUID(int=1), provider_event_id="e", etag=None, applied_version=1, content=TIMED
        )


async def test_one_binding_per_source(pool: PgPool, account: Account) -> None:
    first = await bindings.begin_create(pool, account.id, _source(), "primary")
    other_type = await bindings.begin_create(pool, account.id, _source(event_type="X"), "primary")
    other = await create_account(pool, provider="microsoft", external_user_id="u2", shard_count=64)
    other_account = await bindings.begin_create(pool, other.id, _source(), "primary")
    assert len({first.id, other_type.id, other_account.id}) == 3
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(
            "INSERT INTO event_bindings (account_id, workspace_id, source_type, source_id,"
            " event_type, calendar_id) VALUES ($1, 'w1', 'task', 's1', 'BLOCKER_DEADLINE', 'c')",
            account.id,
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE event_bindings SET state = 'gone' WHERE id = $1", first.id)


async def test_lookups(pool: PgPool, account: Account) -> None:
    made = []
    for n, calendar in enumerate(["primary", "primary", "work"]):
        binding = await bindings.begin_create(pool, account.id, _source(f"s{n}"), calendar)
        made.append(
            await bindings.record_write(
                pool,
                binding.id,
                provider_event_id=f"ev{n}",
                etag=None,
                applied_version=n,
                content=ALL_DAY,
            )
        )
    other_workspace = SourceKey("w2", "task", "s0", "BLOCKER_DEADLINE")
    await bindings.begin_create(pool, account.id, other_workspace, "primary")

    assert await bindings.bindings_for(pool, account.id, "w1", "primary") == made[:2]
    assert await bindings.bindings_for(pool, account.id, "w1", "work") == made[2:]
    assert await bindings.bindings_for(pool, account.id, "w3", "primary") == []
    assert await bindings.binding_for_event(pool, account.id, "work", "ev2") == made[2]
    assert await bindings.binding_for_event(pool, account.id, "primary", "ev2") is None
    assert await bindings.binding_for_event(pool, UUID(int=1), "work", "ev2") is None


@pytest.mark.parametrize("content", [ALL_DAY, TIMED], ids=["all_day", "timed"])
async def test_content_round_trip(pool: PgPool, account: Account, content: EventContent) -> None:
    binding = await bindings.begin_create(pool, account.id, _source(), "primary")
    await bindings.record_write(
        pool, binding.id, provider_event_id="ev", etag=None, applied_version=1, content=content
    )
    read = await bindings.get_binding(pool, account.id, _source())
    assert read is not None
    assert read.content == content
    stored = orjson.loads(
        await pool.fetchval("SELECT content::text FROM event_bindings WHERE id = $1", binding.id)
    )
    if content.timing.all_day:
        assert (stored["start_date"], stored["end_date"]) == ("2025-03-03", "2025-03-05")
    else:
        assert stored["start_at"] == "2025-03-03T09:30:15.000250+00:00"


async def test_content_keeps_non_utc_instants(pool: PgPool, account: Account) -> None:
    paris = timezone(timedelta(hours=1))
    content = EventContent(
        "x",
        EventTiming(
            all_day=False,
            start_at=datetime(2025, 1, 1, 10, tzinfo=paris),
            end_at=datetime(2025, 1, 1, 11, tzinfo=paris),
        ),
    )
    binding = await bindings.begin_create(pool, account.id, _source(), "primary")
    written = await bindings.record_write(
        pool, binding.id, provider_event_id="ev", etag=None, applied_version=1, content=content
    )
    assert written.content is not None
    assert written.content.timing.start_at == datetime(2025, 1, 1, 9, tzinfo=UTC)


async def test_conflicts(pool: PgPool, account: Account) -> None:
    binding = await bindings.begin_create(pool, account.id, _source(), "primary")
    provider_copy = {"summary": "edited by the user", "start": {"date": date(2025, 3, 4)}}
    conflict_id = await bindings.record_conflict(pool, binding, 42, TIMED, provider_copy)
    row = await pool.fetchrow(
        "SELECT account_id, binding_id, outbox_id, local::text, provider_copy::text, resolved_at"
        " FROM outbox_conflicts WHERE id = $1",
        conflict_id,
    )
    assert row is not None
    assert (row["account_id"], row["binding_id"], row["outbox_id"]) == (
        account.id,
        binding.id,
        42,
    )
    assert orjson.loads(row["local"])["title"] == TIMED.title
    assert orjson.loads(row["provider_copy"]) == {
        "summary": "edited by the user",
        "start": {"date": "2025-03-04"},
    }
    assert row["resolved_at"] is None
    # Forgetting the binding (or the account) takes its conflicts along.
    await bindings.delete_binding(pool, binding.id)
    assert await pool.fetchval("SELECT count(*) FROM outbox_conflicts") == 0


async def test_account_removal_takes_bindings_and_policy_defaults(
    pool: PgPool, account: Account
) -> None:
    assert (
        await pool.fetchval("SELECT conflict_policy FROM accounts WHERE id = $1", account.id)
        == "local_wins"
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "UPDATE accounts SET conflict_policy = 'merge' WHERE id = $1", account.id
        )
    binding = await bindings.begin_create(pool, account.id, _source(), "primary")
    await bindings.record_conflict(pool, binding, None, ALL_DAY, {})
    await pool.execute("DELETE FROM accounts WHERE id = $1", account.id)
    assert await pool.fetchval("SELECT count(*) FROM event_bindings") == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox_conflicts") == 0

"""The applications' Python API: checks before any SQL, rows inside the caller's transaction."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from config import ConfigError, load_settings
from operations import outbox as client
from outbox.model import EventContent, Operation, SourceKey
from providers.models import EventTiming
from store import outbox as store
from store.accounts import Account, create_account
from store.db import PgPool, transaction

PARIS = timezone(timedelta(hours=1))
START = datetime(2026, 3, 2, 9, 30, tzinfo=PARIS)
SOURCE = {
    "workspace_id": "w1",
    "source_type": "task",
    "source_id": "t-42",
    "event_type": "BLOCKER_DEADLINE",
}
TIMED: dict[str, Any] = {
    **SOURCE,
    "version": 3,
    "title": "Review",
    "start": START,
    "end": START + timedelta(hours=1),
}


@pytest.fixture
async def account(pool: PgPool) -> Account:
    return await create_account(pool, provider="google", external_user_id="u1", shard_count=8)


def test_timed_request_is_normalized_to_utc() -> None:
    request = client.upsert_request(
        str(UUID(int=1)), **TIMED, description="notes", time_zone="Europe/Paris"
    )
    assert request.operation is Operation.UPSERT_EVENT
    assert request.account_id == UUID(int=1)
    assert request.source == SourceKey("w1", "task", "t-42", "BLOCKER_DEADLINE")
    assert (request.calendar_id, request.version) == ("primary", 3)
    assert request.content == EventContent(
        title="Review",
        timing=EventTiming(
            all_day=False,
            start_at=datetime(2026, 3, 2, 8, 30, tzinfo=UTC),
            end_at=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
            time_zone="Europe/Paris",
        ),
        description="notes",
    )
    assert request.content.timing.start_at is not None
    assert request.content.timing.start_at.tzinfo is UTC


def test_all_day_and_zero_length_requests() -> None:
    all_day = client.event_timing(date(2026, 3, 5), date(2026, 3, 6))
    assert all_day == EventTiming(
        all_day=True, start_date=date(2026, 3, 5), end_date=date(2026, 3, 6)
    )
    # A deadline may be an instant: the table and EventTiming accept end == start.
    instant = client.event_timing(START, START)
    assert instant.start_at == instant.end_at


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start": datetime(2026, 3, 2, 9, 30)}, "start must be timezone-aware"),
        ({"end": START - timedelta(minutes=1)}, "end must not be before start"),
        ({"start": date(2026, 3, 2)}, "both be datetimes or both be dates"),
        ({"start": "2026-03-02T09:30:00+01:00"}, "start must be a datetime or a date, got str"),
        (
            {"start": date(2026, 3, 2), "end": date(2026, 3, 2)},
            "an all-day end is exclusive and must be after the start",
        ),
        (
            {"start": date(2026, 3, 2), "end": date(2026, 3, 3), "time_zone": "Europe/Paris"},
            "time_zone applies to timed events only",
        ),
        ({"time_zone": "Mars/Olympus"}, "time_zone 'Mars/Olympus' is not an IANA time zone"),
        ({"version": -1}, "version must be between 0 and"),
        ({"version": 2**63}, "version must be between 0 and"),
        ({"version": True}, "version must be an int, got bool"),
        ({"version": "3"}, "version must be an int, got str"),
        ({"title": "  "}, "title must not be empty"),
        ({"source_id": ""}, "source_id must not be empty"),
        ({"workspace_id": 7}, "workspace_id must be a str, got int"),
        ({"event_type": "A\x00B"}, "event_type must not contain NUL"),
        ({"description": 5}, "description must be a str or None, got int"),
        ({"calendar_id": ""}, "calendar_id must not be empty"),
    ],
)
def test_malformed_upserts_name_the_argument(change: dict[str, Any], message: str) -> None:
    with pytest.raises(client.OutboxRequestError, match=message):
        client.upsert_request(UUID(int=1), **{**TIMED, **change})


def test_malformed_account_ids() -> None:
    with pytest.raises(client.OutboxRequestError, match="account_id 'nope' is not a UUID"):
        client.rebuild_request("nope", workspace_id="w1")
    with pytest.raises(client.OutboxRequestError, match="account_id must be a UUID or str"):
        client.cancel_request(12, **SOURCE, version=1)  # type: ignore[arg-type]


async def test_requests_commit_with_the_callers_transaction(pool: PgPool, account: Account) -> None:
    async with transaction(pool) as conn:
        upsert = await client.enqueue_upsert(conn, account.id, **TIMED)
        cancel = await client.enqueue_cancel(
            conn, str(account.id), **SOURCE, version=4, calendar_id="cal-2"
        )
        rebuild = await client.enqueue_rebuild(conn, account.id, workspace_id="w1")
    items = await store.due_items(pool, account.id, now=datetime(2100, 1, 1, tzinfo=UTC), limit=9)
    assert [(i.id, i.operation) for i in items] == [
        (upsert, Operation.UPSERT_EVENT),
        (cancel, Operation.CANCEL_EVENT),
        (rebuild, Operation.REBUILD_ALL),
    ]
    assert items[0].content == client.upsert_request(account.id, **TIMED).content
    assert (items[1].calendar_id, items[1].version) == ("cal-2", 4)
    assert (items[2].calendar_id, items[2].source) == ("primary", None)

    # The application's change fails: its request goes with it.
    with pytest.raises(RuntimeError):
        async with transaction(pool) as conn:
            await client.enqueue_upsert(conn, account.id, **{**TIMED, "source_id": "t-43"})
            raise RuntimeError("the application's own write failed")
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 3


async def test_a_refused_request_leaves_the_transaction_usable(
    pool: PgPool, account: Account
) -> None:
    async with transaction(pool) as conn:
        with pytest.raises(client.OutboxRequestError):
            await client.enqueue_upsert(
                conn, account.id, **{**TIMED, "end": START - timedelta(hours=1)}
            )
        # No statement failed, so the transaction goes on and commits.
        await client.enqueue_cancel(conn, account.id, **SOURCE, version=1)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_commit_notifies_the_owning_replica(
    pool: PgPool, account: Account, database_url: str
) -> None:
    listener = await asyncpg.connect(database_url)
    arrived = asyncio.Event()
    heard: list[UUID] = []

    def on_account(account_id: UUID) -> None:
        heard.append(account_id)
        arrived.set()

    try:
        await store.listen_outbox(listener, on_account)
        async with transaction(pool) as conn:
            await client.enqueue_rebuild(conn, account.id, workspace_id="w1")
            await listener.execute("SELECT 1")  # anything sent so far would arrive now
            assert heard == []  # not before the commit
        async with asyncio.timeout(5):
            await arrived.wait()
        assert heard == [account.id]
    finally:
        await listener.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("IW_"):
            monkeypatch.delenv(name)
    yield


@pytest.mark.usefixtures("clean_env")
def test_outbox_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.outbox_max_attempts, settings.outbox_retention_days) == (10, 30)
    assert settings.outbox_poll_s == 60.0
    monkeypatch.setenv("IW_OUTBOX_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("IW_OUTBOX_RETENTION_DAYS", "7")
    monkeypatch.setenv("IW_OUTBOX_POLL_S", "2.5")
    settings = load_settings()
    assert (settings.outbox_max_attempts, settings.outbox_retention_days) == (3, 7)
    assert settings.outbox_poll_s == 2.5
    monkeypatch.setenv("IW_OUTBOX_MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match="IW_OUTBOX_MAX_ATTEMPTS"):
        load_settings()

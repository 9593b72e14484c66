"""Accounts repository against a real, migrated database."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter

import asyncpg
import pytest

from store.accounts import (
    create_account,
    get_account,
    list_accounts,
    mark_quarantined,
    set_status,
    shard_for,
)
from store.db import PgPool


def test_shard_for_is_stable() -> None:
    # Pinned values: changing the function would move every existing account to another shard.
    account_id = uuid.UUID("00000000-0000-4000-8000-000000000000")
    assert [shard_for(account_id, n) for n in (1, 2, 7, 16, 1024)] == [0, 0, 6, 8, 952]
    assert shard_for(account_id, 16) == shard_for(uuid.UUID(str(account_id)), 16)


def test_shard_for_spreads_ids_evenly() -> None:
    rng = random.Random(1234)
    ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(16_000)]
    counts = Counter(shard_for(i, 16) for i in ids)
    assert set(counts) == set(range(16))
    # 1000 expected per shard, standard deviation about 31.
    assert all(850 < c < 1150 for c in counts.values()), counts


def test_shard_for_rejects_zero_shards() -> None:
    with pytest.raises(ValueError, match="shard_count"):
        shard_for(uuid.uuid4(), 0)


async def test_create_account_assigns_shard_and_defaults(pool: PgPool) -> None:
    account = await create_account(
        pool, provider="google", external_user_id="alice@example.com", shard_count=8
    )
    assert account.provider == "google"
    assert account.external_user_id == "alice@example.com"
    assert account.shard == shard_for(account.id, 8)
    assert account.status == "active"
    assert account.last_error is None
    assert account.created_at == account.updated_at
    assert await get_account(pool, account.id) == account


async def test_create_account_is_idempotent_per_provider_user(pool: PgPool) -> None:
    first = await create_account(pool, provider="google", external_user_id="u1", shard_count=4)
    again = await create_account(pool, provider="google", external_user_id="u1", shard_count=4)
    other = await create_account(pool, provider="microsoft", external_user_id="u1", shard_count=4)
    assert again == first
    assert other.id != first.id
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 2


async def test_concurrent_creates_of_one_user_agree(pool: PgPool) -> None:
    accounts = await asyncio.gather(
        *(
            create_account(pool, provider="microsoft", external_user_id="bob", shard_count=4)
            for _ in range(5)
        )
    )
    assert len({a.id for a in accounts}) == 1
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 1


async def test_create_account_rejects_unknown_provider(pool: PgPool) -> None:
    with pytest.raises(ValueError, match="unknown account kind"):
        await create_account(
            pool,
            provider="yahoo",
            external_user_id="x",
            shard_count=1,
        )


async def test_database_enforces_provider_status_and_shard_checks(pool: PgPool) -> None:
    insert = (
        "INSERT INTO accounts (provider, external_user_id, shard, status) VALUES ($1, $2, $3, $4)"
    )
    # The kinds are rows of account_kinds (written by migrate from the registry).
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pool.execute(insert, "yahoo", "x", 0, "active")
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(insert, "google", "x", -1, "active")
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(insert, "google", "x", 0, "paused")


async def test_get_account_returns_none_when_missing(pool: PgPool) -> None:
    assert await get_account(pool, uuid.uuid4()) is None


async def test_list_accounts_filters_by_shard_and_status(pool: PgPool) -> None:
    created = [
        await create_account(pool, provider="google", external_user_id=f"u{i}", shard_count=4)
        for i in range(12)
    ]
    await set_status(pool, created[0].id, "disabled", last_error=None)
    await mark_quarantined(pool, created[1].id, "boom")

    everything = await list_accounts(pool)
    assert {a.id for a in everything} == {a.id for a in created}
    assert everything == sorted(everything, key=lambda a: (a.created_at, a.id))

    shards = {created[0].shard, created[1].shard}
    in_shards = await list_accounts(pool, shards=sorted(shards))
    assert {a.id for a in in_shards} == {a.id for a in created if a.shard in shards}

    active = await list_accounts(pool, statuses=["active"])
    assert {a.id for a in active} == {a.id for a in created[2:]}

    both = await list_accounts(pool, shards=[created[1].shard], statuses=["quarantined"])
    assert [a.id for a in both] == [created[1].id]

    assert await list_accounts(pool, shards=[]) == []


async def test_list_accounts_rejects_unknown_status(pool: PgPool) -> None:
    with pytest.raises(ValueError, match="invalid status"):
        await list_accounts(pool, statuses=["paused"])  # type: ignore[list-item]


async def test_set_status_records_error_and_bumps_updated_at(pool: PgPool) -> None:
    account = await create_account(pool, provider="google", external_user_id="c", shard_count=2)

    reauth = await set_status(pool, account.id, "needs_reauth", last_error="invalid_grant")
    assert reauth is not None
    assert (reauth.status, reauth.last_error) == ("needs_reauth", "invalid_grant")
    assert reauth.updated_at > account.updated_at
    assert reauth.created_at == account.created_at

    back = await set_status(pool, account.id, "active", last_error=None)
    assert back is not None
    assert (back.status, back.last_error) == ("active", None)
    assert back.updated_at > reauth.updated_at
    assert await get_account(pool, account.id) == back


async def test_mark_quarantined(pool: PgPool) -> None:
    account = await create_account(pool, provider="microsoft", external_user_id="d", shard_count=2)
    quarantined = await mark_quarantined(pool, account.id, "poison event 42")
    assert quarantined is not None
    assert (quarantined.status, quarantined.last_error) == ("quarantined", "poison event 42")


async def test_set_status_on_missing_account_returns_none(pool: PgPool) -> None:
    assert await set_status(pool, uuid.uuid4(), "disabled", last_error=None) is None


async def test_set_status_rejects_unknown_status(pool: PgPool) -> None:
    account = await create_account(pool, provider="google", external_user_id="e", shard_count=2)
    with pytest.raises(ValueError, match="invalid status"):
        await set_status(pool, account.id, "paused", last_error=None)  # type: ignore[arg-type]


async def test_repository_works_inside_a_transaction(pool: PgPool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await create_account(conn, provider="google", external_user_id="f", shard_count=2)
                raise RuntimeError("abort")
    assert await list_accounts(pool) == []


async def test_last_error_is_stored_redacted(pool: PgPool) -> None:
    account = await create_account(pool, provider="google", external_user_id="r", shard_count=1)
    error = "crashed: POST token?client_secret=s3cr3tValue99 with Bearer ya29.a0AfH6SMBsecret"
    stored = await mark_quarantined(pool, account.id, error)
    assert stored is not None and stored.last_error is not None
    assert "s3cr3tValue99" not in stored.last_error and "ya29" not in stored.last_error
    assert stored.last_error.startswith("crashed: POST token?client_secret=[REDACTED]")

"""The push_channels repository against a real, migrated database."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from store.accounts import Account, create_account
from store.channels import (
    ChannelRow,
    delete_channel,
    delete_retired,
    get_channel,
    get_channels,
    hash_token,
    list_channels,
    list_channels_many,
    retire_channel,
    save_channel,
)
from store.db import PgPool


@pytest.fixture
async def account(pool: PgPool) -> Account:
    return await create_account(pool, provider="google", external_user_id="u1", shard_count=64)


def _row(account: Account, channel_id: str, token: str = "secret", **changes: object) -> ChannelRow:
    fields: dict[str, object] = {
        "provider": "google",
        "id": channel_id,
        "account_id": account.id,
        "calendar_id": "primary",
        "shard": account.shard,
        "token_hash": hash_token(token),
        "resource_id": "res-1",
        "expires_at": datetime(2030, 1, 1, tzinfo=UTC),
    }
    fields.update(changes)
    return ChannelRow(**fields)  # type: ignore[arg-type]


def test_hash_token_is_sha256_of_utf8() -> None:
    assert hash_token("päss") == hashlib.sha256("päss".encode()).digest()
    assert len(hash_token("\ud800")) == 32  # a lone surrogate hashes instead of raising


def test_repr_hides_token_hash(account: Account) -> None:
    row = _row(account, "c1")
    assert "token_hash" not in repr(row)
    assert row.token_hash.hex() not in repr(row)


async def test_save_get_round_trip(pool: PgPool, account: Account) -> None:
    saved = await save_channel(pool, _row(account, "c1"))
    assert saved.created_at is not None
    fetched = await get_channel(pool, "google", "c1")
    assert fetched == saved
    assert fetched.token_hash == hash_token("secret")
    assert await get_channel(pool, "microsoft", "c1") is None
    assert await get_channel(pool, "google", "nope") is None


async def test_save_replaces_but_keeps_created_at(pool: PgPool, account: Account) -> None:
    first = await save_channel(pool, _row(account, "c1"))
    later = datetime(2031, 1, 1, tzinfo=UTC)
    second = await save_channel(
        pool, _row(account, "c1", token="other", resource_id=None, shard=5, expires_at=later)
    )
    assert second.created_at == first.created_at
    assert (second.token_hash, second.resource_id, second.shard, second.expires_at) == (
        hash_token("other"),
        None,
        5,
        later,
    )


async def test_get_channels_batch(pool: PgPool, account: Account) -> None:
    await save_channel(pool, _row(account, "a", provider="microsoft"))
    await save_channel(pool, _row(account, "b", provider="microsoft"))
    await save_channel(pool, _row(account, "c", provider="google"))
    found = await get_channels(pool, "microsoft", ["a", "b", "c", "a", "x"])
    assert sorted(found) == ["a", "b"]
    assert await get_channels(pool, "microsoft", []) == {}


async def test_delete_and_list(pool: PgPool, account: Account) -> None:
    other = await create_account(pool, provider="google", external_user_id="u2", shard_count=64)
    await save_channel(pool, _row(account, "c1", calendar_id="b"))
    await save_channel(pool, _row(account, "c2", calendar_id="a"))
    await save_channel(pool, _row(other, "c3"))
    assert [row.id for row in await list_channels(pool, account.id)] == ["c2", "c1"]
    assert await delete_channel(pool, "google", "c1") is True
    assert await delete_channel(pool, "google", "c1") is False
    assert [row.id for row in await list_channels(pool, account.id)] == ["c2"]


async def test_a_retired_channel_is_found_by_the_gateway_only_until_deleted(
    pool: PgPool, account: Account
) -> None:
    now = datetime(2026, 3, 1, 9, tzinfo=UTC)
    await save_channel(pool, _row(account, "old", calendar_id="a"))
    await save_channel(pool, _row(account, "new", calendar_id="a"))
    until = now + timedelta(minutes=15)
    assert await retire_channel(pool, "google", "old", until) is True
    assert await retire_channel(pool, "google", "old", until) is False  # once
    assert [row.id for row in await list_channels(pool, account.id)] == ["new"]
    assert (await list_channels_many(pool, [account.id]))[account.id][0].id == "new"
    found = await get_channel(pool, "google", "old")
    assert found is not None and found.retired_until == until  # the gateway still knows it
    assert await delete_retired(pool, until - timedelta(seconds=1)) == 0
    assert await delete_retired(pool, until) == 1
    assert await get_channel(pool, "google", "old") is None
    assert await get_channel(pool, "google", "new") is not None


async def test_channels_of_many_accounts_in_one_call(pool: PgPool, account: Account) -> None:
    other = await create_account(pool, provider="google", external_user_id="u2", shard_count=64)
    bare = await create_account(pool, provider="google", external_user_id="u3", shard_count=64)
    await save_channel(pool, _row(account, "c1", calendar_id="b"))
    await save_channel(pool, _row(account, "c2", calendar_id="a"))
    await save_channel(pool, _row(other, "c3"))
    found = await list_channels_many(pool, [account.id, other.id, bare.id])
    assert {k: [row.id for row in rows] for k, rows in found.items()} == {
        account.id: ["c2", "c1"],
        other.id: ["c3"],
        bare.id: [],
    }


async def test_invalid_provider_refused(pool: PgPool, account: Account) -> None:
    with pytest.raises(ValueError, match="unknown account kind"):
        await save_channel(pool, _row(account, "c1", provider="slack"))


async def test_channels_go_with_their_account(pool: PgPool, account: Account) -> None:
    await save_channel(pool, _row(account, "c1", expires_at=datetime.now(UTC) + timedelta(days=1)))
    await pool.execute("DELETE FROM accounts WHERE id = $1", account.id)
    assert await get_channel(pool, "google", "c1") is None

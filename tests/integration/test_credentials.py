"""Encrypted credentials against a real database: round trip, binding, key rotation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from config.redact import redact_text
from store.accounts import create_account
from store.credentials import (
    Credentials,
    load_credentials,
    load_credentials_many,
    rotate_keys,
    store_credentials,
)
from store.crypto import DecryptionError, Keyring, generate_key
from store.db import PgPool

REFRESH = "1//0gRefreshTokenSecret"
ACCESS = "ya29.AccessTokenSecret"


async def new_account(pool: PgPool, name: str) -> UUID:
    account = await create_account(pool, provider="google", external_user_id=name, shard_count=4)
    return account.id


def full_credentials(account_id: UUID, suffix: str = "") -> Credentials:
    return Credentials(
        account_id=account_id,
        refresh_token=REFRESH + suffix,
        access_token=ACCESS + suffix,
        access_token_expires_at=datetime(2030, 1, 1, 12, 0, tzinfo=UTC),
        scopes=("calendar", "openid"),
    )


async def test_round_trip_through_the_database(pool: PgPool, keyring: Keyring) -> None:
    account_id = await new_account(pool, "a")
    creds = full_credentials(account_id)
    await store_credentials(pool, keyring, account_id, creds)
    assert await load_credentials(pool, keyring, account_id) == creds


async def test_many_accounts_load_in_one_call(pool: PgPool, keyring: Keyring) -> None:
    a, b, bare = [await new_account(pool, name) for name in ("a", "b", "c")]
    await store_credentials(pool, keyring, a, full_credentials(a, "-a"))
    await store_credentials(pool, keyring, b, full_credentials(b, "-b"))
    loaded = await load_credentials_many(pool, keyring, [a, b, bare])
    assert loaded == {a: full_credentials(a, "-a"), b: full_credentials(b, "-b")}
    assert await load_credentials_many(pool, keyring, []) == {}


async def test_round_trip_without_access_token(pool: PgPool, keyring: Keyring) -> None:
    account_id = await new_account(pool, "a")
    creds = Credentials(account_id=account_id, refresh_token=REFRESH)
    await store_credentials(pool, keyring, account_id, creds)
    loaded = await load_credentials(pool, keyring, account_id)
    assert loaded == creds
    assert await pool.fetchval(
        "SELECT access_token IS NULL FROM credentials WHERE account_id = $1", account_id
    )


async def test_stored_bytes_do_not_contain_the_plaintext(pool: PgPool, keyring: Keyring) -> None:
    account_id = await new_account(pool, "a")
    await store_credentials(pool, keyring, account_id, full_credentials(account_id))
    row = await pool.fetchrow(
        "SELECT key_id, refresh_token, access_token FROM credentials WHERE account_id = $1",
        account_id,
    )
    assert row is not None
    assert row["key_id"] == keyring.active_key_id
    for column in ("refresh_token", "access_token"):
        stored: bytes = row[column]
        assert REFRESH.encode() not in stored
        assert ACCESS.encode() not in stored
        assert b"Secret" not in stored


async def test_store_replaces_previous_credentials(pool: PgPool, keyring: Keyring) -> None:
    account_id = await new_account(pool, "a")
    await store_credentials(pool, keyring, account_id, full_credentials(account_id))
    before = await pool.fetchval(
        "SELECT updated_at FROM credentials WHERE account_id = $1", account_id
    )
    refreshed = Credentials(
        account_id=account_id,
        refresh_token=REFRESH,
        access_token="ya29.new",
        access_token_expires_at=datetime.now(UTC) + timedelta(hours=1),
        scopes=("calendar",),
    )
    await store_credentials(pool, keyring, account_id, refreshed)
    assert await load_credentials(pool, keyring, account_id) == refreshed
    after = await pool.fetchval(
        "SELECT updated_at FROM credentials WHERE account_id = $1", account_id
    )
    assert after > before
    assert await pool.fetchval("SELECT count(*) FROM credentials") == 1


async def test_loaded_tokens_are_registered_with_the_log_redactor(
    pool: PgPool, keyring: Keyring
) -> None:
    account_id = await new_account(pool, "a")
    creds = Credentials(
        account_id=account_id,
        refresh_token=f"refresh-{account_id.hex}",
        access_token=f"access-{account_id.hex}",
    )
    await store_credentials(pool, keyring, account_id, creds)
    line = f"tokens {creds.refresh_token} and {creds.access_token}."
    assert redact_text(line) == line
    await load_credentials(pool, keyring, account_id)
    assert redact_text(line) == "tokens [REDACTED] and [REDACTED]."


async def test_load_missing_credentials_returns_none(pool: PgPool, keyring: Keyring) -> None:
    assert await load_credentials(pool, keyring, await new_account(pool, "a")) is None


async def test_store_rejects_credentials_of_another_account(pool: PgPool, keyring: Keyring) -> None:
    a, b = await new_account(pool, "a"), await new_account(pool, "b")
    with pytest.raises(ValueError, match="different account"):
        await store_credentials(pool, keyring, a, full_credentials(b))


async def test_row_bytes_copied_to_another_account_do_not_decrypt(
    pool: PgPool, keyring: Keyring
) -> None:
    victim, attacker = await new_account(pool, "victim"), await new_account(pool, "attacker")
    await store_credentials(pool, keyring, victim, full_credentials(victim))
    await store_credentials(pool, keyring, attacker, full_credentials(attacker, "-other"))
    await pool.execute(
        "UPDATE credentials AS dst SET key_id = src.key_id, refresh_token = src.refresh_token,"
        " access_token = src.access_token FROM credentials AS src"
        " WHERE src.account_id = $1 AND dst.account_id = $2",
        victim,
        attacker,
    )
    with pytest.raises(DecryptionError) as info:
        await load_credentials(pool, keyring, attacker)
    assert REFRESH not in str(info.value)
    # The victim's own row is untouched and still opens.
    assert await load_credentials(pool, keyring, victim) == full_credentials(victim)


async def test_swapped_columns_do_not_decrypt(pool: PgPool, keyring: Keyring) -> None:
    account_id = await new_account(pool, "a")
    await store_credentials(pool, keyring, account_id, full_credentials(account_id))
    await pool.execute(
        "UPDATE credentials SET refresh_token = access_token, access_token = refresh_token"
        " WHERE account_id = $1",
        account_id,
    )
    with pytest.raises(DecryptionError):
        await load_credentials(pool, keyring, account_id)


async def test_credentials_are_deleted_with_their_account(pool: PgPool, keyring: Keyring) -> None:
    account_id = await new_account(pool, "a")
    await store_credentials(pool, keyring, account_id, full_credentials(account_id))
    await pool.execute("DELETE FROM accounts WHERE id = $1", account_id)
    assert await pool.fetchval("SELECT count(*) FROM credentials") == 0


def test_repr_hides_tokens() -> None:
    text = repr(full_credentials(UUID(int=1)))
    assert REFRESH not in text
    assert ACCESS not in text
    assert "calendar" in text


async def test_rotate_keys_reencrypts_every_row_in_batches(pool: PgPool) -> None:
    old_key, new_key = generate_key(), generate_key()
    old_ring = Keyring("old", {"old": old_key})
    ids = [await new_account(pool, f"u{i}") for i in range(7)]
    expected: dict[UUID, Credentials] = {}
    for i, account_id in enumerate(ids):
        creds = (
            full_credentials(account_id, str(i))
            if i % 2
            else Credentials(account_id=account_id, refresh_token=f"r{i}")
        )
        await store_credentials(pool, old_ring, account_id, creds)
        expected[account_id] = creds
    updated_sql = "SELECT account_id, updated_at FROM credentials"
    updated_before = {r["account_id"]: r["updated_at"] for r in await pool.fetch(updated_sql)}

    new_ring = Keyring("new", {"old": old_key, "new": new_key})
    assert await rotate_keys(pool, new_ring, batch_size=3) == 7
    assert await pool.fetchval("SELECT array_agg(DISTINCT key_id) FROM credentials") == ["new"]
    # Rotation does not count as a credentials change.
    updated_after = {r["account_id"]: r["updated_at"] for r in await pool.fetch(updated_sql)}
    assert updated_after == updated_before

    # The old key is no longer needed to read anything.
    new_only = Keyring("new", {"new": new_key})
    for account_id, creds in expected.items():
        assert await load_credentials(pool, new_only, account_id) == creds

    assert await rotate_keys(pool, new_ring, batch_size=3) == 0


async def test_rotate_keys_skips_rows_locked_by_others(pool: PgPool) -> None:
    old_key, new_key = generate_key(), generate_key()
    old_ring = Keyring("old", {"old": old_key})
    new_ring = Keyring("new", {"old": old_key, "new": new_key})
    locked, free = await new_account(pool, "locked"), await new_account(pool, "free")
    for account_id in (locked, free):
        await store_credentials(pool, old_ring, account_id, full_credentials(account_id))

    async with pool.acquire() as other, other.transaction():
        await other.execute("SELECT 1 FROM credentials WHERE account_id = $1 FOR UPDATE", locked)
        # Does not wait for the other transaction: the locked row is left for a later run.
        assert await asyncio.wait_for(rotate_keys(pool, new_ring), timeout=5) == 1

    assert await rotate_keys(pool, new_ring) == 1
    assert await load_credentials(pool, new_ring, locked) == full_credentials(locked)


async def test_rotate_keys_fails_loudly_on_an_unknown_key(pool: PgPool) -> None:
    account_id = await new_account(pool, "a")
    await store_credentials(
        pool, Keyring("lost", {"lost": generate_key()}), account_id, full_credentials(account_id)
    )
    with pytest.raises(DecryptionError, match="unknown key id 'lost'"):
        await rotate_keys(pool, Keyring("new", {"new": generate_key()}))
    assert await pool.fetchval("SELECT key_id FROM credentials") == "lost"

"""OAuth credentials of an account, stored encrypted (see store/crypto.py).

Invariants:
- Every token ``load_credentials`` decrypts is registered with the log redactor before return.
- Tokens are written only as ciphertext under the keyring's active key, bound to their account
  and column; plaintext never reaches the database, reprs or error messages.
- ``rotate_keys`` locks rows with ``FOR UPDATE SKIP LOCKED`` one batch per transaction, so it can
  run while replicas read and write credentials; rows it re-encrypts keep their ``updated_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import asyncpg

from config.redact import register_secret
from store.crypto import Keyring
from store.db import PgPool, Queryable

REFRESH_TOKEN = "refresh_token"
ACCESS_TOKEN = "access_token"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Decrypted OAuth tokens of one account; tokens are left out of the repr."""

    account_id: UUID
    refresh_token: str = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    access_token_expires_at: datetime | None = None
    scopes: tuple[str, ...] = ()


async def store_credentials(
    conn: Queryable, keyring: Keyring, account_id: UUID, creds: Credentials
) -> None:
    """Insert or replace the account's credentials, encrypting both tokens."""
    if creds.account_id != account_id:
        raise ValueError("credentials belong to a different account")
    key_id, refresh = keyring.encrypt(
        creds.refresh_token, account_id=account_id, field=REFRESH_TOKEN
    )
    access: bytes | None = None
    if creds.access_token is not None:
        _, access = keyring.encrypt(creds.access_token, account_id=account_id, field=ACCESS_TOKEN)
    await conn.execute(
        "INSERT INTO credentials"
        " (account_id, key_id, refresh_token, access_token, access_token_expires_at, scopes)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (account_id) DO UPDATE SET"
        " key_id = excluded.key_id, refresh_token = excluded.refresh_token,"
        " access_token = excluded.access_token,"
        " access_token_expires_at = excluded.access_token_expires_at,"
        " scopes = excluded.scopes, updated_at = now()",
        account_id,
        key_id,
        refresh,
        access,
        creds.access_token_expires_at,
        list(creds.scopes),
    )


async def load_credentials(
    conn: Queryable, keyring: Keyring, account_id: UUID
) -> Credentials | None:
    """The account's decrypted credentials, or None; raises DecryptionError if they do not open."""
    return (await load_credentials_many(conn, keyring, [account_id])).get(account_id)


async def load_credentials_many(
    conn: Queryable, keyring: Keyring, account_ids: Sequence[UUID]
) -> dict[UUID, Credentials]:
    """Decrypted credentials of each account that has them, in one query (a takeover starts
    hundreds of actors at once); raises DecryptionError if one does not open."""
    rows = await conn.fetch(
        "SELECT account_id, key_id, refresh_token, access_token, access_token_expires_at, scopes"
        " FROM credentials WHERE account_id = ANY($1::uuid[])",
        list(account_ids),
    )
    return {row["account_id"]: _decrypted(keyring, row) for row in rows}


def _decrypted(keyring: Keyring, row: asyncpg.Record) -> Credentials:
    account_id: UUID = row["account_id"]
    key_id: str = row["key_id"]
    refresh = keyring.decrypt(
        key_id, row["refresh_token"], account_id=account_id, field=REFRESH_TOKEN
    )
    access: str | None = None
    if row["access_token"] is not None:
        access = keyring.decrypt(
            key_id, row["access_token"], account_id=account_id, field=ACCESS_TOKEN
        )
    register_secret(refresh)
    if access is not None:
        register_secret(access)
    return Credentials(
        account_id=account_id,
        refresh_token=refresh,
        access_token=access,
        access_token_expires_at=row["access_token_expires_at"],
        scopes=tuple(row["scopes"]),
    )


async def rotate_keys(pool: PgPool, keyring: Keyring, *, batch_size: int = 500) -> int:
    """Re-encrypt every row not under the active key, one batch per transaction; return count."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT account_id, key_id, refresh_token, access_token FROM credentials"
                " WHERE key_id <> $1 ORDER BY account_id LIMIT $2 FOR UPDATE SKIP LOCKED",
                keyring.active_key_id,
                batch_size,
            )
            if not rows:
                # Rows locked by others are skipped: their writers use the active key anyway.
                return total
            ids, refresh_blobs, access_blobs = [], [], []
            for row in rows:
                account_id: UUID = row["account_id"]
                refresh, access = _reencrypt(keyring, account_id, row)
                ids.append(account_id)
                refresh_blobs.append(refresh)
                access_blobs.append(access)
            await conn.execute(
                "UPDATE credentials AS c SET key_id = $1, refresh_token = u.refresh_token,"
                " access_token = u.access_token"
                " FROM unnest($2::uuid[], $3::bytea[], $4::bytea[])"
                " AS u(account_id, refresh_token, access_token)"
                " WHERE c.account_id = u.account_id",
                keyring.active_key_id,
                ids,
                refresh_blobs,
                access_blobs,
            )
            total += len(rows)


def _reencrypt(
    keyring: Keyring, account_id: UUID, row: asyncpg.Record
) -> tuple[bytes, bytes | None]:
    key_id: str = row["key_id"]
    refresh = keyring.decrypt(
        key_id, row["refresh_token"], account_id=account_id, field=REFRESH_TOKEN
    )
    _, refresh_blob = keyring.encrypt(refresh, account_id=account_id, field=REFRESH_TOKEN)
    if row["access_token"] is None:
        return refresh_blob, None
    access = keyring.decrypt(key_id, row["access_token"], account_id=account_id, field=ACCESS_TOKEN)
    _, access_blob = keyring.encrypt(access, account_id=account_id, field=ACCESS_TOKEN)
    return refresh_blob, access_blob


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """An account's credentials without the tokens (what operators may see)."""

    key_id: str
    has_access_token: bool
    access_token_expires_at: datetime | None
    scopes: tuple[str, ...]
    updated_at: datetime


async def credential_info(conn: Queryable, account_id: UUID) -> CredentialInfo | None:
    """The account's credential metadata, never selecting a token; None without credentials."""
    row = await conn.fetchrow(
        "SELECT key_id, access_token IS NOT NULL AS has_access_token, access_token_expires_at,"
        " scopes, updated_at FROM credentials WHERE account_id = $1",
        account_id,
    )
    if row is None:
        return None
    return CredentialInfo(
        key_id=row["key_id"],
        has_access_token=row["has_access_token"],
        access_token_expires_at=row["access_token_expires_at"],
        scopes=tuple(row["scopes"]),
        updated_at=row["updated_at"],
    )

"""Push channels (Google watch channels, Graph subscriptions): the ``push_channels`` table.

Invariants:
- ``(provider, id)`` identifies a channel; saving it again replaces every column but
  ``created_at``;
- the channel token / clientState itself is never stored, only ``hash_token`` of it (sha-256 of
  its UTF-8 bytes), which the gateway compares in constant time;
- ``token_hash`` is left out of ``repr`` so a logged row never carries it;
- a replaced channel is retired, not deleted: the gateway still finds it (``get_channel``) until
  ``retired_until``, the actor, the audit and ``accounts show`` never (``list_channels``), and
  ``delete_retired`` removes it after.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import asyncpg

from store.accounts import UnknownKind
from store.db import Queryable
from store.vocabulary import Provider

_COLUMNS = (
    "provider, id, account_id, calendar_id, shard, resource_id, token_hash, expires_at, created_at,"
    " retired_until"
)


def hash_token(token: str) -> bytes:
    """The sha-256 digest of a channel token / clientState, as stored in ``token_hash``."""
    # surrogatepass: a lone surrogate from a JSON body must hash (to a mismatch), not raise.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class ChannelRow:
    """A row of ``push_channels``; ``created_at`` is set by the database."""

    provider: Provider
    id: str
    account_id: UUID
    calendar_id: str
    shard: int
    token_hash: bytes = field(repr=False)
    resource_id: str | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None
    # Set once the channel was replaced: still accepted until then (``retire_channel``).
    retired_until: datetime | None = None


def _row(record: asyncpg.Record) -> ChannelRow:
    return ChannelRow(
        provider=record["provider"],
        id=record["id"],
        account_id=record["account_id"],
        calendar_id=record["calendar_id"],
        shard=record["shard"],
        token_hash=bytes(record["token_hash"]),
        resource_id=record["resource_id"],
        expires_at=record["expires_at"],
        created_at=record["created_at"],
        retired_until=record["retired_until"],
    )


async def get_channel(conn: Queryable, provider: Provider, channel_id: str) -> ChannelRow | None:
    """The channel ``(provider, channel_id)``, or None."""
    record = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM push_channels WHERE provider = $1 AND id = $2",
        provider,
        channel_id,
    )
    return None if record is None else _row(record)


async def get_channels(
    conn: Queryable, provider: Provider, channel_ids: Sequence[str]
) -> dict[str, ChannelRow]:
    """The known channels among ``channel_ids``, by id, in one query (a Graph batch)."""
    records = await conn.fetch(
        f"SELECT {_COLUMNS} FROM push_channels WHERE provider = $1 AND id = ANY($2::text[])",
        provider,
        list(set(channel_ids)),
    )
    return {record["id"]: _row(record) for record in records}


async def save_channel(conn: Queryable, row: ChannelRow) -> ChannelRow:
    """Insert the channel or replace the one with the same ``(provider, id)``; the stored row."""
    try:
        record = await _save(conn, row)
    except asyncpg.ForeignKeyViolationError as error:
        if error.constraint_name == "push_channels_kind_fkey":
            raise UnknownKind(f"unknown account kind {row.provider!r}") from None
        raise
    if record is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
        raise LookupError(f"{row.provider} channel {row.id!r} was not saved")
    return _row(record)


async def _save(conn: Queryable, row: ChannelRow) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "INSERT INTO push_channels"
        " (provider, id, account_id, calendar_id, shard, resource_id, token_hash, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (provider, id) DO UPDATE SET account_id = EXCLUDED.account_id,"
        " calendar_id = EXCLUDED.calendar_id, shard = EXCLUDED.shard,"
        " resource_id = EXCLUDED.resource_id, token_hash = EXCLUDED.token_hash,"
        f" expires_at = EXCLUDED.expires_at RETURNING {_COLUMNS}",
        row.provider,
        row.id,
        row.account_id,
        row.calendar_id,
        row.shard,
        row.resource_id,
        row.token_hash,
        row.expires_at,
    )


async def delete_channel(conn: Queryable, provider: Provider, channel_id: str) -> bool:
    """Delete the channel; whether it existed."""
    status = await conn.execute(
        "DELETE FROM push_channels WHERE provider = $1 AND id = $2", provider, channel_id
    )
    return status != "DELETE 0"


async def list_channels(conn: Queryable, account_id: UUID) -> list[ChannelRow]:
    """Every live (not retired) channel of an account, by calendar, oldest first."""
    records = await conn.fetch(
        f"SELECT {_COLUMNS} FROM push_channels WHERE account_id = $1 AND retired_until IS NULL"
        " ORDER BY calendar_id, created_at, provider, id",
        account_id,
    )
    return [_row(record) for record in records]


async def list_channels_many(
    conn: Queryable, account_ids: Sequence[UUID]
) -> dict[UUID, list[ChannelRow]]:
    """Every channel of each account (as ``list_channels``), in one query."""
    records = await conn.fetch(
        f"SELECT {_COLUMNS} FROM push_channels WHERE account_id = ANY($1::uuid[])"
        " AND retired_until IS NULL ORDER BY account_id, calendar_id, created_at, provider, id",
        list(account_ids),
    )
    found: dict[UUID, list[ChannelRow]] = {account_id: [] for account_id in account_ids}
    for record in records:
        row = _row(record)
        found.setdefault(row.account_id, []).append(row)
    return found


async def retire_channel(
    conn: Queryable, provider: Provider, channel_id: str, until: datetime
) -> bool:
    """Mark a replaced channel retired: accepted by the gateway until ``until``, listed
    nowhere else; whether it was live."""
    status = await conn.execute(
        "UPDATE push_channels SET retired_until = $3 WHERE provider = $1 AND id = $2"
        " AND retired_until IS NULL",
        provider,
        channel_id,
        until,
    )
    return status != "UPDATE 0"


async def delete_retired(conn: Queryable, now: datetime) -> int:
    """Delete the retired channels whose grace ended by ``now``; how many."""
    status = await conn.execute(
        "DELETE FROM push_channels WHERE retired_until IS NOT NULL AND retired_until <= $1", now
    )
    return int(status.split()[-1])

"""Retrying the items a sync set aside (``accounts show`` and the API list them).

Invariant: a retry asks the account's actor, through its shard's stream, for a full round of
every calendar holding items set aside (``NotificationKind.RESYNC``): a round re-reads every
item and clears those that now sync; nothing is written to Postgres here.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from redis.asyncio import Redis

from cluster.streams import append, request_entry
from operations.accounts import OperatorError, require_account
from providers.models import NotificationKind
from store.db import PgPool
from store.set_aside import calendars_with_items_aside


async def retry_set_aside(
    pool: PgPool, redis: Redis, account_id: UUID, *, now: datetime
) -> tuple[list[str], list[str]]:
    """Ask for a full round of each calendar with items set aside: (calendar ids, entry ids)."""
    account = await require_account(pool, account_id)
    if account.status != "active":
        raise OperatorError(f"the account is {account.status}, not active")
    calendars = await calendars_with_items_aside(pool, account_id)
    entries = [
        request_entry(
            account.shard,
            account.provider,
            account.id,
            NotificationKind.RESYNC.value,
            now,
            calendar_id=calendar_id,
        )
        for calendar_id in calendars
    ]
    return calendars, await append(redis, entries)

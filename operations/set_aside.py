"""Retrying the items a sync set aside (``accounts show`` and the API list them).

Invariant: a retry asks the account's actor, through its shard's stream, for a full round of
every calendar holding items set aside (``NotificationKind.RESYNC``): a round re-reads every
item and clears those that now sync; nothing is written to Postgres here.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from redis.asyncio import Redis

from cluster.keys import notifications_key
from cluster.streams import StreamEntry, append
from operations.accounts import OperatorError, require_account
from providers.models import NotificationKind
from store.db import PgPool


async def retry_set_aside(
    pool: PgPool, redis: Redis, account_id: UUID, *, now: datetime
) -> tuple[list[str], list[str]]:
    """Ask for a full round of each calendar with items set aside: (calendar ids, entry ids)."""
    account = await require_account(pool, account_id)
    if account.status != "active":
        raise OperatorError(f"the account is {account.status}, not active")
    calendars = [
        str(r["id"])
        for r in await pool.fetch(
            "SELECT id FROM calendars WHERE account_id = $1 AND set_aside > 0 ORDER BY id",
            account_id,
        )
    ]
    entries = [
        StreamEntry(
            key=notifications_key(account.shard),
            fields={
                "provider": account.provider,
                "account_id": str(account.id),
                "calendar_id": calendar_id,
                "channel_id": "",
                "kind": NotificationKind.RESYNC.value,
                "message_number": "",
                "received_at": now.isoformat(),
            },
        )
        for calendar_id in calendars
    ]
    return calendars, await append(redis, entries)

"""Items a sync set aside (``set_aside_items``): provider items that could not be read or stored.

Invariants:
- an item is keyed by its provider id, or by ``sha256:<hex>`` of its raw JSON when it has none;
  setting it aside again bumps ``attempts`` and ``last_seen`` and keeps ``first_seen``;
- an item is cleared when a later page stores or removes its id; its calendar's row counts the
  items set aside (``calendars.set_aside``), updated in the same transaction, so a page looks
  for items to clear only when there are some;
- the raw JSON is stored as the provider sent it, cleaned (``providers.text``): no NUL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from providers.models import SetAside
from store.db import Queryable

_COUNT = (
    "UPDATE calendars SET set_aside = (SELECT count(*) FROM set_aside_items s"
    " WHERE s.account_id = $1 AND s.calendar_id = $2) WHERE account_id = $1 AND id = $2"
)


@dataclass(frozen=True, slots=True)
class SetAsideRow:
    """A row of ``set_aside_items`` (the raw JSON is left out: it may be large)."""

    calendar_id: str
    item_id: str
    reason: str
    attempts: int
    first_seen: datetime
    last_seen: datetime


def item_key(item: SetAside) -> str:
    """The item's key: its provider id, else a digest of its raw JSON."""
    if item.id is not None:
        return item.id
    raw = orjson.dumps(dict(item.raw), option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


async def set_items_aside(
    conn: Queryable, account_id: UUID, calendar_id: str, items: Sequence[SetAside]
) -> None:
    """Record ``items`` as set aside (call in the page's transaction)."""
    if not items:
        return
    latest = {item_key(item): item for item in items}
    await conn.execute(
        "INSERT INTO set_aside_items AS s (account_id, calendar_id, item_id, reason, raw)"
        " SELECT $1, $2, t.item_id, t.reason, t.raw"
        " FROM unnest($3::text[], $4::text[], $5::jsonb[]) AS t(item_id, reason, raw)"
        " ON CONFLICT (account_id, calendar_id, item_id) DO UPDATE SET reason = EXCLUDED.reason,"
        " raw = EXCLUDED.raw, attempts = s.attempts + 1, last_seen = now()",
        account_id,
        calendar_id,
        list(latest),
        [item.reason for item in latest.values()],
        [orjson.dumps(dict(item.raw)).decode() for item in latest.values()],
    )
    await conn.execute(_COUNT, account_id, calendar_id)


async def clear_items(
    conn: Queryable, account_id: UUID, calendar_id: str, item_ids: Sequence[str]
) -> int:
    """Forget the items of ``item_ids`` (synced or removed since); how many were set aside."""
    if not item_ids:
        return 0
    status = await conn.execute(
        "DELETE FROM set_aside_items WHERE account_id = $1 AND calendar_id = $2"
        " AND item_id = ANY($3::text[])",
        account_id,
        calendar_id,
        list(item_ids),
    )
    cleared = int(status.split()[-1])
    if cleared:
        await conn.execute(_COUNT, account_id, calendar_id)
    return cleared


async def list_set_aside(
    conn: Queryable, account_id: UUID, *, limit: int = 50
) -> list[SetAsideRow]:
    """The account's items set aside, oldest first."""
    rows = await conn.fetch(
        "SELECT calendar_id, item_id, reason, attempts, first_seen, last_seen"
        " FROM set_aside_items WHERE account_id = $1 ORDER BY first_seen, calendar_id, item_id"
        " LIMIT $2",
        account_id,
        limit,
    )
    return [SetAsideRow(**dict(row.items())) for row in rows]


async def raw_item(
    conn: Queryable, account_id: UUID, calendar_id: str, item_id: str
) -> dict[str, Any] | None:
    """The raw JSON of one item set aside, or None."""
    raw = await conn.fetchval(
        "SELECT raw::text FROM set_aside_items WHERE account_id = $1 AND calendar_id = $2"
        " AND item_id = $3",
        account_id,
        calendar_id,
        item_id,
    )
    return None if raw is None else dict(orjson.loads(raw))


async def calendars_with_items_aside(conn: Queryable, account_id: UUID) -> list[str]:
    """The account's calendars holding items set aside, by id."""
    rows = await conn.fetch(
        "SELECT id FROM calendars WHERE account_id = $1 AND set_aside > 0 ORDER BY id",
        account_id,
    )
    return [str(r["id"]) for r in rows]

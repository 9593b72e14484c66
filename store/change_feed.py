"""The change feed's table: ``changes`` rows written with each change, for the relay
(``cluster.change_relay``) to publish to a Redis Stream.

Writers call ``record_changes`` in the transaction that makes the change, so a change row exists
if and only if the change committed. The relay then publishes them.

Contract (at-least-once, deduplicate by ``change_id``):
- The relay reads unpublished rows in id order, XADDs each to the stream, and only then marks
  them ``published_at``. A crash between the XADD and that UPDATE publishes the same rows again
  on the next run: nothing is lost, something may repeat. Consumers keep the highest (or a set
  of) ``change_id`` they applied and skip repeats.
- One relay publishes at a time (a transaction-level advisory lock per schema, held while a
  batch is read, added to the stream and marked), so entries are in id order and two relays
  never interleave.
- One account's changes are written one transaction at a time (its actor, fenced), so within an
  account stream order is id order is commit order. Across accounts a lower id committed late is
  published after higher ones (it is still published: the relay selects by ``published_at``).

Stream entry fields (all strings): ``change_id``, ``account_id`` (uuid), ``calendar_id``,
``event_id``, ``kind`` (created, updated, deleted), ``origin`` (provider, outbox), ``etag``
("" when unknown), ``created_at`` (ISO 8601, UTC), ``reason`` (on deleted: ``deleted_at_provider``,
``left_window``, ``calendar_deselected``; "" otherwise). The stream is not trimmed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast
from uuid import UUID

import asyncpg

from store.db import Queryable

ChangeKind = Literal["created", "updated", "deleted"]
# Why a ``deleted`` change's event left the store.
RemovalReason = Literal["deleted_at_provider", "left_window", "calendar_deselected"]
# One change to record: (event id, kind, etag, removal reason).
ChangeItem = tuple[str, ChangeKind, str | None, RemovalReason | None]
Origin = Literal["provider", "outbox"]

# First half of the relay's two-key advisory lock (store.migrate uses 0x1A7E_0001); the second
# is hashtext(current_schema()), so deployments sharing a database do not block each other.
RELAY_LOCK_NAMESPACE = 0x1A7E_0002

CHANGE_COLUMNS = "id, account_id, calendar_id, event_id, kind, origin, etag, created_at, reason"


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """A row of ``changes`` (without its publication time)."""

    id: int
    account_id: UUID
    calendar_id: str
    event_id: str
    kind: ChangeKind
    origin: Origin
    etag: str | None
    created_at: datetime
    reason: RemovalReason | None = None  # on ``deleted`` changes: why


def change_of(row: asyncpg.Record) -> ChangeRow:
    """A ``changes`` row (selected as ``CHANGE_COLUMNS``) as a ``ChangeRow``."""
    return ChangeRow(
        id=row["id"],
        account_id=row["account_id"],
        calendar_id=row["calendar_id"],
        event_id=row["event_id"],
        kind=cast(ChangeKind, row["kind"]),
        origin=cast(Origin, row["origin"]),
        etag=row["etag"],
        created_at=row["created_at"],
        reason=cast("RemovalReason | None", row["reason"]),
    )


async def record_changes(
    conn: Queryable,
    account_id: UUID,
    calendar_id: str,
    items: Sequence[ChangeItem],
    *,
    origin: Origin,
) -> list[ChangeRow]:
    """Insert ``(event_id, kind, etag, reason)`` changes in the given order (ids ascend); the
    rows."""
    if not items:
        return []
    event_ids, kinds, etags, reasons = (list(column) for column in zip(*items, strict=True))
    rows = await conn.fetch(
        "INSERT INTO changes (account_id, calendar_id, event_id, kind, origin, etag, reason)"
        " SELECT $1, $2, t.event_id, t.kind, $3, t.etag, t.reason"
        " FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) WITH ORDINALITY"
        " AS t(event_id, kind, etag, reason, ord) ORDER BY t.ord"
        f" RETURNING {CHANGE_COLUMNS}",
        account_id,
        calendar_id,
        origin,
        event_ids,
        kinds,
        etags,
        reasons,
    )
    return sorted((change_of(r) for r in rows), key=lambda c: c.id)


async def fetch_pending(conn: Queryable, batch: int) -> list[ChangeRow]:
    """Up to ``batch`` unpublished changes, lowest id first."""
    rows = await conn.fetch(
        f"SELECT {CHANGE_COLUMNS} FROM changes WHERE published_at IS NULL ORDER BY id LIMIT $1",
        batch,
    )
    return [change_of(r) for r in rows]


async def mark_published(conn: Queryable, ids: Sequence[int]) -> None:
    """Record that these changes are in the stream."""
    await conn.execute(
        "UPDATE changes SET published_at = now() WHERE id = ANY($1::bigint[])", list(ids)
    )

"""The rows the health audit reads: active accounts, their followed calendars, their channels.

Invariants: read-only; three queries whatever the number of accounts; channels carry no token
hash (the audit needs only where they point and when they expire).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from store.calendars import SELECTED_SQL
from store.db import Queryable


@dataclass(frozen=True, slots=True)
class AuditAccount:
    """An active account."""

    id: UUID
    provider: str
    shard: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AuditCalendar:
    """A calendar the account follows (sync enabled, still listed)."""

    account_id: UUID
    id: str
    last_synced_at: datetime | None
    push_refused: bool = False  # its provider refuses a channel: it is polled, not watched


@dataclass(frozen=True, slots=True)
class AuditChannel:
    """A push channel: the calendar it covers and when it lapses."""

    account_id: UUID
    calendar_id: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditSnapshot:
    """Everything the audit looks at, read at one moment."""

    accounts: tuple[AuditAccount, ...]
    calendars: tuple[AuditCalendar, ...]
    channels: tuple[AuditChannel, ...]


async def read_audit_snapshot(conn: Queryable) -> AuditSnapshot:
    """The active accounts with their followed calendars and their channels."""
    accounts = await conn.fetch(
        "SELECT id, provider, shard, created_at FROM accounts WHERE status = 'active' ORDER BY id"
    )
    calendars = await conn.fetch(
        "SELECT c.account_id, c.id, c.last_synced_at,"
        " c.push_refused_at IS NOT NULL AS push_refused FROM calendars c"
        " JOIN accounts a ON a.id = c.account_id WHERE a.status = 'active'"
        f" AND c.sync_enabled AND {SELECTED_SQL} AND c.removed_at IS NULL"
        " ORDER BY c.account_id, c.id"
    )
    channels = await conn.fetch(
        "SELECT p.account_id, p.calendar_id, p.expires_at FROM push_channels p"
        " JOIN accounts a ON a.id = p.account_id WHERE a.status = 'active'"
        " AND p.retired_until IS NULL ORDER BY p.account_id, p.calendar_id"
    )
    return AuditSnapshot(
        accounts=tuple(AuditAccount(**dict(row.items())) for row in accounts),
        calendars=tuple(AuditCalendar(**dict(row.items())) for row in calendars),
        channels=tuple(AuditChannel(**dict(row.items())) for row in channels),
    )

"""Calendars of an account and their sync state (delta token, cursor, mark-and-sweep round).

Invariants:
- ``reconcile_calendars`` never deletes a row: a calendar missing from the provider's list gets
  ``removed_at`` and keeps its events until an explicit purge, so a calendar that flickers out of
  the list does not lose (and later re-create) every event and its changes.
- A calendar that reappears is un-removed with its sync state cleared: it was not followed while
  gone, so its next sync is a full round whose sweep drops what went away meanwhile.
- ``start_full_round`` bumps ``round`` before the round's first page, clearing both the cursor
  and the delta token; the round's pages then mark every event they see with that round.
- Writers lock the calendar row (``FOR UPDATE``) before touching its events or sync state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from providers.models import CalendarInfo, SyncWindow
from store.db import Queryable

_COLUMNS = (
    "account_id, id, name, is_primary, time_zone, access_role, sync_enabled, delta_token,"
    " sync_cursor, round, full_round, window_start, window_end, last_synced_at, removed_at,"
    " set_aside, push_refused_at, selected"
)

# Access roles that make a calendar one the user syncs unless they choose otherwise (Google's
# accessRole, Graph's canEdit mapped to writer/reader).
DEFAULT_SELECTED_ROLES = frozenset({"owner", "writer"})
# ``CalendarState.is_selected`` in SQL over ``calendars c``.
SELECTED_SQL = (
    "COALESCE(c.selected, c.is_primary OR c.access_role IS NULL OR c.access_role IN ("
    + ", ".join(f"'{role}'" for role in sorted(DEFAULT_SELECTED_ROLES))
    + "))"
)


@dataclass(frozen=True, slots=True)
class CalendarState:
    """A row of ``calendars``."""

    account_id: UUID
    id: str
    name: str
    is_primary: bool
    time_zone: str | None
    access_role: str | None
    sync_enabled: bool
    delta_token: str | None
    sync_cursor: str | None
    round: int
    full_round: bool
    window_start: datetime | None
    window_end: datetime | None
    last_synced_at: datetime | None
    removed_at: datetime | None
    set_aside: int = 0  # items of the calendar set aside (``store.set_aside``)
    push_refused_at: datetime | None = None  # its provider refuses a channel: it is polled
    selected: bool | None = None  # the user's choice; None: ``selected_by_default``

    @property
    def is_selected(self) -> bool:
        """Whether the user syncs it: their choice, else the default rule."""
        if self.selected is not None:
            return self.selected
        return selected_by_default(self.is_primary, self.access_role)


@dataclass(frozen=True, slots=True)
class CalendarDiff:
    """What ``reconcile_calendars`` changed, as calendar ids in the listing's order."""

    added: tuple[str, ...] = ()  # new rows
    restored: tuple[str, ...] = ()  # previously removed, listed again
    renamed: tuple[str, ...] = ()  # name changed (other attributes may have changed too)
    changed: tuple[str, ...] = ()  # another attribute changed (primary, zone, role, synced)
    removed: tuple[str, ...] = ()  # no longer listed: removed_at set now

    def __bool__(self) -> bool:
        return any((self.added, self.restored, self.renamed, self.changed, self.removed))


def selected_by_default(is_primary: bool, access_role: str | None) -> bool:
    """The default: the primary calendar and those the user owns or can write to (or whose
    role the provider did not say); others (holidays, birthdays, other people's calendars) are
    listed but not synced."""
    return is_primary or access_role is None or access_role in DEFAULT_SELECTED_ROLES


def _state(row: asyncpg.Record) -> CalendarState:
    return CalendarState(**dict(row.items()))


def _attributes(info: CalendarInfo) -> tuple[object, ...]:
    return (info.primary, info.time_zone, info.access_role, info.synced)


async def get_calendar_state(
    conn: Queryable, account_id: UUID, calendar_id: str, *, for_update: bool = False
) -> CalendarState | None:
    """One calendar's row, or None; ``for_update`` locks it until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM calendars WHERE account_id = $1 AND id = $2{lock}",
        account_id,
        calendar_id,
    )
    return None if row is None else _state(row)


async def lock_write_target(
    conn: Queryable, account_id: UUID, calendar_id: str, *, primary_alias: str
) -> CalendarState | None:
    """The stored calendar an outbound write to ``calendar_id`` lands in, locked until the
    transaction ends: that id, or for ``primary_alias`` the account's primary calendar (Google
    stores it under the user's address); None if not stored. One statement."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM calendars WHERE account_id = $1 AND (id = $2"
        " OR ($2 = $3 AND is_primary AND removed_at IS NULL))"
        " ORDER BY id = $2 DESC, id LIMIT 1 FOR UPDATE",
        account_id,
        calendar_id,
        primary_alias,
    )
    return None if row is None else _state(row)


async def list_calendar_states(
    conn: Queryable, account_id: UUID, *, include_removed: bool = True
) -> list[CalendarState]:
    """The account's calendars by id (removed ones too unless ``include_removed`` is False)."""
    where = "" if include_removed else " AND removed_at IS NULL"
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM calendars WHERE account_id = $1{where} ORDER BY id", account_id
    )
    return [_state(r) for r in rows]


async def reconcile_calendars(
    conn: Queryable, account_id: UUID, listed: Sequence[CalendarInfo]
) -> CalendarDiff:
    """Make the stored calendars match the provider's list (run it inside a transaction)."""
    by_id = {info.id: info for info in listed}  # a duplicate id: the last listing wins
    rows = await conn.fetch(
        "SELECT id, name, is_primary, time_zone, access_role, sync_enabled, removed_at"
        " FROM calendars WHERE account_id = $1 ORDER BY id FOR UPDATE",
        account_id,
    )
    stored = {r["id"]: r for r in rows}
    added: list[str] = []
    restored: list[str] = []
    renamed: list[str] = []
    changed: list[str] = []
    upserts: list[tuple[object, ...]] = []
    for cal_id, info in by_id.items():
        row = stored.get(cal_id)
        if row is None:
            added.append(cal_id)
        else:
            old = (row["is_primary"], row["time_zone"], row["access_role"], row["sync_enabled"])
            is_restored = row["removed_at"] is not None
            is_renamed = row["name"] != info.name
            is_changed = old != _attributes(info)
            if not (is_restored or is_renamed or is_changed):
                continue
            if is_restored:
                restored.append(cal_id)
            if is_renamed:
                renamed.append(cal_id)
            if is_changed:
                changed.append(cal_id)
        upserts.append((cal_id, info.name, *_attributes(info)))
    if upserts:
        # A restored row restarts from a full round: it was not followed while removed.
        await conn.execute(
            "INSERT INTO calendars AS c"
            " (account_id, id, name, is_primary, time_zone, access_role, sync_enabled)"
            " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bool[], $5::text[],"
            " $6::text[], $7::bool[])"
            " ON CONFLICT (account_id, id) DO UPDATE SET name = EXCLUDED.name,"
            " is_primary = EXCLUDED.is_primary, time_zone = EXCLUDED.time_zone,"
            " access_role = EXCLUDED.access_role, sync_enabled = EXCLUDED.sync_enabled,"
            " delta_token = CASE WHEN c.removed_at IS NULL THEN c.delta_token END,"
            " sync_cursor = CASE WHEN c.removed_at IS NULL THEN c.sync_cursor END,"
            " full_round = c.full_round AND c.removed_at IS NULL,"
            " removed_at = NULL",
            account_id,
            *(list(column) for column in zip(*upserts, strict=True)),
        )
    removed = [r["id"] for r in rows if r["id"] not in by_id and r["removed_at"] is None]
    if removed:
        await conn.execute(
            "UPDATE calendars SET removed_at = now(), sync_cursor = NULL, full_round = false"
            " WHERE account_id = $1 AND id = ANY($2::text[])",
            account_id,
            removed,
        )
    return CalendarDiff(
        added=tuple(added),
        restored=tuple(restored),
        renamed=tuple(renamed),
        changed=tuple(changed),
        removed=tuple(removed),
    )


async def start_full_round(
    conn: Queryable, account_id: UUID, calendar_id: str, window: SyncWindow
) -> int:
    """Begin a full sync over ``window``: bump and return ``round``; clear cursor and token."""
    value = await conn.fetchval(
        "UPDATE calendars SET round = round + 1, full_round = true, window_start = $3,"
        " window_end = $4, sync_cursor = NULL, delta_token = NULL"
        " WHERE account_id = $1 AND id = $2 RETURNING round",
        account_id,
        calendar_id,
        window.start,
        window.end,
    )
    if value is None:
        raise LookupError(f"calendar {calendar_id!r} of account {account_id} does not exist")
    return int(value)


async def reset_sync_state(conn: Queryable, account_id: UUID, calendar_id: str) -> bool:
    """Forget the delta token and cursor (e.g. the provider expired them); False if no row.

    The next sync must then be a full round (``start_full_round``); stored events stay until
    that round's sweep.
    """
    status = await conn.execute(
        "UPDATE calendars SET delta_token = NULL, sync_cursor = NULL, full_round = false"
        " WHERE account_id = $1 AND id = $2",
        account_id,
        calendar_id,
    )
    return status != "UPDATE 0"


async def mark_push_refused(conn: Queryable, account_id: UUID, calendar_id: str) -> None:
    """Record that the provider refuses a channel on the calendar (it is polled from now on)."""
    await conn.execute(
        "UPDATE calendars SET push_refused_at = now() WHERE account_id = $1 AND id = $2",
        account_id,
        calendar_id,
    )


async def unwatchable_calendars(
    conn: Queryable, account_ids: Sequence[UUID]
) -> dict[UUID, tuple[str, ...]]:
    """The calendars whose provider refuses a channel, per account, in one query."""
    rows = await conn.fetch(
        "SELECT account_id, id FROM calendars WHERE account_id = ANY($1::uuid[])"
        " AND push_refused_at IS NOT NULL AND removed_at IS NULL ORDER BY account_id, id",
        list(account_ids),
    )
    found: dict[UUID, list[str]] = {}
    for row in rows:
        found.setdefault(row["account_id"], []).append(row["id"])
    return {account_id: tuple(ids) for account_id, ids in found.items()}


async def choose_selection(
    conn: Queryable, account_id: UUID, calendar_id: str, selected: bool | None
) -> CalendarState | None:
    """Record the user's choice for a calendar (None: back to the default rule); the row after,
    or None for a calendar the account does not have. The owning actor acts on it."""
    row = await conn.fetchrow(
        f"UPDATE calendars SET selected = $3 WHERE account_id = $1 AND id = $2"
        f" RETURNING {_COLUMNS}",
        account_id,
        calendar_id,
        selected,
    )
    return None if row is None else _state(row)


async def forget_calendar_sync(conn: Queryable, account_id: UUID, calendar_id: str) -> list[str]:
    """Drop what a deselected calendar holds: its events (their ids returned, for the change
    feed) and its sync state, so selecting it again starts with a full round."""
    rows = await conn.fetch(
        "DELETE FROM events WHERE account_id = $1 AND calendar_id = $2 RETURNING id",
        account_id,
        calendar_id,
    )
    await conn.execute(
        "UPDATE calendars SET delta_token = NULL, sync_cursor = NULL, full_round = false,"
        " window_start = NULL, window_end = NULL, last_synced_at = NULL"
        " WHERE account_id = $1 AND id = $2",
        account_id,
        calendar_id,
    )
    return sorted(str(r["id"]) for r in rows)

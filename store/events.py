"""Stored events: applying provider sync pages (with mark-and-sweep) and exporting them.

Invariants:
- ``apply_sync_page`` runs inside the caller's (fenced) transaction and writes the page, its
  change-feed rows and its continuation (cursor or delta token) together: a crash resumes from
  the last committed page, and re-applying a page changes nothing and records nothing.
- A change is recorded only for a real difference: ``created`` for a new row, ``updated`` when a
  stored field (etag and raw included) differs, ``deleted`` for a row that existed.
- An inbound upsert whose etag equals the one an outbox write of that event recorded in
  ``event_bindings`` is our own echo: the row is stored, but no change is recorded (the write
  recorded its own, origin ``outbox``). Inbound removals never touch ``event_bindings``.
- ``mirror_write`` / ``mirror_removal`` store the answer of one outbox write exactly as a sync
  page would (window rule included), with changes of origin ``outbox``.
- Mark-and-sweep, never wipe-and-reload: each page writes ``seen_round = round``; the last page
  of a full round deletes the calendar's events that the round did not see. Unchanged events
  survive without a change, so consumers see only what really went away.
- Work is set-based: one statement per kind (upserts, removals, sweep, changes, continuation)
  whatever the page size.
- Changes of one page are numbered in page order: upserts, then removals, then the sweep by id.
- Only events overlapping the calendar's window are stored: an upsert that lies wholly outside
  it (Google's incremental sync is never windowed, so an event moved far away comes back as an
  upsert) is applied as a removal, as Graph's ``@removed`` for an event that left the window.
  The stored rows are thus a function of the provider's state, whatever the sync history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, time, tzinfo
from typing import Any, cast
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import orjson

from metrics import events as metrics
from providers.models import Event, EventRemoval, SetAside, SyncPage, SyncWindow
from store.calendars import CalendarState, get_calendar_state, lock_write_target
from store.change_feed import (
    CHANGE_COLUMNS,
    ChangeItem,
    ChangeRow,
    Origin,
    RemovalReason,
    change_of,
    record_changes,
)
from store.db import Queryable
from store.set_aside import clear_items, set_items_aside

# The stored fields an upsert compares and writes, with their SQL types (unnest arrays).
_FIELDS: tuple[tuple[str, str], ...] = (
    ("status", "text"),
    ("all_day", "bool"),
    ("start_date", "date"),
    ("end_date", "date"),
    ("start_at", "timestamptz"),
    ("end_at", "timestamptz"),
    ("time_zone", "text"),
    ("title", "text"),
    ("description", "text"),
    ("location", "text"),
    ("organizer_email", "text"),
    ("attendees_count", "int"),
    ("etag", "text"),
    ("ical_uid", "text"),
    ("recurring_event_id", "text"),
    ("provider_updated_at", "timestamptz"),
    ("raw", "jsonb"),
)


# $N of the calendar's aliases in ``event_bindings`` (its id, and "primary" for the primary one).
_ALIASES = len(_FIELDS) + 5
# An inbound row is our echo when a binding of its event recorded exactly its etag.
_ECHO = (
    "EXISTS (SELECT 1 FROM event_bindings b WHERE b.account_id = $1"
    f" AND b.calendar_id = ANY(${_ALIASES}::text[]) AND b.provider_event_id = d.id"
    " AND b.etag = d.etag)"
)


def _upsert_sql(origin: Origin) -> str:
    """The set-based upsert of one calendar's events; changes of ``origin`` (``provider``
    leaves out our echoes, ``outbox`` is our write itself)."""
    names = [name for name, _ in _FIELDS]
    arrays = ", ".join(f"${i}::{sql_type}[]" for i, (_, sql_type) in enumerate(_FIELDS, start=5))
    logged_where = "d.differs" if origin == "outbox" else f"d.differs AND NOT {_ECHO}"

    def row(alias: str) -> str:
        return "(" + ", ".join(f"{alias}.{n}" for n in names) + ")"

    # $1 account, $2 calendar, $3 round, $4 ids, $5.. one array per field. ``diff`` reads the
    # rows as they were before the insert (one snapshot for the whole statement). The LATERAL
    # ... LIMIT 1 keeps it a primary-key lookup per input row: a plain join lets the planner,
    # which has no statistics for a calendar still filling up, hash the calendar's every row,
    # and the initial sync becomes quadratic.
    return (
        f"WITH input AS (SELECT * FROM unnest($4::text[], {arrays}) WITH ORDINALITY"
        f" AS t(id, {', '.join(names)}, ord)),"
        f" diff AS (SELECT i.*, e.id IS NULL AS is_new,"
        f" {row('e')} IS DISTINCT FROM {row('i')} AS differs, e.seen_round AS old_seen"
        f" FROM input i LEFT JOIN LATERAL (SELECT * FROM events e WHERE e.account_id = $1"
        f" AND e.calendar_id = $2 AND e.id = i.id LIMIT 1) e ON true),"
        f" written AS (INSERT INTO events AS e (account_id, calendar_id, id, {', '.join(names)},"
        f" seen_round) SELECT $1, $2, d.id, {', '.join('d.' + n for n in names)}, $3"
        f" FROM diff d WHERE d.differs OR d.old_seen < $3"
        f" ON CONFLICT (account_id, calendar_id, id) DO UPDATE SET"
        f" {', '.join(f'{n} = EXCLUDED.{n}' for n in names)}, seen_round = EXCLUDED.seen_round,"
        f" updated_at = CASE WHEN {row('e')} IS DISTINCT FROM {row('EXCLUDED')}"
        f" THEN now() ELSE e.updated_at END RETURNING 1),"
        # The changes in the same statement: one round trip, and the rows need not travel back.
        f" logged AS (INSERT INTO changes (account_id, calendar_id, event_id, kind, origin, etag)"
        f" SELECT $1, $2, d.id, CASE WHEN d.is_new THEN 'created' ELSE 'updated' END,"
        f" '{origin}', d.etag FROM diff d WHERE {logged_where} ORDER BY d.ord"
        f" RETURNING {CHANGE_COLUMNS})"
        f" SELECT * FROM logged ORDER BY id"
    )


_UPSERT_SQL = _upsert_sql("provider")
_MIRROR_SQL = _upsert_sql("outbox")


class RoundMismatch(ValueError):
    """A page's ``full_sync`` disagrees with the calendar's round (start_full_round missing)."""


def _columns(events: Sequence[Event]) -> list[list[Any]]:
    """One list per ``_FIELDS`` entry, in the same order."""
    rows = [
        (
            e.status.value,
            e.timing.all_day,
            e.timing.start_date,
            e.timing.end_date,
            e.timing.start_at,
            e.timing.end_at,
            e.timing.time_zone,
            e.title,
            e.description,
            e.location,
            e.organizer_email,
            e.attendees_count,
            e.etag,
            e.ical_uid,
            e.recurring_event_id,
            e.updated_at,
            orjson.dumps(dict(e.raw)).decode(),
        )
        for e in events
    ]
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in _FIELDS]


_COPY_COLUMNS = ("account_id", "calendar_id", "id", *(name for name, _ in _FIELDS), "seen_round")


def _records(
    account_id: UUID, calendar_id: str, round_: int, events: Sequence[Event]
) -> list[tuple[object, ...]]:
    """``_COPY_COLUMNS`` rows of new events."""
    columns = _columns(events)
    return [
        (account_id, calendar_id, event.id, *values, round_)
        for event, values in zip(events, zip(*columns, strict=True), strict=True)
    ]


def _check_calendar(calendar_id: str, items: Sequence[Event | EventRemoval]) -> None:
    for item in items:
        if item.calendar_id != calendar_id:
            raise ValueError(
                f"event {item.id!r} belongs to {item.calendar_id!r}, not {calendar_id!r}"
            )


async def _upsert(
    conn: Queryable,
    account_id: UUID,
    calendar_id: str,
    round_: int,
    upserts: Sequence[Event],
    *,
    full_round: bool,
    aliases: Sequence[str],
) -> list[ChangeRow]:
    """Store the upserts and record their changes (origin ``provider``, echoes left out), in
    page order; ``aliases`` are the calendar's ids in ``event_bindings``."""
    # The last copy of a repeated id wins: ON CONFLICT may touch a row only once per statement.
    latest = {e.id: e for e in upserts}
    events = list(latest.values())
    probe = None
    if full_round:
        # One round trip for both questions: is any row stored, and which are our echoes.
        probe = await conn.fetchrow(
            "SELECT EXISTS (SELECT 1 FROM events WHERE account_id = $1 AND calendar_id = $2"
            " AND id = ANY($3::text[])) AS stored, ARRAY(SELECT b.provider_event_id"
            " FROM event_bindings b JOIN unnest($3::text[], $4::text[]) AS t(id, etag)"
            " ON b.provider_event_id = t.id AND b.etag = t.etag"
            " WHERE b.account_id = $1 AND b.calendar_id = ANY($5::text[])) AS echoes",
            account_id,
            calendar_id,
            [e.id for e in events],
            [e.etag for e in events],
            list(aliases),
        )
    if probe is not None and not probe["stored"]:
        # Every row is new (an initial sync): nothing to compare, so load them with COPY. The
        # calendar row is locked, so no other writer can add one of these ids meanwhile.
        await conn.copy_records_to_table(
            "events",
            records=_records(account_id, calendar_id, round_, events),
            columns=_COPY_COLUMNS,
        )
        echoes = set(probe["echoes"])
        created: list[ChangeItem] = [
            (e.id, "created", e.etag, None) for e in events if e.id not in echoes
        ]
        return await record_changes(conn, account_id, calendar_id, created, origin="provider")
    rows = await conn.fetch(
        _UPSERT_SQL,
        account_id,
        calendar_id,
        round_,
        [e.id for e in events],
        *_columns(events),
        list(aliases),
    )
    return [change_of(r) for r in rows]


async def _remove(
    conn: Queryable,
    account_id: UUID,
    calendar_id: str,
    removals: Sequence[EventRemoval],
    reason: RemovalReason,
) -> list[ChangeItem]:
    ids = list(dict.fromkeys(r.id for r in removals))
    rows = await conn.fetch(
        "DELETE FROM events WHERE account_id = $1 AND calendar_id = $2 AND id = ANY($3::text[])"
        " RETURNING id, etag",
        account_id,
        calendar_id,
        ids,
    )
    etags = {r["id"]: r["etag"] for r in rows}
    return [(i, "deleted", etags[i], reason) for i in ids if i in etags]


async def _sweep(conn: Queryable, account_id: UUID, state: CalendarState) -> list[ChangeItem]:
    """Delete what the full round did not see: gone at the provider, or (after the window
    moved) now outside the window."""
    rows = await conn.fetch(
        "DELETE FROM events WHERE account_id = $1 AND calendar_id = $2 AND seen_round < $3"
        " RETURNING id, etag, CASE WHEN $4::timestamptz IS NOT NULL AND (CASE WHEN all_day"
        " THEN end_date <= $4::timestamptz::date OR start_date > $5::timestamptz::date"
        " ELSE end_at <= $4 OR start_at >= $5 END) THEN 'left_window'"
        " ELSE 'deleted_at_provider' END AS reason",
        account_id,
        state.id,
        state.round,
        state.window_start,
        state.window_end,
    )
    return sorted((r["id"], "deleted", r["etag"], cast(RemovalReason, r["reason"])) for r in rows)


def _overlaps(event: Event, window: SyncWindow, calendar_zone: str | None) -> bool:
    """Whether ``event`` overlaps the window as the providers list it: it starts before the
    end and ends after the start (a zero-length event at the start counts, as on Graph);
    all-day dates start at midnight in the calendar's zone (UTC when unknown)."""
    timing = event.timing
    if timing.all_day:
        assert timing.start_date is not None and timing.end_date is not None
        zone = _zone(calendar_zone)
        start = datetime.combine(timing.start_date, time(), tzinfo=zone)
        end = datetime.combine(timing.end_date, time(), tzinfo=zone)
    else:
        assert timing.start_at is not None and timing.end_at is not None
        start, end = timing.start_at, timing.end_at
    return start < window.end and (end > window.start or start >= window.start)


def _zone(name: str | None) -> tzinfo:
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return UTC


def _split_by_window(
    upserts: Sequence[Event], state: CalendarState
) -> tuple[list[Event], list[EventRemoval]]:
    """The upserts within the calendar's window, and removals for those wholly outside it."""
    if state.window_start is None or state.window_end is None:
        return list(upserts), []
    window = SyncWindow(state.window_start, state.window_end)
    inside: list[Event] = []
    outside: list[EventRemoval] = []
    for event in upserts:
        if _overlaps(event, window, state.time_zone):
            inside.append(event)
        else:
            outside.append(
                EventRemoval(
                    id=event.id,
                    calendar_id=event.calendar_id,
                    definite=False,
                    recurring_event_id=event.recurring_event_id,
                )
            )
    return inside, outside


async def apply_sync_page(
    conn: Queryable,
    account_id: UUID,
    calendar_id: str,
    page: SyncPage,
    *,
    one_by_one: bool = False,
) -> list[ChangeRow]:
    """Store one page, its changes and its continuation; call it inside a fenced transaction.

    Its items set aside are recorded, and the items set aside before that it stores or removes
    are cleared. If Postgres refuses an item's values (``ITEM_REFUSALS``) the transaction is
    spoiled: apply the page again in a new one ``one_by_one``, which stores each upsert in a
    savepoint and sets the refused aside (the fast path pays no savepoint)."""
    _check_calendar(calendar_id, page.upserts)
    _check_calendar(calendar_id, page.removals)
    state = await get_calendar_state(conn, account_id, calendar_id, for_update=True)
    if state is None:
        raise LookupError(f"calendar {calendar_id!r} of account {account_id} does not exist")
    if page.full_sync != state.full_round:
        raise RoundMismatch(
            f"calendar {calendar_id!r}: page full_sync={page.full_sync}, "
            f"calendar full_round={state.full_round}"
        )
    upserts, outside = _split_by_window(page.upserts, state)
    removals = [*page.removals, *outside]
    recorded: list[ChangeRow] = []
    refused: list[SetAside] = []
    if upserts and one_by_one:
        recorded, refused = await _upsert_each(conn, account_id, state, upserts)
    elif upserts:
        recorded = await _upsert(
            conn,
            account_id,
            calendar_id,
            state.round,
            upserts,
            full_round=state.full_round,
            aliases=binding_aliases(state),
        )
    changes: list[ChangeItem] = []
    if page.removals:
        changes += await _remove(
            conn, account_id, calendar_id, page.removals, "deleted_at_provider"
        )
    if outside:  # stored events the provider now places outside the window
        changes += await _remove(conn, account_id, calendar_id, outside, "left_window")
    if state.set_aside:  # items set aside before, stored or removed by this page
        unstored = {item.id for item in refused}
        done = [e.id for e in upserts if e.id not in unstored] + [r.id for r in removals]
        await clear_items(conn, account_id, calendar_id, done)
    if page.set_aside or refused:
        await set_items_aside(conn, account_id, calendar_id, [*page.set_aside, *refused])
        metrics.sync_items_set_aside.labels("read").inc(len(page.set_aside))
        metrics.sync_items_set_aside.labels("store").inc(len(refused))
    if page.next_cursor is not None:
        await conn.execute(
            "UPDATE calendars SET sync_cursor = $3 WHERE account_id = $1 AND id = $2",
            account_id,
            calendar_id,
            page.next_cursor,
        )
    else:
        if state.full_round:
            changes += await _sweep(conn, account_id, state)
        await conn.execute(
            "UPDATE calendars SET delta_token = $3, sync_cursor = NULL, full_round = false,"
            " last_synced_at = now() WHERE account_id = $1 AND id = $2",
            account_id,
            calendar_id,
            page.delta_token,
        )
    return recorded + await record_changes(
        conn, account_id, calendar_id, changes, origin="provider"
    )


# What Postgres refuses of one item's values (a value out of range, text it cannot hold):
# the caller applies that page again ``one_by_one``, which sets such an item aside.
ITEM_REFUSALS = (asyncpg.DataError, asyncpg.CheckViolationError, UnicodeEncodeError)


async def _upsert_each(
    conn: Queryable, account_id: UUID, state: CalendarState, upserts: Sequence[Event]
) -> tuple[list[ChangeRow], list[SetAside]]:
    """Store ``upserts`` one by one, each in a savepoint; the refused are returned set aside."""
    savepoint = getattr(conn, "transaction", None)
    if savepoint is None:
        raise TypeError("one_by_one needs a connection in a transaction, not a pool")
    recorded: list[ChangeRow] = []
    refused: list[SetAside] = []
    for event in upserts:
        try:
            async with savepoint():
                recorded += await _upsert(
                    conn,
                    account_id,
                    state.id,
                    state.round,
                    [event],
                    full_round=state.full_round,
                    aliases=binding_aliases(state),
                )
        except ITEM_REFUSALS as exc:
            refused.append(SetAside(event.id, f"not storable: {type(exc).__name__}", event.raw))
    return recorded, refused


PRIMARY_ALIAS = "primary"  # what outbox items and bindings call an account's primary calendar


def binding_aliases(state: CalendarState) -> list[str]:
    """The ids bindings may use for a stored calendar: its own, and "primary" if it is that."""
    if state.is_primary and state.id != PRIMARY_ALIAS:
        return [state.id, PRIMARY_ALIAS]
    return [state.id]


async def _stored_calendar(
    conn: Queryable, account_id: UUID, calendar_id: str
) -> CalendarState | None:
    """The stored calendar a write to ``calendar_id`` lands in (locked), or None if not synced."""
    return await lock_write_target(conn, account_id, calendar_id, primary_alias=PRIMARY_ALIAS)


async def mirror_write(conn: Queryable, account_id: UUID, event: Event) -> list[ChangeRow]:
    """Store an event as an outbox write returned it, as a sync page would (origin ``outbox``).

    Call it in the write's fenced transaction. A calendar not stored yet is left alone: its
    first full sync stores the event, and skips the change as our echo.
    """
    state = await _stored_calendar(conn, account_id, event.calendar_id)
    if state is None:
        return []
    event = replace(event, calendar_id=state.id)
    inside, outside = _split_by_window([event], state)
    if outside:
        return await _mirror_delete(conn, account_id, state.id, event.id, "left_window")
    rows = await conn.fetch(
        _MIRROR_SQL, account_id, state.id, state.round, [event.id], *_columns(inside)
    )
    return [change_of(r) for r in rows]


async def mirror_removal(
    conn: Queryable, account_id: UUID, calendar_id: str, event_id: str
) -> list[ChangeRow]:
    """Drop the stored copy of an event an outbox write deleted (origin ``outbox``)."""
    state = await _stored_calendar(conn, account_id, calendar_id)
    if state is None:
        return []
    return await _mirror_delete(conn, account_id, state.id, event_id, "deleted_at_provider")


async def _mirror_delete(
    conn: Queryable, account_id: UUID, calendar_id: str, event_id: str, reason: RemovalReason
) -> list[ChangeRow]:
    removal = EventRemoval(id=event_id, calendar_id=calendar_id)
    changes = await _remove(conn, account_id, calendar_id, [removal], reason)
    return await record_changes(conn, account_id, calendar_id, changes, origin="outbox")


def _utc(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _export(row: asyncpg.Record) -> dict[str, Any]:
    if row["all_day"]:
        start, end = row["start_date"].isoformat(), row["end_date"].isoformat()
    else:
        start, end = _utc(row["start_at"]), _utc(row["end_at"])
    return {
        "calendar_id": row["calendar_id"],
        "id": row["id"],
        "status": row["status"],
        "all_day": row["all_day"],
        "start": start,
        "end": end,
        "title": row["title"],
    }


async def export_events(conn: Queryable, account_id: UUID) -> list[dict[str, Any]]:
    """The account's events in provider-neutral, JSON-ready form, by calendar and id.

    Events of calendars marked removed are left out: the provider no longer lists them.
    Timed events give UTC instants (ISO 8601), all-day events dates (end exclusive).
    """
    rows = await conn.fetch(
        "SELECT e.calendar_id, e.id, e.status, e.all_day, e.start_date, e.end_date,"
        " e.start_at, e.end_at, e.title FROM events e JOIN calendars c"
        " ON c.account_id = e.account_id AND c.id = e.calendar_id"
        " WHERE e.account_id = $1 AND c.removed_at IS NULL ORDER BY e.calendar_id, e.id",
        account_id,
    )
    return [_export(r) for r in rows]

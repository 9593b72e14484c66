"""The Python way in for applications: ask for events to be written, in your own transaction.

``enqueue(conn, account_id, operation, payload)`` works for every account kind: it validates the
payload against the schema the account's kind declares for the operation (``kinds.registry``)
and inserts one ``outbox`` row. ``enqueue_upsert``, ``enqueue_cancel`` and ``enqueue_rebuild``
are the calendar operations' typed forms: they take plain values, check them, and insert one
``outbox`` row through ``store.outbox``; each returns the new item's id. Pass the
connection of the transaction that makes the change, so the request commits with it or not at
all (the owning replica is notified at that commit). ``upsert_request`` and friends check alone,
for callers that validate long before they write (the CLI); ``submit`` writes. See docs/outbox.md.

Invariants:
- every check runs before any SQL: a refused request raises ``OutboxRequestError`` (a
  ``ValueError`` naming the argument) and touches neither the connection nor its transaction;
- what passes converts to the shared dataclasses (``SourceKey``, ``EventTiming``), hence
  satisfies the table's CHECKs: a stored request never fails in the actor for its shape;
- timed events take aware datetimes, stored as UTC; all-day events take dates (not
  datetimes) with an exclusive end; the two never mix;
- the connection's ``search_path`` must resolve ``outbox`` to the service schema
  (``IW_DB_SCHEMA``), as ``store.db.create_pool``'s connections do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kinds import KindRegistry, default_registry
from kinds.registry import PayloadError
from outbox.model import DEFAULT_CALENDAR, MAX_VERSION, EventContent, Operation, SourceKey
from outbox.payloads import (
    CalendarPayload,
    CancelEventPayload,
    RebuildAllPayload,
    UpsertEventPayload,
)
from providers.models import EventTiming
from store import outbox as store
from store.calendars import SELECTED_SQL
from store.db import Queryable

__all__ = [
    "OutboxRequestError",
    "Request",
    "calendar_request",
    "cancel_request",
    "enqueue",
    "enqueue_cancel",
    "enqueue_rebuild",
    "enqueue_upsert",
    "event_timing",
    "rebuild_request",
    "source_key",
    "submit",
    "upsert_request",
]


class OutboxRequestError(ValueError):
    """An enqueue request is malformed; the message names the argument and the rule."""


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise OutboxRequestError(f"{name} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise OutboxRequestError(f"{name} must not be empty")
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        raise OutboxRequestError(f"{name} must not contain NUL characters")
    return value


def _optional_text(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise OutboxRequestError(f"{name} must be a str or None, got {type(value).__name__}")
    if "\x00" in value:
        raise OutboxRequestError(f"{name} must not contain NUL characters")
    return value


def _account(value: object) -> UUID:
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            raise OutboxRequestError(f"account_id {value!r} is not a UUID") from None
    raise OutboxRequestError(f"account_id must be a UUID or str, got {type(value).__name__}")


def _version(value: object) -> int:
    # bool is an int subclass; True as a version is a bug, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise OutboxRequestError(f"version must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_VERSION:
        raise OutboxRequestError(f"version must be between 0 and {MAX_VERSION}, got {value}")
    return value


def source_key(workspace_id: str, source_type: str, source_id: str, event_type: str) -> SourceKey:
    """The checked ``SourceKey`` of an application object (every part a non-empty str)."""
    return SourceKey(
        workspace_id=_text("workspace_id", workspace_id),
        source_type=_text("source_type", source_type),
        source_id=_text("source_id", source_id),
        event_type=_text("event_type", event_type),
    )


def event_timing(
    start: date | datetime, end: date | datetime, time_zone: str | None = None
) -> EventTiming:
    """Timed (two aware datetimes, UTC-normalized) or all-day (two dates, end exclusive)."""
    timed = [isinstance(value, datetime) for value in (start, end)]
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, date):
            raise OutboxRequestError(
                f"{name} must be a datetime or a date, got {type(value).__name__}"
            )
    if timed[0] != timed[1]:
        raise OutboxRequestError("start and end must both be datetimes or both be dates")
    if not timed[0]:
        if time_zone is not None:
            raise OutboxRequestError("time_zone applies to timed events only")
        if end <= start:
            raise OutboxRequestError(
                f"an all-day end is exclusive and must be after the start ({start} -> {end});"
                " a one-day event on D ends on D + 1"
            )
        return EventTiming(all_day=True, start_date=start, end_date=end)
    assert isinstance(start, datetime) and isinstance(end, datetime)
    for name, moment in (("start", start), ("end", end)):
        if moment.utcoffset() is None:
            raise OutboxRequestError(f"{name} must be timezone-aware, got {moment.isoformat()}")
    if end < start:
        raise OutboxRequestError(
            f"end must not be before start ({start.isoformat()} -> {end.isoformat()})"
        )
    return EventTiming(
        all_day=False,
        start_at=start.astimezone(UTC),
        end_at=end.astimezone(UTC),
        time_zone=_zone(time_zone),
    )


def _zone(name: object) -> str | None:
    if name is None:
        return None
    text = _text("time_zone", name)
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise OutboxRequestError(f"time_zone {text!r} is not an IANA time zone") from None
    return text


@dataclass(frozen=True, slots=True)
class Request:
    """A checked enqueue request (made by ``upsert_request`` and friends), ready for ``submit``."""

    operation: Operation
    account_id: UUID
    workspace_id: str
    calendar_id: str
    source: SourceKey | None = None  # all but REBUILD_ALL
    version: int = 0
    content: EventContent | None = None  # UPSERT_EVENT only


def upsert_request(
    account_id: UUID | str,
    *,
    workspace_id: str,
    source_type: str,
    source_id: str,
    event_type: str,
    version: int,
    title: str,
    start: date | datetime,
    end: date | datetime,
    description: str | None = None,
    time_zone: str | None = None,
    calendar_id: str = DEFAULT_CALENDAR,
) -> Request:
    """The checked UPSERT_EVENT request; ``OutboxRequestError`` names what is wrong."""
    source = source_key(workspace_id, source_type, source_id, event_type)
    return Request(
        operation=Operation.UPSERT_EVENT,
        account_id=_account(account_id),
        workspace_id=source.workspace_id,
        calendar_id=_text("calendar_id", calendar_id),
        source=source,
        version=_version(version),
        content=EventContent(
            title=_text("title", title),
            timing=event_timing(start, end, time_zone),
            description=_optional_text("description", description),
        ),
    )


def cancel_request(
    account_id: UUID | str,
    *,
    workspace_id: str,
    source_type: str,
    source_id: str,
    event_type: str,
    version: int,
    calendar_id: str = DEFAULT_CALENDAR,
) -> Request:
    """The checked CANCEL_EVENT request."""
    source = source_key(workspace_id, source_type, source_id, event_type)
    return Request(
        operation=Operation.CANCEL_EVENT,
        account_id=_account(account_id),
        workspace_id=source.workspace_id,
        calendar_id=_text("calendar_id", calendar_id),
        source=source,
        version=_version(version),
    )


def rebuild_request(
    account_id: UUID | str, *, workspace_id: str, calendar_id: str = DEFAULT_CALENDAR
) -> Request:
    """The checked REBUILD_ALL request."""
    return Request(
        operation=Operation.REBUILD_ALL,
        account_id=_account(account_id),
        workspace_id=_text("workspace_id", workspace_id),
        calendar_id=_text("calendar_id", calendar_id),
    )


async def submit(conn: Queryable, request: Request) -> int:
    """Insert the request's outbox row through ``conn``; the new item's id. A calendar the user
    deselected takes no writes (``OutboxRequestError``)."""
    deselected = await conn.fetchval(
        f"SELECT NOT {SELECTED_SQL} FROM calendars c WHERE c.account_id = $1"
        " AND (c.id = $2 OR ($2 = 'primary' AND c.is_primary)) AND c.removed_at IS NULL"
        " ORDER BY c.id = $2 DESC LIMIT 1",
        request.account_id,
        request.calendar_id,
    )
    if deselected:
        raise OutboxRequestError(
            f"calendar {request.calendar_id!r} is deselected: select it to write to it"
        )
    if request.operation is Operation.REBUILD_ALL:
        return await store.enqueue_rebuild(
            conn, request.account_id, request.workspace_id, request.calendar_id
        )
    if request.source is None:
        raise OutboxRequestError(f"a {request.operation.value} request needs a source")
    if request.operation is Operation.CANCEL_EVENT:
        return await store.enqueue_cancel(
            conn, request.account_id, request.source, request.calendar_id, version=request.version
        )
    if request.content is None:
        raise OutboxRequestError("an UPSERT_EVENT request needs content")
    return await store.enqueue_upsert(
        conn,
        request.account_id,
        request.source,
        request.calendar_id,
        version=request.version,
        content=request.content,
    )


async def enqueue_upsert(
    conn: Queryable,
    account_id: UUID | str,
    *,
    workspace_id: str,
    source_type: str,
    source_id: str,
    event_type: str,
    version: int,
    title: str,
    start: date | datetime,
    end: date | datetime,
    description: str | None = None,
    time_zone: str | None = None,
    calendar_id: str = DEFAULT_CALENDAR,
) -> int:
    """Ask for the source's event to say exactly this (a full replacement); the item id."""
    request = upsert_request(
        account_id,
        workspace_id=workspace_id,
        source_type=source_type,
        source_id=source_id,
        event_type=event_type,
        version=version,
        title=title,
        start=start,
        end=end,
        description=description,
        time_zone=time_zone,
        calendar_id=calendar_id,
    )
    return await submit(conn, request)


async def enqueue_cancel(
    conn: Queryable,
    account_id: UUID | str,
    *,
    workspace_id: str,
    source_type: str,
    source_id: str,
    event_type: str,
    version: int,
    calendar_id: str = DEFAULT_CALENDAR,
) -> int:
    """Ask for the source's event to be deleted as of ``version``; the item id."""
    request = cancel_request(
        account_id,
        workspace_id=workspace_id,
        source_type=source_type,
        source_id=source_id,
        event_type=event_type,
        version=version,
        calendar_id=calendar_id,
    )
    return await submit(conn, request)


async def enqueue_rebuild(
    conn: Queryable,
    account_id: UUID | str,
    *,
    workspace_id: str,
    calendar_id: str = DEFAULT_CALENDAR,
) -> int:
    """Ask for every event of the workspace in the calendar to be deleted and recreated."""
    request = rebuild_request(account_id, workspace_id=workspace_id, calendar_id=calendar_id)
    return await submit(conn, request)


def calendar_request(account_id: UUID | str, operation: str, payload: CalendarPayload) -> Request:
    """The checked ``Request`` of a validated calendar payload (the rules a schema cannot say:
    aware datetimes, dates and datetimes not mixed, IANA zones, no NUL)."""
    if isinstance(payload, UpsertEventPayload):
        return upsert_request(account_id, **payload.model_dump())
    if isinstance(payload, CancelEventPayload):
        return cancel_request(account_id, **payload.model_dump())
    if isinstance(payload, RebuildAllPayload):
        return rebuild_request(account_id, **payload.model_dump())
    raise OutboxRequestError(f"{operation} has no calendar request form")


async def enqueue(
    conn: Queryable,
    account_id: UUID | str,
    operation: str,
    payload: Mapping[str, Any],
    *,
    kinds: KindRegistry | None = None,
) -> int:
    """Queue ``operation`` for the account with ``payload``, validated against the schema the
    account's kind declares for it; the item id. ``OutboxRequestError`` names what is wrong
    (an unknown account, an operation the kind lacks, the payload's faulty fields)."""
    account = _account(account_id)
    registry = default_registry() if kinds is None else kinds
    kind_name = await conn.fetchval("SELECT provider FROM accounts WHERE id = $1", account)
    if kind_name is None:
        raise OutboxRequestError(f"no account {str(account)!r}")
    kind = registry.get(kind_name)
    if kind is None:
        raise OutboxRequestError(f"account kind {kind_name!r} is not registered here")
    spec = kind.operation(operation)
    if spec is None:
        accepted = ", ".join(op.name for op in kind.operations) or "none"
        raise OutboxRequestError(
            f"{kind_name} accounts have no operation {operation!r} (accepted: {accepted})"
        )
    try:
        model = spec.validate(payload)
    except PayloadError as error:
        raise OutboxRequestError(str(error)) from None
    if not spec.json_payload:
        if not isinstance(model, CalendarPayload):
            raise OutboxRequestError(f"{operation} has no column form")  # a wrong entry
        return await submit(conn, calendar_request(account, operation, model))
    workspace = getattr(model, "workspace_id", "")
    return await store.enqueue_payload(
        conn,
        account,
        kind.name,
        spec.name,
        model.model_dump(mode="json"),
        workspace_id=workspace if isinstance(workspace, str) else "",
    )

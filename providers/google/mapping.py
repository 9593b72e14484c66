"""Pure translation between Google Calendar v3 JSON and the provider-neutral models.

Invariants:
- no I/O, no clock: every function is a deterministic function of its arguments;
- a payload that does not fit the documented shape raises ``MalformedPayload`` (a ValueError)
  naming the field, never the field's value; the client turns it into ``Transient``;
- a cancelled item is always a removal of its own ``id``: a cancelled instance of a series
  removes that instance only and carries ``recurring_event_id``, never the series;
- our binding id lives under ``extendedProperties.private[BINDING_PROPERTY]``; a write only
  ever sets that key, so other private properties the event carries stay as they were;
- error messages carry the status and Google's reason string, never bodies or tokens.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from providers.errors import (
    Conflict,
    NotFound,
    Permanent,
    ProviderError,
    PushUnsupported,
    SyncStateExpired,
    Throttled,
    Transient,
    Unauthorized,
)
from providers.models import (
    CalendarInfo,
    Event,
    EventDraft,
    EventRemoval,
    EventStatus,
    EventTiming,
)
from providers.payload import MalformedPayload, obj, opt_bool, opt_str, read_str

PROVIDER = "google"

# Reasons Google documents as "back off and retry" for 403 (and 429) (providers.md A.5).
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
# 403 quotaExceeded is the Calendar usage (abuse / Workspace) limit, not the per-minute API
# quota: it lifts over minutes to hours, not seconds, so never retry it sooner than this.
QUOTA_EXCEEDED_REASON = "quotaExceeded"
QUOTA_EXCEEDED_MIN_RETRY_S = 60.0

# The private extended property holding our binding id. Google silently drops properties whose
# key exceeds 44 characters (ours has 24) and truncates values beyond 1024 characters
# (extended-properties guide, "Limits"); a truncated binding would never be found again.
BINDING_PROPERTY = "integrationWorkerBinding"
MAX_PROPERTY_VALUE_LENGTH = 1024

# Calendars whose events we cannot read: the freeBusyReader role sees busy blocks only.
_UNSYNCABLE_ROLES = frozenset({"freeBusyReader"})


def parse_rfc3339(text: str, what: str) -> datetime:
    """An RFC 3339 timestamp with offset (``Z`` or ``±hh:mm``) as an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedPayload(f"{what} is not an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise MalformedPayload(f"{what} has no UTC offset")
    return parsed.astimezone(UTC)


def format_rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC with a ``Z`` suffix (what Google expects)."""
    if moment.utcoffset() is None:
        raise ValueError("a naive datetime has no RFC 3339 form")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _zone(name: str, what: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise MalformedPayload(f"{what} names an unknown time zone") from None


# --- events --------------------------------------------------------------------------------


def _parse_date(value: object, what: str) -> date:
    if not isinstance(value, str):
        raise MalformedPayload(f"{what} is not a date string")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise MalformedPayload(f"{what} is not a yyyy-mm-dd date") from None


def _parse_moment(edge: Mapping[str, Any], what: str, calendar_zone: str | None) -> datetime:
    """``dateTime`` as aware UTC; without an offset, the edge's (or calendar's) zone applies."""
    text = edge.get("dateTime")
    if not isinstance(text, str):
        raise MalformedPayload(f"{what}.dateTime is not a string")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedPayload(f"{what}.dateTime is not an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        # Google allows an offset-less dateTime when a zone is given (providers.md A.1).
        zone_name = opt_str(edge, "timeZone", what) or calendar_zone
        if zone_name is None:
            raise MalformedPayload(f"{what}.dateTime has neither an offset nor a time zone")
        parsed = parsed.replace(tzinfo=_zone(zone_name, f"{what}.timeZone"))
    return parsed.astimezone(UTC)


def parse_timing(
    start: object, end: object, *, calendar_zone: str | None = None, what: str = "event"
) -> EventTiming:
    """Google ``start``/``end`` objects as an ``EventTiming`` (all-day end stays exclusive)."""
    start_edge = obj(start, f"{what}.start")
    end_edge = obj(end, f"{what}.end")
    try:
        if start_edge.get("date") is not None:
            return EventTiming(
                all_day=True,
                start_date=_parse_date(start_edge["date"], f"{what}.start.date"),
                end_date=_parse_date(end_edge.get("date"), f"{what}.end.date"),
            )
        zone = opt_str(start_edge, "timeZone", f"{what}.start") or calendar_zone
        return EventTiming(
            all_day=False,
            start_at=_parse_moment(start_edge, f"{what}.start", calendar_zone),
            end_at=_parse_moment(end_edge, f"{what}.end", calendar_zone),
            time_zone=zone,
        )
    except MalformedPayload:
        raise
    except ValueError as exc:  # EventTiming's own rules (end before start, ...)
        raise MalformedPayload(f"{what} timing: {exc}") from None


def _parse_status(item: Mapping[str, Any]) -> EventStatus:
    # Google omits nothing here in practice; the documented default is "confirmed".
    raw = opt_str(item, "status", "event") or EventStatus.CONFIRMED.value
    try:
        return EventStatus(raw)
    except ValueError:
        raise MalformedPayload("event.status is not confirmed, tentative or cancelled") from None


def parse_binding(body: Mapping[str, Any]) -> str | None:
    """Our binding id from ``extendedProperties.private``, if the event carries one."""
    properties = body.get("extendedProperties")
    if properties is None:
        return None
    private = obj(properties, "event.extendedProperties").get("private")
    if private is None:
        return None
    scope = obj(private, "event.extendedProperties.private")
    return opt_str(scope, BINDING_PROPERTY, "event.extendedProperties.private")


def binding_constraint(binding_id: str) -> str:
    """The events.list ``privateExtendedProperty`` constraint (``name=value``) for a binding."""
    return f"{BINDING_PROPERTY}={check_binding(binding_id)}"


def check_binding(binding_id: str) -> str:
    """``binding_id`` if Google stores it unchanged; ValueError if it would be cut or is empty."""
    if not binding_id or len(binding_id) > MAX_PROPERTY_VALUE_LENGTH:
        raise ValueError("a binding id must be 1..1024 characters")
    return binding_id


def parse_event_item(
    item: object, calendar_id: str, *, calendar_zone: str | None = None
) -> Event | EventRemoval:
    """One events.list item (or events.get/insert body) as an upsert or a removal;
    ``calendar_zone`` (the collection's ``timeZone``) applies to edges without one."""
    body = obj(item, "event")
    event_id = read_str(body, "id", "event")
    status = _parse_status(body)
    recurring_event_id = opt_str(body, "recurringEventId", "event")
    if status is EventStatus.CANCELLED:
        # Often only ``id`` is guaranteed; a cancelled instance also has recurringEventId and
        # originalStartTime, and its own id names just that instance.
        return EventRemoval(
            id=event_id,
            calendar_id=calendar_id,
            definite=True,
            recurring_event_id=recurring_event_id,
        )
    if "start" not in body or "end" not in body:
        raise MalformedPayload("event.start or event.end is missing")
    timing = parse_timing(body["start"], body["end"], calendar_zone=calendar_zone)
    organizer = body.get("organizer")
    organizer_email = (
        None
        if organizer is None
        else opt_str(obj(organizer, "event.organizer"), "email", "event.organizer")
    )
    attendees = body.get("attendees", [])
    if not isinstance(attendees, list):
        raise MalformedPayload("event.attendees is not a list")
    updated = opt_str(body, "updated", "event")
    return Event(
        id=event_id,
        calendar_id=calendar_id,
        status=status,
        timing=timing,
        title=opt_str(body, "summary", "event"),
        description=opt_str(body, "description", "event"),
        location=opt_str(body, "location", "event"),
        organizer_email=organizer_email,
        attendees_count=len(attendees),
        etag=opt_str(body, "etag", "event"),
        ical_uid=opt_str(body, "iCalUID", "event"),
        recurring_event_id=recurring_event_id,
        updated_at=None if updated is None else parse_rfc3339(updated, "event.updated"),
        binding_id=parse_binding(body),
        raw=body,
    )


def parse_live_event(item: object, calendar_id: str) -> Event:
    """An events.get/insert/patch body that must describe a live (not cancelled) event."""
    parsed = parse_event_item(item, calendar_id)
    if isinstance(parsed, EventRemoval):
        raise MalformedPayload("event is cancelled where a live event was expected")
    return parsed


# --- calendar list -------------------------------------------------------------------------


def parse_calendar_entry(entry: object) -> CalendarInfo:
    """One calendarList ``items[]`` entry; ``summaryOverride`` (the user's name) wins."""
    body = obj(entry, "calendarListEntry")
    calendar_id = read_str(body, "id", "calendarListEntry")
    name = (
        opt_str(body, "summaryOverride", "calendarListEntry")
        or opt_str(body, "summary", "calendarListEntry")
        or calendar_id
    )
    role = opt_str(body, "accessRole", "calendarListEntry")
    return CalendarInfo(
        id=calendar_id,
        name=name,
        primary=opt_bool(body, "primary", "calendarListEntry"),
        time_zone=opt_str(body, "timeZone", "calendarListEntry"),
        access_role=role,
        synced=role not in _UNSYNCABLE_ROLES,
        raw=body,
    )


# --- writes --------------------------------------------------------------------------------


def event_id_for_key(idempotency_key: str) -> str:
    """A valid Google event id (base32hex a-v0-9, 52 chars) derived only from the key."""
    digest = hashlib.sha256(idempotency_key.encode()).digest()
    return base64.b32hexencode(digest).decode().rstrip("=").lower()


def _edge_body(timing: EventTiming, which: str) -> dict[str, Any]:
    if timing.all_day:
        day = timing.start_date if which == "start" else timing.end_date
        assert day is not None  # EventTiming guarantees it for all-day events
        # dateTime/timeZone null: a patch over a timed event must clear them.
        return {"date": day.isoformat(), "dateTime": None, "timeZone": None}
    moment = timing.start_at if which == "start" else timing.end_at
    assert moment is not None  # EventTiming guarantees it for timed events
    return {"date": None, "dateTime": format_rfc3339(moment), "timeZone": timing.time_zone}


def _without_nulls(body: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _without_nulls(value) if isinstance(value, dict) else value
        for key, value in body.items()
        if value is not None
    }


def draft_body(
    draft: EventDraft, *, event_id: str | None = None, clear_absent: bool = False
) -> dict[str, Any]:
    """An ``EventDraft`` as a Google event body; ``clear_absent`` (a patch) sends absent
    fields as null so Google clears them, an insert leaves them out. ValueError for a binding
    id Google would not store as given."""
    body: dict[str, Any] = {
        "summary": draft.title,
        "description": draft.description,
        "location": draft.location,
        "start": _edge_body(draft.timing, "start"),
        "end": _edge_body(draft.timing, "end"),
    }
    if draft.binding_id is not None:
        # Patch merges maps key by key: only our key changes, others' properties stay.
        private = {BINDING_PROPERTY: check_binding(draft.binding_id)}
        body["extendedProperties"] = {"private": private}
    if event_id is not None:
        body["id"] = event_id
    return body if clear_absent else _without_nulls(body)


# --- errors --------------------------------------------------------------------------------


def error_reason(body: bytes) -> str | None:
    """The first ``error.errors[].reason`` of a Google error body (or OAuth ``error``), if any."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, Mapping):
        return None
    error = parsed.get("error")
    if isinstance(error, str):  # OAuth token endpoint shape: {"error": "invalid_grant"}
        return error
    if not isinstance(error, Mapping):
        return None
    errors = error.get("errors")
    if isinstance(errors, list):
        for entry in errors:
            if isinstance(entry, Mapping) and isinstance(entry.get("reason"), str):
                return str(entry["reason"])
    status = error.get("status")  # the newer envelope: {"error": {"status": "NOT_FOUND"}}
    return status if isinstance(status, str) else None


# Some calendars (holidays, birthdays, others') cannot be watched: events.watch refuses them.
PUSH_NOT_SUPPORTED_REASON = "pushNotSupportedForRequestedResource"


def error_for_response(
    status: int,
    body: bytes,
    *,
    operation: str,
    retry_after_s: float | None = None,
    sync: bool = False,
) -> ProviderError:
    """The taxonomy error for a non-2xx Google response (``sync``: an events.list call)."""
    # 410 on events.list is keyed on the status alone: fullSyncRequired is not always there
    # (providers.md A.3); on an event, 410 is the "deleted" answer.
    reason = error_reason(body)
    message = f"Google {operation} failed: HTTP {status}"
    common: dict[str, Any] = {"provider": PROVIDER, "status": status, "reason": reason}
    if status == 401:
        return Unauthorized(message, **common)
    if status == 429 or (status == 403 and reason in RATE_LIMIT_REASONS):
        return Throttled(message, retry_after_s=retry_after_s, **common)
    if status == 403 and reason == QUOTA_EXCEEDED_REASON:
        wait = max(retry_after_s or 0.0, QUOTA_EXCEEDED_MIN_RETRY_S)
        return Throttled(message, retry_after_s=wait, **common)
    if status == 404:
        return NotFound(message, **common)
    if 400 <= status < 500 and reason == PUSH_NOT_SUPPORTED_REASON:
        return PushUnsupported(message, **common)
    if status == 410:
        return SyncStateExpired(message, **common) if sync else NotFound(message, **common)
    if status in (409, 412):
        return Conflict(message, **common)
    if status == 408 or status >= 500:
        return Transient(message, retry_after_s=retry_after_s, **common)
    if 400 <= status < 500:
        return Permanent(message, **common)
    # 1xx/3xx reaching us means a proxy or redirect misbehaved; another try may go elsewhere.
    return Transient(message, **common)

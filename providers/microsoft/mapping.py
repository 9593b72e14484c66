"""Pure translation between Microsoft Graph (Outlook calendar) JSON and the neutral models.

Invariants:
- no I/O, no clock: every function is a deterministic function of its arguments;
- a payload that does not fit the documented shape raises ``MalformedPayload`` (a ValueError)
  naming the field, never the field's value; the client turns it into ``Transient``;
- an ``@removed`` item is ``EventRemoval(definite=False)``: in a calendarView round it also
  means "left the window" (providers.md B.1), so it never proves a deletion;
- series masters are skipped (``None``) in sync: calendarView delta returns the instances, and
  a master is a recurrence rule, not something that happens at a time; reads of one event we
  wrote (``include_masters``) keep them, since that event may have been made a series;
- our binding id is a named single-value extended property (``BINDING_PROPERTY_ID``); Graph
  returns it only when ``$expand``ed, which calendarView delta does not support, so events
  from sync carry ``binding_id=None`` and sync recognises ours by event id;
- errors are mapped by status and Graph's ``error.code`` (case-insensitive), never by message.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, time
from typing import Any

import orjson

from providers.errors import (
    Conflict,
    NotFound,
    Permanent,
    ProviderError,
    SyncStateExpired,
    Throttled,
    Transient,
    Unauthorized,
)
from providers.microsoft.timezones import UnknownTimeZone, to_iana, zone
from providers.models import (
    CalendarInfo,
    Event,
    EventDraft,
    EventRemoval,
    EventStatus,
    EventTiming,
)
from providers.payload import MalformedPayload, obj, opt_bool, opt_str, read_str

PROVIDER = "microsoft"
PRIMARY = "primary"  # our id for the account's default calendar (Graph's id stays in raw)

# Graph error codes, lower-cased (Graph itself spells SyncStateNotFound both ways, B.1).
SYNC_STATE_CODES = frozenset({"syncstatenotfound", "resyncrequired"})
NOT_FOUND_CODES = frozenset({"erroritemnotfound", "itemnotfound"})
CONFLICT_CODES = frozenset({"errorirresolvableconflict"})
THROTTLE_CODES = frozenset({"toomanyrequests", "applicationthrottled", "activitylimitreached"})

# Our binding id's property, in the named-property id format ("{type} {guid} Name {name}", the
# overview's preferred one for custom properties). The GUID is our own fixed namespace; Graph
# matches the Name case-sensitively and the value case-insensitively.
BINDING_PROPERTY_NAMESPACE = "a917c92e-112c-43d3-a07a-85042e509a1c"
BINDING_PROPERTY_NAME = "integrationWorkerBinding"
BINDING_PROPERTY_ID = f"String {{{BINDING_PROPERTY_NAMESPACE}}} Name {BINDING_PROPERTY_NAME}"

# A fixed namespace, so a transactionId depends on the idempotency key alone.
_TRANSACTION_NAMESPACE = uuid.UUID("6f1c1f9e-3b8e-5a51-9d1e-6c8f0f7d2a41")


def parse_instant(text: str, what: str) -> datetime:
    """A Graph timestamp (``...Z``, up to 7 fractional digits) as aware UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedPayload(f"{what} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise MalformedPayload(f"{what} has no UTC offset")
    return parsed.astimezone(UTC)


def format_instant(moment: datetime) -> str:
    """An aware datetime as ISO 8601 UTC with ``Z`` (window bounds, expirations)."""
    if moment.utcoffset() is None:
        raise ValueError("a naive datetime has no UTC form")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- events --------------------------------------------------------------------------------


def _local(edge: Mapping[str, Any], what: str) -> datetime:
    """An edge's ``dateTime`` as written (no offset in Graph's dateTimeTimeZone)."""
    text = edge.get("dateTime")
    if not isinstance(text, str):
        raise MalformedPayload(f"{what}.dateTime is not a string")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise MalformedPayload(f"{what}.dateTime is not an ISO 8601 date-time") from None


def _instant(edge: Mapping[str, Any], what: str) -> datetime:
    """An edge as aware UTC: its wall time in its ``timeZone`` (UTC when absent)."""
    local = _local(edge, what)
    if local.tzinfo is not None:  # not Graph's shape, but unambiguous
        return local.astimezone(UTC)
    zone_name = opt_str(edge, "timeZone", what) or "UTC"
    try:
        tz = zone(zone_name)
    except UnknownTimeZone:
        raise MalformedPayload(f"{what}.timeZone names an unknown time zone") from None
    return local.replace(tzinfo=tz).astimezone(UTC)


def _source_zone(body: Mapping[str, Any]) -> str | None:
    """The zone the organizer wrote the event in (IANA), when Graph says and we know it."""
    name = opt_str(body, "originalStartTimeZone", "event")
    if not name:
        return None
    try:
        return to_iana(name)
    except UnknownTimeZone:
        # Informational only (the instants are already exact): "tzone://Microsoft/Custom"
        # and friends must not fail a whole sync page.
        return None


def parse_timing(body: Mapping[str, Any], what: str = "event") -> EventTiming:
    """Graph ``start``/``end``/``isAllDay`` as an ``EventTiming`` (all-day end exclusive)."""
    start = obj(body.get("start"), f"{what}.start")
    end = obj(body.get("end"), f"{what}.end")
    try:
        if opt_bool(body, "isAllDay", what):
            # All-day events are midnights in whatever zone Graph renders them in: the date
            # part is the day, and the end midnight is already exclusive.
            return EventTiming(
                all_day=True,
                start_date=_local(start, f"{what}.start").date(),
                end_date=_local(end, f"{what}.end").date(),
            )
        return EventTiming(
            all_day=False,
            start_at=_instant(start, f"{what}.start"),
            end_at=_instant(end, f"{what}.end"),
            time_zone=_source_zone(body),
        )
    except MalformedPayload:
        raise
    except ValueError as exc:  # EventTiming's own rules (end before start, ...)
        raise MalformedPayload(f"{what} timing: {exc}") from None


def _organizer_email(body: Mapping[str, Any]) -> str | None:
    organizer = body.get("organizer")
    if organizer is None:
        return None
    address = obj(organizer, "event.organizer").get("emailAddress")
    if address is None:
        return None
    return opt_str(obj(address, "event.organizer.emailAddress"), "address", "event.organizer")


def _location(body: Mapping[str, Any]) -> str | None:
    location = body.get("location")
    if location is None:
        return None
    # Graph sends {"displayName": ""} for "no location".
    return opt_str(obj(location, "event.location"), "displayName", "event.location") or None


def _is_binding_property(property_id: str) -> bool:
    """Whether an extended property id names our binding property (type and GUID in any case)."""
    parts = property_id.split(" ")
    return (
        len(parts) == 4
        and parts[0].lower() == "string"
        and parts[1].strip("{}").lower() == BINDING_PROPERTY_NAMESPACE
        and parts[2].lower() == "name"
        and parts[3] == BINDING_PROPERTY_NAME
    )


def parse_binding(body: Mapping[str, Any]) -> str | None:
    """Our binding id from an ``$expand``ed ``singleValueExtendedProperties``, if present."""
    entries = body.get("singleValueExtendedProperties")
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise MalformedPayload("event.singleValueExtendedProperties is not a list")
    for entry in entries:
        what = "event.singleValueExtendedProperties"
        prop = obj(entry, what)
        if _is_binding_property(read_str(prop, "id", what)):
            return opt_str(prop, "value", what)
    return None


def same_binding(found: str | None, wanted: str) -> bool:
    """Whether a returned binding value is ``wanted`` (Graph compares values case-insensitively)."""
    return found is not None and found.casefold() == wanted.casefold()


def _literal(text: str) -> str:
    """An OData string literal (a quote inside is doubled)."""
    return "'" + text.replace("'", "''") + "'"


# $expand that returns our property (the only documented way to read one back).
BINDING_EXPAND = f"singleValueExtendedProperties($filter=id eq {_literal(BINDING_PROPERTY_ID)})"


def binding_filter(binding_id: str) -> str:
    """The documented ``$filter`` for events whose binding property equals ``binding_id``."""
    return (
        f"singleValueExtendedProperties/Any(ep: ep/id eq {_literal(BINDING_PROPERTY_ID)}"
        f" and ep/value eq {_literal(binding_id)})"
    )


def parse_event_item(
    item: object, calendar_id: str, *, include_masters: bool = False
) -> Event | EventRemoval | None:
    """One delta item (or an events body) as an upsert, a removal, or None (a series master,
    unless ``include_masters``: then the master is an Event of its first occurrence's times)."""
    body = obj(item, "event")
    event_id = read_str(body, "id", "event")
    if "@removed" in body:
        obj(body["@removed"], "event.@removed")
        return EventRemoval(
            id=event_id,
            calendar_id=calendar_id,
            definite=False,
            recurring_event_id=opt_str(body, "seriesMasterId", "event"),
        )
    kind = opt_str(body, "type", "event")
    if kind == "seriesMaster" and not include_masters:
        return None
    status = EventStatus.CANCELLED if opt_bool(body, "isCancelled", "event") else None
    attendees = body.get("attendees")
    attendees = [] if attendees is None else attendees
    if not isinstance(attendees, list):
        raise MalformedPayload("event.attendees is not a list")
    modified = opt_str(body, "lastModifiedDateTime", "event")
    return Event(
        id=event_id,
        calendar_id=calendar_id,
        status=status or EventStatus.CONFIRMED,
        timing=parse_timing(body),
        title=opt_str(body, "subject", "event"),
        description=opt_str(body, "bodyPreview", "event"),
        location=_location(body),
        organizer_email=_organizer_email(body),
        attendees_count=len(attendees),
        etag=opt_str(body, "@odata.etag", "event"),
        ical_uid=opt_str(body, "iCalUId", "event"),
        recurring_event_id=(
            opt_str(body, "seriesMasterId", "event")
            if kind in ("occurrence", "exception")
            else None
        ),
        updated_at=(
            None if modified is None else parse_instant(modified, "event.lastModifiedDateTime")
        ),
        binding_id=parse_binding(body),
        raw=body,
    )


def parse_live_event(item: object, calendar_id: str) -> Event:
    """A create/patch/get body that must describe one event (not a removal or a master)."""
    parsed = parse_event_item(item, calendar_id)
    if not isinstance(parsed, Event):
        raise MalformedPayload("event is not a single event or instance")
    return parsed


# --- calendars -----------------------------------------------------------------------------


def parse_calendar(entry: object, *, sync_others: bool) -> CalendarInfo:
    """One ``/me/calendars`` entry; the default calendar becomes ``primary``, and the others
    are ``synced`` only when syncing them (beta delta) is enabled."""
    body = obj(entry, "calendar")
    graph_id = read_str(body, "id", "calendar")
    primary = opt_bool(body, "isDefaultCalendar", "calendar")
    can_edit = opt_bool(body, "canEdit", "calendar")
    return CalendarInfo(
        id=PRIMARY if primary else graph_id,
        name=opt_str(body, "name", "calendar") or graph_id,
        primary=primary,
        time_zone=None,  # Graph calendars carry no zone; events carry their own
        access_role="writer" if can_edit else "reader",
        synced=primary or sync_others,
        raw=body,
    )


# --- writes --------------------------------------------------------------------------------


def transaction_id_for_key(idempotency_key: str) -> str:
    """The ``transactionId`` Graph dedupes creates by, derived only from the key."""
    return str(uuid.uuid5(_TRANSACTION_NAMESPACE, idempotency_key))


def _edge_body(timing: EventTiming, which: str) -> dict[str, str]:
    if timing.all_day:
        day = timing.start_date if which == "start" else timing.end_date
        assert day is not None  # EventTiming guarantees it for all-day events
        # Graph wants all-day edges as midnights; UTC keeps them free of DST questions.
        return {"dateTime": datetime.combine(day, time()).isoformat(), "timeZone": "UTC"}
    moment = timing.start_at if which == "start" else timing.end_at
    assert moment is not None  # EventTiming guarantees it for timed events
    wall = moment.astimezone(UTC).replace(tzinfo=None)
    return {"dateTime": wall.isoformat(), "timeZone": "UTC"}


def draft_body(
    draft: EventDraft, *, transaction_id: str | None = None, clear_absent: bool = False
) -> dict[str, Any]:
    """An ``EventDraft`` as a Graph event body; ``clear_absent`` (a patch) empties the
    description and location a create would leave out."""
    body: dict[str, Any] = {
        "subject": draft.title,
        "isAllDay": draft.timing.all_day,
        "start": _edge_body(draft.timing, "start"),
        "end": _edge_body(draft.timing, "end"),
    }
    if draft.description is not None or clear_absent:
        body["body"] = {"contentType": "text", "content": draft.description or ""}
    if draft.location is not None or clear_absent:
        body["location"] = {"displayName": draft.location or ""}
    if draft.binding_id is not None:
        # A PATCH sets the listed properties only; other extended properties stay.
        body["singleValueExtendedProperties"] = [
            {"id": BINDING_PROPERTY_ID, "value": draft.binding_id}
        ]
    if transaction_id is not None:
        body["transactionId"] = transaction_id
    return body


# --- errors --------------------------------------------------------------------------------


def error_code(body: bytes) -> str | None:
    """``error.code`` of a Graph error body (or the OAuth ``error`` string), if any."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, Mapping):
        return None
    error = parsed.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, Mapping) and isinstance(error.get("code"), str):
        return str(error["code"])
    return None


def error_for_response(
    status: int,
    body: bytes,
    *,
    operation: str,
    retry_after_s: float | None = None,
    sync: bool = False,
) -> ProviderError:
    """The taxonomy error for a non-2xx Graph response (``sync``: a delta call)."""
    code = error_code(body)
    lowered = (code or "").lower()
    message = f"Graph {operation} failed: HTTP {status}"
    common: dict[str, Any] = {"provider": PROVIDER, "status": status, "reason": code}
    if lowered in SYNC_STATE_CODES or (sync and status == 410):
        return SyncStateExpired(message, **common)
    if status == 401:
        return Unauthorized(message, **common)
    if status == 429 or lowered in THROTTLE_CODES:
        return Throttled(message, retry_after_s=retry_after_s, **common)
    if status == 503 and retry_after_s is not None:
        # Graph's "service busy, come back after Retry-After" (providers.md B.3).
        return Throttled(message, retry_after_s=retry_after_s, **common)
    if status in (404, 410) or lowered in NOT_FOUND_CODES:
        return NotFound(message, **common)
    if status in (409, 412) or lowered in CONFLICT_CODES:
        return Conflict(message, **common)
    if status == 408 or status >= 500:
        return Transient(message, retry_after_s=retry_after_s, **common)
    if 400 <= status < 500:
        return Permanent(message, **common)
    # 1xx/3xx reaching us means a proxy or redirect misbehaved; another try may go elsewhere.
    return Transient(message, **common)

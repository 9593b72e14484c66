"""Outlook calendar state: calendars, events (single, series master, exception), cancelled
occurrences, and the instance view calendarView and its delta read (pure, no aiohttp).

Invariants: every change stamps the touched records with a new store-wide ``seq`` and a new
``changeKey`` (so ``@odata.etag`` changes too) and tells the listeners ``(user_id, calendar_id,
event_id, change_type, etag)``; deleted events are kept as tombstones, never reused; an
occurrence's id is a pure function of its master id and original start, and the exception made
from it keeps that id; an occurrence's ``iCalUId`` differs from its master's and its siblings'
(the date is embedded, as Exchange does); single-value extended properties are stored as
written, a PATCH merges them by id, and ``render`` never shows them (see ``extended``).
"""

from __future__ import annotations

import copy
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.emulators.shared.clock import Clock
from sandbox.emulators.shared.tokens import TokenError, b64url, b64url_decode

from . import extended, recurrence
from .errors import GraphError, bad_request, etag_mismatch, not_found
from .times import (
    ZoneError,
    format_date_time_zone,
    format_timestamp,
    parse_date_time_zone,
)

_WRITABLE = frozenset(
    {
        "subject", "body", "start", "end", "location", "locations", "attendees", "isAllDay",
        "recurrence", "categories", "importance", "sensitivity", "showAs", "isReminderOn",
        "reminderMinutesBeforeStart", "responseRequested", "allowNewTimeProposals",
        "isOnlineMeeting", "onlineMeetingProvider", "hideAttendees", "originalStartTimeZone",
        "originalEndTimeZone", "transactionId", "singleValueExtendedProperties",
    }
)  # fmt: skip
# Server-owned properties a client may echo back; they are ignored rather than refused.
_READ_ONLY = frozenset(
    {
        "id", "changeKey", "createdDateTime", "lastModifiedDateTime", "iCalUId", "uid", "type",
        "seriesMasterId", "originalStart", "isCancelled", "isOrganizer", "organizer", "webLink",
        "bodyPreview", "hasAttachments", "responseStatus", "isDraft", "onlineMeeting",
        "onlineMeetingUrl", "occurrenceId",
    }
)  # fmt: skip
_OCC_PREFIX = "AAMkOC"
_UID_HEAD = "040000008200E00074C5B7101A82E008"
_TAGS = re.compile(r"<[^>]+>")
# (user_id, calendar_id, event_id, change_type, etag)
Listener = Callable[[str, str, str, str, str], None]


@dataclass
class CalendarRecord:
    id: str
    owner: str
    name: str
    is_default: bool
    change_key: str = field(default_factory=lambda: b64url(secrets.token_bytes(12)))


@dataclass
class EventRecord:
    """A stored event; ``body`` holds client-writable fields with start/end as given."""

    id: str
    calendar_id: str
    owner: str
    kind: str  # singleInstance | seriesMaster | exception
    body: dict[str, Any]
    created: datetime
    modified: datetime
    change_key: str
    ical_uid: str
    seq: int
    master_id: str | None = None
    original_start: datetime | None = None
    deleted: bool = False
    # Masters only: original starts (UTC) of cancelled occurrences.
    cancelled: set[datetime] = field(default_factory=set)

    @property
    def etag(self) -> str:
        return f'W/"{self.change_key}"'


@dataclass(frozen=True)
class Instance:
    """One entry of a calendar view: its id, change key, span and UTC-rendered resource."""

    id: str
    change_key: str
    start: datetime
    end: datetime
    resource: dict[str, Any]


def occurrence_id(master_id: str, original_start: datetime) -> str:
    stamp = original_start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return _OCC_PREFIX + b64url(f"{master_id}|{stamp}".encode())


def parse_occurrence_id(event_id: str) -> tuple[str, datetime] | None:
    if not event_id.startswith(_OCC_PREFIX):
        return None
    try:
        master_id, _, stamp = b64url_decode(event_id[len(_OCC_PREFIX) :]).decode().rpartition("|")
        moment = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except (ValueError, TokenError, UnicodeDecodeError):
        return None
    return master_id, moment


class Store:
    """All calendar state plus the operations the API and the control API share."""

    def __init__(self, clock: Clock, *, horizon_days: int = 730) -> None:
        self.clock = clock
        self.horizon = timedelta(days=horizon_days)
        self.calendars: dict[str, CalendarRecord] = {}
        self.events: dict[str, EventRecord] = {}
        self.transactions: dict[tuple[str, str], str] = {}
        self.user_emails: dict[str, str] = {}
        self.user_names: dict[str, str] = {}
        self.listeners: list[Listener] = []
        self.seq = 0

    # --- calendars -------------------------------------------------------------------------

    def add_user(self, user_id: str, email: str, name: str) -> CalendarRecord:
        self.user_emails[user_id], self.user_names[user_id] = email, name
        return self.add_calendar(user_id, "Calendar", is_default=True)

    def add_calendar(self, user_id: str, name: str, *, is_default: bool = False) -> CalendarRecord:
        if user_id not in self.user_emails:
            raise KeyError(f"unknown user {user_id!r}")
        cal = CalendarRecord("AAMkCA" + b64url(secrets.token_bytes(24)), user_id, name, is_default)
        self.calendars[cal.id] = cal
        return cal

    def calendars_of(self, user_id: str) -> list[CalendarRecord]:
        return [c for c in self.calendars.values() if c.owner == user_id]

    def default_calendar(self, user_id: str) -> CalendarRecord:
        return next(c for c in self.calendars_of(user_id) if c.is_default)

    def calendar(self, user_id: str, calendar_id: str) -> CalendarRecord:
        cal = self.calendars.get(calendar_id)
        if cal is None or cal.owner != user_id:
            raise not_found()
        return cal

    def calendar_resource(self, cal: CalendarRecord) -> dict[str, Any]:
        return {
            "@odata.etag": f'W/"{cal.change_key}"',
            "id": cal.id,
            "name": cal.name,
            "color": "auto",
            "hexColor": "",
            "isDefaultCalendar": cal.is_default,
            "changeKey": cal.change_key,
            "canShare": True,
            "canViewPrivateItems": True,
            "canEdit": True,
            "allowedOnlineMeetingProviders": ["teamsForBusiness"],
            "defaultOnlineMeetingProvider": "teamsForBusiness",
            "isTallyingResponses": True,
            "isRemovable": not cal.is_default,
            "owner": {"name": self.user_names[cal.owner], "address": self.user_emails[cal.owner]},
        }

    # --- writes ----------------------------------------------------------------------------

    def create_event(self, cal: CalendarRecord, body: Any) -> tuple[EventRecord, bool]:
        """Create (or, for a known transactionId, return the earlier event); True if created."""
        fields = _writable(body)
        if extended.FIELD in fields:
            fields[extended.FIELD] = extended.validate(fields[extended.FIELD])
        txn = fields.get("transactionId")
        if isinstance(txn, str) and (cal.owner, txn) in self.transactions:
            earlier = self.events[self.transactions[(cal.owner, txn)]]
            if not earlier.deleted:
                return earlier, False
        _validate(fields, new=True)
        now = self.clock.now()
        kind = "seriesMaster" if fields.get("recurrence") else "singleInstance"
        record = EventRecord(
            id="AAMkAG" + b64url(secrets.token_bytes(33)),
            calendar_id=cal.id,
            owner=cal.owner,
            kind=kind,
            body=fields,
            created=now,
            modified=now,
            change_key="",
            ical_uid=_UID_HEAD + "00000000" + secrets.token_hex(24).upper(),
            seq=0,
        )
        self.events[record.id] = record
        if isinstance(txn, str):
            self.transactions[(cal.owner, txn)] = record.id
        self._touch(record, "created")
        return record, True

    def get(self, user_id: str, event_id: str) -> EventRecord | Instance:
        """A stored event, or a virtual occurrence of a series; 404 otherwise."""
        record = self.events.get(event_id)
        if record is not None and record.owner == user_id and not record.deleted:
            return record
        master, start = self._occurrence(user_id, event_id)
        occ = self._find_occurrence(master, start)
        return self._occurrence_instance(master, occ)

    def update_event(
        self, user_id: str, event_id: str, changes: Any, if_match: str | None
    ) -> EventRecord:
        """PATCH: merge writable fields; an occurrence id becomes an exception."""
        fields = _writable(changes)
        fields.pop("transactionId", None)
        record = self.events.get(event_id)
        if record is None or record.deleted or record.owner != user_id:
            master, start = self._occurrence(user_id, event_id)
            occ = self._find_occurrence(master, start)
            _check_etag(master.etag, if_match)
            if "recurrence" in fields:
                raise bad_request(
                    "Recurrence can't be set on an occurrence.", "ErrorInvalidRequest"
                )
            record = self._materialise(master, occ)
        else:
            _check_etag(record.etag, if_match)
            if record.kind == "exception" and "recurrence" in fields:
                raise bad_request(
                    "Recurrence can't be set on an occurrence.", "ErrorInvalidRequest"
                )
        if extended.FIELD in fields:
            written = extended.validate(fields[extended.FIELD])
            fields[extended.FIELD] = extended.merge(record.body.get(extended.FIELD, []), written)
        merged = {**record.body, **fields}
        if record.kind != "exception":
            merged = {k: v for k, v in merged.items() if v is not None or k != "recurrence"}
        _validate(merged, new=False)
        record.body = merged
        if record.kind != "exception":
            record.kind = "seriesMaster" if merged.get("recurrence") else "singleInstance"
        self._touch(record, "updated")
        return record

    def delete_event(self, user_id: str, event_id: str, if_match: str | None = None) -> None:
        """DELETE: a series takes its exceptions with it; an occurrence id cancels it."""
        record = self.events.get(event_id)
        if record is None or record.deleted or record.owner != user_id:
            master, start = self._occurrence(user_id, event_id)
            self._find_occurrence(master, start)
            _check_etag(master.etag, if_match)
            master.cancelled.add(start)
            self._touch(master, "updated")
            self._notify(user_id, master.calendar_id, event_id, "deleted", master.etag)
            return
        _check_etag(record.etag, if_match)
        record.deleted = True
        if record.kind == "exception" and record.master_id and record.original_start:
            master = self.events[record.master_id]
            master.cancelled.add(record.original_start)
            self._touch(master, "updated")
        self._touch(record, "deleted")
        if record.kind == "seriesMaster":
            for other in self.events.values():
                if other.master_id == record.id and not other.deleted:
                    other.deleted = True
                    self._touch(other, "deleted")

    # --- reading ---------------------------------------------------------------------------

    def view(
        self, user_id: str, calendar_id: str, window: tuple[datetime, datetime]
    ) -> dict[str, Instance]:
        """calendarView: singles, occurrences and exceptions overlapping the window, by id."""
        out: dict[str, Instance] = {}
        for record in self.events.values():
            if record.deleted or record.calendar_id != calendar_id or record.owner != user_id:
                continue
            if record.kind == "seriesMaster":
                for occ in self._occurrences(record, window):
                    inst = self._occurrence_instance(record, occ)
                    out[inst.id] = inst
            else:
                inst = self.instance(record)
                if inst.start < window[1] and (inst.end > window[0] or inst.start >= window[0]):
                    out[inst.id] = inst
        return out

    def events_of(self, user_id: str, calendar_id: str) -> list[EventRecord]:
        """The events collection of a calendar: live singles and series masters, oldest first."""
        return [
            r
            for r in self.events.values()
            if r.owner == user_id
            and r.calendar_id == calendar_id
            and not r.deleted
            and r.kind != "exception"
        ]

    def extended_properties(self, item: EventRecord | Instance) -> list[dict[str, str]]:
        """The stored single-value extended properties of an event or occurrence (an
        occurrence that is not an exception shows its master's)."""
        if isinstance(item, EventRecord):
            record: EventRecord | None = item
        else:
            master_id = item.resource.get("seriesMasterId") or ""
            record = self.events.get(item.id) or self.events.get(master_id)
        return list(record.body.get(extended.FIELD, [])) if record is not None else []

    def changed_since(self, user_id: str, calendar_id: str, seq: int) -> Iterator[str]:
        """Ids of events (and occurrences of changed masters' exceptions) touched after seq."""
        for record in self.events.values():
            if record.seq > seq and record.calendar_id == calendar_id and record.owner == user_id:
                yield record.id

    def instance(self, record: EventRecord) -> Instance:
        start, _ = parse_date_time_zone(record.body["start"])
        end, _ = parse_date_time_zone(record.body["end"])
        return Instance(record.id, record.change_key, start, end, self.render(record))

    def render(self, record: EventRecord) -> dict[str, Any]:
        """The Graph event resource, times in UTC."""
        body = record.body
        start, start_tz = parse_date_time_zone(body["start"])
        end, end_tz = parse_date_time_zone(body["end"])
        master = self.events.get(record.master_id) if record.master_id else None
        content = (body.get("body") or {}).get("content") or ""
        owner_email = self.user_emails[record.owner]
        out: dict[str, Any] = {
            "@odata.etag": record.etag,
            "id": record.id,
            "createdDateTime": format_timestamp(record.created),
            "lastModifiedDateTime": format_timestamp(record.modified),
            "changeKey": record.change_key,
            "categories": list(body.get("categories") or []),
            "transactionId": body.get("transactionId"),
            "originalStartTimeZone": body.get("originalStartTimeZone") or start_tz,
            "originalEndTimeZone": body.get("originalEndTimeZone") or end_tz,
            "iCalUId": record.ical_uid,
            "uid": (master or record).ical_uid,
            "reminderMinutesBeforeStart": body.get("reminderMinutesBeforeStart", 15),
            "isReminderOn": body.get("isReminderOn", True),
            "hasAttachments": False,
            "subject": body.get("subject") or "",
            "bodyPreview": _TAGS.sub("", content).strip()[:255],
            "importance": body.get("importance", "normal"),
            "sensitivity": body.get("sensitivity", "normal"),
            "isAllDay": bool(body.get("isAllDay", False)),
            "isCancelled": False,
            "isOrganizer": True,
            "responseRequested": body.get("responseRequested", True),
            "seriesMasterId": record.master_id,
            "showAs": body.get("showAs", "busy"),
            "type": record.kind,
            "webLink": f"https://outlook.office365.com/owa/?itemid={record.id}&exvsurl=1&path=/calendar/item",
            "onlineMeetingUrl": None,
            "isOnlineMeeting": bool(body.get("isOnlineMeeting", False)),
            "onlineMeetingProvider": body.get("onlineMeetingProvider", "unknown"),
            "allowNewTimeProposals": body.get("allowNewTimeProposals", True),
            "isDraft": False,
            "hideAttendees": body.get("hideAttendees", False),
            "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
            "body": {
                "contentType": (body.get("body") or {}).get("contentType", "html"),
                "content": content,
            },
            "start": format_date_time_zone(start, "UTC"),
            "end": format_date_time_zone(end, "UTC"),
            "location": _location(body.get("location")),
            "locations": copy.deepcopy(body.get("locations") or []),
            "recurrence": copy.deepcopy(body.get("recurrence"))
            if record.kind == "seriesMaster"
            else None,
            "attendees": copy.deepcopy(body.get("attendees") or []),
            "organizer": {
                "emailAddress": {"name": self.user_names[record.owner], "address": owner_email}
            },
            "onlineMeeting": None,
        }
        if record.original_start is not None:
            out["originalStart"] = record.original_start.strftime("%Y-%m-%dT%H:%M:%SZ")
        return out

    # --- helpers ---------------------------------------------------------------------------

    def _occurrence(self, user_id: str, event_id: str) -> tuple[EventRecord, datetime]:
        parsed = parse_occurrence_id(event_id)
        if parsed is None:
            raise not_found()
        master = self.events.get(parsed[0])
        if master is None or master.deleted or master.owner != user_id:
            raise not_found()
        if master.kind != "seriesMaster" or parsed[1] in master.cancelled:
            raise not_found()
        return master, parsed[1]

    def _find_occurrence(self, master: EventRecord, start: datetime) -> recurrence.Occurrence:
        around = (start - timedelta(days=1), start + timedelta(days=1))
        for occ in self._expand(master, around):
            if occ.original_start == start:
                return occ
        raise not_found()

    def _expand(
        self, master: EventRecord, window: tuple[datetime, datetime]
    ) -> list[recurrence.Occurrence]:
        start, _ = parse_date_time_zone(master.body["start"])
        end, _ = parse_date_time_zone(master.body["end"])
        occs = recurrence.expand(master.body["recurrence"], start, end, window)
        return [
            recurrence.Occurrence(o.original_start.astimezone(UTC), o.start, o.end) for o in occs
        ]

    def _occurrences(
        self, master: EventRecord, window: tuple[datetime, datetime]
    ) -> list[recurrence.Occurrence]:
        """Unmodified, uncancelled occurrences plus exceptions' ids resolved by the caller."""
        out = []
        # Exceptions may have moved far from their original start: look a horizon around.
        wide = (window[0] - timedelta(days=31), window[1] + timedelta(days=31))
        for planned in self._expand(master, wide):
            if planned.original_start in master.cancelled:
                continue
            occ = planned
            exc = self.events.get(occurrence_id(master.id, occ.original_start))
            if exc is not None and not exc.deleted:
                start, _ = parse_date_time_zone(exc.body["start"])
                end, _ = parse_date_time_zone(exc.body["end"])
                occ = recurrence.Occurrence(occ.original_start, start, end)
            if occ.start < window[1] and (occ.end > window[0] or occ.start >= window[0]):
                out.append(occ)
        return out

    def _occurrence_instance(self, master: EventRecord, occ: recurrence.Occurrence) -> Instance:
        occ_id = occurrence_id(master.id, occ.original_start)
        exc = self.events.get(occ_id)
        if exc is not None and not exc.deleted:
            return self.instance(exc)
        resource = self.render(master)
        local = occ.original_start.astimezone(UTC)
        resource.update(
            id=occ_id,
            type="occurrence",
            seriesMasterId=master.id,
            recurrence=None,
            iCalUId=_UID_HEAD
            + f"{local.year:04X}{local.month:02X}{local.day:02X}"
            + master.ical_uid[40:],
            start=format_date_time_zone(occ.start, "UTC"),
            end=format_date_time_zone(occ.end, "UTC"),
            originalStart=local.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        return Instance(occ_id, master.change_key, occ.start, occ.end, resource)

    def _materialise(self, master: EventRecord, occ: recurrence.Occurrence) -> EventRecord:
        inst = self._occurrence_instance(master, occ)
        body = {k: copy.deepcopy(v) for k, v in master.body.items() if k != "recurrence"}
        tz_name = master.body["start"].get("timeZone") or "UTC"
        body["start"] = format_date_time_zone(occ.start, tz_name)
        body["end"] = format_date_time_zone(occ.end, master.body["end"].get("timeZone") or tz_name)
        record = EventRecord(
            id=inst.id,
            calendar_id=master.calendar_id,
            owner=master.owner,
            kind="exception",
            body=body,
            created=master.created,
            modified=master.modified,
            change_key=master.change_key,
            ical_uid=inst.resource["iCalUId"],
            seq=master.seq,
            master_id=master.id,
            original_start=occ.original_start,
        )
        self.events[record.id] = record
        return record

    def _touch(self, record: EventRecord, change_type: str) -> None:
        """Stamp a change (seq, lastModified, changeKey) and tell the listeners."""
        self.seq += 1
        record.seq = self.seq
        record.modified = self.clock.now()
        record.change_key = b64url(uuid.uuid4().bytes + self.seq.to_bytes(4, "big"))
        self._notify(record.owner, record.calendar_id, record.id, change_type, record.etag)

    def _notify(
        self, user_id: str, calendar_id: str, event_id: str, change_type: str, etag: str
    ) -> None:
        for listener in list(self.listeners):
            listener(user_id, calendar_id, event_id, change_type, etag)


def _writable(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise GraphError(400, "RequestBodyRead", "A JSON object is required.")
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("@odata.") or key in _READ_ONLY:
            continue
        if key not in _WRITABLE:
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The property '{key}' does not exist on type 'microsoft.graph.event'. Make sure "
                "to only use property names that are defined by the type or mark the type as "
                "open type.",
            )
        out[key] = copy.deepcopy(value)
    return out


def _validate(fields: dict[str, Any], *, new: bool) -> None:
    for name in ("start", "end"):
        if name not in fields:
            raise bad_request(f"Your request can't be completed. {name} is required.",
                              "ErrorInvalidRequest")  # fmt: skip
    try:
        start, _ = parse_date_time_zone(fields["start"])
        end, _ = parse_date_time_zone(fields["end"])
    except ZoneError as exc:
        raise GraphError(
            400,
            "TimeZoneNotSupportedException",
            "A valid TimeZone value must be specified. The following TimeZone value is not "
            f"supported: '{exc}'.",
        ) from exc
    except ValueError as exc:
        raise bad_request(f"Cannot convert the literal to a dateTimeTimeZone: {exc}",
                          "RequestBodyRead") from exc  # fmt: skip
    if end < start:
        raise bad_request(
            "Your request can't be completed. The end date must be after the start date.",
            "ErrorInvalidRequest",
        )
    if fields.get("recurrence"):
        try:
            recurrence.validate(fields["recurrence"], start)
        except (ValueError, TypeError, KeyError) as exc:
            raise bad_request(
                f"Your request can't be completed. The recurrence pattern is invalid: {exc}",
                "ErrorInvalidRequest",
            ) from exc
    del new


def _check_etag(etag: str, if_match: str | None) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    want = etag.removeprefix("W/")
    if if_match.strip().removeprefix("W/") != want:
        raise etag_mismatch()


def _location(value: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "displayName": "",
        "locationType": "default",
        "uniqueIdType": "unknown",
        "address": {},
        "coordinates": {},
    }
    if isinstance(value, dict):
        base.update(copy.deepcopy(value))
    return base

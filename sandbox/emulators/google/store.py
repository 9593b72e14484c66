"""In-memory state of the emulated Google account world: OAuth clients and grants, users,
calendars, events and each calendar's change log (pure, no aiohttp).

Invariants: every change to a calendar bumps its ``seq`` and stamps the changed records with it,
so "changed since token N" is exactly ``record.seq > N``; deleted events are kept as cancelled
tombstones (their ids are never reusable); etags change on every modification; listeners are
told the calendar id after each change.
"""

from __future__ import annotations

import base64
import copy
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.emulators.shared.clock import Clock

from . import properties, recurrence
from .errors import ApiError, auth_error, deleted, not_found
from .times import EventTime, format_event_time, format_utc, parse_event_time

DEFAULT_SCOPES = ("https://www.googleapis.com/auth/calendar",)
_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
_BASE32HEX = "0123456789abcdefghijklmnopqrstuv"
# Fields the server owns: ignored when a client sends them on insert, patch or update.
_READ_ONLY = frozenset(
    {"kind", "etag", "id", "created", "updated", "htmlLink", "creator", "organizer", "sequence"}
)
_SERIES_FIELDS = frozenset({"recurringEventId", "originalStartTime"})


class OAuthError(Exception):
    """A token-endpoint failure: HTTP status plus OAuth ``error`` and ``error_description``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status, self.error, self.description = status, error, description


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str
    project_number: str


@dataclass
class RefreshGrant:
    token: str
    email: str
    client_id: str
    scopes: tuple[str, ...]
    revoked: bool = False


@dataclass
class AccessGrant:
    token: str
    email: str
    client_id: str
    scope: str
    expires_at: datetime


@dataclass
class EventRecord:
    """One stored event (single, series master or instance exception) and its last change."""

    body: dict[str, Any]
    seq: int
    # Instances an edit of the series removed: id -> (originalStartTime, seq of that edit).
    removed: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)

    @property
    def cancelled(self) -> bool:
        return bool(self.body.get("status") == "cancelled")

    @property
    def is_exception(self) -> bool:
        return "recurringEventId" in self.body

    @property
    def is_series(self) -> bool:
        return "recurrence" in self.body


@dataclass
class CalendarRecord:
    id: str
    owner: str
    summary: str
    time_zone: str
    primary: bool
    updated: datetime
    seq: int = 0
    access_role: str = "owner"  # the user's role (calendarList accessRole): owner .. reader
    sync_floor: int = 0
    floor_with_reason: bool = True
    events: dict[str, EventRecord] = field(default_factory=dict)

    @property
    def etag(self) -> str:
        return f'"{self.seq}{int(self.updated.timestamp() * 1000)}"'


class Store:
    """All emulator state plus the operations the API, token endpoint and control API share."""

    def __init__(
        self,
        clock: Clock,
        *,
        token_lifetime: timedelta = timedelta(seconds=3600),
        horizon: tuple[timedelta, timedelta] = (timedelta(days=365), timedelta(days=730)),
    ) -> None:
        self.clock = clock
        self.token_lifetime = token_lifetime
        self.horizon_span = horizon
        self.clients: dict[str, OAuthClient] = {}
        self.refresh_grants: dict[str, RefreshGrant] = {}
        self.access_grants: dict[str, AccessGrant] = {}
        self.calendars: dict[str, CalendarRecord] = {}
        self.user_calendars: dict[str, list[str]] = {}
        self.listeners: list[Callable[[str], None]] = []
        self._etag_counter = 0

    # --- OAuth -----------------------------------------------------------------------------

    def add_client(
        self, client_id: str, client_secret: str, project_number: str | None = None
    ) -> OAuthClient:
        client = OAuthClient(
            client_id, client_secret, project_number or str(10**11 + len(self.clients))
        )
        self.clients[client_id] = client
        return client

    def grant_refresh_token(
        self,
        email: str,
        client_id: str,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        token: str | None = None,
    ) -> str:
        token = token or "1//0" + secrets.token_urlsafe(48)
        self.refresh_grants[token] = RefreshGrant(token, email, client_id, scopes)
        return token

    def exchange(
        self, client_id: str, secret: str, refresh_token: str, scope: str | None
    ) -> AccessGrant:
        """The refresh grant: a new access token, or OAuthError as Google's token endpoint."""
        client = self.clients.get(client_id)
        if client is None:
            raise OAuthError(401, "invalid_client", "The OAuth client was not found.")
        if not secrets.compare_digest(client.client_secret, secret):
            raise OAuthError(401, "invalid_client", "Unauthorized")
        grant = self.refresh_grants.get(refresh_token)
        if grant is None or grant.revoked or grant.client_id != client_id:
            raise OAuthError(400, "invalid_grant", "Token has been expired or revoked.")
        asked = tuple(scope.split()) if scope else grant.scopes
        if not set(asked) <= set(grant.scopes):
            raise OAuthError(400, "invalid_scope", "Bad Request")
        access = AccessGrant(
            "ya29." + secrets.token_urlsafe(64),
            grant.email,
            client_id,
            " ".join(asked),
            self.clock.now() + self.token_lifetime,
        )
        self.access_grants[access.token] = access
        return access

    def authenticate(self, token: str) -> AccessGrant:
        grant = self.access_grants.get(token)
        if grant is None or grant.expires_at <= self.clock.now():
            raise auth_error()
        return grant

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token and every access token minted from the same user and client."""
        grant = self.refresh_grants[refresh_token]
        grant.revoked = True
        for access in list(self.access_grants.values()):
            if access.email == grant.email and access.client_id == grant.client_id:
                del self.access_grants[access.token]

    def expire_access_tokens(self, email: str | None = None) -> int:
        """Expire access tokens now (all, or one user's); return how many."""
        victims = [t for t, g in self.access_grants.items() if email in (None, g.email)]
        for token in victims:
            del self.access_grants[token]
        return len(victims)

    # --- calendars -------------------------------------------------------------------------

    def add_user(self, email: str, time_zone: str = "UTC") -> CalendarRecord:
        """A user with a primary calendar whose id is the email."""
        self.user_calendars.setdefault(email, [])
        return self.add_calendar(email, email, time_zone, calendar_id=email, primary=True)

    def add_calendar(
        self,
        email: str,
        summary: str,
        time_zone: str = "UTC",
        *,
        calendar_id: str | None = None,
        primary: bool = False,
        access_role: str = "owner",
    ) -> CalendarRecord:
        if email not in self.user_calendars:
            raise KeyError(f"unknown user {email!r}")
        cal_id = calendar_id or f"c_{secrets.token_hex(16)}@group.calendar.google.com"
        if cal_id in self.calendars:
            raise ValueError(f"calendar {cal_id!r} exists")
        cal = CalendarRecord(cal_id, email, summary, time_zone, primary, self.clock.now())
        cal.access_role = access_role
        self.calendars[cal_id] = cal
        self.user_calendars[email].append(cal_id)
        return cal

    def unsubscribe(self, email: str, calendar_id: str) -> None:
        """Drop a calendar from the user's list (calendarList.delete); it and its watch
        channels live on, so a client that followed it must stop its channel itself."""
        self.user_calendars[email].remove(calendar_id)

    def calendar(self, email: str, calendar_id: str) -> CalendarRecord:
        """The user's calendar by id or ``primary``; 404 for anything the user does not own."""
        if calendar_id == "primary":
            calendar_id = email
        cal = self.calendars.get(calendar_id)
        if cal is None or cal.owner != email:
            raise not_found()
        return cal

    def invalidate_sync_tokens(self, calendar_id: str, *, with_reason: bool = True) -> None:
        """Every sync token issued so far for the calendar now gets 410."""
        cal = self.calendars[calendar_id]
        cal.sync_floor = cal.seq + 1
        cal.floor_with_reason = with_reason
        cal.seq += 1

    def horizon(self) -> tuple[datetime, datetime]:
        now = self.clock.now()
        return now - self.horizon_span[0], now + self.horizon_span[1]

    # --- events ----------------------------------------------------------------------------

    def insert_event(self, cal: CalendarRecord, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "parseError", "Parse Error")
        event_id = body.get("id")
        if event_id is None:
            event_id = "".join(secrets.choice(_BASE32HEX) for _ in range(26))
        elif not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
            raise ApiError(400, "invalid", "Invalid resource id value.")
        if event_id in cal.events:
            raise ApiError(409, "duplicate", "The requested identifier already exists.")
        now = format_utc(self.clock.now())
        new = {k: v for k, v in body.items() if k not in _READ_ONLY | _SERIES_FIELDS}
        new.update(
            kind="calendar#event",
            id=event_id,
            status=body.get("status", "confirmed"),
            htmlLink=_html_link(event_id, cal.id),
            created=now,
            creator={"email": cal.owner, "self": True},
            organizer={"email": cal.id, "displayName": cal.summary, "self": True},
            sequence=0,
            iCalUID=body.get("iCalUID") or f"{event_id}@google.com",
            reminders=body.get("reminders", {"useDefault": True}),
            eventType=body.get("eventType", "default"),
        )
        self._normalise(cal, new, None)
        record = EventRecord(new, 0)
        cal.events[event_id] = record
        self._touch(cal, record)
        return copy.deepcopy(record.body)

    def get_event(
        self, cal: CalendarRecord, event_id: str, if_match: str | None = None
    ) -> dict[str, Any]:
        record = cal.events.get(event_id)
        if record is not None:
            _check_etag(record.body, if_match)
            return copy.deepcopy(record.body)
        master, occurrence = self._virtual_instance(cal, event_id)
        body = instance_body(master.body, occurrence)
        _check_etag(body, if_match)
        return body

    def write_event(
        self, cal: CalendarRecord, event_id: str, body: Any, *, replace: bool, if_match: str | None
    ) -> dict[str, Any]:
        """events.patch (``replace=False``) or events.update (``replace=True``)."""
        if not isinstance(body, dict):
            raise ApiError(400, "parseError", "Parse Error")
        record = self._materialise(cal, event_id)
        if record.cancelled and not record.is_exception:
            raise deleted()
        _check_etag(record.body, if_match)
        old = copy.deepcopy(record.body)
        incoming = {k: v for k, v in body.items() if k not in _READ_ONLY | _SERIES_FIELDS}
        if record.is_exception and "recurrence" in incoming:
            raise ApiError(400, "invalid", "Invalid recurrence rule.")
        if replace:
            kept = {k: v for k, v in old.items() if k in _READ_ONLY | _SERIES_FIELDS | {"iCalUID"}}
            new = {**kept, "status": "confirmed", **incoming}
        else:
            new = _merge(old, incoming)
        new["sequence"] = int(old.get("sequence", 0)) + 1
        self._normalise(cal, new, old)
        record.body = new
        self._touch(cal, record)
        if record.is_series:
            self._record_removed_instances(cal, record, old)
        return copy.deepcopy(new)

    def delete_event(self, cal: CalendarRecord, event_id: str, if_match: str | None = None) -> None:
        record = cal.events.get(event_id)
        if record is None:
            record = self._materialise(cal, event_id)
        elif record.cancelled:
            raise deleted()
        _check_etag(record.body, if_match)
        record.body["status"] = "cancelled"
        self._touch(cal, record)
        if record.is_series:
            # Deleting a series deletes its exceptions with it.
            for other in cal.events.values():
                if other.body.get("recurringEventId") == record.body["id"] and not other.cancelled:
                    other.body["status"] = "cancelled"
                    self._touch(cal, other)

    def occurrences(
        self, master: dict[str, Any], window: tuple[datetime, datetime] | None = None
    ) -> list[recurrence.Occurrence]:
        """A series' occurrences within ``window`` (default: the expansion horizon)."""
        start, tz_name = parse_event_time(master["start"], "UTC")
        end, _ = parse_event_time(master["end"], tz_name)
        return recurrence.expand(
            master["recurrence"], start, end, tz_name, window or self.horizon()
        )

    def exceptions_of(self, cal: CalendarRecord, master_id: str) -> Iterator[EventRecord]:
        return (r for r in cal.events.values() if r.body.get("recurringEventId") == master_id)

    # --- helpers ---------------------------------------------------------------------------

    def _touch(self, cal: CalendarRecord, record: EventRecord) -> None:
        """Stamp a change: new seq, updated time and etag; then tell the listeners."""
        now = self.clock.now()
        cal.seq += 1
        cal.updated = now
        self._etag_counter += 1
        record.seq = cal.seq
        record.body["updated"] = format_utc(now)
        record.body["etag"] = f'"{int(now.timestamp() * 1000)}{self._etag_counter:06d}"'
        for listener in list(self.listeners):
            listener(cal.id)

    def _normalise(
        self, cal: CalendarRecord, body: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        """Validate start/end/recurrence and rewrite times the way Google returns them; apply
        the extended-property limits."""
        properties.normalise(body)
        for name in ("start", "end"):
            if name not in body:
                raise ApiError(400, "required", f"Missing {name} time.")
        try:
            start, start_tz = parse_event_time(body["start"], cal.time_zone)
            end, end_tz = parse_event_time(body["end"], cal.time_zone)
        except ValueError as exc:
            raise ApiError(400, "invalid", f"Invalid start or end time: {exc}") from exc
        if type(start) is not type(end):
            raise ApiError(
                400, "invalid", "Start and end times must either both be date or both be dateTime."
            )
        if end < start:
            raise ApiError(
                400,
                "timeRangeEmpty",
                "The specified time range is empty.",
                location="end.dateTime",
                location_type="parameter",
            )
        body["start"] = format_event_time(start, body["start"].get("timeZone") and start_tz)
        body["end"] = format_event_time(end, body["end"].get("timeZone") and end_tz)
        if "recurrence" in body:
            lines = body["recurrence"]
            if not lines:
                del body["recurrence"]
                return
            if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
                raise ApiError(400, "invalid", "Invalid recurrence rule.")
            if isinstance(start, datetime) and "timeZone" not in body["start"]:
                # All-day series expand on dates; timed ones need the zone to expand in.
                raise ApiError(400, "invalid", "Missing time zone definition for start time.")
            try:
                recurrence.validate(lines, start, start_tz)
            except (ValueError, TypeError) as exc:
                raise ApiError(400, "invalid", "Invalid recurrence rule.") from exc

    def _virtual_instance(
        self, cal: CalendarRecord, event_id: str
    ) -> tuple[EventRecord, recurrence.Occurrence]:
        """The master and occurrence behind an unmaterialised instance id, or 404."""
        master_id, _, suffix = event_id.rpartition("_")
        master = cal.events.get(master_id)
        if master is None or not master.is_series:
            raise not_found()
        if master.cancelled:
            raise deleted()
        try:
            original = recurrence.parse_instance_suffix(
                suffix, master.body["start"].get("timeZone", "UTC")
            )
        except ValueError as exc:
            raise not_found() from exc
        around = recurrence_window(original)
        for occ in self.occurrences(master.body, around):
            if recurrence.instance_id(master_id, occ.original_start) == event_id:
                return master, occ
        raise not_found()

    def _materialise(self, cal: CalendarRecord, event_id: str) -> EventRecord:
        """The stored record, creating an exception record for a virtual instance."""
        record = cal.events.get(event_id)
        if record is not None:
            return record
        master, occurrence = self._virtual_instance(cal, event_id)
        record = EventRecord(instance_body(master.body, occurrence), 0)
        cal.events[event_id] = record
        return record

    def _record_removed_instances(
        self, cal: CalendarRecord, record: EventRecord, old: dict[str, Any]
    ) -> None:
        if "recurrence" not in old or (
            old["start"] == record.body["start"]
            and old["recurrence"] == record.body.get("recurrence")
        ):
            return
        master_id = record.body["id"]
        before = {
            recurrence.instance_id(master_id, o.original_start): o for o in self.occurrences(old)
        }
        after = {
            recurrence.instance_id(master_id, o.original_start)
            for o in self.occurrences(record.body)
        }
        tz_name = old["start"].get("timeZone")
        for iid in before.keys() - after:
            record.removed[iid] = (
                format_event_time(before[iid].original_start, tz_name),
                record.seq,
            )
            exception = cal.events.get(iid)
            if exception is not None and not exception.cancelled:
                exception.body["status"] = "cancelled"
                self._touch(cal, exception)


def instance_body(master: dict[str, Any], occurrence: recurrence.Occurrence) -> dict[str, Any]:
    """The resource of one unmodified instance of a series."""
    tz_name = master["start"].get("timeZone")
    body = {k: copy.deepcopy(v) for k, v in master.items() if k not in ("recurrence", "id")}
    body.update(
        id=recurrence.instance_id(master["id"], occurrence.original_start),
        recurringEventId=master["id"],
        originalStartTime=format_event_time(occurrence.original_start, tz_name),
        start=format_event_time(occurrence.start, tz_name),
        end=format_event_time(occurrence.end, master["end"].get("timeZone", tz_name)),
    )
    return body


def recurrence_window(original: EventTime) -> tuple[datetime, datetime]:
    """A small window around one original start, enough to find that occurrence."""
    if isinstance(original, datetime):
        moment = original.astimezone(UTC)
    else:
        moment = datetime(original.year, original.month, original.day, tzinfo=UTC)
    return moment - timedelta(days=1), moment + timedelta(days=1)


def _check_etag(body: dict[str, Any], if_match: str | None) -> None:
    if if_match is not None and if_match not in ("*", body.get("etag")):
        raise ApiError(
            412,
            "conditionNotMet",
            "Precondition Failed",
            location="If-Match",
            location_type="header",
        )


def _merge(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Patch semantics: objects merge recursively, anything else (arrays too) replaces."""
    out = copy.deepcopy(old)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif key in ("start", "end"):
            # An EventDateTime is one value: merging a dateTime into a date would keep both.
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _html_link(event_id: str, calendar_id: str) -> str:
    eid = base64.urlsafe_b64encode(f"{event_id} {calendar_id}".encode()).decode().rstrip("=")
    return f"https://www.google.com/calendar/event?eid={eid}"

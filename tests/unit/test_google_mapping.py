"""Pure Google mapping: event/calendar JSON, drafts, error bodies, cursors, push headers.

Payloads follow the shapes of the Calendar v3 reference and errors guide (providers.md A).
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from providers.errors import (
    Conflict,
    ErrorKind,
    InvalidNotification,
    NotFound,
    Permanent,
    ProviderError,
    SyncStateExpired,
    Throttled,
    Transient,
    Unauthorized,
)
from providers.google import cursor as cursors
from providers.google.mapping import (
    QUOTA_EXCEEDED_MIN_RETRY_S,
    draft_body,
    error_for_response,
    error_reason,
    event_id_for_key,
    parse_calendar_entry,
    parse_event_item,
    parse_live_event,
)
from providers.google.notifications import parse_notifications
from providers.http import parse_retry_after
from providers.models import (
    Event,
    EventDraft,
    EventRemoval,
    EventStatus,
    EventTiming,
    NotificationKind,
)
from providers.payload import MalformedPayload

CAL = "alice@example.com"

ALL_DAY: dict[str, Any] = {
    "kind": "calendar#event",
    "etag": '"3181161784712000"',
    "id": "4eahs9ghkhrvkld72hogu9ph3e",
    "status": "confirmed",
    "htmlLink": "https://www.google.com/calendar/event?eid=NGVhaHM5Z2hraHJ2a2xkNzJob2d1OXBoM2U",
    "created": "2026-04-20T09:12:30.000Z",
    "updated": "2026-04-20T09:12:30.356Z",
    "summary": "Company holiday",
    "creator": {"email": CAL, "self": True},
    "organizer": {"email": CAL, "self": True},
    "start": {"date": "2026-05-05"},
    "end": {"date": "2026-05-06"},
    "transparency": "transparent",
    "iCalUID": "4eahs9ghkhrvkld72hogu9ph3e@google.com",
    "sequence": 0,
    "reminders": {"useDefault": False},
    "eventType": "default",
}

TIMED: dict[str, Any] = {
    "kind": "calendar#event",
    "etag": '"3181161784712001"',
    "id": "0k3vd1rd8c4h2jho3m0bbf8u4o",
    "status": "tentative",
    "created": "2026-04-20T09:12:30.000Z",
    "updated": "2026-04-21T07:00:00.000Z",
    "summary": "Design review",
    "description": "Agenda in the doc",
    "location": "Room 4",
    "creator": {"email": "bob@example.com"},
    "organizer": {"email": "bob@example.com", "displayName": "Bob"},
    "start": {"dateTime": "2026-05-05T10:00:00+02:00", "timeZone": "Europe/Berlin"},
    "end": {"dateTime": "2026-05-05T11:30:00+02:00", "timeZone": "Europe/Berlin"},
    "iCalUID": "0k3vd1rd8c4h2jho3m0bbf8u4o@google.com",
    "sequence": 2,
    "attendees": [
        {"email": "bob@example.com", "organizer": True, "responseStatus": "accepted"},
        {"email": CAL, "self": True, "responseStatus": "needsAction"},
        {"email": "room4@resource.calendar.google.com", "resource": True},
    ],
    "reminders": {"useDefault": True},
    "eventType": "default",
}

SERIES = "7cbh8rpc10lrc0ckih9tafss99"
INSTANCE: dict[str, Any] = {
    "kind": "calendar#event",
    "etag": '"3181161784712002"',
    "id": f"{SERIES}_20260512T080000Z",
    "status": "confirmed",
    "updated": "2026-04-21T07:00:00.000Z",
    "summary": "Weekly sync",
    "organizer": {"email": CAL, "self": True},
    "start": {"dateTime": "2026-05-12T10:00:00+02:00", "timeZone": "Europe/Berlin"},
    "end": {"dateTime": "2026-05-12T10:30:00+02:00", "timeZone": "Europe/Berlin"},
    "recurringEventId": SERIES,
    "originalStartTime": {"dateTime": "2026-05-12T10:00:00+02:00", "timeZone": "Europe/Berlin"},
    "iCalUID": f"{SERIES}@google.com",
    "sequence": 0,
}

CANCELLED_INSTANCE: dict[str, Any] = {
    "kind": "calendar#event",
    "etag": '"3181161784712003"',
    "id": f"{SERIES}_20260519T080000Z",
    "status": "cancelled",
    "recurringEventId": SERIES,
    "originalStartTime": {"dateTime": "2026-05-19T10:00:00+02:00", "timeZone": "Europe/Berlin"},
}


def _envelope(code: int, reason: str, message: str, domain: str = "global") -> bytes:
    error = {"domain": domain, "reason": reason, "message": message}
    return orjson.dumps({"error": {"errors": [error], "code": code, "message": message}})


# --- events --------------------------------------------------------------------------------


def test_all_day_event_keeps_dates_and_exclusive_end() -> None:
    event = parse_event_item(ALL_DAY, CAL)
    assert isinstance(event, Event)
    assert event.timing == EventTiming(
        all_day=True, start_date=date(2026, 5, 5), end_date=date(2026, 5, 6)
    )
    assert event.status is EventStatus.CONFIRMED
    assert event.title == "Company holiday"
    assert event.organizer_email == CAL
    assert event.attendees_count == 0
    assert event.etag == '"3181161784712000"'
    assert event.ical_uid == "4eahs9ghkhrvkld72hogu9ph3e@google.com"
    assert event.updated_at == datetime(2026, 4, 20, 9, 12, 30, 356000, tzinfo=UTC)
    assert event.recurring_event_id is None
    assert event.raw["kind"] == "calendar#event"


def test_timed_event_with_offset_becomes_utc_and_keeps_zone() -> None:
    event = parse_event_item(TIMED, CAL)
    assert isinstance(event, Event)
    assert event.timing.start_at == datetime(2026, 5, 5, 8, 0, tzinfo=UTC)
    assert event.timing.end_at == datetime(2026, 5, 5, 9, 30, tzinfo=UTC)
    assert event.timing.start_at.tzinfo is UTC
    assert event.timing.time_zone == "Europe/Berlin"
    assert event.status is EventStatus.TENTATIVE
    assert (event.description, event.location) == ("Agenda in the doc", "Room 4")
    assert event.organizer_email == "bob@example.com"
    assert event.attendees_count == 3


def test_timed_event_without_offset_uses_its_zone_then_the_calendars() -> None:
    local = dict(
        TIMED,
        start={"dateTime": "2026-01-10T09:00:00", "timeZone": "America/New_York"},
        end={"dateTime": "2026-01-10T10:00:00", "timeZone": "America/New_York"},
    )
    event = parse_event_item(local, CAL)
    assert isinstance(event, Event)
    assert event.timing.start_at == datetime(2026, 1, 10, 14, 0, tzinfo=UTC)

    bare = dict(
        TIMED, start={"dateTime": "2026-07-01T09:00:00"}, end={"dateTime": "2026-07-01T10:00:00"}
    )
    event = parse_event_item(bare, CAL, calendar_zone="Europe/London")
    assert isinstance(event, Event)
    assert event.timing.start_at == datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    assert event.timing.time_zone == "Europe/London"
    with pytest.raises(MalformedPayload, match="neither an offset nor a time zone"):
        parse_event_item(bare, CAL)


def test_offset_wins_over_zone_and_utc_z_parses() -> None:
    event = parse_event_item(
        dict(
            TIMED,
            start={"dateTime": "2026-05-05T08:00:00Z", "timeZone": "Asia/Tokyo"},
            end={"dateTime": "2026-05-05T17:00:00+09:00", "timeZone": "Asia/Tokyo"},
        ),
        CAL,
    )
    assert isinstance(event, Event)
    assert event.timing.start_at == event.timing.end_at == datetime(2026, 5, 5, 8, tzinfo=UTC)
    assert event.timing.time_zone == "Asia/Tokyo"


def test_recurring_instance_carries_its_series() -> None:
    event = parse_event_item(INSTANCE, CAL)
    assert isinstance(event, Event)
    assert event.id == f"{SERIES}_20260512T080000Z"
    assert event.recurring_event_id == SERIES
    assert event.ical_uid == f"{SERIES}@google.com"
    assert event.timing.start_at == datetime(2026, 5, 12, 8, tzinfo=UTC)


def test_cancelled_event_with_only_an_id_is_a_definite_removal() -> None:
    removal = parse_event_item({"id": "4eahs9ghkhrvkld72hogu9ph3e", "status": "cancelled"}, CAL)
    assert removal == EventRemoval(id="4eahs9ghkhrvkld72hogu9ph3e", calendar_id=CAL)
    assert removal.definite
    with_etag = {"kind": "calendar#event", "etag": '"1"', "id": "abcde", "status": "cancelled"}
    assert parse_event_item(with_etag, CAL) == EventRemoval(id="abcde", calendar_id=CAL)


def test_cancelled_instance_removes_that_instance_not_the_series() -> None:
    removal = parse_event_item(CANCELLED_INSTANCE, CAL)
    assert isinstance(removal, EventRemoval)
    assert removal.id == f"{SERIES}_20260519T080000Z"
    assert removal.id != SERIES
    assert removal.recurring_event_id == SERIES
    assert removal.definite


def test_cancelled_item_on_the_organizers_calendar_with_details_is_still_a_removal() -> None:
    removal = parse_event_item(dict(TIMED, status="cancelled"), CAL)
    assert removal == EventRemoval(id=TIMED["id"], calendar_id=CAL)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("not an object", "event is not a JSON object"),
        ({"status": "confirmed"}, "event.id is missing"),
        ({"id": 12345, "status": "cancelled"}, "event.id is not a string"),
        ({"id": "abcde", "status": "gone"}, "event.status"),
        (dict(TIMED, start=None), "event.start is not a JSON object"),
        ({k: v for k, v in TIMED.items() if k != "end"}, "event.start or event.end is missing"),
        (dict(TIMED, start={"dateTime": "next tuesday"}), "event.start.dateTime is not"),
        (dict(TIMED, start={"dateTime": 1746432000}), "event.start.dateTime is not a string"),
        (dict(ALL_DAY, end={"dateTime": "2026-05-06T00:00:00Z"}), "event.end.date"),
        (dict(ALL_DAY, start={"date": "2026-13-01"}), "event.start.date is not a yyyy-mm-dd"),
        (dict(ALL_DAY, end={"date": "2026-05-05"}), "ends after it starts"),
        (
            dict(TIMED, start=TIMED["end"], end=TIMED["start"]),
            "cannot end before it starts",
        ),
        (
            dict(TIMED, start={"dateTime": "2026-05-05T10:00:00", "timeZone": "Mars/Base"}),
            "unknown time zone",
        ),
        (dict(TIMED, summary=["x"]), "event.summary is not a string"),
        (dict(TIMED, attendees={"email": "x"}), "event.attendees is not a list"),
        (dict(TIMED, organizer="bob"), "event.organizer is not a JSON object"),
        (dict(TIMED, updated="yesterday"), "event.updated is not an RFC 3339"),
    ],
)
def test_malformed_items_raise_naming_the_field(item: object, message: str) -> None:
    with pytest.raises(MalformedPayload, match=re.escape(message)):
        parse_event_item(item, CAL)


def test_malformed_message_never_repeats_the_value() -> None:
    with pytest.raises(MalformedPayload) as caught:
        parse_event_item(dict(TIMED, start={"dateTime": "secret-ish-value"}), CAL)
    assert "secret-ish-value" not in str(caught.value)


def test_live_event_rejects_cancelled() -> None:
    assert isinstance(parse_live_event(TIMED, CAL), Event)
    with pytest.raises(MalformedPayload, match="cancelled"):
        parse_live_event(CANCELLED_INSTANCE, CAL)


# --- calendars -----------------------------------------------------------------------------


def test_calendar_list_entries() -> None:
    primary = parse_calendar_entry(
        {
            "kind": "calendar#calendarListEntry",
            "etag": '"1700000000000000"',
            "id": CAL,
            "summary": CAL,
            "timeZone": "Europe/Berlin",
            "colorId": "14",
            "selected": True,
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 10}],
            "primary": True,
        }
    )
    assert (primary.id, primary.name, primary.primary) == (CAL, CAL, True)
    assert (primary.time_zone, primary.access_role, primary.synced) == (
        "Europe/Berlin",
        "owner",
        True,
    )
    shared = parse_calendar_entry(
        {
            "id": "c_1a2b3c@group.calendar.google.com",
            "summary": "Team",
            "summaryOverride": "My team",
            "accessRole": "reader",
        }
    )
    assert (shared.name, shared.primary, shared.synced) == ("My team", False, True)
    busy = parse_calendar_entry({"id": "carol@example.com", "accessRole": "freeBusyReader"})
    assert (busy.name, busy.synced) == ("carol@example.com", False)
    with pytest.raises(MalformedPayload, match=r"calendarListEntry\.id is missing"):
        parse_calendar_entry({"summary": "x"})
    with pytest.raises(MalformedPayload, match="primary is not a boolean"):
        parse_calendar_entry({"id": "x", "primary": "yes"})


# --- writes --------------------------------------------------------------------------------


def test_event_id_for_key_is_deterministic_valid_base32hex() -> None:
    first = event_id_for_key("outbox:42")
    assert first == event_id_for_key("outbox:42")
    assert first != event_id_for_key("outbox:43")
    assert re.fullmatch(r"[a-v0-9]{5,1024}", first)
    assert len(first) == 52
    digest = base64.b32hexdecode(first.upper() + "====")
    assert len(digest) == 32


def test_draft_bodies_for_insert_and_patch() -> None:
    timed = EventDraft(
        title="Review",
        timing=EventTiming(
            all_day=False,
            start_at=datetime(2026, 5, 5, 8, tzinfo=UTC),
            end_at=datetime(2026, 5, 5, 9, tzinfo=UTC),
            time_zone="Europe/Berlin",
        ),
        location="Room 4",
    )
    assert draft_body(timed, event_id="abcde") == {
        "id": "abcde",
        "summary": "Review",
        "location": "Room 4",
        "start": {"dateTime": "2026-05-05T08:00:00Z", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-05-05T09:00:00Z", "timeZone": "Europe/Berlin"},
    }
    all_day = EventDraft(
        title="Off",
        timing=EventTiming(all_day=True, start_date=date(2026, 5, 5), end_date=date(2026, 5, 7)),
    )
    assert draft_body(all_day, clear_absent=True) == {
        "summary": "Off",
        "description": None,
        "location": None,
        "start": {"date": "2026-05-05", "dateTime": None, "timeZone": None},
        "end": {"date": "2026-05-07", "dateTime": None, "timeZone": None},
    }
    # What we write reads back as the same timing.
    written = parse_event_item(dict(draft_body(timed, event_id="abcde"), status="confirmed"), CAL)
    assert isinstance(written, Event)
    assert written.timing == timed.timing


def test_draft_with_non_utc_instant_is_written_in_utc() -> None:
    plus_two = datetime(2026, 5, 5, 12, tzinfo=timezone(timedelta(hours=2)))
    draft = EventDraft(
        title="t",
        timing=EventTiming(
            all_day=False, start_at=plus_two, end_at=plus_two + timedelta(minutes=5)
        ),
    )
    assert draft_body(draft)["start"] == {"dateTime": "2026-05-05T10:00:00Z"}


# --- errors --------------------------------------------------------------------------------

FULL_SYNC_REQUIRED = orjson.dumps(
    {
        "error": {
            "errors": [
                {
                    "domain": "calendar",
                    "reason": "fullSyncRequired",
                    "message": "Sync token is no longer valid, a full sync is required.",
                    "locationType": "parameter",
                    "location": "syncToken",
                }
            ],
            "code": 410,
            "message": "Sync token is no longer valid, a full sync is required.",
        }
    }
)
# The errors guide prints this sample with a trailing comma: invalid JSON, still a 410.
FULL_SYNC_REQUIRED_AS_DOCUMENTED = (
    b'{"error":{"errors":[{"domain":"calendar","reason":"fullSyncRequired","message":"Sync '
    b'token is no longer valid, a full sync is required.","locationType":"parameter",'
    b'"location":"syncToken",}],"code":410,"message":"Sync token is no longer valid."}}'
)


@pytest.mark.parametrize(
    ("status", "body", "sync", "expected", "reason"),
    [
        (
            400,
            _envelope(400, "timeRangeEmpty", "The specified time range is empty.", "calendar"),
            True,
            Permanent,
            "timeRangeEmpty",
        ),
        (400, _envelope(400, "invalid", "Invalid Value"), False, Permanent, "invalid"),
        (401, _envelope(401, "authError", "Invalid Credentials"), False, Unauthorized, "authError"),
        (
            403,
            _envelope(403, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"),
            True,
            Throttled,
            "rateLimitExceeded",
        ),
        (
            403,
            _envelope(403, "userRateLimitExceeded", "User Rate Limit Exceeded", "usageLimits"),
            False,
            Throttled,
            "userRateLimitExceeded",
        ),
        (
            403,
            _envelope(403, "forbiddenForNonOrganizer", "Shared properties can only be changed"),
            False,
            Permanent,
            "forbiddenForNonOrganizer",
        ),
        (404, _envelope(404, "notFound", "Not Found"), True, NotFound, "notFound"),
        (
            409,
            _envelope(409, "duplicate", "The requested identifier already exists."),
            False,
            Conflict,
            "duplicate",
        ),
        (409, _envelope(409, "conflict", "Conflict"), False, Conflict, "conflict"),
        (410, FULL_SYNC_REQUIRED, True, SyncStateExpired, "fullSyncRequired"),
        (410, FULL_SYNC_REQUIRED_AS_DOCUMENTED, True, SyncStateExpired, None),
        (410, b"", True, SyncStateExpired, None),
        (
            410,
            _envelope(410, "updatedMinTooLongAgo", "gone"),
            True,
            SyncStateExpired,
            "updatedMinTooLongAgo",
        ),
        (410, _envelope(410, "deleted", "Resource has been deleted"), False, NotFound, "deleted"),
        (
            412,
            _envelope(412, "conditionNotMet", "Precondition Failed"),
            False,
            Conflict,
            "conditionNotMet",
        ),
        (
            429,
            _envelope(429, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"),
            True,
            Throttled,
            "rateLimitExceeded",
        ),
        (429, b"Too Many Requests", False, Throttled, None),
        (500, _envelope(500, "backendError", "Backend Error"), True, Transient, "backendError"),
        (502, b"<html><body>Bad Gateway</body></html>", True, Transient, None),
        (503, b"<html>Service Unavailable</html>", False, Transient, None),
        (408, b"", False, Transient, None),
        (418, b"[]", False, Permanent, None),
    ],
)
def test_error_taxonomy(
    status: int, body: bytes, sync: bool, expected: type[ProviderError], reason: str | None
) -> None:
    error = error_for_response(status, body, operation="events.list", sync=sync)
    assert type(error) is expected
    assert (error.status, error.reason, error.provider) == (status, reason, "google")
    assert "Rate Limit" not in str(error) and "html" not in str(error)


def test_throttling_carries_retry_after_and_quota_exceeded_waits_longer() -> None:
    rate = _envelope(403, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits")
    assert error_for_response(403, rate, operation="x", retry_after_s=7).retry_after_s == 7
    assert error_for_response(429, b"", operation="x").retry_after_s is None
    assert error_for_response(503, b"", operation="x", retry_after_s=3).retry_after_s == 3

    quota = _envelope(403, "quotaExceeded", "Calendar usage limits exceeded.", "usageLimits")
    error = error_for_response(403, quota, operation="events.insert")
    assert error.kind is ErrorKind.THROTTLED
    assert error.reason == "quotaExceeded"
    assert error.retry_after_s == QUOTA_EXCEEDED_MIN_RETRY_S == 60
    longer = error_for_response(403, quota, operation="x", retry_after_s=600)
    assert longer.retry_after_s == 600
    assert error_for_response(403, quota, operation="x", retry_after_s=5).retry_after_s == 60


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 5, 5, 12, tzinfo=UTC)
    assert parse_retry_after("30") == 30
    assert parse_retry_after("Tue, 05 May 2026 12:00:10 GMT", now) == 10
    assert parse_retry_after("soon") is None


def test_error_reason_shapes() -> None:
    assert error_reason(b'{"error": "invalid_grant", "error_description": "x"}') == (
        "invalid_grant"
    )
    assert error_reason(b'{"error": {"code": 404, "status": "NOT_FOUND"}}') == "NOT_FOUND"
    assert error_reason(b'{"error": {"errors": ["x", {"reason": 5}]}}') is None
    assert error_reason(b"not json") is None
    assert error_reason(b"[1]") is None


# --- cursors -------------------------------------------------------------------------------


def test_cursor_round_trips_full_and_incremental_rounds() -> None:
    full = cursors.SyncCursor(
        cursors.RoundQuery(
            "c_1#x@group.calendar.google.com",
            50,
            time_min="2025-05-05T00:00:00Z",
            time_max="2027-05-05T00:00:00Z",
        ),
        page_token="CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA",
    )
    text = cursors.encode(full)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", text)
    assert cursors.decode(text) == full
    assert cursors.decode(text).query.full_sync

    incremental = cursors.SyncCursor(
        cursors.RoundQuery(CAL, 250, sync_token="CPDAlvWDx70CEPDAlvWDx"), page_token="p2"
    )
    assert cursors.decode(cursors.encode(incremental)) == incremental
    assert not incremental.query.full_sync


@pytest.mark.parametrize(
    "text",
    [
        "",
        "!!!",
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        base64.urlsafe_b64encode(b'{"v":2,"c":"x","n":5,"p":"t","s":"s"}').decode(),
        base64.urlsafe_b64encode(b'{"v":1,"c":"x","n":"5","p":"t","s":"s"}').decode(),
        base64.urlsafe_b64encode(b'{"v":1,"c":"x","n":5,"s":"s"}').decode(),
        base64.urlsafe_b64encode(b'{"v":1,"c":"x","n":5,"p":"t"}').decode(),
        base64.urlsafe_b64encode(b'{"v":1,"c":"x","n":5,"p":"t","s":"s","a":"b"}').decode(),
        base64.urlsafe_b64encode(b'{"v":1,"c":"x","n":0,"p":"t","s":"s"}').decode(),
    ],
)
def test_cursor_rejects_what_it_did_not_make(text: str) -> None:
    with pytest.raises(ValueError, match=r"cursor|round|page_size"):
        cursors.decode(text)


# --- push headers --------------------------------------------------------------------------

SYNC_HEADERS = {
    "X-Goog-Channel-ID": "01234567-89ab-cdef-0123-456789abcdef",
    "X-Goog-Channel-Token": "to66728b21-b8e5-4d2f-b8e8-d4a8f3b2c1e9",
    "X-Goog-Channel-Expiration": "Tue, 19 Nov 2013 01:13:52 GMT",
    "X-Goog-Resource-ID": "ret08u3rv24htgh289g",
    "X-Goog-Resource-URI": "https://www.googleapis.com/calendar/v3/calendars/my_calendar@gmail.com/events",
    "X-Goog-Resource-State": "sync",
    "X-Goog-Message-Number": "1",
}


def test_sync_and_exists_notifications() -> None:
    [sync] = parse_notifications(SYNC_HEADERS, b"")
    assert sync.kind is NotificationKind.SYNC
    assert sync.channel_id == "01234567-89ab-cdef-0123-456789abcdef"
    assert sync.resource_id == "ret08u3rv24htgh289g"
    assert sync.message_number == 1
    assert sync.token == "to66728b21-b8e5-4d2f-b8e8-d4a8f3b2c1e9"

    lower = {k.lower(): v for k, v in SYNC_HEADERS.items()}
    lower.update({"x-goog-resource-state": "exists", "x-goog-message-number": "118"})
    del lower["x-goog-channel-token"]
    [changed] = parse_notifications(lower, b"")
    assert (changed.kind, changed.message_number, changed.token) == (
        NotificationKind.CHANGED,
        118,
        None,
    )
    upper = {k.upper(): v for k, v in SYNC_HEADERS.items()}
    upper["X-GOOG-RESOURCE-STATE"] = "not_exists"
    assert parse_notifications(upper, b"")[0].kind is NotificationKind.CHANGED


@pytest.mark.parametrize(
    ("drop", "override", "message"),
    [
        ("X-Goog-Channel-ID", {}, "Channel-ID"),
        ("X-Goog-Resource-State", {}, "Resource-State"),
        (None, {"X-Goog-Message-Number": "one"}, "Message-Number"),
        (None, {"X-Goog-Message-Number": "+1"}, "Message-Number"),
        (None, {"X-Goog-Message-Number": "²"}, "Message-Number"),
        (None, {"X-Goog-Channel-ID": "  "}, "Channel-ID"),
    ],
)
def test_malformed_notifications(drop: str | None, override: dict[str, str], message: str) -> None:
    headers = {k: v for k, v in SYNC_HEADERS.items() if k != drop}
    headers.update(override)
    with pytest.raises(InvalidNotification, match=message):
        parse_notifications(headers, b"")

"""Pure Microsoft Graph mapping: events, calendars, drafts, errors, zones, cursors, webhooks.

Payloads follow the shapes of the Graph v1.0 reference (event, calendar, subscription,
changeNotification, errors) as summarized in providers.md B; no server and no event loop.
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from msal.throttled_http_client import ThrottledHttpClient

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
from providers.interface import verify_notification
from providers.microsoft import cursor as cursors
from providers.microsoft.auth import _NullTokenCache, _TokenAnswersNotCached, msal_scopes
from providers.microsoft.mapping import (
    PRIMARY,
    draft_body,
    error_code,
    error_for_response,
    parse_calendar,
    parse_event_item,
    parse_live_event,
    transaction_id_for_key,
)
from providers.microsoft.notifications import parse_notifications, validation_token
from providers.microsoft.timezones import UnknownTimeZone, to_iana
from providers.models import (
    Event,
    EventDraft,
    EventRemoval,
    EventStatus,
    EventTiming,
    NotificationKind,
    PushChannel,
)
from providers.payload import MalformedPayload

CAL = PRIMARY
ME = "alice@contoso.com"
SERIES = "AAMkAGI2TGuLAAA="

TIMED: dict[str, Any] = {
    "@odata.etag": 'W/"ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw=="',
    "id": "AAMkAGI2TG93AAA=",
    "createdDateTime": "2026-04-20T09:12:30.1234567Z",
    "lastModifiedDateTime": "2026-04-21T07:00:00.7654321Z",
    "changeKey": "ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw==",
    "iCalUId": "040000008200E00074C5B7101A82E00800000000D3F3",
    "subject": "Design review",
    "bodyPreview": "Agenda in the doc",
    "body": {"contentType": "html", "content": "<html>Agenda in the doc</html>"},
    "isAllDay": False,
    "isCancelled": False,
    "type": "singleInstance",
    "seriesMasterId": None,
    "originalStartTimeZone": "W. Europe Standard Time",
    "originalEndTimeZone": "W. Europe Standard Time",
    "start": {"dateTime": "2026-05-05T08:00:00.0000000", "timeZone": "UTC"},
    "end": {"dateTime": "2026-05-05T09:30:00.0000000", "timeZone": "UTC"},
    "location": {"displayName": "Room 4", "locationType": "default"},
    "organizer": {"emailAddress": {"name": "Bob", "address": "bob@contoso.com"}},
    "attendees": [
        {"type": "required", "emailAddress": {"name": "Bob", "address": "bob@contoso.com"}},
        {"type": "required", "emailAddress": {"name": "Alice", "address": ME}},
        {"type": "resource", "emailAddress": {"name": "Room 4", "address": "r4@contoso.com"}},
    ],
}

ALL_DAY: dict[str, Any] = {
    "@odata.etag": 'W/"all-day"',
    "id": "AAMkAGI2ALLDAY=",
    "subject": "Company holiday",
    "isAllDay": True,
    "type": "singleInstance",
    "originalStartTimeZone": "UTC",
    "start": {"dateTime": "2026-05-05T00:00:00.0000000", "timeZone": "UTC"},
    "end": {"dateTime": "2026-05-06T00:00:00.0000000", "timeZone": "UTC"},
    "location": {"displayName": ""},
    "attendees": [],
}

OCCURRENCE: dict[str, Any] = dict(
    TIMED,
    id="AAMkAGI2OCC1=",
    type="occurrence",
    seriesMasterId=SERIES,
    iCalUId="040000008200E00074C5B7101A82E0080000000012345",
    start={"dateTime": "2026-05-12T08:00:00.0000000", "timeZone": "UTC"},
    end={"dateTime": "2026-05-12T08:30:00.0000000", "timeZone": "UTC"},
)

REMOVED: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.event",
    "id": "AAMkAGI2GONE=",
    "@removed": {"reason": "deleted"},
}


def _error(code: str, message: str = "whatever the message says") -> bytes:
    inner = {"request-id": "94fb3b52-452a-4535-a601-69e0a90e3aa2", "date": "2026-08-18T12:51:51"}
    return orjson.dumps({"error": {"code": code, "message": message, "innerError": inner}})


# --- events --------------------------------------------------------------------------------


def test_timed_event_in_utc_becomes_aware_utc_with_its_source_zone() -> None:
    event = parse_event_item(TIMED, CAL)
    assert isinstance(event, Event)
    assert event.timing.start_at == datetime(2026, 5, 5, 8, 0, tzinfo=UTC)
    assert event.timing.end_at == datetime(2026, 5, 5, 9, 30, tzinfo=UTC)
    assert event.timing.start_at.tzinfo is UTC
    assert event.timing.time_zone == "Europe/Berlin"  # Windows name mapped through CLDR
    assert event.status is EventStatus.CONFIRMED
    assert (event.title, event.description, event.location) == (
        "Design review",
        "Agenda in the doc",
        "Room 4",
    )
    assert event.organizer_email == "bob@contoso.com"
    assert event.attendees_count == 3
    assert event.etag == 'W/"ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw=="'
    assert event.ical_uid == "040000008200E00074C5B7101A82E00800000000D3F3"
    assert event.updated_at == datetime(2026, 4, 21, 7, 0, 0, 765432, tzinfo=UTC)
    assert event.recurring_event_id is None
    assert event.calendar_id == CAL
    assert event.raw["changeKey"] == TIMED["changeKey"]


@pytest.mark.parametrize(
    ("zone", "wall", "utc_hour"),
    [
        ("Pacific Standard Time", "2026-01-10T09:00:00.0000000", 17),  # PST, UTC-8
        ("Pacific Standard Time", "2026-07-10T09:00:00.0000000", 16),  # PDT, UTC-7
        ("America/New_York", "2026-01-10T09:00:00", 14),
        ("tzone://Microsoft/Utc", "2026-01-10T09:00:00", 9),
    ],
)
def test_wall_time_in_a_windows_or_iana_zone_becomes_utc(
    zone: str, wall: str, utc_hour: int
) -> None:
    day = wall[:10]
    item = dict(
        TIMED,
        start={"dateTime": wall, "timeZone": zone},
        end={"dateTime": f"{day}T23:00:00", "timeZone": zone},
    )
    event = parse_event_item(item, CAL)
    assert isinstance(event, Event)
    assert event.timing.start_at is not None
    assert event.timing.start_at.hour == utc_hour
    assert event.timing.start_at.utcoffset() == timedelta(0)


def test_unknown_zone_fails_the_item_but_an_unknown_source_zone_does_not() -> None:
    custom = {"dateTime": "2026-01-10T09:00:00", "timeZone": "Customized Time Zone"}
    with pytest.raises(MalformedPayload, match=r"event\.start\.timeZone names an unknown"):
        parse_event_item(dict(TIMED, start=custom), CAL)
    event = parse_event_item(dict(TIMED, originalStartTimeZone="tzone://Microsoft/Custom"), CAL)
    assert isinstance(event, Event)
    assert event.timing.time_zone is None  # informational only: the instants are exact


def test_all_day_event_keeps_dates_and_exclusive_end() -> None:
    event = parse_event_item(ALL_DAY, CAL)
    assert isinstance(event, Event)
    assert event.timing == EventTiming(
        all_day=True, start_date=date(2026, 5, 5), end_date=date(2026, 5, 6)
    )
    assert event.location is None  # Graph's {"displayName": ""}
    assert event.organizer_email is None
    assert event.attendees_count == 0


def test_occurrences_and_exceptions_carry_their_series() -> None:
    event = parse_event_item(OCCURRENCE, CAL)
    assert isinstance(event, Event)
    assert event.recurring_event_id == SERIES
    exception = parse_event_item(dict(OCCURRENCE, type="exception", subject="moved"), CAL)
    assert isinstance(exception, Event)
    assert (exception.recurring_event_id, exception.title) == (SERIES, "moved")


def test_series_master_is_skipped() -> None:
    master = dict(TIMED, id=SERIES, type="seriesMaster", recurrence={"pattern": {}})
    assert parse_event_item(master, CAL) is None
    with pytest.raises(MalformedPayload, match="not a single event"):
        parse_live_event(master, CAL)


def test_removed_item_is_an_indefinite_removal() -> None:
    removal = parse_event_item(REMOVED, CAL)
    assert removal == EventRemoval(id="AAMkAGI2GONE=", calendar_id=CAL, definite=False)
    with pytest.raises(MalformedPayload, match="not a single event"):
        parse_live_event(REMOVED, CAL)


def test_cancelled_meeting_is_an_upsert_with_cancelled_status() -> None:
    event = parse_event_item(dict(TIMED, isCancelled=True), CAL)
    assert isinstance(event, Event)
    assert event.status is EventStatus.CANCELLED


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ([], "event is not a JSON object"),
        ({"subject": "x"}, "event.id is missing"),
        (dict(TIMED, start=None), "event.start is not a JSON object"),
        (dict(TIMED, start={"timeZone": "UTC"}), "event.start.dateTime is not a string"),
        (dict(TIMED, start={"dateTime": "soon", "timeZone": "UTC"}), "not an ISO 8601"),
        (dict(TIMED, isAllDay="yes"), "event.isAllDay is not a boolean"),
        (dict(TIMED, attendees={}), "event.attendees is not a list"),
        (dict(TIMED, subject=7), "event.subject is not a string"),
        (dict(TIMED, lastModifiedDateTime="2026-04-21T07:00:00"), "has no UTC offset"),
        (dict(REMOVED, **{"@removed": "deleted"}), "event.@removed is not a JSON object"),
        (
            dict(TIMED, end={"dateTime": "2026-05-05T07:00:00", "timeZone": "UTC"}),
            "cannot end before it starts",
        ),
    ],
)
def test_malformed_items_raise_naming_the_field(item: object, message: str) -> None:
    with pytest.raises(MalformedPayload, match=message):
        parse_event_item(item, CAL)


def test_malformed_message_never_repeats_the_value() -> None:
    secret = "s3cr3t-value"
    with pytest.raises(MalformedPayload) as caught:
        parse_event_item(dict(TIMED, start={"dateTime": secret, "timeZone": "UTC"}), CAL)
    assert secret not in str(caught.value)


# --- calendars -----------------------------------------------------------------------------


def test_default_calendar_is_primary_and_others_are_marked_by_the_setting() -> None:
    default = {"id": "AAMkDEFAULT=", "name": "Calendar", "isDefaultCalendar": True, "canEdit": True}
    other = {"id": "AAMkOTHER=", "name": "Birthdays", "isDefaultCalendar": False}
    primary = parse_calendar(default, sync_others=False)
    assert (primary.id, primary.name, primary.primary, primary.synced) == (
        PRIMARY,
        "Calendar",
        True,
        True,
    )
    assert primary.access_role == "writer"
    assert primary.raw["id"] == "AAMkDEFAULT="
    not_synced = parse_calendar(other, sync_others=False)
    assert (not_synced.id, not_synced.primary, not_synced.synced) == ("AAMkOTHER=", False, False)
    assert not_synced.access_role == "reader"
    assert parse_calendar(other, sync_others=True).synced is True
    with pytest.raises(MalformedPayload, match=r"calendar\.id is missing"):
        parse_calendar({"name": "x"}, sync_others=False)


# --- writes --------------------------------------------------------------------------------


def test_transaction_id_is_deterministic_per_key() -> None:
    first = transaction_id_for_key("outbox:42")
    assert first == transaction_id_for_key("outbox:42")
    assert first != transaction_id_for_key("outbox:43")
    assert len(first) == 36  # a UUID: well within what Graph accepts


def test_draft_bodies_for_create_and_patch() -> None:
    timing = EventTiming(
        all_day=False,
        start_at=datetime(2026, 5, 5, 10, 0, tzinfo=timezone(timedelta(hours=2))),
        end_at=datetime(2026, 5, 5, 9, 0, tzinfo=UTC),
        time_zone="Europe/Berlin",
    )
    draft = EventDraft(title="Review", timing=timing)
    created = draft_body(draft, transaction_id="tx-1")
    assert created == {
        "subject": "Review",
        "isAllDay": False,
        "start": {"dateTime": "2026-05-05T08:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-05-05T09:00:00", "timeZone": "UTC"},
        "transactionId": "tx-1",
    }
    patched = draft_body(draft, clear_absent=True)
    assert patched["body"] == {"contentType": "text", "content": ""}
    assert patched["location"] == {"displayName": ""}
    assert "transactionId" not in patched
    full = draft_body(EventDraft("R", timing, description="d", location="Room 1"))
    assert (full["body"]["content"], full["location"]["displayName"]) == ("d", "Room 1")


def test_all_day_draft_is_written_as_utc_midnights() -> None:
    timing = EventTiming(all_day=True, start_date=date(2026, 5, 5), end_date=date(2026, 5, 7))
    body = draft_body(EventDraft(title="Off", timing=timing))
    assert body["isAllDay"] is True
    assert body["start"] == {"dateTime": "2026-05-05T00:00:00", "timeZone": "UTC"}
    assert body["end"] == {"dateTime": "2026-05-07T00:00:00", "timeZone": "UTC"}
    # and a Graph answer in that shape reads back as the same dates
    event = parse_event_item(dict(ALL_DAY, start=body["start"], end=body["end"]), CAL)
    assert isinstance(event, Event)
    assert event.timing == timing


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "sync", "expected", "reason"),
    [
        (401, _error("InvalidAuthenticationToken"), False, Unauthorized, None),
        (429, _error("TooManyRequests"), False, Throttled, None),
        (404, _error("ErrorItemNotFound"), False, NotFound, None),
        (400, _error("ErrorItemNotFound"), False, NotFound, None),  # by code, any status
        (409, _error("ErrorIrresolvableConflict"), False, Conflict, None),
        (412, _error("ErrorIrresolvableConflict"), False, Conflict, None),
        (400, _error("ErrorIrresolvableConflict"), False, Conflict, None),
        (412, b"", False, Conflict, None),
        (410, _error("SyncStateNotFound"), True, SyncStateExpired, "SyncStateNotFound"),
        (400, _error("syncStateNotFound"), True, SyncStateExpired, "syncStateNotFound"),
        (400, _error("resyncRequired"), True, SyncStateExpired, "resyncRequired"),
        (410, b"", True, SyncStateExpired, None),
        (410, b"", False, NotFound, None),
        (500, _error("generalException"), False, Transient, None),
        (502, b"<html>bad gateway</html>", False, Transient, None),
        (503, _error("serviceNotAvailable"), False, Transient, None),
        (504, _error("UnknownError"), False, Transient, None),
        (408, b"", False, Transient, None),
        (400, _error("ErrorInvalidRequest"), False, Permanent, None),
        (403, _error("ErrorAccessDenied"), False, Permanent, None),
    ],
)
def test_error_taxonomy(
    status: int,
    body: bytes,
    sync: bool,
    expected: type[ProviderError],
    reason: str | None,
) -> None:
    error = error_for_response(status, body, operation="op", sync=sync)
    assert type(error) is expected
    assert error.status == status
    assert error.provider == "microsoft"
    if reason is not None:
        assert error.reason == reason


def test_errors_are_mapped_by_code_never_by_message() -> None:
    misleading = _error("ErrorInvalidRequest", "item not found; sync state not found; throttled")
    assert type(error_for_response(400, misleading, operation="op", sync=True)) is Permanent
    message = str(error_for_response(400, misleading, operation="op"))
    assert "throttled" not in message and "ErrorInvalidRequest" in message


def test_throttling_carries_fractional_retry_after_and_503_needs_it() -> None:
    throttled = error_for_response(
        429, _error("TooManyRequests"), operation="op", retry_after_s=2.128
    )
    assert (type(throttled), throttled.retry_after_s) == (Throttled, 2.128)
    busy = error_for_response(503, b"", operation="op", retry_after_s=10.0)
    assert (type(busy), busy.retry_after_s, busy.kind) == (Throttled, 10.0, ErrorKind.THROTTLED)
    plain = error_for_response(503, b"", operation="op")
    assert (type(plain), plain.retry_after_s) == (Transient, None)


def test_error_code_shapes() -> None:
    assert error_code(_error("TooManyRequests")) == "TooManyRequests"
    assert error_code(b'{"error":"invalid_grant"}') == "invalid_grant"
    assert error_code(b'{"error":{"message":"no code"}}') is None
    assert error_code(b"not json") is None
    assert error_code(b"[]") is None
    assert error_code(b"") is None


# --- time zones ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "iana"),
    [
        ("W. Europe Standard Time", "Europe/Berlin"),
        ("Pacific Standard Time", "America/Los_Angeles"),
        ("Tokyo Standard Time", "Asia/Tokyo"),
        ("UTC", "UTC"),
        ("tzone://Microsoft/Utc", "UTC"),
        ("Europe/London", "Europe/London"),
        ("America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
    ],
)
def test_windows_and_iana_names(name: str, iana: str) -> None:
    assert to_iana(name) == iana


@pytest.mark.parametrize(
    "name", ["Customized Time Zone", "tzone://Microsoft/Custom", "", "America", "../etc/passwd"]
)
def test_unknown_zones_raise(name: str) -> None:
    with pytest.raises(UnknownTimeZone, match="unknown time zone"):
        to_iana(name)


# --- cursors and links ---------------------------------------------------------------------

BASE = "https://graph.microsoft.com/v1.0/"
NEXT = BASE + "me/calendarView/delta?$skiptoken=R0usmcCM996atia_s4xTdLJXsLeTfK%2f%3d"


def test_cursor_round_trips_and_keeps_the_link_verbatim() -> None:
    for full in (True, False):
        cursor = cursors.SyncCursor(CAL, full, NEXT)
        text = cursors.encode(cursor)
        assert "=" not in text
        assert cursors.decode(text) == cursor


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64 !",
        base64.urlsafe_b64encode(b"[]").decode(),
        base64.urlsafe_b64encode(orjson.dumps({"v": 2, "c": CAL, "f": True, "l": NEXT})).decode(),
        base64.urlsafe_b64encode(orjson.dumps({"v": 1, "c": CAL, "f": "yes", "l": NEXT})).decode(),
        base64.urlsafe_b64encode(orjson.dumps({"v": 1, "c": CAL, "f": True, "l": ""})).decode(),
    ],
)
def test_cursor_rejects_what_it_did_not_make(text: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        cursors.decode(text)


@pytest.mark.parametrize(
    ("link", "ok"),
    [
        (NEXT, True),
        ("https://GRAPH.microsoft.com/v1.0/me/calendarView/delta?$deltatoken=x", True),
        ("https://graph.microsoft.com/beta/me/calendarView/delta?$deltatoken=x", False),
        ("http://graph.microsoft.com/v1.0/me/calendarView/delta", False),
        ("https://graph.microsoft.com.evil.example/v1.0/me/calendarView/delta", False),
        ("https://evil.example/v1.0/me/calendarView/delta", False),
        ("https://graph.microsoft.com:8443/v1.0/me/calendarView/delta", False),
        ("https://user:pw@graph.microsoft.com/v1.0/me/calendarView/delta", False),
        ("https://graph.microsoft.com:99999/v1.0/", False),
        ("/v1.0/me/calendarView/delta", False),
    ],
)
def test_links_are_followed_only_on_the_configured_graph_base(link: str, ok: bool) -> None:
    assert cursors.on_base(link, BASE) is ok


# --- notifications -------------------------------------------------------------------------

SUB = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"


def _change(
    subscription_id: str = SUB, client_state: str | None = "secret-state"
) -> dict[str, Any]:
    return {
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": "2026-11-29T11:00:00.0000000Z",
        "clientState": client_state,
        "changeType": "updated",
        "resource": "Users/5a9a7e0c/Events/AAMkAGI2TG93AAA=",
        "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": "Users/5a9a7e0c/Events/AAMkAGI2TG93AAA=",
            "@odata.etag": 'W/"DwAAABYAAAA"',
            "id": "AAMkAGI2TG93AAA=",
        },
    }


def _lifecycle(event: str) -> dict[str, Any]:
    return {
        "subscriptionId": SUB,
        "subscriptionExpirationDateTime": "2026-11-29T11:00:00.0000000Z",
        "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
        "clientState": "secret-state",
        "lifecycleEvent": event,
    }


def _channel(token: str = "secret-state") -> PushChannel:
    return PushChannel(id=SUB, calendar_id=CAL, resource_id=None, expires_at=None, token=token)


def test_batched_change_notifications_parse_and_verify() -> None:
    other = "0c4e3f1a-0000-4000-8000-000000000000"
    body = orjson.dumps({"value": [_change(), _change(other, "another"), _change()]})
    parsed = parse_notifications({"Content-Type": "application/json; charset=utf-8"}, body)
    assert [(n.kind, n.channel_id) for n in parsed] == [
        (NotificationKind.CHANGED, SUB),
        (NotificationKind.CHANGED, other),
        (NotificationKind.CHANGED, SUB),
    ]
    assert parsed[0].resource_id is None and parsed[0].token == "secret-state"
    verify_notification(parsed[0], _channel())
    with pytest.raises(InvalidNotification, match="another channel"):
        verify_notification(parsed[1], _channel())
    with pytest.raises(InvalidNotification, match="token does not match"):
        verify_notification(parsed[0], _channel("the-real-state"))


def test_missing_client_state_fails_verification() -> None:
    (parsed,) = parse_notifications({}, orjson.dumps({"value": [_change(client_state=None)]}))
    assert parsed.token is None
    with pytest.raises(InvalidNotification, match="token does not match"):
        verify_notification(parsed, _channel())


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        ("reauthorizationRequired", NotificationKind.REAUTHORIZE),
        ("subscriptionRemoved", NotificationKind.REMOVED),
        ("missed", NotificationKind.RESYNC),
        ("somethingGraphAddsLater", NotificationKind.CHANGED),
    ],
)
def test_lifecycle_notifications(event: str, kind: NotificationKind) -> None:
    (parsed,) = parse_notifications({}, orjson.dumps({"value": [_lifecycle(event)]}))
    assert (parsed.kind, parsed.channel_id) == (kind, SUB)
    verify_notification(parsed, _channel())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not JSON"),
        (b"validation", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"values": []}', "no value list"),
        (b'{"value": [1]}', "not a JSON object"),
        (b'{"value": [{"clientState": "x"}]}', "without subscriptionId"),
        (orjson.dumps({"value": [dict(_change(), clientState=5)]}), "clientState is not"),
        (orjson.dumps({"value": [dict(_lifecycle("missed"), lifecycleEvent=1)]}), "lifecycle"),
    ],
)
def test_malformed_notifications(body: bytes, message: str) -> None:
    with pytest.raises(InvalidNotification, match=message):
        parse_notifications({}, body)


def test_validation_token_is_decoded_from_a_mapping_or_a_raw_query() -> None:
    token = "Validation: Testing client application reachability for subscription Request-Id: 1+2"
    assert validation_token({"validationToken": token}) == token
    raw = "validationToken=Validation%3a+Testing+client+application+reachability+for+"
    raw += "subscription+Request-Id%3a+1%2B2"
    assert validation_token(raw) == token
    assert validation_token("?" + raw) == token
    assert validation_token({}) is None
    assert validation_token("other=1") is None
    assert validation_token("validationToken=") is None


# --- auth: msal caches (no network) --------------------------------------------------------


class _CountingHttp:
    """A stand-in for requests: every POST answers 400 invalid_grant (or a set status)."""

    def __init__(self, status: int = 400, headers: dict[str, str] | None = None) -> None:
        self.posts = 0
        self.status = status
        self.headers = headers or {}

    def post(self, url: str, **kwargs: Any) -> Any:
        self.posts += 1
        return _Response(self.status, '{"error":"invalid_grant"}', self.headers)

    def get(self, url: str, **kwargs: Any) -> Any:
        return _Response(200, "{}", {})

    def close(self) -> None:
        pass


class _Response:
    def __init__(self, status: int, text: str, headers: dict[str, str]) -> None:
        self.status_code = status
        self.text = text
        self.headers = headers


@pytest.mark.parametrize(("status", "headers"), [(400, {}), (429, {"Retry-After": "30"})])
def test_token_answers_are_never_replayed_from_msals_http_cache(
    status: int, headers: dict[str, str]
) -> None:
    form = {"client_id": "c", "grant_type": "refresh_token", "refresh_token": "rt", "scope": "s"}
    url = "https://login.example/tenant/oauth2/v2.0/token"
    default = _CountingHttp(status, headers)
    throttled = ThrottledHttpClient(default, http_cache={})
    throttled.post(url, data=dict(form))
    throttled.post(url, data=dict(form))
    assert default.posts == 1  # msal's own behaviour: the second answer came from its cache

    ours = _CountingHttp(status, headers)
    cache = _TokenAnswersNotCached()
    throttled = ThrottledHttpClient(ours, http_cache=cache)
    throttled.post(url, data=dict(form))
    throttled.post(url, data=dict(form))
    assert ours.posts == 2
    throttled.get("https://login.example/tenant/v2.0/.well-known/openid-configuration")
    assert any(key.startswith("GET ") for key in cache)  # discovery is still cached


def test_token_cache_stores_nothing() -> None:
    cache = _NullTokenCache()
    cache.add(
        {
            "client_id": "c",
            "scope": ["s"],
            "token_endpoint": "https://login.example/t/oauth2/v2.0/token",
            "response": {"access_token": "at", "refresh_token": "rt", "expires_in": 3600},
        }
    )
    assert list(cache.search(cache.CredentialType.ACCESS_TOKEN)) == []
    assert list(cache.search(cache.CredentialType.REFRESH_TOKEN)) == []


def test_reserved_scopes_are_left_to_msal() -> None:
    scopes = ["offline_access", "https://graph.microsoft.com/Calendars.ReadWrite", "openid"]
    assert msal_scopes(scopes) == ["https://graph.microsoft.com/Calendars.ReadWrite"]
    with pytest.raises(ValueError, match="at least one"):
        msal_scopes(["openid", "profile"])

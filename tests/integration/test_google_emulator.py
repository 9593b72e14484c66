"""The Google Calendar emulator against Google's own client libraries and the documented protocol.

Real servers on loopback throughout: the emulator, and a tiny aiohttp receiver for push.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp
import google_auth_httplib2
import httplib2
import pytest
from aiohttp import web
from google.auth.exceptions import RefreshError
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from sandbox.emulators.google import GoogleEmulator
from sandbox.emulators.google.listing import Page, list_events, parse_list_query
from sandbox.emulators.google.store import Store
from sandbox.emulators.shared.clock import Clock
from sandbox.emulators.shared.tokens import TokenError, decode_token, encode_token
from tests.support.google_discovery import validate

CLIENT_ID, CLIENT_SECRET = "client-1.apps.googleusercontent.com", "s3cret"
EMAIL = "alice@example.com"
T = TypeVar("T")


@dataclass
class Env:
    emu: GoogleEmulator
    http: aiohttp.ClientSession
    refresh_token: str
    access_token: str = ""

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """An authenticated API call; returns status, JSON body (or None) and headers."""
        all_headers = {"Authorization": f"Bearer {self.access_token}", **(headers or {})}
        url = self.emu.api_base_url + path
        async with self.http.request(
            method, url, params=params, json=json, headers=all_headers
        ) as resp:
            text = await resp.text()
            body = await resp.json(content_type=None) if text else None
            return resp.status, body, dict(resp.headers)

    def credentials(self) -> Credentials:
        return Credentials(  # type: ignore[no-untyped-call]
            token=None,
            refresh_token=self.refresh_token,
            token_uri=self.emu.token_uri,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
        )


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with GoogleEmulator(host="127.0.0.1", port=0) as emu, aiohttp.ClientSession() as http:
        emu.control.add_client(CLIENT_ID, CLIENT_SECRET, "424242")
        user = emu.control.add_user(EMAIL, CLIENT_ID, time_zone="Europe/Berlin")
        environment = Env(emu, http, user["refresh_token"])
        async with http.post(
            emu.token_uri,
            data={
                "grant_type": "refresh_token",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "refresh_token": user["refresh_token"],
            },
        ) as resp:
            environment.access_token = (await resp.json())["access_token"]
        yield environment


def with_service(env: Env, work: Callable[[Any], T]) -> T:
    """Run ``work(service)`` with Google's official client (blocking; call via to_thread)."""
    service = build(
        "calendar",
        "v3",
        credentials=env.credentials(),
        static_discovery=True,
        client_options={"api_endpoint": env.emu.api_base_url},
    )
    try:
        return work(service)
    finally:
        service.close()


def timed(summary: str, start: str, end: str, **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "start": {"dateTime": start}, "end": {"dateTime": end}, **extra}


def assert_error(body: Any, status: int, reason: str | None) -> None:
    assert body["error"]["code"] == status
    assert isinstance(body["error"]["message"], str)
    if reason is not None:
        assert body["error"]["errors"][0]["reason"] == reason


# --- official client: OAuth, full sync, incremental sync, 410 ------------------------------


async def test_official_client_full_then_incremental_sync_then_410(env: Env) -> None:
    control = env.emu.control
    made = [
        control.create_event(
            EMAIL, timed(f"e{i}", f"2031-01-0{i + 1}T10:00:00Z", f"2031-01-0{i + 1}T11:00:00Z")
        )
        for i in range(7)
    ]

    def full_sync(service: Any) -> list[dict[str, Any]]:
        pages, token = [], None
        while True:
            page = (
                service.events()
                .list(
                    calendarId="primary",
                    singleEvents=True,
                    showDeleted=True,
                    maxResults=3,
                    pageToken=token,
                )
                .execute()
            )
            pages.append(page)
            token = page.get("nextPageToken")
            if token is None:
                return pages

    pages = await asyncio.to_thread(with_service, env, full_sync)
    assert [len(p["items"]) for p in pages] == [3, 3, 1]
    for page in pages:
        validate("Events", page)
        assert ("nextPageToken" in page) != ("nextSyncToken" in page)
    assert {e["id"] for p in pages for e in p["items"]} == {e["id"] for e in made}
    sync_token = pages[-1]["nextSyncToken"]

    control.update_event(EMAIL, made[0]["id"], {"summary": "renamed"})
    control.delete_event(EMAIL, made[1]["id"])

    def incremental(service: Any) -> dict[str, Any]:
        result: dict[str, Any] = (
            service.events()
            .list(calendarId="primary", singleEvents=True, showDeleted=True, syncToken=sync_token)
            .execute()
        )
        return result

    delta = await asyncio.to_thread(with_service, env, incremental)
    validate("Events", delta)
    by_id = {e["id"]: e for e in delta["items"]}
    assert set(by_id) == {made[0]["id"], made[1]["id"]}
    assert by_id[made[0]["id"]]["summary"] == "renamed"
    assert by_id[made[1]["id"]]["status"] == "cancelled"
    assert set(by_id[made[1]["id"]]) <= {"kind", "etag", "id", "status"}
    assert "nextSyncToken" in delta

    control.invalidate_sync_tokens(EMAIL)
    with pytest.raises(HttpError) as caught:
        await asyncio.to_thread(with_service, env, incremental)
    assert caught.value.resp.status == 410
    assert caught.value.error_details[0]["reason"] == "fullSyncRequired"


async def test_official_credentials_refresh_and_revocation(env: Env) -> None:
    credentials = env.credentials()
    request = google_auth_httplib2.Request(httplib2.Http())
    await asyncio.to_thread(credentials.refresh, request)
    assert credentials.token and credentials.token.startswith("ya29.")
    assert credentials.refresh_token == env.refresh_token
    env.emu.control.revoke_refresh_token(env.refresh_token)
    with pytest.raises(RefreshError) as caught:
        await asyncio.to_thread(env.credentials().refresh, request)
    assert "invalid_grant" in str(caught.value)
    assert not caught.value.retryable
    request.http.close()


async def test_calendar_list_pages_through_entries(env: Env) -> None:
    env.emu.control.add_calendar(EMAIL, "Team", "UTC")

    def pages(service: Any) -> list[dict[str, Any]]:
        first = service.calendarList().list(maxResults=1).execute()
        second = (
            service.calendarList().list(maxResults=1, pageToken=first["nextPageToken"]).execute()
        )
        return [first, second]

    first, second = await asyncio.to_thread(with_service, env, pages)
    for page in (first, second):
        validate("CalendarList", page)
    assert first["items"][0]["id"] == EMAIL and first["items"][0]["primary"] is True
    assert second["items"][0]["summary"] == "Team" and "nextSyncToken" in second


async def test_token_endpoint_errors(env: Env) -> None:
    form = {"grant_type": "refresh_token", "client_id": CLIENT_ID, "refresh_token": "nope"}
    async with env.http.post(env.emu.token_uri, data={**form, "client_secret": "bad"}) as resp:
        assert resp.status == 401 and (await resp.json())["error"] == "invalid_client"
    async with env.http.post(
        env.emu.token_uri, data={**form, "client_secret": CLIENT_SECRET}
    ) as resp:
        assert resp.status == 400
        assert await resp.json() == {
            "error": "invalid_grant",
            "error_description": "Token has been expired or revoked.",
        }


async def test_expired_access_token_is_401_auth_error(env: Env) -> None:
    status, _, _ = await env.call("GET", "calendars/primary/events")
    assert status == 200
    env.emu.control.expire_access_tokens()
    status, body, headers = await env.call("GET", "calendars/primary/events")
    assert status == 401
    assert_error(body, 401, "authError")
    assert body["error"]["errors"][0]["location"] == "Authorization"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    env.access_token = ""
    assert (await env.call("GET", "calendars/primary/events"))[0] == 401


# --- recurrence ------------------------------------------------------------------------------


async def test_weekly_series_keeps_local_time_across_dst_with_exdate(env: Env) -> None:
    control = env.emu.control
    control.set_now(datetime(2026, 3, 1, tzinfo=UTC))
    master = control.create_event(
        EMAIL,
        {
            "id": "series0001",
            "summary": "standup",
            "start": {"dateTime": "2026-03-16T09:00:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-03-16T09:30:00", "timeZone": "Europe/Berlin"},
            "recurrence": [
                "RRULE:FREQ=WEEKLY;COUNT=5",
                "EXDATE;TZID=Europe/Berlin:20260406T090000",
            ],
        },
    )
    status, body, _ = await env.call(
        "GET", "calendars/primary/events", params={"singleEvents": "true", "orderBy": "startTime"}
    )
    assert status == 200
    validate("Events", body)
    ids = [e["id"] for e in body["items"]]
    assert ids == [
        "series0001_20260316T080000Z",
        "series0001_20260323T080000Z",
        "series0001_20260330T070000Z",
        "series0001_20260413T070000Z",
    ]
    for item in body["items"]:
        assert item["recurringEventId"] == "series0001"
        assert item["iCalUID"] == master["iCalUID"]
        assert item["start"]["dateTime"][11:19] == "09:00:00"
        assert item["originalStartTime"] == item["start"]
        assert "recurrence" not in item

    status, body, _ = await env.call("GET", "calendars/primary/events")
    assert [e["id"] for e in body["items"]] == ["series0001"]
    assert body["items"][0]["recurrence"] == master["recurrence"]


async def test_cancelled_and_modified_instances_in_incremental_sync(env: Env) -> None:
    control = env.emu.control
    control.set_now(datetime(2026, 3, 1, tzinfo=UTC))
    control.create_event(
        EMAIL,
        {
            "id": "dailies001",
            "summary": "daily",
            "start": {"dateTime": "2026-03-02T10:00:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-03-02T11:00:00+01:00", "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=DAILY;COUNT=4"],
        },
    )
    params = {"singleEvents": "true", "showDeleted": "true"}
    _, full, _ = await env.call("GET", "calendars/primary/events", params=params)
    assert len(full["items"]) == 4
    control.cancel_instance(EMAIL, "dailies001", datetime(2026, 3, 3, 9, tzinfo=UTC))
    control.modify_instance(
        EMAIL, "dailies001", datetime(2026, 3, 4, 9, tzinfo=UTC), {"summary": "moved"}
    )
    status, delta, _ = await env.call(
        "GET", "calendars/primary/events", params={**params, "syncToken": full["nextSyncToken"]}
    )
    assert status == 200
    validate("Events", delta)
    by_id = {e["id"]: e for e in delta["items"]}
    assert set(by_id) == {"dailies001_20260303T090000Z", "dailies001_20260304T090000Z"}
    cancelled = by_id["dailies001_20260303T090000Z"]
    assert cancelled["status"] == "cancelled"
    assert cancelled["recurringEventId"] == "dailies001"
    assert cancelled["originalStartTime"]["dateTime"] == "2026-03-03T10:00:00+01:00"
    assert by_id["dailies001_20260304T090000Z"]["summary"] == "moved"

    _, live, _ = await env.call("GET", "calendars/primary/events", params={"singleEvents": "true"})
    assert [e["id"][-16:] for e in live["items"]] == [
        "20260302T090000Z",
        "20260304T090000Z",
        "20260305T090000Z",
    ]
    # Without singleEvents the master stays, and the cancelled exception still shows.
    _, masters, _ = await env.call("GET", "calendars/primary/events")
    statuses = {e["id"]: e["status"] for e in masters["items"]}
    assert statuses["dailies001"] == "confirmed"
    assert statuses["dailies001_20260303T090000Z"] == "cancelled"


# --- events.list parameter rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("iCalUID", "x@google.com"),
        ("orderBy", "updated"),
        ("privateExtendedProperty", "a=b"),
        ("q", "x"),
        ("sharedExtendedProperty", "a=b"),
        ("timeMin", "2030-01-01T00:00:00Z"),
        ("timeMax", "2030-01-01T00:00:00Z"),
        ("updatedMin", "2030-01-01T00:00:00Z"),
        ("showDeleted", "false"),
    ],
)
async def test_sync_token_rejects_forbidden_parameters(env: Env, name: str, value: str) -> None:
    _, body, _ = await env.call("GET", "calendars/primary/events")
    status, error, _ = await env.call(
        "GET", "calendars/primary/events", params={"syncToken": body["nextSyncToken"], name: value}
    )
    assert status == 400
    assert_error(error, 400, "invalid")
    assert error["error"]["errors"][0]["location"] == name


async def test_list_rules_time_window_ordering_and_sync_suppression(env: Env) -> None:
    control = env.emu.control
    control.create_event(EMAIL, timed("late", "2031-02-02T10:00:00Z", "2031-02-02T11:00:00Z"))
    control.create_event(EMAIL, timed("early", "2031-02-01T10:00:00Z", "2031-02-01T11:00:00Z"))
    window = {"timeMin": "2031-02-01T11:00:00Z", "timeMax": "2031-02-03T00:00:00+01:00"}
    _, body, _ = await env.call("GET", "calendars/primary/events", params=window)
    assert [e["summary"] for e in body["items"]] == ["late"]
    assert "nextSyncToken" in body
    status, body, _ = await env.call(
        "GET", "calendars/primary/events", params={"timeMin": "2031-02-01T11:00:00"}
    )
    assert status == 400
    status, body, _ = await env.call(
        "GET", "calendars/primary/events", params={"orderBy": "startTime"}
    )
    assert status == 400
    _, body, _ = await env.call(
        "GET", "calendars/primary/events", params={"orderBy": "startTime", "singleEvents": "true"}
    )
    assert [e["summary"] for e in body["items"]] == ["early", "late"]
    assert "nextSyncToken" not in body and "nextPageToken" not in body


async def test_410_without_reason_and_garbage_token(env: Env) -> None:
    _, body, _ = await env.call("GET", "calendars/primary/events")
    env.emu.control.invalidate_sync_tokens(EMAIL, with_reason=False)
    status, error, _ = await env.call(
        "GET", "calendars/primary/events", params={"syncToken": body["nextSyncToken"]}
    )
    assert status == 410 and "errors" not in error["error"]
    status, error, _ = await env.call(
        "GET", "calendars/primary/events", params={"syncToken": "bm90LWEtdG9rZW4"}
    )
    assert status == 410
    assert_error(error, 410, "fullSyncRequired")


# --- writes ------------------------------------------------------------------------------------


async def test_event_writes_ids_etags_and_preconditions(env: Env) -> None:
    event = timed("a", "2031-03-01T10:00:00Z", "2031-03-01T11:00:00Z")
    status, error, _ = await env.call(
        "POST", "calendars/primary/events", json={**event, "id": "Bad_Id"}
    )
    assert status == 400
    assert_error(error, 400, "invalid")
    status, created, _ = await env.call(
        "POST", "calendars/primary/events", json={**event, "id": "abcdev0123"}
    )
    assert status == 200
    validate("Event", created)
    assert created["etag"].startswith('"') and created["sequence"] == 0
    path = "calendars/primary/events/abcdev0123"
    status, error, _ = await env.call(
        "PATCH", path, json={"summary": "b"}, headers={"If-Match": '"stale"'}
    )
    assert status == 412
    assert_error(error, 412, "conditionNotMet")
    status, patched, _ = await env.call(
        "PATCH", path, json={"summary": "b"}, headers={"If-Match": created["etag"]}
    )
    assert status == 200
    assert patched["etag"] != created["etag"] and patched["sequence"] == 1
    assert patched["updated"] >= created["updated"]
    status, replaced, _ = await env.call("PUT", path, json={**event, "summary": "c"})
    assert status == 200 and replaced["summary"] == "c" and replaced["sequence"] == 2
    assert (await env.call("GET", path, headers={"If-Match": created["etag"]}))[0] == 412
    assert (await env.call("DELETE", path))[0] == 204
    status, error, _ = await env.call("DELETE", path)
    assert status == 410
    assert_error(error, 410, "deleted")
    status, gone, _ = await env.call("GET", path)
    assert status == 200 and gone["status"] == "cancelled"
    status, error, _ = await env.call(
        "POST", "calendars/primary/events", json={**event, "id": "abcdev0123"}
    )
    assert status == 409
    assert_error(error, 409, "duplicate")
    status, error, _ = await env.call("DELETE", "calendars/primary/events/nosuchevent")
    assert status == 404
    assert_error(error, 404, "notFound")


# --- push ----------------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    messages: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    box = Receiver("")

    async def handle(request: web.Request) -> web.Response:
        status = box.statuses.pop(0) if box.statuses else 200
        if status == 200:
            box.messages.append((dict(request.headers), await request.read()))
            box.arrived.set()
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    box.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield box
    finally:
        await runner.cleanup()


async def test_watch_sync_then_exists_and_stop(env: Env, receiver: Receiver) -> None:
    receiver.statuses = [503]  # the sync message is retried once
    status, channel, _ = await env.call(
        "POST",
        "calendars/primary/events/watch",
        json={"id": "chan-1", "type": "web_hook", "address": receiver.url, "token": "tok=1"},
    )
    assert status == 200
    validate("Channel", channel)
    assert len(receiver.messages) == 1  # the sync message came before the watch response
    assert channel["kind"] == "api#channel" and isinstance(channel["expiration"], str)
    assert channel["resourceUri"].endswith("?alt=json")
    headers, body = receiver.messages[0]
    assert headers["X-Goog-Resource-State"] == "sync" and headers["X-Goog-Message-Number"] == "1"
    assert body == b"" and headers["X-Goog-Channel-Token"] == "tok=1"
    assert headers["User-Agent"].startswith("APIs-Google")
    assert headers["X-Goog-Resource-ID"] == channel["resourceId"]
    expires = parsedate_to_datetime(headers["X-Goog-Channel-Expiration"])
    assert abs(expires.timestamp() * 1000 - int(channel["expiration"])) < 1000

    control = env.emu.control
    event = control.create_event(EMAIL, timed("x", "2031-04-01T10:00:00Z", "2031-04-01T11:00:00Z"))
    control.update_event(EMAIL, event["id"], {"summary": "y"})
    control.delete_event(EMAIL, event["id"])
    await receiver.wait_for(4)
    later = receiver.messages[1:]
    assert {h["X-Goog-Resource-State"] for h, _ in later} == {"exists"}
    numbers = sorted(int(h["X-Goog-Message-Number"]) for h, _ in later)
    assert numbers[0] > 1 and all(b - a > 1 for a, b in itertools.pairwise(numbers))
    assert all(h["X-Goog-Channel-ID"] == "chan-1" for h, _ in later)

    # A second channel on the same calendar shares the resourceId.
    _, other, _ = await env.call(
        "POST",
        "calendars/primary/events/watch",
        json={"id": "chan-2", "type": "web_hook", "address": receiver.url},
    )
    assert other["resourceId"] == channel["resourceId"] and "token" not in other
    stop = {"id": "chan-1", "resourceId": channel["resourceId"]}
    assert (await env.call("POST", "channels/stop", json=stop))[0] == 204
    seen = len(control.deliveries())
    control.create_event(EMAIL, timed("z", "2031-04-02T10:00:00Z", "2031-04-02T11:00:00Z"))
    assert [d["channel_id"] for d in control.deliveries()[seen:]] == ["chan-2"]
    status, error, _ = await env.call("POST", "channels/stop", json=stop)
    assert status == 404
    assert error["error"]["message"] == "Channel 'chan-1' not found for project '424242'"
    status, _, _ = await env.call(
        "POST",
        "calendars/primary/events/watch",
        json={"id": "x" * 65, "type": "web_hook", "address": receiver.url},
    )
    assert status == 400


async def test_watch_requires_https_when_configured() -> None:
    async with GoogleEmulator(require_https=True) as emu, aiohttp.ClientSession() as http:
        emu.control.add_client(CLIENT_ID, CLIENT_SECRET)
        user = emu.control.add_user(EMAIL, CLIENT_ID)
        form = {
            "grant_type": "refresh_token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": user["refresh_token"],
        }
        async with http.post(emu.token_uri, data=form) as resp:
            token = (await resp.json())["access_token"]
        async with http.post(
            emu.api_base_url + "calendars/primary/events/watch",
            json={"id": "c", "type": "web_hook", "address": "http://127.0.0.1:1/hook"},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 400
            assert_error(await resp.json(), 400, "push.webhookUrlNotHttps")


# --- faults and control API ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "domain", "reason", "message"),
    [
        ("rate_limit", 403, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
        (
            "user_rate_limit",
            403,
            "usageLimits",
            "userRateLimitExceeded",
            "User Rate Limit Exceeded",
        ),
        ("rate_limit_429", 429, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
        ("quota_exceeded", 403, "usageLimits", "quotaExceeded", "Calendar usage limits exceeded."),
        ("backend_error", 500, "global", "backendError", "Backend Error"),
        ("unavailable", 503, "global", "backendError", "The service is currently unavailable."),
    ],
)
async def test_error_faults_return_documented_envelopes(
    env: Env, *, kind: str, status: int, domain: str, reason: str, message: str
) -> None:
    env.emu.control.add_fault(
        kind, method="GET", path="/calendar/v3/calendars/*/events", count=1, retry_after="7"
    )
    got, body, headers = await env.call("GET", "calendars/primary/events")
    assert got == status
    assert body == {
        "error": {
            "errors": [{"domain": domain, "reason": reason, "message": message}],
            "code": status,
            "message": message,
        }
    }
    assert headers["Retry-After"] == "7"
    assert (await env.call("GET", "calendars/primary/events"))[0] == 200


async def test_shaping_faults_and_http_control_api(env: Env) -> None:
    base = env.emu.control_url
    async with env.http.post(
        base + f"calendars/{EMAIL}/events",
        json=timed("h", "2031-05-01T10:00:00Z", "2031-05-01T11:00:00Z"),
    ) as resp:
        assert resp.status == 200
        created = await resp.json()
    async with env.http.post(
        base + "faults", json={"kind": "empty_page", "path": "*/events"}
    ) as resp:
        assert resp.status == 200 and "id" in await resp.json()
    _, empty, _ = await env.call("GET", "calendars/primary/events")
    assert empty["items"] == [] and "nextPageToken" in empty and "nextSyncToken" not in empty
    _, rest, _ = await env.call(
        "GET", "calendars/primary/events", params={"pageToken": empty["nextPageToken"]}
    )
    assert [e["id"] for e in rest["items"]] == [created["id"]] and "nextSyncToken" in rest

    env.emu.control.add_fault("malformed_json", path="*/events")
    async with env.http.get(
        env.emu.api_base_url + "calendars/primary/events",
        headers={"Authorization": f"Bearer {env.access_token}"},
    ) as resp:
        with pytest.raises(ValueError):
            await resp.json()

    env.emu.control.add_fault("latency", delay_s=0.2, path="*/events")
    started = asyncio.get_running_loop().time()
    assert (await env.call("GET", "calendars/primary/events"))[0] == 200
    assert asyncio.get_running_loop().time() - started >= 0.2

    async with env.http.post(
        base + "users", json={"email": "bob@example.com", "client_id": CLIENT_ID}
    ) as resp:
        bob = await resp.json()
        assert bob["calendar_id"] == "bob@example.com" and bob["refresh_token"]
    async with env.http.delete(base + f"calendars/{EMAIL}/events/{created['id']}") as resp:
        assert resp.status == 204
    async with env.http.get(base + f"calendars/{EMAIL}/events") as resp:
        assert (await resp.json())["items"][0]["status"] == "cancelled"
    async with env.http.post(base + "faults", json={"kind": "nonsense"}) as resp:
        assert resp.status == 400


# --- pure pieces -------------------------------------------------------------------------------


def test_tokens_reject_tampering() -> None:
    token = encode_token({"s": 3}, b"key")
    assert decode_token(token, b"key") == {"s": 3}
    with pytest.raises(TokenError):
        decode_token(token, b"other")
    with pytest.raises(TokenError):
        decode_token("A" + token[1:], b"key")


def test_all_day_series_and_shrinking_a_series_reports_removed_instances() -> None:
    store = Store(Clock(datetime(2026, 3, 1, tzinfo=UTC)))
    cal = store.add_user(EMAIL, "Europe/Berlin")
    store.insert_event(
        cal,
        {
            "id": "adate00001",
            "start": {"date": "2026-03-05"},
            "end": {"date": "2026-03-06"},
            "recurrence": ["RRULE:FREQ=WEEKLY;UNTIL=20260320"],
        },
    )
    store.insert_event(
        cal,
        {
            "id": "series0001",
            "start": {"dateTime": "2026-03-02T10:00:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-03-02T11:00:00", "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"],
        },
    )

    def page(**params: str) -> Page:
        return list_events(store, cal, parse_list_query(list(params.items())), b"k")

    full = page(singleEvents="true")
    assert [e["id"] for e in full.items][:3] == [
        "adate00001_20260305",
        "adate00001_20260312",
        "adate00001_20260319",
    ]
    assert full.next_sync_token is not None
    store.write_event(
        cal,
        "series0001",
        {"recurrence": ["RRULE:FREQ=DAILY;COUNT=1"]},
        replace=False,
        if_match=None,
    )
    delta = page(singleEvents="true", syncToken=full.next_sync_token)
    states = {e["id"]: e["status"] for e in delta.items}
    assert states == {
        "series0001_20260302T090000Z": "confirmed",
        "series0001_20260303T090000Z": "cancelled",
        "series0001_20260304T090000Z": "cancelled",
    }

"""Contract tests: ``GoogleCalendarProvider`` against the Google emulator (a real aiohttp server).

Each test gets a fresh emulator, a shared-style aiohttp session with a short timeout, and a
user whose access token came through the client's own google-auth refresh.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from metrics import events as metrics
from providers.errors import (
    AuthRevoked,
    Conflict,
    ErrorKind,
    InvalidNotification,
    NotFound,
    Permanent,
    ProviderError,
    SyncStateExpired,
    Transient,
    Unauthorized,
)
from providers.google.client import GoogleCalendarProvider
from providers.http import HttpSettings, create_session
from providers.interface import CalendarProvider, verify_notification
from providers.models import (
    Event,
    EventDraft,
    EventRemoval,
    EventTiming,
    NotificationKind,
    PushChannel,
    SyncPage,
    SyncWindow,
)
from sandbox.emulators.google import Control, GoogleEmulator

CLIENT_ID = "1234567890-test.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-test-secret"
EMAIL = "alice@example.com"
SCOPE = "https://www.googleapis.com/auth/calendar"
TIMEOUT_S = 1.0


@dataclass
class World:
    """One emulator, one provider and one user with a fresh access token."""

    emulator: GoogleEmulator
    provider: GoogleCalendarProvider
    session: aiohttp.ClientSession
    refresh_token: str
    access_token: str

    @property
    def control(self) -> Control:
        return self.emulator.control


def _provider(
    emulator: GoogleEmulator, session: aiohttp.ClientSession, **options: Any
) -> GoogleCalendarProvider:
    return GoogleCalendarProvider(
        session,
        api_base_url=emulator.api_base_url,
        token_uri=emulator.token_uri,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        max_refresh_threads=2,
        refresh_timeout_s=TIMEOUT_S,
        **options,
    )


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with GoogleEmulator(host="127.0.0.1", port=0) as emulator:
        emulator.control.add_client(CLIENT_ID, CLIENT_SECRET)
        user = emulator.control.add_user(EMAIL, CLIENT_ID)
        session = create_session(HttpSettings(total_timeout_s=TIMEOUT_S))
        provider = _provider(emulator, session, page_size=3)
        try:
            grant = await provider.refresh_access_token(user["refresh_token"])
            yield World(emulator, provider, session, user["refresh_token"], grant.access_token)
        finally:
            await provider.aclose()
            await session.close()


def _window(world: World) -> SyncWindow:
    now = world.control.now()
    return SyncWindow(start=now - timedelta(days=30), end=now + timedelta(days=120))


def _at(world: World, days: int, hour: int) -> datetime:
    base = world.control.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return base.replace(hour=hour) + timedelta(days=days)


def _timed(start: datetime, minutes: int = 30, tz: str = "UTC") -> dict[str, Any]:
    end = start + timedelta(minutes=minutes)
    return {
        "start": {"dateTime": start.isoformat(), "timeZone": tz},
        "end": {"dateTime": end.isoformat(), "timeZone": tz},
    }


def _seed(world: World, calendar_id: str = EMAIL) -> dict[str, Any]:
    """Four single events (one all-day) and a weekly series of four: eight rows when expanded."""
    control = world.control
    ids: dict[str, Any] = {}
    for n in range(3):
        body = {"summary": f"single {n}", **_timed(_at(world, n + 1, 9))}
        ids[f"single{n}"] = control.create_event(calendar_id, body)["id"]
    day = _at(world, 2, 0).date()
    all_day = {
        "summary": "off",
        "start": {"date": day.isoformat()},
        "end": {"date": (day + timedelta(days=1)).isoformat()},
    }
    ids["all_day"] = control.create_event(calendar_id, all_day)["id"]
    first = _at(world, 3, 14)
    series = {
        "summary": "weekly",
        **_timed(first, 60, "Europe/Berlin"),
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4"],
    }
    ids["series"] = control.create_event(calendar_id, series)["id"]
    ids["series_first"] = first
    return ids


async def _drain(
    world: World,
    calendar_id: str = EMAIL,
    *,
    delta_token: str | None = None,
    cursor: str | None = None,
    provider: GoogleCalendarProvider | None = None,
) -> list[SyncPage]:
    """Every page of one round, following cursors until a delta token."""
    client = provider or world.provider
    pages: list[SyncPage] = []
    while True:
        page = await client.fetch_sync_page(
            world.access_token,
            calendar_id,
            window=_window(world),
            delta_token=delta_token if cursor is None else None,
            cursor=cursor,
        )
        pages.append(page)
        if page.delta_token is not None:
            return pages
        cursor = page.next_cursor
        assert len(pages) < 100


def _ids(pages: list[SyncPage]) -> list[list[str]]:
    return [[e.id for e in p.upserts] + [r.id for r in p.removals] for p in pages]


# --- auth ----------------------------------------------------------------------------------


async def test_refresh_returns_an_aware_expiry_and_no_new_refresh_token(world: World) -> None:
    grant = await world.provider.refresh_access_token(world.refresh_token)
    assert grant.access_token and grant.access_token != world.access_token
    assert grant.expires_at.tzinfo is UTC
    expected = world.control.now() + timedelta(hours=1)
    assert abs((grant.expires_at - expected).total_seconds()) < 5
    assert grant.refresh_token is None  # Google does not rotate on refresh
    assert grant.scopes == (SCOPE,)
    assert grant.access_token not in repr(grant)


async def test_revoked_refresh_token_is_auth_revoked(world: World) -> None:
    world.control.revoke_refresh_token(world.refresh_token)
    with pytest.raises(AuthRevoked) as caught:
        await world.provider.refresh_access_token(world.refresh_token)
    assert (caught.value.status, caught.value.reason) == (400, "invalid_grant")
    assert world.refresh_token not in str(caught.value)
    # google-auth's exception (which holds the response) is not chained onto ours.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_wrong_client_secret_is_permanent(world: World) -> None:
    provider = GoogleCalendarProvider(
        world.session,
        api_base_url=world.emulator.api_base_url,
        token_uri=world.emulator.token_uri,
        client_id=CLIENT_ID,
        client_secret="wrong",
    )
    try:
        with pytest.raises(Permanent) as caught:
            await provider.refresh_access_token(world.refresh_token)
        assert (caught.value.status, caught.value.reason) == (401, "invalid_client")
        assert "wrong" not in str(caught.value)
    finally:
        await provider.aclose()


async def test_token_endpoint_failures_are_not_retried_inside_the_client(world: World) -> None:
    # One 503 only: had google-auth retried it by itself, the second POST would have succeeded.
    world.control.add_fault("unavailable", path="/token", count=1)
    with pytest.raises(Transient) as transient:
        await world.provider.refresh_access_token(world.refresh_token)
    assert transient.value.status == 503
    grant = await world.provider.refresh_access_token(world.refresh_token)  # the actor's retry
    assert grant.access_token
    world.control.clear_faults()
    world.control.add_fault("rate_limit_429", path="/token", count=None, retry_after="9")
    with pytest.raises(ProviderError) as throttled:
        await world.provider.refresh_access_token(world.refresh_token)
    assert throttled.value.kind is ErrorKind.THROTTLED
    assert throttled.value.retry_after_s == 9


async def test_refreshes_run_off_the_loop_in_a_bounded_pool(world: World) -> None:
    world.control.add_fault("latency", path="/token", count=None, delay_s=0.3)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        grants = await asyncio.gather(
            *(world.provider.refresh_access_token(world.refresh_token) for _ in range(4))
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    elapsed = loop.time() - started
    assert len({g.access_token for g in grants}) == 4
    assert elapsed >= 0.55  # two threads: four 0.3 s refreshes take two rounds
    assert ticks >= 20  # the loop kept running meanwhile


async def test_unreachable_token_endpoint_is_transient(world: World) -> None:
    provider = GoogleCalendarProvider(
        world.session,
        api_base_url=world.emulator.api_base_url,
        token_uri="http://127.0.0.1:9/token",  # discard port: connection refused
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    try:
        with pytest.raises(Transient):
            await provider.refresh_access_token(world.refresh_token)
    finally:
        await provider.aclose()


async def test_expired_access_token_is_unauthorized_until_refreshed(world: World) -> None:
    world.control.expire_access_tokens(EMAIL)
    with pytest.raises(Unauthorized) as caught:
        await world.provider.list_calendars(world.access_token)
    assert caught.value.status == 401
    assert world.access_token not in str(caught.value)
    fresh = await world.provider.refresh_access_token(world.refresh_token)
    assert await world.provider.list_calendars(fresh.access_token)


# --- calendars -----------------------------------------------------------------------------


async def test_calendar_list_follows_pages(world: World) -> None:
    for n in range(260):  # the API pages calendarList at 250
        world.control.add_calendar(EMAIL, f"team {n}", "Europe/Berlin")
    calendars = await world.provider.list_calendars(world.access_token)
    assert len(calendars) == 261
    assert len({c.id for c in calendars}) == 261
    [primary] = [c for c in calendars if c.primary]
    assert (primary.id, primary.access_role, primary.synced) == (EMAIL, "owner", True)
    assert {c.time_zone for c in calendars if not c.primary} == {"Europe/Berlin"}


# --- full sync -----------------------------------------------------------------------------


async def test_full_sync_pages_and_resumes_exactly_from_a_saved_cursor(world: World) -> None:
    ids = _seed(world)
    pages = await _drain(world)
    assert len(pages) >= 3
    assert all(p.full_sync for p in pages)
    assert all(p.next_cursor and not p.delta_token for p in pages[:-1])
    assert pages[-1].delta_token and pages[-1].next_cursor is None
    upserts = [e for p in pages for e in p.upserts]
    assert len(upserts) == 8 and len({e.id for e in upserts}) == 8
    instances = [e for e in upserts if e.recurring_event_id == ids["series"]]
    assert len(instances) == 4
    assert instances[0].timing.time_zone == "Europe/Berlin"
    assert {e.timing.start_at for e in instances} == {
        ids["series_first"] + timedelta(weeks=n) for n in range(4)
    }
    [all_day] = [e for e in upserts if e.id == ids["all_day"]]
    assert all_day.timing.all_day and all_day.timing.end_date is not None
    assert all_day.organizer_email == EMAIL

    # A crash after committing page 1: resuming from its cursor, twice, yields the same
    # remaining pages as the uninterrupted round.
    saved = pages[0].next_cursor
    assert saved is not None
    again = await _drain(world, cursor=saved)
    once_more = await _drain(world, cursor=saved)
    assert _ids(again) == _ids(once_more) == _ids(pages[1:])
    # Its token (issued anew, so not byte-equal) continues from the same state.
    [quiet] = await _drain(world, delta_token=again[-1].delta_token)
    assert (quiet.upserts, quiet.removals) == ((), ())


async def test_cursor_pins_the_round_even_if_the_window_or_page_size_changes(world: World) -> None:
    _seed(world)
    first = await world.provider.fetch_sync_page(world.access_token, EMAIL, window=_window(world))
    assert first.next_cursor is not None
    other = _provider(world.emulator, world.session, page_size=50)
    try:
        narrow = SyncWindow(
            start=world.control.now(), end=world.control.now() + timedelta(minutes=1)
        )
        page = await other.fetch_sync_page(
            world.access_token, EMAIL, window=narrow, cursor=first.next_cursor
        )
    finally:
        await other.aclose()
    # Same query as the first page (the emulator rejects a page token of another query).
    assert len(page.upserts) + len(page.removals) == 3


async def test_sync_sends_only_the_allowed_parameters(world: World) -> None:
    _seed(world)
    seen: list[Mapping[str, str]] = []

    async def on_start(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
        if params.url.path.endswith("/events"):
            seen.append(dict(params.url.query))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        provider = _provider(world.emulator, session, page_size=3)
        try:
            full = await _drain(world, provider=provider)
            world.control.create_event(EMAIL, {"summary": "new", **_timed(_at(world, 5, 8))})
            await _drain(world, delta_token=full[-1].delta_token, provider=provider)
        finally:
            await provider.aclose()
    full_queries = [q for q in seen if "syncToken" not in q]
    incremental = [q for q in seen if "syncToken" in q]
    assert full_queries and incremental
    for query in seen:
        assert (query["singleEvents"], query["showDeleted"], query["maxResults"]) == (
            "true",
            "true",
            "3",
        )
    for query in full_queries:
        assert query["timeMin"].endswith("Z") and query["timeMax"].endswith("Z")
    for query in incremental:
        assert not {"timeMin", "timeMax", "orderBy", "q", "updatedMin"} & query.keys()
    assert all("pageToken" in q for q in seen[1 : len(full_queries)])


async def test_empty_page_with_a_page_token_continues(world: World) -> None:
    _seed(world)
    world.control.add_fault("empty_page", method="GET", path="/calendar/v3/calendars/*/events")
    pages = await _drain(world)
    assert pages[0].upserts == () and pages[0].removals == () and pages[0].next_cursor
    assert sum(len(p.upserts) for p in pages) == 8


async def test_calendar_ids_with_hash_and_at_are_encoded(world: World) -> None:
    calendar_id = "c_team#1@group.calendar.google.com"
    world.control.add_calendar(EMAIL, "team", "UTC", calendar_id)
    world.control.create_event(calendar_id, {"summary": "x", **_timed(_at(world, 1, 9))})
    pages = await _drain(world, calendar_id)
    assert [e.calendar_id for p in pages for e in p.upserts] == [calendar_id]


async def test_unknown_calendar_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        await world.provider.fetch_sync_page(
            world.access_token, "nobody@example.com", window=_window(world)
        )


# --- incremental sync ----------------------------------------------------------------------


async def test_incremental_sync_sees_creates_updates_deletions_and_cancelled_instances(
    world: World,
) -> None:
    ids = _seed(world)
    token = (await _drain(world))[-1].delta_token
    assert token is not None
    control = world.control
    created = control.create_event(EMAIL, {"summary": "new", **_timed(_at(world, 6, 10))})
    control.update_event(EMAIL, ids["single0"], {"summary": "renamed"})
    control.delete_event(EMAIL, ids["single1"])
    cancelled_at = ids["series_first"] + timedelta(weeks=1)
    control.cancel_instance(EMAIL, ids["series"], cancelled_at)

    pages = await _drain(world, delta_token=token)
    assert not any(p.full_sync for p in pages)
    upserts = {e.id: e for p in pages for e in p.upserts}
    removals = {r.id: r for p in pages for r in p.removals}
    assert set(upserts) == {created["id"], ids["single0"]}
    assert upserts[ids["single0"]].title == "renamed"
    assert removals[ids["single1"]] == EventRemoval(ids["single1"], EMAIL, definite=True)
    instance_id = f"{ids['series']}_{cancelled_at:%Y%m%dT%H%M%SZ}"
    assert set(removals) == {ids["single1"], instance_id}
    assert removals[instance_id].recurring_event_id == ids["series"]
    assert ids["series"] not in removals  # the series and its other instances stay

    # Nothing changed since: an empty last page with a fresh token.
    [quiet] = await _drain(world, delta_token=pages[-1].delta_token)
    assert (quiet.upserts, quiet.removals) == ((), ())
    assert quiet.delta_token


async def test_incremental_round_pages_and_resumes_with_the_same_sync_token(world: World) -> None:
    _seed(world)
    token = (await _drain(world))[-1].delta_token
    for n in range(7):
        world.control.create_event(EMAIL, {"summary": f"burst {n}", **_timed(_at(world, 8, n))})
    pages = await _drain(world, delta_token=token)
    assert len(pages) == 3
    assert sum(len(p.upserts) for p in pages) == 7
    resumed = await _drain(world, cursor=pages[0].next_cursor)
    assert _ids(resumed) == _ids(pages[1:])


@pytest.mark.parametrize("with_reason", [True, False])
async def test_invalidated_sync_token_is_sync_state_expired(
    world: World, with_reason: bool
) -> None:
    _seed(world)
    token = (await _drain(world))[-1].delta_token
    world.control.invalidate_sync_tokens(EMAIL, with_reason=with_reason)
    with pytest.raises(SyncStateExpired) as caught:
        await _drain(world, delta_token=token)
    assert caught.value.status == 410
    assert caught.value.reason == ("fullSyncRequired" if with_reason else None)


async def test_unreadable_cursor_asks_for_a_full_resync(world: World) -> None:
    with pytest.raises(SyncStateExpired):
        await world.provider.fetch_sync_page(
            world.access_token, EMAIL, window=_window(world), cursor="not-a-cursor"
        )
    page = await world.provider.fetch_sync_page(world.access_token, EMAIL, window=_window(world))
    other = "bob@example.com"
    with pytest.raises(SyncStateExpired):
        await world.provider.fetch_sync_page(
            world.access_token, other, window=_window(world), cursor=page.delta_token
        )


# --- faults --------------------------------------------------------------------------------


Outcome = tuple[ErrorKind, int | None, str | None, float | None]  # kind, status, reason, wait


@pytest.mark.parametrize(
    ("kind", "retry_after", "outcome"),
    [
        ("rate_limit", None, (ErrorKind.THROTTLED, 403, "rateLimitExceeded", None)),
        ("user_rate_limit", None, (ErrorKind.THROTTLED, 403, "userRateLimitExceeded", None)),
        ("rate_limit_429", "7", (ErrorKind.THROTTLED, 429, "rateLimitExceeded", 7.0)),
        ("quota_exceeded", None, (ErrorKind.THROTTLED, 403, "quotaExceeded", 60.0)),
        ("quota_exceeded", "120", (ErrorKind.THROTTLED, 403, "quotaExceeded", 120.0)),
        ("backend_error", None, (ErrorKind.TRANSIENT, 500, "backendError", None)),
        ("unavailable", "3", (ErrorKind.TRANSIENT, 503, "backendError", 3.0)),
        ("malformed_json", None, (ErrorKind.TRANSIENT, None, None, None)),
    ],
)
async def test_injected_faults_map_to_the_taxonomy(
    world: World, kind: str, retry_after: str | None, outcome: Outcome
) -> None:
    _seed(world)
    world.control.add_fault(kind, path="/calendar/v3/calendars/*/events", retry_after=retry_after)
    with pytest.raises(ProviderError) as caught:
        await world.provider.fetch_sync_page(world.access_token, EMAIL, window=_window(world))
    error = caught.value
    assert (error.kind, error.status, error.reason, error.retry_after_s) == outcome
    assert world.access_token not in str(error)
    # The fault was spent: the same call now succeeds.
    assert await world.provider.fetch_sync_page(world.access_token, EMAIL, window=_window(world))


async def test_latency_beyond_the_session_timeout_is_transient(world: World) -> None:
    world.control.add_fault("latency", path="/calendar/v3/users/*", delay_s=TIMEOUT_S + 0.5)
    with pytest.raises(Transient, match="timed out"):
        await world.provider.list_calendars(world.access_token)


# --- push ----------------------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, asyncio.Queue[dict[str, str]]]]:
    """A tiny webhook endpoint: every request's headers go into a queue; answers 200."""
    received: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        assert await request.read() == b""
        received.put_nowait(dict(request.headers))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hooks/google", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hooks/google", received
    finally:
        await runner.cleanup()


async def test_watch_notify_verify_and_stop(
    world: World, receiver: tuple[str, asyncio.Queue[dict[str, str]]]
) -> None:
    address, received = receiver
    provider: CalendarProvider = world.provider
    token = secrets.token_urlsafe(32)
    channel = await provider.start_push(
        world.access_token,
        EMAIL,
        address=address,
        channel_id="ch-" + secrets.token_hex(8),
        token=token,
        ttl_s=3600,
    )
    assert channel.resource_id
    assert channel.expires_at is not None and channel.expires_at.tzinfo is UTC
    expected = world.control.now() + timedelta(hours=1)
    assert abs((channel.expires_at - expected).total_seconds()) < 5
    assert "token" not in channel.raw

    [sync] = provider.parse_notifications(await asyncio.wait_for(received.get(), 5), b"")
    assert (sync.kind, sync.message_number) == (NotificationKind.SYNC, 1)
    verify_notification(sync, channel)

    world.control.create_event(EMAIL, {"summary": "ping", **_timed(_at(world, 1, 9))})
    headers = await asyncio.wait_for(received.get(), 5)
    [changed] = provider.parse_notifications(headers, b"")
    assert changed.kind is NotificationKind.CHANGED
    assert changed.message_number is not None and changed.message_number > 1
    verify_notification(changed, channel)

    forged = {k: v for k, v in headers.items() if k.lower() != "x-goog-channel-token"}
    forged["X-Goog-Channel-Token"] = "guess"
    with pytest.raises(InvalidNotification):
        verify_notification(provider.parse_notifications(forged, b"")[0], channel)
    with pytest.raises(InvalidNotification):
        provider.parse_notifications({"X-Goog-Resource-State": "exists"}, b"")

    await provider.stop_push(world.access_token, channel)
    assert world.control.channels() == []
    await provider.stop_push(world.access_token, channel)  # already stopped: fine


async def test_stopping_an_unknown_channel_is_fine(
    world: World, receiver: tuple[str, asyncio.Queue[dict[str, str]]]
) -> None:
    # channels.stop really goes out, Google answers 404 for a channel it does not know, and
    # that counts as stopped (no error); other channels are left alone.
    address, _ = receiver
    kept = await world.provider.start_push(
        world.access_token, EMAIL, address=address, channel_id="k", token="t", ttl_s=60
    )
    ghost = PushChannel(
        id="never-made", calendar_id=EMAIL, resource_id="r0", expires_at=None, token="t"
    )
    answered_404 = metrics.provider_requests.labels("google", "404")
    before = answered_404._value.get()
    await world.provider.stop_push(world.access_token, ghost)
    assert answered_404._value.get() == before + 1
    assert [c["id"] for c in world.control.channels()] == [kept.id]


async def test_watch_rejects_ids_and_tokens_google_would(world: World) -> None:
    with pytest.raises(Permanent):
        await world.provider.start_push(
            world.access_token, EMAIL, address="http://x", channel_id="x" * 65, token="", ttl_s=1
        )
    with pytest.raises(Permanent):
        await world.provider.start_push(
            world.access_token, EMAIL, address="http://x", channel_id="c", token="t" * 257, ttl_s=1
        )


# --- writes --------------------------------------------------------------------------------


def _draft(world: World, title: str = "from us") -> EventDraft:
    start = _at(world, 4, 13)
    return EventDraft(
        title=title,
        timing=EventTiming(
            all_day=False,
            start_at=start,
            end_at=start + timedelta(hours=1),
            time_zone="Europe/Berlin",
        ),
        description="made by integration-worker",
    )


async def test_create_is_idempotent_per_key(world: World) -> None:
    draft = _draft(world)
    first = await world.provider.create_event(
        world.access_token, EMAIL, draft, idempotency_key="outbox:1"
    )
    assert (first.title, first.timing) == (draft.title, draft.timing)
    assert first.etag and first.calendar_id == EMAIL
    replay = await world.provider.create_event(
        world.access_token, EMAIL, draft, idempotency_key="outbox:1"
    )
    assert (replay.id, replay.etag) == (first.id, first.etag)
    other = await world.provider.create_event(
        world.access_token, EMAIL, draft, idempotency_key="outbox:2"
    )
    assert other.id != first.id
    assert len([e for e in world.control.events(EMAIL) if e["summary"] == draft.title]) == 2


async def test_create_replay_after_deletion_is_conflict(world: World) -> None:
    draft = _draft(world)
    event = await world.provider.create_event(
        world.access_token, EMAIL, draft, idempotency_key="outbox:9"
    )
    await world.provider.delete_event(world.access_token, EMAIL, event.id)
    with pytest.raises(Conflict) as caught:
        await world.provider.create_event(
            world.access_token, EMAIL, draft, idempotency_key="outbox:9"
        )
    assert caught.value.reason == "deleted"


async def test_update_with_etag_and_stale_etag(world: World) -> None:
    created = await world.provider.create_event(
        world.access_token, EMAIL, _draft(world), idempotency_key="outbox:3"
    )
    day = _at(world, 10, 0).date()
    all_day = EventDraft(
        title="now all day",
        timing=EventTiming(all_day=True, start_date=day, end_date=day + timedelta(days=2)),
    )
    updated = await world.provider.update_event(
        world.access_token, EMAIL, created.id, all_day, etag=created.etag
    )
    assert isinstance(updated, Event)
    assert updated.timing == all_day.timing
    assert updated.description is None  # the draft has none: cleared
    assert updated.etag != created.etag
    with pytest.raises(Conflict) as caught:
        await world.provider.update_event(
            world.access_token, EMAIL, created.id, _draft(world), etag=created.etag
        )
    assert caught.value.status == 412
    back = await world.provider.update_event(world.access_token, EMAIL, created.id, _draft(world))
    assert back.timing == _draft(world).timing


async def test_update_keeps_fields_the_draft_does_not_own(world: World) -> None:
    body = {
        "summary": "with guests",
        **_timed(_at(world, 2, 11)),
        "attendees": [{"email": "bob@example.com"}, {"email": "carol@example.com"}],
    }
    event_id = world.control.create_event(EMAIL, body)["id"]
    updated = await world.provider.update_event(
        world.access_token, EMAIL, event_id, _draft(world, "renamed")
    )
    assert (updated.title, updated.attendees_count) == ("renamed", 2)


async def test_update_of_a_missing_event_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        await world.provider.update_event(world.access_token, EMAIL, "abcdefgh0", _draft(world))


async def test_delete_twice_and_with_a_stale_etag(world: World) -> None:
    first = await world.provider.create_event(
        world.access_token, EMAIL, _draft(world), idempotency_key="outbox:4"
    )
    changed = await world.provider.update_event(
        world.access_token, EMAIL, first.id, _draft(world, "changed")
    )
    with pytest.raises(Conflict):
        await world.provider.delete_event(world.access_token, EMAIL, first.id, etag=first.etag)
    await world.provider.delete_event(world.access_token, EMAIL, first.id, etag=changed.etag)
    await world.provider.delete_event(world.access_token, EMAIL, first.id)  # 410: gone
    await world.provider.delete_event(world.access_token, EMAIL, "neverexisted1")  # 404


async def test_timed_draft_round_trips_through_sync(world: World) -> None:
    draft = _draft(world)
    created = await world.provider.create_event(
        world.access_token, EMAIL, draft, idempotency_key="outbox:5"
    )
    [synced] = [e for p in await _drain(world) for e in p.upserts if e.id == created.id]
    assert synced.timing == draft.timing
    assert (synced.title, synced.description) == (draft.title, draft.description)


# --- who the account is -------------------------------------------------------------------


async def test_a_refresh_names_the_subject_only_when_openid_was_granted(world: World) -> None:
    plain = await world.provider.refresh_access_token(world.refresh_token)
    assert plain.subject is None  # no id_token without openid
    assert await world.provider.identify(plain.access_token) is None  # tokeninfo: no sub
    openid = world.control.add_user("bob@example.com", CLIENT_ID, scopes=(SCOPE, "openid"))
    grant = await world.provider.refresh_access_token(openid["refresh_token"])
    assert grant.subject is not None and grant.subject.isdigit()
    assert await world.provider.identify(grant.access_token) == grant.subject


async def test_tokeninfo_names_the_user_of_an_email_grant_issued_to_us(world: World) -> None:
    email_scope = "https://www.googleapis.com/auth/userinfo.email"
    user = world.control.add_user("carol@example.com", CLIENT_ID, scopes=(SCOPE, email_scope))
    grant = await world.provider.refresh_access_token(user["refresh_token"])
    assert grant.subject is None  # no openid, no id_token
    subject = await world.provider.identify(grant.access_token)
    assert subject is not None and subject.isdigit()
    assert await world.provider.identify("ya29.unknown") is None
    # A token another client obtained names nobody to us (its aud is not our client).
    world.control.add_client("other-client", "other-secret")
    foreign = world.control.add_user("carol@example.com", "other-client", scopes=(email_scope,))
    other = GoogleCalendarProvider(
        world.session,
        api_base_url=world.emulator.api_base_url,
        token_uri=world.emulator.token_uri,
        client_id="other-client",
        client_secret="other-secret",
    )
    try:
        token = (await other.refresh_access_token(foreign["refresh_token"])).access_token
    finally:
        await other.aclose()
    assert await other.identify(token) == subject
    assert await world.provider.identify(token) is None

"""Contract tests: ``MicrosoftCalendarProvider`` against the Microsoft emulator (real HTTPS).

Each test gets a fresh emulator (its own CA, trusted through ``ca_bundle`` only), the shared
style aiohttp session with a short timeout, and a user whose access token came through the
client's own msal refresh. Webhook tests run a tiny local aiohttp receiver that answers the
validation handshake with ``validation_token`` and records every notification POST.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from config.settings import Settings
from providers.errors import (
    AuthRevoked,
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
from providers.http import HttpResponse, HttpSettings, create_session
from providers.interface import CalendarProvider, verify_notification
from providers.microsoft.auth import client_info_subject
from providers.microsoft.client import MicrosoftCalendarProvider
from providers.microsoft.mapping import PRIMARY
from providers.microsoft.notifications import parse_notifications, validation_token
from providers.models import (
    Event,
    EventDraft,
    EventRemoval,
    EventTiming,
    Notification,
    NotificationKind,
    PushChannel,
    SyncPage,
    SyncWindow,
)
from sandbox.emulators.microsoft import MicrosoftEmulator
from sandbox.emulators.microsoft.control import Control

CLIENT_ID, CLIENT_SECRET = "11111111-2222-3333-4444-555555555555", "s3cret~value"
UPN = "adele@contoso.example"
SCOPE = "https://graph.microsoft.com/Calendars.ReadWrite"
TIMEOUT_S = 1.0


@dataclass
class World:
    """One emulator, one provider and one user with a fresh access token."""

    emulator: MicrosoftEmulator
    provider: MicrosoftCalendarProvider
    session: aiohttp.ClientSession
    refresh_token: str
    access_token: str
    extra: list[MicrosoftCalendarProvider] = field(default_factory=list)

    @property
    def control(self) -> Control:
        return self.emulator.control

    def provider_with(self, **options: Any) -> MicrosoftCalendarProvider:
        """Another provider on the same emulator and session (closed by the fixture)."""
        provider = _provider(self.emulator, self.session, **options)
        self.extra.append(provider)
        return provider


def _provider(
    emulator: MicrosoftEmulator, session: aiohttp.ClientSession, **options: Any
) -> MicrosoftCalendarProvider:
    settings: dict[str, Any] = {
        "authority": emulator.authority,
        "graph_base_url": emulator.graph_base_url,
        "graph_beta_base_url": emulator.graph_beta_base_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scopes": [SCOPE],
        "ca_bundle": Path(emulator.ca_pem_path),
        "max_refresh_threads": 2,
        "refresh_timeout_s": 5.0,
        "page_size": 3,
        "clock": emulator.control.now,
    }
    settings.update(options)
    return MicrosoftCalendarProvider(session, **settings)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with MicrosoftEmulator(host="127.0.0.1", port=0, validation_timeout_s=2.0) as emu:
        emu.control.add_client(CLIENT_ID, CLIENT_SECRET)
        user = emu.control.add_user(UPN, CLIENT_ID)
        session = create_session(
            HttpSettings(total_timeout_s=TIMEOUT_S, ca_bundle=Path(emu.ca_pem_path))
        )
        provider = _provider(emu, session)
        state = World(emu, provider, session, user["refresh_token"], "")
        try:
            grant = await provider.refresh_access_token(user["refresh_token"])
            state.access_token = grant.access_token
            yield state
        finally:
            for extra in [provider, *state.extra]:
                await extra.aclose()
            await session.close()


def _window(world: World) -> SyncWindow:
    now = world.control.now()
    return SyncWindow(start=now - timedelta(days=30), end=now + timedelta(days=60))


def _at(world: World, days: int, hour: int) -> datetime:
    base = world.control.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return base.replace(hour=hour) + timedelta(days=days)


def _graph_body(subject: str, start: datetime, minutes: int = 30) -> dict[str, Any]:
    end = start + timedelta(minutes=minutes)
    wall = "%Y-%m-%dT%H:%M:%S"
    return {
        "subject": subject,
        "start": {"dateTime": start.strftime(wall), "timeZone": "UTC"},
        "end": {"dateTime": end.strftime(wall), "timeZone": "UTC"},
    }


def _seed(world: World, count: int = 7, calendar_id: str | None = None) -> list[str]:
    return [
        world.control.create_event(
            UPN, _graph_body(f"event {n}", _at(world, n + 1, 9)), calendar_id
        )["id"]
        for n in range(count)
    ]


async def _drain(
    world: World,
    calendar_id: str = PRIMARY,
    *,
    delta_token: str | None = None,
    cursor: str | None = None,
    provider: MicrosoftCalendarProvider | None = None,
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


def _upserts(pages: list[SyncPage]) -> dict[str, Event]:
    return {event.id: event for page in pages for event in page.upserts}


def _removals(pages: list[SyncPage]) -> dict[str, EventRemoval]:
    return {removal.id: removal for page in pages for removal in page.removals}


def test_provider_satisfies_the_interface(world: World) -> None:
    provider: CalendarProvider = world.provider
    assert provider.name == "microsoft"
    assert "microsoft" in repr(world.provider).lower()


# --- auth ----------------------------------------------------------------------------------


async def test_refresh_rotates_the_refresh_token(world: World) -> None:
    grant = await world.provider.refresh_access_token(world.refresh_token)
    assert grant.access_token and grant.access_token != world.access_token
    assert grant.refresh_token is not None and grant.refresh_token != world.refresh_token
    assert grant.expires_at.tzinfo is not None
    expected = world.control.now() + timedelta(hours=1)
    assert abs((grant.expires_at - expected).total_seconds()) < 30
    assert SCOPE in grant.scopes
    assert grant.access_token not in repr(grant) and grant.refresh_token not in repr(grant)
    # The rotated token works, and the access token it brings is accepted by Graph.
    rotated = await world.provider.refresh_access_token(grant.refresh_token)
    assert await world.provider.list_calendars(rotated.access_token)


async def test_a_refresh_names_the_stable_subject(world: World) -> None:
    # An account added by refresh token learns who it is at its first refresh: Entra's
    # tenant and object id, from the id_token msal always asks for.
    other = world.control.add_user("renamed@contoso.example", CLIENT_ID)
    grant = await world.provider.refresh_access_token(other["refresh_token"])
    assert grant.subject == f"{other['tenant_id']}:{other['id']}"
    assert await world.provider.identify(grant.access_token) is None  # nothing more to ask


def test_client_info_names_tenant_and_object_id() -> None:
    info = base64.urlsafe_b64encode(b'{"uid": "o-1", "utid": "t-1"}').decode().rstrip("=")
    assert client_info_subject(info) == "t-1:o-1"
    for bad in (None, "", "!!", base64.urlsafe_b64encode(b'{"uid": "o"}').decode(), "W10"):
        assert client_info_subject(bad) is None


async def test_tokens_of_one_account_are_never_served_to_another(world: World) -> None:
    upns = [f"user{n}@contoso.example" for n in range(4)]
    tokens = [world.control.add_user(upn, CLIENT_ID)["refresh_token"] for upn in upns]
    for upn in upns:
        world.control.create_event(upn, _graph_body(f"owned by {upn}", _at(world, 1, 9)))
    # Concurrent refreshes through the one msal application (2 threads, 4 accounts).
    grants = await asyncio.gather(*(world.provider.refresh_access_token(t) for t in tokens))
    assert len({g.access_token for g in grants}) == len(upns)
    for upn, grant in zip(upns, grants, strict=True):
        world.access_token = grant.access_token
        titles = {e.title for e in _upserts(await _drain(world)).values()}
        assert titles == {f"owned by {upn}"}


async def test_revoked_refresh_token_is_auth_revoked(world: World) -> None:
    world.control.revoke_refresh_token(world.refresh_token)
    with pytest.raises(AuthRevoked) as caught:
        await world.provider.refresh_access_token(world.refresh_token)
    assert (caught.value.status, caught.value.reason) == (400, "invalid_grant")
    assert world.refresh_token not in str(caught.value)
    # Nothing from msal (which holds the request form) is chained onto ours.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    # Re-authorization brings a new refresh token, which works at once.
    fresh = world.control.grant_refresh_token(UPN, CLIENT_ID)
    assert (await world.provider.refresh_access_token(fresh)).access_token


@pytest.mark.parametrize("block", ["mfa", "interaction_required", "consent_required"])
async def test_blocked_refresh_is_auth_revoked_and_the_retry_is_not_served_from_msals_cache(
    world: World, block: str
) -> None:
    world.control.set_block(UPN, block)
    with pytest.raises(AuthRevoked) as caught:
        await world.provider.refresh_access_token(world.refresh_token)
    assert caught.value.reason in ("invalid_grant", "interaction_required", "consent_required")
    world.control.set_block(UPN, None)
    # The very same request again, well inside msal's 60 s window for 400 answers: it must
    # reach the token endpoint and succeed.
    grant = await world.provider.refresh_access_token(world.refresh_token)
    assert grant.access_token


async def test_wrong_client_secret_is_permanent(world: World) -> None:
    provider = world.provider_with(client_secret="not-the-secret")
    with pytest.raises(Permanent) as caught:
        await provider.refresh_access_token(world.refresh_token)
    assert caught.value.reason == "invalid_client"
    assert "not-the-secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "retry_after", "expected", "wait"),
    [
        ("throttled", None, Throttled, 2.128),
        ("unavailable", "", Transient, None),
        ("server_error", "", Transient, None),
    ],
)
async def test_token_endpoint_faults_and_the_next_call_reaches_the_endpoint(
    world: World, kind: str, retry_after: str | None, expected: type[ProviderError], wait: float
) -> None:
    world.control.add_fault(kind, path="/*/oauth2/v2.0/token", retry_after=retry_after)
    with pytest.raises(expected) as caught:
        await world.provider.refresh_access_token(world.refresh_token)
    assert caught.value.retry_after_s == wait
    # msal would replay a 429/5xx for its Retry-After (or 5 s); ours goes to the endpoint.
    assert (await world.provider.refresh_access_token(world.refresh_token)).access_token


async def test_token_endpoint_malformed_answer_is_transient(world: World) -> None:
    world.control.add_fault("malformed_json", path="/*/oauth2/v2.0/token")
    with pytest.raises(Transient, match="malformed"):
        await world.provider.refresh_access_token(world.refresh_token)


async def test_requests_ca_bundle_in_the_environment_does_not_override_ours(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    unrelated = tmp_path / "unrelated-ca.pem"
    unrelated.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(unrelated))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(unrelated))
    provider = world.provider_with()  # a fresh msal application: discovery runs now
    assert (await provider.refresh_access_token(world.refresh_token)).access_token


async def test_unknown_tenant_fails_discovery_as_transient(world: World) -> None:
    provider = world.provider_with(authority=world.emulator.base_url + "no-such-tenant")
    with pytest.raises(Transient, match="discovery"):
        await provider.refresh_access_token(world.refresh_token)
    with pytest.raises(Transient, match="discovery"):  # not cached: discovery runs again
        await provider.refresh_access_token(world.refresh_token)


async def test_from_settings_uses_the_microsoft_settings(world: World) -> None:
    emulator = world.emulator
    settings = Settings(
        microsoft_authority=emulator.authority,
        microsoft_graph_base_url=emulator.graph_base_url,
        microsoft_graph_beta_base_url=emulator.graph_beta_base_url,
        microsoft_client_id=CLIENT_ID,
        microsoft_client_secret=SecretStr(CLIENT_SECRET),
        microsoft_sync_other_calendars=True,
        ca_bundle=Path(emulator.ca_pem_path),
    )
    provider = MicrosoftCalendarProvider.from_settings(settings, world.session)
    world.extra.append(provider)
    grant = await provider.refresh_access_token(world.refresh_token)
    world.control.add_calendar(UPN, "Team")
    assert all(c.synced for c in await provider.list_calendars(grant.access_token))
    with pytest.raises(ValueError, match="IW_MICROSOFT_CLIENT_ID"):
        MicrosoftCalendarProvider.from_settings(Settings(), world.session)


def test_plain_http_authority_is_refused_at_construction(world: World) -> None:
    with pytest.raises(ValueError, match="https"):
        _provider(world.emulator, world.session, authority="http://127.0.0.1:1/tenant")


async def test_expired_access_token_is_unauthorized(world: World) -> None:
    world.control.expire_access_tokens(UPN)
    with pytest.raises(Unauthorized) as caught:
        await world.provider.list_calendars(world.access_token)
    assert caught.value.status == 401
    assert world.access_token not in str(caught.value)


# --- calendars -----------------------------------------------------------------------------


async def test_calendars_follow_next_links_and_mark_others_not_synced(world: World) -> None:
    for n in range(12):
        world.control.add_calendar(UPN, f"Team {n}")
    calendars = await world.provider.list_calendars(world.access_token)
    assert len(calendars) == 13
    (primary,) = [c for c in calendars if c.primary]
    assert (primary.id, primary.synced) == (PRIMARY, True)
    others = [c for c in calendars if not c.primary]
    assert {c.name for c in others} == {f"Team {n}" for n in range(12)}
    assert not any(c.synced for c in others)
    syncing = world.provider_with(sync_other_calendars=True)
    assert all(c.synced for c in await syncing.list_calendars(world.access_token))


# --- sync ----------------------------------------------------------------------------------


async def test_full_round_in_small_pages_then_an_empty_increment(world: World) -> None:
    ids = _seed(world, 7)
    pages = await _drain(world)
    assert len(pages) >= 3  # page_size=3
    assert all(page.full_sync for page in pages)
    assert all(page.next_cursor for page in pages[:-1]) and pages[-1].delta_token
    upserts = _upserts(pages)
    assert set(upserts) == set(ids)
    event = upserts[ids[0]]
    assert event.timing.start_at == _at(world, 1, 9)
    assert event.timing.start_at is not None and event.timing.start_at.tzinfo is not None
    assert event.etag and event.title == "event 0"
    again = await _drain(world, delta_token=pages[-1].delta_token)
    assert not any(page.full_sync for page in again)
    assert not _upserts(again) and not _removals(again)


async def test_a_saved_cursor_resumes_the_round_in_another_process(world: World) -> None:
    ids = _seed(world, 7)
    first = await world.provider.fetch_sync_page(world.access_token, PRIMARY, window=_window(world))
    assert first.next_cursor is not None
    restarted = world.provider_with()
    rest = await _drain(world, cursor=first.next_cursor, provider=restarted)
    assert all(page.full_sync for page in rest)
    assert set(_upserts([first, *rest])) == set(ids)


async def test_incremental_round_sees_updates_deletions_moves_and_replays(world: World) -> None:
    ids = _seed(world, 5)
    token = (await _drain(world))[-1].delta_token
    world.control.update_event(UPN, ids[0], {"subject": "renamed"})
    world.control.delete_event(UPN, ids[1])
    far = _at(world, 200, 9)  # beyond the window's end
    world.control.update_event(UPN, ids[2], _graph_body("moved away", far))
    added = world.control.create_event(UPN, _graph_body("new", _at(world, 3, 15)))["id"]
    pages = await _drain(world, delta_token=token)
    upserts, removals = _upserts(pages), _removals(pages)
    assert upserts[ids[0]].title == "renamed"
    assert added in upserts
    assert removals[ids[1]] == EventRemoval(ids[1], PRIMARY, definite=False)
    assert removals[ids[2]].definite is False  # left the window: not a deletion
    assert ids[3] not in upserts and ids[4] not in upserts

    # Graph may repeat a round's changes in the next round: the same upserts and removals
    # again, which the caller applies idempotently.
    world.control.replay_delta_rounds(1)
    replay = await _drain(world, delta_token=pages[-1].delta_token)
    replayed, replayed_removals = _upserts(replay), _removals(replay)
    assert {key: e.title for key, e in replayed.items()} == {
        key: e.title for key, e in upserts.items()
    }
    assert replayed_removals == removals


async def test_empty_pages_that_continue_are_fine(world: World) -> None:
    ids = _seed(world, 4)
    world.control.add_fault("empty_page", path="/v1.0/me/calendarView/delta", count=2)
    pages = await _drain(world)
    assert any(not page.upserts and page.next_cursor for page in pages)
    assert set(_upserts(pages)) == set(ids)


@pytest.mark.parametrize("code", ["SyncStateNotFound", "resyncRequired"])
async def test_expired_delta_and_skip_tokens_are_sync_state_expired(
    world: World, code: str
) -> None:
    _seed(world, 7)
    first = await world.provider.fetch_sync_page(world.access_token, PRIMARY, window=_window(world))
    token = (await _drain(world))[-1].delta_token
    world.control.invalidate_delta_tokens(UPN, code)
    with pytest.raises(SyncStateExpired) as caught:
        await _drain(world, delta_token=token)
    assert caught.value.reason is not None and caught.value.reason.lower() == code.lower()
    with pytest.raises(SyncStateExpired):
        await _drain(world, cursor=first.next_cursor)
    # A full round starts over.
    assert (await _drain(world))[-1].delta_token


async def test_unreadable_or_foreign_cursors(world: World) -> None:
    window = _window(world)
    with pytest.raises(SyncStateExpired, match="unreadable"):
        await world.provider.fetch_sync_page(
            world.access_token, PRIMARY, window=window, cursor="garbage"
        )
    _seed(world, 4)
    first = await world.provider.fetch_sync_page(world.access_token, PRIMARY, window=window)
    syncing = world.provider_with(sync_other_calendars=True)
    with pytest.raises(SyncStateExpired, match="another calendar"):
        await syncing.fetch_sync_page(
            world.access_token, "AAMkOTHER=", window=window, cursor=first.next_cursor
        )
    # Stored under another Graph base (a national cloud, a proxy): expired state, never
    # followed (the token would go there). Before: Permanent, and the account crash-looped.
    evil = "https://evil.example/v1.0/me/calendarView/delta?$deltatoken=x"
    with pytest.raises(SyncStateExpired, match="configured Graph host"):
        await world.provider.fetch_sync_page(
            world.access_token, PRIMARY, window=window, delta_token=evil
        )
    naive = SyncWindow(start=datetime(2026, 1, 1), end=datetime(2026, 2, 1))
    with pytest.raises(Permanent, match="timezone-aware"):
        await world.provider.fetch_sync_page(world.access_token, PRIMARY, window=naive)


async def test_other_calendars_sync_through_beta_only_when_enabled(world: World) -> None:
    calendar = world.control.add_calendar(UPN, "Team")
    ids = _seed(world, 4, calendar["id"])
    _seed(world, 2)
    with pytest.raises(Permanent, match="disabled"):
        await world.provider.fetch_sync_page(
            world.access_token, calendar["id"], window=_window(world)
        )
    syncing = world.provider_with(sync_other_calendars=True)
    pages = await _drain(world, calendar["id"], provider=syncing)
    upserts = _upserts(pages)
    assert set(upserts) == set(ids)
    assert {e.calendar_id for e in upserts.values()} == {calendar["id"]}
    # Its links are beta links: for the primary calendar (v1.0) such a link is sync state of
    # another base, never followed; a full round replaces it.
    assert pages[-1].delta_token is not None and "/beta/" in pages[-1].delta_token
    with pytest.raises(SyncStateExpired, match="configured Graph host"):
        await syncing.fetch_sync_page(
            world.access_token, PRIMARY, window=_window(world), delta_token=pages[-1].delta_token
        )


@pytest.mark.parametrize(
    ("kind", "retry_after", "expected", "wait"),
    [
        ("throttled", None, Throttled, 2.128),
        ("unavailable", "7", Throttled, 7.0),
        ("unavailable", "", Transient, None),
        ("server_error", "", Transient, None),
        ("gateway_timeout", "", Transient, None),
        ("malformed_json", None, Transient, None),
    ],
)
async def test_sync_faults(
    world: World,
    kind: str,
    retry_after: str | None,
    expected: type[ProviderError],
    wait: float | None,
) -> None:
    _seed(world, 2)
    world.control.add_fault(kind, path="/v1.0/me/calendarView/delta", retry_after=retry_after)
    with pytest.raises(expected) as caught:
        await world.provider.fetch_sync_page(world.access_token, PRIMARY, window=_window(world))
    assert type(caught.value) is expected
    assert caught.value.retry_after_s == wait
    assert world.access_token not in str(caught.value)
    assert (await _drain(world))[-1].delta_token  # the fault was one call only


async def test_a_page_linking_off_the_graph_host_is_transient(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator links only to itself: the answer is rewritten on its way to the client,
    # so the real fetch path (status check, parsing, mapping) meets the hostile link.
    _seed(world, 1)
    real = world.provider._request
    bodies = [
        {"value": [], "@odata.nextLink": "https://evil.example/v1.0/me/calendarView/delta"},
        {"value": []},  # neither link
    ]

    async def rewritten(*args: Any, **kwargs: Any) -> HttpResponse:
        answer = await real(*args, **kwargs)
        return HttpResponse(answer.status, answer.headers, orjson.dumps(bodies.pop(0)))

    monkeypatch.setattr(world.provider, "_request", rewritten)
    with pytest.raises(Transient, match="off the configured Graph host") as off_host:
        await world.provider.fetch_sync_page(world.access_token, PRIMARY, window=_window(world))
    assert off_host.value.kind is ErrorKind.TRANSIENT and "evil.example" not in str(off_host.value)
    with pytest.raises(Transient, match="exactly one of nextLink and deltaLink"):
        await world.provider.fetch_sync_page(world.access_token, PRIMARY, window=_window(world))


async def test_latency_beyond_the_timeout_is_transient(world: World) -> None:
    world.control.add_fault("latency", path="/v1.0/me/calendarView/delta", delay_s=TIMEOUT_S * 2)
    with pytest.raises(Transient, match="timed out"):
        await world.provider.fetch_sync_page(world.access_token, PRIMARY, window=_window(world))


# --- subscriptions and notifications --------------------------------------------------------


@dataclass
class Receiver:
    """A local webhook endpoint: answers the handshake, records notification bodies."""

    url: str
    handshakes: list[str]
    bodies: list[bytes]

    def notifications(self) -> list[Notification]:
        return [n for body in self.bodies for n in parse_notifications({}, body)]

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Notification]:
        """The notifications received once at least ``count`` arrived (batches count each)."""
        for _ in range(int(timeout_s / 0.02)):
            if len(self.notifications()) >= count:
                return self.notifications()
            await asyncio.sleep(0.02)
        raise AssertionError(f"only {len(self.notifications())} of {count} notifications")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    handshakes: list[str] = []
    bodies: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        token = validation_token(request.query)
        if token is not None:
            handshakes.append(token)
            return web.Response(text=token, content_type="text/plain")
        bodies.append(await request.read())
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Receiver(f"http://127.0.0.1:{port}/hook?tenant=t1", handshakes, bodies)
    finally:
        await runner.cleanup()


async def _subscribe(world: World, receiver: Receiver, token: str = "state-1") -> PushChannel:
    return await world.provider.start_push(
        world.access_token,
        PRIMARY,
        address=receiver.url,
        channel_id="ignored-by-graph",
        token=token,
        ttl_s=3600,
    )


async def test_subscription_create_replace_and_delete(world: World, receiver: Receiver) -> None:
    channel = await _subscribe(world, receiver)
    assert channel.id != "ignored-by-graph"  # Graph assigns subscription ids
    assert len(receiver.handshakes) >= 1  # notificationUrl (and lifecycle URL) validated
    assert channel.expires_at is not None
    expected = world.control.now() + timedelta(hours=1)
    assert abs((channel.expires_at - expected).total_seconds()) < 60
    assert "clientState" not in channel.raw and channel.token == "state-1"
    (stored,) = world.control.subscriptions()
    assert stored["resource"] == "/me/events"
    assert stored["lifecycleNotificationUrl"] == receiver.url

    # A renewal is a new subscription with a new clientState, then the old one deleted.
    renewed = await _subscribe(world, receiver, token="state-2")
    assert renewed.id != channel.id and renewed.token == "state-2"
    assert renewed.expires_at is not None
    await world.provider.stop_push(world.access_token, channel)
    assert [s["id"] for s in world.control.subscriptions()] == [renewed.id]
    await world.provider.stop_push(world.access_token, renewed)
    assert world.control.subscriptions() == []
    await world.provider.stop_push(world.access_token, renewed)  # unknown: fine


async def test_change_and_lifecycle_notifications_parse_and_verify(
    world: World, receiver: Receiver
) -> None:
    channel = await _subscribe(world, receiver)
    for n in range(3):
        world.control.create_event(UPN, _graph_body(f"n{n}", _at(world, 1, 9 + n)))
    await receiver.wait_for(1)
    await asyncio.sleep(0.3)  # let coalesced batches and the rest arrive
    changes = receiver.notifications()
    assert any(len(parse_notifications({}, body)) > 1 for body in receiver.bodies)  # batched
    # The provider's parser answers the same as the module function.
    assert changes == [
        n for body in receiver.bodies for n in world.provider.parse_notifications({}, body)
    ]
    assert {n.kind for n in changes} == {NotificationKind.CHANGED}
    for notification in changes:
        verify_notification(notification, channel)
    forged = PushChannel(channel.id, PRIMARY, None, channel.expires_at, token="someone-else")
    with pytest.raises(InvalidNotification, match="token does not match"):
        verify_notification(changes[0], forged)

    receiver.bodies.clear()
    world.control.fire_lifecycle(channel.id, "reauthorizationRequired")
    world.control.fire_lifecycle(channel.id, "missed")
    lifecycle = await receiver.wait_for(2)
    assert sorted(n.kind.value for n in lifecycle) == ["reauthorize", "resync"]
    for notification in lifecycle:
        verify_notification(notification, channel)


async def test_subscription_faults_and_bad_arguments(world: World, receiver: Receiver) -> None:
    with pytest.raises(Permanent, match="clientState"):
        await _subscribe(world, receiver, token="x" * 129)
    with pytest.raises(Permanent, match="disabled"):
        await world.provider.start_push(
            world.access_token,
            "AAMkOTHER=",
            address=receiver.url,
            channel_id="c",
            token="t",
            ttl_s=60,
        )
    world.control.add_fault("throttled", path="/v1.0/subscriptions")
    with pytest.raises(Throttled):
        await _subscribe(world, receiver)


# --- writes --------------------------------------------------------------------------------


def _draft(world: World, title: str = "Planning", days: int = 2) -> EventDraft:
    start = _at(world, days, 13)
    timing = EventTiming(all_day=False, start_at=start, end_at=start + timedelta(hours=1))
    return EventDraft(title=title, timing=timing, description="agenda", location="Room 7")


async def test_create_with_the_same_key_returns_the_same_event(world: World) -> None:
    draft = _draft(world)
    first = await world.provider.create_event(
        world.access_token, PRIMARY, draft, idempotency_key="outbox:1"
    )
    again = await world.provider.create_event(
        world.access_token, PRIMARY, draft, idempotency_key="outbox:1"
    )
    assert again.id == first.id
    assert (first.title, first.location) == ("Planning", "Room 7")
    assert first.timing.start_at == draft.timing.start_at
    other = await world.provider.create_event(
        world.access_token, PRIMARY, draft, idempotency_key="outbox:2"
    )
    assert other.id != first.id
    assert len([e for e in world.control.events(UPN) if e["subject"] == "Planning"]) == 2


async def test_update_with_etags_and_stale_etag_conflicts(world: World) -> None:
    created = await world.provider.create_event(
        world.access_token, PRIMARY, _draft(world), idempotency_key="k"
    )
    updated = await world.provider.update_event(
        world.access_token, PRIMARY, created.id, _draft(world, "Renamed"), etag=created.etag
    )
    assert updated.title == "Renamed" and updated.etag != created.etag
    with pytest.raises(Conflict) as caught:
        await world.provider.update_event(
            world.access_token, PRIMARY, created.id, _draft(world, "Again"), etag=created.etag
        )
    assert caught.value.status == 412
    with pytest.raises(Conflict):
        await world.provider.delete_event(
            world.access_token, PRIMARY, created.id, etag=created.etag
        )
    await world.provider.delete_event(world.access_token, PRIMARY, created.id, etag=updated.etag)
    await world.provider.delete_event(world.access_token, PRIMARY, created.id)  # already gone
    with pytest.raises(NotFound):
        await world.provider.update_event(
            world.access_token, PRIMARY, created.id, _draft(world, "ghost")
        )


async def test_all_day_create_in_another_calendar(world: World) -> None:
    calendar = world.control.add_calendar(UPN, "Team")
    timing = EventTiming(
        all_day=True,
        start_date=_at(world, 3, 0).date(),
        end_date=_at(world, 4, 0).date(),
    )
    created = await world.provider.create_event(
        world.access_token, calendar["id"], EventDraft("Off", timing), idempotency_key="off"
    )
    assert created.timing == timing and created.calendar_id == calendar["id"]
    syncing = world.provider_with(sync_other_calendars=True)
    pages = await _drain(world, calendar["id"], provider=syncing)
    assert _upserts(pages)[created.id].timing == timing

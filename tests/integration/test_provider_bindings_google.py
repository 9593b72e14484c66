"""Binding ids on Google: our events carry one in a private extended property, and the client
finds (``find_bound_event``) and reads (``get_event``) them; checked against the emulator.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from providers.errors import Permanent, Transient
from providers.google.client import GoogleCalendarProvider
from providers.google.mapping import BINDING_PROPERTY
from providers.http import HttpSettings, create_session
from providers.models import Event, EventDraft, EventTiming, SyncPage, SyncWindow
from sandbox.emulators.google import Control, GoogleEmulator

CLIENT_ID = "1234567890-test.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-test-secret"
EMAIL = "alice@example.com"
TIMEOUT_S = 1.0


@dataclass
class World:
    """One emulator, one provider (small pages) and one user with a fresh access token."""

    emulator: GoogleEmulator
    provider: GoogleCalendarProvider
    session: aiohttp.ClientSession
    access_token: str

    @property
    def control(self) -> Control:
        return self.emulator.control

    async def call(self, path: str, params: list[tuple[str, str]] | None = None) -> tuple[int, Any]:
        """A raw GET against the emulator's Calendar API, as the user."""
        headers = {"Authorization": f"Bearer {self.access_token}"}
        url = self.emulator.api_base_url.rstrip("/") + "/" + path
        async with self.session.get(url, params=params, headers=headers) as response:
            return response.status, await response.json()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with GoogleEmulator(host="127.0.0.1", port=0) as emulator:
        emulator.control.add_client(CLIENT_ID, CLIENT_SECRET)
        user = emulator.control.add_user(EMAIL, CLIENT_ID)
        session = create_session(HttpSettings(total_timeout_s=TIMEOUT_S))
        provider = GoogleCalendarProvider(
            session,
            api_base_url=emulator.api_base_url,
            token_uri=emulator.token_uri,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            max_refresh_threads=2,
            refresh_timeout_s=TIMEOUT_S,
            page_size=3,
        )
        try:
            grant = await provider.refresh_access_token(user["refresh_token"])
            yield World(emulator, provider, session, grant.access_token)
        finally:
            await provider.aclose()
            await session.close()


def _start(world: World, days: int) -> datetime:
    base = world.control.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return base.replace(hour=13) + timedelta(days=days)


def _draft(world: World, binding_id: str | None, title: str = "ours", days: int = 3) -> EventDraft:
    start = _start(world, days)
    timing = EventTiming(all_day=False, start_at=start, end_at=start + timedelta(hours=1))
    return EventDraft(title=title, timing=timing, binding_id=binding_id)


async def _sync(world: World, delta_token: str | None = None) -> tuple[list[SyncPage], str]:
    """One whole round (full, or incremental from ``delta_token``) and its new delta token."""
    now = world.control.now()
    window = SyncWindow(start=now - timedelta(days=30), end=now + timedelta(days=120))
    pages: list[SyncPage] = []
    cursor: str | None = None
    while True:
        page = await world.provider.fetch_sync_page(
            world.access_token,
            EMAIL,
            window=window,
            delta_token=delta_token if cursor is None else None,
            cursor=cursor,
        )
        pages.append(page)
        if page.delta_token is not None:
            return pages, page.delta_token
        cursor = page.next_cursor


def _upserts(pages: list[SyncPage]) -> dict[str, Event]:
    return {event.id: event for page in pages for event in page.upserts}


async def test_created_event_carries_the_binding_and_is_found_by_it(world: World) -> None:
    binding = str(uuid.uuid4())
    created = await world.provider.create_event(
        world.access_token, EMAIL, _draft(world, binding), idempotency_key="outbox:1"
    )
    assert created.binding_id == binding
    stored = next(e for e in world.control.events(EMAIL) if e["id"] == created.id)
    assert stored["extendedProperties"] == {"private": {BINDING_PROPERTY: binding}}
    # Strangers: another binding, and an event without one, are never found.
    await world.provider.create_event(
        world.access_token, EMAIL, _draft(world, None, "theirs"), idempotency_key="outbox:2"
    )
    found = await world.provider.find_bound_event(world.access_token, EMAIL, binding)
    assert found is not None
    assert (found.id, found.binding_id, found.etag) == (created.id, binding, created.etag)
    other = str(uuid.uuid4())
    assert await world.provider.find_bound_event(world.access_token, EMAIL, other) is None


async def test_deleted_event_is_neither_found_nor_got(world: World) -> None:
    binding = str(uuid.uuid4())
    created = await world.provider.create_event(
        world.access_token, EMAIL, _draft(world, binding), idempotency_key="outbox:1"
    )
    await world.provider.delete_event(world.access_token, EMAIL, created.id)
    assert await world.provider.find_bound_event(world.access_token, EMAIL, binding) is None
    # events.get still answers the tombstone (status cancelled): that counts as gone.
    assert world.control.events(EMAIL)[0]["status"] == "cancelled"
    assert await world.provider.get_event(world.access_token, EMAIL, created.id) is None
    assert await world.provider.get_event(world.access_token, EMAIL, "neverexisted0") is None


async def test_get_event_etag_matches_what_sync_reports(world: World) -> None:
    binding = str(uuid.uuid4())
    _, token = await _sync(world)
    created = await world.provider.create_event(
        world.access_token, EMAIL, _draft(world, binding), idempotency_key="outbox:1"
    )
    world.control.update_event(EMAIL, created.id, {"summary": "edited in Google Calendar"})
    got = await world.provider.get_event(world.access_token, EMAIL, created.id)
    assert got is not None and got.etag != created.etag
    pages, _ = await _sync(world, token)
    synced = _upserts(pages)[created.id]
    assert (synced.etag, synced.title) == (got.etag, got.title)
    # Inbound sync recognises our event by its binding, and others' events by its absence.
    assert synced.binding_id == got.binding_id == binding
    world.control.create_event(EMAIL, {"summary": "theirs", **_edges(_start(world, 5))})
    full, _ = await _sync(world)
    assert {e.title: e.binding_id for e in _upserts(full).values()} == {
        "edited in Google Calendar": binding,
        "theirs": None,
    }


def _edges(start: datetime) -> dict[str, Any]:
    end = start + timedelta(minutes=30)
    return {"start": {"dateTime": start.isoformat()}, "end": {"dateTime": end.isoformat()}}


async def test_update_sets_only_our_property(world: World) -> None:
    body = {
        "summary": "theirs",
        **_edges(_start(world, 2)),
        "extendedProperties": {"private": {"otherApp": "x"}, "shared": {"color": "blue"}},
    }
    event_id = world.control.create_event(EMAIL, body)["id"]
    binding = str(uuid.uuid4())
    updated = await world.provider.update_event(
        world.access_token, EMAIL, event_id, _draft(world, binding, "adopted")
    )
    assert updated.binding_id == binding
    assert updated.raw["extendedProperties"] == {
        "private": {"otherApp": "x", BINDING_PROPERTY: binding},
        "shared": {"color": "blue"},
    }
    # A draft without a binding leaves the stored one alone.
    again = await world.provider.update_event(
        world.access_token, EMAIL, event_id, _draft(world, None, "renamed")
    )
    assert (again.title, again.binding_id) == ("renamed", binding)


async def test_find_follows_empty_pages(world: World) -> None:
    binding = str(uuid.uuid4())
    created = await world.provider.create_event(
        world.access_token, EMAIL, _draft(world, binding), idempotency_key="outbox:1"
    )
    world.control.add_fault(
        "empty_page", method="GET", path="/calendar/v3/calendars/*/events", count=2
    )
    found = await world.provider.find_bound_event(world.access_token, EMAIL, binding)
    assert found is not None and found.id == created.id


async def test_find_and_get_malformed_answers_are_transient(world: World) -> None:
    binding = str(uuid.uuid4())
    created = await world.provider.create_event(
        world.access_token, EMAIL, _draft(world, binding), idempotency_key="outbox:1"
    )
    world.control.add_fault("malformed_json", path="/calendar/v3/calendars/*/events")
    with pytest.raises(Transient, match=r"events\.list answered malformed"):
        await world.provider.find_bound_event(world.access_token, EMAIL, binding)
    world.control.add_fault("malformed_json", path="/calendar/v3/calendars/*/events/*")
    with pytest.raises(Transient, match=r"events\.get answered malformed"):
        await world.provider.get_event(world.access_token, EMAIL, created.id)


async def test_a_binding_google_would_truncate_is_refused(world: World) -> None:
    too_long = "b" * 1025
    with pytest.raises(Permanent):
        await world.provider.create_event(
            world.access_token, EMAIL, _draft(world, too_long), idempotency_key="outbox:1"
        )
    with pytest.raises(Permanent):
        await world.provider.find_bound_event(world.access_token, EMAIL, too_long)
    assert world.control.events(EMAIL) == []


# --- the emulator ------------------------------------------------------------------------------


async def test_emulator_rejects_private_extended_property_with_a_sync_token(
    world: World,
) -> None:
    status, body = await world.call("calendars/primary/events")
    assert status == 200
    params = [
        ("syncToken", body["nextSyncToken"]),
        ("privateExtendedProperty", f"{BINDING_PROPERTY}=x"),
    ]
    status, error = await world.call("calendars/primary/events", params)
    assert status == 400
    detail = error["error"]["errors"][0]
    assert (error["error"]["code"], detail["reason"]) == (400, "invalid")
    assert (detail["location"], detail["locationType"]) == ("privateExtendedProperty", "parameter")


async def test_emulator_filters_lists_and_returns_properties(world: World) -> None:
    for name, value in (("a", "1"), ("b", "2")):
        body = {"summary": name, **_edges(_start(world, 2))}
        world.control.create_event(EMAIL, {**body, "extendedProperties": {"private": {"k": value}}})
    status, body = await world.call(
        "calendars/primary/events", [("privateExtendedProperty", "k=2")]
    )
    assert status == 200
    assert [(e["summary"], e["extendedProperties"]) for e in body["items"]] == [
        ("b", {"private": {"k": "2"}})
    ]


async def test_emulator_applies_the_documented_limits(world: World) -> None:
    properties = {"private": {"k" * 45: "dropped", "long": "v" * 1100, "gone": None}}
    body = {"summary": "limits", **_edges(_start(world, 2)), "extendedProperties": properties}
    created = world.control.create_event(EMAIL, body)
    assert created["extendedProperties"] == {"private": {"long": "v" * 1024}}
    patched = world.control.update_event(
        EMAIL, created["id"], {"extendedProperties": {"private": {"long": None}}}
    )
    assert "extendedProperties" not in patched

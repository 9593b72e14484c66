"""Binding ids on Graph: our events carry one in a single-value extended property, and the client
finds (``find_bound_event``) and reads (``get_event``) them; checked against the emulator (HTTPS).
calendarView delta cannot ``$expand`` the property, so synced events carry no binding id.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from providers.errors import Transient
from providers.http import HttpSettings, create_session
from providers.microsoft.client import MicrosoftCalendarProvider
from providers.microsoft.mapping import (
    BINDING_EXPAND,
    BINDING_PROPERTY_ID,
    PRIMARY,
    binding_filter,
)
from providers.models import Event, EventDraft, EventTiming, SyncPage, SyncWindow
from sandbox.emulators.microsoft import MicrosoftEmulator
from sandbox.emulators.microsoft.control import Control

CLIENT_ID, CLIENT_SECRET = "11111111-2222-3333-4444-555555555555", "s3cret~value"
UPN = "adele@contoso.example"
SCOPE = "https://graph.microsoft.com/Calendars.ReadWrite"
TIMEOUT_S = 1.0
OTHER_PROPERTY = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name Color"


@dataclass
class World:
    """One emulator, one provider (small pages) and one user with a fresh access token."""

    emulator: MicrosoftEmulator
    provider: MicrosoftCalendarProvider
    session: aiohttp.ClientSession
    access_token: str

    @property
    def control(self) -> Control:
        return self.emulator.control

    async def call(self, path: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
        """A raw GET against the emulator's Graph v1.0, as the user."""
        headers = {"Authorization": f"Bearer {self.access_token}"}
        url = URL(self.emulator.graph_base_url.rstrip("/") + "/" + path)
        if params is not None:
            url = url.with_query(params)
        async with self.session.get(url, headers=headers) as response:
            return response.status, await response.json()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with MicrosoftEmulator(host="127.0.0.1", port=0) as emulator:
        emulator.control.add_client(CLIENT_ID, CLIENT_SECRET)
        user = emulator.control.add_user(UPN, CLIENT_ID)
        ca_bundle = Path(emulator.ca_pem_path)
        session = create_session(HttpSettings(total_timeout_s=TIMEOUT_S, ca_bundle=ca_bundle))
        provider = MicrosoftCalendarProvider(
            session,
            authority=emulator.authority,
            graph_base_url=emulator.graph_base_url,
            graph_beta_base_url=emulator.graph_beta_base_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            scopes=[SCOPE],
            ca_bundle=ca_bundle,
            max_refresh_threads=2,
            refresh_timeout_s=5.0,
            page_size=3,
            clock=emulator.control.now,
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


def _graph_body(subject: str, start: datetime, **extra: Any) -> dict[str, Any]:
    wall = "%Y-%m-%dT%H:%M:%S"
    end = start + timedelta(minutes=30)
    return {
        "subject": subject,
        "start": {"dateTime": start.strftime(wall), "timeZone": "UTC"},
        "end": {"dateTime": end.strftime(wall), "timeZone": "UTC"},
        **extra,
    }


async def _sync(world: World, delta_token: str | None = None) -> tuple[list[SyncPage], str]:
    """One whole round (full, or incremental from ``delta_token``) and its new delta token."""
    now = world.control.now()
    window = SyncWindow(start=now - timedelta(days=30), end=now + timedelta(days=60))
    pages: list[SyncPage] = []
    cursor: str | None = None
    while True:
        page = await world.provider.fetch_sync_page(
            world.access_token,
            PRIMARY,
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


async def test_created_event_is_found_by_its_binding(world: World) -> None:
    binding = str(uuid.uuid4())
    created = await world.provider.create_event(
        world.access_token, PRIMARY, _draft(world, binding), idempotency_key="outbox:1"
    )
    # Graph's create answer never includes the extended properties it stored (documented).
    assert created.binding_id is None
    await world.provider.create_event(
        world.access_token, PRIMARY, _draft(world, None, "theirs"), idempotency_key="outbox:2"
    )
    found = await world.provider.find_bound_event(world.access_token, PRIMARY, binding)
    assert found is not None
    assert (found.id, found.binding_id, found.etag) == (created.id, binding, created.etag)
    # Graph compares values case-insensitively; so does the client.
    upper = await world.provider.find_bound_event(world.access_token, PRIMARY, binding.upper())
    assert upper is not None and upper.id == created.id
    other = str(uuid.uuid4())
    assert await world.provider.find_bound_event(world.access_token, PRIMARY, other) is None


async def test_find_in_another_calendar_and_across_pages(world: World) -> None:
    team = world.control.add_calendar(UPN, "Team")["id"]
    for n in range(12):  # more than one default page (10) of events before ours
        world.control.create_event(UPN, _graph_body(f"filler {n}", _start(world, 1)), team)
    binding = str(uuid.uuid4())
    created = await world.provider.create_event(
        world.access_token, team, _draft(world, binding), idempotency_key="outbox:1"
    )
    found = await world.provider.find_bound_event(world.access_token, team, binding)
    assert found is not None and (found.id, found.calendar_id) == (created.id, team)
    assert await world.provider.find_bound_event(world.access_token, PRIMARY, binding) is None


async def test_deleted_event_is_neither_found_nor_got(world: World) -> None:
    binding = str(uuid.uuid4())
    created = await world.provider.create_event(
        world.access_token, PRIMARY, _draft(world, binding), idempotency_key="outbox:1"
    )
    got = await world.provider.get_event(world.access_token, PRIMARY, created.id)
    assert got is not None and got.binding_id == binding
    await world.provider.delete_event(world.access_token, PRIMARY, created.id)
    assert await world.provider.find_bound_event(world.access_token, PRIMARY, binding) is None
    assert await world.provider.get_event(world.access_token, PRIMARY, created.id) is None


async def test_get_event_etag_matches_sync_and_sync_carries_no_binding(world: World) -> None:
    _, token = await _sync(world)
    binding = str(uuid.uuid4())
    created = await world.provider.create_event(
        world.access_token, PRIMARY, _draft(world, binding), idempotency_key="outbox:1"
    )
    world.control.update_event(UPN, created.id, {"subject": "edited in Outlook"})
    got = await world.provider.get_event(world.access_token, PRIMARY, created.id)
    assert got is not None and got.etag != created.etag
    pages, _ = await _sync(world, token)
    synced = _upserts(pages)[created.id]
    assert (synced.etag, synced.title) == (got.etag, got.title)
    # Delta cannot $expand the property: sync recognises our events by id, not binding.
    assert (synced.binding_id, got.binding_id) == (None, binding)


async def test_update_sets_only_our_property(world: World) -> None:
    body = _graph_body(
        "theirs",
        _start(world, 2),
        singleValueExtendedProperties=[{"id": OTHER_PROPERTY, "value": "Green"}],
    )
    event_id = world.control.create_event(UPN, body)["id"]
    binding = str(uuid.uuid4())
    await world.provider.update_event(
        world.access_token, PRIMARY, event_id, _draft(world, binding, "adopted")
    )
    got = await world.provider.get_event(world.access_token, PRIMARY, event_id)
    assert got is not None and (got.title, got.binding_id) == ("adopted", binding)
    expand = f"singleValueExtendedProperties($filter=id eq '{OTHER_PROPERTY}')"
    status, other = await world.call(f"me/events/{event_id}", {"$expand": expand})
    assert status == 200
    assert other["singleValueExtendedProperties"] == [{"id": OTHER_PROPERTY, "value": "Green"}]
    await world.provider.update_event(
        world.access_token, PRIMARY, event_id, _draft(world, None, "renamed")
    )
    again = await world.provider.get_event(world.access_token, PRIMARY, event_id)
    assert again is not None and (again.title, again.binding_id) == ("renamed", binding)


async def test_get_of_a_series_master_we_wrote(world: World) -> None:
    binding = str(uuid.uuid4())
    recurrence = {
        "pattern": {"type": "daily", "interval": 1},
        "range": {"type": "numbered", "startDate": _start(world, 2).date().isoformat(),
                  "numberOfOccurrences": 3},
    }  # fmt: skip
    body = _graph_body(
        "series",
        _start(world, 2),
        recurrence=recurrence,
        singleValueExtendedProperties=[{"id": BINDING_PROPERTY_ID, "value": binding}],
    )
    master_id = world.control.create_event(UPN, body)["id"]
    found = await world.provider.find_bound_event(world.access_token, PRIMARY, binding)
    assert found is not None and found.id == master_id
    got = await world.provider.get_event(world.access_token, PRIMARY, master_id)
    assert got is not None and (got.binding_id, got.recurring_event_id) == (binding, None)


async def test_find_and_get_malformed_answers_are_transient(world: World) -> None:
    binding = str(uuid.uuid4())
    created = await world.provider.create_event(
        world.access_token, PRIMARY, _draft(world, binding), idempotency_key="outbox:1"
    )
    world.control.add_fault("malformed_json", method="GET", path="/v1.0/me/events")
    with pytest.raises(Transient, match=r"events\.list answered malformed"):
        await world.provider.find_bound_event(world.access_token, PRIMARY, binding)
    world.control.add_fault("malformed_json", method="GET", path="/v1.0/me/events/*")
    with pytest.raises(Transient, match=r"events\.get answered malformed"):
        await world.provider.get_event(world.access_token, PRIMARY, created.id)


# --- the emulator ------------------------------------------------------------------------------


async def test_emulator_returns_properties_only_when_expanded(world: World) -> None:
    binding = str(uuid.uuid4())
    body = _graph_body(
        "ours",
        _start(world, 2),
        singleValueExtendedProperties=[{"id": BINDING_PROPERTY_ID, "value": binding}],
    )
    created = world.control.create_event(UPN, body)
    assert "singleValueExtendedProperties" not in created
    status, plain = await world.call(f"me/events/{created['id']}")
    assert status == 200 and "singleValueExtendedProperties" not in plain
    status, listed = await world.call("me/events", {"$filter": binding_filter(binding)})
    assert status == 200
    assert [e["id"] for e in listed["value"]] == [created["id"]]
    assert "singleValueExtendedProperties" not in listed["value"][0]
    status, expanded = await world.call(
        "me/events", {"$filter": binding_filter(binding), "$expand": BINDING_EXPAND}
    )
    assert status == 200
    assert expanded["value"][0]["singleValueExtendedProperties"] == [
        {"id": BINDING_PROPERTY_ID, "value": binding}
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("$filter", "subject eq 'x'"),
        ("$filter", f"singleValueExtendedProperties/Any(ep: ep/id eq '{OTHER_PROPERTY}')"),
        ("$filter", "singleValueExtendedProperties/Any(ep: ep/id eq 'bogus' and ep/value eq 'x')"),
        ("$expand", "singleValueExtendedProperties"),
        ("$orderby", "start/dateTime"),
    ],
)
async def test_emulator_rejects_other_query_forms(world: World, name: str, value: str) -> None:
    status, error = await world.call("me/events", {name: value})
    assert status == 400
    assert set(error["error"]) == {"code", "message", "innerError"}


async def test_emulator_rejects_malformed_properties_and_delta_expand(world: World) -> None:
    for properties in ("x", [{"id": "not a property id", "value": "v"}], [{"id": OTHER_PROPERTY}]):
        body = _graph_body("bad", _start(world, 2), singleValueExtendedProperties=properties)
        status, error = await _post(world, "me/events", body)
        assert status == 400 and "code" in error["error"]
    params = {
        "startDateTime": "2030-01-01T00:00:00Z",
        "endDateTime": "2030-02-01T00:00:00Z",
        "$expand": BINDING_EXPAND,
    }
    status, error = await world.call("me/calendarView/delta", params)
    assert status == 400 and error["error"]["code"] == "ErrorInvalidUrlQuery"


async def _post(world: World, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {world.access_token}"}
    url = world.emulator.graph_base_url.rstrip("/") + "/" + path
    async with world.session.post(url, json=body, headers=headers) as response:
        return response.status, await response.json()

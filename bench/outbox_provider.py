"""The outbox benchmark's provider side: when the emulator stored each event, and the baseline.

Invariants:
- a write's time is the ``created`` the emulator stamped on the event when it stored it (its
  wall clock, UTC, millisecond resolution, truncated), read through the emulator's own control
  API (``GET /_control/calendars/<id>/events``), never through our client or our database;
- the emulator runs on the same machine as Postgres and the harness, so its wall clock and
  Postgres's commit timestamps are the same clock;
- the baseline writes through the same Google client to the same emulator, as users that no
  account follows (so no push channel and no inbound sync adds to it), at the same concurrency
  as the replica's drains (``IW_SYNC_CONCURRENCY``); their tokens are taken before the clock runs.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

import aiohttp

from bench.outbox_app import event_slot
from bench.sync_emulator import EmulatorLink
from outbox.rules import idempotency_key
from providers.google.client import GoogleCalendarProvider
from providers.models import EventDraft, EventTiming
from sandbox.emulators.google.api import PREFIX as API_PREFIX
from sandbox.emulators.google.control import PREFIX as CONTROL_PREFIX

TITLE_PREFIX = "outbox bench "
READ_CONCURRENCY = 16


def control_url(link: EmulatorLink) -> str:
    """The emulator's control API, next to its Calendar API."""
    base = link.api_base_url.removesuffix(API_PREFIX.lstrip("/"))
    return base + CONTROL_PREFIX.lstrip("/")


async def created_times(
    http: aiohttp.ClientSession, link: EmulatorLink, calendars: Iterable[str]
) -> dict[str, float]:
    """Title -> the emulator's ``created`` (epoch seconds) of every bench event in
    ``calendars``."""
    control = control_url(link)
    gate = asyncio.Semaphore(READ_CONCURRENCY)
    found: dict[str, float] = {}

    async def one(calendar_id: str) -> None:
        async with gate, http.get(f"{control}calendars/{calendar_id}/events") as response:
            response.raise_for_status()
            body = await response.json()
        for event in body["items"]:
            title = str(event.get("summary", ""))
            if title.startswith(TITLE_PREFIX) and event.get("status") != "cancelled":
                found[title] = datetime.fromisoformat(event["created"]).timestamp()

    await asyncio.gather(*(one(c) for c in sorted(set(calendars))))
    return found


async def _add_users(
    http: aiohttp.ClientSession, link: EmulatorLink, client_id: str, count: int
) -> list[str]:
    """``count`` emulator users that no account follows; their refresh tokens."""
    control, run = control_url(link), secrets.token_hex(3)
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(i: int) -> str:
        token = f"1//baseline-{secrets.token_urlsafe(18)}"
        body = {
            "email": f"baseline-{i}-{run}@example.com",
            "client_id": client_id,
            "refresh_token": token,
        }
        async with gate, http.post(f"{control}users", json=body) as response:
            response.raise_for_status()
        return token

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def direct_creates(
    http: aiohttp.ClientSession,
    link: EmulatorLink,
    client: GoogleCalendarProvider,
    client_id: str,
    *,
    users: int,
    count: int,
    concurrency: int,
) -> float:
    """Seconds for ``count`` events.insert calls round-robin over ``users`` fresh users,
    ``concurrency`` at a time, each shaped as the outbox writer's creates."""
    refresh_tokens = await _add_users(http, link, client_id, users)
    gate = asyncio.Semaphore(concurrency)

    async def token_of(refresh_token: str) -> str:
        async with gate:
            return (await client.refresh_access_token(refresh_token)).access_token

    tokens: Sequence[str] = await asyncio.gather(*(token_of(t) for t in refresh_tokens))
    queue = list(range(count))
    queue.reverse()

    async def worker() -> None:
        while queue:
            i = queue.pop()
            start, end = event_slot(i)
            timing = EventTiming(all_day=False, start_at=start, end_at=end)
            binding = uuid.uuid4()
            draft = EventDraft(f"{TITLE_PREFIX}D{i}", timing, binding_id=str(binding))
            await client.create_event(
                tokens[i % len(tokens)],
                "primary",
                draft,
                idempotency_key=idempotency_key(binding, 0),
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return time.perf_counter() - started

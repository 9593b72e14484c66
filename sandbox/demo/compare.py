"""The final comparison: does Postgres hold exactly what each emulator lists, account by account?

Invariants:
- the emulator side is a fresh full listing through the real client, with the account's stored
  access token, of every followed calendar over its stored window: never the sync path's state;
- events are compared as (calendar id, event id, title) sets of live events, so a missing, an
  extra, a stale title or an undeleted event is a difference; cancelled ones are left out on
  both sides;
- a listing that fails (a left-over fault) is retried a few times; an account that still cannot
  be listed counts as not matching, with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio

from providers.errors import ProviderError
from providers.interface import CalendarProvider
from providers.models import SyncPage, SyncWindow
from sandbox.demo.seeding import DemoAccount
from store.calendars import list_calendar_states
from store.credentials import load_credentials
from store.crypto import Keyring
from store.db import PgPool
from store.events import export_events

EventKey = tuple[str, str, str | None]  # (calendar id, event id, title)
_ATTEMPTS = 5
CONCURRENCY = 4  # listings at once: overlaps Postgres with the emulators' CPU


@dataclass(frozen=True, slots=True)
class Comparison:
    """How many accounts matched, and for each other one what differs."""

    matched: int
    differences: tuple[str, ...]


async def provider_view(
    pool: PgPool, keyring: Keyring, client: CalendarProvider, account_id: uuid.UUID
) -> set[EventKey]:
    """A fresh full listing of every followed calendar over its stored window."""
    creds = await load_credentials(pool, keyring, account_id)
    if creds is None or creds.access_token is None:
        raise LookupError("no access token stored (the account never synced)")
    view: set[EventKey] = set()
    for state in await list_calendar_states(pool, account_id, include_removed=False):
        if not state.sync_enabled or state.window_start is None or state.window_end is None:
            continue
        window = SyncWindow(state.window_start, state.window_end)
        listed: dict[str, EventKey] = {}
        cursor: str | None = None
        while True:
            page = await _fetch(client, creds.access_token, state.id, window, cursor)
            for event in page.upserts:
                if event.status.value == "cancelled":
                    listed.pop(event.id, None)
                else:
                    listed[event.id] = (state.id, event.id, event.title)
            for removal in page.removals:
                listed.pop(removal.id, None)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        view |= set(listed.values())
    return view


async def _fetch(
    client: CalendarProvider, token: str, calendar_id: str, window: SyncWindow, cursor: str | None
) -> SyncPage:
    for attempt in range(_ATTEMPTS):
        try:
            return await client.fetch_sync_page(token, calendar_id, window=window, cursor=cursor)
        except ProviderError:
            if attempt == _ATTEMPTS - 1:
                raise
            await anyio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


async def compare(
    pool: PgPool,
    keyring: Keyring,
    clients: Mapping[str, CalendarProvider],
    accounts: Sequence[DemoAccount],
) -> Comparison:
    """Compare every demo account's stored events with its emulator's listing."""
    found: dict[uuid.UUID, str | None] = {}  # account -> what differs, None: matched
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def one(account: DemoAccount) -> None:
        async with limiter:
            found[account.id] = await _difference(pool, keyring, clients, account)

    async with anyio.create_task_group() as group:
        for account in accounts:
            group.start_soon(one, account, name=f"demo.compare[{account.id}]")
    differences = tuple(d for a in accounts if (d := found[a.id]) is not None)
    return Comparison(len(accounts) - len(differences), differences)


async def _difference(
    pool: PgPool,
    keyring: Keyring,
    clients: Mapping[str, CalendarProvider],
    account: DemoAccount,
) -> str | None:
    """What differs for one account, or None when it matches."""
    rows = await export_events(pool, account.id)
    stored = {(r["calendar_id"], r["id"], r["title"]) for r in rows if r["status"] != "cancelled"}
    try:
        listed = await provider_view(pool, keyring, clients[account.provider], account.id)
    except (ProviderError, LookupError) as exc:
        return f"{account.provider} account {account.id}: cannot list: {exc}"
    if stored == listed:
        return None
    missing, extra = sorted(listed - stored, key=str), sorted(stored - listed, key=str)
    return (
        f"{account.provider} account {account.id}: missing in database {_few(missing)},"
        f" only in database {_few(extra)}"
    )


def _few(keys: list[EventKey]) -> str:
    more = " ..." if len(keys) > 5 else ""
    return f"{keys[:5]}{more} ({len(keys)})"

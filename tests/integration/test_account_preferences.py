"""Per-account sync preferences in a running account actor: auto-sync off (no sync unless asked,
notifications acknowledged), the poll frequency, the sync window, and a change applied live
(the ``preferences`` post the admin API's stream entry becomes). Real Postgres and emulators."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from actors.account.messages import Changed, PreferencesChanged, SyncNow
from actors.account.policy import Cadence, cadence_of
from cluster.inbox import InboxEntry
from store.calendars import get_calendar_state
from store.preferences import Preferences, save_preferences
from store.vocabulary import Provider
from tests.integration import test_account_actor
from tests.integration.test_account_actor import SHARD, World, wait_for

world = test_account_actor.world  # the fixture, shared (pytest finds it by this name)

_numbers = itertools.count(1)


def _entry(account_id: str, calendar_id: str, kind: str) -> InboxEntry:
    return InboxEntry(SHARD, f"{next(_numbers)}-0", account_id, calendar_id, kind)


async def _window_days(w: World, account_id: str, calendar_id: str) -> tuple[float, float]:
    """The stored window of the calendar, as days before and after now."""
    state = await get_calendar_state(w.pool, uuid.UUID(account_id), calendar_id)
    assert state is not None and state.window_start is not None and state.window_end is not None
    now = datetime.now(UTC)
    return (
        round((now - state.window_start) / timedelta(days=1), 1),
        round((state.window_end - now) / timedelta(days=1), 1),
    )


def test_cadence_defaults_to_the_replica_and_follows_stored_preferences() -> None:
    def cadence(preferences: Preferences | None) -> Cadence:
        return cadence_of(
            preferences,
            poll_every_s=900.0,
            window_back=timedelta(days=30),
            window_ahead=timedelta(days=365),
        )

    assert cadence(None) == Cadence(True, 900.0, timedelta(days=30), timedelta(days=365))
    assert cadence(Preferences(False, 5, 2, None)) == Cadence(
        False, 300.0, timedelta(days=2), timedelta(days=365)
    )


@pytest.mark.parametrize("provider", ["google", "microsoft"])
async def test_the_stored_window_and_frequency_shape_the_first_sync(
    world: World, provider: Provider
) -> None:
    account_id, calendar = await world.add_account(provider)
    await save_preferences(world.pool, uuid.UUID(account_id), Preferences(True, 5, 2, 10))
    cell = await world.start(account_id)
    await world.wait_synced(account_id, calendar)
    assert await _window_days(world, account_id, calendar) == (2.0, 10.0)

    async def polled_later() -> bool:
        return bool(cell.deadlines and "poll" in cell.deadlines)

    await wait_for(polled_later, "the next poll armed")
    assert cell.deadlines is not None
    in_s = cell.deadlines["poll"] - asyncio.get_running_loop().time()
    assert 300 * 0.75 < in_s <= 300 * 1.2  # five minutes, jittered by up to a fifth


async def test_auto_sync_off_syncs_only_when_asked(world: World) -> None:
    account_id, calendar = await world.add_account("google")
    await save_preferences(world.pool, uuid.UUID(account_id), Preferences(False, 15))
    cell = await world.start(account_id)
    # A notification is acknowledged (nothing to redeliver) without a sync.
    entry = _entry(account_id, calendar, "changed")
    world.supervisor.post_nowait(account_id, Changed(calendar), entry)

    async def acked() -> bool:
        return any(entry.ref in refs for refs, _ in world.acks)

    await wait_for(acked, "the notification acknowledged")
    assert not await world.synced(account_id, calendar)
    assert cell.deadlines is None or "poll" not in cell.deadlines
    # Asked (the admin API's sync-now), it syncs.
    world.supervisor.post_nowait(account_id, SyncNow())
    await world.wait_synced(account_id, calendar)


async def test_changed_preferences_apply_while_running(world: World) -> None:
    account_id, calendar = await world.add_account("microsoft")
    await world.start(account_id)
    await world.wait_synced(account_id, calendar)
    assert await _window_days(world, account_id, calendar) == (30.0, 365.0)
    await save_preferences(world.pool, uuid.UUID(account_id), Preferences(True, 15, 7, 60))
    entry = _entry(account_id, "", "preferences")
    world.supervisor.post_nowait(account_id, PreferencesChanged(), entry)

    async def rebased() -> bool:
        return await _window_days(world, account_id, calendar) == (7.0, 60.0)

    await wait_for(rebased, "a full round over the new window")
    await world.wait_synced(account_id, calendar)
    assert any(entry.ref in refs for refs, _ in world.acks)

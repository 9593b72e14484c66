"""Which calendars of an account sync: what the operator and the host application see and
choose (the CLI and the admin API share it).

Invariants:
- a choice is recorded here and nothing else is written: the account's owning actor acts on
  it at its next sync of every calendar, which this asks for through the shard's stream (a
  deselected calendar's events and pending writes go, its channel closes; a selected one syncs
  in full), so every event write stays fenced by the owner's epoch;
- ``selected`` None returns a calendar to the default rule (``store.calendars``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from actors.account.messages import SyncNow
from cluster.streams import append, request_entry
from operations.accounts import OperatorError, iso_time, require_account
from store.calendars import (
    CalendarState,
    choose_selection,
    list_calendar_states,
    selected_by_default,
)
from store.db import PgPool


def calendar_json(state: CalendarState) -> dict[str, Any]:
    """A calendar as the CLI and the API show it."""
    return {
        "id": state.id,
        "name": state.name,
        "primary": state.is_primary,
        "access_role": state.access_role,
        "allowed": state.sync_enabled,  # the provider lets us sync it
        "selected": state.is_selected,  # the user syncs it (their choice, else the default)
        "choice": state.selected,  # the user's choice; null: the default rule
        "default": selected_by_default(state.is_primary, state.access_role),
        "watchable": state.push_refused_at is None,
        "removed_at": iso_time(state.removed_at),
    }


async def calendars_json(pool: PgPool, account_id: UUID) -> list[dict[str, Any]]:
    """The account's listed calendars, by id."""
    await require_account(pool, account_id)
    states = await list_calendar_states(pool, account_id, include_removed=False)
    return [calendar_json(state) for state in states]


async def choose_calendar(
    pool: PgPool,
    redis: Redis,
    account_id: UUID,
    calendar_id: str,
    selected: bool | None,
    *,
    now: datetime,
) -> dict[str, Any]:
    """Record the choice and ask the owning actor to act on it; the calendar after."""
    account = await require_account(pool, account_id)
    state = await choose_selection(pool, account_id, calendar_id, selected)
    if state is None or state.removed_at is not None:
        raise OperatorError(f"account {account_id} has no calendar {calendar_id!r}")
    entry = request_entry(account.shard, account.provider, account.id, SyncNow.stream_kind, now)
    await append(redis, [entry])
    return calendar_json(state)

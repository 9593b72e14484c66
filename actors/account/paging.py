"""One calendar's sync: pages from the provider to its delta token, each page committed with
its continuation.

Invariants:
- a page and the continuation that follows it commit in one fenced transaction, so a crash
  resumes from the last committed page and re-applying a page changes nothing;
- a full round (asked for, or the calendar's first) starts with ``start_full_round`` over the
  window the cadence asks now (mark-and-sweep: the round's last page deletes what it did not
  see); an incremental page reuses the window stored with the calendar;
- a page whose item Postgres refuses is committed again item by item, that item set aside
  (``store.events.apply_sync_page``), so one bad item never stalls the calendar;
- an expired delta token or cursor (``SyncStateExpired``) starts one full round; a second
  expiry in the same sync raises;
- nothing here touches the actor: the caller learns whether the calendar reached its delta
  token and does its own bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from actors.account.calls import AccountCalls
from actors.account.policy import sync_window
from providers.errors import SyncStateExpired
from providers.models import SyncPage, SyncWindow
from store.calendars import CalendarState, get_calendar_state, start_full_round
from store.db import PgPoolConnection
from store.events import ITEM_REFUSALS, apply_sync_page


@dataclass(frozen=True, slots=True)
class CalendarPager:
    """What paging one account's calendars needs: its calls, fencing, window and clock."""

    calls: AccountCalls
    account_id: UUID
    fenced: Callable[[], AbstractAsyncContextManager[PgPoolConnection]]
    window_back: timedelta
    window_ahead: timedelta
    clock: Callable[[], datetime]

    async def sync(self, state: CalendarState, *, full: bool) -> bool:
        """Page ``state``'s calendar to its delta token (a full round if ``full`` or first);
        True when it got there, False when the calendar vanished meanwhile."""
        if full or (state.delta_token is None and state.sync_cursor is None):
            state = await self._start_round(state.id)
        expired_once = False
        while True:
            try:
                page = await self._fetch_page(state)
            except SyncStateExpired:
                if expired_once:
                    raise
                expired_once = True
                state = await self._start_round(state.id)
                continue
            done = page.delta_token is not None
            try:
                after = await self._apply(page, state.id, done, one_by_one=False)
            except ITEM_REFUSALS:  # an item Postgres refuses: again, item by item
                after = await self._apply(page, state.id, done, one_by_one=True)
            if done:
                return True
            if after is None:
                return False
            state = after

    async def _apply(
        self, page: SyncPage, calendar_id: str, done: bool, *, one_by_one: bool
    ) -> CalendarState | None:
        """Commit ``page``; the calendar's state after it when there is a next page."""
        async with self.fenced() as conn:
            await apply_sync_page(conn, self.account_id, calendar_id, page, one_by_one=one_by_one)
            # The stored continuation is read back only when there is one to follow.
            return None if done else await get_calendar_state(conn, self.account_id, calendar_id)

    def window_now(self) -> SyncWindow:
        """The window a full round started now covers."""
        return sync_window(self.clock(), self.window_back, self.window_ahead)

    async def _start_round(self, calendar_id: str) -> CalendarState:
        """Begin a mark-and-sweep full round over a window computed now."""
        async with self.fenced() as conn:
            await start_full_round(conn, self.account_id, calendar_id, self.window_now())
            state = await get_calendar_state(conn, self.account_id, calendar_id)
        if state is None:
            raise LookupError(f"calendar {calendar_id!r} vanished")
        return state

    async def _fetch_page(self, state: CalendarState) -> SyncPage:
        """The next page: continue the cursor, else increment from the token, else full."""
        if state.window_start is None or state.window_end is None:
            window = self.window_now()
        else:
            window = SyncWindow(state.window_start, state.window_end)
        cursor = state.sync_cursor
        delta_token = None if cursor is not None else state.delta_token
        provider = self.calls.provider
        return await self.calls.call(
            lambda token: provider.fetch_sync_page(
                token, state.id, window=window, delta_token=delta_token, cursor=cursor
            )
        )

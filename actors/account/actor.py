"""The calendar account actor's shell: performs what its core (``actors.account.core``) decides.

The core holds every decision (what a message, a deadline or an outcome leads to); this module
reads storage, calls the provider, commits, and tells the core how each step ended. It never
branches on a message's kind or a provider error: ``actors.account.failures.outcome_of`` is
the one mapping from what a step raised to what the core hears.

Invariants:
- state is rebuilt from storage on every start (``Load``): the account row, its credentials,
  preferences and channels; nothing survives an incarnation but what was committed;
- every write runs in ``fenced_transaction`` with the epoch this replica holds for the
  account's shard; ``StaleEpoch`` stops the actor normally (another replica owns it now);
- each sync page commits together with its continuation, so a crash resumes from the last page,
  and an expired delta token starts a mark-and-sweep full round, never a wipe
  (``actors.account.paging``);
- provider calls go through ``AccountCalls`` (fresh token, one refresh after a 401, the shared
  request budget); a rotated refresh token is stored with the new access token;
- a step marked ``slot`` runs inside the replica's sync slots;
- an incarnation ending in an error (a step's ``Raise``, a failed acknowledgement, a
  cancellation) first posts its unacknowledged entries back as ``SyncNow``, so the next
  incarnation syncs and acknowledges them (the inbox delivers an entry only once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TypeVar
from uuid import UUID

import structlog

from actors.account.calls import AccountCalls
from actors.account.commands import (
    Acknowledge,
    Arm,
    Cancel,
    ChannelClosed,
    ChannelOpened,
    ChannelRefused,
    CheckFollowed,
    CloseChannel,
    Command,
    Done,
    Drained,
    DrainOutbox,
    Followed,
    Inherit,
    Inherited,
    Load,
    Loaded,
    NotRunnable,
    OpenChannel,
    Outcome,
    PostSelf,
    PreferencesLoaded,
    ProviderFailed,
    Raise,
    Rebase,
    RefreshToken,
    ReloadPreferences,
    ResyncAll,
    ShowStatus,
    Step,
    Stop,
    SyncAll,
    SyncCalendar,
    Synced,
)
from actors.account.context import AccountContext
from actors.account.core import AccountCore, CoreConfig
from actors.account.failures import Parked, outcome_of
from actors.account.messages import AccountMessage, SyncNow
from actors.account.outbound import OutboundWriter
from actors.account.paging import CalendarPager
from actors.account.policy import (
    Cadence,
    cadence_of,
    rebase_at,
    rebase_due,
    renew_at,
    seconds_until,
)
from actors.account.push import PushScope, close_channel, open_channel, replace_channel
from actors.actor import Actor
from actors.errors import ActorUnavailable
from cluster.inbox import InboxEntry
from metrics import events as metrics
from providers.errors import PushUnsupported
from providers.interface import CalendarProvider
from store.accounts import Account, get_account, set_status
from store.calendars import (
    CalendarState,
    forget_calendar_sync,
    get_calendar_state,
    list_calendar_states,
    mark_push_refused,
    reconcile_calendars,
    unwatchable_calendars,
)
from store.change_feed import record_changes
from store.channels import ChannelRow, list_channels
from store.credentials import load_credentials
from store.db import PgPoolConnection
from store.events import binding_aliases
from store.fencing import fenced_transaction
from store.outbox import dead_letter_calendar
from store.preferences import Preferences, load_preferences

T = TypeVar("T")
log = structlog.get_logger("actors.account")

Ref = tuple[int, str]


CALENDAR_DESELECTED = "calendar deselected"  # the last_error of writes given up for it


def syncable(state: CalendarState) -> bool:
    """Whether a stored calendar is followed (the provider allows it, the user selected it,
    and it is still listed)."""
    return state.sync_enabled and state.is_selected and state.removed_at is None


def deselected_with_state(state: CalendarState) -> bool:
    """A listed calendar the user deselected that still holds synced state to drop."""
    return (
        state.removed_at is None
        and not state.is_selected
        and (state.window_start is not None or state.delta_token is not None)
    )


def _unlisted(synced: Synced) -> Synced:
    """A sync that did not list the provider's calendars names no followed set."""
    return replace(synced, followed=None)


def entries_of(items: Sequence[object]) -> list[InboxEntry]:
    """The inbox entries among a post's items (a post may carry none)."""
    return [item for item in items if isinstance(item, InboxEntry)]


def core_config(ctx: AccountContext) -> CoreConfig:
    """The replica's knobs, as the core reads them."""
    return CoreConfig(
        default_cadence=cadence_of(
            None,
            poll_every_s=ctx.poll_every_s,
            window_back=ctx.window_back,
            window_ahead=ctx.window_ahead,
        ),
        keepalive_s=ctx.token_keepalive.total_seconds(),
        poll_jitter=ctx.poll_jitter,
        retry_initial_s=ctx.retry_initial_s,
        retry_max_s=ctx.retry_max_s,
        settle_quiet_s=ctx.settle_quiet_s,
        settle_max_s=ctx.settle_max_s,
        unwatched_poll_s=ctx.unwatched_poll_s,
    )


class AccountActor(Actor[object]):
    """One connected calendar account; its posts are ``actors.account.messages``."""

    __slots__ = ("account", "calls", "channels", "core", "ctx", "epoch", "error", "outbound")

    def __init__(self, ctx: AccountContext, config: CoreConfig | None = None) -> None:
        self.ctx = ctx
        self.core = AccountCore(config or core_config(ctx), ctx.rng)
        self.account: Account | None = None
        self.epoch: int | None = None
        self.calls: AccountCalls | None = None  # built once the credentials are loaded
        self.outbound: OutboundWriter | None = None  # with ``calls``
        self.channels: dict[str, ChannelRow] = {}  # by calendar id, as stored
        self.error: Exception | None = None  # what the last failed step raised

    @property
    def parked(self) -> bool:
        """Whether the account waits for something outside the actor (consent, status)."""
        return self.core.state.parked

    # -- hooks ------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        await self._perform(self.core.start())

    async def on_posts(self, key: Hashable, items: list[object]) -> None:
        message: AccountMessage = key  # type: ignore[assignment]  # only messages are posted
        await self._perform(self.core.on_post(message, entries_of(items), self._now()))

    async def on_deadline(self, name: str) -> None:
        await self._perform(self.core.on_deadline(name, self._now()))

    # -- the loop: effects at once, steps answered by their outcome ----------------------------

    async def _perform(self, commands: list[Command]) -> None:
        queue = deque(commands)
        try:
            while queue:
                command = queue.popleft()
                if isinstance(command, Raise):
                    error, self.error = self.error, None
                    assert error is not None
                    raise error
                if isinstance(command, Acknowledge):
                    try:
                        await self.ctx.acknowledge([entry.ref for entry in command.entries])
                    except BaseException:
                        self._post_back(command.entries)
                        raise
                elif isinstance(command, Arm | Cancel | ShowStatus | PostSelf | Stop):
                    self._effect(command)
                else:
                    outcome = await self._step(command)
                    queue.extend(self.core.step_done(outcome, self._now()))
        except BaseException:
            for effect in self.core.hand_back():
                self._effect(effect)
            raise

    def _effect(self, command: Arm | Cancel | ShowStatus | PostSelf | Stop) -> None:
        if isinstance(command, Arm):
            self.set_timer(command.name, command.delay_s)
        elif isinstance(command, Cancel):
            self.cancel_deadline(command.name)
        elif isinstance(command, ShowStatus):
            self.set_status(command.text)
        elif isinstance(command, PostSelf):
            with contextlib.suppress(ActorUnavailable):  # stopping: the next start re-reads
                self.post_self_nowait(command.message, command.entry)
        else:
            self.stop_nowait()
            if command.fenced and self.account is not None:
                self.ctx.on_stale_epoch(self.account.shard)

    def _post_back(self, entries: Sequence[InboxEntry]) -> None:
        for entry in entries:
            with contextlib.suppress(ActorUnavailable):
                self.post_self_nowait(SyncNow(), entry)

    async def _step(self, step: Step) -> Outcome:
        """Perform one step; its outcome (a failure through ``outcome_of``)."""
        slots = self.ctx.sync_slots if step.slot else None
        try:
            if slots is None:
                return await self._do(step)
            async with slots:
                return await self._do(step)
        except Exception as error:
            outcome = outcome_of(error)
            self.error = error
            if isinstance(outcome, ProviderFailed):
                log.info("step deferred", step=type(step).__name__, error=str(error))
            return outcome

    async def _do(self, step: Step) -> Outcome:
        if isinstance(step, Load):
            return await self._load()
        if isinstance(step, SyncAll):
            return await self._sync_all(reconcile=step.reconcile)
        if isinstance(step, SyncCalendar):
            return await self._sync_one(step.calendar_id, full=step.full)
        if isinstance(step, Rebase):
            return _unlisted(await self._sync_each(self._rebase_due))
        if isinstance(step, ResyncAll):
            return _unlisted(await self._sync_each(lambda _s, _now: True))
        if isinstance(step, RefreshToken):
            await self._calls().refresh()
            return Done()
        if isinstance(step, Inherit):
            return Inherited(self.outbound is not None and await self.outbound.inherit())
        if isinstance(step, DrainOutbox):
            return await self._drain()
        if isinstance(step, OpenChannel):
            return await self._open(step.calendar_id, recreate=step.recreate)
        if isinstance(step, CloseChannel):
            return await self._close(step.calendar_id)
        if isinstance(step, CheckFollowed):
            state = await get_calendar_state(self.ctx.pool, self._account_id(), step.calendar_id)
            return Followed(state is not None and syncable(state))
        if isinstance(step, ReloadPreferences):
            return PreferencesLoaded(await self._reload_preferences())
        async with self._fenced() as conn:  # RecordRevoked
            await set_status(conn, self._account_id(), "needs_reauth", last_error=step.reason)
        return Done()

    # -- steps ------------------------------------------------------------------------------------

    async def _load(self) -> Outcome:
        """Rebuild state from storage."""
        ctx = self.ctx
        preloaded = ctx.preloaded.pop(self.id, None)
        account = (
            preloaded.account
            if preloaded is not None
            else await get_account(ctx.pool, UUID(self.id))
        )
        if account is None:
            raise LookupError(f"account {self.id} does not exist")
        self.account = account
        self._cell.describe(provider=account.provider)  # for the monitor, whatever follows
        self.epoch = ctx.epochs.get(account.shard)
        if self.epoch is None:
            return NotRunnable("shard not held", stop=True)
        if account.status != "active":
            return NotRunnable(f"parked ({account.status})", stop=False)
        creds = (
            preloaded.credentials
            if preloaded is not None
            else await load_credentials(ctx.pool, ctx.keyring, account.id)
        )
        if creds is None:
            raise LookupError(f"account {self.id} has no credentials")
        stored = (
            preloaded.preferences
            if preloaded is not None
            else (await load_preferences(ctx.pool, [account.id])).get(account.id)
        )
        cadence = self._cadence_of(stored)
        self.calls = AccountCalls(ctx, account, self.epoch, creds)
        self.outbound = OutboundWriter(
            self.calls,
            max_attempts=ctx.outbox_max_attempts,
            batch=ctx.outbox_batch,
            retry_initial_s=ctx.outbox_retry_initial_s,
            retry_max_s=ctx.outbox_retry_max_s,
        )
        rows = (
            preloaded.channels
            if preloaded is not None
            else await list_channels(ctx.pool, account.id)
        )
        self.channels = {row.calendar_id: row for row in rows}
        now = ctx.clock()
        renewals = []
        for row in self.channels.values():
            at = renew_at(row.created_at or now, row.expires_at)
            renewals.append((row.calendar_id, None if at is None else seconds_until(at, now)))
        unwatchable = (
            preloaded.unwatchable
            if preloaded is not None
            else (await unwatchable_calendars(ctx.pool, [account.id])).get(account.id, ())
        )
        return Loaded(
            capabilities=ctx.capabilities_of(account.provider),
            push_enabled=ctx.push_address(account.provider) is not None,
            cadence=cadence,
            channels=tuple(renewals),
            unwatchable=unwatchable,
        )

    async def _sync_all(self, *, reconcile: bool) -> Synced:
        """Incremental (or resumed, or first full) sync of every followed calendar; a calendar
        whose window must move gets a full round."""
        if reconcile:
            calendars = await self._call(lambda token: self._provider().list_calendars(token))
            async with self._fenced() as conn:
                await reconcile_calendars(conn, self._account_id(), calendars)
        synced = await self._sync_each(self._rebase_due)
        return replace(synced, listed=True) if reconcile else _unlisted(synced)

    async def _sync_one(self, calendar_id: str, *, full: bool) -> Synced:
        state = await get_calendar_state(self.ctx.pool, self._account_id(), calendar_id)
        if state is None:
            return await self._sync_all(reconcile=True)  # a calendar we have not listed yet
        if not syncable(state) or not await self._sync_calendar(state, full=full):
            return Synced()
        return Synced(((calendar_id, self._now()),))

    async def _sync_each(self, full: Callable[[CalendarState, datetime], bool]) -> Synced:
        """Sync every followed calendar (full where ``full(state, now)``), then say when the
        earliest window must move; ``followed`` names every followed calendar."""
        now = self.ctx.clock()
        synced: list[tuple[str, float]] = []
        followed: list[str] = []
        for state in await list_calendar_states(
            self.ctx.pool, self._account_id(), include_removed=False
        ):
            if deselected_with_state(state):
                await self._forget(state)
            if not syncable(state):
                continue
            followed.append(state.id)
            if await self._sync_calendar(state, full=full(state, now)):
                synced.append((state.id, self._now()))
        return Synced(
            tuple(synced), followed=tuple(followed), rebase_in_s=await self._rebase_in_s()
        )

    async def _forget(self, state: CalendarState) -> None:
        """The user deselected the calendar: its events go (each a ``deleted`` change), its
        sync state too, and its pending writes are given up (its channel closes as for any
        calendar no longer followed)."""
        aliases = binding_aliases(state)
        async with self._fenced() as conn:
            removed = await forget_calendar_sync(conn, self._account_id(), state.id)
            await record_changes(
                conn,
                self._account_id(),
                state.id,
                [(event_id, "deleted", None, "calendar_deselected") for event_id in removed],
                origin="provider",
            )
            given_up = await dead_letter_calendar(
                conn, self._account_id(), aliases, error=CALENDAR_DESELECTED
            )
        log.info("calendar deselected", calendar=state.id, events=len(removed), writes=given_up)

    async def _sync_calendar(self, state: CalendarState, *, full: bool) -> bool:
        """Page one calendar to its delta token (``actors.account.paging``), timed for the sync
        duration metric; False when it vanished meanwhile."""
        self.set_status(f"syncing {state.id}")
        with metrics.timed_sync(self._provider().name):
            if self.outbound is not None:
                # A write whose answer was lost may have applied: adopt it first, so this sync
                # sees the event as our echo instead of reporting it as the user's change.
                await self.outbound.settle_uncertain()
            if not await self._pager().sync(state, full=full):
                return False
        self._cell.describe(last_sync_at=time.time())
        return True

    async def _drain(self) -> Outcome:
        if self.outbound is None:
            return Done()
        next_at = await self.outbound.drain()
        return Drained(None if next_at is None else seconds_until(next_at, self.ctx.clock()))

    async def _open(self, calendar_id: str, *, recreate: bool) -> Outcome:
        """Open, renew or recreate the channel of ``calendar_id``."""
        account, ctx = self.account, self.ctx
        assert account is not None and self.epoch is not None
        address = ctx.push_address(account.provider)
        assert address is not None  # the core opens channels only with a push address
        scope = PushScope(ctx, account, self.epoch, address, self._call)
        row = self.channels.get(calendar_id)
        issued_at = ctx.clock()
        try:
            if row is None or recreate:
                row = await open_channel(scope, calendar_id, replacing=row)
            else:
                row = await replace_channel(scope, row)
        except PushUnsupported:
            # For good (a holiday or birthday calendar, someone else's): polled from now on.
            async with self._fenced() as conn:
                await mark_push_refused(conn, account.id, calendar_id)
            log.info("calendar cannot be watched: polled", calendar=calendar_id)
            return ChannelRefused()
        self.channels[calendar_id] = row
        at = renew_at(issued_at, row.expires_at)
        return ChannelOpened(None if at is None else seconds_until(at, ctx.clock()))

    async def _close(self, calendar_id: str) -> Outcome:
        """Stop the channel of a calendar no longer followed, then delete its row."""
        row, account = self.channels.get(calendar_id), self.account
        if row is None or account is None or self.epoch is None:
            return ChannelClosed()
        address = self.ctx.push_address(account.provider) or ""
        await close_channel(PushScope(self.ctx, account, self.epoch, address, self._call), row)
        del self.channels[calendar_id]
        log.info("channel stopped", calendar=calendar_id)
        return ChannelClosed()

    async def _reload_preferences(self) -> Cadence:
        stored = (await load_preferences(self.ctx.pool, [self._account_id()])).get(
            self._account_id()
        )
        cadence = self._cadence_of(stored)
        log.info("sync preferences applied", auto_sync=cadence.auto_sync)
        return cadence

    async def _rebase_in_s(self) -> float | None:
        """Seconds until the earliest followed calendar's window must move (None: no window)."""
        ctx = self.ctx
        states = await list_calendar_states(ctx.pool, self._account_id(), include_removed=False)
        moments = [
            at for s in states if syncable(s) and (at := rebase_at(*self._window(s))) is not None
        ]
        return seconds_until(min(moments), ctx.clock()) if moments else None

    # -- helpers ----------------------------------------------------------------------------------

    def _rebase_due(self, state: CalendarState, now: datetime) -> bool:
        return rebase_due(*self._window(state), now)

    def _window(self, state: CalendarState) -> tuple[datetime | None, timedelta, timedelta]:
        return state.window_start, self.core.state.cadence.window_back, self.ctx.rebase_every

    def _cadence_of(self, preferences: Preferences | None) -> Cadence:
        ctx = self.ctx
        return cadence_of(
            preferences,
            poll_every_s=ctx.poll_every_s,
            window_back=ctx.window_back,
            window_ahead=ctx.window_ahead,
        )

    async def _call(self, request: Callable[[str], Awaitable[T]]) -> T:
        """Call the provider with a fresh enough token (``AccountCalls``)."""
        return await self._calls().call(request)

    def _pager(self) -> CalendarPager:
        cadence = self.core.state.cadence
        return CalendarPager(
            self._calls(),
            self._account_id(),
            self._fenced,
            cadence.window_back,
            cadence.window_ahead,
            self.ctx.clock,
        )

    def _fenced(self) -> AbstractAsyncContextManager[PgPoolConnection]:
        assert self.account is not None and self.epoch is not None
        return fenced_transaction(self.ctx.pool, self.account.shard, self.epoch)

    def _provider(self) -> CalendarProvider:
        assert self.account is not None
        return self.ctx.providers[self.account.provider]

    def _calls(self) -> AccountCalls:
        if self.calls is None:
            raise Parked("no credentials loaded")
        return self.calls

    def _account_id(self) -> uuid.UUID:
        assert self.account is not None
        return self.account.id

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

"""The account actor: keeps one account's calendars in Postgres equal to its provider's.

Invariants:
- state is rebuilt from storage on every start: the account row, its credentials and each
  calendar's cursor / delta token; nothing survives an incarnation but what was committed;
- every write runs in ``fenced_transaction`` with the epoch this replica holds for the
  account's shard; ``StaleEpoch`` stops the actor normally (another replica owns it now);
- each sync page commits together with its continuation, so a crash resumes from the last page,
  and an expired delta token starts a mark-and-sweep full round, never a wipe
  (``actors.account.paging``);
- inbox entries are acknowledged only after the sync covering them committed;
- provider calls go through ``AccountCalls`` (fresh token, one refresh after a 401, the shared
  request budget); a rotated refresh token is stored with the new access token;
- revoked consent parks the actor (status ``needs_reauth``), it never crash-loops; throttling
  and transient errors re-arm the poll deadline; anything else raises to the supervisor;
- push channels (``actors.account.push``) open after a calendar's first completed sync and are
  renewed by a ``push:<calendar_id>`` deadline at half their life; a failed push step re-arms
  that deadline and never fails a sync; stopping or parking leaves channels in place;
- outbound writes (``actors.account.outbound``) drain on an ``("outbox", None)`` post, on the
  ``outbox`` deadline armed for the next due item, and after each polled sync (the first one
  included); they share a sync's guards, and a parked actor does not drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import structlog

from actors.account.calls import AccountCalls
from actors.account.context import AccountContext
from actors.account.outbound import OutboundWriter
from actors.account.paging import CalendarPager
from actors.account.policy import (
    Cadence,
    cadence_of,
    notified_soon_after_sync,
    poll_delay_s,
    push_retry_delay_s,
    rebase_at,
    rebase_due,
    renew_at,
    retry_delay_s,
    seconds_until,
    settle_delay_s,
)
from actors.account.push import (
    PushScope,
    calendar_of_deadline,
    channels_to_close,
    close_channel,
    open_channel,
    push_deadline,
    pushes_calendar,
    replace_channel,
)
from actors.actor import Actor
from actors.errors import ActorUnavailable
from cluster.inbox import InboxEntry
from metrics import events as metrics
from providers.errors import (
    AuthRevoked,
    ProviderError,
)
from providers.interface import CalendarProvider
from store.accounts import Account, get_account, set_status
from store.calendars import (
    CalendarState,
    get_calendar_state,
    list_calendar_states,
    reconcile_calendars,
)
from store.channels import ChannelRow, list_channels
from store.credentials import load_credentials
from store.db import PgPoolConnection
from store.fencing import StaleEpoch, fenced_transaction
from store.preferences import Preferences, load_preferences

T = TypeVar("T")
log = structlog.get_logger("actors.account")

POLL, REBASE, KEEPALIVE, OUTBOX = "poll", "rebase", "token-keepalive", "outbox"
SETTLE_PREFIX = "settle:"  # + calendar id: the follow-up sync of a hot calendar
_NOTHING = "\x00nothing"  # ``covers`` of a step that syncs no calendar's notifications
_DEADLINES = (POLL, REBASE, KEEPALIVE, OUTBOX)


def syncable(state: CalendarState) -> bool:
    """Whether a stored calendar is followed (enabled and still listed)."""
    return state.sync_enabled and state.removed_at is None


def refs_of(items: list[object]) -> list[tuple[int, str]]:
    """The inbox refs among posted items (InboxEntry or a ``(shard, entry_id)`` pair)."""
    refs: list[tuple[int, str]] = []
    for item in items:
        if isinstance(item, InboxEntry):
            refs.append(item.ref)
        elif isinstance(item, tuple) and len(item) == 2:
            refs.append((int(item[0]), str(item[1])))
    return refs


class Parked(Exception):
    """The account cannot sync until something outside the actor changes (consent, status)."""


class AccountActor(Actor[object]):
    """One connected account; posts: ``changed``/``resync``/``sync-now``/``resume``, ``outbox``
    (write due outbox items), and for push channels ``removed`` (recreate) / ``reauthorize``."""

    __slots__ = (
        "account",
        "cadence",
        "calls",
        "channels",
        "ctx",
        "epoch",
        "failures",
        "listed",
        "outbound",
        "parked",
        "push_due",
        "push_failures",
        "settling",
        "synced_at",
        "unacked",
    )

    def __init__(self, ctx: AccountContext) -> None:
        self.ctx = ctx
        self.account: Account | None = None
        self.calls: AccountCalls | None = None  # built once the credentials are loaded
        self.outbound: OutboundWriter | None = None  # with ``calls``
        self.cadence = cadence_of(  # the account's own, from ``_load`` on
            None,
            poll_every_s=ctx.poll_every_s,
            window_back=ctx.window_back,
            window_ahead=ctx.window_ahead,
        )
        self.epoch: int | None = None
        self.failures = 0  # consecutive throttled/transient failures
        self.parked = False
        self.listed = False  # calendars listed and reconciled in this incarnation
        # Inbox refs not yet acknowledged, by the calendar whose sync covers them (None: only a
        # sync of every calendar does); they wait for that sync's commit, retried on failure.
        self.unacked: dict[str | None, list[tuple[int, str]]] = {}
        self.channels: dict[str, ChannelRow] = {}  # by calendar id, as stored
        self.push_due: set[str] = set()  # calendars synced in full that have no channel yet
        self.push_failures = 0
        self.synced_at: dict[str, float] = {}  # loop time each calendar's last sync ended
        self.settling: dict[str, float] = {}  # hot calendars: loop time of the first held post

    # -- hooks ------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        # The first sync runs as a deadline, not here: a failure then is a crash the supervisor
        # restarts from stored state, while a failed on_start would drop the child for good.
        if await self._load():
            self._arm(POLL, 0.0)

    async def on_posts(self, key: Hashable, items: list[object]) -> None:
        kind, calendar_id = key if isinstance(key, tuple) and len(key) == 2 else (key, None)
        if kind == "resume":
            self.parked = False
            if await self._load():
                self.listed = False
                self._arm(POLL, 0.0)
            return
        if kind == "outbox":
            await self._drain_outbox()
            return
        if kind == "preferences":
            await self._reload_preferences()
            if refs := refs_of(items):
                await self.ctx.acknowledge(refs)
            return
        if kind in ("removed", "reauthorize") and isinstance(calendar_id, str) and not self.parked:
            refs = refs_of(items)
            pushed = await self._push(calendar_id, recreate=kind == "removed")
            if kind == "removed":
                # Changes made while no channel existed were announced to nobody.
                self._hold(calendar_id, refs)  # acknowledged by this sync's commit
                await self._guarded(self._sync_one(calendar_id, full=False), covers=calendar_id)
            elif pushed and refs:
                await self.ctx.acknowledge(refs)
            else:
                self._hold(calendar_id, refs)  # acknowledged after its calendar's next sync
            return
        scope = (
            calendar_id if kind in ("changed", "resync") and isinstance(calendar_id, str) else None
        )
        if kind in ("changed", "resync") and not self.cadence.auto_sync:
            # The account syncs only when asked (``sync-now``); the next such sync's delta
            # covers what this notification announced.
            if refs := refs_of(items):
                await self.ctx.acknowledge(refs)
            return
        self._hold(scope, refs_of(items))
        if self.parked:
            return  # unacknowledged entries are re-delivered once the account resumes
        if kind == "changed" and isinstance(calendar_id, str):
            if self._settles(calendar_id, items):
                return  # the settle deadline syncs it once the burst pauses
            work = self._sync_one(calendar_id, full=False)
        elif kind == "resync" and isinstance(calendar_id, str):
            work = self._sync_one(calendar_id, full=True)
        else:
            work = self._sync_all(reconcile=True)
        await self._guarded(work, covers=scope)

    async def on_deadline(self, name: str) -> None:
        if self.parked:
            return
        push_calendar = calendar_of_deadline(name)
        if push_calendar is not None:
            if await self._still_followed(push_calendar):
                await self._push(push_calendar, recreate=False)
            else:
                await self._close(push_calendar)
        elif name.startswith(SETTLE_PREFIX):
            calendar_id = name[len(SETTLE_PREFIX) :]
            self.settling.pop(calendar_id, None)
            await self._guarded(self._sync_one(calendar_id, full=False), covers=calendar_id)
        elif name == KEEPALIVE:
            await self._guarded(self._keepalive(), covers=_NOTHING)
        elif name == REBASE:
            await self._guarded(self._rebase(), covers=_NOTHING)
        elif name == OUTBOX:
            await self._drain_outbox()
        elif not self.cadence.auto_sync:
            await self._drain_outbox()  # writes go on; syncs wait until asked for
        else:
            if not self.listed and await self._unsettled_writes():
                # A write of an earlier incarnation (or owner) may have reached the provider
                # without our commit: settle it first, so this sync sees the event as our echo
                # instead of reporting it as the user's.
                await self._drain_outbox()
            await self._guarded(self._sync_all(reconcile=not self.listed), covers=None)
            await self._drain_outbox()  # also the safety net for a missed outbox notification

    # -- sequencing -------------------------------------------------------------------------------

    async def _load(self) -> bool:
        """Rebuild state from storage; False (and parked) when the account must not sync."""
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
            self.set_status("shard not held")
            self.stop_nowait()
            return False
        if account.status != "active":
            self._park(f"parked ({account.status})")
            return False
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
        self.cadence = self._cadence_of(stored)
        self.calls = AccountCalls(ctx, account, self.epoch, creds)
        self.outbound = OutboundWriter(
            self.calls,
            max_attempts=ctx.outbox_max_attempts,
            batch=ctx.outbox_batch,
            retry_initial_s=ctx.outbox_retry_initial_s,
            retry_max_s=ctx.outbox_retry_max_s,
        )
        if account.provider == "microsoft":
            self._arm(KEEPALIVE, ctx.token_keepalive.total_seconds())
        rows = (
            preloaded.channels
            if preloaded is not None
            else await list_channels(ctx.pool, account.id)
        )
        self.channels = {row.calendar_id: row for row in rows}
        for row in self.channels.values():
            self._arm_renewal(row, row.created_at or ctx.clock())
        return True

    async def _guarded(self, work: Awaitable[None], *, covers: str | None) -> None:
        """Run one sync step, turning the expected failures into parking, stopping or a retry.

        On success the refs ``covers`` stands for are acknowledged: those of one calendar, or
        with None those of every calendar (``_NOTHING``: none). A failure that escapes (a crash)
        first hands every unacknowledged ref back to the cell as a ``sync-now`` post: the next
        incarnation syncs and acknowledges them, since nothing of this one survives the restart
        (and the inbox delivers an entry only once).
        """
        try:
            await self._guarded_step(work, covers)
        except BaseException:
            self._hand_back_unacked()
            raise

    def _hand_back_unacked(self) -> None:
        """This incarnation is crashing: post its unacknowledged refs to the next one, which
        syncs and acknowledges them (the inbox delivers an entry only once)."""
        refs = [ref for held in self.unacked.values() for ref in held]
        self.unacked = {}
        with contextlib.suppress(ActorUnavailable):  # stopping: re-read at the next start
            for ref in refs:
                self.post_self_nowait(("sync-now", None), ref)

    async def _guarded_step(self, work: Awaitable[None], covers: str | None) -> None:
        try:
            slots = self.ctx.sync_slots
            if slots is None:
                await work
            else:
                async with slots:
                    await work
        except AuthRevoked as error:
            await self._revoked(error)
        except StaleEpoch:
            self._fenced_out()
        except Parked:
            pass
        except ProviderError as error:
            self.failures += 1
            delay = retry_delay_s(
                error,
                self.failures,
                self.ctx.rng,
                initial_s=self.ctx.retry_initial_s,
                max_s=self.ctx.retry_max_s,
            )
            if delay is None:
                raise
            log.info("sync deferred", error=str(error), retry_in_s=round(delay, 3))
            self.set_status(f"retry in {delay:.0f}s ({error.kind.value})")
            self._arm(POLL, delay)
        else:
            self.failures = 0
            scopes = list(self.unacked) if covers is None else [covers]
            refs = [ref for scope in scopes for ref in self.unacked.get(scope, ())]
            if refs:
                await self.ctx.acknowledge(refs)
            for scope in scopes:  # only now: a failed acknowledgement is retried later
                self.unacked.pop(scope, None)
            self.set_status("synced")
            if not self.unacked:
                # Else another calendar's sync failed and its retry stays armed: a later poll
                # must not replace it while its notifications wait.
                self._arm(POLL, self._poll_delay_s())
            due, self.push_due = self.push_due, set()
            for calendar_id in sorted(due):
                had_channel = calendar_id in self.channels
                await self._push(calendar_id, recreate=False)
                if not had_channel and calendar_id in self.channels:
                    # Changes made between this sync's last page and the channel opening were
                    # announced to nobody: one more incremental round picks them up.
                    with contextlib.suppress(ActorUnavailable):  # stopping: the next owner syncs
                        self.post_self_nowait(("changed", calendar_id))

    async def _unsettled_writes(self) -> bool:
        """Whether a create's outcome is unknown or an outbox item is due (maybe in flight
        when the last incarnation ended)."""
        return self.outbound is not None and await self.outbound.inherit()

    def _cadence_of(self, preferences: Preferences | None) -> Cadence:
        ctx = self.ctx
        return cadence_of(
            preferences,
            poll_every_s=ctx.poll_every_s,
            window_back=ctx.window_back,
            window_ahead=ctx.window_ahead,
        )

    async def _reload_preferences(self) -> None:
        """Apply preferences changed while running: a new window takes a full round, a new
        frequency the next poll."""
        if self.parked or self.account is None:
            return  # ``_load`` reads them when the account resumes
        stored = (await load_preferences(self.ctx.pool, [self.account.id])).get(self.account.id)
        before, self.cadence = self.cadence, self._cadence_of(stored)
        log.info("sync preferences applied", auto_sync=self.cadence.auto_sync)
        if not self.cadence.auto_sync:
            self.cancel_deadline(POLL)
            return
        window = (self.cadence.window_back, self.cadence.window_ahead)
        if window != (before.window_back, before.window_ahead):
            await self._guarded(self._resync_all(), covers=_NOTHING)
        else:
            self._arm(POLL, 0.0 if not before.auto_sync else self._poll_delay_s())

    async def _resync_all(self) -> None:
        """A full round of every followed calendar (over the window the cadence now asks)."""
        for state in await list_calendar_states(
            self.ctx.pool, self._account_id(), include_removed=False
        ):
            if syncable(state):
                await self._sync_calendar(state, full=True)
        await self._arm_rebase()

    def _poll_delay_s(self) -> float:
        return poll_delay_s(self.cadence.poll_every_s, self.ctx.poll_jitter, self.ctx.rng)

    async def _drain_outbox(self) -> None:
        """Write due outbox items, guarded as a sync is (revoked parks, stale epoch stops), and
        arm the ``outbox`` deadline for the next one; a parked actor writes nothing."""
        if self.parked or self.outbound is None:
            return
        try:
            slots = self.ctx.sync_slots
            if slots is None:
                next_at = await self.outbound.drain()
            else:
                async with slots:
                    next_at = await self.outbound.drain()
        except AuthRevoked as error:
            await self._revoked(error)  # items stay pending until the account resumes
            return
        except StaleEpoch:
            self._fenced_out()
            return
        except BaseException:
            self._hand_back_unacked()  # a crash here must not strand notifications either
            raise
        if next_at is None:
            self.cancel_deadline(OUTBOX)
        else:
            self._arm(OUTBOX, seconds_until(next_at, self.ctx.clock()))

    async def _sync_all(self, *, reconcile: bool) -> None:
        """Incremental (or resumed, or first full) sync of every followed calendar."""
        if reconcile:
            calendars = await self._call(lambda token: self._provider().list_calendars(token))
            async with self._fenced() as conn:
                await reconcile_calendars(conn, self._account_id(), calendars)
            self.listed = True
        now = self.ctx.clock()
        followed: list[str] = []
        for state in await list_calendar_states(
            self.ctx.pool, self._account_id(), include_removed=False
        ):
            if syncable(state):
                followed.append(state.id)
                due = rebase_due(
                    state.window_start, self.cadence.window_back, self.ctx.rebase_every, now
                )
                await self._sync_calendar(state, full=due)
        await self._arm_rebase()
        if reconcile:
            provider = self._provider().name
            for calendar_id in channels_to_close(provider, list(self.channels), followed):
                await self._close(calendar_id)

    async def _sync_one(self, calendar_id: str, *, full: bool) -> None:
        state = await get_calendar_state(self.ctx.pool, self._account_id(), calendar_id)
        if state is None:
            await self._sync_all(reconcile=True)  # a calendar we have not listed yet
        elif syncable(state):
            await self._sync_calendar(state, full=full)

    async def _rebase(self) -> None:
        now = self.ctx.clock()
        for state in await list_calendar_states(
            self.ctx.pool, self._account_id(), include_removed=False
        ):
            if syncable(state) and rebase_due(
                state.window_start, self.cadence.window_back, self.ctx.rebase_every, now
            ):
                await self._sync_calendar(state, full=True)
        await self._arm_rebase()

    async def _keepalive(self) -> None:
        await self._calls().refresh()
        self._arm(KEEPALIVE, self.ctx.token_keepalive.total_seconds())

    async def _sync_calendar(self, state: CalendarState, *, full: bool) -> None:
        """Sync one calendar, timed for the sync duration metric."""
        with metrics.timed_sync(self._provider().name):
            await self._page_calendar(state, full=full)

    async def _page_calendar(self, state: CalendarState, *, full: bool) -> None:
        """Page one calendar to its delta token (``actors.account.paging``), then note it."""
        self.set_status(f"syncing {state.id}")
        if self.outbound is not None:
            # A write whose answer was lost may have applied: adopt it first, so this sync
            # sees the event as our echo instead of reporting it as the user's change.
            await self.outbound.settle_uncertain()
        if not await self._pager().sync(state, full=full):
            return  # the calendar vanished meanwhile
        self.synced_at[state.id] = asyncio.get_running_loop().time()
        self._cell.describe(last_sync_at=time.time())
        if state.id not in self.channels and self.cadence.auto_sync:
            self.push_due.add(state.id)

    async def _push(self, calendar_id: str, *, recreate: bool) -> bool:
        """Open, renew or recreate the channel of ``calendar_id`` (no-op without a push address);
        whether it succeeded. Provider errors re-arm the ``push:`` deadline, never raise."""
        account, ctx = self.account, self.ctx
        assert account is not None and self.epoch is not None
        address = ctx.push_address(account.provider)
        if address is None or not pushes_calendar(account.provider, calendar_id):
            return True
        scope = PushScope(ctx, account, self.epoch, address, self._call)
        row = self.channels.get(calendar_id)
        issued_at = ctx.clock()
        if row is None or recreate:
            step = open_channel(scope, calendar_id, replacing=row)
        else:
            step = replace_channel(scope, row)
        row = await self._channel_step(calendar_id, step, "push deferred")
        if row is None:
            return False
        self.channels[calendar_id] = row
        self._arm_renewal(row, issued_at)
        return True

    async def _close(self, calendar_id: str) -> None:
        """Stop the channel of a calendar no longer followed; a provider error retries later
        through the same ``push:`` deadline and never fails a sync."""
        row, account = self.channels.get(calendar_id), self.account
        address = self.ctx.push_address(account.provider) if account is not None else None
        if row is None or account is None or self.epoch is None:
            return
        scope = PushScope(self.ctx, account, self.epoch, address or "", self._call)
        if await self._channel_step(calendar_id, close_channel(scope, row), "stop deferred"):
            del self.channels[calendar_id]
            self.cancel_deadline(push_deadline(calendar_id))
            log.info("channel stopped", calendar=calendar_id)

    async def _channel_step(
        self, calendar_id: str, step: Awaitable[ChannelRow], deferred: str
    ) -> ChannelRow | None:
        """Run one channel step (open, renew, stop); its row, or None when it failed: revoked
        consent parks, a stale epoch stops, a provider error re-arms the ``push:`` deadline."""
        try:
            row = await step
        except AuthRevoked as error:
            await self._revoked(error)
        except StaleEpoch:
            self._fenced_out()
        except Parked:
            pass
        except ProviderError as error:
            self.push_failures += 1
            delay = push_retry_delay_s(
                error,
                self.push_failures,
                self.ctx.rng,
                initial_s=self.ctx.retry_initial_s,
                max_s=self.ctx.retry_max_s,
            )
            log.info(deferred, calendar=calendar_id, error=str(error), retry_in_s=delay)
            self._arm(push_deadline(calendar_id), delay)
        else:
            self.push_failures = 0
            return row
        return None

    async def _still_followed(self, calendar_id: str) -> bool:
        """Whether a channel's calendar is still followed (Graph's mailbox one always is)."""
        account = self.account
        if account is None or not channels_to_close(account.provider, [calendar_id], ()):
            return True
        state = await get_calendar_state(self.ctx.pool, account.id, calendar_id)
        return state is not None and syncable(state)

    # -- storage steps --------------------------------------------------------------------------

    async def _call(self, request: Callable[[str], Awaitable[T]]) -> T:
        """Call the provider with a fresh enough token (``AccountCalls``)."""
        return await self._calls().call(request)

    async def _revoked(self, error: AuthRevoked) -> None:
        """Consent is gone: record why, stop every timer and wait for a ``resume`` post."""
        try:
            async with self._fenced() as conn:
                await set_status(conn, self._account_id(), "needs_reauth", last_error=str(error))
        except StaleEpoch:
            self._fenced_out()
            return
        self._park("needs_reauth")

    # -- small helpers ----------------------------------------------------------------------------

    def _settles(self, calendar_id: str, items: list[object]) -> bool:
        """Hold a notified calendar's sync while it is hot (notified during its last sync or
        just after), so a burst of notifications costs one follow-up sync, not one each."""
        reads = (item.read_at for item in items if isinstance(item, InboxEntry))
        quiet_s = self.ctx.settle_quiet_s
        hot = calendar_id in self.settling or notified_soon_after_sync(
            reads, self.synced_at.get(calendar_id), quiet_s
        )
        if not hot:
            return False
        now = asyncio.get_running_loop().time()
        first = self.settling.setdefault(calendar_id, now)
        delay = settle_delay_s(now, first, quiet_s, self.ctx.settle_max_s)
        self._arm(SETTLE_PREFIX + calendar_id, delay)
        return True

    def _hold(self, scope: str | None, refs: list[tuple[int, str]]) -> None:
        if refs:
            self.unacked.setdefault(scope, []).extend(refs)

    def _fenced_out(self) -> None:
        """A write met a newer epoch: another replica owns the shard now; stop, and say so."""
        self._park("stale epoch")
        self.stop_nowait()
        if self.account is not None:
            self.ctx.on_stale_epoch(self.account.shard)

    def _park(self, status: str) -> None:
        self.parked = True
        for name in _DEADLINES:
            self.cancel_deadline(name)
        for calendar_id in {*self.channels, *self.push_due}:
            self.cancel_deadline(push_deadline(calendar_id))
        for calendar_id in self.settling:
            self.cancel_deadline(SETTLE_PREFIX + calendar_id)
        self.settling.clear()  # held entries stay unacknowledged: re-delivered on resume
        self.set_status(status)

    def _arm(self, name: str, delay_s: float) -> None:
        if not self.parked:
            self.set_timer(name, delay_s)

    def _arm_renewal(self, row: ChannelRow, issued_at: datetime) -> None:
        """Arm ``push:<calendar>`` at half the channel's life (none for an unbounded channel)."""
        at = renew_at(issued_at, row.expires_at)
        if at is not None:
            self._arm(push_deadline(row.calendar_id), seconds_until(at, self.ctx.clock()))

    async def _arm_rebase(self) -> None:
        """Arm the rebase deadline at the earliest moment a followed calendar's window moves."""
        ctx = self.ctx
        states = await list_calendar_states(ctx.pool, self._account_id(), include_removed=False)
        moments = [
            at
            for s in states
            if syncable(s)
            and (at := rebase_at(s.window_start, self.cadence.window_back, ctx.rebase_every))
            is not None
        ]
        if moments:
            self._arm(REBASE, seconds_until(min(moments), ctx.clock()))

    def _pager(self) -> CalendarPager:
        cadence = self.cadence
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

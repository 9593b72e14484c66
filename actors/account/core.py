"""The calendar account actor's decisions, without I/O: plain state in, commands out.

The shell (``actors.account.actor``) feeds it three kinds of event, ``on_post``, ``on_deadline``
and ``step_done``, each with the loop's clock, and performs what comes back in order. An effect
is done at once; a step is performed and answered with its outcome through ``step_done``, which
returns the next commands. Nothing here awaits, reads a clock or sees an exception.

Invariants (checked by tests/unit/test_account_core.py, also under random event sequences):
- at most one step is outstanding, and a handler's steps run one after another from a queue
  (follow-ups of a step's outcome go first), so no calendar is ever synced twice at once;
- an inbox entry is acknowledged only once what it asks for is done: by the success of a sync
  step that covers it (a calendar's sync covers that calendar's entries, a sync of every
  calendar covers all), a channel's renewal (``Reauthorize``), the reload of the preferences
  (``PreferencesChanged``), or at once when the account syncs only when asked (``Changed``);
- while parked nothing but ``Resume`` starts a step, and parking cancels every deadline it owns
  (but the ``push:`` retry of a channel that never opened: ignored while parked);
- a failed provider step is retried by its backoff deadline (the poll deadline for syncs, the
  channel's ``push:`` deadline for channel steps); a failed sync never by its own handler, and
  until its retry no notification or settle deadline starts a sync: they are held for the
  retry, which syncs every calendar (and first the full rounds asked for meanwhile);
- every entry left unacknowledged is covered by the next sync of its calendar or of every
  calendar: a failed sync keeps the poll deadline armed, a crash (``Raise``) first posts each
  entry back as ``SyncNow`` so the next incarnation syncs and acknowledges it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeGuard

from actors.account.commands import (
    STEPS,
    SYNC_STEPS,
    Acknowledge,
    Arm,
    Cancel,
    ChannelClosed,
    ChannelOpened,
    ChannelRefused,
    CheckFollowed,
    CloseChannel,
    Command,
    Crashed,
    Drained,
    DrainOutbox,
    Fenced,
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
    RecordRevoked,
    RefreshToken,
    ReloadPreferences,
    ResyncAll,
    Revoked,
    ShowStatus,
    Step,
    Stop,
    SyncAll,
    SyncCalendar,
    Synced,
    Unloaded,
)
from actors.account.messages import (
    AccountMessage,
    Changed,
    ChannelRemoved,
    OutboxDue,
    PreferencesChanged,
    Reauthorize,
    Resume,
    Resync,
    SyncNow,
)
from actors.account.policy import (
    Cadence,
    notified_soon_after_sync,
    poll_delay_s,
    push_retry_delay_s,
    retry_delay_s,
    settle_delay_s,
)
from cluster.inbox import InboxEntry
from providers.capabilities import BudgetScope, Capabilities, ChannelScope, Identity

POLL, REBASE, KEEPALIVE, OUTBOX = "poll", "rebase", "token-keepalive", "outbox"
PUSH_PREFIX = "push:"  # + calendar id: renew (or retry opening) that calendar's channel
SETTLE_PREFIX = "settle:"  # + calendar id: the follow-up sync of a hot calendar
UNWATCHED_PREFIX = "unwatched:"  # + calendar id: the poll of a calendar that has no channel
_OWN_DEADLINES = (POLL, REBASE, KEEPALIVE, OUTBOX)
_CALENDAR_SYNCS = (SyncAll, SyncCalendar)  # what the retry of a failed sync stands in for
EVERY_CALENDAR: None = None  # the scope of entries only a sync of every calendar covers
# Until ``Loaded`` says which kind the account is: no channels, nothing to keep alive.
UNLOADED = Capabilities(
    channel_scope=ChannelScope.NONE, budget_scope=BudgetScope.ACCOUNT, identity=Identity(())
)


def push_deadline(calendar_id: str) -> str:
    """The deadline that renews (or retries opening) the channel of ``calendar_id``."""
    return PUSH_PREFIX + calendar_id


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """The replica's knobs the decisions depend on (shared by every calendar actor)."""

    default_cadence: Cadence
    keepalive_s: float = 7 * 24 * 3600.0
    poll_jitter: float = 0.2
    retry_initial_s: float = 5.0
    retry_max_s: float = 15 * 60.0
    settle_quiet_s: float = 0.05
    settle_max_s: float = 1.0
    unwatched_poll_s: float = 6 * 3600.0  # the cadence of a calendar its provider won't watch


@dataclass(slots=True)
class CoreState:
    """What one incarnation knows; rebuilt from storage (``Load``) on every start."""

    cadence: Cadence
    capabilities: Capabilities = UNLOADED  # the account's kind's, from ``Loaded``
    push_enabled: bool = False  # the replica has a push address for the kind
    parked: bool = False
    stopped: bool = False
    listed: bool = False  # calendars listed and reconciled in this incarnation
    failures: int = 0  # consecutive failed sync steps
    # Loop time before which a failed sync is not retried: notifications meanwhile wait for
    # the poll deadline's retry (a throttled account must not call again at once).
    retry_at: float | None = None
    resync_due: frozenset[str] = frozenset()  # full rounds asked for during the backoff
    push_failures: int = 0  # consecutive failed channel steps
    # Entries not yet acknowledged, by the calendar whose sync covers them (EVERY_CALENDAR:
    # only a sync of every calendar does).
    unacked: dict[str | None, list[InboxEntry]] = field(default_factory=dict)
    # Replaced, never mutated: the shared empty frozenset costs an idle actor nothing, where a
    # set of its own would cost 216 bytes (and both change only when a channel does).
    channels: frozenset[str] = frozenset()  # calendars with a stored channel
    push_due: frozenset[str] = frozenset()  # synced calendars awaiting a channel
    unwatchable: frozenset[str] = frozenset()  # calendars whose provider refuses a channel
    synced_at: dict[str, float] = field(default_factory=dict)  # loop time of each last sync
    settling: dict[str, float] = field(default_factory=dict)  # hot calendar -> first held post


@dataclass(frozen=True, slots=True)
class _Pending:
    """A queued command, and for a step what its success covers and what follows it."""

    command: Command
    covers: str | tuple[()] | None = ()  # () covers nothing
    then_ack: tuple[InboxEntry, ...] = ()  # a reauthorize: acknowledged once the channel opened
    announce: bool = False  # a first channel: post ``Changed`` for what it missed


class AccountCore:
    """The calendar account actor's state machine."""

    __slots__ = ("config", "in_flight", "queue", "rng", "state")

    def __init__(self, config: CoreConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.state = CoreState(config.default_cadence)
        # Empty between handlers: the shared empty tuple until a handler queues work (a list
        # of its own would cost an idle actor 56 bytes, a deque 600).
        self.queue: list[_Pending] | tuple[()] = ()
        self.in_flight: _Pending | None = None

    # -- events ---------------------------------------------------------------------------------

    def start(self) -> list[Command]:
        """The incarnation starts: load, then sync at once (as a deadline, so a failure is a
        crash the supervisor restarts from storage, not a failed start)."""
        return self._run([_Pending(Load())])

    def on_post(
        self, message: AccountMessage, entries: Sequence[InboxEntry], now: float
    ) -> list[Command]:
        """Handle a (coalesced) post and the inbox entries it carries."""
        s = self.state
        if isinstance(message, Resume):
            s.parked = False
            return self._run([_Pending(Load())])
        if isinstance(message, OutboxDue):
            return self._run([_Pending(DrainOutbox())])
        if isinstance(message, PreferencesChanged):
            ack = [_Pending(Acknowledge(tuple(entries)))] if entries else []
            return self._run([_Pending(ReloadPreferences()), *ack])
        if isinstance(message, ChannelRemoved | Reauthorize) and not s.parked:
            return self._on_channel_notice(message, entries)
        if isinstance(message, Changed | Resync):
            scope: str | None = message.calendar_id
            if not s.cadence.auto_sync:
                # Synced only when asked (``SyncNow``): that sync's delta covers this change.
                return self._run([_Pending(Acknowledge(tuple(entries)))] if entries else [])
        else:
            scope = EVERY_CALENDAR
        self._hold(scope, entries)
        if s.parked:
            return []  # re-delivered to the incarnation that resumes
        waiting = self._wait_for_retry(now)
        if waiting is not None:
            if isinstance(message, Resync):
                s.resync_due |= {message.calendar_id}  # the retry's rounds are incremental
            return waiting
        if isinstance(message, Changed):
            settle = self._settles(message.calendar_id, entries, now)
            if settle is not None:
                return self._run(settle)  # the settle deadline syncs it once the burst pauses
            step: Step = SyncCalendar(message.calendar_id, full=False)
        elif isinstance(message, Resync):
            step = SyncCalendar(message.calendar_id, full=True)
        else:
            step = SyncAll(reconcile=True)
        return self._run([_Pending(step, covers=scope)])

    def on_deadline(self, name: str, now: float) -> list[Command]:
        """A deadline armed through ``Arm`` has passed."""
        s = self.state
        if s.parked:
            return []
        if name.startswith(PUSH_PREFIX):
            calendar_id = name[len(PUSH_PREFIX) :]
            if self.state.capabilities.channels_follow_calendars:
                return self._run([_Pending(CheckFollowed(calendar_id))])
            return self._run(self._channel_work(calendar_id, recreate=False))
        if name.startswith(UNWATCHED_PREFIX):
            calendar_id = name[len(UNWATCHED_PREFIX) :]
            waiting = self._wait_for_retry(now)
            if waiting is not None:
                return waiting
            return self._run([_Pending(SyncCalendar(calendar_id, full=False), covers=calendar_id)])
        if name.startswith(SETTLE_PREFIX):
            calendar_id = name[len(SETTLE_PREFIX) :]
            s.settling.pop(calendar_id, None)
            waiting = self._wait_for_retry(now)
            if waiting is not None:
                return waiting
            return self._run([_Pending(SyncCalendar(calendar_id, full=False), covers=calendar_id)])
        if name == KEEPALIVE:
            return self._run([_Pending(RefreshToken())])
        if name == REBASE:
            return self._run([_Pending(Rebase())])
        if name == POLL:
            s.retry_at = None  # the retry is now
        if name == OUTBOX or not (s.cadence.auto_sync or s.unacked):
            # Writes go on; syncs wait to be asked (a held entry's sync was asked: retry it).
            return self._run([_Pending(DrainOutbox())])
        due, s.resync_due = s.resync_due, frozenset()
        work = [
            *(_Pending(SyncCalendar(c, full=True), covers=c) for c in sorted(due)),
            # Every poll lists the calendars again: one added, renamed, removed or shared with
            # the user since reaches the store within a poll interval (one cheap call).
            _Pending(SyncAll(reconcile=True), covers=EVERY_CALENDAR),
            _Pending(DrainOutbox()),  # also the safety net for a missed outbox notification
        ]
        if not s.listed:
            # A write of an earlier incarnation (or owner) may have reached the provider without
            # our commit: settle it first, so the sync sees our echo, not the user's change.
            work.insert(0, _Pending(Inherit()))
        return self._run(work)

    def step_done(self, outcome: Outcome, now: float) -> list[Command]:
        """The outstanding step finished with ``outcome``; the commands that follow."""
        pending = self.in_flight
        if pending is None:
            raise RuntimeError("step_done without a step outstanding")
        self.in_flight = None
        step = pending.command
        assert _is_step(step)
        follow: list[Command | _Pending]
        if isinstance(outcome, Crashed):
            follow = self._crash()
        elif isinstance(outcome, Fenced):
            follow = self._fenced_out()
        elif isinstance(outcome, Revoked):
            follow = [_Pending(RecordRevoked(outcome.reason))]
        elif isinstance(outcome, Unloaded):
            follow = []
        elif isinstance(step, SYNC_STEPS):
            follow = self._after_sync(pending, outcome, now)
        elif isinstance(step, OpenChannel | CloseChannel):
            follow = self._after_channel(step, pending, outcome)
        else:
            follow = self._after(step, outcome)
        return self._run(follow, front=True)

    def hand_back(self) -> list[PostSelf]:
        """The incarnation is ending in a crash: post every unacknowledged entry back as
        ``SyncNow`` (the inbox delivers an entry once; the next incarnation syncs and
        acknowledges it)."""
        held = [entry for entries in self.state.unacked.values() for entry in entries]
        # An acknowledgement still queued behind a step (a preferences reload's) is not done
        # either: its entries are not in ``unacked``.
        held += [
            e for p in self.queue if isinstance(p.command, Acknowledge) for e in p.command.entries
        ]
        self.state.unacked = {}
        self.queue = ()
        return [PostSelf(SyncNow(), entry) for entry in held]

    # -- outcomes -------------------------------------------------------------------------------

    def _after_sync(
        self, pending: _Pending, outcome: Outcome, now: float
    ) -> list[Command | _Pending]:
        s, config = self.state, self.config
        if isinstance(outcome, ProviderFailed):
            s.failures += 1
            delay = retry_delay_s(
                outcome.kind,
                outcome.retry_after_s,
                s.failures,
                self.rng,
                initial_s=config.retry_initial_s,
                max_s=config.retry_max_s,
            )
            if delay is None:
                return self._crash()
            s.retry_at = now + delay
            # The queue's other calendar syncs wait for the retry too: it syncs every calendar,
            # covering what they would; a full round among them (or the one that failed) is
            # remembered, as the retry's own rounds are incremental.
            waiting = [p.command for p in self.queue if isinstance(p.command, _CALENDAR_SYNCS)]
            self.queue = [p for p in self.queue if not isinstance(p.command, _CALENDAR_SYNCS)]
            for command in (pending.command, *waiting):
                if isinstance(command, SyncCalendar) and command.full:
                    s.resync_due |= {command.calendar_id}
            return [
                ShowStatus(f"retry in {delay:.0f}s ({outcome.kind.value})"),
                *self._arm(POLL, delay),
            ]
        follow: list[Command | _Pending] = []
        closing: list[Command | _Pending] = []  # after the effects: a close may end in a park
        step = pending.command
        if isinstance(outcome, Synced):
            for calendar_id, at in outcome.synced:
                s.synced_at[calendar_id] = at
                if calendar_id in s.unwatchable:
                    if s.cadence.auto_sync:  # no channel tells of its changes: poll it
                        follow += self._arm(UNWATCHED_PREFIX + calendar_id, config.unwatched_poll_s)
                elif calendar_id not in s.channels and s.cadence.auto_sync:
                    s.push_due |= {calendar_id}
            if outcome.listed:
                s.listed = True
            if outcome.rebase_in_s is not None:
                follow += self._arm(REBASE, outcome.rebase_in_s)
            if outcome.followed is not None and s.capabilities.channels_follow_calendars:
                gone = sorted(c for c in s.channels if c not in outcome.followed)
                closing = [_Pending(CloseChannel(c)) for c in gone]
        elif isinstance(step, RefreshToken):
            follow += self._arm(KEEPALIVE, config.keepalive_s)
        s.failures = 0
        if isinstance(outcome, Synced):
            s.retry_at = None  # calendars answer again (a token refresh proves nothing of it)
        covers = pending.covers
        if not isinstance(covers, tuple):
            scopes = list(s.unacked) if covers is EVERY_CALENDAR else [covers]
            entries = tuple(e for scope in scopes for e in s.unacked.pop(scope, ()))
            if entries:
                follow.append(Acknowledge(entries))
        follow.append(ShowStatus("synced"))
        if not s.unacked:
            # Else another calendar's sync failed and its retry stays armed: a later poll must
            # not replace it while its entries wait.
            follow += self._arm(POLL, self._poll_delay_s())
        follow += closing
        due, s.push_due = s.push_due, frozenset()
        for calendar_id in sorted(due):
            follow += self._channel_work(calendar_id, recreate=False, announce=True)
        return follow

    def _after_channel(
        self, step: OpenChannel | CloseChannel, pending: _Pending, outcome: Outcome
    ) -> list[Command | _Pending]:
        s, config = self.state, self.config
        calendar_id = step.calendar_id
        if isinstance(outcome, ProviderFailed):
            s.push_failures += 1
            delay = push_retry_delay_s(
                outcome.kind,
                outcome.retry_after_s,
                s.push_failures,
                self.rng,
                initial_s=config.retry_initial_s,
                max_s=config.retry_max_s,
            )
            retry = self._arm(push_deadline(calendar_id), delay)
            if s.cadence.auto_sync:
                return retry  # a reauthorize's entries: acknowledged by the calendar's next sync
            # No sync comes unasked to cover them: acknowledged now, as a change is.
            return [*retry, *self._release(calendar_id, pending.then_ack)]
        s.push_failures = 0
        if isinstance(outcome, ChannelRefused):
            s.unwatchable |= {calendar_id}
            s.channels -= {calendar_id}
            return [
                Cancel(push_deadline(calendar_id)),
                *self._arm(UNWATCHED_PREFIX + calendar_id, config.unwatched_poll_s),
                *self._release(calendar_id, pending.then_ack),
            ]
        if isinstance(outcome, ChannelClosed):
            s.channels -= {calendar_id}
            return [Cancel(push_deadline(calendar_id))]
        follow: list[Command | _Pending] = []
        if isinstance(outcome, ChannelOpened):
            opened = calendar_id not in s.channels
            s.channels |= {calendar_id}
            if outcome.renew_in_s is not None:
                follow += self._arm(push_deadline(calendar_id), outcome.renew_in_s)
            recreated = isinstance(step, OpenChannel) and step.recreate  # a sync follows it
            if pending.announce or not (opened or recreated):
                # Changes made between the last sync and the channel opening were announced to
                # nobody, and a replacement may have lost a late message to the old channel
                # past its grace: one more incremental round picks them up.
                follow.append(PostSelf(Changed(calendar_id)))
        return [*follow, *self._release(calendar_id, pending.then_ack)]

    def _release(
        self, calendar_id: str, entries: tuple[InboxEntry, ...]
    ) -> list[Command | _Pending]:
        """Acknowledge a reauthorize's ``entries``, held under ``calendar_id`` until now."""
        s = self.state
        if not entries:
            return []
        held = [e for e in s.unacked.get(calendar_id, []) if e not in entries]
        if held:
            s.unacked[calendar_id] = held
        else:
            s.unacked.pop(calendar_id, None)
        return [Acknowledge(entries)]

    def _after(self, step: Step, outcome: Outcome) -> list[Command | _Pending]:
        s, config = self.state, self.config
        if isinstance(outcome, ProviderFailed | Synced | ChannelOpened | ChannelClosed):
            return self._crash()  # not an answer this step gives
        if isinstance(step, Load):
            if isinstance(outcome, NotRunnable):
                if outcome.stop:
                    s.stopped = True
                    self.queue = ()
                    return [ShowStatus(outcome.status), Stop(fenced=False)]
                return self._park(outcome.status)
            assert isinstance(outcome, Loaded)
            s.cadence, s.listed, s.retry_at = outcome.cadence, False, None
            s.capabilities, s.push_enabled = outcome.capabilities, outcome.push_enabled
            follow: list[Command | _Pending] = []
            if outcome.capabilities.keepalive:
                follow += self._arm(KEEPALIVE, config.keepalive_s)
            s.channels = frozenset(calendar_id for calendar_id, _ in outcome.channels)
            unwatchable = frozenset(outcome.unwatchable)
            # A resumed incarnation: polls of calendars no longer refused a channel end.
            gone = sorted(s.unwatchable - unwatchable)
            follow += [Cancel(UNWATCHED_PREFIX + calendar_id) for calendar_id in gone]
            s.unwatchable = unwatchable
            for calendar_id, renew_in_s in outcome.channels:
                if renew_in_s is not None:
                    follow += self._arm(push_deadline(calendar_id), renew_in_s)
            return [*follow, *self._arm(POLL, 0.0)]
        if isinstance(step, Inherit):
            if isinstance(outcome, Inherited) and outcome.unsettled:
                return [_Pending(DrainOutbox())]
            return []
        if isinstance(step, DrainOutbox):
            if not isinstance(outcome, Drained):
                return []  # nothing to write with (no credentials loaded)
            if outcome.next_in_s is None:
                return [Cancel(OUTBOX)]
            return self._arm(OUTBOX, outcome.next_in_s)
        if isinstance(step, CheckFollowed):
            assert isinstance(outcome, Followed)
            if outcome.followed:
                return list(self._channel_work(step.calendar_id, recreate=False))
            return [_Pending(CloseChannel(step.calendar_id))]
        if isinstance(step, ReloadPreferences):
            assert isinstance(outcome, PreferencesLoaded)
            return self._preferences(outcome.cadence)
        if isinstance(step, RecordRevoked):
            return self._park("needs_reauth")
        return []

    def _preferences(self, cadence: Cadence) -> list[Command | _Pending]:
        s = self.state
        before, s.cadence = s.cadence, cadence
        if not cadence.auto_sync:
            return [] if s.unacked else [Cancel(POLL)]  # the retry of held entries stays
        if (cadence.window_back, cadence.window_ahead) != (before.window_back, before.window_ahead):
            return [_Pending(ResyncAll())]
        return self._arm(POLL, 0.0 if not before.auto_sync else self._poll_delay_s())

    # -- decisions ------------------------------------------------------------------------------

    def _on_channel_notice(
        self, message: ChannelRemoved | Reauthorize, entries: Sequence[InboxEntry]
    ) -> list[Command]:
        calendar_id = message.calendar_id
        if isinstance(message, ChannelRemoved):
            # Changes made while no channel existed were announced to nobody: sync after.
            self._hold(calendar_id, entries)
            work = self._channel_work(calendar_id, recreate=True)
            return self._run([*work, _Pending(SyncCalendar(calendar_id, full=False), calendar_id)])
        if not self._pushes(calendar_id):
            return self._run([_Pending(Acknowledge(tuple(entries)))] if entries else [])
        # Acknowledged once the channel is renewed; if that fails, after the calendar's next sync.
        self._hold(calendar_id, entries)
        return self._run(
            [_Pending(OpenChannel(calendar_id, recreate=False), then_ack=tuple(entries))]
        )

    def _channel_work(
        self, calendar_id: str, *, recreate: bool, announce: bool = False
    ) -> list[Command | _Pending]:
        """Open, renew or recreate a channel, when the calendar gets one here."""
        if not self._pushes(calendar_id):
            return []
        step = OpenChannel(calendar_id, recreate=recreate)
        return [_Pending(step, announce=announce)]

    def _wait_for_retry(self, now: float) -> list[Command] | None:
        """While a failed sync backs off, what a would-be sync does instead: arm the retry
        again for its time (whatever became of that deadline meanwhile), which syncs every
        calendar and so covers it; None when no backoff holds."""
        retry_at = self.state.retry_at
        if retry_at is None or now >= retry_at:
            return None
        return self._run(self._arm(POLL, retry_at - now))

    def _pushes(self, calendar_id: str) -> bool:
        s = self.state
        return (
            s.push_enabled
            and s.capabilities.pushes_calendar(calendar_id)
            and calendar_id not in s.unwatchable
        )

    def _settles(
        self, calendar_id: str, entries: Sequence[InboxEntry], now: float
    ) -> list[Command] | None:
        """Hold a notified calendar's sync while it is hot (notified during its last sync or
        just after), so a burst of notifications costs one follow-up sync, not one each: the
        ``settle:`` deadline to arm, or None when the calendar is not hot."""
        s, config = self.state, self.config
        hot = calendar_id in s.settling or notified_soon_after_sync(
            (entry.read_at for entry in entries),
            s.synced_at.get(calendar_id),
            config.settle_quiet_s,
        )
        if not hot:
            return None
        first = s.settling.setdefault(calendar_id, now)
        delay = settle_delay_s(now, first, config.settle_quiet_s, config.settle_max_s)
        return [Arm(SETTLE_PREFIX + calendar_id, delay)]

    def _hold(self, scope: str | None, entries: Sequence[InboxEntry]) -> None:
        if entries:
            self.state.unacked.setdefault(scope, []).extend(entries)

    def _fenced_out(self) -> list[Command | _Pending]:
        """A write met a newer epoch: stop, and tell the keeper the shard is gone."""
        follow = self._park("stale epoch")
        self.state.stopped = True
        return [*follow, Stop(fenced=True)]

    def _park(self, status: str) -> list[Command | _Pending]:
        s = self.state
        s.parked = True
        self.queue = [p for p in self.queue if not _is_step(p.command)]
        names = [*_OWN_DEADLINES]
        names += [push_deadline(c) for c in sorted({*s.channels, *s.push_due})]
        names += [SETTLE_PREFIX + c for c in sorted(s.settling)]
        names += [UNWATCHED_PREFIX + c for c in sorted(s.unwatchable)]
        s.settling.clear()  # held entries stay unacknowledged: re-delivered on resume
        return [*(Cancel(name) for name in names), ShowStatus(status)]

    def _crash(self) -> list[Command | _Pending]:
        return [*self.hand_back(), Raise()]

    def _arm(self, name: str, delay_s: float) -> list[Command | _Pending]:
        return [] if self.state.parked else [Arm(name, delay_s)]

    def _poll_delay_s(self) -> float:
        return poll_delay_s(self.state.cadence.poll_every_s, self.config.poll_jitter, self.rng)

    # -- the queue ------------------------------------------------------------------------------

    def _run(self, work: Sequence[Command | _Pending], *, front: bool = False) -> list[Command]:
        """Queue ``work`` (first, for a step's follow-ups) and release commands up to and
        including the next step, which becomes the one outstanding."""
        items = [w if isinstance(w, _Pending) else _Pending(w) for w in work]
        queue = self.queue = [*items, *self.queue] if front else [*self.queue, *items]
        out: list[Command] = []
        while queue and self.in_flight is None:
            pending = queue.pop(0)
            command = pending.command
            if _is_step(command):
                if self.state.parked and not isinstance(command, Load | RecordRevoked):
                    continue
                if self.state.stopped:
                    continue
                self.in_flight = pending
            out.append(command)
        if not queue:
            self.queue = ()
        return out


def _is_step(command: Command) -> TypeGuard[Step]:
    return isinstance(command, STEPS)

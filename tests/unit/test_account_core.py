"""The calendar account actor's core (``actors.account.core``), driven without a loop or server.

The first half walks each event, command and outcome once: start and ``Load`` (its three
answers), the first and later polls (``Inherit``, ``SyncAll``, ``DrainOutbox``), what a
``Synced`` acknowledges, arms and opens or closes, every failure of a sync step
(``ProviderFailed`` retried or raised, ``Crashed``, ``Revoked``, ``Fenced``, ``Unloaded``),
channel steps and the ``push:`` deadline for both channel scopes, settling a hot calendar,
an account that syncs only when asked, preferences, channel notices, the outbox, the token
keep-alive and rebasing.

The second half is a seeded property test: random posts, deadlines and step outcomes, run the
way the shell runs them (one handler at a time, each step answered before the next event), with
an explicit model of which success may acknowledge which entry. It checks that

1. an entry is acknowledged only after a success that covers it and was started after it was
   posted (a sync of its calendar or of every calendar; a ``Reauthorize`` also by its channel
   opening; a ``PreferencesChanged`` by the reload; a notice the account does not act on at
   once), and never twice, not even across incarnations;
2. at most one step is outstanding: a batch releases at most one step, as its last command,
   and ``Raise`` is last too;
3. no step starts while parked (``Resume`` un-parks before its ``Load``); parking disarms
   every deadline but the ``push:`` retry of a channel that never opened (ignored while
   parked); a sync failing with a retryable error arms the poll deadline with its backoff
   (at least a throttle's Retry-After) and no other sync starts in that handler, and a failed
   channel step arms its ``push:`` deadline; between events, every held entry has a deadline
   armed that will sync it (the poll, or its calendar's settle deadline);
4. nothing is lost: at the end (resumed if parked, the poll fired, every step answered with
   success, the mailbox delivered) every entry is acknowledged; a ``Raise`` first posts each
   held entry back as ``SyncNow``, which the next incarnation (a fresh core) receives; only
   entries held when an incarnation stopped (``Stop``: the shard's next owner has them) are
   excused.

The core's own ``unacked`` and ``parked`` are compared with the model after every handler.
Outcomes are drawn per step from what the shell can answer (``Unloaded`` only in the first
half: the shell loads credentials before any step that needs them). A failure's message
ends with the seed and the run's last events.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import get_args

import pytest

from actors.account.commands import (
    STEPS,
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
    Done,
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
from actors.account.core import (
    KEEPALIVE,
    OUTBOX,
    POLL,
    REBASE,
    SETTLE_PREFIX,
    UNWATCHED_PREFIX,
    AccountCore,
    CoreConfig,
    push_deadline,
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
from actors.account.policy import Cadence
from cluster.inbox import InboxEntry
from providers.capabilities import BudgetScope, Capabilities, ChannelScope, Identity
from providers.errors import ErrorKind

AUTO = Cadence(True, 60.0, timedelta(days=30), timedelta(days=90))
WIDER = Cadence(True, 60.0, timedelta(days=60), timedelta(days=90))
SLOWER = Cadence(True, 600.0, timedelta(days=30), timedelta(days=90))
MANUAL = Cadence(False, 60.0, timedelta(days=30), timedelta(days=90))
# No jitter: a poll is armed exactly ``poll_every_s`` ahead.
CONFIG = CoreConfig(default_cadence=AUTO, keepalive_s=3600.0, poll_jitter=0.0)
GOOGLE = Capabilities(ChannelScope.CALENDAR, BudgetScope.APP, Identity(("sub",)))
MICROSOFT = Capabilities(
    ChannelScope.MAILBOX, BudgetScope.ACCOUNT, Identity(("oid",)), keepalive=True
)
POLLED = Capabilities(ChannelScope.NONE, BudgetScope.ACCOUNT, Identity(("sub",)))
OWN_DEADLINES = [Cancel(POLL), Cancel(REBASE), Cancel(KEEPALIVE), Cancel(OUTBOX)]
PROVIDER_STEPS = (
    SyncAll,
    SyncCalendar,
    Rebase,
    ResyncAll,
    RefreshToken,
    DrainOutbox,
    OpenChannel,
    CloseChannel,
)
SYNCS = (SyncAll, SyncCalendar, Rebase, ResyncAll, RefreshToken)
TRANSIENT = ProviderFailed(ErrorKind.TRANSIENT, "503")
_KIND_OF: dict[type[AccountMessage], str] = {
    Changed: "changed",
    Resync: "resync",
    ChannelRemoved: "removed",
    Reauthorize: "reauthorize",
    SyncNow: SyncNow.stream_kind,
    PreferencesChanged: PreferencesChanged.stream_kind,
}


def entry(entry_id: str, message: AccountMessage, read_at: float | None = None) -> InboxEntry:
    """The inbox entry a notification stream would deliver for ``message``."""
    calendar_id = getattr(message, "calendar_id", "")
    return InboxEntry(1, entry_id, "acct", calendar_id, _KIND_OF[type(message)], read_at)


class Driver:
    """Feeds one core events and records what it releases, like the shell but without I/O.

    Each event returns the commands released by it; a step stays outstanding until ``answer``
    gives its outcome(s). Every batch is checked: at most one step, as its last command, and
    a ``Raise`` last; an entry is never acknowledged twice.
    """

    def __init__(self, config: CoreConfig = CONFIG, seed: int = 0) -> None:
        self.core = AccountCore(config, random.Random(seed))
        self.now = 0.0
        self.step: Step | None = None
        self.armed: dict[str, float] = {}
        self.acked: list[InboxEntry] = []
        self.posts: list[PostSelf] = []
        self.stopped: Stop | None = None
        self.raised = False

    def start(self) -> list[Command]:
        return self._take(self.core.start())

    def post(self, message: AccountMessage, *entries: InboxEntry) -> list[Command]:
        assert self.step is None, "the shell handles one event at a time"
        return self._take(self.core.on_post(message, entries, self.now))

    def fire(self, name: str) -> list[Command]:
        assert self.step is None, "the shell handles one event at a time"
        self.armed.pop(name, None)
        return self._take(self.core.on_deadline(name, self.now))

    def answer(self, *outcomes: Outcome) -> list[Command]:
        """Answer the outstanding step, then each step that follows, with ``outcomes``."""
        out: list[Command] = []
        for outcome in outcomes:
            assert self.step is not None, f"no step outstanding for {outcome}"
            self.step = None
            out += self._take(self.core.step_done(outcome, self.now))
        return out

    def _take(self, commands: list[Command]) -> list[Command]:
        steps = [c for c in commands if isinstance(c, STEPS)]
        assert len(steps) <= 1, f"two steps released at once: {commands}"
        if steps:
            assert commands[-1] is steps[0], f"a step is not the last command: {commands}"
            assert self.step is None, "a step released while another is outstanding"
            self.step = steps[0]
        for command in commands:
            if isinstance(command, Arm):
                self.armed[command.name] = command.delay_s
            elif isinstance(command, Cancel):
                self.armed.pop(command.name, None)
            elif isinstance(command, Acknowledge):
                for acked in command.entries:
                    assert acked not in self.acked, f"acknowledged twice: {acked.entry_id}"
                    self.acked.append(acked)
            elif isinstance(command, PostSelf):
                self.posts.append(command)
            elif isinstance(command, Stop):
                self.stopped = command
            elif isinstance(command, Raise):
                assert commands[-1] is command, f"commands after Raise: {commands}"
                self.raised = True
        return commands


def loaded(
    capabilities: Capabilities = GOOGLE,
    *,
    push: bool = True,
    cadence: Cadence = AUTO,
    channels: tuple[tuple[str, float | None], ...] = (),
    unwatchable: tuple[str, ...] = (),
) -> Loaded:
    return Loaded(capabilities, push, cadence, channels, unwatchable)


def running(
    capabilities: Capabilities = GOOGLE,
    *,
    push: bool = True,
    cadence: Cadence = AUTO,
    channels: tuple[tuple[str, float | None], ...] = (),
) -> Driver:
    """A core loaded and past its first poll (which lists the calendars and syncs none, or
    without auto_sync only drains), no step outstanding."""
    d = Driver()
    d.start()
    d.answer(loaded(capabilities, push=push, cadence=cadence, channels=channels))
    d.fire(POLL)
    if cadence.auto_sync:
        d.answer(Inherited(False), Synced(listed=True))
    d.answer(Drained(None))
    assert d.step is None
    return d


# -- start and load ---------------------------------------------------------------------------


def test_start_loads_first() -> None:
    assert Driver().start() == [Load()]


def test_loaded_arms_channel_renewals_and_an_immediate_poll() -> None:
    d = Driver()
    d.start()
    out = d.answer(loaded(GOOGLE, channels=(("a", 30.0), ("b", None))))
    assert out == [Arm(push_deadline("a"), 30.0), Arm(POLL, 0.0)]
    assert d.core.state.channels == {"a", "b"}
    assert d.step is None


def test_loaded_arms_the_keepalive_only_when_the_kind_needs_it() -> None:
    d = Driver()
    d.start()
    out = d.answer(loaded(MICROSOFT, channels=(("primary", 100.0),)))
    assert out == [Arm(KEEPALIVE, 3600.0), Arm(push_deadline("primary"), 100.0), Arm(POLL, 0.0)]


def test_not_runnable_with_stop_stops_unfenced() -> None:
    d = Driver()
    d.start()
    assert d.answer(NotRunnable("shard not held", stop=True)) == [
        ShowStatus("shard not held"),
        Stop(fenced=False),
    ]


def test_not_runnable_parks_until_resumed() -> None:
    d = Driver()
    d.start()
    out = d.answer(NotRunnable("parked (paused)", stop=False))
    assert out == [*OWN_DEADLINES, ShowStatus("parked (paused)")]
    assert d.core.state.parked
    e = entry("1-0", Changed("a"))
    assert d.post(Changed("a"), e) == []  # held for the resumed incarnation
    assert d.post(SyncNow()) == []
    assert d.post(OutboxDue()) == []
    assert d.fire(POLL) == []
    assert d.post(Resume()) == [Load()]
    assert d.answer(loaded()) == [Arm(POLL, 0.0)]
    assert d.fire(POLL) == [Inherit()]
    assert d.answer(Inherited(False)) == [SyncAll(reconcile=True)]
    assert d.answer(Synced(listed=True))[0] == Acknowledge((e,))


# -- polls --------------------------------------------------------------------------------------


def test_first_poll_inherits_then_syncs_listing_then_drains() -> None:
    d = Driver()
    d.start()
    d.answer(loaded())
    assert d.fire(POLL) == [Inherit()]
    assert d.answer(Inherited(False)) == [SyncAll(reconcile=True)]
    assert d.answer(Synced(listed=True)) == [ShowStatus("synced"), Arm(POLL, 60.0), DrainOutbox()]
    assert d.answer(Drained(None)) == [Cancel(OUTBOX)]
    assert d.step is None
    # Inherited now: later polls do not again, but list the calendars each time (one added,
    # renamed or removed since reaches the store within a poll interval).
    assert d.fire(POLL) == [SyncAll(reconcile=True)]


def test_unsettled_inherited_writes_drain_before_the_first_sync() -> None:
    d = Driver()
    d.start()
    d.answer(loaded())
    d.fire(POLL)
    assert d.answer(Inherited(True)) == [DrainOutbox()]
    assert d.answer(Drained(None)) == [Cancel(OUTBOX), SyncAll(reconcile=True)]
    assert d.answer(Synced(listed=True))[-1] == DrainOutbox()


def test_a_failed_first_listing_lists_again_at_the_retry() -> None:
    d = Driver()
    d.start()
    d.answer(loaded())
    d.fire(POLL)
    d.answer(Inherited(False), TRANSIENT, Drained(None))
    assert d.fire(POLL) == [Inherit()]  # still not listed in this incarnation


# -- what a sync acknowledges -------------------------------------------------------------------


def test_a_calendar_sync_acknowledges_that_calendars_entries_only() -> None:
    d = running(POLLED)
    changed_a, sync_now = entry("1-0", Changed("a")), entry("2-0", SyncNow())
    assert d.post(Changed("a"), changed_a) == [SyncCalendar("a", full=False)]
    assert d.answer(TRANSIENT)[1] == Arm(POLL, d.armed[POLL])
    d.now += d.armed[POLL]  # posted as the backoff ends (its retry not fired yet)
    assert d.post(SyncNow(), sync_now) == [SyncAll(reconcile=True)]
    d.answer(TRANSIENT)
    assert d.acked == []
    # A sync of "a" covers the Changed entry, not the SyncNow one: no poll replaces the retry.
    d.now += d.armed[POLL]
    assert d.post(Changed("a")) == [SyncCalendar("a", full=False)]
    out = d.answer(Synced((("a", d.now),)))
    assert out == [Acknowledge((changed_a,)), ShowStatus("synced")]
    retry = d.armed[POLL]
    # The retry's sync of every calendar covers the rest.
    assert d.fire(POLL) == [SyncAll(reconcile=True)]
    out = d.answer(Synced())
    assert out == [Acknowledge((sync_now,)), ShowStatus("synced"), Arm(POLL, 60.0), DrainOutbox()]
    assert retry != 60.0
    assert d.core.state.unacked == {}


def test_resync_is_a_full_round_of_its_calendar() -> None:
    d = running(POLLED)
    e = entry("1-0", Resync("a"))
    assert d.post(Resync("a"), e) == [SyncCalendar("a", full=True)]
    assert d.answer(Synced((("a", 5.0),)))[0] == Acknowledge((e,))


def test_sync_now_syncs_every_calendar_listing_them() -> None:
    d = running(POLLED)
    e = entry("1-0", SyncNow())
    assert d.post(SyncNow(), e) == [SyncAll(reconcile=True)]
    assert d.answer(Synced(listed=True)) == [
        Acknowledge((e,)),
        ShowStatus("synced"),
        Arm(POLL, 60.0),
    ]


# -- channels after a sync ------------------------------------------------------------------------


def test_synced_calendars_get_a_channel_each_with_calendar_scope() -> None:
    d = running(GOOGLE)
    d.fire(POLL)
    assert d.answer(Synced((("a", 1.0), ("b", 1.0)))) == [
        ShowStatus("synced"),
        Arm(POLL, 60.0),
        OpenChannel("a", recreate=False),
    ]
    # A new channel: what changed before it opened was announced to nobody.
    assert d.answer(ChannelOpened(120.0)) == [
        Arm(push_deadline("a"), 120.0),
        PostSelf(Changed("a")),
        OpenChannel("b", recreate=False),
    ]
    assert d.answer(ChannelOpened(None)) == [PostSelf(Changed("b")), DrainOutbox()]
    assert d.core.state.channels == {"a", "b"}
    # Both have channels now: the next sync opens none.
    d.answer(Drained(None))
    d.fire(POLL)
    assert d.answer(Synced((("a", 2.0), ("b", 2.0)))) == [
        ShowStatus("synced"),
        Arm(POLL, 60.0),
        DrainOutbox(),
    ]


def test_mailbox_scope_opens_one_channel_keyed_to_primary() -> None:
    d = running(MICROSOFT)
    d.fire(POLL)
    out = d.answer(Synced((("a", 1.0), ("primary", 1.0))))
    assert out == [ShowStatus("synced"), Arm(POLL, 60.0), OpenChannel("primary", recreate=False)]


def test_no_channel_without_a_push_address_or_for_a_polled_kind() -> None:
    for d in (running(GOOGLE, push=False), running(POLLED)):
        d.fire(POLL)
        assert d.answer(Synced((("primary", 1.0),))) == [
            ShowStatus("synced"),
            Arm(POLL, 60.0),
            DrainOutbox(),
        ]


def test_a_replaced_channel_is_followed_by_an_incremental_round() -> None:
    # Before: a renewal ran no catch-up sync, so a message lost to the old channel waited for
    # the 15-minute poll.
    d = running(GOOGLE, channels=(("a", 30.0),))
    assert d.fire(push_deadline("a")) == [CheckFollowed("a")]
    assert d.answer(Followed(True)) == [OpenChannel("a", recreate=False)]
    assert d.answer(ChannelOpened(30.0)) == [
        Arm(push_deadline("a"), 30.0),
        PostSelf(Changed("a")),
    ]


def test_a_calendar_its_provider_will_not_watch_is_polled_at_its_own_cadence() -> None:
    # Before: the actor asked for a channel every 15 minutes forever, and the audit reported
    # no_channel forever.
    d = running(GOOGLE)
    d.post(Changed("h"), entry("1-0", Changed("h")))
    assert d.answer(Synced((("h", d.now),)))[-1] == OpenChannel("h", recreate=False)
    out = d.answer(ChannelRefused())
    assert out == [Cancel(push_deadline("h")), Arm(UNWATCHED_PREFIX + "h", 6 * 3600.0)]
    assert d.core.state.unwatchable == {"h"}
    # Its deadline syncs it; the sync re-arms it and asks for no channel.
    assert d.fire(UNWATCHED_PREFIX + "h") == [SyncCalendar("h", full=False)]
    out = d.answer(Synced((("h", d.now),)))
    assert Arm(UNWATCHED_PREFIX + "h", 6 * 3600.0) in out
    assert not any(isinstance(c, OpenChannel) for c in out)
    # A new incarnation learns it from storage and does not ask again either.
    again = Driver()
    again.start()
    again.answer(loaded(GOOGLE, unwatchable=("h",)))
    again.fire(POLL)
    out = again.answer(Inherited(False), Synced((("h", 0.0),), listed=True))
    assert not any(isinstance(c, OpenChannel) for c in out)


def test_listing_closes_channels_of_calendars_no_longer_followed() -> None:
    d = running(GOOGLE, channels=(("a", None), ("b", None), ("c", None)))
    d.fire(POLL)
    out = d.answer(Synced(listed=True, followed=("a",)))
    assert out == [ShowStatus("synced"), Arm(POLL, 60.0), CloseChannel("b")]
    assert d.answer(ChannelClosed()) == [Cancel(push_deadline("b")), CloseChannel("c")]
    assert d.answer(ChannelClosed()) == [Cancel(push_deadline("c")), DrainOutbox()]
    assert d.core.state.channels == {"a"}


def test_a_mailbox_subscription_is_not_closed_by_a_listing() -> None:
    d = running(MICROSOFT, channels=(("primary", None),))
    d.fire(POLL)
    assert d.answer(Synced(listed=True, followed=("a",)))[0] == ShowStatus("synced")


# -- failures of a sync step ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ErrorKind.TRANSIENT, ErrorKind.THROTTLED])
def test_a_retryable_failure_arms_the_poll_with_backoff_and_acknowledges_nothing(
    kind: ErrorKind,
) -> None:
    d = running(POLLED)
    e = entry("1-0", Changed("a"))
    d.post(Changed("a"), e)
    retry_after = 120.0 if kind is ErrorKind.THROTTLED else None
    out = d.answer(ProviderFailed(kind, "slow down", retry_after))
    assert len(out) == 2
    assert isinstance(out[0], ShowStatus) and out[0].text.endswith(f"({kind.value})")
    assert isinstance(out[1], Arm) and out[1].name == POLL
    floor = 120.0 if retry_after else CONFIG.retry_initial_s / 2
    assert floor <= out[1].delay_s <= max(120.0, CONFIG.retry_initial_s)
    assert d.acked == [] and d.step is None
    assert d.core.state.unacked == {"a": [e]}
    # Consecutive failures back off further.
    d.fire(POLL)
    second = d.answer(TRANSIENT)
    assert isinstance(second[1], Arm)
    assert second[1].delay_s >= CONFIG.retry_initial_s


def test_notifications_during_a_backoff_wait_for_its_retry() -> None:
    # Before: each notification started a sync at once while a throttled account backed off
    # (13 refused calls in 6 s): now they are held, and the retry covers them.
    d = running(POLLED)
    first = entry("1-0", Changed("a"))
    d.post(Changed("a"), first)
    out = d.answer(ProviderFailed(ErrorKind.THROTTLED, "rateLimitExceeded", None))
    retry = d.armed[POLL]
    assert out[1] == Arm(POLL, retry)
    d.now += retry / 2
    later, full = entry("2-0", Changed("b")), entry("3-0", Resync("c"))
    every = entry("4-0", SyncNow())
    assert d.post(Changed("b"), later) == [Arm(POLL, retry / 2)]
    assert d.post(Resync("c"), full) == [Arm(POLL, retry / 2)]
    assert d.post(SyncNow(), every) == [Arm(POLL, retry / 2)]
    assert d.fire(SETTLE_PREFIX + "a") == [Arm(POLL, retry / 2)]  # a settle waits too
    assert d.step is None and d.acked == []
    # The retry: first the full round asked for meanwhile, then every calendar.
    d.now += retry / 2
    assert d.fire(POLL) == [SyncCalendar("c", full=True)]
    assert d.answer(Synced((("c", d.now),))) == [
        Acknowledge((full,)),
        ShowStatus("synced"),
        SyncAll(reconcile=True),
    ]
    d.answer(Synced(), Drained(None))
    assert set(d.acked) == {first, later, full, every} and d.core.state.unacked == {}
    # Once a sync succeeded, a notification syncs at once again.
    d.now += 100.0
    assert d.post(Changed("a"), entry("5-0", Changed("a"))) == [SyncCalendar("a", full=False)]


def test_a_full_round_failing_is_done_first_at_the_retry() -> None:
    d = running(POLLED)
    d.post(Resync("c"), entry("1-0", Resync("c")))
    d.answer(TRANSIENT)
    d.now += d.armed[POLL]
    assert d.fire(POLL) == [SyncCalendar("c", full=True)]
    # Failing again, the calendar syncs queued behind it wait for the next retry.
    assert d.answer(TRANSIENT)[-1] == DrainOutbox()
    d.answer(Drained(None))
    d.now += d.armed[POLL]
    assert d.fire(POLL) == [SyncCalendar("c", full=True)]


@pytest.mark.parametrize("failure", [ProviderFailed(ErrorKind.PERMANENT, "no"), Crashed()])
def test_a_crash_hands_every_held_entry_back_then_raises(failure: Outcome) -> None:
    d = running(POLLED)
    held = entry("1-0", Changed("a"))
    d.post(Changed("a"), held)
    d.answer(TRANSIENT)
    now = entry("2-0", SyncNow())
    d.now += d.armed[POLL]  # the backoff is over
    d.post(SyncNow(), now)
    assert d.answer(failure) == [PostSelf(SyncNow(), held), PostSelf(SyncNow(), now), Raise()]
    assert d.core.state.unacked == {}


def test_a_non_sync_step_failing_at_the_provider_raises() -> None:
    d = running(POLLED)
    d.post(OutboxDue())
    assert d.answer(ProviderFailed(ErrorKind.TRANSIENT, "503")) == [Raise()]


def test_revoked_consent_records_it_then_parks_until_resumed() -> None:
    d = running(GOOGLE, channels=(("a", 30.0),))
    e = entry("1-0", Changed("a"))
    d.post(Changed("a"), e)
    assert d.answer(Revoked("invalid_grant")) == [RecordRevoked("invalid_grant")]
    out = d.answer(Done())
    assert out == [*OWN_DEADLINES, Cancel(push_deadline("a")), ShowStatus("needs_reauth")]
    assert d.armed == {}
    assert d.core.state.parked and d.acked == []
    # Nothing starts a step while parked, deadlines included.
    assert d.post(Changed("a"), entry("2-0", Changed("a"))) == []
    assert d.post(ChannelRemoved("a")) == []
    assert d.post(Reauthorize("a")) == []
    assert d.post(OutboxDue()) == []
    for name in (POLL, REBASE, KEEPALIVE, OUTBOX, push_deadline("a"), SETTLE_PREFIX + "a"):
        assert d.fire(name) == []
    assert d.post(Resume()) == [Load()]


def test_revoked_then_fenced_while_recording_stops() -> None:
    d = running(POLLED)
    d.fire(POLL)
    d.answer(Revoked("gone"))
    out = d.answer(Fenced())
    assert out == [*OWN_DEADLINES, ShowStatus("stale epoch"), Stop(fenced=True)]


def test_fenced_parks_and_stops_fenced() -> None:
    d = running(POLLED)
    e = entry("1-0", Changed("a"))
    d.post(Changed("a"), e)
    assert d.answer(Fenced()) == [*OWN_DEADLINES, ShowStatus("stale epoch"), Stop(fenced=True)]
    assert d.acked == []  # the next owner syncs it


def test_unloaded_does_nothing() -> None:
    d = running(POLLED)
    d.post(Changed("a"))
    assert d.answer(Unloaded()) == []
    assert d.step is None


def test_step_done_without_a_step_is_refused() -> None:
    with pytest.raises(RuntimeError):
        AccountCore(CONFIG, random.Random(0)).step_done(Done(), 0.0)


# -- channel steps and the push deadline ----------------------------------------------------------


def test_a_failed_channel_step_arms_its_push_deadline() -> None:
    d = running(GOOGLE)
    d.fire(POLL)
    d.answer(Synced((("a", 1.0),)))
    assert d.step == OpenChannel("a", recreate=False)
    out = d.answer(TRANSIENT)
    assert len(out) == 2 and out[1] == DrainOutbox()
    assert isinstance(out[0], Arm) and out[0].name == push_deadline("a")
    # A permanent error is not raised: the longest backoff, then another try.
    d.answer(Drained(None))
    d.fire(push_deadline("a"))
    d.answer(Followed(True))
    assert d.answer(ProviderFailed(ErrorKind.PERMANENT, "no")) == [
        Arm(push_deadline("a"), CONFIG.retry_max_s)
    ]


def test_push_deadline_of_an_unfollowed_calendar_closes_its_channel() -> None:
    d = running(GOOGLE, channels=(("a", 30.0),))
    assert d.fire(push_deadline("a")) == [CheckFollowed("a")]
    assert d.answer(Followed(False)) == [CloseChannel("a")]
    assert d.answer(ChannelClosed()) == [Cancel(push_deadline("a"))]
    assert d.core.state.channels == set()


def test_a_failed_close_retries_through_the_push_deadline() -> None:
    d = running(GOOGLE, channels=(("a", 30.0),))
    d.fire(push_deadline("a"))
    d.answer(Followed(False))
    out = d.answer(TRANSIENT)
    assert len(out) == 1 and isinstance(out[0], Arm) and out[0].name == push_deadline("a")


def test_push_deadline_with_mailbox_scope_renews_directly() -> None:
    d = running(MICROSOFT, channels=(("primary", 30.0),))
    assert d.fire(push_deadline("primary")) == [OpenChannel("primary", recreate=False)]
    assert d.answer(ChannelOpened(50.0)) == [
        Arm(push_deadline("primary"), 50.0),
        PostSelf(Changed("primary")),
    ]


# -- settling a hot calendar ----------------------------------------------------------------------


def settle_delay(out: list[Command], calendar_id: str) -> float:
    """The delay of the settle deadline ``out`` arms, and nothing else."""
    assert len(out) == 1 and isinstance(out[0], Arm), out
    assert out[0].name == SETTLE_PREFIX + calendar_id
    return out[0].delay_s


def test_a_change_read_just_after_its_calendars_sync_waits_for_the_burst_to_pause() -> None:
    d = running(POLLED)
    d.now = 10.0
    d.post(Changed("a"))
    d.answer(Synced((("a", 10.0),)))
    first = entry("1-0", Changed("a"), read_at=10.01)
    d.now = 10.01
    assert settle_delay(d.post(Changed("a"), first), "a") == pytest.approx(CONFIG.settle_quiet_s)
    # Still hot: the next notice (read later) re-arms the settle deadline, no sync yet.
    second = entry("2-0", Changed("a"), read_at=10.5)
    d.now = 10.5
    assert settle_delay(d.post(Changed("a"), second), "a") == pytest.approx(0.05)
    # Capped at settle_max_s after the first one held.
    d.now = 10.99
    out = d.post(Changed("a"), entry("3-0", Changed("a"), read_at=10.99))
    assert settle_delay(out, "a") == pytest.approx(0.02)
    assert d.step is None and d.acked == []
    d.now = 11.2
    assert d.fire(SETTLE_PREFIX + "a") == [SyncCalendar("a", full=False)]
    out = d.answer(Synced((("a", 11.2),)))
    assert isinstance(out[0], Acknowledge)
    assert [e.entry_id for e in out[0].entries] == ["1-0", "2-0", "3-0"]
    # Quiet again: a change read well after the sync syncs at once.
    d.now = 20.0
    late = entry("4-0", Changed("a"), read_at=20.0)
    assert d.post(Changed("a"), late) == [SyncCalendar("a", full=False)]


def test_a_park_cancels_a_settling_burst_and_forgets_it() -> None:
    d = running(POLLED)
    d.post(Changed("a"))
    d.answer(Synced((("a", 0.0),)))
    d.post(Changed("a"), entry("1-0", Changed("a"), read_at=0.01))
    assert SETTLE_PREFIX + "a" in d.armed
    d.fire(POLL)
    assert d.answer(Revoked("gone"), Done())[-2:] == [
        Cancel(SETTLE_PREFIX + "a"),
        ShowStatus("needs_reauth"),
    ]
    d.post(Resume())
    d.answer(loaded(POLLED))
    d.now = 100.0
    # Resumed, the calendar is not hot any more: a change syncs at once.
    assert d.post(Changed("a"), entry("2-0", Changed("a"), read_at=100.0)) == [
        SyncCalendar("a", full=False)
    ]


# -- an account that syncs only when asked ------------------------------------------------------


def test_without_auto_sync_changes_are_acknowledged_at_once_and_polls_only_drain() -> None:
    d = running(GOOGLE, cadence=MANUAL)
    changed, resync = entry("1-0", Changed("a")), entry("2-0", Resync("a"))
    assert d.post(Changed("a"), changed) == [Acknowledge((changed,))]
    assert d.post(Resync("a"), resync) == [Acknowledge((resync,))]
    assert d.post(Changed("a")) == []
    assert d.fire(POLL) == [DrainOutbox()]
    assert d.answer(Drained(None)) == [Cancel(OUTBOX)]
    # Asked: it syncs, and opens no channel (push only serves automatic syncs).
    asked = entry("3-0", SyncNow())
    assert d.post(SyncNow(), asked) == [SyncAll(reconcile=True)]
    assert d.answer(Synced((("a", 1.0),), listed=True)) == [
        Acknowledge((asked,)),
        ShowStatus("synced"),
        Arm(POLL, 60.0),
    ]


# -- preferences ----------------------------------------------------------------------------------


def test_a_new_window_takes_a_full_round_then_acknowledges() -> None:
    d = running(POLLED)
    e = entry("1-0", PreferencesChanged())
    assert d.post(PreferencesChanged(), e) == [ReloadPreferences()]
    assert d.answer(PreferencesLoaded(WIDER)) == [ResyncAll()]
    assert d.answer(Synced()) == [
        ShowStatus("synced"),
        Arm(POLL, 60.0),
        Acknowledge((e,)),
    ]
    assert d.core.state.cadence == WIDER


def test_a_new_frequency_rearms_the_poll_and_turning_auto_sync_off_cancels_it() -> None:
    d = running(POLLED)
    d.post(PreferencesChanged())
    assert d.answer(PreferencesLoaded(SLOWER)) == [Arm(POLL, 600.0)]
    d.post(PreferencesChanged())
    assert d.answer(PreferencesLoaded(MANUAL)) == [Cancel(POLL)]
    d.post(PreferencesChanged())
    assert d.answer(PreferencesLoaded(AUTO)) == [Arm(POLL, 0.0)]  # back on: sync at once


def test_preferences_while_parked_are_acknowledged_and_read_at_resume() -> None:
    d = Driver()
    d.start()
    d.answer(NotRunnable("parked (paused)", stop=False))
    e = entry("1-0", PreferencesChanged())
    assert d.post(PreferencesChanged(), e) == [Acknowledge((e,))]


# -- channel notices ------------------------------------------------------------------------------


def test_a_removed_channel_is_recreated_then_its_calendar_synced() -> None:
    d = running(GOOGLE, channels=(("a", None),))
    e = entry("1-0", ChannelRemoved("a"))
    assert d.post(ChannelRemoved("a"), e) == [OpenChannel("a", recreate=True)]
    assert d.answer(ChannelOpened(None)) == [SyncCalendar("a", full=False)]
    assert d.answer(Synced((("a", 1.0),)))[0] == Acknowledge((e,))


def test_reauthorize_renews_the_channel_then_acknowledges() -> None:
    d = running(MICROSOFT, channels=(("primary", 30.0),))
    e = entry("1-0", Reauthorize("primary"))
    assert d.post(Reauthorize("primary"), e) == [OpenChannel("primary", recreate=False)]
    assert d.answer(ChannelOpened(40.0)) == [
        Arm(push_deadline("primary"), 40.0),
        PostSelf(Changed("primary")),
        Acknowledge((e,)),
    ]
    assert d.core.state.unacked == {}


def test_reauthorize_for_a_calendar_without_channel_is_acknowledged_at_once() -> None:
    d = running(MICROSOFT)
    e = entry("1-0", Reauthorize("a"))
    assert d.post(Reauthorize("a"), e) == [Acknowledge((e,))]


def test_a_failed_reauthorize_waits_for_its_calendars_next_sync() -> None:
    d = running(MICROSOFT, channels=(("primary", 30.0),))
    e = entry("1-0", Reauthorize("primary"))
    d.post(Reauthorize("primary"), e)
    out = d.answer(TRANSIENT)
    assert len(out) == 1 and isinstance(out[0], Arm)
    assert d.acked == [] and POLL in d.armed
    d.fire(POLL)
    assert d.answer(Synced())[0] == Acknowledge((e,))


# -- outbox, keep-alive, rebase -----------------------------------------------------------------


def test_outbox_due_drains_and_arms_or_cancels_the_outbox_deadline() -> None:
    d = running(POLLED)
    assert d.post(OutboxDue()) == [DrainOutbox()]
    assert d.answer(Drained(30.0)) == [Arm(OUTBOX, 30.0)]
    assert d.fire(OUTBOX) == [DrainOutbox()]
    assert d.answer(Drained(None)) == [Cancel(OUTBOX)]
    d.post(OutboxDue())
    assert d.answer(Done()) == []  # no credentials to write with


def test_keepalive_refreshes_the_token_and_rearms() -> None:
    d = running(MICROSOFT)
    assert d.fire(KEEPALIVE) == [RefreshToken()]
    # A refresh counts as a successful provider round: the poll is re-armed from it.
    assert d.answer(Done()) == [Arm(KEEPALIVE, 3600.0), ShowStatus("synced"), Arm(POLL, 60.0)]


def test_rebase_deadline_and_the_rebase_delay_a_sync_reports() -> None:
    d = running(POLLED)
    d.fire(POLL)
    assert d.answer(Synced(rebase_in_s=7200.0))[0] == Arm(REBASE, 7200.0)
    d.answer(Drained(None))
    assert d.fire(REBASE) == [Rebase()]
    assert d.answer(Synced(rebase_in_s=3600.0)) == [
        Arm(REBASE, 3600.0),
        ShowStatus("synced"),
        Arm(POLL, 60.0),
    ]


# -- entries the ending incarnation still meant to acknowledge ----------------------------------


def test_a_crashed_preferences_reload_hands_its_entry_back() -> None:
    d = running(POLLED)
    e = entry("1-0", PreferencesChanged())
    d.post(PreferencesChanged(), e)
    assert d.answer(Crashed()) == [PostSelf(SyncNow(), e), Raise()]


def test_a_sync_is_acknowledged_before_the_channels_it_closes() -> None:
    # A close ending in a crash must not drop the acknowledgement of what the sync committed.
    d = running(GOOGLE, channels=(("a", None), ("b", None)))
    e = entry("1-0", SyncNow())
    d.post(SyncNow(), e)
    out = d.answer(Synced(listed=True, followed=("a",)))
    assert out == [Acknowledge((e,)), ShowStatus("synced"), Arm(POLL, 60.0), CloseChannel("b")]
    assert d.answer(Crashed()) == [Raise()]


def test_a_park_while_closing_a_channel_is_the_last_word() -> None:
    # The sync's status and poll come before the close: parking then leaves nothing armed.
    d = running(GOOGLE, channels=(("a", None), ("b", None)))
    d.fire(POLL)
    d.answer(Synced(listed=True, followed=("a",)))
    assert d.answer(Revoked("gone")) == [RecordRevoked("gone")]
    out = d.answer(Done())
    assert out == [*OWN_DEADLINES, *map(Cancel, ("push:a", "push:b")), ShowStatus("needs_reauth")]
    assert d.armed == {} and d.step is None


def test_without_auto_sync_a_failed_asked_sync_is_retried_by_the_poll() -> None:
    d = running(POLLED, cadence=MANUAL)
    e = entry("1-0", SyncNow())
    d.post(SyncNow(), e)
    out = d.answer(TRANSIENT)
    assert isinstance(out[1], Arm) and out[1].name == POLL
    # The retry syncs (an entry waits for it), not only drains.
    assert d.fire(POLL) == [Inherit()]  # the failed sync was to list the calendars first
    assert d.answer(Inherited(False)) == [SyncAll(reconcile=True)]
    assert d.answer(Synced(listed=True))[0] == Acknowledge((e,))
    d.answer(Drained(None))
    assert d.fire(POLL) == [DrainOutbox()]  # nothing waits: a poll drains only


def test_without_auto_sync_an_entry_held_while_parked_is_synced_at_resume() -> None:
    d = Driver()
    d.start()
    d.answer(NotRunnable("parked (paused)", stop=False))
    e = entry("1-0", SyncNow())
    assert d.post(SyncNow(), e) == []
    d.post(Resume())
    assert d.answer(loaded(POLLED, cadence=MANUAL)) == [Arm(POLL, 0.0)]
    assert d.fire(POLL) == [Inherit()]
    assert d.answer(Inherited(False)) == [SyncAll(reconcile=True)]
    assert d.answer(Synced(listed=True))[0] == Acknowledge((e,))


def test_turning_auto_sync_off_keeps_the_retry_of_held_entries() -> None:
    d = running(POLLED)
    d.post(Changed("a"), entry("1-0", Changed("a")))
    d.answer(TRANSIENT)
    d.post(PreferencesChanged())
    assert d.answer(PreferencesLoaded(MANUAL)) == []
    assert POLL in d.armed
    assert d.fire(POLL) == [SyncAll(reconcile=True)]


def test_without_auto_sync_a_failed_reauthorize_renewal_acknowledges() -> None:
    # No sync comes unasked to cover it: it goes now, as a change would; the push deadline
    # retries the renewal.
    d = running(MICROSOFT, cadence=MANUAL, channels=(("primary", 30.0),))
    e = entry("1-0", Reauthorize("primary"))
    d.post(Reauthorize("primary"), e)
    out = d.answer(TRANSIENT)
    assert len(out) == 2 and out[1] == Acknowledge((e,))
    assert isinstance(out[0], Arm) and out[0].name == push_deadline("primary")
    assert d.core.state.unacked == {}


def test_the_retry_of_a_channel_that_never_opened_outlives_a_park_harmlessly() -> None:
    d = running(GOOGLE)
    d.fire(POLL)
    d.answer(Synced((("a", 1.0),)))
    d.answer(TRANSIENT)  # the new channel of "a" failed to open: push:a retries it
    d.answer(Revoked("gone"), Done())
    assert list(d.armed) == [push_deadline("a")]  # not the core's to cancel: no channel
    assert d.fire(push_deadline("a")) == []  # and ignored while parked


# == the property test ==========================================================================

CALENDARS = ("primary", "a", "b")
SEEDS, EVENTS = 300, 200


@dataclass(slots=True)
class Held:
    """One posted entry not yet acknowledged, and what the test lets acknowledge it."""

    entry: InboxEntry
    posted: int  # the event counter when it was posted
    scope: str | None  # a sync of this calendar covers it (None: only a sync of every one)
    by_channel: bool = False  # a ``Reauthorize``: its channel opening covers it too
    by_reload: bool = False  # a ``PreferencesChanged``: the reload covers it (and only that)
    covered: bool = False


@dataclass(slots=True)
class Model:
    """What the test knows independently of the core about one incarnation."""

    parked: bool = False
    cadence: Cadence = AUTO
    capabilities: Capabilities = POLLED
    push: bool = False
    unwatchable: frozenset[str] = frozenset()  # the provider refuses their channels

    def pushes(self, calendar_id: str) -> bool:
        return (
            self.push
            and self.capabilities.pushes_calendar(calendar_id)
            and calendar_id not in self.unwatchable
        )


@dataclass(slots=True)
class Simulation:
    """One seeded run across as many incarnations as crashes and stops make."""

    seed: int
    rng: random.Random = field(init=False)
    driver: Driver = field(init=False)
    model: Model = field(default_factory=Model)
    clock: int = 0  # counts events and steps: "posted before the step started"
    step_started: int = 0
    held: dict[str, Held] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    excused: set[str] = field(default_factory=set)  # held when an incarnation stopped
    posted: set[str] = field(default_factory=set)
    mailbox: list[tuple[AccountMessage, list[InboxEntry]]] = field(default_factory=list)
    finishing: bool = False  # answer every step with success
    backoff: bool = False  # a sync failed retryably in the running handler
    retry_at: float | None = None  # a failed sync's retry time: no calendar sync before it
    quiet: bool = False  # the running handler must start no calendar sync (backing off)
    ids: int = 0
    incarnations: int = 0
    trace: list[str] = field(default_factory=list)  # what happened, for a failure's message
    seen: set[str] = field(default_factory=set)  # "Step:Outcome" answered, commands released

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.driver = Driver(CONFIG, self.seed)

    # -- running one handler the way the shell does ---------------------------------------------

    def handle(self, first: list[Command]) -> None:
        self.backoff = False
        self.trace.append(f"  -> {first}")
        self.observe(first, None)
        while self.driver.step is not None:
            step = self.driver.step
            outcome = self.success(step) if self.finishing else self.outcome(step)
            self.before_answer(step, outcome)
            self.seen.add(f"{type(step).__name__}:{type(outcome).__name__}")
            batch = self.driver.answer(outcome)
            self.trace.append(f"  {outcome} -> {batch}")
            self.observe(batch, (step, outcome))
        self.between_events()

    def before_answer(self, step: Step, outcome: Outcome) -> None:
        m = self.model
        covers: list[Held] = []
        if isinstance(step, SyncAll) and isinstance(outcome, Synced):
            covers = [h for h in self.held.values() if not h.by_reload]
        elif isinstance(step, SyncCalendar) and isinstance(outcome, Synced):
            covers = [
                h for h in self.held.values() if h.scope == step.calendar_id and not h.by_reload
            ]
        elif isinstance(step, OpenChannel) and (
            # Renewed, or refused for good (nothing left to renew: the calendar is polled).
            isinstance(outcome, ChannelOpened | ChannelRefused)
            # With auto_sync off no sync would come unasked: a failed renewal lets it go.
            or (isinstance(outcome, ProviderFailed) and not m.cadence.auto_sync)
        ):
            covers = [h for h in self.held.values() if h.by_channel and h.scope == step.calendar_id]
        elif isinstance(step, ReloadPreferences) and isinstance(outcome, PreferencesLoaded):
            covers = [h for h in self.held.values() if h.by_reload]
            m.cadence = outcome.cadence
        for h in covers:
            if h.posted < self.step_started:
                h.covered = True
        if isinstance(outcome, Loaded):
            m.cadence, m.capabilities, m.push = (
                outcome.cadence,
                outcome.capabilities,
                outcome.push_enabled,
            )
            m.unwatchable = frozenset(outcome.unwatchable)
        if isinstance(step, OpenChannel) and isinstance(outcome, ChannelRefused):
            m.unwatchable |= {step.calendar_id}
        parks = (
            isinstance(outcome, Fenced)
            or (isinstance(step, Load) and isinstance(outcome, NotRunnable) and not outcome.stop)
            or (isinstance(step, RecordRevoked) and isinstance(outcome, Done))
        )
        if parks:
            m.parked = True

    def observe(self, batch: list[Command], answered: tuple[Step, Outcome] | None) -> None:
        """Check one batch against the model (the driver checked its shape)."""
        m, d = self.model, self.driver
        for command in batch:
            self.seen.add(type(command).__name__)
            if isinstance(command, Arm):
                self.seen.add(f"Arm {command.name}")
            elif isinstance(command, Stop):
                self.seen.add(f"Stop fenced={command.fenced}")
            if isinstance(command, STEPS):
                self.clock += 1
                self.step_started = self.clock
                assert not m.parked, f"{command} started while parked"
                if isinstance(command, SYNCS):
                    assert not self.backoff, f"{command} started in the handler of a retry"
                if isinstance(command, SyncAll | SyncCalendar):
                    assert not self.quiet, f"{command} started while backing off"
            elif isinstance(command, Acknowledge):
                for e in command.entries:
                    h = self.held.pop(e.entry_id, None)
                    assert h is not None, f"{e.entry_id} acknowledged but not held"
                    assert h.covered, f"{e.entry_id} acknowledged before a covering success"
                    assert e.entry_id not in self.acked, f"{e.entry_id} acknowledged twice"
                    self.acked.add(e.entry_id)
            elif isinstance(command, PostSelf):
                if command.entry is not None:
                    assert command.message == SyncNow(), f"{command} hands back as what?"
                    assert isinstance(batch[-1], Raise), "an entry handed back without a Raise"
                    h = self.held.pop(command.entry.entry_id, None)
                    assert h is not None, f"{command.entry.entry_id} handed back but not held"
                    self.deliver_later(command.message, [command.entry])
                else:
                    self.deliver_later(command.message, [])
        if answered is None:
            return
        step, outcome = answered
        if (
            isinstance(step, SYNCS)
            and isinstance(outcome, ProviderFailed)
            and outcome.kind in (ErrorKind.TRANSIENT, ErrorKind.THROTTLED)
        ):
            arms = [c for c in batch if isinstance(c, Arm) and c.name == POLL]
            assert arms, f"no retry armed after {outcome}"
            assert arms[0].delay_s >= (outcome.retry_after_s or 0.0)
            assert arms[0].delay_s >= CONFIG.retry_initial_s / 2
            self.backoff = True
            self.retry_at = d.now + arms[0].delay_s
        elif isinstance(step, SYNCS) and isinstance(outcome, Synced):
            self.retry_at = None
        if isinstance(outcome, Loaded):
            self.retry_at = None
        if isinstance(step, OpenChannel | CloseChannel) and isinstance(outcome, ProviderFailed):
            retry = push_deadline(step.calendar_id)
            assert any(isinstance(c, Arm) and c.name == retry for c in batch), f"{retry} not armed"
        if m.parked:
            # Every deadline is disarmed but the retry of a channel that never opened: a
            # parked core ignores it, and a resumed one may as well try again.
            left = [n for n in d.armed if not self.channel_retry(n)]
            assert not left, f"parked with deadlines armed: {left}"

    def channel_retry(self, name: str) -> bool:
        if not name.startswith("push:"):
            return False
        return name.removeprefix("push:") not in self.driver.core.state.channels

    def between_events(self) -> None:
        """What holds whenever no handler runs."""
        d, m = self.driver, self.model
        assert d.step is None
        if d.raised or d.stopped is not None:
            return
        assert d.core.state.parked == m.parked
        core_held = {e.entry_id for es in d.core.state.unacked.values() for e in es}
        assert core_held == set(self.held), f"core holds {core_held}, model {set(self.held)}"
        if m.parked:
            return
        for h in self.held.values():
            settles = h.scope is not None and SETTLE_PREFIX + h.scope in d.armed
            assert POLL in d.armed or settles, f"{h.entry.entry_id} held with no sync armed"

    # -- events ------------------------------------------------------------------------------------

    def deliver_later(self, message: AccountMessage, entries: list[InboxEntry]) -> None:
        for queued, items in self.mailbox:  # a mailbox coalesces equal messages
            if queued == message:
                items.extend(entries)
                return
        self.mailbox.append((message, entries))

    def post(self, message: AccountMessage, entries: list[InboxEntry]) -> None:
        self.clock += 1
        m = self.model
        for e in entries:
            self.posted.add(e.entry_id)
            self.held[e.entry_id] = self.rule(message, e)
        if isinstance(message, Resume):
            m.parked = False
        self.trace.append(f"post {message} {[e.entry_id for e in entries]} at {self.driver.now}")
        self.quiet = self.backing_off() and isinstance(message, Changed | Resync | SyncNow)
        self.handle(self.driver.post(message, *entries))
        self.quiet = False

    def backing_off(self) -> bool:
        return self.retry_at is not None and self.driver.now < self.retry_at

    def rule(self, message: AccountMessage, e: InboxEntry) -> Held:
        """Which success may acknowledge ``e``, posted with ``message`` now."""
        m, at = self.model, self.clock
        if isinstance(message, PreferencesChanged):
            return Held(e, at, None, by_reload=True, covered=m.parked)
        if isinstance(message, Changed | Resync):
            return Held(e, at, message.calendar_id, covered=not m.cadence.auto_sync)
        if isinstance(message, ChannelRemoved | Reauthorize) and not m.parked:
            if isinstance(message, Reauthorize):
                pushes = m.pushes(message.calendar_id)
                return Held(e, at, message.calendar_id, by_channel=True, covered=not pushes)
            return Held(e, at, message.calendar_id)
        return Held(e, at, None)

    def fire(self, name: str) -> None:
        self.clock += 1
        self.trace.append(f"deadline {name} at {self.driver.now}")
        self.quiet = self.backing_off() and name.startswith(SETTLE_PREFIX)
        if name == POLL:
            self.retry_at = None  # the retry itself
        self.handle(self.driver.fire(name))
        self.quiet = False

    def new_entry(self, message: AccountMessage) -> InboxEntry:
        self.ids += 1
        read_at = self.driver.now - self.rng.uniform(0.0, 0.1)
        return entry(f"{self.ids}-0", message, read_at)

    def random_message(self) -> AccountMessage:
        calendar_id = self.rng.choice(CALENDARS)
        choices: list[AccountMessage] = [
            Changed(calendar_id),
            Changed(calendar_id),
            Changed(calendar_id),
            Resync(calendar_id),
            ChannelRemoved(calendar_id),
            Reauthorize(calendar_id),
            SyncNow(),
            PreferencesChanged(),
            OutboxDue(),
            Resume(),
        ]
        if not self.model.parked:
            choices.remove(Resume())  # mostly: a spurious resume is rare but allowed
            if self.rng.random() < 0.05:
                choices.append(Resume())
        else:
            choices += [Resume()] * 2
        return self.rng.choice(choices)

    def random_event(self) -> None:
        rng, d = self.rng, self.driver
        d.now += rng.choice((0.0, 0.01, 0.03, 0.2, 5.0, 120.0))
        roll = rng.random()
        if roll < 0.1 and self.mailbox:
            message, entries = self.mailbox.pop(0)
            self.post(message, entries)
        elif roll < 0.55:
            message = self.random_message()
            stream = not isinstance(message, Resume | OutboxDue)
            entries = [self.new_entry(message) for _ in range(rng.randint(0, 2))] if stream else []
            self.post(message, entries)
        elif d.armed and roll < 0.95:
            self.fire(rng.choice(sorted(d.armed)))
        else:
            self.fire(rng.choice(("mystery", push_deadline("ghost"), SETTLE_PREFIX + "ghost")))

    # -- incarnations ------------------------------------------------------------------------------

    def begin(self) -> None:
        """A fresh incarnation (a fresh core): start it, then deliver its mailbox."""
        self.incarnations += 1
        self.driver = Driver(CONFIG, self.seed * 1000 + self.incarnations)
        self.model = Model()
        self.clock += 1
        self.trace.append(f"incarnation {self.incarnations}")
        self.handle(self.driver.start())
        while self.mailbox and self.driver.stopped is None and not self.driver.raised:
            message, entries = self.mailbox.pop(0)
            self.post(message, entries)

    def after_end(self) -> None:
        """The incarnation raised or stopped: the next one takes over."""
        d = self.driver
        if d.stopped is not None:
            # The shard's next owner (or this replica later) re-reads what is still pending.
            self.excused |= set(self.held)
            for _, entries in self.mailbox:
                self.excused |= {e.entry_id for e in entries}
            self.mailbox.clear()
        else:
            assert not self.held, f"raised holding {sorted(self.held)}"
        self.held.clear()
        self.begin()

    def ended(self) -> bool:
        return self.driver.raised or self.driver.stopped is not None

    def run(self) -> None:
        self.begin()
        for _ in range(EVENTS):
            if self.ended():
                self.after_end()
            else:
                self.random_event()
        self.finish()

    def finish(self) -> None:
        """Resume if parked, poll, answer everything with success, deliver the mailbox."""
        self.finishing = True
        for _ in range(10):
            if self.ended():
                self.after_end()
            if self.model.parked:
                self.post(Resume(), [])
            self.fire(POLL)
            while self.mailbox and not self.ended():
                message, entries = self.mailbox.pop(0)
                self.post(message, entries)
            for name in sorted(self.driver.armed):
                if name.startswith(SETTLE_PREFIX) and not self.ended():
                    self.fire(name)
            if not self.ended() and not self.held and not self.mailbox:
                break
        lost = self.posted - self.acked - self.excused
        assert not lost, f"entries never acknowledged: {sorted(lost)}"
        assert not self.acked & self.excused

    # -- outcomes ----------------------------------------------------------------------------------

    def cadence(self) -> Cadence:
        return self.rng.choice((AUTO, AUTO, AUTO, WIDER, SLOWER, MANUAL))

    def synced(self, step: Step) -> Synced:
        rng, now = self.rng, self.driver.now
        if isinstance(step, SyncCalendar):
            return Synced(((step.calendar_id, now),) if rng.random() < 0.9 else ())
        names = [c for c in CALENDARS if rng.random() < 0.7]
        listed = isinstance(step, SyncAll) and step.reconcile
        followed = tuple(c for c in CALENDARS if rng.random() < 0.8) if listed else None
        rebase = rng.choice((None, None, 3600.0))
        return Synced(tuple((c, now) for c in names), listed, followed, rebase)

    def failure(self) -> Outcome:
        """A provider step's failure: mostly retryable, sometimes the end of the incarnation."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            return TRANSIENT
        if roll < 0.75:
            return ProviderFailed(ErrorKind.THROTTLED, "429", rng.choice((None, 30.0, 3600.0)))
        if roll < 0.8:
            return ProviderFailed(rng.choice((ErrorKind.PERMANENT, ErrorKind.NOT_FOUND)), "no")
        if roll < 0.9:
            return Revoked("invalid_grant")
        if roll < 0.93:
            return Fenced()
        return Crashed()

    def outcome(self, step: Step) -> Outcome:
        """A random outcome this step can have (``Unloaded`` aside: it answers a step run
        without credentials, and the shell loads them before any step but ``Load``)."""
        rng = self.rng
        if isinstance(step, Load):
            roll = rng.random()
            if roll < 0.03:
                return NotRunnable("shard not held", stop=True)
            if roll < 0.08:
                return NotRunnable("parked (paused)", stop=False)
            if roll < 0.1:
                return Crashed()
            capabilities = rng.choice((GOOGLE, MICROSOFT, POLLED))
            channels = tuple(
                (c, rng.choice((None, 30.0)))
                for c in CALENDARS
                if capabilities.pushes_calendar(c) and rng.random() < 0.5
            )
            unwatchable = tuple(
                c for c in CALENDARS if c not in dict(channels) and rng.random() < 0.1
            )
            return Loaded(capabilities, rng.random() < 0.8, self.cadence(), channels, unwatchable)
        if isinstance(step, Inherit):
            return Crashed() if rng.random() < 0.02 else Inherited(rng.random() < 0.3)
        if isinstance(step, CheckFollowed):
            return Crashed() if rng.random() < 0.02 else Followed(rng.random() < 0.7)
        if isinstance(step, ReloadPreferences):
            return Crashed() if rng.random() < 0.05 else PreferencesLoaded(self.cadence())
        if isinstance(step, RecordRevoked):
            roll = rng.random()
            return Fenced() if roll < 0.03 else Crashed() if roll < 0.06 else Done()
        if isinstance(step, DrainOutbox):
            # The writer retries a provider's errors per item: what escapes ends the handler.
            return self.failure() if rng.random() < 0.05 else self.success(step)
        if isinstance(step, OpenChannel) and rng.random() < 0.05:
            return ChannelRefused()  # the provider will not watch this calendar
        return self.failure() if rng.random() < 0.2 else self.success(step)

    def success(self, step: Step) -> Outcome:
        rng = self.rng
        if isinstance(step, Load):
            m = self.model
            capabilities = m.capabilities if m.capabilities.identity.claims else POLLED
            return Loaded(capabilities, m.push, m.cadence)
        if isinstance(step, SyncAll | SyncCalendar | Rebase | ResyncAll):
            return self.synced(step)
        if isinstance(step, DrainOutbox):
            return rng.choice((Drained(None), Drained(30.0), Done()))
        if isinstance(step, OpenChannel):
            return ChannelOpened(rng.choice((None, 30.0)))
        if isinstance(step, CloseChannel):
            return ChannelClosed()
        if isinstance(step, Inherit):
            return Inherited(False)
        if isinstance(step, CheckFollowed):
            return Followed(True)
        if isinstance(step, ReloadPreferences):
            return PreferencesLoaded(self.model.cadence)
        return Done()  # RefreshToken, RecordRevoked


def _run(seed: int) -> Simulation:
    sim = Simulation(seed)
    try:
        sim.run()
    except AssertionError as error:
        trace = "\n".join(sim.trace[-30:])
        raise AssertionError(f"seed {seed}: {error}\n{trace}") from error
    return sim


@pytest.mark.parametrize("block", range(6))
def test_random_event_sequences_keep_the_invariants(block: int) -> None:
    per_block = SEEDS // 6
    for seed in range(block * per_block, (block + 1) * per_block):
        _run(seed)


def test_random_runs_reach_every_command_and_outcome() -> None:
    """The generator is not vacuous: its runs release every command, give every step its
    outcomes, settle, crash, park, stop both ways and acknowledge most entries."""
    sims = [_run(seed) for seed in range(30)]
    seen = set().union(*(s.seen for s in sims))
    commands = {c.__name__ for c in (*STEPS, Acknowledge, Arm, Cancel, ShowStatus, PostSelf)}
    assert commands | {"Stop", "Raise"} <= seen
    outcomes = {
        "Load:Loaded",
        "Load:NotRunnable",
        "Load:Crashed",
        "Inherit:Inherited",
        "SyncAll:Synced",
        "SyncAll:ProviderFailed",
        "SyncCalendar:Synced",
        "SyncCalendar:ProviderFailed",
        "SyncCalendar:Revoked",
        "SyncCalendar:Fenced",
        "SyncCalendar:Crashed",
        "Rebase:Synced",
        "ResyncAll:Synced",
        "RefreshToken:Done",
        "RefreshToken:ProviderFailed",
        "DrainOutbox:Drained",
        "DrainOutbox:Done",
        "OpenChannel:ChannelOpened",
        "OpenChannel:ChannelRefused",
        "OpenChannel:ProviderFailed",
        "CloseChannel:ChannelClosed",
        "CloseChannel:ProviderFailed",
        "CheckFollowed:Followed",
        "ReloadPreferences:PreferencesLoaded",
        "ReloadPreferences:Crashed",
        "RecordRevoked:Done",
    }
    assert outcomes <= seen, sorted(outcomes - seen)
    names = (POLL, REBASE, KEEPALIVE, OUTBOX, "push:a", "settle:a", "unwatched:a")
    also = {f"Arm {name}" for name in names}
    also |= {"Stop fenced=True", "Stop fenced=False"}
    assert also <= seen, sorted(also - seen)
    assert sum(s.incarnations for s in sims) > 2 * len(sims)
    acked, excused = sum(len(s.acked) for s in sims), sum(len(s.excused) for s in sims)
    assert acked > 1000 and excused < acked / 20


def test_the_steps_tuple_is_the_step_union() -> None:
    assert set(STEPS) == set(get_args(Step))

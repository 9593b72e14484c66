"""The calendar account actor's vocabulary between its core and its shell: the commands the core
returns and the outcomes the shell reports back.

Invariants:
- everything here is a frozen dataclass of plain values: the core never sees an exception, a
  connection or a clock, and the shell never decides what a message or an outcome means;
- an *effect* (acknowledge, arm, cancel, status, post, stop, raise) is done at once and reports
  nothing; a *step* does provider or Postgres I/O and is answered by exactly one outcome through
  ``AccountCore.step_done``; the core has at most one step outstanding;
- a step with ``slot = True`` runs inside the replica's sync slots (syncs and writes: provider
  calls plus their commits); channel steps and bookkeeping do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from actors.account.messages import AccountMessage
from actors.account.policy import Cadence
from cluster.inbox import InboxEntry
from providers.capabilities import Capabilities
from providers.errors import ErrorKind

# -- effects --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """Acknowledge these inbox entries: the commit covering them is done."""

    entries: tuple[InboxEntry, ...]


@dataclass(frozen=True, slots=True)
class Arm:
    """Arm deadline ``name`` ``delay_s`` seconds from now (replacing an earlier one)."""

    name: str
    delay_s: float


@dataclass(frozen=True, slots=True)
class Cancel:
    """Disarm deadline ``name``."""

    name: str


@dataclass(frozen=True, slots=True)
class ShowStatus:
    """The short status the monitor shows beside the actor's state."""

    text: str


@dataclass(frozen=True, slots=True)
class PostSelf:
    """Post ``message`` (with ``entry`` as its item, if any) to this actor's own mailbox."""

    message: AccountMessage
    entry: InboxEntry | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """End this incarnation normally; ``fenced``: a newer epoch owns the shard (tell the keeper)."""

    fenced: bool


@dataclass(frozen=True, slots=True)
class Raise:
    """Re-raise the error the last step failed with: the supervisor restarts the actor."""


Effect = Acknowledge | Arm | Cancel | ShowStatus | PostSelf | Stop | Raise

# -- steps ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """Read the account, its credentials, preferences and channels from storage."""

    slot: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class SyncAll:
    """Sync every followed calendar (full where its window must move); ``reconcile``: list the
    provider's calendars first and store the list."""

    reconcile: bool
    slot: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class SyncCalendar:
    """Sync one calendar (a calendar not stored yet: every calendar, after listing them)."""

    calendar_id: str
    full: bool
    slot: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Rebase:
    """A full round of each followed calendar whose window must move."""

    slot: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class ResyncAll:
    """A full round of every followed calendar (the sync window changed)."""

    slot: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """Refresh the access token (keeps a refresh token that lapses when idle alive)."""

    slot: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Inherit:
    """Take over the outbox state a former incarnation left: is any write unsettled?"""

    slot: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class DrainOutbox:
    """Write the due outbox items."""

    slot: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class OpenChannel:
    """Open (``recreate``: anew) or renew the push channel of a calendar."""

    calendar_id: str
    recreate: bool
    slot: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class CloseChannel:
    """Stop the channel of a calendar no longer followed and delete its row."""

    calendar_id: str
    slot: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class CheckFollowed:
    """Is this calendar still followed (enabled and listed)?"""

    calendar_id: str
    slot: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class ReloadPreferences:
    """Read the account's sync preferences again."""

    slot: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class RecordRevoked:
    """Store status ``needs_reauth`` with the reason consent is gone."""

    reason: str
    slot: ClassVar[bool] = False


Step = (
    Load
    | SyncAll
    | SyncCalendar
    | Rebase
    | ResyncAll
    | RefreshToken
    | Inherit
    | DrainOutbox
    | OpenChannel
    | CloseChannel
    | CheckFollowed
    | ReloadPreferences
    | RecordRevoked
)
Command = Effect | Step
# The union again, as a tuple: isinstance() over it narrows to ``Step`` for mypy, which
# ``typing.get_args(Step)`` would not (tests/unit/test_account_core.py checks they agree).
STEPS = (
    Load,
    SyncAll,
    SyncCalendar,
    Rebase,
    ResyncAll,
    RefreshToken,
    Inherit,
    DrainOutbox,
    OpenChannel,
    CloseChannel,
    CheckFollowed,
    ReloadPreferences,
    RecordRevoked,
)
SYNC_STEPS = (SyncAll, SyncCalendar, Rebase, ResyncAll, RefreshToken)  # share one error guard

# -- outcomes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loaded:
    """The account may sync: its kind's capabilities, whether this replica has a push address
    for it, its cadence, and each stored channel's renewal delay (None: unbounded)."""

    capabilities: Capabilities
    push_enabled: bool
    cadence: Cadence
    channels: tuple[tuple[str, float | None], ...] = ()
    unwatchable: tuple[str, ...] = ()  # calendars whose provider refuses a channel: polled


@dataclass(frozen=True, slots=True)
class NotRunnable:
    """The account must not sync: ``stop`` (its shard is not held here) or park with ``status``."""

    status: str
    stop: bool


@dataclass(frozen=True, slots=True)
class Synced:
    """A sync step committed. ``synced``: (calendar, loop time its sync ended) in order;
    ``followed``: every followed calendar when the step listed the provider's calendars."""

    synced: tuple[tuple[str, float], ...] = ()
    listed: bool = False
    followed: tuple[str, ...] | None = None
    rebase_in_s: float | None = None


@dataclass(frozen=True, slots=True)
class Inherited:
    """Whether a write of a former incarnation may be unsettled (or an item is due)."""

    unsettled: bool


@dataclass(frozen=True, slots=True)
class Drained:
    """The due items were written; when the next one is due (None: nothing pending)."""

    next_in_s: float | None


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """The calendar's channel is open; when to renew it (None: unbounded)."""

    renew_in_s: float | None


@dataclass(frozen=True, slots=True)
class ChannelRefused:
    """The provider refuses a channel on the calendar for good (recorded): poll it instead."""


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """The calendar's channel is stopped and its row deleted."""


@dataclass(frozen=True, slots=True)
class Followed:
    """Whether the calendar of a channel is still followed."""

    followed: bool


@dataclass(frozen=True, slots=True)
class PreferencesLoaded:
    """The account's cadence as its stored preferences now ask."""

    cadence: Cadence


@dataclass(frozen=True, slots=True)
class Done:
    """A step with nothing to report succeeded (a token refresh, a recorded status)."""


@dataclass(frozen=True, slots=True)
class Revoked:
    """The provider refused the account's grant: consent is gone."""

    reason: str


@dataclass(frozen=True, slots=True)
class Fenced:
    """A write met a newer epoch: another replica owns the shard now."""


@dataclass(frozen=True, slots=True)
class Unloaded:
    """The step needed credentials this incarnation does not have."""


@dataclass(frozen=True, slots=True)
class ProviderFailed:
    """The provider answered with an error of ``kind`` (throttling says how long to wait)."""

    kind: ErrorKind
    detail: str
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Crashed:
    """Anything else: the incarnation ends (``Raise``) after handing its entries back."""


Success = (
    Loaded
    | NotRunnable
    | Synced
    | Inherited
    | Drained
    | ChannelOpened
    | ChannelRefused
    | ChannelClosed
    | Followed
    | PreferencesLoaded
    | Done
)
Failure = Revoked | Fenced | Unloaded | ProviderFailed | Crashed
Outcome = Success | Failure

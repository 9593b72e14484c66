"""What every account actor of one replica shares: storage, providers, epochs and knobs.

Invariants:
- one ``AccountContext`` serves all account actors of a replica (it is never copied per actor);
- ``epochs`` maps each shard this replica holds to the epoch it took; an account whose shard is
  missing is not ours to write;
- ``preloaded`` entries are taken (popped) by the first start of their actor only;
- ``clock`` returns aware UTC datetimes; deadlines use the event loop's clock, so only delays
  derived from ``clock`` ever reach ``set_timer``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from providers.capabilities import Capabilities
from providers.interface import CalendarProvider
from store.accounts import Account
from store.channels import ChannelRow
from store.credentials import Credentials
from store.crypto import Keyring
from store.db import PgPool
from store.preferences import Preferences

Acknowledge = Callable[[list[tuple[int, str]]], Awaitable[None]]


class RateGate(Protocol):
    """A shared request budget (``cluster.throttle_witness.Budget`` in a replica)."""

    async def acquire(self, tokens: int = 1, *, max_wait_s: float) -> None:
        """Take tokens, waiting at most ``max_wait_s``; RateLimited if that is not enough."""
        ...

    async def throttled(self, account_id: str, retry_after_s: float | None) -> float | None:
        """The provider throttled ``account_id`` (with its bounded Retry-After, if any): slow
        everyone sharing the budget when that is warranted; the seconds blocked, or None."""
        ...


@dataclass(frozen=True, slots=True)
class Preloaded:
    """An account's stored state read in bulk for its actor's first start (a takeover starts
    hundreds at once: three queries per batch instead of three per actor)."""

    account: Account
    credentials: Credentials | None
    channels: list[ChannelRow]
    preferences: Preferences | None = None  # None: none stored, the replica's defaults hold
    unwatchable: tuple[str, ...] = ()  # calendars whose provider refuses a channel


def no_rate_gate(_provider: str, _account_id: str) -> RateGate | None:
    """No shared budget (tests, tools)."""
    return None


def utc_now() -> datetime:
    """The wall clock, aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AccountContext:
    """Shared by all account actors of a replica."""

    pool: PgPool
    keyring: Keyring
    providers: Mapping[str, CalendarProvider]
    epochs: Mapping[int, int]
    acknowledge: Acknowledge
    window_back: timedelta = timedelta(days=30)
    window_ahead: timedelta = timedelta(days=365)
    rebase_every: timedelta = timedelta(days=7)
    poll_every_s: float = 15 * 60.0
    poll_jitter: float = 0.2
    retry_initial_s: float = 5.0
    retry_max_s: float = 15 * 60.0
    token_keepalive: timedelta = timedelta(days=7)  # Microsoft refresh tokens lapse when idle
    # A calendar notified while it syncs, or this soon after, is hot: its follow-up sync waits
    # until notifications pause this long (at most ``settle_max_s`` after the first held), so
    # a burst costs one more sync. Short, as it delays an edit that follows another closely.
    settle_quiet_s: float = 0.05
    settle_max_s: float = 1.0
    # Where each kind's provider delivers notifications (through the gateway); a kind missing
    # here is polled.
    push_addresses: Mapping[str, str] = field(default_factory=dict)
    # Each kind's capabilities as its registry entry declares them (a kind may use another's
    # client with different capabilities); a kind missing here has its client's.
    capabilities: Mapping[str, Capabilities] = field(default_factory=dict)
    push_ttl_s: int = 7 * 24 * 3600
    # How long a replaced channel stays accepted; None: its kind's redelivery horizon.
    retired_grace_s: float | None = None
    unwatched_poll_s: float = 6 * 3600.0  # the cadence of a calendar its provider won't watch
    # The shared budget a call to ``provider`` for an account draws on, or None.
    rate_gate: Callable[[str, str], RateGate | None] = no_rate_gate
    rate_wait_max_s: float = 5.0  # wait this long for a token before treating it as throttled
    # Bounds on a provider's Retry-After: the shared budget's penalty, one account's retry.
    rate_penalty_max_s: float = 60.0
    retry_after_max_s: float = 3600.0
    # Told the shard of a write refused for a stale epoch: the replica no longer owns it.
    on_stale_epoch: Callable[[int], None] = lambda _shard: None
    clock: Callable[[], datetime] = utc_now
    rng: random.Random = field(default_factory=random.Random)
    # Syncs (provider calls and their commits) running at once in the replica, at most: without
    # a bound, hundreds of actors starting together would each start a sync, and the loop
    # would slow every one of them (and the lease keeper) down. None: unbounded (tests, tools).
    sync_slots: asyncio.Semaphore | None = None
    # Outbound writes (``actors.account.outbound``): items read per drain, attempts before an
    # item is dead-lettered, and the bounds of its backoff.
    outbox_batch: int = 100
    outbox_max_attempts: int = 10
    outbox_retry_initial_s: float = 1.0
    outbox_retry_max_s: float = 3600.0
    # Filled by the replica just before starting a batch; each actor takes its own entry once
    # (a restart reads storage again).
    preloaded: dict[str, Preloaded] = field(default_factory=dict)

    def capabilities_of(self, kind: str) -> Capabilities:
        """What accounts of ``kind`` may do: the registry's entry, else its client's own."""
        declared = self.capabilities.get(kind)
        return self.providers[kind].capabilities if declared is None else declared

    def push_address(self, kind: str) -> str | None:
        """Where accounts of ``kind`` get notifications delivered, or None for no push."""
        return self.push_addresses.get(kind)

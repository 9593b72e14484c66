"""Pure decisions of the account actor: refresh, polling, rebasing, retries, channel renewal,
and the cadence an account's sync preferences ask for.

Invariants:
- no I/O and no hidden clock: every function takes ``now`` (aware UTC) and, when random, an
  explicit ``random.Random``, so each decision is reproducible in tests;
- delays are seconds, never negative.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from providers.errors import ErrorKind
from providers.interface import needs_refresh
from providers.models import SyncWindow
from store.preferences import Preferences


def should_refresh(access_token: str | None, expires_at: datetime | None, now: datetime) -> bool:
    """Whether to refresh before the next provider call (no token, or about to lapse)."""
    return access_token is None or needs_refresh(expires_at, now)


@dataclass(frozen=True, slots=True)
class Cadence:
    """How one account syncs: on its own or only when asked, how often, over which window."""

    auto_sync: bool
    poll_every_s: float
    window_back: timedelta
    window_ahead: timedelta


def cadence_of(
    preferences: Preferences | None,
    *,
    poll_every_s: float,
    window_back: timedelta,
    window_ahead: timedelta,
) -> Cadence:
    """The account's cadence: its stored preferences over the replica's defaults (None: none
    stored, so every default holds, the poll period unrounded)."""
    if preferences is None:
        return Cadence(True, poll_every_s, window_back, window_ahead)
    back, ahead = preferences.sync_window_back_days, preferences.sync_window_ahead_days
    return Cadence(
        preferences.auto_sync,
        preferences.sync_frequency_minutes * 60.0,
        window_back if back is None else timedelta(days=back),
        window_ahead if ahead is None else timedelta(days=ahead),
    )


def poll_delay_s(poll_every_s: float, jitter: float, rng: random.Random) -> float:
    """The next periodic sync's delay: ``poll_every_s`` spread by ±``jitter`` (a fraction)."""
    if not 0 <= jitter < 1:
        raise ValueError("jitter is a fraction in [0, 1)")
    return poll_every_s * rng.uniform(1 - jitter, 1 + jitter)


def sync_window(now: datetime, back: timedelta, ahead: timedelta) -> SyncWindow:
    """The window a full round started ``now`` covers."""
    return SyncWindow(now - back, now + ahead)


def rebase_at(window_start: datetime | None, back: timedelta, every: timedelta) -> datetime | None:
    """When a window starting at ``window_start`` must move; None: no window yet (no rebase)."""
    if window_start is None:
        return None
    # The window was computed at window_start + back; it moves ``every`` after that.
    return window_start + back + every


def rebase_due(
    window_start: datetime | None, back: timedelta, every: timedelta, now: datetime
) -> bool:
    """Whether the calendar's window is old enough to need a full round over a new one."""
    at = rebase_at(window_start, back, every)
    return at is not None and now >= at


def seconds_until(at: datetime, now: datetime) -> float:
    """Delay from ``now`` to ``at``, at least zero."""
    return max(0.0, (at - now).total_seconds())


def backoff_s(failures: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Capped exponential backoff with equal jitter for the ``failures``-th consecutive failure."""
    if failures < 1:
        raise ValueError("failures is 1-based")
    ceiling = min(max_s, initial_s * 2.0 ** min(failures - 1, 64))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def retry_delay_s(
    kind: ErrorKind,
    retry_after_s: float | None,
    failures: int,
    rng: random.Random,
    *,
    initial_s: float,
    max_s: float,
) -> float | None:
    """How long to wait before retrying after an error of ``kind``; None: it is not retried."""
    if kind is ErrorKind.THROTTLED:
        return max(retry_after_s or 0.0, backoff_s(failures, initial_s, max_s, rng))
    if kind is ErrorKind.TRANSIENT:
        return backoff_s(failures, initial_s, max_s, rng)
    return None


def renew_at(issued_at: datetime, expires_at: datetime | None) -> datetime | None:
    """When a channel issued at ``issued_at`` is renewed: half its lifetime; None if unbounded."""
    if expires_at is None:
        return None
    return issued_at + (expires_at - issued_at) / 2


def needs_renewal(issued_at: datetime, expires_at: datetime | None, now: datetime) -> bool:
    """Whether a channel has lived half its lifetime (or has already expired)."""
    at = renew_at(issued_at, expires_at)
    return at is not None and now >= at


def push_retry_delay_s(
    kind: ErrorKind,
    retry_after_s: float | None,
    failures: int,
    rng: random.Random,
    *,
    initial_s: float,
    max_s: float,
) -> float:
    """How long to wait before trying a failed push step again: like a sync for throttling and
    transient errors, else (a refused address, a permanent error) the longest backoff. Push is
    an optimisation over polling, so its failures are retried, never raised."""
    delay = retry_delay_s(kind, retry_after_s, failures, rng, initial_s=initial_s, max_s=max_s)
    return max_s if delay is None else delay


def notified_soon_after_sync(
    read_at: Iterable[float | None], synced_at: float | None, quiet_s: float
) -> bool:
    """Whether a notification was read during the calendar's last sync or less than
    ``quiet_s`` after it ended: the calendar is in a burst, so its next sync should wait."""
    if synced_at is None:
        return False
    return any(at is not None and at < synced_at + quiet_s for at in read_at)


def settle_delay_s(now: float, first_at: float, quiet_s: float, max_s: float) -> float:
    """How long a hot calendar's follow-up sync waits from ``now``: until notifications pause
    for ``quiet_s``, but no later than ``max_s`` after the first one held (``first_at``)."""
    return max(0.0, min(now + quiet_s, first_at + max_s) - now)

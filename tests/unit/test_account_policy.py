"""Pure tests of the account actor's decisions: refresh, jitter, rebase, retries, renewal."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from actors.account.policy import (
    backoff_s,
    needs_renewal,
    notified_soon_after_sync,
    poll_delay_s,
    rebase_at,
    rebase_due,
    renew_at,
    retry_delay_s,
    seconds_until,
    settle_delay_s,
    should_refresh,
    sync_window,
)
from providers.errors import (
    AuthRevoked,
    ErrorKind,
    NotFound,
    Permanent,
    ProviderError,
    SyncStateExpired,
    Throttled,
    Transient,
    Unauthorized,
)

NOW = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)


def test_refresh_without_token_or_near_expiry() -> None:
    assert should_refresh(None, NOW + timedelta(hours=1), NOW)
    assert should_refresh("tok", None, NOW)
    assert should_refresh("tok", NOW + timedelta(minutes=5), NOW)
    assert not should_refresh("tok", NOW + timedelta(minutes=6), NOW)


def test_poll_delay_stays_within_jitter_bounds() -> None:
    rng = random.Random(7)
    delays = [poll_delay_s(900.0, 0.2, rng) for _ in range(2000)]
    assert all(720.0 <= d <= 1080.0 for d in delays)
    assert min(delays) < 740.0 and max(delays) > 1060.0  # the whole band is used
    assert poll_delay_s(900.0, 0.0, rng) == 900.0
    with pytest.raises(ValueError):
        poll_delay_s(900.0, 1.0, rng)


def test_window_and_rebase() -> None:
    back, ahead, every = timedelta(days=30), timedelta(days=365), timedelta(days=7)
    window = sync_window(NOW, back, ahead)
    assert (window.start, window.end) == (NOW - back, NOW + ahead)
    assert rebase_at(None, back, every) is None
    assert not rebase_due(None, back, every, NOW)
    assert rebase_at(window.start, back, every) == NOW + every
    assert not rebase_due(window.start, back, every, NOW + every - timedelta(seconds=1))
    assert rebase_due(window.start, back, every, NOW + every)


def test_seconds_until_never_negative() -> None:
    assert seconds_until(NOW + timedelta(seconds=90), NOW) == 90.0
    assert seconds_until(NOW - timedelta(seconds=90), NOW) == 0.0


def test_backoff_doubles_with_equal_jitter_and_caps() -> None:
    rng = random.Random(1)
    for failures, ceiling in ((1, 5.0), (2, 10.0), (3, 20.0), (10, 60.0), (500, 60.0)):
        for _ in range(200):
            delay = backoff_s(failures, 5.0, 60.0, rng)
            assert ceiling / 2 <= delay <= ceiling
    with pytest.raises(ValueError):
        backoff_s(0, 5.0, 60.0, rng)


def _err(
    cls: type[ProviderError], retry_after_s: float | None = None
) -> tuple[ErrorKind, float | None]:
    error = cls("x", provider="test", retry_after_s=retry_after_s)
    return error.kind, error.retry_after_s


def test_retry_delay_per_error_kind() -> None:
    rng = random.Random(3)

    def delay(kind: tuple[ErrorKind, float | None], failures: int) -> float | None:
        return retry_delay_s(*kind, failures, rng, initial_s=5.0, max_s=60.0)

    # Throttled honours a long Retry-After, and never retries sooner than the backoff.
    assert delay(_err(Throttled, 120.0), 1) == 120.0
    short = delay(_err(Throttled, 0.1), 3)
    assert short is not None and 10.0 <= short <= 20.0
    bare = delay(_err(Throttled), 1)
    assert bare is not None and 2.5 <= bare <= 5.0
    transient = delay(_err(Transient), 2)
    assert transient is not None and 5.0 <= transient <= 10.0
    for cls in (AuthRevoked, Unauthorized, SyncStateExpired, NotFound, Permanent):
        assert delay(_err(cls), 1) is None


def test_channel_renewal_at_half_life() -> None:
    issued = NOW
    expires = NOW + timedelta(days=7)
    assert renew_at(issued, expires) == NOW + timedelta(days=3, hours=12)
    assert not needs_renewal(issued, expires, NOW + timedelta(days=3, hours=11))
    assert needs_renewal(issued, expires, NOW + timedelta(days=3, hours=12))
    assert needs_renewal(issued, expires, expires + timedelta(days=1))
    assert renew_at(issued, None) is None
    assert not needs_renewal(issued, None, NOW + timedelta(days=365))


def test_a_notification_read_during_or_just_after_the_last_sync_makes_the_calendar_hot() -> None:
    assert notified_soon_after_sync([5.0, 9.0], synced_at=8.0, quiet_s=0.05)  # 5.0: during it
    assert notified_soon_after_sync([8.04], synced_at=8.0, quiet_s=0.05)  # just after it
    assert not notified_soon_after_sync([9.0], synced_at=8.0, quiet_s=0.05)  # a fresh change
    assert not notified_soon_after_sync([5.0], synced_at=None, quiet_s=0.05)  # never synced
    assert not notified_soon_after_sync([None], synced_at=8.0, quiet_s=0.05)  # not from the inbox


def test_a_hot_calendar_waits_for_a_pause_but_not_forever() -> None:
    assert settle_delay_s(now=10.0, first_at=10.0, quiet_s=0.1, max_s=1.0) == pytest.approx(0.1)
    assert settle_delay_s(now=10.5, first_at=10.0, quiet_s=0.1, max_s=1.0) == pytest.approx(0.1)
    assert settle_delay_s(now=10.95, first_at=10.0, quiet_s=0.1, max_s=1.0) == pytest.approx(0.05)
    assert settle_delay_s(now=12.0, first_at=10.0, quiet_s=0.1, max_s=1.0) == 0.0

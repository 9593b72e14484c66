"""Provider-neutral pieces: error taxonomy, model invariants, token freshness, verification."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from providers.errors import (
    AuthRevoked,
    ErrorKind,
    InvalidNotification,
    Permanent,
    Throttled,
    Transient,
    Unauthorized,
)
from providers.http import parse_retry_after
from providers.interface import needs_refresh, verify_notification
from providers.models import (
    EventTiming,
    Notification,
    NotificationKind,
    PushChannel,
    SyncPage,
    TokenGrant,
)

NOW = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)


def test_error_kinds_and_retryability() -> None:
    assert Throttled("slow down", provider="google", retry_after_s=5).retryable
    assert Transient("503", provider="google").retryable
    assert Unauthorized("401", provider="google").retryable
    assert not AuthRevoked("invalid_grant", provider="google").retryable
    assert not Permanent("400", provider="google").retryable
    err = Throttled("rate limited", provider="google", status=403, reason="rateLimitExceeded")
    assert err.kind is ErrorKind.THROTTLED
    assert str(err) == "rate limited (google, 403, rateLimitExceeded)"


def test_all_day_timing_uses_an_exclusive_end_date() -> None:
    one_day = EventTiming(all_day=True, start_date=date(2026, 5, 5), end_date=date(2026, 5, 6))
    assert one_day.end_date == date(2026, 5, 6)
    with pytest.raises(ValueError, match="exclusive"):
        EventTiming(all_day=True, start_date=date(2026, 5, 5), end_date=date(2026, 5, 5))


def test_timed_timing_requires_aware_datetimes() -> None:
    with pytest.raises(ValueError, match="aware"):
        EventTiming(
            all_day=False, start_at=datetime(2026, 5, 5, 9), end_at=datetime(2026, 5, 5, 10)
        )
    with pytest.raises(ValueError, match="before"):
        EventTiming(all_day=False, start_at=NOW, end_at=NOW - timedelta(minutes=1))


def test_sync_page_carries_exactly_one_continuation() -> None:
    SyncPage((), (), next_cursor="c")
    SyncPage((), (), delta_token="t")
    with pytest.raises(ValueError):
        SyncPage((), ())
    with pytest.raises(ValueError):
        SyncPage((), (), next_cursor="c", delta_token="t")


def test_secrets_stay_out_of_reprs() -> None:
    grant = TokenGrant("ya29.secret-access", NOW, refresh_token="1//secret-refresh")
    channel = PushChannel("ch", "primary", "res", None, token="channel-secret")
    assert "secret" not in repr(grant) and "secret" not in repr(channel)


@pytest.mark.parametrize(
    ("expires_in", "refresh"),
    [
        (None, True),
        (timedelta(minutes=-1), True),
        (timedelta(minutes=4), True),
        (timedelta(minutes=6), False),
        (timedelta(hours=1), False),
    ],
)
def test_needs_refresh_a_few_minutes_before_expiry(
    expires_in: timedelta | None, refresh: bool
) -> None:
    expires_at = None if expires_in is None else NOW + expires_in
    assert needs_refresh(expires_at, NOW) is refresh


def test_verify_notification_rejects_forgeries() -> None:
    channel = PushChannel("ch-1", "primary", "res-1", None, token="t0k3n-random")
    good = Notification(NotificationKind.CHANGED, "ch-1", "res-1", 7, token="t0k3n-random")
    verify_notification(good, channel)
    for forged in (
        Notification(NotificationKind.CHANGED, "ch-1", "res-1", 7, token="guess"),
        Notification(NotificationKind.CHANGED, "ch-1", "res-1", 7, token=None),
        Notification(NotificationKind.CHANGED, "ch-2", "res-1", 7, token="t0k3n-random"),
        Notification(NotificationKind.CHANGED, "ch-1", "res-9", 7, token="t0k3n-random"),
    ):
        with pytest.raises(InvalidNotification):
            verify_notification(forged, channel)


def test_retry_after_in_seconds_or_http_date() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("2.128") == 2.128  # Graph sends fractional seconds
    assert parse_retry_after("-3") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("Sun, 29 Mar 2026 12:00:30 GMT", NOW) == 30.0
    assert parse_retry_after("Sun, 29 Mar 2026 11:00:00 GMT", NOW) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None

"""The health audit and its repair entries: pure, over hand-made rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from cluster.inbox import parse_entry
from cluster.keys import notifications_key
from store.audit import AuditAccount, AuditCalendar, AuditChannel, AuditSnapshot
from supervisor.maintenance_audit import (
    AuditPolicy,
    FindingKind,
    audit,
    count_findings,
    repair_entries,
)

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=10)
POLICY = AuditPolicy(
    stale_after=timedelta(minutes=30),
    push=True,
    renewal_margin=timedelta(hours=1),
    providers=frozenset({"google", "microsoft"}),
)


def _id(n: int) -> UUID:
    return UUID(int=n)


def _account(n: int, provider: str = "google", created_at: datetime = LONG_AGO) -> AuditAccount:
    return AuditAccount(_id(n), provider, shard=n % 4, created_at=created_at)


def _calendar(n: int, calendar_id: str, synced_ago: timedelta | None) -> AuditCalendar:
    return AuditCalendar(_id(n), calendar_id, None if synced_ago is None else NOW - synced_ago)


def _channel(n: int, calendar_id: str, lapses_in: timedelta | None) -> AuditChannel:
    return AuditChannel(_id(n), calendar_id, None if lapses_in is None else NOW + lapses_in)


RECENT = timedelta(minutes=5)
DAY = timedelta(days=1)


def _snapshot() -> AuditSnapshot:
    return AuditSnapshot(
        accounts=(
            _account(1),  # healthy
            _account(2),  # synced, no channel
            _account(3),  # stale sync, channel fine
            _account(4),  # channel lapses within the margin, and one calendar never synced
            _account(5),  # follows no calendar at all
            _account(6, created_at=NOW - timedelta(minutes=10)),  # too young to judge
            _account(7, provider="microsoft"),  # Graph: only "primary" gets a channel
        ),
        calendars=(
            _calendar(1, "a@x", RECENT),
            _calendar(2, "b@x", RECENT),
            _calendar(3, "c@x", timedelta(hours=3)),
            _calendar(4, "d@x", RECENT),
            _calendar(4, "team", None),
            _calendar(6, "young", None),
            _calendar(7, "primary", RECENT),
            _calendar(7, "AAMk-other", RECENT),
        ),
        channels=(
            _channel(1, "a@x", DAY),
            _channel(3, "c@x", DAY),
            _channel(4, "d@x", timedelta(minutes=20)),
            _channel(7, "primary", None),  # never lapses
        ),
    )


def test_audit_reports_missing_channels_stale_and_missing_syncs() -> None:
    findings = audit(_snapshot(), POLICY, NOW)
    assert [(f.account_id.int, f.calendar_id, f.kind, f.detail) for f in findings] == [
        (2, "b@x", FindingKind.NO_CHANNEL, "push configured, no channel"),
        (3, "c@x", FindingKind.STALE_SYNC, "last synced 3h00m ago"),
        (4, "d@x", FindingKind.CHANNEL_EXPIRING, "expires in 20m00s"),
        (4, "team", FindingKind.NEVER_SYNCED, "no completed sync"),
        (5, None, FindingKind.NEVER_SYNCED, "no calendar listed"),
    ]
    assert findings[0].shard == 2 and findings[0].provider == "google"
    assert count_findings(findings) == {
        "never_synced": 2,
        "stale_sync": 1,
        "no_channel": 1,
        "channel_expiring": 1,
    }


def test_without_push_only_syncs_are_audited_and_other_providers_are_skipped() -> None:
    no_push = AuditPolicy(POLICY.stale_after, False, POLICY.renewal_margin, frozenset({"google"}))
    kinds = {(f.account_id.int, f.kind) for f in audit(_snapshot(), no_push, NOW)}
    assert kinds == {
        (3, FindingKind.STALE_SYNC),
        (4, FindingKind.NEVER_SYNCED),
        (5, FindingKind.NEVER_SYNCED),
    }
    expired = AuditSnapshot(
        accounts=(_account(1),),
        calendars=(_calendar(1, "a@x", RECENT),),
        channels=(_channel(1, "a@x", -timedelta(hours=2)), _channel(1, "a@x", None)),
    )
    # A replacement in flight: the longer-lived of two channels of one calendar counts.
    assert audit(expired, POLICY, NOW) == []
    lone = AuditSnapshot(expired.accounts, expired.calendars, expired.channels[:1])
    assert [f.detail for f in audit(lone, POLICY, NOW)] == ["expired 2h00m ago"]


def test_repairs_ask_the_owning_shard_once_per_calendar() -> None:
    findings = audit(_snapshot(), POLICY, NOW)
    entries = repair_entries(findings, NOW)
    assert [
        (e.key, e.fields["account_id"], e.fields["calendar_id"], e.fields["kind"]) for e in entries
    ] == [
        (notifications_key(2), str(_id(2)), "b@x", "changed"),
        (notifications_key(3), str(_id(3)), "c@x", "changed"),
        (notifications_key(0), str(_id(4)), "d@x", "removed"),
        (notifications_key(0), str(_id(4)), "team", "changed"),
    ]  # account 5 lists no calendar: nothing the stream can ask for
    # The consumer's parser accepts them as they are.
    fields: dict[bytes | str, bytes | str] = dict(entries[0].fields.items())
    parsed = parse_entry(2, "1-0", fields)
    assert (parsed.account_id, parsed.calendar_id, parsed.kind) == (str(_id(2)), "b@x", "changed")
    stale_and_lapsing = audit(
        AuditSnapshot(
            (_account(1),),
            (_calendar(1, "a@x", timedelta(hours=3)),),
            (_channel(1, "a@x", timedelta(minutes=1)),),
        ),
        POLICY,
        NOW,
    )
    assert len(stale_and_lapsing) == 2
    assert [e.fields["kind"] for e in repair_entries(stale_and_lapsing, NOW)] == ["removed"]
    assert repair_entries([], NOW) == []

"""The health audit: which active accounts lack a live channel or a recent sync. Pure: no I/O.

Shared by the hourly maintenance job (which repairs) and ``integration-worker doctor``.

Invariants:
- only active accounts of the providers this deployment runs are audited; an account younger
  than the staleness limit is left alone (its first syncs may still be queued);
- a followed calendar is stale when it never completed a sync or not within ``stale_after``;
  an account following no calendar at all is reported once, as ``never_synced``;
- with push configured, every followed calendar that gets a channel of its own (its kind's
  capabilities: ``pushes_calendar``), has synced once and is not refused one by its provider
  (polled instead) must have one that does not lapse within ``renewal_margin``; without push,
  channels are not audited;
- a repair is one shard-stream entry per (account, calendar): ``changed`` (an incremental sync,
  which also opens a missing channel) or ``removed`` for a lapsing channel (make a new one);
  findings without a calendar cannot be repaired through the stream and yield no entry;
- findings come out ordered by account, calendar, then kind as declared (syncs first).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from cluster.streams import StreamEntry, request_entry
from kinds import default_registry
from providers.capabilities import Capabilities
from providers.models import NotificationKind
from store.audit import AuditAccount, AuditCalendar, AuditChannel, AuditSnapshot


class FindingKind(enum.StrEnum):
    """What is wrong with an account."""

    NEVER_SYNCED = "never_synced"  # a followed calendar (or the account) never completed a sync
    STALE_SYNC = "stale_sync"  # the last completed sync is older than the limit
    NO_CHANNEL = "no_channel"  # push is configured but the calendar has no channel
    CHANNEL_EXPIRING = "channel_expiring"  # the channel lapses within the renewal margin


_ORDER = {kind: n for n, kind in enumerate(FindingKind)}  # syncs first, then channels

# The stream entry kind that asks the owning actor to repair each finding.
_CHANGED, _REMOVED = NotificationKind.CHANGED.value, NotificationKind.REMOVED.value
_REPAIR_KIND = {
    FindingKind.NEVER_SYNCED: _CHANGED,
    FindingKind.STALE_SYNC: _CHANGED,
    FindingKind.NO_CHANNEL: _CHANGED,
    FindingKind.CHANNEL_EXPIRING: _REMOVED,
}


def _registered_capabilities() -> dict[str, Capabilities]:
    return {kind.name: kind.capabilities for kind in default_registry()}


@dataclass(frozen=True, slots=True)
class AuditPolicy:
    """What counts as healthy."""

    stale_after: timedelta  # a calendar must have synced within this
    push: bool  # whether channels are expected (a public base URL is configured)
    renewal_margin: timedelta  # a channel lapsing sooner than this counts as missing
    providers: frozenset[str]  # providers this deployment runs; other accounts are skipped
    # What each kind's provider can do (which calendars get a channel), from the registry.
    capabilities: Mapping[str, Capabilities] = field(default_factory=_registered_capabilities)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem of one account (and calendar, when it concerns one)."""

    account_id: UUID
    provider: str
    shard: int
    calendar_id: str | None
    kind: FindingKind
    detail: str


def _age(then: datetime, now: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _sync_finding(calendar: AuditCalendar, policy: AuditPolicy, now: datetime) -> str | None:
    synced = calendar.last_synced_at
    if synced is None:
        return "no completed sync"
    if now - synced > policy.stale_after:
        return f"last synced {_age(synced, now)} ago"
    return None


def _channel_finding(
    channel: AuditChannel | None, policy: AuditPolicy, now: datetime
) -> tuple[FindingKind, str] | None:
    if channel is None:
        return FindingKind.NO_CHANNEL, "push configured, no channel"
    if channel.expires_at is not None and channel.expires_at - now < policy.renewal_margin:
        if channel.expires_at <= now:
            return FindingKind.CHANNEL_EXPIRING, f"expired {_age(channel.expires_at, now)} ago"
        return FindingKind.CHANNEL_EXPIRING, f"expires in {_age(now, channel.expires_at)}"
    return None


def audit(snapshot: AuditSnapshot, policy: AuditPolicy, now: datetime) -> list[Finding]:
    """The findings of every audited account at ``now`` (aware)."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    calendars: dict[UUID, list[AuditCalendar]] = {}
    for calendar in snapshot.calendars:
        calendars.setdefault(calendar.account_id, []).append(calendar)
    channels: dict[tuple[UUID, str], AuditChannel] = {}
    for channel in snapshot.channels:
        key = (channel.account_id, channel.calendar_id)
        known = channels.get(key)
        # Two channels of one calendar (a replacement in flight): the longer-lived one counts.
        if known is None or _later(channel.expires_at, known.expires_at):
            channels[key] = channel
    findings: list[Finding] = []
    for account in snapshot.accounts:
        if account.provider in policy.providers and now - account.created_at > policy.stale_after:
            findings.extend(
                _account_findings(account, calendars.get(account.id, []), channels, policy, now)
            )
    findings.sort(key=lambda f: (str(f.account_id), f.calendar_id or "", _ORDER[f.kind]))
    return findings


def _account_findings(
    account: AuditAccount,
    followed: Sequence[AuditCalendar],
    channels: Mapping[tuple[UUID, str], AuditChannel],
    policy: AuditPolicy,
    now: datetime,
) -> list[Finding]:
    """One account's findings: its calendars' syncs, then their channels."""
    found: list[tuple[str | None, FindingKind, str]] = []
    if not followed:
        found.append((None, FindingKind.NEVER_SYNCED, "no calendar listed"))
    for calendar in followed:
        stale = _sync_finding(calendar, policy, now)
        if stale is not None:
            never = calendar.last_synced_at is None
            found.append(
                (calendar.id, FindingKind.NEVER_SYNCED if never else FindingKind.STALE_SYNC, stale)
            )
        if (
            policy.push
            and calendar.last_synced_at is not None
            and not calendar.push_refused  # polled: its provider refuses a channel
            and (caps := policy.capabilities.get(account.provider)) is not None
            and caps.pushes_calendar(calendar.id)
        ):
            problem = _channel_finding(channels.get((account.id, calendar.id)), policy, now)
            if problem is not None:
                found.append((calendar.id, *problem))
    return [
        Finding(account.id, account.provider, account.shard, calendar_id, kind, detail)
        for calendar_id, kind, detail in found
    ]


def _later(a: datetime | None, b: datetime | None) -> bool:
    """Whether expiry ``a`` is later than ``b`` (None: never expires, the latest)."""
    if a is None:
        return b is not None
    return b is not None and a > b


def repair_entries(findings: Iterable[Finding], now: datetime) -> list[StreamEntry]:
    """The shard-stream entries asking each owning actor to repair its findings, one per
    (account, calendar); ``removed`` wins over ``changed`` (a new channel follows a sync)."""
    wanted: dict[tuple[UUID, str], tuple[Finding, str]] = {}
    for finding in findings:
        if finding.calendar_id is None:
            continue
        kind = _REPAIR_KIND[finding.kind]
        key = (finding.account_id, finding.calendar_id)
        if key not in wanted or kind == _REMOVED:
            wanted[key] = (finding, kind)
    return [
        request_entry(
            finding.shard,
            finding.provider,
            finding.account_id,
            kind,
            now,
            calendar_id=calendar_id,
        )
        for (_, calendar_id), (finding, kind) in sorted(
            wanted.items(), key=lambda item: (str(item[0][0]), item[0][1])
        )
    ]


def count_findings(findings: Sequence[Finding]) -> dict[str, int]:
    """Findings per kind (every kind present, zeros included), for logs and run details."""
    counts = Counter(f.kind.value for f in findings)
    return {kind.value: counts.get(kind.value, 0) for kind in FindingKind}

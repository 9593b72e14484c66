"""Plain-text views for the monitor: pure functions over frozen snapshots, no loop, no I/O.

Nothing here can print a token: the inputs carry none (credentials arrive as metadata only).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

from actors.registry import ActorSnapshot, RegistryStatistics
from supervisor.monitor_accounts import AccountMetadata
from supervisor.monitor_shards import ShardsView

# The ``actors`` table's columns; each is also a ``--sort`` name (registry.SORT_KEYS).
COLUMNS = ("id", "kind", "state", "status", "mailbox", "restarts", "provider", "last-sync", "next")
_HEADERS = ("ID", "KIND", "STATE", "STATUS", "MAILBOX", "RESTARTS", "PROVIDER", "LAST SYNC", "NEXT")
_STATUS_WIDTH = 32


def _ago(wall: float | None, now: float) -> str:
    if wall is None:
        return "never"
    seconds = max(0.0, now - wall)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _in(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:
        return f"{-seconds:.0f}s overdue"
    return f"in {seconds:.0f}s" if seconds < 7200 else f"in {seconds / 3600:.1f}h"


def _until(at: datetime | None, now: float) -> str:
    return "-" if at is None else _in(at.timestamp() - now)


def _since(at: datetime | None, now: float) -> str:
    return _ago(None if at is None else at.timestamp(), now)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, trailing blanks trimmed."""
    all_rows = [tuple(header), *map(tuple, rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in all_rows
    ]


def summary_line(stats: RegistryStatistics) -> str:
    """One line: total actors, counts by state, restarts and queued messages."""
    states = ", ".join(f"{state} {count}" for state, count in sorted(stats.by_state.items()))
    return (
        f"{stats.actors} actors ({states or 'none'}); "
        f"restarts {stats.restarts}; queued messages {stats.mailbox_depth}"
    )


def page_count(matched: int, limit: int) -> int:
    """Pages of ``limit`` rows that ``matched`` rows fill (at least one)."""
    return max(1, -(-matched // limit)) if limit > 0 else 1


def actors_table(
    snapshots: Sequence[ActorSnapshot],
    *,
    total: int,
    offset: int = 0,
    limit: int | None = None,
    now_wall: float | None = None,
) -> str:
    """A fixed-width table of one page of actors, with a footer locating the page."""
    now_wall = time.time() if now_wall is None else now_wall
    rows = [
        (
            snap.id,
            snap.kind,
            snap.state,
            _clip(snap.status or "-", _STATUS_WIDTH),
            str(snap.mailbox_depth),
            str(snap.restarts),
            snap.provider or "-",
            _ago(snap.last_sync_at, now_wall) if snap.provider else "-",
            _in(snap.next_wake_in_s),
        )
        for snap in snapshots
    ]
    lines = _table(_HEADERS, rows)
    if total > len(snapshots):
        limit = len(snapshots) if limit is None else limit
        first, last = offset + 1, offset + len(snapshots)
        shown = f"rows {first}-{last}" if snapshots else "no rows"
        page = offset // limit + 1 if limit > 0 else 1
        lines.append(
            f"{shown} of {total} (page {page} of {page_count(total, limit)};"
            " --page N, --limit N, --state S, --sort COLUMN)"
        )
    return "\n".join(lines)


def actor_detail(
    snap: ActorSnapshot, metadata: AccountMetadata | None = None, *, now_wall: float | None = None
) -> str:
    """Everything known about one actor, one field a line; Postgres' view and errors last."""
    now = time.time() if now_wall is None else now_wall
    lines = [
        f"id:            {snap.id}",
        f"kind:          {snap.kind}",
        f"task:          {snap.task_name or '-'}",
        f"state:         {snap.state}",
        f"status:        {snap.status or '-'}",
        f"provider:      {snap.provider or '-'}",
        f"last sync:     {_ago(snap.last_sync_at, now) if snap.provider else '-'}",
        f"mailbox depth: {snap.mailbox_depth}",
        f"restarts:      {snap.restarts}",
        f"last activity: {_ago(snap.last_activity, now)}",
        f"next wake:     {_in(snap.next_wake_in_s)}",
    ]
    if snap.deadlines:
        lines.append("deadlines:")
        lines.extend(f"  {name:<20} {_in(left)}" for name, left in snap.deadlines)
    if metadata is not None:
        lines.extend(account_lines(metadata, now))
    lines.append(f"last error:    {snap.last_error or '-'}")
    if snap.recent_errors:
        lines.append(f"recent errors ({len(snap.recent_errors)}, newest first):")
        for record in reversed(snap.recent_errors):
            lines.append(f"  {_ago(record.at, now)}: {record.error}")
            if record.traceback:
                lines.extend("    " + line for line in record.traceback.rstrip().splitlines())
    elif snap.last_traceback:
        lines.append("last traceback:")
        lines.extend("  " + line for line in snap.last_traceback.rstrip().splitlines())
    return "\n".join(lines)


def account_lines(meta: AccountMetadata, now: float) -> list[str]:
    """The account as stored: status, token expiry (never a token), calendars, channels."""
    account, creds = meta.account, meta.credentials
    lines = [
        f"account:       {account.status} (shard {account.shard}, {account.external_user_id})",
    ]
    if account.last_error:
        lines.append(f"account error: {_clip(account.last_error, 200)}")
    if creds is None:
        lines.append("credentials:   none")
    else:
        token = _until(creds.access_token_expires_at, now) if creds.has_access_token else "none"
        lines.append(
            f"credentials:   key {creds.key_id}; access token expires {token};"
            f" updated {_since(creds.updated_at, now)}"
        )
        if creds.scopes:
            lines.append(f"scopes:        {' '.join(creds.scopes)}")
    lines.append(f"calendars ({len(meta.calendars)}):")
    rows = [
        (
            cal.id,
            _clip(cal.name, 30),
            "removed" if cal.removed_at else ("on" if cal.sync_enabled else "off"),
            "mid-round" if cal.mid_round else ("yes" if cal.has_delta_token else "no"),
            _since(cal.last_synced_at, now) if cal.has_delta_token else "-",
        )
        for cal in meta.calendars
    ]
    if rows:
        header = ("  CALENDAR", "NAME", "SYNC", "DELTA TOKEN", "TOKEN AGE")
        lines.extend(_table(header, [("  " + r[0], *r[1:]) for r in rows]))
    lines.append(f"channels ({len(meta.channels)}):")
    if meta.channels:
        ch_rows = [
            ("  " + ch.id, ch.calendar_id, _until(ch.expires_at, now)) for ch in meta.channels
        ]
        lines.extend(_table(("  CHANNEL", "CALENDAR", "EXPIRES"), ch_rows))
    return lines


def shards_table(view: ShardsView) -> str:
    """The replica's membership line, its counters, then a row per shard it holds."""
    members = ", ".join(view.members) or "-"
    owned = sum(1 for row in view.rows if row.state == "owned")
    lines = [
        f"replica {view.replica_id}: {owned} of {view.shard_count} shards owned; members {members}",
        f"claims {view.claims}; releases {view.releases}; losses {view.losses};"
        f" renewal failures {view.renewal_failures}",
    ]
    rows = [
        (
            str(row.shard),
            row.state
            + (f" ({row.lost_reason})" if row.state == "lost" and row.lost_reason else ""),
            "-" if row.epoch is None else str(row.epoch),
            "-" if row.lease_left_s is None else f"{row.lease_left_s:.1f}s",
            "-" if row.stop_in_s is None else f"{row.stop_in_s:.1f}s",
        )
        for row in view.rows
    ]
    lines.extend(_table(("SHARD", "STATE", "EPOCH", "LEASE LEFT", "STOP IN"), rows))
    return "\n".join(lines)

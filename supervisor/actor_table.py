"""Plain-text views of actor snapshots for the monitor: pure functions, no loop, no I/O."""

from __future__ import annotations

import time
from collections.abc import Sequence

from actors.registry import ActorSnapshot, RegistryStatistics


def _ago(wall: float, now: float) -> str:
    seconds = max(0.0, now - wall)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _in(seconds: float | None) -> str:
    return "-" if seconds is None else f"in {seconds:.0f}s"


def summary_line(stats: RegistryStatistics) -> str:
    """One line: total actors, counts by state, restarts and queued messages."""
    states = ", ".join(f"{state} {count}" for state, count in sorted(stats.by_state.items()))
    return (
        f"{stats.actors} actors ({states or 'none'}); "
        f"restarts {stats.restarts}; queued messages {stats.mailbox_depth}"
    )


def actors_table(
    snapshots: Sequence[ActorSnapshot], *, total: int, now_wall: float | None = None
) -> str:
    """A fixed-width table of actors, with a footer saying how many were left out."""
    now_wall = time.time() if now_wall is None else now_wall
    header = ("ID", "KIND", "STATE", "STATUS", "MAILBOX", "RESTARTS", "LAST ACTIVITY", "NEXT")
    rows = [header]
    for snap in snapshots:
        rows.append(
            (
                snap.id,
                snap.kind,
                snap.state,
                snap.status or "-",
                str(snap.mailbox_depth),
                str(snap.restarts),
                _ago(snap.last_activity, now_wall),
                _in(snap.next_wake_in_s),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    if total > len(snapshots):
        lines.append(f"... {total - len(snapshots)} more (narrow with --state, raise --limit)")
    return "\n".join(line.rstrip() for line in lines)


def actor_detail(snap: ActorSnapshot, *, now_wall: float | None = None) -> str:
    """Everything known about one actor, one field a line; the traceback last."""
    now_wall = time.time() if now_wall is None else now_wall
    lines = [
        f"id:            {snap.id}",
        f"kind:          {snap.kind}",
        f"task:          {snap.task_name or '-'}",
        f"state:         {snap.state}",
        f"status:        {snap.status or '-'}",
        f"mailbox depth: {snap.mailbox_depth}",
        f"restarts:      {snap.restarts}",
        f"last activity: {_ago(snap.last_activity, now_wall)}",
        f"next wake:     {_in(snap.next_wake_in_s)}",
    ]
    if snap.deadlines:
        lines.append("deadlines:")
        lines.extend(f"  {name:<20} {_in(left)}" for name, left in snap.deadlines)
    lines.append(f"last error:    {snap.last_error or '-'}")
    if snap.last_traceback:
        lines.append("last traceback:")
        lines.extend("  " + line for line in snap.last_traceback.rstrip().splitlines())
    return "\n".join(lines)

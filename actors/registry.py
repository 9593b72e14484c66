"""Every supervised child of a supervisor, in start order, with read-only snapshots.

Invariants:
- the registry holds the strong reference to each child's cell and, through it, its task;
  a task nobody references can be garbage-collected mid-flight, so none is left unreferenced;
- insertion order is start order, so reverse iteration is reverse start order;
- snapshots are plain frozen data, safe to hand to another thread (the monitor's);
- ``page`` filters and orders the cells themselves and snapshots only the rows it returns, so a
  page of 50 costs 50 snapshots however many children there are.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from actors.cell import INF, ActorCell, ActorState, ErrorRecord

# How each column of the monitor's table orders cells: read off the cell, no snapshot taken.
SORT_KEYS: dict[str, Callable[[ActorCell[Any]], Any]] = {
    "id": lambda c: c.id,
    "kind": lambda c: c.spec.kind,
    "state": lambda c: c.state.value,
    "status": lambda c: c.status or "",
    "provider": lambda c: (c.info and c.info.provider) or "",
    "mailbox": lambda c: c.mailbox_depth,
    "restarts": lambda c: c.restarts,
    "last-sync": lambda c: (c.info and c.info.last_sync_at) or 0.0,  # never synced: oldest
    "next": lambda c: c.wake_at,  # nothing due (inf) last
}


@dataclass(frozen=True, slots=True)
class ActorSnapshot:
    """One child as the monitor and the metrics see it."""

    id: str
    kind: str
    state: str
    status: str | None
    mailbox_depth: int
    restarts: int
    last_error: str | None
    last_traceback: str | None
    last_activity: float  # wall-clock seconds since the epoch
    next_wake_in_s: float | None  # next deadline or end of backoff, from now; None: none
    deadlines: tuple[tuple[str, float], ...]  # (name, seconds from now)
    task_name: str | None
    provider: str | None = None  # what the actor told the monitor (``ActorCell.describe``)
    last_sync_at: float | None = None  # wall clock of its last successful sync
    recent_errors: tuple[ErrorRecord, ...] = ()  # the last few crashes, newest last


@dataclass(frozen=True, slots=True)
class RegistryPage:
    """One page of snapshots, and how many children matched the filter in all."""

    snapshots: list[ActorSnapshot]
    matched: int


@dataclass(frozen=True, slots=True)
class RegistryStatistics:
    """Totals over every child."""

    actors: int
    by_state: dict[str, int]
    restarts: int
    mailbox_depth: int
    taken_at: float


class Registry:
    """Child id to cell, in start order."""

    __slots__ = ("_cells",)

    def __init__(self) -> None:
        self._cells: dict[str, ActorCell[Any]] = {}

    def __len__(self) -> int:
        return len(self._cells)

    def __contains__(self, child_id: object) -> bool:
        return child_id in self._cells

    def __iter__(self) -> Iterator[ActorCell[Any]]:
        return iter(self._cells.values())

    def add(self, cell: ActorCell[Any]) -> None:
        """Register a new child (its id must be free)."""
        if cell.id in self._cells:
            raise KeyError(cell.id)
        self._cells[cell.id] = cell

    def remove(self, cell: ActorCell[Any]) -> None:
        """Forget a child, if this very cell is still the registered one."""
        if self._cells.get(cell.id) is cell:
            del self._cells[cell.id]

    def get(self, child_id: str) -> ActorCell[Any] | None:
        """The cell of ``child_id``, or None."""
        return self._cells.get(child_id)

    def reversed(self) -> list[ActorCell[Any]]:
        """Every cell, newest first (reverse start order)."""
        return list(reversed(self._cells.values()))

    def snapshot(self, child_id: str, now: float) -> ActorSnapshot | None:
        """A snapshot of one child; ``now`` is the loop time deadlines are measured from."""
        cell = self._cells.get(child_id)
        return None if cell is None else snapshot_of(cell, now)

    def snapshots(
        self, now: float, *, states: frozenset[ActorState] | None = None
    ) -> list[ActorSnapshot]:
        """Snapshots of every child, optionally only those in ``states``."""
        return [
            snapshot_of(cell, now)
            for cell in self._cells.values()
            if states is None or cell.state in states
        ]

    def page(
        self,
        now: float,
        *,
        states: frozenset[ActorState] | None = None,
        sort: str | None = None,
        reverse: bool = False,
        offset: int = 0,
        limit: int = 50,
    ) -> RegistryPage:
        """Snapshots of the children in ``states``, ordered by the column ``sort`` (start order
        when None), rows ``offset`` to ``offset + limit``; only those rows are snapshotted."""
        cells = [c for c in self._cells.values() if states is None or c.state in states]
        matched, end = len(cells), max(0, offset) + max(0, limit)
        if sort is not None:
            key = SORT_KEYS[sort]
            pick = heapq.nlargest if reverse else heapq.nsmallest
            cells = pick(end, cells, key=key)
        elif reverse:
            cells.reverse()
        return RegistryPage([snapshot_of(c, now) for c in cells[max(0, offset) : end]], matched)

    def statistics(self) -> RegistryStatistics:
        """Counts by state and totals, cheap enough to poll every second."""
        by_state: Counter[str] = Counter()
        restarts = depth = 0
        for cell in self._cells.values():
            by_state[cell.state.value] += 1
            restarts += cell.restarts
            mailbox = cell.mailbox
            if mailbox is not None:
                depth += len(mailbox)
        return RegistryStatistics(
            actors=len(self._cells),
            by_state=dict(by_state),
            restarts=restarts,
            mailbox_depth=depth,
            taken_at=time.time(),
        )


def snapshot_of(cell: ActorCell[Any], now: float) -> ActorSnapshot:
    """Freeze one cell's visible fields."""
    deadlines = tuple(sorted(((n, at - now) for n, at in (cell.deadlines or {}).items())))
    task, info = cell.task, cell.info
    return ActorSnapshot(
        id=cell.id,
        kind=cell.spec.kind,
        state=cell.state.value,
        status=cell.status,
        mailbox_depth=cell.mailbox_depth,
        restarts=cell.restarts,
        last_error=cell.last_error,
        last_traceback=cell.last_traceback,
        last_activity=cell.last_activity,
        next_wake_in_s=None if cell.wake_at == INF else cell.wake_at - now,
        deadlines=deadlines,
        task_name=None if task is None else task.get_name(),
        provider=None if info is None else info.provider,
        last_sync_at=None if info is None else info.last_sync_at,
        recent_errors=() if cell.recent_errors is None else tuple(cell.recent_errors),
    )

"""Wakes waiting children at their deadlines from one heap and one loop timer.

Invariant: the loop timer is armed at the heap's earliest entry whenever the heap is not
empty, so no child's wake-up is missed, and no child owns a timer handle of its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors.cell import INF, ActorCell
from actors.deadlines import DeadlineHeap


class WakeupScheduler:
    """The I/O edge of ``DeadlineHeap``: one ``call_at`` for every child of a supervisor."""

    __slots__ = ("_closed", "_heap", "_loop", "_timer", "_timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: DeadlineHeap[ActorCell[Any]] = DeadlineHeap()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = INF
        self._closed = False

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, cell: ActorCell[Any], at: float) -> None:
        """Wake ``cell`` at loop time ``at``."""
        self._heap.push(at, cell)
        if at < self._timer_at and not self._closed:
            self._arm(at)

    def close(self) -> None:
        """Stop waking anyone (the supervisor is shutting down)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = INF
        now = self._loop.time()
        for at, cell in self._heap.pop_due(now):
            if cell.scheduled_at != at:
                continue  # superseded by an earlier entry, already served
            cell.scheduled_at = INF
            if cell.wake_at <= now:
                cell.wake()
            elif cell.wake_at != INF:
                cell.set_wake_at(cell.wake_at)  # moved later since: schedule the new time
        earliest = self._heap.earliest()
        if earliest is not None and not self._closed and earliest < self._timer_at:
            self._arm(earliest)

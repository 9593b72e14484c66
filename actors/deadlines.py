"""One heap of wake-up times for every child of a supervisor, served by one loop timer.

An idle actor with armed deadlines costs a heap entry, not a timer handle or a task.
Entries are never removed early: the supervisor skips an entry that is no longer a child's
live one (see ``ActorCell.scheduled_at``) when it comes due. Pure: time is passed in.
"""

from __future__ import annotations

import heapq
from typing import Any, Generic, Protocol, TypeVar


class _Orderable(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


T = TypeVar("T", bound=_Orderable)


class DeadlineHeap(Generic[T]):
    """Earliest-first ``(at, item)`` entries; items order themselves when times tie.

    Two-item tuples (no tie-breaking counter) keep an idle actor's entry small.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: list[tuple[float, T]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, at: float, item: T) -> bool:
        """Add an entry; True when it is now the earliest (the caller re-arms its timer)."""
        entries = self._entries
        heapq.heappush(entries, (at, item))
        return entries[0][0] == at

    def earliest(self) -> float | None:
        """The time of the earliest entry, or None when empty."""
        return self._entries[0][0] if self._entries else None

    def pop_due(self, now: float) -> list[tuple[float, T]]:
        """Remove and return every entry at or before ``now``, earliest first."""
        entries = self._entries
        due: list[tuple[float, T]] = []
        while entries and entries[0][0] <= now:
            due.append(heapq.heappop(entries))
        return due

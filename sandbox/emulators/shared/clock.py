"""An emulator's notion of now (pure).

Invariant: real UTC time unless frozen or advanced by the control API; always aware.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    """Real UTC time, unless the control API froze it or moved it forward."""

    def __init__(self, now: datetime | None = None) -> None:
        self._fixed = now
        self._offset = timedelta()

    def now(self) -> datetime:
        """The current (aware, UTC) time of this emulator."""
        return (self._fixed or datetime.now(UTC)) + self._offset

    def set_now(self, moment: datetime | None) -> None:
        """Freeze time at ``moment`` (aware), or return to real time with None."""
        self._fixed, self._offset = moment, timedelta()

    def advance(self, delta: timedelta) -> None:
        """Move time forward by ``delta`` (frozen or not)."""
        self._offset += delta

"""The demo's people: one user per demo account in its provider's emulator, seeded with a few
hundred events (recurring series included), then editing their calendar as a person would in the
provider's own UI.

Invariants:
- everything goes through the emulator's in-process control object, never its HTTP API, so
  seeding thousands of events costs no requests; a control write still bumps the emulator's
  change log and fires its push notifications exactly like an API write;
- seeding never calls ``on_edit``: only the people's edits are journaled and measured;
- ``on_edit`` gets the time taken *before* the emulator applied the edit, so a lag measured from
  it never undercounts;
- each user's live single events are tracked here (the people are the only ones changing them),
  so picking an event to edit never lists the emulator's store.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

# (user email, event id, moment taken just before the edit)
EditHook = Callable[[str, str, datetime], None]
TimedEvent = tuple[str, datetime, datetime]  # (title, start, end)

TITLES = ("Standup", "1:1", "Design review", "Lunch", "Customer call", "Focus time", "Retro")
EVENTS_PER_SERIES = 40  # one weekly series per this many seeded events (at least one)
SERIES_OCCURRENCES = 20
# Seeded and created events fall well inside the actors' sync window (30 days back, 365 ahead).
_EARLIEST_H, _LATEST_H = -24 * 20, 24 * 200


class EmulatedProvider(abc.ABC):
    """One emulator's users: registration, seeding, edits, and the faults it can inject."""

    name: str

    def __init__(self, rng: random.Random, on_edit: EditHook | None = None) -> None:
        self.rng = rng
        self.on_edit = on_edit
        self.users: list[str] = []
        self.singles: dict[str, list[str]] = {}  # user -> ids of its live single events
        self.edits = 0

    def add_user(self, email: str, refresh_token: str, *, events: int) -> None:
        """Register a demo account's user with its refresh token and seed ``events`` events:
        about one weekly series per ``EVENTS_PER_SERIES``, the rest single meetings."""
        self._register(email, refresh_token)
        self.users.append(email)
        singles = self.singles[email] = []
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        series = 0 if events < 1 else max(1, events // EVENTS_PER_SERIES)
        for i in range(series):
            first = now.replace(hour=9) - timedelta(days=7 * self.rng.randint(0, 4) - i)
            self._create(email, self._weekly_series(first))
        for _ in range(events - series):
            singles.append(self._create(email, self._timed(now)))

    def edit_once(self) -> None:
        """One person (chosen at random) changes one thing in their calendar."""
        if self.users:
            self.edit(self.rng.choice(self.users))

    def edit(self, email: str) -> None:
        """``email`` creates, renames or deletes one single event, as in the provider's UI."""
        singles = self.singles[email]
        at = datetime.now(UTC)
        roll = self.rng.random()
        if roll < 0.4 or not singles:
            event_id = self._create(email, self._timed(at))
            singles.append(event_id)
        elif roll < 0.8:
            event_id = self.rng.choice(singles)
            self._rename(email, event_id, self.rng.choice(TITLES))
        else:
            event_id = singles.pop(self.rng.randrange(len(singles)))
            self._delete(email, event_id)
        self.edits += 1
        if self.on_edit is not None:
            self.on_edit(email, event_id, at)

    def _timed(self, around: datetime) -> TimedEvent:
        start = around + timedelta(hours=self.rng.randint(_EARLIEST_H, _LATEST_H))
        return self.rng.choice(TITLES), start, start + timedelta(minutes=30)

    # -- the emulator's side: people ----------------------------------------------------------

    @abc.abstractmethod
    def _register(self, email: str, refresh_token: str) -> None: ...

    @abc.abstractmethod
    def _create(self, email: str, event: TimedEvent | dict[str, Any]) -> str:
        """Create a timed event, or a provider-shaped body as given; its id."""

    @abc.abstractmethod
    def _weekly_series(self, first: datetime) -> dict[str, Any]:
        """A weekly 09:00 Berlin-time series (it keeps local time across DST)."""

    @abc.abstractmethod
    def _rename(self, email: str, event_id: str, title: str) -> None: ...

    @abc.abstractmethod
    def _delete(self, email: str, event_id: str) -> None: ...

    # -- the emulator's side: faults ----------------------------------------------------------

    @abc.abstractmethod
    def throttle(self, retry_after_s: float) -> str:
        """The next events call answers 429 with Retry-After; the fault's name."""

    @abc.abstractmethod
    def server_error(self, pick: int) -> str:
        """The next events call answers a 5xx (chosen by ``pick``); the fault's name."""

    @abc.abstractmethod
    def expire_sync_state(self, email: str) -> None:
        """The user's next incremental sync answers 410 (a full resync follows)."""

    @abc.abstractmethod
    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token and the access tokens minted from it."""

    @abc.abstractmethod
    def reauthorize(self, email: str) -> str:
        """The user consents again: a new refresh token for the demo's client."""

    @abc.abstractmethod
    def clear_faults(self) -> None:
        """Remove every fault rule not yet spent."""


def wall(moment: datetime) -> str:
    """Wall-clock time without offset (the event's time zone field gives the zone)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S")
